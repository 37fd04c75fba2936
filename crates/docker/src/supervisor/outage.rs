//! The gateway container is supervised like a plugin: whatever stopped it (a crash, the
//! OOM killer, `docker kill`, `docker rm -f`), the supervisor starts it again, or creates
//! it again when it is gone, with the backoff of [`RestartPolicy`]; then it re-pushes the
//! directory and joins the plugin networks again. While it is down the store says so
//! ([`GATEWAY_STATUS_SETTING`]) and no plugin is shown `Ready`. A plugin container removed
//! from under the supervisor is replaced by a new revision.
//!
//! [`RestartPolicy`]: super::RestartPolicy
//! [`GATEWAY_STATUS_SETTING`]: super::GATEWAY_STATUS_SETTING

use std::time::{Duration, Instant};

use berth_api::Phase;
use berth_contract::wire::{ObservationsWire, SupervisorWire};
use berth_store::AuditEvent;
use berth_store::audit::types;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    ACTOR, AdminClient, Engine, GATEWAY_ALIAS, GATEWAY_PORT, GATEWAY_STATUS_SETTING,
    GATEWAY_URL_SETTING, RestartPolicy, RestartState, Supervisor, Verdict, gateway,
};

/// How long a started gateway container may take to answer `/healthz`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15);

/// The gateway container as the supervisor sees it.
#[derive(Default)]
pub(super) struct GatewayHealth {
    /// Set while the gateway container is not serving.
    pub down: Option<Outage>,
    pub restart: RestartState,
    /// When the current container last became healthy.
    pub started: Option<Instant>,
    /// Restarts and re-creations since `berth dev up` started.
    pub restarts: u32,
    /// Time not serving, summed over the outages that ended.
    pub down_total: Duration,
}

/// One period during which the gateway container was not serving.
pub(super) struct Outage {
    pub since: Instant,
    pub since_time: Timestamp,
    /// What stopped it: `exited with code 137`, `removed`, …
    pub reason: String,
    /// The container is gone; it has to be created again.
    pub removed: bool,
}

impl GatewayHealth {
    /// The gateway never gives up restarting: nothing works without it. Ten seconds of
    /// serving start a new series of failures.
    pub fn policy(cap: Duration) -> RestartPolicy {
        RestartPolicy {
            healthy_after: Duration::from_secs(10),
            ..RestartPolicy::new(u32::MAX, cap)
        }
    }

    /// What plugins show as the reason while the gateway is down.
    pub fn down_reason(&self) -> Option<String> {
        self.down
            .as_ref()
            .map(|o| format!("gateway down ({}); not reachable", o.reason))
    }
}

impl<E: Engine> Supervisor<E> {
    /// The gateway container stopped or went away.
    pub(super) async fn gateway_stopped(&mut self, reason: String, removed: bool) {
        if let Some(outage) = self.gateway.down.as_mut() {
            if removed && !outage.removed {
                outage.removed = true;
                outage.reason = format!("{}, then removed", outage.reason);
                self.write_gateway_status();
            }
            return;
        }
        let policy = GatewayHealth::policy(self.config.restart_cap);
        let ran_for = self.gateway.started.map_or(Duration::ZERO, |s| s.elapsed());
        let now = Instant::now();
        let after = match self.gateway.restart.on_crash(&policy, now, ran_for) {
            Verdict::Restart { after, .. } => after,
            // Not with a policy of `u32::MAX` restarts; try again at the longest pause.
            Verdict::Failed { .. } => policy.cap,
        };
        self.gateway.down = Some(Outage {
            since: now,
            since_time: Timestamp::now(),
            reason: reason.clone(),
            removed,
        });
        self.notice(
            None,
            format!(
                "the gateway container {reason}; restarting it in {} s",
                after.as_secs()
            ),
        );
        self.audit_gateway(
            "failure",
            json!({"action": "gateway-stopped", "reason": reason, "restartIn": after.as_secs()}),
        );
        self.write_gateway_status();
        self.refresh_statuses();
    }

    /// A die event of the gateway container: why it stopped.
    pub(super) async fn gateway_died(&mut self, exit_code: Option<i64>) {
        let oom = self.oom.remove(&self.gateway_id)
            || self
                .docker
                .container_status(&self.gateway_id)
                .await
                .is_ok_and(|s| s.oom_killed);
        let reason = if oom {
            "was killed for exceeding its memory limit".to_owned()
        } else {
            format!(
                "exited with code {}",
                exit_code.map_or("?".into(), |c| c.to_string())
            )
        };
        self.gateway_stopped(reason, false).await;
    }

    /// Notices a gateway container that stopped or vanished without an event reaching the
    /// supervisor (the events stream was reconnecting).
    pub(super) async fn check_gateway(&mut self) {
        if self.gateway.down.is_some() {
            return;
        }
        match self.docker.container_status(&self.gateway_id).await {
            Ok(s) if s.running => {}
            Ok(s) => {
                let reason = format!(
                    "exited with code {}",
                    s.exit_code.map_or("?".into(), |c| c.to_string())
                );
                self.gateway_stopped(reason, false).await;
            }
            Err(crate::Error::NotFound { .. }) => {
                self.gateway_stopped("was removed".into(), true).await;
            }
            Err(_) => {}
        }
    }

    /// Starts the gateway container again (creates it when it is gone) if its backoff has
    /// passed by `now`.
    pub(super) async fn restart_gateway_due(&mut self, now: Instant) {
        if self.gateway.down.is_none() || !self.gateway.restart.take_due(now) {
            return;
        }
        self.restart_gateway_now().await;
    }

    /// Starts the gateway container again (creates it when it is gone), now.
    pub(super) async fn restart_gateway_now(&mut self) {
        self.gateway.restart.cancel();
        let removed = self.gateway.down.as_ref().is_some_and(|o| o.removed);
        let started = if removed {
            Err(crate::Error::NotFound {
                what: "the gateway container".into(),
            })
        } else {
            self.docker.start_existing(&self.gateway_id).await
        };
        let result = match started {
            Ok(()) => Ok(false),
            Err(crate::Error::NotFound { .. }) => {
                match gateway::ensure_gateway(&self.docker, &self.instance, &self.config).await {
                    Ok((id, _)) => {
                        self.gateway_id = id;
                        Ok(true)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let result = match result {
            Ok(recreated) => self.gateway_came_back(recreated).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let policy = GatewayHealth::policy(self.config.restart_cap);
            let after = match self
                .gateway
                .restart
                .on_restart_failed(&policy, Instant::now())
            {
                Some(Verdict::Restart { after, .. }) => after,
                _ => policy.cap,
            };
            self.notice(
                None,
                format!(
                    "the gateway did not come back ({e}); trying again in {} s",
                    after.as_secs()
                ),
            );
            self.write_gateway_status();
        }
    }

    /// The gateway container runs again (started by the supervisor or by hand): finds its
    /// port, waits for it to answer, joins the plugin networks and re-pushes the directory.
    pub(super) async fn gateway_came_back(&mut self, recreated: bool) -> Result<(), String> {
        let status = self
            .docker
            .container_status(&self.gateway_id)
            .await
            .map_err(|e| e.to_string())?;
        if !status.running {
            return Err(format!(
                "it exited again with code {}",
                status.exit_code.map_or("?".into(), |c| c.to_string())
            ));
        }
        let port = self
            .docker
            .published_port(&self.gateway_id, GATEWAY_PORT)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the gateway's port was not published")?;
        let url = format!("http://127.0.0.1:{port}");
        if url != self.admin.base() {
            // A port Docker chose may change when the container starts again.
            self.admin = AdminClient::new(&url, &self.config.admin_token);
            *self.shared_admin.lock().unwrap_or_else(|p| p.into_inner()) = self.admin.clone();
            let _ = self.store.set_setting(GATEWAY_URL_SETTING, &url);
        }
        self.admin.wait_healthy(HEALTHY_WITHIN).await?;
        // A container created again may have another address on the edge network.
        gateway::record_direct_url(&self.docker, &self.store, &self.instance, &self.gateway_id)
            .await;
        // A started container keeps its networks (joining again is refused, harmlessly);
        // a new one joins each plugin network.
        let names: Vec<String> = self
            .plugins
            .iter()
            .filter(|(_, rt)| rt.network.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        let mut moved = Vec::new();
        for name in names {
            let network = self.network_of(&name);
            let _ = self
                .docker
                .connect_network(&network, &self.gateway_id, &[GATEWAY_ALIAS.to_owned()])
                .await;
            let now = self
                .docker
                .container_address(&self.gateway_id, &network)
                .await
                .ok()
                .flatten();
            if let (Some(before), Some(now)) = (self.gateway_ips.get(&name), now)
                && *before != now
            {
                moved.push(name.clone());
            }
        }
        if recreated {
            self.rejoin_pool().await;
        }
        for name in &moved {
            // Its container was told the old address: a new revision is told the new one.
            self.gateway_ips.remove(name);
            if let Some(s) = self.plugins.get_mut(name).and_then(|r| r.serving.as_mut()) {
                s.key.clear();
            }
        }
        let Some(outage) = self.gateway.down.take() else {
            return Ok(());
        };
        self.gateway.restart.cancel();
        self.gateway.started = Some(Instant::now());
        self.gateway.restarts += 1;
        let downtime = outage.since.elapsed();
        self.gateway.down_total += downtime;
        self.last_pushed.clear();
        self.push_pending = true;
        self.push().await;
        self.fill_pool();
        self.report_outages().await;
        self.refresh_statuses();
        self.write_gateway_status();
        self.notice(
            None,
            format!(
                "the gateway container is back after {:.1} s{}",
                downtime.as_secs_f64(),
                if recreated { " (created again)" } else { "" }
            ),
        );
        if !moved.is_empty() {
            self.notice(
                None,
                format!(
                    "the gateway has another address on the network of {}; starting new revisions",
                    moved.join(", ")
                ),
            );
            self.reconcile().await;
        }
        self.audit_gateway(
            "success",
            json!({
                "action": if recreated { "gateway-recreated" } else { "gateway-restarted" },
                "reason": outage.reason,
                "downtimeMs": downtime.as_millis() as u64,
                "restarts": self.gateway.restarts,
            }),
        );
        Ok(())
    }

    /// Remembers the gateway's address on the network of each plugin that has one.
    pub(super) async fn record_gateway_ips(&mut self) {
        let installed: std::collections::HashSet<&str> = self
            .installed
            .iter()
            .map(|i| i.record.name.as_str())
            .collect();
        self.gateway_ips
            .retain(|name, _| installed.contains(name.as_str()));
        let missing: Vec<String> = self
            .plugins
            .iter()
            .filter(|(name, rt)| rt.network.is_some() && !self.gateway_ips.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in missing {
            let network = self.network_of(&name);
            if let Ok(Some(ip)) = self
                .docker
                .container_address(&self.gateway_id, &network)
                .await
            {
                self.gateway_ips.insert(name, ip);
            }
        }
    }

    /// Writes every known plugin status again, so that the gateway's state shows in them.
    pub(super) fn refresh_statuses(&mut self) {
        let known: Vec<(String, Phase, Option<String>)> = self
            .plugins
            .iter()
            .filter_map(|(n, r)| r.phase.map(|p| (n.clone(), p, r.reason.clone())))
            .collect();
        for (name, phase, reason) in known {
            self.set_phase(&name, phase, reason);
        }
    }

    /// The outages so far, for the gateway's `berth_local_*` gauges.
    pub(super) async fn report_outages(&self) {
        self.observe(ObservationsWire {
            supervisor: Some(SupervisorWire {
                gateway_restarts: u64::from(self.gateway.restarts),
                gateway_down_seconds: self.gateway.down_total.as_secs_f64(),
                engine_outages: self.engine_outages,
            }),
            ..Default::default()
        })
        .await;
    }

    /// [`GATEWAY_STATUS_SETTING`] for `berth list` and `berth status`.
    pub(super) fn write_gateway_status(&self) {
        let value = match &self.gateway.down {
            None => json!({
                "state": "up",
                "restarts": self.gateway.restarts,
            }),
            Some(o) => json!({
                "state": "down",
                "since": berth_store::format_time(o.since_time),
                "reason": o.reason,
                "restarts": self.gateway.restarts,
                "nextRestartInMs": self
                    .gateway
                    .restart
                    .restart_at()
                    .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
            }),
        };
        let _ = self
            .store
            .set_setting(GATEWAY_STATUS_SETTING, &value.to_string());
    }

    pub(super) fn audit_gateway(&self, outcome: &str, details: Value) {
        let event = AuditEvent::new(ACTOR, types::LIFECYCLE, outcome).details(details);
        if let Err(e) = self.store.append_audit(vec![event]) {
            self.notice(None, format!("cannot write the audit log: {e}"));
        }
    }

    /// The serving container of `name` (`id`) is gone: a new revision replaces it.
    pub(super) async fn plugin_container_removed(&mut self, name: &str, id: &str) {
        let Some(rt) = self.plugins.get_mut(name) else {
            return;
        };
        let Some(revision) = rt
            .serving
            .as_ref()
            .filter(|s| s.container_id == id)
            .map(|s| s.revision)
        else {
            return;
        };
        rt.serving = None;
        rt.restart.cancel();
        rt.restart.reset();
        self.audit(
            name,
            types::LIFECYCLE,
            "failure",
            json!({"action": "container-removed", "revision": revision}),
        );
        self.set_phase(
            name,
            Phase::Degraded,
            Some(format!(
                "the container of revision {revision} was removed; starting a new revision"
            )),
        );
        self.reconcile().await;
    }
}
