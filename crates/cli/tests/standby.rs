//! Warm standby (`spec.standby`) under `berth dev up` against the real Docker Engine: an
//! idle plugin that opted in is paused (its container frozen), shows so in `berth list`,
//! answers its next call, pauses again; a plugin without the field is never paused; a
//! supervisor killed while a plugin is paused leaves nothing that `dev up` cannot adopt
//! and `dev down` cannot remove.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

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

/// The calculator example with `spec.standby.idleAfter: 1s`, and the hello example as is.
fn manifests(dir: &Path) {
    let calculator = std::fs::read_to_string(repo().join("examples/calculator.yaml")).unwrap();
    let with_standby = calculator.replace(
        "\n  resources:",
        "\n  standby:\n    idleAfter: 1s\n  resources:",
    );
    assert_ne!(calculator, with_standby);
    std::fs::write(dir.join("calculator.yaml"), with_standby).unwrap();
    std::fs::copy(repo().join("examples/hello.yaml"), dir.join("hello.yaml")).unwrap();
}

fn paused(container: &str) -> bool {
    docker(&["inspect", "--format", "{{.State.Paused}}", container]) == "true"
}

fn reason(dev: &Dev, plugin: &str) -> String {
    dev.plugin(plugin)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_idle_plugin_with_standby_is_paused_and_its_next_call_wakes_it() {
    if !docker_or_skip("an_idle_plugin_with_standby_is_paused_and_its_next_call_wakes_it") {
        return;
    }
    images();
    let manifests_dir = tempfile::tempdir().unwrap();
    manifests(manifests_dir.path());
    let dir = manifests_dir.path().to_str().unwrap().to_owned();
    let mut dev = Dev::new();
    dev.up(&[&dir]);
    let calculator = dev.container_of("calculator");
    let hello = dev.container_of("hello");

    until(Duration::from_secs(20), "calculator paused", || {
        paused(&calculator)
    });
    until(Duration::from_secs(5), "berth list shows the pause", || {
        reason(&dev, "calculator").starts_with("standby: paused after 1s")
    });
    assert_eq!(dev.phase("calculator"), "Ready", "{}", dev.log_text());

    let answer = dev.invoke("calculator", "evaluate", &json!({"expression": "2*(3+4)"}));
    assert_eq!(answer["result"], 14, "{answer}");
    until(
        Duration::from_secs(5),
        "the pause leaves the status",
        || !reason(&dev, "calculator").starts_with("standby"),
    );
    // Idle again: paused again.
    until(Duration::from_secs(20), "calculator paused again", || {
        paused(&calculator)
    });
    // The hello plugin has been idle all along, without spec.standby.
    assert!(!paused(&hello));
    assert_eq!(dev.phase("hello"), "Ready");
    assert_eq!(reason(&dev, "hello"), "");

    let audit = dev.ok(&[
        "audit",
        "--plugin",
        "calculator",
        "--type",
        "lifecycle",
        "--output",
        "json",
    ]);
    for action in ["\"paused\"", "\"woken\""] {
        assert!(audit.contains(action), "{action} in {audit}");
    }

    // A supervisor killed while the plugin is frozen: the next `dev up` thaws and adopts it.
    dev.kill();
    assert!(paused(&calculator));
    dev.up(&[&dir]);
    assert!(
        dev.log_text().contains("adopted running revision"),
        "{}",
        dev.log_text()
    );
    assert_eq!(dev.container_of("calculator"), calculator);
    let answer = dev.invoke("calculator", "evaluate", &json!({"expression": "1+1"}));
    assert_eq!(answer["result"], 2, "{answer}");

    // `dev down` removes a frozen plugin like any other.
    until(
        Duration::from_secs(20),
        "calculator paused after adoption",
        || paused(&calculator),
    );
    dev.ok(&["dev", "down"]);
    assert_eq!(dev.leftovers(), Vec::<String>::new());
}
