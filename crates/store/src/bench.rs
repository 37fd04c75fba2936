//! `berth bench` results: one row a run, the whole `BenchReport` as JSON, so the HTML
//! report can compare a run with the previous runs of the same plugin.

use rusqlite::params;

use crate::{Result, Store};

/// One stored run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchRun {
    /// Row id, increasing with each run stored.
    pub id: i64,
    /// The plugin benchmarked.
    pub plugin: String,
    /// RFC 3339 time the measured part began.
    pub started_at: String,
    /// The `BenchReport` as JSON.
    pub report: String,
}

impl Store {
    /// Stores one run of `plugin`; returns its id.
    pub fn add_bench_run(&self, plugin: &str, started_at: &str, report_json: &str) -> Result<i64> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO bench_runs (plugin, started_at, report) VALUES (?1, ?2, ?3)",
                params![plugin, started_at, report_json],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// The newest `limit` runs of `plugin`, newest first.
    pub fn bench_runs(&self, plugin: &str, limit: usize) -> Result<Vec<BenchRun>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, plugin, started_at, report FROM bench_runs
                 WHERE plugin = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![plugin, limit], |r| {
                    Ok(BenchRun {
                        id: r.get(0)?,
                        plugin: r.get(1)?,
                        started_at: r.get(2)?,
                        report: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_listed_per_plugin_newest_first() {
        let store = Store::open_in_memory().unwrap();
        let a = store
            .add_bench_run("calc", "2026-03-01T10:00:00Z", r#"{"n":1}"#)
            .unwrap();
        store
            .add_bench_run("other", "2026-03-01T10:30:00Z", "{}")
            .unwrap();
        let b = store
            .add_bench_run("calc", "2026-03-01T11:00:00Z", r#"{"n":2}"#)
            .unwrap();
        assert!(b > a);
        let runs = store.bench_runs("calc", 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].id, runs[0].report.as_str()), (b, r#"{"n":2}"#));
        assert_eq!(runs[1].started_at, "2026-03-01T10:00:00Z");
        assert_eq!(store.bench_runs("calc", 1).unwrap().len(), 1);
        assert!(store.bench_runs("none", 10).unwrap().is_empty());
    }
}
