//! A restart of the Docker daemon under `berth dev up`, on a daemon of the test's own
//! (`support::daemon`): the supervisor does not exit, shows the outage, and once the daemon
//! answers again brings back the gateway and the plugin under the same revision, with no
//! duplicate container, and the audit chain intact.
//!
//! Needs `dockerd` and root (as the other Docker tests, it fails under `CI` when either is
//! missing, and otherwise says why it skips).

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::daemon::TestDaemon;
use support::dev::{build, build_gateway_image, docker_or_skip};
use support::{describe_output, docker_unreachable, repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const GATEWAY_IMAGE: &str = concat!("berth/berth:", env!("CARGO_PKG_VERSION"));
const CALCULATOR_IMAGE: &str = "berth/calculator:0.1.0";
/// How many times the daemon is restarted (the numbers in docs/reliability.md are their
/// median).
const RESTARTS: usize = 5;

/// `berth dev up` against the test's daemon, with a state directory of its own.
struct Local<'a> {
    daemon: &'a TestDaemon,
    state: tempfile::TempDir,
    child: Option<Child>,
}

impl<'a> Local<'a> {
    fn new(daemon: &'a TestDaemon) -> Self {
        Self {
            daemon,
            state: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BERTH);
        c.args(args)
            .env("DOCKER_HOST", self.daemon.host())
            .env("BERTH_STATE_DIR", self.state.path())
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(repo());
        c
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {}: {}\n--- dev up log ---\n{}",
            args.join(" "),
            describe_output(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("dev-up.log")).unwrap_or_default()
    }

    fn up(&mut self, args: &[&str]) {
        let log = std::fs::File::create(self.state.path().join("dev-up.log")).unwrap();
        let child = self
            .command(&["dev", "up"])
            .args(args)
            .args(["--port", "0", "--no-build"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Panics when `berth dev up` has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("berth dev up exited ({status}):\n{}", self.log());
        }
    }

    fn invoke_ok(&self) -> bool {
        let out = self.berth(&[
            "invoke",
            "calculator",
            "evaluate",
            r#"{"expression":"6*7"}"#,
        ]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("42")
    }

    /// Polls an invocation every 50 ms until it succeeds; the time it took.
    fn wait_serving(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            self.assert_running();
            if self.invoke_ok() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "calculator did not serve within {within:?}:\n{}\n--- dockerd ---\n{}",
                self.log(),
                tail(&self.daemon.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn plugin(&self) -> Value {
        let out = self.ok(&["list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "calculator").cloned())
            .unwrap_or(Value::Null)
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "calculator", "--json"])).unwrap()
    }

    /// Names of this instance's containers, running or not.
    fn containers(&self) -> Vec<String> {
        let label = format!(
            "label=berth.dev/instance={}",
            berth_docker::Instance::for_state_dir(self.state.path()).id()
        );
        let mut names: Vec<String> = self
            .daemon
            .ok(&[
                "ps",
                "-a",
                "--filter",
                &label,
                "--format",
                "{{.Names}} {{.State}}",
            ])
            .lines()
            .map(String::from)
            .collect();
        names.sort();
        names
    }
}

impl Drop for Local<'_> {
    fn drop(&mut self) {
        // `dev down` stops the supervisor and removes what it created, while the daemon runs.
        let _ = self.berth(&["dev", "down"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Whether this test can run its own daemon: `dockerd` on the PATH, and root.
fn own_daemon_or_skip(test: &str) -> bool {
    let dockerd = Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !(dockerd && root) {
        docker_unreachable(
            test,
            "a daemon of the test's own needs `dockerd` on the PATH and root",
        );
        return false;
    }
    true
}

#[test]
fn a_docker_daemon_restart_under_dev_up_is_recovered_without_a_hand() {
    let test = "a_docker_daemon_restart_under_dev_up_is_recovered_without_a_hand";
    if !docker_or_skip(test) || !own_daemon_or_skip(test) {
        return;
    }
    // Images are built on the machine's daemon, then copied into the test's.
    build(&["build", "plugin-images/calculator"]);
    build_gateway_image();
    let daemon = TestDaemon::start();
    daemon.load_images(&[GATEWAY_IMAGE, CALCULATOR_IMAGE]);
    let mut local = Local::new(&daemon);
    local.up(&["examples/calculator.yaml"]);
    local.wait_serving(Duration::from_secs(120));
    let before = local.status();
    let serving = before["status"]["serving_revision"].clone();
    let revisions = before["revisions"].as_array().unwrap().len();
    let containers = local.containers();
    assert_eq!(
        containers.len(),
        2,
        "the gateway and calculator: {containers:?}"
    );
    assert!(
        containers.iter().all(|c| c.ends_with(" running")),
        "{containers:?}"
    );

    let mut down_to_serving = Vec::new();
    let mut back_to_serving = Vec::new();
    for run in 1..=RESTARTS {
        let stopped_at = Instant::now();
        daemon.stop();
        // The supervisor stays, and says the plugin cannot be reached: the gateway is down.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            local.assert_running();
            let p = local.plugin();
            if p["phase"] == "Degraded" {
                let reason = p["reason"].as_str().unwrap_or_default();
                assert!(reason.contains("gateway down"), "{p}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run}: still {p} with the daemon stopped\n{}",
                local.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !local.invoke_ok(),
            "run {run}: served with the daemon stopped"
        );
        let started_at = Instant::now();
        daemon.spawn();
        let answering = started_at.elapsed();
        let back = local.wait_serving(Duration::from_secs(60));
        down_to_serving.push(stopped_at.elapsed());
        back_to_serving.push(back);
        eprintln!(
            "run {run}: daemon stopped and started in {:.2} s ({:.2} s to answer again); serving {:.2} s after it answered",
            (started_at - stopped_at + answering).as_secs_f64(),
            answering.as_secs_f64(),
            back.as_secs_f64()
        );
        // No duplicate, nothing left stopped, the same revision.
        let deadline = Instant::now() + Duration::from_secs(10);
        while local.plugin()["phase"] != "Ready" {
            assert!(Instant::now() < deadline, "run {run}: {}", local.plugin());
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = local.containers();
        assert_eq!(now.len(), 2, "run {run}: {now:?}");
        assert!(
            now.iter().all(|c| c.ends_with(" running")),
            "run {run}: {now:?}"
        );
        let status = local.status();
        assert_eq!(
            status["status"]["serving_revision"], serving,
            "run {run}: {status}"
        );
        assert_eq!(
            status["revisions"].as_array().unwrap().len(),
            revisions,
            "run {run}: no new revision: {status}"
        );
    }
    eprintln!(
        "daemon stop to serving again: p50 {:.2} s; daemon answering to serving: p50 {:.2} s",
        median(down_to_serving).as_secs_f64(),
        median(back_to_serving).as_secs_f64()
    );

    // Each outage is in the audit log, and the chain is intact.
    let audit: Value = serde_json::from_str(&local.ok(&["audit", "--output", "json"])).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["details"]["action"].as_str())
        .collect();
    for action in ["engine-lost", "engine-back"] {
        let n = actions.iter().filter(|a| **a == action).count();
        assert_eq!(n, RESTARTS, "{action} in the audit log: {actions:?}");
    }
    let verify = local.berth(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", describe_output(&verify));
    local.assert_running();
    assert!(
        local.log().contains("lost the Docker Engine"),
        "{}",
        local.log()
    );
}
