//! `berth gateway`: run the gateway in front of plugins given by manifests and endpoints;
//! `berth gateway token`: mint a token and print its tokens-file line.

use std::process::ExitCode;

use anyhow::Context;
use berth_gateway::{Config, Gateway, Scope};
use tracing_subscriber::EnvFilter;

/// Options of `berth gateway`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Helper commands.
    #[command(subcommand)]
    pub command: Option<GatewayCommand>,
    /// Where plugins come from: `static` (manifests and endpoints given with --plugins and
    /// --endpoint), `kubernetes` (watch Plugins, PluginGrants and EndpointSlices) or
    /// `pushed` (the local supervisor pushes the directory to PUT /v1/admin/directory).
    #[arg(long, env = "BERTH_BACKEND", value_enum, default_value_t = Backend::Static)]
    pub backend: Backend,
    /// Namespace to watch with `--backend kubernetes`.
    #[arg(long, env = "BERTH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// With `--backend kubernetes`: write each plugin's live tier into `status.liveTier` of
    /// its Plugin (needs `patch` on `plugins/status`), so `kubectl get plugins` shows TIER.
    /// Only the replica holding Lease `berth-gateway-live-tier` in `--namespace` writes
    /// (needs `create` on leases and `get`/`update` on that Lease).
    #[arg(long, env = "BERTH_WRITE_LIVE_TIERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub write_live_tiers: bool,
    /// The gateway's configuration.
    #[command(flatten)]
    pub config: Config,
}

/// Where the gateway's plugin directory comes from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Manifests and endpoints from the command line.
    Static,
    /// Plugins in a Kubernetes namespace.
    Kubernetes,
    /// Directory pushed by the local supervisor through PUT /v1/admin/directory; /readyz
    /// answers 503 until the first push.
    Pushed,
}

/// `berth gateway` helpers.
#[derive(clap::Subcommand, Debug)]
pub enum GatewayCommand {
    /// Mint a bearer token: prints it once (stderr) and its tokens-file line (stdout).
    Token(TokenArgs),
}

/// Options of `berth gateway token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Who the token is for (shown as Berth-Caller and in the audit log).
    #[arg(long)]
    pub name: String,
    /// Scopes: admin, invoke:*, invoke:PLUGIN, hooks:*, hooks:HOOK, plugin:NAME.
    #[arg(long = "scope", required = true, value_delimiter = ',')]
    pub scopes: Vec<Scope>,
}

/// Runs the gateway until Ctrl-C or SIGTERM, then drains in-flight requests.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(GatewayCommand::Token(token)) = args.command {
        return mint(token);
    }
    // Logs go to stderr so that the stdout audit sink stays pure JSON lines.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = args.config;
    let (backend, namespace, tier) = (args.backend, args.namespace, config.auto_approve_tier);
    let write_live_tiers = args.write_live_tiers;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = match backend {
            Backend::Static => Gateway::from_config(&config)?,
            Backend::Kubernetes => {
                let client = kube::Client::try_default()
                    .await
                    .context("cannot reach the Kubernetes API (in-cluster config or kubeconfig)")?;
                let (directory, _watch) = berth_operator::directory::KubernetesDirectory::start(
                    client.clone(),
                    &namespace,
                    tier,
                );
                let running = Gateway::from_config_with(&config, directory)?;
                if write_live_tiers {
                    let tiers = running.gateway.subscribe_tiers();
                    let namespace = namespace.clone();
                    // One replica writes: the holder of the live-tier Lease in `namespace`.
                    let identity = std::env::var("HOSTNAME")
                        .ok()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| format!("berth-gateway-{}", std::process::id()));
                    tokio::spawn(async move {
                        berth_operator::live_tier::run(
                            client,
                            &namespace,
                            &identity,
                            tiers,
                            berth_operator::live_tier::WriteLimits::default(),
                        )
                        .await;
                    });
                }
                running
            }
            Backend::Pushed => {
                if !config.plugins.is_empty() || !config.endpoints.is_empty() {
                    tracing::warn!(
                        "--plugins and --endpoint are ignored with --backend pushed: the supervisor pushes the directory"
                    );
                }
                Gateway::from_config_pushed(&config)?
            }
        };
        if backend == Backend::Pushed && !running.gateway.has_admin_token() {
            tracing::warn!(
                "no token has the admin scope: nothing can push the plugin directory, and /readyz stays 503"
            );
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let snapshot = berth_gateway::PluginDirectory::snapshot(running.directory.as_ref());
        tracing::info!(
            listen = %listener.local_addr()?,
            plugins = snapshot.len(),
            ready = snapshot.plugins().filter(|e| e.is_ready()).count(),
            "gateway listening"
        );
        berth_gateway::serve(
            listener,
            running.gateway,
            config.shutdown_grace,
            shutdown_signal(),
        )
        .await?;
        running.audit_writer.finish().await;
        tracing::info!("gateway stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn mint(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let token = berth_contract::credential::generate_token().context("cannot read random bytes")?;
    let scopes: Vec<String> = args.scopes.iter().map(ToString::to_string).collect();
    eprintln!("token (shown once; give it to the caller): {token}");
    println!(
        "{} {} {}",
        args.name,
        berth_contract::credential::digest_line(&token),
        scopes.join(",")
    );
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    berth_plugin_sdk::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
}
