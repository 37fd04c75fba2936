//! Usage receipts over real TCP on 127.0.0.1: egress requests and tunnels through the
//! proxy and plugin-to-plugin invocations are counted per granted item, shown by
//! `GET /v1/admin/usage`, flushed into the store by UTC day and summarised in the audit log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use berth_api::{EgressRule, PluginCall};
use berth_gateway::egress::{DenySet, StaticResolver};
use berth_gateway::wire::UsageReportWire;
use berth_gateway::{EgressProxy, PluginDirectory, PluginEntry};
use berth_store::audit::types;
use berth_store::{AuditQuery, UsageRow};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const FETCH_TOKEN: &str = "fetch-plugin-token";
const WILD_TOKEN: &str = "wild-plugin-token";

/// An http-fetch-like plugin granted `egress` and a call to `echo/say`, served at `addr`.
fn fetch(egress: Vec<EgressRule>, addr: SocketAddr) -> PluginEntry {
    entry(
        plugin(
            "fetch",
            "capabilities: [{name: get}]\npermissions: {plugins: [{name: echo, capabilities: [say, shout]}]}",
        ),
        &[addr],
    )
    .with_token(FETCH_TOKEN)
    .with_granted_egress(egress)
    .with_granted_calls(vec![PluginCall {
        name: "echo".into(),
        capabilities: vec!["say".into(), "shout".into()],
    }])
}

struct Setup {
    h: Harness,
    proxy: SocketAddr,
    upstream: SocketAddr,
    /// Another server, reached through the CIDR rule (a CIDR rule wins over a host rule
    /// for the same address and port).
    other: SocketAddr,
}

/// A gateway with an egress proxy (loopback allowed, names resolved to 127.0.0.1), an
/// upstream HTTP server, and `fetch` granted `api.test` and `cdn.test` on its port plus
/// 127.0.0.0/8 on the port of the `echo` plugin.
async fn setup() -> Setup {
    let upstream = spawn_plugin(Router::new().route("/", get(|| async { "upstream" }))).await;
    let echo = spawn_plugin(echo_plugin(Recorder::default())).await;
    let port = upstream.port();
    let h = Harness::start(vec![
        entry(
            plugin("echo", "capabilities: [{name: say}, {name: shout}]"),
            &[echo],
        ),
        entry(
            plugin(
                "wild",
                "capabilities: [{name: run}]\npermissions: {plugins: [{name: echo, capabilities: [\"*\"]}]}",
            ),
            &[echo],
        )
        .with_token(WILD_TOKEN)
        .with_granted_calls(vec![PluginCall {
            name: "echo".into(),
            capabilities: vec!["*".into()],
        }]),
        fetch(
            vec![
                host_rule("api.test", &[port]),
                host_rule("cdn.test", &[port]),
                cidr_rule("127.0.0.0/8", &[echo.port()]),
            ],
            echo,
        ),
    ])
    .await;
    let lo: [IpAddr; 1] = ["127.0.0.1".parse().unwrap()];
    let resolver = StaticResolver::new()
        .with("api.test", &lo)
        .with("cdn.test", &lo);
    let settings = proxy_settings(DenySet::empty());
    let proxy = EgressProxy::with_resolver(h.gateway.clone(), settings, Arc::new(resolver));
    let proxy = serve_proxy(proxy).await;
    Setup {
        h,
        proxy,
        upstream,
        other: echo,
    }
}

fn credentials() -> String {
    basic("fetch", FETCH_TOKEN)
}

/// `GET url` through the proxy; the status code.
async fn get_via(proxy: SocketAddr, url: &str) -> u16 {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nProxy-Authorization: {}\r\n\r\n",
        credentials()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes)).await;
    let text = String::from_utf8_lossy(&bytes);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a CONNECT tunnel and closes it once the proxy answered; the status code.
async fn connect_via(proxy: SocketAddr, target: &str) -> u16 {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        credentials()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the proxy answers CONNECT")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn report(h: &Harness, query: &str) -> UsageReportWire {
    let r = h.get(&format!("/v1/admin/usage{query}"), Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    serde_json::from_str(&r.text).unwrap()
}

#[tokio::test]
async fn each_granted_rule_and_call_item_counts_its_own_uses() {
    let s = setup().await;
    let port = s.upstream.port();
    assert_eq!(
        get_via(s.proxy, &format!("http://api.test:{port}/")).await,
        200
    );
    assert_eq!(
        get_via(s.proxy, &format!("http://api.test:{port}/")).await,
        200
    );
    assert_eq!(connect_via(s.proxy, &s.other.to_string()).await, 200);
    // Refused: not counted anywhere.
    assert_eq!(
        get_via(s.proxy, &format!("http://api.test:{}/", port ^ 1)).await,
        403
    );
    let r = s.h.invoke(FETCH_TOKEN, "echo", "say", "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.h.invoke(FETCH_TOKEN, "echo", "missing", "{}")
        .await
        .expect(StatusCode::FORBIDDEN, "permission_denied");

    let usage = report(&s.h, "?since=1d").await;
    let fetch = usage.plugins.iter().find(|p| p.plugin == "fetch").unwrap();
    let counts: Vec<(Option<&str>, Option<&str>, bool, u64)> = fetch
        .egress
        .iter()
        .map(|e| {
            (
                e.rule.host.as_deref(),
                e.rule.cidr.as_deref(),
                e.granted,
                e.count,
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            (Some("api.test"), None, true, 2),
            (Some("cdn.test"), None, true, 0),
            (None, Some("127.0.0.0/8"), true, 1),
        ]
    );
    let api = &fetch.egress[0];
    let last: jiff::Timestamp = api.last_used.as_deref().unwrap().parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(last).as_secs() < 60);
    assert_eq!(fetch.egress[1].last_used, None);
    let calls: Vec<(&str, &str, u64)> = fetch
        .calls
        .iter()
        .map(|c| (c.target.as_str(), c.capability.as_str(), c.count))
        .collect();
    assert_eq!(calls, vec![("echo", "say", 1), ("echo", "shout", 0)]);
    assert!(fetch.calls[0].last_used.is_some());
    // The report carries what the plugin requests, for a narrowed grant.
    assert!(fetch.requested.is_some());
    // And where each rule took the plugin, so a wide rule can be narrowed to its uses.
    let destinations: Vec<(String, &str, u64)> = fetch
        .destinations
        .iter()
        .map(|d| {
            (
                berth_gateway::wire::usage::egress_item(&d.rule),
                d.destination.as_str(),
                d.count,
            )
        })
        .collect();
    assert_eq!(
        destinations,
        vec![
            (
                format!("127.0.0.0/8 {}", s.other.port()),
                s.other.to_string().as_str(),
                1
            ),
            (
                format!("api.test {port}"),
                format!("api.test:{port}").as_str(),
                2
            ),
        ]
    );
    let narrowed = berth_gateway::wire::usage::narrowed_permissions(fetch);
    assert_eq!(
        narrowed.network.egress,
        vec![
            host_rule("api.test", &[port]),
            cidr_rule("127.0.0.0/8", &[s.other.port()]),
        ]
    );
}

#[tokio::test]
async fn the_usage_report_needs_the_admin_scope_and_a_sane_since() {
    let s = setup().await;
    s.h.get("/v1/admin/usage", None)
        .await
        .expect(StatusCode::UNAUTHORIZED, "unauthenticated");
    s.h.get("/v1/admin/usage", Some(INVOKE_ALL))
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    let bad = s.h.get("/v1/admin/usage?since=soon", Some(ADMIN)).await;
    bad.expect(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(bad.text.contains("since: \\\"soon\\\""), "{}", bad.text);
    // No `since`: the default window, every granted item listed with no use yet.
    let usage = report(&s.h, "").await;
    let fetch = usage.plugins.iter().find(|p| p.plugin == "fetch").unwrap();
    assert_eq!(fetch.egress.len(), 3);
    assert!(fetch.egress.iter().all(|e| e.count == 0 && e.granted));
}

#[tokio::test]
async fn flushed_usage_lands_in_the_store_by_day_and_reads_back_over_a_window() {
    let s = setup().await;
    s.h.gateway.set_usage_store(s.h.store.clone());
    let port = s.upstream.port();
    assert_eq!(
        get_via(s.proxy, &format!("http://cdn.test:{port}/")).await,
        200
    );
    s.h.invoke(FETCH_TOKEN, "echo", "shout", "{}").await;

    s.h.gateway.flush_usage().await;
    assert!(s.h.gateway.usage().pending().is_empty());
    let now = jiff::Timestamp::now();
    let rows = s.h.store.usage_since(now).unwrap();
    let items: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r: &UsageRow| (r.kind.as_str(), r.item.as_str(), r.count))
        .collect();
    assert_eq!(
        items,
        vec![
            ("call", "echo/shout", 1),
            (
                "destination",
                &*format!("cdn.test {port}\tcdn.test:{port}"),
                1
            ),
            ("egress", &*format!("cdn.test {port}"), 1)
        ]
    );
    assert_eq!(rows[0].day, berth_store::usage::utc_day(now));

    // One more use, not flushed: the report adds the stored and the pending counts.
    assert_eq!(
        get_via(s.proxy, &format!("http://cdn.test:{port}/")).await,
        200
    );
    let usage = report(&s.h, "?since=30d").await;
    let fetch = usage.plugins.iter().find(|p| p.plugin == "fetch").unwrap();
    assert_eq!(fetch.egress[1].count, 2);
    assert_eq!(fetch.calls[1].count, 1);

    // A window that starts after today has nothing stored; only the pending use shows.
    let tomorrow = (now + jiff::SignedDuration::from_hours(24)).to_string();
    let later = report(&s.h, &format!("?since={tomorrow}")).await;
    let fetch = later.plugins.iter().find(|p| p.plugin == "fetch").unwrap();
    assert_eq!(fetch.egress[1].count, 1);
    assert_eq!(fetch.calls[1].count, 0);

    // Used items that are no longer granted still show, marked so.
    s.h.directory.upsert(fetch_without_grants(&s));
    let usage = report(&s.h, "?since=30d").await;
    let fetch = usage.plugins.iter().find(|p| p.plugin == "fetch").unwrap();
    assert!(fetch.egress.iter().all(|e| !e.granted));
    assert_eq!(fetch.egress.len(), 1);
    assert_eq!(fetch.egress[0].rule, host_rule("cdn.test", &[port]));
    assert_eq!(fetch.calls.len(), 1);
    assert!(!fetch.calls[0].granted);
}

fn fetch_without_grants(s: &Setup) -> PluginEntry {
    let current = s.h.directory.snapshot().get("fetch").unwrap().clone();
    PluginEntry::new((*current.plugin).clone())
        .with_token(FETCH_TOKEN)
        .with_endpoints(current.endpoints.clone())
        .with_revision(current.revision + 1)
}

#[tokio::test]
async fn without_a_store_flushed_usage_stays_in_memory() {
    let s = setup().await;
    let port = s.upstream.port();
    assert_eq!(
        get_via(s.proxy, &format!("http://api.test:{port}/")).await,
        200
    );
    s.h.gateway.flush_usage().await;
    assert!(
        s.h.store
            .usage_since(jiff::Timestamp::UNIX_EPOCH)
            .unwrap()
            .is_empty()
    );
    let usage = report(&s.h, "?since=1d").await;
    let fetch = usage.plugins.iter().find(|p| p.plugin == "fetch").unwrap();
    assert_eq!(fetch.egress[0].count, 1);
}

#[tokio::test]
async fn allowed_egress_is_summarised_per_plugin_not_written_per_connection() {
    let s = setup().await;
    let port = s.upstream.port();
    for _ in 0..3 {
        assert_eq!(
            get_via(s.proxy, &format!("http://api.test:{port}/")).await,
            200
        );
    }
    assert_eq!(connect_via(s.proxy, &s.other.to_string()).await, 200);
    s.h.flush_audit().await;
    let of_type = |t: &str| {
        s.h.store
            .query_audit(&AuditQuery {
                type_: Some(t.into()),
                ..Default::default()
            })
            .unwrap()
    };
    assert!(of_type(types::EGRESS_SUMMARY).is_empty());
    assert!(
        of_type(types::SECURITY).is_empty(),
        "allowed egress writes no event of its own"
    );

    s.h.gateway.flush_usage().await;
    s.h.flush_audit().await;
    let summaries = of_type(types::EGRESS_SUMMARY);
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let e = &summaries[0];
    assert_eq!(e.plugin.as_deref(), Some("fetch"));
    assert_eq!(e.actor, "gateway");
    assert_eq!(e.outcome, "success");
    assert_eq!(e.details["connections"], 4);
    assert_eq!(
        e.details["rules"][format!("api.test {port}")]["connections"],
        3
    );
    assert_eq!(
        e.details["rules"][format!("127.0.0.0/8 {}", s.other.port())]["connections"],
        1
    );
    assert!(e.details["bytesSent"].as_u64().unwrap() > 0);
    assert!(e.details["bytesReceived"].as_u64().unwrap() > 0);
    assert!(e.details["from"].as_str().unwrap() <= e.details["to"].as_str().unwrap());

    // Nothing new: no empty summary.
    s.h.gateway.flush_usage().await;
    s.h.flush_audit().await;
    assert_eq!(of_type(types::EGRESS_SUMMARY).len(), 1);
}

#[tokio::test]
async fn shutdown_flushes_usage_and_writes_the_last_egress_summary() {
    let s = setup().await;
    s.h.gateway.set_usage_store(s.h.store.clone());
    let port = s.upstream.port();
    assert_eq!(
        get_via(s.proxy, &format!("http://api.test:{port}/")).await,
        200
    );
    let store = s.h.store.clone();
    // The proxy task keeps a handle on the gateway, so only the server is stopped: its
    // shutdown writes the last summaries and flushes the audit log.
    s.h.begin_shutdown();
    s.h.wait_stopped().await;
    let rows = store.usage_since(jiff::Timestamp::UNIX_EPOCH).unwrap();
    let items: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.kind.as_str(), r.item.as_str()))
        .collect();
    assert_eq!(
        items,
        vec![
            ("destination", &*format!("api.test {port}\tapi.test:{port}")),
            ("egress", &*format!("api.test {port}")),
        ]
    );
    let summaries = store
        .query_audit(&AuditQuery {
            type_: Some(types::EGRESS_SUMMARY.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(summaries.len(), 1);
}

#[tokio::test]
async fn a_call_allowed_by_a_star_grant_counts_for_the_star_item() {
    let s = setup().await;
    for capability in ["say", "shout"] {
        let r = s.h.invoke(WILD_TOKEN, "echo", capability, "{}").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let usage = report(&s.h, "?since=1d").await;
    let wild = usage.plugins.iter().find(|p| p.plugin == "wild").unwrap();
    let calls: Vec<(&str, &str, bool, u64)> = wild
        .calls
        .iter()
        .map(|c| (c.target.as_str(), c.capability.as_str(), c.granted, c.count))
        .collect();
    assert_eq!(calls, vec![("echo", "*", true, 2)]);
}
