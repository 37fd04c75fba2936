//! A per-plugin circuit breaker: closed → open after N consecutive failures → half-open
//! after a pause, where one probe decides between closed and open again.
//!
//! What it counts is about the instances the directory listed when the calls were made: when
//! that set changes (the supervisor restarted a crashed container and saw it ready, or
//! replaced an instance), the count and an open state are forgotten and outcomes of calls
//! made before the change no longer count (decision 0058).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker state, as shown in `GET /v1/plugins/{name}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the pause ends.
    Open,
    /// One probe call is let through.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `halfOpen`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "halfOpen",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Fingerprint of the instances last seen in the directory (`None` before the first call).
    instances: Option<u64>,
    /// Bumped when the instances change; outcomes of calls admitted before are ignored.
    generation: u64,
}

/// Counts consecutive failures of one plugin.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// Permission to make one call; report how it went with [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// An ordinary call.
    Call,
    /// The half-open probe: its outcome closes or reopens the breaker.
    Probe,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures (0 disables it) for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                instances: None,
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the instances the directory lists now (a fingerprint, see
    /// [`instances_fingerprint`]). When they differ from those seen before, the failures
    /// counted against the old ones are forgotten: the breaker closes, and returns
    /// `Some(Closed)` if it was open or half-open.
    pub fn observe_instances(&self, instances: u64) -> Option<BreakerState> {
        let mut inner = self.lock();
        let before = inner.instances.replace(instances);
        if before.is_none_or(|b| b == instances) {
            return None;
        }
        inner.generation += 1;
        let was_closed = matches!(inner.state, State::Closed { .. });
        inner.state = State::Closed { failures: 0 };
        (!was_closed && self.threshold > 0).then_some(BreakerState::Closed)
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Lets a call through, or says how long until the next try.
    pub fn admit(&self, now: Instant) -> Result<Admission, Duration> {
        let mut inner = self.lock();
        let state = &mut inner.state;
        match *state {
            State::Closed { .. } => Ok(Admission::Call),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Admission::Probe)
            }
            State::HalfOpen { probing: true } => Err(self.open_for),
        }
    }

    /// Records the outcome of an admitted call; returns the new state when the breaker
    /// opened or closed because of it.
    pub fn record(
        &self,
        admission: Admission,
        success: bool,
        now: Instant,
    ) -> Option<BreakerState> {
        self.record_in(admission, success, now, None)
    }

    /// [`CircuitBreaker::record`] for a call admitted in `generation` (`None`: any).
    fn record_in(
        &self,
        admission: Admission,
        success: bool,
        now: Instant,
        generation: Option<u64>,
    ) -> Option<BreakerState> {
        if self.threshold == 0 {
            return None;
        }
        let mut inner = self.lock();
        if generation.is_some_and(|g| g != inner.generation) {
            // Made to instances that have been replaced since: it says nothing of these.
            return None;
        }
        let state = &mut inner.state;
        match (admission, success, &mut *state) {
            (Admission::Probe, true, _) => {
                *state = State::Closed { failures: 0 };
                Some(BreakerState::Closed)
            }
            (Admission::Probe, false, _) => {
                *state = State::Open {
                    until: now + self.open_for,
                };
                Some(BreakerState::Open)
            }
            (Admission::Call, true, State::Closed { failures }) => {
                *failures = 0;
                None
            }
            (Admission::Call, false, State::Closed { failures }) => {
                *failures += 1;
                if *failures < self.threshold {
                    return None;
                }
                *state = State::Open {
                    until: now + self.open_for,
                };
                Some(BreakerState::Open)
            }
            // A call admitted before the breaker opened finished late: the probe decides.
            (Admission::Call, _, _) => None,
        }
    }

    /// Gives back an admission whose call never reached the plugin.
    pub fn release(&self, admission: Admission) {
        if admission == Admission::Probe {
            let mut inner = self.lock();
            if let State::HalfOpen { probing } = &mut inner.state {
                *probing = false;
            }
        }
    }

    /// The current state.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// An admission that is given back if dropped before its outcome is recorded, so a
/// cancelled request (the caller hung up) cannot leave the half-open probe taken forever.
#[derive(Debug)]
pub struct AdmissionGuard<'a> {
    breaker: &'a CircuitBreaker,
    admission: Option<Admission>,
    generation: u64,
}

impl<'a> AdmissionGuard<'a> {
    /// Admits a call, or says how long until the next try.
    pub fn admit(breaker: &'a CircuitBreaker, now: Instant) -> Result<Self, Duration> {
        let generation = breaker.generation();
        let admission = breaker.admit(now)?;
        Ok(Self {
            breaker,
            admission: Some(admission),
            generation,
        })
    }

    /// Records the call's outcome; returns the new state when the breaker opened or closed.
    pub fn record(mut self, success: bool, now: Instant) -> Option<BreakerState> {
        let a = self.admission.take()?;
        self.breaker
            .record_in(a, success, now, Some(self.generation))
    }
}

impl Drop for AdmissionGuard<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.breaker.release(a);
        }
    }
}

/// A fingerprint of a plugin's instances (their addresses, in order) for
/// [`CircuitBreaker::observe_instances`].
pub fn instances_fingerprint<'a>(authorities: impl IntoIterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for a in authorities {
        a.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE: Duration = Duration::from_secs(10);

    fn fail(b: &CircuitBreaker, now: Instant) {
        let a = b.admit(now).unwrap();
        let _ = b.record(a, false, now);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = CircuitBreaker::new(3, PAUSE);
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        let a = b.admit(t).unwrap();
        assert_eq!(b.record(a, true, t), None);
        fail(&b, t);
        fail(&b, t);
        assert_eq!(
            b.state(t),
            BreakerState::Closed,
            "a success resets the count"
        );
        fail(&b, t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(
            b.admit(t + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = CircuitBreaker::new(1, PAUSE);
        let t = Instant::now();
        fail(&b, t);
        let later = t + PAUSE;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.admit(later), Ok(Admission::Probe));
        assert!(b.admit(later).is_err(), "only one probe at a time");
        assert_eq!(
            b.record(Admission::Probe, true, later),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.admit(later), Ok(Admission::Call));
    }

    #[test]
    fn failed_probe_reopens() {
        let b = CircuitBreaker::new(1, PAUSE);
        let t = Instant::now();
        fail(&b, t);
        let later = t + PAUSE;
        let probe = b.admit(later).unwrap();
        assert_eq!(b.record(probe, false, later), Some(BreakerState::Open));
        assert_eq!(b.state(later), BreakerState::Open);
        assert!(b.admit(later + PAUSE / 2).is_err());
    }

    #[test]
    fn released_probe_lets_another_probe_through() {
        let b = CircuitBreaker::new(1, PAUSE);
        let t = Instant::now();
        fail(&b, t);
        let probe = b.admit(t + PAUSE).unwrap();
        b.release(probe);
        assert_eq!(b.admit(t + PAUSE), Ok(Admission::Probe));
    }

    #[test]
    fn dropped_probe_guard_gives_the_probe_back() {
        let b = CircuitBreaker::new(1, PAUSE);
        let t = Instant::now();
        fail(&b, t);
        let guard = AdmissionGuard::admit(&b, t + PAUSE).unwrap();
        assert!(b.admit(t + PAUSE).is_err());
        drop(guard);
        let guard = AdmissionGuard::admit(&b, t + PAUSE).unwrap();
        let _ = guard.record(true, t + PAUSE);
        assert_eq!(b.state(t + PAUSE), BreakerState::Closed);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let b = CircuitBreaker::new(0, PAUSE);
        let t = Instant::now();
        for _ in 0..100 {
            fail(&b, t);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn replaced_instances_close_an_open_breaker() {
        let b = CircuitBreaker::new(1, PAUSE);
        let t = Instant::now();
        let old = instances_fingerprint(["10.0.0.2:8080"]);
        assert_eq!(b.observe_instances(old), None);
        fail(&b, t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(b.observe_instances(old), None, "same instances: still open");
        assert!(b.admit(t).is_err());
        // The crashed container is out of the directory, then back (same address).
        let none = instances_fingerprint([]);
        assert_eq!(b.observe_instances(none), Some(BreakerState::Closed));
        assert_eq!(b.observe_instances(old), None, "closed already");
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.admit(t), Ok(Admission::Call));
    }

    #[test]
    fn outcomes_of_calls_to_replaced_instances_do_not_count() {
        let b = CircuitBreaker::new(2, PAUSE);
        let t = Instant::now();
        b.observe_instances(instances_fingerprint(["10.0.0.2:8080"]));
        let late: Vec<_> = (0..3)
            .map(|_| AdmissionGuard::admit(&b, t).unwrap())
            .collect();
        b.observe_instances(instances_fingerprint(["10.0.0.3:8080"]));
        for call in late {
            assert_eq!(call.record(false, t), None);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        let call = AdmissionGuard::admit(&b, t).unwrap();
        assert_eq!(call.record(false, t), None);
        let call = AdmissionGuard::admit(&b, t).unwrap();
        assert_eq!(call.record(false, t), Some(BreakerState::Open));
    }
}
