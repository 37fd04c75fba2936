//! `berth`: validate, build, run and operate plugins.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
