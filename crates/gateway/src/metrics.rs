//! The gateway's Prometheus metrics, with the names DESIGN.md fixes.
//!
//! Backends running in the same process feed restarts, cold starts and resource usage
//! through [`Metrics::record_restart`], [`Metrics::observe_cold_start`] and
//! [`Metrics::set_usage`]; a supervisor in another process sends the same observations to
//! `POST /v1/admin/observations`.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_contract::wire::SupervisorWire;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds) fine enough near the bottom for sub-millisecond plugins.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Cold-start buckets (seconds): container start to first healthy answer.
const COLD_START_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// Every metric the gateway exports, registered in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `berth_invocations_total{plugin,capability,outcome}`.
    pub invocations: IntCounterVec,
    /// `berth_invocation_duration_seconds{plugin,capability}`.
    pub invocation_duration: HistogramVec,
    /// `berth_invocation_upstream_seconds{plugin,capability}`: from sending a call to the
    /// plugin to receiving its answer's head (the plugin's own time, as the gateway sees it).
    pub invocation_upstream: HistogramVec,
    /// `berth_inflight_invocations{plugin}`.
    pub inflight: IntGaugeVec,
    /// `berth_hook_deliveries_total{hook,plugin,outcome}`.
    pub hook_deliveries: IntCounterVec,
    /// `berth_hook_dispatch_duration_seconds{hook}`.
    pub hook_dispatch_duration: HistogramVec,
    /// `berth_permission_denials_total{plugin,permission}`.
    pub permission_denials: IntCounterVec,
    /// `berth_plugin_restarts_total{plugin,reason}`.
    pub plugin_restarts: IntCounterVec,
    /// `berth_audit_events_total{type,outcome}`.
    pub audit_events: IntCounterVec,
    /// `berth_audit_dropped_total{type}`: events the full audit queue turned away.
    pub audit_dropped: IntCounterVec,
    /// `berth_plugin_risk_score{plugin}`.
    pub risk_score: IntGaugeVec,
    /// `berth_plugin_cold_start_seconds{plugin}`.
    pub cold_start: HistogramVec,
    /// `berth_plugin_cpu_cores{plugin}`: CPU in use, in cores, as the backend last saw it.
    pub cpu_cores: GaugeVec,
    /// `berth_plugin_memory_bytes{plugin}`: memory in use, as the backend last saw it.
    pub memory_bytes: IntGaugeVec,
    /// `berth_plugin_tier{plugin}`: the live tier (4 Platinum … 1 Bronze, 0 unrated).
    pub plugin_tier: IntGaugeVec,
    /// `berth_benchmark_tier{plugin}`: the last `berth bench` tier (4 Platinum … 1 Bronze).
    pub benchmark_tier: IntGaugeVec,
    /// `berth_benchmark_latency_seconds{plugin,quantile}`: the last benchmark's latency,
    /// a summary (its `_count` and `_sum` are the run's answers and their total time).
    pub benchmark_latency: BenchmarkLatency,
    /// `berth_benchmark_throughput{plugin}`: the last benchmark's answers per second.
    pub benchmark_throughput: GaugeVec,
    /// `berth_benchmark_error_ratio{plugin}`: the last benchmark's errors over answers.
    pub benchmark_error_ratio: GaugeVec,
    /// `berth_benchmark_timestamp_seconds{plugin}`: when the last benchmark began (Unix time).
    pub benchmark_timestamp: GaugeVec,
    /// `berth_egress_requests_total{plugin,host,decision}`: `host` is the granted pattern
    /// that matched or a `denied:*` bucket, never the requested name (docs/egress.md).
    pub egress_requests: IntCounterVec,
    /// `berth_egress_bytes_total{plugin,direction}`: `sent` to destinations, `received`
    /// from them.
    pub egress_bytes: IntCounterVec,
    /// `berth_egress_connect_seconds{plugin}`: resolution and connection to a destination.
    pub egress_connect: HistogramVec,
    /// The `berth_local_*` gauges, registered when local mode's supervisor first reports
    /// (a gateway in a cluster never exports them).
    local: Arc<OnceLock<LocalGauges>>,
}

/// What local mode's supervisor reports about outages, as totals since `berth dev up`
/// started.
#[derive(Clone, Debug)]
struct LocalGauges {
    gateway_restarts: IntGauge,
    gateway_down_seconds: Gauge,
    engine_outages: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            invocations: counter(
                "berth_invocations_total",
                "Invocations through the gateway, by plugin, capability and outcome.",
                &["plugin", "capability", "outcome"],
            ),
            invocation_duration: histogram(
                "berth_invocation_duration_seconds",
                "Time from the gateway receiving an invocation to answering it.",
                &["plugin", "capability"],
                LATENCY_BUCKETS,
            ),
            invocation_upstream: histogram(
                "berth_invocation_upstream_seconds",
                "Time from sending an invocation to the plugin to receiving its answer's head (summed over retries).",
                &["plugin", "capability"],
                LATENCY_BUCKETS,
            ),
            inflight: gauge(
                "berth_inflight_invocations",
                "Invocations currently sent to a plugin and not yet answered.",
                &["plugin"],
            ),
            hook_deliveries: counter(
                "berth_hook_deliveries_total",
                "Hook deliveries to subscribers, by hook, plugin and outcome.",
                &["hook", "plugin", "outcome"],
            ),
            hook_dispatch_duration: histogram(
                "berth_hook_dispatch_duration_seconds",
                "Time to deliver one hook event to every subscriber.",
                &["hook"],
                LATENCY_BUCKETS,
            ),
            permission_denials: counter(
                "berth_permission_denials_total",
                "Requests refused for lack of a permission, by plugin and permission.",
                &["plugin", "permission"],
            ),
            plugin_restarts: counter(
                "berth_plugin_restarts_total",
                "Plugin restarts seen by the backend, by plugin and reason.",
                &["plugin", "reason"],
            ),
            audit_events: counter(
                "berth_audit_events_total",
                "Audit events written, by type and outcome.",
                &["type", "outcome"],
            ),
            audit_dropped: counter(
                "berth_audit_dropped_total",
                "Audit events dropped because the audit queue was full, by type.",
                &["type"],
            ),
            risk_score: gauge(
                "berth_plugin_risk_score",
                "Risk score (0-100) of the permissions each plugin requests.",
                &["plugin"],
            ),
            cold_start: histogram(
                "berth_plugin_cold_start_seconds",
                "Time from starting a plugin instance to its first healthy answer.",
                &["plugin"],
                COLD_START_BUCKETS,
            ),
            cpu_cores: float_gauge(
                "berth_plugin_cpu_cores",
                "CPU each plugin uses, in cores, as its backend last measured it.",
                &["plugin"],
            ),
            memory_bytes: gauge(
                "berth_plugin_memory_bytes",
                "Memory each plugin uses, in bytes, as its backend last measured it.",
                &["plugin"],
            ),
            plugin_tier: gauge(
                "berth_plugin_tier",
                "Live tier of each plugin over the gateway's rolling window: 4 Platinum, 3 Gold, 2 Silver, 1 Bronze, 0 unrated.",
                &["plugin"],
            ),
            benchmark_tier: gauge(
                "berth_benchmark_tier",
                "Tier of each plugin's last benchmark: 4 Platinum, 3 Gold, 2 Silver, 1 Bronze.",
                &["plugin"],
            ),
            benchmark_latency: {
                let summary = BenchmarkLatency::new();
                registry
                    .register(Box::new(summary.clone()))
                    .expect("unique metric");
                summary
            },
            benchmark_throughput: float_gauge(
                "berth_benchmark_throughput",
                "Answers per second of each plugin's last benchmark.",
                &["plugin"],
            ),
            benchmark_error_ratio: float_gauge(
                "berth_benchmark_error_ratio",
                "Errors over answers (0-1) of each plugin's last benchmark.",
                &["plugin"],
            ),
            benchmark_timestamp: float_gauge(
                "berth_benchmark_timestamp_seconds",
                "When each plugin's last benchmark began, as Unix time in seconds.",
                &["plugin"],
            ),
            egress_requests: counter(
                "berth_egress_requests_total",
                "Egress proxy requests and tunnels, by plugin, matched grant pattern (or denied bucket) and decision.",
                &["plugin", "host", "decision"],
            ),
            egress_bytes: counter(
                "berth_egress_bytes_total",
                "Bytes the egress proxy carried, by plugin and direction (sent to or received from destinations).",
                &["plugin", "direction"],
            ),
            egress_connect: histogram(
                "berth_egress_connect_seconds",
                "Time the egress proxy took to resolve and connect to a destination.",
                &["plugin"],
                LATENCY_BUCKETS,
            ),
            registry,
            local: Arc::default(),
        }
    }

    /// Sets the `berth_local_*` gauges from local mode's supervisor, registering them on
    /// its first report.
    pub fn set_local(&self, report: &SupervisorWire) {
        let gauges = self.local.get_or_init(|| {
            let int_gauge = |name: &str, help: &str| {
                let g = IntGauge::new(name, help).expect("valid metric");
                // Only here, once: the names are not registered yet.
                let _ = self.registry.register(Box::new(g.clone()));
                g
            };
            let gateway_down_seconds = Gauge::new(
                "berth_local_gateway_down_seconds",
                "Seconds the gateway container was not serving since `berth dev up` started, summed over its outages.",
            )
            .expect("valid metric");
            let _ = self
                .registry
                .register(Box::new(gateway_down_seconds.clone()));
            LocalGauges {
                gateway_restarts: int_gauge(
                    "berth_local_gateway_restarts",
                    "Times local mode's supervisor started or created the gateway container again since `berth dev up` started.",
                ),
                gateway_down_seconds,
                engine_outages: int_gauge(
                    "berth_local_engine_outages",
                    "Times the Docker Engine stopped answering local mode's supervisor since `berth dev up` started.",
                ),
            }
        });
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauges.gateway_restarts.set(int(report.gateway_restarts));
        gauges.gateway_down_seconds.set(report.gateway_down_seconds);
        gauges.engine_outages.set(int(report.engine_outages));
    }

    /// The registry, to add more collectors or to gather.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records the time a plugin instance took from start to its first healthy answer.
    pub fn observe_cold_start(&self, plugin: &str, took: Duration) {
        self.cold_start
            .with_label_values(&[plugin])
            .observe(took.as_secs_f64());
    }

    /// Counts a restart of a plugin (`oom`, `crash`, `health`, `update`, …).
    pub fn record_restart(&self, plugin: &str, reason: &str) {
        self.plugin_restarts
            .with_label_values(&[plugin, reason])
            .inc();
    }

    /// Sets what a plugin uses now: CPU in cores and memory in bytes.
    pub fn set_usage(&self, plugin: &str, cpu_cores: f64, memory_bytes: u64) {
        self.cpu_cores.with_label_values(&[plugin]).set(cpu_cores);
        // Beyond i64::MAX bytes (8 EiB) the reading is nonsense anyway; saturate.
        self.memory_bytes
            .with_label_values(&[plugin])
            .set(i64::try_from(memory_bytes).unwrap_or(i64::MAX));
    }

    /// Counts a refused permission.
    pub fn record_denial(&self, plugin: &str, permission: &str) {
        self.permission_denials
            .with_label_values(&[plugin, permission])
            .inc();
    }

    /// Drops every series of a plugin that left the directory.
    pub fn forget_plugin(&self, plugin: &str) {
        let _ = self.risk_score.remove_label_values(&[plugin]);
        let _ = self.inflight.remove_label_values(&[plugin]);
        // A usage reading of a plugin that is gone would otherwise stay exported forever.
        let _ = self.cpu_cores.remove_label_values(&[plugin]);
        let _ = self.memory_bytes.remove_label_values(&[plugin]);
        let _ = self.plugin_tier.remove_label_values(&[plugin]);
        for gauge in [
            &self.benchmark_throughput,
            &self.benchmark_error_ratio,
            &self.benchmark_timestamp,
        ] {
            let _ = gauge.remove_label_values(&[plugin]);
        }
        let _ = self.benchmark_tier.remove_label_values(&[plugin]);
        self.benchmark_latency.remove(plugin);
    }

    /// Exports a benchmark's results as the `berth_benchmark_*` gauges of its plugin.
    pub fn set_benchmark(&self, report: &berth_api::BenchReport, started_unix: f64) {
        let plugin = report.plugin.as_str();
        self.benchmark_tier
            .with_label_values(&[plugin])
            .set(report.verdict.tier.gauge_value());
        self.benchmark_latency.set(report);
        self.benchmark_throughput
            .with_label_values(&[plugin])
            .set(report.throughput);
        self.benchmark_error_ratio
            .with_label_values(&[plugin])
            .set(report.error_ratio);
        self.benchmark_timestamp
            .with_label_values(&[plugin])
            .set(started_unix);
    }

    /// Drops the per-plugin series of every plugin `keep` refuses: the gateway calls it
    /// with each new directory, so a plugin that left (even one never invoked, whose
    /// usage a supervisor reported) stops being exported.
    pub fn retain_plugins(&self, keep: impl Fn(&str) -> bool) {
        use prometheus::core::Collector;
        let families = [
            self.risk_score.collect(),
            self.inflight.collect(),
            self.cpu_cores.collect(),
            self.memory_bytes.collect(),
            self.plugin_tier.collect(),
            self.benchmark_tier.collect(),
            self.benchmark_latency.collect(),
        ];
        let gone: BTreeSet<String> = families
            .iter()
            .flatten()
            .flat_map(|family| family.get_metric())
            .flat_map(|metric| metric.get_label())
            .filter(|label| label.name() == "plugin" && !keep(label.value()))
            .map(|label| label.value().to_owned())
            .collect();
        for plugin in gone {
            self.forget_plugin(&plugin);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(8 * 1024);
        // Encoding only fails on invalid metric families, which registration rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// `berth_benchmark_latency_seconds`: a summary per plugin built from its last benchmark
/// (quantiles 0.5, 0.9 and 0.99; `_count` the answers, `_sum` their total seconds). A
/// gauge may not carry a `quantile` label; a summary does.
#[derive(Clone, Debug)]
pub struct BenchmarkLatency {
    desc: prometheus::core::Desc,
    latest: Arc<std::sync::Mutex<std::collections::BTreeMap<String, LatencySummary>>>,
}

#[derive(Clone, Copy, Debug)]
struct LatencySummary {
    quantiles: [(f64, f64); 3],
    count: u64,
    sum: f64,
}

impl BenchmarkLatency {
    fn new() -> Self {
        let desc = prometheus::core::Desc::new(
            "berth_benchmark_latency_seconds".into(),
            "Latency of each plugin's last benchmark by the benchmark's clock: quantiles, answers and their total time.".into(),
            // `quantile` is not a variable label of the Desc: each summary sample carries it.
            BENCHMARK_LATENCY_LABELS[..1]
                .iter()
                .map(|l| (*l).to_owned())
                .collect(),
            std::collections::HashMap::new(),
        )
        .expect("valid metric");
        Self {
            desc,
            latest: Arc::default(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, LatencySummary>> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the plugin's summary with `report`'s latency.
    pub fn set(&self, report: &berth_api::BenchReport) {
        let l = &report.latency;
        let values = [l.p50_ms, l.p90_ms, l.p99_ms];
        let quantile = |i: usize| BENCHMARK_QUANTILES[i].parse::<f64>().unwrap_or_default();
        let summary = LatencySummary {
            quantiles: [0, 1, 2].map(|i| (quantile(i), values[i] / 1000.0)),
            count: report.requests,
            sum: l.mean_ms / 1000.0 * report.requests as f64,
        };
        self.lock().insert(report.plugin.clone(), summary);
    }

    /// Drops the plugin's summary.
    pub fn remove(&self, plugin: &str) {
        self.lock().remove(plugin);
    }
}

/// The labels of the summary's series: `plugin`, and the `quantile`
/// each summary sample carries (one of [`BENCHMARK_QUANTILES`]).
const BENCHMARK_LATENCY_LABELS: &[&str] = &["plugin", "quantile"];
/// The summary's quantiles, as its `quantile` label spells them.
const BENCHMARK_QUANTILES: [&str; 3] = ["0.5", "0.9", "0.99"];

impl prometheus::core::Collector for BenchmarkLatency {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto;
        let metrics = self
            .lock()
            .iter()
            .map(|(plugin, s)| {
                let mut label = proto::LabelPair::default();
                label.set_name("plugin".into());
                label.set_value(plugin.clone());
                let mut summary = proto::Summary::default();
                summary.set_sample_count(s.count);
                summary.set_sample_sum(s.sum);
                summary.set_quantile(
                    s.quantiles
                        .iter()
                        .map(|(q, v)| {
                            let mut quantile = proto::Quantile::default();
                            quantile.set_quantile(*q);
                            quantile.set_value(*v);
                            quantile
                        })
                        .collect(),
                );
                let mut metric = proto::Metric::default();
                metric.set_label(vec![label]);
                metric.set_summary(summary);
                metric
            })
            .collect::<Vec<_>>();
        if metrics.is_empty() {
            return Vec::new();
        }
        let mut family = proto::MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(proto::MetricType::SUMMARY);
        family.set_metric(metrics);
        vec![family]
    }
}

/// The value of label `name` of a collected metric; empty when it has none.
pub(crate) fn label_value(metric: &prometheus::proto::Metric, name: &str) -> String {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value().to_owned())
        .unwrap_or_default()
}
