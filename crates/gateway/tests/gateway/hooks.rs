//! Hook fan-out through a real gateway to real subscriber servers.

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use berth_api::Phase;
use berth_store::AuditQuery;
use berth_store::audit::types;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A filter that appends `tag` to `event.trail`.
fn tagging_filter(tag: &'static str, rec: Recorder) -> Router {
    Router::new().route(
        "/v1/hooks/{hook}",
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let rec = rec.clone();
                async move {
                    rec.record(&headers);
                    let mut event = body["event"].clone();
                    let mut trail = event["trail"].as_array().cloned().unwrap_or_default();
                    trail.push(json!(tag));
                    event["trail"] = Value::Array(trail);
                    axum::Json(json!({"action": "modify", "event": event}))
                }
            },
        ),
    )
}

/// A filter that answers `answer` whatever it gets.
fn fixed_filter(answer: Value, rec: Recorder) -> Router {
    Router::new().route(
        "/v1/hooks/{hook}",
        post(move |headers: HeaderMap| {
            let rec = rec.clone();
            let answer = answer.clone();
            async move {
                rec.record(&headers);
                axum::Json(answer)
            }
        }),
    )
}

/// An observer that keeps what it saw and answers 204.
fn observer(rec: Recorder, seen: Arc<std::sync::Mutex<Vec<Value>>>) -> Router {
    Router::new().route(
        "/v1/hooks/{hook}",
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let rec = rec.clone();
                let seen = seen.clone();
                async move {
                    rec.record(&headers);
                    seen.lock().unwrap().push(body["event"].clone());
                    StatusCode::NO_CONTENT
                }
            },
        ),
    )
}

/// A subscriber that never answers.
fn hanging(rec: Recorder) -> Router {
    Router::new().route(
        "/v1/hooks/{hook}",
        post(move |headers: HeaderMap| {
            let rec = rec.clone();
            async move {
                rec.record(&headers);
                std::future::pending::<()>().await;
                StatusCode::OK
            }
        }),
    )
}

fn subscriber(name: &str, mode: &str, priority: i32) -> berth_api::Plugin {
    plugin(
        name,
        &format!("hooks: [{{name: before_command, mode: {mode}, priority: {priority}}}]"),
    )
}

fn outcomes(reply: &Reply) -> Vec<(String, String)> {
    reply.json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["plugin"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn filters_run_in_priority_order_and_each_sees_the_previous_modification() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let late = spawn_plugin(tagging_filter("late", Recorder::default())).await;
    let early = spawn_plugin(tagging_filter("early", Recorder::default())).await;
    let tie_a = spawn_plugin(tagging_filter("tie-a", Recorder::default())).await;
    let tie_b = spawn_plugin(tagging_filter("tie-b", Recorder::default())).await;
    let obs = spawn_plugin(observer(Recorder::default(), seen.clone())).await;
    let h = Harness::start(vec![
        entry(subscriber("late", "filter", 300), &[late]),
        entry(subscriber("zz-tie", "filter", 200), &[tie_b]),
        entry(subscriber("aa-tie", "filter", 200), &[tie_a]),
        entry(subscriber("early", "filter", -5), &[early]),
        entry(subscriber("watcher", "observe", 100), &[obs]),
    ])
    .await;
    let r = h
        .publish(
            HOOKS,
            "before_command",
            &json!({"command": "ls", "trail": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["vetoed"], false);
    assert_eq!(
        r.json["event"]["trail"],
        json!(["early", "tie-a", "tie-b", "late"])
    );
    assert_eq!(r.json["event"]["command"], "ls");
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("early", "modified"),
            ("aa-tie", "modified"),
            ("zz-tie", "modified"),
            ("late", "modified"),
            ("watcher", "delivered"),
        ])
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["trail"], json!(["early", "tie-a", "tie-b", "late"]));
}

#[tokio::test]
async fn veto_stops_the_chain_and_names_the_plugin() {
    let after = Recorder::default();
    let watcher = Recorder::default();
    let first = spawn_plugin(tagging_filter("first", Recorder::default())).await;
    let guard = spawn_plugin(fixed_filter(
        json!({"action": "veto", "reason": "rm -rf is not allowed"}),
        Recorder::default(),
    ))
    .await;
    let later = spawn_plugin(tagging_filter("later", after.clone())).await;
    let obs = spawn_plugin(observer(watcher.clone(), Default::default())).await;
    let h = Harness::start(vec![
        entry(subscriber("first", "filter", 1), &[first]),
        entry(subscriber("guard", "filter", 2), &[guard]),
        entry(subscriber("later", "filter", 3), &[later]),
        entry(subscriber("watcher", "observe", 100), &[obs]),
    ])
    .await;
    let r = h
        .publish(HOOKS, "before_command", &json!({"command": "rm -rf /"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["vetoed"], true);
    assert_eq!(r.json["veto"]["plugin"], "guard");
    assert_eq!(r.json["veto"]["reason"], "rm -rf is not allowed");
    assert_eq!(r.json["event"]["trail"], json!(["first"]));
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("first", "modified"),
            ("guard", "vetoed"),
            ("later", "skipped"),
            ("watcher", "skipped"),
        ])
    );
    assert_eq!((after.hits(), watcher.hits()), (0, 0));
    h.flush_audit().await;
    let vetoes = h
        .store
        .query_audit(&AuditQuery {
            type_: Some(types::HOOK.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(vetoes.len(), 1);
    assert_eq!(vetoes[0].plugin.as_deref(), Some("guard"));
    assert_eq!(vetoes[0].outcome, "vetoed");
}

#[tokio::test]
async fn slow_and_crashing_subscribers_are_skipped_and_the_others_still_run() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow = spawn_plugin(hanging(Recorder::default())).await;
    let crash = spawn_crashing_plugin().await;
    let garbage = spawn_plugin(fixed_filter(json!({"nonsense": true}), Recorder::default())).await;
    let good = spawn_plugin(tagging_filter("good", Recorder::default())).await;
    let obs = spawn_plugin(observer(Recorder::default(), seen.clone())).await;
    let slow_obs = spawn_plugin(hanging(Recorder::default())).await;
    let h = Harness::start(vec![
        entry(subscriber("slow", "filter", 1), &[slow]),
        entry(subscriber("crash", "filter", 2), &[crash]),
        entry(subscriber("garbage", "filter", 3), &[garbage]),
        entry(subscriber("good", "filter", 4), &[good]),
        entry(subscriber("crash-obs", "observe", 0), &[crash]),
        entry(subscriber("slow-obs", "observe", 0), &[slow_obs]),
        entry(subscriber("watcher", "observe", 0), &[obs]),
    ])
    .await;
    let r = h.publish(HOOKS, "before_command", &json!({"n": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["event"], json!({"n": 1, "trail": ["good"]}));
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("slow", "timeout"),
            ("crash", "failed"),
            ("garbage", "failed"),
            ("good", "modified"),
            ("crash-obs", "failed"),
            ("slow-obs", "timeout"),
            ("watcher", "delivered"),
        ])
    );
    assert_eq!(seen.lock().unwrap()[0], json!({"n": 1, "trail": ["good"]}));
    assert_eq!(
        h.counter(
            "berth_hook_deliveries_total",
            &[
                ("hook", "before_command"),
                ("plugin", "slow"),
                ("outcome", "timeout")
            ]
        ),
        1.0
    );
    h.flush_audit().await;
    let failures = h
        .store
        .query_audit(&AuditQuery {
            type_: Some(types::HOOK.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(failures.len(), 5, "{failures:?}");
}

#[tokio::test]
async fn observers_are_notified_concurrently() {
    // Each observer answers only once all three have been called: delivered one at a
    // time, the first would wait forever and time out.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let app = |barrier: Arc<tokio::sync::Barrier>| {
        Router::new().route(
            "/v1/hooks/{hook}",
            post(move || {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let mut entries = Vec::new();
    for name in ["o1", "o2", "o3"] {
        let addr = spawn_plugin(app(barrier.clone())).await;
        entries.push(entry(subscriber(name, "observe", 100), &[addr]));
    }
    let h = Harness::start(entries).await;
    let r = h.publish(HOOKS, "before_command", &json!({})).await;
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("o1", "delivered"),
            ("o2", "delivered"),
            ("o3", "delivered")
        ])
    );
}

#[tokio::test]
async fn hook_without_subscribers_returns_the_event_unchanged() {
    let h = Harness::start(vec![]).await;
    let r = h
        .publish(HOOKS, "custom.deploy.done", &json!({"id": 7}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["event"], json!({"id": 7}));
    assert_eq!(r.json["deliveries"], json!([]));
}

#[tokio::test]
async fn unknown_hook_name_and_missing_event_are_400() {
    let h = Harness::start(vec![]).await;
    let r = h.publish(HOOKS, "before_comand", &json!({})).await;
    r.expect(StatusCode::BAD_REQUEST, "unknown_hook");
    assert!(r.text.contains("before_command"), "{}", r.text);
    let r = h
        .send(
            http::Method::POST,
            "/v1/hooks/before_command",
            Some(HOOKS),
            &[],
            r#"{"something": 1}"#,
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_hook_event");
    // Plugins answer an event that is not an object with 400: the gateway refuses it first.
    let r = h
        .send(
            http::Method::POST,
            "/v1/hooks/before_command",
            Some(HOOKS),
            &[],
            r#"{"event": "rm -rf /"}"#,
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_hook_event");
    assert!(r.text.contains("got a string"), "{}", r.text);
}

/// A subscriber that answers 500 to everything.
fn failing(rec: Recorder) -> Router {
    Router::new().route(
        "/v1/hooks/{hook}",
        post(move |headers: HeaderMap| {
            let rec = rec.clone();
            async move {
                rec.record(&headers);
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }),
    )
}

/// An address nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn guarded(name: &str, policy: &str, priority: i32) -> berth_api::Plugin {
    plugin(
        name,
        &format!(
            "hooks: [{{name: before_command, mode: filter, priority: {priority}, failurePolicy: {policy}}}]"
        ),
    )
}

async fn hook_audit(h: &Harness) -> Vec<berth_store::AuditEvent> {
    h.flush_audit().await;
    h.store
        .query_audit(&AuditQuery {
            type_: Some(types::HOOK.into()),
            ..Default::default()
        })
        .unwrap()
}

#[tokio::test]
async fn failing_filter_with_failure_policy_ignore_lets_the_event_through() {
    let server_error = spawn_plugin(failing(Recorder::default())).await;
    let unreachable = closed_port().await;
    let good = spawn_plugin(tagging_filter("good", Recorder::default())).await;
    let h = Harness::start(vec![
        entry(guarded("explicit", "Ignore", 1), &[server_error]),
        entry(subscriber("implicit", "filter", 2), &[unreachable]),
        entry(subscriber("good", "filter", 3), &[good]),
    ])
    .await;
    let r = h.publish(HOOKS, "before_command", &json!({"n": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["vetoed"], false, "{}", r.text);
    assert_eq!(r.json["event"], json!({"n": 1, "trail": ["good"]}));
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("explicit", "failed"),
            ("implicit", "failed"),
            ("good", "modified")
        ])
    );
}

#[tokio::test]
async fn failing_filter_with_failure_policy_fail_vetoes_the_event_for_500_timeout_and_unreachable()
{
    for (failure, reason_part) in [
        ("error", "it answered 500"),
        ("timeout", "no answer within"),
        ("unreachable", ""),
    ] {
        let addr = match failure {
            "error" => spawn_plugin(failing(Recorder::default())).await,
            "timeout" => spawn_plugin(hanging(Recorder::default())).await,
            _ => closed_port().await,
        };
        let later = Recorder::default();
        let watcher = Recorder::default();
        let later_addr = spawn_plugin(tagging_filter("later", later.clone())).await;
        let obs = spawn_plugin(observer(watcher.clone(), Default::default())).await;
        let h = Harness::start(vec![
            entry(guarded("gate", "Fail", 1), &[addr]),
            entry(subscriber("later", "filter", 2), &[later_addr]),
            entry(subscriber("watcher", "observe", 100), &[obs]),
        ])
        .await;
        let r = h
            .publish(HOOKS, "before_command", &json!({"command": "ls"}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{failure}: {}", r.text);
        assert_eq!(r.json["vetoed"], true, "{failure}: {}", r.text);
        assert_eq!(r.json["veto"]["plugin"], "gate");
        assert_eq!(r.json["veto"]["failure"], failure, "{}", r.text);
        let reason = r.json["veto"]["reason"].as_str().unwrap();
        for part in [
            "gate",
            "before_command",
            failure,
            "failurePolicy is Fail",
            reason_part,
        ] {
            assert!(
                reason.contains(part),
                "{failure}: {part:?} not in {reason:?}"
            );
        }
        assert_eq!(
            outcomes(&r),
            pairs(&[
                ("gate", "failed_closed"),
                ("later", "skipped"),
                ("watcher", "skipped")
            ]),
            "{failure}"
        );
        assert_eq!((later.hits(), watcher.hits()), (0, 0), "{failure}");
        assert_eq!(
            h.counter(
                "berth_hook_deliveries_total",
                &[
                    ("hook", "before_command"),
                    ("plugin", "gate"),
                    ("outcome", "failed_closed")
                ]
            ),
            1.0,
            "{failure}"
        );
        let audit = hook_audit(&h).await;
        assert_eq!(audit.len(), 1, "{failure}: {audit:?}");
        assert_eq!(audit[0].plugin.as_deref(), Some("gate"));
        assert_eq!(audit[0].outcome, "failed_closed");
        assert_eq!(audit[0].details["hook"], "before_command");
        assert_eq!(audit[0].details["failure"], failure);
        assert_eq!(audit[0].details["failurePolicy"], "Fail");
    }
}

#[tokio::test]
async fn a_fail_closed_filter_that_answers_lets_the_event_through() {
    let gate = spawn_plugin(tagging_filter("gate", Recorder::default())).await;
    let h = Harness::start(vec![entry(guarded("gate", "Fail", 1), &[gate])]).await;
    let r = h.publish(HOOKS, "before_command", &json!({})).await;
    assert_eq!(r.json["vetoed"], false, "{}", r.text);
    assert_eq!(r.json["event"]["trail"], json!(["gate"]));
}

#[tokio::test]
async fn a_fail_closed_filter_that_is_not_ready_vetoes_but_a_disabled_or_ungranted_one_does_not() {
    let addr = spawn_plugin(tagging_filter("gate", Recorder::default())).await;
    let h = Harness::start(vec![
        entry(guarded("deploying", "Fail", 1), &[addr]).with_phase(Phase::Deploying),
        entry(guarded("no-endpoint", "Fail", 2), &[]),
    ])
    .await;
    let r = h.publish(HOOKS, "before_command", &json!({})).await;
    assert_eq!(r.json["vetoed"], true, "{}", r.text);
    assert_eq!(r.json["veto"]["plugin"], "deploying");
    assert_eq!(r.json["veto"]["failure"], "not_ready");
    assert!(
        r.json["veto"]["reason"]
            .as_str()
            .unwrap()
            .contains("phase Deploying"),
        "{}",
        r.text
    );
    assert_eq!(
        outcomes(&r),
        pairs(&[("deploying", "failed_closed"), ("no-endpoint", "skipped")])
    );

    let h = Harness::start(vec![
        entry(guarded("disabled", "Fail", 1), &[addr]).with_phase(Phase::Disabled),
        entry(guarded("ungranted", "Fail", 2), &[addr]).with_phase(Phase::AwaitingApproval),
        entry(guarded("gate", "Fail", 3), &[addr]),
    ])
    .await;
    let r = h.publish(HOOKS, "before_command", &json!({})).await;
    assert_eq!(r.json["vetoed"], false, "{}", r.text);
    assert_eq!(r.json["event"]["trail"], json!(["gate"]));
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("disabled", "skipped"),
            ("ungranted", "skipped"),
            ("gate", "modified")
        ])
    );
}
