//! What Berth's gateway and its backends share, and nothing more.
//!
//! - [`protocol`]: protocol v1's headers, paths, environment names, image label and JSON
//!   bodies. The plugin SDK uses this module alone (without the `runtime` feature), so a
//!   plugin build does not pull the manifest types (decision 0031).
//! - [`credential`]: bearer tokens and their `sha256:` digests.
//! - With the `runtime` feature: [`directory`] (how the gateway finds plugins, the
//!   [`directory::PluginDirectory`] trait each backend implements), [`wire`] (the directory
//!   snapshot and observations a supervisor pushes to a gateway in another process) and
//!   [`env`] (the one function that builds a plugin's environment).

#![forbid(unsafe_code)]

pub mod credential;
pub mod protocol;

#[cfg(feature = "runtime")]
pub mod directory;
#[cfg(feature = "runtime")]
pub mod env;
#[cfg(feature = "runtime")]
pub mod wire;

#[cfg(feature = "runtime")]
pub use directory::{DirectorySnapshot, Endpoint, PluginDirectory, PluginEntry, StaticDirectory};

/// The `error.code` of a snapshot that does not decode or does not check.
pub const INVALID_SNAPSHOT: &str = "invalid_snapshot";
/// The `error.code` of observations that do not decode or do not check.
pub const INVALID_OBSERVATIONS: &str = "invalid_observations";

/// What can be wrong with directory data a backend hands over.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint that is not an `http://host:port` base URL.
    #[error("endpoint {url:?}: {reason}")]
    Endpoint {
        /// The text given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A pushed directory snapshot that does not check; the message starts with the
    /// field's path, e.g. `plugins[0].endpoints[1]: …`.
    #[error("{0}")]
    Snapshot(String),
    /// Pushed observations that do not check; the message starts with the field's path.
    #[error("{0}")]
    Observations(String),
}

impl Error {
    /// The stable `error.code` a gateway answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Endpoint { .. } => "invalid_endpoint",
            Error::Snapshot(_) => INVALID_SNAPSHOT,
            Error::Observations(_) => INVALID_OBSERVATIONS,
        }
    }
}

/// An error and each distinct cause under it, joined with `: ` — how the gateway, its probe
/// and a backend's readiness check word a failed call to a plugin (hyper's own message alone
/// says only "error sending request").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
