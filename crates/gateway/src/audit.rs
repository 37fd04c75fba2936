//! Audit sinks and the background writer that feeds them.
//!
//! Request handlers hand events to an [`Auditor`] without waiting; a writer task batches
//! them to every sink. Successful invocations are not written one by one: a summary task
//! reads the invocation metrics every interval and writes one event per plugin.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use berth_store::audit::types;
use berth_store::{AuditChain, AuditEvent, Store};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::Result;
use crate::metrics::Metrics;

/// Somewhere audit events go. Each sink keeps its own hash chain: it seals what it writes.
/// Called from a blocking thread, so it may do blocking I/O.
pub trait AuditSink: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Seals and writes `events`, in order.
    fn write(&self, events: Vec<AuditEvent>) -> Result<()>;
}

/// The embedded SQLite store (local mode).
#[derive(Debug, Clone)]
pub struct StoreSink {
    store: Arc<Store>,
}

impl StoreSink {
    /// Writes into `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

impl AuditSink for StoreSink {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn write(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.store.append_audit(events)?;
        Ok(())
    }
}

/// JSON lines on standard output (cluster mode, where logs are collected).
#[derive(Debug, Default)]
pub struct StdoutSink {
    chain: Mutex<AuditChain>,
}

impl StdoutSink {
    /// A sink starting a new chain.
    pub fn new() -> Self {
        Self::default()
    }
}

impl AuditSink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn write(&self, events: Vec<AuditEvent>) -> Result<()> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for event in events {
            let sealed = chain.seal(event);
            let line = serde_json::to_string(&json!({ "audit": sealed }))
                .map_err(|e| crate::Error::Config(format!("cannot encode audit event: {e}")))?;
            // A closed stdout must not take the gateway down; the metric still counts.
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        Ok(())
    }
}

enum Message {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// Hands audit events to the sinks in the background.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::UnboundedSender<Message>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").finish_non_exhaustive()
    }
}

/// The writer task of an [`Auditor`]; await [`AuditWriter::finish`] after the last event.
pub struct AuditWriter {
    task: JoinHandle<()>,
}

impl AuditWriter {
    /// Waits until every event sent so far is written. Call after every [`Auditor`] clone
    /// is dropped, or it waits for them.
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

impl Auditor {
    /// Starts the writer task. Needs a Tokio runtime.
    pub fn start(sinks: Vec<Arc<dyn AuditSink>>, metrics: Metrics) -> (Self, AuditWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_loop(rx, sinks.into(), metrics));
        (Self { tx }, AuditWriter { task })
    }

    /// An auditor that drops everything (benchmarks of the raw path).
    pub fn disabled() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Self { tx }
    }

    /// Queues an event; never blocks.
    pub fn record(&self, event: AuditEvent) {
        let _ = self.tx.send(Message::Event(Box::new(event)));
    }

    /// Waits until every event queued before this call has been handed to the sinks.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Message>,
    sinks: Arc<[Arc<dyn AuditSink>]>,
    metrics: Metrics,
) {
    let mut batch = Vec::new();
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(e) => batch.push(*e),
                Message::Flush(w) => waiters.push(w),
            }
            if batch.len() < 512 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let events = std::mem::take(&mut batch);
            let sinks = sinks.clone();
            let metrics = metrics.clone();
            let written = tokio::task::spawn_blocking(move || {
                let counts: Vec<(String, String)> = events
                    .iter()
                    .map(|e| (e.type_.clone(), e.outcome.clone()))
                    .collect();
                for sink in sinks.iter() {
                    if let Err(e) = sink.write(events.clone()) {
                        tracing::error!(sink = sink.name(), error = %e, "audit sink failed");
                    }
                }
                for (t, o) in counts {
                    metrics.audit_events.with_label_values(&[&t, &o]).inc();
                }
            })
            .await;
            if let Err(e) = written {
                tracing::error!(error = %e, "audit writer panicked");
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Successful invocations per plugin and capability, read from the metrics.
#[derive(Default, Clone, Debug, PartialEq)]
struct Totals(BTreeMap<(String, String), (u64, f64)>);

impl Totals {
    fn read(metrics: &Metrics) -> Self {
        use prometheus::core::Collector;
        let mut totals = BTreeMap::new();
        for family in metrics.invocations.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                if label("outcome") != "success" {
                    continue;
                }
                let key = (label("plugin"), label("capability"));
                totals.entry(key).or_insert((0, 0.0)).0 = m.get_counter().get_value() as u64;
            }
        }
        for family in metrics.invocation_duration.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                let key = (label("plugin"), label("capability"));
                if let Some(entry) = totals.get_mut(&key) {
                    entry.1 = m.get_histogram().get_sample_sum();
                }
            }
        }
        Self(totals)
    }
}

/// Writes one `invocation-summary` event per plugin with successful calls since the last one.
#[derive(Debug)]
pub struct Summarizer {
    metrics: Metrics,
    auditor: Auditor,
    last: Totals,
    since: jiff::Timestamp,
}

impl Summarizer {
    /// Starts counting from the metrics' current values.
    pub fn new(metrics: Metrics, auditor: Auditor) -> Self {
        let last = Totals::read(&metrics);
        Self {
            metrics,
            auditor,
            last,
            since: jiff::Timestamp::now(),
        }
    }

    /// Records the summary of the interval that ends now; returns how many events it wrote.
    pub fn summarize(&mut self) -> usize {
        let now = jiff::Timestamp::now();
        let current = Totals::read(&self.metrics);
        let mut per_plugin: BTreeMap<&str, (u64, Map<String, Value>)> = BTreeMap::new();
        for ((plugin, capability), (count, sum)) in &current.0 {
            let (last_count, last_sum) = self
                .last
                .0
                .get(&(plugin.clone(), capability.clone()))
                .copied()
                .unwrap_or((0, 0.0));
            let calls = count.saturating_sub(last_count);
            if calls == 0 {
                continue;
            }
            let mean_ms = (sum - last_sum).max(0.0) / calls as f64 * 1000.0;
            let entry = per_plugin.entry(plugin).or_default();
            entry.0 += calls;
            entry.1.insert(
                capability.clone(),
                json!({"invocations": calls, "meanMs": (mean_ms * 1000.0).round() / 1000.0}),
            );
        }
        let written = per_plugin.len();
        for (plugin, (calls, capabilities)) in per_plugin {
            self.auditor.record(
                AuditEvent::new("gateway", types::INVOCATION_SUMMARY, "success")
                    .plugin(plugin)
                    .details(json!({
                        "from": berth_store::format_time(self.since),
                        "to": berth_store::format_time(now),
                        "invocations": calls,
                        "capabilities": capabilities,
                    })),
            );
        }
        self.last = current;
        self.since = now;
        written
    }
}
