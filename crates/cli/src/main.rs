//! `berth`: validate, build, run and operate plugins.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cmd;

/// Berth runs plugins as hardened OCI containers behind one gateway, on Kubernetes or a laptop.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check Plugin and PluginGrant manifests (files, directories, or - for stdin).
    Validate(cmd::validate::Args),
    /// Print the CustomResourceDefinitions for Plugin and PluginGrant.
    Crd(cmd::crd::Args),
    /// Run the Kubernetes operator: reconcile Plugins and PluginGrants into hardened workloads.
    Operator(Box<cmd::operator::Args>),
    /// Print the Kubernetes objects the operator would apply for these manifests.
    Render(cmd::render::Args),
    /// Run the gateway: routing, auth, limits, hooks, metrics and audit for plugins.
    Gateway(Box<cmd::gateway::Args>),
    /// Query the audit log, or verify its hash chain (`berth audit verify`).
    Audit(cmd::audit::Args),
    /// Compile a plugin's static binary and build its image (berth/NAME:VERSION).
    Build(cmd::build::Args),
    /// Work with plugin images: `berth plugin test IMAGE` checks one against protocol v1.
    Plugin(cmd::plugin::Args),
    /// Create a plugin folder from the hello template.
    New(cmd::new::Args),
    /// Local mode: `berth dev up [PATH...]` runs plugins in Docker behind the gateway;
    /// `berth dev down` removes them.
    Dev(cmd::dev::Args),
    /// List installed plugins (local mode).
    List(cmd::local::ListArgs),
    /// Show one plugin: phase, revisions, grants, risk (local mode).
    Status(cmd::local::StatusArgs),
    /// Install or upgrade a plugin from a manifest file (local mode).
    Install(cmd::local::InstallArgs),
    /// Stop and remove a plugin (local mode; its audit records stay).
    Uninstall(cmd::local::NameArgs),
    /// Start a disabled plugin again (local mode).
    Enable(cmd::local::NameArgs),
    /// Stop a plugin but keep it installed (local mode).
    Disable(cmd::local::NameArgs),
    /// Approve what a plugin asks for, recording who, why and until when (local mode).
    Grant(cmd::local::GrantArgs),
    /// Withdraw a plugin's grants; it stops if it needs them (local mode).
    Revoke(cmd::local::NameArgs),
    /// Print a plugin container's output (local mode).
    Logs(cmd::local::LogsArgs),
    /// Invoke a capability through the gateway (local mode).
    Invoke(cmd::local::InvokeArgs),
    /// Publish a hook event through the gateway (local mode).
    Hook(cmd::local::HookArgs),
    /// Granted vs used egress and calls per plugin, and a grant narrowed to what was used.
    Usage(cmd::usage::Args),
    /// Drive load at a plugin through the gateway; latency, throughput, errors, resources
    /// and a tier.
    Bench(Box<cmd::bench::Args>),
    /// Push a local image to an OCI registry and print its digest.
    Push(cmd::supply::PushArgs),
    /// Sign an image in its registry with a cosign key (the digest the tag names now).
    Sign(cmd::supply::SignArgs),
    /// Make a cosign key pair for `berth sign` and `dev up --require-signature`.
    Keygen(cmd::supply::KeygenArgs),
    // New subcommands go above this line, one variant each.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Crd(args) => cmd::crd::run(args),
        Command::Operator(args) => cmd::operator::run(*args),
        Command::Render(args) => cmd::render::run(args),
        Command::Gateway(args) => cmd::gateway::run(*args),
        Command::Audit(args) => cmd::audit::run(args),
        Command::Build(args) => cmd::build::run(args),
        Command::Plugin(args) => cmd::plugin::run(args),
        Command::New(args) => cmd::new::run(args),
        Command::Dev(args) => cmd::dev::run(args),
        Command::List(args) => cmd::local::list(args),
        Command::Status(args) => cmd::local::status(args),
        Command::Install(args) => cmd::local::install(args),
        Command::Uninstall(args) => cmd::local::uninstall(args),
        Command::Enable(args) => cmd::local::set_enabled(args, true),
        Command::Disable(args) => cmd::local::set_enabled(args, false),
        Command::Grant(args) => cmd::local::grant(args),
        Command::Revoke(args) => cmd::local::revoke(args),
        Command::Logs(args) => cmd::local::logs(args),
        Command::Invoke(args) => cmd::local::invoke(args),
        Command::Hook(args) => cmd::local::hook(args),
        Command::Usage(args) => cmd::usage::run(args),
        Command::Bench(args) => cmd::bench::run(*args),
        Command::Push(args) => cmd::supply::push(args),
        Command::Sign(args) => cmd::supply::sign(args),
        Command::Keygen(args) => cmd::supply::keygen(args),
        // New match arms go above this line, one each.
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line the operator gives a benchmark Job is one this binary accepts.
    #[test]
    fn the_operators_benchmark_job_command_lines_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../operator/tests/benchmarks");
        for name in ["calculator-closed-loop.yaml", "calculator-open-loop.yaml"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let benchmark: berth_api::PluginBenchmark = serde_yaml::from_str(&text).unwrap();
            let args = berth_operator::render::bench_args(
                &benchmark,
                &berth_operator::render::BenchOptions::default(),
            );
            let cli = Cli::try_parse_from(std::iter::once("berth".to_string()).chain(args.clone()))
                .unwrap_or_else(|e| panic!("{name}: berth {}: {e}", args.join(" ")));
            let Command::Bench(bench) = cli.command else {
                panic!("{name}: not a bench command: {args:?}");
            };
            assert_eq!(bench.plugin, "calculator", "{name}");
        }
    }
}
