//! The local supervisor behind `berth dev up`: it makes the Docker Engine match the desired
//! state kept in the store, and keeps it so.
//!
//! CLI commands (`berth install`, `grant`, `disable`, …) only write the store; the
//! supervisor notices (it polls the store's change counter) and reconciles. It runs the
//! gateway container, one network and container per plugin revision, restarts crashed
//! plugins with backoff, rolls revisions over without dropping requests, and publishes the
//! result as a [`DockerDirectory`] that it pushes to the gateway.

pub mod directory;
pub mod gateway;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{Phase, Plugin, RiskTier};
use berth_gateway::wire::{ColdStartWire, ObservationsWire, RestartWire, SnapshotWire, UsageWire};
use berth_gateway::{Endpoint, PluginEntry};
use berth_store::audit::types;
use berth_store::{AuditEvent, InstalledPlugin, PluginStatusRecord, RevisionRecord, Store};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub use directory::DockerDirectory;
pub use gateway::{AdminClient, GATEWAY_ALIAS, GATEWAY_PORT, GatewaySpec};
use plan::Desired;

use crate::instance::Instance;
use crate::readiness::{NotReady, wait_ready_with};
use crate::{ContainerOptions, DockerClient, EventAction, FilesystemSource, plugin_container};

/// Settings key: the gateway's URL on the host.
pub const GATEWAY_URL_SETTING: &str = "dev.gateway-url";
/// Settings key: set by `berth dev down` to ask a running supervisor to stop.
pub const STOP_SETTING: &str = "dev.stop-requested";
/// Settings key: the store's change counter the supervisor has acted on; commands wait
/// for it to reach their own change.
pub const OBSERVED_SETTING: &str = "dev.observed-change";
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
        }
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

struct Serving {
    revision: u64,
    key: String,
    container_id: String,
    endpoint: Option<String>,
    plugin: Arc<Plugin>,
    started: Instant,
}

#[derive(Default)]
struct Runtime {
    serving: Option<Serving>,
    phase: Option<Phase>,
    reason: Option<String>,
    failures: u32,
    restarts: u32,
    restart_at: Option<Instant>,
    failed_key: Option<String>,
    crash_failed: bool,
    network_ready: bool,
}

/// The running supervisor.
pub struct Supervisor {
    docker: DockerClient,
    store: Arc<Store>,
    instance: Instance,
    config: SupervisorConfig,
    directory: Arc<DockerDirectory>,
    admin: AdminClient,
    gateway_id: String,
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
    /// The installed plugins (with their parsed manifests) as of the last reconcile pass.
    installed: Vec<(InstalledPlugin, Option<Plugin>)>,
    /// Uninstalled plugins whose containers and network go when due (after the drain), and
    /// the attempts made; a reinstall before then keeps the network.
    leftovers: BTreeMap<String, (Instant, u32)>,
    /// The store's data version when last read ([`Store::data_version`]).
    last_data_version: u64,
}

impl Supervisor {
    /// Brings up the gateway container (adopting a running one started with the same
    /// settings) and adopts running plugin containers of this instance whose revision still
    /// matches the store. Call [`Supervisor::run`] next.
    pub async fn start(
        docker: DockerClient,
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
        let (gateway_id, url) = ensure_gateway(&docker, &instance, &config).await?;
        store.set_setting(GATEWAY_URL_SETTING, &url)?;
        store.delete_setting(STOP_SETTING)?;
        let admin = AdminClient::new(&url, &config.admin_token);
        admin
            .wait_healthy(Duration::from_secs(30))
            .await
            .map_err(SupervisorError::Gateway)?;
        let mut me = Self {
            docker,
            store,
            instance,
            config,
            directory: Arc::new(DockerDirectory::new()),
            admin,
            gateway_id,
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
            installed: Vec::new(),
            leftovers: BTreeMap::new(),
            last_data_version: 0,
        };
        me.adopt().await?;
        Ok(me)
    }

    /// The gateway's URL on the host.
    pub fn gateway_url(&self) -> &str {
        self.admin.base()
    }

    /// The instance this supervisor manages.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The directory the supervisor publishes.
    pub fn directory(&self) -> Arc<DockerDirectory> {
        self.directory.clone()
    }

    /// Reconciles until `shutdown` resolves or `berth dev down` asks it to stop. Containers
    /// keep running afterwards; the next `berth dev up` adopts them.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut events = self.docker.events(&self.instance).boxed();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `docker stats` takes a second or two per container: sample apart from the loop,
        // so events and restarts never wait for it.
        let sampler = tokio::spawn(sample_usage(
            self.docker.clone(),
            self.admin.clone(),
            self.usage_targets.clone(),
            self.config.stats_interval,
        ));
        let mut periodic = tokio::time::interval(Duration::from_secs(10));
        self.reconcile().await;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_event(event).await,
                    Some(Err(e)) => {
                        self.notice(None, format!("Docker events stream failed ({e}); reconnecting"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        events = self.docker.events(&self.instance).boxed();
                        self.reconcile().await;
                    }
                    None => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        events = self.docker.events(&self.instance).boxed();
                    }
                },
                _ = tick.tick() => {
                    // Commands write from other connections; nothing to read until one has.
                    if self.store_moved() {
                        if self.stop_requested() {
                            self.notice(None, "stopping: `berth dev down` asked for it".into());
                            break;
                        }
                        if self.store_changed() {
                            self.reconcile().await;
                        }
                    }
                    self.restart_due().await;
                    self.remove_leftovers().await;
                    if self.push_pending {
                        self.push().await;
                    }
                }
                _ = periodic.tick() => self.reconcile().await,
            }
        }
        sampler.abort();
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

    async fn adopt(&mut self) -> Result<(), SupervisorError> {
        let containers = self.docker.list_managed(&self.instance).await?;
        let installed = self.store.plugins()?;
        let mut adopted = HashSet::new();
        for inst in &installed {
            let Ok(plugin) = plan::parse_installed(inst) else {
                continue;
            };
            let Ok(image) = self.docker.inspect_image(&plugin.spec.image).await else {
                continue;
            };
            let key = plan::revision_key(&inst.manifest_yaml, &image.id);
            let candidate = containers
                .iter()
                .filter(|c| {
                    c.running
                        && c.role.as_deref() == Some("plugin")
                        && c.plugin.as_deref() == Some(inst.name.as_str())
                        && c.manifest_sha256.as_deref() == Some(key.as_str())
                })
                .max_by_key(|c| c.revision);
            let Some(c) = candidate else { continue };
            let network = self.instance.plugin_network(&inst.name);
            // The gateway may be new (its settings changed): it must reach the plugin.
            let _ = self
                .docker
                .connect_network(&network, &self.gateway_id, &[GATEWAY_ALIAS.to_owned()])
                .await;
            let Ok(Some(ip)) = self.docker.container_address(&c.id, &network).await else {
                continue;
            };
            let endpoint = format!("http://{ip}:{}", plugin.spec.port);
            if self
                .wait_ready(&endpoint, &plugin, Duration::from_secs(5))
                .await
                .is_err()
            {
                continue;
            }
            let revision = c.revision.unwrap_or(0);
            adopted.insert(c.id.clone());
            self.notice(
                Some(&inst.name),
                format!("adopted running revision {revision} ({})", c.name),
            );
            self.audit(
                &inst.name,
                types::LIFECYCLE,
                "success",
                json!({"action": "adopted", "revision": revision, "container": c.name}),
            );
            let rt = self.plugins.entry(inst.name.clone()).or_default();
            rt.serving = Some(Serving {
                revision,
                key,
                container_id: c.id.clone(),
                endpoint: Some(endpoint),
                plugin: Arc::new(plugin),
                started: Instant::now(),
            });
            rt.phase = Some(Phase::Ready);
            rt.network_ready = true;
        }
        self.adopted_cleanup = containers
            .into_iter()
            .filter(|c| c.role.as_deref() == Some("plugin") && !adopted.contains(&c.id))
            .map(|c| c.id)
            .collect();
        // Networks of plugins uninstalled while no supervisor ran.
        let names: HashSet<&str> = installed.iter().map(|i| i.name.as_str()).collect();
        for plugin in self.docker.plugins_with_networks(&self.instance).await? {
            if !names.contains(plugin.as_str()) {
                self.leftovers.insert(plugin, (Instant::now(), 0));
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self) {
        // Read before the desired state, so a change made during this pass is seen again.
        let seen = self.store.change_counter().unwrap_or(self.last_change);
        self.last_change = seen;
        let installed = match self.store.plugins() {
            Ok(p) => p,
            Err(e) => {
                self.notice(None, format!("cannot read the store: {e}"));
                return;
            }
        };
        let names: HashSet<&str> = installed.iter().map(|i| i.name.as_str()).collect();
        let gone: Vec<String> = self
            .plugins
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.remove_plugin(&name).await;
        }
        let parsed: Vec<(InstalledPlugin, Option<Plugin>)> = installed
            .into_iter()
            .map(|i| {
                let p = plan::parse_installed(&i).ok();
                (i, p)
            })
            .collect();
        self.installed = parsed.clone();
        let plugins: Vec<&Plugin> = parsed.iter().filter_map(|(_, p)| p.as_ref()).collect();
        let (order, cycles) = plan::start_order(&plugins);
        let by_name: HashMap<&str, &InstalledPlugin> =
            parsed.iter().map(|(i, _)| (i.name.as_str(), i)).collect();
        let mut serving_versions: HashMap<String, String> = HashMap::new();
        for name in order
            .iter()
            .map(String::as_str)
            .chain(cycles.keys().map(String::as_str))
            .chain(
                parsed
                    .iter()
                    .filter(|(_, p)| p.is_none())
                    .map(|(i, _)| i.name.as_str()),
            )
            .collect::<Vec<_>>()
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
        if !self.adopted_cleanup.is_empty() {
            for id in std::mem::take(&mut self.adopted_cleanup) {
                let _ = self.docker.remove_container(&id).await;
            }
        }
        self.push_pending = true;
        self.push().await;
        // Refresh every status so that `berth status` shows when it was last checked.
        for (i, _) in &parsed {
            if let Some((phase, reason)) = self
                .plugins
                .get(&i.name)
                .and_then(|r| r.phase.map(|p| (p, r.reason.clone())))
            {
                self.set_phase(&i.name, phase, reason);
            }
        }
        let _ = self.store.set_setting(OBSERVED_SETTING, &seen.to_string());
    }

    async fn reconcile_one(
        &mut self,
        inst: &InstalledPlugin,
        serving_versions: &HashMap<String, String>,
    ) {
        let name = inst.name.as_str();
        let grants = self
            .store
            .active_grants(name, &berth_store::audit::format_time(Timestamp::now()))
            .unwrap_or_default();
        let serving_plugin = self
            .plugins
            .get(name)
            .and_then(|r| r.serving.as_ref())
            .map(|s| s.plugin.clone());
        match plan::desired(
            inst,
            &grants,
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
                rt.crash_failed = false;
                rt.failures = 0;
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
                self.run_plugin(inst, *plugin, serving_versions).await;
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
        let image = match self.docker.inspect_image(&plugin.spec.image).await {
            Ok(i) => i,
            Err(e) => {
                if self.serving_key(name).is_none() {
                    self.set_phase(
                        name,
                        Phase::Failed,
                        Some(format!(
                            "image {} is not available: {e}; build it (`berth build plugin-images/{name}`) or load it",
                            plugin.spec.image
                        )),
                    );
                }
                return;
            }
        };
        let key = plan::revision_key(&inst.manifest_yaml, &image.id);
        let rt = self.plugins.entry(name.to_owned()).or_default();
        if let Some(s) = rt.serving.as_ref().filter(|s| s.key == key) {
            // Serving what is wanted: an approval may have come back, or a failed upgrade
            // may have been replaced by the manifest that serves.
            let healthy = s.endpoint.is_some() && rt.restart_at.is_none() && !rt.crash_failed;
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

    async fn prepare_network(&mut self, name: &str) -> Result<String, String> {
        let network = self.instance.plugin_network(name);
        // Installed again before its leftovers went: the network stays.
        self.leftovers.remove(name);
        if self.plugins.get(name).is_some_and(|r| r.network_ready) {
            return Ok(network);
        }
        let mut labels = self.instance.labels();
        labels.insert(crate::instance::PLUGIN_LABEL.into(), name.into());
        self.docker
            .ensure_plugin_network(&network, labels)
            .await
            .map_err(|e| e.to_string())?;
        self.docker
            .connect_network(&network, &self.gateway_id, &[GATEWAY_ALIAS.to_owned()])
            .await
            .map_err(|e| e.to_string())?;
        self.plugins
            .entry(name.to_owned())
            .or_default()
            .network_ready = true;
        Ok(network)
    }

    async fn deploy(&mut self, inst: &InstalledPlugin, plugin: Plugin, key: String) {
        let name = inst.name.clone();
        let revision = match self.store.next_revision(&name) {
            Ok(r) => r,
            Err(e) => {
                self.notice(Some(&name), format!("cannot number the revision: {e}"));
                return;
            }
        };
        let had_serving = self
            .plugins
            .get(&name)
            .and_then(|r| r.serving.as_ref())
            .map(|s| s.revision);
        if had_serving.is_none() {
            self.set_phase(
                &name,
                Phase::Deploying,
                Some(format!("starting revision {revision}")),
            );
        }
        let record = RevisionRecord {
            plugin: name.clone(),
            revision,
            image: plugin.spec.image.clone(),
            manifest_sha256: key.clone(),
            state: "Starting".into(),
            reason: None,
            container_id: None,
            endpoint: None,
            created_at: berth_store::audit::format_time(Timestamp::now()),
            ready_at: None,
        };
        let _ = self.store.insert_revision(&record);
        let started = Instant::now();
        let outcome = self.start_revision(inst, &plugin, revision, &key).await;
        match outcome {
            Ok((container_id, endpoint)) => {
                let cold = started.elapsed();
                let _ = self.store.update_revision(
                    &name,
                    revision,
                    "Ready",
                    None,
                    Some(&container_id),
                    Some(&endpoint),
                );
                let old = {
                    let rt = self.plugins.entry(name.clone()).or_default();
                    let old = rt.serving.replace(Serving {
                        revision,
                        key,
                        container_id,
                        endpoint: Some(endpoint),
                        plugin: Arc::new(plugin.clone()),
                        started: Instant::now(),
                    });
                    rt.failures = 0;
                    rt.crash_failed = false;
                    rt.failed_key = None;
                    old
                };
                self.set_phase(&name, Phase::Ready, None);
                // Route to the new revision before the old one stops.
                self.push_pending = true;
                self.push().await;
                self.observe(ObservationsWire {
                    cold_starts: vec![ColdStartWire {
                        plugin: name.clone(),
                        seconds: cold.as_secs_f64(),
                    }],
                    ..Default::default()
                })
                .await;
                let message = match &old {
                    Some(o) => format!(
                        "Ready: revision {revision} (version {}) replaced revision {} in {} ms",
                        plugin.spec.version,
                        o.revision,
                        cold.as_millis()
                    ),
                    None => format!(
                        "Ready: revision {revision} (version {}), cold start {} ms",
                        plugin.spec.version,
                        cold.as_millis()
                    ),
                };
                self.notice(Some(&name), message);
                self.audit(
                    &name,
                    types::LIFECYCLE,
                    "success",
                    json!({
                        "action": if old.is_some() { "updated" } else { "started" },
                        "revision": revision,
                        "version": plugin.spec.version,
                        "previousRevision": old.as_ref().map(|o| o.revision),
                        "coldStartMs": cold.as_millis() as u64,
                    }),
                );
                if let Some(old) = old {
                    let _ = self.store.update_revision(
                        &name,
                        old.revision,
                        "Retired",
                        Some(&format!("replaced by revision {revision}")),
                        Some(&old.container_id),
                        None,
                    );
                    self.retire(old.container_id, true);
                }
            }
            Err(reason) => {
                let _ = self.store.update_revision(
                    &name,
                    revision,
                    "Failed",
                    Some(&reason),
                    None,
                    None,
                );
                let rt = self.plugins.entry(name.clone()).or_default();
                rt.failed_key = Some(key);
                match had_serving {
                    Some(old) => {
                        let why = format!(
                            "revision {revision} failed ({reason}); rolled back, revision {old} keeps serving"
                        );
                        self.notice(Some(&name), why.clone());
                        self.audit(
                            &name,
                            types::LIFECYCLE,
                            "failure",
                            json!({"action": "rolled-back", "revision": revision, "servingRevision": old, "reason": reason}),
                        );
                        self.set_phase(&name, Phase::Degraded, Some(why));
                    }
                    None => {
                        self.notice(Some(&name), format!("revision {revision} failed: {reason}"));
                        self.audit(
                            &name,
                            types::LIFECYCLE,
                            "failure",
                            json!({"action": "failed", "revision": revision, "reason": reason}),
                        );
                        self.set_phase(&name, Phase::Failed, Some(reason));
                    }
                }
            }
        }
    }

    /// Creates and starts revision `revision`, waits until it is ready; on failure removes
    /// the container and says why.
    async fn start_revision(
        &mut self,
        inst: &InstalledPlugin,
        plugin: &Plugin,
        revision: u64,
        key: &str,
    ) -> Result<(String, String), String> {
        let name = inst.name.as_str();
        let network = self.prepare_network(name).await?;
        let secrets_file = self
            .config
            .secrets_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the secrets file (`berth dev up --secrets FILE`)".into());
        let mut env = match &self.secrets {
            Ok(secrets) => plan::secret_env(plugin, secrets, &secrets_file)?,
            Err(e) if !plugin.spec.permissions.secrets.is_empty() => return Err(e.clone()),
            Err(_) => Vec::new(),
        };
        let gateway_ip = self
            .docker
            .container_address(&self.gateway_id, &network)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the gateway has no address on {network}"))?;
        env.push((
            "BERTH_GATEWAY_URL".into(),
            format!("http://{gateway_ip}:{GATEWAY_PORT}"),
        ));
        env.push(("BERTH_PLUGIN_TOKEN".into(), inst.token.clone()));
        let mut filesystem = HashMap::new();
        for mount in &plugin.spec.permissions.filesystem {
            let source = match self
                .config
                .mounts
                .get(&(name.to_owned(), mount.name.clone()))
            {
                Some(dir) => FilesystemSource::HostDir(dir.clone()),
                None => {
                    let volume = self.instance.volume(name, &mount.name);
                    let mut labels = self.instance.labels();
                    labels.insert(crate::instance::PLUGIN_LABEL.into(), name.into());
                    self.docker
                        .ensure_volume(&volume, labels)
                        .await
                        .map_err(|e| e.to_string())?;
                    FilesystemSource::Volume(volume)
                }
            };
            filesystem.insert(mount.name.clone(), source);
        }
        let options = ContainerOptions {
            image: plugin.spec.image.clone(),
            network: network.clone(),
            env,
            labels: self.instance.plugin_labels(name, revision, key),
            scratch_filesystem: false,
            filesystem,
        };
        let body = plugin_container(plugin, &options).map_err(|e| e.to_string())?;
        let container_name = self.instance.plugin_container(name, revision);
        let id = match self
            .docker
            .run_container(&container_name, body.clone())
            .await
        {
            Ok(id) => id,
            Err(crate::Error::Conflict { .. }) => {
                // A leftover of an interrupted run under the same name: replace it.
                let _ = self.docker.remove_container(&container_name).await;
                self.docker
                    .run_container(&container_name, body)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        match self.wait_started(&id, &network, plugin).await {
            Ok(endpoint) => Ok((id, endpoint)),
            Err(reason) => {
                let logs = self.docker.logs(&id, 5).await.unwrap_or_default();
                let _ = self.docker.remove_container(&id).await;
                let logs = logs.trim();
                Err(if logs.is_empty() {
                    reason
                } else {
                    format!("{reason}; last output: {}", logs.replace('\n', " | "))
                })
            }
        }
    }

    /// Readiness of the plugin at `endpoint`, checked through the gateway container (the
    /// host has no route to a plugin network).
    async fn wait_ready(
        &self,
        endpoint: &str,
        plugin: &Plugin,
        timeout: Duration,
    ) -> Result<(), NotReady> {
        let get = |path: &'static str, deadline: tokio::time::Instant| {
            let admin = self.admin.clone();
            let url = format!("{endpoint}{path}");
            async move {
                let left = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .clamp(Duration::from_millis(10), Duration::from_secs(2));
                admin.probe(&url, left).await
            }
        };
        wait_ready_with(get, plugin, timeout).await
    }

    /// Waits until the container answers `/healthz` and a matching `/v1/describe`, or exits.
    async fn wait_started(
        &self,
        id: &str,
        network: &str,
        plugin: &Plugin,
    ) -> Result<String, String> {
        let ip = self
            .docker
            .container_address(id, network)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the container has no address on {network}"))?;
        let endpoint = format!("http://{ip}:{}", plugin.spec.port);
        tokio::select! {
            ready = self.wait_ready(&endpoint, plugin, self.config.ready_timeout) => {
                ready.map(|()| endpoint).map_err(|e| e.to_string())
            }
            code = self.docker.wait_exit(id) => {
                let status = self.docker.container_status(id).await.unwrap_or_default();
                Err(match (code, status.oom_killed) {
                    (_, true) => "it was killed for exceeding its memory limit while starting".into(),
                    (Ok(code), _) => format!("it exited with code {code} before it was ready"),
                    (Err(e), _) => format!("it stopped before it was ready ({e})"),
                })
            }
        }
    }

    /// Stops a container in the background: after `drain` when it served, so requests
    /// already routed to it finish; then SIGTERM, the grace period, removal.
    fn retire(&self, container_id: String, drain: bool) {
        let docker = self.docker.clone();
        let wait = if drain {
            self.config.drain
        } else {
            Duration::ZERO
        };
        let grace = self.config.stop_grace;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = docker.signal(&container_id, "SIGTERM").await;
            let _ = tokio::time::timeout(grace, docker.wait_exit(&container_id)).await;
            let _ = docker.remove_container(&container_id).await;
        });
    }

    async fn stop_serving(&mut self, name: &str, why: &str) {
        let Some(rt) = self.plugins.get_mut(name) else {
            return;
        };
        rt.restart_at = None;
        let Some(old) = rt.serving.take() else {
            return;
        };
        self.push_pending = true;
        self.push().await;
        let _ = self.store.update_revision(
            name,
            old.revision,
            "Retired",
            Some(why),
            Some(&old.container_id),
            None,
        );
        self.notice(
            Some(name),
            format!("stopped revision {} ({why})", old.revision),
        );
        self.audit(
            name,
            types::LIFECYCLE,
            "success",
            json!({"action": "stopped", "revision": old.revision, "reason": why}),
        );
        self.retire(old.container_id, true);
    }

    async fn remove_plugin(&mut self, name: &str) {
        self.stop_serving(name, "uninstalled").await;
        self.plugins.remove(name);
        self.push_pending = true;
        // Containers and network go after the drain, from the loop (so that an install of
        // the same name in between keeps what it uses).
        let due = Instant::now() + self.config.drain + Duration::from_millis(1500);
        self.leftovers.insert(name.to_owned(), (due, 0));
        self.notice(Some(name), "uninstalled".into());
    }

    /// Removes the containers and network of uninstalled plugins whose time has come.
    async fn remove_leftovers(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, u32)> = self
            .leftovers
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(name, (_, tries))| (name.clone(), *tries))
            .collect();
        for (name, tries) in due {
            self.leftovers.remove(&name);
            if self.plugins.contains_key(&name) {
                continue;
            }
            if let Err(e) = self
                .docker
                .remove_plugin_leftovers(&self.instance, &name)
                .await
            {
                if tries < 3 {
                    self.leftovers
                        .insert(name, (now + Duration::from_secs(5), tries + 1));
                } else {
                    self.notice(
                        Some(&name),
                        format!("cannot remove what the uninstalled plugin left ({e}); `berth dev down` removes it"),
                    );
                }
            }
        }
    }

    fn set_phase(&mut self, name: &str, phase: Phase, reason: Option<String>) {
        let rt = self.plugins.entry(name.to_owned()).or_default();
        let changed = rt.phase != Some(phase) || rt.reason != reason;
        rt.phase = Some(phase);
        rt.reason = reason.clone();
        let serving_revision = rt.serving.as_ref().map(|s| s.revision);
        let restarts = rt.restarts;
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
            updated_at: berth_store::audit::format_time(Timestamp::now()),
        });
    }

    fn entries(&self) -> Vec<PluginEntry> {
        let mut out = Vec::new();
        for (inst, parsed) in &self.installed {
            let rt = self.plugins.get(&inst.name);
            let digest: [u8; 32] = Sha256::digest(inst.token.as_bytes()).into();
            if let Some(s) = rt.and_then(|r| r.serving.as_ref()) {
                let phase = match (&s.endpoint, rt.and_then(|r| r.phase)) {
                    (None, _) => Phase::Degraded,
                    (Some(_), Some(Phase::Degraded)) => Phase::Degraded,
                    (Some(_), _) => Phase::Ready,
                };
                let endpoints = s
                    .endpoint
                    .iter()
                    .filter_map(|e| Endpoint::parse(e).ok())
                    .collect();
                out.push(
                    PluginEntry::new((*s.plugin).clone())
                        .with_revision(s.revision)
                        .with_phase(phase)
                        .with_endpoints(endpoints)
                        .with_granted_calls(s.plugin.spec.permissions.plugins.clone())
                        .with_token_digest(digest),
                );
            } else if let Some(plugin) = parsed {
                let phase = rt.and_then(|r| r.phase).unwrap_or(Phase::Pending);
                out.push(
                    PluginEntry::new(plugin.clone())
                        .with_revision(0)
                        .with_phase(phase),
                );
            }
        }
        out
    }

    async fn push(&mut self) {
        if !self.push_pending {
            return;
        }
        self.refresh_usage_targets();
        let entries = self.entries();
        // Skip pushes that would change nothing (the version alone differs).
        let mut wire = SnapshotWire::from_entries(0, entries.iter());
        let fingerprint = serde_json::to_string(&wire.plugins).unwrap_or_default();
        if fingerprint == self.last_pushed {
            self.push_pending = false;
            return;
        }
        let now_ms = Timestamp::now().as_millisecond().max(0) as u64;
        self.version = (self.version + 1).max(now_ms);
        wire.version = self.version;
        self.directory.publish(self.version, entries);
        let body = match serde_json::to_vec(&wire) {
            Ok(b) => b,
            Err(e) => {
                self.notice(None, format!("cannot encode the directory: {e}"));
                return;
            }
        };
        match self
            .admin
            .send(http::Method::PUT, "/v1/admin/directory", Some(body))
            .await
        {
            Ok((200, _)) => {
                self.push_pending = false;
                self.last_pushed = fingerprint;
            }
            Ok((status, answer)) => {
                self.notice(
                    None,
                    format!("the gateway refused the directory ({status}): {answer}"),
                );
            }
            Err(e) => self.notice(None, format!("cannot reach the gateway: {e}")),
        }
    }

    async fn observe(&self, observations: ObservationsWire) {
        self.admin.observe(&observations).await;
    }

    /// Which serving containers to sample, for the usage task.
    fn refresh_usage_targets(&self) {
        let targets: Vec<(String, String)> = self
            .plugins
            .iter()
            .filter_map(|(name, rt)| {
                rt.serving
                    .as_ref()
                    .filter(|s| s.endpoint.is_some())
                    .map(|s| (name.clone(), s.container_id.clone()))
            })
            .collect();
        *self.usage_targets.lock().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    async fn on_event(&mut self, event: crate::ContainerEvent) {
        if event.role.as_deref() == Some("gateway") {
            if matches!(event.action, EventAction::Start) {
                // A restarted gateway starts empty: give it the directory again.
                self.last_pushed.clear();
                self.push_pending = true;
            } else if matches!(event.action, EventAction::Die { .. }) {
                self.notice(
                    None,
                    "the gateway container stopped; Docker restarts it".into(),
                );
            }
            return;
        }
        let Some(name) = event.plugin.clone() else {
            return;
        };
        match event.action {
            EventAction::Oom => {
                self.oom.insert(event.id.clone());
            }
            EventAction::Die { exit_code } => self.on_die(&name, &event.id, exit_code).await,
            _ => {}
        }
    }

    async fn on_die(&mut self, name: &str, id: &str, exit_code: Option<i64>) {
        let is_serving = self
            .plugins
            .get(name)
            .and_then(|r| r.serving.as_ref())
            .is_some_and(|s| s.container_id == id && s.endpoint.is_some());
        if !is_serving {
            return;
        }
        let oom = self.oom.remove(id)
            || self
                .docker
                .container_status(id)
                .await
                .is_ok_and(|s| s.oom_killed);
        let reason = if oom { "oom" } else { "crash" };
        let logs = self.docker.logs(id, 5).await.unwrap_or_default();
        let (failures, revision, max) = {
            let max = self.config.max_restarts;
            let cap = self.config.restart_cap;
            let rt = self.plugins.get_mut(name).expect("checked above");
            let s = rt.serving.as_mut().expect("checked above");
            s.endpoint = None;
            // A plugin that ran for a minute since its last start begins a new series.
            if s.started.elapsed() > Duration::from_secs(60) {
                rt.failures = 0;
            }
            rt.failures += 1;
            rt.restarts += 1;
            if rt.failures <= max {
                rt.restart_at = Some(Instant::now() + plan::backoff(rt.failures, cap));
            } else {
                rt.crash_failed = true;
                rt.restart_at = None;
            }
            (rt.failures, s.revision, max)
        };
        self.observe(ObservationsWire {
            restarts: vec![RestartWire {
                plugin: name.to_owned(),
                reason: reason.to_owned(),
            }],
            ..Default::default()
        })
        .await;
        let what = if oom {
            "was killed for exceeding its memory limit".to_owned()
        } else {
            format!(
                "exited with code {}",
                exit_code.map_or("?".into(), |c| c.to_string())
            )
        };
        self.audit(
            name,
            types::SECURITY,
            "failure",
            json!({
                "action": if oom { "oom-killed" } else { "crashed" },
                "revision": revision,
                "exitCode": exit_code,
                "failuresInARow": failures,
                "lastOutput": logs.trim(),
            }),
        );
        if failures > max {
            self.set_phase(
                name,
                Phase::Failed,
                Some(format!(
                    "revision {revision} {what}; {failures} failures in a row, no more restarts (`berth disable {name}` then `berth enable {name}` to try again)"
                )),
            );
        } else {
            let wait = plan::backoff(failures, self.config.restart_cap);
            self.set_phase(
                name,
                Phase::Degraded,
                Some(format!(
                    "revision {revision} {what}; restart {failures} of {max} in {} s",
                    wait.as_secs()
                )),
            );
        }
    }

    async fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .plugins
            .iter()
            .filter(|(_, r)| r.restart_at.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let (id, plugin, revision) = {
                let rt = self.plugins.get_mut(&name).expect("listed above");
                rt.restart_at = None;
                let Some(s) = rt.serving.as_ref() else {
                    continue;
                };
                (s.container_id.clone(), s.plugin.clone(), s.revision)
            };
            let network = self.instance.plugin_network(&name);
            let result = match self.docker.start_existing(&id).await {
                Ok(()) => self.wait_started(&id, &network, &plugin).await,
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(endpoint) => {
                    if let Some(s) = self.plugins.get_mut(&name).and_then(|r| r.serving.as_mut()) {
                        s.endpoint = Some(endpoint);
                        s.started = Instant::now();
                    }
                    self.set_phase(&name, Phase::Ready, None);
                    self.notice(Some(&name), format!("restarted revision {revision}"));
                    self.audit(
                        &name,
                        types::LIFECYCLE,
                        "success",
                        json!({"action": "restarted", "revision": revision}),
                    );
                    self.push().await;
                }
                Err(reason) => {
                    // Counts as one more failure; the die event (if any) schedules the next try.
                    let exited = self
                        .docker
                        .container_status(&id)
                        .await
                        .map(|s| !s.running)
                        .unwrap_or(true);
                    if exited {
                        self.on_die_after_restart(&name, &reason);
                    }
                }
            }
        }
    }

    fn on_die_after_restart(&mut self, name: &str, reason: &str) {
        let max = self.config.max_restarts;
        let cap = self.config.restart_cap;
        let Some(rt) = self.plugins.get_mut(name) else {
            return;
        };
        if rt.restart_at.is_some() || rt.crash_failed {
            return;
        }
        rt.failures += 1;
        if rt.failures <= max {
            rt.restart_at = Some(Instant::now() + plan::backoff(rt.failures, cap));
            let msg = format!("restart failed: {reason}");
            self.set_phase(name, Phase::Degraded, Some(msg));
        } else {
            rt.crash_failed = true;
            let msg = format!("restart failed: {reason}; no more restarts");
            self.set_phase(name, Phase::Failed, Some(msg));
        }
    }
}

/// Creates (or adopts) the edge network and the gateway container; returns its id and URL.
async fn ensure_gateway(
    docker: &DockerClient,
    instance: &Instance,
    config: &SupervisorConfig,
) -> Result<(String, String), SupervisorError> {
    let edge = instance.edge_network();
    docker.ensure_edge_network(&edge, instance.labels()).await?;
    let image = docker.inspect_image(&config.gateway_image).await?;
    let state_dir = config
        .state_dir
        .canonicalize()
        .unwrap_or_else(|_| config.state_dir.clone());
    let user = gateway::owner_of(&state_dir).map_err(|e| {
        SupervisorError::Gateway(format!(
            "cannot read the owner of {}: {e}",
            state_dir.display()
        ))
    })?;
    let spec = GatewaySpec {
        image: config.gateway_image.clone(),
        host_port: config.gateway_port,
        state_dir: state_dir.display().to_string(),
        user,
        admin_token_line: format!(
            "berth-cli sha256:{} admin",
            berth_store::audit::hex(&Sha256::digest(config.admin_token.as_bytes()))
        ),
        network: edge.clone(),
        labels: instance.gateway_labels(),
    };
    let digest = spec.config_digest(&image.id);
    let name = instance.gateway_container();
    let existing = docker
        .list_managed(instance)
        .await?
        .into_iter()
        .find(|c| c.role.as_deref() == Some("gateway"));
    let existing_digest = match &existing {
        Some(c) => docker
            .bollard()
            .inspect_container(&c.id, None)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .and_then(|mut l| l.remove(gateway::CONFIG_LABEL)),
        None => None,
    };
    let id = match existing {
        Some(c) if c.running && existing_digest.as_deref() == Some(digest.as_str()) => c.id,
        Some(c) => {
            docker.remove_container(&c.id).await?;
            docker
                .run_container(&name, gateway::gateway_container(&spec, &digest))
                .await?
        }
        None => {
            docker
                .run_container(&name, gateway::gateway_container(&spec, &digest))
                .await?
        }
    };
    let port = docker
        .published_port(&id, GATEWAY_PORT)
        .await?
        .ok_or_else(|| SupervisorError::Gateway("the gateway's port was not published".into()))?;
    Ok((id, format!("http://127.0.0.1:{port}")))
}

/// Every `interval`, reads CPU and memory of the serving containers (concurrently) and
/// sends them to the gateway's metrics.
async fn sample_usage(
    docker: DockerClient,
    admin: AdminClient,
    targets: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let list = targets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let samples = futures::future::join_all(list.iter().map(|(name, id)| {
            let docker = docker.clone();
            async move { (name, docker.usage(id).await) }
        }))
        .await;
        let usage: Vec<UsageWire> = samples
            .into_iter()
            .filter_map(|(name, u)| {
                u.ok().map(|u| UsageWire {
                    plugin: name.clone(),
                    cpu_cores: u.cpu_cores,
                    memory_bytes: u.memory_bytes,
                })
            })
            .collect();
        if !usage.is_empty() {
            admin
                .observe(&ObservationsWire {
                    usage,
                    ..Default::default()
                })
                .await;
        }
    }
}
