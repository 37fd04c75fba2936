//! Real plugin servers and a real gateway on 127.0.0.1, and a small HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use base64::Engine;
use berth_api::{EgressRule, Plugin};
use berth_gateway::egress::{DenySet, EgressPolicy};
use berth_gateway::{
    AuditWriter, Auditor, Config, EgressProxy, EgressSettings, Endpoint, Gateway, Metrics,
    PluginEntry, Scope, StaticDirectory, StoreSink, TokenStore,
};
use berth_store::Store;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "admin-token";
pub const INVOKE_ALL: &str = "invoke-all-token";
pub const INVOKE_CALC: &str = "invoke-calc-token";
pub const HOOKS: &str = "hooks-token";

/// Serves `app` on an ephemeral loopback port.
pub async fn spawn_plugin(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A listener that accepts connections and drops them at once, like a crashing process.
pub async fn spawn_crashing_plugin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            drop(socket);
        }
    });
    addr
}

/// A plugin manifest from YAML `spec` lines, named `name`.
pub fn plugin(name: &str, spec: &str) -> Plugin {
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/berth/{name}:0.1.0\n  version: 0.1.0\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let plugin: Plugin = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let problems = berth_api::validate_plugin(&plugin);
    assert!(
        !problems.iter().any(|p| p.is_error()),
        "{problems:?}\n{yaml}"
    );
    plugin
}

/// A ready entry served at `addrs`.
pub fn entry(plugin: Plugin, addrs: &[SocketAddr]) -> PluginEntry {
    PluginEntry::new(plugin).with_endpoints(
        addrs
            .iter()
            .map(|a| Endpoint::parse(&format!("http://{a}")).unwrap())
            .collect(),
    )
}

/// A gateway on a real socket, with an in-memory audit store.
pub struct Harness {
    pub url: String,
    pub gateway: Gateway,
    pub directory: Arc<StaticDirectory>,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    shutdown: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    server: std::sync::Mutex<Option<JoinHandle<std::io::Result<()>>>>,
    writer: Option<AuditWriter>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Fast breaker and retry settings so tests do not wait long.
pub fn test_config() -> Config {
    Config {
        breaker_failures: 3,
        breaker_open_for: Duration::from_millis(200),
        retries: 2,
        retry_backoff: Duration::from_millis(1),
        hook_timeout: Duration::from_millis(500),
        max_body: 4096,
        audit_summary_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

pub fn tokens() -> TokenStore {
    let mut tokens = TokenStore::new();
    tokens.insert(ADMIN, "admin", vec![Scope::Admin]);
    tokens.insert(INVOKE_ALL, "ci", vec![Scope::InvokeAll]);
    tokens.insert(INVOKE_CALC, "viewer", vec![Scope::Invoke("calc".into())]);
    tokens.insert(HOOKS, "hook-publisher", vec![Scope::HooksAll]);
    tokens
}

impl Harness {
    pub async fn start(entries: Vec<PluginEntry>) -> Self {
        Self::with_config(entries, test_config()).await
    }

    pub async fn with_config(entries: Vec<PluginEntry>, config: Config) -> Self {
        Self::build(Arc::new(StaticDirectory::new(entries)), false, config).await
    }

    /// A gateway of `--backend pushed`: empty and not ready until the first push.
    pub async fn pushed() -> Self {
        Self::pushed_with_config(test_config()).await
    }

    /// [`Harness::pushed`] with `config`.
    pub async fn pushed_with_config(config: Config) -> Self {
        Self::build(Arc::new(StaticDirectory::unsynced()), true, config).await
    }

    async fn build(directory: Arc<StaticDirectory>, pushed: bool, config: Config) -> Self {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let metrics = Metrics::new();
        let (auditor, writer) = Auditor::start(
            vec![Arc::new(StoreSink::new(store.clone()))],
            metrics.clone(),
        );
        let gateway = if pushed {
            Gateway::new_pushed(
                &config,
                directory.clone(),
                tokens(),
                metrics.clone(),
                auditor,
            )
        } else {
            Gateway::new(
                &config,
                directory.clone(),
                tokens(),
                metrics.clone(),
                auditor,
            )
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(berth_gateway::serve(
            listener,
            gateway.clone(),
            config.shutdown_grace,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            url,
            gateway,
            directory,
            store,
            metrics,
            shutdown: std::sync::Mutex::new(Some(tx)),
            server: std::sync::Mutex::new(Some(server)),
            writer: Some(writer),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; `token` None sends no Authorization header.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            json,
        }
    }

    pub async fn invoke(&self, token: &str, plugin: &str, capability: &str, body: &str) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/plugins/{plugin}/invoke/{capability}"),
            Some(token),
            &[("content-type", "application/json")],
            body.to_owned(),
        )
        .await
    }

    pub async fn publish(&self, token: &str, hook: &str, event: &Value) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/hooks/{hook}"),
            Some(token),
            &[("content-type", "application/json")],
            serde_json::to_vec(&serde_json::json!({ "event": event })).unwrap(),
        )
        .await
    }

    /// `PUT /v1/admin/directory` with `snapshot` as the body.
    pub async fn push(&self, token: Option<&str>, snapshot: &Value) -> Reply {
        self.send(
            Method::PUT,
            "/v1/admin/directory",
            token,
            &[("content-type", "application/json")],
            serde_json::to_vec(snapshot).unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, &[], Bytes::new()).await
    }

    /// Waits for queued audit events to reach the store.
    pub async fn flush_audit(&self) {
        self.gateway.auditor().flush().await;
    }

    /// Tells the server to stop accepting and drain.
    pub fn begin_shutdown(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the server has drained and stopped.
    pub async fn wait_stopped(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.await.unwrap().unwrap();
        }
    }

    /// Stops the server (draining in-flight requests) and the audit writer.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.wait_stopped().await;
        let writer = self.writer.take();
        drop(self);
        if let Some(w) = writer {
            tokio::time::timeout(Duration::from_secs(5), w.finish())
                .await
                .expect("audit writer finishes once the gateway is gone");
        }
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics.render(), name, labels)
    }
}

/// Lints a metrics exposition with `promtool check metrics`; skipped (outside CI only)
/// when promtool is not installed.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (Debian package `prometheus`)"
        );
        eprintln!("promtool not installed; skipping outside CI");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed:\n{report}\n{text}");
    assert_eq!(report.trim(), "", "promtool complained:\n{report}");
}

/// The sum of the samples of `name` that have all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect(&self, status: StatusCode, code: &str) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        self
    }
}

/// What a test plugin saw.
#[derive(Clone, Default)]
pub struct Recorder {
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    pub headers: Arc<std::sync::Mutex<Vec<HeaderMap>>>,
}

impl Recorder {
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn record(&self, headers: &HeaderMap) -> usize {
        self.headers.lock().unwrap().push(headers.clone());
        self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        self.headers
            .lock()
            .unwrap()
            .last()
            .and_then(|h| h.get(name))
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A plugin whose capabilities answer `{"capability", "input"}`.
pub fn echo_plugin(recorder: Recorder) -> Router {
    use axum::extract::Path;
    use axum::routing::{get, post};
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/invoke/{capability}",
            post(
                move |Path(capability): Path<String>,
                      headers: HeaderMap,
                      axum::Json(input): axum::Json<Value>| {
                    let recorder = recorder.clone();
                    async move {
                        recorder.record(&headers);
                        axum::Json(serde_json::json!({"capability": capability, "input": input}))
                    }
                },
            ),
        )
}

/// A plugin that answers 500 while `failing` says so (or for its first `fail_first` calls).
pub fn flaky_plugin(
    recorder: Recorder,
    failing: Arc<std::sync::atomic::AtomicBool>,
    fail_first: usize,
) -> Router {
    use axum::routing::post;
    Router::new().route(
        "/v1/invoke/{capability}",
        post(move |headers: HeaderMap| {
            let recorder = recorder.clone();
            let failing = failing.clone();
            async move {
                let n = recorder.record(&headers);
                if n <= fail_first || failing.load(std::sync::atomic::Ordering::SeqCst) {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(
                            serde_json::json!({"error": {"code": "boom", "message": "it broke"}}),
                        ),
                    )
                } else {
                    (StatusCode::OK, axum::Json(serde_json::json!({"ok": n})))
                }
            }
        }),
    )
}

/// A plugin whose calls wait until `gate` gives a permit, after saying so on `entered`.
pub fn gated_plugin(
    recorder: Recorder,
    gate: Arc<tokio::sync::Semaphore>,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
) -> Router {
    use axum::routing::post;
    Router::new().route(
        "/v1/invoke/{capability}",
        post(move |headers: HeaderMap| {
            let recorder = recorder.clone();
            let gate = gate.clone();
            let entered = entered.clone();
            async move {
                recorder.record(&headers);
                let _ = entered.send(());
                let _permit = gate.acquire().await.unwrap();
                axum::Json(serde_json::json!({"released": true}))
            }
        }),
    )
}

pub const CALC_SPEC: &str = r#"capabilities:
  - name: evaluate
    idempotent: true
    input: {type: object, required: [expression], properties: {expression: {type: string, maxLength: 32}}}
  - name: record
    input: {type: object}
resources: {timeout: 2s, maxConcurrency: 4}
"#;

/// An egress rule granting `host` on `ports`.
pub fn host_rule(host: &str, ports: &[u16]) -> EgressRule {
    EgressRule {
        host: Some(host.into()),
        cidr: None,
        ports: ports.to_vec(),
    }
}

/// An egress rule granting `cidr` on `ports`.
pub fn cidr_rule(cidr: &str, ports: &[u16]) -> EgressRule {
    EgressRule {
        host: None,
        cidr: Some(cidr.into()),
        ports: ports.to_vec(),
    }
}

/// Proxy settings refusing `deny` (private networks allowed), with a short connect timeout.
pub fn proxy_settings(deny: DenySet) -> EgressSettings {
    EgressSettings {
        connect_timeout: Duration::from_secs(2),
        ..EgressSettings::new(EgressPolicy::new(deny, false))
    }
}

/// Serves `proxy` on an ephemeral loopback port.
pub async fn serve_proxy(proxy: EgressProxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    addr
}

/// A `Proxy-Authorization` value: HTTP Basic with `user` and `token`.
pub fn basic(user: &str, token: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    format!("Basic {encoded}")
}
