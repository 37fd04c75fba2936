//! Local mode benchmark: cold start (install → first successful invoke through the gateway)
//! against plain `docker run` of the same image (→ first successful invoke straight to the
//! container), side by side; and hot reload under load (failed requests, swap time).
//!
//! `cargo bench -p berth --bench dev_cold_start` (needs Docker; builds the example images,
//! and the gateway image when it is missing).
//! `BERTH_BENCH_RUNS` sets the number of cold starts (default 20).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::repo;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const INPUT: &str = r#"{"expression":"2*(3+4)"}"#;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn until_ok(addr: &str, path: &str, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while support::post(addr, path, token, INPUT).0 != 200 {
        assert!(start.elapsed() < limit, "no answer from {addr}{path}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

struct DevUp {
    child: Child,
    state: PathBuf,
}

impl Drop for DevUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(BERTH)
            .args(["dev", "down"])
            .env("BERTH_STATE_DIR", &self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    run(Command::new(BERTH)
        .args(["build", "--all", "plugin-images/"])
        .current_dir(repo()));
    // The gateway image takes minutes to build (static, LTO): only when it is missing.
    let gateway_image = concat!("berth/berth:", env!("CARGO_PKG_VERSION"));
    let have_gateway = Command::new("docker")
        .args(["image", "inspect", gateway_image])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_gateway {
        run(Command::new(repo().join("crates/cli/build-image.sh")).current_dir(repo()));
    }

    let state = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let log = std::fs::File::create(state.join("dev-up.log")).unwrap();
    let child = Command::new(BERTH)
        .args(["dev", "up", "--port", "0", "--no-build"])
        .env("BERTH_STATE_DIR", &state)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let dev = DevUp {
        child,
        state: state.clone(),
    };
    let started = Instant::now();
    let url = loop {
        let text = std::fs::read_to_string(state.join("dev-up.log")).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("gateway:")) {
            break line.split_whitespace().nth(1).unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "dev up: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let addr = url.trim_start_matches("http://").to_owned();
    let token = std::fs::read_to_string(state.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let manifest = repo().join("examples/calculator.yaml");
    let berth = |args: &[&str]| {
        run(Command::new(BERTH)
            .args(args)
            .env("BERTH_STATE_DIR", &state)
            .stdout(Stdio::piped()))
    };

    // Cold start through berth: install, then the first 200 through the gateway.
    let plugin_networks = || {
        run(Command::new("docker").args([
            "network",
            "ls",
            "-q",
            "--filter",
            "label=berth.dev/plugin=calculator",
        ]))
    };
    let networks_before = plugin_networks();
    let mut berth_ms = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut install = Command::new(BERTH)
            .args(["install", manifest.to_str().unwrap()])
            .env("BERTH_STATE_DIR", &state)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        until_ok(
            &addr,
            "/v1/plugins/calculator/invoke/evaluate",
            &token,
            Duration::from_secs(60),
        );
        berth_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        install.wait().unwrap();
        berth(&["uninstall", "calculator"]);
        // Every run starts from nothing: wait until the plugin's network is gone too.
        let gone = Instant::now();
        while plugin_networks() != networks_before {
            assert!(
                gone.elapsed() < Duration::from_secs(30),
                "the uninstalled plugin's network stayed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Plain `docker run` of the same image with the same limits, on a plain network.
    let net = format!("berth-bench-{}", std::process::id());
    run(Command::new("docker").args(["network", "create", &net]));
    let mut docker_ms = Vec::new();
    for i in 0..runs {
        let name = format!("{net}-{i}");
        let t0 = Instant::now();
        let id = run(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "--read-only",
            "--user",
            "65532:65532",
            "--cap-drop",
            "ALL",
            "--memory",
            "32m",
            "--cpus",
            "0.25",
            "--pids-limit",
            "16",
            "-e",
            "BERTH_PORT=8080",
            "berth/calculator:0.1.0",
        ]));
        let ip = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &id,
        ]));
        until_ok(
            &format!("{ip}:8080"),
            "/v1/invoke/evaluate",
            "",
            Duration::from_secs(60),
        );
        docker_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        run(Command::new("docker").args(["rm", "-f", &id]));
    }
    run(Command::new("docker").args(["network", "rm", &net]));

    let (b50, b99) = quantiles(berth_ms);
    let (d50, d99) = quantiles(docker_ms);
    println!("cold start, install → first successful invoke, {runs} runs:");
    println!("  berth install + gateway   p50 {b50:7.1} ms   p99 {b99:7.1} ms");
    println!("  plain docker run          p50 {d50:7.1} ms   p99 {d99:7.1} ms");
    println!(
        "  ratio berth / docker run  p50 {:.2}   p99 {:.2}",
        b50 / d50,
        b99 / d99
    );

    // Hot reload under load: 4 callers, 5 reloads (a manifest change each).
    berth(&["install", manifest.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, token, stop, ok, failed) = (
                addr.clone(),
                token.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match support::post(
                        &addr,
                        "/v1/plugins/calculator/invoke/evaluate",
                        &token,
                        INPUT,
                    )
                    .0
                    {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let base = std::fs::read_to_string(&manifest).unwrap();
    let mut swaps = Vec::new();
    for i in 0..5 {
        let file = state.join(format!("calculator-{i}.yaml"));
        std::fs::write(
            &file,
            base.replace(
                "Safe arithmetic expression evaluator",
                &format!("Safe arithmetic expression evaluator, reload {i}"),
            ),
        )
        .unwrap();
        let t0 = Instant::now();
        berth(&["install", file.to_str().unwrap()]);
        swaps.push(t0.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let (s50, s99) = quantiles(swaps);
    println!(
        "hot reload under load (4 callers, 5 reloads): {} requests served, {} failed; swap (install → new revision serving) p50 {s50:.0} ms, max {s99:.0} ms",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    drop(dev);
}
