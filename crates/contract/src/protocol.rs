//! The wire format of protocol v1: header and environment names, and the JSON bodies.
//!
//! `docs/protocol.md` is the normative text; these types follow it field for field so that
//! the SDK, the gateway, both backends and `berth plugin test` agree on one definition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Request header: an opaque id the gateway gives each invocation; plugins echo it back.
pub const HEADER_REQUEST_ID: &str = "berth-request-id";
/// Request header: milliseconds left before the caller gives up.
pub const HEADER_DEADLINE_MS: &str = "berth-deadline-ms";
/// Request header: who asked (a plugin name, or `user:<subject>`).
pub const HEADER_CALLER: &str = "berth-caller";
/// Gateway request header: a caller asks for a shorter deadline (milliseconds, or a
/// duration like `2s`). The gateway turns it into [`HEADER_DEADLINE_MS`] for the plugin.
pub const HEADER_TIMEOUT: &str = "berth-timeout";

/// `GET`: 200 when the plugin is ready to serve.
pub const PATH_HEALTHZ: &str = "/healthz";
/// `GET`: the plugin's [`Describe`].
pub const PATH_DESCRIBE: &str = "/v1/describe";
/// `POST` to this prefix plus a capability name: invoke it.
pub const PATH_INVOKE_PREFIX: &str = "/v1/invoke/";
/// `POST` to this prefix plus a hook name: deliver a [`HookRequest`].
pub const PATH_HOOK_PREFIX: &str = "/v1/hooks/";

/// The path that invokes `capability`.
pub fn invoke_path(capability: &str) -> String {
    format!("{PATH_INVOKE_PREFIX}{capability}")
}

/// The path that delivers `hook`.
pub fn hook_path(hook: &str) -> String {
    format!("{PATH_HOOK_PREFIX}{hook}")
}

/// Image label holding the plugin's manifest (the `Plugin` YAML), so a runtime can read an
/// image's declared permissions before running it.
pub const MANIFEST_LABEL: &str = "dev.berth.manifest";

/// Environment: the port to listen on (default 8080).
pub const ENV_PORT: &str = "BERTH_PORT";
/// Environment: base URL of the gateway, for calls to other plugins.
pub const ENV_GATEWAY_URL: &str = "BERTH_GATEWAY_URL";
/// Environment: the bearer token that identifies this plugin to the gateway.
pub const ENV_PLUGIN_TOKEN: &str = "BERTH_PLUGIN_TOKEN";
/// Environment: the plugin's name as deployed (`metadata.name`).
pub const ENV_PLUGIN_NAME: &str = "BERTH_PLUGIN_NAME";
/// Environment: the plugin's version as deployed (`spec.version`).
pub const ENV_PLUGIN_VERSION: &str = "BERTH_PLUGIN_VERSION";
/// Environment: the egress proxy for plain HTTP, with the plugin's credential in it
/// (`http://PLUGIN:TOKEN@host:port`); also set in lower case, which curl and others read.
pub const ENV_HTTP_PROXY: &str = "HTTP_PROXY";
/// Environment: the egress proxy for HTTPS (CONNECT); same value as [`ENV_HTTP_PROXY`].
pub const ENV_HTTPS_PROXY: &str = "HTTPS_PROXY";
/// Environment: hosts reached without the proxy: the gateway's host.
pub const ENV_NO_PROXY: &str = "NO_PROXY";
/// Environment: log filter (`info`, `debug`, `my_plugin=trace`); `RUST_LOG` is read when unset.
pub const ENV_LOG: &str = "BERTH_LOG";

/// Environment: the manifest's `spec.resources.maxConcurrency`; the gateway never sends the
/// plugin more requests at once.
pub const ENV_MAX_CONCURRENCY: &str = "BERTH_MAX_CONCURRENCY";
/// Environment: the memory limit in bytes (`spec.resources.memory`).
pub const ENV_MEMORY_BYTES: &str = "BERTH_MEMORY_BYTES";
/// Environment: the CPU limit in millicores (`spec.resources.cpu`).
pub const ENV_CPU_MILLIS: &str = "BERTH_CPU_MILLIS";
/// Environment: the process limit (`spec.resources.pids`).
pub const ENV_PIDS: &str = "BERTH_PIDS";
/// Environment: the invocation deadline in milliseconds (`spec.resources.timeout`).
pub const ENV_TIMEOUT_MS: &str = "BERTH_TIMEOUT_MS";
/// Environment: the size of `/tmp` in bytes (`spec.resources.tmp`).
pub const ENV_TMP_BYTES: &str = "BERTH_TMP_BYTES";

/// Port a plugin listens on when `BERTH_PORT` is unset.
pub const DEFAULT_PORT: u16 = 8080;

/// `GET /v1/describe`: what the running plugin implements.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Describe {
    /// The plugin's name; equals the manifest's `metadata.name`.
    pub name: String,
    /// The plugin's version; equals the manifest's `spec.version`.
    pub version: String,
    /// Capabilities served under `POST /v1/invoke/{name}`.
    #[serde(default)]
    pub capabilities: Vec<DescribedCapability>,
    /// Hooks served under `POST /v1/hooks/{name}`.
    #[serde(default)]
    pub hooks: Vec<DescribedHook>,
}

/// One capability in [`Describe`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DescribedCapability {
    /// The capability's name.
    pub name: String,
}

/// One hook subscription in [`Describe`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DescribedHook {
    /// The hook's name.
    pub name: String,
    /// Whether it may change the outcome.
    pub mode: HookMode,
}

/// How a plugin takes part in a hook.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    /// Answers with a [`HookAction`]: continue, modify the event, or veto it.
    Filter,
    /// Is told about the event and answers `204 No Content`; cannot change anything.
    Observe,
}

impl HookMode {
    /// The wire name: `filter` or `observe`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookMode::Filter => "filter",
            HookMode::Observe => "observe",
        }
    }
}

impl std::fmt::Display for HookMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/hooks/{hook}` request body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HookRequest<E = Value> {
    /// The event; its shape depends on the hook.
    pub event: E,
}

/// A filter hook's answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum HookAction {
    /// Let the event through unchanged.
    Continue,
    /// Replace the event; later filters and the caller see the new one.
    Modify {
        /// The replacement event.
        event: Value,
    },
    /// Stop the event; the caller is told why.
    Veto {
        /// Why, in words a user can act on.
        reason: String,
    },
}

impl HookAction {
    /// A `modify` answer carrying `event` serialized to JSON.
    pub fn modify(event: impl Serialize) -> Result<Self, serde_json::Error> {
        Ok(HookAction::Modify {
            event: serde_json::to_value(event)?,
        })
    }

    /// A `veto` answer.
    pub fn veto(reason: impl Into<String>) -> Self {
        HookAction::Veto {
            reason: reason.into(),
        }
    }
}

/// The body of every error answer: `{"error":{"code":…,"message":…}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable, lower_snake_case kind of error (`unknown_capability`, `division_by_zero`).
    pub code: String,
    /// One sentence for a person.
    pub message: String,
}
