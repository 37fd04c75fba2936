//! A `berth gateway` process on a free loopback port, for tests that drive the real binary
//! without Docker.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running `berth gateway`; killed on drop.
pub struct GatewayProcess(pub Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `berth gateway --listen 127.0.0.1:PORT` on a free port, with the arguments and
/// output `configure` adds, and waits until it listens; the process and its port.
pub fn start_gateway(configure: impl FnOnce(&mut Command)) -> (GatewayProcess, u16) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command.args(["gateway", "--listen", &format!("127.0.0.1:{port}")]);
    configure(&mut command);
    let gateway = GatewayProcess(command.spawn().expect("berth gateway starts"));
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (gateway, port)
}

/// A protocol-v1 plugin on a thread for the gateway to call: `fail` answers 500, every
/// other capability 200 `{"ok":true}`; its port.
pub fn spawn_plugin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_one(stream));
        }
    });
    port
}

fn serve_one(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, answer) = if request_line.contains("/v1/invoke/fail") {
        (
            "500 Internal Server Error",
            r#"{"error":{"code":"boom","message":"it broke"}}"#,
        )
    } else {
        ("200 OK", r#"{"ok":true}"#)
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
}
