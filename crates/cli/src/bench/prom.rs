//! The gateway's view of a run: its Prometheus text (`GET /metrics`) scraped before and
//! after, and the deltas of `berth_invocation_duration_seconds`,
//! `berth_invocation_upstream_seconds` and `berth_invocations_total` for the plugin and
//! the capabilities driven. Quantiles are interpolated linearly inside the bucket that
//! holds them, as PromQL's `histogram_quantile` does.

use std::collections::BTreeMap;

use berth_api::bench::{GatewayView, Latency};
use prometheus_parse::{Scrape, Value};

/// The gateway's end-to-end histogram.
pub const DURATION: &str = "berth_invocation_duration_seconds";
/// The time spent waiting for the plugin.
pub const UPSTREAM: &str = "berth_invocation_upstream_seconds";
/// Invocations by outcome.
pub const INVOCATIONS: &str = "berth_invocations_total";
/// The plugin's CPU in cores.
pub const CPU: &str = "berth_plugin_cpu_cores";
/// The plugin's memory in bytes.
pub const MEMORY: &str = "berth_plugin_memory_bytes";

/// One parsed scrape.
pub struct Snapshot(Scrape);

impl Snapshot {
    /// Parses Prometheus text.
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .map(Snapshot)
            .map_err(|e| format!("not Prometheus text: {e}"))
    }

    fn matching<'a>(
        &'a self,
        metric: &'a str,
        plugin: &'a str,
        capabilities: &'a [String],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == metric
                && s.labels.get("plugin") == Some(plugin)
                && s.labels
                    .get("capability")
                    .is_none_or(|c| capabilities.iter().any(|x| x == c))
        })
    }

    /// Whether the scrape has any series of `metric`.
    pub fn has(&self, metric: &str) -> bool {
        self.0.samples.iter().any(|s| s.metric == metric)
    }

    /// The histogram of `metric` for the plugin, summed over the capabilities: cumulative
    /// bucket counts by upper bound, the sum and the count.
    pub fn histogram(&self, metric: &str, plugin: &str, capabilities: &[String]) -> Hist {
        let mut h = Hist::default();
        for s in self.matching(metric, plugin, capabilities) {
            if let Value::Histogram(buckets) = &s.value {
                for b in buckets {
                    *h.buckets.entry(Bound(b.less_than)).or_default() += b.count;
                }
            }
        }
        let sum = format!("{metric}_sum");
        let count = format!("{metric}_count");
        for s in self.matching(&sum, plugin, capabilities) {
            h.sum += value(&s.value);
        }
        for s in self.matching(&count, plugin, capabilities) {
            h.count += value(&s.value);
        }
        h
    }

    /// `berth_invocations_total` for the plugin by outcome, summed over the capabilities.
    pub fn outcomes(&self, plugin: &str, capabilities: &[String]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.matching(INVOCATIONS, plugin, capabilities) {
            let outcome = s.labels.get("outcome").unwrap_or("unknown").to_owned();
            *out.entry(outcome).or_default() += value(&s.value);
        }
        out
    }

    /// A per-plugin gauge's value.
    pub fn gauge(&self, metric: &str, plugin: &str) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("plugin") == Some(plugin))
            .map(|s| value(&s.value))
    }
}

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        _ => 0.0,
    }
}

/// A bucket bound, ordered (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound(pub f64);
impl Eq for Bound {}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A cumulative histogram in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist {
    /// Cumulative counts by upper bound.
    pub buckets: BTreeMap<Bound, f64>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Hist {
    /// Whether any count went down since `before`: the gateway restarted in between.
    pub fn went_down_since(&self, before: &Hist) -> bool {
        self.count < before.count
            || self.sum < before.sum
            || before
                .buckets
                .iter()
                .any(|(b, c)| self.buckets.get(b).copied().unwrap_or(0.0) < *c)
    }

    /// `self - before`, bucket by bucket; `self` alone when the counts went down (the
    /// gateway restarted in between and counts from zero again, as Prometheus'
    /// `increase` takes it).
    pub fn delta(&self, before: &Hist) -> Hist {
        if self.went_down_since(before) {
            return self.clone();
        }
        Hist {
            buckets: self
                .buckets
                .iter()
                .map(|(b, c)| (*b, c - before.buckets.get(b).copied().unwrap_or(0.0)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The `q` quantile in seconds, interpolated linearly in its bucket (the lowest
    /// bucket from 0); a quantile in the `+Inf` bucket is the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let bounds: Vec<f64> = self
            .buckets
            .keys()
            .map(|Bound(b)| *b)
            .filter(|b| b.is_finite())
            .collect();
        let mut below = 0.0;
        let counts: Vec<u64> = self
            .buckets
            .values()
            .map(|cumulative| {
                let inside = (cumulative - below).max(0.0).round() as u64;
                below = *cumulative;
                inside
            })
            .collect();
        berth_api::bench::bucket_quantile(q, &bounds, &counts)
    }

    /// The upper bound of the highest bucket that gained observations (the highest
    /// finite bound when only `+Inf` did).
    pub fn max(&self) -> Option<f64> {
        let mut below = 0.0;
        let mut highest = None;
        let mut last_finite = 0.0;
        for (Bound(upper), cumulative) in &self.buckets {
            if *cumulative > below {
                highest = Some(if upper.is_finite() {
                    *upper
                } else {
                    last_finite
                });
            }
            if upper.is_finite() {
                last_finite = *upper;
            }
            below = *cumulative;
        }
        highest
    }
}

/// The gateway's view of the run from scrapes before and after it; `None` when the
/// gateway counted no invocation of the plugin in between. When any count went down
/// between the scrapes the gateway restarted during the run: `restarted` is set and the
/// view is the counts after the restart alone (they miss what came before it).
pub fn gateway_view(
    before: &Snapshot,
    after: &Snapshot,
    plugin: &str,
    capabilities: &[String],
) -> Viewed {
    let (before_duration, after_duration) = (
        before.histogram(DURATION, plugin, capabilities),
        after.histogram(DURATION, plugin, capabilities),
    );
    let (before_upstream, after_upstream) = (
        before.histogram(UPSTREAM, plugin, capabilities),
        after.histogram(UPSTREAM, plugin, capabilities),
    );
    let before_outcomes = before.outcomes(plugin, capabilities);
    let after_outcomes = after.outcomes(plugin, capabilities);
    let restarted = after_duration.went_down_since(&before_duration)
        || after_upstream.went_down_since(&before_upstream)
        || before_outcomes
            .iter()
            .any(|(o, n)| after_outcomes.get(o).copied().unwrap_or(0.0) < *n);
    let base = |h: &Hist| {
        if restarted {
            Hist::default()
        } else {
            h.clone()
        }
    };
    let duration = after_duration.delta(&base(&before_duration));
    if duration.count <= 0.0 {
        return Viewed {
            view: None,
            restarted,
        };
    }
    let ms = |s: Option<f64>| s.unwrap_or(0.0) * 1000.0;
    let latency = Latency {
        p50_ms: ms(duration.quantile(0.5)),
        p90_ms: ms(duration.quantile(0.9)),
        p99_ms: ms(duration.quantile(0.99)),
        max_ms: ms(duration.max()),
        mean_ms: duration.sum / duration.count * 1000.0,
    };
    let added_mean_ms = after.has(UPSTREAM).then(|| {
        let upstream = after_upstream.delta(&base(&before_upstream));
        (duration.sum - upstream.sum).max(0.0) / duration.count * 1000.0
    });
    let mut requests = 0.0;
    let mut errors = BTreeMap::new();
    for (outcome, n) in &after_outcomes {
        let earlier = if restarted {
            0.0
        } else {
            before_outcomes.get(outcome).copied().unwrap_or(0.0)
        };
        let d = n - earlier;
        requests += d;
        if outcome != "success" && d > 0.0 {
            errors.insert(outcome.clone(), d.round() as u64);
        }
    }
    if requests <= 0.0 {
        requests = duration.count;
    }
    Viewed {
        view: Some(GatewayView {
            requests: requests.round() as u64,
            errors,
            latency,
            added_mean_ms,
        }),
        restarted,
    }
}

/// The gateway's view, and whether it restarted during the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Viewed {
    /// The view; `None` when the gateway counted no invocation of the plugin.
    pub view: Option<GatewayView>,
    /// A count went down between the scrapes: the view covers only the part of the run
    /// after the restart.
    pub restarted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# HELP berth_invocation_duration_seconds x
# TYPE berth_invocation_duration_seconds histogram
berth_invocation_duration_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"0.001\"} 1
berth_invocation_duration_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"0.01\"} 1
berth_invocation_duration_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"+Inf\"} 1
berth_invocation_duration_seconds_sum{plugin=\"calc\",capability=\"add\"} 0.0005
berth_invocation_duration_seconds_count{plugin=\"calc\",capability=\"add\"} 1
# TYPE berth_invocations_total counter
berth_invocations_total{plugin=\"calc\",capability=\"add\",outcome=\"success\"} 1
";

    const AFTER: &str = "\
# HELP berth_invocation_duration_seconds x
# TYPE berth_invocation_duration_seconds histogram
berth_invocation_duration_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"0.001\"} 51
berth_invocation_duration_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"0.01\"} 101
berth_invocation_duration_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"+Inf\"} 101
berth_invocation_duration_seconds_sum{plugin=\"calc\",capability=\"add\"} 0.3005
berth_invocation_duration_seconds_count{plugin=\"calc\",capability=\"add\"} 101
berth_invocation_duration_seconds_bucket{plugin=\"other\",capability=\"add\",le=\"0.001\"} 7
berth_invocation_duration_seconds_bucket{plugin=\"other\",capability=\"add\",le=\"+Inf\"} 7
berth_invocation_duration_seconds_sum{plugin=\"other\",capability=\"add\"} 0.001
berth_invocation_duration_seconds_count{plugin=\"other\",capability=\"add\"} 7
# TYPE berth_invocation_upstream_seconds histogram
berth_invocation_upstream_seconds_bucket{plugin=\"calc\",capability=\"add\",le=\"+Inf\"} 100
berth_invocation_upstream_seconds_sum{plugin=\"calc\",capability=\"add\"} 0.2
berth_invocation_upstream_seconds_count{plugin=\"calc\",capability=\"add\"} 100
# TYPE berth_invocations_total counter
berth_invocations_total{plugin=\"calc\",capability=\"add\",outcome=\"success\"} 96
berth_invocations_total{plugin=\"calc\",capability=\"add\",outcome=\"plugin_error\"} 5
# TYPE berth_plugin_cpu_cores gauge
berth_plugin_cpu_cores{plugin=\"calc\"} 0.25
";

    #[test]
    fn the_view_is_the_delta_for_the_plugin_with_interpolated_quantiles() {
        let before = Snapshot::parse(BEFORE).unwrap();
        let after = Snapshot::parse(AFTER).unwrap();
        let caps = vec!["add".to_owned()];
        let viewed = gateway_view(&before, &after, "calc", &caps);
        assert!(!viewed.restarted);
        let view = viewed.view.unwrap();
        assert_eq!(view.requests, 100);
        assert_eq!(view.errors.get("plugin_error"), Some(&5));
        // 50 in (0, 1 ms], 50 in (1 ms, 10 ms]: the median is the top of the first bucket,
        // p90 is 80 % into the second.
        assert!((view.latency.p50_ms - 1.0).abs() < 1e-9, "{view:?}");
        assert!((view.latency.p90_ms - 8.2).abs() < 1e-9, "{view:?}");
        assert_eq!(view.latency.max_ms, 10.0);
        assert!((view.latency.mean_ms - 3.0).abs() < 1e-9);
        // 0.3 s end to end minus 0.2 s upstream over 100 calls.
        assert!((view.added_mean_ms.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(after.gauge(CPU, "calc"), Some(0.25));
    }

    #[test]
    fn no_upstream_histogram_or_no_calls_leave_gaps() {
        let before = Snapshot::parse(BEFORE).unwrap();
        let caps = vec!["add".to_owned()];
        assert!(gateway_view(&before, &before, "calc", &caps).view.is_none());
        let after = Snapshot::parse(&AFTER.replace("upstream", "elsewhere")).unwrap();
        let view = gateway_view(&before, &after, "calc", &caps).view.unwrap();
        assert_eq!(view.added_mean_ms, None);
        let other = vec!["sub".to_owned()];
        assert!(gateway_view(&before, &after, "calc", &other).view.is_none());
    }

    #[test]
    fn a_restart_between_the_scrapes_takes_the_counts_after_it_alone() {
        // The gateway restarted: AFTER's counts are lower than these.
        let high = BEFORE
            .replace("le=\"0.001\"} 1", "le=\"0.001\"} 500")
            .replace("le=\"0.01\"} 1", "le=\"0.01\"} 900")
            .replace("le=\"+Inf\"} 1", "le=\"+Inf\"} 900")
            .replace(
                "_sum{plugin=\"calc\",capability=\"add\"} 0.0005",
                "_sum{plugin=\"calc\",capability=\"add\"} 9",
            )
            .replace(
                "_count{plugin=\"calc\",capability=\"add\"} 1",
                "_count{plugin=\"calc\",capability=\"add\"} 900",
            )
            .replace("outcome=\"success\"} 1", "outcome=\"success\"} 900");
        let before = Snapshot::parse(&high).unwrap();
        let after = Snapshot::parse(AFTER).unwrap();
        let caps = vec!["add".to_owned()];
        let viewed = gateway_view(&before, &after, "calc", &caps);
        assert!(viewed.restarted);
        let view = viewed.view.unwrap();
        // AFTER alone: 51 in the first bucket, 50 in the second; not clamped deltas.
        assert_eq!(view.requests, 101);
        assert_eq!(view.errors.get("plugin_error"), Some(&5));
        assert!(
            (view.latency.p50_ms - 0.0010 * 1000.0 * (50.5 / 51.0)).abs() < 1e-6,
            "{view:?}"
        );
        assert!((view.latency.mean_ms - 0.3005 / 101.0 * 1000.0).abs() < 1e-9);
        // Only one bucket going down is a restart too.
        let mut a = Hist::default();
        a.buckets.insert(Bound(0.1), 5.0);
        a.buckets.insert(Bound(1.0), 10.0);
        let mut b = a.clone();
        b.buckets.insert(Bound(0.1), 7.0);
        assert!(a.went_down_since(&b));
        assert_eq!(a.delta(&b), a);
    }

    #[test]
    fn a_quantile_past_the_last_finite_bucket_is_that_bound() {
        let mut h = Hist::default();
        h.buckets.insert(Bound(0.5), 1.0);
        h.buckets.insert(Bound(f64::INFINITY), 10.0);
        assert_eq!(h.quantile(0.99), Some(0.5));
        assert_eq!(h.max(), Some(0.5));
    }
}
