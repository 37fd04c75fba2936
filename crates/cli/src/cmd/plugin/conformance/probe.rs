//! The HTTP client side of the checks: requests with the gateway's headers, answers, and
//! what a failed request says.

use std::time::Duration;

use berth_contract::protocol::{ErrorBody, HEADER_CALLER, HEADER_DEADLINE_MS, HEADER_REQUEST_ID};
use serde_json::Value;

use super::{CALLER, Target};

/// A client for the plugin under test, sending the gateway's headers.
pub(super) struct Probe {
    pub(super) http: reqwest::Client,
    pub(super) target: Target,
    pub(super) timeout: Duration,
    pub(super) counter: std::cell::Cell<u32>,
}

/// A plugin's answer.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) content_type: Option<String>,
    pub(super) allow: Option<String>,
    pub(super) body: Vec<u8>,
}

/// A body as one line of a report: white space collapsed, at most 300 characters.
pub(super) fn one_line(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

impl Answer {
    pub(super) fn text(&self) -> String {
        one_line(&self.body)
    }

    pub(super) fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the body is not JSON ({e}): {}", self.text()))
    }

    /// Checks the body is `{"error":{"code","message"}}` sent as JSON; returns the code.
    pub(super) fn error_code(&self) -> Result<String, String> {
        let body: ErrorBody = serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "the body is not {{\"error\":{{\"code\",\"message\"}}}} ({e}): {}",
                self.text()
            )
        })?;
        if body.error.code.is_empty() || body.error.message.is_empty() {
            return Err(format!(
                "error.code and error.message must not be empty: {}",
                self.text()
            ));
        }
        let json = self.content_type.as_deref().is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        if !json {
            return Err(format!(
                "an error answer must be sent with Content-Type: application/json, got {}",
                self.content_type.as_deref().unwrap_or("none")
            ));
        }
        Ok(body.error.code)
    }

    /// Checks the answer is error `status` with `code`.
    pub(super) fn expect_error(&self, status: u16, code: &str) -> Result<(), String> {
        if self.status != status {
            return Err(format!(
                "answered {}, expected {status} {code}: {}",
                self.status,
                self.text()
            ));
        }
        let got = self.error_code()?;
        if got != code {
            return Err(format!(
                "answered {status} with error code {got:?}, expected {code:?}"
            ));
        }
        Ok(())
    }
}

impl Probe {
    pub(super) fn host(&self) -> String {
        self.target.addr.to_string()
    }

    pub(super) fn default_deadline(&self) -> String {
        self.timeout.as_millis().to_string()
    }

    /// Sends a request with the gateway's headers; `deadline` is the `Berth-Deadline-Ms`
    /// value (`None` leaves the header out).
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        deadline: Option<&str>,
    ) -> Result<Answer, String> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let mut request = self
            .http
            .request(method.clone(), format!("http://{}{path}", self.host()))
            .header(HEADER_REQUEST_ID, format!("conformance-{n}"))
            .header(HEADER_CALLER, CALLER);
        if let Some(deadline) = deadline {
            request = request.header(HEADER_DEADLINE_MS, deadline);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| request_failure(&format!("{method} {path}"), &e, &self.target))?;
        let status = response.status().as_u16();
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let allow = header(reqwest::header::ALLOW);
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the answer to {path}: {}", error_chain(&e)))?;
        Ok(Answer {
            status,
            content_type,
            allow,
            body: body.to_vec(),
        })
    }

    pub(super) async fn get(&self, path: &str) -> Result<Answer, String> {
        let deadline = self.default_deadline();
        self.send(reqwest::Method::GET, path, None, Some(&deadline))
            .await
    }

    pub(super) async fn post(&self, path: &str, body: Vec<u8>) -> Result<Answer, String> {
        let deadline = self.default_deadline();
        self.send(reqwest::Method::POST, path, Some(body), Some(&deadline))
            .await
    }
}

/// The error and every cause under it, `: `-separated (a client library's own message hides
/// the cause, e.g. "error sending request for url (…)").
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Whether a connection was refused somewhere in `error`'s causes.
pub(super) fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = e.source();
    }
    false
}

pub(super) fn connection_refused(target: &Target) -> String {
    format!(
        "connection refused at {}: listen on 0.0.0.0:$BERTH_PORT (BERTH_PORT={}), not 127.0.0.1",
        target.addr, target.port
    )
}

/// What went wrong sending `request`, with its cause and, when nothing listens, the fix.
pub(super) fn request_failure(request: &str, error: &reqwest::Error, target: &Target) -> String {
    if refused(error) {
        connection_refused(target)
    } else if error.is_timeout() {
        format!("no answer to {request} in time: {}", error_chain(error))
    } else {
        format!("no answer to {request}: {}", error_chain(error))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[tokio::test]
    async fn a_refused_connection_names_the_address_and_the_fix() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            port: 8080,
        };
        let error = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap_err();
        let message = request_failure("GET /healthz", &error, &target);
        assert_eq!(
            message,
            format!(
                "connection refused at 127.0.0.1:{port}: listen on 0.0.0.0:$BERTH_PORT (BERTH_PORT=8080), not 127.0.0.1"
            )
        );
    }

    #[test]
    fn an_error_chain_shows_every_cause_once() {
        let inner = std::io::Error::other("tcp connect error: Connection reset by peer");
        let outer = std::io::Error::other(ChainError(inner));
        let chain = error_chain(&outer);
        assert!(chain.contains("request failed"), "{chain}");
        assert!(chain.contains("Connection reset by peer"), "{chain}");
        assert!(!refused(&outer));
    }

    #[derive(Debug)]
    struct ChainError(std::io::Error);

    impl std::fmt::Display for ChainError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }

    impl std::error::Error for ChainError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
