//! Bounded HTTP GETs through the configured proxies, and calls to other plugins through the gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_plugin_sdk::protocol::{
    ENV_GATEWAY_URL, ENV_PLUGIN_TOKEN, ErrorBody, HEADER_DEADLINE_MS, HEADER_REQUEST_ID,
};
use berth_plugin_sdk::{Context, Error};
use serde::Serialize;
use serde_json::Value;

/// Body bytes returned when the input gives no `maxBytes`.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
/// Largest `maxBytes` accepted.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// Upper bound on one fetch when the caller sets no deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Proxy settings, read from the conventional environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// `HTTP_PROXY`: used for `http://` URLs.
    pub http: Option<String>,
    /// `HTTPS_PROXY`: used for `https://` URLs.
    pub https: Option<String>,
    /// `NO_PROXY`: hosts reached directly.
    pub no_proxy: Option<String>,
}

/// Everything the plugin reads from its environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Proxies for outgoing fetches.
    pub proxy: ProxySettings,
    /// `BERTH_GATEWAY_URL`: where other plugins are called.
    pub gateway_url: Option<String>,
    /// `BERTH_PLUGIN_TOKEN`: this plugin's identity at the gateway.
    pub token: Option<String>,
}

impl Config {
    /// Reads the configuration through `var` (upper-case names first, then lower-case).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let either = |upper: &str| {
            var(upper)
                .or_else(|| var(&upper.to_ascii_lowercase()))
                .filter(|v| !v.trim().is_empty())
        };
        Self {
            proxy: ProxySettings {
                http: either("HTTP_PROXY"),
                https: either("HTTPS_PROXY"),
                no_proxy: either("NO_PROXY"),
            },
            gateway_url: var(ENV_GATEWAY_URL).filter(|v| !v.is_empty()),
            token: var(ENV_PLUGIN_TOKEN).filter(|v| !v.is_empty()),
        }
    }
}

/// What `fetch` answers.
#[derive(Serialize, Debug)]
pub struct FetchOutput {
    /// HTTP status of the final response.
    pub status: u16,
    /// Response headers; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced), cut at `maxBytes`.
    pub body: String,
    /// True when the body was longer than `maxBytes`.
    pub truncated: bool,
}

/// The HTTP client and the gateway coordinates.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    config: Config,
}

impl Fetcher {
    /// A fetcher that uses exactly the proxies in `config` (and ignores the process environment).
    pub fn new(config: Config) -> Result<Self, String> {
        let no_proxy = config
            .proxy
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("berth-http-fetch/", env!("CARGO_PKG_VERSION")));
        if let Some(url) = &config.proxy.http {
            let proxy = reqwest::Proxy::http(url)
                .map_err(|e| format!("HTTP_PROXY={url:?} is not a proxy URL: {e}"))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        if let Some(url) = &config.proxy.https {
            let proxy = reqwest::Proxy::https(url)
                .map_err(|e| format!("HTTPS_PROXY={url:?} is not a proxy URL: {e}"))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy));
        }
        let client = builder
            .build()
            .map_err(|e| format!("could not build the HTTP client: {e}"))?;
        Ok(Self { client, config })
    }

    /// GETs `url` and returns at most `max_bytes` of its body.
    pub async fn fetch(
        &self,
        url: &str,
        max_bytes: usize,
        ctx: &Context,
    ) -> Result<FetchOutput, Error> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid_input(format!("url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_input(format!(
                "url {url:?} must start with http:// or https://"
            )));
        }
        let timeout = ctx
            .remaining()
            .unwrap_or(DEFAULT_TIMEOUT)
            .min(DEFAULT_TIMEOUT);
        let mut response = self
            .client
            .get(parsed)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| fetch_error(url, &e))?;
        let status = response.status().as_u16();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch_error(url, &e))? {
            let room = max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchOutput {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            truncated,
        })
    }

    /// Invokes another plugin's capability through the gateway with this plugin's token.
    pub async fn invoke_plugin(
        &self,
        plugin: &str,
        capability: &str,
        input: &Value,
        ctx: &Context,
    ) -> Result<Value, Error> {
        let Some(gateway) = self.config.gateway_url.as_deref() else {
            return Err(Error::unavailable(
                "gateway_unavailable",
                format!(
                    "{ENV_GATEWAY_URL} is not set, so {plugin} cannot be called; run under the Berth gateway"
                ),
            ));
        };
        let url = format!(
            "{}/v1/plugins/{plugin}/invoke/{capability}",
            gateway.trim_end_matches('/')
        );
        let mut request = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(input.to_string());
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = ctx.request_id() {
            request = request.header(HEADER_REQUEST_ID, id);
        }
        if let Some(left) = ctx.remaining() {
            request = request
                .header(HEADER_DEADLINE_MS, left.as_millis().to_string())
                .timeout(left);
        }
        let response = request.send().await.map_err(|e| {
            Error::bad_gateway(
                "gateway_unreachable",
                format!("could not reach the gateway at {gateway}: {e}"),
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Error::bad_gateway(
                "gateway_error",
                format!("reading the gateway's answer: {e}"),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Error::bad_gateway(
                    "gateway_error",
                    format!("{plugin}/{capability} answered something that is not JSON: {e}"),
                )
            });
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| format!("{}: {}", b.error.code, b.error.message))
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        Err(Error::bad_gateway(
            "plugin_call_failed",
            format!(
                "calling {plugin}/{capability} through the gateway failed with {}: {detail}",
                status.as_u16()
            ),
        ))
    }
}

fn fetch_error(url: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::new(
            berth_plugin_sdk::StatusCode::GATEWAY_TIMEOUT,
            "fetch_timeout",
            format!("{url} did not answer in time"),
        )
    } else {
        // The source chain says why (DNS, refused, TLS); the top-level message alone does not.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error::bad_gateway("fetch_failed", format!("fetching {url} failed: {message}"))
    }
}
