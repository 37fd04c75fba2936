//! `POST /v1/hooks/{hook}`: filter subscribers in priority order, then observers at once.
//!
//! A filter sees the event as the previous filter left it and may continue, modify or veto;
//! a veto stops the chain and observers are not told. Each delivery has its own deadline;
//! a subscriber that fails, answers nonsense or is too slow is recorded and skipped, unless
//! it is a filter with `failurePolicy: Fail`: then its failure vetoes the event.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use berth_api::{FailurePolicy, HookMode, Phase};
use berth_store::AuditEvent;
use berth_store::audit::types;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::breaker::AdmissionGuard;
use crate::error::Quoted;
use crate::gateway::Gateway;
use crate::invoke::{deadline_budget, read_body};
use crate::upstream::{self, Call, CallError};
use crate::{Error, Result};
use berth_contract::PluginEntry;

/// What happened to one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// A filter let the event pass unchanged.
    Continue,
    /// A filter changed the event.
    Modified,
    /// A filter stopped the event.
    Vetoed,
    /// An observer took the event.
    Delivered,
    /// The subscriber answered with an error or something that is not protocol v1.
    Failed,
    /// The subscriber did not answer within its deadline.
    Timeout,
    /// The subscriber's breaker is open.
    CircuitOpen,
    /// Not called: not ready, at its concurrency limit, or the event was vetoed earlier.
    Skipped,
    /// A filter with `failurePolicy: Fail` gave no valid answer, so the event was vetoed.
    FailedClosed,
}

impl DeliveryOutcome {
    /// The label used in metrics and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Continue => "continue",
            DeliveryOutcome::Modified => "modified",
            DeliveryOutcome::Vetoed => "vetoed",
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Timeout => "timeout",
            DeliveryOutcome::CircuitOpen => "circuit_open",
            DeliveryOutcome::Skipped => "skipped",
            DeliveryOutcome::FailedClosed => "failed_closed",
        }
    }
}

/// One line of the answer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The subscriber.
    pub plugin: String,
    /// `filter` or `observe`.
    pub mode: &'static str,
    /// Its priority (filters run lowest first).
    pub priority: i32,
    /// What happened.
    pub outcome: DeliveryOutcome,
    /// Time the delivery took, in milliseconds.
    pub duration_ms: f64,
    /// The veto reason, or why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the subscriber gave no answer, when that is why it did not take part.
    #[serde(skip)]
    failure: Option<Failure>,
}

/// Why a subscriber gave no answer; under `failurePolicy: Fail` a filter's failure vetoes
/// the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// A 5xx or other non-2xx status, an answer that is not protocol v1, or too large.
    Error,
    /// No connection could be made, or it broke.
    Unreachable,
    /// No answer within the delivery's deadline.
    Timeout,
    /// The plugin's breaker is open.
    CircuitOpen,
    /// No ready instance (starting, crashed, failed).
    NotReady,
    /// The plugin has `maxConcurrency` calls in flight.
    ConcurrencyLimit,
}

impl Failure {
    /// The label under `veto.failure` and in audit details.
    fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::CircuitOpen => "circuit_open",
            Failure::NotReady => "not_ready",
            Failure::ConcurrencyLimit => "concurrency_limit",
        }
    }
}

/// The answer to a hook publication.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResult {
    /// The hook.
    pub hook: String,
    /// True when a filter vetoed the event.
    pub vetoed: bool,
    /// Who vetoed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub veto: Option<Value>,
    /// The event after every filter.
    pub event: Value,
    /// One line per subscriber, filters first in the order they ran.
    pub deliveries: Vec<Delivery>,
}

/// The handler.
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = gateway.request_id(&headers);
    let mut response = match run(&gateway, &hook, &headers, body, &request_id).await {
        Ok(result) => (StatusCode::OK, Json(result)).into_response(),
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(berth_contract::protocol::HEADER_REQUEST_ID, request_id);
    response
}

struct Subscriber {
    entry: Arc<PluginEntry>,
    mode: HookMode,
    priority: i32,
    failure_policy: FailurePolicy,
}

async fn run(
    gateway: &Gateway,
    hook: &str,
    headers: &HeaderMap,
    body: Body,
    request_id: &HeaderValue,
) -> Result<HookResult> {
    let snapshot = gateway.snapshot();
    let principal = gateway.authenticate(headers, &snapshot, "hooks")?;
    if !principal.may_publish(hook) {
        return Err(gateway.deny(
            &principal,
            principal.plugin.as_deref().unwrap_or(""),
            "scope",
            Error::Forbidden {
                needed: format!("hooks:{hook}"),
            },
            None,
        ));
    }
    if !berth_api::hooks::is_known_hook(hook) {
        let hint = berth_api::hooks::closest_hook(hook)
            .map(|h| format!(" (did you mean {h}?)"))
            .unwrap_or_default();
        return Err(Error::BadRequest {
            code: "unknown_hook",
            message: format!(
                "{} is neither a standard hook nor custom.<name>{hint}",
                Quoted(hook)
            ),
        });
    }
    let started = Instant::now();
    let overall = deadline_budget(headers, Duration::from_secs(3600))?;
    let limits = &gateway.inner.limits;
    let body = read_body(headers, body, limits.max_body, limits.body_read_timeout).await?;
    let mut envelope: Value =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?;
    let mut event = match envelope.get_mut("event").map(Value::take) {
        Some(event) if event.is_object() => event,
        Some(other) => {
            return Err(Error::BadRequest {
                code: "invalid_hook_event",
                message: format!(
                    "the event must be a JSON object, got {}; send {{\"event\": {{…}}}}",
                    json_type(&other)
                ),
            });
        }
        None => {
            return Err(Error::BadRequest {
                code: "invalid_hook_event",
                message: "the body must be {\"event\": {…}}".into(),
            });
        }
    };

    let mut subscribers: Vec<Subscriber> = snapshot
        .plugins()
        .flat_map(|entry| {
            entry
                .plugin
                .spec
                .hooks
                .iter()
                .filter(|h| h.name == hook)
                .map(|h| Subscriber {
                    entry: entry.clone(),
                    mode: h.mode,
                    priority: h.priority,
                    failure_policy: h.failure_policy,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    subscribers.sort_by(|a, b| (a.priority, a.entry.name()).cmp(&(b.priority, b.entry.name())));
    let (filters, observers): (Vec<_>, Vec<_>) = subscribers
        .into_iter()
        .partition(|s| s.mode == HookMode::Filter);

    let caller = principal.caller().clone();
    let ctx = Context {
        gateway,
        hook,
        request_id,
        caller: &caller,
        overall_deadline: started + overall,
    };
    let mut deliveries = Vec::with_capacity(filters.len() + observers.len());
    let mut veto = None;
    for filter in &filters {
        if veto.is_some() {
            deliveries.push(skipped(filter, "vetoed earlier in the chain"));
            continue;
        }
        let payload =
            Bytes::from(serde_json::to_vec(&json!({ "event": &event })).unwrap_or_default());
        let (mut delivery, answer) = ctx.deliver(filter, payload).await;
        match answer {
            Some(FilterAnswer::Modify(modified)) => event = modified,
            Some(FilterAnswer::Veto(reason)) => {
                veto = Some(json!({"plugin": filter.entry.name(), "reason": reason}));
            }
            Some(FilterAnswer::Continue) | None => {}
        }
        if let Some(failure) = delivery.failure
            && filter.failure_policy == FailurePolicy::Fail
        {
            let why = delivery.reason.as_deref().unwrap_or(failure.as_str());
            veto = Some(json!({
                "plugin": filter.entry.name(),
                "reason": format!(
                    "filter {} of hook {hook} gave no answer ({}: {why}) and its \
                     failurePolicy is Fail",
                    filter.entry.name(),
                    failure.as_str()
                ),
                "failure": failure.as_str(),
            }));
            delivery.outcome = DeliveryOutcome::FailedClosed;
        }
        deliveries.push(delivery);
    }
    if veto.is_some() {
        deliveries.extend(observers.iter().map(|o| skipped(o, "the event was vetoed")));
    } else if !observers.is_empty() {
        let payload =
            Bytes::from(serde_json::to_vec(&json!({ "event": &event })).unwrap_or_default());
        let results =
            futures::future::join_all(observers.iter().map(|o| ctx.deliver(o, payload.clone())))
                .await;
        deliveries.extend(results.into_iter().map(|(d, _)| d));
    }

    let metrics = &gateway.inner.metrics;
    for d in &deliveries {
        metrics
            .hook_deliveries
            .with_label_values(&[hook, &d.plugin, d.outcome.as_str()])
            .inc();
        let audited = matches!(
            d.outcome,
            DeliveryOutcome::Failed
                | DeliveryOutcome::Timeout
                | DeliveryOutcome::Vetoed
                | DeliveryOutcome::FailedClosed
        );
        if audited {
            let mut details = json!({
                "hook": hook,
                "mode": d.mode,
                "requestId": request_id.to_str().unwrap_or_default(),
                "reason": d.reason,
            });
            if d.outcome == DeliveryOutcome::FailedClosed {
                details["failure"] = json!(d.failure.map(Failure::as_str));
                details["failurePolicy"] = json!(FailurePolicy::Fail.as_str());
            }
            gateway.inner.auditor.record(
                AuditEvent::new(principal.name.clone(), types::HOOK, d.outcome.as_str())
                    .plugin(d.plugin.clone())
                    .details(details),
            );
        }
    }
    metrics
        .hook_dispatch_duration
        .with_label_values(&[hook])
        .observe(started.elapsed().as_secs_f64());
    Ok(HookResult {
        hook: hook.to_owned(),
        vetoed: veto.is_some(),
        veto,
        event,
        deliveries,
    })
}

pub(crate) enum FilterAnswer {
    Continue,
    Modify(Value),
    Veto(String),
}

struct Context<'a> {
    gateway: &'a Gateway,
    hook: &'a str,
    request_id: &'a HeaderValue,
    caller: &'a HeaderValue,
    overall_deadline: Instant,
}

fn skipped(s: &Subscriber, reason: &str) -> Delivery {
    Delivery {
        plugin: s.entry.name().to_owned(),
        mode: s.mode.as_str(),
        priority: s.priority,
        outcome: DeliveryOutcome::Skipped,
        duration_ms: 0.0,
        reason: Some(reason.to_owned()),
        failure: None,
    }
}

/// Skipped because it could not be called; a failure for `failurePolicy: Fail`.
fn unavailable(s: &Subscriber, failure: Failure, reason: &str) -> Delivery {
    Delivery {
        failure: Some(failure),
        ..skipped(s, reason)
    }
}

impl Context<'_> {
    async fn deliver(&self, s: &Subscriber, payload: Bytes) -> (Delivery, Option<FilterAnswer>) {
        let started = Instant::now();
        let entry = &s.entry;
        let done = |outcome: DeliveryOutcome, reason: Option<String>| Delivery {
            plugin: entry.name().to_owned(),
            mode: s.mode.as_str(),
            priority: s.priority,
            outcome,
            duration_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            reason,
            failure: None,
        };
        let failed = |outcome: DeliveryOutcome, failure: Failure, reason: String| Delivery {
            failure: Some(failure),
            ..done(outcome, Some(reason))
        };
        // Switched off or never granted: the subscription is not in force, so it can veto
        // nothing, whatever its failurePolicy.
        if entry.is_disabled() {
            return (skipped(s, "disabled"), None);
        }
        if entry.phase == Phase::AwaitingApproval {
            return (skipped(s, "awaiting its permission grant"), None);
        }
        if !entry.is_ready() {
            let reason = format!("not ready (phase {})", entry.phase);
            return (unavailable(s, Failure::NotReady, &reason), None);
        }
        let runtime = self.gateway.runtime(entry);
        let Ok(_permit) = runtime.limiter.clone().try_acquire_owned() else {
            let reason = "at its concurrency limit";
            return (unavailable(s, Failure::ConcurrencyLimit, reason), None);
        };
        let admission = match AdmissionGuard::admit(&runtime.breaker, std::time::Instant::now()) {
            Ok(a) => a,
            Err(_) => {
                return (
                    failed(
                        DeliveryOutcome::CircuitOpen,
                        Failure::CircuitOpen,
                        "the plugin's circuit breaker is open".into(),
                    ),
                    None,
                );
            }
        };
        let budget = runtime.timeout.min(self.gateway.inner.limits.hook_timeout);
        let deadline = (started + budget).min(self.overall_deadline);
        let _standby = crate::standby::call_starts(self.gateway, entry.name(), &runtime.standby);
        let endpoint = runtime.pick(&entry.endpoints);
        let call = Call {
            authority: endpoint.authority(),
            path: upstream::path(&format!("/v1/hooks/{}", self.hook)),
            body: payload,
            request_id: self.request_id,
            caller: self.caller,
            deadline,
            max_answer: self.gateway.inner.limits.max_response_body,
        };
        let result = upstream::post(&self.gateway.inner.upstream, call).await;
        let (delivery, answer) = match result {
            Err(CallError::Timeout) => (
                failed(
                    DeliveryOutcome::Timeout,
                    Failure::Timeout,
                    format!("no answer within {}ms", budget.as_millis()),
                ),
                None,
            ),
            Err(CallError::Transport(e)) => (
                failed(DeliveryOutcome::Failed, Failure::Unreachable, e),
                None,
            ),
            Err(CallError::TooLarge) => (
                failed(
                    DeliveryOutcome::Failed,
                    Failure::Error,
                    "answer too large".into(),
                ),
                None,
            ),
            Ok(answer) if !answer.status.is_success() => (
                failed(
                    DeliveryOutcome::Failed,
                    Failure::Error,
                    format!("it answered {}", answer.status),
                ),
                None,
            ),
            Ok(_) if s.mode == HookMode::Observe => (done(DeliveryOutcome::Delivered, None), None),
            Ok(answer) => match parse_filter_answer(answer.status, &answer.body) {
                Ok(FilterAnswer::Continue) => (
                    done(DeliveryOutcome::Continue, None),
                    Some(FilterAnswer::Continue),
                ),
                Ok(FilterAnswer::Modify(e)) => (
                    done(DeliveryOutcome::Modified, None),
                    Some(FilterAnswer::Modify(e)),
                ),
                Ok(FilterAnswer::Veto(reason)) => (
                    done(DeliveryOutcome::Vetoed, Some(reason.clone())),
                    Some(FilterAnswer::Veto(reason)),
                ),
                Err(why) => (failed(DeliveryOutcome::Failed, Failure::Error, why), None),
            },
        };
        let healthy = !matches!(
            delivery.outcome,
            DeliveryOutcome::Failed | DeliveryOutcome::Timeout
        );
        if let Some(state) = admission.record(healthy, std::time::Instant::now()) {
            self.gateway.inner.auditor.record(
                AuditEvent::new(
                    "gateway",
                    types::HOOK,
                    match state {
                        crate::breaker::BreakerState::Open => "circuit_opened",
                        _ => "circuit_closed",
                    },
                )
                .plugin(entry.name())
                .risk_score(entry.risk_score)
                .details(json!({"hook": self.hook, "breaker": state.as_str()})),
            );
        }
        (delivery, answer)
    }
}

pub(crate) fn parse_filter_answer(
    status: StatusCode,
    body: &[u8],
) -> std::result::Result<FilterAnswer, String> {
    if status == StatusCode::NO_CONTENT || body.is_empty() {
        return Ok(FilterAnswer::Continue);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("its answer is not JSON: {e}"))?;
    match value.get("action").and_then(Value::as_str) {
        Some("continue") => Ok(FilterAnswer::Continue),
        Some("modify") => match value.get("event") {
            Some(event) if event.is_object() => Ok(FilterAnswer::Modify(event.clone())),
            _ => Err("action modify without an event object".into()),
        },
        Some("veto") => Ok(FilterAnswer::Veto(
            value
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned(),
        )),
        _ => Err("its answer has no action continue, modify or veto".into()),
    }
}

/// The JSON type of `value`, for messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
