//! Berth's embedded SQLite store.
//!
//! It holds the audit log with its SHA-256 hash chain ([`audit`]) and, for local Docker mode
//! (`berth dev up`), that mode's desired and observed state ([`local`]): the installed
//! plugins with their gateway tokens, the grants, the revisions that were run, what the
//! supervisor last observed, and a few settings. Opening a store migrates it; the
//! `schema_version` table records which migrations have run.
//!
//! Several processes may use one file at once (a supervisor, CLI commands, a gateway writing
//! audit events): the file is in WAL mode with a busy timeout, every write that takes more
//! than one statement is one IMMEDIATE transaction, and every read sees what was committed
//! before it. A file created by [`Store::open`] is readable by its owner only on Unix.

#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod audit;
pub mod bench;
mod fault;
pub mod local;
mod sqlite;
mod time;
pub mod usage;

pub use audit::{AuditChain, AuditEvent, ChainBreak, ChainHead, ChainReport, verify_chain};
pub use bench::BenchRun;
pub use fault::check_directory;
pub use local::{GrantRecord, InstalledPlugin, PluginStatusRecord, RevisionRecord};
pub use sqlite::{AuditQuery, SCHEMA_VERSION, Store};
pub use time::format_time;
pub use usage::UsageRow;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file could not be opened.
    #[error("cannot open the store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Its directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was written by a newer Berth.
    #[error(
        "the store has schema version {found}, newer than this berth knows ({known}); upgrade berth"
    )]
    NewerSchema {
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        known: u32,
    },
    /// A migration failed.
    #[error("migration to schema version {version} failed: {source}")]
    Migration {
        /// The version being applied.
        version: u32,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The permissions of a file could not be restricted.
    #[error("cannot restrict the permissions of {path}: {source}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Random bytes for a token could not be read.
    #[error("cannot read random bytes for a plugin token: {0}")]
    Random(#[source] std::io::Error),
    /// A time is not RFC 3339.
    #[error("{value:?} is not an RFC 3339 time: {source}")]
    InvalidTime {
        /// The text.
        value: String,
        /// Why.
        #[source]
        source: jiff::Error,
    },
    /// A number does not fit in the store's integer columns.
    #[error("{what} {value} is too large to store")]
    OutOfRange {
        /// What it counts.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A revision number was already used for this plugin.
    #[error("revision {revision} of plugin {plugin} was already recorded")]
    RevisionTaken {
        /// The plugin.
        plugin: String,
        /// The revision number.
        revision: u64,
    },
    /// No such revision.
    #[error("plugin {plugin} has no revision {revision}")]
    RevisionNotFound {
        /// The plugin.
        plugin: String,
        /// The revision number.
        revision: u64,
    },
    /// The file is damaged, or is not an SQLite database at all.
    #[error(
        "the store {p} is damaged or is not a Berth store ({reason}); nothing was changed. \
         Stop `berth dev up` if it runs, move the file aside with its -wal and -shm files \
         (`mv {p} {p}.damaged`) and put a backup in its place, or leave it moved away to \
         start afresh (an empty store: reinstall plugins and grant them again)",
        p = .path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// SQLite's words (part of the message).
        reason: String,
    },
    /// Another process held the write lock longer than the busy timeout.
    #[error(
        "the store {p} is locked by another process ({reason}, waited {} s); nothing was \
         changed. A `berth dev up` supervisor, a gateway or another berth command writes to \
         it briefly, so retry; if it stays locked, find the holder with `fuser -v {p}` or \
         `lsof {p}` (a `sqlite3` shell with an open transaction, say) and end it",
        .waited.as_secs(),
        p = .path.display()
    )]
    Busy {
        /// The file.
        path: PathBuf,
        /// How long it waited.
        waited: std::time::Duration,
        /// SQLite's words (part of the message).
        reason: String,
    },
    /// The file system holding the store is full.
    #[error(
        "no space left on device for the store {} ({reason}); nothing was saved by this \
         command and what was saved before is intact. Free space on that file system (`df -h \
         {}`; even reading needs a little, for the -shm file) and retry",
        .path.display(),
        fault::parent(.path).display()
    )]
    DiskFull {
        /// The file.
        path: PathBuf,
        /// SQLite's or the system's words (part of the message).
        reason: String,
    },
    /// This user may not read or write the file.
    #[error(
        "cannot read and write the store {} ({reason}); give this user read and write access \
         to it and to its directory (`ls -l {}`), or set BERTH_STATE_DIR (--state-dir) to a \
         directory of your own",
        .path.display(),
        fault::parent(.path).display()
    )]
    Access {
        /// The file.
        path: PathBuf,
        /// SQLite's or the system's words (part of the message).
        reason: String,
    },
    /// Reading or writing the file failed below SQLite.
    #[error(
        "I/O error on the store {} ({reason}); nothing of this change was saved. Check the \
         file system (free space with `df -h`, device errors with `dmesg`) and retry",
        .path.display()
    )]
    FileIo {
        /// The file.
        path: PathBuf,
        /// SQLite's words (part of the message).
        reason: String,
    },
    /// The store's directory is not a directory, or this user may not use it.
    #[error(
        "cannot use the state directory {p} ({reason}); make it a directory this user may read \
         and write (`ls -ld {p}`; chown or chmod it), or set BERTH_STATE_DIR (--state-dir) \
         to a directory of your own",
        p = .path.display()
    )]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong (part of the message).
        reason: String,
    },
    /// A query failed.
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value could not be encoded.
    #[error("cannot encode audit details: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// True for a fault of the file or its directory (damaged, locked by another process,
    /// disk full, no access): the message names the file and what to do, so callers show it
    /// as it is.
    pub fn is_file_fault(&self) -> bool {
        matches!(
            self,
            Error::Damaged { .. }
                | Error::Busy { .. }
                | Error::DiskFull { .. }
                | Error::Access { .. }
                | Error::FileIo { .. }
                | Error::Directory { .. }
        )
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Open { .. } => "open",
            Error::Io { .. } => "io",
            Error::NewerSchema { .. } => "newer_schema",
            Error::Migration { .. } => "migration",
            Error::Permissions { .. } => "permissions",
            Error::Random(_) => "random",
            Error::InvalidTime { .. } => "invalid_time",
            Error::OutOfRange { .. } => "out_of_range",
            Error::RevisionTaken { .. } => "revision_taken",
            Error::RevisionNotFound { .. } => "revision_not_found",
            Error::Damaged { .. } => "damaged",
            Error::Busy { .. } => "busy",
            Error::DiskFull { .. } => "disk_full",
            Error::Access { .. } => "access",
            Error::FileIo { .. } => "file_io",
            Error::Directory { .. } => "directory",
            Error::Sqlite(_) => "sqlite",
            Error::Json(_) => "json",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A directory under the system's temporary directory, removed on drop.
#[cfg(test)]
pub(crate) struct TempDir(PathBuf);

#[cfg(test)]
impl TempDir {
    /// A fresh, empty directory.
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("berth-store-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }

    /// `name` inside it.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
