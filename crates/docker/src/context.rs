//! Image build contexts: an in-memory tar of the files the Dockerfile needs.

use crate::error::{Error, Result};

/// Files for `docker build`, assembled in memory.
pub struct BuildContext {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for BuildContext {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildContext {
    /// An empty context.
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// Adds a file at `path` (relative, `/`-separated) with Unix permission bits `mode`.
    pub fn add(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<&mut Self> {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, path, contents)
            .map_err(Error::Context)?;
        Ok(self)
    }

    /// The tar archive.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().map_err(Error::Context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_a_tar_with_the_files_and_modes_given() {
        let mut ctx = BuildContext::new();
        ctx.add("Dockerfile", b"FROM scratch\n", 0o644).unwrap();
        ctx.add("plugin", b"\x7fELF", 0o755).unwrap();
        let bytes = ctx.finish().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Dockerfile".to_owned(), 0o644, 13),
                ("plugin".to_owned(), 0o755, 4)
            ]
        );
    }
}
