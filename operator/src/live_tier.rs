//! The cluster gateway's live tiers in `status.liveTier` of each Plugin, so that
//! `kubectl get plugins` shows TIER.
//!
//! Runs in the gateway process (`berth gateway --backend kubernetes`), not in the operator:
//! the gateway computes the tiers. It server-side applies only `status.liveTier`, under its
//! own field manager [`GATEWAY_FIELD_MANAGER`], so the operator's status writes neither wipe
//! it nor take it over (the Plugin reconciler compares its status without it, see
//! [`crate::plan::own_fields`]).
//!
//! One writer: every replica rates the traffic it carries, but only the replica holding the
//! Lease [`LEASE_NAME`] in the served namespace writes (decision 0063). A replica's share of
//! the traffic can be too small to rate while the plugin is busy, so an unrated reading never
//! replaces a tier unless the writer saw no call at all for a whole window ([`writable`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_api::{LiveTier, Plugin};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::leader::LeaseLock;

/// The Lease that elects the one gateway replica that writes live tiers.
pub const LEASE_NAME: &str = "berth-gateway-live-tier";

/// How long the live-tier Lease lasts without renewal; it is renewed every third of it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

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

/// True when `current` may be written at all. A rated tier always may. An unrated one only
/// when this replica saw no call at all (`calls == 0`) over a whole window of its own
/// (`observed` is how long it has followed the plugin): too few calls to rate, or a window
/// that has not run its length since the gateway started, says nothing about the traffic the
/// other replicas carry, and must not wipe a tier.
pub fn writable(current: &LiveTier, observed: Duration) -> bool {
    current.tier.is_some()
        || (current.calls == 0 && observed >= Duration::from_secs(current.window_seconds))
}

/// Runs the gateway's live-tier writer in `namespace`: competes for the Lease [`LEASE_NAME`]
/// there as `identity` and, while it holds it, [`follow`]s `tiers`. Returns when the
/// gateway drops the sender of `tiers`.
pub async fn run(
    client: Client,
    namespace: &str,
    identity: &str,
    tiers: watch::Receiver<Arc<BTreeMap<String, LiveTier>>>,
    limits: WriteLimits,
) {
    let lock = LeaseLock::new(
        client.clone(),
        namespace,
        LEASE_NAME,
        identity,
        LEASE_DURATION,
    );
    let (leading_tx, leading_rx) = watch::channel(false);
    tokio::select! {
        () = lead(lock, LEASE_DURATION / 3, leading_tx) => {}
        () = follow(client, namespace, tiers, limits, leading_rx) => {}
    }
}

/// Holds `lock` whenever it can, trying and renewing every `every`, and tells `leading`
/// whether this replica holds it. Returns when nobody listens to `leading` any more.
pub async fn lead(lock: LeaseLock, every: Duration, leading: watch::Sender<bool>) {
    let campaign = async {
        loop {
            lock.acquire(every).await;
            info!(identity = %lock.identity(), lease = LEASE_NAME, "this gateway replica writes live tiers");
            leading.send_replace(true);
            lock.hold(every).await;
            leading.send_replace(false);
            tokio::time::sleep(every).await;
        }
    };
    tokio::select! {
        () = campaign => {}
        () = leading.closed() => {}
    }
}

/// Follows `tiers` and, while `leading` is true, applies each Plugin's `status.liveTier` in
/// `namespace`, within `limits`, until the sender of `tiers` is dropped. A plugin that is not
/// (or no longer) a Plugin of the namespace is skipped; other API errors are logged and tried
/// again next round. An unrated reading is written only when [`writable`].
pub async fn follow(
    client: Client,
    namespace: &str,
    mut tiers: watch::Receiver<Arc<BTreeMap<String, LiveTier>>>,
    limits: WriteLimits,
    mut leading: watch::Receiver<bool>,
) {
    let api: Api<Plugin> = Api::namespaced(client, namespace);
    let mut written: HashMap<String, Written> = HashMap::new();
    // When this replica first saw each plugin: its window has run that long.
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    let mut next_round = Instant::now();
    loop {
        let current = tiers.borrow_and_update().clone();
        let now = Instant::now();
        for plugin in current.keys() {
            first_seen.entry(plugin.clone()).or_insert(now);
        }
        first_seen.retain(|name, _| current.contains_key(name));
        if !*leading.borrow_and_update() {
            // Another replica writes; what this one wrote before may since have changed.
            written.clear();
            tokio::select! {
                changed = tiers.changed() => if changed.is_err() { return },
                changed = leading.changed() => if changed.is_err() {
                    // Nobody will ever make this replica the writer: just wait for the end.
                    while tiers.changed().await.is_ok() {}
                    return;
                },
            }
            continue;
        }
        let mut pending = false;
        for (plugin, tier) in current.iter() {
            let observed = first_seen
                .get(plugin)
                .map_or(Duration::ZERO, |t| now.duration_since(*t));
            if !writable(tier, observed) {
                debug!(plugin = %plugin, calls = tier.calls, "unrated here; the written tier stays");
                continue;
            }
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
            tokio::select! {
                result = tokio::time::timeout(wait, tiers.changed()) => {
                    if let Ok(Err(_)) = result { return }
                }
                _ = leading.changed() => {}
            }
        } else {
            tokio::select! {
                changed = tiers.changed() => if changed.is_err() { return },
                _ = leading.changed() => {}
            }
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
        let (_leading, leading) = watch::channel(true);
        let task =
            tokio::spawn(async move { follow(client, "default", rx, limits, leading).await });
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
        let (_leading, leading) = watch::channel(true);
        let task =
            tokio::spawn(async move { follow(client, "default", rx, limits, leading).await });
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

    fn unrated(calls: u64) -> LiveTier {
        LiveTier {
            tier: None,
            reasons: Vec::new(),
            calls,
            window_seconds: 300,
            inputs: None,
            since: None,
        }
    }

    const LEASE: &str =
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/berth-gateway-live-tier";

    #[tokio::test]
    async fn a_replica_that_does_not_hold_the_lease_writes_nothing() {
        let (client, verifier) = mock_client();
        // The Lease is another replica's, renewed just now; no PATCH may follow.
        let server = verifier.run_then_quiet(
            vec![Expect::new(
                Method::GET,
                LEASE,
                Reply::Json(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": LEASE_NAME, "namespace": "default", "resourceVersion": "3"},
                    "spec": {
                        "holderIdentity": "gateway-b", "leaseDurationSeconds": 15,
                        "renewTime": "2026-03-01T11:59:58.000000Z"
                    }
                })),
            )],
            Duration::from_millis(300),
        );
        let lock = LeaseLock::new(
            client.clone(),
            "default",
            LEASE_NAME,
            "gateway-a",
            LEASE_DURATION,
        )
        .with_clock(crate::fixtures::now);
        let (leading_tx, leading_rx) = watch::channel(false);
        let (tx, rx) = watch::channel(Arc::new(BTreeMap::from([(
            "calculator".to_string(),
            live(Tier::Gold, 10),
        )])));
        let limits = WriteLimits {
            min_interval: Duration::from_millis(10),
            refresh: Duration::from_millis(20),
        };
        let lead = tokio::spawn(lead(lock, Duration::from_secs(3600), leading_tx));
        let task =
            tokio::spawn(async move { follow(client, "default", rx, limits, leading_rx).await });
        for t in [live(Tier::Silver, 20), live(Tier::Bronze, 30)] {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_replace(Arc::new(BTreeMap::from([("calculator".to_string(), t)])));
        }
        let seen = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .expect("only the Lease was read");
        assert_eq!(seen.len(), 1);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the writer stops when the gateway drops the sender")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), lead)
            .await
            .expect("the campaign stops when the writer is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn an_unrated_reading_does_not_wipe_a_rated_tier() {
        let (client, verifier) = mock_client();
        let server = verifier.run_then_quiet(
            vec![gateway_patch("calculator")],
            Duration::from_millis(300),
        );
        let (tx, rx) = watch::channel(Arc::new(BTreeMap::from([(
            "calculator".to_string(),
            live(Tier::Gold, 40),
        )])));
        let limits = WriteLimits {
            min_interval: Duration::from_millis(10),
            refresh: Duration::from_millis(20),
        };
        let (_leading, leading) = watch::channel(true);
        let task =
            tokio::spawn(async move { follow(client, "default", rx, limits, leading).await });
        // Too few calls in this replica's window to rate, then none in a window that has not
        // run its length yet: neither replaces Gold.
        for t in [unrated(3), unrated(0)] {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_replace(Arc::new(BTreeMap::from([("calculator".to_string(), t)])));
        }
        let seen = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .expect("one write, of the rated tier");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].body["status"]["liveTier"]["tier"], "Gold");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn unrated_is_written_only_after_a_whole_window_without_calls() {
        let window = Duration::from_secs(300);
        assert!(writable(&live(Tier::Bronze, 1), Duration::ZERO));
        assert!(!writable(&unrated(3), window * 10));
        assert!(!writable(&unrated(0), window - Duration::from_secs(1)));
        assert!(writable(&unrated(0), window));
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
