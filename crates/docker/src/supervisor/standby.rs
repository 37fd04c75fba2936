//! Warm standby (`spec.standby`): the supervisor's half.
//!
//! A task beside the supervisor's loop, so that a wake never waits behind a reconcile pass:
//! it reads the gateway's call counts of the plugins that opted in, pauses a plugin once no
//! call came for its `idleAfter` (after the gateway agreed: no call in between), and keeps a
//! long poll open on the gateway's wake list, thawing a named plugin at once. It tells the
//! loop what it did ([`StandbyEvent`]), which writes the status and the audit log.
//!
//! Nothing stays frozen that nobody would wake: the task thaws every plugin it paused when
//! the loop stops, when a plugin stops being a target (new revision, disabled,
//! uninstalled), and when the gateway no longer knows a plugin is paused (it restarted).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use berth_api::Phase;
use berth_store::audit::types;

use super::engine::Engine;
use super::gateway::AdminClient;
use crate::instance::Instance;

/// How long one wake poll waits on the gateway before asking again.
const WAKE_POLL: Duration = Duration::from_secs(20);

/// A serving plugin with `spec.standby`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub container_id: String,
    pub idle_after: Duration,
}

/// What the standby task did, for the status and the audit log.
#[derive(Debug)]
pub(super) enum StandbyEvent {
    /// The plugin's container is frozen.
    Paused {
        plugin: String,
        idle_after: Duration,
    },
    /// A call came and the container was thawed in `took`.
    Woken { plugin: String, took: Duration },
    /// A pause or a wake failed.
    Failed { plugin: String, reason: String },
}

/// How often call counts are read: a tenth of the shortest `idleAfter`, within 100 ms–2 s.
fn check_interval(targets: &BTreeMap<String, Target>) -> Duration {
    targets
        .values()
        .map(|t| t.idle_after / 10)
        .min()
        .unwrap_or(Duration::from_secs(2))
        .clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// What the task knows of one target.
#[derive(Debug)]
struct Watch {
    /// Calls started, as the gateway last said.
    calls: Option<u64>,
    /// When the calls last changed (or the plugin was last woken).
    quiet_since: Instant,
    paused: bool,
}

/// What to do about one target after reading the gateway's counts: pure, for tests.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    /// Ask the gateway to agree to a pause with these counted calls.
    Pause(u64),
    /// The gateway does not know the plugin is paused (it restarted): thaw it.
    Thaw,
}

fn decide(w: &mut Watch, target: &Target, seen: Option<&Value>, now: Instant) -> Step {
    let Some(seen) = seen else {
        return Step::Nothing;
    };
    let calls = seen["calls"].as_u64().unwrap_or(0);
    let inflight = seen["inflight"].as_u64().unwrap_or(0);
    let gateway_paused = seen["paused"].as_bool().unwrap_or(false);
    if w.paused {
        return if gateway_paused {
            Step::Nothing
        } else {
            Step::Thaw
        };
    }
    if w.calls != Some(calls) || inflight > 0 {
        w.calls = Some(calls);
        w.quiet_since = now;
        return Step::Nothing;
    }
    if now.duration_since(w.quiet_since) >= target.idle_after {
        Step::Pause(calls)
    } else {
        Step::Nothing
    }
}

/// Runs the standby task until `targets`' sender is dropped; then thaws what it paused.
pub(super) async fn run<E: Engine>(
    docker: E,
    admin: Arc<Mutex<AdminClient>>,
    mut targets: watch::Receiver<BTreeMap<String, Target>>,
    events: mpsc::UnboundedSender<StandbyEvent>,
) {
    let admin_now = || admin.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (wake_tx, mut wakes) = mpsc::unbounded_channel::<String>();
    // Its own task: a poll in flight is never dropped by the select below.
    let poller = tokio::spawn({
        let admin = admin.clone();
        async move {
            let path = format!("/v1/admin/standby/wakes?waitMs={}", WAKE_POLL.as_millis());
            loop {
                let client = admin.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match client.send(http::Method::GET, &path, None).await {
                    Ok((200, body)) => {
                        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
                        for name in answer["plugins"].as_array().into_iter().flatten() {
                            if let Some(name) = name.as_str()
                                && wake_tx.send(name.to_owned()).is_err()
                            {
                                return;
                            }
                        }
                    }
                    // The gateway is restarting or replaced: ask the new one shortly.
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    });
    let mut watched: HashMap<String, Watch> = HashMap::new();
    let mut current = targets.borrow_and_update().clone();
    let mut tick = tokio::time::interval(check_interval(&current));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(plugin) = wakes.recv() => {
                let admin = admin_now();
                let target = current.get(&plugin);
                match (target, watched.get_mut(&plugin)) {
                    (Some(target), Some(w)) if w.paused => {
                        let started = Instant::now();
                        match docker.unpause(&target.container_id).await {
                            Ok(()) => {
                                w.paused = false;
                                w.quiet_since = Instant::now();
                                let _ = events.send(StandbyEvent::Woken {
                                    plugin: plugin.clone(),
                                    took: started.elapsed(),
                                });
                            }
                            Err(e) => {
                                let _ = events.send(StandbyEvent::Failed {
                                    plugin: plugin.clone(),
                                    reason: format!("cannot wake it: {e}"),
                                });
                            }
                        }
                        awake(&admin, &plugin).await;
                    }
                    // Not paused by this task (a pause that failed, an older revision):
                    // callers must not wait for a wake that will not come.
                    _ => awake(&admin, &plugin).await,
                }
            }
            changed = targets.changed() => {
                let next = if changed.is_ok() {
                    targets.borrow_and_update().clone()
                } else {
                    BTreeMap::new()
                };
                let admin = admin_now();
                for (plugin, w) in &mut watched {
                    let same = current.get(plugin).zip(next.get(plugin)).is_some_and(|(a, b)| a.container_id == b.container_id);
                    if w.paused && !same
                        && let Some(old) = current.get(plugin)
                    {
                        // A stopped or removed container cannot be thawed: nothing to do.
                        let _ = docker.unpause(&old.container_id).await;
                        w.paused = false;
                        awake(&admin, plugin).await;
                    }
                }
                watched.retain(|p, _| next.contains_key(p));
                if changed.is_err() {
                    break;
                }
                current = next;
                tick = tokio::time::interval(check_interval(&current));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            _ = tick.tick(), if !current.is_empty() => {
                let admin = admin_now();
                let Ok((200, body)) = admin.send(http::Method::GET, "/v1/admin/standby", None).await else {
                    continue;
                };
                let answer: Value = serde_json::from_str(&body).unwrap_or_default();
                let now = Instant::now();
                for (plugin, target) in &current {
                    let w = watched.entry(plugin.clone()).or_insert_with(|| Watch {
                        calls: None,
                        quiet_since: now,
                        paused: false,
                    });
                    match decide(w, target, answer["plugins"].get(plugin), now) {
                        Step::Nothing => {}
                        Step::Thaw => {
                            let _ = docker.unpause(&target.container_id).await;
                            w.paused = false;
                            w.quiet_since = now;
                            let _ = events.send(StandbyEvent::Woken {
                                plugin: plugin.clone(),
                                took: now.elapsed(),
                            });
                        }
                        Step::Pause(calls) => {
                            pause(&docker, &admin, plugin, target, calls, w, &events).await;
                        }
                    }
                }
            }
        }
    }
    poller.abort();
}

async fn pause<E: Engine>(
    docker: &E,
    admin: &AdminClient,
    plugin: &str,
    target: &Target,
    calls: u64,
    w: &mut Watch,
    events: &mpsc::UnboundedSender<StandbyEvent>,
) {
    let body = json!({"plugin": plugin, "calls": calls}).to_string();
    let answer = admin
        .send(
            http::Method::POST,
            "/v1/admin/standby/pause",
            Some(body.into_bytes()),
        )
        .await;
    let Ok((200, text)) = answer else {
        return;
    };
    let answer: Value = serde_json::from_str(&text).unwrap_or_default();
    if answer["paused"] != Value::Bool(true) {
        // A call came in between: idle from now.
        w.calls = answer["calls"].as_u64();
        w.quiet_since = Instant::now();
        return;
    }
    match docker.pause(&target.container_id).await {
        Ok(()) => {
            w.paused = true;
            let _ = events.send(StandbyEvent::Paused {
                plugin: plugin.to_owned(),
                idle_after: target.idle_after,
            });
        }
        Err(e) => {
            awake(admin, plugin).await;
            w.quiet_since = Instant::now();
            let _ = events.send(StandbyEvent::Failed {
                plugin: plugin.to_owned(),
                reason: format!("cannot pause it: {e}"),
            });
        }
    }
}

impl<E: Engine> super::Supervisor<E> {
    /// The serving plugins with `spec.standby`, as the standby task needs them.
    pub(super) fn standby_targets(&self) -> BTreeMap<String, Target> {
        self.plugins
            .iter()
            .filter(|(_, rt)| {
                rt.phase == Some(Phase::Ready) && !rt.restart.is_restarting_or_failed()
            })
            .filter_map(|(name, rt)| {
                let s = rt.serving.as_ref().filter(|s| s.endpoint.is_some())?;
                let idle_after = s.plugin.spec.standby.as_ref()?.idle_after().ok()?;
                Some((
                    name.clone(),
                    Target {
                        container_id: s.container_id.clone(),
                        idle_after,
                    },
                ))
            })
            .collect()
    }

    /// Writes what the standby task did to the status and the audit log.
    pub(super) fn on_standby(&mut self, event: StandbyEvent) {
        match event {
            StandbyEvent::Paused { plugin, idle_after } => {
                if self.phase_of(&plugin) == Some(Phase::Ready) {
                    self.set_phase(&plugin, Phase::Ready, Some(paused_reason(idle_after)));
                }
                self.audit(
                    &plugin,
                    types::LIFECYCLE,
                    "success",
                    json!({"action": "paused", "idleAfterMs": idle_after.as_millis() as u64}),
                );
            }
            StandbyEvent::Woken { plugin, took } => {
                let reason = self.plugins.get(&plugin).and_then(|r| r.reason.as_deref());
                if self.phase_of(&plugin) == Some(Phase::Ready) && is_paused_reason(reason) {
                    self.set_phase(&plugin, Phase::Ready, None);
                }
                self.audit(
                    &plugin,
                    types::LIFECYCLE,
                    "success",
                    json!({"action": "woken", "thawMs": took.as_secs_f64() * 1000.0}),
                );
            }
            StandbyEvent::Failed { plugin, reason } => {
                self.notice(Some(&plugin), format!("standby: {reason}"));
                self.audit(
                    &plugin,
                    types::LIFECYCLE,
                    "failure",
                    json!({"action": "standby", "error": reason}),
                );
            }
        }
    }
}

/// Tells the gateway calls to `plugin` no longer need a wake. Best effort: a gateway that
/// does not answer has restarted and knows of no pause.
async fn awake(admin: &AdminClient, plugin: &str) {
    let body = json!({ "plugin": plugin }).to_string();
    let _ = admin
        .send(
            http::Method::POST,
            "/v1/admin/standby/awake",
            Some(body.into_bytes()),
        )
        .await;
}

/// Thaws the instance's plugin containers left frozen by a supervisor that did not stop
/// cleanly, before they are adopted (a frozen container cannot answer the readiness check).
pub(super) async fn thaw_leftovers<E: Engine>(docker: &E, instance: &Instance) {
    let Ok(containers) = docker.list_managed(instance).await else {
        return;
    };
    for c in containers
        .iter()
        .filter(|c| c.role.as_deref() == Some("plugin") && !c.running)
    {
        // Exited containers are not paused: the engine says so, and that is fine.
        let _ = docker.unpause(&c.id).await;
    }
}

/// The reason `berth list` and `berth status` show for a paused plugin.
pub(super) fn paused_reason(idle_after: Duration) -> String {
    format!(
        "standby: paused after {} without calls; the next call wakes it",
        humanize(idle_after)
    )
}

/// True for a reason [`paused_reason`] wrote.
pub(super) fn is_paused_reason(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.starts_with("standby: paused"))
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(idle_secs: u64) -> Target {
        Target {
            container_id: "c1".into(),
            idle_after: Duration::from_secs(idle_secs),
        }
    }

    fn seen(calls: u64, inflight: u64, paused: bool) -> Value {
        json!({"calls": calls, "inflight": inflight, "paused": paused})
    }

    #[test]
    fn a_plugin_is_paused_only_after_idle_after_without_new_calls() {
        let t0 = Instant::now();
        let t = target(5);
        let mut w = Watch {
            calls: None,
            quiet_since: t0,
            paused: false,
        };
        assert_eq!(
            decide(&mut w, &t, Some(&seen(3, 0, false)), t0),
            Step::Nothing
        );
        let later = t0 + Duration::from_secs(4);
        assert_eq!(
            decide(&mut w, &t, Some(&seen(3, 0, false)), later),
            Step::Nothing
        );
        // A call at 4 s starts the idle time again.
        assert_eq!(
            decide(&mut w, &t, Some(&seen(4, 0, false)), later),
            Step::Nothing
        );
        let at = later + Duration::from_secs(5);
        assert_eq!(
            decide(&mut w, &t, Some(&seen(4, 0, false)), at),
            Step::Pause(4)
        );
    }

    #[test]
    fn a_call_in_flight_keeps_the_plugin_awake() {
        let t0 = Instant::now();
        let t = target(1);
        let mut w = Watch {
            calls: Some(1),
            quiet_since: t0,
            paused: false,
        };
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            decide(&mut w, &t, Some(&seen(1, 1, false)), at),
            Step::Nothing
        );
        assert_eq!(w.quiet_since, at);
    }

    #[test]
    fn a_paused_plugin_the_gateway_forgot_is_thawed() {
        let t0 = Instant::now();
        let mut w = Watch {
            calls: Some(1),
            quiet_since: t0,
            paused: true,
        };
        assert_eq!(
            decide(&mut w, &target(1), Some(&seen(1, 0, true)), t0),
            Step::Nothing
        );
        assert_eq!(
            decide(&mut w, &target(1), Some(&seen(0, 0, false)), t0),
            Step::Thaw
        );
        assert_eq!(decide(&mut w, &target(1), None, t0), Step::Nothing);
    }

    #[test]
    fn counts_are_read_often_enough_for_the_shortest_idle_time() {
        let mut targets = BTreeMap::new();
        assert_eq!(check_interval(&targets), Duration::from_secs(2));
        targets.insert("a".to_owned(), target(300));
        assert_eq!(check_interval(&targets), Duration::from_secs(2));
        targets.insert("b".to_owned(), target(1));
        assert_eq!(check_interval(&targets), Duration::from_millis(100));
    }

    #[test]
    fn the_paused_reason_names_the_idle_time_and_is_recognised() {
        let r = paused_reason(Duration::from_secs(300));
        assert_eq!(
            r,
            "standby: paused after 5m without calls; the next call wakes it"
        );
        assert!(is_paused_reason(Some(&r)));
        assert!(!is_paused_reason(Some("restarting")));
        assert_eq!(humanize(Duration::from_millis(1500)), "1500ms");
        assert_eq!(humanize(Duration::from_secs(90)), "90s");
        assert_eq!(humanize(Duration::from_secs(7200)), "2h");
    }
}
