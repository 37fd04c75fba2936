//! Plugins in other languages against a real Docker Engine: for Python, TypeScript, Go and
//! C, `berth new --lang` then `berth build` (Dockerfile builds, FROM the local Debian base
//! image) then `berth plugin test`; and the Python example (`sdks/python`) under `berth dev
//! up` beside the Rust examples, answering `berth invoke`.
//!
//! Tests that need Docker fail when `CI` is set and the engine is unreachable; without `CI`
//! they print why they skip. The base image is built once (scripts/debian-base.sh, cached
//! by its recipe); each test prints how long its steps took.

use std::process::{Command, Output};
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Instant;

use serde_json::{Value, json};

mod support;

use support::bases::language_base;
use support::dev::{Dev, build, build_gateway_image, docker, docker_or_skip};
use support::{describe_output as describe, repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth(args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run berth")
}

/// `berth ARGS`, which must succeed, timed; its standard output.
fn berth_ok(args: &[&str]) -> String {
    let started = Instant::now();
    let output = berth(args);
    eprintln!(
        "berth {} took {:.1}s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "berth {}: {}",
        args.join(" "),
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds FROM the base image hold this for reading, removals for writing: the engine's
/// build cache walks every child of the base, and a child removed during that walk fails
/// the build.
static IMAGE_CHANGES: RwLock<()> = RwLock::new(());

fn image_changes() -> RwLockReadGuard<'static, ()> {
    IMAGE_CHANGES.read().unwrap_or_else(PoisonError::into_inner)
}

fn remove_image(tag: &str) {
    let _removing = IMAGE_CHANGES
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
}

/// Removes the image on drop, so a failed assertion does not leave it behind.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_image(&self.0);
    }
}

/// `berth plugin test IMAGE` passes every check.
fn assert_conformant(image: &str) {
    let started = Instant::now();
    let output = berth(&["plugin", "test", image]);
    eprintln!(
        "berth plugin test {image} took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!stdout.contains("FAIL "), "{}", describe(&output));
    for check in ["PASS health", "PASS describe", "PASS sigterm"] {
        assert!(
            stdout.contains(check),
            "missing {check:?}:\n{}",
            describe(&output)
        );
    }
    assert!(stdout.contains(" 0 failed"), "{}", describe(&output));
}

/// `berth new x-LANG --lang LANG`, `berth build` with the local base as `base_arg`, `berth
/// plugin test`; a second build without changes is skipped.
fn template_builds_and_passes_conformance(test: &str, lang: &str, base_arg: &str) {
    if !docker_or_skip(test) {
        return;
    }
    let Some(base) = language_base(test) else {
        return;
    };
    let name = format!("x-{lang}");
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(&name);
    let dir_arg = dir.to_str().unwrap();
    let created = berth_ok(&["new", &name, "--lang", lang, "--dir", dir_arg]);
    assert!(
        created.contains(&format!("--build-arg {base_arg}=")),
        "the next steps name the base image argument:\n{created}"
    );
    assert!(dir.join("berth.yaml").is_file() && dir.join("Dockerfile").is_file());

    let tag = format!("berth/{name}:0.1.0");
    let _remove = RemoveOnDrop(tag.clone());
    let build_arg = format!("{base_arg}={base}");
    let built = {
        let _changes = image_changes();
        berth_ok(&["build", dir_arg, "--build-arg", &build_arg])
    };
    assert!(built.contains(&format!("built {tag}")), "{built}");
    assert_conformant(&tag);

    let again = berth_ok(&["build", dir_arg, "--build-arg", &build_arg]);
    assert!(again.contains(&format!("{tag} is up to date")), "{again}");
}

#[test]
fn python_template_builds_and_passes_conformance() {
    template_builds_and_passes_conformance(
        "python_template_builds_and_passes_conformance",
        "python",
        "PYTHON_IMAGE",
    );
}

#[test]
fn typescript_template_builds_and_passes_conformance() {
    template_builds_and_passes_conformance(
        "typescript_template_builds_and_passes_conformance",
        "typescript",
        "NODE_IMAGE",
    );
}

#[test]
fn go_template_builds_and_passes_conformance() {
    template_builds_and_passes_conformance(
        "go_template_builds_and_passes_conformance",
        "go",
        "GO_IMAGE",
    );
}

#[test]
fn c_template_builds_and_passes_conformance() {
    template_builds_and_passes_conformance(
        "c_template_builds_and_passes_conformance",
        "c",
        "C_IMAGE",
    );
}

/// The example images, the gateway image and the Python example, built once.
fn dev_images(base: &str) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let started = Instant::now();
        build(&["build", "--all", "plugin-images/"]);
        build_gateway_image();
        eprintln!(
            "example and gateway images took {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let _changes = image_changes();
        berth_ok(&[
            "build",
            "sdks/python",
            "--build-arg",
            &format!("PYTHON_IMAGE={base}"),
        ]);
    });
}

#[test]
fn python_example_runs_under_dev_up_beside_the_rust_examples() {
    let test = "python_example_runs_under_dev_up_beside_the_rust_examples";
    if !docker_or_skip(test) {
        return;
    }
    let Some(base) = language_base(test) else {
        return;
    };
    let tag = "berth/py-hello:0.1.0";
    let _remove = RemoveOnDrop(tag.to_owned());
    dev_images(&base);
    let again = berth_ok(&[
        "build",
        "sdks/python",
        "--build-arg",
        &format!("PYTHON_IMAGE={base}"),
    ]);
    assert!(again.contains(&format!("{tag} is up to date")), "{again}");

    let started = Instant::now();
    let mut dev = Dev::new();
    dev.up(&["examples/", "sdks/python/berth.yaml"]);
    eprintln!("berth dev up took {:.1}s", started.elapsed().as_secs_f64());
    for name in ["py-hello", "calculator", "hello"] {
        assert_eq!(dev.phase(name), "Ready", "{name}\n{}", dev.log_text());
    }
    let greeting = dev.invoke("py-hello", "greet", &json!({"name": "dev"}));
    assert_eq!(greeting, json!({"message": "Hello, dev!"}));
    // The gateway checks input against the manifest's schema before the plugin sees it.
    let refused = dev.berth(&["invoke", "py-hello", "greet", r#"{"name": 7}"#]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let sum: Value = dev.invoke("calculator", "evaluate", &json!({"expression": "2+3"}));
    assert_eq!(sum["result"], 5, "{sum}");
    // The plugin logs JSON lines.
    let container = dev.container_of("py-hello");
    let logs = docker(&["logs", &container]);
    assert!(
        logs.lines().any(|l| serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["level"].is_string() && v["timestamp"].is_string())),
        "{logs}"
    );
    drop(dev);
}

#[test]
fn build_all_builds_rust_and_dockerfile_folders_side_by_side() {
    let test = "build_all_builds_rust_and_dockerfile_folders_side_by_side";
    if !docker_or_skip(test) {
        return;
    }
    let Some(base) = language_base(test) else {
        return;
    };
    let parent = tempfile::tempdir().unwrap();
    for (name, lang) in [("mixed-rust", "rust"), ("mixed-c", "c")] {
        let dir = parent.path().join(name);
        berth_ok(&["new", name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    }
    // Not a plugin folder: --all passes over it.
    std::fs::create_dir(parent.path().join("notes")).unwrap();
    let _remove = [
        RemoveOnDrop("berth/mixed-rust:0.1.0".to_owned()),
        RemoveOnDrop("berth/mixed-c:0.1.0".to_owned()),
    ];
    let all = parent.path().to_str().unwrap();
    let build_arg = format!("C_IMAGE={base}");
    let built = {
        let _changes = image_changes();
        berth_ok(&["build", "--all", all, "--build-arg", &build_arg])
    };
    for tag in ["berth/mixed-rust:0.1.0", "berth/mixed-c:0.1.0"] {
        assert!(built.contains(&format!("built {tag}")), "{built}");
    }
    let again = berth_ok(&["build", "--all", all, "--build-arg", &build_arg]);
    for tag in ["berth/mixed-rust:0.1.0", "berth/mixed-c:0.1.0"] {
        assert!(again.contains(&format!("{tag} is up to date")), "{again}");
    }
}

#[test]
fn build_of_a_folder_without_dockerfile_or_cargo_package_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("templates/python/berth.yaml"),
        dir.path().join("berth.yaml"),
    )
    .unwrap();
    let output = berth(&["build", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr.contains("neither a Dockerfile nor a Cargo.toml")
            && stderr.contains("berth new NAME --lang"),
        "{}",
        describe(&output)
    );
}

#[test]
fn malformed_build_arg_is_refused_naming_the_flag() {
    let output = berth(&["build", "templates/go", "--build-arg", "GO_IMAGE"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr.contains("--build-arg") && stderr.contains("expected KEY=VALUE"),
        "{}",
        describe(&output)
    );
}
