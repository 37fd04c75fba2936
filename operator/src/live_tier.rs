//! The cluster gateway's live tiers in `status.liveTier` of each Plugin, so that
//! `kubectl get plugins` shows TIER.
//!
//! Runs in the gateway process (`berth gateway --backend kubernetes`), not in the operator:
//! the gateway computes the tiers. It server-side applies only `status.liveTier`, under its
//! own field manager [`GATEWAY_FIELD_MANAGER`], so the operator's status writes neither wipe
//! it nor take it over (the Plugin reconciler compares its status without it, see
//! [`crate::plan::own_fields`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_api::{LiveTier, Plugin};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Field manager of `status.liveTier`.
pub const GATEWAY_FIELD_MANAGER: &str = "berth-gateway";

/// How often live tiers are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLimits {
    /// Least time between two rounds of writes: tier changes are written at most this late.
    pub min_interval: Duration,
    /// A plugin whose tier did not change is written again (fresh `calls` and inputs) at
    /// most this often.
    pub refresh: Duration,
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(5),
            refresh: Duration::from_secs(60),
        }
    }
}

/// What was last written for one plugin, and when.
#[derive(Clone, Debug)]
struct Written {
    tier: LiveTier,
    at: Instant,
}

/// True when `current` should be written now: never written, a different tier or
/// reasons (written at once), or other figures older than `refresh`.
fn due(last: Option<&Written>, current: &LiveTier, now: Instant, refresh: Duration) -> bool {
    match last {
        None => true,
        Some(w) if w.tier.tier != current.tier || w.tier.reasons != current.reasons => true,
        Some(w) => w.tier != *current && now.duration_since(w.at) >= refresh,
    }
}

/// Follows `tiers` and applies each Plugin's `status.liveTier` in `namespace`, within
/// `limits`, until the sender is dropped. A plugin that is not (or no longer) a Plugin of
/// the namespace is skipped; other API errors are logged and tried again next round.
pub async fn follow(
    client: Client,
    namespace: &str,
    mut tiers: watch::Receiver<Arc<BTreeMap<String, LiveTier>>>,
    limits: WriteLimits,
) {
    let api: Api<Plugin> = Api::namespaced(client, namespace);
    let mut written: HashMap<String, Written> = HashMap::new();
    let mut next_round = Instant::now();
    loop {
        let current = tiers.borrow_and_update().clone();
        let now = Instant::now();
        let mut pending = false;
        for (plugin, tier) in current.iter() {
            if !due(written.get(plugin), tier, now, limits.refresh) {
                if written.get(plugin).is_some_and(|w| w.tier != *tier) {
                    pending = true;
                }
                continue;
            }
            match apply(&api, plugin, tier).await {
                Ok(()) => {
                    written.insert(
                        plugin.clone(),
                        Written {
                            tier: tier.clone(),
                            at: now,
                        },
                    );
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    debug!(plugin = %plugin, "no such Plugin in the namespace; live tier not written");
                    // Not again until its tier changes.
                    written.insert(
                        plugin.clone(),
                        Written {
                            tier: tier.clone(),
                            at: now,
                        },
                    );
                }
                Err(e) => {
                    warn!(plugin = %plugin, error = %e, "could not write the live tier");
                    pending = true;
                }
            }
        }
        written.retain(|name, _| current.contains_key(name));
        next_round = next_round.max(now) + limits.min_interval;
        tokio::time::sleep_until(next_round).await;
        if pending {
            // Figures left for later: look again after `refresh` even without a change.
            let wait = limits.refresh.saturating_sub(limits.min_interval);
            if let Ok(Err(_)) = tokio::time::timeout(wait, tiers.changed()).await {
                return;
            }
        } else if tiers.changed().await.is_err() {
            return;
        }
    }
}

async fn apply(api: &Api<Plugin>, plugin: &str, tier: &LiveTier) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Plugin",
        "status": { "liveTier": tier },
    });
    api.patch_status(
        plugin,
        &PatchParams::apply(GATEWAY_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use berth_api::Tier;
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::fixtures::{Expect, Reply, mock_client};

    const PLUGINS: &str = "/apis/berth.dev/v1alpha1/namespaces/default/plugins";

    fn live(tier: Tier, calls: u64) -> LiveTier {
        LiveTier {
            tier: Some(tier),
            reasons: Vec::new(),
            calls,
            window_seconds: 300,
            inputs: None,
            since: Some("2026-03-01T12:00:00Z".into()),
        }
    }

    fn plugin_json(name: &str) -> serde_json::Value {
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"image": "berth/calculator:0.1.0", "version": "0.1.0"}
        })
    }

    fn gateway_patch(name: &str) -> Expect {
        let mut e = Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/{name}/status"),
            Reply::WithStatus(plugin_json(name)),
        );
        e.query_contains = &["fieldManager=berth-gateway", "force=true"];
        e
    }

    #[tokio::test]
    async fn a_tier_change_is_applied_as_live_tier_under_the_gateway_field_manager() {
        let (client, verifier) = mock_client();
        let server = verifier.run(vec![
            gateway_patch("calculator"),
            gateway_patch("calculator"),
        ]);
        let (tx, rx) = watch::channel(Arc::new(BTreeMap::from([(
            "calculator".to_string(),
            live(Tier::Platinum, 10),
        )])));
        let limits = WriteLimits {
            min_interval: Duration::from_millis(10),
            refresh: Duration::from_secs(3600),
        };
        let task = tokio::spawn(async move { follow(client, "default", rx, limits).await });
        // Fresh figures with the same tier wait for `refresh`; a new tier goes at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(Arc::new(BTreeMap::from([(
            "calculator".to_string(),
            live(Tier::Platinum, 20),
        )])));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(Arc::new(BTreeMap::from([(
            "calculator".to_string(),
            live(Tier::Silver, 30),
        )])));
        let seen = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("both writes were made")
            .unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the writer stops when the gateway drops the sender")
            .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].body,
            json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "Plugin",
                "status": {"liveTier": serde_json::to_value(live(Tier::Platinum, 10)).unwrap()}
            })
        );
        assert_eq!(seen[1].body["status"]["liveTier"]["tier"], "Silver");
        assert_eq!(seen[1].body["status"]["liveTier"]["calls"], 30);
    }

    #[tokio::test]
    async fn a_plugin_outside_the_namespace_is_not_retried() {
        let (client, verifier) = mock_client();
        let server = verifier.run(vec![Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/ghost/status"),
            Reply::Error(404),
        )]);
        let (tx, rx) = watch::channel(Arc::new(BTreeMap::from([(
            "ghost".to_string(),
            live(Tier::Gold, 1),
        )])));
        let limits = WriteLimits {
            min_interval: Duration::from_millis(10),
            refresh: Duration::from_secs(3600),
        };
        let task = tokio::spawn(async move { follow(client, "default", rx, limits).await });
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        // The same tier again: no call (the verifier would not answer one).
        tx.send_replace(Arc::new(BTreeMap::from([(
            "ghost".to_string(),
            live(Tier::Gold, 1),
        )])));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn only_tier_or_reason_changes_are_due_at_once() {
        let now = Instant::now();
        let last = Written {
            tier: live(Tier::Gold, 10),
            at: now,
        };
        let refresh = Duration::from_secs(60);
        assert!(due(None, &live(Tier::Gold, 10), now, refresh));
        assert!(!due(Some(&last), &live(Tier::Gold, 10), now, refresh));
        assert!(!due(Some(&last), &live(Tier::Gold, 11), now, refresh));
        assert!(due(
            Some(&last),
            &live(Tier::Gold, 11),
            now + refresh,
            refresh
        ));
        assert!(!due(
            Some(&last),
            &live(Tier::Gold, 10),
            now + refresh,
            refresh
        ));
        assert!(due(Some(&last), &live(Tier::Bronze, 10), now, refresh));
        let mut reasoned = live(Tier::Gold, 10);
        reasoned.reasons.push("error ratio 0.5 % → Gold".into());
        assert!(due(Some(&last), &reasoned, now, refresh));
    }
}
