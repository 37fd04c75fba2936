//! `berth operator`: run the Kubernetes operator (Plugin and PluginGrant controllers).

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// Options of `berth operator`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The operator's configuration.
    #[command(flatten)]
    pub config: berth_operator::Config,
    /// Log format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs until SIGINT/SIGTERM; exits 2 on a start-up error (missing CRDs, no cluster) or when
/// another replica takes the leader Lease.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The operator's errors already name their cause; print them once, not as a chain.
    runtime
        .block_on(berth_operator::run(args.config))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
