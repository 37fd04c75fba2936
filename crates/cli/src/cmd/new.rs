//! `berth new NAME [--lang L]`: a plugin folder ready for `berth build` and `berth plugin
//! test`. Rust copies the `hello` example; Python, TypeScript, Go and C copy
//! `templates/<lang>/` (plus the SDK the template imports), all embedded in the binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_api::validate::is_dns_label;
use include_dir::{Dir, include_dir};

/// Options of `berth new`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The plugin's name: lower-case letters, digits and `-`, at most 63 characters.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to create it (default: ./NAME). Must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The language to write the plugin in.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// For --lang rust: the berth-plugin-sdk source to depend on (default: the SDK of the
    /// Berth checkout this binary was built from, when present; otherwise the published
    /// crate).
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

/// The languages `berth new` writes plugins in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust with berth-plugin-sdk, a static binary (the fast `berth build` path).
    Rust,
    /// Python 3 (standard library only) with the berth_plugin package.
    Python,
    /// TypeScript for Node with berth.ts, compiled by tsc.
    Typescript,
    /// Go, standard library only, a static binary.
    Go,
    /// C, a static binary.
    C,
}

/// The plugin name every template uses; `berth new` replaces it with the new name.
pub const TEMPLATE_NAME: &str = "berth-template";

/// `templates/`, one folder per language.
static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../templates");
static PYTHON_SDK: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../sdks/python/berth_plugin");
const TYPESCRIPT_SDK: &str = include_str!("../../../../sdks/typescript/src/berth.ts");

impl Lang {
    /// The embedded template folder (None when this binary was built without it) and where
    /// the SDK goes in the new plugin.
    fn template(self) -> (Option<&'static Dir<'static>>, Sdk) {
        let sdk = match self {
            Lang::Python => Sdk::Folder(&PYTHON_SDK, "berth_plugin"),
            Lang::Typescript => Sdk::File(TYPESCRIPT_SDK, "src/berth.ts"),
            Lang::Rust | Lang::Go | Lang::C => Sdk::None,
        };
        (TEMPLATES.get_dir(self.name()), sdk)
    }

    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Typescript => "typescript",
            Lang::Go => "go",
            Lang::C => "c",
        }
    }
}

/// The SDK a template imports, copied beside it.
enum Sdk {
    None,
    /// Every file of the folder, under the given path.
    Folder(&'static Dir<'static>, &'static str),
    /// One file, at the given path.
    File(&'static str, &'static str),
}

/// Build products and caches a working copy of a template may hold; never part of it.
fn is_generated(path: &str) -> bool {
    path.split('/').any(|part| {
        matches!(
            part,
            "__pycache__" | ".pytest_cache" | ".mypy_cache" | "node_modules" | "dist" | "target"
        )
    }) || path.ends_with(".pyc")
}

/// Every file under `dir` (relative paths, `/`-separated), build products left out.
fn embedded_files(dir: &'static Dir<'static>) -> Vec<(String, &'static [u8])> {
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in d.entries() {
            if let Some(sub) = entry.as_dir() {
                stack.push(sub);
            } else if let Some(file) = entry.as_file() {
                let rel = file
                    .path()
                    .strip_prefix(dir.path())
                    .unwrap_or(file.path())
                    .to_string_lossy()
                    .replace('\\', "/");
                if !is_generated(&rel) {
                    out.push((rel, file.contents()));
                }
            }
        }
    }
    out.sort();
    out
}

/// The files of a new `lang` plugin called `name` (not Rust): the template with every
/// `berth-template` replaced by `name`, plus the SDK.
pub fn template_files(lang: Lang, name: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (Some(template), sdk) = lang.template() else {
        bail!(
            "this berth was built without templates/{}/; build it from a complete checkout",
            lang.name()
        );
    };
    let mut files: Vec<(String, Vec<u8>)> = embedded_files(template)
        .into_iter()
        .map(|(rel, bytes)| {
            let bytes = match std::str::from_utf8(bytes) {
                Ok(text) => text.replace(TEMPLATE_NAME, name).into_bytes(),
                Err(_) => bytes.to_vec(),
            };
            (rel.replace(TEMPLATE_NAME, name), bytes)
        })
        .collect();
    if !files.iter().any(|(rel, _)| rel == "berth.yaml") {
        bail!(
            "the {} template has no berth.yaml; this binary was built without templates/{}/",
            lang.name(),
            lang.name()
        );
    }
    match sdk {
        Sdk::None => {}
        Sdk::Folder(dir, under) => {
            files.retain(|(rel, _)| !rel.starts_with(&format!("{under}/")));
            files.extend(
                embedded_files(dir)
                    .into_iter()
                    .map(|(rel, bytes)| (format!("{under}/{rel}"), bytes.to_vec())),
            );
        }
        Sdk::File(text, at) => {
            files.retain(|(rel, _)| rel != at);
            files.push((at.to_owned(), text.as_bytes().to_vec()));
        }
    }
    files.sort();
    Ok(files)
}

/// The base-image build arguments a Dockerfile declares (`ARG X_IMAGE=default`), as
/// (name, default).
fn base_image_args(dockerfile: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("ARG")) {
            continue;
        }
        let Some(arg) = words.next() else { continue };
        let (key, default) = arg.split_once('=').unwrap_or((arg, ""));
        if key.ends_with("_IMAGE") && !out.iter().any(|(k, _)| k == key) {
            out.push((key.to_owned(), default.trim_matches('"').to_owned()));
        }
    }
    out
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

/// Writes a plugin from the `lang` template and says what to do next.
fn write_template(lang: Lang, name: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let files = template_files(lang, name)?;
    for (rel, contents) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created {} plugin {name} in {}", lang.name(), dir.display());
    for (rel, _) in &files {
        println!("  {rel}");
    }
    let dockerfile = files
        .iter()
        .find(|(rel, _)| rel == "Dockerfile")
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default();
    println!("next:\n  berth build {}", dir.display());
    for (arg, default) in base_image_args(&dockerfile) {
        println!(
            "    (builds FROM {default}; where that image cannot be pulled, pass a local one: --build-arg {arg}=IMAGE)"
        );
    }
    println!("  berth plugin test berth/{name}:0.1.0");
    Ok(ExitCode::SUCCESS)
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
    if args.lang != Lang::Rust {
        if args.sdk.is_some() {
            eprintln!(
                "error: --sdk is the Rust SDK's source; --lang {} copies its SDK into the plugin, drop --sdk",
                args.lang.name()
            );
            return Ok(ExitCode::from(1));
        }
        return write_template(args.lang, &args.name, &dir);
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

    const OTHER_LANGS: [Lang; 4] = [Lang::Python, Lang::Typescript, Lang::Go, Lang::C];

    /// Files on disk under `dir`, build products left out, as `embedded_files` lists them.
    fn files_on_disk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    if !is_generated(&rel) {
                        out.push(rel);
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_template_and_sdk_file_on_disk_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut folders: Vec<(String, &'static Dir<'static>)> = OTHER_LANGS
            .iter()
            .map(|l| {
                let folder = format!("templates/{}", l.name());
                let dir = l.template().0.unwrap_or_else(|| {
                    panic!("{folder} is not embedded: touch crates/cli/src/cmd/new.rs and rebuild")
                });
                (folder, dir)
            })
            .collect();
        folders.push(("sdks/python/berth_plugin".to_owned(), &PYTHON_SDK));
        for (folder, embedded) in folders {
            let on_disk = files_on_disk(&root.join(&folder));
            let in_binary: Vec<String> = embedded_files(embedded)
                .into_iter()
                .map(|(rel, _)| rel)
                .collect();
            assert_eq!(
                on_disk, in_binary,
                "{folder}: the files on disk (left) are not the ones embedded in berth (right); include_dir! reads the folder when new.rs is compiled: touch crates/cli/src/cmd/new.rs and rebuild"
            );
        }
        let ts = std::fs::read_to_string(root.join("sdks/typescript/src/berth.ts")).unwrap();
        assert!(
            ts == TYPESCRIPT_SDK,
            "sdks/typescript/src/berth.ts changed after berth was compiled; rebuild"
        );
    }

    #[test]
    fn every_language_template_names_the_new_plugin_and_brings_its_sdk() {
        for lang in OTHER_LANGS {
            let files = template_files(lang, "x-demo").unwrap();
            let get = |name: &str| {
                files
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_else(|| panic!("{lang:?}: no {name}"))
            };
            for (rel, bytes) in &files {
                assert!(
                    !String::from_utf8_lossy(bytes).contains(TEMPLATE_NAME)
                        && !rel.contains(TEMPLATE_NAME),
                    "{lang:?}: {rel} still says {TEMPLATE_NAME}"
                );
            }
            let manifest = get("berth.yaml");
            assert!(
                manifest.contains("image: berth/x-demo:0.1.0"),
                "{lang:?}: {manifest}"
            );
            assert!(
                !base_image_args(&get("Dockerfile")).is_empty(),
                "{lang:?}: the Dockerfile declares no ARG *_IMAGE base"
            );
            match lang {
                Lang::Python => {
                    assert!(files.iter().any(|(n, _)| n == "berth_plugin/__init__.py"));
                }
                Lang::Typescript => assert_eq!(get("src/berth.ts"), TYPESCRIPT_SDK),
                _ => {}
            }
            let dir = tempfile::tempdir().unwrap();
            for (rel, bytes) in &files {
                let p = dir.path().join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
            let plugin = super::super::build::read_plugin_dir(dir.path())
                .unwrap_or_else(|e| panic!("{lang:?}: {e:#?}"));
            assert_eq!(plugin.tag(), "berth/x-demo:0.1.0");
            assert_eq!(plugin.kind, super::super::build::Kind::Dockerfile);
        }
    }

    #[test]
    fn base_image_arguments_are_read_from_the_dockerfile() {
        let text = "ARG PYTHON_IMAGE=python:3.12-slim\nFROM ${PYTHON_IMAGE}\narg NODE_IMAGE=\"node:20\"\nARG BERTH_MANIFEST\nARG PYTHON_IMAGE\n";
        assert_eq!(
            base_image_args(text),
            [
                ("PYTHON_IMAGE".to_owned(), "python:3.12-slim".to_owned()),
                ("NODE_IMAGE".to_owned(), "node:20".to_owned())
            ]
        );
    }

    #[test]
    fn generated_files_are_not_part_of_a_template() {
        for path in [
            "__pycache__/a.pyc",
            "berth_plugin/__pycache__/x.cpython-311.pyc",
            "a.pyc",
            "node_modules/x/index.js",
            "dist/main.js",
        ] {
            assert!(is_generated(path), "{path}");
        }
        for path in [
            "main.py",
            "src/main.ts",
            "distance.go",
            "berth_plugin/hooks.py",
        ] {
            assert!(!is_generated(path), "{path}");
        }
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
