//! Calls to plugins: pooled keep-alive HTTP/1.1 connections, deadlines, size-capped answers.
//!
//! [`Upstream`] keeps idle connections per `host:port` and sends each call on one of them
//! with hyper's HTTP/1.1 connection API directly: a call costs one lookup in a short
//! list, no task of its own and no connector machinery (decision draft "the gateway's
//! own upstream pool"). [`client`] is the general-purpose client the admin probe uses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_contract::protocol::{HEADER_CALLER, HEADER_DEADLINE_MS, HEADER_REQUEST_ID};
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

/// The general-purpose client type.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds a general-purpose pooled client (the admin probe's).
pub fn client(connect_timeout: Duration, idle_per_host: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(idle_per_host)
        .build(connector)
}

type Sender = SendRequest<Full<Bytes>>;

/// Idle keep-alive connections to plugin instances, by `host:port`.
pub struct Upstream {
    connect_timeout: Duration,
    idle_per_host: usize,
    hosts: Mutex<HashMap<String, Host>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_per_host", &self.idle_per_host)
            .finish_non_exhaustive()
    }
}

/// One `host:port`: its `Host` header value (made once) and its idle connections, the
/// most recently used last.
struct Host {
    header: HeaderValue,
    idle: Vec<(Sender, std::time::Instant)>,
}

impl Upstream {
    /// A pool that connects within `connect_timeout` and keeps at most `idle_per_host`
    /// idle connections per instance, each for at most [`IDLE_TIMEOUT`].
    pub fn new(connect_timeout: Duration, idle_per_host: usize) -> Self {
        Self {
            connect_timeout,
            idle_per_host,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `authority` (a ready one first), if any, and the `Host`
    /// header value.
    fn checkout(&self, authority: &str) -> (Option<Sender>, HeaderValue) {
        let mut hosts = self.lock();
        if let Some(host) = hosts.get_mut(authority) {
            host.idle
                .retain(|(sender, since)| !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT);
            // One whose connection already waits for the next request, else the most recent
            // (its connection is finishing the previous answer and will be ready next).
            let sender = host
                .idle
                .iter()
                .rposition(|(sender, _)| sender.is_ready())
                .or_else(|| host.idle.len().checked_sub(1))
                .map(|i| host.idle.swap_remove(i).0);
            return (sender, host.header.clone());
        }
        let header =
            HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost"));
        hosts.insert(
            authority.to_owned(),
            Host {
                header: header.clone(),
                idle: Vec::new(),
            },
        );
        (None, header)
    }

    /// Gives back a connection whose exchange finished.
    fn checkin(&self, authority: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut hosts = self.lock();
        if let Some(host) = hosts.get_mut(authority)
            && host.idle.len() < self.idle_per_host
        {
            host.idle.push((sender, std::time::Instant::now()));
        }
    }

    /// Drops idle connections that closed or outstayed [`IDLE_TIMEOUT`], and hosts left
    /// without any; the gateway calls it now and then.
    pub fn sweep(&self) {
        let mut hosts = self.lock();
        for host in hosts.values_mut() {
            host.idle
                .retain(|(sender, since)| !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT);
        }
        hosts.retain(|_, host| !host.idle.is_empty());
    }

    /// Idle connections kept, over all instances.
    pub fn idle_connections(&self) -> usize {
        self.lock().values().map(|h| h.idle.len()).sum()
    }

    async fn connect(&self, authority: &str) -> Result<Sender, CallError> {
        let parsed: Authority = authority
            .parse()
            .map_err(|_| CallError::Transport(format!("{authority:?} is not a valid host:port")))?;
        let host = parsed.host();
        // `[::1]` in a URI is `::1` to the resolver.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = parsed.port_u16().unwrap_or(80);
        let connecting = tokio::net::TcpStream::connect((host, port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(CallError::Transport(format!(
                    "cannot connect to {authority}: {e}"
                )));
            }
            Err(_) => {
                return Err(CallError::Transport(format!(
                    "cannot connect to {authority}: no connection within {} ms",
                    self.connect_timeout.as_millis()
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = rustix::net::sockopt::set_socket_keepalive(&stream, true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                CallError::Transport(format!("{authority}: {}", berth_contract::error_chain(&e)))
            })?;
        tokio::spawn(async move {
            // Ends when the plugin closes the connection or every sender is gone;
            // an error here is that of the exchange, already reported to its caller.
            let _ = connection.await;
        });
        Ok(sender)
    }
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
    /// The plugin instance (`host:port`).
    pub authority: &'a str,
    /// The path (`/v1/invoke/CAPABILITY`, `/v1/hooks/HOOK`).
    pub path: PathAndQuery,
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
pub async fn post(upstream: &Upstream, call: Call<'_>) -> Result<Answer, CallError> {
    let remaining = call.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(CallError::Timeout);
    }
    let millis = remaining.as_millis().max(1) as u64;
    let (idle, host) = upstream.checkout(call.authority);
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(header::HOST, host);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(HEADER_REQUEST_ID, call.request_id.clone());
    headers.insert(HEADER_CALLER, call.caller.clone());
    headers.insert(HEADER_DEADLINE_MS, HeaderValue::from(millis));
    let mut request = Request::new(Full::new(call.body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from(call.path);
    *request.headers_mut() = headers;
    let exchange = async {
        let (sender, answer) = send(upstream, call.authority, idle, request).await?;
        let (parts, body) = answer.response.into_parts();
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
        // The whole answer is read: the connection can carry the next call.
        if !closes(&parts.headers) {
            upstream.checkin(call.authority, sender);
        }
        Ok(Answer {
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
            upstream: answer.upstream,
        })
    };
    match tokio::time::timeout_at(call.deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout),
    }
}

/// True when the plugin said it closes the connection after this answer.
fn closes(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

struct Sent {
    response: http::Response<hyper::body::Incoming>,
    upstream: Duration,
}

/// Sends `request` on `idle` when it is still usable, else on a new connection (a request
/// that an idle connection could not take, because the plugin had closed it, is sent again
/// on a fresh one, as it never reached the plugin). Returns the connection to give back.
async fn send(
    upstream: &Upstream,
    authority: &str,
    idle: Option<Sender>,
    mut request: Request<Full<Bytes>>,
) -> Result<(Sender, Sent), CallError> {
    if let Some(mut sender) = idle
        && sender.ready().await.is_ok()
    {
        let sent = Instant::now();
        match sender.try_send_request(request).await {
            Ok(response) => {
                let upstream = sent.elapsed();
                return Ok((sender, Sent { response, upstream }));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) => request = unsent,
                None => {
                    return Err(CallError::Transport(berth_contract::error_chain(e.error())));
                }
            },
        }
    }
    let mut sender = upstream.connect(authority).await?;
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| CallError::Transport(berth_contract::error_chain(&e)))?;
    let upstream = sent.elapsed();
    Ok((sender, Sent { response, upstream }))
}

/// `path` as a request target (`/` when it cannot be one, as a malformed name would make).
pub fn path(path: &str) -> PathAndQuery {
    PathAndQuery::try_from(path).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}
