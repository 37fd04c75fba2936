//! Adoption at start: plugin containers of this instance that still run what the store
//! wants keep serving across a restart of `berth dev up`; the rest are removed, and the
//! revision records a killed supervisor left mid-rollout are set to what is true now
//! (decision 0058).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::Phase;
use berth_store::RevisionRecord;
use berth_store::audit::types;
use serde_json::json;

use super::{Engine, GATEWAY_ALIAS, Runtime, Serving, Supervisor, SupervisorError, plan};

impl<E: Engine> Supervisor<E> {
    /// Takes over running containers whose revision key matches the store and that answer
    /// ready; marks the other plugin containers, and networks of plugins uninstalled while
    /// no supervisor ran, for removal.
    pub(super) async fn adopt(&mut self) -> Result<(), SupervisorError> {
        let containers = self.docker.list_managed(&self.instance).await?;
        let installed = self.store.plugins()?;
        let mut adopted = HashSet::new();
        let mut adopted_revisions: HashMap<&str, (u64, String, String)> = HashMap::new();
        for inst in &installed {
            let Ok(plugin) = plan::parse_installed(inst) else {
                continue;
            };
            // The container's own image: a revision runs by digest, which the tag may no
            // longer name (the next pass rolls forward to what the tag names now).
            let candidate = containers
                .iter()
                .filter(|c| {
                    c.running
                        && c.role.as_deref() == Some("plugin")
                        && c.plugin.as_deref() == Some(inst.name.as_str())
                        && c.manifest_sha256.as_deref()
                            == Some(plan::revision_key(&inst.manifest_yaml, &c.image_id).as_str())
                })
                .max_by_key(|c| c.revision);
            let Some(c) = candidate else { continue };
            let key = plan::revision_key(&inst.manifest_yaml, &c.image_id);
            let network = self.network_of(&inst.name);
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
            adopted_revisions.insert(&inst.name, (revision, c.id.clone(), endpoint.clone()));
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
            let rt: &mut Runtime = self.plugins.entry(inst.name.clone()).or_default();
            rt.serving = Some(Serving {
                revision,
                key,
                container_id: c.id.clone(),
                endpoint: Some(endpoint),
                plugin: Arc::new(plugin),
                started: Instant::now(),
            });
            rt.network = Some(network.clone());
            // The status record says so now, not at the first pass: commands that read it
            // once `dev up` prints the gateway see the adopted revision serving.
            self.set_phase(&inst.name, Phase::Ready, None);
        }
        for inst in &installed {
            let adopted = adopted_revisions.get(inst.name.as_str());
            self.settle_revisions(&inst.name, adopted);
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
                self.leftovers.insert(plugin.clone(), (Instant::now(), 0));
            }
            self.pool.own.insert(plugin);
        }
        self.adopt_pool(&names).await;
        Ok(())
    }
}

impl<E: Engine> Supervisor<E> {
    /// Brings `name`'s revision records in line with what runs after adoption: the adopted
    /// revision (revision, container, endpoint) is Ready, no other is Ready or Starting.
    fn settle_revisions(&mut self, name: &str, adopted: Option<&(u64, String, String)>) {
        let Ok(records) = self.store.revisions(name) else {
            return;
        };
        let serving = adopted.map(|(revision, _, _)| *revision);
        for change in settle(&records, serving) {
            let (container, endpoint) = match adopted {
                Some((r, id, endpoint)) if *r == change.revision => {
                    (Some(id.as_str()), Some(endpoint.as_str()))
                }
                _ => (None, None),
            };
            let _ = self.store.update_revision(
                name,
                change.revision,
                change.state,
                change.reason.as_deref(),
                container,
                endpoint,
            );
            if change.interrupted {
                self.notice(
                    Some(name),
                    format!(
                        "revision {} was interrupted: `berth dev up` stopped while it started",
                        change.revision
                    ),
                );
                self.audit(
                    name,
                    types::LIFECYCLE,
                    "failure",
                    json!({"action": "interrupted", "revision": change.revision, "reason": change.reason}),
                );
            }
        }
    }
}

/// A revision record to change after adoption.
#[derive(Debug, PartialEq, Eq)]
struct Settle {
    revision: u64,
    state: &'static str,
    reason: Option<String>,
    /// The revision was still starting when the supervisor stopped.
    interrupted: bool,
}

/// What `records` must become when `serving` (if any) is the adopted revision: a Starting
/// adopted revision is Ready; every other Starting or Ready revision is Retired, saying
/// why. A rollout interrupted before its revision was adopted is started again by the
/// reconcile that follows, under a new number.
fn settle(records: &[RevisionRecord], serving: Option<u64>) -> Vec<Settle> {
    let mut out = Vec::new();
    for r in records {
        let adopted = Some(r.revision) == serving;
        let change = match (r.state.as_str(), adopted) {
            ("Starting", true) => Settle {
                revision: r.revision,
                state: "Ready",
                reason: None,
                interrupted: false,
            },
            ("Starting", false) => Settle {
                revision: r.revision,
                state: "Retired",
                reason: Some(
                    "interrupted: `berth dev up` stopped before this revision was ready; its container was removed at the next start".into(),
                ),
                interrupted: true,
            },
            ("Ready", false) => Settle {
                revision: r.revision,
                state: "Retired",
                reason: Some(match serving {
                    Some(s) => format!("replaced by revision {s} (adopted when `berth dev up` started again)"),
                    None => "not running what is installed when `berth dev up` started again; its container was removed".into(),
                }),
                interrupted: false,
            },
            _ => continue,
        };
        out.push(change);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revision: u64, state: &str) -> RevisionRecord {
        RevisionRecord {
            plugin: "calc".into(),
            revision,
            image: "berth/calc:1.0.0".into(),
            manifest_sha256: format!("key-{revision}"),
            state: state.into(),
            reason: None,
            container_id: None,
            endpoint: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            ready_at: None,
            image_digest: None,
            signed_by: None,
        }
    }

    fn states(records: &[RevisionRecord], serving: Option<u64>) -> Vec<(u64, &'static str)> {
        settle(records, serving)
            .into_iter()
            .map(|s| (s.revision, s.state))
            .collect()
    }

    #[test]
    fn killed_while_starting_and_the_new_revision_adopted() {
        let records = [
            record(3, "Starting"),
            record(2, "Ready"),
            record(1, "Retired"),
        ];
        assert_eq!(states(&records, Some(3)), [(3, "Ready"), (2, "Retired")]);
    }

    #[test]
    fn killed_while_starting_and_the_new_revision_not_adopted() {
        let records = [record(3, "Starting"), record(2, "Ready")];
        let changes = settle(&records, None);
        assert_eq!(changes.len(), 2);
        assert!(changes[0].interrupted);
        assert_eq!(changes[0].state, "Retired");
        assert!(!changes[1].interrupted);
        assert_eq!(changes[1].state, "Retired");
    }

    #[test]
    fn killed_during_the_drain_leaves_one_ready() {
        let records = [record(3, "Ready"), record(2, "Ready"), record(1, "Failed")];
        assert_eq!(states(&records, Some(3)), [(2, "Retired")]);
    }

    #[test]
    fn nothing_to_change_when_the_records_are_true() {
        let records = [record(2, "Ready"), record(1, "Retired")];
        assert!(settle(&records, Some(2)).is_empty());
    }
}
