//! The build context of a Dockerfile build: the plugin folder less what its `.dockerignore`
//! leaves out, and the digest that decides whether a build can be skipped.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::dockerignore::DockerIgnore;

/// One file sent to the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextFile {
    /// Relative to the folder, `/`-separated.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Files the Docker CLI sends even when `.dockerignore` names them.
const ALWAYS_SENT: [&str; 2] = ["Dockerfile", ".dockerignore"];

/// The files of `dir` that `docker build dir` would send, sorted by path. Symbolic links to
/// files are sent as the files they point to; links to folders are not followed.
pub fn context_files(dir: &Path) -> Result<Vec<ContextFile>, String> {
    let ignore_path = dir.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => DockerIgnore::parse(&text)
            .map_err(|e| format!("{}: {e}; fix or remove the line", ignore_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(e) => return Err(format!("{}: cannot read ({e})", ignore_path.display())),
    };
    let mut files = Vec::new();
    walk(dir, "", &ignore, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    ignore: &DockerIgnore,
    out: &mut Vec<ContextFile>,
) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read ({e})", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: cannot read ({e})", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(format!(
                "{}: the name is not UTF-8; rename it or list it in .dockerignore",
                entry.path().display()
            ));
        };
        let rel = format!("{prefix}{name}");
        let excluded = ignore.excludes(&rel) && !(prefix.is_empty() && ALWAYS_SENT.contains(&name));
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("{}: cannot read ({e})", path.display()))?;
        if meta.is_dir() {
            // An excluded folder matters only when a `!` line may bring back part of it.
            if !excluded || ignore.has_exceptions() {
                walk(&path, &format!("{rel}/"), ignore, out)?;
            }
            continue;
        }
        if excluded {
            continue;
        }
        let meta = if meta.file_type().is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                _ => continue,
            }
        } else if meta.is_file() {
            meta
        } else {
            continue;
        };
        let contents =
            std::fs::read(&path).map_err(|e| format!("{}: cannot read ({e})", path.display()))?;
        out.push(ContextFile {
            path: rel,
            mode: meta.permissions().mode() & 0o7777,
            contents,
        });
    }
    Ok(())
}

/// SHA-256 over length-prefixed parts, so no two sequences of parts hash alike; build
/// arguments are added sorted. Both build digests (Rust and Dockerfile folders) use it.
pub struct PartsDigest(Sha256);

impl PartsDigest {
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    pub fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn build_args(&mut self, build_args: &[(String, String)]) {
        let mut sorted: Vec<&(String, String)> = build_args.iter().collect();
        sorted.sort();
        for (key, value) in sorted {
            self.part(key.as_bytes());
            self.part(value.as_bytes());
        }
    }

    /// `sha256:<hex>`.
    pub fn finish(self) -> String {
        let hex: String = self
            .0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }
}

/// `sha256:<hex>` over every context file (path, mode, bytes), the manifest and the build
/// arguments: equal digests build equal images, so the build can be skipped.
pub fn folder_digest(
    files: &[ContextFile],
    manifest: &str,
    build_args: &[(String, String)],
) -> String {
    let mut digest = PartsDigest::new();
    digest.part(b"folder");
    for f in files {
        digest.part(f.path.as_bytes());
        digest.part(&f.mode.to_le_bytes());
        digest.part(&f.contents);
    }
    digest.part(manifest.as_bytes());
    digest.build_args(build_args);
    digest.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn paths(files: &[ContextFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn context_is_the_folder_less_dockerignore_but_always_with_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "Dockerfile", "FROM scratch\n");
        write(d, "berth.yaml", "x");
        write(d, "main.py", "print()");
        write(d, "berth_plugin/__init__.py", "");
        write(d, "berth_plugin/__pycache__/a.pyc", "");
        write(d, "tests/test_x.py", "");
        write(d, "tests/keep.txt", "");
        write(
            d,
            ".dockerignore",
            "Dockerfile\ntests\n**/__pycache__\n!tests/keep.txt\n",
        );
        let files = context_files(d).unwrap();
        assert_eq!(
            paths(&files),
            [
                ".dockerignore",
                "Dockerfile",
                "berth.yaml",
                "berth_plugin/__init__.py",
                "main.py",
                "tests/keep.txt"
            ]
        );
        assert_eq!(files[4].contents, b"print()");
    }

    #[test]
    fn modes_are_kept_and_symlinks_to_files_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "run.sh", "#!/bin/sh\n");
        std::fs::set_permissions(d.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("run.sh", d.join("link.sh")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.join("dangling")).unwrap();
        let files = context_files(d).unwrap();
        assert_eq!(paths(&files), ["link.sh", "run.sh"]);
        assert_eq!(files[1].mode, 0o755);
        assert_eq!(files[0].contents, b"#!/bin/sh\n");
    }

    #[test]
    fn a_bad_dockerignore_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".dockerignore", "a\n[b\n");
        let e = context_files(dir.path()).unwrap_err();
        assert!(e.contains(".dockerignore: line 2:"), "{e}");
    }

    #[test]
    fn digest_changes_with_any_file_mode_manifest_or_build_argument() {
        let file = |path: &str, mode, text: &str| ContextFile {
            path: path.to_owned(),
            mode,
            contents: text.as_bytes().to_vec(),
        };
        let files = vec![file("Dockerfile", 0o644, "FROM x"), file("a", 0o644, "1")];
        let args = vec![("PYTHON_IMAGE".to_owned(), "local:1".to_owned())];
        let base = folder_digest(&files, "m", &args);
        assert!(base.starts_with("sha256:") && base.len() == 71);
        assert_eq!(base, folder_digest(&files, "m", &args));
        let mut other = files.clone();
        other[1].contents = b"2".to_vec();
        assert_ne!(base, folder_digest(&other, "m", &args));
        other = files.clone();
        other[1].mode = 0o755;
        assert_ne!(base, folder_digest(&other, "m", &args));
        other = files.clone();
        other[1].path = "b".to_owned();
        assert_ne!(base, folder_digest(&other, "m", &args));
        assert_ne!(base, folder_digest(&files, "m2", &args));
        assert_ne!(base, folder_digest(&files, "m", &[]));
        // The order build arguments are given in does not matter.
        let two = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "2".to_owned()),
        ];
        let reversed: Vec<_> = two.iter().rev().cloned().collect();
        assert_eq!(
            folder_digest(&files, "m", &two),
            folder_digest(&files, "m", &reversed)
        );
    }
}
