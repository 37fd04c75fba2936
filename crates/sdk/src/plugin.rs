//! The plugin builder, its router and its server.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::context::Context;
use crate::error::Error;
use crate::logging::JsonLines;
use crate::protocol::{
    DEFAULT_PORT, Describe, DescribedCapability, DescribedHook, ENV_LOG, ENV_PORT, HEADER_CALLER,
    HEADER_DEADLINE_MS, HEADER_REQUEST_ID, HookAction, HookMode, HookRequest, PATH_DESCRIBE,
    PATH_HEALTHZ, hook_path, invoke_path,
};

/// Largest request body accepted unless [`Plugin::max_body_bytes`] says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long in-flight requests may run after SIGTERM unless [`Plugin::drain_timeout`] says otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Erased = Arc<dyn Fn(Bytes, Context) -> BoxFuture<Result<Response, Error>> + Send + Sync>;

struct Hook {
    mode: HookMode,
    handler: Erased,
}

/// A plugin: its name, version, capabilities and hooks, served as protocol v1.
///
/// Build it with [`Plugin::new`], register handlers, then [`run`](Plugin::run) it from
/// `main` or take its [`router`](Plugin::router) for tests.
pub struct Plugin {
    name: String,
    version: String,
    capabilities: Vec<(String, Erased)>,
    hooks: Vec<(String, Hook)>,
    max_body_bytes: usize,
    drain_timeout: Duration,
}

impl Plugin {
    /// A plugin with no capabilities or hooks yet. `name` and `version` must equal the
    /// manifest's `metadata.name` and `spec.version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            capabilities: Vec::new(),
            hooks: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Serves `POST /v1/invoke/{name}`: the body is parsed as `I` (400 when it is not JSON
    /// or not an `I`), `handler` runs, and its `O` is answered as JSON with 200.
    ///
    /// # Panics
    ///
    /// When `name` is already registered: that is a bug in the plugin, found by its first test.
    pub fn capability<I, O, F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Error>> + Send + 'static,
    {
        let name = name.into();
        assert!(
            !self.capabilities.iter().any(|(n, _)| *n == name),
            "capability {name:?} is registered twice"
        );
        let handler = Arc::new(handler);
        let erased: Erased = Arc::new(move |body: Bytes, ctx: Context| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let input: I = parse_json(&body)?;
                let output = handler(input, ctx).await?;
                let json = serde_json::to_vec(&output)
                    .map_err(|e| Error::internal(format!("could not encode the output: {e}")))?;
                Ok(json_response(StatusCode::OK, json))
            })
        });
        self.capabilities.push((name, erased));
        self
    }

    /// Serves `POST /v1/hooks/{name}`: the body's `event` is parsed as `E`, `handler` runs.
    /// A [`HookMode::Filter`] hook answers the returned [`HookAction`]; a
    /// [`HookMode::Observe`] hook answers 204 and its action is ignored.
    ///
    /// # Panics
    ///
    /// When `name` is already registered.
    pub fn hook<E, F, Fut>(mut self, name: impl Into<String>, mode: HookMode, handler: F) -> Self
    where
        E: DeserializeOwned + Send + 'static,
        F: Fn(E, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HookAction, Error>> + Send + 'static,
    {
        let name = name.into();
        assert!(
            !self.hooks.iter().any(|(n, _)| *n == name),
            "hook {name:?} is registered twice"
        );
        let handler = Arc::new(handler);
        let erased: Erased = Arc::new(move |body: Bytes, ctx: Context| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let request: HookRequest<Value> = parse_json(&body)?;
                if !request.event.is_object() {
                    return Err(Error::invalid_input(format!(
                        "the hook envelope's event must be a JSON object, got {}",
                        json_kind(&request.event)
                    )));
                }
                let event: E = serde_json::from_value(request.event)
                    .map_err(|e| Error::invalid_input(format!("the event does not fit: {e}")))?;
                let action = handler(event, ctx).await?;
                Ok(match mode {
                    HookMode::Observe => StatusCode::NO_CONTENT.into_response(),
                    HookMode::Filter => {
                        let json = serde_json::to_vec(&action).map_err(|e| {
                            Error::internal(format!("could not encode the hook action: {e}"))
                        })?;
                        json_response(StatusCode::OK, json)
                    }
                })
            })
        });
        self.hooks.push((
            name,
            Hook {
                mode,
                handler: erased,
            },
        ));
        self
    }

    /// Largest request body accepted; larger ones get 413 `payload_too_large`.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// How long requests in flight may still run after SIGTERM before the server exits anyway.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// What `GET /v1/describe` answers: everything registered, in registration order.
    pub fn describe(&self) -> Describe {
        Describe {
            name: self.name.clone(),
            version: self.version.clone(),
            capabilities: self
                .capabilities
                .iter()
                .map(|(name, _)| DescribedCapability { name: name.clone() })
                .collect(),
            hooks: self
                .hooks
                .iter()
                .map(|(name, hook)| DescribedHook {
                    name: name.clone(),
                    mode: hook.mode,
                })
                .collect(),
        }
    }

    /// The protocol v1 routes, ready for `axum::serve` or `tower::ServiceExt::oneshot`.
    pub fn router(self) -> Router {
        let describe = self.describe();
        let state = Arc::new(Shared {
            describe,
            capabilities: self.capabilities.into_iter().collect(),
            hooks: self.hooks.into_iter().collect(),
            max_body_bytes: self.max_body_bytes,
        });
        Router::new()
            .route(PATH_HEALTHZ, get(healthz))
            .route(PATH_DESCRIBE, get(describe_route))
            .route(&invoke_path("{capability}"), post(invoke_route))
            .route(&hook_path("{hook}"), post(hook_route))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn(echo_request_id))
            .with_state(state)
    }

    /// Serves on `0.0.0.0:$BERTH_PORT` (8080 when unset) until SIGTERM or Ctrl-C, then lets
    /// requests in flight finish (at most [`Plugin::drain_timeout`]) and returns.
    pub async fn serve(self) -> std::io::Result<()> {
        let port = port_from_env()?;
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await?;
        tracing::info!(
            plugin = %self.name,
            version = %self.version,
            port,
            "listening"
        );
        self.serve_with_shutdown(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` completes, then drains like [`Plugin::serve`].
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let drain = self.drain_timeout;
        let (begun_tx, begun_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, self.router()).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = begun_tx.send(());
        });
        let server = server.into_future();
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                tracing::info!("stopped");
                result
            }
            () = async {
                if begun_rx.await.is_ok() {
                    tokio::time::sleep(drain).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(drain_ms = drain.as_millis() as u64, "requests still in flight after the drain timeout; exiting anyway");
                Ok(())
            }
        }
    }

    /// The whole `main` of a plugin: sets up JSON logs, starts a runtime sized for a small
    /// container, serves, and turns the outcome into an exit code.
    pub fn run(self) -> ExitCode {
        init_logging();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            // Plugins run under a pids limit: keep the blocking pool small.
            .max_blocking_threads(4)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "could not start the async runtime");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(self.serve()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    }
}

/// Installs the protocol's JSON-lines log subscriber on stdout (see [`JsonLines`]),
/// filtered by `BERTH_LOG` or `RUST_LOG` (default `info`). Does nothing when a subscriber
/// is already set.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var(ENV_LOG)
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(JsonLines::new(std::io::stdout))
        .try_init();
}

fn port_from_env() -> std::io::Result<u16> {
    match std::env::var(ENV_PORT) {
        Err(_) => Ok(DEFAULT_PORT),
        Ok(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{ENV_PORT}={v:?} is not a port number (use 1-65535, e.g. 8080)"),
                )
            }),
    }
}

/// Resolves on SIGTERM (what Docker and Kubernetes send) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

tokio::task_local! {
    /// The `Berth-Request-Id` of the request this task serves, for log lines: spans can be
    /// filtered out by `BERTH_LOG`, the request id must not be.
    pub(crate) static REQUEST_ID: Option<String>;
}

struct Shared {
    describe: Describe,
    capabilities: HashMap<String, Erased>,
    hooks: HashMap<String, Hook>,
    max_body_bytes: usize,
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

async fn describe_route(State(state): State<Arc<Shared>>) -> Response {
    axum::Json(&state.describe).into_response()
}

async fn invoke_route(
    State(state): State<Arc<Shared>>,
    Path(capability): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let handler = state.capabilities.get(&capability).cloned();
    let span = tracing::info_span!(
        "invoke",
        capability = %capability,
        request_id = header_str(&headers, HEADER_REQUEST_ID).unwrap_or(""),
        caller = header_str(&headers, HEADER_CALLER).unwrap_or(""),
    );
    let handler = handler.ok_or_else(|| {
        Error::not_found(
            "unknown_capability",
            format!(
                "this plugin has no capability {capability:?}; GET /v1/describe lists the ones it has"
            ),
        )
    });
    let request_id = header_str(&headers, HEADER_REQUEST_ID).map(str::to_owned);
    let work = dispatch(&state, handler, headers, body).instrument(span);
    REQUEST_ID.scope(request_id, work).await
}

async fn hook_route(
    State(state): State<Arc<Shared>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let handler = state.hooks.get(&hook).map(|h| Arc::clone(&h.handler));
    let span = tracing::info_span!(
        "hook",
        hook = %hook,
        request_id = header_str(&headers, HEADER_REQUEST_ID).unwrap_or(""),
        caller = header_str(&headers, HEADER_CALLER).unwrap_or(""),
    );
    let handler = handler.ok_or_else(|| {
        Error::not_found(
            "unknown_hook",
            format!(
                "this plugin does not subscribe to hook {hook:?}; GET /v1/describe lists its hooks"
            ),
        )
    });
    let request_id = header_str(&headers, HEADER_REQUEST_ID).map(str::to_owned);
    let work = dispatch(&state, handler, headers, body).instrument(span);
    REQUEST_ID.scope(request_id, work).await
}

/// Reads the body, applies the deadline, runs the handler and logs the outcome.
async fn dispatch(
    state: &Shared,
    handler: Result<Erased, Error>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        let handler = handler?;
        let budget = deadline_budget(&headers)?;
        if budget == Some(Duration::ZERO) {
            // Already expired: the caller has stopped listening, so nothing runs.
            return Err(Error::deadline_exceeded(0));
        }
        let ctx = Context {
            request_id: header_str(&headers, HEADER_REQUEST_ID).map(str::to_owned),
            caller: header_str(&headers, HEADER_CALLER).map(str::to_owned),
            deadline: budget.and_then(|b| started.checked_add(b)),
        };
        let work = async {
            let bytes = read_body(body, state.max_body_bytes).await?;
            handler(bytes, ctx).await
        };
        match budget {
            None => work.await,
            // Dropping the handler's future on expiry is the cancellation.
            Some(budget) => match tokio::time::timeout(budget, work).await {
                Ok(r) => r,
                Err(_) => Err(Error::deadline_exceeded(budget.as_millis() as u64)),
            },
        }
    }
    .await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(response) => {
            tracing::info!(status = response.status().as_u16(), elapsed_ms, "answered");
            response
        }
        Err(error) => {
            if error.status().is_server_error() {
                tracing::warn!(
                    status = error.status().as_u16(),
                    code = error.code(),
                    error = error.message(),
                    elapsed_ms,
                    "failed"
                );
            } else {
                tracing::info!(
                    status = error.status().as_u16(),
                    code = error.code(),
                    elapsed_ms,
                    "refused"
                );
            }
            error.into_response()
        }
    }
}

/// `Berth-Deadline-Ms` as a budget: absent → none; optional surrounding spaces around one or
/// more ASCII digits; digits too large for a `u64` → none (no deadline beyond the runtime's);
/// anything else, or the header more than once → 400 `bad_request`.
pub(crate) fn deadline_budget(headers: &HeaderMap) -> Result<Option<Duration>, Error> {
    let mut values = headers.get_all(HEADER_DEADLINE_MS).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the Berth-Deadline-Ms header is sent more than once; send it once",
        ));
    }
    let digits = std::str::from_utf8(value.as_bytes())
        .ok()
        .map(|v| v.trim_matches([' ', '\t']))
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Error::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "the Berth-Deadline-Ms header must be a whole number of milliseconds (digits only, e.g. 5000), got {value:?}"
                ),
            )
        })?;
    // Only overflow can fail here: every byte is a digit.
    Ok(digits.parse::<u64>().ok().map(Duration::from_millis))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than this plugin's limit of {limit} bytes"),
        )),
        Err(e) => Err(Error::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("could not read the request body: {e}"),
        )),
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // Syntax first, so a broken body is `malformed_json` even when `T` would have
    // refused an early field before the parser reached the break.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the request body is not valid JSON: {e}"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Error::invalid_input(format!("the input does not fit: {e}")),
            Category::Syntax | Category::Eof | Category::Io => Error::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            ),
        }
    })
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_response(status: StatusCode, json: Vec<u8>) -> Response {
    let mut response = (status, json).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Every answer, from any route or fallback, carries the request's `Berth-Request-Id`.
async fn echo_request_id(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request.headers().get(HEADER_REQUEST_ID).cloned();
    let mut response = next.run(request).await;
    if let Some(id) = id {
        response.headers_mut().insert(HEADER_REQUEST_ID, id);
    }
    response
}

async fn not_found() -> Response {
    Error::not_found(
        "not_found",
        "no such endpoint; protocol v1 serves /healthz, /v1/describe, /v1/invoke/{capability} and /v1/hooks/{hook}",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "wrong method: /healthz and /v1/describe take GET, /v1/invoke and /v1/hooks take POST",
    )
    .into_response()
}
