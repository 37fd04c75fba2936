//! Helpers shared by the CLI's integration tests and the local-mode benchmark; each test binary
//! uses a part of them.
#![allow(dead_code)]

pub mod bases;
pub mod browser;
pub mod daemon;
pub mod dev;
pub mod gateway;
pub mod wrk;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The target directory this binary was built into, so image builds reuse it.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<binary>-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Exit code, stdout and stderr of a finished command, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a test does when the Docker Engine is unreachable: fail under `CI`, otherwise say
/// why it skips.
pub fn docker_unreachable(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set and the Docker Engine is unreachable: {why}");
    }
    eprintln!(
        "skipping {test}: the Docker Engine is unreachable ({why}); set CI=1 to make this a failure"
    );
}

/// POSTs JSON to `url` (`http://HOST:PORT` or `HOST:PORT`) + `path` over a fresh
/// connection; returns the status (0 when no answer) and the body.
pub fn post(url: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, "write failed".into());
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A child process, killed (and reaped) when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address of container `id` on its (only) network, as `docker inspect` reports it.
pub fn container_ip(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "{}", describe_output(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `cmd`, which must succeed; its standard output, trimmed.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
