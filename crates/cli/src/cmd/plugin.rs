//! `berth plugin test IMAGE`: start an image the way the runtime would and check it against
//! protocol v1 (`docs/protocol.md`), one line per check.

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
    /// Run an image with its manifest's limits and check it speaks protocol v1.
    Test(TestArgs),
}

/// Options of `berth plugin test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The image, e.g. berth/calculator:0.1.0 (it must carry the dev.berth.manifest label).
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// How long the plugin may take to answer /healthz after it starts.
    #[arg(long, default_value = "10s", value_parser = super::duration_arg)]
    pub health_timeout: Duration,
    /// How long the plugin may take to exit after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = super::duration_arg)]
    pub grace: Duration,
}

/// Exit codes: 0 every check passed, 1 a check failed, 2 the image or Docker is unavailable.
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
