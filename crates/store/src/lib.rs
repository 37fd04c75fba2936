//! Berth's embedded SQLite store for local mode.
//!
//! Today it holds the audit log with its SHA-256 hash chain; the Docker backend adds grants
//! and revisions through new migrations. Opening a store migrates it; the `schema_version`
//! table records which migrations have run.

#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod audit;
mod sqlite;

pub use audit::{AuditChain, AuditEvent, ChainBreak, ChainHead, ChainReport, verify_chain};
pub use sqlite::{AuditQuery, SCHEMA_VERSION, Store};

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
    /// A query failed.
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value could not be encoded.
    #[error("cannot encode audit details: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Open { .. } => "open",
            Error::Io { .. } => "io",
            Error::NewerSchema { .. } => "newer_schema",
            Error::Migration { .. } => "migration",
            Error::Sqlite(_) => "sqlite",
            Error::Json(_) => "json",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
