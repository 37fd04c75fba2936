//! Warm standby (`spec.standby`): the gateway's half.
//!
//! The supervisor pauses an idle plugin's container and thaws it when a call comes. The
//! gateway counts the calls of plugins that opted in ([`Activity`], read by
//! `GET /v1/admin/standby`), agrees to a pause only when no call arrived since the
//! supervisor last looked (`POST /v1/admin/standby/pause`), and names a paused plugin that
//! is called on `GET /v1/admin/standby/wakes`, a long poll the supervisor keeps open. The
//! call itself is not held back: a frozen container's kernel still accepts the connection
//! and buffers the request, so the answer comes as soon as the container is thawed
//! (`POST /v1/admin/standby/awake`), within the call's own deadline.
//!
//! Cost per call: nothing for a plugin without `spec.standby`; two atomic increments and
//! one atomic load for one with it; the lock is taken only while some plugin is paused.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use berth_contract::PluginEntry;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::gateway::Gateway;
use crate::{Error, Result};

/// Longest a wake poll waits for a name.
const MAX_WAKE_WAIT: Duration = Duration::from_secs(30);

/// Call counts of one plugin revision, kept only when its manifest opts in to standby.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    enabled: bool,
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// Counts calls when `entry` has `spec.standby`.
    pub(crate) fn new(entry: &PluginEntry) -> Self {
        Self {
            enabled: entry.plugin.spec.standby.is_some(),
            ..Self::default()
        }
    }

    fn counts(&self) -> (u64, u64) {
        let started = self.started.load(Ordering::SeqCst);
        let finished = self.finished.load(Ordering::SeqCst);
        (started, started.saturating_sub(finished))
    }
}

/// Marks a call finished when dropped.
pub(crate) struct CallGuard<'a>(&'a Activity);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

/// Counts a call to `plugin` and, when the plugin is paused, asks the supervisor to wake
/// it. `None` (no cost) for plugins without standby.
#[inline]
pub(crate) fn call_starts<'a>(
    gateway: &Gateway,
    plugin: &str,
    activity: &'a Activity,
) -> Option<CallGuard<'a>> {
    if !activity.enabled {
        return None;
    }
    // SeqCst pairs with `try_pause`: either this call sees the pause, or the pause sees
    // this call and is refused.
    activity.started.fetch_add(1, Ordering::SeqCst);
    let standby = &gateway.inner.standby;
    if standby.paused_count.load(Ordering::SeqCst) > 0 {
        standby.wake(plugin);
    }
    Some(CallGuard(activity))
}

/// Which plugins are paused and which of them callers wait for.
#[derive(Debug, Default)]
pub(crate) struct Standby {
    /// Size of `state.paused`; zero lets calls skip the lock.
    paused_count: AtomicUsize,
    state: Mutex<Paused>,
    wakes: Notify,
    /// Set when the gateway stops: wake polls answer at once, so that a long poll held
    /// open by the supervisor never holds up the graceful shutdown.
    stopping: AtomicBool,
}

#[derive(Debug, Default)]
struct Paused {
    /// Paused plugins, and whether the supervisor was already asked to wake each.
    paused: HashMap<String, bool>,
    /// Names to hand to the next wake poll.
    queue: BTreeSet<String>,
}

impl Standby {
    fn state(&self) -> std::sync::MutexGuard<'_, Paused> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, plugin: &str) {
        let mut state = self.state();
        if let Some(asked) = state.paused.get_mut(plugin)
            && !*asked
        {
            *asked = true;
            state.queue.insert(plugin.to_owned());
            drop(state);
            self.wakes.notify_one();
        }
    }

    /// Marks `plugin` paused if no call started since the supervisor saw `calls` and none
    /// is in flight. Returns the calls started so far when it refuses.
    fn try_pause(&self, plugin: &str, activity: &Activity, calls: u64) -> Result<(), u64> {
        let mut state = self.state();
        if state.paused.contains_key(plugin) {
            return Ok(());
        }
        state.paused.insert(plugin.to_owned(), false);
        self.paused_count.fetch_add(1, Ordering::SeqCst);
        let (started, inflight) = activity.counts();
        if started != calls || inflight > 0 {
            state.paused.remove(plugin);
            self.paused_count.fetch_sub(1, Ordering::SeqCst);
            return Err(started);
        }
        Ok(())
    }

    fn awake(&self, plugin: &str) -> bool {
        let mut state = self.state();
        state.queue.remove(plugin);
        let was = state.paused.remove(plugin).is_some();
        if was {
            self.paused_count.fetch_sub(1, Ordering::SeqCst);
        }
        was
    }

    fn is_paused(&self, plugin: &str) -> bool {
        self.paused_count.load(Ordering::SeqCst) > 0 && self.state().paused.contains_key(plugin)
    }

    /// Ends every wake poll now and any later one at once (the gateway is stopping).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wakes.notify_waiters();
    }

    async fn next_wakes(&self, wait: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.wakes.notified();
            if self.stopping.load(Ordering::SeqCst) {
                return Vec::new();
            }
            {
                let mut state = self.state();
                if !state.queue.is_empty() {
                    return std::mem::take(&mut state.queue).into_iter().collect();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// `GET /v1/admin/standby`: per plugin with `spec.standby`, the calls started so far, the
/// calls in flight and whether it is paused.
pub(crate) async fn get_activity(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    activity(&gateway, &headers).unwrap_or_else(IntoResponse::into_response)
}

fn activity(gateway: &Gateway, headers: &HeaderMap) -> Result<Response> {
    crate::admin::admin(gateway, headers, "/v1/admin/standby")?;
    let snapshot = gateway.snapshot();
    let mut plugins = serde_json::Map::new();
    for entry in snapshot
        .plugins()
        .filter(|e| e.plugin.spec.standby.is_some())
    {
        let runtime = gateway.runtime(entry);
        let (calls, inflight) = runtime.standby.counts();
        plugins.insert(
            entry.name().to_owned(),
            json!({
                "calls": calls,
                "inflight": inflight,
                "paused": gateway.inner.standby.is_paused(entry.name()),
            }),
        );
    }
    Ok(Json(json!({ "plugins": plugins })).into_response())
}

/// Body of `POST /v1/admin/standby/pause`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PauseWire {
    plugin: String,
    /// The calls started as the supervisor last saw them.
    calls: u64,
}

/// Body of `POST /v1/admin/standby/awake`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AwakeWire {
    plugin: String,
}

/// The error code of a standby request that does not fit.
const INVALID_STANDBY: &str = "invalid_standby";

/// `POST /v1/admin/standby/pause`: `{"paused": true}` when the supervisor may freeze the
/// plugin now, else `{"paused": false, "calls": N}` (a call came since it looked).
pub(crate) async fn post_pause(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pause(&gateway, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn pause(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response> {
    crate::admin::admin(gateway, headers, "/v1/admin/standby/pause")?;
    let body = crate::admin::read_admin_body(gateway, headers, body).await?;
    let wire: PauseWire = crate::admin::decode(&body, INVALID_STANDBY)?;
    let snapshot = gateway.snapshot();
    let entry = snapshot
        .get(&wire.plugin)
        .ok_or_else(|| Error::PluginNotFound(wire.plugin.clone()))?;
    if entry.plugin.spec.standby.is_none() {
        return Err(Error::BadRequest {
            code: INVALID_STANDBY,
            message: format!(
                "plugin {:?} has no spec.standby: it is never paused",
                wire.plugin
            ),
        });
    }
    let runtime = gateway.runtime(entry);
    let answer = match gateway
        .inner
        .standby
        .try_pause(&wire.plugin, &runtime.standby, wire.calls)
    {
        Ok(()) => json!({"paused": true}),
        Err(calls) => json!({"paused": false, "calls": calls}),
    };
    Ok(Json(answer).into_response())
}

/// `POST /v1/admin/standby/awake`: the plugin is thawed (or was never frozen); calls to it
/// no longer ask for a wake.
pub(crate) async fn post_awake(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    awake(&gateway, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn awake(gateway: &Gateway, headers: &HeaderMap, body: Body) -> Result<Response> {
    crate::admin::admin(gateway, headers, "/v1/admin/standby/awake")?;
    let body = crate::admin::read_admin_body(gateway, headers, body).await?;
    let wire: AwakeWire = crate::admin::decode(&body, INVALID_STANDBY)?;
    let was_paused = gateway.inner.standby.awake(&wire.plugin);
    Ok(Json(json!({ "wasPaused": was_paused })).into_response())
}

/// Query of `GET /v1/admin/standby/wakes`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WakesQuery {
    /// How long to wait for a name, in milliseconds (at most 30 000).
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /v1/admin/standby/wakes?waitMs=N`: the paused plugins callers are waiting for,
/// `{"plugins": [...]}`, as soon as there is one, or an empty list after `waitMs`.
pub(crate) async fn get_wakes(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<WakesQuery>,
) -> Response {
    if let Err(e) = crate::admin::admin(&gateway, &headers, "/v1/admin/standby/wakes") {
        return e.into_response();
    }
    let wait = Duration::from_millis(query.wait_ms).min(MAX_WAKE_WAIT);
    let plugins = gateway.inner.standby.next_wakes(wait).await;
    (StatusCode::OK, Json(json!({ "plugins": plugins }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Activity {
        Activity {
            enabled: true,
            ..Activity::default()
        }
    }

    fn call(standby: &Standby, plugin: &str, activity: &Activity) {
        activity.started.fetch_add(1, Ordering::SeqCst);
        if standby.paused_count.load(Ordering::SeqCst) > 0 {
            standby.wake(plugin);
        }
    }

    #[test]
    fn a_pause_is_refused_when_a_call_came_since_the_supervisor_looked() {
        let standby = Standby::default();
        let activity = enabled();
        call(&standby, "calc", &activity);
        activity.finished.fetch_add(1, Ordering::SeqCst);
        assert_eq!(standby.try_pause("calc", &activity, 0), Err(1));
        assert_eq!(standby.paused_count.load(Ordering::SeqCst), 0);
        assert_eq!(standby.try_pause("calc", &activity, 1), Ok(()));
        assert!(standby.is_paused("calc"));
    }

    #[test]
    fn a_pause_is_refused_while_a_call_is_in_flight() {
        let standby = Standby::default();
        let activity = enabled();
        call(&standby, "calc", &activity);
        assert_eq!(standby.try_pause("calc", &activity, 1), Err(1));
        assert!(!standby.is_paused("calc"));
    }

    #[tokio::test]
    async fn a_call_to_a_paused_plugin_is_named_once_until_it_is_awake() {
        let standby = Standby::default();
        let activity = enabled();
        assert_eq!(standby.try_pause("calc", &activity, 0), Ok(()));
        assert!(
            standby
                .next_wakes(Duration::from_millis(10))
                .await
                .is_empty()
        );
        call(&standby, "calc", &activity);
        call(&standby, "calc", &activity);
        call(&standby, "other", &activity);
        assert_eq!(standby.next_wakes(Duration::from_secs(5)).await, ["calc"]);
        assert!(
            standby
                .next_wakes(Duration::from_millis(10))
                .await
                .is_empty()
        );
        assert!(standby.awake("calc"));
        assert!(!standby.awake("calc"));
        assert_eq!(standby.paused_count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_waiting_poll_returns_as_soon_as_a_call_comes() {
        let standby = std::sync::Arc::new(Standby::default());
        let activity = enabled();
        standby.try_pause("calc", &activity, 0).unwrap();
        let poll = tokio::spawn({
            let standby = standby.clone();
            async move { standby.next_wakes(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        call(&standby, "calc", &activity);
        assert_eq!(poll.await.unwrap(), ["calc"]);
    }

    #[tokio::test]
    async fn a_stopping_gateway_ends_waiting_polls_and_answers_later_ones_at_once() {
        let standby = std::sync::Arc::new(Standby::default());
        let poll = tokio::spawn({
            let standby = standby.clone();
            async move { standby.next_wakes(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        standby.stop();
        let ended = tokio::time::timeout(Duration::from_secs(5), poll).await;
        assert!(ended.expect("the poll ended on stop").unwrap().is_empty());
        let later = tokio::time::timeout(
            Duration::from_secs(5),
            standby.next_wakes(Duration::from_secs(30)),
        );
        assert!(later.await.expect("answered at once").is_empty());
    }

    #[test]
    fn plugins_without_standby_are_not_counted() {
        let activity = Activity::default();
        assert!(!activity.enabled);
        assert_eq!(activity.counts(), (0, 0));
    }
}
