//! Local mode's commands besides `dev up`/`dev down`: `list`, `status`, `install`,
//! `uninstall`, `enable`, `disable`, `grant`, `revoke`, `logs`, `invoke`, `hook`.
//!
//! Each writes or reads the store in the state directory. A running `berth dev up` notices
//! the change and acts on it; the command then waits for the outcome and prints it. With no
//! supervisor running, the change is recorded and takes effect at the next `berth dev up`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use berth_api::risk::permission_diff;
use berth_api::{Permissions, Plugin, assess};
use berth_docker::supervisor::{GATEWAY_URL_SETTING, plan};
use berth_store::audit::{format_time, types};
use berth_store::{AuditEvent, Store};
use jiff::Timestamp;
use serde_json::{Value, json};

/// Settings key: the change counter the supervisor has acted on.
pub const OBSERVED_SETTING: &str = berth_docker::supervisor::OBSERVED_SETTING;

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
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        let dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                Some(x) => PathBuf::from(x).join("berth"),
                None => PathBuf::from(
                    std::env::var_os("HOME")
                        .ok_or_else(|| anyhow!("set BERTH_STATE_DIR or HOME"))?,
                )
                .join(".local/share/berth"),
            },
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let dir = dir.canonicalize().unwrap_or(dir);
        Ok(dir)
    }

    /// The state directory and its store.
    pub fn open(&self) -> anyhow::Result<(PathBuf, Store)> {
        let dir = self.dir()?;
        let path = dir.join("berth.db");
        let store = Store::open(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        Ok((dir, store))
    }
}

/// The admin token of the state directory, created (0600) when `create` is set.
pub fn admin_token(dir: &Path, create: bool) -> anyhow::Result<String> {
    let path = dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) => return Ok(t.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound || !create => {
            return Err(anyhow!(
                "cannot read {} ({e}); is `berth dev up` running for this state directory?",
                path.display()
            ));
        }
        Err(_) => {}
    }
    let token = berth_gateway::auth::generate_token().context("cannot read random bytes")?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?
    };
    file.write_all(token.as_bytes())?;
    Ok(token)
}

/// The lock a running supervisor holds on its state directory.
pub fn lock_file(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("supervisor.lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// True when a `berth dev up` holds this state directory.
pub fn supervisor_running(dir: &Path) -> bool {
    let Ok(file) = lock_file(dir) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Who is acting, for the audit log.
pub fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("user:{u}"))
        .unwrap_or_else(|_| "user".into())
}

fn audit(store: &Store, plugin: &str, type_: &str, outcome: &str, details: Value) {
    let event = AuditEvent::new(actor(), type_, outcome)
        .plugin(plugin)
        .details(details);
    if let Err(e) = store.append_audit(vec![event]) {
        eprintln!("warning: the audit log could not be written: {e}");
    }
}

/// Waits until the supervisor has acted on every change up to now, then prints the
/// plugin's status. Returns the exit code: 0 when the outcome is what `ok` accepts.
fn await_outcome(
    dir: &Path,
    store: &Store,
    plugin: &str,
    timeout: Duration,
    ok: &[&str],
) -> anyhow::Result<ExitCode> {
    if !supervisor_running(dir) {
        println!("recorded; `berth dev up` is not running, so it takes effect at the next one");
        return Ok(ExitCode::SUCCESS);
    }
    let wanted = store.change_counter()?;
    let deadline = Instant::now() + timeout;
    loop {
        let seen: u64 = store
            .setting(OBSERVED_SETTING)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if seen >= wanted {
            break;
        }
        if Instant::now() >= deadline {
            println!(
                "recorded; the supervisor has not acted on it within {} s (see `berth status {plugin}`)",
                timeout.as_secs()
            );
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match store.status(plugin)? {
        Some(s) => {
            println!(
                "{plugin}: {}{}",
                s.phase,
                s.reason.map(|r| format!(" — {r}")).unwrap_or_default()
            );
            Ok(if ok.contains(&s.phase.as_str()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        None => {
            println!("{plugin}: removed");
            Ok(ExitCode::SUCCESS)
        }
    }
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
    let (_, store) = args.state.open()?;
    let inst = installed(&store, &args.name)?;
    let plugin = plan::parse_installed(&inst).map_err(|e| anyhow!(e))?;
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

fn installed(store: &Store, name: &str) -> anyhow::Result<berth_store::InstalledPlugin> {
    store.plugin(name)?.ok_or_else(|| {
        anyhow!(
            "no plugin {name:?} is installed (see `berth list`; install with `berth install FILE`)"
        )
    })
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

/// Records a manifest as installed (new or changed) and audits it; returns whether it
/// changed anything.
pub fn record_install(
    store: &Store,
    plugin: &Plugin,
    yaml: &str,
    source: &str,
) -> anyhow::Result<bool> {
    let previous = store.plugin(plugin.name())?;
    if previous
        .as_ref()
        .is_some_and(|p| p.manifest_yaml == yaml && p.source.as_deref() == Some(source))
    {
        return Ok(false);
    }
    let before = previous
        .as_ref()
        .and_then(|p| plan::parse_installed(p).ok());
    store.upsert_plugin(plugin.name(), yaml, Some(source))?;
    let risk = assess(&plugin.spec.permissions, &plugin.spec.hooks);
    let mut details = json!({
        "action": if before.is_some() { "updated" } else { "installed" },
        "version": plugin.spec.version,
        "image": plugin.spec.image,
        "source": source,
        "riskScore": risk.score,
    });
    if let Some(old) = &before {
        let diff = permission_diff(&old.spec.permissions, &plugin.spec.permissions);
        details["previousVersion"] = json!(old.spec.version);
        details["permissionsAdded"] = json!(diff.added);
        details["permissionsRemoved"] = json!(diff.removed);
    }
    store.append_audit(vec![
        AuditEvent::new(actor(), types::LIFECYCLE, "success")
            .plugin(plugin.name())
            .details(details)
            .risk_score(risk.score),
    ])?;
    Ok(true)
}

/// `berth install FILE`: install or upgrade a plugin.
pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let (yaml, plugin) = match read_manifest(&args.file) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let (dir, store) = args.state.open()?;
    let source = args
        .file
        .canonicalize()
        .unwrap_or(args.file.clone())
        .display()
        .to_string();
    if let Some(old) = store
        .plugin(plugin.name())?
        .and_then(|p| plan::parse_installed(&p).ok())
    {
        let diff = permission_diff(&old.spec.permissions, &plugin.spec.permissions);
        println!(
            "{}: {} → {}",
            plugin.name(),
            old.spec.version,
            plugin.spec.version
        );
        for a in &diff.added {
            println!("  + {a}");
        }
        for r in &diff.removed {
            println!("  - {r}");
        }
    }
    if !record_install(&store, &plugin, &yaml, &source)? {
        println!("{}: unchanged", plugin.name());
    }
    await_outcome(
        &dir,
        &store,
        plugin.name(),
        args.wait.timeout,
        &["Ready", "AwaitingApproval", "Disabled"],
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
    let (dir, store) = args.state.open()?;
    installed(&store, &args.name)?;
    store.remove_plugin(&args.name)?;
    audit(
        &store,
        &args.name,
        types::LIFECYCLE,
        "success",
        json!({"action": "uninstalled"}),
    );
    await_outcome(&dir, &store, &args.name, args.wait.timeout, &[])
}

/// `berth enable NAME` / `berth disable NAME`.
pub fn set_enabled(args: NameArgs, enabled: bool) -> anyhow::Result<ExitCode> {
    let (dir, store) = args.state.open()?;
    installed(&store, &args.name)?;
    store.set_enabled(&args.name, enabled)?;
    audit(
        &store,
        &args.name,
        types::LIFECYCLE,
        "success",
        json!({"action": if enabled { "enabled" } else { "disabled" }}),
    );
    let ok: &[&str] = if enabled {
        &["Ready", "AwaitingApproval"]
    } else {
        &["Disabled"]
    };
    await_outcome(&dir, &store, &args.name, args.wait.timeout, ok)
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
    #[arg(long)]
    expires: Option<String>,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    wait: WaitArgs,
}

fn expiry(text: &str) -> anyhow::Result<String> {
    let t = super::time_arg("--expires", text, true)?;
    if t <= Timestamp::now() {
        bail!("--expires {text}: that time has passed");
    }
    Ok(format_time(t))
}

/// `berth grant NAME`: approve what the installed version asks for.
pub fn grant(args: GrantArgs) -> anyhow::Result<ExitCode> {
    let (dir, store) = args.state.open()?;
    let inst = installed(&store, &args.name)?;
    let plugin = plan::parse_installed(&inst).map_err(|e| anyhow!(e))?;
    let expires = args.expires.as_deref().map(expiry).transpose()?;
    let risk = assess(&plugin.spec.permissions, &plugin.spec.hooks);
    println!(
        "{} {} asks for (risk {} {}):",
        plugin.name(),
        plugin.spec.version,
        risk.score,
        risk.tier
    );
    for item in berth_api::risk::items(&plugin.spec.permissions) {
        println!("  {item}");
    }
    for r in &risk.reasons {
        println!("  · {r}");
    }
    let now = format_time(Timestamp::now());
    let previous: Vec<Permissions> = store
        .active_grants(&args.name, &now)?
        .iter()
        .filter_map(|g| serde_json::from_str(&g.permissions_json).ok())
        .collect();
    if let Some(last) = previous.last() {
        let diff = permission_diff(last, &plugin.spec.permissions);
        if !diff.added.is_empty() {
            println!("new since the last grant:");
            for a in &diff.added {
                println!("  + {a}");
            }
        }
    }
    let permissions = serde_json::to_string(&plugin.spec.permissions)?;
    let record = store.add_grant(
        &args.name,
        &permissions,
        risk.score,
        &actor(),
        args.reason.as_deref(),
        expires.as_deref(),
    )?;
    audit(
        &store,
        &args.name,
        types::PERMISSION,
        "success",
        json!({
            "action": "granted",
            "grant": record.id,
            "version": plugin.spec.version,
            "permissions": plugin.spec.permissions,
            "reason": args.reason,
            "expiresAt": expires,
        }),
    );
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
        &dir,
        &store,
        &args.name,
        args.wait.timeout,
        &["Ready", "Disabled"],
    )
}

/// `berth revoke NAME`: withdraw every grant; the plugin stops if it needs one.
pub fn revoke(args: NameArgs) -> anyhow::Result<ExitCode> {
    let (dir, store) = args.state.open()?;
    installed(&store, &args.name)?;
    let n = store.revoke_grants(&args.name)?;
    audit(
        &store,
        &args.name,
        types::PERMISSION,
        "success",
        json!({"action": "revoked", "grants": n}),
    );
    println!("revoked {n} grant(s) of {}", args.name);
    await_outcome(
        &dir,
        &store,
        &args.name,
        args.wait.timeout,
        &["AwaitingApproval", "Ready", "Disabled"],
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
    let (dir, _) = args.state.open()?;
    let instance = berth_docker::Instance::for_state_dir(&dir);
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
    let (dir, store) = state.open()?;
    let url = store.setting(GATEWAY_URL_SETTING)?.ok_or_else(|| {
        anyhow!(
            "no gateway is known for {}: start `berth dev up` first",
            dir.display()
        )
    })?;
    let token = admin_token(&dir, false)?;
    let admin = berth_docker::supervisor::AdminClient::new(&url, &token);
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
