//! The Plugin controller: gather the input, plan, apply with server-side apply, report.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::{Plugin, PluginGrant};
use berth_contract::credential;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::audit::{ACTOR, AuditRecord, AuditSink, StdoutAudit};
use crate::metrics::Metrics;
use crate::plan::{
    DependencyState, DeploymentView, Notice, Plan, PlanInput, Transition, Workload, own_fields,
    plan_with_image, validation_problems,
};
use crate::render::{
    CONTAINER_NAME, FIELD_MANAGER, MANAGED_BY, PLUGIN_LABEL, RenderOptions, TOKEN_KEY,
    render_token_secret, token_secret_name,
};
use crate::supply_chain::{ImageCheck, SupplyChain};
use crate::{Error, Result};

/// The finalizer the operator puts on every Plugin it manages.
pub const FINALIZER: &str = "berth.dev/cleanup";
/// Name the operator reports Events under.
pub const REPORTER: &str = "berth-operator";

/// Validation problems of a plugin's spec and the generation they belong to.
type CachedValidation = (i64, Arc<[String]>);

/// What one reconcile needs besides the object.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on Plugins.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Plugins at or under this tier run without a grant.
    pub auto_approve: berth_api::RiskTier,
    /// Cluster facts for rendering.
    pub render: RenderOptions,
    /// Every Plugin the operator watches (dependencies, grant owners).
    pub plugins: Store<Plugin>,
    /// Every PluginGrant the operator watches.
    pub grants: Store<PluginGrant>,
    /// Per-object retry delays after errors.
    pub backoff: Backoff,
    /// The clock; tests fix it.
    pub now: fn() -> Timestamp,
    /// Resolves and verifies plugin images; `None` runs tags as given (`--pin-digests=false`).
    pub supply_chain: Option<Arc<SupplyChain>>,
    /// Where supply-chain decisions are recorded besides Events.
    pub audit: Arc<dyn AuditSink>,
    /// Validation results by plugin UID, for the generation they were computed for.
    validations: Mutex<HashMap<String, CachedValidation>>,
}

impl Context {
    /// The validation problems of `plugin`, computed once per `metadata.generation`.
    pub fn validation(&self, plugin: &Plugin) -> Arc<[String]> {
        let key = plugin.metadata.uid.clone();
        let generation = plugin.metadata.generation;
        let (Some(key), Some(generation)) = (key, generation) else {
            return validation_problems(plugin).into();
        };
        let mut cache = self.validations.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&key) {
            Some((g, problems)) if *g == generation => problems.clone(),
            _ => {
                let problems: Arc<[String]> = validation_problems(plugin).into();
                cache.insert(key, (generation, problems.clone()));
                problems
            }
        }
    }

    fn forget(&self, plugin: &Plugin) {
        if let Some(uid) = &plugin.metadata.uid {
            self.validations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }

    /// A context for a client, with its own stores.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        auto_approve: berth_api::RiskTier,
        render: RenderOptions,
        plugins: Store<Plugin>,
        grants: Store<PluginGrant>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            metrics,
            auto_approve,
            render,
            plugins,
            grants,
            backoff: Backoff::default(),
            now: Timestamp::now,
            supply_chain: None,
            audit: Arc::new(StdoutAudit),
            validations: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves image tags to digests and verifies them with `supply_chain`.
    pub fn with_supply_chain(mut self, supply_chain: Option<Arc<SupplyChain>>) -> Self {
        self.supply_chain = supply_chain;
        self
    }

    /// Writes audit records to `audit`.
    pub fn with_audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = audit;
        self
    }

    /// What the registry says about `plugin`'s image; `None` when digests are not resolved.
    async fn check_image(&self, plugin: &Plugin, valid: bool) -> Result<Option<ImageCheck>> {
        let Some(supply_chain) = &self.supply_chain else {
            return Ok(None);
        };
        if !valid {
            let required = supply_chain.options().policy.requires(plugin.name());
            return Ok(Some(ImageCheck::skipped(
                plugin,
                required,
                "the spec is not valid; the image is checked once it is",
            )));
        }
        supply_chain
            .check(&self.client, plugin, (self.now)())
            .await
            .map(Some)
    }
}

/// Exponential, capped, per-object retry delays.
#[derive(Debug)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl Backoff {
    /// Counts a failure of `key` and returns how long to wait before retrying it.
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_default();
        let delay = self
            .base
            .saturating_mul(2u32.saturating_pow(*n))
            .min(self.cap);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Reconciles one Plugin: one `finalizer()` call dispatching to apply or cleanup.
pub async fn reconcile(plugin: Arc<Plugin>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(plugin.as_ref());
    let namespace = plugin
        .namespace()
        .ok_or_else(|| Error::MissingField(format!("Plugin/{}", plugin.name_any()), "namespace"))?;
    let api: Api<Plugin> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, plugin, |event| async {
        match event {
            Finalizer::Apply(p) => apply(p, ctx.clone()).await,
            Finalizer::Cleanup(p) => cleanup(p, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile("plugin", started.elapsed());
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

/// Counts the error and retries the object after its own, growing delay.
pub fn error_policy(plugin: Arc<Plugin>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(plugin.as_ref());
    let delay = ctx.backoff.next(&key);
    warn!(plugin = %key, error = %error, retry_in = ?delay, "reconcile failed");
    ctx.metrics.count_error("plugin", error);
    Action::requeue(delay)
}

async fn apply(plugin: Arc<Plugin>, ctx: Arc<Context>) -> Result<Action> {
    // Deciding before the caches have listed once would take a granted plugin for an
    // ungranted one and stop it.
    let _ = ctx.grants.wait_until_ready().await;
    let _ = ctx.plugins.wait_until_ready().await;
    let namespace = plugin.namespace().unwrap_or_default();
    let name = plugin.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = deployments.get_opt(&name).await?;
    let view = deployment.as_ref().map(DeploymentView::from_deployment);

    let grants: Vec<Arc<PluginGrant>> = ctx
        .grants
        .state()
        .into_iter()
        .filter(|g| g.spec.plugin == name && g.namespace().as_deref() == Some(&namespace))
        .collect();
    let grant_refs: Vec<&PluginGrant> = grants.iter().map(AsRef::as_ref).collect();
    let dependencies: BTreeMap<String, DependencyState> = plugin
        .spec
        .depends_on
        .iter()
        .filter_map(|d| {
            let other = ctx
                .plugins
                .get(&ObjectRef::new(&d.name).within(&namespace))?;
            Some((
                d.name.clone(),
                DependencyState {
                    phase: other.status.as_ref().and_then(|s| s.phase),
                    version: other.spec.version.clone(),
                },
            ))
        })
        .collect();

    let validation = ctx.validation(&plugin);
    let check = ctx.check_image(&plugin, validation.is_empty()).await?;
    let mut plan = plan_with_image(
        PlanInput {
            plugin: &plugin,
            grants: &grant_refs,
            dependencies: &dependencies,
            deployment: view.as_ref(),
            now: (ctx.now)(),
            auto_approve: ctx.auto_approve,
            options: &ctx.render,
            validation: Some(&validation),
        },
        check.as_ref(),
    );
    if let Some(revision) = plan.digest_wanted
        && let Some(digest) = pod_digest(&ctx.client, &namespace, &name, revision).await?
    {
        plan.record_digest(revision, digest);
    }

    if let Some(revision) = plan.credential_wanted {
        let sha256 = ensure_credential(&ctx, &plugin, revision).await?;
        plan.record_credential(revision, sha256);
    }

    carry_out(&ctx.client, &namespace, &name, &plan.workload).await?;
    report(&plugin, &ctx, &plan).await?;
    // Only once the status no longer lists their digests: the pods that carried them are gone.
    for revision in &plan.stale_credentials {
        delete::<Secret>(
            &ctx.client,
            &namespace,
            &token_secret_name(&plugin, *revision),
        )
        .await?;
    }
    let mut requeue = plan.requeue_after;
    if let Some(recheck) = ctx
        .supply_chain
        .as_ref()
        .and_then(|s| s.recheck_after(&plugin))
    {
        requeue = requeue.min(recheck);
    }
    Ok(Action::requeue(requeue))
}

/// The digest (`sha256:HEX`) of the credential of `revision`: read from its Secret when one
/// exists, else a fresh token is minted and stored in a new Secret. The token is never
/// logged, reported or kept anywhere else.
async fn ensure_credential(ctx: &Context, plugin: &Plugin, revision: i64) -> Result<String> {
    let namespace = plugin.namespace().unwrap_or_default();
    let name = token_secret_name(plugin, revision);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(existing) = secrets.get_opt(&name).await? {
        let token = existing
            .data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .and_then(|t| std::str::from_utf8(&t.0).ok())
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => return Ok(credential::digest_line(token)),
            None => {
                // Immutable Secrets cannot be repaired in place: replace it.
                warn!(plugin = %key_of(plugin), secret = %name, "credential Secret has no token; issuing a new one");
                delete::<Secret>(&ctx.client, &namespace, &name).await?;
            }
        }
    }
    let token = credential::generate_token().map_err(Error::Random)?;
    let secret = render_token_secret(plugin, &ctx.render, revision, &token);
    secrets
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            },
            &secret,
        )
        .await?;
    info!(plugin = %key_of(plugin), secret = %name, revision, "issued a plugin credential");
    Ok(credential::digest_line(&token))
}

async fn report(plugin: &Plugin, ctx: &Context, plan: &Plan) -> Result<()> {
    let namespace = plugin.namespace().unwrap_or_default();
    let name = plugin.name_any();
    if plugin.status.as_ref().map(own_fields).as_ref() != Some(&plan.status) {
        let api: Api<Plugin> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "Plugin",
            "status": plan.status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    if let Some(t) = &plan.transition {
        publish(ctx, plugin, t).await;
    }
    if let Some(notice) = &plan.notice {
        record(ctx, plugin, notice).await;
    }
    ctx.metrics.set_phase(&key_of(plugin), plan.status.phase);
    Ok(())
}

/// Publishes a supply-chain decision as an Event and writes it as an audit record.
async fn record(ctx: &Context, plugin: &Plugin, notice: &Notice) {
    publish(
        ctx,
        plugin,
        &Transition {
            warning: notice.warning,
            reason: notice.reason.clone(),
            note: notice.note.clone(),
        },
    )
    .await;
    let now = (ctx.now)();
    ctx.audit.record(AuditRecord {
        time: Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
        actor: ACTOR.into(),
        plugin: plugin.name_any(),
        type_: notice.audit_type.into(),
        outcome: notice.outcome.into(),
        details: notice.details.clone(),
    });
    if notice.warning {
        warn!(plugin = %key_of(plugin), reason = %notice.reason, "{}", notice.note);
    } else {
        info!(plugin = %key_of(plugin), reason = %notice.reason, "{}", notice.note);
    }
}

async fn publish(ctx: &Context, plugin: &Plugin, t: &Transition) {
    let event = KubeEvent {
        type_: if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: t.reason.clone(),
        note: Some(truncate(&t.note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    // An Event is a courtesy: failing to record one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &plugin.object_ref(&())).await {
        warn!(plugin = %key_of(plugin), error = %e, "could not publish an Event");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Applies, keeps or removes the workload as planned.
async fn carry_out(
    client: &Client,
    namespace: &str,
    name: &str,
    workload: &Workload,
) -> Result<()> {
    match workload {
        Workload::Apply {
            rendered,
            remove_rbac,
            ..
        } => {
            ssa::<ServiceAccount>(client, namespace, name, &rendered.service_account).await?;
            if let Some(role) = &rendered.role {
                ssa::<Role>(client, namespace, name, role).await?;
            }
            if let Some(binding) = &rendered.role_binding {
                ssa::<RoleBinding>(client, namespace, name, binding).await?;
            }
            ssa::<Service>(client, namespace, name, &rendered.service).await?;
            ssa::<NetworkPolicy>(client, namespace, name, &rendered.network_policy).await?;
            ssa::<Deployment>(client, namespace, name, &rendered.deployment).await?;
            if *remove_rbac {
                delete_rbac(client, namespace, name).await?;
            }
        }
        Workload::Remove => {
            delete::<Deployment>(client, namespace, name).await?;
            delete_rbac(client, namespace, name).await?;
        }
        Workload::Keep | Workload::Nothing => {}
    }
    Ok(())
}

/// Server-side apply with the operator's field manager, taking over conflicting fields.
async fn ssa<K>(client: &Client, namespace: &str, name: &str, object: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Deletes an object; one that is already gone is fine.
async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a plugin's RoleBinding and Role. An operator not allowed to touch Roles (403)
/// cannot have created them either, so that is fine too: clusters that never grant plugins
/// Kubernetes permissions need not give the operator any RBAC rights.
async fn delete_rbac(client: &Client, namespace: &str, name: &str) -> Result<()> {
    for result in [
        delete::<RoleBinding>(client, namespace, name).await,
        delete::<Role>(client, namespace, name).await,
    ] {
        match result {
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 403 => {}
            other => other?,
        }
    }
    Ok(())
}

/// Removes everything the operator created for a plugin. Idempotent; tolerates apply never
/// having run. Owner references would collect the objects too, but only later: deleting them
/// here stops the plugin serving before the Plugin disappears.
async fn cleanup(plugin: Arc<Plugin>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = plugin.namespace().unwrap_or_default();
    let name = plugin.name_any();
    let client = &ctx.client;
    delete::<Deployment>(client, &namespace, &name).await?;
    delete::<NetworkPolicy>(client, &namespace, &name).await?;
    delete::<Service>(client, &namespace, &name).await?;
    delete_rbac(client, &namespace, &name).await?;
    delete::<ServiceAccount>(client, &namespace, &name).await?;
    for c in plugin.status.iter().flat_map(|s| &s.credentials) {
        delete::<Secret>(client, &namespace, &token_secret_name(&plugin, c.revision)).await?;
    }
    publish(
        &ctx,
        &plugin,
        &Transition {
            warning: false,
            reason: "Deleted".into(),
            note:
                "removed the plugin's Deployment, Service, NetworkPolicy, ServiceAccount, RBAC and credentials"
                    .into(),
        },
    )
    .await;
    ctx.metrics.set_phase(&key_of(plugin.as_ref()), None);
    ctx.forget(&plugin);
    if let Some(supply_chain) = &ctx.supply_chain {
        supply_chain.forget(&plugin);
    }
    info!(plugin = %key_of(plugin.as_ref()), "cleaned up");
    Ok(Action::await_change())
}

/// The digest the pods of `revision` run, from their container status.
async fn pod_digest(
    client: &Client,
    namespace: &str,
    name: &str,
    revision: i64,
) -> Result<Option<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{PLUGIN_LABEL}={name},{}={revision}",
        crate::render::REVISION_ANNOTATION
    );
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    Ok(list.items.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == CONTAINER_NAME)
            .and_then(|c| {
                c.image_id
                    .find("sha256:")
                    .map(|i| c.image_id[i..].to_string())
            })
    }))
}

/// Plugins in `store` that depend on `changed`.
fn dependents(store: &Store<Plugin>, changed: &Plugin) -> Vec<ObjectRef<Plugin>> {
    let namespace = changed.namespace();
    let name = changed.name_any();
    store
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace && p.spec.depends_on.iter().any(|d| d.name == name))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Runs the Plugin controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    concurrency: u16,
    build_context: impl FnOnce(Store<Plugin>, Store<PluginGrant>) -> Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let plugins: Api<Plugin> = scoped(&client, namespace);
    let grants: Api<PluginGrant> = scoped(&client, namespace);
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));

    // The grant cache is driven by a task of its own; the controller's `watches` below only
    // triggers reconciles (sharing one watch needs kube's unstable stream API).
    let (grant_store, grant_writer) = reflector::store::<PluginGrant>();
    let grant_cache = watcher(grants.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(grant_writer)
        .for_each(|_| futures::future::ready(()));
    let grant_cache = tokio::spawn(grant_cache);

    let controller = Controller::new(plugins.clone(), watcher::Config::default().any_semantic());
    let plugin_store = controller.store();
    let dependents_store = plugin_store.clone();
    let ctx = build_context(plugin_store, grant_store);
    controller
        .owns(scoped::<Deployment>(&client, namespace), owned.clone())
        .owns(scoped::<NetworkPolicy>(&client, namespace), owned)
        .watches(grants, watcher::Config::default(), |grant: PluginGrant| {
            grant
                .namespace()
                .map(|ns| ObjectRef::new(&grant.spec.plugin).within(&ns))
        })
        .watches(
            plugins,
            watcher::Config::default(),
            move |changed: Plugin| dependents(&dependents_store, &changed),
        )
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "plugin controller");
            }
        })
        .await;
    grant_cache.abort();
}

/// An Api over one namespace or all of them.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_per_object_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.next("ns/a"), Duration::from_secs(1));
        assert_eq!(b.next("ns/a"), Duration::from_secs(2));
        assert_eq!(b.next("ns/a"), Duration::from_secs(4));
        assert_eq!(b.next("ns/b"), Duration::from_secs(1));
        for _ in 0..20 {
            b.next("ns/a");
        }
        assert_eq!(b.next("ns/a"), Duration::from_secs(300));
        b.reset("ns/a");
        assert_eq!(b.next("ns/a"), Duration::from_secs(1));
    }

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1004);
        assert!(t.ends_with('…'));
    }
}
