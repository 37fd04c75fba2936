//! Router without a socket, readiness, graceful shutdown.

use std::sync::Arc;

use axum::body::Body;
use berth_gateway::{Auditor, Config, Gateway, Metrics, StaticDirectory, router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::*;

fn gateway_over(directory: Arc<StaticDirectory>) -> Gateway {
    Gateway::new(
        &Config::default(),
        directory,
        tokens(),
        Metrics::new(),
        Auditor::disabled(),
    )
}

async fn get(gateway: &Gateway, path: &str) -> (StatusCode, serde_json::Value) {
    let response = router(gateway.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn router_answers_health_without_a_socket() {
    let gateway = gateway_over(Arc::new(StaticDirectory::new([])));
    let (status, body) = get(&gateway, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_is_503_until_the_directory_has_synced() {
    let directory = Arc::new(StaticDirectory::unsynced());
    let gateway = gateway_over(directory.clone());
    let (status, body) = get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "not_ready");
    directory.replace_all([entry(plugin("calc", CALC_SPEC), &[])]);
    let (status, body) = get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["plugins"], 1);
    assert_eq!(body["readyPlugins"], 0);
}

#[tokio::test]
async fn shutdown_lets_in_flight_invocations_finish() {
    let rec = Recorder::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let addr = spawn_plugin(gated_plugin(rec.clone(), gate.clone(), entered_tx)).await;
    let h = Harness::start(vec![entry(
        plugin("slow", "capabilities: [{name: run}]"),
        &[addr],
    )])
    .await;
    let h = Arc::new(h);
    let call = {
        let h = h.clone();
        tokio::spawn(async move { h.invoke(INVOKE_ALL, "slow", "run", "{}").await })
    };
    entered.recv().await.unwrap();
    h.begin_shutdown();
    let stopped = {
        let h = h.clone();
        tokio::spawn(async move { h.wait_stopped().await })
    };
    gate.add_permits(1);
    let reply = call.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    stopped.await.unwrap();
    // Once drained, the gateway accepts no new connections.
    let refused = tokio::net::TcpStream::connect(h.url.trim_start_matches("http://")).await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}
