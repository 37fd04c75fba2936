//! Write Berth plugins in Rust.
//!
//! A Berth plugin is a container that serves protocol v1 (`docs/protocol.md`) over HTTP.
//! This crate serves it for you: register typed capabilities and hooks, and the SDK answers
//! `/healthz` and `/v1/describe`, parses inputs, turns `Berth-Deadline-Ms` into a
//! cancellation (504 `deadline_exceeded`), answers every error as
//! `{"error":{"code","message"}}`, echoes `Berth-Request-Id`, logs JSON lines through
//! `tracing`, and on SIGTERM finishes the requests in flight before exiting.
//!
//! # Example
//!
//! ```no_run
//! use berth_plugin_sdk::{Context, Error, HookAction, HookMode, Plugin};
//! use serde::{Deserialize, Serialize};
//! use serde_json::Value;
//!
//! #[derive(Deserialize)]
//! struct GreetInput {
//!     name: Option<String>,
//! }
//!
//! #[derive(Serialize)]
//! struct GreetOutput {
//!     message: String,
//! }
//!
//! async fn greet(input: GreetInput, _ctx: Context) -> Result<GreetOutput, Error> {
//!     let name = input.name.unwrap_or_else(|| "world".into());
//!     if name.len() > 256 {
//!         return Err(Error::invalid_input("name is longer than 256 bytes"));
//!     }
//!     Ok(GreetOutput { message: format!("Hello, {name}!") })
//! }
//!
//! async fn before_command(event: Value, _ctx: Context) -> Result<HookAction, Error> {
//!     match event.get("command").and_then(Value::as_str) {
//!         Some(cmd) if cmd.contains("rm -rf /") => Ok(HookAction::veto("refusing to wipe the disk")),
//!         _ => Ok(HookAction::Continue),
//!     }
//! }
//!
//! fn plugin() -> Plugin {
//!     Plugin::new("hello", env!("CARGO_PKG_VERSION"))
//!         .capability("greet", greet)
//!         .hook("before_command", HookMode::Filter, before_command)
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     plugin().run()
//! }
//! ```
//!
//! Test a plugin without a socket through its router:
//!
//! ```
//! # use berth_plugin_sdk::{Context, Error, Plugin};
//! use tower::ServiceExt;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let plugin = Plugin::new("echo", "0.1.0")
//!     .capability("echo", |v: serde_json::Value, _: Context| async move { Ok::<_, Error>(v) });
//! let response = plugin
//!     .router()
//!     .oneshot(
//!         http::Request::post("/v1/invoke/echo")
//!             .body(axum::body::Body::from(r#"{"a":1}"#))
//!             .unwrap(),
//!     )
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```

mod context;
mod error;
mod logging;
mod plugin;

/// Protocol v1's wire format, shared with the gateway, the backends and `berth plugin test`.
pub use berth_contract::protocol;
pub use context::Context;
pub use error::Error;
pub use http::StatusCode;
pub use logging::JsonLines;
pub use plugin::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_BODY_BYTES, Plugin, init_logging, shutdown_signal,
};
pub use protocol::{Describe, HookAction, HookMode};
/// The logging facade the SDK logs through; plugins log with `berth_plugin_sdk::tracing::info!`.
pub use tracing;

#[cfg(test)]
mod tests;
