//! `fetch` and `tunnel`: the probe goes out through the egress proxy the way any plugin
//! must, with the proxy URL and credential of `$HTTP_PROXY`/`$HTTPS_PROXY`, and reports what
//! the proxy (and the destination) answered instead of failing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_plugin_sdk::{Context, Error};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy of `$NAME` (or its lower-case twin): `host:port` and the `Basic` credential
/// from its user info.
struct Proxy {
    authority: String,
    basic: Option<String>,
}

impl Proxy {
    fn from_env(name: &str) -> Result<Self, Error> {
        let url = std::env::var(name)
            .or_else(|_| std::env::var(name.to_lowercase()))
            .map_err(|_| Error::unavailable("no_proxy", format!("{name} is not set")))?;
        Self::parse(name, &url)
    }

    fn parse(name: &str, url: &str) -> Result<Self, Error> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::unavailable("bad_proxy", format!("{name} is not an http:// URL"))
        })?;
        let rest = rest.trim_end_matches('/');
        let (basic, authority) = match rest.rsplit_once('@') {
            Some((user_info, authority)) => (
                Some(base64::engine::general_purpose::STANDARD.encode(user_info)),
                authority,
            ),
            None => (None, rest),
        };
        Ok(Self {
            authority: authority.to_owned(),
            basic,
        })
    }

    fn credential_header(&self) -> String {
        self.basic
            .as_ref()
            .map(|b| format!("Proxy-Authorization: Basic {b}\r\n"))
            .unwrap_or_default()
    }
}

/// Input of `fetch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FetchInput {
    url: String,
    timeout_ms: Option<u64>,
}

/// Output of `fetch`: the answer as it came (the destination's, or the proxy's refusal).
#[derive(Serialize)]
pub struct FetchOutput {
    status: u16,
    body: String,
    error: Option<String>,
}

/// `GET url` in absolute form through `$HTTP_PROXY`.
pub async fn fetch(input: FetchInput, _ctx: Context) -> Result<FetchOutput, Error> {
    let proxy = Proxy::from_env("HTTP_PROXY")?;
    let host = input
        .url
        .strip_prefix("http://")
        .ok_or_else(|| Error::invalid_input("url must start with http://"))?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\n{}Connection: close\r\n\r\n",
        input.url,
        proxy.credential_header()
    );
    let limit = Duration::from_millis(input.timeout_ms.unwrap_or(5000).clamp(1, 20_000));
    let exchange = async {
        let mut stream = TcpStream::connect(proxy.authority.as_str()).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    Ok(match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(answer)) => {
            let (status, body) = parse_answer(&answer);
            FetchOutput {
                status,
                body,
                error: None,
            }
        }
        Ok(Err(e)) => FetchOutput {
            status: 0,
            body: String::new(),
            error: Some(e.to_string()),
        },
        Err(_) => FetchOutput {
            status: 0,
            body: String::new(),
            error: Some(format!("no answer within {} ms", limit.as_millis())),
        },
    })
}

/// Input of `tunnel`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TunnelInput {
    host: String,
    port: u16,
    /// PEM of the one certificate to trust; without it the tunnel is held as raw bytes.
    certificate: Option<String>,
    /// The name the certificate must carry (default: `host`).
    server_name: Option<String>,
    /// Sent as `GET path` over TLS once the handshake is done.
    path: Option<String>,
    /// How long to keep the tunnel open afterwards, watching for the proxy to close it.
    hold_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

/// Output of `tunnel`.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TunnelOutput {
    /// The proxy's answer to `CONNECT` (0: none).
    status: u16,
    /// The proxy's answer body when it refused.
    body: String,
    /// Whether a TLS handshake with the destination completed.
    handshake: bool,
    /// The destination's answer to `GET path`, over TLS.
    answer: Option<String>,
    /// When the tunnel was closed from the other side during the hold, in ms.
    closed_after_ms: Option<u64>,
    error: Option<String>,
}

/// `CONNECT host:port` through `$HTTPS_PROXY`, then (with a certificate) a TLS handshake
/// with the destination, a `GET`, and a hold that reports whether the tunnel was closed.
pub async fn tunnel(input: TunnelInput, _ctx: Context) -> Result<TunnelOutput, Error> {
    let proxy = Proxy::from_env("HTTPS_PROXY")?;
    let limit = Duration::from_millis(input.timeout_ms.unwrap_or(5000).clamp(1, 20_000));
    let mut out = TunnelOutput::default();
    let connected = tokio::time::timeout(limit, open_tunnel(&proxy, &input, &mut out)).await;
    let stream = match connected {
        Ok(Ok(Some(stream))) => stream,
        Ok(Ok(None)) => return Ok(out),
        Ok(Err(e)) => {
            out.error = Some(e.to_string());
            return Ok(out);
        }
        Err(_) => {
            out.error = Some(format!("no tunnel within {} ms", limit.as_millis()));
            return Ok(out);
        }
    };
    let hold = Duration::from_millis(input.hold_ms.unwrap_or(0).min(60_000));
    let Some(pem) = input.certificate.as_deref() else {
        out.closed_after_ms = watch_close(stream, hold).await;
        return Ok(out);
    };
    let name = input.server_name.clone().unwrap_or(input.host.clone());
    let tls = match tokio::time::timeout(limit, handshake(stream, pem, &name)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            out.error = Some(format!("TLS: {e}"));
            return Ok(out);
        }
        Err(_) => {
            out.error = Some(format!("no TLS handshake within {} ms", limit.as_millis()));
            return Ok(out);
        }
    };
    out.handshake = true;
    let mut tls = tls;
    if let Some(path) = &input.path {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n");
        let answered = tokio::time::timeout(limit, async {
            tls.write_all(request.as_bytes()).await?;
            read_one_answer(&mut tls).await
        })
        .await;
        match answered {
            Ok(Ok(body)) => out.answer = Some(body),
            Ok(Err(e)) => out.error = Some(format!("GET {path} over TLS: {e}")),
            Err(_) => out.error = Some(format!("no answer to GET {path} over TLS")),
        }
    }
    out.closed_after_ms = watch_close(tls, hold).await;
    Ok(out)
}

/// Sends `CONNECT` and reads the proxy's answer head; the stream when it answered 200.
async fn open_tunnel(
    proxy: &Proxy,
    input: &TunnelInput,
    out: &mut TunnelOutput,
) -> std::io::Result<Option<TcpStream>> {
    let target = format!("{}:{}", input.host, input.port);
    let mut stream = TcpStream::connect(proxy.authority.as_str()).await?;
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{}\r\n",
        proxy.credential_header()
    );
    stream.write_all(request.as_bytes()).await?;
    // Byte by byte: nothing past the head may be consumed, it belongs to the tunnel.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    out.status = status_of(&text);
    if out.status == 200 {
        return Ok(Some(stream));
    }
    let mut body = vec![0u8; content_length(&text).unwrap_or(0)];
    let _ = stream.read_exact(&mut body).await;
    out.body = String::from_utf8_lossy(&body).into_owned();
    Ok(None)
}

async fn handshake(
    stream: TcpStream,
    pem: &str,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("certificate: {e}"))?;
        roots.add(cert).map_err(|e| format!("certificate: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, stream)
        .await
        .map_err(|e| e.to_string())
}

/// Reads one answer with a `Content-Length` body; returns the body.
async fn read_one_answer(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let mut body = vec![0u8; content_length(&String::from_utf8_lossy(&head)).unwrap_or(0)];
    stream.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Reads until the other side closes (end of stream or an error) or `hold` passes; the
/// time it took to close, if it did.
async fn watch_close(mut stream: impl AsyncRead + Unpin, hold: Duration) -> Option<u64> {
    if hold.is_zero() {
        return None;
    }
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = hold.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed().as_millis() as u64),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Status and body of a whole HTTP/1.1 answer read to its end (chunked bodies decoded).
fn parse_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (status_of(&text), String::new());
    };
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status_of(head), body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_comes_from_the_proxy_urls_user_info() {
        let proxy = Proxy::parse("HTTP_PROXY", "http://probe:t0k@10.0.0.1:7401/").unwrap();
        assert_eq!(proxy.authority, "10.0.0.1:7401");
        assert_eq!(
            proxy.credential_header(),
            "Proxy-Authorization: Basic cHJvYmU6dDBr\r\n"
        );
    }

    #[test]
    fn answers_are_parsed_with_or_without_chunks() {
        let plain = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(plain), (403, "{}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked), (200, "abcde".into()));
    }
}
