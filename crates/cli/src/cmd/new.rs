//! `berth new NAME`: a plugin folder copied from the `hello` example, ready for
//! `berth build` and `berth plugin test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_api::validate::is_dns_label;

/// Options of `berth new`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The plugin's name: lower-case letters, digits and `-`, at most 63 characters.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to create it (default: ./NAME). Must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The berth-plugin-sdk source to depend on (default: the SDK of the Berth checkout this
    /// binary was built from, when present; otherwise the published crate).
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

const TEMPLATE_MAIN: &str = include_str!("../../../../plugin-images/hello/src/main.rs");
const TEMPLATE_MANIFEST: &str = include_str!("../../../../plugin-images/hello/berth.yaml");
const TEMPLATE_DOCKERFILE: &str = include_str!("../../../../plugin-images/hello/Dockerfile");

/// The release profile of Berth's workspace: the same settings let a scaffold share compiled
/// dependencies with it through one `CARGO_TARGET_DIR`.
const RELEASE_PROFILE: &str =
    "[profile.release]\nopt-level = 3\nlto = \"thin\"\ncodegen-units = 4\nstrip = true\n";

/// Exact replacements applied to the template; each must match, or the template changed.
fn replacements(name: &str) -> [(&'static str, &'static str, String); 5] {
    [
        (
            "berth.yaml",
            "metadata:\n  name: hello\n",
            format!("metadata:\n  name: {name}\n"),
        ),
        (
            "berth.yaml",
            "image: berth/hello:0.1.0",
            format!("image: berth/{name}:0.1.0"),
        ),
        (
            "berth.yaml",
            "description: The smallest plugin; the template that `berth new` copies",
            format!("description: The {name} plugin"),
        ),
        (
            "src/main.rs",
            "//! `hello`: the smallest Berth plugin, and the template `berth new` copies.",
            format!("//! `{name}`: a Berth plugin."),
        ),
        (
            "src/main.rs",
            "const NAME: &str = \"hello\";",
            format!("const NAME: &str = \"{name}\";"),
        ),
    ]
}

/// The files of a new plugin called `name`, as (relative path, contents).
pub fn scaffold(name: &str, sdk_dependency: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut manifest = TEMPLATE_MANIFEST.to_owned();
    let mut main = TEMPLATE_MAIN.to_owned();
    for (file, from, to) in replacements(name) {
        let text = if file == "berth.yaml" {
            &mut manifest
        } else {
            &mut main
        };
        if !text.contains(from) {
            bail!("the hello template's {file} no longer contains {from:?}; update `berth new`");
        }
        *text = text.replacen(from, &to, 1);
    }
    let cargo_toml = format!(
        r#"[package]
name = "berth-plugin-{name}"
description = "The {name} Berth plugin"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
{sdk_dependency}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[dev-dependencies]
tokio = {{ version = "1", features = ["full"] }}

# Its own workspace, so it builds wherever it is put.
[workspace]

{RELEASE_PROFILE}"#
    );
    Ok(vec![
        ("Cargo.toml", cargo_toml),
        ("berth.yaml", manifest),
        ("Dockerfile", TEMPLATE_DOCKERFILE.to_owned()),
        ("src/main.rs", main),
        (".gitignore", "/target\n".to_owned()),
    ])
}

/// The SDK checkout next to this binary's source, if it is still there.
fn default_sdk() -> Option<PathBuf> {
    let cli = Path::new(option_env!("CARGO_MANIFEST_DIR")?);
    let sdk = cli.parent()?.join("sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// Exit codes: 0 created, 1 the name or folder is unusable.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !is_dns_label(&args.name) {
        eprintln!(
            "error: {:?} is not a plugin name: use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (e.g. word-count)",
            args.name
        );
        return Ok(ExitCode::from(1));
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        eprintln!(
            "error: {} already exists and is not empty; choose another --dir",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let sdk = args.sdk.or_else(default_sdk);
    let (sdk_dependency, lockfile) = match &sdk {
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk {}: no such folder", path.display()))?;
            if !path.join("Cargo.toml").is_file() {
                bail!("--sdk {}: no Cargo.toml there", path.display());
            }
            // The checkout's lock file pins the versions the SDK was tested with.
            let lockfile = path
                .parent()
                .and_then(Path::parent)
                .map(|root| root.join("Cargo.lock"))
                .filter(|p| p.is_file());
            (
                format!(
                    "berth-plugin-sdk = {{ path = {:?} }}",
                    path.display().to_string()
                ),
                lockfile,
            )
        }
        None => ("berth-plugin-sdk = \"0.1\"".to_owned(), None),
    };
    let files = scaffold(&args.name, &sdk_dependency)?;
    for (rel, contents) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(lock) = lockfile {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    println!("created plugin {} in {}", args.name, dir.display());
    for (rel, _) in &files {
        println!("  {rel}");
    }
    println!(
        "next:\n  berth build {dir}\n  berth plugin test berth/{name}:0.1.0",
        dir = dir.display(),
        name = args.name
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_renames_every_place_the_template_names_hello() {
        let files = scaffold("word-count", "berth-plugin-sdk = \"0.1\"").unwrap();
        let get = |name: &str| &files.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(get("berth.yaml").contains("metadata:\n  name: word-count\n"));
        assert!(get("berth.yaml").contains("image: berth/word-count:0.1.0"));
        assert!(get("src/main.rs").contains("const NAME: &str = \"word-count\";"));
        assert!(get("Cargo.toml").contains("name = \"berth-plugin-word-count\""));
        for (name, text) in &files {
            assert!(!text.contains("name: hello"), "{name} still names hello");
        }
        let loaded = berth_api::load_manifests("berth.yaml", get("berth.yaml").as_bytes());
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    }

    #[test]
    fn scaffold_release_profile_matches_the_workspace() {
        let root = include_str!("../../../../Cargo.toml");
        assert!(
            root.contains(RELEASE_PROFILE),
            "update RELEASE_PROFILE to match the workspace's [profile.release]"
        );
    }

    #[test]
    fn scaffold_dockerfile_agrees_with_its_manifest() {
        let files = scaffold("word-count", "berth-plugin-sdk = \"0.1\"").unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in &files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let plugin = super::super::build::read_plugin_dir(dir.path()).unwrap();
        assert_eq!(plugin.tag(), "berth/word-count:0.1.0");
    }
}
