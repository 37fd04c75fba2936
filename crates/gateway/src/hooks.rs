//! `POST /v1/hooks/{hook}`: filter subscribers in priority order, then observers at once.
//!
//! A filter sees the event as the previous filter left it and may continue, modify or veto;
//! a veto stops the chain and observers are not told. Each delivery has its own deadline;
//! a subscriber that fails, answers nonsense or is too slow is recorded and skipped.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use berth_api::HookMode;
use berth_store::AuditEvent;
use berth_store::audit::types;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::breaker::AdmissionGuard;
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
            message: format!("{hook:?} is neither a standard hook nor custom.<name>{hint}"),
        });
    }
    let started = Instant::now();
    let overall = deadline_budget(headers, Duration::from_secs(3600))?;
    let body = read_body(headers, body, gateway.inner.limits.max_body).await?;
    let mut envelope: Value =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?;
    let Some(mut event) = envelope.get_mut("event").map(Value::take) else {
        return Err(Error::BadRequest {
            code: "invalid_hook_event",
            message: "the body must be {\"event\": {…}}".into(),
        });
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
                })
                .collect::<Vec<_>>()
        })
        .collect();
    subscribers.sort_by(|a, b| (a.priority, a.entry.name()).cmp(&(b.priority, b.entry.name())));
    let (filters, observers): (Vec<_>, Vec<_>) = subscribers
        .into_iter()
        .partition(|s| s.mode == HookMode::Filter);

    let caller = HeaderValue::try_from(principal.name.as_str())
        .unwrap_or(HeaderValue::from_static("unknown"));
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
        let (delivery, answer) = ctx.deliver(filter, payload).await;
        match answer {
            Some(FilterAnswer::Modify(modified)) => event = modified,
            Some(FilterAnswer::Veto(reason)) => {
                veto = Some(json!({"plugin": filter.entry.name(), "reason": reason}));
            }
            Some(FilterAnswer::Continue) | None => {}
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
            DeliveryOutcome::Failed | DeliveryOutcome::Timeout | DeliveryOutcome::Vetoed
        );
        if audited {
            gateway.inner.auditor.record(
                AuditEvent::new(principal.name.clone(), types::HOOK, d.outcome.as_str())
                    .plugin(d.plugin.clone())
                    .details(json!({
                        "hook": hook,
                        "mode": d.mode,
                        "requestId": request_id.to_str().unwrap_or_default(),
                        "reason": d.reason,
                    })),
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

enum FilterAnswer {
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
        };
        if !entry.is_ready() {
            return (skipped(s, "not ready"), None);
        }
        let runtime = self.gateway.runtime(entry);
        let Ok(_permit) = runtime.limiter.clone().try_acquire_owned() else {
            return (skipped(s, "at its concurrency limit"), None);
        };
        let admission = match AdmissionGuard::admit(&runtime.breaker, std::time::Instant::now()) {
            Ok(a) => a,
            Err(_) => {
                return (
                    done(
                        DeliveryOutcome::CircuitOpen,
                        Some("the plugin's circuit breaker is open".into()),
                    ),
                    None,
                );
            }
        };
        let budget = runtime.timeout.min(self.gateway.inner.limits.hook_timeout);
        let deadline = (started + budget).min(self.overall_deadline);
        let endpoint = runtime.pick(&entry.endpoints);
        let call = Call {
            uri: endpoint.uri(&format!("/v1/hooks/{}", self.hook)),
            body: payload,
            request_id: self.request_id,
            caller: self.caller,
            deadline,
            max_answer: self.gateway.inner.limits.max_response_body,
        };
        let result = upstream::post(&self.gateway.inner.client, call).await;
        let (delivery, answer) = match result {
            Err(CallError::Timeout) => (
                done(
                    DeliveryOutcome::Timeout,
                    Some(format!("no answer within {}ms", budget.as_millis())),
                ),
                None,
            ),
            Err(CallError::Transport(e)) => (done(DeliveryOutcome::Failed, Some(e)), None),
            Err(CallError::TooLarge) => (
                done(DeliveryOutcome::Failed, Some("answer too large".into())),
                None,
            ),
            Ok(answer) if !answer.status.is_success() => (
                done(
                    DeliveryOutcome::Failed,
                    Some(format!("it answered {}", answer.status)),
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
                Err(why) => (done(DeliveryOutcome::Failed, Some(why)), None),
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

fn parse_filter_answer(
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
