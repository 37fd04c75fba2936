//! `berth gateway`, `berth gateway token` and `berth audit` through the real binary: a
//! plugin on a loopback socket, a gateway process, SIGTERM, then the audit log it left.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

use support::gateway::{GatewayProcess, spawn_plugin, start_gateway};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env_remove("BERTH_STORE")
        .output()
        .expect("berth runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn start_calc_gateway(dir: &Path, plugin_port: u16, token_line: &str) -> (GatewayProcess, u16) {
    let manifest = dir.join("calc.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: calc}\nspec:\n  image: localhost/berth/calc:0.1.0\n  version: 0.1.0\n  capabilities:\n    - {name: ok, input: {type: object, required: [x]}}\n    - {name: fail}\n",
    )
    .unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("# test tokens\n{token_line}\n")).unwrap();
    start_gateway(|gateway| {
        gateway
            .arg("--plugins")
            .arg(&manifest)
            .args([
                "--endpoint",
                &format!("calc=http://127.0.0.1:{plugin_port}"),
            ])
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--store")
            .arg(dir.join("berth.db"))
            .args(["--audit-sink", "sqlite,stdout"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    })
}

#[test]
fn gateway_serves_plugins_and_leaves_a_verifiable_audit_log() {
    let dir = temp_dir("gateway");
    let minted = berth(&["gateway", "token", "--name", "ci", "--scope", "invoke:*"]);
    assert!(minted.status.success(), "{minted:?}");
    let line = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8(minted.stderr).unwrap();
    let token = stderr.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(
        line.starts_with("ci sha256:") && line.ends_with(" invoke:*"),
        "{line}"
    );
    assert!(
        !line.contains(&token),
        "the tokens file holds a digest, not the token"
    );

    let plugin_port = spawn_plugin();
    let (mut gateway, port) = start_calc_gateway(&dir, plugin_port, &line);
    assert_eq!(http(port, "GET", "/readyz", None, "").0, 200);
    let (status, body) = http(
        port,
        "POST",
        "/v1/plugins/calc/invoke/ok",
        Some(&token),
        r#"{"x":1}"#,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let (status, body) = http(
        port,
        "POST",
        "/v1/plugins/calc/invoke/ok",
        Some(&token),
        "{}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("schema_violation"), "{body}");
    assert_eq!(
        http(
            port,
            "POST",
            "/v1/plugins/calc/invoke/fail",
            Some(&token),
            "{}"
        )
        .0,
        502
    );
    assert_eq!(
        http(
            port,
            "POST",
            "/v1/plugins/calc/invoke/ok",
            Some("nope"),
            "{}"
        )
        .0,
        401
    );
    let (_, metrics) = http(port, "GET", "/metrics", None, "");
    assert!(
        metrics.contains(
            "berth_invocations_total{capability=\"ok\",outcome=\"success\",plugin=\"calc\"} 1"
        ),
        "{metrics}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exited = gateway.0.wait().unwrap();
    assert!(exited.success(), "graceful shutdown exits 0: {exited:?}");
    let mut stdout = String::new();
    gateway
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout carries only JSON audit lines"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines.iter().all(|l| l["audit"]["hash"].as_str().is_some()));

    let store = dir.join("berth.db");
    let store = store.to_str().unwrap();
    let listed = berth(&["audit", "--store", store, "--output", "json"]);
    assert!(listed.status.success(), "{listed:?}");
    let events: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    // Which of the first two lands first depends on the writer: it empties the security
    // lane before the others, so on a busy machine the denial can precede the error.
    let mut kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            ("invocation", "plugin_error"),
            ("invocation-summary", "success"),
            ("security", "denied"),
        ]
    );
    let security = berth(&[
        "audit", "--store", store, "--type", "security", "--since", "1h",
    ]);
    let table = String::from_utf8(security.stdout).unwrap();
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("denied") && table.contains("anonymous"),
        "{table}"
    );

    let verified = berth(&["audit", "verify", "--store", store]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(String::from_utf8_lossy(&verified.stdout).contains("intact: 3 record(s)"));

    let conn = rusqlite::Connection::open(dir.join("berth.db")).unwrap();
    conn.execute(
        "UPDATE audit_events SET outcome = 'allowed' WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let tampered = berth(&["audit", "verify", "--store", store]);
    assert_eq!(tampered.status.code(), Some(1), "{tampered:?}");
    let said = String::from_utf8_lossy(&tampered.stdout);
    assert!(
        said.contains("record #2") && said.contains("altered"),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audit_on_a_missing_store_says_where_it_looked() {
    let out = berth(&["audit", "verify", "--store", "/nonexistent/berth.db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at /nonexistent/berth.db"));
}

#[test]
fn kubernetes_backend_without_a_cluster_exits_2_saying_so() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "gateway",
            "--backend",
            "kubernetes",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("berth runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Kubernetes API"),
        "{stderr}"
    );
}
