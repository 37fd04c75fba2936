//! Audit sinks and the background writer that feeds them.
//!
//! Request handlers hand events to an [`Auditor`] without waiting; a writer task batches
//! them to every sink. Successful invocations are not written one by one: a summary task
//! reads the invocation metrics every interval and writes one event per plugin.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Default capacity of each audit queue lane (`--audit-queue`, `--audit-security-queue`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;

/// Events the writer takes from the queue per batch.
const BATCH: usize = 512;

/// At most one "audit queue full" log line per this many milliseconds.
const DROP_LOG_EVERY_MS: u64 = 10_000;

/// True for the events that must not be dropped while the queue is merely busy: security
/// events, permission decisions, denials and vetoes. They travel in a reserved lane.
pub fn is_security_event(event: &AuditEvent) -> bool {
    event.type_ == types::SECURITY
        || event.type_ == types::PERMISSION
        || matches!(event.outcome.as_str(), "denied" | "vetoed")
}

/// Hands audit events to the sinks in the background, through two bounded lanes: one for
/// security events (see [`is_security_event`]) that the writer always empties first, one
/// for everything else. A full lane drops the event and counts it in
/// `berth_audit_dropped_total{type}` (decision 0012).
#[derive(Clone)]
pub struct Auditor {
    lanes: Option<Arc<Lanes>>,
}

struct Lanes {
    security: mpsc::Sender<Message>,
    other: mpsc::Sender<Message>,
    metrics: Metrics,
    /// Milliseconds since `started` of the last "queue full" log line, plus one (0: never).
    last_drop_log: AtomicU64,
    started: std::time::Instant,
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
    /// Starts the writer task with [`DEFAULT_QUEUE_CAPACITY`] per lane. Needs a Tokio runtime.
    pub fn start(sinks: Vec<Arc<dyn AuditSink>>, metrics: Metrics) -> (Self, AuditWriter) {
        Self::start_bounded(
            sinks,
            metrics,
            DEFAULT_QUEUE_CAPACITY,
            DEFAULT_QUEUE_CAPACITY,
        )
    }

    /// Starts the writer task with lanes of `capacity` ordinary and `security_capacity`
    /// security events (each at least 1). Needs a Tokio runtime.
    pub fn start_bounded(
        sinks: Vec<Arc<dyn AuditSink>>,
        metrics: Metrics,
        capacity: usize,
        security_capacity: usize,
    ) -> (Self, AuditWriter) {
        let (security, security_rx) = mpsc::channel(security_capacity.max(1));
        let (other, other_rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(write_loop(
            security_rx,
            other_rx,
            sinks.into(),
            metrics.clone(),
        ));
        let lanes = Lanes {
            security,
            other,
            metrics,
            last_drop_log: AtomicU64::new(0),
            started: std::time::Instant::now(),
        };
        (
            Self {
                lanes: Some(Arc::new(lanes)),
            },
            AuditWriter { task },
        )
    }

    /// An auditor that drops everything (benchmarks of the raw path).
    pub fn disabled() -> Self {
        Self { lanes: None }
    }

    /// Queues an event; never blocks. When its lane is full the event is dropped, counted
    /// in `berth_audit_dropped_total{type}` and logged (at most once per 10 s).
    pub fn record(&self, event: AuditEvent) {
        let Some(lanes) = &self.lanes else {
            return;
        };
        let lane = if is_security_event(&event) {
            &lanes.security
        } else {
            &lanes.other
        };
        match lane.try_send(Message::Event(Box::new(event))) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(Message::Event(event))) => lanes.dropped(&event),
            Err(mpsc::error::TrySendError::Full(Message::Flush(_))) => {}
        }
    }

    /// Events queued and not yet taken by the writer, over both lanes.
    pub fn queued(&self) -> usize {
        self.lanes.as_ref().map_or(0, |l| {
            (l.security.max_capacity() - l.security.capacity())
                + (l.other.max_capacity() - l.other.capacity())
        })
    }

    /// The most events [`Auditor::queued`] can reach: both lanes' capacities.
    pub fn queue_capacity(&self) -> usize {
        self.lanes
            .as_ref()
            .map_or(0, |l| l.security.max_capacity() + l.other.max_capacity())
    }

    /// Waits until every event queued before this call has been handed to the sinks.
    pub async fn flush(&self) {
        let Some(lanes) = &self.lanes else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        // Flushes wait for room rather than being dropped: only shutdown and tests flush.
        if lanes.other.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl Lanes {
    fn dropped(&self, event: &AuditEvent) {
        self.metrics
            .audit_dropped
            .with_label_values(&[&event.type_])
            .inc();
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= DROP_LOG_EVERY_MS)
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if is_security_event(event) {
                tracing::error!(
                    type_ = %event.type_,
                    outcome = %event.outcome,
                    "audit security lane full (the sinks are stalled); dropping security events, see berth_audit_dropped_total"
                );
            } else {
                tracing::warn!(
                    type_ = %event.type_,
                    "audit queue full (the sinks are slow); dropping events, see berth_audit_dropped_total"
                );
            }
        }
    }
}

/// Takes the next message, security lane first; None once both lanes are closed.
async fn next_message(
    security: &mut mpsc::Receiver<Message>,
    other: &mut mpsc::Receiver<Message>,
) -> Option<Message> {
    tokio::select! {
        biased;
        Some(m) = security.recv() => Some(m),
        Some(m) = other.recv() => Some(m),
        else => None,
    }
}

async fn write_loop(
    mut security: mpsc::Receiver<Message>,
    mut other: mpsc::Receiver<Message>,
    sinks: Arc<[Arc<dyn AuditSink>]>,
    metrics: Metrics,
) {
    let mut batch = Vec::new();
    let mut waiters = Vec::new();
    while let Some(first) = next_message(&mut security, &mut other).await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(e) => batch.push(*e),
                Message::Flush(w) => {
                    // Security events queued before the flush ride in this batch too.
                    while let Ok(Message::Event(e)) = security.try_recv() {
                        batch.push(*e);
                    }
                    waiters.push(w);
                }
            }
            if batch.len() < BATCH {
                next = security.try_recv().or_else(|_| other.try_recv()).ok();
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
                let label = |name: &str| crate::metrics::label_value(m, name);
                if label("outcome") != "success" {
                    continue;
                }
                let key = (label("plugin"), label("capability"));
                totals.entry(key).or_insert((0, 0.0)).0 = m.get_counter().get_value() as u64;
            }
        }
        for family in metrics.invocation_duration.collect() {
            for m in family.get_metric() {
                let label = |name: &str| crate::metrics::label_value(m, name);
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
