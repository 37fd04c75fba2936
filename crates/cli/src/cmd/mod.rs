//! One module per subcommand.

pub mod audit;
pub mod build;
pub mod crd;
pub mod dev;
pub mod gateway;
pub mod local;
pub mod new;
pub mod operator;
pub mod plugin;
pub mod render;
pub mod validate;

/// Parses a duration flag (`30s`, `1m30s`, `250ms`) with the manifest's rules and hints.
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    berth_api::quantity::parse_duration(s).map_err(|e| format!("{} ({})", e.message, e.hint))
}
