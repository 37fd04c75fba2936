//! Local mode's commands besides `dev up`/`dev down`: `list`, `status`, `install`,
//! `uninstall`, `enable`, `disable`, `grant`, `revoke`, `logs`, `invoke`, `hook`.
//!
//! Each writes or reads the store in the state directory through
//! [`berth_docker::control`], which also audits the change and waits for a running `berth
//! dev up` to act on it; this module parses the arguments and prints. With no supervisor
//! running, the change is recorded and takes effect at the next `berth dev up`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_api::{LiveTier, Phase, Plugin, assess};
use berth_docker::control::{InstallChange, LocalControl, Outcome, StateDir, current_user};
use berth_docker::supervisor::plan;
use berth_store::Store;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use jiff::Timestamp;
use serde_json::{Value, json};

/// Where local mode keeps its state.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StateArgs {
    /// State directory (store, admin token); default `$XDG_DATA_HOME/berth` or
    /// `~/.local/share/berth`.
    #[arg(long, env = "BERTH_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    /// The state directory, created if needed.
    pub fn state(&self) -> anyhow::Result<StateDir> {
        Ok(StateDir::resolve(self.state_dir.as_deref())?)
    }

    /// The state directory's path, created if needed.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self.state()?.path().to_path_buf())
    }

    /// The state directory and a connection to its store.
    pub fn open(&self) -> anyhow::Result<(StateDir, Store)> {
        let state = self.state()?;
        let store = state.open_store()?;
        Ok((state, store))
    }
}

/// The control plane over an opened state directory, acting as the current user.
fn control<'a>(state: &'a StateDir, store: &'a Store) -> LocalControl<'a> {
    LocalControl::new(state, store, current_user())
}

/// A change is committed even when its audit event could not be written; say so.
fn warn_audit(error: Option<String>) {
    if let Some(e) = error {
        eprintln!("warning: the audit log could not be written: {e}");
    }
}

/// Waits for a running `berth dev up` to act, prints what became of `plugin` and returns
/// the exit code: 0 when the outcome is a phase in `accept`.
fn await_outcome(
    control: &LocalControl<'_>,
    plugin: &str,
    timeout: Duration,
    accept: &[Phase],
) -> anyhow::Result<ExitCode> {
    let outcome = control.await_outcome(plugin, timeout, accept)?;
    match &outcome {
        Outcome::Recorded => {
            println!("recorded; `berth dev up` is not running, so it takes effect at the next one")
        }
        Outcome::NotActedOn { timeout } => println!(
            "recorded; the supervisor has not acted on it within {} s (see `berth status {plugin}`)",
            timeout.as_secs()
        ),
        Outcome::Status { phase, reason, .. } => println!(
            "{plugin}: {phase}{}",
            reason
                .as_ref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        ),
        Outcome::Removed => println!("{plugin}: removed"),
    }
    Ok(if outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Options shared by commands that wait for the supervisor.
#[derive(clap::Args, Clone, Debug)]
pub struct WaitArgs {
    /// How long to wait for a running `berth dev up` to act.
    #[arg(long, default_value = "120s", value_parser = super::duration_arg)]
    pub timeout: Duration,
}

/// Options of `berth list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The gateway container's state as `berth dev up` last wrote it.
fn gateway_state(store: &Store) -> Option<Value> {
    let text = store
        .setting(berth_docker::supervisor::GATEWAY_STATUS_SETTING)
        .ok()??;
    serde_json::from_str(&text).ok()
}

/// Where the running local gateway is reached: the published port on 127.0.0.1, and its
/// own address when this host routes to it (no userland proxy); `None` without a gateway.
fn gateway_address_line(store: &Store) -> Option<String> {
    use berth_docker::supervisor::{GATEWAY_DIRECT_URL_SETTING, GATEWAY_URL_SETTING};
    let published = store.setting(GATEWAY_URL_SETTING).ok().flatten()?;
    Some(
        match store.setting(GATEWAY_DIRECT_URL_SETTING).ok().flatten() {
            Some(direct) => {
                format!("gateway: {published} (from this host also {direct}, without docker-proxy)")
            }
            None => format!("gateway: {published}"),
        },
    )
}

/// One line about a gateway container that is down; `None` while it serves.
fn gateway_down_line(gateway: Option<&Value>) -> Option<String> {
    let g = gateway.filter(|g| g["state"] == "down")?;
    Some(format!(
        "gateway: DOWN since {} ({}); no plugin is reachable; `berth dev up` is restarting it",
        g["since"].as_str().unwrap_or("?"),
        g["reason"].as_str().unwrap_or("unknown reason")
    ))
}

/// Each plugin's live tier as the running local gateway rates it (`GET /v1/plugins`);
/// `None` when no gateway answers, so the tier is shown as unknown rather than guessed.
fn live_tiers(
    state: &StateDir,
    store: &Store,
) -> Option<std::collections::BTreeMap<String, LiveTier>> {
    if gateway_state(store).is_some_and(|g| g["state"] == "down") {
        return None;
    }
    let client = control(state, store).gateway().ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let (status, body) = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(3),
                client.send(http::Method::GET, "/v1/plugins", None),
            )
            .await
        })
        .ok()?
        .ok()?;
    if status != 200 {
        return None;
    }
    let listed: Value = serde_json::from_str(&body).ok()?;
    Some(
        listed["plugins"]
            .as_array()?
            .iter()
            .filter_map(|p| {
                let name = p["name"].as_str()?.to_owned();
                let live = serde_json::from_value(p["liveTier"].clone()).ok()?;
                Some((name, live))
            })
            .collect(),
    )
}

/// A live tier in a table cell: the tier, `unrated` below the minimum calls, `-` unknown.
fn tier_cell(live: Option<&LiveTier>) -> String {
    match live {
        Some(LiveTier { tier: Some(t), .. }) => t.to_string(),
        Some(_) => "unrated".into(),
        None => "-".into(),
    }
}

/// A table without borders whose values start under their headers.
fn plain_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        column.set_cell_alignment(CellAlignment::Left);
    }
    table
}

/// A table's lines without the padding after the last column.
fn table_text(table: &Table) -> String {
    table
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `berth list`'s table.
fn list_table(rows: &[Value]) -> String {
    let mut table = plain_table(&[
        "NAME", "VERSION", "PHASE", "REV", "RESTARTS", "RISK", "TIER", "REASON",
    ]);
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
        table.add_row(vec![
            s("name"),
            s("version"),
            s("phase"),
            r["revision"].as_u64().map_or("-".into(), |v| v.to_string()),
            r["restarts"].as_u64().unwrap_or(0).to_string(),
            s("risk"),
            s("tier"),
            r["reason"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    table_text(&table)
}

/// `berth list`: installed plugins and what they are doing.
pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let installed = store.plugins()?;
    let tiers = if installed.is_empty() {
        None
    } else {
        live_tiers(&state, &store)
    };
    let mut rows = Vec::new();
    for inst in installed {
        let plugin = plan::parse_installed(&inst).ok();
        let status = store.status(&inst.name)?;
        let risk = plugin
            .as_ref()
            .map(|p| assess(&p.spec.permissions, &p.spec.hooks));
        let live = tiers.as_ref().and_then(|t| t.get(&inst.name));
        rows.push(json!({
            "name": inst.name,
            "version": plugin.as_ref().map(|p| p.spec.version.clone()),
            "enabled": inst.enabled,
            "phase": status.as_ref().map(|s| s.phase.clone()).unwrap_or_else(|| "Installed".into()),
            "revision": status.as_ref().and_then(|s| s.serving_revision),
            "restarts": status.as_ref().map(|s| s.restarts).unwrap_or(0),
            "risk": risk.as_ref().map(|r| format!("{} {}", r.score, r.tier)),
            "tier": live.map(|l| tier_cell(Some(l))),
            "liveTier": live,
            "reason": status.as_ref().and_then(|s| s.reason.clone()),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    match gateway_down_line(gateway_state(&store).as_ref()) {
        Some(line) => println!("{line}"),
        None => {
            if let Some(line) = gateway_address_line(&store) {
                println!("{line}");
            }
        }
    }
    if rows.is_empty() {
        println!("no plugins installed (`berth dev up examples/` or `berth install FILE`)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", list_table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// The live tier in one line of `berth status`, and the reasons under it.
fn tier_lines(live: Option<&LiveTier>) -> Vec<String> {
    let Some(live) = live else {
        return vec![
            "tier:      - (no local gateway answered; it rates plugins from live traffic)".into(),
        ];
    };
    let window = format!("{} calls in the last {} s", live.calls, live.window_seconds);
    let Some(tier) = live.tier else {
        return vec![format!("tier:      unrated ({window}; too few to rate)")];
    };
    let mut lines = vec![match live.inputs {
        Some(i) => format!(
            "tier:      {tier} (latency {:.1} ms, {:.3} % errors{}; {window})",
            i.latency_ms,
            i.error_ratio * 100.0,
            i.resource_ratio
                .map(|r| format!(", {:.0} % of a resource limit", r * 100.0))
                .unwrap_or_default()
        ),
        None => format!("tier:      {tier} ({window})"),
    }];
    lines.extend(live.reasons.iter().map(|r| format!("           {r}")));
    lines
}

/// The last `berth bench` run of `plugin` in one line, if one is stored.
fn last_benchmark(store: &Store, plugin: &str) -> Option<(Value, String)> {
    let run = store.bench_runs(plugin, 1).ok()?.into_iter().next()?;
    let report: berth_api::BenchReport = serde_json::from_str(&run.report).ok()?;
    let line = format!(
        "benchmark: {} at {} — p50 {:.1} ms, p99 {:.1} ms, {:.0} req/s, {:.3} % errors",
        report.verdict.tier,
        report.started_at,
        report.latency.p50_ms,
        report.latency.p99_ms,
        report.throughput,
        report.error_ratio * 100.0
    );
    let summary = json!({
        "tier": report.verdict.tier,
        "startedAt": report.started_at,
        "p50Ms": report.latency.p50_ms,
        "p99Ms": report.latency.p99_ms,
        "throughput": report.throughput,
        "errorRatio": report.error_ratio,
    });
    Some((summary, line))
}

/// Options of `berth status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The plugin.
    name: String,
    #[command(flatten)]
    state: StateArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `berth status NAME`: phase, revisions, grants and risk of one plugin.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let control = control(&state, &store);
    let inst = control.installed(&args.name)?;
    let plugin = control.plugin(&args.name)?;
    let risk = assess(&plugin.spec.permissions, &plugin.spec.hooks);
    let status = store.status(&args.name)?;
    let revisions = store.revisions(&args.name)?;
    let grants = store.grants(&args.name)?;
    let tiers = live_tiers(&state, &store);
    let live = tiers.as_ref().and_then(|t| t.get(&args.name));
    let benchmark = last_benchmark(&store, &args.name);
    let out = json!({
        "name": inst.name,
        "version": plugin.spec.version,
        "image": plugin.spec.image,
        "enabled": inst.enabled,
        "source": inst.source,
        "status": status,
        "risk": risk,
        "revisions": revisions,
        "grants": grants,
        "gateway": gateway_state(&store),
        "tier": live.map(|l| tier_cell(Some(l))),
        "liveTier": live,
        "benchmark": benchmark.as_ref().map(|(summary, _)| summary),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {} ({})",
        inst.name, plugin.spec.version, plugin.spec.image
    );
    match &status {
        Some(s) => {
            println!(
                "phase:     {}{}",
                s.phase,
                s.reason
                    .as_ref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            );
            if let Some(r) = s.serving_revision {
                println!("serving:   revision {r}");
            }
            println!("restarts:  {}", s.restarts);
        }
        None => println!("phase:     not yet seen by `berth dev up`"),
    }
    if let Some(line) = gateway_down_line(Some(&out["gateway"])) {
        println!("{line}");
    }
    println!("enabled:   {}", inst.enabled);
    println!("risk:      {} ({})", risk.score, risk.tier);
    for r in &risk.reasons {
        println!("           {r}");
    }
    for line in tier_lines(live) {
        println!("{line}");
    }
    if let Some((_, line)) = &benchmark {
        println!("{line}");
    }
    if !revisions.is_empty() {
        println!("revisions:");
        for r in revisions.iter().take(10) {
            // A local image runs by its id; a registry image's pinned reference names
            // its digest already.
            let digest = match &r.image_digest {
                Some(d) if !r.image.contains(d.as_str()) => format!(" ({d})"),
                _ => String::new(),
            };
            let signed = r
                .signed_by
                .as_ref()
                .map(|k| format!(", signed by {k}"))
                .unwrap_or_default();
            println!(
                "  {:>4}  {:<10} {}  {}{digest}{signed}{}",
                r.revision,
                r.state,
                r.created_at,
                r.image,
                r.reason
                    .as_ref()
                    .map(|x| format!(" — {x}"))
                    .unwrap_or_default()
            );
        }
    }
    if !grants.is_empty() {
        println!("grants:");
        for g in &grants {
            println!(
                "  #{} by {} at {}{}{}{}",
                g.id,
                g.granted_by,
                g.granted_at,
                g.expires_at
                    .as_ref()
                    .map(|e| format!(", expires {e}"))
                    .unwrap_or_default(),
                g.revoked_at
                    .as_ref()
                    .map(|e| format!(", revoked {e}"))
                    .unwrap_or_default(),
                g.reason
                    .as_ref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `berth install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// A file with one Plugin manifest.
    file: PathBuf,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    wait: WaitArgs,
}

/// Reads and validates one Plugin manifest file.
pub fn read_manifest(file: &Path) -> Result<(String, Plugin), ExitCode> {
    let shown = file.display().to_string();
    let bytes = match super::validate::read_manifest_file(file) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(problem)) => {
            eprintln!("error: {problem}");
            return Err(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("error: {shown}: {e}");
            return Err(ExitCode::from(1));
        }
    };
    match berth_api::load::load_single_plugin(&shown, &bytes) {
        Ok(p) => Ok((String::from_utf8_lossy(&bytes).into_owned(), p)),
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            Err(ExitCode::from(1))
        }
    }
}

/// `berth install FILE`: install or upgrade a plugin.
pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let (yaml, plugin) = match read_manifest(&args.file) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let (state, store) = args.state.open()?;
    let control = control(&state, &store);
    let outcome = control.install(&args.file, &yaml, &plugin)?;
    if let Some(old) = &outcome.previous {
        println!("{}: {} → {}", outcome.name, old.version, outcome.version);
        for a in &old.diff.added {
            println!("  + {a}");
        }
        for r in &old.diff.removed {
            println!("  - {r}");
        }
    }
    if outcome.change == InstallChange::Unchanged {
        println!("{}: unchanged", outcome.name);
    }
    await_outcome(
        &control,
        &outcome.name,
        args.wait.timeout,
        &[Phase::Ready, Phase::AwaitingApproval, Phase::Disabled],
    )
}

/// Options of commands that name one plugin.
#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The plugin.
    name: String,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    wait: WaitArgs,
}

/// `berth uninstall NAME`: stop and forget a plugin (its audit records stay).
pub fn uninstall(args: NameArgs) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let control = control(&state, &store);
    warn_audit(control.uninstall(&args.name)?);
    await_outcome(&control, &args.name, args.wait.timeout, &[])
}

/// `berth enable NAME` / `berth disable NAME`.
pub fn set_enabled(args: NameArgs, enabled: bool) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let control = control(&state, &store);
    warn_audit(control.set_enabled(&args.name, enabled)?);
    let accept: &[Phase] = if enabled {
        &[Phase::Ready, Phase::AwaitingApproval]
    } else {
        &[Phase::Disabled]
    };
    await_outcome(&control, &args.name, args.wait.timeout, accept)
}

/// Options of `berth grant`.
#[derive(clap::Args, Debug)]
pub struct GrantArgs {
    /// The plugin.
    name: String,
    /// Why (recorded with the grant).
    #[arg(long)]
    reason: Option<String>,
    /// When it lapses: a duration from now (`30d`, `12h`) or an RFC 3339 time.
    #[arg(long, conflicts_with = "from")]
    expires: Option<String>,
    /// Grant what this PluginGrant file holds (e.g. from `berth usage NAME --output yaml`)
    /// instead of everything the plugin asks for; it replaces the grants in force.
    #[arg(long, value_name = "FILE", conflicts_with = "reason")]
    from: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    wait: WaitArgs,
}

/// The one `PluginGrant` of `path`, checked, or an error naming the file and field.
fn grant_file(path: &Path) -> anyhow::Result<berth_api::PluginGrant> {
    let shown = path.display().to_string();
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    if size > berth_api::load::MAX_MANIFEST_BYTES as u64 {
        bail!("{}", berth_api::load::too_large(&shown, size));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    let loaded = berth_api::load_manifests(&shown, &bytes);
    if loaded.has_errors() {
        let problems: Vec<String> = loaded
            .problems
            .iter()
            .filter(|p| p.is_error())
            .map(ToString::to_string)
            .collect();
        bail!("{}", problems.join("\n"));
    }
    let mut grants = loaded
        .documents
        .into_iter()
        .filter_map(|d| match d.manifest {
            berth_api::Manifest::Grant(g) => Some(*g),
            berth_api::Manifest::Plugin(_) => None,
        });
    match (grants.next(), grants.next()) {
        (Some(grant), None) => Ok(grant),
        (None, _) => bail!(
            "{shown}: no PluginGrant in the file (print one with `berth usage PLUGIN --output yaml`)"
        ),
        (Some(_), Some(_)) => bail!(
            "{shown}: more than one PluginGrant; keep the one for this plugin (one file per grant)"
        ),
    }
}

fn expiry(text: &str) -> anyhow::Result<Timestamp> {
    let t = super::time_arg("--expires", text, true)?;
    if t <= Timestamp::now() {
        bail!("--expires {text}: that time has passed");
    }
    Ok(t)
}

/// `berth grant NAME`: approve what the installed version asks for.
pub fn grant(args: GrantArgs) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let control = control(&state, &store);
    // An unknown plugin or a manifest that no longer loads is reported before a bad flag.
    control.plugin(&args.name)?;
    let granted = match &args.from {
        Some(path) => {
            let grant = grant_file(path)?;
            control.grant_from(&args.name, &grant, &path.display().to_string())?
        }
        None => {
            let expires = args.expires.as_deref().map(expiry).transpose()?;
            control.grant(&args.name, args.reason.as_deref(), expires)?
        }
    };
    let heading = if args.from.is_some() {
        "is granted"
    } else {
        "asks for"
    };
    println!(
        "{} {} {heading} (risk {} {}):",
        granted.plugin.name(),
        granted.plugin.spec.version,
        granted.risk.score,
        granted.risk.tier
    );
    for item in &granted.items {
        println!("  {item}");
    }
    for r in &granted.risk.reasons {
        println!("  · {r}");
    }
    if !granted.new_since_last_grant.is_empty() {
        println!("new since the last grant:");
        for a in &granted.new_since_last_grant {
            println!("  + {a}");
        }
    }
    if !granted.not_covered.is_empty() {
        eprintln!(
            "warning: {} asks for more than this grant covers ({}); `berth dev up` holds it \
             AwaitingApproval until its manifest asks for no more (install a narrowed \
             manifest) or a wider grant is given",
            args.name,
            granted.not_covered.join("; ")
        );
    }
    warn_audit(granted.audit_error);
    let record = granted.record;
    println!(
        "granted by {} at {}{}",
        record.granted_by,
        record.granted_at,
        record
            .expires_at
            .map(|e| format!(", expires {e}"))
            .unwrap_or_default()
    );
    await_outcome(
        &control,
        &args.name,
        args.wait.timeout,
        &[Phase::Ready, Phase::Disabled],
    )
}

/// `berth revoke NAME`: withdraw every grant; the plugin stops if it needs one.
pub fn revoke(args: NameArgs) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let control = control(&state, &store);
    let revoked = control.revoke(&args.name)?;
    warn_audit(revoked.audit_error);
    println!("revoked {} grant(s) of {}", revoked.count, args.name);
    await_outcome(
        &control,
        &args.name,
        args.wait.timeout,
        &[Phase::AwaitingApproval, Phase::Ready, Phase::Disabled],
    )
}

/// Options of `berth logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The plugin.
    name: String,
    /// Keep following the output.
    #[arg(long, short)]
    follow: bool,
    /// Lines of history to show first.
    #[arg(long, default_value_t = 100)]
    tail: usize,
    #[command(flatten)]
    state: StateArgs,
}

/// `berth logs NAME [-f]`: the output of the plugin's serving container.
pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    use futures::StreamExt;
    let (state, _) = args.state.open()?;
    let instance = berth_docker::Instance::for_state_dir(state.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let docker = berth_docker::DockerClient::connect().await?;
        let container = docker
            .list_managed(&instance)
            .await?
            .into_iter()
            .filter(|c| c.plugin.as_deref() == Some(args.name.as_str()))
            .max_by_key(|c| (c.running, c.revision));
        let Some(c) = container else {
            bail!(
                "no container of {:?} (is it installed and running? see `berth list`)",
                args.name
            );
        };
        let mut stream = docker.logs_stream(&c.id, args.follow, args.tail).boxed();
        let stdout = std::io::stdout();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let mut out = stdout.lock();
            out.write_all(chunk.as_bytes())?;
            out.flush()?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Options of `berth invoke`.
#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// The plugin.
    name: String,
    /// The capability.
    capability: String,
    /// Input JSON (`-` reads standard input).
    input: String,
    /// Deadline for the call, sent as `Berth-Deadline-Ms`.
    #[arg(long, value_parser = super::duration_arg)]
    deadline: Option<Duration>,
    #[command(flatten)]
    state: StateArgs,
}

/// Options of `berth hook`.
#[derive(clap::Args, Debug)]
pub struct HookArgs {
    /// The hook (`before_command`, …).
    name: String,
    /// Event JSON (`-` reads standard input).
    event: String,
    #[command(flatten)]
    state: StateArgs,
}

fn read_input(text: &str) -> anyhow::Result<Value> {
    let text = if text == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        text.to_owned()
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("the input is not JSON: {e}"))
}

/// `berth invoke NAME CAP JSON`: call a capability through the gateway.
pub fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let input = match read_input(&args.input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let path = format!("/v1/plugins/{}/invoke/{}", args.name, args.capability);
    let mut headers = Vec::new();
    if let Some(d) = args.deadline {
        headers.push(("berth-deadline-ms", d.as_millis().to_string()));
    }
    gateway_call(&args.state, &path, &input, &headers)
}

/// `berth hook NAME JSON`: publish a hook event through the gateway.
pub fn hook(args: HookArgs) -> anyhow::Result<ExitCode> {
    let event = match read_input(&args.event) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    gateway_call(
        &args.state,
        &format!("/v1/hooks/{}", args.name),
        &event,
        &[],
    )
}

fn gateway_call(
    state: &StateArgs,
    path: &str,
    body: &Value,
    headers: &[(&str, String)],
) -> anyhow::Result<ExitCode> {
    let (state, store) = state.open()?;
    let admin = control(&state, &store).gateway()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, answer) = runtime
        .block_on(admin.send_with(
            http::Method::POST,
            path,
            Some(serde_json::to_vec(body)?),
            headers,
        ))
        .map_err(|e| anyhow!("{e} (is `berth dev up` running?)"))?;
    let pretty = serde_json::from_str::<Value>(&answer)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(answer);
    if (200..300).contains(&status) {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the gateway answered {status}: {pretty}");
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each header of `header_line` starts.
    fn header_starts(header_line: &str, headers: &[&str]) -> Vec<usize> {
        headers
            .iter()
            .map(|h| {
                header_line
                    .find(h)
                    .unwrap_or_else(|| panic!("{h} in {header_line}"))
            })
            .collect()
    }

    #[test]
    fn list_values_start_under_their_headers() {
        let rows = vec![
            json!({"name": "calculator", "version": "0.1.0", "phase": "Running", "revision": 1,
                   "restarts": 0, "risk": "0 low", "tier": "Platinum", "reason": null}),
            json!({"name": "a-plugin-with-a-long-name", "version": "12.0.0-rc.1",
                   "phase": "AwaitingApproval", "revision": 12345, "restarts": 1234567,
                   "risk": "73 high", "tier": null, "reason": "asks for network egress"}),
            json!({"name": "x", "version": null, "phase": "Installed", "revision": null,
                   "restarts": 0, "risk": null, "tier": "unrated", "reason": null}),
        ];
        let text = list_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let headers = [
            "NAME", "VERSION", "PHASE", "REV", "RESTARTS", "RISK", "TIER", "REASON",
        ];
        let starts = header_starts(lines[0], &headers);
        assert_eq!(starts[0], 0, "{text}");
        let expected: [[&str; 7]; 3] = [
            [
                "calculator",
                "0.1.0",
                "Running",
                "1",
                "0",
                "0 low",
                "Platinum",
            ],
            [
                "a-plugin-with-a-long-name",
                "12.0.0-rc.1",
                "AwaitingApproval",
                "12345",
                "1234567",
                "73 high",
                "-",
            ],
            ["x", "-", "Installed", "-", "0", "-", "unrated"],
        ];
        for (line, values) in lines[1..].iter().zip(expected) {
            for (value, start) in values.iter().zip(&starts) {
                assert_eq!(
                    line.get(*start..*start + value.len()),
                    Some(*value),
                    "{value:?} under its header in\n{text}"
                );
                assert!(
                    *start == 0 || line.as_bytes()[start - 1] == b' ',
                    "{value:?} starts a cell in\n{text}"
                );
            }
        }
        assert!(lines[2].ends_with("asks for network egress"), "{text}");
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "no trailing blanks"
        );
    }

    #[test]
    fn tiers_show_what_is_known_and_nothing_invented() {
        assert_eq!(tier_cell(None), "-");
        let unrated = LiveTier {
            tier: None,
            reasons: vec![],
            calls: 3,
            window_seconds: 300,
            inputs: None,
            since: None,
        };
        assert_eq!(tier_cell(Some(&unrated)), "unrated");
        assert!(tier_lines(Some(&unrated))[0].contains("3 calls in the last 300 s"));
        assert!(tier_lines(None)[0].starts_with("tier:      -"));
        let gold = LiveTier {
            tier: Some(berth_api::Tier::Gold),
            reasons: vec!["p90 latency 700.0 ms → Gold".into()],
            calls: 40,
            inputs: Some(berth_api::bench::TierInputs {
                latency_ms: 700.0,
                error_ratio: 0.0,
                resource_ratio: None,
            }),
            ..unrated
        };
        assert_eq!(tier_cell(Some(&gold)), "Gold");
        let lines = tier_lines(Some(&gold));
        assert!(
            lines[0].starts_with("tier:      Gold (latency 700.0 ms"),
            "{lines:?}"
        );
        assert_eq!(lines[1].trim(), "p90 latency 700.0 ms → Gold");
    }
}
