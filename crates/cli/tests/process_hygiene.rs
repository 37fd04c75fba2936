//! `berth dev up` stopped while it builds the gateway image ends the build it started: a
//! SIGTERM to `berth` alone (not to its process group, as a service manager or `kill`
//! sends it) leaves no build script, `cargo` or `rustc` behind. (Plugin builds run through
//! the same guard, `cmd::children`.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{docker_unreachable, repo};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn docker_reachable() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pids of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            });
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            running && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

fn kill_all(pids: &[u32]) {
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

#[test]
fn sigterm_during_a_build_ends_the_build_it_started() {
    if !docker_reachable() {
        docker_unreachable(
            "sigterm_during_a_build_ends_the_build_it_started",
            "`docker info` failed",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let no_plugins = tmp.path().join("no-plugins");
    std::fs::create_dir(&no_plugins).unwrap();
    // A gateway image that does not exist, so `dev up` builds it, into a target directory
    // of its own: the build has everything to compile, so it is still running when the
    // signal comes, and the path names every compiler process it starts.
    let target = tmp.path().join("hygiene-target");
    let mut dev = Command::new(BERTH)
        .args([
            "dev",
            "up",
            "--port",
            "0",
            "--gateway-image",
            "berth-hygiene-test/berth:0.0.0",
        ])
        .arg(&no_plugins)
        .env("BERTH_STATE_DIR", tmp.path().join("state"))
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = dev.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let needle = target.to_string_lossy().into_owned();
    // Wait until the build runs and has started compiler processes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut said = String::new();
    loop {
        while let Ok(line) = lines.try_recv() {
            said.push_str(&line);
            said.push('\n');
        }
        if said.contains("Compiling") && processes_mentioning(&needle).len() >= 2 {
            break;
        }
        if let Ok(Some(status)) = dev.try_wait() {
            panic!("dev up ended before building ({status}):\n{said}");
        }
        assert!(
            Instant::now() < deadline,
            "no build started within 120 s:\n{said}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let building = processes_mentioning(&needle);

    let sent = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = dev.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dev up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    // Compiling all of `berth` takes minutes: anything still running after 10 s was not
    // ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            kill_all(&left);
            panic!(
                "build processes outlived dev up by 10 s: {left:?} (building were {building:?})"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
