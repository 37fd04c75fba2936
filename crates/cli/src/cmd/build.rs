//! `berth build DIR` and `berth build --all DIR`: build each plugin's image through the Docker
//! Engine, tagged `berth/NAME:VERSION` and labelled with its manifest. A folder with a Cargo
//! package takes the fast path: one `cargo build` compiles every static binary, and its
//! `FROM scratch` image gets a context of three files. Any other folder with a Dockerfile
//! (Python, TypeScript, Go, C, ...) is built by the engine from the folder itself.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use berth_api::Plugin;
use berth_api::load::load_single_plugin;
use berth_contract::protocol::MANIFEST_LABEL;
use berth_docker::{BuildContext, BuildRequest, DockerClient, MANAGED_BY_LABEL};
use serde::Deserialize;

mod dockerfile;
mod dockerignore;
mod folder;

/// The target every plugin binary is built for.
pub const PLUGIN_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Options of `berth build`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A plugin folder (berth.yaml and a Dockerfile, plus Cargo.toml for Rust); with --all, a
    /// folder of them.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Build every plugin folder directly under DIR.
    #[arg(long)]
    pub all: bool,
    /// Print every line of builder output instead of a progress bar.
    #[arg(long, short)]
    pub verbose: bool,
    /// Build the image even when one with the same binary, manifest and Dockerfile exists.
    #[arg(long)]
    pub rebuild: bool,
    /// A Dockerfile `ARG` value, e.g. PYTHON_IMAGE=python:3.12-slim (repeatable); berth
    /// build sets BERTH_MANIFEST itself.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = parse_build_arg)]
    pub build_args: Vec<(String, String)>,
    /// Push each built image and print its digest: to --registry, or to the registry its
    /// tag names.
    #[arg(long)]
    pub push: bool,
    /// The registry (HOST[:PORT], optionally /PREFIX) to push to: the image goes to
    /// REGISTRY/TAG, e.g. 127.0.0.1:5000/berth/calculator:0.1.0.
    #[arg(long, value_name = "HOST[:PORT]", requires = "push")]
    pub registry: Option<String>,
    #[command(flatten)]
    pub registry_access: super::supply::RegistryArgs,
}

/// Parses one `--build-arg KEY=VALUE`.
fn parse_build_arg(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "expected KEY=VALUE (e.g. PYTHON_IMAGE=python:3.12-slim), got {text:?}"
        ));
    };
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '$') {
        return Err(format!(
            "{key:?} is not an ARG name; expected KEY=VALUE (e.g. PYTHON_IMAGE=python:3.12-slim)"
        ));
    }
    if key == "BERTH_MANIFEST" {
        return Err(
            "berth build sets BERTH_MANIFEST to berth.yaml itself; drop this --build-arg"
                .to_owned(),
        );
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// How a plugin folder becomes an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Cargo package: a static binary compiled here, copied into the image.
    Cargo,
    /// Only a Dockerfile: the engine builds the folder (less `.dockerignore`).
    Dockerfile,
}

/// Image label holding the digest of the build context, to skip builds that change nothing.
pub const CONTEXT_DIGEST_LABEL: &str = "dev.berth.context-digest";

/// A plugin folder, read and checked.
#[derive(Debug)]
pub struct PluginDir {
    /// The folder.
    pub dir: PathBuf,
    /// `berth.yaml`, verbatim.
    pub manifest_text: String,
    /// The parsed manifest.
    pub plugin: Plugin,
    /// The Dockerfile, verbatim.
    pub dockerfile: String,
    /// How it is built.
    pub kind: Kind,
}

impl PluginDir {
    /// The image tag: `berth/NAME:VERSION`.
    pub fn tag(&self) -> String {
        format!("berth/{}:{}", self.plugin.name(), self.plugin.spec.version)
    }
}

/// Exit codes: 0 every image was built, 1 a plugin folder is inconsistent or a build
/// failed, 2 the tools (cargo, Docker) are missing.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dirs = if args.all {
        plugin_dirs_under(&args.dir)?
    } else {
        vec![args.dir.clone()]
    };
    build_dirs(&dirs, &args)
}

/// Builds the images of the plugin folders `dirs` (one `cargo build` for all Rust plugins of
/// a Cargo workspace); `berth dev up` builds every missing image with one call.
pub fn build_dirs(dirs: &[PathBuf], args: &Args) -> anyhow::Result<ExitCode> {
    let mut plugins = Vec::new();
    let mut problems = Vec::new();
    for dir in dirs {
        match read_plugin_dir(dir) {
            Ok(p) => plugins.push(p),
            Err(mut errs) => problems.append(&mut errs),
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!(
            "nothing was built: fix the {} problem(s) above",
            problems.len()
        );
        return Ok(ExitCode::from(1));
    }

    let rust: Vec<&PluginDir> = plugins.iter().filter(|p| p.kind == Kind::Cargo).collect();
    let mut binaries = match compile(&rust) {
        Ok(b) => b.into_iter(),
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let docker = match DockerClient::connect().await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let mut failed = 0;
        for plugin in &plugins {
            let built = match plugin.kind {
                Kind::Cargo => match binaries.next() {
                    Some(binary) => build_static_image(&docker, plugin, &binary, args).await,
                    None => Err(anyhow!("cargo reported no binary")),
                },
                Kind::Dockerfile => build_folder_image(&docker, plugin, args).await,
            };
            let built = match built {
                Ok(summary) if args.push => {
                    println!("{summary}");
                    push_built(plugin, args)
                        .await
                        .map(|pushed| format!("pushed {pushed}"))
                }
                other => other,
            };
            match built {
                Ok(summary) => println!("{summary}"),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {}: {e:#}", plugin.dir.display());
                }
            }
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Pushes what `plugin` built (`--push`); returns `REF@sha256:…`.
async fn push_built(plugin: &PluginDir, args: &Args) -> anyhow::Result<String> {
    let tag = plugin.tag();
    let target = match &args.registry {
        Some(registry) => format!("{}/{tag}", registry.trim_end_matches('/')),
        None if berth_trust::has_registry_host(&tag) => tag.clone(),
        None => bail!(
            "{tag} names no registry: pass --registry HOST[:PORT] (e.g. --registry 127.0.0.1:5000)"
        ),
    };
    let options = args.registry_access.options()?;
    super::supply::push_image(&tag, Some(&target), &options).await
}

/// Every folder directly under `root` that holds a `berth.yaml`, sorted.
fn plugin_dirs_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in
        std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))?
    {
        let path = entry?.path();
        if path.join("berth.yaml").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{}: no plugin folders (folders holding a berth.yaml) directly under it",
            root.display()
        );
    }
    Ok(dirs)
}

/// Reads and cross-checks `berth.yaml`, `Dockerfile` and (for Rust) `Cargo.toml` of one
/// folder.
pub fn read_plugin_dir(dir: &Path) -> Result<PluginDir, Vec<String>> {
    let manifest_path = dir.join("berth.yaml");
    let manifest_file = manifest_path.display().to_string();
    let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        vec![format!(
            "{manifest_file}: cannot read ({e}); every plugin folder needs its manifest there"
        )]
    })?;
    let plugin = load_single_plugin(&manifest_file, manifest_text.as_bytes())
        .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let dockerfile_path = dir.join("Dockerfile");
    let dockerfile_file = dockerfile_path.display().to_string();
    let kind = if dir.join("Cargo.toml").is_file() {
        Kind::Cargo
    } else if dockerfile_path.is_file() {
        Kind::Dockerfile
    } else {
        return Err(vec![format!(
            "{}: neither a Dockerfile nor a Cargo.toml; berth build needs one of them: a Dockerfile (any language; the folder is its build context) or a Cargo package (Rust, compiled here). `berth new NAME --lang rust|python|typescript|go|c` writes a folder to start from",
            dir.display()
        )]);
    };
    let dockerfile = std::fs::read_to_string(&dockerfile_path).map_err(|e| {
        vec![format!(
            "{dockerfile_file}: cannot read ({e}); `berth new` writes one to start from"
        )]
    })?;
    let context = match kind {
        Kind::Cargo => dockerfile::Context::StaticBinary,
        Kind::Dockerfile => dockerfile::Context::Folder,
    };
    let problems = dockerfile::check(&dockerfile_file, &dockerfile, &plugin, context);
    if problems.is_empty() {
        Ok(PluginDir {
            dir: dir.to_path_buf(),
            manifest_text,
            plugin,
            dockerfile,
            kind,
        })
    } else {
        Err(problems)
    }
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetadataPackage>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct MetadataPackage {
    id: String,
    name: String,
    version: String,
    manifest_path: PathBuf,
    targets: Vec<MetadataTarget>,
}

#[derive(Deserialize)]
struct MetadataTarget {
    name: String,
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct ArtifactMessage {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    executable: Option<PathBuf>,
    #[serde(default)]
    target: Option<MetadataTarget>,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// What to compile for one plugin folder.
struct Package {
    id: String,
    name: String,
    bin: String,
    workspace_root: PathBuf,
}

fn package_of(plugin: &PluginDir) -> anyhow::Result<Package> {
    let manifest = plugin
        .dir
        .join("Cargo.toml")
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve Cargo.toml", plugin.dir.display()))?;
    let output = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| anyhow!("cannot run cargo ({e}); install Rust (rustup) to build plugins"))?;
    if !output.status.success() {
        bail!("{}: cargo metadata failed; see above", manifest.display());
    }
    let metadata: Metadata = serde_json::from_slice(&output.stdout)
        .context("cargo metadata printed something unexpected")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.manifest_path == manifest)
        .ok_or_else(|| {
            anyhow!(
                "{}: not a member of its Cargo workspace {}; add it to [workspace] members or give it its own empty [workspace] table",
                manifest.display(),
                metadata.workspace_root.display()
            )
        })?;
    if package.version != plugin.plugin.spec.version {
        bail!(
            "{}: spec.version is {} but {} says version = \"{}\"; make them equal (the plugin reports its crate version in /v1/describe)",
            plugin.dir.join("berth.yaml").display(),
            plugin.plugin.spec.version,
            manifest.display(),
            package.version
        );
    }
    let bins: Vec<&MetadataTarget> = package
        .targets
        .iter()
        .filter(|t| t.kind.iter().any(|k| k == "bin"))
        .collect();
    let bin = match bins.as_slice() {
        [one] => one.name.clone(),
        [] => bail!(
            "{}: the package has no binary target; a plugin is a program (src/main.rs)",
            manifest.display()
        ),
        many => many
            .iter()
            .find(|t| t.name == package.name)
            .map(|t| t.name.clone())
            .ok_or_else(|| {
                anyhow!(
                    "{}: several binaries and none named {}; keep one",
                    manifest.display(),
                    package.name
                )
            })?,
    };
    Ok(Package {
        id: package.id,
        name: package.name,
        bin,
        workspace_root: metadata.workspace_root,
    })
}

/// Compiles every plugin's static binary, one `cargo build` per Cargo workspace; returns the
/// binaries in the order of `plugins`.
fn compile(plugins: &[&PluginDir]) -> anyhow::Result<Vec<PathBuf>> {
    let packages = plugins
        .iter()
        .map(|p| package_of(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut by_workspace: BTreeMap<&Path, Vec<&Package>> = BTreeMap::new();
    for p in &packages {
        by_workspace
            .entry(p.workspace_root.as_path())
            .or_default()
            .push(p);
    }
    let mut built: HashMap<String, PathBuf> = HashMap::new();
    for (root, members) in by_workspace {
        let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
        if !rustflags.contains("crt-static") {
            rustflags.push_str(" -C target-feature=+crt-static");
        }
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--release",
            "--target",
            PLUGIN_TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .env("RUSTFLAGS", rustflags.trim())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for m in &members {
            cmd.args(["-p", &m.name]);
        }
        // What `cargo run` and `cargo test` set for the program they start is not ours to
        // pass on: build scripts that watch these (ring's watches CARGO_MANIFEST_DIR) would
        // run again and recompile everything above them.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(inherited_from_cargo) {
                cmd.env_remove(&key);
            }
        }
        // In berth's own workspace (the examples), `berth` is compiled along: the plugins'
        // dependency features are a subset of its own, so cargo unifies them exactly as for
        // `cargo berth` and build-image.sh (same target, profile and flags) and every one of
        // these builds reuses the same compiled dependencies instead of compiling another set.
        if own_workspace().is_some_and(|own| root.canonicalize().is_ok_and(|r| r == own)) {
            cmd.args(["-p", env!("CARGO_PKG_NAME")]);
        }
        eprintln!(
            "compiling {} for {PLUGIN_TARGET} (static)",
            members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Ended with `berth` on SIGINT/SIGTERM, rustc processes included.
        let mut guarded = super::children::spawn(&mut cmd).map_err(|e| {
            anyhow!("cannot run cargo ({e}); install Rust (rustup) to build plugins")
        })?;
        let child = guarded.child();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("cargo gave no output"))?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(msg) = serde_json::from_str::<ArtifactMessage>(&line) else {
                continue;
            };
            if msg.reason != "compiler-artifact" {
                continue;
            }
            let Some(exe) = msg.executable else { continue };
            if let Some(m) = members.iter().find(|m| {
                m.id == msg.package_id && msg.target.as_ref().is_some_and(|t| t.name == m.bin)
            }) {
                built.insert(m.id.clone(), exe);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!(
                "cargo build failed ({status}); the compiler's messages are above. Static builds need the {PLUGIN_TARGET} target and glibc's static libraries (Debian: libc6-dev)"
            );
        }
    }
    packages
        .iter()
        .map(|p| {
            built
                .get(&p.id)
                .cloned()
                .ok_or_else(|| anyhow!("cargo reported no binary for {}", p.name))
        })
        .collect()
}

/// Whether `name` is one of the variables cargo sets for a program it runs (`cargo run`,
/// `cargo test`) rather than one that configures cargo.
fn inherited_from_cargo(name: &str) -> bool {
    matches!(
        name,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
    ) || name.starts_with("CARGO_PKG_")
}

/// The Cargo workspace `berth` itself was compiled in, when it is still there.
fn own_workspace() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .ok()
        .filter(|root| root.join("Cargo.toml").is_file())
}

/// Builds the `FROM scratch` image of a Rust plugin around its static binary.
async fn build_static_image(
    docker: &DockerClient,
    plugin: &PluginDir,
    binary: &Path,
    args: &Args,
) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let digest = context_digest(
        &plugin.dockerfile,
        &plugin.manifest_text,
        &bytes,
        &args.build_args,
    );
    let context = || {
        let mut context = BuildContext::new();
        context
            .add("Dockerfile", plugin.dockerfile.as_bytes(), 0o644)?
            .add("berth.yaml", plugin.manifest_text.as_bytes(), 0o644)?
            .add("plugin", &bytes, 0o755)?;
        Ok(context.finish()?)
    };
    Ok(
        match build_checked(docker, plugin, &digest, context, args).await? {
            Built::UpToDate(summary) => summary,
            Built::New { tag, id } => format!(
                "built {tag} ({}, binary {:.1} MiB){}",
                id.get(..19).unwrap_or(&id),
                bytes.len() as f64 / (1024.0 * 1024.0),
                image_name_note(plugin)
            ),
        },
    )
}

/// Builds the image of a plugin folder with its own Dockerfile; the folder, less
/// `.dockerignore`, is the build context.
async fn build_folder_image(
    docker: &DockerClient,
    plugin: &PluginDir,
    args: &Args,
) -> anyhow::Result<String> {
    let files = folder::context_files(&plugin.dir).map_err(|e| anyhow!(e))?;
    let digest = folder::folder_digest(&files, &plugin.manifest_text, &args.build_args);
    let size: usize = files.iter().map(|f| f.contents.len()).sum();
    let context = || {
        let mut context = BuildContext::new();
        for f in &files {
            context.add(&f.path, &f.contents, f.mode)?;
        }
        Ok(context.finish()?)
    };
    Ok(
        match build_checked(docker, plugin, &digest, context, args).await? {
            Built::UpToDate(summary) => summary,
            Built::New { tag, id } => format!(
                "built {tag} ({}, context {} files, {:.1} MiB){}",
                id.get(..19).unwrap_or(&id),
                files.len(),
                size as f64 / (1024.0 * 1024.0),
                image_name_note(plugin)
            ),
        },
    )
}

/// What [`build_checked`] did.
enum Built {
    /// An image with the same context digest exists; the line to print.
    UpToDate(String),
    /// A new image.
    New { tag: String, id: String },
}

/// Builds `plugin`'s image from the tar `context` unless an image with `digest` exists,
/// showing progress, then checks the result carries the manifest and runs as 65532.
async fn build_checked(
    docker: &DockerClient,
    plugin: &PluginDir,
    digest: &str,
    context: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    args: &Args,
) -> anyhow::Result<Built> {
    let verbose = args.verbose;
    let tag = plugin.tag();
    let previous = docker.inspect_image(&tag).await.ok();
    if !args.rebuild
        && let Some(image) = &previous
        && image.labels.get(CONTEXT_DIGEST_LABEL).map(String::as_str) == Some(digest)
    {
        return Ok(Built::UpToDate(format!(
            "{tag} is up to date ({}); --rebuild builds it anyway",
            image.id.get(..19).unwrap_or(&image.id)
        )));
    }
    let mut build_args: HashMap<String, String> = args.build_args.iter().cloned().collect();
    build_args.insert("BERTH_MANIFEST".to_owned(), plugin.manifest_text.clone());
    let request = BuildRequest {
        tag: tag.clone(),
        labels: HashMap::from([
            (MANIFEST_LABEL.to_owned(), plugin.manifest_text.clone()),
            (
                "org.opencontainers.image.title".to_owned(),
                plugin.plugin.name().to_owned(),
            ),
            (
                "org.opencontainers.image.version".to_owned(),
                plugin.plugin.spec.version.clone(),
            ),
            (MANAGED_BY_LABEL.to_owned(), "berth-build".to_owned()),
            (CONTEXT_DIGEST_LABEL.to_owned(), digest.to_owned()),
        ]),
        build_args,
    };
    let bar = if verbose {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(tag.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let result = docker
        .build_image(context()?, &request, |line| {
            if verbose {
                eprintln!("{tag}: {line}");
            } else {
                bar.set_message(line.to_owned());
            }
        })
        .await;
    bar.finish_and_clear();
    let id = result?;
    let image = docker.inspect_image(&tag).await?;
    // The image this tag named before is now untagged; drop it unless a container uses it.
    if let Some(old) = previous
        && old.id != image.id
        && old.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some("berth-build")
        && old.tags.iter().all(|t| *t == tag)
    {
        let _ = docker.remove_image(&old.id, false).await;
    }
    if image.labels.get(MANIFEST_LABEL) != Some(&plugin.manifest_text) {
        bail!(
            "the image {tag} was built but its {MANIFEST_LABEL} label is not berth.yaml; check the Dockerfile's LABEL lines"
        );
    }
    if !matches!(image.user.as_deref(), Some("65532:65532" | "65532")) {
        bail!(
            "the image {tag} runs as {:?}; the Dockerfile must say USER 65532:65532",
            image.user
        );
    }
    Ok(Built::New { tag, id })
}

/// A note when berth.yaml's spec.image is not the tag built.
fn image_name_note(plugin: &PluginDir) -> String {
    let tag = plugin.tag();
    if plugin.plugin.spec.image != tag && !plugin.plugin.spec.image.ends_with(&format!("/{tag}")) {
        format!(
            "; note: berth.yaml's spec.image is {}, tag or push the image under that name",
            plugin.plugin.spec.image
        )
    } else {
        String::new()
    }
}

/// `sha256:<hex>` over the three files of the build context, and the build arguments when
/// there are any (so a digest without them is the one earlier versions wrote).
fn context_digest(
    dockerfile: &str,
    manifest: &str,
    binary: &[u8],
    build_args: &[(String, String)],
) -> String {
    let mut digest = folder::PartsDigest::new();
    for part in [dockerfile.as_bytes(), manifest.as_bytes(), binary] {
        digest.part(part);
    }
    digest.build_args(build_args);
    digest.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_arg_needs_a_key_and_an_equals_sign() {
        assert_eq!(
            parse_build_arg("PYTHON_IMAGE=local/py:1").unwrap(),
            ("PYTHON_IMAGE".to_owned(), "local/py:1".to_owned())
        );
        assert_eq!(
            parse_build_arg("EMPTY=").unwrap(),
            ("EMPTY".to_owned(), String::new())
        );
        assert!(parse_build_arg("A=b=c").unwrap().1 == "b=c");
        assert!(
            parse_build_arg("PYTHON_IMAGE")
                .unwrap_err()
                .contains("expected KEY=VALUE")
        );
        assert!(
            parse_build_arg("=x")
                .unwrap_err()
                .contains("not an ARG name")
        );
        assert!(
            parse_build_arg("A B=x")
                .unwrap_err()
                .contains("not an ARG name")
        );
        assert!(
            parse_build_arg("BERTH_MANIFEST=x")
                .unwrap_err()
                .contains("sets BERTH_MANIFEST")
        );
    }

    #[test]
    fn static_digest_without_build_args_is_unchanged_and_with_them_differs() {
        let plain = context_digest("FROM scratch", "m", b"bin", &[]);
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in [&b"FROM scratch"[..], b"m", b"bin"] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let expected: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(plain, format!("sha256:{expected}"));
        let with = context_digest("FROM scratch", "m", b"bin", &[("A".into(), "1".into())]);
        assert_ne!(plain, with);
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        std::fs::write(dir.join(rel), text).unwrap();
    }

    const MANIFEST: &str = "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: demo}\nspec: {image: berth/demo:0.1.0, version: 0.1.0, port: 8080}\n";

    const DOCKERFILE: &str = "FROM scratch\nARG BERTH_MANIFEST\nLABEL dev.berth.manifest=\"${BERTH_MANIFEST}\"\nCOPY app /app\nUSER 65532:65532\nEXPOSE 8080\n";

    #[test]
    fn a_folder_with_a_dockerfile_and_no_cargo_package_is_a_dockerfile_build() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "berth.yaml", MANIFEST);
        write(dir.path(), "Dockerfile", DOCKERFILE);
        let plugin = read_plugin_dir(dir.path()).unwrap();
        assert_eq!(plugin.kind, Kind::Dockerfile);
        assert_eq!(plugin.tag(), "berth/demo:0.1.0");
        // The same folder with a Cargo package is the Rust path, where `app` is not in the
        // context.
        write(dir.path(), "Cargo.toml", "");
        let problems = read_plugin_dir(dir.path()).unwrap_err();
        assert!(problems[0].contains("COPY app"), "{problems:?}");
    }

    #[test]
    fn a_folder_with_neither_dockerfile_nor_cargo_package_says_what_to_add() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "berth.yaml", MANIFEST);
        let problems = read_plugin_dir(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(&format!(
                "{}: neither a Dockerfile nor a Cargo.toml",
                dir.path().display()
            )),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("berth new NAME --lang"),
            "{problems:?}"
        );
    }
}
