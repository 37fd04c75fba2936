//! Warm standby benchmark: a call to a paused plugin (the gateway asks the supervisor to
//! thaw it; the answer comes once it is thawed) against the same call to the same plugin
//! awake, side by side, each over a fresh connection to the gateway.
//!
//! `cargo bench -p berth --bench standby` (needs Docker; builds the calculator image and
//! the gateway image). `BERTH_BENCH_RUNS` sets the number of wakes (default 20).

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::dev::{Dev, build, build_gateway_image, docker};
use support::repo;

const INPUT: &str = r#"{"expression":"2*(3+4)"}"#;
const PATH: &str = "/v1/plugins/calculator/invoke/evaluate";

fn paused(container: &str) -> bool {
    docker(&["inspect", "--format", "{{.State.Paused}}", container]) == "true"
}

fn call(url: &str, token: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = support::post(url, PATH, token, INPUT);
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    took
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), at(1.0))
}

fn manifest(dir: &Path) {
    let text = std::fs::read_to_string(repo().join("examples/calculator.yaml")).unwrap();
    let text = text.replace(
        "\n  resources:",
        "\n  standby:\n    idleAfter: 1s\n  resources:",
    );
    std::fs::write(dir.join("calculator.yaml"), text).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = support::wrk::runs(20);
    build(&["build", "plugin-images/calculator"]);
    build_gateway_image();
    let manifests = tempfile::tempdir().unwrap();
    manifest(manifests.path());
    let mut dev = Dev::new();
    dev.up(&[manifests.path().to_str().unwrap()]);
    let url = dev.gateway_url().expect("dev up wrote the gateway URL");
    let token = dev.token();
    let container = dev.container_of("calculator");
    // One call first: the gateway compiles the schema and opens its pool on the first.
    call(&url, &token);

    let mut woken = Vec::new();
    let mut awake = Vec::new();
    for _ in 0..runs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !paused(&container) {
            assert!(Instant::now() < deadline, "calculator did not pause");
            std::thread::sleep(Duration::from_millis(20));
        }
        woken.push(millis(call(&url, &token)));
        // Awake now, well within idleAfter: the same call without the wake.
        std::thread::sleep(Duration::from_millis(100));
        awake.push(millis(call(&url, &token)));
    }
    let (w50, w90, wmax) = quantiles(woken);
    let (a50, a90, amax) = quantiles(awake);
    println!("standby: {runs} calls each, fresh connection per call, calculator evaluate");
    println!("  paused → answer   p50 {w50:7.2} ms  p90 {w90:7.2} ms  max {wmax:7.2} ms");
    println!("  awake  → answer   p50 {a50:7.2} ms  p90 {a90:7.2} ms  max {amax:7.2} ms");
    println!(
        "  wake cost p50 {:.2} ms ({:.1}× the awake call)",
        w50 - a50,
        w50 / a50
    );
    drop(dev);
}
