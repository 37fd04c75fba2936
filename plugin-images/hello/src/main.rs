//! `hello`: the smallest Berth plugin, and the template `berth new` copies.

use std::process::ExitCode;

use berth_plugin_sdk::{Context, Error, HookAction, HookMode, Plugin};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plugin's name; equals `metadata.name` in `berth.yaml`.
const NAME: &str = "hello";

/// Input of `greet`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetInput {
    name: Option<String>,
}

/// Output of `greet`.
#[derive(Serialize)]
struct GreetOutput {
    message: String,
}

async fn greet(input: GreetInput, _ctx: Context) -> Result<GreetOutput, Error> {
    let name = input.name.unwrap_or_else(|| "world".to_owned());
    if name.len() > 256 {
        return Err(Error::invalid_input("name is longer than 256 bytes"));
    }
    Ok(GreetOutput {
        message: format!("Hello, {name}!"),
    })
}

/// Lets every command through; a real filter would inspect `event` and may modify or veto it.
async fn before_command(_event: Value, _ctx: Context) -> Result<HookAction, Error> {
    Ok(HookAction::Continue)
}

fn plugin() -> Plugin {
    Plugin::new(NAME, env!("CARGO_PKG_VERSION"))
        .capability("greet", greet)
        .hook("before_command", HookMode::Filter, before_command)
}

fn main() -> ExitCode {
    plugin().run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn greet_uses_the_name_given() {
        let out = greet(
            GreetInput {
                name: Some("Berth".into()),
            },
            Context::new(),
        )
        .await
        .unwrap();
        assert_eq!(out.message, "Hello, Berth!");
    }

    #[tokio::test]
    async fn greet_defaults_to_world() {
        let out = greet(GreetInput { name: None }, Context::new())
            .await
            .unwrap();
        assert_eq!(out.message, "Hello, world!");
    }

    #[tokio::test]
    async fn greet_refuses_a_name_over_256_bytes() {
        let err = greet(
            GreetInput {
                name: Some("x".repeat(257)),
            },
            Context::new(),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.code(), "invalid_input");
    }

    #[test]
    fn describe_matches_the_manifest() {
        let manifest = include_str!("../berth.yaml");
        let d = plugin().describe();
        assert!(manifest.contains(&format!("name: {}", d.name)));
        assert!(manifest.contains(&format!("version: {}", d.version)));
        for c in &d.capabilities {
            assert!(
                manifest.contains(&format!("- name: {}", c.name)),
                "{}",
                c.name
            );
        }
    }
}
