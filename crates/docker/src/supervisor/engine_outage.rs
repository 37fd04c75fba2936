//! The Docker Engine itself goes away — restarted, upgraded, crashed. The supervisor does
//! not exit: it reports the outage (notice, audit, the gateway shown down and every plugin
//! not reachable), asks the engine again with backoff, and once it answers watches events
//! again and brings back what the engine stopped: the gateway container first (readiness
//! checks go through it), then each serving plugin container under its own revision — no
//! new revision, no second container. A container the engine no longer knows is replaced
//! as one removed by hand is. Events missed meanwhile do not matter: the state is read
//! again.

use std::time::{Duration, Instant};

use berth_api::Phase;
use serde_json::json;

use super::{Engine, Supervisor};

/// The first pause before asking a lost engine again; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest pause between two questions to a lost engine.
const MAX_RETRY: Duration = Duration::from_secs(4);

/// What plugins and the gateway show while the engine does not answer.
const ENGINE_DOWN: &str = "the Docker Engine is unreachable";

/// One period during which the engine did not answer.
pub(super) struct EngineOutage {
    since: Instant,
    reason: String,
    attempts: u32,
    next_try: Instant,
}

/// The pause after `attempts` unanswered questions.
fn retry_after(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << attempts.min(8))
        .min(MAX_RETRY)
}

impl<E: Engine> Supervisor<E> {
    /// The events stream failed or ended: a hiccup of the stream when the engine still
    /// answers (true), otherwise the start of an outage.
    pub(super) async fn events_lost(&mut self, why: &str) -> bool {
        if self.docker.ping().await.is_ok() {
            return true;
        }
        self.engine_lost(why).await;
        false
    }

    /// The engine stopped answering.
    pub(super) async fn engine_lost(&mut self, why: &str) {
        if self.engine.is_some() {
            return;
        }
        let now = Instant::now();
        self.engine_outages += 1;
        self.engine = Some(EngineOutage {
            since: now,
            reason: why.to_owned(),
            attempts: 0,
            next_try: now + FIRST_RETRY,
        });
        self.notice(
            None,
            format!("lost the Docker Engine ({why}); reconnecting (plugins are not reachable)"),
        );
        self.audit_gateway("failure", json!({"action": "engine-lost", "reason": why}));
        // An engine that stops stops its containers, the gateway's too.
        match self.gateway.down.as_mut() {
            Some(outage) => {
                outage.reason = ENGINE_DOWN.into();
                self.write_gateway_status();
                self.refresh_statuses();
            }
            None => self.gateway_stopped(ENGINE_DOWN.into(), false).await,
        }
    }

    /// Asks the lost engine again when the backoff has passed by `now`; true when it
    /// answers (the caller watches events again, then calls [`Supervisor::engine_back`]).
    pub(super) async fn engine_answers(&mut self, now: Instant) -> bool {
        match self.engine.as_ref() {
            Some(o) if o.next_try <= now => {}
            _ => return false,
        }
        if self.docker.ping().await.is_ok() {
            return true;
        }
        if let Some(o) = self.engine.as_mut() {
            o.attempts += 1;
            o.next_try = Instant::now() + retry_after(o.attempts);
        }
        false
    }

    /// The engine answers again: the gateway, then every serving plugin, come back.
    pub(super) async fn engine_back(&mut self) {
        let Some(outage) = self.engine.take() else {
            return;
        };
        let downtime = outage.since.elapsed();
        self.notice(
            None,
            format!(
                "the Docker Engine answers again after {:.1} s; bringing back the gateway and plugins",
                downtime.as_secs_f64()
            ),
        );
        self.audit_gateway(
            "success",
            json!({
                "action": "engine-back",
                "reason": outage.reason,
                "downtimeMs": u64::try_from(downtime.as_millis()).unwrap_or(u64::MAX),
                "attempts": outage.attempts,
            }),
        );
        // The gateway first: readiness checks go through it. Its restart policy may have
        // started it already; either way the supervisor finds its port, waits for it and
        // pushes the directory.
        if self.gateway.down.is_some() {
            self.restart_gateway_now().await;
        } else {
            self.check_gateway().await;
        }
        // Plugin containers the engine stopped start again under their revision. The
        // failures their die events counted were the engine's, not theirs.
        let serving: Vec<(String, String)> = self
            .plugins
            .iter()
            .filter_map(|(n, r)| {
                r.serving
                    .as_ref()
                    .map(|s| (n.clone(), s.container_id.clone()))
            })
            .collect();
        let now = Instant::now();
        for (name, id) in serving {
            match self.docker.container_status(&id).await {
                Ok(s) if s.running => {}
                Ok(_) => {
                    let Some(rt) = self.plugins.get_mut(&name) else {
                        continue;
                    };
                    let revision = rt.serving.as_mut().map(|s| {
                        s.endpoint = None;
                        s.revision
                    });
                    rt.restart.reset();
                    rt.restart.schedule(now);
                    self.set_phase(
                        &name,
                        Phase::Degraded,
                        Some(format!(
                            "revision {} was stopped with the Docker Engine; starting it again",
                            revision.unwrap_or_default()
                        )),
                    );
                }
                Err(crate::Error::NotFound { .. }) => {
                    self.plugin_container_removed(&name, &id).await;
                }
                Err(_) => {}
            }
        }
        self.restart_due(now).await;
        self.last_pushed.clear();
        self.push_pending = true;
        self.reconcile().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_engine_is_asked_again_sooner_than_the_gateway_restart_cap() {
        assert_eq!(retry_after(0), Duration::from_millis(250));
        assert_eq!(retry_after(1), Duration::from_millis(500));
        assert_eq!(retry_after(3), Duration::from_secs(2));
        assert_eq!(retry_after(4), MAX_RETRY);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }
}
