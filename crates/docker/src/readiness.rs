//! When a started plugin may take traffic: `GET /healthz` answers 200 and `GET /v1/describe`
//! agrees with the manifest it was deployed from.
//!
//! Polling is quick (every 20 ms) because a cold start, from container creation to the first
//! invocation, should take a few hundred milliseconds; refused connections are expected
//! until the plugin listens.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_api::Plugin;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

pub use berth_contract::protocol::{Describe, DescribedCapability, DescribedHook};

/// Pause between two health polls.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Longest wait for one answer, so a hung connection does not eat the whole budget.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/v1/describe` body read.
const MAX_DESCRIBE_BYTES: usize = 1024 * 1024;

/// Why a plugin is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// `GET /healthz` did not answer 200 before the deadline.
    #[error(
        "GET /healthz did not answer 200 in time (last: {last}); read the plugin's output, and check that it listens on $BERTH_PORT"
    )]
    Timeout {
        /// The last answer or error seen.
        last: String,
    },
    /// `/v1/describe` disagrees with the manifest; one phrase per difference.
    #[error(
        "/v1/describe disagrees with the manifest: {}; rebuild the image from this berth.yaml (`berth build DIR`) or correct the manifest",
        .0.join("; ")
    )]
    DescribeMismatch(Vec<String>),
    /// `/v1/describe` failed or answered something that is not a describe document.
    #[error(
        "GET /v1/describe failed: {0}; a plugin answers {{name, version, capabilities, hooks}} there (docs/protocol.md)"
    )]
    BadDescribe(String),
}

/// Where `/v1/describe` and the manifest disagree, one phrase each; empty when they agree.
/// Capabilities and hooks compare as sets, so their order does not matter.
pub fn describe_differences(describe: &Describe, plugin: &Plugin) -> Vec<String> {
    let mut out = Vec::new();
    if describe.name != plugin.name() {
        out.push(format!(
            "name is {:?}, the manifest says {:?}",
            describe.name,
            plugin.name()
        ));
    }
    if describe.version != plugin.spec.version {
        out.push(format!(
            "version is {:?}, the manifest says {:?}",
            describe.version, plugin.spec.version
        ));
    }
    let served: BTreeSet<&str> = describe
        .capabilities
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let declared: BTreeSet<&str> = plugin
        .spec
        .capabilities
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let missing: Vec<&&str> = declared.difference(&served).collect();
    let extra: Vec<&&str> = served.difference(&declared).collect();
    if !missing.is_empty() {
        out.push(format!(
            "capabilities in the manifest but not served: {missing:?}"
        ));
    }
    if !extra.is_empty() {
        out.push(format!(
            "capabilities served but not in the manifest: {extra:?}"
        ));
    }
    let served: BTreeSet<(&str, &str)> = describe
        .hooks
        .iter()
        .map(|h| (h.name.as_str(), h.mode.as_str()))
        .collect();
    let declared: BTreeSet<(&str, &str)> = plugin
        .spec
        .hooks
        .iter()
        .map(|h| (h.name.as_str(), h.mode.as_str()))
        .collect();
    let missing: Vec<String> = declared
        .difference(&served)
        .map(|(n, m)| format!("{n} ({m})"))
        .collect();
    let extra: Vec<String> = served
        .difference(&declared)
        .map(|(n, m)| format!("{n} ({m})"))
        .collect();
    if !missing.is_empty() {
        out.push(format!("hooks in the manifest but not served: {missing:?}"));
    }
    if !extra.is_empty() {
        out.push(format!("hooks served but not in the manifest: {extra:?}"));
    }
    out
}

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// Waits until the plugin at `base_url` (`http://host:port`, no trailing slash) answers
/// `GET /healthz` with 200, then checks that `GET /v1/describe` matches `plugin`. Gives up
/// after `timeout` with the last thing seen.
pub async fn wait_ready(
    base_url: &str,
    plugin: &Plugin,
    timeout: Duration,
) -> Result<(), NotReady> {
    let base = base_url.trim_end_matches('/').to_owned();
    for path in ["/healthz", "/v1/describe"] {
        if let Err(e) = format!("{base}{path}").parse::<Uri>() {
            return Err(NotReady::Timeout {
                last: format!("{base_url} is not a URL: {e}"),
            });
        }
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
    let client: ProbeClient = Client::builder(TokioExecutor::new()).build(connector);
    let get = |path: &'static str, deadline: Instant| {
        let client = client.clone();
        let uri: Uri = format!("{base}{path}").parse().expect("checked above");
        async move {
            get(&client, &uri, deadline)
                .await
                .map(|(status, body)| (status.as_u16(), body))
        }
    };
    wait_ready_with(get, plugin, timeout).await
}

/// [`wait_ready`] over any transport: `get(path, deadline)` performs `GET path` on the
/// plugin (`/healthz`, then `/v1/describe`) and returns the status and body. The local
/// supervisor passes one that asks the gateway container, the only thing that can reach a
/// plugin on its isolated network.
pub async fn wait_ready_with<F, Fut>(
    get: F,
    plugin: &Plugin,
    timeout: Duration,
) -> Result<(), NotReady>
where
    F: Fn(&'static str, Instant) -> Fut,
    Fut: std::future::Future<Output = Result<(u16, Bytes), String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match get("/healthz", deadline).await {
            Ok((200, _)) => break,
            Ok((status, body)) => {
                last = format!("answered {status}: {}", excerpt(&body));
            }
            Err(e) => last = e,
        }
        if Instant::now() + POLL_INTERVAL >= deadline {
            return Err(NotReady::Timeout { last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // Health is in; the describe check gets at least one request's worth of time.
    let deadline = deadline.max(Instant::now() + REQUEST_TIMEOUT);
    let (status, body) = get("/v1/describe", deadline)
        .await
        .map_err(NotReady::BadDescribe)?;
    if status != 200 {
        return Err(NotReady::BadDescribe(format!(
            "answered {status}: {}",
            excerpt(&body)
        )));
    }
    let describe: Describe = serde_json::from_slice(&body)
        .map_err(|e| NotReady::BadDescribe(format!("{e} in {}", excerpt(&body))))?;
    let differences = describe_differences(&describe, plugin);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(NotReady::DescribeMismatch(differences))
    }
}

/// One GET, its status and body, before `deadline`; errors say what happened in a phrase.
async fn get(
    client: &ProbeClient,
    uri: &Uri,
    deadline: Instant,
) -> Result<(StatusCode, Bytes), String> {
    let limit = deadline
        .saturating_duration_since(Instant::now())
        .min(REQUEST_TIMEOUT);
    let request = Request::get(uri.clone())
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| berth_contract::error_chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_DESCRIBE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::load::load_single_plugin;
    use berth_plugin_sdk::{Context, Error as SdkError, HookAction, HookMode};

    const DEMO: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: demo}
spec:
  image: berth/demo:0.1.0
  version: 0.1.0
  capabilities: [{name: a}, {name: b}]
  hooks: [{name: before_command, mode: filter}]
"#;

    fn plugin(yaml: &str) -> Plugin {
        load_single_plugin("demo.yaml", yaml.as_bytes()).unwrap()
    }

    fn describe() -> Describe {
        Describe {
            name: "demo".into(),
            version: "0.1.0".into(),
            capabilities: vec![
                DescribedCapability { name: "b".into() },
                DescribedCapability { name: "a".into() },
            ],
            hooks: vec![DescribedHook {
                name: "before_command".into(),
                mode: HookMode::Filter,
            }],
        }
    }

    #[test]
    fn describe_that_matches_in_any_order_has_no_differences() {
        assert!(describe_differences(&describe(), &plugin(DEMO)).is_empty());
    }

    #[test]
    fn describe_differences_name_each_mismatch() {
        let mut d = describe();
        d.version = "0.2.0".into();
        d.capabilities.pop();
        d.capabilities
            .push(DescribedCapability { name: "c".into() });
        d.hooks[0].mode = HookMode::Observe;
        let diffs = describe_differences(&d, &plugin(DEMO));
        assert_eq!(diffs.len(), 5, "{diffs:#?}");
        assert!(diffs[0].contains("version is \"0.2.0\""));
        assert!(diffs[1].contains("not served: [\"a\"]"));
        assert!(diffs[2].contains("not in the manifest: [\"c\"]"));
        assert!(diffs[3].contains("before_command (filter)"));
        assert!(diffs[4].contains("before_command (observe)"));
    }

    async fn unit(_input: serde_json::Value, _ctx: Context) -> Result<serde_json::Value, SdkError> {
        Ok(serde_json::Value::Null)
    }

    async fn allow(_event: serde_json::Value, _ctx: Context) -> Result<HookAction, SdkError> {
        Ok(HookAction::Continue)
    }

    /// Serves a demo plugin on a free local port after `delay`; returns its base URL.
    async fn serve_demo(delay: Duration) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // Free the port until the plugin "starts", so early polls are refused.
        drop(listener);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            berth_plugin_sdk::Plugin::new("demo", "0.1.0")
                .capability("a", unit)
                .capability("b", unit)
                .hook("before_command", HookMode::Filter, allow)
                .serve_with_shutdown(listener, std::future::pending())
                .await
                .unwrap();
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn a_plugin_that_starts_late_but_matches_is_ready() {
        let base = serve_demo(Duration::from_millis(150)).await;
        let started = std::time::Instant::now();
        wait_ready(&base, &plugin(DEMO), Duration::from_secs(5))
            .await
            .unwrap();
        // Polling every 20 ms finds it soon after it listens.
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_version_mismatch_is_named() {
        let base = serve_demo(Duration::ZERO).await;
        let other = plugin(&DEMO.replace("version: 0.1.0", "version: 0.2.0"));
        let err = wait_ready(&base, &other, Duration::from_secs(5))
            .await
            .unwrap_err();
        let NotReady::DescribeMismatch(diffs) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            diffs,
            &[r#"version is "0.1.0", the manifest says "0.2.0""#.to_owned()]
        );
        assert!(err.to_string().contains("berth build"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_times_out_with_the_last_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = wait_ready(&base, &plugin(DEMO), Duration::from_millis(200))
            .await
            .unwrap_err();
        let NotReady::Timeout { last } = &err else {
            panic!("{err:?}")
        };
        assert!(last.to_lowercase().contains("refused"), "{last}");
        assert!(!err.to_string().contains('\n'));
    }
}
