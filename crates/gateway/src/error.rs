//! The gateway's one error type, and how each error becomes an HTTP answer.
//!
//! Every error answer has the shape of plugin protocol v1:
//! `{"error": {"code": "...", "message": "...", "details": ...}}`; `code` is stable.
//!
//! An error that quotes what the caller sent (a name from the path, a value that broke the
//! schema, a parser's message) quotes at most [`QUOTE_LIMIT`] bytes of it, so a large input
//! never becomes a larger answer.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// Directory data a backend handed over: a bad endpoint is a configuration error (the
/// static backend's flags); a pushed snapshot or observations that do not check are a
/// 400 naming the field.
impl From<berth_contract::Error> for Error {
    fn from(e: berth_contract::Error) -> Self {
        match e {
            berth_contract::Error::Endpoint { .. } => Error::Config(e.to_string()),
            berth_contract::Error::Snapshot(_) | berth_contract::Error::Observations(_) => {
                Error::BadRequest {
                    code: e.code(),
                    message: e.to_string(),
                }
            }
        }
    }
}

/// What can go wrong in the gateway, at start-up or on a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration: a flag, a manifest, a tokens file.
    #[error("{0}")]
    Config(String),
    /// The audit store failed.
    #[error(transparent)]
    Store(#[from] berth_store::Error),
    /// No or malformed `Authorization` header, or an unknown token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The token's scopes do not allow this.
    #[error("the token lacks the scope {}", bounded(needed, QUOTE_LIMIT))]
    Forbidden {
        /// The scope that would allow it.
        needed: String,
    },
    /// A plugin called another plugin outside its grants.
    #[error(
        "plugin {caller} is not granted calls to {}/{}",
        bounded(target, QUOTE_LIMIT),
        bounded(capability, QUOTE_LIMIT)
    )]
    PermissionDenied {
        /// The calling plugin.
        caller: String,
        /// The plugin it tried to call.
        target: String,
        /// The capability.
        capability: String,
    },
    /// No plugin by that name.
    #[error("no plugin named {}", Quoted(.0))]
    PluginNotFound(String),
    /// The plugin has no such capability.
    #[error("plugin {plugin} has no capability {}", Quoted(capability))]
    CapabilityNotFound {
        /// The plugin.
        plugin: String,
        /// The capability asked for.
        capability: String,
    },
    /// The plugin is switched off.
    #[error("plugin {0} is disabled")]
    PluginDisabled(String),
    /// The plugin waits for its own permissions to be granted and does not run.
    #[error(
        "plugin {plugin} does not run until its permissions are granted (phase AwaitingApproval); \
         it asks for {asks}: grant them with `berth grant {plugin}` (local mode) or a \
         PluginGrant (cluster); `berth status {plugin}` shows what is missing"
    )]
    PluginNotGranted {
        /// The plugin.
        plugin: String,
        /// What its manifest asks for, in short.
        asks: String,
    },
    /// The plugin has no ready instance.
    #[error("plugin {plugin} is not ready (phase {phase})")]
    PluginNotReady {
        /// The plugin.
        plugin: String,
        /// Its phase.
        phase: String,
    },
    /// The body is not JSON.
    #[error("the body is not valid JSON: {}", bounded(.0, MESSAGE_LIMIT))]
    InvalidJson(String),
    /// The input does not match the capability's schema.
    #[error(
        "the input does not match the schema of {capability}: {}",
        bounded(first, MESSAGE_LIMIT)
    )]
    SchemaViolation {
        /// The capability.
        capability: String,
        /// The first violation, as text.
        first: String,
        /// Every violation: `{instancePath, schemaPath, message}`.
        violations: Vec<Value>,
    },
    /// A bad request header or hook body.
    #[error("{}", bounded(message, MESSAGE_LIMIT))]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the limit.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive in time (`--body-read-timeout`).
    #[error("the request body did not arrive within {} s", within.as_secs_f64())]
    BodyTimeout {
        /// The bound.
        within: std::time::Duration,
    },
    /// The plugin already has `maxConcurrency` invocations in flight.
    #[error("plugin {plugin} is at its concurrency limit ({limit})")]
    Saturated {
        /// The plugin.
        plugin: String,
        /// Its limit.
        limit: u32,
    },
    /// The plugin's circuit breaker is open.
    #[error("plugin {plugin} is failing; calls are suspended for {}s", retry_after.as_secs().max(1))]
    CircuitOpen {
        /// The plugin.
        plugin: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The deadline passed before the plugin answered.
    #[error("plugin {plugin} did not answer within {}ms", deadline.as_millis())]
    DeadlineExceeded {
        /// The plugin.
        plugin: String,
        /// The budget it had.
        deadline: Duration,
    },
    /// The plugin could not be reached.
    #[error("plugin {plugin} could not be reached: {reason}")]
    Unreachable {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The plugin failed (5xx) or answered something that is not protocol v1.
    #[error("plugin {plugin} failed: {message}")]
    PluginFailed {
        /// The plugin.
        plugin: String,
        /// Its status, when it answered.
        status: Option<u16>,
        /// What it said.
        message: String,
        /// Its error object, when it sent one.
        error: Option<Value>,
    },
    /// The plugin's answer grew past `--max-response-body`; reading stopped there.
    #[error("plugin {plugin} answered more than {limit} bytes (--max-response-body)")]
    PluginResponseTooLarge {
        /// The plugin.
        plugin: String,
        /// The limit.
        limit: usize,
    },
    /// The egress proxy refused a destination (docs/egress.md).
    #[error("{message}")]
    EgressDenied {
        /// Host, port, resolved address and the rule that refused.
        message: String,
        /// `{plugin, host, port, address, rule, grantable, grant}`.
        details: Value,
    },
    /// The egress proxy needs a plugin's credential (`Proxy-Authorization: Basic`).
    #[error("{0}")]
    ProxyAuthenticationRequired(String),
    /// A plugin already has `--egress-max-tunnels` tunnels open.
    #[error("plugin {plugin} already has {limit} egress tunnels open (--egress-max-tunnels)")]
    TooManyTunnels {
        /// The plugin.
        plugin: String,
        /// The limit.
        limit: usize,
    },
    /// An allowed egress destination could not be resolved or reached.
    #[error("{0}")]
    EgressUnreachable(String),
    /// An allowed egress destination did not answer in time.
    #[error("{0}")]
    EgressTimeout(String),
    /// The request head (target and headers) is larger than the proxy accepts.
    #[error("the request head is larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// No route.
    #[error("no such endpoint")]
    NotFound,
    /// Wrong method for the route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The gateway is not ready (directory not synced).
    #[error("{0}")]
    NotReady(String),
}

impl Error {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Config(_) | Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. }
            | Error::PermissionDenied { .. }
            | Error::EgressDenied { .. }
            | Error::PluginNotGranted { .. } => StatusCode::FORBIDDEN,
            Error::ProxyAuthenticationRequired(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Error::PluginNotFound(_) | Error::CapabilityNotFound { .. } | Error::NotFound => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::InvalidJson(_) | Error::SchemaViolation { .. } | Error::BadRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::Saturated { .. } | Error::TooManyTunnels { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::EgressUnreachable(_) => StatusCode::BAD_GATEWAY,
            Error::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::EgressTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::PluginDisabled(_)
            | Error::PluginNotReady { .. }
            | Error::CircuitOpen { .. }
            | Error::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Unreachable { .. }
            | Error::PluginFailed { .. }
            | Error::PluginResponseTooLarge { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable `error.code`; also the label errors are counted by.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Store(_) => "store",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden { .. } => "forbidden",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::PluginNotFound(_) => "plugin_not_found",
            Error::CapabilityNotFound { .. } => "capability_not_found",
            Error::PluginDisabled(_) => "plugin_disabled",
            Error::PluginNotReady { .. } => "plugin_not_ready",
            Error::PluginNotGranted { .. } => "plugin_not_granted",
            Error::InvalidJson(_) => "invalid_json",
            Error::SchemaViolation { .. } => "schema_violation",
            Error::BadRequest { code, .. } => code,
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::BodyTimeout { .. } => "body_timeout",
            Error::Saturated { .. } => "concurrency_limit",
            Error::CircuitOpen { .. } => "circuit_open",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Unreachable { .. } => "plugin_unreachable",
            Error::PluginFailed { .. } => "plugin_error",
            Error::PluginResponseTooLarge { .. } => "plugin_response_too_large",
            Error::EgressDenied { .. } => "egress_denied",
            Error::ProxyAuthenticationRequired(_) => "proxy_authentication_required",
            Error::TooManyTunnels { .. } => "egress_tunnel_limit",
            Error::EgressUnreachable(_) => "egress_unreachable",
            Error::EgressTimeout(_) => "egress_timeout",
            Error::HeadersTooLarge { .. } => "headers_too_large",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NotReady(_) => "not_ready",
        }
    }

    /// Same as [`Error::code`], under the name other Berth crates use.
    pub fn metric_label(&self) -> &'static str {
        self.code()
    }

    fn details(&self) -> Option<Value> {
        match self {
            Error::SchemaViolation { violations, .. } => Some(Value::Array(violations.clone())),
            Error::PluginFailed { status, error, .. } => {
                Some(json!({"pluginStatus": status, "pluginError": error}))
            }
            Error::PermissionDenied {
                target, capability, ..
            } => Some(json!({
                "plugin": bounded(target, QUOTE_LIMIT),
                "capability": bounded(capability, QUOTE_LIMIT),
            })),
            Error::PluginNotGranted { plugin, .. } => {
                Some(json!({"plugin": plugin, "phase": "AwaitingApproval"}))
            }
            Error::EgressDenied { details, .. } => Some(details.clone()),
            Error::PluginResponseTooLarge { limit, .. } => Some(json!({ "limit": limit })),
            _ => None,
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let Some(details) = self.details() {
            error["details"] = details;
        }
        json!({ "error": error })
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::CircuitOpen { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Error::ProxyAuthenticationRequired(_) => {
                headers.insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"berth-egress\""),
                );
            }
            Error::Saturated { .. }
            | Error::TooManyTunnels { .. }
            | Error::PluginNotReady { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        response
    }
}

/// Most bytes of one piece of caller input an error quotes back; the rest is only counted.
pub(crate) const QUOTE_LIMIT: usize = 256;

/// Most bytes of a message that may contain caller input (a schema violation, a parser's
/// message): room for a quoted value and the rule it broke.
pub(crate) const MESSAGE_LIMIT: usize = 1024;

/// `text` itself when it has at most `limit` bytes; otherwise its longest prefix of at most
/// `limit` bytes that ends on a character boundary, followed by `…(N bytes)`.
pub(crate) fn bounded(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!("{}…({} bytes)", prefix(text, limit), text.len()))
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
fn prefix(text: &str, limit: usize) -> &str {
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A caller's string shown Debug-quoted (`"name"`), at most [`QUOTE_LIMIT`] bytes of it,
/// with `…(N bytes)` after the closing quote when it was cut.
pub(crate) struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = prefix(self.0, QUOTE_LIMIT);
        write!(f, "{head:?}")?;
        if head.len() < self.0.len() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// A JSON value the caller sent, as JSON text of at most about [`QUOTE_LIMIT`] bytes: a long
/// string keeps its quotes and is followed by `…(N bytes)` (its length); any other long value
/// is cut and followed by `…(N bytes)` (the length of its JSON text).
pub(crate) fn quote_json(value: &Value) -> String {
    if let Value::String(text) = value {
        let head = prefix(text, QUOTE_LIMIT);
        let quoted = serde_json::to_string(head).unwrap_or_default();
        return if head.len() < text.len() {
            format!("{quoted}…({} bytes)", text.len())
        } else {
            quoted
        };
    }
    let mut out = HeadWriter::default();
    // Writing to HeadWriter cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut out, value);
    if out.total <= QUOTE_LIMIT {
        return String::from_utf8_lossy(&out.head).into_owned();
    }
    // The kept head may end inside a multi-byte character: keep its valid prefix.
    let head = match std::str::from_utf8(&out.head) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&out.head[..e.valid_up_to()]).unwrap_or_default(),
    };
    format!("{}…({} bytes)", prefix(head, QUOTE_LIMIT), out.total)
}

/// Keeps the first [`QUOTE_LIMIT`] bytes written and counts the rest, so quoting a large
/// value costs no more memory than quoting a small one.
#[derive(Default)]
struct HeadWriter {
    head: Vec<u8>,
    total: usize,
}

impl std::io::Write for HeadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = QUOTE_LIMIT.saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..room.min(buf.len())]);
        self.total += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One schema violation as an error detail, `{instancePath, schemaPath, message}`, where the
/// message quotes the offending value through [`quote_json`] instead of whole, and the
/// instance path (made of the caller's keys) is bounded too.
pub(crate) fn schema_violation_detail(error: &jsonschema::ValidationError<'_>) -> Value {
    let message = error.masked_with(quote_json(error.instance())).to_string();
    json!({
        "instancePath": bounded(&error.instance_path().to_string(), QUOTE_LIMIT),
        "schemaPath": error.schema_path().to_string(),
        "message": bounded(&message, MESSAGE_LIMIT),
    })
}

/// Result with the gateway's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole() {
        assert_eq!(bounded("calc", QUOTE_LIMIT), "calc");
        assert_eq!(Quoted("calc").to_string(), "\"calc\"");
        assert_eq!(quote_json(&json!("x")), "\"x\"");
        assert_eq!(quote_json(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn long_input_is_cut_on_a_char_boundary_and_its_size_is_given() {
        let long = "é".repeat(1000);
        let cut = bounded(&long, QUOTE_LIMIT);
        assert!(cut.starts_with(&"é".repeat(QUOTE_LIMIT / 2)));
        assert!(cut.ends_with("…(2000 bytes)"), "{cut}");
        assert_eq!(
            Quoted(&"a".repeat(300)).to_string(),
            format!("\"{}\"…(300 bytes)", "a".repeat(QUOTE_LIMIT))
        );
        // A three-byte character straddling the limit is left out, not split.
        let odd = format!("{}{}", "a".repeat(QUOTE_LIMIT - 1), "€".repeat(10));
        assert_eq!(prefix(&odd, QUOTE_LIMIT), "a".repeat(QUOTE_LIMIT - 1));
        let quoted = quote_json(&json!({"list": vec!["€"; 500]}));
        assert!(quoted.len() < QUOTE_LIMIT + 32, "{quoted}");
        assert!(quoted.starts_with("{\"list\":[\"€\""), "{quoted}");
        assert!(quoted.ends_with(" bytes)"), "{quoted}");
    }

    #[test]
    fn names_from_the_path_are_bounded_in_messages_and_details() {
        let name = "p".repeat(100_000);
        for error in [
            Error::PluginNotFound(name.clone()),
            Error::CapabilityNotFound {
                plugin: "calc".into(),
                capability: name.clone(),
            },
            Error::Forbidden {
                needed: format!("invoke:{name}"),
            },
            Error::PermissionDenied {
                caller: "a".into(),
                target: name.clone(),
                capability: name.clone(),
            },
            Error::InvalidJson(name.clone()),
            Error::BadRequest {
                code: "unknown_hook",
                message: name.clone(),
            },
        ] {
            let body = error.body().to_string();
            assert!(body.len() < 2048, "{}: {} bytes", error.code(), body.len());
            assert!(body.contains(" bytes)"), "{body}");
        }
    }
}
