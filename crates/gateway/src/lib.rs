//! Berth's gateway: the only way into a plugin.
//!
//! It routes invocations and hook events to plugins over HTTP (plugin protocol v1), enforces
//! bearer-token scopes, inter-plugin grants, JSON Schemas, body limits, per-plugin
//! concurrency limits, deadlines, circuit breaking and retries of idempotent capabilities,
//! exports Prometheus metrics and writes a hash-chained audit log. It finds plugins through
//! the [`PluginDirectory`] trait and knows nothing of Docker or Kubernetes.
//!
//! [`router`] builds the HTTP API from a [`Gateway`]; [`serve`] runs it with graceful
//! shutdown; [`Gateway::from_config`] wires everything from a [`Config`]. With
//! [`Gateway::from_config_pushed`] a supervisor in another process pushes the directory
//! ([`SnapshotWire`]) and its observations ([`ObservationsWire`]) over the admin endpoints.

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

pub mod admin;
pub mod audit;
pub mod auth;
pub mod breaker;
pub mod config;
pub mod directory;
pub mod egress;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
pub mod hooks;
mod invoke;
pub mod metrics;
mod standby;
pub mod tiers;
pub mod upstream;
pub mod usage;

pub use audit::{AuditSink, AuditWriter, Auditor, StdoutSink, StoreSink};
pub use auth::{Principal, Scope, TokenStore};
pub use berth_contract::wire;
pub use berth_contract::{
    DirectorySnapshot, Endpoint, PluginDirectory, PluginEntry, StaticDirectory,
};
pub use config::{AuditSinkKind, Config, EgressConfig};
pub use egress::{EgressProxy, EgressSettings};
pub use error::{Error, Result};
pub use gateway::Gateway;
pub use invoke::{ERROR_SOURCE, SERVER_TIMING};
pub use metrics::Metrics;
pub use wire::{
    ColdStartWire, EntryWire, ObservationsWire, PushAnswerWire, RestartWire, SnapshotWire,
    UsageWire,
};

/// The gateway's HTTP API.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/plugins/{name}", get(show_plugin))
        .route(
            "/v1/plugins/{name}/invoke/{capability}",
            post(invoke::invoke),
        )
        .route("/v1/hooks/{hook}", post(hooks::publish))
        .route("/v1/admin/directory", put(admin::put_directory))
        .route("/v1/admin/observations", post(admin::post_observations))
        .route("/v1/admin/probe", post(admin::post_probe))
        .route("/v1/admin/usage", get(usage::get_usage))
        .route("/v1/admin/benchmarks", post(admin::post_benchmark))
        .route("/v1/admin/standby", get(standby::get_activity))
        .route("/v1/admin/standby/pause", post(standby::post_pause))
        .route("/v1/admin/standby/awake", post(standby::post_awake))
        .route("/v1/admin/standby/wakes", get(standby::get_wakes))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .with_state(gateway)
}

/// Serves `router(gateway)` on `listener` until `shutdown` resolves, then stops accepting,
/// lets in-flight requests finish (for at most `grace`), writes the last invocation summary
/// and flushes the audit log. Connections are HTTP/1.1, bounded by `--max-connections`
/// and `--header-read-timeout`. With `--egress-listen`, the egress proxy runs beside it on
/// its own listener and stops (closing its tunnels) on the same signal.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    grace: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let egress = match gateway.egress_config().listen {
        Some(addr) => {
            let settings = EgressSettings::from_config(gateway.egress_config())?;
            let egress_listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %egress_listener.local_addr()?, "egress proxy listening");
            let proxy = EgressProxy::new(gateway.clone(), settings);
            let mut stop = stop_rx;
            Some(tokio::spawn(proxy.serve(egress_listener, async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })))
        }
        None => None,
    };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = gateway.clone();
    let signal = async move {
        shutdown.await;
        // Long polls (the supervisor's wake poll) answer now rather than hold the drain.
        stopping.inner.standby.stop();
        stop_tx.send_replace(true);
        let _ = started_tx.send(());
    };
    let server = serve_connections(listener, router(gateway.clone()), &gateway, signal);
    let grace_expired = async move {
        if started_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        result = server => result,
        () = grace_expired => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "shutdown grace expired; dropping in-flight requests");
            Ok(())
        }
    };
    if let Some(proxy) = egress {
        // Already stopped on the signal; aborting also covers the API server failing.
        proxy.abort();
    }
    outcome?;
    gateway.shutdown().await;
    Ok(())
}

/// Accepts HTTP/1.1 connections until `signal`, at most `--max-connections` at once (the
/// next connection waits in the listen backlog until a slot frees), each with
/// `--header-read-timeout` to send a request head; then stops accepting and waits for the
/// open connections to finish their requests.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    gateway: &Gateway,
    signal: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let (header_read_timeout, max_connections) = gateway.connection_limits();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
            () = &mut signal => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        // Out of file descriptors, most likely: give connections time to close.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = tcp.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout); nothing to answer.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(gateway): State<Gateway>) -> Response {
    let snapshot = gateway.snapshot();
    if !snapshot.synced {
        let why = if gateway.pushed_directory().is_some() {
            "no plugin directory has been pushed yet (PUT /v1/admin/directory)"
        } else {
            "the plugin directory has not loaded yet"
        };
        return Error::NotReady(why.into()).into_response();
    }
    let ready = snapshot.plugins().filter(|e| e.is_ready()).count();
    Json(json!({"status": "ready", "plugins": snapshot.len(), "readyPlugins": ready}))
        .into_response()
}

async fn metrics_text(State(gateway): State<Gateway>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway.metrics().render(),
    )
        .into_response()
}

fn visible(principal: &Principal, snapshot: &DirectorySnapshot, name: &str) -> bool {
    principal.may_invoke(name)
        || principal
            .plugin
            .as_deref()
            .and_then(|p| snapshot.get(p))
            .is_some_and(|caller| caller.granted_calls.iter().any(|c| c.name == name))
}

fn describe(gateway: &Gateway, entry: &PluginEntry, admin: bool) -> Value {
    let spec = &entry.plugin.spec;
    let runtime = gateway.existing_runtime(entry.name());
    let resources = spec.resources.resolve().ok();
    let mut out = json!({
        "name": entry.name(),
        "version": spec.version,
        "description": spec.description,
        "enabled": spec.enabled,
        "phase": entry.phase,
        "ready": entry.is_ready(),
        "revision": entry.revision,
        "riskScore": entry.risk_score,
        "capabilities": spec.capabilities.iter().map(|c| json!({
            "name": c.name,
            "description": c.description,
            "idempotent": c.idempotent,
            "input": c.input,
            "output": c.output,
            "examples": c.examples,
        })).collect::<Vec<_>>(),
        "hooks": spec.hooks.iter().map(|h| json!({
            "name": h.name, "mode": h.mode, "priority": h.priority,
        })).collect::<Vec<_>>(),
        "timeoutMs": resources.map(|r| r.timeout.as_millis() as u64),
        "maxConcurrency": resources.map(|r| r.max_concurrency),
        "cpuMillis": resources.map(|r| r.cpu_millis),
        "memoryBytes": resources.map(|r| r.memory_bytes),
        "circuit": runtime.as_ref().map_or("closed", |rt| rt.breaker.state(std::time::Instant::now()).as_str()),
        "inflight": runtime.as_ref().map_or(0, |rt| rt.max_concurrency as usize - rt.limiter.available_permits()),
        "liveTier": gateway.live_tier(entry.name()),
    });
    if admin {
        out["endpoints"] = entry
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .into();
    }
    out
}

async fn list_plugins(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let snapshot = gateway.snapshot();
    let principal = match gateway.authenticate(&headers, &snapshot, "/v1/plugins") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let plugins: Vec<Value> = snapshot
        .plugins()
        .filter(|e| visible(&principal, &snapshot, e.name()))
        .map(|e| describe(&gateway, e, principal.is_admin()))
        .collect();
    Json(json!({ "plugins": plugins })).into_response()
}

async fn show_plugin(
    State(gateway): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let snapshot = gateway.snapshot();
    let principal = match gateway.authenticate(&headers, &snapshot, "/v1/plugins/{name}") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !visible(&principal, &snapshot, &name) {
        let label = if snapshot.get(&name).is_some() {
            name.as_str()
        } else {
            ""
        };
        return gateway
            .deny(
                &principal,
                label,
                "scope",
                Error::Forbidden {
                    needed: format!("invoke:{name}"),
                },
                None,
            )
            .into_response();
    }
    match snapshot.get(&name) {
        Some(entry) => Json(describe(&gateway, entry, principal.is_admin())).into_response(),
        None => Error::PluginNotFound(name).into_response(),
    }
}

/// Everything [`Gateway::from_config`] started; keep it until shutdown.
pub struct Running {
    /// The gateway.
    pub gateway: Gateway,
    /// The directory the gateway routes from.
    pub directory: Arc<dyn PluginDirectory>,
    /// The audit writer; finish it after the gateway is dropped.
    pub audit_writer: AuditWriter,
}

impl Gateway {
    /// Builds a gateway from `config`: the static directory from `--plugins` and
    /// `--endpoint`, tokens from the tokens file and `BERTH_TOKENS`, the audit sinks.
    pub fn from_config(config: &Config) -> Result<Running> {
        let directory = Arc::new(directory::load(
            &config.plugins,
            &config.endpoints,
            config.auto_approve_tier,
        )?);
        Self::from_config_with(config, directory)
    }

    /// Like [`Gateway::from_config`], over a directory a backend supplies (the Kubernetes
    /// directory, the Docker backend); `--plugins` and `--endpoint` are not read.
    pub fn from_config_with(
        config: &Config,
        directory: Arc<dyn PluginDirectory>,
    ) -> Result<Running> {
        Self::start(config, directory, None)
    }

    /// Like [`Gateway::from_config`], over an empty directory that a supervisor fills
    /// through `PUT /v1/admin/directory` (`--backend pushed`); `/readyz` answers 503 until
    /// the first push. `--plugins` and `--endpoint` are not read.
    pub fn from_config_pushed(config: &Config) -> Result<Running> {
        let directory = Arc::new(StaticDirectory::unsynced());
        Self::start(config, directory.clone(), Some(directory))
    }

    fn start(
        config: &Config,
        directory: Arc<dyn PluginDirectory>,
        pushed: Option<Arc<StaticDirectory>>,
    ) -> Result<Running> {
        let mut tokens = TokenStore::new();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("cannot read tokens file {}: {e}", path.display()))
            })?;
            tokens.extend_from(&text, &path.display().to_string())?;
        }
        if let Some(text) = &config.tokens {
            tokens.extend_from(text, "BERTH_TOKENS")?;
        }
        let metrics = Metrics::new();
        let mut sinks: Vec<Arc<dyn AuditSink>> = Vec::new();
        let mut usage_store = None;
        for kind in &config.audit_sinks {
            match kind {
                AuditSinkKind::Sqlite => {
                    let store = Arc::new(berth_store::Store::open(&config.store)?);
                    usage_store = Some(store.clone());
                    sinks.push(Arc::new(StoreSink::new(store)));
                }
                AuditSinkKind::Stdout => sinks.push(Arc::new(StdoutSink::new())),
            }
        }
        let (auditor, audit_writer) = Auditor::start_bounded(
            sinks,
            metrics.clone(),
            config.audit_queue,
            config.audit_security_queue,
        );
        let gateway = match pushed {
            Some(pushed) => Gateway::new_pushed(config, pushed, tokens, metrics, auditor),
            None => Gateway::new(config, directory.clone(), tokens, metrics, auditor),
        };
        // Usage receipts go where the audit log goes in local mode: the same store file.
        if let Some(store) = usage_store {
            gateway.set_usage_store(store);
        }
        Ok(Running {
            gateway,
            directory,
            audit_writer,
        })
    }
}
