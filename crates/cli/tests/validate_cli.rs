//! `berth validate` through the real binary: exit codes, messages, formats.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("berth runs")
}

/// Every invalid fixture, and a piece of the message it must produce (path and words).
const FIXTURES: &[(&str, &str)] = &[
    (
        "alias-bomb.yaml",
        "not valid YAML: repetition limit exceeded",
    ),
    (
        "bad-cidr.yaml",
        "spec.permissions.network.egress[0].cidr: \"10.0.0.300/8\" is not a CIDR",
    ),
    (
        "bad-duration.yaml",
        "spec.resources.timeout: \"5 seconds\" is not a duration: unknown unit",
    ),
    (
        "bad-hook-mode.yaml",
        "spec.hooks[0].mode: unknown variant `block`",
    ),
    (
        "bad-host.yaml",
        "spec.permissions.network.egress[0].host: \"https://api.example.com/v1\" is not a host name",
    ),
    (
        "bad-port.yaml",
        "spec.permissions.network.egress[0].ports[0]: invalid value: integer `70000`",
    ),
    (
        "bad-quantity.yaml",
        "spec.resources.memory: \"64 MB\" is not a quantity: unknown suffix \" MB\" (try \"64Mi\")",
    ),
    (
        "bad-semver.yaml",
        "spec.version: \"v1.0\" is not a semantic version",
    ),
    (
        "cycle.yaml",
        "spec.dependsOn: dependency cycle: alpha -> beta -> alpha",
    ),
    (
        "deep-nesting.yaml",
        "not valid YAML: recursion limit exceeded",
    ),
    (
        "duplicate-capability.yaml",
        "spec.capabilities[1].name: capability \"run\" is declared twice",
    ),
    (
        "grant-bad-expiry.yaml",
        "spec.expiresAt: \"next tuesday\" is not an RFC 3339 time",
    ),
    (
        "huge.yaml",
        "the file is 10.0 MiB, larger than the 1 MiB limit for a manifest",
    ),
    (
        "memory-too-small.yaml",
        "spec.resources.memory: 1Mi is below the minimum of 4Mi",
    ),
    ("missing-image.yaml", "spec: missing field `image`"),
    (
        "mount-relative.yaml",
        "spec.permissions.filesystem[0].mountPath: \"workspace\" is not an absolute path",
    ),
    (
        "mount-root.yaml",
        "spec.permissions.filesystem[0].mountPath: a volume cannot be mounted on /",
    ),
    ("non-utf8.yaml", "the file is not UTF-8"),
    ("not-a-mapping.yaml", "the document is not a mapping"),
    (
        "timeout-too-long.yaml",
        "spec.resources.timeout: 1h is longer than the maximum of 15m",
    ),
    (
        "unknown-field.yaml",
        "spec.imagePullPolicy: unknown field `imagePullPolicy`",
    ),
    (
        "unknown-hook.yaml",
        "spec.hooks[0].name: unknown hook \"before_comand\" (did you mean \"before_command\"?",
    ),
    (
        "unsatisfiable-range.yaml",
        "spec.dependsOn[0].version: \"provider\" is at 1.4.0, which does not satisfy",
    ),
    (
        "wrong-api-version.yaml",
        "apiVersion: \"v1\" is not a Berth API version",
    ),
    (
        "wrong-type.yaml",
        "spec.port: invalid type: string \"eighty\", expected u16",
    ),
    (
        "yaml-syntax.yaml",
        "not valid YAML: did not find expected ',' or ']' at line 6 column 1",
    ),
];

#[test]
fn every_example_is_valid() {
    let out = berth(&["validate", "examples/"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "calculator",
        "text-processor",
        "file-ops",
        "http-fetch",
        "hello",
    ] {
        assert!(
            stdout.contains(&format!("Plugin/{name}: valid")),
            "{name} missing from:\n{stdout}"
        );
    }
}

#[test]
fn every_invalid_fixture_exits_1_naming_its_field() {
    let dir = root().join("tests/fixtures/invalid");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = FIXTURES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "every fixture needs an expected message here"
    );
    for (file, expected) in FIXTURES {
        let path = format!("tests/fixtures/invalid/{file}");
        let out = berth(&["validate", &path]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: expected exit 1\n{stdout}{stderr}"
        );
        assert!(
            stdout.contains(&path) && stdout.contains(expected),
            "{file}: expected {expected:?} in:\n{stdout}"
        );
        assert!(!stderr.contains("panicked"), "{file} panicked: {stderr}");
    }
}

#[test]
fn json_output_lists_objects_problems_and_risk() {
    let out = berth(&[
        "validate",
        "--output",
        "json",
        "examples/",
        "tests/fixtures/invalid/bad-quantity.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["valid"], false);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["path"], "spec.resources.memory");
    assert_eq!(problems[0]["hint"], "try \"64Mi\"");
    assert_eq!(problems[0]["severity"], "error");
    let fetch = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == "Plugin/http-fetch")
        .expect("http-fetch listed");
    assert_eq!(fetch["risk"]["tier"], "moderate");
}

#[test]
fn stdin_is_read_with_a_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = std::fs::read(root().join("tests/fixtures/invalid/bad-duration.yaml")).unwrap();
    child.stdin.take().unwrap().write_all(&manifest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-: spec.resources.timeout:"));
    let ok = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["validate", "-"])
        .stdin(std::fs::File::open(root().join("examples/calculator.yaml")).unwrap())
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn an_unreadable_path_exits_2() {
    let out = berth(&["validate", "does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does/not/exist.yaml: cannot read"));
    let empty = tempdir();
    let out = berth(&["validate", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn help_lists_every_subcommand_with_a_line() {
    let out = berth(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    for sub in ["validate", "crd", "help"] {
        assert!(
            commands.iter().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing in {text}"
        );
    }
    for line in commands {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        assert!(
            words.next().is_some(),
            "subcommand {name} has no description line"
        );
    }
}

#[test]
fn crd_output_matches_the_committed_files() {
    let out = berth(&["crd"]);
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = format!(
        "{}---\n{}---\n{}",
        std::fs::read_to_string(root().join("crds/plugins.berth.dev.yaml")).unwrap(),
        std::fs::read_to_string(root().join("crds/plugingrants.berth.dev.yaml")).unwrap(),
        std::fs::read_to_string(root().join("crds/pluginbenchmarks.berth.dev.yaml")).unwrap()
    );
    assert_eq!(printed, committed, "run `berth crd --write crds/`");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
