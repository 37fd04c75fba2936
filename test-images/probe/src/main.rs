//! `probe`: a test-only plugin that pushes against its container's limits, so tests can prove
//! the limits hold. It allocates memory, starts processes, writes files and opens TCP
//! connections on request, and reports what happened instead of failing.
//!
//! `fetch` and `tunnel` go out through the egress proxy (`$HTTP_PROXY`, `$HTTPS_PROXY`) with
//! the plugin's own credential, as any plugin must, and report the proxy's answers.
//!
//! Started as `/plugin --tls-serve NAME...` it is a TLS stand-in for a service outside Berth
//! (see `tls_serve`). Started as `/plugin --relay HOST:PORT` it is no plugin but a TCP relay from `$BERTH_PORT`
//! to HOST:PORT: the host has no route into a plugin's address-less network, so tests reach a
//! plugin through a relay that sits on that network and on an ordinary one, the way the
//! gateway does.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use berth_plugin_sdk::{Context, Error, Plugin};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod egress;
mod tls_serve;

/// The plugin's name; equals `metadata.name` in `berth.yaml`.
const NAME: &str = "probe";
/// First argument that makes the binary a sleeping child instead of a plugin.
const CHILD_ARG: &str = "--sleeping-child";
/// First argument that makes the binary a TCP relay to the address that follows.
const RELAY_ARG: &str = "--relay";
/// First argument that makes the binary a TLS stand-in for the names that follow.
const TLS_SERVE_ARG: &str = "--tls-serve";
const MIB: usize = 1024 * 1024;

/// Input of `allocate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocateInput {
    mebibytes: usize,
}

/// Output of `allocate`.
#[derive(Serialize)]
struct AllocateOutput {
    mebibytes: usize,
}

/// Allocates and writes every byte of `mebibytes` MiB, so the pages really count against
/// the memory limit; past it the kernel kills the process.
async fn allocate(input: AllocateInput, _ctx: Context) -> Result<AllocateOutput, Error> {
    if input.mebibytes > 4096 {
        return Err(Error::invalid_input("mebibytes must be at most 4096"));
    }
    let block = vec![0x5au8; input.mebibytes * MIB];
    std::hint::black_box(&block);
    Ok(AllocateOutput {
        mebibytes: input.mebibytes,
    })
}

/// Input of `spawn`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnInput {
    count: usize,
}

/// Output of `spawn`.
#[derive(Serialize)]
struct SpawnOutput {
    started: usize,
    error: Option<String>,
}

/// Starts up to `count` children of this binary that only sleep, stopping at the first
/// failure (the pids limit), then kills and reaps them so the plugin stays usable.
async fn spawn(input: SpawnInput, _ctx: Context) -> Result<SpawnOutput, Error> {
    let mut children: Vec<Child> = Vec::new();
    let mut error = None;
    for _ in 0..input.count {
        match Command::new("/proc/self/exe")
            .arg(CHILD_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => children.push(child),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let started = children.len();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(SpawnOutput { started, error })
}

/// Input of `write`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteInput {
    path: String,
}

/// Output of `write`: whether it worked, and why not.
#[derive(Serialize)]
struct WriteOutput {
    ok: bool,
    error: Option<String>,
}

/// Tries to create a small file at `path`.
async fn write(input: WriteInput, _ctx: Context) -> Result<WriteOutput, Error> {
    Ok(match std::fs::write(&input.path, b"probe\n") {
        Ok(()) => WriteOutput {
            ok: true,
            error: None,
        },
        Err(e) => WriteOutput {
            ok: false,
            error: Some(e.to_string()),
        },
    })
}

/// Input of `connect`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConnectInput {
    host: String,
    port: u16,
    timeout_ms: Option<u64>,
}

/// Output of `connect`.
#[derive(Serialize)]
struct ConnectOutput {
    connected: bool,
    error: Option<String>,
}

/// Tries to open a TCP connection to `host:port` within `timeoutMs` (default 1000).
async fn connect(input: ConnectInput, _ctx: Context) -> Result<ConnectOutput, Error> {
    let limit = Duration::from_millis(input.timeout_ms.unwrap_or(1000).clamp(1, 10_000));
    let attempt = async {
        match input.host.parse::<IpAddr>() {
            Ok(ip) => tokio::net::TcpStream::connect(SocketAddr::new(ip, input.port)).await,
            Err(_) => tokio::net::TcpStream::connect((input.host.as_str(), input.port)).await,
        }
    };
    Ok(match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(_stream)) => ConnectOutput {
            connected: true,
            error: None,
        },
        Ok(Err(e)) => ConnectOutput {
            connected: false,
            error: Some(e.to_string()),
        },
        Err(_) => ConnectOutput {
            connected: false,
            error: Some(format!("timed out after {} ms", limit.as_millis())),
        },
    })
}

/// Input of `call`.
#[derive(Deserialize)]
struct CallInput {
    plugin: String,
    capability: String,
    input: serde_json::Value,
}

/// Output of `call`: the gateway's answer.
#[derive(Serialize)]
struct CallOutput {
    status: u16,
    body: String,
}

/// Calls another plugin's capability through the gateway (`$BERTH_GATEWAY_URL`) with this
/// plugin's token (`$BERTH_PLUGIN_TOKEN`), and reports the gateway's answer as it is.
async fn call(input: CallInput, _ctx: Context) -> Result<CallOutput, Error> {
    let gateway = std::env::var("BERTH_GATEWAY_URL")
        .map_err(|_| Error::unavailable("gateway_unavailable", "BERTH_GATEWAY_URL is not set"))?;
    let token = std::env::var("BERTH_PLUGIN_TOKEN").unwrap_or_default();
    let authority = gateway
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let body = input.input.to_string();
    let request = format!(
        "POST /v1/plugins/{}/invoke/{} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        input.plugin,
        input.capability,
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| Error::unavailable("gateway_timeout", "no answer within 10 s"))?
        .map_err(|e| Error::unavailable("gateway_unreachable", e.to_string()))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(CallOutput { status, body })
}

fn plugin() -> Plugin {
    Plugin::new(NAME, env!("CARGO_PKG_VERSION"))
        .capability("allocate", allocate)
        .capability("spawn", spawn)
        .capability("write", write)
        .capability("connect", connect)
        .capability("call", call)
        .capability("fetch", egress::fetch)
        .capability("tunnel", egress::tunnel)
}

/// Forwards every connection on `$BERTH_PORT` (8080) to `target` until SIGTERM.
fn relay(target: String) -> ExitCode {
    berth_plugin_sdk::init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            berth_plugin_sdk::tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let port = std::env::var("BERTH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080u16);
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                berth_plugin_sdk::tracing::error!(error = %e, port, "could not listen");
                return ExitCode::FAILURE;
            }
        };
        berth_plugin_sdk::tracing::info!(port, target = %target, "relaying");
        let accept = async {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        };
        tokio::select! {
            () = accept => ExitCode::SUCCESS,
            () = berth_plugin_sdk::shutdown_signal() => ExitCode::SUCCESS,
        }
    })
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some(CHILD_ARG) => {
            // A child of `spawn`: hold a process slot until killed; the hour is a backstop.
            std::thread::sleep(Duration::from_secs(3600));
            ExitCode::SUCCESS
        }
        Some(RELAY_ARG) => match args.next() {
            Some(target) => relay(target),
            None => {
                eprintln!("usage: plugin --relay HOST:PORT");
                ExitCode::from(2)
            }
        },
        Some(TLS_SERVE_ARG) => tls_serve::run(args.collect()),
        _ => plugin().run(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allocate_reports_what_it_touched() {
        let out = allocate(AllocateInput { mebibytes: 2 }, Context::new())
            .await
            .unwrap();
        assert_eq!(out.mebibytes, 2);
    }

    #[tokio::test]
    async fn write_reports_failure_instead_of_failing() {
        let dir = std::env::temp_dir().join("berth-probe-test-no-such-dir/x");
        let out = write(
            WriteInput {
                path: dir.display().to_string(),
            },
            Context::new(),
        )
        .await
        .unwrap();
        assert!(!out.ok);
        assert!(out.error.is_some());
    }

    #[tokio::test]
    async fn connect_reports_a_refused_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let out = connect(
            ConnectInput {
                host: "127.0.0.1".into(),
                port,
                timeout_ms: Some(1000),
            },
            Context::new(),
        )
        .await
        .unwrap();
        assert!(!out.connected);
    }

    #[test]
    fn describe_lists_every_capability() {
        let names: Vec<String> = plugin()
            .describe()
            .capabilities
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            [
                "allocate", "spawn", "write", "connect", "call", "fetch", "tunnel"
            ]
        );
    }
}
