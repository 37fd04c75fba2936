//! The gateway's shared state and per-plugin runtime (limiter, breaker, compiled schemas).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use berth_store::AuditEvent;
use berth_store::audit::types;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::audit::{Auditor, Summarizer};
use berth_contract::credential::digest;

use crate::auth::{Principal, TokenStore, bearer};
use crate::breaker::CircuitBreaker;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::upstream::{self, HttpClient};
use crate::{Error, Result};
use berth_contract::{DirectorySnapshot, Endpoint, PluginDirectory, PluginEntry, StaticDirectory};

/// The limits and timings the request path uses, taken from [`Config`].
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_body: usize,
    pub max_response_body: usize,
    pub hook_timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

/// The gateway: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub limits: Limits,
    pub directory: Arc<dyn PluginDirectory>,
    /// Set with `--backend pushed`: the same directory as `directory`, which
    /// `PUT /v1/admin/directory` replaces.
    pub pushed: Option<Pushed>,
    pub tokens: TokenStore,
    pub metrics: Metrics,
    pub auditor: Auditor,
    /// The admin probe's client.
    pub client: HttpClient,
    /// Keep-alive connections to plugins, for invocations and hook deliveries.
    pub upstream: upstream::Upstream,
    pub egress: crate::config::EgressConfig,
    runtimes: RwLock<HashMap<String, Arc<PluginRuntime>>>,
    request_ids: AtomicU64,
    boot: u64,
    summarizer: Mutex<Summarizer>,
    pub usage: crate::usage::UsageBook,
    pub tiers: crate::tiers::LiveTiers,
    pub standby: crate::standby::Standby,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .background
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            task.abort();
        }
    }
}

/// The directory a supervisor pushes to, and the version of the last snapshot applied.
pub(crate) struct Pushed {
    pub directory: Arc<StaticDirectory>,
    /// Held from the version check to the replacement, so two pushes cannot interleave
    /// and leave the older one in force.
    pub applied: Mutex<Option<u64>>,
}

/// One plugin revision's runtime state.
pub(crate) struct PluginRuntime {
    pub revision: u64,
    pub limiter: Arc<Semaphore>,
    pub max_concurrency: u32,
    pub timeout: Duration,
    pub breaker: CircuitBreaker,
    validators: HashMap<String, std::result::Result<Arc<jsonschema::Validator>, String>>,
    next_endpoint: AtomicUsize,
    /// `berth_inflight_invocations{plugin}`, resolved once.
    pub inflight: prometheus::IntGauge,
    capability_metrics: HashMap<String, CapabilityMetrics>,
    /// `/v1/invoke/CAPABILITY` of each capability, parsed once.
    invoke_paths: HashMap<String, http::uri::PathAndQuery>,
    /// Call counts for warm standby (only with `spec.standby`).
    pub standby: crate::standby::Activity,
}

/// The series a successful call touches, resolved once per revision (not per request).
pub(crate) struct CapabilityMetrics {
    pub success: prometheus::IntCounter,
    pub duration: prometheus::Histogram,
    pub upstream: prometheus::Histogram,
}

impl PluginRuntime {
    fn build(entry: &PluginEntry, limits: &Limits, metrics: &Metrics) -> Self {
        let name = entry.name();
        let capability_metrics = entry
            .plugin
            .spec
            .capabilities
            .iter()
            .map(|c| {
                let m = CapabilityMetrics {
                    success: metrics.invocations.with_label_values(&[
                        name,
                        c.name.as_str(),
                        "success",
                    ]),
                    duration: metrics
                        .invocation_duration
                        .with_label_values(&[name, c.name.as_str()]),
                    upstream: metrics
                        .invocation_upstream
                        .with_label_values(&[name, c.name.as_str()]),
                };
                (c.name.clone(), m)
            })
            .collect();
        let invoke_paths = entry
            .plugin
            .spec
            .capabilities
            .iter()
            .map(|c| {
                let path = upstream::path(&berth_contract::protocol::invoke_path(&c.name));
                (c.name.clone(), path)
            })
            .collect();
        let resources = entry.plugin.spec.resources.resolve();
        let (timeout, max_concurrency) = match &resources {
            Ok(r) => (r.timeout, r.max_concurrency.max(1)),
            Err(_) => (
                Duration::from_secs(10),
                berth_api::plugin::DEFAULT_MAX_CONCURRENCY,
            ),
        };
        let validators = entry
            .plugin
            .spec
            .capabilities
            .iter()
            .filter_map(|c| {
                let schema = c.input.as_ref()?;
                let compiled = jsonschema::validator_for(schema)
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                Some((c.name.clone(), compiled))
            })
            .collect();
        Self {
            revision: entry.revision,
            limiter: Arc::new(Semaphore::new(max_concurrency as usize)),
            max_concurrency,
            timeout,
            breaker: CircuitBreaker::new(limits.breaker_failures, limits.breaker_open_for),
            validators,
            next_endpoint: AtomicUsize::new(0),
            inflight: metrics.inflight.with_label_values(&[name]),
            capability_metrics,
            invoke_paths,
            standby: crate::standby::Activity::new(entry),
        }
    }

    /// The plugin-side path that invokes `capability`.
    pub fn invoke_path(&self, capability: &str) -> http::uri::PathAndQuery {
        match self.invoke_paths.get(capability) {
            Some(path) => path.clone(),
            None => upstream::path(&berth_contract::protocol::invoke_path(capability)),
        }
    }

    /// Checks `input` against the capability's schema (compiled once per revision).
    pub fn validate(&self, plugin: &str, capability: &str, input: &Value) -> Result<()> {
        let Some(validator) = self.validators.get(capability) else {
            return Ok(());
        };
        let validator = validator.as_ref().map_err(|e| {
            Error::Config(format!(
                "plugin {plugin}: capability {capability}: the input schema does not compile: {e}"
            ))
        })?;
        if validator.is_valid(input) {
            return Ok(());
        }
        let violations: Vec<Value> = validator
            .iter_errors(input)
            .take(20)
            .map(|e| crate::error::schema_violation_detail(&e))
            .collect();
        let first = violations
            .first()
            .map(|v| {
                let path = v["instancePath"].as_str().unwrap_or_default();
                let path = if path.is_empty() { "/" } else { path };
                format!("at {path}: {}", v["message"].as_str().unwrap_or_default())
            })
            .unwrap_or_default();
        Err(Error::SchemaViolation {
            capability: capability.to_owned(),
            first,
            violations,
        })
    }

    /// The success counter and duration histogram of a capability.
    pub fn capability_metrics(&self, capability: &str) -> Option<&CapabilityMetrics> {
        self.capability_metrics.get(capability)
    }

    /// The next endpoint in round-robin order.
    pub fn pick<'a>(&self, endpoints: &'a [Endpoint]) -> &'a Endpoint {
        let i = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        &endpoints[i % endpoints.len()]
    }
}

impl Gateway {
    /// Builds a gateway over `directory`. Starts the audit summary and directory-watch
    /// tasks, so it needs a Tokio runtime.
    pub fn new(
        config: &Config,
        directory: Arc<dyn PluginDirectory>,
        tokens: TokenStore,
        metrics: Metrics,
        auditor: Auditor,
    ) -> Self {
        Self::build(config, directory, None, tokens, metrics, auditor)
    }

    /// Like [`Gateway::new`], over a directory that a supervisor in another process
    /// replaces through `PUT /v1/admin/directory` (`--backend pushed`). Start it with
    /// [`StaticDirectory::unsynced`] so that `/readyz` answers 503 until the first push.
    pub fn new_pushed(
        config: &Config,
        directory: Arc<StaticDirectory>,
        tokens: TokenStore,
        metrics: Metrics,
        auditor: Auditor,
    ) -> Self {
        let pushed = Pushed {
            directory: directory.clone(),
            applied: Mutex::new(None),
        };
        Self::build(config, directory, Some(pushed), tokens, metrics, auditor)
    }

    fn build(
        config: &Config,
        directory: Arc<dyn PluginDirectory>,
        pushed: Option<Pushed>,
        tokens: TokenStore,
        metrics: Metrics,
        auditor: Auditor,
    ) -> Self {
        let limits = Limits {
            max_body: config.max_body,
            max_response_body: config.max_response_body,
            hook_timeout: config.hook_timeout,
            breaker_failures: config.breaker_failures,
            breaker_open_for: config.breaker_open_for,
            retries: config.retries,
            retry_backoff: config.retry_backoff,
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            max_connections: config.max_connections,
        };
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            limits,
            client: upstream::client(config.connect_timeout, config.pool_idle_per_host),
            upstream: upstream::Upstream::new(config.connect_timeout, config.pool_idle_per_host),
            summarizer: Mutex::new(Summarizer::new(metrics.clone(), auditor.clone())),
            usage: crate::usage::UsageBook::new(),
            tiers: crate::tiers::LiveTiers::new(config.tier_settings()),
            standby: crate::standby::Standby::default(),
            egress: config.egress.clone(),
            directory,
            pushed,
            tokens,
            metrics,
            auditor,
            runtimes: RwLock::new(HashMap::new()),
            request_ids: AtomicU64::new(0),
            boot,
            background: Mutex::new(Vec::new()),
        });
        let gateway = Self { inner };
        gateway.observe_snapshot(&gateway.inner.directory.snapshot());
        let watch = tokio::spawn(watch_directory(
            Arc::downgrade(&gateway.inner),
            gateway.inner.directory.subscribe(),
        ));
        let summary = tokio::spawn(summarize_every(
            Arc::downgrade(&gateway.inner),
            config.audit_summary_interval,
        ));
        let tiers = tokio::spawn(evaluate_tiers_every(
            Arc::downgrade(&gateway.inner),
            config.tier_settings().interval,
        ));
        gateway
            .inner
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([watch, summary, tiers]);
        gateway
    }

    /// The metrics, for backends that feed restarts and cold starts.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The auditor, for backends that record lifecycle events through the gateway's sinks.
    pub fn auditor(&self) -> &Auditor {
        &self.inner.auditor
    }

    /// The egress proxy's flags; [`crate::serve`] starts the proxy when `listen` is set.
    pub fn egress_config(&self) -> &crate::config::EgressConfig {
        &self.inner.egress
    }

    /// `--header-read-timeout` and `--max-connections`, which [`crate::serve`] applies.
    pub fn connection_limits(&self) -> (Duration, usize) {
        let limits = &self.inner.limits;
        (limits.header_read_timeout, limits.max_connections)
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn PluginDirectory> {
        &self.inner.directory
    }

    /// The directory `PUT /v1/admin/directory` replaces, when the gateway was built with
    /// [`Gateway::new_pushed`].
    pub fn pushed_directory(&self) -> Option<&Arc<StaticDirectory>> {
        self.inner.pushed.as_ref().map(|p| &p.directory)
    }

    /// True when a configured token has the `admin` scope, which the admin endpoints need.
    pub fn has_admin_token(&self) -> bool {
        self.inner.tokens.has_admin()
    }

    /// The version of the last pushed snapshot applied, if any.
    pub fn pushed_version(&self) -> Option<u64> {
        let pushed = self.inner.pushed.as_ref()?;
        *pushed.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the summary of successful invocations since the last one, now.
    pub fn summarize_now(&self) -> usize {
        self.inner
            .summarizer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summarize()
    }

    /// Follows the live tiers: a new map (every plugin of the directory, rated or not)
    /// after each evaluation.
    pub fn subscribe_tiers(
        &self,
    ) -> tokio::sync::watch::Receiver<Arc<std::collections::BTreeMap<String, berth_api::LiveTier>>>
    {
        self.inner.tiers.subscribe()
    }

    /// The live tier of `plugin` (unrated before its first evaluation).
    pub fn live_tier(&self, plugin: &str) -> berth_api::LiveTier {
        self.inner
            .tiers
            .current()
            .get(plugin)
            .cloned()
            .unwrap_or_else(|| self.inner.tiers.unrated())
    }

    /// Advances the live-tier window and rates every plugin now (the gateway does so every
    /// `--tier-interval`): sets `berth_plugin_tier` and audits each change.
    pub fn evaluate_tiers_now(&self) {
        let snapshot = self.snapshot();
        let readings = crate::tiers::read_metrics(&self.inner.metrics, &snapshot);
        let changes =
            self.inner
                .tiers
                .evaluate(std::time::Instant::now(), jiff::Timestamp::now(), readings);
        let metrics = &self.inner.metrics;
        for (plugin, live) in self.inner.tiers.current().iter() {
            metrics
                .plugin_tier
                .with_label_values(&[plugin])
                .set(crate::tiers::gauge_value(live.tier));
        }
        let window = self.inner.tiers.settings().window.as_secs();
        for change in changes {
            let name = |t: Option<berth_api::Tier>| t.map_or("unrated", berth_api::Tier::as_str);
            let mut event = AuditEvent::new("gateway", crate::tiers::TIER_CHANGED, "success")
                .plugin(change.plugin.as_str())
                .details(json!({
                    "from": name(change.from),
                    "to": name(change.to.tier),
                    "reasons": change.to.reasons,
                    "inputs": change.to.inputs,
                    "calls": change.to.calls,
                    "windowSeconds": window,
                }));
            if let Some(entry) = snapshot.get(&change.plugin) {
                event = event.risk_score(entry.risk_score);
            }
            tracing::info!(
                plugin = change.plugin,
                from = name(change.from),
                to = name(change.to.tier),
                "live tier changed"
            );
            self.inner.auditor.record(event);
        }
    }

    /// Final summaries, usage flush and audit flush; call once the server has stopped.
    pub async fn shutdown(&self) {
        self.summarize_now();
        self.flush_usage().await;
        self.inner.auditor.flush().await;
    }

    pub(crate) fn snapshot(&self) -> Arc<DirectorySnapshot> {
        self.inner.directory.snapshot()
    }

    /// The runtime of `entry`'s revision, built (schemas compiled) on first use.
    pub(crate) fn runtime(&self, entry: &PluginEntry) -> Arc<PluginRuntime> {
        let name = entry.name();
        if let Some(rt) = self
            .inner
            .runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .filter(|rt| rt.revision == entry.revision)
        {
            return rt.clone();
        }
        let mut map = self
            .inner
            .runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = map.get(name).filter(|rt| rt.revision == entry.revision) {
            return rt.clone();
        }
        let rt = Arc::new(PluginRuntime::build(
            entry,
            &self.inner.limits,
            &self.inner.metrics,
        ));
        map.insert(name.to_owned(), rt.clone());
        rt
    }

    /// The runtime if one exists, without building it.
    pub(crate) fn existing_runtime(&self, name: &str) -> Option<Arc<PluginRuntime>> {
        self.inner
            .runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn observe_snapshot(&self, snapshot: &DirectorySnapshot) {
        for entry in snapshot.plugins() {
            self.inner
                .metrics
                .risk_score
                .with_label_values(&[entry.name()])
                .set(i64::from(entry.risk_score));
        }
        let mut map = self
            .inner
            .runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.retain(|name, rt| {
            snapshot
                .get(name)
                .is_some_and(|e| e.revision == rt.revision)
        });
        // A restarted or replaced instance closes the breaker as soon as the directory
        // says so, even when no call arrived while the plugin was down (decision 0058).
        let mut changed = Vec::new();
        for (name, rt) in map.iter() {
            if let Some(entry) = snapshot.get(name) {
                let instances = crate::breaker::instances_fingerprint(
                    entry.endpoints.iter().map(|e| e.authority()),
                );
                if let Some(state) = rt.breaker.observe_instances(instances) {
                    changed.push((entry.clone(), state));
                }
            }
        }
        drop(map);
        for (entry, state) in changed {
            crate::invoke::note_breaker_change(self, &entry, state);
        }
        // Not only plugins with a runtime: one never invoked may still have a risk score
        // and usage exported.
        self.inner
            .metrics
            .retain_plugins(|name| snapshot.get(name).is_some());
    }

    /// A request id: the caller's, when it sent a sane one, or a fresh one.
    pub(crate) fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(berth_contract::protocol::HEADER_REQUEST_ID)
            && (1..=128).contains(&v.len())
            && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        {
            return v.clone();
        }
        let n = self.inner.request_ids.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{:x}-{:x}", self.inner.boot, n))
            .unwrap_or(HeaderValue::from_static("0"))
    }

    /// Who is calling: a configured token, or a plugin's own token from the directory.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        snapshot: &DirectorySnapshot,
        path: &str,
    ) -> Result<Arc<Principal>> {
        let token = match bearer(headers) {
            Ok(t) => t,
            Err(e) => {
                self.inner.metrics.record_denial("", "authentication");
                return Err(e);
            }
        };
        let digest = digest(token);
        if let Some(p) = self.inner.tokens.lookup(&digest) {
            return Ok(p.clone());
        }
        if let Some(plugin) = snapshot.plugin_for_token(&digest) {
            return Ok(Arc::new(Principal::for_plugin(plugin)));
        }
        self.inner.metrics.record_denial("", "authentication");
        self.inner.auditor.record(
            AuditEvent::new("anonymous", types::SECURITY, "denied").details(json!({
                "reason": "unknown bearer token",
                "path": path,
            })),
        );
        Err(Error::Unauthenticated("unknown token"))
    }

    /// Records a refused permission: metric and audit event.
    pub(crate) fn deny(
        &self,
        principal: &Principal,
        plugin: &str,
        permission: &str,
        error: Error,
        risk_score: Option<u32>,
    ) -> Error {
        self.inner.metrics.record_denial(plugin, permission);
        let mut event = AuditEvent::new(principal.name.clone(), types::SECURITY, "denied")
            .plugin(plugin)
            .details(json!({
                "permission": permission,
                "code": error.code(),
                "reason": error.to_string(),
            }));
        if let Some(score) = risk_score {
            event = event.risk_score(score);
        }
        self.inner.auditor.record(event);
        error
    }
}

async fn watch_directory(
    inner: Weak<Inner>,
    mut rx: tokio::sync::watch::Receiver<Arc<DirectorySnapshot>>,
) {
    while rx.changed().await.is_ok() {
        let snapshot = rx.borrow_and_update().clone();
        let Some(inner) = inner.upgrade() else { return };
        Gateway { inner }.observe_snapshot(&snapshot);
    }
}

async fn evaluate_tiers_every(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        Gateway { inner }.evaluate_tiers_now();
    }
}

async fn summarize_every(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let gateway = Gateway { inner };
        gateway.summarize_now();
        gateway.inner.upstream.sweep();
        gateway.flush_usage().await;
    }
}
