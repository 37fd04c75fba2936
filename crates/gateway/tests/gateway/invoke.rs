//! Invocations through a real gateway to real plugin servers.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use berth_api::{Phase, PluginCall};
use berth_store::AuditQuery;
use berth_store::audit::types;
use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

async fn calc() -> (Harness, Recorder) {
    let recorder = Recorder::default();
    let addr = spawn_plugin(echo_plugin(recorder.clone())).await;
    let h = Harness::start(vec![entry(plugin("calc", CALC_SPEC), &[addr])]).await;
    (h, recorder)
}

#[tokio::test]
async fn valid_invocation_reaches_the_plugin_with_berth_headers() {
    let (h, rec) = calc().await;
    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1+2"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["input"]["expression"], "1+2");
    assert_eq!(r.json["capability"], "evaluate");
    let request_id = r.headers["berth-request-id"].to_str().unwrap();
    assert_eq!(rec.last_header("berth-request-id").unwrap(), request_id);
    assert_eq!(rec.last_header("berth-caller").unwrap(), "ci");
    let deadline: u64 = rec
        .last_header("berth-deadline-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(deadline > 0 && deadline <= 2000, "{deadline}");
}

#[tokio::test]
async fn caller_request_id_is_kept() {
    let (h, rec) = calc().await;
    let r = h
        .send(
            Method::POST,
            "/v1/plugins/calc/invoke/evaluate",
            Some(INVOKE_ALL),
            &[("berth-request-id", "req-42")],
            r#"{"expression":"1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["berth-request-id"], "req-42");
    assert_eq!(rec.last_header("berth-request-id").unwrap(), "req-42");
}

#[tokio::test]
async fn missing_token_is_401_with_www_authenticate() {
    let (h, rec) = calc().await;
    let r = h
        .send(
            Method::POST,
            "/v1/plugins/calc/invoke/evaluate",
            None,
            &[],
            "{}",
        )
        .await;
    r.expect(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(rec.hits(), 0);
}

#[tokio::test]
async fn unknown_token_is_401_and_audited_as_a_security_event() {
    let (h, _) = calc().await;
    h.invoke("not-a-token", "calc", "evaluate", "{}")
        .await
        .expect(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.flush_audit().await;
    let events = h
        .store
        .query_audit(&AuditQuery {
            type_: Some(types::SECURITY.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "anonymous");
    assert_eq!(events[0].outcome, "denied");
}

#[tokio::test]
async fn token_scopes_limit_what_a_caller_may_do() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::start(vec![
        entry(plugin("calc", CALC_SPEC), &[addr]),
        entry(
            plugin(
                "echo",
                "capabilities: [{name: say}]\nhooks: [{name: before_command, mode: observe}]",
            ),
            &[addr],
        ),
    ])
    .await;
    let input = r#"{"expression":"1"}"#;
    assert_eq!(
        h.invoke(INVOKE_CALC, "calc", "evaluate", input)
            .await
            .status,
        StatusCode::OK
    );
    h.invoke(INVOKE_CALC, "echo", "say", "{}")
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    h.invoke(HOOKS, "calc", "evaluate", input)
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    h.publish(INVOKE_ALL, "before_command", &json!({}))
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        h.publish(HOOKS, "before_command", &json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.invoke(ADMIN, "echo", "say", "{}").await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.publish(ADMIN, "before_command", &json!({})).await.status,
        StatusCode::OK
    );

    let listed = h.get("/v1/plugins", Some(INVOKE_CALC)).await;
    let names: Vec<&str> = listed.json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calc"]);
    h.get("/v1/plugins/echo", Some(INVOKE_CALC))
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        h.counter("berth_permission_denials_total", &[("permission", "scope")]),
        4.0
    );
}

#[tokio::test]
async fn plugin_listing_describes_capabilities_and_shows_endpoints_to_admins() {
    let (h, _) = calc().await;
    let r = h.get("/v1/plugins/calc", Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "calc");
    assert_eq!(r.json["ready"], true);
    assert_eq!(r.json["capabilities"][0]["name"], "evaluate");
    assert_eq!(r.json["capabilities"][0]["idempotent"], true);
    assert_eq!(r.json["maxConcurrency"], 4);
    assert_eq!(r.json["endpoints"].as_array().unwrap().len(), 1);
    let r = h.get("/v1/plugins/calc", Some(INVOKE_ALL)).await;
    assert!(r.json.get("endpoints").is_none());
    h.get("/v1/plugins/nope", Some(ADMIN))
        .await
        .expect(StatusCode::NOT_FOUND, "plugin_not_found");
}

#[tokio::test]
async fn unknown_plugin_and_capability_are_404() {
    let (h, _) = calc().await;
    h.invoke(INVOKE_ALL, "nope", "evaluate", "{}")
        .await
        .expect(StatusCode::NOT_FOUND, "plugin_not_found");
    h.invoke(INVOKE_ALL, "calc", "nope", "{}")
        .await
        .expect(StatusCode::NOT_FOUND, "capability_not_found");
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405_in_the_error_shape() {
    let (h, _) = calc().await;
    h.get("/v2/nothing", None)
        .await
        .expect(StatusCode::NOT_FOUND, "not_found");
    h.get("/v1/plugins/calc/invoke/evaluate", Some(ADMIN))
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn a_plugin_awaiting_its_grant_is_403_naming_what_it_asks_for_and_how_to_grant() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::start(vec![
        entry(
            plugin(
                "fetch",
                "capabilities: [{name: get}]\npermissions: {network: {egress: [{host: \"*\", ports: [80, 443]}]}, plugins: [{name: text, capabilities: [stats]}]}",
            ),
            &[addr],
        )
        .with_phase(Phase::AwaitingApproval),
    ])
    .await;
    let r = h.invoke(INVOKE_ALL, "fetch", "get", "{}").await;
    r.expect(StatusCode::FORBIDDEN, "plugin_not_granted");
    for said in [
        "berth grant fetch",
        "PluginGrant",
        "network egress *:80,443",
        "calls text/stats",
    ] {
        assert!(r.text.contains(said), "{said:?} not in {}", r.text);
    }
    // It will not come back by itself: no invitation to retry.
    assert!(!r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(rec.hits(), 0);
}

#[tokio::test]
async fn disabled_and_unready_plugins_are_503() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::start(vec![
        entry(
            plugin("off", "enabled: false\ncapabilities: [{name: run}]"),
            &[addr],
        ),
        entry(plugin("calc", CALC_SPEC), &[addr]).with_phase(Phase::Deploying),
        entry(plugin("nowhere", "capabilities: [{name: run}]"), &[]),
    ])
    .await;
    let r = h.invoke(INVOKE_ALL, "off", "run", "{}").await;
    r.expect(StatusCode::SERVICE_UNAVAILABLE, "plugin_disabled");
    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
        .await;
    r.expect(StatusCode::SERVICE_UNAVAILABLE, "plugin_not_ready");
    assert_eq!(r.headers["retry-after"], "1");
    h.invoke(INVOKE_ALL, "nowhere", "run", "{}")
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE, "plugin_not_ready");
    h.directory.set_phase("calc", Phase::Ready);
    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(rec.hits(), 1);
}

#[tokio::test]
async fn input_violating_the_schema_is_400_with_the_path_and_never_reaches_the_plugin() {
    let (h, rec) = calc().await;
    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression": 5}"#)
        .await;
    r.expect(StatusCode::BAD_REQUEST, "schema_violation");
    assert_eq!(r.json["error"]["details"][0]["instancePath"], "/expression");
    assert!(
        r.json["error"]["details"][0]["schemaPath"]
            .as_str()
            .unwrap()
            .contains("type")
    );
    let long = format!(r#"{{"expression":"{}"}}"#, "9".repeat(40));
    h.invoke(INVOKE_ALL, "calc", "evaluate", &long)
        .await
        .expect(StatusCode::BAD_REQUEST, "schema_violation");
    let r = h.invoke(INVOKE_ALL, "calc", "evaluate", "{}").await;
    r.expect(StatusCode::BAD_REQUEST, "schema_violation");
    assert!(r.text.contains("expression"), "{}", r.text);
    assert_eq!(rec.hits(), 0);
    assert_eq!(
        h.counter(
            "berth_invocations_total",
            &[("plugin", "calc"), ("outcome", "invalid_input")]
        ),
        3.0
    );
}

#[tokio::test]
async fn a_huge_value_that_violates_the_schema_is_quoted_by_a_short_prefix() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let config = berth_gateway::Config {
        max_body: 1024 * 1024,
        ..test_config()
    };
    let h = Harness::with_config(vec![entry(plugin("calc", CALC_SPEC), &[addr])], config).await;
    let huge = "9".repeat(400 * 1024);
    let r = h
        .invoke(
            INVOKE_ALL,
            "calc",
            "evaluate",
            &json!({ "expression": huge }).to_string(),
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST, "schema_violation");
    assert!(r.text.len() < 4096, "{} bytes", r.text.len());
    let detail = &r.json["error"]["details"][0];
    assert_eq!(detail["instancePath"], "/expression");
    assert_eq!(detail["schemaPath"], "/properties/expression/maxLength");
    let message = detail["message"].as_str().unwrap();
    assert!(
        message.ends_with(&format!(
            "…({} bytes) is longer than 32 characters",
            400 * 1024
        )),
        "{message}"
    );
    assert!(message.starts_with("\"9999"), "{message}");
    let summary = r.json["error"]["message"].as_str().unwrap();
    assert!(summary.contains("at /expression:"), "{summary}");
    assert!(
        summary.contains("is longer than 32 characters"),
        "{summary}"
    );
    assert_eq!(rec.hits(), 0);
}

#[tokio::test]
async fn huge_plugin_and_capability_names_are_quoted_by_a_short_prefix() {
    let (h, _) = calc().await;
    let name = "n".repeat(50_000);
    for (plugin, capability, code) in [
        (name.as_str(), "evaluate", "plugin_not_found"),
        ("calc", name.as_str(), "capability_not_found"),
    ] {
        let r = h.invoke(INVOKE_ALL, plugin, capability, "{}").await;
        r.expect(StatusCode::NOT_FOUND, code);
        assert!(r.text.len() < 1024, "{code}: {} bytes", r.text.len());
        assert!(r.text.contains("…(50000 bytes)"), "{}", r.text);
    }
    let r = h.invoke(INVOKE_CALC, &name, "evaluate", "{}").await;
    r.expect(StatusCode::FORBIDDEN, "forbidden");
    assert!(r.text.len() < 1024, "{} bytes", r.text.len());
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (h, rec) = calc().await;
    h.invoke(INVOKE_ALL, "calc", "evaluate", "{not json")
        .await
        .expect(StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(rec.hits(), 0);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (h, rec) = calc().await;
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    h.invoke(INVOKE_ALL, "calc", "record", &big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(rec.hits(), 0);
}

#[tokio::test]
async fn bad_caller_timeout_is_400() {
    let (h, _) = calc().await;
    h.send(
        Method::POST,
        "/v1/plugins/calc/invoke/evaluate",
        Some(INVOKE_ALL),
        &[("berth-timeout", "soon")],
        r#"{"expression":"1"}"#,
    )
    .await
    .expect(StatusCode::BAD_REQUEST, "invalid_timeout");
}

#[tokio::test]
async fn saturated_plugin_answers_429_until_a_slot_frees() {
    let rec = Recorder::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let addr = spawn_plugin(gated_plugin(rec.clone(), gate.clone(), entered_tx)).await;
    let h = Arc::new(
        Harness::start(vec![entry(
            plugin(
                "slow",
                "capabilities: [{name: run}]\nresources: {maxConcurrency: 1}",
            ),
            &[addr],
        )])
        .await,
    );
    let first = {
        let h = h.clone();
        tokio::spawn(async move { h.invoke(INVOKE_ALL, "slow", "run", "{}").await })
    };
    entered.recv().await.unwrap();
    let r = h.invoke(INVOKE_ALL, "slow", "run", "{}").await;
    r.expect(StatusCode::TOO_MANY_REQUESTS, "concurrency_limit");
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(rec.hits(), 1, "the refused call never reached the plugin");
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    gate.add_permits(1);
    assert_eq!(
        h.invoke(INVOKE_ALL, "slow", "run", "{}").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn deadline_is_the_shorter_of_caller_and_manifest_and_expiry_is_504() {
    let rec = Recorder::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (entered_tx, _entered) = tokio::sync::mpsc::unbounded_channel();
    let addr = spawn_plugin(gated_plugin(rec.clone(), gate, entered_tx)).await;
    let h = Harness::start(vec![entry(
        plugin(
            "hang",
            "capabilities: [{name: run, idempotent: true}]\nresources: {timeout: 300ms}",
        ),
        &[addr],
    )])
    .await;
    let r = h
        .send(
            Method::POST,
            "/v1/plugins/hang/invoke/run",
            Some(INVOKE_ALL),
            &[("berth-timeout", "100")],
            "{}",
        )
        .await;
    r.expect(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded");
    let sent: u64 = rec
        .last_header("berth-deadline-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        sent <= 100,
        "caller asked for 100ms, plugin was told {sent}"
    );

    let r = h
        .send(
            Method::POST,
            "/v1/plugins/hang/invoke/run",
            Some(INVOKE_ALL),
            &[("berth-timeout", "60s")],
            "{}",
        )
        .await;
    r.expect(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded");
    let sent: u64 = rec
        .last_header("berth-deadline-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        sent <= 300 && sent > 100,
        "manifest caps at 300ms, plugin was told {sent}"
    );
    assert_eq!(
        rec.hits(),
        2,
        "a timeout is not retried even when idempotent"
    );

    h.flush_audit().await;
    let failures = h
        .store
        .query_audit(&AuditQuery {
            type_: Some(types::INVOCATION.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|e| e.outcome == "timeout"));
}

#[tokio::test]
async fn breaker_opens_after_consecutive_failures_and_closes_after_a_successful_probe() {
    let rec = Recorder::default();
    let failing = Arc::new(AtomicBool::new(true));
    let addr = spawn_plugin(flaky_plugin(rec.clone(), failing.clone(), 0)).await;
    let h = Harness::start(vec![entry(
        plugin("flaky", "capabilities: [{name: run}]"),
        &[addr],
    )])
    .await;
    for _ in 0..3 {
        let r = h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
        r.expect(StatusCode::BAD_GATEWAY, "plugin_error");
        assert_eq!(r.json["error"]["details"]["pluginError"]["code"], "boom");
    }
    let r = h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
    r.expect(StatusCode::SERVICE_UNAVAILABLE, "circuit_open");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        rec.hits(),
        3,
        "an open breaker keeps calls away from the plugin"
    );
    let shown = h.get("/v1/plugins/flaky", Some(ADMIN)).await;
    assert_eq!(shown.json["circuit"], "open");

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    // The breaker stays open for 200ms; poll until the half-open probe is let through.
    let mut probe = None;
    for _ in 0..200 {
        let r = h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            probe = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        probe.expect("breaker never half-opened").status,
        StatusCode::OK
    );
    assert_eq!(rec.hits(), 4);
    assert_eq!(
        h.invoke(INVOKE_ALL, "flaky", "run", "{}").await.status,
        StatusCode::OK
    );

    h.flush_audit().await;
    let outcomes: Vec<String> = h
        .store
        .query_audit(&AuditQuery {
            plugin: Some("flaky".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert!(
        outcomes.contains(&"circuit_opened".to_owned()),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&"circuit_closed".to_owned()),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn idempotent_capability_is_retried_after_a_plugin_failure() {
    let rec = Recorder::default();
    let never = Arc::new(AtomicBool::new(false));
    let addr = spawn_plugin(flaky_plugin(rec.clone(), never, 2)).await;
    let h = Harness::start(vec![entry(
        plugin("flaky", "capabilities: [{name: run, idempotent: true}]"),
        &[addr],
    )])
    .await;
    let r = h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["ok"], 3);
    assert_eq!(rec.hits(), 3);
}

#[tokio::test]
async fn non_idempotent_capability_is_not_retried() {
    let rec = Recorder::default();
    let never = Arc::new(AtomicBool::new(false));
    let addr = spawn_plugin(flaky_plugin(rec.clone(), never, 1)).await;
    let h = Harness::start(vec![entry(
        plugin("flaky", "capabilities: [{name: run}]"),
        &[addr],
    )])
    .await;
    h.invoke(INVOKE_ALL, "flaky", "run", "{}")
        .await
        .expect(StatusCode::BAD_GATEWAY, "plugin_error");
    assert_eq!(rec.hits(), 1);
}

#[tokio::test]
async fn idempotent_call_moves_on_from_an_unreachable_endpoint() {
    let rec = Recorder::default();
    let good = spawn_plugin(echo_plugin(rec.clone())).await;
    let crashing = spawn_crashing_plugin().await;
    let h = Harness::start(vec![entry(plugin("calc", CALC_SPEC), &[crashing, good])]).await;
    for _ in 0..4 {
        let r = h
            .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(rec.hits(), 4);
}

#[tokio::test]
async fn non_idempotent_call_to_a_crashing_plugin_is_502_unreachable() {
    let crashing = spawn_crashing_plugin().await;
    let h = Harness::start(vec![entry(plugin("calc", CALC_SPEC), &[crashing])]).await;
    h.invoke(INVOKE_ALL, "calc", "record", "{}")
        .await
        .expect(StatusCode::BAD_GATEWAY, "plugin_unreachable");
}

#[tokio::test]
async fn requests_spread_over_ready_endpoints() {
    let a = Recorder::default();
    let b = Recorder::default();
    let addr_a = spawn_plugin(echo_plugin(a.clone())).await;
    let addr_b = spawn_plugin(echo_plugin(b.clone())).await;
    let h = Harness::start(vec![entry(plugin("calc", CALC_SPEC), &[addr_a, addr_b])]).await;
    for _ in 0..10 {
        let r = h.invoke(INVOKE_ALL, "calc", "record", "{}").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test]
async fn plugin_client_error_is_passed_through_and_does_not_trip_the_breaker() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/invoke/{capability}",
        post(|| async {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": {"code": "bad_expression", "message": "1/0"}})),
            )
        }),
    );
    let addr = spawn_plugin(app).await;
    let h = Harness::start(vec![entry(plugin("calc", CALC_SPEC), &[addr])]).await;
    for _ in 0..5 {
        let r = h.invoke(INVOKE_ALL, "calc", "record", "{}").await;
        r.expect(StatusCode::UNPROCESSABLE_ENTITY, "bad_expression");
        assert_eq!(r.headers[berth_gateway::ERROR_SOURCE], "plugin");
    }
}

#[tokio::test]
async fn schemas_are_recompiled_for_a_new_revision() {
    let (h, _) = calc().await;
    let input = r#"{"expression":"1"}"#;
    assert_eq!(
        h.invoke(INVOKE_ALL, "calc", "evaluate", input).await.status,
        StatusCode::OK
    );
    let current = h.directory_entry("calc");
    let stricter = plugin(
        "calc",
        "capabilities:\n  - name: evaluate\n    input: {type: object, required: [expression, base]}",
    );
    h.directory.upsert(
        berth_gateway::PluginEntry::new(stricter)
            .with_endpoints(current.endpoints.clone())
            .with_revision(current.revision + 1),
    );
    h.invoke(INVOKE_ALL, "calc", "evaluate", input)
        .await
        .expect(StatusCode::BAD_REQUEST, "schema_violation");
}

#[tokio::test]
async fn plugin_token_may_call_what_its_grants_cover() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::start(vec![
        entry(plugin("calc", CALC_SPEC), &[addr]),
        entry(
            plugin(
                "proc",
                "capabilities: [{name: run}]\npermissions: {plugins: [{name: calc, capabilities: [evaluate]}]}",
            ),
            &[addr],
        )
        .with_granted_calls(vec![PluginCall {
            name: "calc".into(),
            capabilities: vec!["evaluate".into()],
        }])
        .with_token("proc-token"),
    ])
    .await;
    let r = h
        .invoke("proc-token", "calc", "evaluate", r#"{"expression":"2"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(rec.last_header("berth-caller").unwrap(), "plugin:proc");
    let shown = h.get("/v1/plugins/calc", Some("proc-token")).await;
    assert_eq!(shown.status, StatusCode::OK);
}

#[tokio::test]
async fn plugin_token_outside_its_grants_is_403_counted_and_audited() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::start(vec![
        entry(plugin("calc", CALC_SPEC), &[addr]),
        entry(plugin("echo", "capabilities: [{name: say}]"), &[addr]),
        entry(
            plugin(
                "proc",
                "capabilities: [{name: run}]\npermissions: {plugins: [{name: calc, capabilities: [evaluate]}]}",
            ),
            &[addr],
        )
        .with_granted_calls(vec![PluginCall {
            name: "calc".into(),
            capabilities: vec!["evaluate".into()],
        }])
        .with_token("proc-token"),
    ])
    .await;
    let r = h.invoke("proc-token", "calc", "record", "{}").await;
    r.expect(StatusCode::FORBIDDEN, "permission_denied");
    assert_eq!(r.json["error"]["details"]["capability"], "record");
    h.invoke("proc-token", "echo", "say", "{}")
        .await
        .expect(StatusCode::FORBIDDEN, "permission_denied");
    assert_eq!(rec.hits(), 0);
    assert_eq!(
        h.counter(
            "berth_permission_denials_total",
            &[("plugin", "proc"), ("permission", "plugins")]
        ),
        2.0
    );
    h.flush_audit().await;
    let denials = h
        .store
        .query_audit(&AuditQuery {
            plugin: Some("proc".into()),
            type_: Some(types::SECURITY.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(denials.len(), 2);
    assert_eq!(denials[0].actor, "plugin:proc");
    assert_eq!(denials[0].outcome, "denied");
    assert_eq!(denials[0].details["permission"], "plugins");
    assert!(denials[0].risk_score.is_some());
}

impl Harness {
    fn directory_entry(&self, name: &str) -> Arc<berth_gateway::PluginEntry> {
        use berth_gateway::PluginDirectory;
        self.directory.snapshot().get(name).unwrap().clone()
    }
}
