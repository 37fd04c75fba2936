//! The SQLite file: migrations and the audit table.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::audit::{AuditChain, AuditEvent, ChainHead, ChainReport, verify_chain};
use crate::time::format_time;
use crate::{Error, Result};

/// Schema migrations, applied in order; the index + 1 is the schema version. Append new
/// ones at the end; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the audit log and the head of its hash chain.
    "CREATE TABLE audit_events (
        position   INTEGER PRIMARY KEY,
        seq        INTEGER NOT NULL,
        id         TEXT    NOT NULL,
        time       TEXT    NOT NULL,
        actor      TEXT    NOT NULL,
        plugin     TEXT,
        type       TEXT    NOT NULL,
        details    TEXT    NOT NULL,
        risk_score INTEGER,
        outcome    TEXT    NOT NULL,
        prev_hash  TEXT    NOT NULL,
        hash       TEXT    NOT NULL
    );
    CREATE INDEX audit_events_time ON audit_events (time);
    CREATE INDEX audit_events_plugin ON audit_events (plugin, time);
    CREATE INDEX audit_events_type ON audit_events (type, time);
    CREATE TABLE audit_head (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        seq       INTEGER NOT NULL,
        hash      TEXT    NOT NULL
    );",
    // 2: local mode's desired state (plugins, grants, settings) and observed state
    // (revisions, statuses), with the counters the supervisor polls.
    "CREATE TABLE local_plugins (
        name          TEXT    PRIMARY KEY,
        manifest_yaml TEXT    NOT NULL,
        source        TEXT,
        enabled       INTEGER NOT NULL DEFAULT 1,
        token         TEXT    NOT NULL,
        installed_at  TEXT    NOT NULL,
        updated_at    TEXT    NOT NULL
    );
    CREATE TABLE local_grants (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        plugin           TEXT    NOT NULL,
        permissions_json TEXT    NOT NULL,
        risk_score       INTEGER NOT NULL,
        granted_by       TEXT    NOT NULL,
        reason           TEXT,
        granted_at       TEXT    NOT NULL,
        expires_at       TEXT,
        revoked_at       TEXT
    );
    CREATE INDEX local_grants_plugin ON local_grants (plugin, id);
    CREATE TABLE local_revisions (
        plugin          TEXT    NOT NULL,
        revision        INTEGER NOT NULL,
        image           TEXT    NOT NULL,
        manifest_sha256 TEXT    NOT NULL,
        state           TEXT    NOT NULL,
        reason          TEXT,
        container_id    TEXT,
        endpoint        TEXT,
        created_at      TEXT    NOT NULL,
        ready_at        TEXT,
        PRIMARY KEY (plugin, revision)
    );
    CREATE TABLE local_revision_counters (
        plugin        TEXT    PRIMARY KEY,
        last_revision INTEGER NOT NULL
    );
    CREATE TABLE local_status (
        plugin           TEXT    PRIMARY KEY,
        phase            TEXT    NOT NULL,
        reason           TEXT,
        serving_revision INTEGER,
        restarts         INTEGER NOT NULL,
        updated_at       TEXT    NOT NULL
    );
    CREATE TABLE local_settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE local_changes (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        counter   INTEGER NOT NULL
    );
    INSERT INTO local_changes (singleton, counter) VALUES (1, 0);",
    // 3: how often each granted item was used, per UTC day (usage receipts).
    "CREATE TABLE usage_days (
        plugin    TEXT    NOT NULL,
        kind      TEXT    NOT NULL,
        item      TEXT    NOT NULL,
        day       TEXT    NOT NULL,
        count     INTEGER NOT NULL,
        last_used TEXT    NOT NULL,
        PRIMARY KEY (plugin, kind, item, day)
    );
    CREATE INDEX usage_days_by_day ON usage_days (day);",
    // 4: `berth bench` results, one row a run.
    "CREATE TABLE bench_runs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        plugin     TEXT    NOT NULL,
        started_at TEXT    NOT NULL,
        report     TEXT    NOT NULL
    );
    CREATE INDEX bench_runs_by_plugin ON bench_runs (plugin, started_at);",
    // 5: the digest each local revision ran (resolved from the engine or a registry) and
    // the trusted key that signed it.
    "ALTER TABLE local_revisions ADD COLUMN image_digest TEXT;
    ALTER TABLE local_revisions ADD COLUMN signed_by TEXT;",
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Which audit records to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this plugin's records.
    pub plugin: Option<String>,
    /// Only this type.
    pub type_: Option<String>,
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
    /// At most this many, the newest ones (all when `None`).
    pub limit: Option<u32>,
}

/// The embedded store. Cheap to share behind an `Arc`; one connection, used under a lock.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating it and its directory if needed) and migrates the store at `path`.
    ///
    /// On Unix a file created here is readable and writable by its owner only (`0600`), as
    /// are its `-wal` and `-shm` companions: local mode keeps plugin tokens in it. The
    /// permissions of a file that already exists are left alone.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        Self::open_file(&path).map_err(|e| crate::fault::classify(&path, e))
    }

    fn open_file(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Directory {
                path: dir.to_path_buf(),
                reason: if dir.is_file() {
                    "it is a file, not a directory".into()
                } else {
                    source.to_string()
                },
            })?;
        }
        let created = create_private(&path)?;
        let conn = Connection::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let store = Self::init(path, conn)?;
        if created {
            restrict_permissions(&store.path)?;
        }
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        Self::init(PathBuf::from(":memory:"), conn)
    }

    fn init(path: PathBuf, mut conn: Connection) -> Result<Self> {
        migrate(&mut conn, SCHEMA_VERSION)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the file.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(current_version)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it when `f` succeeds. SQLite's write
    /// lock is taken up front (waiting up to the busy timeout for other processes), so what
    /// `f` reads cannot change before it writes.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(|e| crate::fault::classify(&self.path, e))
    }

    /// Runs `f` on the connection; a fault of the file (damaged, locked, disk full, no
    /// access) comes back as an error naming it.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock()).map_err(|e| crate::fault::classify(&self.path, e))
    }

    /// Seals `events` onto the chain, in order, in one transaction, and returns them sealed.
    /// Safe with several processes writing the same file: the chain head is read and
    /// advanced under SQLite's write lock.
    pub fn append_audit(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>> {
        self.write(|tx| {
            let head: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit_head WHERE singleton = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let mut chain = match head {
                Some((seq, hash)) => AuditChain::resume(seq.max(0) as u64, hash),
                None => AuditChain::new(),
            };
            let mut sealed = Vec::with_capacity(events.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO audit_events
                 (seq, id, time, actor, plugin, type, details, risk_score, outcome, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for event in events {
                    let e = chain.seal(event);
                    insert.execute(params![
                        e.seq as i64,
                        e.id,
                        e.time,
                        e.actor,
                        e.plugin,
                        e.type_,
                        serde_json::to_string(&e.details)?,
                        e.risk_score,
                        e.outcome,
                        e.prev_hash,
                        e.hash,
                    ])?;
                    sealed.push(e);
                }
            }
            tx.execute(
                "INSERT INTO audit_head (singleton, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (singleton) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![chain.seq() as i64, chain.last_hash()],
            )?;
            Ok(sealed)
        })
    }

    /// Records matching `query`, oldest first.
    pub fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        self.read(|conn| {
            let since = query.since.map(format_time);
            let mut stmt = conn.prepare_cached(
                "SELECT * FROM (
                SELECT seq, id, time, actor, plugin, type, details, risk_score, outcome,
                       prev_hash, hash, position
                FROM audit_events
                WHERE (?1 IS NULL OR plugin = ?1)
                  AND (?2 IS NULL OR type = ?2)
                  AND (?3 IS NULL OR time >= ?3)
                ORDER BY position DESC
                LIMIT ?4
             ) ORDER BY position ASC",
            )?;
            let limit = query.limit.map_or(-1i64, i64::from);
            let rows = stmt.query_map(
                params![query.plugin, query.type_, since, limit],
                row_to_event,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Walks the whole chain in storage order; see [`verify_chain`].
    pub fn verify_audit(&self) -> Result<ChainReport> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, id, time, actor, plugin, type, details, risk_score, outcome,
                    prev_hash, hash, position
             FROM audit_events ORDER BY position ASC",
            )?;
            let events = stmt
                .query_map([], row_to_event)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let head = conn
                .query_row(
                    "SELECT seq, hash FROM audit_head WHERE singleton = 1",
                    [],
                    |r| {
                        Ok(ChainHead {
                            seq: r.get::<_, i64>(0)?.max(0) as u64,
                            hash: r.get(1)?,
                        })
                    },
                )
                .optional()?;
            Ok(verify_chain(&events, head.as_ref()))
        })
    }

    /// Runs `f` on the raw connection. For migrations of other crates' tables and for tests
    /// that tamper with the file on purpose.
    pub fn with_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.read(|conn| Ok(f(conn)?))
    }
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    let details: String = r.get(6)?;
    Ok(AuditEvent {
        seq: r.get::<_, i64>(0)?.max(0) as u64,
        id: r.get(1)?,
        time: r.get(2)?,
        actor: r.get(3)?,
        plugin: r.get(4)?,
        type_: r.get(5)?,
        // A details column that is no longer JSON is kept as a string, so its hash fails.
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        risk_score: r.get(7)?,
        outcome: r.get(8)?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

fn has_schema_table(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn current_version(conn: &Connection) -> Result<u32> {
    let version: Option<u32> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(version.unwrap_or(0))
}

/// How long a statement waits for another process's write lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates `path` empty with mode `0600` unless it exists; true when it was created.
/// SQLite takes an empty file for a new database and gives its `-wal` and `-shm` files the
/// database file's permissions.
#[cfg(unix)]
fn create_private(path: &Path) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<bool> {
    Ok(false)
}

/// Sets mode `0600` on the database file and on its `-wal` and `-shm` files when they exist.
#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Permissions { path: file, source }),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

/// Applies the migrations up to schema version `target` (at most [`SCHEMA_VERSION`]).
fn migrate(conn: &mut Connection, target: u32) -> Result<()> {
    // A store that is up to date is only read, so opening it does not wait for (or fail on)
    // another process's write lock.
    if has_schema_table(conn)? {
        let current = current_version(conn)?;
        if current > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                found: current,
                known: SCHEMA_VERSION,
            });
        }
        if current >= target {
            return Ok(());
        }
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            applied_at TEXT NOT NULL
        );",
    )?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = current_version(&tx)?;
    if current > SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(current as usize)
    {
        let version = i as u32 + 1;
        tx.execute_batch(sql)
            .map_err(|source| Error::Migration { version, source })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, format_time(Timestamp::now())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ChainBreak, types};
    use serde_json::json;

    fn filled(n: usize) -> Store {
        let store = Store::open_in_memory().unwrap();
        let events = (0..n)
            .map(|i| {
                AuditEvent::new("tester", types::SECURITY, "denied")
                    .plugin(if i % 2 == 0 { "calc" } else { "echo" })
                    .details(json!({"i": i}))
            })
            .collect();
        store.append_audit(events).unwrap();
        store
    }

    #[test]
    fn new_store_is_at_the_latest_schema_version() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_store_at_the_previous_version_migrates_and_keeps_its_audit_log() {
        let dir = crate::TempDir::new();
        let path = dir.join("berth.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate(&mut conn, SCHEMA_VERSION - 1).unwrap();
            let old = Store {
                path: path.clone(),
                conn: Mutex::new(conn),
            };
            assert_eq!(old.schema_version().unwrap(), SCHEMA_VERSION - 1);
            let events = (0..3)
                .map(|i| AuditEvent::new("a", types::LIFECYCLE, "success").details(json!({"i": i})))
                .collect();
            old.append_audit(events).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let report = store.verify_audit().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 3);
        let sealed = store
            .append_audit(vec![AuditEvent::new("a", types::LIFECYCLE, "success")])
            .unwrap();
        assert_eq!(sealed[0].seq, 4);
        let versions: Vec<u32> = store
            .with_connection(|c| {
                c.prepare("SELECT version FROM schema_version ORDER BY version")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .unwrap();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        // The new tables are there and seeded.
        assert_eq!(store.change_counter().unwrap(), 0);
        assert!(store.plugins().unwrap().is_empty());
        store.upsert_plugin("calc", "kind: Plugin\n", None).unwrap();
        assert_eq!(store.change_counter().unwrap(), 1);
    }

    #[test]
    fn a_newer_file_is_refused() {
        let dir = crate::TempDir::new();
        let path = dir.join("berth.db");
        Store::open(&path)
            .unwrap()
            .with_connection(|c| {
                c.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?1, 'now')",
                    [SCHEMA_VERSION + 1],
                )
            })
            .unwrap();
        match Store::open(&path) {
            Err(Error::NewerSchema { found, known }) => {
                assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_is_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = crate::TempDir::new();
        let path = dir.join("nested/berth.db");
        let store = Store::open(&path).unwrap();
        store
            .append_audit(vec![AuditEvent::new("a", types::LIFECYCLE, "success")])
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        for suffix in ["-wal", "-shm"] {
            let companion = dir.join(&format!("nested/berth.db{suffix}"));
            assert!(companion.exists(), "{}", companion.display());
            assert_eq!(mode(&companion), 0o600, "{}", companion.display());
        }
        drop(store);
        // Reopening works and does not change anything.
        Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);

        let shared = dir.join("shared.db");
        drop(Connection::open(&shared).unwrap());
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        let store = Store::open(&shared).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(mode(&shared), 0o640);
    }

    #[test]
    fn reopening_a_file_keeps_the_chain_going() {
        let dir = std::env::temp_dir().join(format!("berth-store-{}", uuid::Uuid::now_v7()));
        let path = dir.join("berth.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .append_audit(vec![AuditEvent::new("a", types::LIFECYCLE, "success")])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let sealed = store
            .append_audit(vec![AuditEvent::new("a", types::LIFECYCLE, "success")])
            .unwrap();
        assert_eq!(sealed[0].seq, 2);
        let report = store.verify_audit().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn query_filters_by_plugin_type_since_and_limit() {
        let store = filled(6);
        let calc = store
            .query_audit(&AuditQuery {
                plugin: Some("calc".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(calc.len(), 3);
        assert!(calc.windows(2).all(|w| w[0].seq < w[1].seq));
        let none = store
            .query_audit(&AuditQuery {
                type_: Some(types::LIFECYCLE.into()),
                ..Default::default()
            })
            .unwrap();
        assert!(none.is_empty());
        let future = store
            .query_audit(&AuditQuery {
                since: Some(Timestamp::now() + jiff::SignedDuration::from_secs(60)),
                ..Default::default()
            })
            .unwrap();
        assert!(future.is_empty());
        let newest = store
            .query_audit(&AuditQuery {
                limit: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn untouched_store_verifies() {
        let report = filled(10).verify_audit().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 10);
    }

    #[test]
    fn edited_row_is_detected() {
        let store = filled(10);
        store
            .with_connection(|c| {
                c.execute(
                    "UPDATE audit_events SET outcome = 'success' WHERE seq = 4",
                    [],
                )
            })
            .unwrap();
        match store.verify_audit().unwrap().first_break {
            Some(ChainBreak::Altered { seq: 4, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deleted_row_is_detected() {
        let store = filled(10);
        store
            .with_connection(|c| c.execute("DELETE FROM audit_events WHERE seq = 7", []))
            .unwrap();
        match store.verify_audit().unwrap().first_break {
            Some(ChainBreak::Removed {
                first_missing: 7,
                last_missing: 7,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reordered_rows_are_detected() {
        let store = filled(10);
        // Swap the contents of positions 3 and 5, every column included.
        store
            .with_connection(|c| {
                c.execute_batch(
                    "UPDATE audit_events SET position = -3 WHERE position = 3;
                     UPDATE audit_events SET position = 3 WHERE position = 5;
                     UPDATE audit_events SET position = 5 WHERE position = -3;",
                )
            })
            .unwrap();
        match store.verify_audit().unwrap().first_break {
            Some(ChainBreak::Reordered {
                position: 3,
                seq: 5,
                expected_seq: 3,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
