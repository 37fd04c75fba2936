//! Bounded resources: the audit queue, plugin answers and client connections cannot grow
//! without limit, whatever a slow sink, a plugin or a client does.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use berth_gateway::{AuditSink, Auditor, Config, Metrics};
use berth_store::AuditEvent;
use berth_store::audit::types;
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A sink that blocks every write until it is opened, like a stalled disk.
#[derive(Default)]
struct StalledSink {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicBool,
    written: Mutex<Vec<AuditEvent>>,
}

impl StalledSink {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl AuditSink for StalledSink {
    fn name(&self) -> &'static str {
        "stalled"
    }

    fn write(&self, events: Vec<AuditEvent>) -> berth_gateway::Result<()> {
        self.entered.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        self.written.lock().unwrap().extend(events);
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_audit_sink_keeps_the_queue_bounded_counts_drops_and_loses_no_security_event() {
    const CAPACITY: usize = 64;
    let sink = Arc::new(StalledSink::default());
    let metrics = Metrics::new();
    let (auditor, writer) =
        Auditor::start_bounded(vec![sink.clone()], metrics.clone(), CAPACITY, 256);
    auditor.record(AuditEvent::new(
        "gateway",
        types::INVOCATION,
        "plugin_error",
    ));
    while !sink.entered.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let flood = 10_000;
    let mut security = 0;
    for i in 0..flood {
        auditor.record(
            AuditEvent::new("gateway", types::INVOCATION, "plugin_error").details(json!({"n": i})),
        );
        if i % 100 == 0 {
            auditor.record(
                AuditEvent::new("gateway", types::SECURITY, "denied").details(json!({"n": i})),
            );
            security += 1;
        }
        if i % 1000 == 0 {
            auditor
                .record(AuditEvent::new("gateway", types::HOOK, "vetoed").details(json!({"n": i})));
            security += 1;
        }
        assert!(
            auditor.queued() <= auditor.queue_capacity(),
            "{} queued",
            auditor.queued()
        );
    }
    assert_eq!(auditor.queue_capacity(), CAPACITY + 256);
    let dropped = |t: &str| metrics.audit_dropped.with_label_values(&[t]).get();
    assert_eq!(dropped(types::INVOCATION), (flood - CAPACITY) as u64);
    assert_eq!(dropped(types::SECURITY), 0);
    assert_eq!(dropped(types::HOOK), 0);
    promtool_check(&metrics.render());

    sink.open();
    auditor.flush().await;
    drop(auditor);
    tokio::time::timeout(Duration::from_secs(5), writer.finish())
        .await
        .expect("the writer finishes once the sink is open");
    let written = sink.written.lock().unwrap();
    let kept: Vec<(&str, u64)> = written
        .iter()
        .filter(|e| e.type_ != types::INVOCATION)
        .map(|e| (e.type_.as_str(), e.details["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(kept.len(), security, "every security event is written once");
    let mut unique = kept.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), security);
    assert_eq!(
        written.len() - security,
        1 + CAPACITY,
        "the ordinary events that fitted in the queue are written"
    );
}

const RUN_SPEC: &str = "capabilities: [{name: run}]\nresources: {timeout: 2s}";

/// A plugin whose answer is `body`, with a declared length when `length` is set.
fn answering(body: fn() -> Body, length: Option<u64>) -> Router {
    Router::new().route(
        "/v1/invoke/{capability}",
        post(move || async move {
            let mut response = http::Response::new(body());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            if let Some(n) = length {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, n.into());
            }
            response
        }),
    )
}

fn endless() -> Body {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    Body::from_stream(futures::stream::repeat_with(move || {
        Ok::<_, Infallible>(chunk.clone())
    }))
}

fn never_finishing() -> Body {
    use futures::StreamExt;
    let first =
        futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"{\"a\":")) });
    Body::from_stream(first.chain(futures::stream::pending()))
}

async fn limited_gateway(app: Router, spec: &str) -> Harness {
    let addr = spawn_plugin(app).await;
    Harness::with_config(
        vec![entry(plugin("big", spec), &[addr])],
        Config {
            max_response_body: 256 * 1024,
            ..test_config()
        },
    )
    .await
}

#[tokio::test]
async fn an_endless_plugin_answer_is_cut_at_the_limit_with_a_502() {
    let h = limited_gateway(answering(endless, None), RUN_SPEC).await;
    for _ in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            h.invoke(INVOKE_ALL, "big", "run", "{}"),
        )
        .await
        .expect("the gateway stops reading at the limit");
        r.expect(StatusCode::BAD_GATEWAY, "plugin_response_too_large");
        assert_eq!(r.json["error"]["details"]["limit"], 256 * 1024);
    }
    assert_eq!(
        h.counter(
            "berth_invocations_total",
            &[("plugin", "big"), ("outcome", "plugin_error")]
        ),
        3.0
    );
}

#[tokio::test]
async fn a_declared_one_gib_answer_is_refused_before_its_body_is_read() {
    let h = limited_gateway(answering(endless, Some(1 << 30)), RUN_SPEC).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        h.invoke(INVOKE_ALL, "big", "run", "{}"),
    )
    .await
    .expect("the declared length is enough to refuse");
    r.expect(StatusCode::BAD_GATEWAY, "plugin_response_too_large");
}

#[tokio::test]
async fn a_plugin_that_never_finishes_its_body_meets_the_deadline() {
    let h = limited_gateway(
        answering(never_finishing, None),
        "capabilities: [{name: run}]\nresources: {timeout: 300ms}",
    )
    .await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        h.invoke(INVOKE_ALL, "big", "run", "{}"),
    )
    .await
    .expect("the deadline answers");
    r.expect(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded");
}

/// Opens `n` connections that send part of a request line and then nothing.
async fn half_sent_requests(url: &str, n: usize) -> Vec<TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /heal").await.unwrap();
        held.push(tcp);
    }
    held
}

#[tokio::test]
async fn five_hundred_half_sent_requests_do_not_keep_a_real_caller_waiting() {
    let h = Harness::start(vec![]).await;
    let held = half_sent_requests(&h.url, 500).await;
    let r = tokio::time::timeout(Duration::from_secs(5), h.get("/healthz", None))
        .await
        .expect("a real caller is answered while slow clients hold connections");
    assert_eq!(r.status, StatusCode::OK);
    drop(held);
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_after_the_timeout() {
    let h = Harness::with_config(
        vec![],
        Config {
            header_read_timeout: Duration::from_millis(300),
            ..test_config()
        },
    )
    .await;
    let mut tcp = TcpStream::connect(h.url.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let h = Harness::with_config(
        vec![],
        Config {
            max_connections: 2,
            ..test_config()
        },
    )
    .await;
    let held = half_sent_requests(&h.url, 2).await;
    let url = h.url.clone();
    let caller = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !caller.is_finished(),
        "a connection past the cap waits instead of being served or refused"
    );
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(5), caller)
        .await
        .expect("a freed slot serves the waiting connection")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_a_408_and_frees_its_connection() {
    let addr = spawn_plugin(answering(|| Body::from("{}"), None)).await;
    let h = Harness::with_config(
        vec![entry(plugin("big", RUN_SPEC), &[addr])],
        Config {
            body_read_timeout: Duration::from_millis(300),
            max_connections: 1,
            ..test_config()
        },
    )
    .await;
    let mut tcp = TcpStream::connect(h.url.trim_start_matches("http://"))
        .await
        .unwrap();
    // Headers promising 100 bytes, then 10 of them, then nothing.
    tcp.write_all(
        format!(
            "POST /v1/plugins/big/invoke/run HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {INVOKE_ALL}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\": 1, "
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the gateway answers and closes the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // The one connection slot is free again: a real caller is served.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        h.invoke(INVOKE_ALL, "big", "run", "{}"),
    )
    .await
    .expect("the slot was freed");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
