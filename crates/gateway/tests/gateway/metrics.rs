//! `/metrics`: every DESIGN.md name is there and the exposition passes `promtool`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::*;

async fn busy_gateway() -> Harness {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec)).await;
    let failing = Arc::new(AtomicBool::new(true));
    let bad = spawn_plugin(flaky_plugin(Recorder::default(), failing, 0)).await;
    let h = Harness::start(vec![
        entry(
            plugin(
                "calc",
                &format!("{CALC_SPEC}hooks: [{{name: file_changed, mode: observe}}]"),
            ),
            &[addr],
        ),
        entry(plugin("flaky", "capabilities: [{name: run}]"), &[bad]),
    ])
    .await;
    let ok = h
        .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    h.invoke(INVOKE_ALL, "flaky", "run", "{}").await;
    h.invoke(INVOKE_CALC, "flaky", "run", "{}").await;
    h.publish(HOOKS, "file_changed", &json!({"path": "/x"}))
        .await;
    h.gateway
        .metrics()
        .observe_cold_start("calc", Duration::from_millis(420));
    h.gateway.metrics().record_restart("flaky", "crash");
    h.flush_audit().await;
    h
}

#[tokio::test]
async fn every_metric_named_in_the_design_is_exported() {
    let h = busy_gateway().await;
    let r = h.get("/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for name in [
        "berth_invocations_total",
        "berth_invocation_duration_seconds",
        "berth_inflight_invocations",
        "berth_hook_deliveries_total",
        "berth_hook_dispatch_duration_seconds",
        "berth_permission_denials_total",
        "berth_plugin_restarts_total",
        "berth_audit_events_total",
        "berth_plugin_risk_score",
        "berth_plugin_cold_start_seconds",
    ] {
        assert!(
            r.text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{}",
            r.text
        );
    }
    assert_eq!(
        metric_value(
            &r.text,
            "berth_invocations_total",
            &[
                ("plugin", "calc"),
                ("capability", "evaluate"),
                ("outcome", "success")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &r.text,
            "berth_plugin_cold_start_seconds_count",
            &[("plugin", "calc")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_exposition_passes_promtool_check_metrics() {
    let h = busy_gateway().await;
    let text = h.get("/metrics", None).await.text;
    promtool_check(&text);
}
