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

use berth_api::bench::{LatencyBucket, TimelinePoint};
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
/// Open loop: requests in flight at most (each holds a connection); a send that would
/// exceed it waits, and counts as late.
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
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Latency in microseconds of every answer in the measured part.
    pub latency: Histogram<u64>,
    /// Per second of the measured part: answers, errors and their latencies.
    pub seconds: Vec<(u64, u64, Histogram<u64>)>,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
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
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Measured {
    fn new() -> Self {
        Self {
            latency: histogram(),
            seconds: Vec::new(),
            errors: BTreeMap::new(),
            added: histogram(),
            added_sum_us: 0.0,
            late_sends: None,
            sent: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, second: usize, answer: &Answer, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency.saturating_record(us);
        while self.seconds.len() <= second {
            self.seconds.push((0, 0, histogram()));
        }
        let slot = &mut self.seconds[second];
        slot.0 += 1;
        slot.2.saturating_record(us);
        if let Some(code) = &answer.error {
            slot.1 += 1;
            *self.errors.entry(code.clone()).or_default() += 1;
        }
        if let Some(up) = answer.upstream {
            let added = latency.saturating_sub(up);
            let added_us = (added.as_micros() as u64).clamp(1, MAX_LATENCY_US);
            self.added.saturating_record(added_us);
            self.added_sum_us += added.as_secs_f64() * 1e6;
        }
    }

    fn merge(&mut self, other: Measured) {
        let _ = self.latency.add(&other.latency);
        let _ = self.added.add(&other.added);
        self.added_sum_us += other.added_sum_us;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (i, (n, e, h)) in other.seconds.into_iter().enumerate() {
            while self.seconds.len() <= i {
                self.seconds.push((0, 0, histogram()));
            }
            let slot = &mut self.seconds[i];
            slot.0 += n;
            slot.1 += e;
            let _ = slot.2.add(&h);
        }
    }

    /// Answers in the measured part.
    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    /// Errors in the measured part.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The per-second timeline, whole seconds of the measured part only.
    pub fn timeline(&self, duration: Duration) -> Vec<TimelinePoint> {
        let whole = duration.as_secs_f64().ceil() as usize;
        self.seconds
            .iter()
            .take(whole.max(1))
            .enumerate()
            .map(|(i, (n, e, h))| TimelinePoint {
                second: i as u32,
                requests: *n,
                errors: *e,
                p50_ms: ms(h.value_at_quantile(0.5)),
                p99_ms: ms(h.value_at_quantile(0.99)),
            })
            .collect()
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
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "body".to_owned())?
            .to_bytes();
        Ok::<_, String>((status, upstream, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Answer {
            error: Some("timeout".into()),
            ..Answer::default()
        },
        Ok(Err(kind)) => Answer {
            error: Some(kind),
            ..Answer::default()
        },
        Ok(Ok((status, upstream, body))) => Answer {
            error: (!(200..300).contains(&status)).then(|| error_code(status, &body)),
            upstream,
            status,
        },
    }
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
            (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
        })
    })
}

/// Runs the plan: warm-up, then the measured part. `started` is called when the
/// measured part begins.
pub async fn run(plan: Plan, started: impl FnOnce() + Send + 'static) -> Measured {
    match plan.model {
        Model::Closed(n) => closed(plan, n.max(1), started).await,
        Model::Open(rate) => open(plan, rate, started).await,
    }
}

async fn closed(plan: Plan, callers: u32, started: impl FnOnce()) -> Measured {
    let client = client(callers as usize);
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let measure_from = t0 + plan.warmup;
    let end = measure_from + plan.duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, plan, next) = (client.clone(), plan.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % plan.calls.len();
                let answer = send(&client, &plan.calls[i], &plan.token, plan.timeout).await;
                let done = Instant::now();
                if sent >= measure_from {
                    let second = done.saturating_duration_since(measure_from).as_secs() as usize;
                    measured.record(second, &answer, done - sent);
                }
            }
            measured
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    started();
    let mut total = Measured::new();
    for task in tasks {
        if let Ok(m) = task.await {
            total.merge(m);
        }
    }
    total.elapsed = plan.duration;
    total
}

async fn open(plan: Plan, rate: f64, started: impl FnOnce() + Send + 'static) -> Measured {
    let client = client(MAX_OPEN_REQUESTS);
    let plan = Arc::new(plan);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let measure_from = t0 + plan.warmup;
    let end = measure_from + plan.duration;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Answer, Instant)>();
    let collector = tokio::spawn(async move {
        let mut measured = Measured::new();
        while let Some((intended, answer, done)) = rx.recv().await {
            let second = intended.saturating_duration_since(measure_from).as_secs() as usize;
            measured.record(second, &answer, done.saturating_duration_since(intended));
        }
        measured
    });
    // The schedule runs on a thread of its own, sleeping with the operating system's
    // timer (finer than the runtime's millisecond wheel) and never queued behind the
    // requests it starts.
    let runtime = tokio::runtime::Handle::current();
    let schedule = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || {
            let mut started = Some(started);
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_REQUESTS));
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
                        let _ = tx.send((intended, answer, done));
                    }
                });
                i += 1;
            }
            drop(tx);
            (sent, late)
        })
    };
    let (sent, late) = schedule.await.unwrap_or((0, 0));
    let mut total = collector.await.unwrap_or_else(|_| Measured::new());
    total.late_sends = Some(late);
    total.sent = sent;
    total.elapsed = plan.duration;
    total
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
        assert_eq!(m.seconds[2].1, 1);
        assert_eq!(m.added.len(), 1);
        assert!((m.added_sum_us - 100.0).abs() < 1.0);
    }
}
