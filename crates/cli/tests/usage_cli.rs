//! `berth usage` through the real binary, no Docker: against a `berth gateway` process's
//! admin API, and against local mode's store, with the narrowed grant it prints going back
//! in through `berth grant NAME --from FILE`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_api::{Manifest, PluginGrant};
use berth_store::{Store, UsageRow};

mod support;

use support::gateway::{spawn_plugin, start_gateway};

/// An http-fetch-like plugin granted two hosts; only `api.example.com` gets used. Its secret
/// puts it above the auto-approved tier, so what it may reach is what its grants hold.
const FETCH: &str = "apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: fetch}
spec:
  image: localhost/berth/fetch:0.1.0
  version: 0.1.0
  capabilities:
    - {name: get}
  permissions:
    network:
      egress:
        - {host: api.example.com, ports: [443]}
        - {host: cdn.example.com, ports: [443]}
    secrets:
      - {name: fetch-api-key, env: API_KEY}
";

fn berth(args: &[&str], state: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env_remove("BERTH_STORE")
        .env_remove("BERTH_GATEWAY_URL")
        .env_remove("BERTH_GATEWAY_TOKEN")
        .env("USER", "tester");
    match state {
        Some(dir) => command.env("BERTH_STATE_DIR", dir),
        None => command.env_remove("BERTH_STATE_DIR"),
    };
    command.output().expect("berth runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `berth gateway token --name NAME --scope SCOPE`: the line for a tokens file and the
/// token itself.
fn mint_token(name: &str, scope: &str) -> (String, String) {
    let minted = berth(
        &["gateway", "token", "--name", name, "--scope", scope],
        None,
    );
    let line = stdout(&minted).trim().to_owned();
    let token = String::from_utf8(minted.stderr)
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    (line, token)
}

/// A temporary directory, removed when the test ends.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("berth-usage-{name}-"))
        .tempdir()
        .unwrap()
}

/// What the gateway flushes after `fetch` fetched from api.example.com five times today.
fn record_use(store: &Path) {
    let store = Store::open(store).unwrap();
    store
        .add_usage(&[UsageRow::new(
            "fetch",
            "egress",
            "api.example.com 443",
            5,
            jiff::Timestamp::now(),
        )])
        .unwrap();
}

/// The one PluginGrant of `yaml`, read as `berth grant --from` and `berth validate` read it.
fn only_grant(yaml: &str) -> PluginGrant {
    let loaded = berth_api::load_manifests("narrowed.yaml", yaml.as_bytes());
    assert!(!loaded.has_errors(), "{:?}\n{yaml}", loaded.problems);
    assert_eq!(loaded.documents.len(), 1, "{yaml}");
    match &loaded.documents[0].manifest {
        Manifest::Grant(g) => (**g).clone(),
        other => panic!("not a PluginGrant: {other:?}"),
    }
}

fn assert_only_the_used_host(grant: &PluginGrant) {
    assert_eq!(grant.metadata.name.as_deref(), Some("fetch-used"));
    assert_eq!(grant.spec.plugin, "fetch");
    let hosts: Vec<_> = grant
        .spec
        .permissions
        .network
        .egress
        .iter()
        .map(|r| (r.host.as_deref(), r.ports.clone()))
        .collect();
    assert_eq!(hosts, vec![(Some("api.example.com"), vec![443])]);
    // What the gateway cannot see used is kept as requested.
    assert_eq!(grant.spec.permissions.secrets.len(), 1);
}

#[test]
fn usage_from_a_gateway_prints_a_grant_of_only_the_host_that_was_used() {
    let tmp = temp_dir("gateway");
    let dir = tmp.path().to_path_buf();
    let manifest = dir.join("fetch.yaml");
    std::fs::write(&manifest, FETCH).unwrap();
    let store = dir.join("berth.db");
    record_use(&store);
    let (line, token) = mint_token("ops", "admin");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let (_gateway, port) = start_gateway(|gateway| {
        gateway
            .arg("--plugins")
            .arg(&manifest)
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--store")
            .arg(&store)
            .args(["--audit-sink", "sqlite", "--auto-approve-tier", "moderate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    });
    let url = format!("http://127.0.0.1:{port}");

    let table = stdout(&berth(
        &[
            "usage",
            "fetch",
            "--gateway",
            &url,
            "--token",
            &token,
            "--since",
            "7d",
        ],
        None,
    ));
    let api = table
        .lines()
        .find(|l| l.contains("api.example.com:443"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(api.contains(" yes ") && api.contains(" 5 "), "{table}");
    let cdn = table
        .lines()
        .find(|l| l.contains("cdn.example.com:443"))
        .unwrap();
    assert!(
        cdn.contains(" 0 ") && cdn.trim_end().ends_with('-'),
        "{table}"
    );
    assert!(table.contains("1 granted item(s) unused"), "{table}");

    let yaml = stdout(&berth(
        &[
            "usage",
            "fetch",
            "--gateway",
            &url,
            "--token",
            &token,
            "-o",
            "yaml",
        ],
        None,
    ));
    let grant = only_grant(&yaml);
    assert_only_the_used_host(&grant);
    assert!(yaml.contains("apiVersion: berth.dev/v1alpha1") && yaml.contains("kind: PluginGrant"));
    assert_eq!(grant.spec.granted_by, "user:tester");
    // `kubectl apply` takes what the CRD describes: no status, no unknown fields.
    assert!(!yaml.contains("status"), "{yaml}");

    let json = stdout(&berth(
        &["usage", "--gateway", &url, "--token", &token, "-o", "json"],
        None,
    ));
    let report: berth_contract::wire::UsageReportWire = serde_json::from_str(&json).unwrap();
    assert_eq!(report.plugins[0].egress[0].count, 5);

    let refused = berth(&["usage", "--gateway", &url, "--token", "wrong"], None);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("the gateway answered 401"), "{e}");
    let missing = berth(&["usage", "--gateway", &url], None);
    let e = String::from_utf8_lossy(&missing.stderr);
    assert!(e.contains("--gateway needs --token"), "{e}");
}

#[test]
fn the_narrowed_grant_from_the_local_store_goes_back_in_with_grant_from() {
    let tmp = temp_dir("local");
    let dir = tmp.path().to_path_buf();
    let state = dir.join("state");
    let manifest = dir.join("fetch.yaml");
    std::fs::write(&manifest, FETCH).unwrap();
    stdout(&berth(
        &["install", manifest.to_str().unwrap()],
        Some(&state),
    ));
    stdout(&berth(&["grant", "fetch"], Some(&state)));
    record_use(&state.join("berth.db"));

    let out = berth(&["usage", "fetch", "--output", "yaml"], Some(&state));
    let yaml = stdout(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no local gateway is running"),
        "{out:?}"
    );
    assert_only_the_used_host(&only_grant(&yaml));
    let file = dir.join("narrowed.yaml");
    std::fs::write(&file, &yaml).unwrap();

    let out = berth(
        &["grant", "fetch", "--from", file.to_str().unwrap()],
        Some(&state),
    );
    let granted = stdout(&out);
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning
            .contains("asks for more than this grant covers (network egress cdn.example.com:443)"),
        "{warning}"
    );
    assert!(
        granted.contains("network egress api.example.com:443"),
        "{granted}"
    );
    assert!(!granted.contains("cdn.example.com"), "{granted}");
    let store = Store::open(state.join("berth.db")).unwrap();
    let now = berth_store::format_time(jiff::Timestamp::now());
    let active = store.active_grants("fetch", &now).unwrap();
    assert_eq!(active.len(), 1, "the full grant was replaced");
    assert!(active[0].permissions_json.contains("api.example.com"));
    assert!(!active[0].permissions_json.contains("cdn.example.com"));

    // The table now shows cdn as no longer granted only if used; it was not, so it is gone.
    let table = stdout(&berth(&["usage", "fetch"], Some(&state)));
    assert!(!table.contains("cdn.example.com"), "{table}");

    // Bad input: a missing file, a file of another kind, a grant for another plugin.
    let missing = berth(
        &["grant", "fetch", "--from", "/nonexistent/grant.yaml"],
        Some(&state),
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/grant.yaml"),
        "{missing:?}"
    );
    let plugin_file = berth(
        &["grant", "fetch", "--from", manifest.to_str().unwrap()],
        Some(&state),
    );
    assert!(
        String::from_utf8_lossy(&plugin_file.stderr).contains("no PluginGrant in the file"),
        "{plugin_file:?}"
    );
    let other = dir.join("other.yaml");
    std::fs::write(&other, yaml.replace("plugin: fetch", "plugin: calc")).unwrap();
    let refused = berth(
        &["grant", "fetch", "--from", other.to_str().unwrap()],
        Some(&state),
    );
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("spec.plugin: the grant is for \"calc\", not \"fetch\""),
        "{e}"
    );
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, yaml.replace("ports:", "portz:")).unwrap();
    let refused = berth(
        &["grant", "fetch", "--from", broken.to_str().unwrap()],
        Some(&state),
    );
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("broken.yaml") && e.contains("portz"), "{e}");
    assert_eq!(
        store.active_grants("fetch", &now).unwrap().len(),
        1,
        "nothing written"
    );

    let bad_since = berth(&["usage", "--since", "soon"], Some(&state));
    let e = String::from_utf8_lossy(&bad_since.stderr);
    assert!(e.contains("--since \"soon\": not a duration"), "{e}");
}

/// `POST path` with a bearer token and `{}`; the status.
fn post(port: u16, path: &str, token: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response[9..12].parse().unwrap()
}

fn call_count(json: &str) -> u64 {
    let report: berth_contract::wire::UsageReportWire = serde_json::from_str(json).unwrap();
    let proc_ = report.plugins.iter().find(|p| p.plugin == "proc").unwrap();
    assert_eq!(
        (
            proc_.calls[0].target.as_str(),
            proc_.calls[0].capability.as_str()
        ),
        ("calc", "ok")
    );
    proc_.calls[0].count
}

#[test]
fn local_usage_asks_the_running_gateway_for_counts_it_has_not_flushed() {
    use berth_docker::control::StateDir;
    let tmp = temp_dir("running");
    let dir = tmp.path().to_path_buf();
    let state_path = dir.join("state");
    let state = StateDir::create(&state_path).unwrap();
    let admin = state.ensure_admin_token().unwrap();
    let store_path = state_path.join("berth.db");
    std::fs::write(
        dir.join("calc.yaml"),
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: calc}\nspec:\n  image: localhost/berth/calc:0.1.0\n  version: 0.1.0\n  capabilities: [{name: ok}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("proc.yaml"),
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: proc}\nspec:\n  image: localhost/berth/proc:0.1.0\n  version: 0.1.0\n  capabilities: [{name: run}]\n  permissions:\n    plugins: [{name: calc, capabilities: [ok]}]\n",
    )
    .unwrap();
    let (proc_line, proc_token) = mint_token("proc", "plugin:proc");
    let admin_line = format!(
        "dev-up {} admin",
        berth_contract::credential::digest_line(&admin)
    );
    std::fs::write(dir.join("tokens"), format!("{admin_line}\n{proc_line}\n")).unwrap();
    let plugin_port = spawn_plugin();
    let (mut gateway, port) = start_gateway(|gateway| {
        gateway
            .arg("--plugins")
            .arg(format!(
                "{},{}",
                dir.join("calc.yaml").display(),
                dir.join("proc.yaml").display()
            ))
            .args([
                "--endpoint",
                &format!("calc=http://127.0.0.1:{plugin_port}"),
            ])
            .arg("--tokens-file")
            .arg(dir.join("tokens"))
            .arg("--store")
            .arg(&store_path)
            .args(["--audit-summary-interval", "1h"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    });
    // What `berth dev up` publishes for local commands.
    state
        .open_store()
        .unwrap()
        .set_setting(
            berth_docker::supervisor::GATEWAY_URL_SETTING,
            &format!("http://127.0.0.1:{port}"),
        )
        .unwrap();

    assert_eq!(post(port, "/v1/plugins/calc/invoke/ok", &proc_token), 200);

    let from_gateway = stdout(&berth(&["usage", "proc", "-o", "json"], Some(&state_path)));
    assert_eq!(
        call_count(&from_gateway),
        1,
        "the gateway adds what it has not flushed"
    );
    let store_arg = store_path.to_str().unwrap();
    // The store alone knows neither the gateway's directory (these plugins are not
    // installed locally) nor the count, which is still in the gateway's memory.
    let from_store = berth(&["usage", "proc", "--store", store_arg], None);
    assert!(!from_store.status.success());
    let e = String::from_utf8_lossy(&from_store.stderr);
    assert!(
        e.contains("no plugin \"proc\" has grants or recorded use"),
        "{e}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(gateway.0.wait().unwrap().success());
    let flushed = stdout(&berth(
        &["usage", "proc", "--store", store_arg, "-o", "json"],
        None,
    ));
    assert_eq!(call_count(&flushed), 1, "flushed when the gateway stopped");
    let report: berth_contract::wire::UsageReportWire = serde_json::from_str(&flushed).unwrap();
    assert!(!report.plugins[0].calls[0].granted, "not installed locally");
}
