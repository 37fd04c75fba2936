//! The egress proxy over real TCP on 127.0.0.1: an upstream HTTP server and a TCP echo
//! server started here, names resolved through a static map.
//!
//! The positive paths need loopback upstreams, so they run with a deny set the test builds
//! without loopback; the always-on default is proven separately to refuse 127.0.0.1 and
//! 169.254.169.254 even through a granted name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use berth_api::EgressRule;
use berth_gateway::egress::{DenyCategory, DenySet, StaticResolver};
use berth_gateway::{Config, EgressConfig, EgressProxy, EgressSettings, PluginEntry};
use berth_store::AuditQuery;
use berth_store::audit::types;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const TOKEN: &str = "fetcher-plugin-token";
const LOCALHOST: &str = "127.0.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fetcher(egress: Vec<EgressRule>) -> PluginEntry {
    PluginEntry::new(plugin("fetcher", ""))
        .with_token(TOKEN)
        .with_granted_egress(egress)
}

/// The test's deny set: link-local and a stand-in Berth network, but not loopback, so the
/// upstreams on 127.0.0.1 are reachable.
fn test_deny_set() -> DenySet {
    DenySet::empty()
        .with_networks(["169.254.0.0/16".parse().unwrap()], DenyCategory::LinkLocal)
        .with_networks(
            ["10.99.0.0/16".parse().unwrap()],
            DenyCategory::BerthNetwork,
        )
}

fn test_settings() -> EgressSettings {
    proxy_settings(test_deny_set())
}

fn resolver() -> StaticResolver {
    let lo = [ip(LOCALHOST)];
    StaticResolver::new()
        .with("api.test", &lo)
        .with("a.b.svc.test", &lo)
        .with("svc.test", &lo)
        .with("other.test", &lo)
        .with("db.test", &lo)
        .with("echo.test", &lo)
        .with("link-local.test", &[ip("169.254.1.1")])
        .with("metadata.test", &[ip("169.254.169.254")])
        .with("berth-net.test", &[ip("10.99.1.2")])
        .with("rebind.test", &[ip("93.184.216.34"), ip(LOCALHOST)])
}

struct Egress {
    h: Harness,
    addr: SocketAddr,
    proxy: EgressProxy,
}

async fn start(entries: Vec<PluginEntry>, settings: EgressSettings) -> Egress {
    let h = Harness::start(entries).await;
    let proxy = EgressProxy::with_resolver(h.gateway.clone(), settings, Arc::new(resolver()));
    let addr = serve_proxy(proxy.clone()).await;
    Egress { h, addr, proxy }
}

/// An upstream HTTP server that reports what it received.
async fn spawn_upstream() -> SocketAddr {
    async fn report(uri: http::Uri, headers: HeaderMap) -> axum::Json<Value> {
        axum::Json(json!({
            "from": "upstream",
            "uri": uri.to_string(),
            "host": headers.get("host").and_then(|v| v.to_str().ok()),
            "proxyAuthorization": headers.contains_key("proxy-authorization"),
            "proxyConnection": headers.contains_key("proxy-connection"),
        }))
    }
    let app = Router::new()
        .route("/", get(report))
        .route("/{*path}", get(report));
    spawn_plugin(app).await
}

/// A TCP server that sends back whatever it reads.
async fn spawn_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn creds() -> String {
    basic("fetcher", TOKEN)
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    json: Value,
}

impl Answer {
    #[track_caller]
    fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "{}\n{}", self.head, self.json);
        assert_eq!(
            self.json["error"]["code"], code,
            "{}\n{}",
            self.head, self.json
        );
        self
    }

    fn message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }
}

/// Sends raw bytes, reads the whole answer (the request asks the proxy to close).
async fn raw(proxy: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    // The proxy may answer and close before a huge request is fully written.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    // A connection the proxy keeps open yields what it answered within the time.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut bytes)).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// `GET url` through the proxy with `auth` as the proxy credential.
async fn get_via(proxy: SocketAddr, url: &str, auth: Option<&str>) -> Answer {
    let mut request = format!(
        "GET {url} HTTP/1.1\r\nHost: ignored.example\r\nConnection: close\r\nProxy-Connection: keep-alive\r\n"
    );
    if let Some(auth) = auth {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    raw(proxy, request.as_bytes()).await
}

/// Opens a CONNECT tunnel; on success returns the stream, otherwise the answer.
async fn connect_via(proxy: SocketAddr, target: &str) -> Result<TcpStream, Answer> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        creds()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the proxy answers CONNECT")
            .unwrap();
        assert_eq!(n, 1, "closed in the middle of the answer: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status == 200 {
        return Ok(stream);
    }
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut body)).await;
    Err(Answer {
        status,
        head,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo comes back")
        .unwrap();
    back
}

async fn security_events(h: &Harness) -> Vec<berth_store::AuditEvent> {
    h.flush_audit().await;
    h.store
        .query_audit(&AuditQuery {
            type_: Some(types::SECURITY.into()),
            ..Default::default()
        })
        .unwrap()
}

#[tokio::test]
async fn granted_host_gets_the_upstream_answer_without_the_proxy_credential() {
    let up = spawn_upstream().await;
    let e = start(
        vec![fetcher(vec![host_rule("API.test.", &[up.port()])])],
        test_settings(),
    )
    .await;
    let a = get_via(
        e.addr,
        &format!("http://api.test:{}/v1/data?q=1", up.port()),
        Some(&creds()),
    )
    .await;
    assert_eq!(a.status, 200, "{}\n{}", a.head, a.json);
    assert_eq!(a.json["from"], "upstream");
    assert_eq!(a.json["uri"], "/v1/data?q=1", "origin form upstream");
    assert_eq!(a.json["host"], format!("api.test:{}", up.port()));
    assert_eq!(
        a.json["proxyAuthorization"], false,
        "the credential stays at the proxy"
    );
    assert_eq!(a.json["proxyConnection"], false);
    assert_eq!(
        e.h.counter(
            "berth_egress_requests_total",
            &[
                ("plugin", "fetcher"),
                ("host", "api.test"),
                ("decision", "allowed")
            ]
        ),
        1.0
    );
    assert_eq!(
        e.h.counter(
            "berth_egress_connect_seconds_count",
            &[("plugin", "fetcher")]
        ),
        1.0
    );
    assert!(
        e.h.counter(
            "berth_egress_bytes_total",
            &[("plugin", "fetcher"), ("direction", "received")]
        ) > 0.0
    );
}

#[tokio::test]
async fn wildcard_grant_covers_subdomains_but_not_the_domain_itself() {
    let up = spawn_upstream().await;
    let port = up.port();
    let e = start(
        vec![fetcher(vec![host_rule("*.svc.test", &[port])])],
        test_settings(),
    )
    .await;
    let a = get_via(
        e.addr,
        &format!("http://a.b.svc.test:{port}/"),
        Some(&creds()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    get_via(e.addr, &format!("http://svc.test:{port}/"), Some(&creds()))
        .await
        .expect(403, "egress_denied");
    assert_eq!(
        e.h.counter(
            "berth_egress_requests_total",
            &[
                ("plugin", "fetcher"),
                ("host", "*.svc.test"),
                ("decision", "allowed")
            ]
        ),
        1.0,
        "counted under the pattern, not the name"
    );
}

#[tokio::test]
async fn wrong_port_is_refused_naming_the_granted_port() {
    let up = spawn_upstream().await;
    let e = start(
        vec![fetcher(vec![host_rule("api.test", &[443])])],
        test_settings(),
    )
    .await;
    let a = get_via(
        e.addr,
        &format!("http://api.test:{}/", up.port()),
        Some(&creds()),
    )
    .await;
    a.expect(403, "egress_denied");
    assert!(
        a.message().contains("granted only on port 443"),
        "{}",
        a.message()
    );
    assert_eq!(
        a.json["error"]["details"]["grant"],
        format!(
            "permissions.network.egress: [{{host: api.test, ports: [{}]}}]",
            up.port()
        )
    );
}

#[tokio::test]
async fn host_not_granted_gets_403_with_the_grant_that_would_allow_it_and_an_audit_event() {
    let up = spawn_upstream().await;
    let port = up.port();
    let e = start(
        vec![fetcher(vec![host_rule("api.test", &[port])])],
        test_settings(),
    )
    .await;
    let a = get_via(
        e.addr,
        &format!("http://Other.Test:{port}/x"),
        Some(&creds()),
    )
    .await;
    a.expect(403, "egress_denied");
    let message = a.message();
    assert!(message.contains(&format!("other.test:{port}")), "{message}");
    assert!(
        message.contains("no granted egress rule covers it"),
        "{message}"
    );
    let details = &a.json["error"]["details"];
    assert_eq!(details["plugin"], "fetcher");
    assert_eq!(details["host"], "other.test");
    assert_eq!(details["port"], port);
    assert_eq!(
        details["address"],
        Value::Null,
        "a name no rule covers is not resolved"
    );
    assert_eq!(details["grantable"], true);
    assert_eq!(
        details["grant"],
        format!("permissions.network.egress: [{{host: other.test, ports: [{port}]}}]")
    );
    let events = security_events(&e.h).await;
    let event = events
        .iter()
        .find(|ev| ev.details["code"] == "egress_denied")
        .expect("the refusal is audited");
    assert_eq!(event.plugin.as_deref(), Some("fetcher"));
    assert_eq!(event.actor, "plugin:fetcher");
    assert_eq!(event.outcome, "denied");
    assert_eq!(event.details["target"], format!("other.test:{port}"));
    assert_eq!(event.details["rule"], "no granted egress rule covers it");
    assert_eq!(
        e.h.counter(
            "berth_egress_requests_total",
            &[
                ("plugin", "fetcher"),
                ("host", "denied:not_granted"),
                ("decision", "denied")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn ip_literal_needs_a_cidr_grant() {
    let up = spawn_upstream().await;
    let port = up.port();
    let url = format!("http://127.0.0.1:{port}/");
    let names_only = start(
        vec![fetcher(vec![host_rule("api.test", &[port])])],
        test_settings(),
    )
    .await;
    let a = get_via(names_only.addr, &url, Some(&creds())).await;
    a.expect(403, "egress_denied");
    assert_eq!(a.json["error"]["details"]["address"], "127.0.0.1");
    assert_eq!(
        a.json["error"]["details"]["grant"],
        format!("permissions.network.egress: [{{cidr: 127.0.0.1/32, ports: [{port}]}}]")
    );
    let by_cidr = start(
        vec![fetcher(vec![cidr_rule("127.0.0.0/8", &[port])])],
        test_settings(),
    )
    .await;
    let a = get_via(by_cidr.addr, &url, Some(&creds())).await;
    assert_eq!(a.status, 200, "{}", a.json);
}

#[tokio::test]
async fn cidr_grant_allows_a_name_resolving_inside_it() {
    let up = spawn_upstream().await;
    let port = up.port();
    let e = start(
        vec![fetcher(vec![cidr_rule("127.0.0.0/24", &[port])])],
        test_settings(),
    )
    .await;
    let a = get_via(e.addr, &format!("http://db.test:{port}/"), Some(&creds())).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        e.h.counter(
            "berth_egress_requests_total",
            &[
                ("plugin", "fetcher"),
                ("host", "127.0.0.0/24"),
                ("decision", "allowed")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn default_deny_set_refuses_loopback_and_metadata_even_through_a_granted_name() {
    let up = spawn_upstream().await;
    let port = up.port();
    let settings = EgressSettings::from_config(&EgressConfig::default()).unwrap();
    let e = start(
        vec![fetcher(vec![
            host_rule("*", &[port, 80]),
            cidr_rule("0.0.0.0/0", &[port, 80]),
        ])],
        settings,
    )
    .await;
    for (url, address) in [
        (format!("http://api.test:{port}/"), "127.0.0.1"),
        (format!("http://127.0.0.1:{port}/"), "127.0.0.1"),
        (
            "http://metadata.test/latest/meta-data/".to_owned(),
            "169.254.169.254",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254",
        ),
        (format!("http://rebind.test:{port}/"), "127.0.0.1"),
    ] {
        let a = get_via(e.addr, &url, Some(&creds())).await;
        a.expect(403, "egress_denied");
        assert!(
            a.message().contains("can never be granted"),
            "{url}: {}",
            a.message()
        );
        assert_eq!(a.json["error"]["details"]["address"], address, "{url}");
        assert_eq!(a.json["error"]["details"]["grantable"], false, "{url}");
        assert_eq!(a.json["error"]["details"]["grant"], Value::Null, "{url}");
    }
    let a = get_via(e.addr, "http://metadata.test/", Some(&creds())).await;
    assert!(a.message().contains("cloud metadata"), "{}", a.message());
    assert_eq!(
        e.h.counter(
            "berth_egress_requests_total",
            &[
                ("plugin", "fetcher"),
                ("host", "denied:always"),
                ("decision", "denied")
            ]
        ),
        6.0
    );
}

#[tokio::test]
async fn names_resolving_to_link_local_or_a_berth_network_are_refused() {
    let e = start(
        vec![fetcher(vec![
            host_rule("*", &[80]),
            cidr_rule("10.0.0.0/8", &[80]),
        ])],
        test_settings(),
    )
    .await;
    let a = get_via(e.addr, "http://link-local.test/", Some(&creds())).await;
    a.expect(403, "egress_denied");
    assert!(
        a.message().contains("link-local (169.254.0.0/16)"),
        "{}",
        a.message()
    );
    let a = get_via(e.addr, "http://berth-net.test/", Some(&creds())).await;
    a.expect(403, "egress_denied");
    assert!(a.message().contains("(10.99.1.2)"), "{}", a.message());
    assert!(a.message().contains("--egress-deny"), "{}", a.message());
}

#[tokio::test]
async fn missing_unknown_or_mismatched_credentials_get_407() {
    let up = spawn_upstream().await;
    let url = format!("http://api.test:{}/", up.port());
    let e = start(
        vec![fetcher(vec![host_rule("api.test", &[up.port()])])],
        test_settings(),
    )
    .await;
    for auth in [
        None,
        Some(basic("fetcher", "not-the-token")),
        Some(basic("someone-else", TOKEN)),
        Some(format!("Bearer {TOKEN}")),
    ] {
        let a = get_via(e.addr, &url, auth.as_deref()).await;
        a.expect(407, "proxy_authentication_required");
        assert!(
            a.head
                .to_ascii_lowercase()
                .contains("proxy-authenticate: basic realm=\"berth-egress\""),
            "{}",
            a.head
        );
        assert!(
            a.message().contains("http://PLUGIN:TOKEN@HOST:PORT"),
            "{}",
            a.message()
        );
    }
    let events = security_events(&e.h).await;
    assert_eq!(
        events
            .iter()
            .filter(|ev| ev.details["code"] == "proxy_authentication_required")
            .count(),
        4
    );
}

#[tokio::test]
async fn source_check_accepts_the_credential_only_from_the_plugins_instances() {
    let up = spawn_upstream().await;
    let port = up.port();
    let url = format!("http://api.test:{port}/");
    let settings = EgressSettings {
        check_source: true,
        ..test_settings()
    };
    let elsewhere = entry(plugin("fetcher", ""), &["10.1.2.3:8080".parse().unwrap()])
        .with_token(TOKEN)
        .with_granted_egress(vec![host_rule("api.test", &[port])]);
    let e = start(vec![elsewhere], settings.clone()).await;
    let a = get_via(e.addr, &url, Some(&creds())).await;
    a.expect(407, "proxy_authentication_required");
    assert!(
        a.message().contains("not one of its instances"),
        "{}",
        a.message()
    );
    let here = entry(plugin("fetcher", ""), &["127.0.0.1:8080".parse().unwrap()])
        .with_token(TOKEN)
        .with_granted_egress(vec![host_rule("api.test", &[port])]);
    let e = start(vec![here], settings).await;
    assert_eq!(get_via(e.addr, &url, Some(&creds())).await.status, 200);
}

#[tokio::test]
async fn connect_tunnel_carries_bytes_both_ways_and_counts_them() {
    let echo = spawn_echo().await;
    let e = start(
        vec![fetcher(vec![host_rule("echo.test", &[echo.port()])])],
        test_settings(),
    )
    .await;
    let mut tunnel = connect_via(e.addr, &format!("echo.test:{}", echo.port()))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut tunnel, &payload).await, payload);
    assert_eq!(e.proxy.open_tunnels("fetcher"), 1);
    let sent = e.h.counter(
        "berth_egress_bytes_total",
        &[("plugin", "fetcher"), ("direction", "sent")],
    );
    let received = e.h.counter(
        "berth_egress_bytes_total",
        &[("plugin", "fetcher"), ("direction", "received")],
    );
    assert_eq!(sent, 10_000.0);
    assert_eq!(received, 10_000.0);
    drop(tunnel);
    wait_until(|| e.proxy.open_tunnels("fetcher") == 0).await;
}

#[tokio::test]
async fn connect_to_a_refused_target_gets_403_before_any_byte_flows() {
    let echo = spawn_echo().await;
    let e = start(
        vec![fetcher(vec![host_rule("echo.test", &[echo.port()])])],
        test_settings(),
    )
    .await;
    let a = connect_via(e.addr, "link-local.test:443")
        .await
        .unwrap_err();
    a.expect(403, "egress_denied");
    assert_eq!(e.proxy.open_tunnels("fetcher"), 0);
}

#[tokio::test]
async fn removing_the_grant_closes_an_open_tunnel_and_removing_the_plugin_too() {
    let echo = spawn_echo().await;
    let rule = host_rule("echo.test", &[echo.port()]);
    let e = start(
        vec![
            fetcher(vec![rule.clone()]),
            PluginEntry::new(plugin("other", ""))
                .with_token("other-token")
                .with_granted_egress(vec![rule.clone()]),
        ],
        test_settings(),
    )
    .await;
    let target = format!("echo.test:{}", echo.port());
    let mut tunnel = connect_via(e.addr, &target).await.unwrap();
    assert_eq!(round_trip(&mut tunnel, b"before").await, b"before");

    // An unrelated change keeps the tunnel open.
    e.h.directory.remove("other");
    assert_eq!(round_trip(&mut tunnel, b"still").await, b"still");

    e.h.directory
        .upsert(fetcher(vec![host_rule("echo.test", &[1])]));
    assert_closed(&mut tunnel).await;
    wait_until(|| e.proxy.open_tunnels("fetcher") == 0).await;
    let events = security_events(&e.h).await;
    assert!(
        events
            .iter()
            .any(|ev| ev.outcome == "closed" && ev.details["target"] == target),
        "{events:?}"
    );

    e.h.directory.upsert(fetcher(vec![rule]));
    let mut tunnel = connect_via(e.addr, &target).await.unwrap();
    assert_eq!(round_trip(&mut tunnel, b"again").await, b"again");
    e.h.directory.remove("fetcher");
    assert_closed(&mut tunnel).await;
}

async fn assert_closed(tunnel: &mut TcpStream) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .expect("the proxy closes the tunnel")
        .unwrap_or(0);
    assert_eq!(n, 0, "the tunnel is closed");
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5s");
}

#[tokio::test]
async fn tunnels_beyond_the_cap_get_429() {
    let echo = spawn_echo().await;
    let settings = EgressSettings {
        max_tunnels: 2,
        ..test_settings()
    };
    let e = start(
        vec![fetcher(vec![host_rule("echo.test", &[echo.port()])])],
        settings,
    )
    .await;
    let target = format!("echo.test:{}", echo.port());
    let first = connect_via(e.addr, &target).await.unwrap();
    let _second = connect_via(e.addr, &target).await.unwrap();
    connect_via(e.addr, &target)
        .await
        .unwrap_err()
        .expect(429, "egress_tunnel_limit");
    drop(first);
    wait_until(|| e.proxy.open_tunnels("fetcher") == 1).await;
    let mut third = connect_via(e.addr, &target).await.unwrap();
    assert_eq!(round_trip(&mut third, b"x").await, b"x");
}

#[tokio::test]
async fn idle_tunnels_are_closed() {
    let echo = spawn_echo().await;
    let settings = EgressSettings {
        idle_timeout: Duration::from_millis(200),
        ..test_settings()
    };
    let e = start(
        vec![fetcher(vec![host_rule("echo.test", &[echo.port()])])],
        settings,
    )
    .await;
    let mut tunnel = connect_via(e.addr, &format!("echo.test:{}", echo.port()))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut tunnel, b"hi").await, b"hi");
    assert_closed(&mut tunnel).await;
}

#[tokio::test]
async fn malformed_requests_get_clean_400_or_431_and_the_proxy_keeps_serving() {
    let up = spawn_upstream().await;
    let e = start(
        vec![fetcher(vec![host_rule("api.test", &[up.port()])])],
        test_settings(),
    )
    .await;
    let auth = creds();
    for (request, status) in [
        (
            format!(
                "CONNECT api.test HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "CONNECT api.test:0 HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "CONNECT api.test:99999 HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "CONNECT [::1 HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET /relative HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET https://api.test/ HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET ftp://api.test/ HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET http://bad_host!:80/ HTTP/1.1\r\nConnection: close\r\nProxy-Authorization: {auth}\r\n\r\n"
            ),
            400,
        ),
        ("NOT AN HTTP REQUEST\r\n\r\n".to_owned(), 400),
        (
            format!(
                "GET http://api.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(100_000)
            ),
            431,
        ),
        (
            format!(
                "GET http://api.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(1_000_000)
            ),
            431,
        ),
    ] {
        let a = raw(e.addr, request.as_bytes()).await;
        assert_eq!(a.status, status, "{:.80}\n{}\n{}", request, a.head, a.json);
        if status == 400 && a.json != Value::Null {
            assert_eq!(
                a.json["error"]["code"], "bad_proxy_request",
                "{:.80}",
                request
            );
        }
    }
    let ok = get_via(
        e.addr,
        &format!("http://api.test:{}/", up.port()),
        Some(&creds()),
    )
    .await;
    assert_eq!(ok.status, 200, "still serving");
}

#[tokio::test]
async fn unreachable_granted_destination_gets_502() {
    // A port nobody listens on: bind, read the port, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let e = start(
        vec![fetcher(vec![host_rule("api.test", &[closed.port()])])],
        test_settings(),
    )
    .await;
    let a = get_via(
        e.addr,
        &format!("http://api.test:{}/", closed.port()),
        Some(&creds()),
    )
    .await;
    a.expect(502, "egress_unreachable");
    assert_eq!(
        e.h.counter(
            "berth_egress_requests_total",
            &[
                ("plugin", "fetcher"),
                ("host", "api.test"),
                ("decision", "failed")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn egress_series_pass_promtool_check_metrics() {
    let up = spawn_upstream().await;
    let echo = spawn_echo().await;
    let e = start(
        vec![fetcher(vec![
            host_rule("api.test", &[up.port()]),
            host_rule("echo.test", &[echo.port()]),
        ])],
        test_settings(),
    )
    .await;
    get_via(
        e.addr,
        &format!("http://api.test:{}/", up.port()),
        Some(&creds()),
    )
    .await;
    get_via(e.addr, "http://other.test/", Some(&creds())).await;
    get_via(e.addr, "http://other.test/", None).await;
    let mut tunnel = connect_via(e.addr, &format!("echo.test:{}", echo.port()))
        .await
        .unwrap();
    round_trip(&mut tunnel, b"metrics").await;
    let text = e.h.metrics.render();
    for name in [
        "berth_egress_requests_total",
        "berth_egress_bytes_total",
        "berth_egress_connect_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    promtool_check(&text);
}

#[tokio::test]
async fn serve_starts_the_proxy_from_config_and_stops_it_with_the_api() {
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config {
        egress: EgressConfig {
            listen: Some(free),
            ..EgressConfig::default()
        },
        ..test_config()
    };
    let h = Harness::with_config(vec![fetcher(vec![])], config).await;
    let mut answer = None;
    for _ in 0..200 {
        if TcpStream::connect(free).await.is_ok() {
            answer = Some(get_via(free, "http://api.test/", None).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answer
        .expect("the egress proxy listens on --egress-listen")
        .expect(407, "proxy_authentication_required");
    h.stop().await;
    assert!(
        TcpStream::connect(free).await.is_err(),
        "the proxy stopped with the API"
    );
}
