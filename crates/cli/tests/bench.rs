//! `berth bench` through the real binary: a gateway and a plugin as host processes on
//! 127.0.0.1 (agreement with wrk, the open loop, every bad input with its exit code), and
//! one Docker-backed run of the calculator example under `berth dev up`.
//!
//! wrk comes from Debian's packages; under `CI` a missing wrk is a failure, otherwise the
//! agreement test says why it skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::describe_output;
use support::gateway::{GatewayProcess, start_gateway};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth(args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .env_remove("BERTH_GATEWAY")
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_STATE_DIR")
        .output()
        .expect("berth runs")
}

/// A protocol-v1 plugin on threads, HTTP/1.1 keep-alive: every capability answers
/// `{"ok":true}` after `delay`; while `stall_until` (ms since `epoch`) lies ahead, answers
/// wait until then. Its port.
struct FastPlugin {
    port: u16,
    epoch: Instant,
    stall_until_ms: Arc<AtomicU64>,
}

impl FastPlugin {
    fn start(delay: Duration) -> FastPlugin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Instant::now();
        let stall_until_ms = Arc::new(AtomicU64::new(0));
        let stall = stall_until_ms.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let stall = stall.clone();
                std::thread::spawn(move || serve(stream, delay, epoch, &stall));
            }
        });
        FastPlugin {
            port,
            epoch,
            stall_until_ms,
        }
    }

    /// Every answer from now on waits until `d` from now.
    fn stall_for(&self, d: Duration) {
        let until = (self.epoch.elapsed() + d).as_millis() as u64;
        self.stall_until_ms.store(until, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, delay: Duration, epoch: Instant, stall: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let until = Duration::from_millis(stall.load(Ordering::SeqCst));
        let now = epoch.elapsed();
        if until > now {
            std::thread::sleep(until - now);
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let answer = r#"{"ok":true}"#;
        if write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .is_err()
        {
            return;
        }
    }
}

/// `berth gateway token --name NAME --scope SCOPE` → (tokens-file line, token).
fn mint(name: &str, scope: &str) -> (String, String) {
    let out = berth(&["gateway", "token", "--name", name, "--scope", scope]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let token = String::from_utf8(out.stderr)
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    (line, token)
}

const MANIFEST: &str = "\
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: calc}
spec:
  image: localhost/berth/calc:0.1.0
  version: 0.1.0
  capabilities:
    - name: add
      input: {type: object, required: [a, b]}
      examples:
        - input: {a: 1, b: 2}
        - input: {a: 3, b: 4}
    - name: plain
  resources:
    maxConcurrency: 256
    timeout: 10s
";

/// A gateway in front of a [`FastPlugin`], with a token for `invoke:*` and `admin` and
/// one for another plugin only.
struct Setup {
    _dir: tempfile::TempDir,
    manifest: PathBuf,
    _gateway: GatewayProcess,
    port: u16,
    token: String,
    narrow_token: String,
    plugin: FastPlugin,
}

impl Setup {
    fn start(delay: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("calc.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        let (line, token) = mint("bench", "invoke:*,admin");
        let (narrow_line, narrow_token) = mint("narrow", "invoke:other");
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("{line}\n{narrow_line}\n")).unwrap();
        let plugin = FastPlugin::start(delay);
        let (gateway, port) = start_gateway(|g| {
            g.arg("--plugins")
                .arg(&manifest)
                .args([
                    "--endpoint",
                    &format!("calc=http://127.0.0.1:{}", plugin.port),
                ])
                .arg("--tokens-file")
                .arg(&tokens)
                .arg("--store")
                .arg(dir.path().join("berth.db"))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        });
        Setup {
            _dir: dir,
            manifest,
            _gateway: gateway,
            port,
            token,
            narrow_token,
            plugin,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `berth bench` against this gateway with the manifest; extra args after.
    fn bench(&self, token: &str, extra: &[&str]) -> Output {
        let url = self.url();
        let manifest = self.manifest.display().to_string();
        let mut args = vec![
            "bench",
            "--gateway",
            url.as_str(),
            "--token",
            token,
            "--manifest",
            manifest.as_str(),
        ];
        args.extend_from_slice(extra);
        berth(&args)
    }
}

/// Tests that drive load take turns: on a small machine two at once would measure each
/// other.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_report(out: &Output) -> Value {
    assert!(out.status.success(), "{}", describe_output(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe_output(out)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// wrk's path, or `None` (a failure under `CI`).
fn wrk() -> Option<&'static str> {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
    });
    if found {
        return Some("wrk");
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and wrk is not installed (apt-get install wrk)");
    }
    eprintln!("skipping the wrk comparison: wrk is not installed (apt-get install wrk)");
    None
}

/// `2.50ms` → 2.5, `812.00us` → 0.812, `1.02s` → 1020.
fn wrk_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        panic!("unknown wrk duration {text:?}")
    };
    number.parse::<f64>().unwrap() * factor
}

/// Runs wrk with one thread and `connections` for `seconds` against the `add` capability;
/// (requests per second, p50 in ms).
fn run_wrk(wrk: &str, setup: &Setup, connections: u32, seconds: u32) -> (f64, f64) {
    let script = setup._dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"a\":1,\"b\":2}}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {}\"\n",
            setup.token
        ),
    )
    .unwrap();
    let out = Command::new(wrk)
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("{}/v1/plugins/calc/invoke/add", setup.url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk: {}", describe_output(&out));
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw errors (token or input wrong?):\n{text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .unwrap_or_else(|| panic!("no Requests/sec in\n{text}"))
        .trim()
        .parse()
        .unwrap();
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| wrk_ms(v.trim()))
        .unwrap_or_else(|| panic!("no 50% line in\n{text}"));
    (rps, p50)
}

#[test]
fn bench_and_wrk_agree_on_throughput_and_median() {
    let Some(wrk) = wrk() else { return };
    let _turn = one_at_a_time();
    // A plugin that takes 10 ms per call: the latency is mostly the plugin's, so both
    // tools should see the same median and, at 8 connections, the same throughput (the
    // load generators' own cost is measured in benches/bench_tool.rs).
    let setup = Setup::start(Duration::from_millis(10));
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "add",
            "--input",
            r#"{"a":1,"b":2}"#,
            "--concurrency",
            "8",
            "--duration",
            "4s",
            "--warmup",
            "1s",
            "--output",
            "json",
        ],
    );
    let report = json_report(&out);
    let ours_rps = report["throughput"].as_f64().unwrap();
    let ours_p50 = report["latency"]["p50Ms"].as_f64().unwrap();
    let (wrk_rps, wrk_p50) = run_wrk(wrk, &setup, 8, 4);
    eprintln!(
        "berth bench: {ours_rps:.1} req/s, p50 {ours_p50:.3} ms\nwrk:         {wrk_rps:.1} req/s, p50 {wrk_p50:.3} ms"
    );
    assert_eq!(report["errorRatio"].as_f64(), Some(0.0), "{report}");
    assert!(
        (ours_rps - wrk_rps).abs() / wrk_rps <= 0.15,
        "throughput: berth bench {ours_rps:.1} vs wrk {wrk_rps:.1} req/s"
    );
    assert!(
        (ours_p50 - wrk_p50).abs() / wrk_p50 <= 0.25,
        "p50: berth bench {ours_p50:.3} vs wrk {wrk_p50:.3} ms"
    );
    // The gateway's own histograms saw the same run.
    let view = &report["gatewayView"];
    let counted = view["requests"].as_f64().unwrap();
    let requests = report["requests"].as_f64().unwrap();
    assert!(
        (counted - requests).abs() <= requests * 0.05 + 16.0,
        "gateway counted {counted}, bench {requests}"
    );
    let gw_p50 = view["latency"]["p50Ms"].as_f64().unwrap();
    // The 10 ms call falls in the gateway's (10 ms, 25 ms] bucket.
    assert!((10.0..=25.0).contains(&gw_p50), "{view}");
    assert!(
        report["timeline"].as_array().unwrap().len() >= 4,
        "{report}"
    );
    assert!(!report["distribution"].as_array().unwrap().is_empty());
}

#[test]
fn open_loop_keeps_the_rate_and_counts_a_stall_from_the_intended_send_time() {
    let _turn = one_at_a_time();
    let setup = Setup::start(Duration::from_millis(1));
    // The plugin stalls 400 ms in the middle of the run: an open loop keeps sending on
    // schedule, and every request due during the stall counts its wait.
    let stall = std::thread::spawn({
        let stall_until = setup.plugin.stall_until_ms.clone();
        let epoch = setup.plugin.epoch;
        move || {
            std::thread::sleep(Duration::from_millis(2500));
            let until = (epoch.elapsed() + Duration::from_millis(400)).as_millis() as u64;
            stall_until.store(until, Ordering::SeqCst);
        }
    });
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--output",
            "json",
        ],
    );
    stall.join().unwrap();
    let report = json_report(&out);
    let rps = report["throughput"].as_f64().unwrap();
    assert!(
        (180.0..=220.0).contains(&rps),
        "achieved {rps} req/s of 200"
    );
    assert_eq!(report["load"]["kind"], "open", "{report}");
    assert_eq!(report["capabilities"], serde_json::json!(["add"]));
    let p99 = report["latency"]["p99Ms"].as_f64().unwrap();
    let p90 = report["latency"]["p90Ms"].as_f64().unwrap();
    // ~80 of ~600 requests were due during the stall, waiting up to 400 ms.
    assert!(p99 >= 200.0, "p99 {p99} ms should include the stall");
    assert!(p90 >= 20.0, "p90 {p90} ms should include the stall");
    assert!(report["lateSends"].as_u64().unwrap() <= 6, "{report}");
    setup.plugin.stall_for(Duration::ZERO);
}

#[test]
fn latency_counts_the_time_a_send_was_held_back_by_the_in_flight_cap() {
    let _turn = one_at_a_time();
    // One request in flight at most against a plugin taking 20 ms, at 200 req/s: each
    // send is held back behind the previous answer, later and later. Measured from its
    // intended send time, the median is hundreds of milliseconds; measured from when it
    // actually left, it would be about the plugin's 20 ms.
    let setup = Setup::start(Duration::from_millis(20));
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "add",
            "--rate",
            "200",
            "--max-inflight",
            "1",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--output",
            "json",
        ],
    );
    // The machine (held by the cap) could not drive the rate, and says so.
    assert_eq!(out.status.code(), Some(5), "{}", describe_output(&out));
    // The report is still printed (not stored) before the failure.
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", describe_output(&out)));
    let p50 = report["latency"]["p50Ms"].as_f64().unwrap();
    let max = report["latency"]["maxMs"].as_f64().unwrap();
    assert!(
        p50 >= 200.0,
        "p50 {p50} ms must count the held-back time: {report}"
    );
    assert!(
        max >= 800.0,
        "max {max} ms must count the held-back time: {report}"
    );
    let late = report["lateSends"].as_u64().unwrap();
    assert!(late >= 50, "{late} late sends: {report}");
}

#[test]
fn too_few_answers_are_not_rated_and_nothing_is_written() {
    let _turn = one_at_a_time();
    // One caller against a plugin taking 300 ms for 1 s: about 3 answers, under 20.
    let setup = Setup::start(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    let log_arg = log.display().to_string();
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "add",
            "--concurrency",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--termination-log",
            &log_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", describe_output(&out));
    let e = stderr(&out);
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    assert!(
        errors[0].contains("answers came in the measured part")
            && errors[0].contains("at least 20 are needed"),
        "{e}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("tier:"),
        "no tier is printed"
    );
    assert!(!log.exists(), "nothing is written to the termination log");
    // The same run with a lower bar is rated.
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "add",
            "--concurrency",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--min-answers",
            "1",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
}

#[test]
fn a_rate_the_machine_cannot_drive_fails_and_says_what_it_reached() {
    let _turn = one_at_a_time();
    let setup = Setup::start(Duration::ZERO);
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "add",
            "--rate",
            "200000",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe_output(&out));
    let e = stderr(&out);
    assert!(
        e.contains("error: this machine could not drive 200000 req/s")
            && e.contains("the highest rate achieved was"),
        "{e}"
    );
}

#[test]
fn bad_input_gets_one_line_and_its_exit_code() {
    let _turn = one_at_a_time();
    let setup = Setup::start(Duration::ZERO);
    let quick = ["--duration", "1s", "--warmup", "0s"];
    let case = |token: &str, args: &[&str], code: i32, needle: &str| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&quick);
        let out = setup.bench(token, &all);
        let e = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            describe_output(&out)
        );
        let line = e
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        assert!(line.contains(needle), "{args:?}: {e}");
    };
    case(&setup.token, &["nope"], 2, "unknown plugin \"nope\"");
    case(
        &setup.token,
        &["calc", "mul"],
        2,
        "unknown capability \"mul\" of calc (it has: add, plain)",
    );
    case(
        &setup.token,
        &["calc", "plain"],
        2,
        "capability \"plain\" of calc has no examples; give --input",
    );
    case(
        &setup.narrow_token,
        &["calc"],
        4,
        "the token lacks the scope `invoke:calc`",
    );
    let thresholds = setup._dir.path().join("tiers.yaml");
    std::fs::write(
        &thresholds,
        "latencyQuantile: 0.9\nplatinum: {latencyMs: 1, errorRatio: 0, resourceRatio: 0.5}\n\
         gold: {latencyMs: 2, errorRatio: 0, resourceRatio: 0.6}\nsilver: {latencyMs: two, errorRatio: 0, resourceRatio: 0.7}\n",
    )
    .unwrap();
    case(
        &setup.token,
        &["calc", "--thresholds", thresholds.to_str().unwrap()],
        2,
        "tiers.yaml: silver.latencyMs: invalid type",
    );
    // Unreachable: nothing listens on that port.
    let port = support::gateway::free_port();
    let out = berth(&[
        "bench",
        "--gateway",
        &format!("http://127.0.0.1:{port}"),
        "--token",
        "x",
        "calc",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert!(stderr(&out).contains("is unreachable"), "{}", stderr(&out));
    // No local gateway in an empty state directory.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BERTH)
        .args(["bench", "calc"])
        .env("BERTH_STATE_DIR", empty.path())
        .env_remove("BERTH_GATEWAY")
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("no local gateway is running"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn thresholds_decide_the_tier_and_fail_below_fails_the_run() {
    let _turn = one_at_a_time();
    let setup = Setup::start(Duration::from_millis(3));
    let strict = setup._dir.path().join("strict.json");
    std::fs::write(
        &strict,
        r#"{"latencyQuantile":0.5,
            "platinum":{"latencyMs":0.5,"errorRatio":0.001,"resourceRatio":0.8},
            "gold":{"latencyMs":1,"errorRatio":0.01,"resourceRatio":0.9},
            "silver":{"latencyMs":2,"errorRatio":0.05,"resourceRatio":0.95}}"#,
    )
    .unwrap();
    let log = setup._dir.path().join("termination-log");
    let out = setup.bench(
        &setup.token,
        &[
            "calc",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--thresholds",
            strict.to_str().unwrap(),
            "--fail-below",
            "gold",
            "--termination-log",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("tier: Bronze"), "{table}");
    assert!(table.contains("p50 latency"), "{table}");
    assert!(stderr(&out).contains("error: calc rated Bronze, below --fail-below Gold"));
    // The result reached the gateway's `POST /v1/admin/benchmarks`.
    let mut metrics = String::new();
    let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    stream.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics.contains("berth_benchmark_tier{plugin=\"calc\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("benchmark"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() < 4096);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["verdict"]["tier"], "Bronze");
    assert!(v.get("timeline").is_none() && v.get("distribution").is_none());
}

/// The calculator example under `berth dev up`: bench prints a tier and numbers, writes a
/// report, stores the run, and a second run lists the first.
#[test]
fn bench_the_calculator_under_dev_up_and_compare_with_the_previous_run() {
    use support::dev::{Dev, build, build_gateway_image, docker_or_skip};
    if !docker_or_skip("bench_the_calculator_under_dev_up_and_compare_with_the_previous_run") {
        return;
    }
    // Its image builds load both cores: the timing tests wait for them.
    let _turn = one_at_a_time();
    build(&["build", "plugin-images/calculator"]);
    build_gateway_image();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let report = dev.dir().join("report.html");
    let first = dev.ok(&[
        "bench",
        "calculator",
        "--duration",
        "10s",
        "--report",
        report.to_str().unwrap(),
    ]);
    eprintln!("berth bench calculator --duration 10s:\n{first}");
    assert!(first.contains("tier: "), "{first}");
    for needle in [
        "p50 (ms)",
        "p99 (ms)",
        "throughput (req/s)",
        "plugin CPU: mean",
    ] {
        assert!(first.contains(needle), "{needle}: {first}");
    }
    assert!(std::fs::metadata(&report).unwrap().len() > 0);
    // The report of this run, in a real browser: it shows this run's numbers, as stored.
    let stored = dev.ok(&["status", "calculator", "--json"]);
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let bench = &stored["benchmark"];
    if let Some(chromium) = support::browser::Chromium::find("bench report of a real run") {
        let text = support::browser::visible_text(&chromium.dump_dom(&report));
        let tier = bench["tier"]
            .as_str()
            .expect("status shows the stored benchmark");
        let throughput = format!("{:.1} req/s", bench["throughput"].as_f64().unwrap());
        for needle in [
            tier,
            throughput.as_str(),
            "calculator",
            "Latency distribution",
        ] {
            assert!(text.contains(needle), "the report shows {needle:?}: {text}");
        }
        let png = dev.dir().join("report.png");
        let shot = chromium.screenshot(&report, &png, 1280, 2400);
        assert!(
            shot.non_background_share() > 0.03,
            "the report draws something: {:.3}",
            shot.non_background_share()
        );
    }
    let second = dev.ok(&[
        "bench",
        "calculator",
        "evaluate",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&second).unwrap();
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["resources"]["memoryPeakBytes"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert_eq!(v["resources"]["memoryLimitBytes"], 32 * 1024 * 1024);
    let third = dev.ok(&["bench", "calculator", "--duration", "1s", "--warmup", "0s"]);
    assert!(third.contains("previous runs of calculator:"), "{third}");
    let previous = third.split("previous runs of calculator:").nth(1).unwrap();
    assert_eq!(previous.trim().lines().count(), 2, "{third}");
}
