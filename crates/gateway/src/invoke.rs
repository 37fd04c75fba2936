//! `POST /v1/plugins/{name}/invoke/{capability}`: auth, checks, limits, then the plugin.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use berth_store::AuditEvent;
use berth_store::audit::types;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::auth::Principal;
use crate::breaker::{AdmissionGuard, BreakerState};
use crate::gateway::{Gateway, PluginRuntime};
use crate::upstream::{self, Answer, Call, CallError};
use crate::{Error, Result};
use berth_contract::PluginEntry;

/// Header set on answers that carry a plugin's own 4xx error.
pub const ERROR_SOURCE: &str = "berth-error-source";

/// The handler.
pub(crate) async fn invoke(
    State(gateway): State<Gateway>,
    Path((plugin, capability)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    // The request's own headers: the `HeaderMap` extractor would copy them.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let request_id = gateway.request_id(headers);
    let mut response = match run(&gateway, &plugin, &capability, headers, body, &request_id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(berth_contract::protocol::HEADER_REQUEST_ID, request_id);
    response
}

async fn run(
    gateway: &Gateway,
    plugin: &str,
    capability: &str,
    headers: &HeaderMap,
    body: Body,
    request_id: &HeaderValue,
) -> Result<Response> {
    let snapshot = gateway.snapshot();
    let principal = gateway.authenticate(headers, &snapshot, "invoke")?;
    authorize(gateway, &principal, &snapshot, plugin, capability)?;
    let entry = snapshot
        .get(plugin)
        .ok_or_else(|| Error::PluginNotFound(plugin.to_owned()))?;
    let Some(cap) = entry.plugin.capability(capability) else {
        return Err(Error::CapabilityNotFound {
            plugin: plugin.to_owned(),
            capability: capability.to_owned(),
        });
    };
    // From here plugin and capability are known, so they are safe as metric labels.
    let started = Instant::now();
    let runtime = gateway.runtime(entry);
    let result = checked_call(
        gateway,
        &principal,
        entry,
        &runtime,
        capability,
        cap.idempotent,
        headers,
        body,
        request_id,
        started,
    )
    .await;
    let metrics = &gateway.inner.metrics;
    let outcome = match &result {
        Ok(answer) if answer.status.is_success() => "success",
        Ok(_) => "client_error",
        Err(f) => outcome_of(&f.error),
    };
    let cached = runtime.capability_metrics(capability);
    match cached {
        Some(m) if outcome == "success" => m.success.inc(),
        _ => metrics
            .invocations
            .with_label_values(&[plugin, capability, outcome])
            .inc(),
    }
    let observe = |elapsed: f64| match cached {
        Some(m) => m.duration.observe(elapsed),
        None => metrics
            .invocation_duration
            .with_label_values(&[plugin, capability])
            .observe(elapsed),
    };
    let upstream = match &result {
        Ok(answer) => Some(answer.upstream),
        Err(f) => f.upstream,
    };
    if let Some(waited) = upstream {
        match cached {
            Some(m) => m.upstream.observe(waited.as_secs_f64()),
            None => metrics
                .invocation_upstream
                .with_label_values(&[plugin, capability])
                .observe(waited.as_secs_f64()),
        }
    }
    let mut response = match result {
        Ok(answer) => {
            observe(started.elapsed().as_secs_f64());
            answer_response(answer)
        }
        Err(Failure {
            error: e, attempts, ..
        }) => {
            let Some(attempts) = attempts else {
                return Err(e);
            };
            observe(started.elapsed().as_secs_f64());
            gateway.inner.auditor.record(
                AuditEvent::new(principal.name.clone(), types::INVOCATION, outcome)
                    .plugin(plugin)
                    .risk_score(entry.risk_score)
                    .details(json!({
                        "capability": capability,
                        "requestId": request_id.to_str().unwrap_or_default(),
                        "code": e.code(),
                        "error": e.to_string(),
                        "attempts": attempts,
                    })),
            );
            e.into_response()
        }
    };
    if let Some(waited) = upstream {
        response
            .headers_mut()
            .insert(SERVER_TIMING, server_timing(waited));
    }
    Ok(response)
}

/// `Server-Timing` on answers that reached a plugin.
pub const SERVER_TIMING: &str = "server-timing";

/// `upstream;dur=12.345`: milliseconds the plugin took, from sending it the request to
/// receiving its answer's head (summed over attempts when a call was retried).
fn server_timing(waited: Duration) -> HeaderValue {
    // Integer formatting: a third cheaper than `{:.3}` of a float (decision 0062).
    let micros = waited.as_micros();
    let value = format!("upstream;dur={}.{:03}", micros / 1000, micros % 1000);
    // Digits, a dot and ASCII letters: always a valid header value.
    HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("upstream"))
}

/// The scope check for tokens, the grant check for plugins.
fn authorize(
    gateway: &Gateway,
    principal: &Principal,
    snapshot: &berth_contract::DirectorySnapshot,
    plugin: &str,
    capability: &str,
) -> Result<()> {
    if principal.may_invoke(plugin) {
        return Ok(());
    }
    if let Some(caller) = &principal.plugin {
        let caller_entry = snapshot.get(caller);
        if let Some(item) = caller_entry.and_then(|e| granted_call(e, plugin, capability)) {
            gateway
                .usage()
                .record(caller, berth_contract::wire::UsageKind::Call, item);
            return Ok(());
        }
        return Err(gateway.deny(
            principal,
            caller,
            "plugins",
            Error::PermissionDenied {
                caller: caller.clone(),
                target: plugin.to_owned(),
                capability: capability.to_owned(),
            },
            caller_entry.map(|e| e.risk_score),
        ));
    }
    let label = if snapshot.get(plugin).is_some() {
        plugin
    } else {
        ""
    };
    Err(gateway.deny(
        principal,
        label,
        "scope",
        Error::Forbidden {
            needed: format!("invoke:{plugin}"),
        },
        None,
    ))
}

/// The key of the call item of `caller`'s grants that allows calling `capability` of
/// `target`: the capability itself when granted by name, else `*`.
fn granted_call(
    caller: &berth_contract::PluginEntry,
    target: &str,
    capability: &str,
) -> Option<String> {
    use berth_contract::wire::usage::call_item;
    let calls = || caller.granted_calls.iter().filter(|c| c.name == target);
    if calls().any(|c| c.capabilities.iter().any(|c| c == capability)) {
        return Some(call_item(target, capability));
    }
    calls()
        .any(|c| c.capabilities.iter().any(|c| c == "*"))
        .then(|| call_item(target, "*"))
}

/// Why an invocation failed, and how many attempts reached for the plugin (`None` when the
/// gateway refused it before that).
struct Failure {
    error: Error,
    attempts: Option<u32>,
    /// Time spent waiting for the heads of the plugin's answers, when any came.
    upstream: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            attempts: None,
            upstream: None,
        }
    }
}

/// The outcome label of a failed invocation, by the rule shared with `berth bench`
/// ([`berth_api::bench::invocation_outcome`]: 400 and 413 are `invalid_input`, then by
/// error code).
fn outcome_of(e: &Error) -> &'static str {
    berth_api::bench::invocation_outcome(e.status().as_u16(), e.code())
}

#[allow(clippy::too_many_arguments)]
async fn checked_call(
    gateway: &Gateway,
    principal: &Principal,
    entry: &PluginEntry,
    runtime: &Arc<PluginRuntime>,
    capability: &str,
    idempotent: bool,
    headers: &HeaderMap,
    body: Body,
    request_id: &HeaderValue,
    started: Instant,
) -> Result<Answer, Failure> {
    let name = entry.name();
    // A restarted or replaced instance is a new start for the breaker (decision 0058).
    let instances =
        crate::breaker::instances_fingerprint(entry.endpoints.iter().map(|e| e.authority()));
    if let Some(state) = runtime.breaker.observe_instances(instances) {
        note_breaker_change(gateway, entry, state);
    }
    if entry.is_disabled() {
        return Err(Error::PluginDisabled(name.to_owned()).into());
    }
    if !entry.is_ready() && entry.phase == berth_api::Phase::AwaitingApproval {
        return Err(Error::PluginNotGranted {
            plugin: name.to_owned(),
            asks: asks(&entry.plugin.spec.permissions),
        }
        .into());
    }
    if !entry.is_ready() {
        return Err(Error::PluginNotReady {
            plugin: name.to_owned(),
            phase: entry.phase.to_string(),
        }
        .into());
    }
    let budget = deadline_budget(headers, runtime.timeout)?;
    let limits = &gateway.inner.limits;
    let body = read_body(headers, body, limits.max_body, limits.body_read_timeout).await?;
    let input: Value =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?;
    runtime.validate(name, capability, &input)?;

    let _permit = runtime
        .limiter
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Saturated {
            plugin: name.to_owned(),
            limit: runtime.max_concurrency,
        })?;
    let admission = AdmissionGuard::admit(&runtime.breaker, std::time::Instant::now()).map_err(
        |retry_after| Error::CircuitOpen {
            plugin: name.to_owned(),
            retry_after,
        },
    )?;

    let inflight = InflightGuard::new(runtime.inflight.clone());
    let standby = crate::standby::call_starts(gateway, name, &runtime.standby);
    let caller = principal.caller();
    let deadline = started + budget;
    let attempts = if idempotent { 1 + limits.retries } else { 1 };
    let path = runtime.invoke_path(capability);
    let (result, tries, waited) = async {
        let mut tried = 0;
        let mut last = None;
        let mut waited: Option<Duration> = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                let backoff = limits.retry_backoff * 2u32.saturating_pow(attempt - 1);
                if Instant::now() + backoff >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
            }
            tried += 1;
            let endpoint = runtime.pick(&entry.endpoints);
            let call = Call {
                authority: endpoint.authority(),
                path: path.clone(),
                body: body.clone(),
                request_id,
                caller,
                deadline,
                max_answer: limits.max_response_body,
            };
            let answered = upstream::post(&gateway.inner.upstream, call).await;
            if let Ok(answer) = &answered {
                waited = Some(waited.unwrap_or_default() + answer.upstream);
            }
            match answered {
                Ok(mut answer) if answer.status.is_success() || answer.status.is_client_error() => {
                    answer.upstream = waited.unwrap_or(answer.upstream);
                    return (Ok(answer), tried, waited);
                }
                Ok(answer) => {
                    let failed = plugin_failure(name, answer);
                    let retryable =
                        matches!(&failed, Error::PluginFailed { status: Some(s), .. } if *s >= 500);
                    last = Some(failed);
                    if !retryable {
                        break;
                    }
                }
                Err(CallError::Timeout) => {
                    last = Some(Error::DeadlineExceeded {
                        plugin: name.to_owned(),
                        deadline: budget,
                    });
                    break;
                }
                Err(CallError::TooLarge) => {
                    last = Some(Error::PluginResponseTooLarge {
                        plugin: name.to_owned(),
                        limit: limits.max_response_body,
                    });
                    break;
                }
                Err(CallError::Transport(reason)) => {
                    last = Some(Error::Unreachable {
                        plugin: name.to_owned(),
                        reason,
                    });
                }
            }
        }
        let error = last.unwrap_or(Error::DeadlineExceeded {
            plugin: name.to_owned(),
            deadline: budget,
        });
        (Err(error), tried, waited)
    }
    .await;
    drop(inflight);
    drop(standby);
    let success = result.is_ok();
    if let Some(state) = admission.record(success, std::time::Instant::now()) {
        note_breaker_change(gateway, entry, state);
    }
    result.map_err(|error| Failure {
        error,
        attempts: Some(tries),
        upstream: waited,
    })
}

/// Keeps `berth_inflight_invocations` right even when the caller hangs up mid-call.
struct InflightGuard(prometheus::IntGauge);

impl InflightGuard {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Audits breaker transitions: opening and closing are worth a record, each refused call is not.
pub(crate) fn note_breaker_change(gateway: &Gateway, entry: &PluginEntry, state: BreakerState) {
    let outcome = match state {
        BreakerState::Open => "circuit_opened",
        _ => "circuit_closed",
    };
    gateway.inner.auditor.record(
        AuditEvent::new("gateway", types::INVOCATION, outcome)
            .plugin(entry.name())
            .risk_score(entry.risk_score)
            .details(json!({"breaker": state.as_str()})),
    );
}

fn plugin_failure(plugin: &str, answer: Answer) -> Error {
    let error = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let message = error
        .as_ref()
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(
            || format!("it answered {}", answer.status),
            |m| format!("it answered {}: {m}", answer.status),
        );
    Error::PluginFailed {
        plugin: plugin.to_owned(),
        status: Some(answer.status.as_u16()),
        message,
        error,
    }
}

fn answer_response(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let content_type = answer
        .content_type
        .unwrap_or(HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    if answer.status.is_client_error() {
        response
            .headers_mut()
            .insert(ERROR_SOURCE, HeaderValue::from_static("plugin"));
    }
    response
}

/// min(caller's `Berth-Timeout`, the manifest's timeout).
pub(crate) fn deadline_budget(headers: &HeaderMap, manifest: Duration) -> Result<Duration> {
    let Some(value) = headers.get(berth_contract::protocol::HEADER_TIMEOUT) else {
        return Ok(manifest);
    };
    let bad = || Error::BadRequest {
        code: "invalid_timeout",
        message: "Berth-Timeout must be milliseconds (\"250\") or a duration (\"250ms\", \"2s\")"
            .into(),
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let asked = match text.parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => berth_api::quantity::parse_duration(text).map_err(|_| bad())?,
    };
    if asked.is_zero() {
        return Err(bad());
    }
    Ok(asked.min(manifest))
}

/// Reads the body, refusing more than `limit` bytes (413).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: Duration,
) -> Result<Bytes> {
    let too_large = Error::PayloadTooLarge { limit };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(too_large);
    }
    // A body sent slowly holds one of `--max-connections`: bounded in time as the headers are.
    let Ok(collected) = tokio::time::timeout(within, Limited::new(body, limit).collect()).await
    else {
        return Err(Error::BodyTimeout { within });
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(e) => Err(Error::BadRequest {
            code: "body_read_failed",
            message: format!("could not read the request body: {e}"),
        }),
    }
}

/// What `permissions` ask for, in one line: `network egress *:80,443; calls
/// text-processor/stats; 1 secret`.
fn asks(permissions: &berth_api::Permissions) -> String {
    let mut parts = Vec::new();
    let egress: Vec<String> = permissions
        .network
        .egress
        .iter()
        .map(|rule| {
            let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
            let target = rule.host.as_deref().or(rule.cidr.as_deref()).unwrap_or("?");
            format!("{target}:{}", ports.join(","))
        })
        .collect();
    if !egress.is_empty() {
        parts.push(format!("network egress {}", egress.join(" ")));
    }
    let calls: Vec<String> = permissions
        .plugins
        .iter()
        .map(|call| format!("{}/{}", call.name, call.capabilities.join(",")))
        .collect();
    if !calls.is_empty() {
        parts.push(format!("calls {}", calls.join(" ")));
    }
    let counted = [
        (permissions.filesystem.len(), "filesystem mount"),
        (permissions.secrets.len(), "secret"),
        (permissions.kubernetes.len(), "Kubernetes rule"),
    ];
    for (n, what) in counted {
        if n > 0 {
            parts.push(format!("{n} {what}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        "hooks that need approval".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_is_milliseconds_with_three_decimals() {
        let value = |d| server_timing(d).to_str().unwrap().to_owned();
        assert_eq!(value(Duration::from_micros(12_345)), "upstream;dur=12.345");
        assert_eq!(value(Duration::from_micros(7)), "upstream;dur=0.007");
        assert_eq!(value(Duration::from_secs(2)), "upstream;dur=2000.000");
    }
}
