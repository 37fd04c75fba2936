//! The gateway's view of a cluster: a [`PluginDirectory`] fed by watching Plugins,
//! PluginGrants and the EndpointSlices of their Services.
//!
//! Lives here rather than in `berth-gateway` so that the gateway builds without kube.

use std::sync::Arc;

use berth_api::approval::{allowed_calls, allowed_egress};
use berth_api::{Phase, Plugin, PluginGrant, RiskTier};
use berth_contract::credential;
use berth_contract::{DirectorySnapshot, Endpoint, PluginDirectory, PluginEntry, StaticDirectory};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::render::{MANAGED_BY, PORT_NAME};

/// Label the EndpointSlice controller puts on every slice, naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A directory of the plugins in one namespace, kept current by watches.
pub struct KubernetesDirectory {
    inner: StaticDirectory,
}

impl PluginDirectory for KubernetesDirectory {
    fn snapshot(&self) -> Arc<DirectorySnapshot> {
        self.inner.snapshot()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<DirectorySnapshot>> {
        self.inner.subscribe()
    }
}

impl KubernetesDirectory {
    /// Starts watching `namespace`; the directory reports not synced until every watch has
    /// listed once. Drop or abort the task to stop.
    pub fn start(
        client: Client,
        namespace: &str,
        auto_approve: RiskTier,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let directory = Arc::new(Self {
            inner: StaticDirectory::unsynced(),
        });
        let plugins: Api<Plugin> = Api::namespaced(client.clone(), namespace);
        let grants: Api<PluginGrant> = Api::namespaced(client.clone(), namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(client, namespace);
        // Services carry the operator's labels and the EndpointSlice controller mirrors them.
        let owned = watcher::Config::default()
            .labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));

        let (plugin_store, plugin_writer) = reflector::store::<Plugin>();
        let (grant_store, grant_writer) = reflector::store::<PluginGrant>();
        let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
        let changes = futures::stream::select_all([
            watcher(plugins, watcher::Config::default())
                .default_backoff()
                .reflect(plugin_writer)
                .map(|e| e.map(|_| ()))
                .boxed(),
            watcher(grants, watcher::Config::default())
                .default_backoff()
                .reflect(grant_writer)
                .map(|e| e.map(|_| ()))
                .boxed(),
            watcher(slices, owned)
                .default_backoff()
                .reflect(slice_writer)
                .map(|e| e.map(|_| ()))
                .boxed(),
        ]);
        let target = directory.clone();
        let task = tokio::spawn(async move {
            let mut changes = changes;
            let _ = futures::join!(
                plugin_store.wait_until_ready(),
                grant_store.wait_until_ready(),
                slice_store.wait_until_ready()
            );
            let mut next_expiry =
                target.publish(&plugin_store, &grant_store, &slice_store, auto_approve);
            loop {
                // A grant that lapses changes what is allowed without any watch event:
                // publish again when it does.
                let lapse = async {
                    match next_expiry {
                        Some(at) => {
                            let wait = Timestamp::now().duration_until(at);
                            let wait = std::time::Duration::try_from(wait).unwrap_or_default();
                            tokio::time::sleep(wait).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    change = changes.next() => match change {
                        None => break,
                        Some(Err(e)) => {
                            warn!(error = %e, "plugin directory watch");
                            continue;
                        }
                        Some(Ok(())) => {}
                    },
                    () = lapse => {}
                }
                next_expiry =
                    target.publish(&plugin_store, &grant_store, &slice_store, auto_approve);
            }
        });
        (directory, task)
    }

    /// Publishes the entries as of now; returns when the first grant in force expires.
    fn publish(
        &self,
        plugins: &Store<Plugin>,
        grants: &Store<PluginGrant>,
        slices: &Store<EndpointSlice>,
        auto_approve: RiskTier,
    ) -> Option<Timestamp> {
        let now = Timestamp::now();
        let grants = grants.state();
        self.inner.replace_all(entries(
            &plugins.state(),
            &grants,
            &slices.state(),
            now,
            auto_approve,
        ));
        next_expiry(&grants, now)
    }
}

/// The first expiry after `now` among `grants`: what they allow changes then.
pub fn next_expiry(grants: &[Arc<PluginGrant>], now: Timestamp) -> Option<Timestamp> {
    grants
        .iter()
        .filter_map(|g| g.spec.expiry()?.ok())
        .filter(|at| *at > now)
        .min()
}

/// The directory entries for plugins, their grants and their Services' EndpointSlices (all
/// of one namespace). Pure.
pub fn entries(
    plugins: &[Arc<Plugin>],
    grants: &[Arc<PluginGrant>],
    slices: &[Arc<EndpointSlice>],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Vec<PluginEntry> {
    plugins
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|plugin| {
            let name = plugin.name();
            let own: Vec<&PluginGrant> = grants
                .iter()
                .filter(|g| g.spec.plugin == name)
                .map(AsRef::as_ref)
                .collect();
            let phase = plugin
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending);
            let endpoints = ready_endpoints(name, slices);
            credential_digests(plugin)
                .into_iter()
                .fold(
                    PluginEntry::new((**plugin).clone()),
                    PluginEntry::with_token_digest,
                )
                .with_phase(phase)
                .with_revision(plugin.metadata.generation.unwrap_or(1).max(1) as u64)
                .with_endpoints(endpoints)
                .with_granted_calls(allowed_calls(plugin, &own, now, auto_approve))
                .with_granted_egress(allowed_egress(plugin, &own, now, auto_approve))
        })
        .collect()
}

/// The token digests the operator recorded in the plugin's status: one per revision whose
/// pods may still run. A digest that does not parse is skipped (it authenticates nobody).
fn credential_digests(plugin: &Plugin) -> Vec<[u8; 32]> {
    plugin
        .status
        .iter()
        .flat_map(|s| &s.credentials)
        .filter_map(|c| credential::parse_digest(&c.sha256).ok())
        .collect()
}

/// Addresses of ready, not terminating endpoints of Service `name`, on its `http` port.
fn ready_endpoints(name: &str, slices: &[Arc<EndpointSlice>]) -> Vec<Endpoint> {
    let mut urls: Vec<String> = slices
        .iter()
        .filter(|s| s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name))
        .flat_map(|slice| {
            let ports = slice.ports.as_deref().unwrap_or_default();
            let port = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(PORT_NAME))
                .or_else(|| ports.first())
                .and_then(|p| p.port);
            let v6 = slice.address_type == "IPv6";
            slice
                .endpoints
                .iter()
                .filter(|e| {
                    let c = e.conditions.as_ref();
                    c.and_then(|c| c.ready) != Some(false)
                        && c.and_then(|c| c.terminating) != Some(true)
                })
                .flat_map(|e| e.addresses.iter())
                .filter_map(move |address| {
                    let port = port?;
                    Some(if v6 {
                        format!("http://[{address}]:{port}")
                    } else {
                        format!("http://{address}:{port}")
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls.iter()
        .filter_map(|u| Endpoint::parse(u).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use berth_api::{
        EgressRule, Permissions, PluginCall, PluginCredential, PluginGrantSpec, PluginStatus,
    };
    use serde_json::json;

    use super::*;

    fn now() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    fn plugin(name: &str, phase: Option<Phase>) -> Arc<Plugin> {
        let mut p: Plugin = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": name, "namespace": "default", "generation": 3},
            "spec": {"image": format!("berth/{name}:1.0.0"), "version": "1.0.0"}
        }))
        .unwrap();
        p.status = phase.map(|phase| PluginStatus {
            phase: Some(phase),
            ..PluginStatus::default()
        });
        Arc::new(p)
    }

    fn slice(
        service: &str,
        address_type: &str,
        endpoints: serde_json::Value,
    ) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{service}-x1"), "namespace": "default",
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": address_type,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_pods_of_a_ready_plugin_are_routable() {
        let plugins = [plugin("calculator", Some(Phase::Ready))];
        let slices = [slice(
            "calculator",
            "IPv4",
            json!([
                {"addresses": ["10.0.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.8"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.9"], "conditions": {"ready": true, "terminating": true}},
                {"addresses": ["10.0.0.10"]}
            ]),
        )];
        let e = entries(&plugins, &[], &slices, now(), RiskTier::Low);
        assert_eq!(e.len(), 1);
        let urls: Vec<String> = e[0].endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(urls, vec!["http://10.0.0.10:8080", "http://10.0.0.7:8080"]);
        assert!(e[0].is_ready());
        assert_eq!(e[0].revision, 3);
    }

    #[test]
    fn ipv6_addresses_are_bracketed_and_other_services_ignored() {
        let plugins = [plugin("calculator", Some(Phase::Ready))];
        let slices = [
            slice("calculator", "IPv6", json!([{"addresses": ["fd00::7"]}])),
            slice("hello", "IPv4", json!([{"addresses": ["10.0.0.1"]}])),
        ];
        let e = entries(&plugins, &[], &slices, now(), RiskTier::Low);
        let urls: Vec<String> = e[0].endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(urls, vec!["http://[fd00::7]:8080"]);
    }

    #[test]
    fn a_plugin_without_status_is_pending_and_not_ready() {
        let plugins = [plugin("calculator", None)];
        let e = entries(&plugins, &[], &[], now(), RiskTier::Low);
        assert_eq!(e[0].phase, Phase::Pending);
        assert!(!e[0].is_ready());
    }

    #[test]
    fn calls_are_granted_only_as_far_as_grants_cover_them() {
        let mut p = (*plugin("http-fetch", Some(Phase::Ready))).clone();
        p.spec.permissions.network.egress.push(EgressRule {
            host: Some("*".into()),
            cidr: None,
            ports: vec![443],
        });
        p.spec.permissions.plugins.push(PluginCall {
            name: "text-processor".into(),
            capabilities: vec!["stats".into(), "tokenize".into()],
        });
        let plugins = [Arc::new(p)];
        let e = entries(&plugins, &[], &[], now(), RiskTier::Low);
        assert!(e[0].granted_calls.is_empty(), "moderate risk, no grant");

        let mut grant = PluginGrant::new(
            "http-fetch",
            PluginGrantSpec {
                plugin: "http-fetch".into(),
                permissions: Permissions {
                    plugins: vec![PluginCall {
                        name: "text-processor".into(),
                        capabilities: vec!["stats".into()],
                    }],
                    ..Permissions::default()
                },
                granted_by: "platform@example.com".into(),
                reason: None,
                expires_at: None,
            },
        );
        grant.metadata.namespace = Some("default".into());
        let e = entries(&plugins, &[Arc::new(grant)], &[], now(), RiskTier::Low);
        assert!(e[0].may_call("text-processor", "stats"));
        assert!(!e[0].may_call("text-processor", "tokenize"));
    }

    #[test]
    fn credential_digests_from_the_status_authenticate_their_tokens() {
        let mut p = (*plugin("fetcher", Some(Phase::Deploying))).clone();
        let (old, new) = ("old-token", "new-token");
        if let Some(status) = p.status.as_mut() {
            status.credentials = vec![
                PluginCredential {
                    revision: 1,
                    sha256: credential::digest_line(old),
                },
                PluginCredential {
                    revision: 2,
                    sha256: credential::digest_line(new),
                },
                PluginCredential {
                    revision: 3,
                    sha256: "not-a-digest".into(),
                },
            ];
        }
        let e = entries(&[Arc::new(p.clone())], &[], &[], now(), RiskTier::Low);
        assert_eq!(
            e[0].token_sha256,
            vec![credential::digest(old), credential::digest(new)]
        );
        let directory = StaticDirectory::new(e);
        let snapshot = directory.snapshot();
        // Both revisions' pods authenticate while the rollout runs.
        assert_eq!(
            snapshot.plugin_for_token(&credential::digest(old)),
            Some("fetcher")
        );
        assert_eq!(
            snapshot.plugin_for_token(&credential::digest(new)),
            Some("fetcher")
        );
        assert_eq!(
            snapshot.plugin_for_token(&credential::digest("guess")),
            None
        );

        // After the rollout the old digest is gone from the status, and from the directory.
        if let Some(status) = p.status.as_mut() {
            status.credentials.retain(|c| c.revision == 2);
        }
        directory.replace_all(entries(&[Arc::new(p)], &[], &[], now(), RiskTier::Low));
        let snapshot = directory.snapshot();
        assert_eq!(snapshot.plugin_for_token(&credential::digest(old)), None);
        assert_eq!(
            snapshot.plugin_for_token(&credential::digest(new)),
            Some("fetcher")
        );
    }

    #[test]
    fn the_directory_is_published_again_when_the_first_grant_in_force_expires() {
        let grant = |name: &str, expires: Option<&str>| {
            let mut g = PluginGrant::new(
                name,
                PluginGrantSpec {
                    plugin: "http-fetch".into(),
                    permissions: Permissions::default(),
                    granted_by: "platform@example.com".into(),
                    reason: None,
                    expires_at: expires.map(str::to_owned),
                },
            );
            g.metadata.namespace = Some("default".into());
            Arc::new(g)
        };
        let grants = [
            grant("forever", None),
            grant("lapsed", Some("2026-03-01T11:00:00Z")),
            grant("later", Some("2026-03-02T00:00:00Z")),
            grant("sooner", Some("2026-03-01T12:30:00Z")),
        ];
        assert_eq!(
            next_expiry(&grants, now()),
            Some("2026-03-01T12:30:00Z".parse().unwrap())
        );
        assert_eq!(next_expiry(&grants[..2], now()), None);
    }

    #[test]
    fn low_risk_calls_are_auto_approved() {
        let mut p = (*plugin("caller", Some(Phase::Ready))).clone();
        p.spec.permissions.plugins.push(PluginCall {
            name: "calculator".into(),
            capabilities: vec!["evaluate".into()],
        });
        let e = entries(&[Arc::new(p)], &[], &[], now(), RiskTier::Low);
        assert!(e[0].may_call("calculator", "evaluate"));
    }
}
