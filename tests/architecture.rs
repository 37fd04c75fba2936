//! The crate arrows the README draws: each workspace crate's normal dependencies on other
//! Berth crates, read from `cargo metadata`. A new arrow (say, a backend importing the
//! gateway) fails here until the README and this table agree on it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

fn berth_arrows() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let mut arrows = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        if !name.starts_with("berth") || name == "berth-tests" {
            continue;
        }
        let deps: BTreeSet<String> = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("berth"))
            .map(str::to_owned)
            .collect();
        arrows.insert(name, deps);
    }
    arrows
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn crate_arrows_point_one_way_as_the_readme_draws_them() {
    let arrows = berth_arrows();
    let expected: BTreeMap<String, BTreeSet<String>> = [
        (
            "berth",
            set(&[
                "berth-api",
                "berth-contract",
                "berth-docker",
                "berth-gateway",
                "berth-operator",
                "berth-plugin-sdk",
                "berth-store",
                "berth-trust",
            ]),
        ),
        (
            "berth-gateway",
            set(&["berth-api", "berth-contract", "berth-store"]),
        ),
        (
            "berth-docker",
            set(&["berth-api", "berth-contract", "berth-store", "berth-trust"]),
        ),
        (
            "berth-operator",
            set(&["berth-api", "berth-contract", "berth-trust"]),
        ),
        ("berth-trust", set(&[])),
        ("berth-store", set(&["berth-contract"])),
        ("berth-plugin-sdk", set(&["berth-contract"])),
        ("berth-contract", set(&["berth-api"])),
        ("berth-api", set(&[])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (name, deps) in &expected {
        assert_eq!(arrows.get(name), Some(deps), "{name}'s Berth dependencies");
    }
}

/// `cargo tree -p PACKAGE -e normal`, one package a line.
fn normal_tree(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links(tree: &str, name: &str) -> bool {
    tree.lines().any(|l| l.starts_with(&format!("{name} ")))
}

#[test]
fn the_plugin_sdk_builds_without_the_manifest_types() {
    let tree = normal_tree("berth-plugin-sdk");
    for heavy in ["berth-api", "kube", "k8s-openapi", "schemars", "jsonschema"] {
        assert!(!links(&tree, heavy), "the SDK pulls {heavy}:\n{tree}");
    }
}

#[test]
fn neither_backend_links_the_gateway_and_docker_links_no_sdk() {
    for (backend, forbidden) in [
        ("berth-docker", &["berth-gateway", "berth-plugin-sdk"][..]),
        ("berth-operator", &["berth-gateway"][..]),
    ] {
        let tree = normal_tree(backend);
        assert!(links(&tree, "berth-contract"), "{backend}:\n{tree}");
        for name in forbidden {
            assert!(!links(&tree, name), "{backend} links {name}:\n{tree}");
        }
    }
}
