//! `berth usage [PLUGIN]`: per plugin, the granted egress rules and inter-plugin calls
//! beside how often the gateway saw each used over `--since` (usage receipts), and with
//! `--output yaml` a `PluginGrant` narrowed to the items used, which `berth grant PLUGIN
//! --from FILE` and `kubectl apply -f FILE` both take (decision 0018).
//!
//! The counts come from a gateway's admin API (`GET /v1/admin/usage`): `--gateway URL`
//! for a cluster's, else the local gateway a running `berth dev up` published (it adds the
//! counts it has not flushed yet to those in the store). With neither, or with `--store`,
//! the store is read directly: only flushed counts, beside the grants recorded there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use berth_api::risk::RiskTier;
use berth_contract::wire::usage::{
    GrantedItems, MORE_DESTINATIONS, UsageKind, UsedItem, narrowed_grant, usage_report,
};
use berth_contract::wire::{PATH_ADMIN_USAGE, PluginUsageWire, UsageReportWire};
use berth_docker::control::{LocalControl, current_user};
use berth_docker::supervisor::{AdminClient, plan};
use berth_store::Store;
use jiff::Timestamp;

use super::local::StateArgs;

/// Options of `berth usage`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this plugin.
    pub plugin: Option<String>,
    /// The window: a duration back from now (`30d`, `12h`) or an RFC 3339 time. Counts are
    /// kept per UTC day, so the window starts at the beginning of that day.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// `table` for people, `yaml` for a narrowed PluginGrant per plugin, `json` for the
    /// whole report.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// A gateway's base URL (a cluster's): read the usage from its admin API.
    #[arg(long, env = "BERTH_GATEWAY_URL", value_name = "URL")]
    pub gateway: Option<String>,
    /// A token with the `admin` scope for `--gateway`.
    #[arg(long, env = "BERTH_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read this store file directly instead of asking a gateway (flushed counts only).
    #[arg(long, value_name = "FILE", conflicts_with = "gateway")]
    pub store: Option<PathBuf>,
    /// The namespace written into the printed grants (`--output yaml`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Who the printed grants say approved them; default: the current user.
    #[arg(long)]
    pub granted_by: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// How the report is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Granted vs used, one item a line.
    Table,
    /// A PluginGrant per plugin with only the items used (multi-document YAML).
    Yaml,
    /// The report as the gateway answers it.
    Json,
}

/// Prints the report; exit 0, or an error when no source can be read.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let since = super::time_arg("--since", &args.since, false)?;
    let mut report = fetch(&args, since)?;
    if let Some(name) = &args.plugin {
        report.plugins.retain(|p| &p.plugin == name);
        if report.plugins.is_empty() {
            bail!(
                "no plugin {name:?} has grants or recorded use (see `berth list`, or the \
                 gateway's `/v1/plugins`)"
            );
        }
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", narrowed_yaml(&report, &args)?),
        Output::Table => print!("{}", table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The report from the gateway named, the local gateway, or the store.
fn fetch(args: &Args, since: Timestamp) -> anyhow::Result<UsageReportWire> {
    if let Some(url) = &args.gateway {
        let token = args.token.as_deref().ok_or_else(|| {
            anyhow!(
                "--gateway needs --token (or BERTH_GATEWAY_TOKEN): a token with the admin scope"
            )
        })?;
        return ask_gateway(&AdminClient::new(url, token), since)
            .with_context(|| format!("reading usage from {url}"));
    }
    if let Some(path) = &args.store {
        return from_store_file(path, since);
    }
    let (state, store) = args.state.open()?;
    let control = LocalControl::new(&state, &store, current_user());
    match control.gateway() {
        Ok(client) => match ask_gateway(&client, since) {
            Ok(report) => return Ok(report),
            Err(e) => eprintln!(
                "note: the local gateway at {} did not answer ({e:#}); reading the store, \
                 without the counts it has not flushed yet",
                client.base()
            ),
        },
        Err(_) => eprintln!(
            "note: no local gateway is running; reading the store (counts are flushed every \
             audit summary interval and when the gateway stops)"
        ),
    }
    from_store(&store, since)
}

fn ask_gateway(client: &AdminClient, since: Timestamp) -> anyhow::Result<UsageReportWire> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = format!(
        "{PATH_ADMIN_USAGE}?since={}",
        berth_store::format_time(since)
    );
    let (status, body) = runtime
        .block_on(client.send_with(http::Method::GET, &path, None, &[]))
        .map_err(|e| anyhow!("{e}"))?;
    if !(200..300).contains(&status) {
        bail!("the gateway answered {status}: {body}");
    }
    serde_json::from_str(&body).context("the gateway's answer is not a usage report")
}

fn from_store_file(path: &Path, since: Timestamp) -> anyhow::Result<UsageReportWire> {
    if !path.exists() {
        bail!(
            "no store at {} (--store names the file the gateway writes)",
            path.display()
        );
    }
    let store = Store::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    from_store(&store, since)
}

/// The report from a store alone: flushed counts beside the grants local mode recorded,
/// read the way the supervisor reads them for the gateway.
fn from_store(store: &Store, since: Timestamp) -> anyhow::Result<UsageReportWire> {
    let now = Timestamp::now();
    let used: Vec<UsedItem> = store
        .usage_since(since)?
        .into_iter()
        .filter_map(|r| {
            Some(UsedItem {
                kind: UsageKind::parse(&r.kind)?,
                plugin: r.plugin,
                item: r.item,
                count: r.count,
                last_used: r.last_used,
            })
        })
        .collect();
    let mut plugins = Vec::new();
    for installed in store.plugins()? {
        let Ok(plugin) = plan::parse_installed(&installed) else {
            eprintln!(
                "note: the manifest of {} no longer loads; its grants are not shown",
                installed.name
            );
            continue;
        };
        let grants = store.grants(&installed.name)?;
        let egress = plan::allowed_egress(&plugin, &grants, now, RiskTier::Low);
        let calls = plan::allowed_calls(&plugin, &grants, now, RiskTier::Low);
        plugins.push((installed.name, plugin, egress, calls));
    }
    let granted: Vec<GrantedItems<'_>> = plugins
        .iter()
        .map(|(name, plugin, egress, calls)| GrantedItems {
            plugin: name,
            requested: Some(&plugin.spec.permissions),
            egress,
            calls,
        })
        .collect();
    Ok(usage_report(
        berth_store::format_time(since),
        berth_store::format_time(now),
        &granted,
        &used,
    ))
}

/// One `PluginGrant` per plugin that is in the directory, as YAML documents.
fn narrowed_yaml(report: &UsageReportWire, args: &Args) -> anyhow::Result<String> {
    let granted_by = args.granted_by.clone().unwrap_or_else(current_user);
    let mut out = String::new();
    for usage in &report.plugins {
        if usage.requested.is_none() {
            eprintln!(
                "note: {} is not in the directory any more; no grant printed for it",
                usage.plugin
            );
            continue;
        }
        let grant = narrowed_grant(usage, report, &granted_by, args.namespace.as_deref());
        out.push_str("---\n");
        if usage.requested.as_ref() != Some(&grant.spec.permissions) {
            // Grants must cover everything a manifest requests for the plugin to run.
            out.push_str(&format!(
                "# {} asks for more than this grant covers: narrow spec.permissions in its \
                 manifest to the same permissions, or it waits in AwaitingApproval once this \
                 grant replaces the wider one\n",
                usage.plugin
            ));
        }
        out.push_str(&serde_yaml::to_string(&grant)?);
    }
    Ok(out)
}

fn item_name(usage: &PluginUsageWire) -> Vec<(&'static str, String, bool, u64, String)> {
    let mut rows = Vec::new();
    for e in &usage.egress {
        let target = e
            .rule
            .host
            .as_deref()
            .or(e.rule.cidr.as_deref())
            .unwrap_or_default();
        let ports: Vec<String> = e.rule.ports.iter().map(u16::to_string).collect();
        rows.push((
            "egress",
            format!("{target}:{}", ports.join(",")),
            e.granted,
            e.count,
            e.last_used.clone().unwrap_or_else(|| "-".into()),
        ));
    }
    for d in &usage.destinations {
        let target = d
            .rule
            .host
            .as_deref()
            .or(d.rule.cidr.as_deref())
            .unwrap_or_default();
        let ports: Vec<String> = d.rule.ports.iter().map(u16::to_string).collect();
        let destination = if d.destination == MORE_DESTINATIONS {
            "(more destinations)"
        } else {
            d.destination.as_str()
        };
        rows.push((
            "  to",
            format!("{destination} (via {target}:{})", ports.join(",")),
            true,
            d.count,
            d.last_used.clone().unwrap_or_else(|| "-".into()),
        ));
    }
    for c in &usage.calls {
        rows.push((
            "call",
            format!("{}/{}", c.target, c.capability),
            c.granted,
            c.count,
            c.last_used.clone().unwrap_or_else(|| "-".into()),
        ));
    }
    rows
}

fn table(report: &UsageReportWire) -> String {
    let mut out = format!("usage from {} to {}\n", report.since, report.until);
    out.push_str(&format!(
        "{:<20}  {:<6}  {:<36}  {:<7}  {:>8}  LAST USED\n",
        "PLUGIN", "KIND", "ITEM", "GRANTED", "USES"
    ));
    let mut unused = Vec::new();
    for usage in &report.plugins {
        let rows = item_name(usage);
        if rows.is_empty() {
            out.push_str(&format!(
                "{:<20}  (no egress or calls granted)\n",
                usage.plugin
            ));
        }
        for (kind, item, granted, count, last) in rows {
            if granted && count == 0 {
                unused.push(format!("{} {kind} {item}", usage.plugin));
            }
            out.push_str(&format!(
                "{:<20}  {:<6}  {:<36}  {:<7}  {:>8}  {last}\n",
                usage.plugin,
                kind,
                item,
                if granted { "yes" } else { "no" },
                count
            ));
        }
    }
    if !unused.is_empty() {
        out.push_str(&format!(
            "\n{} granted item(s) unused in the window; `berth usage PLUGIN --output yaml` \
             prints a grant of only what was used\n",
            unused.len()
        ));
    }
    out
}
