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
use berth_api::{Phase, Plugin, assess};
use berth_docker::control::{InstallChange, LocalControl, Outcome, StateDir, current_user};
use berth_docker::supervisor::plan;
use berth_store::Store;
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

/// One line about a gateway container that is down; `None` while it serves.
fn gateway_down_line(gateway: Option<&Value>) -> Option<String> {
    let g = gateway.filter(|g| g["state"] == "down")?;
    Some(format!(
        "gateway: DOWN since {} ({}); no plugin is reachable; `berth dev up` is restarting it",
        g["since"].as_str().unwrap_or("?"),
        g["reason"].as_str().unwrap_or("unknown reason")
    ))
}

/// `berth list`: installed plugins and what they are doing.
pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = args.state.open()?;
    let mut rows = Vec::new();
    for inst in store.plugins()? {
        let plugin = plan::parse_installed(&inst).ok();
        let status = store.status(&inst.name)?;
        let risk = plugin
            .as_ref()
            .map(|p| assess(&p.spec.permissions, &p.spec.hooks));
        rows.push(json!({
            "name": inst.name,
            "version": plugin.as_ref().map(|p| p.spec.version.clone()),
            "enabled": inst.enabled,
            "phase": status.as_ref().map(|s| s.phase.clone()).unwrap_or_else(|| "Installed".into()),
            "revision": status.as_ref().and_then(|s| s.serving_revision),
            "restarts": status.as_ref().map(|s| s.restarts).unwrap_or(0),
            "risk": risk.as_ref().map(|r| format!("{} {}", r.score, r.tier)),
            "reason": status.as_ref().and_then(|s| s.reason.clone()),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(line) = gateway_down_line(gateway_state(&store).as_ref()) {
        println!("{line}");
    }
    if rows.is_empty() {
        println!("no plugins installed (`berth dev up examples/` or `berth install FILE`)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<9} {:<17} {:>4} {:>8} {:<14} REASON",
        "NAME", "VERSION", "PHASE", "REV", "RESTARTS", "RISK"
    );
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<18} {:<9} {:<17} {:>4} {:>8} {:<14} {}",
            s("name"),
            s("version"),
            s("phase"),
            r["revision"].as_u64().map_or("-".into(), |v| v.to_string()),
            r["restarts"],
            s("risk"),
            r["reason"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
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
    if !revisions.is_empty() {
        println!("revisions:");
        for r in revisions.iter().take(10) {
            println!(
                "  {:>4}  {:<10} {}  {}{}",
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
