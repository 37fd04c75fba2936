//! The local supervisor behind `berth dev up`: it makes the Docker Engine match the desired
//! state kept in the store, and keeps it so.
//!
//! CLI commands (`berth install`, `grant`, `disable`, …) only write the store; the
//! supervisor notices (it polls the store's change counter) and reconciles: [`plan`] decides
//! what each plugin should be, pure; `rollout` starts revisions and retires old ones;
//! [`restart`] is the pure policy for crashed plugins, applied by `crash`; `publish`
//! pushes the directory and observations to the gateway container ([`gateway`]); `adopt`
//! takes over running containers at start. Every engine call goes through [`Engine`],
//! which unit tests fake.

mod adopt;
mod crash;
pub mod engine;
mod engine_outage;
pub mod gateway;
mod outage;
pub mod plan;
mod pool;
mod publish;
pub mod restart;
mod rollout;
mod standby;
pub mod supply;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{Phase, Plugin, RiskTier};
use berth_store::audit::types;
use berth_store::{AuditEvent, GrantRecord, InstalledPlugin, PluginStatusRecord, Store};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use engine::Engine;
pub use gateway::{
    AdminClient, EGRESS_PORT, GATEWAY_ALIAS, GATEWAY_DIRECT_URL_SETTING, GATEWAY_PORT, GatewaySpec,
};
use plan::Desired;
pub use pool::POOL_LABEL;
pub use restart::{RestartPolicy, RestartState, Verdict};

use crate::DockerClient;
use crate::instance::Instance;

/// Settings key: the gateway's URL on the host.
pub const GATEWAY_URL_SETTING: &str = "dev.gateway-url";
/// Settings key: set by `berth dev down` to ask a running supervisor to stop.
pub const STOP_SETTING: &str = "dev.stop-requested";
/// Settings key: the store's change counter the supervisor has acted on; commands wait
/// for it to reach their own change.
pub const OBSERVED_SETTING: &str = "dev.observed-change";
/// Settings key: the gateway container's state as the supervisor sees it, JSON:
/// `{"state": "up"|"down", "since", "reason", "restarts", "nextRestartInMs"}`.
pub const GATEWAY_STATUS_SETTING: &str = "dev.gateway-status";
/// Who the supervisor is in the audit log.
pub const ACTOR: &str = "berth-dev";

/// How the supervisor runs.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The state directory (store, admin token); also names the instance.
    pub state_dir: PathBuf,
    /// The `berth` image the gateway container runs.
    pub gateway_image: String,
    /// Host port of the gateway on 127.0.0.1 (0: Docker chooses).
    pub gateway_port: u16,
    /// The admin token (the CLI reads it from the state directory).
    pub admin_token: String,
    /// Highest risk tier that runs without a grant.
    pub auto_approve: RiskTier,
    /// Secrets file (`NAME=value` lines) for `permissions.secrets`.
    pub secrets_file: Option<PathBuf>,
    /// Host directories for filesystem permissions: (plugin, mount name) → directory.
    /// Others get a named volume.
    pub mounts: HashMap<(String, String), PathBuf>,
    /// How long a new revision may take to become ready.
    pub ready_timeout: Duration,
    /// How long the old revision keeps its in-flight requests after the switch.
    pub drain: Duration,
    /// How long a stopped plugin may take to exit after SIGTERM.
    pub stop_grace: Duration,
    /// Restarts in a row after which a crashing plugin is marked Failed.
    pub max_restarts: u32,
    /// Longest pause between restarts.
    pub restart_cap: Duration,
    /// How often CPU and memory are read.
    pub stats_interval: Duration,
    /// The gateway's `--egress-allow-private`: granted host names may resolve to private
    /// addresses (other plugins' networks stay refused).
    pub egress_allow_private: bool,
    /// How many plugin networks to keep created ahead of installs (`--network-pool`);
    /// 0 creates each plugin's network when it is installed.
    pub network_pool: usize,
    /// `NAME:ADDR` entries for the gateway container's `/etc/hosts` (`dev up --add-host`);
    /// ADDR is an IP address or `host-gateway`.
    pub extra_hosts: Vec<String>,
    /// What the platform trusts: keys, which plugins must be signed, registry access.
    pub supply: supply::SupplyChain,
}

impl SupervisorConfig {
    /// Defaults for `state_dir`, `gateway_image` and `admin_token`.
    pub fn new(state_dir: PathBuf, gateway_image: String, admin_token: String) -> Self {
        Self {
            state_dir,
            gateway_image,
            gateway_port: 7070,
            admin_token,
            auto_approve: RiskTier::Low,
            secrets_file: None,
            mounts: HashMap::new(),
            ready_timeout: Duration::from_secs(30),
            drain: Duration::from_millis(1500),
            stop_grace: Duration::from_secs(10),
            max_restarts: 5,
            restart_cap: Duration::from_secs(30),
            stats_interval: Duration::from_secs(5),
            egress_allow_private: false,
            network_pool: 0,
            extra_hosts: Vec::new(),
            supply: supply::SupplyChain::default(),
        }
    }

    /// The restart policy `max_restarts` and `restart_cap` make.
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::new(self.max_restarts, self.restart_cap)
    }
}

/// One line for the person watching `berth dev up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The plugin concerned.
    pub plugin: Option<String>,
    /// What happened.
    pub message: String,
}

/// What can stop the supervisor from starting.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The Docker Engine refused something essential.
    #[error(transparent)]
    Docker(#[from] crate::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] berth_store::Error),
    /// The gateway container did not come up.
    #[error("{0}")]
    Gateway(String),
}

/// The revision of a plugin that takes traffic.
struct Serving {
    revision: u64,
    key: String,
    container_id: String,
    /// `None` while the container is down (crashed, restart pending).
    endpoint: Option<String>,
    plugin: Arc<Plugin>,
    started: Instant,
}

/// What the supervisor knows about one plugin.
#[derive(Default)]
struct Runtime {
    serving: Option<Serving>,
    phase: Option<Phase>,
    reason: Option<String>,
    restart: RestartState,
    /// Revision key that failed to start: not tried again until the manifest or image changes.
    failed_key: Option<String>,
    /// The network it runs on, once created or adopted and joined by the gateway (a pool
    /// network, or its own).
    network: Option<String>,
    /// The image checked for the revision about to be deployed.
    checked: Option<supply::Checked>,
    /// The image of the serving revision, as checked when it was deployed.
    serving_image: Option<supply::Checked>,
    /// The last refusal recorded (digest and reason), so it is audited once.
    refused: Option<String>,
}

/// An installed plugin, its manifest and its active grants, read once per reconcile pass.
struct Installed {
    record: InstalledPlugin,
    manifest: Result<Plugin, String>,
    grants: Vec<GrantRecord>,
}

/// The running supervisor, over the real engine unless a test gives it another.
pub struct Supervisor<E: Engine = DockerClient> {
    docker: E,
    store: Arc<Store>,
    instance: Instance,
    config: SupervisorConfig,
    /// Registry access and the verdict cache, made on first use.
    verifier: Option<berth_trust::Verifier>,
    admin: AdminClient,
    gateway_id: String,
    /// The admin client the usage sampler uses (the gateway's port may change).
    shared_admin: Arc<std::sync::Mutex<AdminClient>>,
    gateway: outage::GatewayHealth,
    /// The gateway's address on each plugin's network, which serving containers were
    /// given (`BERTH_GATEWAY_URL`, `HTTP_PROXY`); a gateway created again may get another.
    gateway_ips: HashMap<String, std::net::IpAddr>,
    plugins: BTreeMap<String, Runtime>,
    oom: HashSet<String>,
    notices: mpsc::UnboundedSender<Notice>,
    version: u64,
    push_pending: bool,
    adopted_cleanup: Vec<String>,
    secrets: Result<HashMap<String, String>, String>,
    last_change: u64,
    last_pushed: String,
    usage_targets: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// The installed plugins as of the last reconcile pass.
    installed: Arc<Vec<Installed>>,
    /// When the first grant in force expires: the plan (approval, allowed egress and calls)
    /// is made again then, not at the next periodic pass.
    next_grant_expiry: Option<Timestamp>,
    /// Uninstalled plugins whose containers and network go when due (after the drain), and
    /// the attempts made; a reinstall before then keeps the network.
    leftovers: BTreeMap<String, (Instant, u32)>,
    /// The store's data version when last read ([`Store::data_version`]).
    last_data_version: u64,
    /// Set while the Docker Engine does not answer.
    engine: Option<engine_outage::EngineOutage>,
    /// Times the Docker Engine stopped answering since the start.
    engine_outages: u64,
    /// Pre-created plugin networks.
    pool: pool::Pool,
    pool_tx: mpsc::UnboundedSender<pool::Filled>,
    pool_rx: Option<mpsc::UnboundedReceiver<pool::Filled>>,
}

impl<E: Engine> Supervisor<E> {
    /// Brings up the gateway container (adopting a running one started with the same
    /// settings) and adopts running plugin containers of this instance whose revision still
    /// matches the store. Call [`Supervisor::run`] next.
    pub async fn start(
        docker: E,
        store: Arc<Store>,
        config: SupervisorConfig,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Result<Self, SupervisorError> {
        let instance = Instance::for_state_dir(&config.state_dir);
        let secrets = match &config.secrets_file {
            None => Ok(HashMap::new()),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the secrets file {}: {e}", path.display()))
                .and_then(|t| plan::parse_secrets(&t, &path.display().to_string())),
        };
        let (gateway_id, url) = gateway::ensure_gateway(&docker, &instance, &config).await?;
        store.set_setting(GATEWAY_URL_SETTING, &url)?;
        store.delete_setting(STOP_SETTING)?;
        let admin = AdminClient::new(&url, &config.admin_token);
        admin
            .wait_healthy(Duration::from_secs(30))
            .await
            .map_err(SupervisorError::Gateway)?;
        gateway::record_direct_url(&docker, &store, &instance, &gateway_id).await;
        let (pool_tx, pool_rx) = mpsc::unbounded_channel();
        let mut me = Self {
            docker,
            store,
            instance,
            config,
            verifier: None,
            shared_admin: Arc::new(std::sync::Mutex::new(admin.clone())),
            admin,
            gateway_id,
            gateway: outage::GatewayHealth {
                started: Some(Instant::now()),
                ..Default::default()
            },
            gateway_ips: HashMap::new(),
            plugins: BTreeMap::new(),
            oom: HashSet::new(),
            notices,
            version: 0,
            push_pending: true,
            adopted_cleanup: Vec::new(),
            secrets,
            last_change: 0,
            last_pushed: String::new(),
            usage_targets: Arc::default(),
            installed: Arc::default(),
            next_grant_expiry: None,
            leftovers: BTreeMap::new(),
            last_data_version: 0,
            engine: None,
            engine_outages: 0,
            pool: pool::Pool::default(),
            pool_tx,
            pool_rx: Some(pool_rx),
        };
        me.write_gateway_status();
        standby::thaw_leftovers(&me.docker, &me.instance).await;
        me.adopt().await?;
        Ok(me)
    }

    /// The gateway's URL on the host.
    pub fn gateway_url(&self) -> &str {
        self.admin.base()
    }

    /// Reconciles until `shutdown` resolves or `berth dev down` asks it to stop. Containers
    /// keep running afterwards; the next `berth dev up` adopts them.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut events = self.docker.events(&self.instance);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `docker stats` takes a second or two per container: sample apart from the loop,
        // so events and restarts never wait for it.
        let sampler = tokio::spawn(publish::sample_usage(
            self.docker.clone(),
            self.shared_admin.clone(),
            self.usage_targets.clone(),
            self.config.stats_interval,
        ));
        let (standby_targets, targets) = tokio::sync::watch::channel(BTreeMap::new());
        let (standby_events, mut standby_seen) = mpsc::unbounded_channel();
        let standby = tokio::spawn(standby::run(
            self.docker.clone(),
            self.shared_admin.clone(),
            targets,
            standby_events,
        ));
        let mut periodic = tokio::time::interval(Duration::from_secs(10));
        let mut pool_filled = self.pool_rx.take().expect("run is called once");
        self.reconcile().await;
        self.report_outages().await;
        // After the first pass, so that the plugins it starts do not wait behind the pool's
        // network creations.
        self.fill_pool();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                event = events.next(), if self.engine.is_none() => match event {
                    Some(Ok(event)) => self.on_event(event).await,
                    other => {
                        let why = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "the events stream ended".to_owned(),
                        };
                        // A hiccup of the stream while the engine answers: watch again and
                        // read the state, since events may have been missed. Otherwise the
                        // engine is gone; the tick asks it again.
                        if self.events_lost(&why).await {
                            self.notice(None, format!("Docker events stream failed ({why}); reconnecting"));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            events = self.docker.events(&self.instance);
                            self.reconcile().await;
                        }
                    }
                },
                _ = tick.tick() => {
                    // Commands write from other connections; nothing to read until one has.
                    let moved = self.store_moved();
                    if moved && self.stop_requested() {
                        self.notice(None, "stopping: `berth dev down` asked for it".into());
                        break;
                    }
                    if self.engine.is_some() {
                        // Nothing can be done without the engine; changes are read when it
                        // is back.
                        if self.engine_answers(Instant::now()).await {
                            events = self.docker.events(&self.instance);
                            self.engine_back().await;
                        }
                        continue;
                    }
                    if moved && self.store_changed() {
                        self.reconcile().await;
                    }
                    if self.next_grant_expiry.is_some_and(|at| at <= Timestamp::now()) {
                        // A grant lapsed: what it allowed stops now, for running plugins
                        // and for the gateway's egress proxy.
                        self.reconcile().await;
                    }
                    self.restart_due(Instant::now()).await;
                    self.remove_leftovers(Instant::now()).await;
                    if self.push_pending {
                        self.push().await;
                    }
                    let next = self.standby_targets();
                    standby_targets.send_if_modified(|t| {
                        let changed = *t != next;
                        if changed {
                            *t = next;
                        }
                        changed
                    });
                }
                Some(event) = standby_seen.recv() => self.on_standby(event),
                Some(filled) = pool_filled.recv() => {
                    self.pool_filled(filled).await;
                    self.fill_pool();
                }
                _ = periodic.tick(), if self.engine.is_none() => {
                    self.reconcile().await;
                    // Fills the pool again after a failed creation's pause.
                    self.fill_pool();
                }
            }
        }
        sampler.abort();
        // Thaws what it paused: nobody would wake it after this.
        drop(standby_targets);
        let _ = tokio::time::timeout(Duration::from_secs(10), standby).await;
    }

    fn notice(&self, plugin: Option<&str>, message: String) {
        let _ = self.notices.send(Notice {
            plugin: plugin.map(str::to_owned),
            message,
        });
    }

    fn audit(&self, plugin: &str, type_: &str, outcome: &str, details: Value) {
        let event = AuditEvent::new(ACTOR, type_, outcome)
            .plugin(plugin)
            .details(details);
        if let Err(e) = self.store.append_audit(vec![event]) {
            self.notice(Some(plugin), format!("cannot write the audit log: {e}"));
        }
    }

    /// Whether another connection (a command, the gateway's audit writer) has committed to
    /// the store since the last call.
    fn store_moved(&mut self) -> bool {
        match self.store.data_version() {
            Ok(v) if v == self.last_data_version => false,
            Ok(v) => {
                self.last_data_version = v;
                true
            }
            Err(_) => true,
        }
    }

    fn stop_requested(&self) -> bool {
        matches!(self.store.setting(STOP_SETTING), Ok(Some(_)))
    }

    fn store_changed(&self) -> bool {
        self.store
            .change_counter()
            .is_ok_and(|now| now != self.last_change)
    }

    async fn reconcile(&mut self) {
        // Read before the desired state, so a change made during this pass is seen again.
        let seen = self.store.change_counter().unwrap_or(self.last_change);
        self.check_gateway().await;
        if self.gateway.down.is_some() {
            // Readiness probes go through the gateway: nothing can start until it is back.
            // The change is acted on by the first pass after.
            self.refresh_statuses();
            return;
        }
        self.last_change = seen;
        let records = match self.store.plugins() {
            Ok(p) => p,
            Err(e) => {
                self.notice(None, format!("cannot read the store: {e}"));
                return;
            }
        };
        let names: HashSet<&str> = records.iter().map(|i| i.name.as_str()).collect();
        let gone: Vec<String> = self
            .plugins
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.remove_plugin(&name).await;
        }
        // The one parse of each manifest and read of its grants this pass; everything
        // below borrows them.
        let now = berth_store::format_time(Timestamp::now());
        let installed: Arc<Vec<Installed>> = Arc::new(
            records
                .into_iter()
                .map(|record| Installed {
                    manifest: plan::parse_installed(&record),
                    grants: self
                        .store
                        .active_grants(&record.name, &now)
                        .unwrap_or_default(),
                    record,
                })
                .collect(),
        );
        self.installed = installed.clone();
        self.next_grant_expiry = installed
            .iter()
            .flat_map(|i| i.grants.iter())
            .filter_map(|g| g.expires_at.as_deref()?.parse::<Timestamp>().ok())
            .min();
        let plugins: Vec<&Plugin> = installed
            .iter()
            .filter_map(|i| i.manifest.as_ref().ok())
            .collect();
        let (order, cycles) = plan::start_order(&plugins);
        let by_name: HashMap<&str, &Installed> = installed
            .iter()
            .map(|i| (i.record.name.as_str(), i))
            .collect();
        let unparsed = installed
            .iter()
            .filter(|i| i.manifest.is_err())
            .map(|i| i.record.name.as_str());
        let mut serving_versions: HashMap<String, String> = HashMap::new();
        for name in order
            .iter()
            .map(String::as_str)
            .chain(cycles.keys().map(String::as_str))
            .chain(unparsed)
        {
            let Some(inst) = by_name.get(name) else {
                continue;
            };
            if let Some(problem) = cycles.get(name) {
                self.stop_serving(name, "dependency cycle").await;
                self.set_phase(name, Phase::Failed, Some(problem.clone()));
                continue;
            }
            self.reconcile_one(inst, &serving_versions).await;
            if let Some(s) = self.plugins.get(name).and_then(|r| r.serving.as_ref())
                && s.endpoint.is_some()
            {
                serving_versions.insert(name.to_owned(), s.plugin.spec.version.clone());
            }
        }
        for id in std::mem::take(&mut self.adopted_cleanup) {
            let _ = self.docker.remove_container(&id).await;
        }
        self.push_pending = true;
        self.push().await;
        self.record_gateway_ips().await;
        // Refresh every status so that `berth status` shows when it was last checked.
        for i in installed.iter() {
            let name = i.record.name.as_str();
            if let Some((phase, reason)) = self
                .plugins
                .get(name)
                .and_then(|r| r.phase.map(|p| (p, r.reason.clone())))
            {
                self.set_phase(name, phase, reason);
            }
        }
        let _ = self.store.set_setting(OBSERVED_SETTING, &seen.to_string());
    }

    async fn reconcile_one(
        &mut self,
        inst: &Installed,
        serving_versions: &HashMap<String, String>,
    ) {
        let name = inst.record.name.as_str();
        let serving_plugin = self
            .plugins
            .get(name)
            .and_then(|r| r.serving.as_ref())
            .map(|s| s.plugin.clone());
        match plan::desired(
            &inst.record,
            inst.manifest.as_ref().map_err(String::as_str),
            &inst.grants,
            serving_plugin.as_deref(),
            Timestamp::now(),
            self.config.auto_approve,
        ) {
            Desired::Invalid(reason) => {
                self.stop_serving(name, "invalid manifest").await;
                self.set_phase(name, Phase::Failed, Some(reason));
            }
            Desired::Disabled(reason) => {
                self.stop_serving(name, "disabled").await;
                let rt = self.plugins.entry(name.to_owned()).or_default();
                rt.failed_key = None;
                rt.restart.reset();
                self.set_phase(name, Phase::Disabled, Some(reason));
            }
            Desired::AwaitApproval {
                reason,
                keep_serving,
            } => {
                if !keep_serving {
                    self.stop_serving(name, "not approved").await;
                }
                if self.phase_of(name) != Some(Phase::AwaitingApproval) {
                    self.audit(
                        name,
                        types::PERMISSION,
                        "denied",
                        json!({"action": "awaiting-approval", "reason": reason}),
                    );
                }
                self.set_phase(name, Phase::AwaitingApproval, Some(reason));
            }
            Desired::Run(plugin) => {
                self.run_plugin(&inst.record, *plugin, serving_versions)
                    .await;
            }
        }
    }

    async fn run_plugin(
        &mut self,
        inst: &InstalledPlugin,
        plugin: Plugin,
        serving_versions: &HashMap<String, String>,
    ) {
        let name = inst.name.as_str();
        let mut plugin = plugin;
        let (checked, image) = match self.check_image(name, &plugin).await {
            Ok(c) => c,
            Err(refusal) => {
                self.refuse(name, &plugin, refusal);
                return;
            }
        };
        // The revision runs by digest: what was resolved (and verified) is what starts.
        plugin.spec.image = checked.run.clone();
        self.plugins.entry(name.to_owned()).or_default().refused = None;
        let key = plan::revision_key(&inst.manifest_yaml, &image.id);
        let rt = self.plugins.entry(name.to_owned()).or_default();
        if let Some(s) = rt.serving.as_ref().filter(|s| s.key == key) {
            // Serving what is wanted: an approval may have come back, or a failed upgrade
            // may have been replaced by the manifest that serves.
            let healthy = s.endpoint.is_some() && !rt.restart.is_restarting_or_failed();
            if healthy && rt.phase != Some(Phase::Ready) {
                rt.failed_key = None;
                self.set_phase(name, Phase::Ready, None);
            }
            return;
        }
        if rt.failed_key.as_deref() == Some(key.as_str()) {
            return;
        }
        if let Some(waiting) = plan::waiting_for(&plugin, serving_versions) {
            if self.serving_key(name).is_none() {
                self.set_phase(name, Phase::Pending, Some(waiting));
            }
            return;
        }
        self.plugins.entry(name.to_owned()).or_default().checked = Some(checked);
        self.deploy(inst, plugin, key).await;
    }

    fn serving_key(&self, name: &str) -> Option<&str> {
        self.plugins
            .get(name)
            .and_then(|r| r.serving.as_ref())
            .map(|s| s.key.as_str())
    }

    fn phase_of(&self, name: &str) -> Option<Phase> {
        self.plugins.get(name).and_then(|r| r.phase)
    }

    fn set_phase(&mut self, name: &str, phase: Phase, reason: Option<String>) {
        let rt = self.plugins.entry(name.to_owned()).or_default();
        let changed = rt.phase != Some(phase) || rt.reason != reason;
        rt.phase = Some(phase);
        rt.reason = reason.clone();
        let serving_revision = rt.serving.as_ref().map(|s| s.revision);
        let restarts = rt.restart.restarts();
        // Without the gateway no plugin is reachable, whatever its container does.
        let (phase, reason) = match (phase, self.gateway.down_reason()) {
            (Phase::Ready | Phase::Degraded | Phase::Pending, Some(down)) => (
                Phase::Degraded,
                Some(match reason {
                    Some(r) => format!("{down}; {r}"),
                    None => down,
                }),
            ),
            _ => (phase, reason),
        };
        if changed {
            self.push_pending = true;
            if !matches!(phase, Phase::Ready) || reason.is_some() {
                self.notice(
                    Some(name),
                    match &reason {
                        Some(r) => format!("{phase}: {r}"),
                        None => phase.to_string(),
                    },
                );
            }
        }
        let _ = self.store.set_status(&PluginStatusRecord {
            plugin: name.to_owned(),
            phase: phase.to_string(),
            reason,
            serving_revision,
            restarts,
            updated_at: berth_store::format_time(Timestamp::now()),
        });
    }
}
