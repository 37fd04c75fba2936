//! Local mode's control plane: what `berth install`, `uninstall`, `enable`, `disable`,
//! `grant` and `revoke` do to the store, and how they learn what a running `berth dev up`
//! made of it.
//!
//! A command never talks to the supervisor. It writes desired state into the store of a
//! [`StateDir`] through [`LocalControl`], which also writes the audit events, then waits in
//! [`LocalControl::await_outcome`] until the supervisor's observed change counter catches up
//! with the store's. Everything here is synchronous and needs no Docker Engine, so it is
//! tested against a store in a temporary directory.

mod handshake;
mod lifecycle;
mod state;

use std::path::PathBuf;

pub use handshake::Outcome;
pub use lifecycle::{Granted, InstallChange, InstallOutcome, LocalControl, Previous, Revoked};
pub use state::{StateDir, SupervisorLock, default_state_dir};

/// What can go wrong in local mode's control plane; each message names the file or plugin
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Neither `BERTH_STATE_DIR` nor `HOME` says where the state directory is.
    #[error("set BERTH_STATE_DIR or HOME")]
    NoStateDir,
    /// The state directory could not be created.
    #[error("cannot create the state directory {}", .path.display())]
    CreateStateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store in the state directory could not be opened.
    #[error("cannot open the store {}", .path.display())]
    OpenStore {
        /// The `berth.db` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: berth_store::Error,
    },
    /// The admin token a running `berth dev up` wrote is not there.
    #[error(
        "cannot read {} ({error}); is `berth dev up` running for this state directory?",
        .path.display()
    )]
    ReadAdminToken {
        /// The `admin.token` file.
        path: PathBuf,
        /// Why (part of the message, which says what to do about it).
        error: std::io::Error,
    },
    /// A file of the state directory (admin token, supervisor lock) could not be created.
    #[error("cannot create {}", .path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor lock file could not be opened.
    #[error("cannot open {}", .path.display())]
    OpenLock {
        /// The `supervisor.lock` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No random bytes for a new admin token.
    #[error("cannot read random bytes")]
    Random(#[source] std::io::Error),
    /// The command names a plugin that is not installed.
    #[error(
        "no plugin {name:?} is installed (see `berth list`; install with `berth install FILE`)"
    )]
    NotInstalled {
        /// The name given.
        name: String,
    },
    /// The installed manifest no longer loads (it names its file and fields).
    #[error("{problems}")]
    InstalledManifest {
        /// The loader's problems, joined.
        problems: String,
    },
    /// No `berth dev up` has published a gateway address for this state directory.
    #[error("no gateway is known for {}: start `berth dev up` first", .state_dir.display())]
    NoGateway {
        /// The state directory.
        state_dir: PathBuf,
    },
    /// A `PluginGrant` given to `berth grant NAME --from FILE` is for another plugin.
    #[error(
        "{source_name}: spec.plugin: the grant is for {found:?}, not {name:?}; run `berth grant {found} --from {source_name}` or fix spec.plugin"
    )]
    GrantForOtherPlugin {
        /// Where the grant came from (a file name).
        source_name: String,
        /// The plugin the command names.
        name: String,
        /// The plugin the grant names.
        found: String,
    },
    /// A `PluginGrant` whose expiry has passed or does not parse.
    #[error("{source_name}: spec.expiresAt: {problem}")]
    GrantExpiry {
        /// Where the grant came from.
        source_name: String,
        /// What is wrong.
        problem: String,
    },
    /// The store refused a read or write.
    #[error(transparent)]
    Store(#[from] berth_store::Error),
    /// A plugin's permissions could not be written as JSON for its grant.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Results of the control plane.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

impl ControlError {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ControlError::NoStateDir => "no_state_dir",
            ControlError::CreateStateDir { .. } => "create_state_dir",
            ControlError::OpenStore { .. } => "open_store",
            ControlError::ReadAdminToken { .. } => "read_admin_token",
            ControlError::CreateFile { .. } => "create_file",
            ControlError::OpenLock { .. } => "open_lock",
            ControlError::Random(_) => "random",
            ControlError::NotInstalled { .. } => "not_installed",
            ControlError::InstalledManifest { .. } => "installed_manifest",
            ControlError::NoGateway { .. } => "no_gateway",
            ControlError::GrantForOtherPlugin { .. } => "grant_for_other_plugin",
            ControlError::GrantExpiry { .. } => "grant_expiry",
            ControlError::Store(_) => "store",
            ControlError::Json(_) => "json",
        }
    }
}

/// Who is acting, for the audit log: `user:$USER` (or `$LOGNAME`), else `user`.
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("user:{u}"))
        .unwrap_or_else(|_| "user".into())
}

#[cfg(test)]
mod testing;
