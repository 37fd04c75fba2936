//! Messages of `berth plugin test` that only a container shows: a plugin listening on
//! 127.0.0.1 inside its container, an image built without its manifest label's build
//! argument, and an image under test that is not the manifest's `spec.image`.
//!
//! The loopback image is built FROM the local language base (`support::bases`), the
//! empty-label one FROM scratch; each has a unique tag and is removed afterwards. Tests that need Docker fail when `CI` is set and the engine
//! is unreachable; without `CI` they print why they skip.

use std::collections::HashMap;
use std::process::{Command, Output};

use berth_contract::protocol::MANIFEST_LABEL;
use berth_docker::{BuildContext, BuildRequest, DockerClient, MANAGED_BY_LABEL};

mod support;

use support::bases::language_base;
use support::describe_output as describe;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// The value of `MANAGED_BY_LABEL` on the images these tests create.
const TEST_IMAGES: &str = "berth-cli-tests";

/// A server that answers every GET with 200, listening on 127.0.0.1 only.
const LOOPBACK_PLUGIN: &str = r#"import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

HTTPServer(("127.0.0.1", int(os.environ.get("BERTH_PORT", "8080"))), Handler).serve_forever()
"#;

const LOOPBACK_MANIFEST: &str = "apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata:
  name: loopback
spec:
  image: berth/loopback:0.1.0
  version: 0.1.0
  capabilities:
    - name: echo
  resources:
    memory: 64Mi
    timeout: 2s
";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The language base when Docker answers and the base can be built; `None` to skip.
fn base_or_skip(test: &str) -> Option<String> {
    if let Err(e) = runtime().block_on(DockerClient::connect()) {
        support::docker_unreachable(test, &e.to_string());
        return None;
    }
    language_base(test)
}

/// A tag no other run uses.
fn unique_tag(name: &str) -> String {
    format!("berth-test/{name}-{}:0.1.0", std::process::id())
}

/// Builds `tag` FROM `base` (`None`: scratch) running the loopback server, labelled with
/// `manifest`; the runtime sets the user and `BERTH_PORT`.
fn loopback_image(base: Option<&str>, tag: &str, manifest: &str) {
    runtime().block_on(async {
        let docker = DockerClient::connect().await.unwrap();
        let mut context = BuildContext::new();
        // Few instructions: each one is a commit on a large base with the classic builder.
        let entrypoint = serde_json::to_string(&["python3", "-c", LOOPBACK_PLUGIN]).unwrap();
        let dockerfile = format!(
            "FROM {}\nENTRYPOINT {entrypoint}\n",
            base.unwrap_or("scratch")
        );
        context
            .add("Dockerfile", dockerfile.as_bytes(), 0o644)
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

/// Removes `tag` when dropped, also when an assertion failed.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let tag = self.0.clone();
        runtime().block_on(async {
            if let Ok(docker) = DockerClient::connect().await {
                let _ = docker.remove_image(&tag, true).await;
            }
        });
    }
}

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

fn berth(args: &[&str]) -> Output {
    Command::new(BERTH).args(args).output().expect("run berth")
}

fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{stdout}"))
}

#[test]
fn a_plugin_listening_on_loopback_in_its_container_is_told_to_listen_on_all_addresses() {
    let test = "a_plugin_listening_on_loopback_in_its_container_is_told_to_listen_on_all_addresses";
    let Some(base) = base_or_skip(test) else {
        return;
    };
    let tag = unique_tag("loopback");
    loopback_image(Some(&base), &tag, LOOPBACK_MANIFEST);
    let _remove = RemoveImage(tag.clone());
    let output = berth(&["plugin", "test", &tag, "--health-timeout", "2s"]);
    let containers_left = containers_from(&tag);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let health = line(&stdout, "FAIL health ");
    assert!(
        health.contains("connection refused at ")
            && health
                .ends_with(":8080: listen on 0.0.0.0:$BERTH_PORT (BERTH_PORT=8080), not 127.0.0.1"),
        "{}",
        describe(&output)
    );
    assert!(!stdout.contains("error sending request"), "{stdout}");
    // The image under test is not spec.image: said once, not failed.
    assert_eq!(
        line(&stdout, "note: "),
        format!(
            "note: plugin test runs the image named here, {tag}; the manifest's spec.image is berth/loopback:0.1.0, and that is what deploys use"
        )
    );
    assert!(stdout.contains("PASS manifest label "), "{stdout}");
    assert_eq!(containers_left, 0, "berth plugin test left its container");
}

#[test]
fn an_image_with_an_empty_manifest_label_names_the_forgotten_build_argument() {
    let test = "an_image_with_an_empty_manifest_label_names_the_forgotten_build_argument";
    if let Err(e) = runtime().block_on(DockerClient::connect()) {
        support::docker_unreachable(test, &e.to_string());
        return;
    }
    // Nothing runs: the label is read first.
    let tag = unique_tag("empty-label");
    loopback_image(None, &tag, "");
    let _remove = RemoveImage(tag.clone());
    let output = berth(&["plugin", "test", &tag]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(
        line(&stdout, "FAIL manifest label "),
        format!(
            "FAIL manifest label               {tag}: the dev.berth.manifest label is empty: the image was built without --build-arg BERTH_MANIFEST=\"$(cat berth.yaml)\"; build it with `berth build DIR`"
        )
    );
    assert!(!stdout.contains("no Plugin or PluginGrant"), "{stdout}");
    assert!(
        stdout.contains(&format!("{tag}: 0 checks passed, 1 failed")),
        "{stdout}"
    );
}
