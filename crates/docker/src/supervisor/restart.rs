//! When a crashed plugin restarts: a pure policy over one plugin's restart state. Every
//! change to that state goes through [`RestartState`], so the backoff sequence, the give-up
//! point and the reset after a healthy run are unit-tested without Docker.

use std::time::{Duration, Instant};

/// How the supervisor answers crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts in a row after which the plugin is Failed.
    pub max_restarts: u32,
    /// Longest pause between restarts.
    pub cap: Duration,
    /// A plugin that ran this long since its last start begins a new series of failures.
    pub healthy_after: Duration,
}

impl RestartPolicy {
    /// The policy with `max_restarts` and `cap`, and a one-minute healthy period.
    pub fn new(max_restarts: u32, cap: Duration) -> Self {
        Self {
            max_restarts,
            cap,
            healthy_after: Duration::from_secs(60),
        }
    }

    /// Pause before restart number `failures` (1-based): 1 s, 2 s, 4 s, … capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        Duration::from_secs(1u64 << exp).min(self.cap)
    }
}

/// What follows a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start the container again after `after`.
    Restart {
        /// Which restart in a row this is (1-based), out of the policy's `max_restarts`.
        attempt: u32,
        /// The pause before it.
        after: Duration,
    },
    /// No more restarts until the plugin is disabled and enabled again.
    Failed {
        /// Failures in a row.
        failures: u32,
    },
}

/// One plugin's crash history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartState {
    failures: u32,
    restarts: u32,
    restart_at: Option<Instant>,
    failed: bool,
}

impl RestartState {
    /// The serving container died after running `ran_for` since its last start.
    pub fn on_crash(&mut self, policy: &RestartPolicy, now: Instant, ran_for: Duration) -> Verdict {
        if ran_for > policy.healthy_after {
            self.failures = 0;
        }
        self.restarts += 1;
        self.fail(policy, now)
    }

    /// A due restart did not bring the container back and it is not running. `None` when
    /// its die event already decided (a restart is scheduled, or it failed for good).
    pub fn on_restart_failed(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Verdict> {
        if self.restart_at.is_some() || self.failed {
            return None;
        }
        Some(self.fail(policy, now))
    }

    fn fail(&mut self, policy: &RestartPolicy, now: Instant) -> Verdict {
        self.failures += 1;
        if self.failures <= policy.max_restarts {
            let after = policy.backoff(self.failures);
            self.restart_at = Some(now + after);
            Verdict::Restart {
                attempt: self.failures,
                after,
            }
        } else {
            self.failed = true;
            self.restart_at = None;
            Verdict::Failed {
                failures: self.failures,
            }
        }
    }

    /// Whether a restart is due at `now`; a due restart is taken, so it is tried once.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            true
        } else {
            false
        }
    }

    /// Schedules a restart at `at` that is not a failure of the plugin (the engine stopped
    /// its container); nothing when it failed for good.
    pub fn schedule(&mut self, at: Instant) {
        if !self.failed {
            self.restart_at = Some(at);
        }
    }

    /// Drops a scheduled restart (the revision stops serving).
    pub fn cancel(&mut self) {
        self.restart_at = None;
    }

    /// Forgets the failures in a row (a new revision is ready, or the plugin was disabled);
    /// the restart count stays for `berth status`.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.failed = false;
    }

    /// Whether a restart is scheduled or the plugin failed for good.
    pub fn is_restarting_or_failed(&self) -> bool {
        self.restart_at.is_some() || self.failed
    }

    /// Restarts since the plugin was installed (or the supervisor started).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// When the scheduled restart is due.
    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::new(5, Duration::from_secs(30))
    }

    const SHORT: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let got: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn crashes_in_a_row_back_off_then_fail_after_five_restarts() {
        let (p, now) = (policy(), Instant::now());
        let mut s = RestartState::default();
        let mut pauses = Vec::new();
        for attempt in 1..=5 {
            match s.on_crash(&p, now, SHORT) {
                Verdict::Restart { attempt: a, after } => {
                    assert_eq!(a, attempt);
                    assert_eq!(s.restart_at(), Some(now + after));
                    pauses.push(after.as_secs());
                }
                v => panic!("crash {attempt}: {v:?}"),
            }
            assert!(s.take_due(now + Duration::from_secs(60)));
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16]);
        assert_eq!(s.on_crash(&p, now, SHORT), Verdict::Failed { failures: 6 });
        assert_eq!(s.restart_at(), None);
        assert!(s.is_restarting_or_failed());
        assert_eq!(s.restarts(), 6);
    }

    #[test]
    fn a_healthy_run_starts_a_new_series() {
        let (p, now) = (policy(), Instant::now());
        let mut s = RestartState::default();
        for _ in 0..4 {
            s.on_crash(&p, now, SHORT);
            s.take_due(now + Duration::from_secs(60));
        }
        let after_a_minute = p.healthy_after + SHORT;
        assert_eq!(
            s.on_crash(&p, now, after_a_minute),
            Verdict::Restart {
                attempt: 1,
                after: Duration::from_secs(1)
            }
        );
        assert_eq!(s.restarts(), 5);
    }

    #[test]
    fn restart_is_due_once_and_not_before_its_time() {
        let (p, now) = (policy(), Instant::now());
        let mut s = RestartState::default();
        s.on_crash(&p, now, SHORT);
        assert!(!s.take_due(now));
        assert!(s.take_due(now + Duration::from_secs(1)));
        assert!(!s.take_due(now + Duration::from_secs(2)));
        assert!(!s.is_restarting_or_failed());
    }

    #[test]
    fn failed_restart_counts_unless_the_die_event_decided_already() {
        let (p, now) = (policy(), Instant::now());
        let mut s = RestartState::default();
        s.on_crash(&p, now, SHORT);
        // The die event scheduled a restart: the failed attempt adds nothing.
        assert_eq!(s.on_restart_failed(&p, now), None);
        assert!(s.take_due(now + Duration::from_secs(1)));
        assert_eq!(
            s.on_restart_failed(&p, now),
            Some(Verdict::Restart {
                attempt: 2,
                after: Duration::from_secs(2)
            })
        );
        // Only crashes count as restarts in `berth status`.
        assert_eq!(s.restarts(), 1);
    }

    #[test]
    fn reset_and_cancel_clear_what_they_say() {
        let (p, now) = (policy(), Instant::now());
        let mut s = RestartState::default();
        for _ in 0..6 {
            s.on_crash(&p, now, SHORT);
            s.take_due(now + Duration::from_secs(60));
        }
        assert!(s.is_restarting_or_failed());
        s.reset();
        assert!(!s.is_restarting_or_failed());
        assert!(matches!(
            s.on_crash(&p, now, SHORT),
            Verdict::Restart { attempt: 1, .. }
        ));
        s.cancel();
        assert_eq!(s.restart_at(), None);
        assert_eq!(s.restarts(), 7);
    }
}
