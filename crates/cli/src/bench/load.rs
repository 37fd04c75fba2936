//! The load generator: HTTP/1.1 with keep-alive (hyper), latencies in HDR histograms.
//!
//! **Closed loop** (`--concurrency N`): N callers, each sending its next request when the
//! last one answered; latency is from sending to the last byte of the answer.
//!
//! **Open loop** (`--rate R`): requests are due on a fixed schedule, one every 1/R s,
//! whatever the answers. Each request's latency counts from its *intended* send time, not
//! from when it actually left, so a stalled gateway or a busy load generator shows up as
//! latency instead of as requests quietly not sent (no coordinated omission). A request
//! sent more than [`LATE_BOUND`] after its intended time is a *late send*; when more than
//! [`MAX_LATE_SHARE`] of the sends are late, or fewer answers than [`MIN_RATE_SHARE`] of
//! the rate arrive, the machine could not drive the rate and the run says so.
//!
//! Only requests sent during the measured part count (the warm-up before it is sent the
//! same way and thrown away); an open-loop run waits for every request it sent, so none
//! is left out of the latencies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_api::bench::{Counted, LatencyBucket, TimelinePoint, invocation_outcome, outcome_counts};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An open-loop send later than this after its intended time is a late send.
pub const LATE_BOUND: Duration = Duration::from_millis(5);
/// The share of late sends above which an open-loop run failed to drive its rate.
pub const MAX_LATE_SHARE: f64 = 0.01;
/// The share of the requested rate an open-loop run must answer at.
pub const MIN_RATE_SHARE: f64 = 0.9;
/// Open loop: requests in flight at most by default (each holds a connection); a send
/// that would exceed it waits, and counts as late (`--max-inflight`).
pub const MAX_OPEN_REQUESTS: usize = 512;
/// Highest latency the histograms hold (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One kind of request: a capability with one input.
#[derive(Clone, Debug)]
pub struct Call {
    /// The capability.
    pub capability: String,
    /// The full URL of the invocation.
    pub url: String,
    /// The JSON body.
    pub body: Bytes,
}

/// How to drive the load.
#[derive(Clone, Copy, Debug)]
pub enum Model {
    /// N callers.
    Closed(u32),
    /// Requests per second.
    Open(f64),
}

/// A run to make.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Closed or open loop.
    pub model: Model,
    /// Sent and thrown away before measuring.
    pub warmup: Duration,
    /// The measured part.
    pub duration: Duration,
    /// The requests, sent in turn.
    pub calls: Vec<Call>,
    /// `Authorization: Bearer` token.
    pub token: String,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Open loop: requests in flight at most (each holds a connection); a send that
    /// would exceed it waits, and its latency still counts from its intended time.
    pub max_inflight: usize,
}

/// What a run measured. Its size does not grow with the run's length or its callers:
/// two histograms for the whole run, the per-second timeline as points, and one small
/// histogram for the second in progress (reset at each second boundary).
#[derive(Clone, Debug)]
pub struct Measured {
    /// Latency in microseconds of every answer in the measured part.
    pub latency: Histogram<u64>,
    /// Per second of the measured part: answers, errors and their latencies.
    pub timeline: Vec<TimelinePoint>,
    /// Errors by code (every answer that was not 2xx, and transport failures).
    pub errors: BTreeMap<String, u64>,
    /// Answers that count as failed calls by the shared rule
    /// ([`berth_api::bench::Counted`]).
    pub counted_errors: u64,
    /// Answers that do not count at all by the shared rule (the caller's mistake, a
    /// plugin that is stopped); left out of the error ratio's denominator.
    pub not_counted: u64,
    /// Latency minus the `Server-Timing: upstream` the gateway reported, in microseconds,
    /// of answers that carried it.
    pub added: Histogram<u64>,
    /// Sum of the same, in microseconds (for the mean without histogram rounding).
    pub added_sum_us: f64,
    /// Open loop: sends later than [`LATE_BOUND`].
    pub late_sends: Option<u64>,
    /// Open loop: requests sent in the measured part.
    pub sent: u64,
    /// The measured part's length as it happened.
    pub elapsed: Duration,
    /// The second in progress: its index, answers, errors and latencies.
    current: (usize, u64, u64, Histogram<u64>),
}

#[cfg(test)]
thread_local! {
    /// Histograms made on this thread (tests check that a run's memory does not grow).
    static HISTOGRAMS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn histogram() -> Histogram<u64> {
    #[cfg(test)]
    HISTOGRAMS.with(|n| n.set(n.get() + 1));
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Default for Measured {
    fn default() -> Self {
        Self::new()
    }
}

impl Measured {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self {
            latency: histogram(),
            timeline: Vec::new(),
            errors: BTreeMap::new(),
            counted_errors: 0,
            not_counted: 0,
            added: histogram(),
            added_sum_us: 0.0,
            late_sends: None,
            sent: 0,
            elapsed: Duration::ZERO,
            current: (0, 0, 0, histogram()),
        }
    }

    /// Closes the seconds before `second`: each becomes a [`TimelinePoint`] and the
    /// second's histogram is reset.
    fn advance_to(&mut self, second: usize) {
        while self.current.0 < second {
            let (i, n, e, h) = &mut self.current;
            let (p50, p99) = if h.is_empty() {
                (0.0, 0.0)
            } else {
                (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)))
            };
            self.timeline.push(TimelinePoint {
                second: *i as u32,
                requests: *n,
                errors: *e,
                p50_ms: p50,
                p99_ms: p99,
            });
            h.reset();
            *i += 1;
            *n = 0;
            *e = 0;
        }
    }

    /// Records one answer received in `second` of the measured part.
    pub fn record(&mut self, second: usize, answer: &Answer, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency.saturating_record(us);
        let error = answer.error.is_some();
        if second >= self.current.0 {
            self.advance_to(second);
            self.current.1 += 1;
            self.current.2 += u64::from(error);
            self.current.3.saturating_record(us);
        } else if let Some(point) = self.timeline.get_mut(second) {
            // An answer of a second already closed (records from different callers may
            // arrive a little out of order): counted, its quantiles stay as they were.
            point.requests += 1;
            point.errors += u64::from(error);
        }
        if let Some(code) = &answer.error {
            *self.errors.entry(code.clone()).or_default() += 1;
        }
        match answer.counted {
            Counted::Error => self.counted_errors += 1,
            Counted::NotCounted => self.not_counted += 1,
            Counted::Good => {}
        }
        if let Some(up) = answer.upstream {
            let added = latency.saturating_sub(up);
            let added_us = (added.as_micros() as u64).clamp(1, MAX_LATENCY_US);
            self.added.saturating_record(added_us);
            self.added_sum_us += added.as_secs_f64() * 1e6;
        }
    }

    /// Closes the second in progress.
    fn finish(&mut self) {
        if self.current.1 > 0 || self.timeline.is_empty() {
            let next = self.current.0 + 1;
            self.advance_to(next);
        }
    }

    /// Answers in the measured part.
    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    /// Answers that count toward the error ratio (all but the ones the rule leaves out).
    pub fn counted(&self) -> u64 {
        self.requests().saturating_sub(self.not_counted)
    }

    /// The per-second timeline, whole seconds of the measured part only.
    pub fn timeline(&self, duration: Duration) -> Vec<TimelinePoint> {
        let whole = duration.as_secs_f64().ceil() as usize;
        self.timeline.iter().take(whole.max(1)).cloned().collect()
    }
    /// The latency distribution in up to `bars` log-spaced bars from the fastest to the
    /// slowest answer.
    pub fn distribution(&self, bars: usize) -> Vec<LatencyBucket> {
        if self.latency.is_empty() || bars == 0 {
            return Vec::new();
        }
        let lo = self.latency.min().max(1) as f64;
        let hi = self.latency.max().max(1) as f64;
        let step = if hi > lo {
            (hi / lo).powf(1.0 / bars as f64)
        } else {
            2.0
        };
        let mut out = Vec::new();
        let mut below = 0u64;
        let mut bound = lo;
        loop {
            let upper = if bound >= hi { hi } else { bound };
            let le = upper.ceil() as u64;
            let until = self.latency.count_between(0, le);
            out.push(LatencyBucket {
                le_ms: ms(le),
                count: until - below,
            });
            below = until;
            if upper >= hi || out.len() > bars {
                break;
            }
            bound *= step;
        }
        out
    }
}

/// Microseconds to milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One answer, or a failure to get one.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// `None` for success, else the error code.
    pub error: Option<String>,
    /// The gateway's `Server-Timing: upstream;dur=` value.
    pub upstream: Option<Duration>,
    /// The HTTP status (0 when none arrived).
    pub status: u16,
    /// How the answer counts toward the error ratio (the rule shared with the gateway's
    /// live tiers).
    pub counted: Counted,
}

/// The HTTP client: HTTP/1.1, keep-alive, no Nagle.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client that keeps up to `idle` connections alive.
pub fn client(idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Sends one call and reads the whole answer.
pub async fn send(client: &HttpClient, call: &Call, token: &str, timeout: Duration) -> Answer {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(&call.url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(call.body.clone()));
    let request = match request {
        Ok(r) => r,
        Err(_) => {
            return Answer {
                error: Some("bad_request_url".into()),
                counted: Counted::Error,
                ..Answer::default()
            };
        }
    };
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| transport_kind(&e))?;
        let status = response.status().as_u16();
        let upstream = response
            .headers()
            .get_all("server-timing")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(upstream_duration);
        let from_plugin = response
            .headers()
            .get(ERROR_SOURCE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"plugin"));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "body".to_owned())?
            .to_bytes();
        Ok::<_, String>((status, upstream, from_plugin, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Answer {
            error: Some("timeout".into()),
            counted: Counted::Error,
            ..Answer::default()
        },
        Ok(Err(kind)) => Answer {
            error: Some(kind),
            counted: Counted::Error,
            ..Answer::default()
        },
        Ok(Ok((status, upstream, from_plugin, body))) => {
            let error = (!(200..300).contains(&status)).then(|| error_code(status, &body));
            Answer {
                counted: answer_counts(status, error.as_deref(), from_plugin),
                error,
                upstream,
                status,
            }
        }
    }
}

/// The gateway's header marking a 4xx answer as the plugin's own (`plugin`).
pub const ERROR_SOURCE: &str = "berth-error-source";

/// How an HTTP answer counts by the rule shared with the gateway's live tiers: the
/// outcome the gateway counted it as ([`invocation_outcome`]), then
/// [`outcome_counts`].
pub fn answer_counts(status: u16, code: Option<&str>, from_plugin: bool) -> Counted {
    let outcome = if (200..300).contains(&status) {
        "success"
    } else if from_plugin && (400..500).contains(&status) {
        "client_error"
    } else {
        invocation_outcome(status, code.unwrap_or_default())
    };
    outcome_counts(outcome)
}

/// The protocol error's `code` from a JSON error body, else `http_NNN`.
pub fn error_code(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .unwrap_or_else(|| format!("http_{status}"))
}

/// A transport failure's kind: `connect`, `connection_closed` or `transport`.
fn transport_kind(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        return "connect".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return "connection_closed".into();
            }
            if h.is_timeout() {
                return "timeout".into();
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionReset => "connection_reset".into(),
                std::io::ErrorKind::ConnectionRefused => "connect".into(),
                std::io::ErrorKind::BrokenPipe => "connection_closed".into(),
                _ => "transport".into(),
            };
        }
        source = s.source();
    }
    "transport".into()
}

/// `upstream;dur=1.234` (among other metrics of one header value) → 1.234 ms.
pub fn upstream_duration(header: &str) -> Option<Duration> {
    header.split(',').find_map(|metric| {
        let mut parts = metric.split(';').map(str::trim);
        if parts.next()? != "upstream" {
            return None;
        }
        parts.find_map(|p| {
            let ms: f64 = p.strip_prefix("dur=")?.trim_matches('"').parse().ok()?;
            // Nonsense (negative, NaN, too large for a `Duration`) is ignored.
            (ms.is_finite() && ms >= 0.0)
                .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
                .flatten()
        })
    })
}

/// One answer for the collector: when it arrived, its latency and the answer.
type Record = (Instant, Duration, Answer);

/// Folds records into a [`Measured`] as they arrive, one place for every caller: the
/// memory held does not grow with the callers or the run's length. A record belongs to
/// the second of the measured part its answer arrived in.
fn collector(
    measure_from: Instant,
) -> (
    tokio::sync::mpsc::UnboundedSender<Record>,
    tokio::task::JoinHandle<Measured>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
    let task = tokio::spawn(async move {
        let mut measured = Measured::new();
        while let Some((done, latency, answer)) = rx.recv().await {
            let second = done.saturating_duration_since(measure_from).as_secs() as usize;
            measured.record(second, &answer, latency);
        }
        measured.finish();
        measured
    });
    (tx, task)
}

/// Runs the plan: warm-up, then the measured part. `started` is called when the
/// measured part begins. A load task that failed (panicked) fails the run.
pub async fn run(plan: Plan, started: impl FnOnce() + Send + 'static) -> Result<Measured, String> {
    match plan.model {
        Model::Closed(n) => closed(plan, n.max(1), started).await,
        Model::Open(rate) => open(plan, rate, started).await,
    }
}

async fn closed(plan: Plan, callers: u32, started: impl FnOnce()) -> Result<Measured, String> {
    let client = client(callers as usize);
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let measure_from = t0 + plan.warmup;
    let end = measure_from + plan.duration;
    let (tx, collected) = collector(measure_from);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, plan, next, tx) = (client.clone(), plan.clone(), next.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % plan.calls.len();
                let answer = send(&client, &plan.calls[i], &plan.token, plan.timeout).await;
                let done = Instant::now();
                if sent >= measure_from {
                    let _ = tx.send((done, done - sent, answer));
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep_until(measure_from.into()).await;
    started();
    let mut failed = None;
    for task in tasks {
        if let Err(e) = task.await {
            failed.get_or_insert_with(|| format!("a load caller failed: {e}"));
        }
    }
    let mut total = collected
        .await
        .map_err(|e| format!("the load collector failed: {e}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    total.elapsed = plan.duration;
    Ok(total)
}

async fn open(
    plan: Plan,
    rate: f64,
    started: impl FnOnce() + Send + 'static,
) -> Result<Measured, String> {
    let max_inflight = plan.max_inflight.max(1);
    let client = client(max_inflight);
    let plan = Arc::new(plan);
    let interval = Duration::try_from_secs_f64(1.0 / rate)
        .map_err(|_| format!("--rate {rate}: not a usable rate"))?;
    let t0 = Instant::now();
    let measure_from = t0 + plan.warmup;
    let end = measure_from + plan.duration;
    let (tx, collected) = collector(measure_from);
    // The schedule runs on a thread of its own, sleeping with the operating system's
    // timer (finer than the runtime's millisecond wheel) and never queued behind the
    // requests it starts.
    let runtime = tokio::runtime::Handle::current();
    let schedule = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || {
            let mut started = Some(started);
            let slots = Arc::new(tokio::sync::Semaphore::new(max_inflight));
            let (mut sent, mut late) = (0u64, 0u64);
            let mut i: u64 = 0;
            loop {
                let intended = t0 + interval.mul_f64(i as f64);
                // Past the end by the clock, what was not sent yet is not sent at all (and
                // shows as the shortfall of `sent` against the rate).
                let now = Instant::now();
                if intended >= end || now >= end {
                    break;
                }
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                // A full set of open requests holds the next send back (it turns late).
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => match runtime.block_on(slots.clone().acquire_owned()) {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let measuring = intended >= measure_from;
                if measuring {
                    if let Some(f) = started.take() {
                        f();
                    }
                    sent += 1;
                    if Instant::now().saturating_duration_since(intended) > LATE_BOUND {
                        late += 1;
                    }
                }
                let call = plan.calls[(i as usize) % plan.calls.len()].clone();
                let (client, plan, tx) = (client.clone(), plan.clone(), tx.clone());
                runtime.spawn(async move {
                    let answer = send(&client, &call, &plan.token, plan.timeout).await;
                    let done = Instant::now();
                    drop(permit);
                    if measuring {
                        // Latency from the intended send time (no coordinated omission).
                        let _ = tx.send((done, done.saturating_duration_since(intended), answer));
                    }
                });
                i += 1;
            }
            drop(tx);
            (sent, late)
        })
    };
    let (sent, late) = schedule
        .await
        .map_err(|e| format!("the load schedule failed: {e}"))?;
    let mut total = collected
        .await
        .map_err(|e| format!("the load collector failed: {e}"))?;
    total.late_sends = Some(late);
    total.sent = sent;
    total.elapsed = plan.duration;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_upstream_is_read_among_other_metrics() {
        assert_eq!(
            upstream_duration("upstream;dur=1.500"),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            upstream_duration("cache;desc=hit, upstream;dur=\"2\""),
            Some(Duration::from_millis(2))
        );
        assert_eq!(upstream_duration("db;dur=3"), None);
        assert_eq!(upstream_duration("upstream;dur=-1"), None);
    }

    #[test]
    fn nonsense_server_timing_values_are_ignored_without_panicking() {
        for v in [
            "upstream;dur=1e300",
            "upstream;dur=-1",
            "upstream;dur=NaN",
            "upstream;dur=inf",
            "upstream;dur=1e23",
        ] {
            assert_eq!(upstream_duration(v), None, "{v}");
        }
    }

    #[test]
    fn memory_does_not_grow_with_the_run_or_its_callers() {
        let made = || HISTOGRAMS.with(|n| n.get());
        let before = made();
        let mut m = Measured::new();
        assert_eq!(made() - before, 3);
        // An hour of answers from many callers, a few per second.
        let ok = Answer::default();
        for second in 0..3600 {
            for caller in 0..64u64 {
                m.record(second, &ok, Duration::from_micros(100 + caller));
            }
        }
        m.finish();
        assert_eq!(made() - before, 3, "no histogram per second or per caller");
        assert_eq!(m.timeline.len(), 3600);
        assert_eq!(m.requests(), 3600 * 64);
        let p = &m.timeline[1800];
        assert_eq!((p.second, p.requests), (1800, 64));
        assert!((0.1..0.2).contains(&p.p50_ms), "{p:?}");
    }

    #[tokio::test]
    async fn a_failed_caller_fails_the_run() {
        let plan = Plan {
            model: Model::Closed(2),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(50),
            // No call to make: a caller indexing into it panics.
            calls: Vec::new(),
            token: String::new(),
            timeout: Duration::from_secs(1),
            max_inflight: 1,
        };
        let e = run(plan, || {}).await.unwrap_err();
        assert!(e.contains("a load caller failed"), "{e}");
    }

    #[test]
    fn error_codes_come_from_the_body_or_the_status() {
        assert_eq!(
            error_code(
                502,
                br#"{"error":{"code":"upstream_unavailable","message":"x"}}"#
            ),
            "upstream_unavailable"
        );
        assert_eq!(error_code(500, b"oops"), "http_500");
        assert_eq!(error_code(404, br#"{"error":{}}"#), "http_404");
    }

    #[test]
    fn the_distribution_covers_every_answer_once() {
        let mut m = Measured::new();
        let ok = Answer::default();
        for us in [100u64, 200, 400, 800, 1600, 3200, 50_000] {
            m.record(0, &ok, Duration::from_micros(us));
        }
        m.finish();
        let bars = m.distribution(10);
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), 7);
        assert!(bars.windows(2).all(|w| w[0].le_ms < w[1].le_ms), "{bars:?}");
        assert!(bars.len() <= 11);
        assert_eq!(m.timeline(Duration::from_secs(1))[0].requests, 7);
    }

    #[test]
    fn errors_are_counted_by_code_and_second() {
        let mut m = Measured::new();
        let err = Answer {
            error: Some("http_500".into()),
            upstream: Some(Duration::from_micros(900)),
            ..Answer::default()
        };
        m.record(2, &err, Duration::from_millis(1));
        assert_eq!(m.errors["http_500"], 1);
        m.finish();
        assert_eq!(m.timeline[2].errors, 1);
        assert_eq!(m.timeline[0].requests, 0);
        assert_eq!(m.added.len(), 1);
        assert!((m.added_sum_us - 100.0).abs() < 1.0);
    }
}
