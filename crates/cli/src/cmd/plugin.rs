//! `berth plugin test IMAGE`: start an image the way the runtime would and check it against
//! protocol v1 (`docs/protocol.md`), one line per check. `berth plugin test --exec CMD` runs
//! the same checks against a local process, without isolation, for the inner loop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod conformance;

/// Options of `berth plugin`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do with a plugin image.
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// `berth plugin` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Run an image with its manifest's limits (or a local command with --exec) and check it
    /// speaks protocol v1.
    Test(TestArgs),
}

/// Options of `berth plugin test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The image, e.g. berth/calculator:0.1.0 (it must carry the dev.berth.manifest label).
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "exec",
        conflicts_with_all = ["exec", "manifest"]
    )]
    pub image: Option<String>,
    /// Run the plugin as a local process (`sh -c CMD`, in a process group of its own) instead
    /// of an image: no container, no limits, no read-only filesystem, the host's network.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// The plugin's manifest for --exec (default: ./berth.yaml).
    #[arg(long, value_name = "FILE", requires = "exec")]
    pub manifest: Option<PathBuf>,
    /// How long the plugin may take to answer /healthz after it starts.
    #[arg(long, default_value = "10s", value_parser = super::duration_arg)]
    pub health_timeout: Duration,
    /// How long the plugin may take to exit after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = super::duration_arg)]
    pub grace: Duration,
}

/// Exit codes: 0 every check passed, 1 a check failed, 2 the image, the manifest, the command
/// or Docker is unavailable, 130 interrupted.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::Test(test) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(conformance::run(test))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PluginCommand,
    }

    fn parse(args: &[&str]) -> Result<TestArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("plugin").chain(args.iter().copied()))?;
        let PluginCommand::Test(test) = cli.command;
        Ok(test)
    }

    #[test]
    fn image_and_exec_are_mutually_exclusive_and_one_is_required() {
        assert!(parse(&["test", "berth/hello:0.1.0", "--exec", "true"]).is_err());
        assert!(parse(&["test"]).is_err());
        assert!(parse(&["test", "--manifest", "x.yaml", "berth/hello:0.1.0"]).is_err());
        let exec = parse(&["test", "--exec", "python3 main.py", "--manifest", "m.yaml"]).unwrap();
        assert_eq!(exec.exec.as_deref(), Some("python3 main.py"));
        assert_eq!(exec.manifest, Some(PathBuf::from("m.yaml")));
        assert_eq!(
            parse(&["test", "berth/hello:0.1.0"])
                .unwrap()
                .image
                .as_deref(),
            Some("berth/hello:0.1.0")
        );
    }
}
