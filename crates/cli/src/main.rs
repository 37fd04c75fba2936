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
    // New subcommands go above this line, one variant each.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Crd(args) => cmd::crd::run(args),
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
