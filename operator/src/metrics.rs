//! The operator's Prometheus metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_api::Phase;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::{Error, Result};

/// Reconcile duration, errors by kind, and plugins by phase.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: HistogramVec,
    reconcile_errors: IntCounterVec,
    plugins: IntGaugeVec,
    phases: Mutex<HashMap<String, Phase>>,
}

impl Metrics {
    /// Creates the metrics in a registry of their own.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "berth_reconcile_duration_seconds",
                "Time one reconcile took, by controller.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )
        .map_err(Error::Metrics)?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "berth_reconcile_errors_total",
                "Reconciles that failed, by controller and kind of error.",
            ),
            &["controller", "error"],
        )
        .map_err(Error::Metrics)?;
        let plugins = IntGaugeVec::new(
            Opts::new("berth_plugins", "Plugins known to the operator, by phase."),
            &["phase"],
        )
        .map_err(Error::Metrics)?;
        for c in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(plugins.clone()),
        ] {
            registry.register(c).map_err(Error::Metrics)?;
        }
        for controller in ["plugin", "grant"] {
            reconcile_duration.with_label_values(&[controller]);
        }
        for phase in Phase::ALL {
            plugins.with_label_values(&[phase.as_str()]).set(0);
        }
        Ok(Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            plugins,
            phases: Mutex::new(HashMap::new()),
        })
    }

    /// Records how long one reconcile of `controller` took.
    pub fn observe_reconcile(&self, controller: &str, took: Duration) {
        self.reconcile_duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn count_error(&self, controller: &str, error: &Error) {
        self.reconcile_errors
            .with_label_values(&[controller, error.metric_label()])
            .inc();
    }

    /// Records the phase of plugin `key` (`namespace/name`); `None` forgets it.
    pub fn set_phase(&self, key: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let before = match phase {
            Some(p) => phases.insert(key.to_string(), p),
            None => phases.remove(key),
        };
        if before == phase {
            return;
        }
        if let Some(b) = before {
            self.plugins.with_label_values(&[b.as_str()]).dec();
        }
        if let Some(p) = phase {
            self.plugins.with_label_values(&[p.as_str()]).inc();
        }
    }

    /// The exposition in the Prometheus text format.
    pub fn encode(&self) -> Result<String> {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(Error::Metrics)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_gauge_follows_phase_changes() {
        let m = Metrics::new().unwrap();
        m.set_phase("default/a", Some(Phase::Deploying));
        m.set_phase("default/b", Some(Phase::Deploying));
        m.set_phase("default/a", Some(Phase::Ready));
        m.set_phase("default/a", Some(Phase::Ready));
        m.set_phase("default/b", None);
        let text = m.encode().unwrap();
        assert!(text.contains("berth_plugins{phase=\"Ready\"} 1"), "{text}");
        assert!(
            text.contains("berth_plugins{phase=\"Deploying\"} 0"),
            "{text}"
        );
        assert!(text.contains("berth_plugins{phase=\"Failed\"} 0"), "{text}");
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let m = Metrics::new().unwrap();
        m.count_error(
            "plugin",
            &Error::MissingField("Plugin/x".into(), "namespace"),
        );
        m.observe_reconcile("plugin", Duration::from_millis(3));
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                "berth_reconcile_errors_total{controller=\"plugin\",error=\"missing_field\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("berth_reconcile_duration_seconds_count{controller=\"plugin\"} 1"));
    }
}
