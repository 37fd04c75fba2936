//! Just enough HTTP/1.1 over one TCP connection to see what a client library hides: whether
//! the connection is reused, and what happens to a request whose body is still arriving.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One TCP connection to the plugin.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read beyond the last answer.
    buffered: Vec<u8>,
}

/// An answer read off the connection.
#[derive(Debug)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The status code.
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the plugin said it closes the connection after this answer.
    pub fn closes(&self) -> bool {
        let connection = self
            .header("connection")
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        connection.contains("close")
            || (self.version == "HTTP/1.0" && !connection.contains("keep-alive"))
    }
}

/// The head of a request with `headers`, and `Content-Length` when there is a body.
pub fn request_head(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, String)],
    content_length: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(n) = content_length {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    head.push_str("\r\n");
    head
}

impl Connection {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffered: Vec::new(),
        })
    }

    /// The local port, which names the connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Writes `bytes` and flushes them.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads one whole answer within `limit`; 1xx answers are skipped.
    pub async fn read_response(&mut self, limit: Duration) -> Result<Response, String> {
        tokio::time::timeout(limit, async {
            loop {
                let response = self.read_one().await?;
                if !(100..200).contains(&response.status) {
                    return Ok(response);
                }
            }
        })
        .await
        .map_err(|_| format!("no complete answer within {:.0}s", limit.as_secs_f64()))?
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err(if self.buffered.is_empty() {
                "the plugin closed the connection without an answer".into()
            } else {
                format!(
                    "the plugin closed the connection in the middle of an answer: {:?}",
                    String::from_utf8_lossy(&self.buffered)
                )
            });
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buffered.len() < n {
            self.fill().await?;
        }
        Ok(self.buffered.drain(..n).collect())
    }

    async fn take_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(end + 2).await?;
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            self.fill().await?;
        }
    }

    async fn read_one(&mut self) -> Result<Response, String> {
        let status_line = self.take_line().await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.take_line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("not a header line: {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = Response {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let size_line = self.take_line().await?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("not a chunk size: {size_line:?}"))?;
                if size == 0 {
                    while !self.take_line().await?.is_empty() {}
                    break;
                }
                let chunk = self.take(size + 2).await?;
                response.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| format!("not a Content-Length: {length:?}"))?;
            response.body = self.take(length).await?;
        } else if !(response.status == 204 || response.status == 304 || response.status < 200) {
            // Neither length nor chunks: the body ends with the connection.
            while self.fill().await.is_ok() {}
            response.body = std::mem::take(&mut self.buffered);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    async fn serve(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            stream.write_all(answer).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn reads_two_answers_one_with_a_length_one_chunked() {
        let addr = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let mut connection = Connection::open(addr).await.unwrap();
        connection
            .send(request_head("GET", "/healthz", "x", &[], None).as_bytes())
            .await
            .unwrap();
        let first = connection
            .read_response(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"ok"[..]));
        assert!(!first.closes());
        let second = connection
            .read_response(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (second.status, second.body.as_slice()),
            (404, &b"abcde"[..])
        );
    }

    #[tokio::test]
    async fn an_http_1_0_answer_closes_and_a_closed_connection_is_an_error() {
        let addr = serve(b"HTTP/1.0 200 OK\r\n\r\nbye").await;
        let mut connection = Connection::open(addr).await.unwrap();
        connection.send(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let first = connection
            .read_response(Duration::from_secs(5))
            .await
            .unwrap();
        assert!(first.closes());
        assert_eq!(first.body, b"bye");
        let again = connection.read_response(Duration::from_secs(5)).await;
        assert!(again.unwrap_err().contains("closed the connection"));
    }

    #[test]
    fn a_request_head_carries_its_headers_and_length() {
        assert_eq!(
            request_head("POST", "/v1/invoke/a", "h:1", &[("X", "1".into())], Some(4)),
            "POST /v1/invoke/a HTTP/1.1\r\nHost: h:1\r\nX: 1\r\nContent-Length: 4\r\n\r\n"
        );
    }
}
