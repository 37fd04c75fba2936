//! Container events: a crashed or OOM-killed plugin is restarted as the [`RestartPolicy`]
//! says, and marked Failed when it says so; a restarted gateway gets the directory again.
//!
//! [`RestartPolicy`]: super::RestartPolicy

use std::time::Instant;

use berth_api::Phase;
use berth_contract::wire::{ObservationsWire, RestartWire};
use berth_store::audit::types;
use serde_json::json;

use super::{Engine, Supervisor, Verdict};
use crate::{ContainerEvent, EventAction};

impl<E: Engine> Supervisor<E> {
    pub(super) async fn on_event(&mut self, event: ContainerEvent) {
        if event.role.as_deref() == Some("gateway") {
            // Events of an earlier gateway container (replaced) do not count.
            if event.id != self.gateway_id {
                return;
            }
            match event.action {
                EventAction::Start if self.gateway.down.is_some() => {
                    // Started by hand before the supervisor did.
                    if let Err(e) = self.gateway_came_back(false).await {
                        self.notice(None, format!("the gateway started but {e}"));
                    }
                }
                EventAction::Start => {
                    // A restarted gateway starts empty: give it the directory again.
                    self.last_pushed.clear();
                    self.push_pending = true;
                }
                EventAction::Oom => {
                    self.oom.insert(event.id.clone());
                }
                EventAction::Die { exit_code } => self.gateway_died(exit_code).await,
                EventAction::Other(ref a) if a == "destroy" => {
                    self.gateway_stopped("was removed".into(), true).await;
                }
                EventAction::Other(_) => {}
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
            EventAction::Other(ref a) if a == "destroy" => {
                self.plugin_container_removed(&name, &event.id).await;
            }
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
        let policy = self.config.restart_policy();
        let (verdict, revision) = {
            let rt = self.plugins.get_mut(name).expect("checked above");
            let s = rt.serving.as_mut().expect("checked above");
            s.endpoint = None;
            let verdict = rt
                .restart
                .on_crash(&policy, Instant::now(), s.started.elapsed());
            (verdict, s.revision)
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
        let failures = match verdict {
            Verdict::Restart { attempt, .. } => attempt,
            Verdict::Failed { failures } => failures,
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
        let max = policy.max_restarts;
        match verdict {
            Verdict::Failed { failures } => self.set_phase(
                name,
                Phase::Failed,
                Some(format!(
                    "revision {revision} {what}; {failures} failures in a row, no more restarts (`berth disable {name}` then `berth enable {name}` to try again)"
                )),
            ),
            Verdict::Restart { attempt, after } => self.set_phase(
                name,
                Phase::Degraded,
                Some(format!(
                    "revision {revision} {what}; restart {attempt} of {max} in {} s",
                    after.as_secs()
                )),
            ),
        }
    }

    /// Starts again the crashed containers whose backoff has passed by `now`.
    pub(super) async fn restart_due(&mut self, now: Instant) {
        self.restart_gateway_due(now).await;
        if self.gateway.down.is_some() {
            // Readiness is checked through the gateway: plugins wait for it.
            return;
        }
        let due: Vec<String> = self
            .plugins
            .iter_mut()
            .filter_map(|(n, r)| r.restart.take_due(now).then(|| n.clone()))
            .collect();
        for name in due {
            let Some((id, plugin, revision)) = self
                .plugins
                .get(&name)
                .and_then(|r| r.serving.as_ref())
                .map(|s| (s.container_id.clone(), s.plugin.clone(), s.revision))
            else {
                continue;
            };
            let network = self.network_of(&name);
            let result = match self.docker.start_existing(&id).await {
                Ok(()) => self.wait_started(&id, &network, &plugin).await,
                Err(crate::Error::NotFound { .. }) => {
                    // Removed from under the supervisor: a new revision replaces it.
                    self.plugin_container_removed(&name, &id).await;
                    continue;
                }
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
                        self.on_restart_failed(&name, &reason);
                    }
                }
            }
        }
    }

    fn on_restart_failed(&mut self, name: &str, reason: &str) {
        let policy = self.config.restart_policy();
        let Some(rt) = self.plugins.get_mut(name) else {
            return;
        };
        match rt.restart.on_restart_failed(&policy, Instant::now()) {
            None => {}
            Some(Verdict::Restart { .. }) => {
                let msg = format!("restart failed: {reason}");
                self.set_phase(name, Phase::Degraded, Some(msg));
            }
            Some(Verdict::Failed { .. }) => {
                let msg = format!("restart failed: {reason}; no more restarts");
                self.set_phase(name, Phase::Failed, Some(msg));
            }
        }
    }
}
