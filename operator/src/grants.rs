//! The PluginGrant controller: reports whether each grant is active, expired or orphaned.
//!
//! Coverage itself is decided by the Plugin controller, which watches grants and looks again
//! at the earliest expiry; this controller only keeps each grant's own status true.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{
    ConditionStatus, GrantState, Plugin, PluginGrant, PluginGrantStatus, validate_grant,
};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use crate::controller::{Backoff, scoped};
use crate::metrics::Metrics;
use crate::plan::{RESYNC, cond, merge_conditions};
use crate::render::FIELD_MANAGER;
use crate::{Error, Result};

/// Condition: the grant names a plugin that exists.
pub const PLUGIN_FOUND: &str = "PluginFound";
/// Condition: the grant passed `berth-api` validation.
pub const VALID: &str = "Valid";

/// What a grant reconcile needs.
pub struct GrantContext {
    /// The Kubernetes client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Every Plugin the operator watches.
    pub plugins: Store<Plugin>,
    /// Per-object retry delays after errors.
    pub backoff: Backoff,
    /// The clock; tests fix it.
    pub now: fn() -> Timestamp,
}

/// The status a grant should have, and when to look at it again.
pub fn grant_status(
    grant: &PluginGrant,
    plugin_exists: bool,
    now: Timestamp,
) -> (PluginGrantStatus, Duration) {
    let previous = grant.status.clone().unwrap_or_default();
    let problems: Vec<String> = validate_grant(grant)
        .into_iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect();
    let expired = grant.spec.is_expired(now);
    let state = if !plugin_exists {
        GrantState::Orphaned
    } else if expired {
        GrantState::Expired
    } else {
        GrantState::Active
    };
    let found = if plugin_exists {
        cond(
            PLUGIN_FOUND,
            ConditionStatus::True,
            "PluginFound",
            format!("Plugin {} exists", grant.spec.plugin),
        )
    } else {
        cond(
            PLUGIN_FOUND,
            ConditionStatus::False,
            "PluginNotFound",
            format!(
                "no Plugin named {:?} in this namespace; the grant covers nothing until one exists",
                grant.spec.plugin
            ),
        )
    };
    let valid = if problems.is_empty() {
        cond(VALID, ConditionStatus::True, "Valid", "the grant is valid")
    } else {
        cond(
            VALID,
            ConditionStatus::False,
            "Invalid",
            problems.join("; "),
        )
    };
    let generation = grant.metadata.generation;
    let status = PluginGrantStatus {
        state: Some(state),
        conditions: merge_conditions(&previous.conditions, vec![valid, found], now, generation),
        observed_generation: generation,
    };
    let requeue = match grant.spec.expiry() {
        Some(Ok(at)) if at > now => {
            let secs = at.as_second().saturating_sub(now.as_second()).max(1) as u64;
            RESYNC.min(Duration::from_secs(secs))
        }
        _ => RESYNC,
    };
    (status, requeue)
}

/// Reconciles one PluginGrant's status.
pub async fn reconcile(grant: Arc<PluginGrant>, ctx: Arc<GrantContext>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&grant, &ctx).await;
    ctx.metrics.observe_reconcile("grant", started.elapsed());
    if result.is_ok() {
        ctx.backoff.reset(&grant_key(&grant));
    }
    result
}

async fn reconcile_inner(grant: &PluginGrant, ctx: &GrantContext) -> Result<Action> {
    let namespace = grant.namespace().ok_or_else(|| {
        Error::MissingField(format!("PluginGrant/{}", grant.name_any()), "namespace")
    })?;
    // Before the plugin cache has listed once, every grant would look orphaned.
    let _ = ctx.plugins.wait_until_ready().await;
    let exists = ctx
        .plugins
        .get(&ObjectRef::new(&grant.spec.plugin).within(&namespace))
        .is_some();
    let (status, requeue) = grant_status(grant, exists, (ctx.now)());
    if grant.status.as_ref() != Some(&status) {
        let api: Api<PluginGrant> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "PluginGrant",
            "status": status,
        });
        api.patch_status(
            &grant.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    Ok(Action::requeue(requeue))
}

fn grant_key(grant: &PluginGrant) -> String {
    format!(
        "{}/{}",
        grant.namespace().unwrap_or_default(),
        grant.name_any()
    )
}

/// Counts the error and retries the grant after its own, growing delay.
pub fn error_policy(grant: Arc<PluginGrant>, error: &Error, ctx: Arc<GrantContext>) -> Action {
    let key = grant_key(&grant);
    let delay = ctx.backoff.next(&key);
    warn!(grant = %key, error = %error, retry_in = ?delay, "grant reconcile failed");
    ctx.metrics.count_error("grant", error);
    Action::requeue(delay)
}

/// Runs the PluginGrant controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    ctx: Arc<GrantContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let grants: Api<PluginGrant> = scoped(&client, namespace);
    let plugins: Api<Plugin> = scoped(&client, namespace);
    let controller = Controller::new(grants, watcher::Config::default().any_semantic());
    let store = controller.store();
    // A plugin appearing or disappearing changes whether its grants are orphaned.
    controller
        .watches(
            plugins,
            watcher::Config::default(),
            move |plugin: Plugin| {
                let namespace = plugin.namespace();
                let name = plugin.name_any();
                store
                    .state()
                    .iter()
                    .filter(|g| g.namespace() == namespace && g.spec.plugin == name)
                    .map(|g| ObjectRef::from_obj(g.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(controller::Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "grant controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use berth_api::PluginGrantSpec;

    use super::*;

    fn grant(expires_at: Option<&str>) -> PluginGrant {
        let mut g = PluginGrant::new(
            "http-fetch",
            PluginGrantSpec {
                plugin: "http-fetch".into(),
                permissions: Default::default(),
                granted_by: "platform@example.com".into(),
                reason: None,
                expires_at: expires_at.map(String::from),
            },
        );
        g.metadata.namespace = Some("default".into());
        g.metadata.generation = Some(3);
        g
    }

    fn now() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_grant_for_a_missing_plugin_is_orphaned() {
        let (status, _) = grant_status(&grant(None), false, now());
        assert_eq!(status.state, Some(GrantState::Orphaned));
        let found = status
            .conditions
            .iter()
            .find(|c| c.type_ == PLUGIN_FOUND)
            .unwrap();
        assert_eq!(found.status, ConditionStatus::False);
        assert!(found.message.as_deref().unwrap().contains("\"http-fetch\""));
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn an_active_grant_is_looked_at_again_when_it_expires() {
        let (status, requeue) = grant_status(&grant(Some("2026-03-01T12:01:40Z")), true, now());
        assert_eq!(status.state, Some(GrantState::Active));
        assert_eq!(requeue, Duration::from_secs(100));
    }

    #[test]
    fn a_grant_past_its_expiry_is_expired() {
        let (status, requeue) = grant_status(&grant(Some("2026-03-01T11:00:00Z")), true, now());
        assert_eq!(status.state, Some(GrantState::Expired));
        assert_eq!(requeue, RESYNC);
    }

    #[test]
    fn status_is_stable_when_nothing_changed() {
        let mut g = grant(None);
        let (first, _) = grant_status(&g, true, now());
        g.status = Some(first.clone());
        let later: Timestamp = "2026-03-02T12:00:00Z".parse().unwrap();
        let (second, _) = grant_status(&g, true, later);
        assert_eq!(first, second);
    }
}
