//! Calls to plugins: one pooled keep-alive HTTP/1.1 client, deadlines, size-capped answers.

use std::time::Duration;

use berth_contract::protocol::{HEADER_CALLER, HEADER_DEADLINE_MS, HEADER_REQUEST_ID};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

/// The client type.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Builds the pooled client.
pub fn client(connect_timeout: Duration, idle_per_host: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(idle_per_host)
        .build(connector)
}

/// A plugin's answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
    /// From sending the request to receiving the answer's head: the plugin's own time
    /// (and the network's), which `Server-Timing: upstream` reports.
    pub upstream: Duration,
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum CallError {
    /// The deadline passed.
    Timeout,
    /// Connecting, sending or reading failed.
    Transport(String),
    /// The answer was larger than allowed.
    TooLarge,
}

/// What to send.
#[derive(Debug)]
pub struct Call<'a> {
    /// Target URI.
    pub uri: Uri,
    /// JSON body.
    pub body: Bytes,
    /// `Berth-Request-Id`.
    pub request_id: &'a HeaderValue,
    /// `Berth-Caller`.
    pub caller: &'a HeaderValue,
    /// When the answer must be in.
    pub deadline: Instant,
    /// Largest answer accepted.
    pub max_answer: usize,
}

/// POSTs `call` and reads the whole answer, all before `call.deadline`.
pub async fn post(client: &HttpClient, call: Call<'_>) -> Result<Answer, CallError> {
    let remaining = call.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(CallError::Timeout);
    }
    let millis = remaining.as_millis().max(1) as u64;
    let request = Request::builder()
        .method(Method::POST)
        .uri(call.uri)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header(HEADER_REQUEST_ID, call.request_id)
        .header(HEADER_CALLER, call.caller)
        .header(HEADER_DEADLINE_MS, HeaderValue::from(millis))
        .body(Full::new(call.body))
        .map_err(|e| CallError::Transport(e.to_string()))?;
    let exchange = async {
        let sent = Instant::now();
        let response = client
            .request(request)
            .await
            .map_err(|e| CallError::Transport(berth_contract::error_chain(&e)))?;
        let upstream = sent.elapsed();
        let (parts, body) = response.into_parts();
        // A declared length past the limit fails before a byte of the body is read.
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > call.max_answer as u64) {
            return Err(CallError::TooLarge);
        }
        // Limited stops reading (and the connection is dropped) at the first frame past
        // the limit, so an endless answer holds at most `max_answer` bytes in memory.
        let body = Limited::new(body, call.max_answer)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    CallError::TooLarge
                } else {
                    CallError::Transport(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
            upstream,
        })
    };
    match tokio::time::timeout_at(call.deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout),
    }
}
