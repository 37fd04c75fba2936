//! Warm standby's admin routes: call counts of plugins with `spec.standby`, a pause the
//! gateway agrees to only when no call came since the supervisor looked, and the wake long
//! poll that names a paused plugin as soon as it is called.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const STANDBY_SPEC: &str = "standby: {idleAfter: 1s}\n";

async fn post(h: &Harness, token: &str, path: &str, body: Value) -> Reply {
    h.send(
        Method::POST,
        path,
        Some(token),
        &[("content-type", "application/json")],
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_pause_is_agreed_only_without_new_calls_and_a_call_to_a_paused_plugin_wakes_it() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let spec = format!("{CALC_SPEC}{STANDBY_SPEC}");
    let h = Harness::start(vec![
        entry(plugin("calc", &spec), &[addr]),
        entry(plugin("plain", CALC_SPEC), &[addr]),
    ])
    .await;

    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.get("/v1/admin/standby", Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"plugins": {"calc": {"calls": 1, "inflight": 0, "paused": false}}}),
        "only plugins with spec.standby are counted"
    );

    // The supervisor saw no call, but one came: refused, with the count.
    let r = post(
        &h,
        ADMIN,
        "/v1/admin/standby/pause",
        json!({"plugin": "calc", "calls": 0}),
    )
    .await;
    assert_eq!(r.json, json!({"paused": false, "calls": 1}), "{}", r.text);
    let r = post(
        &h,
        ADMIN,
        "/v1/admin/standby/pause",
        json!({"plugin": "calc", "calls": 1}),
    )
    .await;
    assert_eq!(r.json, json!({"paused": true}), "{}", r.text);
    let r = h.get("/v1/admin/standby", Some(ADMIN)).await;
    assert_eq!(r.json["plugins"]["calc"]["paused"], true);

    // Nothing to wake yet: the poll ends empty after its wait.
    let r = h
        .get("/v1/admin/standby/wakes?waitMs=50", Some(ADMIN))
        .await;
    assert_eq!(r.json, json!({"plugins": []}));

    // A poll is waiting when the call comes; the call itself goes through.
    let (woken, called) = tokio::join!(
        h.get("/v1/admin/standby/wakes?waitMs=30000", Some(ADMIN)),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            h.invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"2"}"#)
                .await
        }
    );
    assert_eq!(called.status, StatusCode::OK, "{}", called.text);
    assert_eq!(woken.json, json!({"plugins": ["calc"]}), "{}", woken.text);

    let r = post(
        &h,
        ADMIN,
        "/v1/admin/standby/awake",
        json!({"plugin": "calc"}),
    )
    .await;
    assert_eq!(r.json, json!({"wasPaused": true}), "{}", r.text);
    let r = h.get("/v1/admin/standby", Some(ADMIN)).await;
    assert_eq!(
        r.json["plugins"]["calc"],
        json!({"calls": 2, "inflight": 0, "paused": false})
    );

    // A plugin without the field is never paused; only admins may ask.
    let r = post(
        &h,
        ADMIN,
        "/v1/admin/standby/pause",
        json!({"plugin": "plain", "calls": 0}),
    )
    .await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_standby");
    let r = post(
        &h,
        INVOKE_ALL,
        "/v1/admin/standby/pause",
        json!({"plugin": "calc", "calls": 2}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = h.get("/v1/admin/standby/wakes", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    h.stop().await;
}

#[tokio::test]
async fn an_open_wake_poll_does_not_hold_up_the_gateway_s_shutdown() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let spec = format!("{CALC_SPEC}{STANDBY_SPEC}");
    let h = std::sync::Arc::new(Harness::start(vec![entry(plugin("calc", &spec), &[addr])]).await);
    let poll = {
        let h = h.clone();
        tokio::spawn(async move {
            h.get("/v1/admin/standby/wakes?waitMs=30000", Some(ADMIN))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    h.begin_shutdown();
    // The harness's grace is far longer than this: a poll held to its wait would fail here.
    tokio::time::timeout(Duration::from_secs(5), h.wait_stopped())
        .await
        .expect("the gateway stopped without waiting out the poll");
    let r = poll.await.unwrap();
    assert_eq!(r.json, json!({"plugins": []}), "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(5));
}
