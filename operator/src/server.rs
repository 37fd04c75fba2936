//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// What the health endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    leader: AtomicBool,
}

impl Health {
    /// Start-up checks passed (CRDs present, API reachable).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// This replica holds the leader Lease and runs the controllers.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// True once start-up checks passed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router; tested without a socket.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Ready once start-up checks passed; a standby replica is ready too (it is healthy and
/// waiting for the Lease), and says so.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    if state.health.is_leader() {
        (StatusCode::OK, "ready: leader\n")
    } else {
        (StatusCode::OK, "ready: standby\n")
    }
}

/// Serves `router` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, router: Router) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    axum::serve(listener, router)
        .await
        .map_err(|source| Error::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_and_readiness_follow_start_up_and_leadership() {
        let health = Arc::new(Health::default());
        let router = router(Arc::new(Metrics::new().unwrap()), health.clone());
        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_ready(true);
        assert_eq!(
            get(&router, "/readyz").await,
            (StatusCode::OK, "ready: standby\n".into())
        );
        health.set_leader(true);
        assert_eq!(
            get(&router, "/readyz").await,
            (StatusCode::OK, "ready: leader\n".into())
        );
    }

    #[tokio::test]
    async fn metrics_are_exposed_in_the_text_format() {
        let router = router(
            Arc::new(Metrics::new().unwrap()),
            Arc::new(Health::default()),
        );
        let (status, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# TYPE berth_plugins gauge"), "{body}");
        assert!(body.contains("# TYPE berth_reconcile_duration_seconds histogram"));
        assert!(body.contains("berth_reconcile_duration_seconds_count{controller=\"plugin\"} 0"));
    }
}
