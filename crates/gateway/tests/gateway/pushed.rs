//! `--backend pushed`: a supervisor in another process replaces the directory with
//! `PUT /v1/admin/directory` and reports restarts, cold starts and usage with
//! `POST /v1/admin/observations`.

use std::net::SocketAddr;

use berth_api::{Phase, PluginCall};
use berth_gateway::{PluginEntry, SnapshotWire};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// The JSON a supervisor would push: `entries` at `version`.
fn snapshot(version: u64, entries: &[PluginEntry]) -> Value {
    serde_json::to_value(SnapshotWire::from_entries(version, entries)).unwrap()
}

fn calc_at(addr: SocketAddr) -> PluginEntry {
    entry(plugin("calc", CALC_SPEC), &[addr])
}

async fn observe(h: &Harness, token: Option<&str>, body: &Value) -> Reply {
    h.send(
        Method::POST,
        "/v1/admin/observations",
        token,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

#[tokio::test]
async fn pushed_snapshot_routes_invocations_to_its_endpoint() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::pushed().await;

    let r = h.push(Some(ADMIN), &snapshot(1, &[calc_at(addr)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"version": 1, "plugins": 1}));

    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1+2"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["input"]["expression"], "1+2");
    assert_eq!(rec.hits(), 1);
    assert_eq!(h.gateway.pushed_version(), Some(1));
    let shown = h.get("/v1/plugins/calc", Some(ADMIN)).await;
    assert_eq!(shown.json["endpoints"], json!([format!("http://{addr}")]));
    h.stop().await;
}

#[tokio::test]
async fn second_push_sends_new_requests_to_the_new_endpoint() {
    let (old_rec, new_rec) = (Recorder::default(), Recorder::default());
    let old = spawn_plugin(echo_plugin(old_rec.clone())).await;
    let new = spawn_plugin(echo_plugin(new_rec.clone())).await;
    let h = Harness::pushed().await;

    h.push(Some(ADMIN), &snapshot(1, &[calc_at(old)])).await;
    let r = h.invoke(INVOKE_ALL, "calc", "record", "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = h.push(Some(ADMIN), &snapshot(2, &[calc_at(new)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for _ in 0..3 {
        let r = h.invoke(INVOKE_ALL, "calc", "record", "{}").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(old_rec.hits(), 1, "nothing new reaches the old endpoint");
    assert_eq!(new_rec.hits(), 3);
    h.stop().await;
}

#[tokio::test]
async fn older_snapshot_is_refused_with_409_and_the_current_version() {
    let (old_rec, new_rec) = (Recorder::default(), Recorder::default());
    let old = spawn_plugin(echo_plugin(old_rec.clone())).await;
    let new = spawn_plugin(echo_plugin(new_rec.clone())).await;
    let h = Harness::pushed().await;

    let r = h.push(Some(ADMIN), &snapshot(5, &[calc_at(new)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h.push(Some(ADMIN), &snapshot(4, &[calc_at(old)])).await;
    r.expect(StatusCode::CONFLICT, "stale_version");
    assert_eq!(r.json["error"]["details"]["currentVersion"], 5);

    h.invoke(INVOKE_ALL, "calc", "record", "{}").await;
    assert_eq!((old_rec.hits(), new_rec.hits()), (0, 1), "routing kept v5");
    assert_eq!(h.gateway.pushed_version(), Some(5));

    // A retry of the version in force is applied again, not refused.
    let r = h.push(Some(ADMIN), &snapshot(5, &[calc_at(new)])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    h.stop().await;
}

#[tokio::test]
async fn admin_endpoints_are_401_without_a_token_and_403_without_admin() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::pushed().await;
    let body = snapshot(1, &[calc_at(addr)]);

    h.push(None, &body)
        .await
        .expect(StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = h.push(Some(INVOKE_ALL), &body).await;
    r.expect(StatusCode::FORBIDDEN, "forbidden");
    assert!(r.text.contains("admin"), "{}", r.text);
    h.push(Some(HOOKS), &body)
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    observe(&h, None, &json!({}))
        .await
        .expect(StatusCode::UNAUTHORIZED, "unauthenticated");
    observe(&h, Some(INVOKE_CALC), &json!({}))
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");

    assert_eq!(h.gateway.pushed_version(), None, "nothing was applied");
    assert_eq!(
        h.get("/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        h.counter("berth_permission_denials_total", &[("permission", "scope")]),
        3.0
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_snapshot_is_400_naming_the_field() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::pushed().await;

    let mut body = snapshot(1, &[calc_at(addr)]);
    body["plugins"][0]["endpoints"] = json!(["ftp://172.20.0.3:8080"]);
    let r = h.push(Some(ADMIN), &body).await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_snapshot");
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("plugins[0].endpoints[0]: "),
        "{message}"
    );

    let mut body = snapshot(1, &[calc_at(addr)]);
    body["plugins"][0]["phase"] = json!("Sleeping");
    let r = h.push(Some(ADMIN), &body).await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_snapshot");
    assert!(r.text.contains("plugins[0].phase"), "{}", r.text);

    let r = h
        .send(
            Method::PUT,
            "/v1/admin/directory",
            Some(ADMIN),
            &[],
            r#"{"version": 1, "plugins": ["#,
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_json");

    assert_eq!(h.gateway.pushed_version(), None, "nothing was applied");
    h.stop().await;
}

#[tokio::test]
async fn readyz_is_503_until_the_first_push_then_200() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::pushed().await;

    let r = h.get("/readyz", None).await;
    r.expect(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(r.text.contains("pushed"), "{}", r.text);

    let waiting =
        entry(plugin("later", "capabilities: [{name: run}]"), &[]).with_phase(Phase::Deploying);
    h.push(Some(ADMIN), &snapshot(1, &[calc_at(addr), waiting]))
        .await;
    let r = h.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["plugins"], 2);
    assert_eq!(r.json["readyPlugins"], 1);
    h.stop().await;
}

#[tokio::test]
async fn push_to_a_gateway_not_started_with_backend_pushed_is_409() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::start(vec![calc_at(addr)]).await;
    let r = h.push(Some(ADMIN), &snapshot(1, &[])).await;
    r.expect(StatusCode::CONFLICT, "directory_not_pushed");
    assert!(r.text.contains("--backend pushed"), "{}", r.text);
    let kept = berth_gateway::PluginDirectory::snapshot(h.directory.as_ref());
    assert_eq!(kept.len(), 1, "the static directory is untouched");
    h.stop().await;
}

#[tokio::test]
async fn snapshot_larger_than_the_invoke_body_limit_is_accepted() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::pushed().await;
    let entries: Vec<PluginEntry> = (0..50)
        .map(|i| entry(plugin(&format!("plugin-{i}"), CALC_SPEC), &[addr]))
        .collect();
    let body = snapshot(1, &entries);
    assert!(serde_json::to_vec(&body).unwrap().len() > test_config().max_body);
    let r = h.push(Some(ADMIN), &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["plugins"], 50);

    let huge = vec![b' '; 9 * 1024 * 1024];
    h.send(Method::PUT, "/v1/admin/directory", Some(ADMIN), &[], huge)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    h.stop().await;
}

#[tokio::test]
async fn observations_show_in_metrics_and_pass_promtool() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::pushed().await;
    h.push(Some(ADMIN), &snapshot(1, &[calc_at(addr)])).await;

    let r = observe(
        &h,
        Some(ADMIN),
        &json!({
            "restarts": [{"plugin": "calc", "reason": "oom"}, {"plugin": "ghost", "reason": "oom"}],
            "coldStarts": [{"plugin": "calc", "seconds": 0.21}],
            "usage": [{"plugin": "calc", "cpuCores": 0.05, "memoryBytes": 1234567}],
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    observe(
        &h,
        Some(ADMIN),
        &json!({"restarts": [{"plugin": "calc", "reason": "oom"}]}),
    )
    .await;

    let text = h.get("/metrics", None).await.text;
    assert!(
        !text.contains("berth_local_"),
        "no local-mode gauges before a supervisor reports"
    );
    // Local mode's supervisor reports its outage totals; each report replaces the last.
    for (restarts, down) in [(1, 1.5), (3, 4.25)] {
        let r = observe(
            &h,
            Some(ADMIN),
            &json!({"supervisor": {"gatewayRestarts": restarts, "gatewayDownSeconds": down, "engineOutages": 1}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }

    let text = h.get("/metrics", None).await.text;
    let value = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    assert_eq!(value("berth_local_gateway_restarts", &[]), 3.0);
    assert_eq!(value("berth_local_gateway_down_seconds", &[]), 4.25);
    assert_eq!(value("berth_local_engine_outages", &[]), 1.0);
    assert_eq!(
        value(
            "berth_plugin_restarts_total",
            &[("plugin", "calc"), ("reason", "oom")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "berth_plugin_cold_start_seconds_count",
            &[("plugin", "calc")]
        ),
        1.0
    );
    let sum = value("berth_plugin_cold_start_seconds_sum", &[("plugin", "calc")]);
    assert!((sum - 0.21).abs() < 1e-9, "{sum}");
    assert_eq!(value("berth_plugin_cpu_cores", &[("plugin", "calc")]), 0.05);
    assert_eq!(
        value("berth_plugin_memory_bytes", &[("plugin", "calc")]),
        1_234_567.0
    );
    assert!(
        !text.contains("ghost"),
        "a plugin not in the directory leaves no series"
    );
    promtool_check(&text);

    // The plugin leaves the directory: its usage is no longer exported.
    // The gateway follows the directory in the background: wait for it.
    h.push(Some(ADMIN), &snapshot(2, &[])).await;
    let gone = |text: &str| {
        !text.contains("berth_plugin_cpu_cores{") && !text.contains("berth_plugin_memory_bytes{")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut text = h.get("/metrics", None).await.text;
    while !gone(&text) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        text = h.get("/metrics", None).await.text;
    }
    assert!(gone(&text), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn bad_observations_are_400_and_record_nothing() {
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::pushed().await;
    h.push(Some(ADMIN), &snapshot(1, &[calc_at(addr)])).await;

    let r = observe(
        &h,
        Some(ADMIN),
        &json!({
            "restarts": [{"plugin": "calc", "reason": "oom"}],
            "coldStarts": [{"plugin": "calc", "seconds": -1.0}],
        }),
    )
    .await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_observations");
    assert!(r.text.contains("coldStarts[0].seconds"), "{}", r.text);
    let r = observe(&h, Some(ADMIN), &json!({"usage": [{"plugin": "calc"}]})).await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_observations");
    assert!(r.text.contains("usage[0]"), "{}", r.text);

    assert_eq!(h.counter("berth_plugin_restarts_total", &[]), 0.0);
    h.stop().await;
}

#[tokio::test]
async fn plugin_token_digest_in_the_snapshot_authenticates_inter_plugin_calls() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let h = Harness::pushed().await;
    let proc = entry(
        plugin(
            "proc",
            "capabilities: [{name: run}]\npermissions: {plugins: [{name: calc, capabilities: [evaluate]}]}",
        ),
        &[addr],
    )
    .with_granted_calls(vec![PluginCall {
        name: "calc".into(),
        capabilities: vec!["evaluate".into()],
    }]);
    let mut body = snapshot(1, &[calc_at(addr), proc]);
    // Only the digest travels; the token stays with the supervisor and the plugin.
    body["plugins"][1]["tokenSha256"] =
        json!(berth_contract::credential::digest_line("proc-token"));
    let r = h.push(Some(ADMIN), &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = h
        .invoke("proc-token", "calc", "evaluate", r#"{"expression":"2"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(rec.last_header("berth-caller").unwrap(), "plugin:proc");
    h.invoke("proc-token", "calc", "record", "{}")
        .await
        .expect(StatusCode::FORBIDDEN, "permission_denied");

    // The next snapshot without the digest revokes the token.
    body["plugins"][1]["tokenSha256"] = Value::Null;
    body["version"] = json!(2);
    h.push(Some(ADMIN), &body).await;
    h.invoke("proc-token", "calc", "evaluate", r#"{"expression":"2"}"#)
        .await
        .expect(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.stop().await;
}

#[tokio::test]
async fn from_config_pushed_starts_empty_and_unready_then_takes_a_push() {
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let config = berth_gateway::Config {
        tokens: Some(format!(
            "supervisor {} admin",
            berth_contract::credential::digest_line("supervisor-token")
        )),
        audit_sinks: Vec::new(),
        plugins: vec!["/nonexistent/is/not/read".into()],
        ..test_config()
    };
    let running = berth_gateway::Gateway::from_config_pushed(&config).unwrap();
    assert!(running.gateway.pushed_directory().is_some());
    assert!(running.gateway.has_admin_token());
    let app = berth_gateway::router(running.gateway.clone());
    let call = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or_default(),
            )
        }
    };

    let (status, _) = call(Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let addr = spawn_plugin(echo_plugin(Recorder::default())).await;
    let body = serde_json::to_vec(&snapshot(1, &[calc_at(addr)])).unwrap();
    let (status, answer) = call(
        Request::put("/v1/admin/directory")
            .header("authorization", "Bearer supervisor-token")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, ready) = call(Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["readyPlugins"], 1);
    let snapshot = berth_gateway::PluginDirectory::snapshot(running.directory.as_ref());
    assert_eq!(snapshot.len(), 1, "Running::directory is the pushed one");
}

async fn probe(h: &Harness, token: Option<&str>, url: &str) -> Reply {
    h.send(
        Method::POST,
        "/v1/admin/probe",
        token,
        &[("content-type", "application/json")],
        serde_json::to_vec(&json!({"url": url, "timeoutMs": 1000})).unwrap(),
    )
    .await
}

#[tokio::test]
async fn probe_reads_a_plugins_health_for_the_supervisor_and_nothing_else() {
    let plugin =
        spawn_plugin(axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" })))
            .await;
    let h = Harness::pushed().await;

    let r = probe(&h, Some(ADMIN), &format!("http://{plugin}/healthz")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"status": 200, "body": "ok"}));

    // Nothing listens: the answer says why, as data.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let r = probe(&h, Some(ADMIN), &format!("http://{gone}/healthz")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["error"].as_str().is_some(), "{}", r.text);

    // Only the two readiness paths, only http, only for admins.
    let r = probe(
        &h,
        Some(ADMIN),
        &format!("http://{plugin}/v1/invoke/evaluate"),
    )
    .await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_probe");
    let r = probe(&h, Some(ADMIN), "file:///etc/passwd").await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_probe");
    let r = probe(&h, Some(INVOKE_ALL), &format!("http://{plugin}/healthz")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    h.stop().await;
}

async fn circuit(h: &Harness) -> Value {
    h.get("/v1/plugins/calc", Some(ADMIN)).await.json["circuit"].clone()
}

#[tokio::test]
async fn an_open_breaker_closes_when_the_directory_brings_the_plugin_back() {
    let h = Harness::pushed_with_config(berth_gateway::Config {
        breaker_open_for: std::time::Duration::from_secs(60),
        ..test_config()
    })
    .await;
    // Nothing listens there: every call fails to connect.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    h.push(Some(ADMIN), &snapshot(1, &[calc_at(dead)])).await;
    let mut opened = false;
    for _ in 0..10 {
        let r = h
            .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1+2"}"#)
            .await;
        if r.code() == "circuit_open" {
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker opened");
    assert_eq!(circuit(&h).await, "open");

    // The supervisor takes the dead instance out, then puts a restarted one in; no call
    // arrives meanwhile.
    h.push(
        Some(ADMIN),
        &snapshot(2, &[entry(plugin("calc", CALC_SPEC), &[])]),
    )
    .await;
    let live = spawn_plugin(echo_plugin(Recorder::default())).await;
    h.push(Some(ADMIN), &snapshot(3, &[calc_at(live)])).await;
    // The gateway follows the directory in the background: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while circuit(&h).await != "closed" {
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker stayed open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1+2"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    h.stop().await;
}
