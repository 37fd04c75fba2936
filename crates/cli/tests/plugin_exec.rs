//! `berth plugin test --exec`: the conformance checks against local processes, no Docker.
//! The Python example and the Rust `hello` example pass; deliberately broken plugins fail
//! with lines that say what is wrong; and no process of the plugin outlives the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, test_kill_process_group};

mod support;

use support::{describe_output as describe, repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run berth")
}

fn assert_passes(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(output));
    assert!(!stdout.contains("FAIL "), "{}", describe(output));
    for check in [
        "manifest",
        "health",
        "listen address",
        "describe",
        "unknown capability",
        "malformed json",
        "deadline 0",
        "deadline garbage",
        "error precedence",
        "keep-alive",
        "sigterm drain",
        "sigterm",
    ] {
        assert!(
            stdout.contains(&format!("PASS {check:<28} ")),
            "missing {check:?}:\n{}",
            describe(output)
        );
    }
    assert!(stdout.contains("without isolation"), "{}", describe(output));
    assert!(stdout.contains(" 0 failed"), "{}", describe(output));
}

/// Waits until no process is left in `group`.
fn group_gone(group: i32) -> bool {
    let pid = Pid::from_raw(group).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if test_kill_process_group(pid).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn read_group(file: &Path) -> i32 {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("the plugin did not write {}: {e}", file.display()));
    text.trim().parse().unwrap()
}

#[test]
fn exec_passes_against_the_python_example() {
    let sdk = repo().join("sdks/python");
    for file in ["example.py", "berth.yaml"] {
        assert!(
            sdk.join(file).is_file(),
            "sdks/python/{file} is missing: the Python example is what this test runs"
        );
    }
    let output = berth_in(
        &repo(),
        &[
            "plugin",
            "test",
            "--exec",
            "python3 sdks/python/example.py",
            "--manifest",
            "sdks/python/berth.yaml",
        ],
    );
    assert_passes(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("PASS describe                     py-hello "),
        "{stdout}"
    );
}

/// Builds the `hello` example for this host (not the static image build) and returns it.
fn hello_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "-p", "berth-plugin-hello", "--target-dir"])
        .arg(target_dir())
        .current_dir(repo())
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "{}", describe(&output));
    let binary = target_dir().join("debug/berth-plugin-hello");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

#[test]
fn exec_passes_against_the_rust_hello_example_and_counts_in_the_singular() {
    let binary = hello_binary();
    let command = format!("exec {}", binary.display());
    let output = berth_in(
        &repo(),
        &[
            "plugin",
            "test",
            "--exec",
            &command,
            "--manifest",
            "plugin-images/hello/berth.yaml",
        ],
    );
    assert_passes(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("hello 0.1.0: 1 capability, 1 hook as in the manifest"),
        "{}",
        describe(&output)
    );
}

/// A plugin wrong in every way the new checks look at: it listens on 127.0.0.1 only, speaks
/// HTTP/1.0 (one request per connection), ignores the deadline header, answers unknown
/// paths and wrong methods with a plain 404, adds a field to its output, and ignores SIGTERM
/// (`die` as its argument: it dies of SIGTERM at once instead).
const BROKEN_PLUGIN: &str = r#"
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

open(os.environ["GROUP_FILE"], "w").write(str(os.getpgid(0)))
if sys.argv[1:] != ["die"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Handler(BaseHTTPRequestHandler):
    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, {"status": "ok"})
        elif self.path == "/v1/describe":
            self.answer(200, {"name": "broken", "version": "0.1.0",
                              "capabilities": [{"name": "echo"}], "hooks": []})
        else:
            self.send_error(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path != "/v1/invoke/echo":
            self.answer(404, {"error": {"code": "unknown_capability", "message": "no such capability"}})
            return
        try:
            value = json.loads(raw)
        except ValueError:
            self.answer(400, {"error": {"code": "malformed_json", "message": "not JSON"}})
            return
        value["debug"] = True
        self.answer(200, value)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["BERTH_PORT"])), Handler).serve_forever()
"#;

const BROKEN_MANIFEST: &str = "apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata:
  name: broken
spec:
  image: berth/broken:0.1.0
  version: 0.1.0
  capabilities:
    - name: echo
      examples:
        - input: {text: hi}
          output: {text: hi}
  resources:
    timeout: 2s
";

fn broken_plugin(dir: &Path) {
    std::fs::write(dir.join("broken.py"), BROKEN_PLUGIN).unwrap();
    std::fs::write(dir.join("berth.yaml"), BROKEN_MANIFEST).unwrap();
}

fn fail_line<'a>(stdout: &'a str, check: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("FAIL {check:<28} ")))
        .unwrap_or_else(|| panic!("no FAIL {check} line:\n{stdout}"))
}

#[test]
fn exec_fails_a_broken_plugin_with_clear_lines_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    broken_plugin(dir.path());
    let group_file = dir.path().join("group");
    let output = Command::new(BERTH)
        .args([
            "plugin",
            "test",
            "--exec",
            // A second process in the group, which must be gone too.
            "sleep 300 & exec python3 broken.py",
            "--grace",
            "1s",
        ])
        .current_dir(dir.path())
        .env("GROUP_FILE", &group_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stdout.contains("PASS health  "), "{stdout}");
    assert!(
        fail_line(&stdout, "listen address").contains("connection refused at 127.0.0.2:")
            && stdout.contains("listen on 0.0.0.0:$BERTH_PORT (BERTH_PORT="),
        "{stdout}"
    );
    assert!(
        fail_line(&stdout, "example echo#1").contains("extra field debug = true"),
        "{stdout}"
    );
    assert!(
        fail_line(&stdout, "deadline 0").contains("answered 200, expected 504 deadline_exceeded"),
        "{stdout}"
    );
    assert!(
        fail_line(&stdout, "deadline garbage").contains("answered 200, expected 400 bad_request"),
        "{stdout}"
    );
    let precedence = fail_line(&stdout, "error precedence");
    for expected in [
        "POST /berth-conformance/no-such-path: answered 404 with error code \"unknown_capability\", expected \"not_found\"",
        "GET /v1/invoke/echo: answered 404, expected 405 method_not_allowed",
        "answered 400 with error code \"malformed_json\", expected \"bad_request\"",
    ] {
        assert!(
            precedence.contains(expected),
            "{expected:?} not in {precedence}"
        );
    }
    assert!(
        fail_line(&stdout, "keep-alive").contains("closes the connection (HTTP/1.0"),
        "{stdout}"
    );
    assert!(
        fail_line(&stdout, "sigterm").contains("still running 1s after SIGTERM"),
        "{stdout}"
    );
    assert!(!stdout.contains(" 0 failed"), "{stdout}");
    let group = read_group(&group_file);
    assert!(
        group_gone(group),
        "processes of group {group} outlived berth"
    );
}

#[test]
fn exec_fails_a_plugin_that_dies_of_sigterm_without_answering_the_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    broken_plugin(dir.path());
    let group_file = dir.path().join("group");
    let output = Command::new(BERTH)
        .args(["plugin", "test", "--exec", "python3 broken.py die"])
        .current_dir(dir.path())
        .env("GROUP_FILE", &group_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        fail_line(&stdout, "sigterm drain")
            .contains("half sent when SIGTERM arrived got no answer"),
        "{stdout}"
    );
    assert!(
        fail_line(&stdout, "sigterm").contains("SIGTERM ended it without it handling it"),
        "{stdout}"
    );
    assert!(group_gone(read_group(&group_file)));
}

#[test]
fn exec_says_connection_refused_and_how_to_listen_when_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth.yaml"), BROKEN_MANIFEST).unwrap();
    let output = berth_in(
        dir.path(),
        &[
            "plugin",
            "test",
            "--exec",
            "exec sleep 300",
            "--health-timeout",
            "1s",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let health = fail_line(&stdout, "health");
    assert!(
        health.contains("not healthy within 1s: connection refused at 127.0.0.1:")
            && health.contains(": listen on 0.0.0.0:$BERTH_PORT (BERTH_PORT=")
            && health.ends_with("), not 127.0.0.1"),
        "{stdout}"
    );
    assert!(!stdout.contains("error sending request"), "{stdout}");
}

#[test]
fn exec_reports_a_plugin_that_exits_before_it_is_healthy_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth.yaml"), BROKEN_MANIFEST).unwrap();
    let output = berth_in(
        dir.path(),
        &["plugin", "test", "--exec", "echo cannot start >&2; exit 3"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        fail_line(&stdout, "health")
            .contains("the process exited with status 3 before it was healthy"),
        "{stdout}"
    );
    assert!(stdout.contains("  cannot start"), "{stdout}");
}

#[test]
fn exec_without_a_manifest_says_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = berth_in(dir.path(), &["plugin", "test", "--exec", "true"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--manifest FILE"),
        "{}",
        describe(&output)
    );
}

#[test]
fn interrupting_berth_ends_every_process_of_the_plugin() {
    for signal in [Signal::INT, Signal::TERM] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("berth.yaml"), BROKEN_MANIFEST).unwrap();
        let group_file = dir.path().join("group");
        let mut berth = Command::new(BERTH)
            .args([
                "plugin",
                "test",
                "--exec",
                // Never healthy; two processes, one of them deaf to SIGTERM.
                "echo $$ > group; (trap '' TERM; sleep 300) & exec sleep 300",
                "--health-timeout",
                "60s",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !group_file.is_file()
            || std::fs::read_to_string(&group_file)
                .unwrap()
                .trim()
                .is_empty()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the plugin never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = read_group(&group_file);
        std::thread::sleep(Duration::from_millis(300));
        kill_process(Pid::from_raw(berth.id() as i32).unwrap(), signal).unwrap();
        let status = berth.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{signal:?}");
        assert!(
            group_gone(group),
            "{signal:?}: the plugin's group outlived berth"
        );
    }
}
