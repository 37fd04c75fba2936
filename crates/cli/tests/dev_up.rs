//! `berth dev up` end to end against the real Docker Engine: the example plugins behind the
//! gateway container, lifecycle commands, grants, revisions, hot reload, rollback, adoption
//! after the supervisor is killed, and `dev down` leaving nothing behind.
//!
//! Tests that need Docker fail when `CI` is set and the engine is unreachable; without `CI`
//! they print why they skip. Each test has its own state directory, so its own containers,
//! networks and gateway port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

mod support;

use support::dev::{Dev, StandIns, build, build_gateway_image, docker_or_skip};
use support::{post, repo, target_dir};

/// Builds the example images and the gateway image once per run of this file.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(&["build", "--all", "plugin-images/"]);
        build(&["build", "test-images/probe"]);
        build_gateway_image();
    });
}

fn write_manifest(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn calculator_yaml() -> String {
    std::fs::read_to_string(repo().join("examples/calculator.yaml")).unwrap()
}

#[test]
fn dev_up_runs_the_examples_and_lifecycle_commands_round_trip() {
    if !docker_or_skip("dev_up_runs_the_examples_and_lifecycle_commands_round_trip") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/"]);
    for name in ["calculator", "text-processor", "file-ops", "hello"] {
        assert_eq!(dev.phase(name), "Ready", "{name}\n{}", dev.log_text());
    }
    assert_eq!(dev.phase("http-fetch"), "AwaitingApproval");
    let answer = dev.ok(&[
        "invoke",
        "calculator",
        "evaluate",
        r#"{"expression":"2*(3+4)"}"#,
    ]);
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["result"], 14, "{answer}");

    // The gateway refuses what the schema forbids, with the field path.
    let bad = dev.berth(&["invoke", "calculator", "evaluate", r#"{"expr":"1"}"#]);
    assert_eq!(bad.status.code(), Some(1));

    live_tiers_show_in_list_and_status_after_traffic(&dev);

    let out = dev.ok(&["disable", "calculator"]);
    assert!(out.contains("Disabled"), "{out}");
    dev.wait_gone("calculator");
    let off = dev.berth(&["invoke", "calculator", "evaluate", r#"{"expression":"1"}"#]);
    assert_eq!(off.status.code(), Some(1));
    let out = dev.ok(&["enable", "calculator"]);
    assert!(out.contains("Ready"), "{out}");
    dev.ok(&[
        "invoke",
        "calculator",
        "evaluate",
        r#"{"expression":"1+1"}"#,
    ]);

    dev.ok(&["uninstall", "hello"]);
    assert!(dev.list().iter().all(|p| p["name"] != "hello"));
    // Installed again at once: it serves, and still does after the uninstalled revision's
    // containers and network were due to go.
    let out = dev.ok(&["install", "examples/hello.yaml"]);
    assert!(out.contains("Ready"), "{out}");
    std::thread::sleep(Duration::from_secs(5));
    let greeting = dev.ok(&["invoke", "hello", "greet", r#"{"name":"again"}"#]);
    assert!(greeting.contains("Hello, again!"), "{greeting}");
    assert_eq!(dev.phase("hello"), "Ready", "{}", dev.log_text());
    // Uninstalled for good: its containers and its network (from the pool, or its own) go.
    let network = dev.network_of("hello");
    dev.ok(&["uninstall", "hello"]);
    let since = Instant::now();
    while dev
        .leftovers()
        .iter()
        .any(|n| n.contains("-hello") || *n == network)
    {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{:?}",
            dev.leftovers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Installed after the start, it takes a network from the pool (created ahead, the
    // gateway joined), never the one it had; the pool is filled again.
    let pool = |dev: &Dev| -> Vec<String> {
        let mut p: Vec<String> = dev
            .leftovers()
            .into_iter()
            .filter(|n| n.contains("_pool-"))
            .collect();
        p.sort();
        p
    };
    let before = pool(&dev);
    let out = dev.ok(&["install", "examples/hello.yaml"]);
    assert!(out.contains("Ready"), "{out}");
    let given = dev.network_of("hello");
    assert!(
        before.contains(&given),
        "{given} not from the pool {before:?}"
    );
    assert_ne!(given, network);
    let greeting = dev.ok(&["invoke", "hello", "greet", r#"{"name":"pool"}"#]);
    assert!(greeting.contains("Hello, pool!"), "{greeting}");
    let since = Instant::now();
    while pool(&dev).iter().filter(|n| **n != given).count() < 2 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{:?}",
            pool(&dev)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every state change above is in the audit log, and the chain is intact.
    let audit = dev.ok(&["audit", "--output", "json"]);
    for action in ["installed", "started", "disabled", "enabled", "uninstalled"] {
        assert!(
            audit.contains(&format!("\"{action}\"")),
            "{action}: {audit}"
        );
    }
    dev.ok(&["audit", "verify"]);

    dev.kill();
    let out = dev.ok(&["dev", "down"]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(dev.leftovers(), Vec::<String>::new());
}

/// After 25 calls, the gateway rates calculator within one tier interval (10 s by
/// default); `berth list` shows the tier in its own aligned column, `berth status` too,
/// and the gateway's answers carry the plugin's own time.
fn live_tiers_show_in_list_and_status_after_traffic(dev: &Dev) {
    let url = dev.gateway_url().unwrap();
    let token = dev.token();
    for _ in 0..25 {
        let (code, body) = post(
            &url,
            "/v1/plugins/calculator/invoke/evaluate",
            &token,
            r#"{"expression":"6*7"}"#,
        );
        assert_eq!(code, 200, "{body}");
    }
    let body = r#"{"expression":"1"}"#;
    let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    write!(
        s,
        "POST /v1/plugins/calculator/invoke/evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nserver-timing: upstream;dur="),
        "{answer}"
    );

    let deadline = Instant::now() + Duration::from_secs(40);
    let listed = loop {
        let calculator = dev.plugin("calculator");
        if calculator["liveTier"]["tier"].is_string() {
            break calculator;
        }
        assert!(
            Instant::now() < deadline,
            "no live tier for calculator: {calculator}\n{}",
            dev.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let tier = listed["tier"].as_str().unwrap().to_owned();
    assert!(
        ["Platinum", "Gold", "Silver", "Bronze"].contains(&tier.as_str()),
        "{listed}"
    );
    assert!(
        listed["liveTier"]["calls"].as_u64().unwrap() >= 25,
        "{listed}"
    );
    assert_eq!(dev.status("calculator")["tier"], tier.as_str());

    // The text table: every value starts under its header.
    let text = dev.ok(&["list"]);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("{text}"));
    let columns = [
        "NAME", "VERSION", "PHASE", "REV", "RESTARTS", "RISK", "TIER", "REASON",
    ];
    let starts: Vec<usize> = columns
        .iter()
        .map(|c| {
            lines[header]
                .find(c)
                .unwrap_or_else(|| panic!("{c}: {text}"))
        })
        .collect();
    let rows = &lines[header + 1..];
    assert!(rows.len() >= 5, "{text}");
    for row in rows {
        for (column, &start) in columns.iter().zip(&starts).skip(1) {
            if *column == "REASON" && row.len() <= start {
                continue;
            }
            let bytes = row.as_bytes();
            assert!(
                bytes.get(start - 1) == Some(&b' ') && bytes.get(start).is_some_and(|b| *b != b' '),
                "{column} value not under its header in {row:?}:\n{text}"
            );
        }
    }
    let row = rows
        .iter()
        .find(|r| r.starts_with("calculator "))
        .unwrap_or_else(|| panic!("{text}"));
    let tier_start = starts[6];
    assert_eq!(&row[tier_start..tier_start + tier.len()], tier, "{text}");
    let status = dev.ok(&["status", "calculator"]);
    assert!(status.contains(&format!("tier:      {tier}")), "{status}");
}

#[test]
fn awaiting_approval_then_grant_runs_it_and_revoke_stops_it() {
    if !docker_or_skip("awaiting_approval_then_grant") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/text-processor.yaml", "examples/http-fetch.yaml"]);
    assert_eq!(dev.phase("http-fetch"), "AwaitingApproval");
    let status = dev.status("http-fetch");
    assert!(
        status["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("egress"),
        "{status}"
    );
    let out = dev.ok(&[
        "grant",
        "http-fetch",
        "--reason",
        "tests",
        "--expires",
        "30d",
    ]);
    assert!(out.contains("egress"), "shows what is granted: {out}");
    assert!(out.contains("Ready"), "{out}");
    let status = dev.status("http-fetch");
    assert_eq!(status["grants"][0]["reason"], "tests");
    assert!(status["grants"][0]["expires_at"].is_string(), "{status}");

    let out = dev.ok(&["revoke", "http-fetch"]);
    assert!(out.contains("AwaitingApproval"), "{out}");
    dev.wait_gone("http-fetch");
}

#[test]
fn upgrade_asking_for_more_shows_the_diff_and_the_old_version_keeps_serving() {
    if !docker_or_skip("upgrade_asking_for_more") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let before = dev.status("calculator")["status"]["serving_revision"].clone();
    let wider = calculator_yaml().replace(
        "  resources:\n",
        "  permissions:\n    network:\n      egress: [{host: \"*\", ports: [443]}]\n  resources:\n",
    );
    let file = write_manifest(dev.dir(), "calculator-wider.yaml", &wider);
    let out = dev.berth(&["install", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+ network egress *:443"),
        "permission diff shown: {text}"
    );
    assert!(text.contains("AwaitingApproval"), "{text}");
    assert!(text.contains("keeps serving"), "{text}");
    let status = dev.status("calculator");
    assert_eq!(status["status"]["serving_revision"], before);
    dev.ok(&[
        "invoke",
        "calculator",
        "evaluate",
        r#"{"expression":"6*7"}"#,
    ]);
    let out = dev.ok(&["grant", "calculator"]);
    assert!(out.contains("Ready"), "{out}");
    let after = dev.status("calculator")["status"]["serving_revision"].clone();
    assert_ne!(after, before);
    // The old revision drains, then goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.plugin_containers("calculator").len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the old revision was not removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hot_reload_under_load_fails_no_request_and_a_bad_revision_rolls_back() {
    if !docker_or_skip("hot_reload_under_load") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let url = dev.gateway_url().unwrap();
    let token = dev.token();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (url, token, stop, ok, failures) = (
                url.clone(),
                token.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (code, body) = post(
                        &url,
                        "/v1/plugins/calculator/invoke/evaluate",
                        &token,
                        r#"{"expression":"2*(3+4)"}"#,
                    );
                    if code == 200 && body.contains("14") {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.lock().unwrap().push(format!("{code} {body}"));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = dev.status("calculator")["status"]["serving_revision"].clone();
    let changed = calculator_yaml().replace(
        "description: Safe arithmetic expression evaluator",
        "description: Safe arithmetic expression evaluator (reloaded)",
    );
    let file = write_manifest(dev.dir(), "calculator-2.yaml", &changed);
    let out = dev.ok(&["install", file.to_str().unwrap()]);
    assert!(out.contains("Ready"), "{out}");
    let after = dev.status("calculator")["status"]["serving_revision"].clone();
    assert_ne!(before, after);
    // Past the drain of the old revision.
    std::thread::sleep(Duration::from_secs(3));

    // A revision that fails readiness (its image reports another version) rolls back.
    let wrong = changed.replace("version: 0.1.0", "version: 0.2.0");
    let file = write_manifest(dev.dir(), "calculator-3.yaml", &wrong);
    let out = dev.berth(&["install", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Degraded"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let served = ok.load(Ordering::Relaxed);
    eprintln!(
        "hot reload under load: {served} requests served, {} failed",
        failures.len()
    );
    assert!(served > 50, "{served}");
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
    let status = dev.status("calculator");
    assert_eq!(status["status"]["serving_revision"], after);
    let revisions = status["revisions"].as_array().unwrap();
    assert_eq!(revisions[0]["state"], "Failed", "{status}");
    let audit = dev.ok(&["audit", "--plugin", "calculator", "--output", "json"]);
    assert!(audit.contains("rolled-back"), "{audit}");
    assert!(audit.contains("\"updated\""), "{audit}");
}

#[test]
fn a_restarted_supervisor_adopts_running_containers() {
    if !docker_or_skip("a_restarted_supervisor_adopts_running_containers") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml", "examples/text-processor.yaml"]);
    let before = (
        dev.plugin_containers("calculator"),
        dev.plugin_containers("text-processor"),
    );
    assert_eq!(before.0.len(), 1);
    let url = dev.gateway_url().unwrap();
    dev.kill();
    dev.up(&[]);
    let after = (
        dev.plugin_containers("calculator"),
        dev.plugin_containers("text-processor"),
    );
    assert_eq!(before, after, "same containers, no duplicates");
    assert_eq!(
        dev.gateway_url().unwrap(),
        url,
        "the gateway was adopted too"
    );
    assert!(dev.log_text().contains("adopted"), "{}", dev.log_text());
    dev.ok(&[
        "invoke",
        "calculator",
        "evaluate",
        r#"{"expression":"1+2"}"#,
    ]);
    assert_eq!(dev.phase("text-processor"), "Ready");
}

#[test]
fn dependency_cycle_is_refused_before_anything_starts() {
    if !docker_or_skip("dependency_cycle_is_refused_before_anything_starts") {
        return;
    }
    let dev = Dev::new();
    let base = calculator_yaml();
    let a = base.replace("name: calculator", "name: cycle-a").replace(
        "  resources:\n",
        "  dependsOn: [{name: cycle-b}]\n  resources:\n",
    );
    let b = base.replace("name: calculator", "name: cycle-b").replace(
        "  resources:\n",
        "  dependsOn: [{name: cycle-a}]\n  resources:\n",
    );
    let folder = dev.dir().join("cycle");
    std::fs::create_dir(&folder).unwrap();
    write_manifest(&folder, "a.yaml", &a);
    write_manifest(&folder, "b.yaml", &b);
    let out = dev.berth(&["dev", "up", folder.to_str().unwrap(), "--port", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cycle"), "{err}");
    assert!(err.contains("a.yaml") || err.contains("b.yaml"), "{err}");
    assert!(dev.leftovers().is_empty());
}

#[test]
fn dependencies_start_first() {
    if !docker_or_skip("dependencies_start_first") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&[
        "examples/http-fetch.yaml",
        "examples/text-processor.yaml",
        "--auto-approve",
        "moderate",
    ]);
    let tp = dev.status("text-processor");
    let hf = dev.status("http-fetch");
    assert_eq!(hf["status"]["phase"], "Ready", "{hf}");
    let ready_tp = tp["revisions"][0]["ready_at"].as_str().unwrap().to_owned();
    let created_hf = hf["revisions"][0]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ready_tp <= created_hf, "{ready_tp} vs {created_hf}");
}

/// Addresses of this host a plugin might try: every IPv4 address of the host's interfaces
/// (`hostname -I`) and every Docker network's gateway.
fn host_addresses() -> Vec<String> {
    let mut out: Vec<String> = Command::new("hostname")
        .arg("-I")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter(|a| a.contains('.'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let nets = Command::new("docker")
        .args(["network", "ls", "-q"])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&nets.stdout).lines() {
        let gw = Command::new("docker")
            .args([
                "network",
                "inspect",
                id,
                "-f",
                "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            ])
            .output()
            .unwrap();
        out.extend(
            String::from_utf8_lossy(&gw.stdout)
                .split_whitespace()
                .filter(|a| a.contains('.'))
                .map(String::from),
        );
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn a_plugin_reaches_other_plugins_only_through_the_gateway_and_never_the_host() {
    if !docker_or_skip("a_plugin_reaches_other_plugins_only_through_the_gateway") {
        return;
    }
    images();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut dev = Dev::new();
    dev.up(&[
        "examples/calculator.yaml",
        "examples/text-processor.yaml",
        "test-images/probe/berth.yaml",
    ]);
    assert_eq!(dev.phase("probe"), "Ready", "{}", dev.log_text());
    let call = |plugin: &str, capability: &str, input: &str| -> Value {
        let body =
            format!(r#"{{"plugin":"{plugin}","capability":"{capability}","input":{input}}}"#);
        serde_json::from_str(&dev.ok(&["invoke", "probe", "call", &body])).unwrap()
    };
    // Granted in its manifest: calculator.evaluate, through the gateway with its token.
    let granted = call("calculator", "evaluate", r#"{"expression":"2*(3+4)"}"#);
    assert_eq!(granted["status"], 200, "{granted}");
    assert!(
        granted["body"].as_str().unwrap().contains("14"),
        "{granted}"
    );
    // Not granted: text-processor.
    let denied = call("text-processor", "stats", r#"{"text":"a b"}"#);
    assert_eq!(denied["status"], 403, "{denied}");

    let connect = |host: &str, port: u16| -> Value {
        let body = format!(r#"{{"host":"{host}","port":{port},"timeoutMs":500}}"#);
        serde_json::from_str(&dev.ok(&["invoke", "probe", "connect", &body])).unwrap()
    };
    // Another plugin's address, directly.
    let calc = dev.status("calculator");
    let endpoint = calc["revisions"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = endpoint.trim_start_matches("http://");
    let (ip, p) = addr.rsplit_once(':').unwrap();
    let direct = connect(ip, p.parse().unwrap());
    assert_eq!(direct["connected"], false, "reached {addr}: {direct}");
    // The host's wildcard listener, through every host address.
    let addresses = host_addresses();
    assert!(!addresses.is_empty());
    for host in &addresses {
        let probe = connect(host, port);
        assert_eq!(
            probe["connected"], false,
            "the plugin reached the host's 0.0.0.0:{port} through {host}: {probe}"
        );
    }
    // The denied inter-plugin call is a security event in the audit log.
    let audit = dev.ok(&["audit", "--type", "security", "--output", "json"]);
    assert!(
        audit.contains("plugin:probe") && audit.contains("text-processor"),
        "{audit}"
    );
    drop(listener);

    // Past its memory limit the plugin is OOM-killed, reported, and restarted.
    let oom = dev.berth(&["invoke", "probe", "allocate", r#"{"mebibytes":64}"#]);
    let answer = format!(
        "{}{}",
        String::from_utf8_lossy(&oom.stdout),
        String::from_utf8_lossy(&oom.stderr)
    );
    assert_eq!(oom.status.code(), Some(1), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = dev.status("probe");
        if s["status"]["restarts"] == 1 && s["status"]["phase"] == "Ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted: {s}\n{answer}\n{}",
            dev.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let audit = dev.ok(&[
        "audit", "--plugin", "probe", "--type", "security", "--output", "json",
    ]);
    assert!(audit.contains("oom-killed"), "{audit}");
    let metrics = get(&dev.gateway_url().unwrap(), "/metrics");
    assert!(
        metrics.contains(r#"berth_plugin_restarts_total{plugin="probe",reason="oom"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"berth_plugin_cold_start_seconds_count{plugin="probe"}"#));
    dev.ok(&["invoke", "probe", "write", r#"{"path":"/tmp/x"}"#]);
}

#[test]
fn granted_egress_goes_through_the_gateway_proxy_and_internal_targets_are_refused() {
    if !docker_or_skip("granted_egress_goes_through_the_gateway_proxy") {
        return;
    }
    images();
    // Declared first, so it goes after `dev down` has removed the gateway attached to it.
    let upstream = StandIns::start("dev-up");
    let mut dev = Dev::new();
    dev.up(&["--egress-allow-private", "examples/"]);
    // The upstream is reachable from the gateway only: the operator connects it on purpose.
    upstream.connect(&dev.gateway_container(), &[]);
    let out = dev.ok(&["grant", "http-fetch", "--reason", "test"]);
    assert!(out.contains("Ready"), "{out}");

    let fetch = |url: &str| -> Value {
        let input = format!(r#"{{"url":"{url}"}}"#);
        let answer = dev.ok(&["invoke", "http-fetch", "fetch", &input]);
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    };
    // Granted (`*` on port 80), through HTTP_PROXY with the plugin's own credential.
    let fetched = fetch("http://upstream.test/healthz");
    assert_eq!(fetched["status"], 200, "{fetched}\n{}", dev.log_text());
    assert_eq!(fetched["body"], r#"{"status":"ok"}"#, "{fetched}");

    // Never granted, whatever the grant says: the gateway's own loopback, metadata, and
    // another plugin's network (private, which `--egress-allow-private` alone would open).
    let calc = dev.status("calculator");
    let calc_endpoint = calc["revisions"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    for (url, why) in [
        ("http://127.0.0.1:7070/metrics".to_owned(), "loopback"),
        ("http://169.254.169.254/".to_owned(), "cloud metadata"),
        (
            format!("{calc_endpoint}/healthz"),
            "a plugin network the gateway is attached to",
        ),
    ] {
        let refused = fetch(&url);
        assert_eq!(refused["status"], 403, "{url}: {refused}");
        let body = refused["body"].as_str().unwrap();
        assert!(
            body.contains("egress_denied") && body.contains(why),
            "{url}: {body}"
        );
    }

    let audit = dev.ok(&[
        "audit",
        "--plugin",
        "http-fetch",
        "--type",
        "security",
        "--output",
        "json",
    ]);
    for target in ["127.0.0.1", "169.254.169.254"] {
        assert!(audit.contains(target), "{target} not audited: {audit}");
    }
    assert!(audit.contains("denied"), "{audit}");
}

fn get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn watch_rebuilds_and_reloads_a_changed_plugin() {
    if !docker_or_skip("watch_rebuilds_and_reloads_a_changed_plugin") {
        return;
    }
    images();
    let mut dev = Dev::new();
    let dir = dev.dir().join("watched");
    dev.ok(&["new", "watched", "--dir", dir.to_str().unwrap()]);
    let built = Command::new(BERTH)
        .args(["build", dir.to_str().unwrap()])
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let manifest = dir.join("berth.yaml");
    dev.up(&[manifest.to_str().unwrap(), "--watch"]);
    let first = dev.status("watched")["status"]["serving_revision"].clone();
    assert!(first.is_u64(), "{first}");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let changed = text.replacen("description: ", "description: Watched, ", 1);
    assert_ne!(text, changed);
    std::fs::write(&manifest, changed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = dev.status("watched");
        if s["status"]["serving_revision"] != first && s["status"]["phase"] == "Ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reloaded: {s}\n{}",
            dev.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(dev.log_text().contains("rebuilding"), "{}", dev.log_text());
    // The image was rebuilt under the same tag; leave no test image behind.
    let _ = Command::new("docker")
        .args(["rmi", "-f", "berth/watched:0.1.0"])
        .output();
}

#[test]
fn killed_or_removed_gateway_container_comes_back_without_a_manual_step() {
    if !docker_or_skip("killed_or_removed_gateway_container_comes_back") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let gateway = dev.gateway_container();
    let invoke = |dev: &Dev| {
        dev.berth(&[
            "invoke",
            "calculator",
            "evaluate",
            r#"{"expression":"2+3"}"#,
        ])
        .status
        .success()
    };
    assert!(invoke(&dev), "{}", dev.log_text());
    let mut recoveries = Vec::new();
    // Five `docker kill`s, each after the gateway served long enough to start a new series
    // of failures; then one `docker rm -f`.
    for round in 0..6 {
        let how: &[&str] = if round < 5 {
            &["kill", &gateway]
        } else {
            &["rm", "-f", &gateway]
        };
        support::dev::docker(how);
        let killed = Instant::now();
        // `berth list` does not say Ready while the gateway is down.
        loop {
            let row = dev.plugin("calculator");
            if row["phase"] != "Ready" {
                assert_eq!(row["phase"], "Degraded", "{row}");
                let reason = row["reason"].as_str().unwrap_or_default();
                assert!(reason.contains("gateway down"), "{row}");
                let text = dev.ok(&["list"]);
                assert!(text.contains("gateway: DOWN"), "{text}");
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(3),
                "still Ready after the gateway was stopped: {row}\n{}",
                dev.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        while !invoke(&dev) {
            assert!(
                killed.elapsed() < Duration::from_secs(20),
                "round {round}: the gateway did not come back\n{}",
                dev.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = killed.elapsed();
        eprintln!("round {round} ({}): serving again after {took:?}", how[0]);
        if round < 5 {
            recoveries.push(took);
        }
        assert_eq!(dev.phase("calculator"), "Ready", "{}", dev.log_text());
        if round < 5 {
            std::thread::sleep(Duration::from_secs(11));
        }
    }
    recoveries.sort();
    eprintln!(
        "gateway killed: recovered in {:?} (p50 {:?})",
        recoveries, recoveries[2]
    );
    let audit = dev.ok(&["audit", "--output", "json"]);
    for action in ["gateway-stopped", "gateway-restarted", "gateway-recreated"] {
        assert!(
            audit.contains(&format!("\"{action}\"")),
            "{action}: {audit}"
        );
    }
    assert!(audit.contains("downtimeMs"), "{audit}");
}

#[test]
fn dev_down_then_up_brings_back_the_same_revision_and_commands_wait_for_the_fresh_state() {
    if !docker_or_skip(
        "dev_down_then_up_brings_back_the_same_revision_and_commands_wait_for_the_fresh_state",
    ) {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let first = dev.status("calculator");
    let revision = first["status"]["serving_revision"].clone();
    let revisions = first["revisions"].as_array().unwrap().len();
    dev.kill();
    dev.ok(&["dev", "down"]);
    // What `dev down` removed is not shown as running.
    let down = dev.status("calculator");
    assert_eq!(down["status"]["phase"], "Stopped", "{down}");
    assert_eq!(down["revisions"][0]["state"], "Stopped", "{down}");

    for cycle in 1..=2 {
        // `dev up` again, and at once `berth install` of the unchanged manifest, as a user
        // in a second terminal would.
        let log = std::fs::File::create(dev.dir().join(format!("dev-up-{cycle}.log"))).unwrap();
        let mut up = Command::new(BERTH)
            .args(["dev", "up", "--port", "0", "--no-build"])
            .env("BERTH_STATE_DIR", dev.dir())
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(repo())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = dev.plugin("calculator");
            if p["phase"] != "Stopped" {
                // Starting is shown as such, not as stopped.
                assert!(
                    matches!(p["phase"].as_str(), Some("Pending" | "Deploying" | "Ready")),
                    "cycle {cycle}: {p}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "cycle {cycle}: still {p}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = dev.berth(&["install", "examples/calculator.yaml"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains("unchanged")
                && text.contains("calculator: Ready"),
            "cycle {cycle}: the command waits for the state it asked for: {}",
            support::describe_output(&out)
        );
        let status = dev.status("calculator");
        assert_eq!(
            status["status"]["phase"], "Ready",
            "cycle {cycle}: {status}"
        );
        assert_eq!(
            status["status"]["serving_revision"], revision,
            "cycle {cycle}: the same revision: {status}"
        );
        assert_eq!(
            status["revisions"].as_array().unwrap().len(),
            revisions,
            "cycle {cycle}: no identical revision minted: {status}"
        );
        dev.invoke(
            "calculator",
            "evaluate",
            &serde_json::json!({"expression": "2*21"}),
        );
        dev.ok(&["dev", "down"]);
        let _ = up.wait();
        assert!(dev.leftovers().is_empty(), "{:?}", dev.leftovers());
    }
}

#[test]
fn on_linux_the_cli_reaches_the_gateway_at_its_own_address_and_127_0_0_1_still_works() {
    if !docker_or_skip("on_linux_the_cli_reaches_the_gateway_at_its_own_address") {
        return;
    }
    images();
    let mut dev = Dev::new();
    dev.up(&["examples/calculator.yaml"]);
    let store = berth_store::Store::open(dev.dir().join("berth.db")).unwrap();
    let setting = |key: &str| store.setting(key).unwrap();
    let published = setting(berth_docker::supervisor::GATEWAY_URL_SETTING).unwrap();
    let direct = setting(berth_docker::supervisor::GATEWAY_DIRECT_URL_SETTING)
        .expect("a Linux host with a local engine reaches container addresses");
    // The recorded address is the gateway container's own one on its edge network.
    let gateway = dev.gateway_container();
    let ip = support::dev::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &gateway,
    ]);
    let host = direct
        .strip_prefix("http://")
        .and_then(|a| a.rsplit_once(':'))
        .map(|(h, _)| h.to_owned())
        .unwrap();
    assert!(ip.split_whitespace().any(|a| a == host), "{direct} vs {ip}");
    assert!(!host.starts_with("127."), "{direct}");
    let listed = dev.ok(&["list"]);
    assert!(
        listed.contains(&direct) && listed.contains(&published),
        "{listed}"
    );

    let invoke = |dev: &Dev| {
        let out = dev.berth(&[
            "invoke",
            "calculator",
            "evaluate",
            r#"{"expression":"2+3"}"#,
        ]);
        (out.status.success(), support::describe_output(&out))
    };
    // With the published port out of the picture the CLI still gets its answer: it went
    // to the container address.
    store
        .set_setting(
            berth_docker::supervisor::GATEWAY_URL_SETTING,
            "http://127.0.0.1:1",
        )
        .unwrap();
    let (ok, out) = invoke(&dev);
    assert!(ok, "through {direct}: {out}");
    // With the container address unusable, 127.0.0.1 serves.
    store
        .set_setting(berth_docker::supervisor::GATEWAY_URL_SETTING, &published)
        .unwrap();
    store
        .set_setting(
            berth_docker::supervisor::GATEWAY_DIRECT_URL_SETTING,
            "http://127.0.0.1:1",
        )
        .unwrap();
    let (ok, out) = invoke(&dev);
    assert!(ok, "through {published}: {out}");
    store
        .set_setting(
            berth_docker::supervisor::GATEWAY_DIRECT_URL_SETTING,
            &direct,
        )
        .unwrap();
}
