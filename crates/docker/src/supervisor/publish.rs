//! Publishing: the directory pushed to the gateway container, observations (restarts,
//! cold starts) and CPU and memory usage sampled apart from the loop.

use std::sync::Arc;
use std::time::Duration;

use berth_api::Phase;
use berth_contract::wire::{ObservationsWire, SnapshotWire, UsageWire};
use berth_contract::{Endpoint, PluginEntry};
use jiff::Timestamp;

use super::{AdminClient, Engine, Supervisor, plan};

impl<E: Engine> Supervisor<E> {
    /// The directory as the gateway should see it: every installed plugin, with the
    /// revision that serves (if any).
    fn directory_entries(&self) -> Vec<PluginEntry> {
        let mut out = Vec::new();
        let now = Timestamp::now();
        for installed in self.installed.iter() {
            let (inst, parsed) = (&installed.record, installed.manifest.as_ref().ok());
            let rt = self.plugins.get(&inst.name);
            let digest = berth_contract::credential::digest(&inst.token);
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
                        .with_granted_calls(plan::allowed_calls(
                            &s.plugin,
                            &installed.grants,
                            now,
                            self.config.auto_approve,
                        ))
                        .with_granted_egress(plan::allowed_egress(
                            &s.plugin,
                            &installed.grants,
                            now,
                            self.config.auto_approve,
                        ))
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

    /// Sends the directory to the gateway unless it would change nothing.
    pub(super) async fn push(&mut self) {
        if !self.push_pending || self.gateway.down.is_some() {
            return;
        }
        self.refresh_usage_targets();
        let entries = self.directory_entries();
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

    pub(super) async fn observe(&self, observations: ObservationsWire) {
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
}

/// Every `interval`, reads CPU and memory of the serving containers (concurrently) and
/// sends them to the gateway's metrics.
pub(super) async fn sample_usage<E: Engine>(
    docker: E,
    admin: Arc<std::sync::Mutex<AdminClient>>,
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
            let admin = admin.lock().unwrap_or_else(|p| p.into_inner()).clone();
            admin
                .observe(&ObservationsWire {
                    usage,
                    ..Default::default()
                })
                .await;
        }
    }
}
