//! The gateway's cost per call, measured from outside: `wrk` against the calculator example
//! container straight (its bridge IP, no port publishing in between) and through
//! `berth gateway` on the host, in alternating phases, so that both sides see the same
//! machine at nearly the same moment. It prints the added p50 at one connection and the
//! throughput of the gateway path as a share of the direct one at 1 and 32 connections.
//!
//! `cargo bench -p berth --bench gateway_wrk` (needs Docker and `wrk`; builds the calculator
//! image when it is missing). Environment:
//! - `BERTH_BENCH_SECS`: seconds per phase (default 8);
//! - `BERTH_BENCH_ROUNDS`: direct/gateway alternations per concurrency (default 3);
//! - `BERTH_BENCH_BASELINE_BERTH`: another `berth` binary whose gateway runs beside this
//!   one and gets its own phase in every round (before/after comparisons, side by side);
//! - `BERTH_BENCH_IMAGE`: the calculator image to run (default `berth/calculator:0.1.0`,
//!   built with `berth build` when missing).
//!
//! The container runs without a CPU quota (the manifest's `cpu: 250m` would make the plugin
//! the bottleneck of both paths and hide the gateway's cost).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

#[path = "../tests/support/mod.rs"]
mod support;

use support::repo;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const IMAGE: &str = "berth/calculator:0.1.0";
const INPUT: &str = r#"{"expression":"2*(3+4)"}"#;
const TARGET_ADDED_P50_US: f64 = 100.0;
const TARGET_RATIO: f64 = 0.5;

/// The calculator container; removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A `berth gateway` process; killed on drop.
struct Gateway {
    _child: support::Killed,
    port: u16,
}

fn start_gateway(berth: &Path, dir: &Path, label: &str, endpoint: &str, tokens: &str) -> Gateway {
    let port = support::gateway::free_port();
    let log = std::fs::File::create(dir.join(format!("gateway-{label}.log"))).unwrap();
    let child = Command::new(berth)
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--plugins")
        .arg(repo().join("examples/calculator.yaml"))
        .args(["--endpoint", &format!("calculator={endpoint}")])
        .arg("--store")
        .arg(dir.join(format!("berth-{label}.db")))
        .env("BERTH_TOKENS", tokens)
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", berth.display()));
    let gateway = Gateway {
        _child: support::Killed(child),
        port,
    };
    until_ok(&format!("127.0.0.1:{port}"), "/readyz", None);
    gateway
}

/// Waits until `path` answers 200 (a POST of the input when `token` is given, else a GET).
fn until_ok(addr: &str, path: &str, token: Option<&str>) {
    let started = Instant::now();
    loop {
        let status = match token {
            Some(token) => support::post(addr, path, token, INPUT).0,
            None => get_status(addr, path),
        };
        if status == 200 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{addr}{path} did not answer 200 (last status {status})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_status(addr: &str, path: &str) -> u16 {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

struct Target {
    label: String,
    url: String,
    script: PathBuf,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env_num = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = env_num("BERTH_BENCH_SECS", 8);
    let rounds = env_num("BERTH_BENCH_ROUNDS", 3).max(1);
    let baseline = std::env::var_os("BERTH_BENCH_BASELINE_BERTH").map(PathBuf::from);

    let image = std::env::var("BERTH_BENCH_IMAGE").unwrap_or_else(|_| IMAGE.to_owned());
    let have_image = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_image && image == IMAGE {
        support::run(
            Command::new(BERTH)
                .args(["build", "plugin-images/calculator"])
                .current_dir(repo()),
        );
    }
    let dir = std::env::temp_dir().join(format!("berth-bench-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let name = format!("berth-bench-wrk-{}", std::process::id());
    let container = Container(support::run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        &image,
    ])));
    let ip = support::container_ip(&container.0);
    assert!(!ip.is_empty(), "the container has no bridge IP");
    let plugin = format!("http://{ip}:8080");

    let secret = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let digest: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let tokens = format!("bench sha256:{hex} invoke:*");

    let gateway = start_gateway(Path::new(BERTH), &dir, "new", &plugin, &tokens);
    let baseline_gateway = baseline
        .as_ref()
        .map(|berth| start_gateway(berth, &dir, "baseline", &plugin, &tokens));
    let invoke = "/v1/plugins/calculator/invoke/evaluate";
    until_ok(&format!("{ip}:8080"), "/healthz", None);
    until_ok(
        &format!("127.0.0.1:{}", gateway.port),
        invoke,
        Some(&secret),
    );

    let bearer = format!("Bearer {secret}");
    let mut targets = vec![
        Target {
            label: "direct".into(),
            url: format!("{plugin}/v1/invoke/evaluate"),
            // What the gateway sends the plugin, so that both paths ask the same of it.
            script: support::wrk::script(
                &dir,
                "direct",
                INPUT,
                &[
                    ("Berth-Request-Id", "bench"),
                    ("Berth-Caller", "bench"),
                    ("Berth-Deadline-Ms", "5000"),
                ],
            ),
        },
        Target {
            label: "gateway".into(),
            url: format!("http://127.0.0.1:{}{invoke}", gateway.port),
            script: support::wrk::script(&dir, "gateway", INPUT, &[("Authorization", &bearer)]),
        },
    ];
    if let Some(b) = &baseline_gateway {
        until_ok(&format!("127.0.0.1:{}", b.port), invoke, Some(&secret));
        targets.push(Target {
            label: "baseline".into(),
            url: format!("http://127.0.0.1:{}{invoke}", b.port),
            script: targets[1].script.clone(),
        });
    }

    eprintln!(
        "gateway_wrk: {} rounds x {} phases x 2 concurrencies, {secs} s per phase; plugin {plugin}",
        rounds,
        targets.len()
    );
    // Warm-up: connections, pools, caches, CPU frequency.
    for t in &targets {
        support::wrk::run(&t.url, &t.script, 1, 8, 1);
    }
    let levels = [1u32, 32];
    // results[level][target] = phases
    let mut results: Vec<Vec<Vec<support::wrk::Phase>>> =
        vec![vec![Vec::new(); targets.len()]; levels.len()];
    for (li, &c) in levels.iter().enumerate() {
        for round in 0..rounds {
            // Alternate the order each round so that neither side always goes first.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let t = &targets[i];
                let phase = support::wrk::run(&t.url, &t.script, 1, c, secs);
                eprintln!(
                    "  c={c:<2} round {} {:<8} p50 {:>7.1} µs  p99 {:>8.1} µs  {:>8.0} req/s",
                    round + 1,
                    t.label,
                    phase.p50_us,
                    phase.p99_us,
                    phase.rps
                );
                results[li][i].push(phase);
            }
        }
    }

    println!();
    println!(
        "gateway_wrk: wrk -t1, {secs} s phases, {rounds} alternations per concurrency (per-round ratios, median of rounds)"
    );
    println!(
        "| path | added p50 c=1 | added p99 c=1 | throughput c=1 (of direct) | throughput c=32 (of direct) |"
    );
    println!("|---|---|---|---|---|");
    for (i, t) in targets.iter().enumerate().skip(1) {
        let added = |li: usize, f: fn(&support::wrk::Phase) -> f64| {
            support::wrk::median(
                (0..results[li][0].len())
                    .map(|r| f(&results[li][i][r]) - f(&results[li][0][r]))
                    .collect(),
            )
        };
        let ratio = |li: usize| {
            support::wrk::median(
                (0..results[li][0].len())
                    .map(|r| results[li][i][r].rps / results[li][0][r].rps)
                    .collect(),
            )
        };
        let (p50, p99, r1, r32) = (
            added(0, |p| p.p50_us),
            added(0, |p| p.p99_us),
            ratio(0),
            ratio(1),
        );
        let mark = |ok: bool| if ok { "met" } else { "missed" };
        println!(
            "| {} | {p50:+.0} µs ({}) | {p99:+.0} µs | {:.0} % ({}) | {:.0} % ({}) |",
            t.label,
            mark(p50 <= TARGET_ADDED_P50_US),
            r1 * 100.0,
            mark(r1 >= TARGET_RATIO),
            r32 * 100.0,
            mark(r32 >= TARGET_RATIO)
        );
    }
    println!(
        "| target | ≤ +{TARGET_ADDED_P50_US:.0} µs | | ≥ {:.0} % | ≥ {:.0} % |",
        TARGET_RATIO * 100.0,
        TARGET_RATIO * 100.0
    );
    for (li, &c) in levels.iter().enumerate() {
        for (i, t) in targets.iter().enumerate() {
            let p50 = support::wrk::median(results[li][i].iter().map(|p| p.p50_us).collect());
            let rps = support::wrk::median(results[li][i].iter().map(|p| p.rps).collect());
            println!(
                "  c={c:<2} {:<8} median p50 {p50:>7.1} µs, {rps:>8.0} req/s",
                t.label
            );
        }
    }
    drop(baseline_gateway);
    drop(gateway);
    drop(container);
    let _ = std::fs::remove_dir_all(&dir);
}
