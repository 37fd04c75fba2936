//! `--tls-serve NAME...`: a stand-in for an HTTPS service outside Berth. It makes a
//! self-signed certificate for NAME..., prints it (PEM) on standard output so a test can
//! trust exactly it, and answers every `GET` on `$BERTH_PORT` over TLS with
//! `{"status":"ok","tls":true}`, keeping the connection open until the client closes it.

use std::process::ExitCode;
use std::sync::Arc;

use berth_plugin_sdk::tracing;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = r#"{"status":"ok","tls":true}"#;

/// Runs the stand-in until SIGTERM.
pub fn run(names: Vec<String>) -> ExitCode {
    berth_plugin_sdk::init_logging();
    let certified = match rcgen::generate_simple_self_signed(names) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make a certificate");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", certified.cert.pem());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| {
        b.with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
    });
    let config = match config {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up TLS");
            return ExitCode::FAILURE;
        }
    };
    let port = std::env::var("BERTH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8443u16);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, port, "could not listen");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(port, "serving TLS");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accept = async {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(inbound).await {
                        let _ = serve(tls).await;
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

/// Answers each request head on the connection until the client closes it.
async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
                BODY.len()
            );
            tls.write_all(answer.as_bytes()).await?;
        }
    }
}
