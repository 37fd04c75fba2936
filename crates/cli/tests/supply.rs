//! The supply chain under `berth dev up` against the real Docker Engine and a real
//! registry (Debian's `docker-registry` on 127.0.0.1): `berth push` and `berth sign`,
//! plugins run by digest, `--require-signature` refusing unsigned images, other signers,
//! a re-pushed tag whose label widens permissions, and a manifest asking for more than the
//! signed label declares — each refusal in `berth list` and the audit log, the running
//! revision kept serving; and credentials from a docker config against htpasswd.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use berth_trust::testing::TestRegistry;
use serde_json::{Value, json};

mod support;

use support::dev::{Dev, build, build_gateway_image, docker, docker_or_skip, until};
use support::repo;

fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(&["build", "plugin-images/calculator"]);
        build(&["build", "plugin-images/hello"]);
        build_gateway_image();
    });
}

/// The example manifest of `name` with its image at `image`.
fn manifest(dir: &Path, name: &str, image: &str) {
    let text = std::fs::read_to_string(repo().join(format!("examples/{name}.yaml"))).unwrap();
    let local = format!("image: berth/{name}:0.1.0");
    assert!(text.contains(&local), "examples/{name}.yaml names {local}");
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        text.replace(&local, &format!("image: {image}")),
    )
    .unwrap();
}

fn reason(dev: &Dev, plugin: &str) -> String {
    dev.plugin(plugin)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn audit(dev: &Dev, plugin: &str) -> Vec<Value> {
    let out = dev.ok(&["audit", "--plugin", plugin, "--output", "json"]);
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(records)) => records,
        other => panic!("berth audit --output json: {other:?}: {out}"),
    }
}

fn keygen(dev: &Dev, prefix: &Path) {
    dev.ok(&["keygen", "--output", prefix.to_str().unwrap()]);
}

/// `docker build` of `from` with its manifest label replaced by `label`, tagged `tag`.
fn relabel(from: &str, label: &str, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {from}\nARG BERTH_MANIFEST\nLABEL dev.berth.manifest=\"${{BERTH_MANIFEST}}\"\n"
        ),
    )
    .unwrap();
    docker(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BERTH_MANIFEST={label}"),
        "-t",
        tag,
        dir.path().to_str().unwrap(),
    ]);
}

#[test]
fn signed_plugins_run_by_digest_and_the_others_are_refused() {
    if !docker_or_skip("signed_plugins_run_by_digest_and_the_others_are_refused") {
        return;
    }
    images();
    let registry = TestRegistry::start();
    let reg = registry.addr.clone();
    let keys = tempfile::tempdir().unwrap();
    let mut dev = Dev::new();
    keygen(&dev, &keys.path().join("release"));
    keygen(&dev, &keys.path().join("other"));
    let release_key = keys.path().join("release.key");
    let release_pub = keys.path().join("release.pub");

    // Push prints the digest the registry stored.
    let calc = format!("{reg}/berth/calculator:0.1.0");
    let hello = format!("{reg}/berth/hello:0.1.0");
    let pushed = dev.ok(&["push", "berth/calculator:0.1.0", "--to", &calc]);
    let d1 = pushed.trim().rsplit_once('@').unwrap().1.to_owned();
    assert!(d1.starts_with("sha256:") && d1.len() == 71, "{pushed}");
    // `build --push` builds (here: finds the image up to date) and pushes to the registry.
    let out = dev
        .berth_command(&["build", "plugin-images/hello", "--push", "--registry", &reg])
        .env("CARGO_TARGET_DIR", support::target_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", support::describe_output(&out));
    assert!(
        stdout.contains(&format!("pushed {reg}/berth/hello@sha256:")),
        "{stdout}"
    );

    // The calculator is signed by the trusted key; hello by another one.
    let signed = dev.ok(&["sign", &calc, "--key", release_key.to_str().unwrap()]);
    assert!(signed.contains(&d1), "{signed}");
    dev.ok(&[
        "sign",
        &hello,
        "--key",
        keys.path().join("other.key").to_str().unwrap(),
    ]);

    let manifests = tempfile::tempdir().unwrap();
    manifest(manifests.path(), "calculator", &calc);
    manifest(manifests.path(), "hello", &hello);
    let dir = manifests.path().to_str().unwrap().to_owned();
    dev.up(&[
        &dir,
        "--require-signature",
        release_pub.to_str().unwrap(),
        "--auto-approve",
        "critical",
    ]);

    // Signed: runs by digest, recorded in the revision and the audit log.
    assert_eq!(dev.phase("calculator"), "Ready", "{}", dev.log_text());
    let pinned = format!("{reg}/berth/calculator@{d1}");
    let container = dev.container_of("calculator");
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &container]),
        pinned
    );
    let answer = dev.invoke("calculator", "evaluate", &json!({"expression": "6*7"}));
    assert_eq!(answer["result"].as_f64(), Some(42.0), "{answer}");
    let status = dev.status("calculator");
    assert!(status.to_string().contains(&d1), "{status}");
    let records = audit(&dev, "calculator");
    assert!(
        records
            .iter()
            .any(|r| r["details"]["action"] == "signature-verified"
                && r["details"]["digest"] == d1.as_str()
                && r["details"]["signedBy"] == release_pub.to_str().unwrap()),
        "{records:?}"
    );

    // Signed by a key the platform does not trust: refused, in the list and the audit log.
    assert_eq!(dev.phase("hello"), "Failed");
    assert!(
        reason(&dev, "hello").starts_with("UntrustedSignature: "),
        "{}",
        reason(&dev, "hello")
    );
    let refusals = dev.security_audit("hello");
    assert!(
        refusals.contains("image-refused") && refusals.contains("UntrustedSignature"),
        "{refusals}"
    );
    assert!(dev.plugin_containers("hello").is_empty());

    // The tag pushed again, its label widening the permissions, without a new signature:
    // refused; the running revision keeps serving.
    let label = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"dev.berth.manifest\"}}",
        "berth/calculator:0.1.0",
    ]);
    let wider = label.replace(
        "\n  resources:",
        "\n  permissions:\n    network:\n      egress:\n        - host: api.example.com\n          ports: [443]\n  resources:",
    );
    assert_ne!(
        label, wider,
        "the label has a resources section to put permissions before"
    );
    relabel("berth/calculator:0.1.0", &wider, &calc);
    let pushed = dev.ok(&["push", &calc]);
    let d2 = pushed.trim().rsplit_once('@').unwrap().1.to_owned();
    assert_ne!(d1, d2);
    until(Duration::from_secs(30), "the re-pushed tag refused", || {
        reason(&dev, "calculator").contains("Unsigned")
    });
    assert_eq!(dev.phase("calculator"), "Degraded");
    assert!(
        reason(&dev, "calculator").starts_with("the running revision keeps serving"),
        "{}",
        reason(&dev, "calculator")
    );
    assert_eq!(dev.container_of("calculator"), container);
    let answer = dev.invoke("calculator", "evaluate", &json!({"expression": "1+1"}));
    assert_eq!(answer["result"].as_f64(), Some(2.0), "{answer}");
    assert!(dev.security_audit("calculator").contains(&d2));

    // Signed now: a new revision by the new digest, with the declared permission diff.
    dev.ok(&["sign", &calc, "--key", release_key.to_str().unwrap()]);
    until(
        Duration::from_secs(60),
        "the signed new digest serving",
        // One container again (the old one drained and gone), and not the old one.
        || {
            dev.phase("calculator") == "Ready"
                && dev.plugin_containers("calculator").len() == 1
                && dev.container_of("calculator") != container
        },
    );
    let container2 = dev.container_of("calculator");
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &container2]),
        format!("{reg}/berth/calculator@{d2}")
    );
    let records = audit(&dev, "calculator");
    let updated = records
        .iter()
        .find(|r| r["details"]["action"] == "updated" && r["details"]["digest"] == d2.as_str())
        .unwrap_or_else(|| panic!("no update to {d2}: {records:?}"));
    assert_eq!(updated["details"]["previousDigest"], d1.as_str());
    assert_eq!(
        updated["details"]["declaredPermissions"]["added"],
        json!(["network egress api.example.com:443"]),
        "{updated}"
    );

    // Hello signed by the trusted key, but its installed manifest asks for more than the
    // signed label declares.
    dev.ok(&["sign", &hello, "--key", release_key.to_str().unwrap()]);
    let text = std::fs::read_to_string(manifests.path().join("hello.yaml")).unwrap();
    let asks_more = text.replace(
        "\n  resources:",
        "\n  permissions:\n    network:\n      egress:\n        - host: api.example.com\n          ports: [443]\n  resources:",
    );
    assert_ne!(text, asks_more);
    let file = manifests.path().join("hello.yaml");
    std::fs::write(&file, asks_more).unwrap();
    // The install waits for the outcome and fails with the reason, the permission diff first.
    let out = dev.berth(&["install", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("+ network egress api.example.com:443")
            && stdout.contains("hello: Failed — PermissionsNotSigned: "),
        "{stdout}"
    );
    until(
        Duration::from_secs(30),
        "the wider manifest refused",
        || reason(&dev, "hello").starts_with("PermissionsNotSigned: "),
    );
    assert_eq!(dev.phase("hello"), "Failed");
    assert!(reason(&dev, "hello").contains("network egress api.example.com:443"));
}

#[test]
fn credentials_come_from_a_docker_config_and_wrong_ones_are_named() {
    if !docker_or_skip("credentials_come_from_a_docker_config_and_wrong_ones_are_named") {
        return;
    }
    images();
    let registry = TestRegistry::start_with_login("berth", "s3cret");
    let reg = registry.addr.clone();
    let config = tempfile::tempdir().unwrap();
    let auth = config.path().join("config.json");
    std::fs::write(&auth, registry.docker_config_json()).unwrap();
    let mut dev = Dev::new();
    let calc = format!("{reg}/berth/calculator:0.1.0");

    // Without credentials the push is refused; with them it lands.
    let out = dev.berth(&[
        "push",
        "berth/calculator:0.1.0",
        "--to",
        &calc,
        "--registry-auth",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    let pushed = dev.ok(&[
        "push",
        "berth/calculator:0.1.0",
        "--to",
        &calc,
        "--registry-auth",
        auth.to_str().unwrap(),
    ]);
    let digest = pushed.trim().rsplit_once('@').unwrap().1.to_owned();
    // The engine must pull the digest itself, with the credentials.
    docker(&["rmi", &calc]);

    let manifests = tempfile::tempdir().unwrap();
    manifest(manifests.path(), "calculator", &calc);
    let dir = manifests.path().to_str().unwrap().to_owned();

    // Expired credentials: named, nothing runs.
    let stale = config.path().join("stale.json");
    std::fs::write(
        &stale,
        registry
            .docker_config_json()
            .replace(&base64_of("berth:s3cret"), &base64_of("berth:old")),
    )
    .unwrap();
    dev.up(&[&dir, "--registry-auth", stale.to_str().unwrap()]);
    assert_eq!(dev.phase("calculator"), "Failed");
    assert!(
        reason(&dev, "calculator").starts_with("RegistryUnauthorized: "),
        "{}",
        reason(&dev, "calculator")
    );
    dev.kill();

    // The status the last supervisor left stands until this one has checked again.
    dev.up(&[&dir, "--registry-auth", auth.to_str().unwrap()]);
    until(
        Duration::from_secs(60),
        "the calculator pulled and ready",
        || dev.phase("calculator") == "Ready",
    );
    let container = dev.container_of("calculator");
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &container]),
        format!("{reg}/berth/calculator@{digest}")
    );
    let answer = dev.invoke("calculator", "evaluate", &json!({"expression": "2+3"}));
    assert_eq!(answer["result"].as_f64(), Some(5.0), "{answer}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
