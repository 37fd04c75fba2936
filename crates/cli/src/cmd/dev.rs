//! `berth dev up [PATH...]`: run plugins as hardened Docker containers behind the gateway,
//! and keep them running; `berth dev down`: remove everything `dev up` created.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use berth_api::{Manifest, Plugin, RiskTier};
use berth_docker::control::{InstallChange, LocalControl, StateDir, current_user};
use berth_docker::supervisor::{
    GATEWAY_URL_SETTING, Notice, OBSERVED_SETTING, STOP_SETTING, Supervisor, SupervisorConfig,
};
use berth_docker::{DockerClient, Instance};
use berth_store::audit::types;
use berth_store::{PluginStatusRecord, Store};
use serde_json::json;
use sha2::Digest as _;

use super::local::StateArgs;

/// Options of `berth dev`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `up` or `down`.
    #[command(subcommand)]
    pub command: DevCommand,
}

/// `berth dev` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DevCommand {
    /// Install the plugins in PATH (files or folders) and run them behind the gateway until
    /// Ctrl-C; plugins keep running after it and the next `dev up` adopts them.
    Up(Box<UpArgs>),
    /// Stop and remove every container, network and volume `dev up` created for this state
    /// directory (the store with grants and audit stays).
    Down(DownArgs),
}

/// Options of `berth dev up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Plugin manifests (files or folders); without any, the plugins already installed.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Port of the gateway on 127.0.0.1 (0: any free port).
    #[arg(long, env = "BERTH_DEV_PORT", default_value_t = 7070)]
    pub port: u16,
    /// Rebuild and reload a plugin when its folder under plugin-images/ changes.
    #[arg(long)]
    pub watch: bool,
    /// Highest risk tier that runs without `berth grant`.
    #[arg(long, env = "BERTH_AUTO_APPROVE_TIER", default_value = "low")]
    pub auto_approve: RiskTier,
    /// Secrets for `permissions.secrets`: `NAME=value` (or `NAME.KEY=value`) lines.
    #[arg(long, env = "BERTH_SECRETS_FILE", value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// A host folder for a filesystem permission: PLUGIN:MOUNT=DIR (others get a volume).
    #[arg(long = "mount", value_name = "PLUGIN:MOUNT=DIR", value_parser = parse_mount)]
    pub mounts: Vec<((String, String), PathBuf)>,
    /// The `berth` image the gateway runs [default: berth/berth:VERSION, packed from this
    /// binary when it is static (`cargo berth`), else built from this workspace when missing].
    #[arg(long, env = "BERTH_GATEWAY_IMAGE")]
    pub gateway_image: Option<String>,
    /// Do not build missing images; fail instead.
    #[arg(long)]
    pub no_build: bool,
    /// How long a new revision may take to become ready.
    #[arg(long, default_value = "30s", value_parser = super::duration_arg)]
    pub ready_timeout: Duration,
    /// Let granted egress host names reach private addresses (a service on your network or
    /// a Docker network you connect the gateway to); other plugins' networks, loopback and
    /// metadata stay refused.
    #[arg(long, env = "BERTH_EGRESS_ALLOW_PRIVATE")]
    pub egress_allow_private: bool,
    /// Plugin networks to keep created ahead of installs (each with the gateway joined), so
    /// that an install does not wait for one; a network is given to one plugin only, ever.
    /// 0 creates each plugin's network when it is installed.
    #[arg(long, default_value_t = 2, env = "BERTH_NETWORK_POOL")]
    pub network_pool: usize,
    /// Add NAME to the gateway's hosts file as ADDR (an IP address, or `host-gateway` for
    /// the host), for internal services whose names are not in DNS; egress to NAME is
    /// checked against the grant and the deny set like any other. Repeatable.
    #[arg(long = "add-host", value_name = "NAME:ADDR", value_parser = parse_add_host)]
    pub add_hosts: Vec<String>,
    #[command(flatten)]
    pub supply: super::supply::TrustArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Options of `berth dev down`.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_mount(s: &str) -> Result<((String, String), PathBuf), String> {
    let (target, dir) = s
        .split_once('=')
        .ok_or("expected PLUGIN:MOUNT=DIR, e.g. file-ops:workspace=./work")?;
    let (plugin, mount) = target
        .split_once(':')
        .ok_or("expected PLUGIN:MOUNT=DIR, e.g. file-ops:workspace=./work")?;
    let dir = PathBuf::from(dir);
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    Ok(((plugin.to_owned(), mount.to_owned()), dir))
}

/// `--add-host NAME:ADDR` as Docker's `ExtraHosts` line `name:addr`: NAME a DNS name
/// (lower-cased), ADDR an IP address or `host-gateway`.
fn parse_add_host(s: &str) -> Result<String, String> {
    const USAGE: &str =
        "expected NAME:ADDR, e.g. db.internal:10.1.2.3 or host.internal:host-gateway";
    let (name, addr) = s.split_once(':').ok_or(USAGE)?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{s:?}: {name:?} is not a host name; {USAGE}"));
    }
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr != "host-gateway" && addr.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{s:?}: {addr:?} is not an IP address nor `host-gateway`; {USAGE}"
        ));
    }
    Ok(format!("{name}:{addr}"))
}

/// Runs `berth dev up` or `berth dev down`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        DevCommand::Up(up) => self::up(*up),
        DevCommand::Down(down) => self::down(down),
    }
}

/// A manifest read from PATH, with the file it came from.
struct Found {
    file: PathBuf,
    yaml: String,
    plugin: Plugin,
}

/// Reads every Plugin in `paths`; prints problems and returns None when any is an error.
fn read_paths(paths: &[PathBuf]) -> anyhow::Result<Option<Vec<Found>>> {
    let mut found = Vec::new();
    let mut failed = false;
    for path in paths {
        let files = super::validate::collect(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for file in files {
            let shown = file.display().to_string();
            let bytes = match super::validate::read_manifest_file(&file)
                .with_context(|| format!("cannot read {shown}"))?
            {
                Ok(bytes) => bytes,
                Err(problem) => {
                    eprintln!("error: {problem}");
                    failed = true;
                    continue;
                }
            };
            let loaded = berth_api::load_manifests(&shown, &bytes);
            for p in &loaded.problems {
                eprintln!("{}: {p}", if p.is_error() { "error" } else { "warning" });
            }
            if loaded.has_errors() {
                failed = true;
                continue;
            }
            let several = loaded.documents.len() > 1;
            for doc in loaded.documents {
                match doc.manifest {
                    Manifest::Plugin(plugin) => {
                        // One Plugin per file keeps `berth status` able to name its source.
                        let yaml = if several {
                            serde_yaml::to_string(&plugin)?
                        } else {
                            String::from_utf8_lossy(&bytes).into_owned()
                        };
                        found.push(Found {
                            file: file.clone(),
                            yaml,
                            plugin: *plugin,
                        });
                    }
                    Manifest::Grant(g) => println!(
                        "{shown}: PluginGrant for {} not applied — local grants are given with `berth grant {}` (who, why and when are recorded)",
                        g.spec.plugin, g.spec.plugin
                    ),
                }
            }
        }
    }
    Ok((!failed).then_some(found))
}

/// The folder to build `plugin`'s image from: `plugin-images/<name>/` next to the manifest's
/// folder or under the current one.
fn build_dir(plugin: &Plugin, manifest: &Path) -> Option<PathBuf> {
    let name = plugin.name();
    let mut candidates = Vec::new();
    if let Some(dir) = manifest.parent() {
        candidates.push(dir.join(format!("../plugin-images/{name}")));
        candidates.push(dir.join(format!("plugin-images/{name}")));
        candidates.push(dir.to_path_buf());
    }
    candidates.push(PathBuf::from(format!("plugin-images/{name}")));
    candidates.into_iter().find(|d| {
        d.join("berth.yaml").is_file()
            && d.join("Dockerfile").is_file()
            && std::fs::read(d.join("berth.yaml"))
                .ok()
                .and_then(|b| berth_api::load::load_single_plugin("berth.yaml", &b).ok())
                .is_some_and(|p| p.name() == name)
    })
}

fn workspace_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("crates/cli/build-image.sh")
        .is_file()
        .then(|| root.canonicalize().unwrap_or(root))
}

/// `berth dev up`.
pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let state = args.state.state()?;
    let dir = state.path().to_path_buf();
    let Some(lock) = state.lock_supervisor()? else {
        eprintln!(
            "error: a `berth dev up` is already running for {}; add plugins with `berth install FILE`, stop it with `berth dev down`",
            dir.display()
        );
        return Ok(ExitCode::from(2));
    };
    let Some(found) = read_paths(&args.paths)? else {
        eprintln!("nothing was started: fix the problems above");
        return Ok(ExitCode::from(1));
    };
    let store = state.open_store()?;
    // What the last supervisor acted on says nothing about this one: a command waits for
    // this supervisor's first pass, not for a status `dev down` left behind.
    store.delete_setting(OBSERVED_SETTING)?;
    let starting = Starting::mark(state.open_store()?)?;
    // Dependencies over what will be installed: a cycle or unsatisfiable range stops here.
    let mut all: BTreeMap<String, (Plugin, String)> = BTreeMap::new();
    for inst in store.plugins()? {
        if let Ok(p) = berth_docker::supervisor::plan::parse_installed(&inst) {
            all.insert(
                inst.name.clone(),
                (p, inst.source.unwrap_or(inst.name.clone())),
            );
        }
    }
    for f in &found {
        all.insert(
            f.plugin.name().to_owned(),
            (f.plugin.clone(), f.file.display().to_string()),
        );
    }
    let refs: Vec<&Plugin> = all.values().map(|(p, _)| p).collect();
    if let Err(problems) = berth_api::deps::resolve_order(&refs, berth_api::deps::Missing::Error) {
        for mut p in problems {
            let name = p
                .object
                .as_deref()
                .and_then(|o| o.strip_prefix("Plugin/"))
                .unwrap_or_default()
                .to_owned();
            if let Some((_, file)) = all.get(&name) {
                p.file = Some(file.clone());
            }
            eprintln!("error: {p}");
        }
        eprintln!("nothing was started: fix the dependencies above");
        return Ok(ExitCode::from(1));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let docker = match runtime.block_on(DockerClient::connect()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // Images: build the missing ones from plugin-images/ in one go (one `cargo build` for the
    // Rust plugins, the engine for each image, with progress), then the gateway image.
    let mut missing_any = false;
    let mut to_build: Vec<(PathBuf, &str)> = Vec::new();
    let supply = match args.supply.supply_chain() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    for f in &found {
        // A registry image is resolved, pulled and verified by the supervisor, not built.
        if berth_trust::has_registry_host(&f.plugin.spec.image)
            || runtime
                .block_on(docker.inspect_image(&f.plugin.spec.image))
                .is_ok()
        {
            continue;
        }
        match (args.no_build, build_dir(&f.plugin, &f.file)) {
            (false, Some(build)) => {
                if !to_build.iter().any(|(d, _)| *d == build) {
                    to_build.push((build, f.plugin.spec.image.as_str()));
                }
            }
            _ => {
                eprintln!(
                    "error: {}: image {} is not available and no plugin-images/{}/ folder was found to build it (build it with `berth build DIR` or load it)",
                    f.file.display(),
                    f.plugin.spec.image,
                    f.plugin.name()
                );
                missing_any = true;
            }
        }
    }
    if missing_any {
        eprintln!("nothing was started: images are missing");
        return Ok(ExitCode::from(1));
    }
    if !to_build.is_empty() {
        let step = Step::start(&format!(
            "building {}",
            to_build
                .iter()
                .map(|(_, image)| *image)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let dirs: Vec<PathBuf> = to_build.iter().map(|(d, _)| d.clone()).collect();
        if build_plugins(&dirs)? != ExitCode::SUCCESS {
            eprintln!("nothing was started: building images failed (see above)");
            return Ok(ExitCode::from(1));
        }
        step.done();
    }
    let gateway_image = match gateway_image(&runtime, &docker, &args)? {
        Some(image) => image,
        None => return Ok(ExitCode::from(1)),
    };
    // The builds are done: from here on the supervisor stops gracefully on a signal (a
    // `--watch` rebuild is still ended with it).
    super::children::leave_signals_to_the_caller();
    let control = LocalControl::new(&state, &store, current_user());
    for f in &found {
        let outcome = control.install(&f.file, &f.yaml, &f.plugin)?;
        if outcome.change != InstallChange::Unchanged {
            println!("installed {} {}", f.plugin.name(), f.plugin.spec.version);
        }
    }
    let token = state.ensure_admin_token()?;
    let mut config = SupervisorConfig::new(dir.clone(), gateway_image, token);
    config.gateway_port = args.port;
    config.auto_approve = args.auto_approve;
    config.secrets_file = args.secrets.clone();
    config.mounts = args.mounts.iter().cloned().collect::<HashMap<_, _>>();
    config.ready_timeout = args.ready_timeout;
    config.egress_allow_private = args.egress_allow_private;
    config.network_pool = args.network_pool;
    config.extra_hosts = args.add_hosts.clone();
    config.supply = supply;
    let store = Arc::new(store);
    // The watcher writes through a connection of its own, as a command would, so the
    // supervisor sees its changes the way it sees every command's.
    let watch = if args.watch {
        Some((state.clone(), state.open_store()?))
    } else {
        None
    };
    let code = runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Notice>();
        let printer = tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                match n.plugin {
                    Some(p) => println!("{p}: {}", n.message),
                    None => println!("berth: {}", n.message),
                }
            }
        });
        let supervisor = match Supervisor::start(docker.clone(), store.clone(), config, tx).await {
            Ok(s) => {
                starting.started();
                s
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let url = supervisor.gateway_url().to_owned();
        println!(
            "gateway:  {url}  (admin token: {})",
            dir.join("admin.token").display()
        );
        println!("metrics:  {url}/metrics");
        println!("state:    {}", dir.display());
        println!("Ctrl-C stops supervising; plugins keep running until `berth dev down`");
        if let Some((watch_state, watch_store)) = watch {
            tokio::spawn(watch_sources(watch_state, watch_store));
        }
        supervisor.run(berth_plugin_sdk::shutdown_signal()).await;
        printer.abort();
        ExitCode::SUCCESS
    });
    drop(lock);
    Ok(code)
}

/// While `dev up` starts, plugins that `dev down` left `Stopped` are shown `Pending`
/// (starting); when it gives up before its supervisor runs, they are `Stopped` again.
struct Starting {
    store: Store,
    stopped: Vec<PluginStatusRecord>,
    started: bool,
}

impl Starting {
    const REASON: &str = "`berth dev up` is starting";

    fn mark(store: Store) -> anyhow::Result<Self> {
        let stopped: Vec<PluginStatusRecord> = store
            .statuses()?
            .into_iter()
            .filter(|s| s.phase == "Stopped")
            .collect();
        for s in &stopped {
            store.set_status(&PluginStatusRecord {
                phase: "Pending".into(),
                reason: Some(Self::REASON.into()),
                updated_at: berth_store::format_time(jiff::Timestamp::now()),
                ..s.clone()
            })?;
        }
        Ok(Self {
            store,
            stopped,
            started: false,
        })
    }

    /// The supervisor runs: it sets every status from now on.
    fn started(mut self) {
        self.started = true;
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.started {
            return;
        }
        for s in &self.stopped {
            // Only what this start marked, and only if nothing else has written it since.
            if let Ok(Some(now)) = self.store.status(&s.plugin)
                && now.reason.as_deref() == Some(Self::REASON)
            {
                let _ = self.store.set_status(s);
            }
        }
    }
}

fn build_plugin(dir: &Path) -> anyhow::Result<ExitCode> {
    build_plugins(&[dir.to_path_buf()])
}

fn build_plugins(dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    super::build::build_dirs(
        dirs,
        &super::build::Args {
            dir: PathBuf::new(),
            all: false,
            verbose: false,
            rebuild: false,
            build_args: Vec::new(),
            push: false,
            registry: None,
            registry_access: Default::default(),
        },
    )
}

/// A step of `dev up`'s start: announced when it starts, its duration printed when done.
struct Step {
    what: String,
    started: Instant,
}

impl Step {
    fn start(what: &str) -> Self {
        println!("{what} ...");
        Self {
            what: what.to_owned(),
            started: Instant::now(),
        }
    }

    fn done(self) {
        println!(
            "{} done in {:.1} s",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Label of a gateway image packed from a `berth` binary: the binary's sha256.
const BINARY_DIGEST_LABEL: &str = "dev.berth.binary-digest";

/// The gateway image `dev up` runs, made available: the one `--gateway-image` names (built
/// with crates/cli/build-image.sh when missing and the workspace is here); without it
/// `berth/berth:VERSION`, packed from this very binary when it is static (`cargo berth`), so
/// the gateway always runs the code of the CLI that started it. `None` after printing why
/// there is none.
fn gateway_image(
    runtime: &tokio::runtime::Runtime,
    docker: &DockerClient,
    args: &UpArgs,
) -> anyhow::Result<Option<String>> {
    let image = args
        .gateway_image
        .clone()
        .unwrap_or_else(|| DEFAULT_GATEWAY_IMAGE.to_owned());
    let existing = runtime.block_on(docker.inspect_image(&image)).ok();
    if args.gateway_image.is_none() && cfg!(target_feature = "crt-static") {
        // The running binary even when a build replaced the file since it started.
        let binary = std::fs::read("/proc/self/exe")
            .context("cannot read this berth binary (/proc/self/exe)")?;
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(&binary));
        if existing
            .as_ref()
            .is_some_and(|i| i.labels.get(BINARY_DIGEST_LABEL) == Some(&digest))
        {
            return Ok(Some(image));
        }
        if args.no_build && existing.is_some() {
            return Ok(Some(image));
        }
        if args.no_build {
            eprintln!("error: the gateway image {image} is not available (--no-build)");
            return Ok(None);
        }
        let step = Step::start(&format!(
            "packing this berth binary into the gateway image {image}"
        ));
        runtime.block_on(pack_gateway_image(
            docker,
            &image,
            &binary,
            &digest,
            existing.as_ref(),
        ))?;
        step.done();
        return Ok(Some(image));
    }
    if existing.is_some() {
        return Ok(Some(image));
    }
    match (args.no_build, workspace_root()) {
        (false, Some(root)) => {
            let step = Step::start(&format!(
                "building the gateway image {image} (crates/cli/build-image.sh)"
            ));
            let (repo, _) = image.rsplit_once(':').unwrap_or((&image, ""));
            let status = super::children::spawn(
                Command::new(root.join("crates/cli/build-image.sh")).env("BERTH_IMAGE", repo),
            )
            .and_then(|mut build| build.child().wait())
            .context("cannot run crates/cli/build-image.sh")?;
            if !status.success() {
                eprintln!("error: building the gateway image failed");
                return Ok(None);
            }
            step.done();
            Ok(Some(image))
        }
        _ => {
            eprintln!(
                "error: the gateway image {image} is not available; build it with crates/cli/build-image.sh or pass --gateway-image"
            );
            Ok(None)
        }
    }
}

/// Builds `image` FROM scratch around `binary` (crates/cli/Dockerfile, as build-image.sh
/// does) and drops the image the tag named before when nothing else uses it.
async fn pack_gateway_image(
    docker: &DockerClient,
    image: &str,
    binary: &[u8],
    digest: &str,
    previous: Option<&berth_docker::ImageInfo>,
) -> anyhow::Result<()> {
    let mut context = berth_docker::BuildContext::new();
    context
        .add("Dockerfile", GATEWAY_DOCKERFILE.as_bytes(), 0o644)?
        .add("berth", binary, 0o755)?;
    let request = berth_docker::BuildRequest {
        tag: image.to_owned(),
        labels: HashMap::from([
            (BINARY_DIGEST_LABEL.to_owned(), digest.to_owned()),
            (
                berth_docker::MANAGED_BY_LABEL.to_owned(),
                "berth-build".to_owned(),
            ),
        ]),
        build_args: HashMap::from([("VERSION".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
    };
    docker
        .build_image(context.finish()?, &request, |_| {})
        .await
        .with_context(|| format!("cannot build the gateway image {image}"))?;
    if let Some(old) = previous
        && old
            .labels
            .get(berth_docker::MANAGED_BY_LABEL)
            .map(String::as_str)
            == Some("berth-build")
        && old.tags.iter().all(|t| t == image)
        && let Ok(now) = docker.inspect_image(image).await
        && now.id != old.id
    {
        let _ = docker.remove_image(&old.id, false).await;
    }
    Ok(())
}

/// The gateway image's Dockerfile: the binary alone, run as 65532.
const GATEWAY_DOCKERFILE: &str = include_str!("../../Dockerfile");

/// The gateway image `dev up` runs unless told otherwise.
const DEFAULT_GATEWAY_IMAGE: &str = concat!("berth/berth:", env!("CARGO_PKG_VERSION"));

/// The newest modification time of any file under `dir` (skipping `target/`).
fn newest_change(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if e.file_name() != "target" {
                    stack.push(e.path());
                }
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

/// `--watch`: polls each installed plugin's build folder; when it changed and then stayed
/// quiet for a moment (debounce), rebuilds the image and tells the supervisor.
async fn watch_sources(state: StateDir, store: Store) {
    const QUIET: Duration = Duration::from_millis(400);
    let mut seen: HashMap<PathBuf, SystemTime> = HashMap::new();
    let mut pending: HashMap<PathBuf, (Instant, String)> = HashMap::new();
    // Build folder per plugin, found again only when its installed manifest changes.
    let mut dirs: HashMap<String, (String, Option<PathBuf>)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(installed) = store.plugins() else {
            continue;
        };
        for inst in installed {
            let known = dirs
                .get(&inst.name)
                .is_some_and(|(updated, _)| *updated == inst.updated_at);
            if !known {
                let dir = berth_docker::supervisor::plan::parse_installed(&inst)
                    .ok()
                    .and_then(|plugin| {
                        let source = PathBuf::from(inst.source.clone().unwrap_or_default());
                        build_dir(&plugin, &source)
                    });
                dirs.insert(inst.name.clone(), (inst.updated_at.clone(), dir));
            }
            let Some(dir) = dirs.get(&inst.name).and_then(|(_, d)| d.clone()) else {
                continue;
            };
            let Some(changed) = newest_change(&dir) else {
                continue;
            };
            match seen.insert(dir.clone(), changed) {
                Some(before) if before != changed => {
                    pending.insert(dir, (Instant::now(), inst.name.clone()));
                }
                _ => {}
            }
        }
        let ready: Vec<(PathBuf, String)> = pending
            .iter()
            .filter(|(_, (t, _))| t.elapsed() >= QUIET)
            .map(|(d, (_, n))| (d.clone(), n.clone()))
            .collect();
        for (dir, name) in ready {
            pending.remove(&dir);
            println!("{name}: {} changed; rebuilding", dir.display());
            let build = dir.clone();
            let built = tokio::task::spawn_blocking(move || build_plugin(&build)).await;
            match built {
                Ok(Ok(code)) if code == ExitCode::SUCCESS => {
                    reinstall(&LocalControl::new(&state, &store, current_user()), &name)
                }
                _ => println!("{name}: rebuild failed; the running revision keeps serving"),
            }
        }
    }
}

/// After a rebuild: records the manifest file again if it changed, otherwise the same
/// manifest; either way the supervisor sees a change and compares image ids.
fn reinstall(control: &LocalControl<'_>, name: &str) {
    let store = control.store();
    let Ok(Some(inst)) = store.plugin(name) else {
        return;
    };
    let fresh = inst.source.as_deref().and_then(|file| {
        let bytes = std::fs::read(file).ok()?;
        let plugin = berth_api::load::load_single_plugin(file, &bytes).ok()?;
        Some((String::from_utf8_lossy(&bytes).into_owned(), plugin, file))
    });
    match fresh {
        Some((yaml, plugin, file)) if plugin.name() == name && yaml != inst.manifest_yaml => {
            if let Err(e) = control.install_from(file, &yaml, &plugin) {
                println!("{name}: cannot record the changed manifest: {e:#}");
            }
        }
        _ => {
            let _ = store.upsert_plugin(name, &inst.manifest_yaml, inst.source.as_deref());
        }
    }
}

/// `berth dev down`.
pub fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let (state, store) = args.state.open()?;
    let dir = state.path();
    if state.supervisor_running() {
        store.set_setting(STOP_SETTING, "1")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while state.supervisor_running() {
            if Instant::now() >= deadline {
                bail!("the running `berth dev up` did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let instance = Instance::for_state_dir(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let removed = runtime.block_on(async {
        let docker = DockerClient::connect().await?;
        docker
            .remove_instance(&instance)
            .await
            .map_err(|e| anyhow!(e))
    });
    let removed = match removed {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    store.delete_setting(GATEWAY_URL_SETTING)?;
    store.delete_setting(STOP_SETTING)?;
    store.delete_setting(OBSERVED_SETTING)?;
    for s in store.statuses()? {
        // Revisions that ran are gone with their containers: say so (the next `dev up`
        // brings the newest back under its number instead of minting an identical one).
        for r in store.revisions(&s.plugin)? {
            if matches!(r.state.as_str(), "Ready" | "Starting") {
                store.update_revision(
                    &s.plugin,
                    r.revision,
                    "Stopped",
                    Some("`berth dev down`"),
                    None,
                    None,
                )?;
            }
        }
        store.set_status(&berth_store::PluginStatusRecord {
            phase: "Stopped".into(),
            reason: Some("`berth dev down`".into()),
            serving_revision: None,
            updated_at: berth_store::format_time(jiff::Timestamp::now()),
            ..s
        })?;
    }
    store.append_audit(vec![
        berth_store::AuditEvent::new(current_user(), types::LIFECYCLE, "success").details(json!({
            "action": "dev-down",
            "containers": removed.containers,
            "networks": removed.networks,
            "volumes": removed.volumes,
        })),
    ])?;
    println!(
        "removed {} container(s), {} network(s), {} volume(s) of {}",
        removed.containers,
        removed.networks,
        removed.volumes,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_add_host;

    #[test]
    fn add_host_takes_a_name_and_an_address_or_host_gateway() {
        assert_eq!(
            parse_add_host("DB.Internal.:10.1.2.3").unwrap(),
            "db.internal:10.1.2.3"
        );
        assert_eq!(
            parse_add_host("host.test:host-gateway").unwrap(),
            "host.test:host-gateway"
        );
        assert_eq!(parse_add_host("v6.test:[::1]").unwrap(), "v6.test:::1");
        assert_eq!(
            parse_add_host("v6.test:fd00::2").unwrap(),
            "v6.test:fd00::2"
        );
        for bad in [
            "db.internal",
            ":10.1.2.3",
            "db_internal:10.1.2.3",
            "db.internal:example.com",
            "-db:10.1.2.3",
        ] {
            let e = parse_add_host(bad).unwrap_err();
            assert!(e.contains("NAME:ADDR"), "{bad}: {e}");
        }
    }
}
