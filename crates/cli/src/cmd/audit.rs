//! `berth audit`: query the audit log of the local store; `berth audit verify`: walk its
//! hash chain and name the first record that was altered, removed or reordered.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use berth_store::{AuditQuery, Store};

/// Options of `berth audit`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `verify`, or nothing to list records.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Which records to list.
    #[command(flatten)]
    pub query: QueryArgs,
}

/// `berth audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first broken record.
    Verify(VerifyArgs),
}

/// Options of `berth audit` (listing).
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    /// The store file; default: the store of local mode's state directory.
    #[arg(long, env = "BERTH_STORE")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub state: super::local::StateArgs,
    /// Only this plugin's records.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only this type: lifecycle, permission, security, invocation, invocation-summary,
    /// egress-summary, hook.
    #[arg(long = "type")]
    pub type_: Option<String>,
    /// Only records this recent (`1h`, `30m`) or since an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (the newest).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Options of `berth audit verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The store file; default: the store of local mode's state directory.
    #[arg(long, env = "BERTH_STORE")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub state: super::local::StateArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How records are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for tools.
    Json,
}

/// Exit codes: 0 done (or chain intact), 1 chain broken, 2 the store cannot be read.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AuditCommand::Verify(v)) => verify(v),
        None => list(args.query),
    }
}

fn open(path: Option<&Path>, state: &super::local::StateArgs) -> anyhow::Result<Store> {
    let default;
    let path = match path {
        Some(p) => p,
        None => {
            default = state.dir()?.join("berth.db");
            &default
        }
    };
    // `exists()` would say "no store" for a file this user may not see; only NotFound is.
    if let Err(e) = std::fs::metadata(path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        bail!(
            "no store at {} (set --store or BERTH_STORE to the file the gateway writes)",
            path.display()
        );
    }
    match Store::open(path) {
        Ok(store) => Ok(store),
        // A fault names the file and the fix already.
        Err(e) if e.is_file_fault() => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", path.display())),
    }
}

fn list(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|t| super::time_arg("--since", t, false))
        .transpose()?;
    let store = open(args.store.as_deref(), &args.state)?;
    let events = store.query_audit(&AuditQuery {
        plugin: args.plugin,
        type_: args.type_,
        since,
        limit: args.limit,
    })?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&events)?),
        Output::Table => {
            println!(
                "{:>6}  {:<24}  {:<18}  {:<14}  {:<16}  {:<16}  DETAILS",
                "SEQ", "TIME", "TYPE", "OUTCOME", "PLUGIN", "ACTOR"
            );
            for e in &events {
                let mut details = e.details.to_string();
                if details.len() > 100 {
                    let cut = (0..=97)
                        .rev()
                        .find(|i| details.is_char_boundary(*i))
                        .unwrap_or(0);
                    details.truncate(cut);
                    details.push_str("...");
                }
                println!(
                    "{:>6}  {:<24}  {:<18}  {:<14}  {:<16}  {:<16}  {}",
                    e.seq,
                    e.time,
                    e.type_,
                    e.outcome,
                    e.plugin.as_deref().unwrap_or("-"),
                    e.actor,
                    details
                );
            }
            eprintln!("{} record(s)", events.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = open(args.store.as_deref(), &args.state)?;
    let report = store.verify_audit()?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => match &report.first_break {
            None => println!(
                "audit log intact: {} record(s), head {}",
                report.records, report.last_hash
            ),
            Some(b) => println!("audit log TAMPERED: {b}"),
        },
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
