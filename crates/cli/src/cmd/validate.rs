//! `berth validate PATH...`: check manifests, print every problem, exit 0/1/2.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_api::deps::{Missing, resolve_order};
use berth_api::load::{MAX_MANIFEST_BYTES, Manifest, load_manifests, too_large};
use berth_api::{Plugin, Problem};
use serde::Serialize;

/// Options of `berth validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories (searched for *.yaml and *.yml); `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How results are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// One line per problem: `file: path: message (hint)`.
    Text,
    /// One JSON document with every object and problem.
    Json,
}

#[derive(Serialize)]
struct Report {
    valid: bool,
    objects: Vec<ObjectReport>,
    problems: Vec<Problem>,
    unreadable: Vec<Unreadable>,
}

#[derive(Serialize)]
struct ObjectReport {
    file: String,
    object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    risk: Option<berth_api::RiskAssessment>,
}

#[derive(Serialize)]
struct Unreadable {
    file: String,
    error: String,
}

/// Exit codes: 0 every manifest is valid, 1 a manifest is invalid, 2 a path could not be read.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut unreadable = Vec::new();
    for path in &args.paths {
        if path == "-" {
            let mut buf = Vec::new();
            match std::io::stdin()
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut buf)
            {
                Ok(_) => files.push(("-".into(), buf)),
                Err(e) => unreadable.push(Unreadable {
                    file: "-".into(),
                    error: e.to_string(),
                }),
            }
            continue;
        }
        match collect(Path::new(path)) {
            Ok(found) if found.is_empty() => unreadable.push(Unreadable {
                file: path.clone(),
                error: "no .yaml or .yml files found".into(),
            }),
            Ok(found) => {
                for file in found {
                    let name = file.display().to_string();
                    match read_capped(&file) {
                        Ok(bytes) => files.push((name, bytes)),
                        Err(e) => unreadable.push(Unreadable {
                            file: name,
                            error: e.to_string(),
                        }),
                    }
                }
            }
            Err(e) => unreadable.push(Unreadable {
                file: path.clone(),
                error: e.to_string(),
            }),
        }
    }

    let mut problems = Vec::new();
    let mut objects = Vec::new();
    // (file, document tag, plugin) for naming where dependency problems are.
    let mut plugins: Vec<(String, Option<usize>, Plugin)> = Vec::new();
    for (file, bytes) in &files {
        if bytes.len() > MAX_MANIFEST_BYTES {
            let size = std::fs::metadata(file)
                .map(|m| m.len())
                .unwrap_or(bytes.len() as u64);
            problems.push(too_large(file, size));
            continue;
        }
        let loaded = load_manifests(file, bytes);
        problems.extend(loaded.problems);
        let multi = loaded.documents.len() > 1;
        for doc in loaded.documents {
            let risk = match &doc.manifest {
                Manifest::Plugin(p) => {
                    plugins.push((file.clone(), multi.then_some(doc.index), (**p).clone()));
                    Some(berth_api::assess(&p.spec.permissions, &p.spec.hooks))
                }
                Manifest::Grant(_) => None,
            };
            objects.push(ObjectReport {
                file: file.clone(),
                object: doc.manifest.object(),
                risk,
            });
        }
    }
    let refs: Vec<&Plugin> = plugins.iter().map(|(_, _, p)| p).collect();
    let locate = |mut p: Problem| {
        let name = p.object.as_deref().and_then(|o| o.strip_prefix("Plugin/"));
        if let Some((file, doc, _)) = plugins.iter().find(|(_, _, pl)| Some(pl.name()) == name) {
            p.file = Some(file.clone());
            p.document = *doc;
        }
        p
    };
    // A dependency outside the given files may already be installed: warn, do not fail.
    match resolve_order(&refs, Missing::Warn) {
        Ok(order) => problems.extend(order.warnings.into_iter().map(locate)),
        Err(errs) => problems.extend(errs.into_iter().map(locate)),
    }

    let invalid = problems.iter().any(Problem::is_error);
    match args.output {
        Output::Text => {
            for u in &unreadable {
                eprintln!("{}: cannot read: {}", u.file, u.error);
            }
            for o in &objects {
                match &o.risk {
                    Some(r) => println!(
                        "{}: {}: valid (risk {} {})",
                        o.file, o.object, r.score, r.tier
                    ),
                    None => println!("{}: {}: valid", o.file, o.object),
                }
            }
            for p in &problems {
                println!("{p}");
            }
            let errors = problems.iter().filter(|p| p.is_error()).count();
            let warnings = problems.len() - errors;
            eprintln!(
                "{} object(s) in {} file(s): {} error(s), {} warning(s){}",
                objects.len(),
                files.len(),
                errors,
                warnings,
                if unreadable.is_empty() {
                    String::new()
                } else {
                    format!(", {} unreadable path(s)", unreadable.len())
                }
            );
        }
        Output::Json => {
            let report = Report {
                valid: !invalid && unreadable.is_empty(),
                objects,
                problems,
                unreadable,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(if !unreadable_is_empty(&args, &files) {
        ExitCode::from(2)
    } else if invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn unreadable_is_empty(args: &Args, files: &[(String, Vec<u8>)]) -> bool {
    // Every named path produced at least one readable file.
    args.paths.iter().all(|p| {
        p == "-" && files.iter().any(|(f, _)| f == "-")
            || files
                .iter()
                .any(|(f, _)| Path::new(f).starts_with(p) || f == p)
    })
}

/// Reads one manifest file without ever holding more than the limit plus one byte; a file
/// over the limit is the `too_large` problem with its real size.
pub(crate) fn read_manifest_file(path: &Path) -> std::io::Result<Result<Vec<u8>, Problem>> {
    let bytes = read_capped(path)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or(bytes.len() as u64);
        return Ok(Err(too_large(&path.display().to_string(), size)));
    }
    Ok(Ok(bytes))
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The YAML files at `path`: the file itself, or every *.yaml/*.yml below a directory, sorted.
pub(crate) fn collect(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let p = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
