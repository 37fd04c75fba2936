//! Egress in local mode, end to end against the real Docker Engine: the parity table
//! (`tests/fixtures/egress-parity.yaml`) run from inside a plugin container through its own
//! `HTTP_PROXY`/`HTTPS_PROXY`, a direct connection that bypasses the proxy, and a plugin
//! that is refused until it is granted.
//!
//! Stand-ins for services outside Berth run as plain containers on a network of their own
//! that the gateway is connected to (as an operator would): `berth/hello` on port 80 under
//! the names `upstream.test`, `api.wild.test` and `other.test`, and `probe --tls-serve` on
//! port 443 under `tls.test` with a self-signed certificate the test reads from its output.
//!
//! The table's symbolic names map here to: `upstream` → `upstream.test`; `tls-upstream` →
//! `tls.test` (its address as a /32 for the CIDR rule); `loopback`, `metadata`, `host` →
//! `loopback.test`, `metadata.test`, `host.test`, given to the gateway with `dev up
//! --add-host` (127.0.0.1, 169.254.169.254, `host-gateway`); `gateway` → `gateway.test`, an
//! alias of the gateway on the stand-ins' network; `other-plugin` → the Docker name of the
//! text-processor plugin's container, which the gateway resolves on that plugin's network.
//!
//! Tests that need Docker fail when `CI` is set and the engine is unreachable; without `CI`
//! they print why they skip.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

mod support;

use support::dev::{Dev, StandIns, build, build_gateway_image, docker_or_skip};
use support::{describe_output, repo};

/// Builds the images these tests use once per run of this file; `berth build` skips the
/// ones that are up to date, so other test binaries' builds are reused.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        for dir in [
            "plugin-images/hello",
            "plugin-images/text-processor",
            "plugin-images/http-fetch",
            "test-images/probe",
        ] {
            build(&["build", dir]);
        }
        build_gateway_image();
    });
}

/// The parity table, as written in `tests/fixtures/egress-parity.yaml`.
struct Table {
    grant: Vec<Value>,
    cases: Vec<Case>,
}

struct Case {
    name: String,
    via: String,
    target: String,
    when: String,
    expect: Expect,
}

#[derive(Debug)]
enum Expect {
    Allowed,
    Denied(String),
    Closed,
}

fn parity_table() -> Table {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/egress-parity.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let grant = doc["grant"].as_array().unwrap().clone();
    let cases = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let expect = match &c["expect"] {
                Value::String(s) if s == "allowed" => Expect::Allowed,
                Value::String(s) if s == "closed" => Expect::Closed,
                Value::Object(o) if o.contains_key("denied") => {
                    Expect::Denied(o["denied"].as_str().unwrap().to_owned())
                }
                other => panic!("unknown expect: {other}"),
            };
            let when = c["when"].as_str().unwrap_or("granted").to_owned();
            // A new kind of case must get a harness here, not be skipped.
            assert!(
                ["granted", "expired", "revoked-while-open"].contains(&when.as_str()),
                "unknown when: {when}"
            );
            Case {
                name: c["name"].as_str().unwrap().to_owned(),
                via: c["via"].as_str().unwrap().to_owned(),
                target: c["target"].as_str().unwrap().to_owned(),
                when,
                expect,
            }
        })
        .collect();
    Table { grant, cases }
}

/// What the table's symbols are in this harness.
struct World {
    /// Symbolic name → the host name the plugin asks the proxy for.
    names: BTreeMap<&'static str, String>,
    upstream_ip: String,
    tls_ip: String,
    certificate: String,
}

impl World {
    /// A grant rule's host: `X.test` for a symbolic `X` becomes what `X` is here.
    fn grant_host(&self, host: &str) -> String {
        host.strip_suffix(".test")
            .and_then(|symbol| self.names.get(symbol))
            .cloned()
            .unwrap_or_else(|| host.to_owned())
    }

    /// `NAME:PORT` of a case: the host name (or address) and port.
    fn target(&self, target: &str) -> (String, u16) {
        let (name, port) = target.rsplit_once(':').unwrap();
        let host = match name {
            "{upstream-ip}" => self.upstream_ip.clone(),
            symbol => self
                .names
                .get(symbol)
                .cloned()
                .unwrap_or_else(|| symbol.to_owned()),
        };
        (host, port.parse().unwrap())
    }

    /// `permissions.network.egress` of the table's grant, as YAML lines.
    fn egress_yaml(&self, grant: &[Value]) -> String {
        let mut out = String::from("  permissions:\n    network:\n      egress:\n");
        for rule in grant {
            let ports = rule["ports"].to_string();
            if let Some(host) = rule["host"].as_str() {
                out.push_str(&format!(
                    "        - {{host: \"{}\", ports: {ports}}}\n",
                    self.grant_host(host)
                ));
            } else {
                let cidr = rule["cidr"]
                    .as_str()
                    .unwrap()
                    .replace("{tls-upstream-cidr}", &format!("{}/32", self.tls_ip));
                out.push_str(&format!("        - {{cidr: \"{cidr}\", ports: {ports}}}\n"));
            }
        }
        out
    }
}

/// The probe's manifest with exactly `egress` as its permissions and room for a held tunnel.
fn parity_manifest(egress: &str) -> String {
    let probe = std::fs::read_to_string(repo().join("test-images/probe/berth.yaml")).unwrap();
    let (head, tail) = probe.split_once("  permissions:\n").unwrap();
    let (_, resources) = tail.split_once("  resources:\n").unwrap();
    format!("{head}{egress}  resources:\n    timeout: 30s\n{resources}")
}

/// Runs `case` from inside the probe container; `Ok` when the answer is what the table
/// expects, otherwise what came instead.
fn run_case(dev: &Dev, world: &World, case: &Case) -> Result<(), String> {
    let (host, port) = world.target(&case.target);
    let answer = match case.via.as_str() {
        "http" => dev.invoke(
            "probe",
            "fetch",
            &json!({"url": format!("http://{host}:{port}/healthz")}),
        ),
        "connect" => {
            let mut input = json!({"host": host, "port": port});
            if host == world.names["tls-upstream"] {
                input["certificate"] = json!(world.certificate);
                input["path"] = json!("/healthz");
            }
            dev.invoke("probe", "tunnel", &input)
        }
        other => panic!("{}: unknown via {other}", case.name),
    };
    let fail = |why: &str| Err(format!("{why}: {answer}"));
    match (&case.expect, case.via.as_str()) {
        (Expect::Allowed, "http") => {
            if answer["status"] != 200 || answer["body"] != r#"{"status":"ok"}"# {
                return fail("not the upstream's answer");
            }
        }
        (Expect::Allowed, _) => {
            if answer["status"] != 200 || answer["handshake"] != true {
                return fail("no tunnel with a TLS handshake");
            }
            if !answer["answer"]
                .as_str()
                .unwrap_or("")
                .contains(r#""tls":true"#)
            {
                return fail("not the TLS stand-in's answer");
            }
        }
        (Expect::Denied(rule), _) => {
            if answer["status"] != 403 {
                return fail("not a 403");
            }
            let body: Value =
                serde_json::from_str(answer["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
            if body["error"]["code"] != "egress_denied" {
                return fail("not egress_denied");
            }
            let found = body["error"]["details"]["rule"].as_str().unwrap_or("");
            if !found.contains(rule.as_str()) {
                return fail(&format!("the rule does not contain {rule:?}"));
            }
        }
        (Expect::Closed, _) => panic!("{}: `closed` needs `when`", case.name),
    }
    Ok(())
}

/// `berth_egress_requests_total` of `plugin` with `decision="allowed"`, summed.
fn allowed_requests(dev: &Dev, plugin: &str) -> u64 {
    let addr = dev
        .gateway_url()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let (_, text) = get(&addr, "/metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("berth_egress_requests_total{")
                && l.contains(&format!("plugin=\"{plugin}\""))
                && l.contains("decision=\"allowed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Waits until `check` holds, for at most `limit`; the last value seen either way.
fn wait_for<T>(limit: Duration, mut read: impl FnMut() -> T, check: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = read();
        if check(&value) || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_egress_parity_table_holds_and_a_plugin_has_no_way_out_but_its_proxy() {
    if !docker_or_skip("the_egress_parity_table_holds_and_a_plugin_has_no_way_out_but_its_proxy") {
        return;
    }
    images();
    let started = Instant::now();
    let table = parity_table();
    // Declared first, so they go after `dev down` has removed the gateway attached to them.
    let mut stand_ins = StandIns::start("parity");
    let certificate = stand_ins.start_tls();
    let mut dev = Dev::new();
    dev.up(&[
        "--egress-allow-private",
        "--add-host",
        "loopback.test:127.0.0.1",
        "--add-host",
        "metadata.test:169.254.169.254",
        "--add-host",
        "host.test:host-gateway",
        "examples/text-processor.yaml",
    ]);
    stand_ins.connect(&dev.gateway_container(), &["gateway.test"]);
    let world = World {
        names: BTreeMap::from([
            ("upstream", "upstream.test".to_owned()),
            ("tls-upstream", "tls.test".to_owned()),
            ("loopback", "loopback.test".to_owned()),
            ("metadata", "metadata.test".to_owned()),
            ("host", "host.test".to_owned()),
            ("gateway", "gateway.test".to_owned()),
            ("other-plugin", dev.container_of("text-processor")),
        ]),
        upstream_ip: stand_ins.address("upstream"),
        tls_ip: stand_ins.address("tls"),
        certificate,
    };

    // The plugin requests exactly the table's grant, and waits for it.
    let manifest = parity_manifest(&world.egress_yaml(&table.grant));
    let file = dev.dir().join("probe-parity.yaml");
    std::fs::write(&file, &manifest).unwrap();
    let out = dev.berth(&["install", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AwaitingApproval"),
        "{}",
        describe_output(&out)
    );
    let out = dev.ok(&["grant", "probe", "--reason", "egress parity"]);
    assert!(out.contains("Ready"), "{out}\n{manifest}");

    let mut failures = Vec::new();
    for case in table.cases.iter().filter(|c| c.when == "granted") {
        if let Err(why) = run_case(&dev, &world, case) {
            failures.push(format!(
                "{} ({} {}): {why}",
                case.name, case.via, case.target
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "parity cases failed:\n{}\n--- dev up log ---\n{}",
        failures.join("\n"),
        dev.log_text()
    );

    // Every refusal is a security event naming the target.
    let audit = wait_for(
        Duration::from_secs(10),
        || dev.security_audit("probe"),
        |a| a.contains("other.test") && a.contains("metadata.test"),
    );
    for target in ["other.test", "loopback.test", "metadata.test", "host.test"] {
        assert!(audit.contains(target), "{target} not audited: {audit}");
    }

    // Without the proxy there is no way out: the upstream's address, directly, while the
    // proxy reaches it (the allowed cases above).
    for host in [world.upstream_ip.as_str(), "upstream.test"] {
        let direct = dev.invoke(
            "probe",
            "connect",
            &json!({"host": host, "port": 80, "timeoutMs": 1000}),
        );
        assert_eq!(direct["connected"], false, "{host}: {direct}");
    }
    let control = dev.invoke(
        "probe",
        "fetch",
        &json!({"url": "http://upstream.test/healthz"}),
    );
    assert_eq!(control["status"], 200, "positive control: {control}");

    for case in table
        .cases
        .iter()
        .filter(|c| c.when == "revoked-while-open")
    {
        revoked_while_open(&dev, &world, case);
    }
    for case in table.cases.iter().filter(|c| c.when == "expired") {
        expired(&dev, &world, case);
    }
    eprintln!(
        "egress parity table: {} cases in {:.1} s",
        table.cases.len(),
        started.elapsed().as_secs_f64()
    );
}

/// `revoked-while-open`: a tunnel held by an invocation while `berth revoke` runs. The
/// proxy closes it (and audits `closed`); revoking also stops the plugin, which here
/// answers its invocation before it is stopped.
fn revoked_while_open(dev: &Dev, world: &World, case: &Case) {
    assert!(matches!(case.expect, Expect::Closed), "{}", case.name);
    let (host, port) = world.target(&case.target);
    const HOLD_MS: u64 = 20_000;
    let input = json!({
        "host": host, "port": port, "certificate": world.certificate,
        "path": "/healthz", "holdMs": HOLD_MS,
    });
    let before = allowed_requests(dev, "probe");
    let state = dev.dir().to_path_buf();
    let holder = std::thread::spawn(move || {
        let since = Instant::now();
        let out = Command::new(BERTH)
            .args(["invoke", "probe", "tunnel", &input.to_string()])
            .env("BERTH_STATE_DIR", &state)
            .output()
            .unwrap();
        (out, since.elapsed())
    });
    let opened = wait_for(
        Duration::from_secs(10),
        || allowed_requests(dev, "probe"),
        |n| *n > before,
    );
    assert!(opened > before, "{}: the tunnel was not opened", case.name);
    // The handshake and the GET come right after the proxy connects; leave them time on a
    // busy machine (the hold is much longer).
    std::thread::sleep(Duration::from_secs(2));
    let out = dev.ok(&["revoke", "probe"]);
    assert!(out.contains("AwaitingApproval"), "{out}");
    let (answer, took) = holder.join().unwrap();
    assert!(
        took < Duration::from_millis(HOLD_MS),
        "{}: the invocation lasted the whole hold: {}",
        case.name,
        describe_output(&answer)
    );
    let text = String::from_utf8_lossy(&answer.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(
        answer.status.success() && report["handshake"] == true,
        "{}: {}",
        case.name,
        describe_output(&answer)
    );
    let closed = report["closedAfterMs"].as_u64();
    assert!(
        closed.is_some_and(|ms| ms < HOLD_MS),
        "{}: the tunnel was not closed by the proxy: {report}",
        case.name
    );
    let audit = wait_for(
        Duration::from_secs(10),
        || dev.security_audit("probe"),
        |a| a.contains("\"closed\""),
    );
    assert!(
        audit.contains("\"closed\"") && audit.contains(&format!("{host}:{port}")),
        "{}: no `closed` security event: {audit}",
        case.name
    );
    assert_eq!(dev.plugin("probe")["phase"], "AwaitingApproval");
}

/// `expired`: a grant with a short `--expires`. When it lapses, local mode stops the plugin
/// (it needs the grant to run) within the supervisor's periodic pass, so nothing of the
/// plugin is left to send the case's request: the user sees it awaiting approval with what
/// is not granted, and an invocation refused. The table's `denied` answer is what the
/// proxy gives a plugin that still runs; here the plugin's credential is gone with it.
fn expired(dev: &Dev, world: &World, case: &Case) {
    let out = dev.ok(&["grant", "probe", "--reason", "expiring", "--expires", "12s"]);
    assert!(out.contains("Ready"), "{out}");
    let granted_until = Instant::now() + Duration::from_secs(12);
    // While it holds, the case's target is reachable.
    let (host, port) = world.target(&case.target);
    let url = format!("http://{host}:{port}/healthz");
    let before = dev.invoke("probe", "fetch", &json!({"url": url}));
    assert_eq!(
        before["status"], 200,
        "{}: before it lapsed: {before}",
        case.name
    );
    std::thread::sleep(granted_until.saturating_duration_since(Instant::now()));
    // The supervisor notices within its periodic pass (10 s).
    let entry = wait_for(
        Duration::from_secs(20),
        || dev.plugin("probe"),
        |p| p["phase"] == "AwaitingApproval",
    );
    assert_eq!(entry["phase"], "AwaitingApproval", "{}: {entry}", case.name);
    eprintln!(
        "{}: the plugin stopped {:.1} s after its grant lapsed",
        case.name,
        Instant::now()
            .saturating_duration_since(granted_until)
            .as_secs_f64()
    );
    // The supervisor reads only unexpired grants, so the reason lists what is not granted
    // (the lapsed grant is not named).
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not granted"),
        "{}: the reason does not say what is not granted: {entry}",
        case.name
    );
    let after = dev.berth(&["invoke", "probe", "fetch", &json!({"url": url}).to_string()]);
    let said = describe_output(&after);
    assert_eq!(after.status.code(), Some(1), "{}: {said}", case.name);
    assert!(said.contains("AwaitingApproval"), "{}: {said}", case.name);
}

#[test]
fn http_fetch_is_refused_until_granted_then_fetches_through_the_proxy() {
    if !docker_or_skip("http_fetch_is_refused_until_granted") {
        return;
    }
    images();
    let stand_ins = StandIns::start("grant");
    let mut dev = Dev::new();
    dev.up(&[
        "--egress-allow-private",
        "examples/text-processor.yaml",
        "examples/http-fetch.yaml",
    ]);
    stand_ins.connect(&dev.gateway_container(), &[]);
    let input = json!({"url": "http://upstream.test/healthz"}).to_string();

    // Before the grant: refused, and the answer and the plugin's status say why.
    let entry = dev.plugin("http-fetch");
    assert_eq!(entry["phase"], "AwaitingApproval", "{entry}");
    let reason = entry.to_string();
    assert!(
        reason.contains("not granted") && reason.contains("network egress"),
        "the reason does not name the missing grant: {entry}"
    );
    let refused = dev.berth(&["invoke", "http-fetch", "fetch", &input]);
    let said = describe_output(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    for part in [
        "the gateway answered 403",
        "plugin_not_granted",
        "AwaitingApproval",
        "network egress *:80,443",
        "berth grant http-fetch",
    ] {
        assert!(said.contains(part), "{part:?} not in {said}");
    }

    // After: through HTTP_PROXY with its own credential.
    let out = dev.ok(&["grant", "http-fetch", "--reason", "test"]);
    assert!(out.contains("Ready"), "{out}");
    let fetched: Value =
        serde_json::from_str(&dev.ok(&["invoke", "http-fetch", "fetch", &input])).unwrap();
    assert_eq!(fetched["status"], 200, "{fetched}\n{}", dev.log_text());
    assert_eq!(fetched["body"], r#"{"status":"ok"}"#, "{fetched}");

    // The usage report: `*` on 80 and 443 was used for one destination, the call to
    // text-processor not at all; the narrowed grant names exactly what was used.
    let table = dev.ok(&["usage", "http-fetch"]);
    assert!(table.contains("upstream.test:80 (via *:80,443)"), "{table}");
    let yaml = dev.ok(&["usage", "http-fetch", "--output", "yaml"]);
    let grant: Value = serde_yaml::from_str(yaml.trim_start_matches("---\n"))
        .unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(grant["kind"], "PluginGrant", "{yaml}");
    assert_eq!(
        grant["spec"]["permissions"]["network"]["egress"],
        json!([{"host": "upstream.test", "ports": [80]}]),
        "{yaml}"
    );
    assert!(
        grant["spec"]["permissions"]["plugins"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{yaml}"
    );
}
