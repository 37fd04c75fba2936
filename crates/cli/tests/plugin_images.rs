//! The example plugin images against a real Docker Engine: `berth build --all`, then
//! `berth plugin test` on each, a scaffold from `berth new`, and images that must fail.
//!
//! Tests that need Docker fail when `CI` is set and the engine is unreachable; without `CI`
//! they print why they skip. The five images are built once per run of this file.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::OnceLock;

use berth_contract::protocol::MANIFEST_LABEL;
use berth_docker::{BuildContext, BuildRequest, DockerClient, MANAGED_BY_LABEL};

mod support;

use support::{describe_output as describe, repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// The value of `MANAGED_BY_LABEL` on images these tests create besides the five examples.
const TEST_IMAGES: &str = "berth-cli-tests";

const PLUGINS: [(&str, &str); 5] = [
    ("calculator", "0.1.0"),
    ("file-ops", "0.1.0"),
    ("hello", "0.1.0"),
    ("http-fetch", "0.1.0"),
    ("text-processor", "1.0.0"),
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// True when Docker answers. Unreachable Docker fails the test under CI and skips it otherwise.
fn docker_or_skip(test: &str) -> bool {
    match runtime().block_on(DockerClient::connect()) {
        Ok(_) => true,
        Err(e) => {
            support::docker_unreachable(test, &e.to_string());
            false
        }
    }
}

fn berth(args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run berth")
}

/// Builds the five example images once; every test that needs them waits here.
fn example_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let dir = repo().join("plugin-images");
        let started = std::time::Instant::now();
        let output = berth(&["build", "--all", dir.to_str().unwrap()]);
        eprintln!(
            "berth build --all took {:.1}s\n{}",
            started.elapsed().as_secs_f64(),
            describe(&output)
        );
        if output.status.success() {
            Ok(())
        } else {
            Err(describe(&output))
        }
    });
    if let Err(e) = result {
        panic!("berth build --all plugin-images/ failed:\n{e}");
    }
}

fn assert_conformant(image: &str) {
    let output = berth(&["plugin", "test", image]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!stdout.contains("FAIL "), "{}", describe(&output));
    for check in [
        "PASS health",
        "PASS describe",
        "PASS unknown capability",
        "PASS malformed json",
        "PASS sigterm",
    ] {
        assert!(
            stdout.contains(check),
            "missing {check:?}:\n{}",
            describe(&output)
        );
    }
    assert!(
        stdout.contains(&format!("{image}: ")) && stdout.contains(" 0 failed"),
        "{}",
        describe(&output)
    );
}

/// Containers on this engine created from `image`.
fn containers_from(image: &str) -> usize {
    runtime().block_on(async {
        let docker = DockerClient::connect().await.unwrap();
        docker
            .container_ids(&[("ancestor", image)])
            .await
            .unwrap()
            .len()
    })
}

/// Held while a test builds FROM an example image or removes what it built. The engine's
/// build cache walks every child of the base image, and a child removed during that walk
/// fails the build ("failed to get digest ...: no such file or directory").
static IMAGE_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn image_changes() -> std::sync::MutexGuard<'static, ()> {
    IMAGE_CHANGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds `tag` FROM an example image with `manifest` as its label.
fn relabelled_image(from: &str, tag: &str, manifest: &str) {
    let _changes = image_changes();
    runtime().block_on(async {
        let docker = DockerClient::connect().await.unwrap();
        let mut context = BuildContext::new();
        context
            .add("Dockerfile", format!("FROM {from}\n").as_bytes(), 0o644)
            .unwrap();
        let request = BuildRequest {
            tag: tag.to_owned(),
            labels: HashMap::from([
                (MANIFEST_LABEL.to_owned(), manifest.to_owned()),
                (MANAGED_BY_LABEL.to_owned(), TEST_IMAGES.to_owned()),
            ]),
            build_args: HashMap::new(),
        };
        docker
            .build_image(context.finish().unwrap(), &request, |_| {})
            .await
            .unwrap();
    });
}

fn remove_image(tag: &str) {
    let _changes = image_changes();
    runtime().block_on(async {
        let docker = DockerClient::connect().await.unwrap();
        let _ = docker.remove_image(tag, true).await;
    });
}

#[test]
fn plugin_image_manifests_are_byte_identical_to_the_examples() {
    for (name, _) in PLUGINS {
        let image = std::fs::read(repo().join(format!("plugin-images/{name}/berth.yaml"))).unwrap();
        let example = std::fs::read(repo().join(format!("examples/{name}.yaml"))).unwrap();
        assert!(
            image == example,
            "plugin-images/{name}/berth.yaml differs from examples/{name}.yaml; copy one over the other"
        );
    }
}

#[test]
fn build_refuses_a_dockerfile_that_disagrees_with_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let hello = repo().join("plugin-images/hello");
    for file in ["berth.yaml", "Cargo.toml"] {
        std::fs::copy(hello.join(file), dir.path().join(file)).unwrap();
    }
    let dockerfile = std::fs::read_to_string(hello.join("Dockerfile"))
        .unwrap()
        .replace("EXPOSE 8080", "EXPOSE 9090")
        .replace("USER 65532:65532", "USER root");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let output = berth(&["build", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr.contains("Dockerfile: line")
            && stderr.contains("EXPOSE 9090 but the manifest's spec.port is 8080"),
        "{stderr}"
    );
    assert!(stderr.contains("USER root"), "{stderr}");
    assert!(stderr.contains("nothing was built"), "{stderr}");
}

#[test]
fn build_all_labels_each_image_with_its_manifest_and_user_65532() {
    if !docker_or_skip("build_all_labels_each_image_with_its_manifest_and_user_65532") {
        return;
    }
    example_images();
    runtime().block_on(async {
        let docker = DockerClient::connect().await.unwrap();
        for (name, version) in PLUGINS {
            let tag = format!("berth/{name}:{version}");
            let image = docker.inspect_image(&tag).await.unwrap();
            let manifest =
                std::fs::read_to_string(repo().join(format!("plugin-images/{name}/berth.yaml")))
                    .unwrap();
            assert_eq!(image.labels.get(MANIFEST_LABEL), Some(&manifest), "{tag}");
            assert_eq!(image.user.as_deref(), Some("65532:65532"), "{tag}");
            assert_eq!(image.exposed_ports, ["8080/tcp"], "{tag}");
        }
    });
}

#[test]
fn build_all_again_without_changes_reuses_every_image() {
    if !docker_or_skip("build_all_again_without_changes_reuses_every_image") {
        return;
    }
    example_images();
    let dir = repo().join("plugin-images");
    let output = berth(&["build", "--all", dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for (name, version) in PLUGINS {
        assert!(
            stdout.contains(&format!("berth/{name}:{version} is up to date")),
            "{}",
            describe(&output)
        );
    }
}

#[test]
fn calculator_image_passes_conformance() {
    if docker_or_skip("calculator_image_passes_conformance") {
        example_images();
        assert_conformant("berth/calculator:0.1.0");
    }
}

#[test]
fn text_processor_image_passes_conformance() {
    if docker_or_skip("text_processor_image_passes_conformance") {
        example_images();
        assert_conformant("berth/text-processor:1.0.0");
    }
}

#[test]
fn file_ops_image_passes_conformance_with_a_scratch_workspace() {
    if docker_or_skip("file_ops_image_passes_conformance_with_a_scratch_workspace") {
        example_images();
        assert_conformant("berth/file-ops:0.1.0");
    }
}

#[test]
fn http_fetch_image_passes_conformance() {
    if docker_or_skip("http_fetch_image_passes_conformance") {
        example_images();
        assert_conformant("berth/http-fetch:0.1.0");
    }
}

#[test]
fn hello_image_passes_conformance() {
    if docker_or_skip("hello_image_passes_conformance") {
        example_images();
        assert_conformant("berth/hello:0.1.0");
    }
}

#[test]
fn plugin_test_fails_and_cleans_up_when_describe_disagrees_with_the_manifest() {
    if !docker_or_skip("plugin_test_fails_and_cleans_up_when_describe_disagrees_with_the_manifest")
    {
        return;
    }
    example_images();
    let tag = "berth-test/hello-mismatch:0.2.0";
    let manifest = std::fs::read_to_string(repo().join("plugin-images/hello/berth.yaml"))
        .unwrap()
        .replace("version: 0.1.0", "version: 0.2.0")
        .replace(
            "  hooks:\n",
            "    - name: shout\n      examples:\n        - input: {}\n  hooks:\n",
        );
    relabelled_image("berth/hello:0.1.0", tag, &manifest);
    let output = berth(&["plugin", "test", tag]);
    let containers_left = containers_from(tag);
    remove_image(tag);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stdout.contains("PASS health"), "{}", describe(&output));
    assert!(stdout.contains("FAIL describe"), "{}", describe(&output));
    assert!(
        stdout.contains(r#"version is "0.1.0", the manifest says "0.2.0""#),
        "{}",
        describe(&output)
    );
    assert!(
        stdout.contains(r#"capabilities in the manifest but not served: ["shout"]"#),
        "{}",
        describe(&output)
    );
    assert!(
        stdout.contains("FAIL example shout#1"),
        "{}",
        describe(&output)
    );
    assert!(stdout.contains("PASS sigterm"), "{}", describe(&output));
    assert_eq!(
        containers_left, 0,
        "berth plugin test left its container behind"
    );
}

#[test]
fn plugin_test_fails_on_an_image_without_a_manifest() {
    if !docker_or_skip("plugin_test_fails_on_an_image_without_a_manifest") {
        return;
    }
    example_images();
    let tag = "berth-test/no-manifest:0.1.0";
    relabelled_image("berth/hello:0.1.0", tag, "not: a plugin");
    let output = berth(&["plugin", "test", tag]);
    remove_image(tag);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stdout.contains("FAIL manifest label"),
        "{}",
        describe(&output)
    );
}

#[test]
fn plugin_test_of_a_missing_image_says_how_to_build_it() {
    if !docker_or_skip("plugin_test_of_a_missing_image_says_how_to_build_it") {
        return;
    }
    let output = berth(&["plugin", "test", "berth-test/does-not-exist:0.0.0"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("berth build"),
        "{}",
        describe(&output)
    );
}

#[test]
fn scaffolded_plugin_builds_and_passes_conformance_unchanged() {
    if !docker_or_skip("scaffolded_plugin_builds_and_passes_conformance_unchanged") {
        return;
    }
    // Share the compiled dependencies with the example images.
    example_images();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("word-count");
    let output = berth(&["new", "word-count", "--dir", dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    for file in ["Cargo.toml", "berth.yaml", "Dockerfile", "src/main.rs"] {
        assert!(dir.join(file).is_file(), "berth new did not write {file}");
    }
    let built = {
        let _changes = image_changes();
        berth(&["build", dir.to_str().unwrap()])
    };
    assert!(built.status.success(), "{}", describe(&built));
    let tag = "berth/word-count:0.1.0";
    let tested = berth(&["plugin", "test", tag]);
    remove_image(tag);
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.status.success(), "{}", describe(&tested));
    assert!(
        stdout.contains("PASS describe                     word-count 0.1.0"),
        "{}",
        describe(&tested)
    );
    assert!(
        stdout.contains("PASS hook before_command"),
        "{}",
        describe(&tested)
    );
}

#[test]
fn new_refuses_a_name_that_is_not_a_dns_label() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("x");
    let output = berth(&["new", "Bad_Name", "--dir", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lower-case letters"));
    assert!(!dir.exists());
}
