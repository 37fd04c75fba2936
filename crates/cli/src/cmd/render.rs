//! `berth render FILE...`: print the objects the operator would apply, like `helm template`.

use std::io::Read;
use std::process::ExitCode;

use berth_api::RiskTier;
use berth_api::load::MAX_MANIFEST_BYTES;
use berth_operator::render::RenderOptions;
use berth_operator::template::{TemplateOptions, TemplateOutcome, template};

/// Options of `berth render`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Plugin and PluginGrant manifests; `-` reads standard input. Grants among them count.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Namespace for manifests that name none.
    #[arg(long, short, default_value = "default")]
    pub namespace: String,
    /// Plugins at or under this risk tier render without a grant (as `berth operator`).
    #[arg(long, default_value = "low", value_name = "TIER")]
    pub auto_approve_tier: RiskTier,
    /// Render plugins that no given grant covers as if their permissions were granted.
    #[arg(long)]
    pub assume_granted: bool,
    /// URL plugins reach the gateway at.
    #[arg(long, default_value = "http://berth-gateway.berth-system.svc:8080")]
    pub gateway_url: String,
    /// Namespace of the gateway pods.
    #[arg(long, default_value = "berth-system")]
    pub gateway_namespace: String,
}

/// Prints the objects as one YAML stream on stdout; exits 1 when a plugin was not rendered
/// (invalid, or awaiting approval), saying why on stderr, and 2 when a file cannot be read.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for file in &args.files {
        let mut bytes = Vec::new();
        let read = if file == "-" {
            std::io::stdin()
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        } else {
            std::fs::File::open(file).and_then(|f| {
                f.take(MAX_MANIFEST_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
        };
        if let Err(e) = read {
            eprintln!("{file}: cannot read: {e}");
            return Ok(ExitCode::from(2));
        }
        files.push((file.clone(), bytes));
    }
    let options = TemplateOptions {
        render: RenderOptions {
            gateway_url: args.gateway_url,
            gateway_namespace: args.gateway_namespace,
            default_namespace: args.namespace,
            ..RenderOptions::default()
        },
        auto_approve: args.auto_approve_tier,
        assume_granted: args.assume_granted,
        now: jiff::Timestamp::now(),
    };
    let result = template(&files, &options);
    for problem in &result.problems {
        eprintln!("{problem}");
    }
    for outcome in &result.outcomes {
        if let TemplateOutcome::Skipped {
            file,
            plugin,
            reason,
        } = outcome
        {
            eprintln!("{file}: Plugin/{plugin}: not rendered: {reason}");
        }
    }
    print!("{}", result.to_yaml());
    Ok(if result.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
