//! `PUT /v1/admin/directory` and `POST /v1/admin/observations`: how a supervisor in
//! another process (local Docker mode: the host, while the gateway runs in a container)
//! tells the gateway where plugins are and what happened to them; `POST /v1/admin/probe`:
//! how it checks a new plugin container that only the gateway can reach;
//! `POST /v1/admin/benchmarks`: how `berth bench` publishes a run's results as metrics.
//! All need the `admin` scope.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::gateway::Gateway;
use crate::invoke::read_body;
use crate::wire::{
    INVALID_OBSERVATIONS, INVALID_SNAPSHOT, ObservationsWire, PushAnswerWire, SnapshotWire,
};
use crate::{Error, Result};

/// Largest body the admin endpoints accept (unless `--max-body` is larger): a snapshot
/// carries every manifest with its schemas, easily a few hundred KiB for fifty plugins.
pub const ADMIN_MAX_BODY: usize = 8 * 1024 * 1024;

/// `PUT /v1/admin/directory`.
pub(crate) async fn put_directory(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    push(&gateway, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/admin/observations`.
pub(crate) async fn post_observations(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    observe(&gateway, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/admin/probe`.
pub(crate) async fn post_probe(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    probe(&gateway, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/admin/benchmarks`.
pub(crate) async fn post_benchmark(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    benchmark(&gateway, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The error code of a benchmark report that does not fit.
const INVALID_BENCHMARK: &str = "invalid_benchmark";

/// Exports a `berth bench` report as the `berth_benchmark_*` gauges and audits it.
async fn benchmark(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response> {
    let principal = admin(gateway, headers, "/v1/admin/benchmarks")?;
    let body = read_admin_body(gateway, headers, body).await?;
    let report: berth_api::BenchReport = decode(&body, INVALID_BENCHMARK)?;
    let invalid = |message: String| Error::BadRequest {
        code: INVALID_BENCHMARK,
        message,
    };
    let started: jiff::Timestamp = report.started_at.parse().map_err(|e| {
        invalid(format!(
            "startedAt: {:?} is not an RFC 3339 time ({e}); e.g. 2026-01-31T12:00:00Z",
            report.started_at
        ))
    })?;
    let numbers = [
        ("latency.p50Ms", report.latency.p50_ms),
        ("latency.p90Ms", report.latency.p90_ms),
        ("latency.p99Ms", report.latency.p99_ms),
        ("throughput", report.throughput),
        ("errorRatio", report.error_ratio),
    ];
    if let Some((field, value)) = numbers.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
        return Err(invalid(format!(
            "{field}: {value} must be a finite number ≥ 0"
        )));
    }
    let snapshot = gateway.snapshot();
    // Only plugins of the directory: the name becomes a label value.
    let Some(entry) = snapshot.get(&report.plugin) else {
        return Err(Error::PluginNotFound(report.plugin));
    };
    gateway
        .metrics()
        .set_benchmark(&report, started.as_millisecond() as f64 / 1000.0);
    gateway.inner.auditor.record(
        berth_store::AuditEvent::new(principal.name.clone(), crate::tiers::BENCHMARK, "success")
            .plugin(report.plugin.as_str())
            .risk_score(entry.risk_score)
            .details(json!({
                "tier": report.verdict.tier,
                "reasons": report.verdict.reasons,
                "capabilities": report.capabilities,
                "version": report.version,
                "startedAt": report.started_at,
                "load": report.load,
                "durationSeconds": report.duration_seconds,
                "requests": report.requests,
                "throughput": report.throughput,
                "errorRatio": report.error_ratio,
                "p50Ms": report.latency.p50_ms,
                "p90Ms": report.latency.p90_ms,
                "p99Ms": report.latency.p99_ms,
            })),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A probe request: `GET url` from the gateway, for at most `timeoutMs`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProbeWire {
    url: String,
    #[serde(default = "default_probe_timeout")]
    timeout_ms: u64,
}

fn default_probe_timeout() -> u64 {
    2000
}

/// Paths a probe may read: the two a readiness check needs, nothing that acts.
const PROBE_PATHS: [&str; 2] = ["/healthz", "/v1/describe"];
/// Largest answer a probe returns.
const PROBE_MAX_ANSWER: usize = 1024 * 1024;

async fn probe(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response> {
    admin(gateway, headers, "/v1/admin/probe")?;
    let body = read_admin_body(gateway, headers, body).await?;
    let wire: ProbeWire = decode(&body, "invalid_probe")?;
    let uri: http::Uri = wire.url.parse().map_err(|e| Error::BadRequest {
        code: "invalid_probe",
        message: format!("url: {:?} is not a URL: {e}", wire.url),
    })?;
    if uri.scheme_str() != Some("http") || !PROBE_PATHS.contains(&uri.path()) {
        return Err(Error::BadRequest {
            code: "invalid_probe",
            message: format!(
                "url: {:?} must be http://HOST:PORT followed by /healthz or /v1/describe",
                wire.url
            ),
        });
    }
    let timeout = std::time::Duration::from_millis(wire.timeout_ms.clamp(1, 30_000));
    let request = http::Request::get(uri)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| Error::BadRequest {
            code: "invalid_probe",
            message: e.to_string(),
        })?;
    let exchange = async {
        let answer = gateway
            .inner
            .client
            .request(request)
            .await
            .map_err(|e| berth_contract::error_chain(&e))?;
        let status = answer.status().as_u16();
        let bytes = http_body_util::Limited::new(answer.into_body(), PROBE_MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    use http_body_util::BodyExt as _;
    let result = match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    Ok(match result {
        Ok((status, bytes)) => Json(json!({
            "status": status,
            "body": String::from_utf8_lossy(&bytes),
        }))
        .into_response(),
        Err(error) => Json(json!({"error": error})).into_response(),
    })
}

async fn push(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response> {
    admin(gateway, headers, "/v1/admin/directory")?;
    let Some(pushed) = gateway.inner.pushed.as_ref() else {
        return Ok(conflict(
            "directory_not_pushed",
            "this gateway was not started with `--backend pushed`: its plugin directory \
             comes from elsewhere and cannot be replaced over HTTP"
                .into(),
            None,
        ));
    };
    let body = read_admin_body(gateway, headers, body).await?;
    let snapshot: SnapshotWire = decode(&body, INVALID_SNAPSHOT)?;
    let version = snapshot.version;
    // Refuse a stale snapshot before spending time checking its manifests; the check is
    // repeated under the lock, where it counts.
    if let Some(current) = gateway.pushed_version().filter(|c| version < *c) {
        return Ok(stale(version, current));
    }
    let entries = snapshot.into_entries()?;
    let count = entries.len();
    {
        let mut applied = pushed.applied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = applied.filter(|c| version < *c) {
            return Ok(stale(version, current));
        }
        // The same version again is a retry of a push whose answer was lost: apply it.
        pushed.directory.replace_all(entries);
        *applied = Some(version);
    }
    tracing::info!(version, plugins = count, "plugin directory pushed");
    Ok(Json(PushAnswerWire {
        version,
        plugins: count,
    })
    .into_response())
}

async fn observe(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response> {
    admin(gateway, headers, "/v1/admin/observations")?;
    let body = read_admin_body(gateway, headers, body).await?;
    let observations: ObservationsWire = decode(&body, INVALID_OBSERVATIONS)?;
    observations.check()?;
    let snapshot = gateway.snapshot();
    let known = |plugin: &str| {
        let known = snapshot.get(plugin).is_some();
        if !known {
            tracing::debug!(
                plugin,
                "observation about a plugin not in the directory dropped"
            );
        }
        known
    };
    let metrics = gateway.metrics();
    for r in observations.restarts.iter().filter(|r| known(&r.plugin)) {
        metrics.record_restart(&r.plugin, &r.reason);
    }
    for c in observations.cold_starts.iter().filter(|c| known(&c.plugin)) {
        // `check` refused what does not convert.
        if let Ok(took) = std::time::Duration::try_from_secs_f64(c.seconds) {
            metrics.observe_cold_start(&c.plugin, took);
        }
    }
    for u in observations.usage.iter().filter(|u| known(&u.plugin)) {
        metrics.set_usage(&u.plugin, u.cpu_cores, u.memory_bytes);
    }
    if let Some(report) = &observations.supervisor {
        metrics.set_local(report);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller, if it holds `admin`, for the admin endpoints of other modules.
pub(crate) fn require_admin(
    gateway: &Gateway,
    headers: &HeaderMap,
    path: &str,
) -> Result<Arc<Principal>> {
    admin(gateway, headers, path)
}

/// The caller, if it holds `admin`: 401 and 403 exactly as on the other endpoints.
pub(crate) fn admin(gateway: &Gateway, headers: &HeaderMap, path: &str) -> Result<Arc<Principal>> {
    let snapshot = gateway.snapshot();
    let principal = gateway.authenticate(headers, &snapshot, path)?;
    if principal.is_admin() {
        return Ok(principal);
    }
    Err(gateway.deny(
        &principal,
        "",
        "scope",
        Error::Forbidden {
            needed: "admin".into(),
        },
        None,
    ))
}

/// An admin request's body, within the admin size limit and the body read timeout.
pub(crate) async fn read_admin_body(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes> {
    read_body(
        headers,
        body,
        admin_limit(gateway),
        gateway.inner.limits.body_read_timeout,
    )
    .await
}

fn admin_limit(gateway: &Gateway) -> usize {
    gateway.inner.limits.max_body.max(ADMIN_MAX_BODY)
}

/// Decodes JSON, naming the field that does not fit (`plugins[2].phase: unknown variant…`).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8], code: &'static str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::InvalidJson(inner.to_string())
        } else if path == "." {
            Error::BadRequest {
                code,
                message: inner.to_string(),
            }
        } else {
            Error::BadRequest {
                code,
                message: format!("{path}: {inner}"),
            }
        }
    })?;
    de.end().map_err(|e| Error::InvalidJson(e.to_string()))?;
    Ok(value)
}

fn stale(version: u64, current: u64) -> Response {
    conflict(
        "stale_version",
        format!("snapshot version {version} is older than version {current}, already applied"),
        Some(json!({ "currentVersion": current })),
    )
}

/// A 409 in the gateway's error shape.
fn conflict(code: &'static str, message: String, details: Option<Value>) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(details) = details {
        error["details"] = details;
    }
    (StatusCode::CONFLICT, Json(json!({ "error": error }))).into_response()
}
