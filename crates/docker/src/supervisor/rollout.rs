//! Rollout of a plugin revision: its network, the new container, readiness, the switch of
//! traffic to it, and retirement of the old one (after the drain). A revision that does not
//! become ready is removed and the old one keeps serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{Phase, Plugin};
use berth_contract::wire::{ColdStartWire, ObservationsWire};
use berth_store::audit::types;
use berth_store::{InstalledPlugin, RevisionRecord};
use jiff::Timestamp;
use serde_json::json;

use super::{EGRESS_PORT, Engine, GATEWAY_ALIAS, GATEWAY_PORT, Serving, Supervisor};
use crate::hardening::{LocalSecrets, PluginGateway, container_env};
use crate::readiness::{NotReady, wait_ready_with};
use crate::{ContainerOptions, FilesystemSource, plugin_container};

impl<E: Engine> Supervisor<E> {
    /// The plugin's network, created and joined by the gateway unless that was done.
    async fn prepare_network(&mut self, name: &str) -> Result<String, String> {
        // Installed again before its leftovers went: the network stays.
        self.leftovers.remove(name);
        if let Some(network) = self.plugins.get(name).and_then(|r| r.network.clone()) {
            return Ok(network);
        }
        // A network it has is kept (given from the pool, or of its own name); otherwise one
        // from the pool, ready and joined.
        let network = match self.recorded_network(name) {
            Some(n) => n,
            None if self.pool.own.contains(name) => self.instance.plugin_network(name),
            None => match self.take_pool_network(name) {
                Some(n) => {
                    let rt = self.plugins.entry(name.to_owned()).or_default();
                    rt.network = Some(n.clone());
                    self.fill_pool();
                    return Ok(n);
                }
                None => self.instance.plugin_network(name),
            },
        };
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
        if network == self.instance.plugin_network(name) {
            self.pool.own.insert(name.to_owned());
        }
        let rt = self.plugins.entry(name.to_owned()).or_default();
        rt.network = Some(network.clone());
        Ok(network)
    }

    /// Starts a new revision of `inst` and switches traffic to it once it is ready;
    /// on failure the serving revision (if any) stays.
    pub(super) async fn deploy(&mut self, inst: &InstalledPlugin, plugin: Plugin, key: String) {
        let name = inst.name.clone();
        let had_serving = self
            .plugins
            .get(&name)
            .and_then(|r| r.serving.as_ref())
            .map(|s| s.revision);
        // The same manifest and image brought back after `dev down`: the same revision,
        // not an identical new one.
        let again = match had_serving {
            None => self.stopped_revision(&name, &key),
            Some(_) => None,
        };
        let revision = match again {
            Some(r) => r,
            None => match self.store.next_revision(&name) {
                Ok(r) => r,
                Err(e) => {
                    self.notice(Some(&name), format!("cannot number the revision: {e}"));
                    return;
                }
            },
        };
        if had_serving.is_none() {
            self.set_phase(
                &name,
                Phase::Deploying,
                Some(format!("starting revision {revision}")),
            );
        }
        let checked = self.plugins.get_mut(&name).and_then(|rt| rt.checked.take());
        let record = RevisionRecord {
            plugin: name.clone(),
            revision,
            image: checked
                .as_ref()
                .map_or_else(|| plugin.spec.image.clone(), |c| c.shown.clone()),
            manifest_sha256: key.clone(),
            state: "Starting".into(),
            reason: None,
            container_id: None,
            endpoint: None,
            created_at: berth_store::format_time(Timestamp::now()),
            ready_at: None,
            image_digest: checked.as_ref().map(|c| c.digest.clone()),
            signed_by: checked.as_ref().and_then(|c| c.signed_by.clone()),
        };
        if again.is_some() {
            let _ = self
                .store
                .update_revision(&name, revision, "Starting", None, None, None);
        } else {
            let _ = self.store.insert_revision(&record);
        }
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
                    rt.restart.reset();
                    rt.failed_key = None;
                    let old_image = std::mem::replace(&mut rt.serving_image, checked.clone());
                    (old, old_image)
                };
                let (old, old_image) = old;
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
                        "image": checked.as_ref().map(|c| c.shown.clone()),
                        "digest": checked.as_ref().map(|c| c.digest.clone()),
                        "previousDigest": old_image.as_ref().map(|c| c.digest.clone()),
                        "signedBy": checked.as_ref().and_then(|c| c.signed_by.clone()),
                        "declaredPermissions": super::supply::label_diff(
                            old_image.as_ref().and_then(|c| c.label.as_deref()),
                            checked.as_ref().and_then(|c| c.label.as_deref()),
                        ),
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

    /// The newest revision of `name`, when it runs `key` and `dev down` stopped it. (A
    /// plugin disabled and enabled again gets a fresh revision: the record says it was
    /// started afresh on purpose.)
    fn stopped_revision(&self, name: &str, key: &str) -> Option<u64> {
        let newest = self.store.revisions(name).ok()?.into_iter().next()?;
        (newest.manifest_sha256 == key && newest.state == "Stopped").then_some(newest.revision)
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
        let no_secrets = HashMap::new();
        let values = match &self.secrets {
            Ok(secrets) => secrets,
            Err(e) if !plugin.spec.permissions.secrets.is_empty() => return Err(e.clone()),
            Err(_) => &no_secrets,
        };
        let gateway_ip = self
            .docker
            .container_address(&self.gateway_id, &network)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the gateway has no address on {network}"))?;
        let env = container_env(
            plugin,
            Some(PluginGateway {
                url: format!("http://{gateway_ip}:{GATEWAY_PORT}"),
                token: inst.token.clone(),
                egress_proxy: Some(format!("{gateway_ip}:{EGRESS_PORT}")),
            }),
            Some(LocalSecrets {
                values,
                file: &secrets_file,
            }),
        )?;
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
        let container_name = self.instance.plugin_container_name(name, revision);
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
    pub(super) async fn wait_ready(
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
    pub(super) async fn wait_started(
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

    /// Takes the serving revision out of the directory and retires its container.
    pub(super) async fn stop_serving(&mut self, name: &str, why: &str) {
        let Some(rt) = self.plugins.get_mut(name) else {
            return;
        };
        rt.restart.cancel();
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

    /// Forgets an uninstalled plugin; its containers and network go later, from the loop.
    pub(super) async fn remove_plugin(&mut self, name: &str) {
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
    pub(super) async fn remove_leftovers(&mut self, now: Instant) {
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
            let network = self.network_of(&name);
            let removed = self
                .docker
                .remove_plugin_leftovers(&self.instance, &name, &network)
                .await;
            if removed.is_ok() {
                self.forget_network(&name, &network);
                self.pool.own.remove(&name);
            }
            if let Err(e) = removed {
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
}
