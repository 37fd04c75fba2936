//! The egress parity table (`tests/fixtures/egress-parity.yaml`) against the cluster path, as
//! far as it goes without an API server: the operator plans the plugin and mints its
//! credential as it does in a cluster, its directory entries (`berth_operator::directory::
//! entries`, from the Plugin's status and the grants) feed the gateway's egress proxy in this
//! process, and the plugin's requests authenticate with the token from the operator's Secret.
//!
//! The cluster is modelled on loopback addresses: the pod network `127.0.1.0/24` (the gateway
//! on `.1`, another plugin on `.2`) is a Berth network of the deny set, as `--egress-deny`
//! with the pod CIDR makes it; `127.0.0.10` stands in for the node; `127.0.0.1` is loopback;
//! the upstream stand-ins are on `127.0.0.22` (HTTP, port 80) and `127.0.0.23` (TLS, 443).
//! Binding ports 80 and 443 needs root (as in CI and the development machines).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use berth_api::{EgressRule, Permissions, Plugin, PluginGrant, PluginGrantSpec, RiskTier};
use berth_contract::credential;
use berth_gateway::egress::{DenyCategory, DenySet, EgressPolicy, StaticResolver};
use berth_gateway::{
    Auditor, Config, EgressProxy, EgressSettings, Gateway, Metrics, PluginEntry, StaticDirectory,
    StoreSink, TokenStore,
};
use berth_operator::plan::{PlanInput, Workload, plan};
use berth_operator::render::{RenderOptions, Rendered, render_token_secret};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NOW: &str = "2026-03-01T12:00:00Z";
const PLUGIN: &str = "fetcher";
const NAMESPACE: &str = "default";

const UPSTREAM_IP: &str = "127.0.0.22";
const TLS_UPSTREAM_IP: &str = "127.0.0.23";
const NODE_IP: &str = "127.0.0.10";
const POD_CIDR: &str = "127.0.1.0/24";
const GATEWAY_IP: &str = "127.0.1.1";
const OTHER_PLUGIN_IP: &str = "127.0.1.2";
const TLS_NAME: &str = "tls-upstream.test";

#[derive(Deserialize)]
struct Table {
    grant: Vec<Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    via: String,
    target: String,
    #[serde(default)]
    when: Option<String>,
    expect: Value,
}

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The symbolic names of the table as names this harness resolves.
fn host_of(symbol: &str) -> String {
    match symbol {
        "upstream" | "loopback" | "metadata" | "host" | "gateway" | "other-plugin"
        | "tls-upstream" => format!("{symbol}.test"),
        "{upstream-ip}" => UPSTREAM_IP.to_string(),
        literal => literal.to_string(),
    }
}

fn resolver() -> StaticResolver {
    let upstream = [ip(UPSTREAM_IP)];
    StaticResolver::new()
        .with("upstream.test", &upstream)
        .with("api.wild.test", &upstream)
        .with("other.test", &upstream)
        .with(TLS_NAME, &[ip(TLS_UPSTREAM_IP)])
        .with("loopback.test", &[ip("127.0.0.1")])
        .with("metadata.test", &[ip("169.254.169.254")])
        .with("host.test", &[ip(NODE_IP)])
        .with("gateway.test", &[ip(GATEWAY_IP)])
        .with("other-plugin.test", &[ip(OTHER_PLUGIN_IP)])
}

/// The cluster's deny set: loopback (the proxy's own `127.0.0.1`; the stand-ins live on other
/// loopback addresses), metadata and link-local, the node, and the pod CIDR as a Berth network.
fn cluster_deny_set() -> DenySet {
    DenySet::empty()
        .with_networks(["127.0.0.1/32".parse().unwrap()], DenyCategory::Loopback)
        .with_networks(
            ["169.254.169.254/32".parse().unwrap()],
            DenyCategory::CloudMetadata,
        )
        .with_networks(["169.254.0.0/16".parse().unwrap()], DenyCategory::LinkLocal)
        .with_host_addresses([ip(NODE_IP)])
        .with_networks([POD_CIDR.parse().unwrap()], DenyCategory::BerthNetwork)
}

fn table() -> Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/egress-parity.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The table's grant with the symbolic CIDR filled in.
fn egress_rules(table: &Table) -> Vec<EgressRule> {
    let text = serde_json::to_string(&table.grant)
        .unwrap()
        .replace("{tls-upstream-cidr}", &format!("{TLS_UPSTREAM_IP}/32"));
    serde_json::from_str(&text).unwrap()
}

fn plugin_requesting(egress: &[EgressRule]) -> Plugin {
    let mut p: Plugin = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Plugin",
        "metadata": {"name": PLUGIN, "namespace": NAMESPACE, "uid": "uid-fetcher", "generation": 1},
        "spec": {"image": "berth/fetcher:0.1.0", "version": "0.1.0"}
    }))
    .unwrap();
    p.spec.permissions.network.egress = egress.to_vec();
    let problems: Vec<String> = berth_api::validate_plugin(&p)
        .into_iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    p
}

fn grant_of(egress: &[EgressRule], expires_at: &str) -> PluginGrant {
    let mut g = PluginGrant::new(
        PLUGIN,
        PluginGrantSpec {
            plugin: PLUGIN.into(),
            permissions: Permissions {
                network: berth_api::NetworkPermissions {
                    egress: egress.to_vec(),
                },
                ..Permissions::default()
            },
            granted_by: "platform@example.com".into(),
            reason: Some("egress parity".into()),
            expires_at: Some(expires_at.into()),
        },
    );
    g.metadata.namespace = Some(NAMESPACE.into());
    g
}

/// What the operator does for the plugin on its first reconcile, without the API calls: plan,
/// mint the credential into the Secret it creates, record the digest in the status.
struct Operated {
    plugin: Plugin,
    rendered: Rendered,
    secret: Secret,
}

fn operate(plugin: &Plugin, grant: &PluginGrant) -> Operated {
    let options = RenderOptions::default();
    let dependencies = BTreeMap::new();
    let mut planned = plan(PlanInput {
        plugin,
        grants: &[grant],
        dependencies: &dependencies,
        deployment: None,
        now: now(),
        auto_approve: RiskTier::Low,
        options: &options,
        validation: None,
    });
    let revision = planned
        .credential_wanted
        .expect("an approved plugin wants a credential");
    let token = credential::generate_token().unwrap();
    let secret = render_token_secret(plugin, &options, revision, &token);
    planned.record_credential(revision, credential::digest_line(&token));
    let Workload::Apply { rendered, .. } = planned.workload else {
        panic!("the granted plugin is applied, got {:?}", planned.workload)
    };
    let mut plugin = plugin.clone();
    let mut status = planned.status;
    // The rollout has finished by the time the plugin calls out.
    status.phase = Some(berth_api::Phase::Ready);
    plugin.status = Some(status);
    Operated {
        plugin,
        rendered: *rendered,
        secret,
    }
}

/// The token as the pod gets it: from the Secret the Deployment names.
fn token_from(secret: &Secret) -> String {
    let data = secret.data.as_ref().expect("the Secret holds data");
    String::from_utf8(data["token"].0.clone()).unwrap()
}

fn directory_entries(plugin: &Plugin, grants: &[PluginGrant]) -> Vec<PluginEntry> {
    let plugins = [Arc::new(plugin.clone())];
    let grants: Vec<Arc<PluginGrant>> = grants.iter().cloned().map(Arc::new).collect();
    berth_operator::directory::entries(&plugins, &grants, &[], now(), RiskTier::Low)
}

struct Proxy {
    addr: SocketAddr,
    directory: Arc<StaticDirectory>,
}

async fn start_proxy(entries: Vec<PluginEntry>) -> Proxy {
    let directory = Arc::new(StaticDirectory::new(entries));
    let store = Arc::new(berth_store::Store::open_in_memory().unwrap());
    let metrics = Metrics::new();
    // The writer's task drains audit events for as long as the test runs.
    let (auditor, _writer) = Auditor::start(vec![Arc::new(StoreSink::new(store))], metrics.clone());
    let gateway = Gateway::new(
        &Config::default(),
        directory.clone(),
        TokenStore::new(),
        metrics,
        auditor,
    );
    let settings = EgressSettings {
        connect_timeout: Duration::from_secs(2),
        interfaces: None,
        ..EgressSettings::new(EgressPolicy::new(cluster_deny_set(), false))
    };
    let proxy = EgressProxy::with_resolver(gateway, settings, Arc::new(resolver()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    Proxy { addr, directory }
}

async fn bind(address: &str) -> TcpListener {
    TcpListener::bind(address).await.unwrap_or_else(|e| {
        panic!("binding the stand-in upstream {address}: {e} (ports 80 and 443 need root)")
    })
}

/// An HTTP stand-in: `GET /healthz` answers `{"status":"ok"}`.
async fn spawn_http_upstream() {
    let listener = bind(&format!("{UPSTREAM_IP}:80")).await;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = head.starts_with(b"GET /healthz ");
                let (status, body) = if ok {
                    ("200 OK", r#"{"status":"ok"}"#)
                } else {
                    ("404 Not Found", r#"{"error":"not found"}"#)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
}

/// A TLS stand-in on 443 with a self-signed certificate for [`TLS_NAME`]; returns the
/// certificate the client trusts. After the handshake it echoes what it reads.
async fn spawn_tls_upstream() -> CertificateDer<'static> {
    let certified = rcgen::generate_simple_self_signed(vec![TLS_NAME.to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = bind(&format!("{TLS_UPSTREAM_IP}:443")).await;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(socket).await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    cert
}

fn proxy_authorization(token: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{PLUGIN}:{token}"));
    format!("Basic {encoded}")
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

/// Reads an answer head byte by byte (a tunnel's bytes follow it), then, unless it is a 200
/// to CONNECT, the body until the proxy closes.
async fn read_answer(stream: &mut TcpStream, tunnel: bool) -> Answer {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the proxy answers")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    if !(tunnel && status == 200) {
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut body)).await;
    }
    Answer {
        status,
        head,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

async fn http_via(proxy: SocketAddr, target: &str, token: &str) -> Answer {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "GET http://{target}/healthz HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
        proxy_authorization(token)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut stream, false).await
}

async fn connect_via(proxy: SocketAddr, target: &str, token: &str) -> (Answer, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        proxy_authorization(token)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream, true).await;
    (answer, stream)
}

/// A real TLS handshake with the stand-in through the tunnel, then one echoed message.
async fn tls_through(
    stream: TcpStream,
    cert: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(TLS_NAME.to_string()).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream))
        .await
        .expect("the TLS handshake finishes")
        .expect("the TLS handshake with the stand-in succeeds through the tunnel");
    echo(&mut tls, b"hello through the tunnel").await;
    tls
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    stream.flush().await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert_eq!(back, payload);
}

async fn assert_closed<S: AsyncRead + Unpin>(stream: &mut S, case: &str) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{case}: the proxy did not close the tunnel"));
    // A clean end (0 bytes) or a TLS error for the missing close_notify: closed either way.
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "{case}: the tunnel still carries data: {read:?}"
    );
}

fn denied_rule(answer: &Answer, case: &str) -> String {
    assert_eq!(
        answer.status, 403,
        "{case}: {}\n{}",
        answer.head, answer.body
    );
    assert_eq!(
        answer.body["error"]["code"], "egress_denied",
        "{case}: {}",
        answer.body
    );
    answer.body["error"]["details"]["rule"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_parity_case_holds_on_the_cluster_path() {
    let table = table();
    let rules = egress_rules(&table);
    let plugin = plugin_requesting(&rules);
    let grant = grant_of(&rules, "2027-01-01T00:00:00Z");
    let expired = grant_of(&rules, "2026-02-01T00:00:00Z");
    let operated = operate(&plugin, &grant);
    let token = token_from(&operated.secret);

    spawn_http_upstream().await;
    let cert = spawn_tls_upstream().await;

    let granted = directory_entries(&operated.plugin, std::slice::from_ref(&grant));
    assert_eq!(granted.len(), 1);
    assert_eq!(
        granted[0].token_sha256,
        vec![credential::digest(&token)],
        "the directory carries the digest the operator recorded"
    );
    assert_eq!(granted[0].granted_egress.len(), rules.len());
    let expired_entries = directory_entries(&operated.plugin, &[expired]);
    assert!(
        expired_entries[0].granted_egress.is_empty(),
        "an expired grant covers nothing: {:?}",
        expired_entries[0].granted_egress
    );

    let mut checked = 0;
    for case in &table.cases {
        let when = case.when.as_deref().unwrap_or("granted");
        let entries = match when {
            "expired" => expired_entries.clone(),
            "granted" | "revoked-while-open" => granted.clone(),
            other => panic!("{}: unknown `when` {other}", case.name),
        };
        let proxy = start_proxy(entries).await;
        let (symbol, port) = case
            .target
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{}: target {} has no port", case.name, case.target));
        let target = format!("{}:{port}", host_of(symbol));
        let name = &case.name;

        match (&case.expect, case.via.as_str()) {
            (Value::String(s), "http") if s == "allowed" => {
                let answer = http_via(proxy.addr, &target, &token).await;
                assert_eq!(
                    answer.status, 200,
                    "{name}: {}\n{}",
                    answer.head, answer.body
                );
                assert_eq!(answer.body, json!({"status": "ok"}), "{name}");
            }
            (Value::String(s), "connect") if s == "allowed" => {
                let (answer, stream) = connect_via(proxy.addr, &target, &token).await;
                assert_eq!(
                    answer.status, 200,
                    "{name}: {}\n{}",
                    answer.head, answer.body
                );
                tls_through(stream, &cert).await;
            }
            (Value::String(s), "connect") if s == "closed" => {
                assert_eq!(when, "revoked-while-open", "{name}");
                let (answer, stream) = connect_via(proxy.addr, &target, &token).await;
                assert_eq!(
                    answer.status, 200,
                    "{name}: {}\n{}",
                    answer.head, answer.body
                );
                let mut tls = tls_through(stream, &cert).await;
                // The grant is deleted: the directory is republished without it.
                proxy
                    .directory
                    .replace_all(directory_entries(&operated.plugin, &[]));
                assert_closed(&mut tls, name).await;
            }
            (Value::Object(o), via) if o.contains_key("denied") => {
                let wanted = o["denied"].as_str().unwrap_or_default();
                let answer = match via {
                    "http" => http_via(proxy.addr, &target, &token).await,
                    "connect" => connect_via(proxy.addr, &target, &token).await.0,
                    other => panic!("{name}: unknown via {other}"),
                };
                let rule = denied_rule(&answer, name);
                assert!(
                    rule.contains(wanted),
                    "{name}: the rule {rule:?} does not say {wanted:?}"
                );
            }
            (expect, via) => panic!("{name}: unknown expectation {expect} via {via}"),
        }
        checked += 1;
    }
    assert_eq!(checked, table.cases.len());
    assert!(checked >= 13, "the table has every case: {checked}");
}

#[tokio::test]
async fn a_token_the_operator_did_not_record_is_refused() {
    let table = table();
    let rules = egress_rules(&table);
    let plugin = plugin_requesting(&rules);
    let grant = grant_of(&rules, "2027-01-01T00:00:00Z");
    let operated = operate(&plugin, &grant);
    let proxy = start_proxy(directory_entries(&operated.plugin, &[grant])).await;
    let guessed = credential::generate_token().unwrap();
    let answer = http_via(proxy.addr, "upstream.test:80", &guessed).await;
    assert_eq!(answer.status, 407, "{}\n{}", answer.head, answer.body);
}

#[test]
fn the_rendered_deployment_takes_the_proxy_and_token_from_the_operators_secret() {
    let table = table();
    let rules = egress_rules(&table);
    let plugin = plugin_requesting(&rules);
    let operated = operate(&plugin, &grant_of(&rules, "2027-01-01T00:00:00Z"));
    let secret_name = operated.secret.metadata.name.clone().unwrap();
    assert_eq!(secret_name, "fetcher-berth-token-1");
    assert_eq!(
        operated.secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-fetcher"
    );

    let deployment = serde_json::to_value(&operated.rendered.deployment).unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let position = |name: &str| {
        env.iter()
            .position(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not set"))
    };
    assert_eq!(
        env[position("BERTH_PLUGIN_TOKEN")]["valueFrom"]["secretKeyRef"],
        json!({"name": secret_name, "key": "token"})
    );
    let proxy = "http://fetcher:$(BERTH_PLUGIN_TOKEN)@berth-gateway.berth-system.svc:7401";
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env[position(name)]["value"], proxy, "{name}");
        assert!(position("BERTH_PLUGIN_TOKEN") < position(name), "{name}");
    }
    for name in ["NO_PROXY", "no_proxy"] {
        assert_eq!(
            env[position(name)]["value"],
            "berth-gateway.berth-system.svc"
        );
    }
    // The token itself is in the Secret only.
    let token = token_from(&operated.secret);
    let everything = format!(
        "{}{}",
        operated.rendered.to_yaml(),
        serde_json::to_string(&operated.plugin.status).unwrap()
    );
    assert!(!everything.contains(&token));
}

#[test]
fn the_rendered_network_policy_opens_only_dns_the_gateway_and_the_granted_cidr() {
    let table = table();
    let rules = egress_rules(&table);
    let plugin = plugin_requesting(&rules);
    let operated = operate(&plugin, &grant_of(&rules, "2027-01-01T00:00:00Z"));
    let policy = serde_json::to_value(&operated.rendered.network_policy).unwrap();
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(
        egress,
        &vec![
            json!({
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            }),
            json!({
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "berth-system"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "berth-gateway"}}
                }],
                "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 7401}]
            }),
            json!({
                "to": [{"ipBlock": {"cidr": format!("{TLS_UPSTREAM_IP}/32")}}],
                "ports": [{"protocol": "TCP", "port": 443}]
            }),
        ],
        "host grants go through the proxy; only the CIDR grant is opened directly"
    );
}
