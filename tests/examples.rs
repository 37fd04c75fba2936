//! Every example is valid twice: against `berth validate`'s rules and against the CRD's
//! openAPIV3Schema, which is what the API server checks on `kubectl apply`.

use berth_api::{Manifest, load_manifests};
use berth_tests::{workspace_root, yaml_files};
use serde_json::Value;

fn crd_schema(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(workspace_root().join("crds").join(file)).expect("crd file");
    let crd: Value = serde_yaml::from_str(&text).expect("crd yaml");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(schema.is_object(), "{file} has an openAPIV3Schema");
    jsonschema::validator_for(schema).expect("the CRD schema compiles as JSON Schema")
}

fn documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .map(|v: serde_yaml::Value| serde_json::to_value(v).unwrap())
        })
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn every_example_passes_berth_validation() {
    let files = yaml_files("examples");
    assert!(
        files.len() >= 6,
        "examples/ holds the five plugins and a grant"
    );
    let mut plugins = Vec::new();
    for file in &files {
        let loaded = load_manifests(&file.display().to_string(), &std::fs::read(file).unwrap());
        assert!(
            loaded.problems.is_empty(),
            "{}: {:?}",
            file.display(),
            loaded.problems
        );
        for doc in loaded.documents {
            if let Manifest::Plugin(p) = doc.manifest {
                plugins.push(*p);
            }
        }
    }
    let names: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
    for expected in [
        "calculator",
        "text-processor",
        "file-ops",
        "http-fetch",
        "hello",
    ] {
        assert!(names.contains(&expected), "examples/ has no {expected}");
    }
    let refs: Vec<_> = plugins.iter().collect();
    let order = berth_api::deps::resolve_order(&refs, berth_api::deps::Missing::Error)
        .expect("examples resolve");
    let pos = |n: &str| order.order.iter().position(|x| x == n).unwrap();
    assert!(
        pos("text-processor") < pos("http-fetch"),
        "dependencies start first: {:?}",
        order.order
    );
}

#[test]
fn every_example_passes_the_crd_schema() {
    let plugin = crd_schema("plugins.berth.dev.yaml");
    let grant = crd_schema("plugingrants.berth.dev.yaml");
    let mut checked = 0;
    for file in yaml_files("examples") {
        for doc in documents(&file) {
            let validator = match doc["kind"].as_str() {
                Some("Plugin") => &plugin,
                Some("PluginGrant") => &grant,
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            };
            let errors: Vec<String> = validator
                .iter_errors(&doc)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", file.display());
            checked += 1;
        }
    }
    assert!(checked >= 6);
}

#[test]
fn the_crd_schema_rejects_what_it_can_express() {
    let plugin = crd_schema("plugins.berth.dev.yaml");
    let fixtures = workspace_root().join("tests/fixtures/invalid");
    // Fixtures whose fault a schema can see: a pattern, an enum, a type or a range.
    for (file, pointer) in [
        ("bad-quantity.yaml", "/spec/resources/memory"),
        ("bad-duration.yaml", "/spec/resources/timeout"),
        ("bad-hook-mode.yaml", "/spec/hooks/0/mode"),
        ("wrong-type.yaml", "/spec/port"),
        (
            "bad-port.yaml",
            "/spec/permissions/network/egress/0/ports/0",
        ),
        ("bad-semver.yaml", "/spec/version"),
        ("missing-image.yaml", "/spec"),
    ] {
        let doc = &documents(&fixtures.join(file))[0];
        let errors: Vec<String> = plugin
            .iter_errors(doc)
            .map(|e| e.instance_path().to_string())
            .collect();
        assert!(
            errors.iter().any(|p| p == pointer),
            "{file}: expected an error at {pointer}, got {errors:?}"
        );
    }
}
