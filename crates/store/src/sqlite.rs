//! The SQLite file: migrations and the audit table.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::audit::{AuditChain, AuditEvent, ChainHead, ChainReport, format_time, verify_chain};
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
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(path, conn)
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        Self::init(PathBuf::from(":memory:"), conn)
    }

    fn init(path: PathBuf, mut conn: Connection) -> Result<Self> {
        migrate(&mut conn)?;
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
        current_version(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals `events` onto the chain, in order, in one transaction, and returns them sealed.
    /// Safe with several processes writing the same file: the chain head is read and
    /// advanced under SQLite's write lock.
    pub fn append_audit(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        tx.commit()?;
        Ok(sealed)
    }

    /// Records matching `query`, oldest first.
    pub fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let conn = self.lock();
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
    }

    /// Walks the whole chain in storage order; see [`verify_chain`].
    pub fn verify_audit(&self) -> Result<ChainReport> {
        let conn = self.lock();
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
    }

    /// Runs `f` on the raw connection. For migrations of other crates' tables and for tests
    /// that tamper with the file on purpose.
    pub fn with_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        Ok(f(&self.lock())?)
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

fn current_version(conn: &Connection) -> Result<u32> {
    let version: Option<u32> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(version.unwrap_or(0))
}

fn migrate(conn: &mut Connection) -> Result<()> {
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
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
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
