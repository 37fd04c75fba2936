//! Usage receipts: how often each granted item was used, and when last, as the gateway
//! saw it. An egress connection or request counts for the granted rule that allowed it; a
//! plugin-to-plugin invocation for the call item that allowed it.
//!
//! The request path only bumps in-memory counters. Every `--audit-summary-interval` and at
//! shutdown the gateway takes what was counted since the last time ([`UsageCounters::take`]):
//! one `egress-summary` audit event per plugin that used egress, and day buckets in the
//! store when the gateway writes one (local mode), or in memory otherwise.
//! `GET /v1/admin/usage` puts the directory's grants beside the stored and pending counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use berth_contract::wire::usage::{
    GrantedItems, MAX_DESTINATIONS, MORE_DESTINATIONS, UsageKind, UsedItem, destination_item,
    usage_report,
};
use berth_store::audit::types;
use berth_store::{AuditEvent, Store, UsageRow};
use http::HeaderMap;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::gateway::Gateway;
use crate::{Error, Result};

/// The window `GET /v1/admin/usage` covers without `?since=`.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;
/// How long day buckets kept in memory (no store) live, so a long-running gateway's
/// buckets stay bounded.
pub const MEMORY_RETENTION_DAYS: i64 = 400;

/// One item's counts since the last [`UsageCounters::take`].
#[derive(Debug, Default)]
struct Counter {
    count: AtomicU64,
    last_ms: AtomicI64,
}

type Key = (UsageKind, String);
/// A day bucket's key: plugin, kind, item, UTC day.
type DayKey = (String, UsageKind, String, String);
/// Per plugin and direction (`sent`, `received`): egress bytes so far.
type ByteTotals = HashMap<(String, String), u64>;

/// The in-memory counters, per plugin and item. Items are bounded by the grants.
#[derive(Debug, Default)]
pub struct UsageCounters {
    plugins: RwLock<HashMap<String, HashMap<Key, Arc<Counter>>>>,
}

/// What one item counted between two takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The plugin.
    pub plugin: String,
    /// Egress rule or call item.
    pub kind: UsageKind,
    /// The item's key.
    pub item: String,
    /// Uses.
    pub count: u64,
    /// The last use.
    pub last_used: Timestamp,
}

impl UsageCounters {
    /// Counts one use of `item` by `plugin`, now.
    pub fn record(&self, plugin: &str, kind: UsageKind, item: String) {
        self.record_n(plugin, kind, item, 1, Timestamp::now());
    }

    /// Counts one connection of `plugin` to `destination` (`host:port`) through the egress
    /// rule keyed `rule_item`. A plugin's destinations are remembered up to
    /// [`MAX_DESTINATIONS`]; further ones count under [`MORE_DESTINATIONS`] for their rule.
    pub fn record_destination(&self, plugin: &str, rule_item: &str, destination: &str) {
        let item = destination_item(rule_item, destination);
        let key = (UsageKind::Destination, item);
        let known = {
            let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
            match plugins.get(plugin) {
                Some(items) if items.contains_key(&key) => true,
                Some(items) => {
                    items
                        .keys()
                        .filter(|(kind, _)| *kind == UsageKind::Destination)
                        .count()
                        < MAX_DESTINATIONS
                }
                None => true,
            }
        };
        let item = if known {
            key.1
        } else {
            destination_item(rule_item, MORE_DESTINATIONS)
        };
        self.record(plugin, UsageKind::Destination, item);
    }

    fn record_n(&self, plugin: &str, kind: UsageKind, item: String, n: u64, at: Timestamp) {
        let key = (kind, item);
        let existing = self
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(plugin)
            .and_then(|items| items.get(&key).cloned());
        let counter = match existing {
            Some(c) => c,
            None => self
                .plugins
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(plugin.to_owned())
                .or_default()
                .entry(key)
                .or_default()
                .clone(),
        };
        counter.count.fetch_add(n, Ordering::Relaxed);
        counter
            .last_ms
            .fetch_max(at.as_millisecond(), Ordering::Relaxed);
    }

    /// What was counted since the last take, resetting the counts; items with no use are
    /// left out.
    pub fn take(&self) -> Vec<Taken> {
        self.read(true)
    }

    /// What was counted since the last take, leaving the counts alone.
    pub fn pending(&self) -> Vec<Taken> {
        self.read(false)
    }

    fn read(&self, reset: bool) -> Vec<Taken> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (plugin, items) in plugins.iter() {
            for ((kind, item), c) in items {
                let count = if reset {
                    c.count.swap(0, Ordering::Relaxed)
                } else {
                    c.count.load(Ordering::Relaxed)
                };
                if count == 0 {
                    continue;
                }
                let last_used = Timestamp::from_millisecond(c.last_ms.load(Ordering::Relaxed))
                    .unwrap_or_else(|_| Timestamp::now());
                out.push(Taken {
                    plugin: plugin.clone(),
                    kind: *kind,
                    item: item.clone(),
                    count,
                    last_used,
                });
            }
        }
        out.sort_by(|a, b| (&a.plugin, a.kind, &a.item).cmp(&(&b.plugin, b.kind, &b.item)));
        out
    }

    /// Puts counts back (a flush that could not be written).
    fn restore(&self, taken: Vec<Taken>) {
        for t in taken {
            self.record_n(&t.plugin, t.kind, t.item, t.count, t.last_used);
        }
    }
}

/// Counters, where flushed counts go, and the state of the egress summary.
#[derive(Debug)]
pub(crate) struct UsageBook {
    pub counters: UsageCounters,
    store: OnceLock<Arc<Store>>,
    /// Day buckets kept in memory when there is no store: (plugin, kind, item, day).
    days: Mutex<BTreeMap<DayKey, (u64, String)>>,
    /// Held while counts move from the counters to the buckets, so a report never sees
    /// them in both places or in neither.
    moving: tokio::sync::Mutex<()>,
    /// Start of the current egress summary interval, and the per-plugin byte totals then.
    summary: Mutex<(Timestamp, ByteTotals)>,
}

impl UsageBook {
    pub fn new() -> Self {
        Self {
            counters: UsageCounters::default(),
            store: OnceLock::new(),
            days: Mutex::new(BTreeMap::new()),
            moving: tokio::sync::Mutex::new(()),
            summary: Mutex::new((Timestamp::now(), HashMap::new())),
        }
    }
}

/// Per plugin and direction (`sent`, `received`): the egress bytes counted so far.
fn egress_bytes(metrics: &crate::Metrics) -> ByteTotals {
    use prometheus::core::Collector;
    let mut out = HashMap::new();
    for family in metrics.egress_bytes.collect() {
        for m in family.get_metric() {
            let label = |name: &str| crate::metrics::label_value(m, name);
            out.insert(
                (label("plugin"), label("direction")),
                m.get_counter().get_value() as u64,
            );
        }
    }
    out
}

impl Gateway {
    /// The usage counters (benchmarks and tests read them).
    pub fn usage(&self) -> &UsageCounters {
        &self.inner.usage.counters
    }

    /// Writes flushed usage into `store` from now on (the local gateway's SQLite store);
    /// without one the day buckets stay in memory. Only the first store set counts.
    pub fn set_usage_store(&self, store: Arc<Store>) {
        let _ = self.inner.usage.store.set(store);
    }

    /// Moves the counts since the last flush into the day buckets (the store, or memory)
    /// and records one `egress-summary` audit event per plugin that used egress. Runs every
    /// `--audit-summary-interval` and at shutdown.
    pub async fn flush_usage(&self) {
        let book = &self.inner.usage;
        let _moving = book.moving.lock().await;
        let taken = book.counters.take();
        self.summarize_egress(&taken);
        if taken.is_empty() {
            return;
        }
        match book.store.get().cloned() {
            Some(store) => {
                let rows: Vec<UsageRow> = taken
                    .iter()
                    .map(|t| {
                        UsageRow::new(&t.plugin, t.kind.as_str(), &t.item, t.count, t.last_used)
                    })
                    .collect();
                let written = tokio::task::spawn_blocking(move || store.add_usage(&rows)).await;
                let error = match written {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(
                    error,
                    "usage receipts could not be written; kept for the next flush"
                );
                book.counters.restore(taken);
            }
            None => {
                let mut days = book.days.lock().unwrap_or_else(|p| p.into_inner());
                if let Ok(oldest) = Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_hours(24 * MEMORY_RETENTION_DAYS))
                {
                    let oldest = berth_store::usage::utc_day(oldest);
                    days.retain(|(_, _, _, day), _| *day >= oldest);
                }
                for t in taken {
                    let row =
                        UsageRow::new(&t.plugin, t.kind.as_str(), &t.item, t.count, t.last_used);
                    let entry = days
                        .entry((t.plugin, t.kind, t.item, row.day))
                        .or_insert((0, String::new()));
                    entry.0 += t.count;
                    if row.last_used > entry.1 {
                        entry.1 = row.last_used;
                    }
                }
            }
        }
    }

    fn summarize_egress(&self, taken: &[Taken]) {
        let now = Timestamp::now();
        let bytes = egress_bytes(self.metrics());
        let (from, last_bytes) = {
            let mut summary = self
                .inner
                .usage
                .summary
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *summary, (now, bytes.clone()))
        };
        let mut per_plugin: BTreeMap<&str, (u64, Map<String, Value>)> = BTreeMap::new();
        for t in taken.iter().filter(|t| t.kind == UsageKind::Egress) {
            let entry = per_plugin.entry(&t.plugin).or_default();
            entry.0 += t.count;
            entry.1.insert(
                t.item.clone(),
                json!({"connections": t.count, "lastUsed": berth_store::format_time(t.last_used)}),
            );
        }
        let delta = |plugin: &str, direction: &str| {
            let key = (plugin.to_owned(), direction.to_owned());
            bytes
                .get(&key)
                .copied()
                .unwrap_or(0)
                .saturating_sub(last_bytes.get(&key).copied().unwrap_or(0))
        };
        for (plugin, (connections, rules)) in per_plugin {
            self.auditor().record(
                AuditEvent::new("gateway", types::EGRESS_SUMMARY, "success")
                    .plugin(plugin)
                    .details(json!({
                        "from": berth_store::format_time(from),
                        "to": berth_store::format_time(now),
                        "connections": connections,
                        "bytesSent": delta(plugin, "sent"),
                        "bytesReceived": delta(plugin, "received"),
                        "rules": rules,
                    })),
            );
        }
    }

    /// The usage report over the window from `since`: stored (or in-memory) day buckets
    /// plus the counts not flushed yet, beside the directory's grants.
    pub async fn usage_report(
        &self,
        since: Timestamp,
    ) -> Result<berth_contract::wire::UsageReportWire> {
        let book = &self.inner.usage;
        let _moving = book.moving.lock().await;
        let mut used: Vec<UsedItem> = match book.store.get().cloned() {
            Some(store) => tokio::task::spawn_blocking(move || store.usage_since(since))
                .await
                .map_err(|e| Error::Config(format!("reading usage: {e}")))??
                .into_iter()
                .filter_map(|r| {
                    Some(UsedItem {
                        kind: UsageKind::parse(&r.kind)?,
                        plugin: r.plugin,
                        item: r.item,
                        count: r.count,
                        last_used: r.last_used,
                    })
                })
                .collect(),
            None => {
                let first_day = berth_store::usage::utc_day(since);
                book.days
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|((_, _, _, day), _)| *day >= first_day)
                    .map(|((plugin, kind, item, _), (count, last))| UsedItem {
                        plugin: plugin.clone(),
                        kind: *kind,
                        item: item.clone(),
                        count: *count,
                        last_used: last.clone(),
                    })
                    .collect()
            }
        };
        used.extend(book.counters.pending().into_iter().map(|t| UsedItem {
            plugin: t.plugin,
            kind: t.kind,
            item: t.item,
            count: t.count,
            last_used: berth_store::format_time(t.last_used),
        }));
        let snapshot = self.snapshot();
        let granted: Vec<GrantedItems<'_>> = snapshot
            .plugins()
            .map(|e| GrantedItems {
                plugin: e.name(),
                requested: Some(&e.plugin.spec.permissions),
                egress: &e.granted_egress,
                calls: &e.granted_calls,
            })
            .collect();
        Ok(usage_report(
            berth_store::format_time(since),
            berth_store::format_time(Timestamp::now()),
            &granted,
            &used,
        ))
    }
}

/// The query of `GET /v1/admin/usage`.
#[derive(serde::Deserialize)]
pub(crate) struct UsageQuery {
    since: Option<String>,
}

/// `since` as an RFC 3339 time, or a duration (`30d`, `12h`) back from now.
pub fn parse_since(text: &str) -> std::result::Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let duration = text
        .parse::<jiff::Span>()
        .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        .ok()
        .filter(|d| !d.is_negative())
        .ok_or_else(|| {
            format!("since: {text:?} is not a duration (`30d`, `12h`) or an RFC 3339 time")
        })?;
    Timestamp::now()
        .checked_sub(duration)
        .map_err(|_| format!("since: {text:?} is out of range"))
}

/// `GET /v1/admin/usage?since=…` (admin).
pub(crate) async fn get_usage(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<UsageQuery>,
) -> Response {
    async {
        crate::admin::require_admin(&gateway, &headers, berth_contract::wire::PATH_ADMIN_USAGE)?;
        let since = match query.since.as_deref() {
            Some(text) => parse_since(text).map_err(|message| Error::BadRequest {
                code: "invalid_query",
                message,
            })?,
            None => Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_hours(24 * DEFAULT_WINDOW_DAYS))
                .unwrap_or(Timestamp::UNIX_EPOCH),
        };
        Ok::<_, Error>(Json(gateway.usage_report(since).await?).into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_reset_when_taken() {
        let counters = UsageCounters::default();
        counters.record("fetch", UsageKind::Egress, "api.example.com 443".into());
        counters.record("fetch", UsageKind::Egress, "api.example.com 443".into());
        counters.record("fetch", UsageKind::Call, "calc/add".into());
        assert_eq!(counters.pending().len(), 2);
        let taken = counters.take();
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].kind, taken[0].count), (UsageKind::Egress, 2));
        assert_eq!((taken[1].kind, taken[1].count), (UsageKind::Call, 1));
        assert!(counters.take().is_empty());
        counters.restore(taken);
        assert_eq!(counters.take().len(), 2);
    }

    #[test]
    fn since_takes_a_time_or_a_duration() {
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z").unwrap().to_string(),
            "2026-01-02T03:04:05Z"
        );
        let ago = parse_since("2d").unwrap();
        let hours = Timestamp::now().duration_since(ago).as_hours();
        assert!((47..=48).contains(&hours), "{hours}");
        assert!(parse_since("soon").unwrap_err().contains("since: \"soon\""));
        assert!(parse_since("-2d").is_err());
    }
}

#[test]
fn destinations_are_remembered_up_to_a_bound_and_then_counted_together() {
    let counters = UsageCounters::default();
    for i in 0..MAX_DESTINATIONS + 5 {
        counters.record_destination("fetch", "* 443", &format!("h{i}.test:443"));
    }
    counters.record_destination("fetch", "* 443", "h0.test:443");
    let taken = counters.take();
    assert_eq!(taken.len(), MAX_DESTINATIONS + 1);
    let more = destination_item("* 443", MORE_DESTINATIONS);
    let more = taken.iter().find(|t| t.item == more).unwrap();
    assert_eq!(more.count, 5);
    let first = destination_item("* 443", "h0.test:443");
    assert_eq!(taken.iter().find(|t| t.item == first).unwrap().count, 2);
}
