//! Every object the operator renders, for every example and fixture, is validated against the
//! Kubernetes 1.33 JSON schemas in strict mode by `kubernetes-validate` (PyPI).
//!
//! Without the tool this test is skipped locally, but fails when `CI` is set.

mod common;

use std::process::Command;

use serde::Deserialize;

use berth_operator::template::TemplateOutcome;

/// Kubernetes version validated against (the cluster version the operator targets).
const KUBERNETES_VERSION: &str = "1.33.0";

/// The `kubernetes-validate` script, or the module through `python3 -m` when pip put the
/// script somewhere off `PATH`.
fn tool() -> Option<Command> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("kubernetes-validate", &[]) {
        return Some(Command::new("kubernetes-validate"));
    }
    if works("python3", &["-m", "kubernetes_validate"]) {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        return Some(c);
    }
    None
}

#[test]
fn rendered_objects_are_valid_kubernetes_1_33_in_strict_mode() {
    let Some(mut validate) = tool() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "kubernetes-validate is not installed (pip install kubernetes-validate) and CI is set"
            );
        }
        eprintln!(
            "SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        return;
    };
    let mut files = common::yaml_files("examples");
    files.extend(common::yaml_files("operator/tests/fixtures"));
    // Render everything, granted or not: every object the operator could ever apply.
    let rendered = common::render(&files, true);
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for outcome in &rendered.outcomes {
        let TemplateOutcome::Rendered {
            plugin, rendered, ..
        } = outcome
        else {
            panic!("not rendered: {outcome:?}");
        };
        for value in rendered.to_values() {
            let kind = value["kind"].as_str().unwrap().to_string();
            let path = dir
                .path()
                .join(format!("{plugin}-{}.yaml", kind.to_lowercase()));
            std::fs::write(&path, serde_yaml::to_string(&value).unwrap()).unwrap();
            kinds.insert(kind);
            written.push(path);
        }
        // The credential Secret the controller creates beside them (never rendered by
        // `berth render`, which holds no token).
        let Some(source) = rendered.deployment.metadata.name.as_deref() else {
            continue;
        };
        let owner = rendered_plugin(&files, source);
        let secret = berth_operator::render::render_token_secret(
            &owner,
            &berth_operator::render::RenderOptions::default(),
            1,
            &"0".repeat(64),
        );
        let path = dir.path().join(format!("{plugin}-secret.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&secret).unwrap()).unwrap();
        kinds.insert("Secret".to_string());
        written.push(path);
    }
    // A Deployment as the operator applies it when it resolves digests: pinned, with the
    // pull secrets the kubelet pulls with.
    let owner = rendered_plugin(&files, "calculator");
    let options = berth_operator::render::RenderOptions {
        image_pull_secrets: vec!["registry-pull".into()],
        ..berth_operator::render::RenderOptions::default()
    };
    let revision = berth_operator::render::RevisionToRun {
        number: 2,
        image: berth_operator::plan::pinned(
            &owner.spec.image,
            Some(&format!("sha256:{}", "ab".repeat(32))),
        ),
        version: owner.spec.version.clone(),
    };
    let pinned = berth_operator::render::render(berth_operator::render::RenderInput {
        plugin: &owner,
        granted: &owner.spec.permissions,
        revision: &revision,
        options: &options,
    })
    .expect("calculator renders");
    let value = serde_json::to_value(&pinned.deployment).unwrap();
    assert_eq!(
        value["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"],
        "registry-pull"
    );
    let path = dir.path().join("calculator-pinned-deployment.yaml");
    std::fs::write(&path, serde_yaml::to_string(&value).unwrap()).unwrap();
    written.push(path);
    for (file, job) in common::benchmark_jobs() {
        let name = std::path::Path::new(&file)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let path = dir.path().join(format!("benchmark-{name}-job.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&job).unwrap()).unwrap();
        kinds.insert("Job".to_string());
        written.push(path);
    }
    for kind in [
        "Job",
        "Secret",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "NetworkPolicy",
        "Deployment",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} was rendered: the fixtures lost coverage"
        );
    }
    let output = validate
        .args([
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--quiet",
        ])
        .args(&written)
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && !report.contains("ERROR"),
        "kubernetes-validate rejected rendered objects:\n{report}"
    );
    println!(
        "validated {} objects against Kubernetes {KUBERNETES_VERSION} (strict)",
        written.len()
    );
}

/// Guards the test above against passing vacuously: the same invocation rejects an object
/// with a field Kubernetes does not know.
/// The Plugin named `name` among the manifests in `files`, with a UID so that it owns objects.
fn rendered_plugin(files: &[String], name: &str) -> berth_api::Plugin {
    for (file, bytes) in common::read(files) {
        let text = String::from_utf8(bytes).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            if value["kind"].as_str() == Some("Plugin")
                && value["metadata"]["name"].as_str() == Some(name)
            {
                let mut plugin: berth_api::Plugin =
                    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{file}: {e}"));
                plugin.metadata.uid = Some("0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e".into());
                plugin
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into());
                return plugin;
            }
        }
    }
    panic!("no Plugin {name} in {files:?}")
}

#[test]
fn strict_validation_rejects_an_unknown_field() {
    let Some(mut validate) = tool() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "kubernetes-validate is not installed (pip install kubernetes-validate) and CI is set"
            );
        }
        eprintln!("SKIPPED: kubernetes-validate is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad-service.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], sessionAffinityy: None}\n",
    )
    .unwrap();
    let output = validate
        .args([
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--quiet",
        ])
        .arg(&path)
        .output()
        .expect("kubernetes-validate runs");
    assert!(
        !output.status.success(),
        "an unknown field passed strict validation"
    );
}
