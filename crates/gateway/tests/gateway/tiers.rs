//! The plugin's own time in `Server-Timing` and its histogram, live tiers from the
//! gateway's series, and benchmark results published to the gateway.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use berth_api::Tier;
use berth_store::AuditQuery;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A plugin that waits `delay` before answering.
fn slow_plugin(delay: Duration) -> axum::Router {
    use axum::routing::post;
    axum::Router::new().route(
        "/v1/invoke/{capability}",
        post(move || async move {
            tokio::time::sleep(delay).await;
            axum::Json(json!({"ok": true}))
        }),
    )
}

fn upstream_ms(reply: &Reply) -> Option<f64> {
    let value = reply.headers.get("server-timing")?.to_str().unwrap();
    let ms = value.strip_prefix("upstream;dur=")?;
    assert_eq!(
        ms.split('.').nth(1).map(str::len),
        Some(3),
        "three decimals: {value}"
    );
    ms.parse().ok()
}

#[tokio::test]
async fn answers_that_reached_the_plugin_say_its_time_in_server_timing() {
    let slow = spawn_plugin(slow_plugin(Duration::from_millis(60))).await;
    let failing = Arc::new(AtomicBool::new(true));
    let bad = spawn_plugin(flaky_plugin(Recorder::default(), failing, 0)).await;
    let h = Harness::start(vec![
        entry(plugin("calc", CALC_SPEC), &[slow]),
        entry(plugin("flaky", "capabilities: [{name: run}]"), &[bad]),
    ])
    .await;

    let ok = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let ms = upstream_ms(&ok).expect("Server-Timing on a plugin's answer");
    assert!((60.0..2000.0).contains(&ms), "{ms}");

    // A plugin's 5xx reached the plugin too.
    let failed = h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
    failed.expect(StatusCode::BAD_GATEWAY, "plugin_error");
    assert!(upstream_ms(&failed).is_some(), "{:?}", failed.headers);

    // Refused before the plugin: no plugin time to report.
    let refused = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":7}"#)
        .await;
    refused.expect(StatusCode::BAD_REQUEST, "schema_violation");
    assert!(refused.headers.get("server-timing").is_none());

    let text = h.get("/metrics", None).await.text;
    let labels = [("plugin", "calc"), ("capability", "evaluate")];
    assert_eq!(
        metric_value(&text, "berth_invocation_upstream_seconds_count", &labels),
        1.0
    );
    let upstream = metric_value(&text, "berth_invocation_upstream_seconds_sum", &labels);
    let total = metric_value(&text, "berth_invocation_duration_seconds_sum", &labels);
    assert!(
        upstream >= 0.06 && upstream <= total,
        "upstream {upstream} s within the gateway's {total} s"
    );
    // The same buckets as the duration histogram.
    let bounds = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains("plugin=\"calc\""))
            .map(|l| {
                l.split("le=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        bounds("berth_invocation_upstream_seconds"),
        bounds("berth_invocation_duration_seconds")
    );
    assert_eq!(
        metric_value(
            &text,
            "berth_invocation_upstream_seconds_count",
            &[("plugin", "flaky")]
        ),
        1.0
    );
}

fn tier_config() -> berth_gateway::Config {
    berth_gateway::Config {
        tier_min_calls: 20,
        // Evaluated by hand in these tests.
        tier_interval: Duration::from_secs(3600),
        tier_window: Duration::from_secs(3600),
        ..test_config()
    }
}

#[tokio::test]
async fn live_tiers_come_from_the_gateways_own_series_and_changes_are_audited() {
    let echo = spawn_plugin(echo_plugin(Recorder::default())).await;
    let failing = Arc::new(AtomicBool::new(false));
    let flaky = spawn_plugin(flaky_plugin(Recorder::default(), failing.clone(), 0)).await;
    let h = Harness::with_config(
        vec![
            entry(plugin("calc", CALC_SPEC), &[echo]),
            entry(plugin("flaky", "capabilities: [{name: run}]"), &[flaky]),
        ],
        tier_config(),
    )
    .await;
    let mut tiers = h.gateway.subscribe_tiers();

    for _ in 0..25 {
        let r = h
            .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
    }
    // Caller mistakes are not the plugin's errors.
    for _ in 0..5 {
        h.invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":7}"#)
            .await
            .expect(StatusCode::BAD_REQUEST, "schema_violation");
    }
    let listed = h.get("/v1/plugins", Some(ADMIN)).await;
    let calc = |v: &Value| {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "calc")
            .unwrap()
            .clone()
    };
    assert_eq!(
        calc(&listed.json)["liveTier"],
        json!({"calls": 0, "windowSeconds": 3600}),
        "unrated before the first evaluation"
    );

    h.gateway.evaluate_tiers_now();
    assert!(tiers.has_changed().unwrap());
    let followed = tiers.borrow_and_update().clone();
    assert_eq!(followed["calc"].tier, Some(Tier::Platinum));
    assert_eq!(followed["calc"].calls, 25);
    assert_eq!(followed["flaky"].tier, Some(Tier::Platinum));

    let listed = h.get("/v1/plugins", Some(ADMIN)).await;
    let live = &calc(&listed.json)["liveTier"];
    assert_eq!(live["tier"], "Platinum");
    assert_eq!(live["inputs"]["errorRatio"], 0.0);
    assert!(live["since"].is_string());
    let shown = h.get("/v1/plugins/calc", Some(INVOKE_CALC)).await;
    assert_eq!(shown.json["liveTier"]["tier"], "Platinum");
    assert_eq!(h.counter("berth_plugin_tier", &[("plugin", "calc")]), 4.0);

    // flaky starts failing: 25 more calls, half of the window's 50 failed.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..25 {
        h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
    }
    h.gateway.evaluate_tiers_now();
    let flaky_tier = h.gateway.live_tier("flaky");
    assert_eq!(flaky_tier.tier, Some(Tier::Bronze));
    assert_eq!(flaky_tier.calls, 50);
    assert!(
        flaky_tier.reasons[0].starts_with("error ratio 50.000 %"),
        "{:?}",
        flaky_tier.reasons
    );
    assert_eq!(h.counter("berth_plugin_tier", &[("plugin", "flaky")]), 1.0);
    // Nothing changed for calc: no second event.
    h.gateway.evaluate_tiers_now();

    h.flush_audit().await;
    let events: Vec<_> = h
        .store
        .query_audit(&AuditQuery::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.type_ == "tier-changed")
        .collect();
    let summary: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e.plugin.clone().unwrap(),
                e.details["from"].clone(),
                e.details["to"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("calc".into(), json!("unrated"), json!("Platinum")),
            ("flaky".into(), json!("unrated"), json!("Platinum")),
            ("flaky".into(), json!("Platinum"), json!("Bronze")),
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last.actor, "gateway");
    assert_eq!(last.details["windowSeconds"], 3600);
    assert_eq!(last.details["inputs"]["errorRatio"], 0.5);
    assert!(
        last.details["reasons"][0]
            .as_str()
            .unwrap()
            .contains("error ratio")
    );

    // A plugin that leaves the directory leaves the tiers and the tier gauge.
    h.directory.remove("flaky");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.gateway.evaluate_tiers_now();
    assert!(!h.gateway.subscribe_tiers().borrow().contains_key("flaky"));
    let text = h.metrics.render();
    assert!(
        !text.contains("berth_plugin_tier{plugin=\"flaky\"}"),
        "{text}"
    );
    assert!(
        text.contains("berth_plugin_tier{plugin=\"calc\"} 4"),
        "{text}"
    );
}

#[tokio::test]
async fn usage_near_the_plugins_limits_lowers_its_live_tier() {
    let echo = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::with_config(
        vec![entry(
            plugin(
                "calc",
                &CALC_SPEC.replace(
                    "resources: {timeout: 2s, maxConcurrency: 4}",
                    "resources: {timeout: 2s, maxConcurrency: 4, cpu: 500m, memory: 100Mi}",
                ),
            ),
            &[echo],
        )],
        tier_config(),
    )
    .await;
    for _ in 0..20 {
        h.invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
            .await;
    }
    // 0.45 of 0.5 cores: 90 % of the CPU limit.
    h.gateway
        .metrics()
        .set_usage("calc", 0.45, 10 * 1024 * 1024);
    h.gateway.evaluate_tiers_now();
    let live = h.gateway.live_tier("calc");
    assert_eq!(live.tier, Some(Tier::Silver), "{live:?}");
    let ratio = live.inputs.unwrap().resource_ratio.unwrap();
    assert!((ratio - 0.9).abs() < 1e-9, "{ratio}");
}

fn report(plugin: &str) -> Value {
    json!({
        "plugin": plugin,
        "capabilities": ["evaluate"],
        "gateway": "http://127.0.0.1:7400",
        "startedAt": "2026-01-31T12:00:00Z",
        "load": {"kind": "closed", "concurrency": 4},
        "warmupSeconds": 1.0,
        "durationSeconds": 10.0,
        "requests": 12000,
        "throughput": 1200.0,
        "errorRatio": 0.002,
        "latency": {"p50Ms": 1.5, "p90Ms": 2.5, "p99Ms": 7.0, "maxMs": 20.0, "meanMs": 1.8},
        "thresholds": serde_json::to_value(berth_api::TierThresholds::default()).unwrap(),
        "verdict": {"tier": "Gold", "reasons": ["error ratio 0.200 % → Gold"]},
    })
}

async fn post_benchmark(h: &Harness, token: &str, body: &Value) -> Reply {
    h.send(
        Method::POST,
        "/v1/admin/benchmarks",
        Some(token),
        &[("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_published_benchmark_becomes_gauges_and_an_audit_event() {
    let echo = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::start(vec![entry(plugin("calc", CALC_SPEC), &[echo])]).await;

    let r = post_benchmark(&h, ADMIN, &report("calc")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let text = h.get("/metrics", None).await.text;
    let calc = [("plugin", "calc")];
    assert_eq!(metric_value(&text, "berth_benchmark_tier", &calc), 3.0);
    assert_eq!(
        metric_value(&text, "berth_benchmark_throughput", &calc),
        1200.0
    );
    assert_eq!(
        metric_value(&text, "berth_benchmark_error_ratio", &calc),
        0.002
    );
    assert_eq!(
        metric_value(&text, "berth_benchmark_timestamp_seconds", &calc),
        1_769_860_800.0
    );
    assert_eq!(
        metric_value(
            &text,
            "berth_benchmark_latency_seconds",
            &[("plugin", "calc"), ("quantile", "0.99")]
        ),
        0.007
    );
    h.flush_audit().await;
    let events = h.store.query_audit(&AuditQuery::default()).unwrap();
    let event = events.iter().find(|e| e.type_ == "benchmark").unwrap();
    assert_eq!(event.actor, "admin");
    assert_eq!(event.plugin.as_deref(), Some("calc"));
    assert_eq!(event.details["tier"], "Gold");
    assert_eq!(event.details["p99Ms"], 7.0);

    // Bad input names the field.
    let mut bad = report("calc");
    bad["verdict"]["tier"] = json!("Tin");
    let r = post_benchmark(&h, ADMIN, &bad).await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_benchmark");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("verdict.tier: "),
        "{}",
        r.text
    );
    let mut bad = report("calc");
    bad["startedAt"] = json!("yesterday");
    let r = post_benchmark(&h, ADMIN, &bad).await;
    r.expect(StatusCode::BAD_REQUEST, "invalid_benchmark");
    assert!(r.text.contains("startedAt"), "{}", r.text);
    let mut bad = report("calc");
    bad["throughput"] = json!(-1.0);
    post_benchmark(&h, ADMIN, &bad)
        .await
        .expect(StatusCode::BAD_REQUEST, "invalid_benchmark");
    post_benchmark(&h, ADMIN, &report("ghost"))
        .await
        .expect(StatusCode::NOT_FOUND, "plugin_not_found");
    post_benchmark(&h, INVOKE_ALL, &report("calc"))
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");

    // The benchmark's series leave with the plugin.
    h.directory.remove("calc");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = h.metrics.render();
    assert!(!text.contains("berth_benchmark_"), "{text}");
}

#[tokio::test]
async fn tier_benchmark_and_upstream_series_pass_promtool() {
    let echo = spawn_plugin(echo_plugin(Recorder::default())).await;
    let h = Harness::with_config(
        vec![entry(plugin("calc", CALC_SPEC), &[echo])],
        berth_gateway::Config {
            tier_min_calls: 1,
            ..tier_config()
        },
    )
    .await;
    h.invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
        .await;
    h.gateway.evaluate_tiers_now();
    let r = post_benchmark(&h, ADMIN, &report("calc")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let text = h.get("/metrics", None).await.text;
    for name in [
        "berth_invocation_upstream_seconds",
        "berth_plugin_tier",
        "berth_benchmark_tier",
        "berth_benchmark_latency_seconds",
        "berth_benchmark_throughput",
        "berth_benchmark_error_ratio",
        "berth_benchmark_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    promtool_check(&text);
}
