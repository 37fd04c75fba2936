use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use super::*;
use crate::fetch::ProxySettings;

/// Serves `router` on a loopback port; the server lives as long as the test's runtime.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn origin() -> String {
    serve(
        Router::new()
            .route(
                "/page",
                get(|| async {
                    (
                        axum::response::AppendHeaders([("x-test", "one"), ("x-test", "two")]),
                        "Hello big world. Bye!",
                    )
                }),
            )
            .route("/large", get(|| async { "x".repeat(10_000) })),
    )
    .await
}

fn fetcher(config: Config) -> Fetcher {
    Fetcher::new(config).unwrap()
}

fn ctx() -> Context {
    Context::new()
        .with_request_id("req-42")
        .with_budget(Duration::from_secs(5))
}

#[tokio::test]
async fn fetch_returns_status_headers_and_body() {
    let base = origin().await;
    let input = FetchInput {
        url: format!("{base}/page"),
        max_bytes: None,
    };
    let out = fetch(&fetcher(Config::default()), input, ctx())
        .await
        .unwrap();
    assert_eq!(out.status, 200);
    assert_eq!(out.body, "Hello big world. Bye!");
    assert!(!out.truncated);
    assert_eq!(out.headers["x-test"], "one, two");
}

#[tokio::test]
async fn fetch_cuts_the_body_at_max_bytes() {
    let base = origin().await;
    let input = FetchInput {
        url: format!("{base}/large"),
        max_bytes: Some(100),
    };
    let out = fetch(&fetcher(Config::default()), input, ctx())
        .await
        .unwrap();
    assert_eq!(out.body.len(), 100);
    assert!(out.truncated);
}

#[tokio::test]
async fn fetch_refuses_other_schemes_and_out_of_range_limits() {
    let f = fetcher(Config::default());
    let e = fetch(
        &f,
        FetchInput {
            url: "file:///etc/passwd".into(),
            max_bytes: None,
        },
        ctx(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    let e = fetch(
        &f,
        FetchInput {
            url: "http://x.test/".into(),
            max_bytes: Some(0),
        },
        ctx(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
}

#[tokio::test]
async fn connection_failure_is_502_fetch_failed() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let input = FetchInput {
        url: format!("http://127.0.0.1:{port}/"),
        max_bytes: None,
    };
    let e = fetch(&fetcher(Config::default()), input, ctx())
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (502, "fetch_failed"));
}

#[tokio::test]
async fn http_proxy_setting_sends_requests_through_the_proxy() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let proxy = serve(Router::new().fallback(any(move |uri: Uri| {
        let seen = seen2.clone();
        async move {
            seen.lock().unwrap().push(uri.to_string());
            "from the proxy"
        }
    })))
    .await;
    let config = Config::from_lookup(|k| (k == "HTTP_PROXY").then(|| proxy.clone()));
    assert_eq!(config.proxy.http.as_deref(), Some(proxy.as_str()));
    // `.invalid` never resolves: only a proxy can answer this.
    let input = FetchInput {
        url: "http://origin.invalid/path?q=1".into(),
        max_bytes: None,
    };
    let out = fetch(&fetcher(config), input, ctx()).await.unwrap();
    assert_eq!(out.body, "from the proxy");
    assert_eq!(*seen.lock().unwrap(), ["http://origin.invalid/path?q=1"]);
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let base = origin().await;
    let config = Config {
        proxy: ProxySettings {
            // Nothing listens on port 9 of loopback; using the proxy would fail.
            http: Some("http://127.0.0.1:9".into()),
            https: None,
            no_proxy: Some("127.0.0.1".into()),
        },
        ..Config::default()
    };
    let input = FetchInput {
        url: format!("{base}/page"),
        max_bytes: None,
    };
    let out = fetch(&fetcher(config), input, ctx()).await.unwrap();
    assert_eq!(out.status, 200);
}

#[test]
fn lower_case_proxy_variables_are_honoured_and_upper_case_wins() {
    let env: HashMap<&str, &str> = [
        ("https_proxy", "http://lower:3128"),
        ("HTTP_PROXY", "http://upper:3128"),
        ("http_proxy", "http://ignored:3128"),
        ("no_proxy", "localhost,.internal"),
    ]
    .into();
    let config = Config::from_lookup(|k| env.get(k).map(|v| v.to_string()));
    assert_eq!(
        config.proxy,
        ProxySettings {
            http: Some("http://upper:3128".into()),
            https: Some("http://lower:3128".into()),
            no_proxy: Some("localhost,.internal".into()),
        }
    );
}

#[derive(Default)]
struct GatewayLog {
    authorization: Option<String>,
    request_id: Option<String>,
    deadline_ms: Option<u64>,
    body: Option<Value>,
}

/// A stand-in for the gateway: answers text-processor's `stats` for token `t0k3n` only.
async fn fake_gateway(log: Arc<Mutex<GatewayLog>>) -> String {
    serve(Router::new().route(
        "/v1/plugins/text-processor/invoke/stats",
        post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let mut l = log.lock().unwrap();
                l.authorization = header("authorization");
                l.request_id = header("berth-request-id");
                l.deadline_ms = header("berth-deadline-ms").and_then(|v| v.parse().ok());
                l.body = serde_json::from_str(&body).ok();
                if l.authorization.as_deref() != Some("Bearer t0k3n") {
                    return (
                        StatusCode::FORBIDDEN,
                        r#"{"error":{"code":"permission_denied","message":"http-fetch may not call text-processor/stats"}}"#.to_owned(),
                    );
                }
                (StatusCode::OK, json!({"words": 4, "chars": 21, "lines": 1}).to_string())
            }
        }),
    ))
    .await
}

#[tokio::test]
async fn fetch_stats_calls_text_processor_through_the_gateway_with_the_plugin_token() {
    let base = origin().await;
    let log = Arc::new(Mutex::new(GatewayLog::default()));
    let gateway = fake_gateway(log.clone()).await;
    let config = Config {
        gateway_url: Some(format!("{gateway}/")),
        token: Some("t0k3n".into()),
        ..Config::default()
    };
    let out = fetch_stats(
        &fetcher(config),
        FetchStatsInput {
            url: format!("{base}/page"),
        },
        ctx(),
    )
    .await
    .unwrap();
    assert_eq!(out.status, 200);
    assert_eq!(out.stats, json!({"words": 4, "chars": 21, "lines": 1}));
    let l = log.lock().unwrap();
    assert_eq!(l.authorization.as_deref(), Some("Bearer t0k3n"));
    assert_eq!(l.request_id.as_deref(), Some("req-42"));
    assert!(
        l.deadline_ms.is_some_and(|ms| ms > 0 && ms <= 5000),
        "{:?}",
        l.deadline_ms
    );
    assert_eq!(l.body, Some(json!({"text": "Hello big world. Bye!"})));
}

#[tokio::test]
async fn fetch_stats_reports_the_gateway_refusal() {
    let base = origin().await;
    let gateway = fake_gateway(Arc::default()).await;
    let config = Config {
        gateway_url: Some(gateway),
        token: Some("wrong".into()),
        ..Config::default()
    };
    let e = fetch_stats(
        &fetcher(config),
        FetchStatsInput {
            url: format!("{base}/page"),
        },
        ctx(),
    )
    .await
    .unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (502, "plugin_call_failed"));
    assert!(
        e.message().contains("403") && e.message().contains("permission_denied"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn fetch_stats_without_a_gateway_is_503() {
    let base = origin().await;
    let e = fetch_stats(
        &fetcher(Config::default()),
        FetchStatsInput {
            url: format!("{base}/page"),
        },
        ctx(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.status().as_u16(), e.code()),
        (503, "gateway_unavailable")
    );
}

#[test]
fn describe_lists_both_capabilities() {
    let d = plugin(fetcher(Config::default())).describe();
    let names: Vec<&str> = d.capabilities.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fetch", "fetch_stats"]);
}
