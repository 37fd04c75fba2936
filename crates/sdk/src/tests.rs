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
