//! `berth render` and `berth operator --help` through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

#[test]
fn render_prints_every_object_of_the_examples() {
    let out = berth(&[
        "render",
        "examples/calculator.yaml",
        "examples/http-fetch.yaml",
        "examples/http-fetch-grant.yaml",
        "--namespace",
        "tools",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Service",
            "NetworkPolicy",
            "Deployment",
            "ServiceAccount",
            "Service",
            "NetworkPolicy",
            "Deployment"
        ]
    );
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "tools"));
    assert!(yaml.contains("# Source: examples/http-fetch.yaml (Plugin/http-fetch) Deployment"));
}

#[test]
fn render_refuses_a_plugin_no_grant_covers() {
    let out = berth(&["render", "examples/http-fetch.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Plugin/http-fetch: not rendered: awaiting approval"),
        "{stderr}"
    );
    let assumed = berth(&["render", "examples/http-fetch.yaml", "--assume-granted"]);
    assert!(assumed.status.success());
}

#[test]
fn render_of_a_missing_file_exits_2() {
    let out = berth(&["render", "examples/no-such-file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn operator_help_lists_its_flags() {
    let out = berth(&["operator", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--auto-approve-tier",
        "--concurrency",
        "--leader-elect",
        "--progress-deadline-seconds",
        "--gateway-selector",
    ] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }
}
