//! A restart of the Docker daemon under `berth dev up`, on a daemon of the test's own
//! (`support::daemon`): the supervisor does not exit, shows the outage, and once the daemon
//! answers again brings back the gateway and the plugin under the same revision, with no
//! duplicate container, and the audit chain intact.
//!
//! Needs `dockerd` and root (as the other Docker tests, it fails under `CI` when either is
//! missing, and otherwise says why it skips).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::daemon::TestDaemon;
use support::dev::{Dev, build, build_gateway_image, docker_or_skip};
use support::{describe_output, docker_unreachable};

const GATEWAY_IMAGE: &str = concat!("berth/berth:", env!("CARGO_PKG_VERSION"));
const CALCULATOR_IMAGE: &str = "berth/calculator:0.1.0";
/// How many times the daemon is restarted (the numbers in docs/reliability.md are their
/// median).
const RESTARTS: usize = 5;

/// Polls an invocation every 50 ms until it succeeds; the time it took.
fn wait_serving(dev: &mut Dev, daemon: &TestDaemon, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        dev.assert_running();
        if invoke_ok(dev) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "calculator did not serve within {within:?}:\n{}\n--- dockerd ---\n{}",
            dev.log_text(),
            tail(&daemon.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invoke_ok(dev: &Dev) -> bool {
    let out = dev.berth(&[
        "invoke",
        "calculator",
        "evaluate",
        r#"{"expression":"6*7"}"#,
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("42")
}

/// Names and states of the `Dev`'s containers on the test's daemon, running or not.
fn containers(dev: &Dev, daemon: &TestDaemon) -> Vec<String> {
    let label = format!("label=berth.dev/instance={}", dev.instance());
    let mut names: Vec<String> = daemon
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
    // Declared after the daemon, so dropped first: `dev down` runs while the daemon does.
    let mut dev = Dev::on_daemon(&daemon);
    dev.up(&["examples/calculator.yaml"]);
    wait_serving(&mut dev, &daemon, Duration::from_secs(60));
    let before = dev.status("calculator");
    let serving = before["status"]["serving_revision"].clone();
    let revisions = before["revisions"].as_array().unwrap().len();
    let initial = containers(&dev, &daemon);
    assert_eq!(initial.len(), 2, "the gateway and calculator: {initial:?}");
    assert!(
        initial.iter().all(|c| c.ends_with(" running")),
        "{initial:?}"
    );

    let mut down_to_serving = Vec::new();
    let mut back_to_serving = Vec::new();
    for run in 1..=RESTARTS {
        let stopped_at = Instant::now();
        daemon.stop();
        // The supervisor stays, and says the plugin cannot be reached: the gateway is down.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            dev.assert_running();
            let p = dev.plugin("calculator");
            if p["phase"] == "Degraded" {
                let reason = p["reason"].as_str().unwrap_or_default();
                assert!(reason.contains("gateway down"), "{p}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run}: still {p} with the daemon stopped\n{}",
                dev.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !invoke_ok(&dev),
            "run {run}: served with the daemon stopped"
        );
        let started_at = Instant::now();
        daemon.spawn();
        let answering = started_at.elapsed();
        let back = wait_serving(&mut dev, &daemon, Duration::from_secs(60));
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
        while dev.plugin("calculator")["phase"] != "Ready" {
            assert!(
                Instant::now() < deadline,
                "run {run}: {}",
                dev.plugin("calculator")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = containers(&dev, &daemon);
        assert_eq!(now.len(), 2, "run {run}: {now:?}");
        assert!(
            now.iter().all(|c| c.ends_with(" running")),
            "run {run}: {now:?}"
        );
        let status = dev.status("calculator");
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
    let audit: Value = serde_json::from_str(&dev.ok(&["audit", "--output", "json"])).unwrap();
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
    let verify = dev.berth(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", describe_output(&verify));
    dev.assert_running();
    assert!(
        dev.log_text().contains("lost the Docker Engine"),
        "{}",
        dev.log_text()
    );
}
