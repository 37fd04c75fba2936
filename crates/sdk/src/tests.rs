use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::protocol::{Describe, ErrorBody};
use crate::{Context, Error, HookAction, HookMode, Plugin};

#[derive(Deserialize)]
struct AddInput {
    a: i64,
    b: i64,
}

#[derive(Serialize)]
struct AddOutput {
    sum: i64,
}

fn plugin() -> Plugin {
    Plugin::new("math", "1.2.3")
        .capability("add", |input: AddInput, _ctx: Context| async move {
            input
                .a
                .checked_add(input.b)
                .map(|sum| AddOutput { sum })
                .ok_or_else(|| Error::unprocessable("overflow", "the sum does not fit in 64 bits"))
        })
        .capability("hang", |_: Value, _ctx: Context| async move {
            std::future::pending::<Result<Value, Error>>().await
        })
        .capability("whoami", |_: Value, ctx: Context| async move {
            Ok::<_, Error>(json!({
                "requestId": ctx.request_id(),
                "caller": ctx.caller(),
                "hasDeadline": ctx.deadline().is_some(),
            }))
        })
        .hook(
            "before_command",
            HookMode::Filter,
            |event: Value, _ctx| async move {
                Ok(match event["command"].as_str() {
                    Some("rm -rf /") => HookAction::veto("not on this machine"),
                    Some(cmd) if cmd.starts_with("sudo ") => HookAction::modify(json!({
                        "command": cmd.trim_start_matches("sudo "),
                    }))
                    .map_err(|e| Error::internal(e.to_string()))?,
                    _ => HookAction::Continue,
                })
            },
        )
        .hook(
            "file_changed",
            HookMode::Observe,
            |_event: Value, _ctx| async move { Ok(HookAction::Continue) },
        )
}

async fn call(plugin: Plugin, request: Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let response = plugin.router().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).unwrap()
}

fn error_code(body: &[u8]) -> String {
    let parsed: ErrorBody = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)));
    assert!(!parsed.error.message.is_empty(), "error message is empty");
    parsed.error.code
}

#[tokio::test]
async fn healthz_answers_200() {
    let (status, _, _) = call(
        plugin(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn describe_lists_what_was_registered_in_order() {
    let (status, _, body) = call(
        plugin(),
        Request::get("/v1/describe").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let describe: Describe = serde_json::from_slice(&body).unwrap();
    assert_eq!(describe, plugin().describe());
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({
            "name": "math",
            "version": "1.2.3",
            "capabilities": [{"name": "add"}, {"name": "hang"}, {"name": "whoami"}],
            "hooks": [
                {"name": "before_command", "mode": "filter"},
                {"name": "file_changed", "mode": "observe"}
            ]
        })
    );
}

#[tokio::test]
async fn invoke_returns_typed_output_as_json() {
    let (status, headers, body) = call(plugin(), post("/v1/invoke/add", r#"{"a":2,"b":40}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"sum": 42})
    );
}

#[tokio::test]
async fn unknown_capability_is_404_with_error_body() {
    let (status, _, body) = call(plugin(), post("/v1/invoke/divide", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "unknown_capability");
}

#[tokio::test]
async fn unknown_hook_is_404_with_error_body() {
    let (status, _, body) = call(
        plugin(),
        post("/v1/hooks/pipeline_start", r#"{"event":{}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "unknown_hook");
}

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let (status, _, body) = call(plugin(), post("/v1/invoke/add", "{\"a\": 1,")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
}

#[tokio::test]
async fn malformed_json_is_malformed_json_even_after_a_refused_field() {
    let strict = Plugin::new("strict", "0.1.0")
        .capability("s", |_: Strict, _: Context| async move {
            Ok::<_, Error>(json!({}))
        });
    let (status, _, body) = call(strict, post("/v1/invoke/s", r#"{"unknown": "#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Strict {
    known: Option<String>,
}

#[tokio::test]
async fn input_of_the_wrong_shape_is_400_invalid_input() {
    let (status, _, body) = call(plugin(), post("/v1/invoke/add", r#"{"a":"two","b":1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_input");
}

#[tokio::test]
async fn handler_error_keeps_its_status_and_code() {
    let body = format!(r#"{{"a":{},"b":1}}"#, i64::MAX);
    let (status, _, body) = call(plugin(), post("/v1/invoke/add", body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "overflow");
}

#[tokio::test]
async fn unknown_path_and_wrong_method_answer_error_bodies() {
    let (status, _, body) =
        call(plugin(), Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, _, body) = call(
        plugin(),
        Request::get("/v1/invoke/add").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let big = format!(r#"{{"a":1,"b":1,"pad":"{}"}}"#, "x".repeat(2048));
    let (status, _, body) = call(plugin().max_body_bytes(1024), post("/v1/invoke/add", big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");
}

#[tokio::test(start_paused = true)]
async fn deadline_header_cancels_the_handler_with_504() {
    let request = Request::post("/v1/invoke/hang")
        .header("Berth-Deadline-Ms", "250")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, body) = call(plugin(), request).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body), "deadline_exceeded");
}

#[tokio::test]
async fn deadline_header_that_is_not_a_number_is_400() {
    let request = Request::post("/v1/invoke/add")
        .header("Berth-Deadline-Ms", "soon")
        .body(Body::from(r#"{"a":1,"b":1}"#))
        .unwrap();
    let (status, _, body) = call(plugin(), request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
}

#[tokio::test]
async fn request_headers_reach_the_context_and_the_request_id_is_echoed() {
    let request = Request::post("/v1/invoke/whoami")
        .header("Berth-Request-Id", "req-7")
        .header("Berth-Caller", "http-fetch")
        .header("Berth-Deadline-Ms", "5000")
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, body) = call(plugin(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["berth-request-id"], "req-7");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"requestId": "req-7", "caller": "http-fetch", "hasDeadline": true})
    );
}

#[tokio::test]
async fn filter_hook_answers_continue_modify_or_veto() {
    let cases = [
        ("ls", json!({"action": "continue"})),
        (
            "sudo ls",
            json!({"action": "modify", "event": {"command": "ls"}}),
        ),
        (
            "rm -rf /",
            json!({"action": "veto", "reason": "not on this machine"}),
        ),
    ];
    for (command, expected) in cases {
        let body = json!({"event": {"command": command}}).to_string();
        let (status, _, answer) = call(plugin(), post("/v1/hooks/before_command", body)).await;
        assert_eq!(status, StatusCode::OK, "{command}");
        assert_eq!(
            serde_json::from_slice::<Value>(&answer).unwrap(),
            expected,
            "{command}"
        );
        let _: HookAction = serde_json::from_slice(&answer).unwrap();
    }
}

#[tokio::test]
async fn observe_hook_answers_204_without_body() {
    let (status, _, body) = call(
        plugin(),
        post("/v1/hooks/file_changed", r#"{"event":{"path":"a.txt"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
}

#[tokio::test]
async fn hook_body_without_event_is_400() {
    let (status, _, body) = call(
        plugin(),
        post("/v1/hooks/before_command", r#"{"command":"ls"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_input");
}

#[test]
#[should_panic(expected = "registered twice")]
fn registering_a_capability_twice_panics() {
    let handler = |v: Value, _: Context| async move { Ok::<_, Error>(v) };
    let _ = Plugin::new("p", "0.1.0")
        .capability("a", handler)
        .capability("a", handler);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (entered_h, release_h) = (entered.clone(), release.clone());
    let plugin = Plugin::new("slow", "0.1.0").capability("wait", move |_: Value, _ctx: Context| {
        let (entered, release) = (entered_h.clone(), release_h.clone());
        async move {
            entered.notify_one();
            release.notified().await;
            Ok::<_, Error>(json!({"done": true}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(plugin.serve_with_shutdown(listener, async move {
        let _ = stop_rx.await;
    }));

    let request = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = "{}";
        let raw = format!(
            "POST /v1/invoke/wait HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        answer
    });

    entered.notified().await;
    stop_tx.send(()).unwrap();
    // The server must still be waiting for the request it holds.
    tokio::task::yield_now().await;
    assert!(
        !server.is_finished(),
        "server stopped with a request in flight"
    );
    release.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the in-flight request never finished")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"done":true}"#), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server did not stop after draining")
        .unwrap()
        .unwrap();
}

fn counting_plugin() -> (Plugin, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = runs.clone();
    let plugin = plugin().capability("count", move |_: Value, ctx: Context| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, Error>(json!({"hasDeadline": ctx.deadline().is_some()}))
        }
    });
    (plugin, runs)
}

fn with_deadline(uri: &str, values: &[&str], body: &str) -> Request<Body> {
    let mut builder = Request::post(uri);
    for v in values {
        builder = builder.header("Berth-Deadline-Ms", *v);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn deadline_zero_is_504_and_the_handler_never_runs() {
    let (plugin, runs) = counting_plugin();
    let (status, _, body) = call(plugin, with_deadline("/v1/invoke/count", &["0"], "{}")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body), "deadline_exceeded");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn deadline_header_sent_twice_is_400_bad_request() {
    let (plugin, runs) = counting_plugin();
    let request = with_deadline("/v1/invoke/count", &["5000", "5000"], "{}");
    let (status, _, body) = call(plugin, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn deadline_header_accepts_only_digits_with_optional_spaces() {
    for bad in ["+5", "-1", "5.0", "1e3", "5ms", "", "0x10", "5 5", "５"] {
        let (plugin, _) = counting_plugin();
        let value = http::HeaderValue::from_bytes(bad.as_bytes()).unwrap();
        let request = Request::post("/v1/invoke/count")
            .header("Berth-Deadline-Ms", value)
            .body(Body::from("{}"))
            .unwrap();
        let (status, _, body) = call(plugin, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(error_code(&body), "bad_request", "{bad:?}");
    }
    for good in ["5000", " 5000", "5000 ", "\t5000\t", "007"] {
        let (plugin, _) = counting_plugin();
        let (status, _, body) =
            call(plugin, with_deadline("/v1/invoke/count", &[good], "{}")).await;
        assert_eq!(status, StatusCode::OK, "{good:?}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"hasDeadline": true}),
            "{good:?}"
        );
    }
}

#[tokio::test]
async fn deadline_too_large_to_hold_means_no_deadline() {
    for huge in ["18446744073709551616", "99999999999999999999999999999999"] {
        let (plugin, runs) = counting_plugin();
        let (status, _, body) =
            call(plugin, with_deadline("/v1/invoke/count", &[huge], "{}")).await;
        assert_eq!(status, StatusCode::OK, "{huge}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"hasDeadline": false})
        );
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
    // The largest value that fits still works as a (far) deadline and does not overflow.
    let (plugin, _) = counting_plugin();
    let (status, _, _) = call(
        plugin,
        with_deadline("/v1/invoke/count", &[&u64::MAX.to_string()], "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn errors_take_precedence_in_the_documented_order() {
    // Wrong method before unknown capability.
    let (status, headers, body) = call(
        plugin(),
        Request::get("/v1/invoke/no-such")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
    assert!(
        headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("POST")),
        "{headers:?}"
    );
    let (status, headers, _) = call(
        plugin(),
        Request::post("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        headers
            .get("allow")
            .is_some_and(|v| v.to_str().unwrap().contains("GET"))
    );
    // Unknown capability before a bad deadline.
    let (status, _, body) = call(
        plugin(),
        with_deadline("/v1/invoke/no-such", &["soon"], "{"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "unknown_capability");
    let (status, _, body) = call(plugin(), with_deadline("/v1/hooks/startup", &["0"], "{")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "unknown_hook");
    // A bad deadline before an expired one, a too-large body or malformed JSON.
    let (status, _, body) = call(
        plugin().max_body_bytes(4),
        with_deadline("/v1/invoke/add", &["soon"], "{ not json at all"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    // An expired deadline before a too-large or malformed body.
    let (status, _, body) = call(
        plugin().max_body_bytes(4),
        with_deadline("/v1/invoke/add", &["0"], "{ not json at all"),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body), "deadline_exceeded");
    // A too-large body before malformed JSON.
    let (status, _, body) = call(
        plugin().max_body_bytes(4),
        post("/v1/invoke/add", "{ not json at all"),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");
    // Malformed JSON before input that does not fit (a hook envelope without event).
    let (status, _, body) = call(plugin(), post("/v1/hooks/before_command", "{\"x\":")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
}

#[tokio::test]
async fn healthz_and_describe_ignore_protocol_headers() {
    for path in ["/healthz", "/v1/describe"] {
        for deadline in ["soon", "0"] {
            let request = Request::get(path)
                .header("Berth-Deadline-Ms", deadline)
                .header("Berth-Deadline-Ms", "1")
                .body(Body::empty())
                .unwrap();
            let (status, _, body) = call(plugin(), request).await;
            assert_eq!(status, StatusCode::OK, "{path} {deadline}");
            if path == "/healthz" {
                assert_eq!(
                    serde_json::from_slice::<Value>(&body).unwrap(),
                    json!({"status": "ok"})
                );
            }
        }
    }
}

#[tokio::test]
async fn hook_event_that_is_not_an_object_is_400_invalid_input() {
    for envelope in [
        r#"{"event":"ls"}"#,
        r#"{"event":["ls"]}"#,
        r#"{"event":null}"#,
        r#"{"event":7}"#,
        r#"["event"]"#,
    ] {
        let (status, _, body) = call(plugin(), post("/v1/hooks/before_command", envelope)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{envelope}");
        assert_eq!(error_code(&body), "invalid_input", "{envelope}");
    }
    // Other envelope fields are ignored.
    let (status, _, body) = call(
        plugin(),
        post(
            "/v1/hooks/before_command",
            r#"{"event":{"command":"ls","args":[],"cwd":"/"},"extra":1}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"action": "continue"})
    );
}

#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A process-wide subscriber interested in every callsite. Without it, a test on another
/// thread can hit the plugin's span callsites first, with no subscriber interested, and
/// tracing caches them as disabled while a test's scoped subscriber is being registered:
/// that test's span fields then go missing.
fn every_callsite_enabled() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}

#[tokio::test]
async fn logs_are_json_lines_with_top_level_protocol_fields() {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;
    every_callsite_enabled();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber =
        tracing_subscriber::registry().with(crate::JsonLines::new(move || sink.clone()));
    let request = Request::post("/v1/invoke/add")
        .header("Berth-Request-Id", "req-42")
        .body(Body::from(r#"{"a":1,"b":2}"#))
        .unwrap();
    let response = plugin()
        .router()
        .oneshot(request)
        .with_subscriber(subscriber)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = lines
        .iter()
        .find(|l| l["message"] == "answered")
        .unwrap_or_else(|| panic!("no \"answered\" line in {text}"));
    assert_eq!(answered["level"], "INFO");
    assert_eq!(answered["request_id"], "req-42");
    assert_eq!(answered["capability"], "add");
    assert_eq!(answered["status"], 200);
    assert!(answered.get("fields").is_none() && answered.get("span").is_none());
    let ts = answered["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-30T15:04:05.123Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
}

/// Reads one HTTP/1.1 response with a Content-Length body from `stream`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf[..end + 4 + length]).into_owned();
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn start(
    plugin: Plugin,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(plugin.serve_with_shutdown(listener, async move {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx, server)
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    use tokio::io::AsyncWriteExt;
    let (addr, _stop, _server) = start(plugin()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for (a, sum) in [(1, 3), (40, 42)] {
        let body = format!(r#"{{"a":{a},"b":2}}"#);
        let raw = format!(
            "POST /v1/invoke/add HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(raw.as_bytes()).await.unwrap();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&format!(r#"{{"sum":{sum}}}"#)), "{answer}");
    }
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, stop, server) = start(plugin()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The connection is now idle and kept alive; shutting down must close it, not wait
    // for the drain timeout.
    stop.send(()).unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
        .await
        .expect("the idle keep-alive connection was not closed on shutdown");
    assert_eq!(read.unwrap(), 0, "{:?}", String::from_utf8_lossy(&rest));
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_still_answers_a_request_whose_body_is_arriving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, stop, server) = start(plugin()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"a":20,"b":22}"#;
    let (first, second) = body.split_at(7);
    let head = format!(
        "POST /v1/invoke/add HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Let the server read the head and start on the body before it is told to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !server.is_finished(),
        "server stopped with a request half received"
    );
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("no answer after shutdown")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"sum":42}"#), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server did not stop after answering")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn every_answer_echoes_the_request_id() {
    let cases = [
        Request::get("/healthz"),
        Request::get("/v1/describe"),
        Request::get("/nope"),
        Request::post("/healthz"),
        Request::get("/v1/invoke/add"),
        Request::post("/v1/invoke/no-such"),
        Request::post("/v1/hooks/no-such"),
    ];
    for builder in cases {
        let request = builder
            .header("Berth-Request-Id", "req-echo")
            .body(Body::from("{}"))
            .unwrap();
        let uri = request.uri().clone();
        let (_, headers, _) = call(plugin(), request).await;
        assert_eq!(
            headers.get("berth-request-id").map(|v| v.to_str().unwrap()),
            Some("req-echo"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn request_heads_of_8_kib_are_accepted() {
    use tokio::io::AsyncWriteExt;
    let (addr, _stop, _server) = start(plugin()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let mut i = 0;
    while head.len() < 8 * 1024 - 64 {
        head.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(90)));
        i += 1;
    }
    head.push_str("\r\n");
    assert!(
        head.len() <= 8 * 1024 && head.len() > 8 * 1024 - 160,
        "{}",
        head.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn chunked_request_bodies_are_accepted() {
    use tokio::io::AsyncWriteExt;
    let (addr, _stop, _server) = start(plugin()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let raw = "POST /v1/invoke/add HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
               7\r\n{\"a\":20\r\n8\r\n,\"b\":22}\r\n0\r\n\r\n";
    stream.write_all(raw.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"sum":42}"#), "{answer}");
}

#[tokio::test]
async fn log_lines_carry_the_request_id_even_when_the_filter_drops_request_spans() {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;
    every_callsite_enabled();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("warn"))
        .with(crate::JsonLines::new(move || sink.clone()));
    let failing = Plugin::new("f", "0.1.0").capability("boom", |_: Value, _: Context| async move {
        Err::<Value, _>(Error::internal("it broke"))
    });
    let request = Request::post("/v1/invoke/boom")
        .header("Berth-Request-Id", "req-warn")
        .body(Body::from("{}"))
        .unwrap();
    let response = failing
        .router()
        .oneshot(request)
        .with_subscriber(subscriber)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().expect("no log line")).unwrap();
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["message"], "failed");
    assert_eq!(line["request_id"], "req-warn");
    assert_eq!(line["error"], "it broke");
}
