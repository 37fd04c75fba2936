//! Live tiers: each plugin's tier over a rolling window of the gateway's own series.
//!
//! Nothing here runs per request. On a timer ([`TierSettings::interval`]) the gateway
//! reads the cumulative counts of `berth_invocation_duration_seconds` (per latency
//! bucket) and `berth_invocations_total` (per outcome) of every plugin, and the last
//! CPU and memory readings its backend reported; the difference from the previous
//! reading becomes one slot of the window. The window's slots are summed, the latency
//! quantile is interpolated in the histogram's own buckets (as Prometheus'
//! `histogram_quantile` does), and [`TierThresholds::classify`] rates the result
//! (decision 0062).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::bench::TierInputs;
use berth_api::{LiveTier, Tier, TierThresholds};
use jiff::Timestamp;
use tokio::sync::watch;

use crate::metrics::LATENCY_BUCKETS;

/// The audit event type of a tier change.
pub const TIER_CHANGED: &str = "tier-changed";
/// The audit event type of a benchmark published through `POST /v1/admin/benchmarks`.
pub const BENCHMARK: &str = "benchmark";

/// Outcomes of `berth_invocations_total` that count as failed calls, and those that
/// count as calls without being failures; any other (`invalid_input`, `unavailable`)
/// does not count at all. The rule lives in [`berth_api::bench::outcome_counts`], shared
/// with `berth bench`.
pub use berth_api::bench::{ERROR_OUTCOMES, GOOD_OUTCOMES};

/// How live tiers are computed.
#[derive(Clone, Debug, PartialEq)]
pub struct TierSettings {
    /// How far back the window reaches.
    pub window: Duration,
    /// How often the window advances and tiers are re-evaluated (one slot per interval).
    pub interval: Duration,
    /// Calls the window must hold before a plugin is rated.
    pub min_calls: u64,
    /// Where each tier ends.
    pub thresholds: TierThresholds,
}

impl Default for TierSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            interval: Duration::from_secs(10),
            min_calls: 20,
            thresholds: TierThresholds::default(),
        }
    }
}

/// Reads a thresholds file (YAML or JSON, the shape of [`TierThresholds`]); errors name
/// the file and the field.
pub fn load_thresholds(path: &Path) -> Result<TierThresholds, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tier thresholds {}: {e}", path.display()))?;
    parse_thresholds(&text, &path.display().to_string())
}

/// Parses thresholds from `text`; `origin` names where they came from in errors.
pub fn parse_thresholds(text: &str, origin: &str) -> Result<TierThresholds, String> {
    // serde_yaml's messages name the field path (`gold.latencyMs: invalid type …`).
    let thresholds: TierThresholds =
        serde_yaml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    thresholds
        .check()
        .map_err(|e| format!("{origin}: {e} (the defaults are in docs/gateway.md)"))?;
    Ok(thresholds)
}

/// One plugin's cumulative counts at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Observations of `berth_invocation_duration_seconds` per bucket (not cumulative):
    /// one per bound of the histogram, then the `+Inf` bucket.
    pub buckets: Vec<u64>,
    /// Calls that count (see [`ERROR_OUTCOMES`] and [`GOOD_OUTCOMES`]).
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
}

impl Reading {
    /// What happened between `earlier` and `self`; a series that went backwards was
    /// reset, and everything it holds is new.
    fn since(&self, earlier: Option<&Reading>) -> Reading {
        let Some(earlier) = earlier else {
            return self.clone();
        };
        let reset = self.calls < earlier.calls
            || self.errors < earlier.errors
            || self.buckets.len() != earlier.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .any(|(a, b)| a < b);
        if reset {
            return self.clone();
        }
        Reading {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a - b)
                .collect(),
            calls: self.calls - earlier.calls,
            errors: self.errors - earlier.errors,
        }
    }

    fn add(&mut self, other: &Reading) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.calls += other.calls;
        self.errors += other.errors;
    }
}

pub use berth_api::bench::bucket_quantile;

/// One interval of a plugin's traffic.
#[derive(Clone, Debug)]
struct Slot {
    ended: Instant,
    traffic: Reading,
    resource_ratio: Option<f64>,
}

/// The slots of one plugin that the window still covers.
#[derive(Debug, Default)]
struct PluginWindow {
    last: Option<Reading>,
    slots: VecDeque<Slot>,
    current: Option<LiveTier>,
}

impl PluginWindow {
    fn advance(
        &mut self,
        now: Instant,
        reading: Reading,
        resource_ratio: Option<f64>,
        window: Duration,
    ) {
        let traffic = reading.since(self.last.as_ref());
        self.last = Some(reading);
        self.slots.push_back(Slot {
            ended: now,
            traffic,
            resource_ratio,
        });
        while self
            .slots
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.ended) >= window)
        {
            self.slots.pop_front();
        }
    }

    fn rate(&self, settings: &TierSettings) -> (u64, Option<TierInputs>) {
        let mut total = Reading::default();
        let mut resource_ratio: Option<f64> = None;
        for slot in &self.slots {
            total.add(&slot.traffic);
            if let Some(r) = slot.resource_ratio {
                resource_ratio = Some(resource_ratio.map_or(r, |m| m.max(r)));
            }
        }
        if total.calls == 0 || total.calls < settings.min_calls {
            return (total.calls, None);
        }
        let quantile = settings.thresholds.latency_quantile;
        // No call reached the plugin (every one refused by its breaker or limit): the
        // error ratio alone rates it.
        let latency = bucket_quantile(quantile, LATENCY_BUCKETS, &total.buckets).unwrap_or(0.0);
        let inputs = TierInputs {
            latency_ms: latency * 1000.0,
            error_ratio: total.errors as f64 / total.calls as f64,
            resource_ratio,
        };
        (total.calls, Some(inputs))
    }
}

/// A tier that changed at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct TierChange {
    /// The plugin.
    pub plugin: String,
    /// The tier before (`None`: unrated).
    pub from: Option<Tier>,
    /// The tier now, with what it came from.
    pub to: LiveTier,
}

/// Every plugin's live tier, advanced by [`LiveTiers::evaluate`].
pub struct LiveTiers {
    settings: TierSettings,
    windows: Mutex<HashMap<String, PluginWindow>>,
    published: watch::Sender<Arc<BTreeMap<String, LiveTier>>>,
}

impl std::fmt::Debug for LiveTiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTiers")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LiveTiers {
    /// No plugin rated yet.
    pub fn new(settings: TierSettings) -> Self {
        Self {
            settings,
            windows: Mutex::new(HashMap::new()),
            published: watch::Sender::new(Arc::default()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &TierSettings {
        &self.settings
    }

    /// Follows every evaluation's tiers.
    pub fn subscribe(&self) -> watch::Receiver<Arc<BTreeMap<String, LiveTier>>> {
        self.published.subscribe()
    }

    /// The tiers of the last evaluation.
    pub fn current(&self) -> Arc<BTreeMap<String, LiveTier>> {
        self.published.borrow().clone()
    }

    /// What an unrated plugin shows before its first evaluation.
    pub fn unrated(&self) -> LiveTier {
        LiveTier {
            tier: None,
            reasons: Vec::new(),
            calls: 0,
            window_seconds: self.settings.window.as_secs(),
            inputs: None,
            since: None,
        }
    }

    /// Advances every plugin's window to `now` with its cumulative `readings` (plugin,
    /// counts, resource use over limits) and rates it. Plugins missing from `readings`
    /// left the directory and are forgotten. Returns the tiers that changed (a first
    /// rating included); `wall` stamps their `since`.
    pub fn evaluate(
        &self,
        now: Instant,
        wall: Timestamp,
        readings: impl IntoIterator<Item = (String, Reading, Option<f64>)>,
    ) -> Vec<TierChange> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = BTreeMap::new();
        let mut changes = Vec::new();
        for (plugin, reading, resource_ratio) in readings {
            let window = windows.entry(plugin.clone()).or_default();
            window.advance(now, reading, resource_ratio, self.settings.window);
            let (calls, inputs) = window.rate(&self.settings);
            let verdict = inputs.map(|i| self.settings.thresholds.classify(&i));
            let previous = window.current.as_ref();
            let from = previous.and_then(|p| p.tier);
            let to = verdict.as_ref().map(|v| v.tier);
            let changed = from != to;
            let since = if changed {
                // Unrated at start is no change, only the first rating is.
                (previous.is_some() || to.is_some()).then(|| wall.to_string())
            } else {
                previous.and_then(|p| p.since.clone())
            };
            let live = LiveTier {
                tier: to,
                reasons: verdict.map(|v| v.reasons).unwrap_or_default(),
                calls,
                window_seconds: self.settings.window.as_secs(),
                inputs,
                since,
            };
            if changed {
                changes.push(TierChange {
                    plugin: plugin.clone(),
                    from,
                    to: live.clone(),
                });
            }
            window.current = Some(live.clone());
            seen.insert(plugin, live);
        }
        windows.retain(|name, _| seen.contains_key(name));
        drop(windows);
        self.published.send_replace(Arc::new(seen));
        changes
    }
}

/// Every directory plugin's cumulative counts and resource use over its limits, read
/// from `metrics` (plugins never invoked read as zero).
pub fn read_metrics(
    metrics: &crate::Metrics,
    snapshot: &berth_contract::DirectorySnapshot,
) -> Vec<(String, Reading, Option<f64>)> {
    use prometheus::core::Collector;

    use crate::metrics::label_value;

    let mut readings: HashMap<String, Reading> = HashMap::new();
    // Per plugin, the cumulative count at each bound, summed over its capabilities.
    let mut cumulative: HashMap<String, (Vec<u64>, u64)> = HashMap::new();
    for family in metrics.invocation_duration.collect() {
        for m in family.get_metric() {
            let plugin = label_value(m, "plugin");
            let histogram = m.get_histogram();
            let entry = cumulative
                .entry(plugin)
                .or_insert_with(|| (vec![0; LATENCY_BUCKETS.len()], 0));
            for (sum, bucket) in entry.0.iter_mut().zip(histogram.get_bucket()) {
                *sum += bucket.cumulative_count();
            }
            entry.1 += histogram.get_sample_count();
        }
    }
    for (plugin, (bounds, count)) in cumulative {
        let mut buckets = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0;
        for c in bounds.iter().copied().chain([count]) {
            buckets.push(c.saturating_sub(below));
            below = c.max(below);
        }
        readings.entry(plugin).or_default().buckets = buckets;
    }
    for family in metrics.invocations.collect() {
        for m in family.get_metric() {
            let outcome = label_value(m, "outcome");
            let failed = match berth_api::bench::outcome_counts(&outcome) {
                berth_api::bench::Counted::Error => true,
                berth_api::bench::Counted::Good => false,
                berth_api::bench::Counted::NotCounted => continue,
            };
            let n = m.get_counter().get_value() as u64;
            let reading = readings.entry(label_value(m, "plugin")).or_default();
            reading.calls += n;
            if failed {
                reading.errors += n;
            }
        }
    }
    let mut cpu: HashMap<String, f64> = HashMap::new();
    for family in metrics.cpu_cores.collect() {
        for m in family.get_metric() {
            cpu.insert(label_value(m, "plugin"), m.get_gauge().get_value());
        }
    }
    let mut memory: HashMap<String, f64> = HashMap::new();
    for family in metrics.memory_bytes.collect() {
        for m in family.get_metric() {
            memory.insert(label_value(m, "plugin"), m.get_gauge().get_value());
        }
    }
    snapshot
        .plugins()
        .map(|entry| {
            let name = entry.name();
            let mut reading = readings.remove(name).unwrap_or_default();
            if reading.buckets.is_empty() {
                reading.buckets = vec![0; LATENCY_BUCKETS.len() + 1];
            }
            let limits = entry.plugin.spec.resources.resolve().ok();
            let ratio = limits.and_then(|l| {
                let cpu = cpu
                    .get(name)
                    .filter(|_| l.cpu_millis > 0)
                    .map(|c| c * 1000.0 / l.cpu_millis as f64);
                let memory = memory
                    .get(name)
                    .filter(|_| l.memory_bytes > 0)
                    .map(|m| m / l.memory_bytes as f64);
                match (cpu, memory) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            });
            (name.to_owned(), reading, ratio)
        })
        .collect()
}

/// The gauge value of a live tier: 0 when unrated.
pub fn gauge_value(tier: Option<Tier>) -> i64 {
    tier.map_or(0, Tier::gauge_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading of `calls` calls (of which `errors` failed), all in the bucket of `le`.
    fn reading(calls: u64, errors: u64, le: f64) -> Reading {
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| *b >= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        buckets[i] = calls;
        Reading {
            buckets,
            calls,
            errors,
        }
    }

    fn tiers(min_calls: u64) -> LiveTiers {
        LiveTiers::new(TierSettings {
            window: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            min_calls,
            thresholds: TierThresholds::default(),
        })
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn quantiles_interpolate_in_the_histogram_buckets() {
        let bounds = [0.1, 0.2, 0.4];
        // 10 calls ≤ 0.1 s, 10 in (0.1, 0.2].
        let buckets = [10, 10, 0, 0];
        assert_eq!(bucket_quantile(0.5, &bounds, &buckets), Some(0.1));
        let p90 = bucket_quantile(0.9, &bounds, &buckets).unwrap();
        assert!((p90 - 0.18).abs() < 1e-9, "{p90}");
        assert_eq!(bucket_quantile(0.9, &bounds, &[0, 0, 0, 5]), Some(0.4));
        assert_eq!(bucket_quantile(0.9, &bounds, &[0, 0, 0, 0]), None);
    }

    #[test]
    fn a_plugin_is_unrated_until_the_window_holds_the_minimum_calls() {
        let t = tiers(20);
        let start = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        let changes = t.evaluate(
            at(start, 0),
            wall,
            [("calc".into(), reading(5, 0, 0.01), None)],
        );
        assert!(changes.is_empty(), "unrated at start is no change");
        let live = &t.current()["calc"];
        assert_eq!(
            (live.tier, live.calls, live.since.as_deref()),
            (None, 5, None)
        );

        let changes = t.evaluate(
            at(start, 10),
            wall,
            [("calc".into(), reading(25, 0, 0.01), None)],
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].from, None);
        assert_eq!(changes[0].to.tier, Some(Tier::Platinum));
        assert_eq!(changes[0].to.calls, 25);
        assert!(changes[0].to.since.is_some());
    }

    #[test]
    fn slow_answers_and_errors_lower_the_tier_with_reasons() {
        let t = tiers(10);
        let start = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        t.evaluate(
            at(start, 0),
            wall,
            [("calc".into(), reading(100, 0, 0.01), None)],
        );
        assert_eq!(t.current()["calc"].tier, Some(Tier::Platinum));
        // 100 more calls, all between 1 and 2.5 s: p90 of the window is above 1 s.
        let mut slow = reading(100, 0, 0.01);
        slow.add(&reading(100, 0, 2.0));
        let changes = t.evaluate(at(start, 10), wall, [("calc".into(), slow.clone(), None)]);
        assert_eq!(changes[0].from, Some(Tier::Platinum));
        let live = &t.current()["calc"];
        assert_eq!(live.tier, Some(Tier::Bronze));
        assert!(
            live.reasons[0].starts_with("p90 latency"),
            "{:?}",
            live.reasons
        );
        assert!(live.inputs.unwrap().latency_ms > 1000.0);

        // Errors: 3 of 200 more → 1.5 % over the window.
        let t = tiers(10);
        t.evaluate(
            at(start, 0),
            wall,
            [("calc".into(), reading(197, 3, 0.01), None)],
        );
        let live = &t.current()["calc"];
        assert_eq!(live.tier, Some(Tier::Silver));
        assert!(
            live.reasons[0].starts_with("error ratio 1.523 %"),
            "{:?}",
            live.reasons
        );
    }

    #[test]
    fn old_slots_leave_the_window() {
        let t = tiers(10);
        let start = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        // A burst of failures, then only successes.
        t.evaluate(
            at(start, 0),
            wall,
            [("calc".into(), reading(50, 50, 0.01), None)],
        );
        assert_eq!(t.current()["calc"].tier, Some(Tier::Bronze));
        let mut later = reading(50, 50, 0.01);
        later.add(&reading(50, 0, 0.01));
        t.evaluate(at(start, 30), wall, [("calc".into(), later.clone(), None)]);
        assert_eq!(
            t.current()["calc"].tier,
            Some(Tier::Bronze),
            "still in the window"
        );
        later.add(&reading(50, 0, 0.01));
        let changes = t.evaluate(at(start, 60), wall, [("calc".into(), later, None)]);
        let live = &t.current()["calc"];
        assert_eq!(
            live.calls, 100,
            "the first slot is 60 s old: out of a 60 s window"
        );
        assert_eq!(live.tier, Some(Tier::Platinum));
        assert_eq!(changes[0].from, Some(Tier::Bronze));
    }

    #[test]
    fn resource_use_near_the_limit_demotes() {
        let t = tiers(10);
        let start = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        t.evaluate(
            at(start, 0),
            wall,
            [("calc".into(), reading(50, 0, 0.01), Some(0.97))],
        );
        t.evaluate(
            at(start, 10),
            wall,
            [("calc".into(), reading(60, 0, 0.01), Some(0.1))],
        );
        let live = &t.current()["calc"];
        assert_eq!(live.tier, Some(Tier::Bronze), "the window's peak counts");
        assert_eq!(live.inputs.unwrap().resource_ratio, Some(0.97));
    }

    #[test]
    fn a_reset_series_counts_from_zero_and_gone_plugins_are_forgotten() {
        let t = tiers(10);
        let start = Instant::now();
        let wall = Timestamp::UNIX_EPOCH;
        t.evaluate(
            at(start, 0),
            wall,
            [("calc".into(), reading(100, 0, 0.01), None)],
        );
        t.evaluate(
            at(start, 10),
            wall,
            [("calc".into(), reading(5, 5, 0.01), None)],
        );
        assert_eq!(t.current()["calc"].calls, 105);
        t.evaluate(at(start, 20), wall, Vec::new());
        assert!(t.current().is_empty());
        let mut rx = t.subscribe();
        t.evaluate(
            at(start, 30),
            wall,
            [("calc".into(), reading(1, 0, 0.01), None)],
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update()["calc"].calls, 1, "a new window");
    }

    #[test]
    fn thresholds_files_are_checked_and_errors_name_file_and_field() {
        let ok = "latencyQuantile: 0.99\nplatinum: {latencyMs: 100, errorRatio: 0.001, resourceRatio: 0.8}\ngold: {latencyMs: 200, errorRatio: 0.01, resourceRatio: 0.9}\nsilver: {latencyMs: 400, errorRatio: 0.05, resourceRatio: 0.95}\n";
        let t = parse_thresholds(ok, "tiers.yaml").unwrap();
        assert_eq!(t.latency_quantile, 0.99);
        let typo = ok.replace("errorRatio: 0.01,", "errorRate: 0.01,");
        let e = parse_thresholds(&typo, "tiers.yaml").unwrap_err();
        assert!(
            e.starts_with("tiers.yaml: gold: unknown field `errorRate`"),
            "{e}"
        );
        let backwards = ok.replace("latencyMs: 200", "latencyMs: 50");
        let e = parse_thresholds(&backwards, "tiers.yaml").unwrap_err();
        assert!(e.starts_with("tiers.yaml: platinum:"), "{e}");
        let e = load_thresholds(Path::new("/nonexistent/tiers.yaml")).unwrap_err();
        assert!(e.contains("/nonexistent/tiers.yaml"), "{e}");
    }
}
