//! File operations confined to one directory tree.
//!
//! Every path is relative to the root. Absolute paths and `..` are refused outright; what
//! remains is resolved with symlinks followed and must still lie under the root, so a
//! symlink cannot lead outside it.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// Largest file `read` returns and `search` looks into.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most entries `list` returns.
pub const MAX_ENTRIES: usize = 10_000;
/// Most matches `search` returns.
pub const MAX_MATCHES: usize = 1_000;
/// Most files `search` opens.
pub const MAX_FILES_SEARCHED: usize = 10_000;
/// Deepest directory `search` descends into.
pub const MAX_SEARCH_DEPTH: usize = 32;

/// Why an operation was refused or failed.
#[derive(Debug, PartialEq, Eq)]
pub enum FsError {
    /// The path is absolute, has `..`, or resolves (through symlinks) outside the root.
    Outside(String),
    /// Nothing at the path.
    NotFound(String),
    /// A file where a directory was expected, or the reverse.
    WrongKind(String),
    /// Larger than [`MAX_FILE_BYTES`].
    TooLarge(String),
    /// Not UTF-8 text.
    NotText(String),
    /// Any other I/O failure.
    Io(String),
}

impl FsError {
    /// The error code answered to callers.
    pub fn code(&self) -> &'static str {
        match self {
            FsError::Outside(_) => "path_outside_workspace",
            FsError::NotFound(_) => "not_found",
            FsError::WrongKind(_) => "wrong_kind",
            FsError::TooLarge(_) => "too_large",
            FsError::NotText(_) => "not_text",
            FsError::Io(_) => "io_error",
        }
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsError::Outside(m)
            | FsError::NotFound(m)
            | FsError::WrongKind(m)
            | FsError::TooLarge(m)
            | FsError::NotText(m)
            | FsError::Io(m) => f.write_str(m),
        }
    }
}

/// A directory tree that every path is confined to.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

/// One entry of a listing.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's file name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Size in bytes, for files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One line that contains the pattern.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Match {
    /// The file, relative to the root.
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// The line's text.
    pub text: String,
}

impl Workspace {
    /// A workspace rooted at `root`, which need not exist yet (every operation then fails
    /// with not found).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn canonical_root(&self) -> Result<PathBuf, FsError> {
        self.root.canonicalize().map_err(|e| {
            FsError::NotFound(format!(
                "the workspace {} is not available ({e}); mount it there",
                self.root.display()
            ))
        })
    }

    /// The relative components of `path`, refusing absolute paths and `..`.
    fn components(path: &str) -> Result<Vec<&str>, FsError> {
        if path.contains('\0') {
            return Err(FsError::Outside("the path contains a NUL byte".into()));
        }
        let mut parts = Vec::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(FsError::Outside(format!(
                        "{path:?} contains \"..\"; paths stay inside the workspace"
                    )));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(FsError::Outside(format!(
                        "{path:?} is absolute; give a path relative to the workspace"
                    )));
                }
            }
        }
        Ok(parts)
    }

    /// Resolves an existing path, following symlinks, and checks it is under the root.
    pub fn resolve_existing(&self, path: &str) -> Result<PathBuf, FsError> {
        let root = self.canonical_root()?;
        let joined = Self::components(path)?
            .into_iter()
            .fold(root.clone(), |p, part| p.join(part));
        let resolved = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                if joined.symlink_metadata().is_ok() {
                    FsError::Outside(format!("{path:?} is a symlink to nothing"))
                } else {
                    FsError::NotFound(format!("{path:?} does not exist"))
                }
            }
            _ => FsError::Io(format!("{path:?}: {e}")),
        })?;
        if !resolved.starts_with(&root) {
            return Err(FsError::Outside(format!(
                "{path:?} leads outside the workspace through a symlink"
            )));
        }
        Ok(resolved)
    }

    /// Resolves a path to write: its nearest existing ancestor must be under the root, and
    /// an existing final component must not be a symlink leading out.
    fn resolve_for_write(&self, path: &str) -> Result<PathBuf, FsError> {
        let root = self.canonical_root()?;
        let parts = Self::components(path)?;
        if parts.is_empty() {
            return Err(FsError::WrongKind(
                "write needs a file path, not the workspace root".into(),
            ));
        }
        let mut existing = root.clone();
        let mut rest = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let next = existing.join(part);
            if next.symlink_metadata().is_ok() {
                existing = next.canonicalize().map_err(|_| {
                    FsError::Outside(format!("{path:?} goes through a symlink to nothing"))
                })?;
                if !existing.starts_with(&root) {
                    return Err(FsError::Outside(format!(
                        "{path:?} leads outside the workspace through a symlink"
                    )));
                }
            } else {
                rest.extend_from_slice(&parts[i..]);
                break;
            }
        }
        Ok(rest.into_iter().fold(existing, |p, part| p.join(part)))
    }

    /// The file's text and size.
    pub fn read(&self, path: &str) -> Result<(String, u64), FsError> {
        let file = self.resolve_existing(path)?;
        let meta = std::fs::metadata(&file).map_err(|e| FsError::Io(e.to_string()))?;
        if !meta.is_file() {
            return Err(FsError::WrongKind(format!("{path:?} is not a file")));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(FsError::TooLarge(format!(
                "{path:?} is {} bytes; read returns files up to {MAX_FILE_BYTES} bytes",
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&file)
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes))
            .map_err(|e| FsError::Io(format!("{path:?}: {e}")))?;
        let size = bytes.len() as u64;
        let text = String::from_utf8(bytes)
            .map_err(|_| FsError::NotText(format!("{path:?} is not UTF-8 text")))?;
        Ok((text, size))
    }

    /// Writes `content` to the file, creating missing parent directories; returns the bytes written.
    pub fn write(&self, path: &str, content: &str) -> Result<u64, FsError> {
        let file = self.resolve_for_write(path)?;
        if file.is_dir() {
            return Err(FsError::WrongKind(format!("{path:?} is a directory")));
        }
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FsError::Io(format!("{path:?}: {e}")))?;
        }
        std::fs::write(&file, content).map_err(|e| FsError::Io(format!("{path:?}: {e}")))?;
        Ok(content.len() as u64)
    }

    /// The directory's entries, sorted by name; symlinks are listed, not followed.
    pub fn list(&self, path: &str) -> Result<Vec<Entry>, FsError> {
        let dir = self.resolve_existing(path)?;
        if !dir.is_dir() {
            return Err(FsError::WrongKind(format!("{path:?} is not a directory")));
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| FsError::Io(format!("{path:?}: {e}")))? {
            let entry = entry.map_err(|e| FsError::Io(e.to_string()))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(|e| FsError::Io(e.to_string()))?;
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                "symlink"
            } else if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            entries.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
                size: ft.is_file().then_some(meta.len()),
            });
            if entries.len() >= MAX_ENTRIES {
                break;
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Lines containing `pattern` in text files under `path`; symlinks are not followed.
    pub fn search(&self, pattern: &str, path: &str) -> Result<Vec<Match>, FsError> {
        let root = self.canonical_root()?;
        let start = self.resolve_existing(path)?;
        let mut matches = Vec::new();
        let mut files = 0;
        let mut stack = vec![(start, 0usize)];
        while let Some((current, depth)) = stack.pop() {
            let meta = match current.symlink_metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if meta.is_dir() {
                if depth >= MAX_SEARCH_DEPTH {
                    continue;
                }
                let Ok(read) = std::fs::read_dir(&current) else {
                    continue;
                };
                let mut children: Vec<PathBuf> =
                    read.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort();
                stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
            } else if meta.is_file() && meta.len() <= MAX_FILE_BYTES {
                files += 1;
                if files > MAX_FILES_SEARCHED {
                    break;
                }
                let Ok(text) = std::fs::read_to_string(&current) else {
                    continue;
                };
                let rel = current
                    .strip_prefix(&root)
                    .unwrap_or(&current)
                    .to_string_lossy()
                    .into_owned();
                for (i, line) in text.lines().enumerate() {
                    if line.contains(pattern) {
                        matches.push(Match {
                            path: rel.clone(),
                            line: i + 1,
                            text: line.to_owned(),
                        });
                        if matches.len() >= MAX_MATCHES {
                            return Ok(matches);
                        }
                    }
                }
            }
        }
        Ok(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        outside: PathBuf,
        ws: Workspace,
    }

    /// A workspace `root/` with `notes.txt` and `src/lib.rs`, beside a `secret.txt` outside it.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("notes.txt"), "first\nTODO: second\n").unwrap();
        std::fs::write(root.join("src/lib.rs"), "fn main() {}\n// TODO tidy\n").unwrap();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "TODO steal me\n").unwrap();
        Fixture {
            ws: Workspace::new(&root),
            outside,
            _dir: dir,
        }
    }

    fn code<T: std::fmt::Debug>(r: Result<T, FsError>) -> &'static str {
        r.expect_err("expected an error").code()
    }

    #[test]
    fn read_and_write_relative_paths() {
        let f = fixture();
        assert_eq!(
            f.ws.read("notes.txt").unwrap(),
            ("first\nTODO: second\n".into(), 19)
        );
        assert_eq!(f.ws.write("out/new.txt", "hi").unwrap(), 2);
        assert_eq!(f.ws.read("./out/new.txt").unwrap().0, "hi");
    }

    #[test]
    fn parent_components_are_refused() {
        let f = fixture();
        assert_eq!(code(f.ws.read("../secret.txt")), "path_outside_workspace");
        assert_eq!(
            code(f.ws.read("src/../../secret.txt")),
            "path_outside_workspace"
        );
        assert_eq!(code(f.ws.read("src/..")), "path_outside_workspace");
        assert_eq!(code(f.ws.write("../x.txt", "x")), "path_outside_workspace");
        assert_eq!(code(f.ws.list("..")), "path_outside_workspace");
        assert_eq!(code(f.ws.search("TODO", "..")), "path_outside_workspace");
    }

    #[test]
    fn absolute_paths_are_refused() {
        let f = fixture();
        let abs = f.outside.to_str().unwrap();
        assert_eq!(code(f.ws.read(abs)), "path_outside_workspace");
        assert_eq!(code(f.ws.write("/tmp/x", "x")), "path_outside_workspace");
        assert_eq!(code(f.ws.list("/")), "path_outside_workspace");
    }

    #[test]
    fn symlink_to_a_file_outside_cannot_be_read_or_written() {
        let f = fixture();
        symlink(&f.outside, f.ws.root.join("escape.txt")).unwrap();
        assert_eq!(code(f.ws.read("escape.txt")), "path_outside_workspace");
        assert_eq!(
            code(f.ws.write("escape.txt", "overwritten")),
            "path_outside_workspace"
        );
        assert_eq!(
            std::fs::read_to_string(&f.outside).unwrap(),
            "TODO steal me\n"
        );
    }

    #[test]
    fn symlinked_directory_outside_cannot_be_entered() {
        let f = fixture();
        let parent = f.outside.parent().unwrap().to_path_buf();
        symlink(&parent, f.ws.root.join("up")).unwrap();
        assert_eq!(code(f.ws.read("up/secret.txt")), "path_outside_workspace");
        assert_eq!(code(f.ws.list("up")), "path_outside_workspace");
        assert_eq!(
            code(f.ws.write("up/planted.txt", "x")),
            "path_outside_workspace"
        );
        assert!(!parent.join("planted.txt").exists());
        assert_eq!(
            code(f.ws.write("up/deeper/planted.txt", "x")),
            "path_outside_workspace"
        );
        assert!(!parent.join("deeper").exists());
    }

    #[test]
    fn dangling_symlink_is_refused() {
        let f = fixture();
        symlink("/nonexistent/target", f.ws.root.join("dangling")).unwrap();
        assert_eq!(code(f.ws.read("dangling")), "path_outside_workspace");
        assert_eq!(code(f.ws.write("dangling", "x")), "path_outside_workspace");
    }

    #[test]
    fn symlink_that_stays_inside_is_followed() {
        let f = fixture();
        symlink(f.ws.root.join("notes.txt"), f.ws.root.join("alias.txt")).unwrap();
        assert_eq!(f.ws.read("alias.txt").unwrap().1, 19);
    }

    #[test]
    fn list_reports_kinds_sorted_without_following_symlinks() {
        let f = fixture();
        symlink(&f.outside, f.ws.root.join("escape.txt")).unwrap();
        let entries = f.ws.list(".").unwrap();
        let summary: Vec<(&str, &str, Option<u64>)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            summary,
            [
                ("escape.txt", "symlink", None),
                ("notes.txt", "file", Some(19)),
                ("src", "dir", None)
            ]
        );
    }

    #[test]
    fn search_finds_lines_and_does_not_follow_symlinks_out() {
        let f = fixture();
        symlink(f.outside.parent().unwrap(), f.ws.root.join("up")).unwrap();
        symlink(&f.outside, f.ws.root.join("escape.txt")).unwrap();
        let found = f.ws.search("TODO", "").unwrap();
        let lines: Vec<(&str, usize)> = found.iter().map(|m| (m.path.as_str(), m.line)).collect();
        assert_eq!(lines, [("notes.txt", 2), ("src/lib.rs", 2)]);
    }

    #[test]
    fn missing_files_and_wrong_kinds_are_reported() {
        let f = fixture();
        assert_eq!(code(f.ws.read("nope.txt")), "not_found");
        assert_eq!(code(f.ws.read("src")), "wrong_kind");
        assert_eq!(code(f.ws.list("notes.txt")), "wrong_kind");
        assert_eq!(code(f.ws.write("src", "x")), "wrong_kind");
    }

    #[test]
    fn files_over_the_size_limit_are_not_read() {
        let f = fixture();
        let big = "x".repeat(MAX_FILE_BYTES as usize + 1);
        std::fs::write(f.ws.root.join("big.txt"), big).unwrap();
        assert_eq!(code(f.ws.read("big.txt")), "too_large");
    }

    #[test]
    fn missing_root_is_not_found() {
        let ws = Workspace::new("/nonexistent/workspace");
        assert_eq!(code(ws.list(".")), "not_found");
    }
}
