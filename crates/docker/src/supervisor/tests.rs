//! Supervisor decisions against the fake engine and the fake gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::Phase;
use berth_contract::wire::SnapshotWire;
use berth_store::Store;
use tempfile::TempDir;
use tokio::sync::mpsc;

use super::fake::{FakeEngine, serve_gateway};
use super::{Supervisor, SupervisorConfig, plan};
use crate::{ContainerEvent, EventAction, ImageInfo, Instance};

const GATEWAY_IMAGE: &str = "berth/berth:test";

fn manifest(version: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: calc}}\nspec:\n  image: berth/calc:{version}\n  version: {version}\n"
    )
}

struct Harness {
    engine: FakeEngine,
    store: Arc<Store>,
    dir: TempDir,
}

impl Harness {
    async fn new() -> Self {
        let engine = FakeEngine::default();
        let port = serve_gateway(engine.clone()).await;
        {
            let mut s = engine.state();
            s.gateway_port = port;
            s.images.insert(
                GATEWAY_IMAGE.into(),
                ImageInfo {
                    id: "sha256:gateway".into(),
                    ..Default::default()
                },
            );
        }
        Self {
            engine,
            store: Arc::new(Store::open_in_memory().expect("in-memory store")),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn instance(&self) -> Instance {
        Instance::for_state_dir(self.dir.path())
    }

    /// `berth/calc:{version}`, answering a matching describe; `crashing` containers exit
    /// as soon as they start.
    fn add_image(&self, version: &str, crashing: bool) {
        let id = format!("sha256:calc-{version}");
        let mut s = self.engine.state();
        // By tag and by id, as the engine answers to both: revisions run by the id.
        for reference in [format!("berth/calc:{version}"), id.clone()] {
            s.images.insert(
                reference.clone(),
                ImageInfo {
                    id: id.clone(),
                    ..Default::default()
                },
            );
            s.describes.insert(
                reference.clone(),
                format!(r#"{{"name":"calc","version":"{version}","capabilities":[],"hooks":[]}}"#),
            );
            if crashing {
                s.crashing_images.insert(reference);
            }
        }
    }

    fn install(&self, version: &str) {
        self.store
            .upsert_plugin("calc", &manifest(version), Some("calc.yaml"))
            .expect("install");
    }

    async fn start(&self) -> Supervisor<FakeEngine> {
        self.start_with_pool(0).await
    }

    /// Starts a supervisor that keeps `pool` plugin networks ahead of installs.
    async fn start_with_pool(&self, pool: usize) -> Supervisor<FakeEngine> {
        let mut config = SupervisorConfig::new(
            self.dir.path().to_owned(),
            GATEWAY_IMAGE.into(),
            "admin-token".into(),
        );
        config.ready_timeout = Duration::from_secs(5);
        config.drain = Duration::ZERO;
        config.stop_grace = Duration::from_millis(200);
        config.network_pool = pool;
        // Notices are for a person; the tests read state instead.
        let (tx, _) = mpsc::unbounded_channel();
        Supervisor::start(self.engine.clone(), self.store.clone(), config, tx)
            .await
            .expect("the supervisor starts against the fake")
    }

    fn container(&self, revision: u64) -> String {
        self.instance().plugin_container_name("calc", revision)
    }

    fn calls(&self, prefix: &str) -> Vec<String> {
        self.engine.state().calls_starting(prefix)
    }

    /// Waits (up to 5 s) for a call the supervisor makes in the background.
    async fn wait_for_call(&self, call: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.engine.state().calls.iter().any(|c| c == call) {
            assert!(
                Instant::now() < deadline,
                "no call {call:?}: {:?}",
                self.engine.state().calls
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn last_pushed(&self) -> SnapshotWire {
        let s = self.engine.state();
        serde_json::from_value(s.pushed.last().expect("a pushed directory").clone())
            .expect("a snapshot")
    }

    /// Makes the serving container exit and tells the supervisor, as Docker's event would.
    async fn crash(&self, sup: &mut Supervisor<FakeEngine>) {
        let id = serving(sup).expect("a serving revision").2;
        if let Some(c) = self
            .engine
            .state()
            .containers
            .iter_mut()
            .find(|c| c.id == id)
        {
            c.running = false;
            c.exit_code = 1;
        }
        sup.on_event(ContainerEvent {
            id,
            action: EventAction::Die { exit_code: Some(1) },
            role: Some("plugin".into()),
            plugin: Some("calc".into()),
            revision: None,
            time_nanos: 0,
        })
        .await;
    }
}

/// (revision, has an endpoint, container id) of what serves `calc`.
fn serving(sup: &Supervisor<FakeEngine>) -> Option<(u64, bool, String)> {
    sup.plugins
        .get("calc")
        .and_then(|r| r.serving.as_ref())
        .map(|s| (s.revision, s.endpoint.is_some(), s.container_id.clone()))
}

fn phase(sup: &Supervisor<FakeEngine>) -> (Option<Phase>, String) {
    let rt = sup.plugins.get("calc");
    (
        rt.and_then(|r| r.phase),
        rt.and_then(|r| r.reason.clone()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn install_runs_one_container_on_the_plugins_network_and_publishes_it() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;

    assert_eq!(phase(&sup).0, Some(Phase::Ready), "{:?}", phase(&sup));
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((1, true)));
    let network = h.instance().plugin_network("calc");
    assert_eq!(h.calls("network "), [format!("network {network}")]);
    let gateway = h.instance().gateway_container_name();
    assert!(
        h.calls("connect ")
            .contains(&format!("connect {network} {gateway}"))
    );
    assert_eq!(
        h.calls("run berth"),
        [format!("run {gateway}"), format!("run {}", h.container(1)),]
    );
    let pushed = h.last_pushed();
    let entry = pushed
        .plugins
        .iter()
        .find(|e| e.plugin.name() == "calc")
        .expect("calc pushed");
    assert_eq!((entry.revision, entry.phase), (1, Phase::Ready));
    assert_eq!(entry.endpoints.len(), 1);
    let record = h
        .store
        .revision("calc", 1)
        .unwrap()
        .expect("revision 1 recorded");
    assert_eq!(record.state, "Ready");

    // Nothing changed: a second pass starts nothing.
    sup.reconcile().await;
    assert_eq!(h.calls("run ").len(), 2);
}

#[tokio::test]
async fn crash_restarts_after_backoff_and_fails_after_five_in_a_row() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    let starts = |h: &Harness| h.calls(&format!("start {}", h.container(1))).len();

    for (attempt, pause) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16)] {
        h.crash(&mut sup).await;
        let (p, reason) = phase(&sup);
        assert_eq!(p, Some(Phase::Degraded));
        assert!(
            reason.contains(&format!("restart {attempt} of 5 in {pause} s")),
            "{reason}"
        );
        // Not before the backoff has passed.
        sup.restart_due(Instant::now()).await;
        assert_eq!(starts(&h), attempt - 1);
        sup.restart_due(Instant::now() + Duration::from_secs(pause))
            .await;
        assert_eq!(starts(&h), attempt);
        assert_eq!(phase(&sup).0, Some(Phase::Ready), "{:?}", phase(&sup));
        assert_eq!(serving(&sup).map(|s| s.1), Some(true));
    }

    h.crash(&mut sup).await;
    let (p, reason) = phase(&sup);
    assert_eq!(p, Some(Phase::Failed));
    assert!(
        reason.contains("6 failures in a row, no more restarts"),
        "{reason}"
    );
    sup.restart_due(Instant::now() + Duration::from_secs(3600))
        .await;
    assert_eq!(starts(&h), 5);
    let status = h.store.status("calc").unwrap().expect("a status");
    assert_eq!((status.phase.as_str(), status.restarts), ("Failed", 6));
    // The gateway heard of every restart.
    let observed = h.engine.state().observed.clone();
    let restarts = observed
        .iter()
        .filter(|o| o["restarts"][0]["plugin"] == "calc")
        .count();
    assert_eq!(restarts, 6);
}

#[tokio::test]
async fn disable_then_enable_after_failure_starts_a_fresh_revision() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    for _ in 0..6 {
        h.crash(&mut sup).await;
        sup.restart_due(Instant::now() + Duration::from_secs(60))
            .await;
    }
    assert_eq!(phase(&sup).0, Some(Phase::Failed));

    h.store.set_enabled("calc", false).unwrap();
    sup.reconcile().await;
    assert_eq!(phase(&sup).0, Some(Phase::Disabled));
    assert!(serving(&sup).is_none());
    h.wait_for_call(&format!("remove {}", h.container(1))).await;

    h.store.set_enabled("calc", true).unwrap();
    sup.reconcile().await;
    assert_eq!(phase(&sup).0, Some(Phase::Ready), "{:?}", phase(&sup));
    assert_eq!(serving(&sup).map(|s| s.0), Some(2));
}

#[tokio::test]
async fn new_revision_that_exits_before_ready_is_removed_and_the_old_keeps_serving() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.add_image("2.0.0", true);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    let old_id = serving(&sup).unwrap().2;

    h.install("2.0.0");
    sup.reconcile().await;

    let (p, reason) = phase(&sup);
    assert_eq!(p, Some(Phase::Degraded));
    assert!(
        reason.contains("rolled back, revision 1 keeps serving"),
        "{reason}"
    );
    assert!(reason.contains("exited with code 1"), "{reason}");
    assert_eq!(serving(&sup), Some((1, true, old_id.clone())));
    assert_eq!(h.calls(&format!("remove {}", h.container(2))).len(), 1);
    assert!(h.calls(&format!("signal {}", h.container(1))).is_empty());
    assert!(
        h.engine
            .state()
            .containers
            .iter()
            .any(|c| c.id == old_id && c.running)
    );
    assert_eq!(
        h.store.revision("calc", 2).unwrap().unwrap().state,
        "Failed"
    );
    let entry = h.last_pushed().plugins.remove(0);
    assert_eq!(entry.revision, 1);

    // The failed revision is not tried again until the manifest or image changes.
    sup.reconcile().await;
    assert_eq!(h.calls("run ").len(), 3);
}

#[tokio::test]
async fn ready_new_revision_takes_over_and_the_old_is_retired() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.add_image("2.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;

    h.install("2.0.0");
    sup.reconcile().await;

    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((2, true)));
    assert_eq!(phase(&sup).0, Some(Phase::Ready));
    let entry = h.last_pushed().plugins.remove(0);
    assert_eq!(
        (entry.revision, entry.plugin.spec.version.as_str()),
        (2, "2.0.0")
    );
    h.wait_for_call(&format!("signal {} SIGTERM", h.container(1)))
        .await;
    h.wait_for_call(&format!("remove {}", h.container(1))).await;
    assert_eq!(
        h.store.revision("calc", 1).unwrap().unwrap().state,
        "Retired"
    );
}

#[tokio::test]
async fn uninstall_stops_serving_then_removes_containers_and_network() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;

    h.store.remove_plugin("calc").unwrap();
    sup.reconcile().await;
    assert!(!sup.plugins.contains_key("calc"));
    assert!(h.last_pushed().plugins.is_empty());
    h.wait_for_call(&format!("signal {} SIGTERM", h.container(1)))
        .await;

    // Containers and network go only after the drain, from the loop.
    sup.remove_leftovers(Instant::now()).await;
    assert!(h.calls("remove-leftovers").is_empty());
    sup.remove_leftovers(Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(
        h.calls("remove-leftovers"),
        [format!(
            "remove-leftovers calc {}",
            h.instance().plugin_network("calc")
        )]
    );
    let s = h.engine.state();
    assert!(s.plugin_networks.is_empty());
    assert!(!s.containers.iter().any(|c| c.name.contains("calc")));
}

#[tokio::test]
async fn start_adopts_a_running_current_container_and_removes_stale_ones() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let key = plan::revision_key(&manifest("1.0.0"), "sha256:calc-1.0.0");
    let (current, stale) = {
        let mut s = h.engine.state();
        let labels = |rev, key: &str| h.instance().plugin_labels("calc", rev, key);
        (
            s.add_container(&h.container(4), "berth/calc:1.0.0", labels(4, &key)),
            s.add_container(&h.container(2), "berth/calc:0.9.0", labels(2, "outdated")),
        )
    };

    let mut sup = h.start().await;
    sup.reconcile().await;

    assert_eq!(serving(&sup), Some((4, true, current)));
    assert_eq!(phase(&sup).0, Some(Phase::Ready));
    assert!(
        h.calls("run berth").iter().all(|c| !c.contains("calc")),
        "{:?}",
        h.calls("run")
    );
    assert_eq!(h.calls(&format!("remove {}", h.container(2))).len(), 1);
    assert!(!h.engine.state().containers.iter().any(|c| c.id == stale));
}

#[tokio::test]
async fn restarted_supervisor_keeps_a_gateway_started_with_the_same_settings() {
    let h = Harness::new().await;
    let first = h.start().await;
    let url = first.gateway_url().to_owned();
    drop(first);
    let second = h.start().await;
    assert_eq!(second.gateway_url(), url);
    let gateway = h.instance().gateway_container_name();
    assert_eq!(h.calls(&format!("run {gateway}")).len(), 1);
    assert!(h.calls(&format!("remove {gateway}")).is_empty());
}

impl Harness {
    fn gateway_id(&self) -> String {
        let name = self.instance().gateway_container_name();
        let s = self.engine.state();
        s.containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.clone())
            .expect("a gateway container")
    }

    /// Stops the gateway container as `docker kill` does, and tells the supervisor.
    async fn kill_gateway(&self, sup: &mut Supervisor<FakeEngine>) {
        let id = self.gateway_id();
        if let Some(c) = self
            .engine
            .state()
            .containers
            .iter_mut()
            .find(|c| c.id == id)
        {
            c.running = false;
            c.exit_code = 137;
        }
        sup.on_event(gateway_event(
            &id,
            EventAction::Die {
                exit_code: Some(137),
            },
        ))
        .await;
    }

    /// Removes the gateway container as `docker rm -f` does, and tells the supervisor.
    async fn remove_gateway(&self, sup: &mut Supervisor<FakeEngine>) {
        let id = self.gateway_id();
        self.kill_gateway(sup).await;
        self.engine.state().containers.retain(|c| c.id != id);
        sup.on_event(gateway_event(&id, EventAction::Other("destroy".into())))
            .await;
    }

    fn gateway_status(&self) -> serde_json::Value {
        let text = self
            .store
            .setting(super::GATEWAY_STATUS_SETTING)
            .unwrap()
            .expect("a gateway status");
        serde_json::from_str(&text).unwrap()
    }

    fn stored_phase(&self) -> (String, String) {
        let s = self.store.status("calc").unwrap().expect("a status");
        (s.phase, s.reason.unwrap_or_default())
    }

    fn audit_actions(&self) -> Vec<String> {
        self.store
            .query_audit(&Default::default())
            .unwrap()
            .into_iter()
            .filter_map(|e| e.details["action"].as_str().map(String::from))
            .collect()
    }
}

fn gateway_event(id: &str, action: EventAction) -> ContainerEvent {
    ContainerEvent {
        id: id.to_owned(),
        action,
        role: Some("gateway".into()),
        plugin: None,
        revision: None,
        time_nanos: 0,
    }
}

#[tokio::test]
async fn killed_gateway_is_restarted_after_backoff_and_gets_the_directory_again() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    assert_eq!(h.gateway_status()["state"], "up");
    let gateway = h.instance().gateway_container_name();
    let pushes = h.engine.state().pushed.len();

    h.kill_gateway(&mut sup).await;
    // While it is down no plugin is Ready, and the store says why.
    let (p, reason) = h.stored_phase();
    assert_eq!(p, "Degraded");
    assert!(
        reason.contains("gateway down (exited with code 137)"),
        "{reason}"
    );
    let status = h.gateway_status();
    assert_eq!(status["state"], "down", "{status}");
    assert_eq!(status["reason"], "exited with code 137");
    // A pass while it is down starts nothing and pushes nothing.
    sup.reconcile().await;
    assert_eq!(h.engine.state().pushed.len(), pushes);
    assert_eq!(h.calls("run ").len(), 2);

    sup.restart_due(Instant::now()).await;
    assert!(h.calls(&format!("start {gateway}")).is_empty());
    sup.restart_due(Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(h.calls(&format!("start {gateway}")).len(), 1);

    assert_eq!(h.gateway_status()["state"], "up");
    assert_eq!(h.gateway_status()["restarts"], 1);
    assert_eq!(h.stored_phase(), ("Ready".to_owned(), String::new()));
    assert_eq!(h.engine.state().pushed.len(), pushes + 1);
    let entry = h.last_pushed().plugins.remove(0);
    assert_eq!((entry.revision, entry.phase), (1, Phase::Ready));
    let actions = h.audit_actions();
    assert!(
        actions.iter().any(|a| a == "gateway-stopped")
            && actions.iter().any(|a| a == "gateway-restarted"),
        "{actions:?}"
    );
    // The plugin itself was never touched.
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((1, true)));
    assert_eq!(h.calls("run ").len(), 2);
}

#[tokio::test]
async fn removed_gateway_is_created_again_and_joins_the_plugin_networks() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    let gateway = h.instance().gateway_container_name();
    let network = h.instance().plugin_network("calc");
    let old = h.gateway_id();

    h.remove_gateway(&mut sup).await;
    assert_eq!(h.gateway_status()["state"], "down");
    assert_eq!(h.stored_phase().0, "Degraded");
    sup.restart_due(Instant::now() + Duration::from_secs(1))
        .await;

    assert_eq!(h.calls(&format!("run {gateway}")).len(), 2);
    let new = h.gateway_id();
    assert_ne!(new, old);
    assert_eq!(sup.gateway_id, new);
    assert_eq!(
        h.calls(&format!("connect {network} {gateway}")).len(),
        2,
        "{:?}",
        h.calls("connect ")
    );
    assert_eq!(h.gateway_status()["state"], "up");
    assert_eq!(h.stored_phase().0, "Ready");
    assert!(h.audit_actions().iter().any(|a| a == "gateway-recreated"));
    // The new gateway has another address on the plugin's network: the plugin's container
    // knows the old one, so a new revision replaces it.
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((2, true)));

    // Events of the removed container no longer count.
    sup.on_event(gateway_event(&old, EventAction::Die { exit_code: Some(1) }))
        .await;
    assert_eq!(h.gateway_status()["state"], "up");
}

#[tokio::test]
async fn gateway_failing_again_and_again_waits_longer_each_time() {
    let h = Harness::new().await;
    let mut sup = h.start().await;
    sup.reconcile().await;
    let gateway = h.instance().gateway_container_name();
    let starts = |h: &Harness| h.calls(&format!("start {gateway}")).len();
    // Its containers exit as soon as they start.
    h.engine
        .state()
        .crashing_images
        .insert(GATEWAY_IMAGE.to_owned());

    h.kill_gateway(&mut sup).await;
    let mut tried = 0;
    for pause in [1, 2, 4, 8, 16] {
        // Not before the backoff has passed.
        sup.restart_due(Instant::now() + Duration::from_millis(pause * 1000 - 300))
            .await;
        assert_eq!(starts(&h), tried, "before {pause} s");
        sup.restart_due(Instant::now() + Duration::from_secs(pause))
            .await;
        tried += 1;
        assert_eq!(starts(&h), tried, "after {pause} s");
        assert_eq!(h.gateway_status()["state"], "down");
    }
    // It keeps trying at the longest pause, and comes back once it can.
    h.engine.state().crashing_images.clear();
    sup.restart_due(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(starts(&h), tried + 1);
    assert_eq!(h.gateway_status()["state"], "up");
}

#[tokio::test]
async fn removed_plugin_container_is_replaced_by_a_new_revision() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    let id = serving(&sup).unwrap().2;

    // `docker rm -f`: die, then destroy.
    h.crash(&mut sup).await;
    h.engine.state().containers.retain(|c| c.id != id);
    sup.on_event(ContainerEvent {
        id: id.clone(),
        action: EventAction::Other("destroy".into()),
        role: Some("plugin".into()),
        plugin: Some("calc".into()),
        revision: Some(1),
        time_nanos: 0,
    })
    .await;
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((2, true)));
    assert_eq!(phase(&sup).0, Some(Phase::Ready), "{:?}", phase(&sup));
    assert!(h.audit_actions().iter().any(|a| a == "container-removed"));

    // The destroy event missed: the due restart finds no container and replaces it too.
    let id = serving(&sup).unwrap().2;
    h.crash(&mut sup).await;
    h.engine.state().containers.retain(|c| c.id != id);
    sup.restart_due(Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((3, true)));
    assert_eq!(phase(&sup).0, Some(Phase::Ready), "{:?}", phase(&sup));
}

#[tokio::test]
async fn a_restarted_engine_brings_back_the_gateway_and_the_same_revision() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start().await;
    sup.reconcile().await;
    let id = serving(&sup).unwrap().2;
    let pushes = h.engine.state().pushed.len();

    // The engine stops: every container with it, then the API.
    {
        let mut s = h.engine.state();
        s.engine_down = true;
        for c in &mut s.containers {
            c.running = false;
        }
    }
    sup.engine_lost("the events stream ended").await;
    let status = h.gateway_status();
    assert_eq!(status["state"], "down", "{status}");
    assert_eq!(status["reason"], "the Docker Engine is unreachable");
    let (p, reason) = h.stored_phase();
    assert_eq!(p, "Degraded");
    assert!(reason.contains("Docker Engine is unreachable"), "{reason}");
    // Asking again does nothing while it does not answer.
    assert!(
        !sup.engine_answers(Instant::now() + Duration::from_secs(10))
            .await
    );

    // Back: its restart policy started the gateway container; the plugin's stays stopped.
    {
        let mut s = h.engine.state();
        s.engine_down = false;
        let gateway = h.instance().gateway_container_name();
        for c in &mut s.containers {
            c.running = c.name == gateway;
        }
    }
    assert!(
        sup.engine_answers(Instant::now() + Duration::from_secs(10))
            .await
    );
    sup.engine_back().await;

    assert_eq!(h.gateway_status()["state"], "up");
    assert_eq!(h.stored_phase(), ("Ready".to_owned(), String::new()));
    // The same container started again: no new revision, no second container.
    assert_eq!(serving(&sup), Some((1, true, id)));
    assert_eq!(h.calls(&format!("start {}", h.container(1))).len(), 1);
    assert_eq!(h.calls("run ").len(), 2, "{:?}", h.calls("run "));
    assert!(h.engine.state().pushed.len() > pushes);
    let entry = h.last_pushed().plugins.remove(0);
    assert_eq!((entry.revision, entry.phase), (1, Phase::Ready));
    let actions = h.audit_actions();
    for action in [
        "engine-lost",
        "gateway-stopped",
        "engine-back",
        "gateway-restarted",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
    // The totals for the gateway's `berth_local_*` gauges.
    let report = h
        .engine
        .state()
        .observed
        .iter()
        .rev()
        .find_map(|o| o.get("supervisor").cloned())
        .expect("a supervisor report");
    assert_eq!(report["engineOutages"], 1, "{report}");
    assert_eq!(report["gatewayRestarts"], 1, "{report}");
    assert!(
        report["gatewayDownSeconds"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
}

#[tokio::test]
async fn an_unchanged_plugin_brought_back_after_dev_down_keeps_its_revision() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    {
        let mut sup = h.start().await;
        sup.reconcile().await;
        assert_eq!(serving(&sup).map(|s| s.0), Some(1));
    }
    // `berth dev down`: the containers go, the revision is recorded as stopped.
    h.engine.state().containers.retain(|c| {
        c.labels
            .get(crate::instance::ROLE_LABEL)
            .map(String::as_str)
            != Some("plugin")
    });
    h.store
        .update_revision("calc", 1, "Stopped", Some("`berth dev down`"), None, None)
        .unwrap();

    let mut sup = h.start().await;
    sup.reconcile().await;
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((1, true)));
    let revisions = h.store.revisions("calc").unwrap();
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    assert_eq!(revisions[0].state, "Ready");

    // A changed manifest is a new revision all the same.
    h.add_image("1.1.0", false);
    h.install("1.1.0");
    sup.reconcile().await;
    assert_eq!(serving(&sup).map(|s| (s.0, s.1)), Some((2, true)));
}

/// Waits for the pool's background creations and hands them to the supervisor, as its
/// loop does.
async fn settle_pool(sup: &mut Supervisor<FakeEngine>) {
    let mut filled = sup.pool_rx.take().expect("the loop is not running");
    while sup.pool.filling > 0 {
        let f = tokio::time::timeout(Duration::from_secs(5), filled.recv())
            .await
            .expect("a pool network is created")
            .expect("the channel stays open");
        sup.pool_filled(f).await;
    }
    sup.pool_rx = Some(filled);
}

#[tokio::test]
async fn an_install_takes_a_pool_network_and_it_is_never_given_to_another_plugin() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    let mut sup = h.start_with_pool(2).await;
    sup.fill_pool();
    settle_pool(&mut sup).await;
    let pool: Vec<String> = h.engine.state().pool_networks.iter().cloned().collect();
    assert_eq!(pool.len(), 2, "{pool:?}");
    for network in &pool {
        // Created with the plugin shape and joined by the gateway ahead of any install.
        assert!(network.contains("_pool-"), "{network}");
        assert_eq!(h.calls(&format!("connect {network} ")).len(), 1);
    }

    h.install("1.0.0");
    sup.reconcile().await;
    assert_eq!(sup.phase_of("calc"), Some(Phase::Ready));
    let given = sup.network_of("calc");
    assert!(pool.contains(&given), "{given} is from {pool:?}");
    // Nothing was created for the install itself: no network of the plugin's own name.
    assert!(
        h.calls(&format!("network {}", h.instance().plugin_network("calc")))
            .is_empty()
    );
    assert!(
        h.calls(&format!("run {}", h.container(1))).len() == 1,
        "the revision runs"
    );
    // The pool is filled again, without the network given away.
    settle_pool(&mut sup).await;
    assert_eq!(sup.pool.free.len(), 2);
    assert!(!sup.pool.free.contains(&given));

    // A supervisor started again finds the same network for the plugin and keeps the
    // free ones in its pool.
    drop(sup);
    let mut sup = h.start_with_pool(2).await;
    assert_eq!(sup.network_of("calc"), given);
    assert!(!sup.pool.free.contains(&given));
    assert_eq!(sup.pool.free.len(), 2, "the free ones are adopted");
    sup.fill_pool();
    assert_eq!(sup.pool.filling, 0, "nothing more to create");

    // Uninstalled: the given network goes with the plugin and its record is forgotten.
    h.store.remove_plugin("calc").unwrap();
    sup.reconcile().await;
    sup.remove_leftovers(Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(
        h.calls("remove-leftovers"),
        [format!("remove-leftovers calc {given}")]
    );
    assert!(!h.engine.state().pool_networks.contains(&given));
    assert_eq!(sup.network_of("calc"), h.instance().plugin_network("calc"));
}

#[tokio::test]
async fn a_plugin_with_a_network_of_its_own_keeps_it_when_installed_again() {
    let h = Harness::new().await;
    h.add_image("1.0.0", false);
    h.install("1.0.0");
    let mut sup = h.start_with_pool(2).await;
    // Installed before the pool is filled (as the examples `dev up` is given): its own.
    sup.reconcile().await;
    let own = h.instance().plugin_network("calc");
    assert_eq!(sup.network_of("calc"), own);
    sup.fill_pool();
    settle_pool(&mut sup).await;

    // Uninstalled, and installed again before its leftovers went: the same network, not
    // one from the pool (which would leave the old one behind).
    h.store.remove_plugin("calc").unwrap();
    sup.reconcile().await;
    h.install("1.0.0");
    sup.reconcile().await;
    assert_eq!(sup.phase_of("calc"), Some(Phase::Ready));
    assert_eq!(sup.network_of("calc"), own);
    assert_eq!(sup.pool.free.len(), 2, "no pool network was taken");

    // Uninstalled for good: its own network goes, and a later install takes the pool's.
    h.store.remove_plugin("calc").unwrap();
    sup.reconcile().await;
    sup.remove_leftovers(Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(
        h.calls("remove-leftovers"),
        [format!("remove-leftovers calc {own}")]
    );
    h.install("1.0.0");
    sup.reconcile().await;
    assert!(sup.network_of("calc").contains("_pool-"));
}
