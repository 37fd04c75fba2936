//! Faults under load, against the real Docker Engine: a plugin container killed while 32
//! callers keep calling it through the gateway, and `berth dev up` killed in the middle of a
//! rollout. The per-run numbers are printed (`-- --nocapture`) for docs/reliability.md.
//!
//! Like the other Docker tests, these fail when `CI` is set and the engine is unreachable,
//! and say why they skip otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::dev::{Dev, build, build_gateway_image, docker, docker_or_skip};
use support::{repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Builds the calculator image and the gateway image once per run of this file.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(&["build", "plugin-images/calculator"]);
        build_gateway_image();
    });
}

fn calculator_yaml() -> String {
    std::fs::read_to_string(repo().join("examples/calculator.yaml")).unwrap()
}

/// One keep-alive HTTP/1.1 connection to the gateway, opened again after an I/O error.
struct Client {
    addr: String,
    token: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(url: &str, token: &str) -> Self {
        Self {
            addr: url.trim_start_matches("http://").to_owned(),
            token: token.to_owned(),
            conn: None,
        }
    }

    /// `METHOD path` with `body`: the status (0 when no answer came) and the body.
    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        match self.exchange(method, path, body) {
            Ok((status, text, keep)) => {
                if !keep {
                    self.conn = None;
                }
                (status, text)
            }
            Err(e) => {
                self.conn = None;
                (0, e.to_string())
            }
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String, bool)> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        conn.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
        let (mut length, mut chunked, mut keep) = (0usize, false, true);
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => keep = !value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut bytes = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..size]);
            }
        } else {
            bytes.resize(length, 0);
            conn.read_exact(&mut bytes)?;
        }
        Ok((status, String::from_utf8_lossy(&bytes).into_owned(), keep))
    }
}

/// One call made by a caller, times from the start of the load.
struct CallRecord {
    run: usize,
    start: Duration,
    end: Duration,
    status: u16,
    /// The error code (`error.code`) of a failed call, or what came instead.
    code: String,
}

impl CallRecord {
    fn failed(&self) -> bool {
        !self.code.is_empty()
    }
}

/// No run: the callers wait.
const PAUSED: usize = usize::MAX;

/// Callers on threads, each with its own keep-alive connection, calling `evaluate` of the
/// calculator while `run` is not [`PAUSED`].
struct Load {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    run: Arc<AtomicUsize>,
    /// Per run: start (µs since `epoch`, + 1) of the latest successful and failed call.
    last_ok: Arc<Vec<AtomicU64>>,
    last_failed: Arc<Vec<AtomicU64>>,
    threads: Vec<std::thread::JoinHandle<Vec<CallRecord>>>,
}

impl Load {
    fn start(url: &str, token: &str, runs: usize, callers: usize) -> Self {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let run = Arc::new(AtomicUsize::new(PAUSED));
        let slots = || Arc::new((0..runs).map(|_| AtomicU64::new(0)).collect());
        let (last_ok, last_failed): (Arc<Vec<AtomicU64>>, Arc<Vec<AtomicU64>>) = (slots(), slots());
        let threads = (0..callers)
            .map(|_| {
                let mut client = Client::new(url, token);
                let (stop, run) = (stop.clone(), run.clone());
                let (last_ok, last_failed) = (last_ok.clone(), last_failed.clone());
                std::thread::spawn(move || {
                    let mut calls = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let plugin = run.load(Ordering::Relaxed);
                        if plugin == PAUSED {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        let path = "/v1/plugins/calculator/invoke/evaluate";
                        let start = epoch.elapsed();
                        let (status, body) =
                            client.call("POST", path, r#"{"expression":"2*(3+4)"}"#);
                        let end = epoch.elapsed();
                        let code = if status == 200 && body.contains("14") {
                            String::new()
                        } else {
                            serde_json::from_str::<Value>(&body)
                                .ok()
                                .and_then(|v| v["error"]["code"].as_str().map(String::from))
                                .unwrap_or_else(|| format!("{status} {body}"))
                        };
                        let slot = if code.is_empty() {
                            &last_ok[plugin]
                        } else {
                            &last_failed[plugin]
                        };
                        slot.fetch_max(start.as_micros() as u64 + 1, Ordering::Relaxed);
                        calls.push(CallRecord {
                            run: plugin,
                            start,
                            end,
                            status,
                            code,
                        });
                        // Keep the two cores for the engine and the supervisor too.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    calls
                })
            })
            .collect();
        Self {
            epoch,
            stop,
            run,
            last_ok,
            last_failed,
            threads,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn last(slots: &[AtomicU64], plugin: usize) -> Option<Duration> {
        match slots[plugin].load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us - 1)),
        }
    }

    fn finish(self) -> Vec<CallRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.threads {
            all.extend(t.join().unwrap());
        }
        all.sort_by_key(|c| c.start);
        all
    }
}

/// The value of the `name` series whose labels include every `labels` pair, summed (0 when
/// none is exported).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn p50(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// A killed plugin container while 32 callers call it: the failures are clear gateway
/// errors, come only between the kill and the restart, and are counted and audited; the
/// supervisor starts the same container again (a crash restart of the same revision).
#[test]
fn killed_plugin_container_under_load_fails_only_during_the_outage() {
    if !docker_or_skip("killed_plugin_container_under_load_fails_only_during_the_outage") {
        return;
    }
    images();
    // Each run kills a new revision (`berth disable` + `berth enable` in between, with the
    // callers paused), so that each is a first failure for the restart policy; a minute of
    // healthy running would be needed otherwise.
    const RUNS: usize = 5;
    const CALLERS: usize = 32;
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let url = dev.gateway_url().unwrap();
    let token = dev.token();
    let load = Load::start(&url, &token, RUNS, CALLERS);

    struct Run {
        killed: Duration,
        /// When `berth list` first showed the plugin Ready again, restarted.
        ready_seen: Duration,
        container: String,
    }
    let name = "calculator";
    let mut runs = Vec::new();
    for i in 0..RUNS {
        if i > 0 {
            load.run.store(PAUSED, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
            dev.ok(&["disable", name]);
            dev.ok(&["enable", name]);
        }
        assert_eq!(dev.phase(name), "Ready", "{}", dev.log_text());
        // The disabled revision's container goes after its drain.
        let deadline = Instant::now() + Duration::from_secs(20);
        while dev.plugin_containers(name).len() != 1 {
            assert!(Instant::now() < deadline, "{:?}", dev.leftovers());
            std::thread::sleep(Duration::from_millis(100));
        }
        load.run.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let before = dev.status(name);
        let restarts = before["status"]["restarts"].as_u64().unwrap();
        let container = docker(&["inspect", "-f", "{{.Id}}", &dev.container_of(name)]);
        // From just before the kill: it takes effect before `docker kill` returns.
        let killed = load.now();
        docker(&["kill", &container]);
        // Ready again, restarted once more; and a call that started after the last failure
        // succeeded.
        let mut ready_seen = None;
        loop {
            let row = dev.plugin(name);
            if ready_seen.is_none()
                && row["phase"] == "Ready"
                && row["restarts"].as_u64() == Some(restarts + 1)
            {
                ready_seen = Some(load.now());
            }
            let ok = Load::last(&load.last_ok, i);
            let failed = Load::last(&load.last_failed, i);
            if let (Some(_), Some(ok), Some(failed)) = (ready_seen, ok, failed)
                && failed > killed
                && ok > failed
            {
                break;
            }
            assert!(
                load.now() - killed < Duration::from_secs(30),
                "run {i} did not recover: {row}\n{}",
                dev.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "run {i}: Ready again {:?} after the kill",
            ready_seen.unwrap() - killed
        );
        // A second of calls after recovery, which must all succeed.
        std::thread::sleep(Duration::from_secs(1));
        let after = dev.status(name);
        assert_eq!(
            after["status"]["serving_revision"], before["status"]["serving_revision"],
            "a crash restart keeps the revision: {after}"
        );
        assert_eq!(
            after["revisions"].as_array().map(Vec::len),
            before["revisions"].as_array().map(Vec::len),
            "no new revision: {after}"
        );
        assert_eq!(after["status"]["restarts"], restarts + 1, "{after}");
        assert_eq!(
            docker(&["inspect", "-f", "{{.Id}}", &dev.container_of(name)]),
            container,
            "the same container was started again"
        );
        runs.push(Run {
            killed,
            ready_seen: ready_seen.expect("checked in the loop"),
            container,
        });
    }
    let calls = load.finish();

    let mut recoveries = Vec::new();
    let mut supervisor = Vec::new();
    let mut failed_counts = Vec::new();
    let mut codes_seen = std::collections::BTreeMap::<String, usize>::new();
    for (i, run) in runs.iter().enumerate() {
        let mine: Vec<&CallRecord> = calls.iter().filter(|c| c.run == i).collect();
        let failed: Vec<&&CallRecord> = mine.iter().filter(|c| c.failed()).collect();
        // Every failure overlaps the outage: none ended before the kill, none started
        // after the supervisor showed the plugin Ready again (plus the directory push,
        // which follows that status write).
        let late = run.ready_seen + Duration::from_millis(500);
        for c in &failed {
            assert!(
                c.end >= run.killed && c.start <= late,
                "run {i}: a call failed outside the outage ({:?}..{:?} after the load began; \
                 killed at {:?}, Ready at {:?}): {} {}",
                c.start,
                c.end,
                run.killed,
                run.ready_seen,
                c.status,
                c.code
            );
            let expected = match c.code.as_str() {
                "plugin_unreachable" => 502,
                "plugin_not_ready" | "circuit_open" => 503,
                _ => 0,
            };
            assert_eq!(
                c.status, expected,
                "run {i}: not a documented outage answer: {} {}",
                c.status, c.code
            );
            *codes_seen.entry(c.code.clone()).or_default() += 1;
        }
        assert!(
            !failed.is_empty(),
            "run {i}: no call failed; was it killed?"
        );
        let last_failure = failed.iter().map(|c| c.start).max().unwrap();
        let recovered = mine
            .iter()
            .filter(|c| !c.failed() && c.start > last_failure)
            .map(|c| c.start)
            .min()
            .expect("a success after the last failure");
        let took = recovered - run.killed;
        // Design: 1 s restart backoff, then the container start and readiness; the breaker
        // must not keep refusing after that.
        assert!(
            took < Duration::from_secs(5),
            "run {i}: took {took:?} to recover"
        );
        recoveries.push(took);
        supervisor.push(run.ready_seen - run.killed);
        failed_counts.push(failed.len());
        eprintln!(
            "run {} ({}): killed, serving again after {took:?} (supervisor Ready after \
             {:?}); {} of {} calls in the run failed",
            i + 1,
            &run.container[..12],
            run.ready_seen - run.killed,
            failed.len(),
            mine.iter().filter(|c| c.end >= run.killed).count(),
        );
    }
    let total_ok = calls.iter().filter(|c| !c.failed()).count();
    let mut counts = failed_counts.clone();
    counts.sort();
    eprintln!(
        "plugin container killed under {CALLERS} callers, {RUNS} runs: recovered in \
         {recoveries:?} (p50 {:?}); supervisor Ready in {supervisor:?} (p50 {:?}); failed calls \
         {failed_counts:?} (p50 {}); codes {codes_seen:?}; {total_ok} calls succeeded",
        p50(&recoveries),
        p50(&supervisor),
        counts[counts.len() / 2],
    );

    // Reported: the gateway counted every failure the callers saw, by outcome, and the
    // restart; the audit log has the crash, the restart and the failed calls.
    let mut client = Client::new(&url, &token);
    let (status, metrics) = client.call("GET", "/metrics", "");
    assert_eq!(status, 200, "{metrics}");
    let seen = |code: &str| calls.iter().filter(|c| c.code == code).count() as f64;
    for (outcome, code) in [
        ("unreachable", "plugin_unreachable"),
        ("unavailable", "plugin_not_ready"),
        ("circuit_open", "circuit_open"),
    ] {
        let counted = metric(
            &metrics,
            "berth_invocations_total",
            &[("plugin", name), ("outcome", outcome)],
        );
        assert_eq!(counted, seen(code), "{outcome}: {metrics}");
    }
    let restarts = metric(
        &metrics,
        "berth_plugin_restarts_total",
        &[("plugin", name), ("reason", "crash")],
    );
    assert_eq!(restarts, RUNS as f64, "{metrics}");
    let (status, info) = client.call("GET", &format!("/v1/plugins/{name}"), "");
    assert_eq!(status, 200, "{info}");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["circuit"], "closed", "{info}");

    // The gateway writes its audit events in batches: wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (audit, unreachable) = loop {
        let audit = dev.ok(&["audit", "--plugin", name, "--output", "json"]);
        let events: Vec<Value> = serde_json::from_str(&audit).unwrap_or_default();
        let unreachable: Vec<Value> = events
            .into_iter()
            .filter(|e| e["details"]["code"] == "plugin_unreachable")
            .collect();
        if unreachable.len() as f64 == seen("plugin_unreachable") {
            break (audit, unreachable);
        }
        assert!(
            Instant::now() < deadline,
            "{} unreachable calls audited, {} seen",
            unreachable.len(),
            seen("plugin_unreachable")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(audit.matches("\"crashed\"").count(), RUNS, "{audit}");
    assert_eq!(audit.matches("\"restarted\"").count(), RUNS, "{audit}");
    // An idempotent capability is retried after a transport error: each audited failure
    // says how many attempts it made.
    let attempts: Vec<u64> = unreachable
        .iter()
        .map(|e| e["details"]["attempts"].as_u64().unwrap_or(0))
        .collect();
    assert!(attempts.iter().all(|a| *a >= 1), "{attempts:?}");
    eprintln!("attempts of the unreachable calls: {attempts:?}");
    if seen("circuit_open") > 0.0 {
        for outcome in ["circuit_opened", "circuit_closed"] {
            assert!(audit.contains(outcome), "{outcome}: {audit}");
        }
    }
    let list = dev.ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(name) && l.contains("Ready")),
        "{list}"
    );
}

/// The revisions `berth status NAME --json` lists: (revision, state) newest first.
fn revisions(dev: &Dev, name: &str) -> Vec<(u64, String)> {
    dev.status(name)["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Where in a rollout `berth dev up` is killed.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// The new revision's container runs but is not ready yet.
    Starting,
    /// The new revision serves; the old one drains.
    Draining,
}

/// `berth dev up` killed while it rolls out a new revision: the next one converges to one
/// serving revision, removes what the interrupted rollout left, records the truth about
/// every revision, and serves.
#[test]
fn supervisor_killed_mid_rollout_converges_on_one_serving_revision() {
    if !docker_or_skip("supervisor_killed_mid_rollout_converges_on_one_serving_revision") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let store = berth_store::Store::open(dev.dir().join("berth.db")).unwrap();
    let points = [
        KillPoint::Starting,
        KillPoint::Draining,
        KillPoint::Starting,
        KillPoint::Draining,
    ];
    for (round, point) in points.into_iter().enumerate() {
        let serving = dev.status("calculator")["status"]["serving_revision"]
            .as_u64()
            .unwrap();
        let old_container = dev.container_of("calculator");
        let changed = calculator_yaml().replace(
            "description: Safe arithmetic expression evaluator",
            &format!("description: Safe arithmetic expression evaluator, round {round}"),
        );
        let file = dev.dir().join(format!("calculator-{round}.yaml"));
        std::fs::write(&file, changed).unwrap();
        let gateway = Paused::gateway_of(&dev, matches!(point, KillPoint::Starting));
        let mut install = spawn_berth(&dev, &["install", file.to_str().unwrap()]);
        // Watch the store as the supervisor writes it, to kill it at the chosen point. With
        // the gateway paused, the readiness checks (made through it) cannot finish, so the
        // new revision stays Starting until the kill.
        let deadline = Instant::now() + Duration::from_secs(30);
        let new = loop {
            let latest = store.revisions("calculator").unwrap();
            let newest = latest.first().filter(|r| r.revision > serving);
            let hit = match (point, newest) {
                (KillPoint::Starting, Some(r)) if r.state == "Starting" => {
                    // Its container runs: the rollout has left something behind.
                    dev.plugin_containers("calculator").len() == 2
                }
                (KillPoint::Draining, Some(r)) => r.state == "Ready",
                _ => false,
            };
            if hit {
                dev.kill();
                break newest.unwrap().revision;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the rollout never reached {point:?}: {latest:?}\n{}",
                dev.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(gateway);
        let _ = install.kill();
        let _ = install.wait();
        // What the kill left: the store as the supervisor last wrote it, both containers.
        let left = store.revisions("calculator").unwrap();
        let running = dev.plugin_containers("calculator").len();
        eprintln!(
            "round {round} ({point:?}): killed with revision {new} {:?}, revision {serving} \
             {:?}, {running} plugin containers running",
            left[0].state,
            left.iter()
                .find(|r| r.revision == serving)
                .map(|r| &r.state),
        );
        assert_eq!(running, 2, "round {round}: not mid-rollout");
        match point {
            KillPoint::Starting => assert_eq!(left[0].state, "Starting", "{left:?}"),
            KillPoint::Draining => assert_eq!(left[0].state, "Ready", "{left:?}"),
        }

        let started = Instant::now();
        dev.up(&[]);
        let status = dev.status("calculator");
        let serving_now = status["status"]["serving_revision"].as_u64().unwrap();
        assert!(serving_now >= new, "round {round}: {status}");
        // Exactly one plugin container (after the old one's drain), its revision the serving
        // one; no other container or network of the instance than those that should be.
        let deadline = Instant::now() + Duration::from_secs(20);
        while dev.plugin_containers("calculator").len() != 1 {
            assert!(
                Instant::now() < deadline,
                "round {round}: {:?}",
                dev.leftovers()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let container = dev.container_of("calculator");
        assert_ne!(container, old_container, "round {round}");
        let id = dev.instance();
        let mut expected = vec![
            dev.gateway_container(),
            format!("berth-{id}-calculator-r{serving_now}"),
            dev.network_of("calculator"),
            format!("berth-{id}-edge"),
        ];
        wait_for_objects(&dev, &mut expected, round);
        // The revision records tell the truth: the serving one Ready, none other Ready or
        // Starting.
        let recorded = revisions(&dev, "calculator");
        for (revision, state) in &recorded {
            if *revision == serving_now {
                assert_eq!(state, "Ready", "round {round}: {recorded:?}");
            } else {
                assert!(
                    !matches!(state.as_str(), "Ready" | "Starting"),
                    "round {round}: revision {revision} is {state} but does not serve: \
                     {recorded:?}"
                );
            }
        }
        let answer = dev.invoke(
            "calculator",
            "evaluate",
            &serde_json::json!({"expression": "2*(3+4)"}),
        );
        assert_eq!(answer["result"], 14, "{answer}");
        assert_eq!(dev.phase("calculator"), "Ready");
        eprintln!(
            "round {round}: converged in {:?} on revision {serving_now}; revisions {recorded:?}",
            started.elapsed()
        );
    }
}

/// Waits until the instance's containers and networks are exactly `expected` (names, in any
/// order): the old revision's container goes after its drain.
fn wait_for_objects(dev: &Dev, expected: &mut [String], round: usize) {
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Besides, the pool of networks not given to any plugin yet (`--network-pool`, 2).
        let (mut objects, pool): (Vec<String>, Vec<String>) = dev
            .leftovers()
            .into_iter()
            .partition(|o| expected.contains(o) || !o.contains("_pool-"));
        objects.sort();
        if objects == expected && pool.len() == 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: instance objects {objects:?} and pool {pool:?}, expected {expected:?} and two pool networks\n{}",
            docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=berth.dev/instance={}", dev.instance())
            ])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The gateway container of `dev`, paused until dropped (when asked to).
struct Paused(Option<String>);

impl Paused {
    fn gateway_of(dev: &Dev, pause: bool) -> Self {
        Self(pause.then(|| {
            let gateway = dev.gateway_container();
            docker(&["pause", &gateway]);
            gateway
        }))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(gateway) = self.0.take() {
            let _ = Command::new("docker").args(["unpause", &gateway]).output();
        }
    }
}

/// `berth ARGS` in the background with `dev`'s state directory.
fn spawn_berth(dev: &Dev, args: &[&str]) -> Child {
    Command::new(BERTH)
        .args(args)
        .env("BERTH_STATE_DIR", dev.dir())
        .env("CARGO_TARGET_DIR", target_dir())
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
