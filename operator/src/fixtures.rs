//! Test helpers: a `Context` on a mocked API server, and a verifier that answers the calls a
//! reconcile makes, in order, asserting each one.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{Plugin, PluginGrant};
use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use crate::audit::MemoryAudit;
use crate::controller::{Backoff, Context};
use crate::metrics::Metrics;
use crate::render::RenderOptions;
use crate::supply_chain::SupplyChain;

/// The fixed "now" of every scenario.
pub const NOW: &str = "2026-03-01T12:00:00Z";

/// The fixed clock.
pub fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// How the mocked API server answers one call.
pub enum Reply {
    /// 200 with this body.
    Json(Value),
    /// 200 with the request's own body (what server-side apply of a fresh object returns).
    Echo,
    /// An API error with this status code.
    Error(u16),
    /// 200 with the request's `status` merged into this object (for `patch_status`).
    WithStatus(Value),
}

/// One call the reconcile is expected to make next.
pub struct Expect {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// Parameters the query must contain.
    pub query_contains: &'static [&'static str],
    /// The answer.
    pub reply: Reply,
}

impl Expect {
    /// A call answered with `reply`.
    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path: path.into(),
            query_contains: &[],
            reply,
        }
    }

    /// A server-side apply (PATCH with the operator's field manager, forced).
    pub fn apply(path: impl Into<String>) -> Self {
        Self {
            method: Method::PATCH,
            path: path.into(),
            query_contains: &["fieldManager=berth-operator", "force=true"],
            reply: Reply::Echo,
        }
    }

    /// An Event published in `namespace`.
    pub fn event(namespace: &str) -> Self {
        Self::new(
            Method::POST,
            format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            Reply::Echo,
        )
    }
}

/// A call the reconcile made, as the verifier saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// The JSON body, `Null` when empty.
    pub body: Value,
}

/// Answers the mocked API server's calls.
pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

impl ApiServerVerifier {
    /// Answers exactly `expected`, in order, asserting method, path and query of each; returns
    /// what it saw. A missing call makes the returned task fail; an extra call is never
    /// answered, so the reconcile under test times out.
    pub fn run(self, expected: Vec<Expect>) -> JoinHandle<Vec<Seen>> {
        self.run_then_quiet(expected, Duration::ZERO)
    }

    /// Like [`Self::run`], and then fails the returned task if any further call arrives
    /// within `quiet`.
    pub fn run_then_quiet(self, expected: Vec<Expect>, quiet: Duration) -> JoinHandle<Vec<Seen>> {
        let mut handle = self.0;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for (i, expect) in expected.into_iter().enumerate() {
                let (request, send) =
                    tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                        .await
                        .unwrap_or_else(|_| {
                            panic!(
                                "call {i} ({} {}) was never made",
                                expect.method, expect.path
                            )
                        })
                        .unwrap_or_else(|| {
                            panic!(
                                "client dropped before call {i} ({} {})",
                                expect.method, expect.path
                            )
                        });
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                assert_eq!(
                    (&method, path.as_str()),
                    (&expect.method, expect.path.as_str()),
                    "call {i}: unexpected request (query {query:?})"
                );
                for q in expect.query_contains {
                    assert!(
                        query.split('&').any(|p| p == *q),
                        "call {i} {path}: query {query:?} lacks {q:?}"
                    );
                }
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("request bodies are JSON")
                };
                let response = match expect.reply {
                    Reply::Json(v) => ok(&v),
                    Reply::Echo => ok(&body),
                    Reply::WithStatus(mut object) => {
                        object["status"] = body["status"].clone();
                        ok(&object)
                    }
                    Reply::Error(code) => error(code),
                };
                send.send_response(response);
                seen.push(Seen { method, path, body });
            }
            if !quiet.is_zero()
                && let Ok(Some((request, _))) =
                    tokio::time::timeout(quiet, handle.next_request()).await
            {
                panic!(
                    "unexpected call after the expected ones: {} {}",
                    request.method(),
                    request.uri().path()
                );
            }
            seen
        })
    }
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn error(code: u16) -> Response<Body> {
    let reason = match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        _ => "InternalError",
    };
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": format!("mocked {code}"), "reason": reason, "code": code
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

/// A client on a mocked API server, and the verifier that answers it.
pub fn mock_client() -> (Client, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServerVerifier(handle))
}

/// Caches filled by hand.
pub struct Caches {
    /// Writes the Plugin cache.
    pub plugins: Writer<Plugin>,
    /// Writes the PluginGrant cache.
    pub grants: Writer<PluginGrant>,
}

impl Caches {
    /// Lists `plugins` and `grants` into the caches, marking them ready.
    pub fn fill(&mut self, plugins: &[&Plugin], grants: &[&PluginGrant]) {
        self.plugins.apply_watcher_event(&watcher::Event::Init);
        for p in plugins {
            self.plugins
                .apply_watcher_event(&watcher::Event::InitApply((*p).clone()));
        }
        self.plugins.apply_watcher_event(&watcher::Event::InitDone);
        self.grants.apply_watcher_event(&watcher::Event::Init);
        for g in grants {
            self.grants
                .apply_watcher_event(&watcher::Event::InitApply((*g).clone()));
        }
        self.grants.apply_watcher_event(&watcher::Event::InitDone);
    }
}

impl Context {
    /// A context on a mocked API server with empty caches, a fixed clock and default options;
    /// digests are not resolved.
    pub fn test() -> (Arc<Self>, ApiServerVerifier, Caches) {
        let (ctx, verifier, caches, _) = Self::test_with(None, RenderOptions::default());
        (ctx, verifier, caches)
    }

    /// Like [`Self::test`], resolving and verifying images with `supply_chain` and rendering
    /// with `render`; audit records are kept in the returned [`MemoryAudit`].
    pub fn test_with(
        supply_chain: Option<Arc<SupplyChain>>,
        render: RenderOptions,
    ) -> (Arc<Self>, ApiServerVerifier, Caches, Arc<MemoryAudit>) {
        let (client, verifier) = mock_client();
        let (plugins, plugin_writer) = reflector::store();
        let (grants, grant_writer) = reflector::store();
        let audit = Arc::new(MemoryAudit::default());
        let mut ctx = Context::new(
            client,
            Arc::new(Metrics::new().unwrap()),
            berth_api::RiskTier::Low,
            render,
            plugins,
            grants,
            Some("test".into()),
        )
        .with_supply_chain(supply_chain)
        .with_audit(audit.clone());
        ctx.now = now;
        ctx.backoff = Backoff::default();
        (
            Arc::new(ctx),
            verifier,
            Caches {
                plugins: plugin_writer,
                grants: grant_writer,
            },
            audit,
        )
    }
}

/// Validates `objects` against the Kubernetes 1.33 schemas in strict mode with
/// `kubernetes-validate` (PyPI), as `tests/kubernetes_validate.rs` does for `berth render`.
/// Skipped, saying so, when the tool is missing, unless `CI` is set.
pub fn kubernetes_validate(objects: &[Value]) {
    let works = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut command = if works("kubernetes-validate", &[]) {
        std::process::Command::new("kubernetes-validate")
    } else if works("python3", &["-m", "kubernetes_validate"]) {
        let mut c = std::process::Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        c
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate is not installed (pip install kubernetes-validate) and CI is set"
        );
        eprintln!("SKIPPED: kubernetes-validate is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let path = dir.path().join(format!("object-{i}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(object).unwrap()).unwrap();
        files.push(path);
    }
    let output = command
        .args(["--strict", "--kubernetes-version", "1.33.0", "--quiet"])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && !report.contains("ERROR"),
        "kubernetes-validate rejected objects:\n{report}"
    );
}

impl crate::benchmark::BenchmarkContext {
    /// A benchmark context on a mocked API server with an empty Plugin cache, a fixed clock
    /// and default options.
    pub fn test() -> (Arc<Self>, ApiServerVerifier, Writer<Plugin>) {
        let (client, verifier) = mock_client();
        let (plugins, plugin_writer) = reflector::store();
        let mut ctx = Self::new(
            client,
            Arc::new(Metrics::new().unwrap()),
            plugins,
            crate::render::BenchOptions::default(),
            Some("test".into()),
        );
        ctx.now = now;
        (Arc::new(ctx), verifier, plugin_writer)
    }
}

/// Lists `plugins` into a Plugin cache, marking it ready.
pub fn fill_plugins(writer: &mut Writer<Plugin>, plugins: &[&Plugin]) {
    writer.apply_watcher_event(&watcher::Event::Init);
    for p in plugins {
        writer.apply_watcher_event(&watcher::Event::InitApply((*p).clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}
