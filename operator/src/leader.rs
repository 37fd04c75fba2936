//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas are safe.
//!
//! The holder renews the Lease every `renew_every`; another replica takes it over only once
//! `renewTime + leaseDurationSeconds` has passed. Every write carries the Lease's
//! `resourceVersion`, so two replicas racing for an expired Lease cannot both win.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::{Error, Result};

/// What to do with a Lease as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// Someone else holds it until this time.
    Wait(Timestamp),
}

/// Decides from the Lease's spec alone. A Lease without a holder or a renew time is free.
pub fn decide(
    spec: &LeaseSpec,
    identity: &str,
    now: Timestamp,
    default_duration: Duration,
) -> LeaseDecision {
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return LeaseDecision::Acquire;
    };
    if holder == identity {
        return LeaseDecision::Renew;
    }
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return LeaseDecision::Acquire;
    };
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(default_duration);
    let expires = renewed
        .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or_default())
        .unwrap_or(renewed);
    if expires <= now {
        LeaseDecision::Acquire
    } else {
        LeaseDecision::Wait(expires)
    }
}

/// One replica's handle on the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    now: fn() -> Timestamp,
}

impl LeaseLock {
    /// A lock on Lease `namespace/name` for the replica called `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            now: Timestamp::now,
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, now: fn() -> Timestamp) -> Self {
        self.now = now;
        self
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            lease: format!("{}/{}", self.api.namespace().unwrap_or_default(), self.name),
            source,
        }
    }

    /// Takes or renews the Lease. `Ok(true)` when this replica holds it afterwards; a lost
    /// race (409 Conflict) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = (self.now)();
        let duration_secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let result = match self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                match decide(spec, &self.identity, now, self.duration) {
                    LeaseDecision::Wait(_) => return Ok(false),
                    LeaseDecision::Renew => {
                        spec.renew_time = Some(MicroTime(now));
                        spec.lease_duration_seconds = Some(duration_secs);
                    }
                    LeaseDecision::Acquire => {
                        spec.holder_identity = Some(self.identity.clone());
                        spec.acquire_time = Some(MicroTime(now));
                        spec.renew_time = Some(MicroTime(now));
                        spec.lease_duration_seconds = Some(duration_secs);
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                }
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up so a standby replica takes over at once (on shutdown).
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Waits until this replica holds the Lease, trying every `retry`.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews every `renew_every`; returns when leadership is lost: the Lease was taken, or
    /// no renewal succeeded for a whole lease duration.
    pub async fn hold(&self, renew_every: Duration) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(identity = %self.identity, "leadership lost to another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "renewing the leader Lease failed");
                    if last_renewal.elapsed() >= self.duration {
                        warn!("leadership lost: the Lease could not be renewed in time");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(t(renewed))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_free_lease_is_acquired() {
        assert_eq!(
            decide(&LeaseSpec::default(), "a", t("2026-01-01T00:00:00Z"), D),
            LeaseDecision::Acquire
        );
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let spec = held_by("a", "2026-01-01T00:00:00Z");
        assert_eq!(
            decide(&spec, "a", t("2026-01-01T00:00:05Z"), D),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn a_live_lease_of_another_replica_is_waited_for() {
        let spec = held_by("b", "2026-01-01T00:00:00Z");
        assert_eq!(
            decide(&spec, "a", t("2026-01-01T00:00:10Z"), D),
            LeaseDecision::Wait(t("2026-01-01T00:00:15Z"))
        );
    }

    #[test]
    fn an_expired_lease_of_another_replica_is_taken_over() {
        let spec = held_by("b", "2026-01-01T00:00:00Z");
        assert_eq!(
            decide(&spec, "a", t("2026-01-01T00:00:15Z"), D),
            LeaseDecision::Acquire
        );
    }
}
