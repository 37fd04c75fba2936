//! The wait-for-the-supervisor handshake: a command has changed the store; a running `berth
//! dev up` acts on every change and then records, under `OBSERVED_SETTING`, the change
//! counter it has acted on. Once that reaches the counter the command saw, the plugin's
//! status is the outcome.

use std::time::{Duration, Instant};

use berth_api::Phase;

use super::{LocalControl, Result};
use crate::supervisor::OBSERVED_SETTING;

/// How often the store is read while waiting; the supervisor itself polls every 10 ms.
const POLL: Duration = Duration::from_millis(20);

/// What became of a change, as far as the command waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No `berth dev up` runs for the state directory: the change is recorded and takes
    /// effect at the next one.
    Recorded,
    /// The supervisor runs but has not acted within the timeout.
    NotActedOn {
        /// How long the command waited.
        timeout: Duration,
    },
    /// The supervisor acted; the plugin's status since.
    Status {
        /// The phase's name (`Ready`, `AwaitingApproval`, …; `Stopped` after `dev down`).
        phase: String,
        /// Why it is in that phase, if known.
        reason: Option<String>,
        /// Whether the phase is one the command counts as success.
        accepted: bool,
    },
    /// The supervisor acted and the plugin has no status any more.
    Removed,
}

impl Outcome {
    /// True when the command should exit 0.
    pub fn is_success(&self) -> bool {
        match self {
            Outcome::Recorded | Outcome::Removed => true,
            Outcome::NotActedOn { .. } => false,
            Outcome::Status { accepted, .. } => *accepted,
        }
    }
}

impl LocalControl<'_> {
    /// Waits until a running supervisor has acted on every change made so far, then reads
    /// `plugin`'s status; a phase in `accept` counts as success.
    pub fn await_outcome(
        &self,
        plugin: &str,
        timeout: Duration,
        accept: &[Phase],
    ) -> Result<Outcome> {
        if !self.state.supervisor_running() {
            return Ok(Outcome::Recorded);
        }
        let wanted = self.store.change_counter()?;
        let deadline = Instant::now() + timeout;
        loop {
            let seen: u64 = self
                .store
                .setting(OBSERVED_SETTING)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if seen >= wanted {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(Outcome::NotActedOn { timeout });
            }
            std::thread::sleep(POLL);
        }
        Ok(match self.store.status(plugin)? {
            Some(s) => Outcome::Status {
                accepted: accept.iter().any(|p| p.as_str() == s.phase),
                phase: s.phase,
                reason: s.reason,
            },
            None => Outcome::Removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, calc_yaml};
    use super::*;
    use berth_store::PluginStatusRecord;

    const ACCEPT: &[Phase] = &[Phase::Ready, Phase::AwaitingApproval];

    fn installed(f: &Fixture) -> LocalControl<'_> {
        let control = LocalControl::new(&f.state, &f.store, "user:test");
        let yaml = calc_yaml("1.0.0", &[]);
        let (file, plugin) = f.manifest("calc.yaml", &yaml);
        control.install(&file, &yaml, &plugin).unwrap();
        control
    }

    #[test]
    fn without_a_supervisor_the_change_waits_for_the_next_dev_up() {
        let f = Fixture::new();
        let control = installed(&f);
        let outcome = control
            .await_outcome("calc", Duration::from_secs(5), ACCEPT)
            .unwrap();
        assert_eq!(outcome, Outcome::Recorded);
        assert!(outcome.is_success());
    }

    #[test]
    fn the_supervisors_status_after_it_acted_is_the_outcome() {
        let f = Fixture::new();
        let control = installed(&f);
        let _lock = f.state.lock_supervisor().unwrap().unwrap();
        // Plays the supervisor on a connection of its own, as `berth dev up` would.
        let store = f.state.open_store().unwrap();
        let supervisor = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            let acted_on = store.change_counter().unwrap();
            store
                .set_status(&PluginStatusRecord {
                    plugin: "calc".into(),
                    phase: "AwaitingApproval".into(),
                    reason: Some("asks for network egress".into()),
                    serving_revision: None,
                    restarts: 0,
                    updated_at: "2026-01-01T00:00:00Z".into(),
                })
                .unwrap();
            store
                .set_setting(OBSERVED_SETTING, &acted_on.to_string())
                .unwrap();
        });

        let outcome = control
            .await_outcome("calc", Duration::from_secs(10), ACCEPT)
            .unwrap();
        supervisor.join().unwrap();

        assert_eq!(
            outcome,
            Outcome::Status {
                phase: "AwaitingApproval".into(),
                reason: Some("asks for network egress".into()),
                accepted: true,
            }
        );
        let refused = control
            .await_outcome("calc", Duration::from_secs(10), &[Phase::Ready])
            .unwrap();
        assert!(!refused.is_success(), "{refused:?}");
    }

    #[test]
    fn a_plugin_without_status_after_the_supervisor_acted_was_removed() {
        let f = Fixture::new();
        let control = installed(&f);
        control.uninstall("calc").unwrap();
        let _lock = f.state.lock_supervisor().unwrap().unwrap();
        let counter = f.store.change_counter().unwrap();
        f.store
            .set_setting(OBSERVED_SETTING, &counter.to_string())
            .unwrap();
        let outcome = control.await_outcome("calc", Duration::ZERO, &[]).unwrap();
        assert_eq!(outcome, Outcome::Removed);
    }

    #[test]
    fn a_supervisor_that_does_not_act_in_time_is_reported() {
        let f = Fixture::new();
        let control = installed(&f);
        let _lock = f.state.lock_supervisor().unwrap().unwrap();
        let timeout = Duration::from_millis(50);
        let outcome = control.await_outcome("calc", timeout, ACCEPT).unwrap();
        assert_eq!(outcome, Outcome::NotActedOn { timeout });
        assert!(!outcome.is_success());
    }
}
