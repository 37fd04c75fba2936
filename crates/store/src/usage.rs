//! Usage receipts: how often each granted item (an egress rule, an inter-plugin call) was
//! used, per UTC day, as the gateway saw it. The gateway adds its in-memory counts here
//! every audit summary interval and at shutdown; `berth usage` reads them over a window.

use jiff::Timestamp;
use rusqlite::params;
use serde::Serialize;

use crate::time::format_time;
use crate::{Error, Result, Store};

/// Counts of one item on one day (what the gateway adds), or over a window (what
/// [`Store::usage_since`] returns, `day` then being the newest day with a count).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The plugin that used the item.
    pub plugin: String,
    /// `egress` or `call`.
    pub kind: String,
    /// The item's key (see `berth_contract::wire::usage`).
    pub item: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// How many times.
    pub count: u64,
    /// The last use (RFC 3339).
    pub last_used: String,
}

impl UsageRow {
    /// A row for `count` uses, the last at `last_used`, on that instant's UTC day.
    pub fn new(
        plugin: impl Into<String>,
        kind: impl Into<String>,
        item: impl Into<String>,
        count: u64,
        last_used: Timestamp,
    ) -> Self {
        Self {
            plugin: plugin.into(),
            kind: kind.into(),
            item: item.into(),
            day: utc_day(last_used),
            count,
            last_used: format_time(last_used),
        }
    }
}

/// The UTC day of `t`, `YYYY-MM-DD`.
pub fn utc_day(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

impl Store {
    /// Adds `rows` to the day buckets, in one transaction: counts add up, `last_used` keeps
    /// the later time.
    pub fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let counts = rows
            .iter()
            .map(|r| {
                i64::try_from(r.count).map_err(|_| Error::OutOfRange {
                    what: "usage count",
                    value: r.count,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO usage_days (plugin, kind, item, day, count, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (plugin, kind, item, day) DO UPDATE SET
                   count = count + excluded.count,
                   last_used = max(last_used, excluded.last_used)",
            )?;
            for (r, count) in rows.iter().zip(counts) {
                stmt.execute(params![r.plugin, r.kind, r.item, r.day, count, r.last_used])?;
            }
            Ok(())
        })
    }

    /// Per plugin, kind and item: the uses on the days from `since`'s UTC day on (whole
    /// days: the buckets are days), with the last use. Sorted by plugin, kind, item.
    pub fn usage_since(&self, since: Timestamp) -> Result<Vec<UsageRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT plugin, kind, item, max(day), sum(count), max(last_used)
             FROM usage_days WHERE day >= ?1
             GROUP BY plugin, kind, item
             ORDER BY plugin, kind, item",
            )?;
            let rows = stmt
                .query_map([utc_day(since)], |r| {
                    Ok(UsageRow {
                        plugin: r.get(0)?,
                        kind: r.get(1)?,
                        item: r.get(2)?,
                        day: r.get(3)?,
                        count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
                        last_used: r.get(5)?,
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

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn usage_adds_up_per_day_and_keeps_the_last_use() {
        let store = Store::open_in_memory().unwrap();
        store
            .add_usage(&[
                UsageRow::new(
                    "fetch",
                    "egress",
                    "api.example.com 443",
                    2,
                    at("2026-03-01T10:00:00Z"),
                ),
                UsageRow::new("fetch", "call", "calc/add", 1, at("2026-03-01T11:00:00Z")),
            ])
            .unwrap();
        store
            .add_usage(&[UsageRow::new(
                "fetch",
                "egress",
                "api.example.com 443",
                3,
                at("2026-03-01T09:00:00Z"),
            )])
            .unwrap();
        store
            .add_usage(&[UsageRow::new(
                "fetch",
                "egress",
                "api.example.com 443",
                5,
                at("2026-03-03T08:00:00Z"),
            )])
            .unwrap();

        let all = store.usage_since(at("2026-02-01T00:00:00Z")).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].kind.as_str(), all[0].item.as_str(), all[0].count),
            ("call", "calc/add", 1)
        );
        let egress = &all[1];
        assert_eq!(egress.count, 10);
        assert_eq!(egress.last_used, "2026-03-03T08:00:00.000Z");
        assert_eq!(egress.day, "2026-03-03");

        // The window starts on the UTC day of `since`: the 1 March buckets fall out.
        let recent = store.usage_since(at("2026-03-02T23:00:00Z")).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].count, 5);
        assert!(
            store
                .usage_since(at("2026-03-04T00:00:00Z"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn adding_nothing_writes_nothing() {
        let store = Store::open_in_memory().unwrap();
        store.add_usage(&[]).unwrap();
        assert!(store.usage_since(Timestamp::UNIX_EPOCH).unwrap().is_empty());
    }
}
