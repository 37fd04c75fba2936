//! The state directory of local mode: the store `berth.db`, the admin token the gateway
//! accepts from the CLI, and the lock a running `berth dev up` holds.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_store::Store;

use super::{ControlError, Result};

const STORE_FILE: &str = "berth.db";
const ADMIN_TOKEN_FILE: &str = "admin.token";
const LOCK_FILE: &str = "supervisor.lock";

/// Where local mode keeps its state when none is given: `$XDG_DATA_HOME/berth`, else
/// `$HOME/.local/share/berth`; `None` without either. Takes the variables' values so a
/// test need not change the process environment.
pub fn default_state_dir(
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    match xdg_data_home.filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x).join("berth")),
        None => home.map(|h| PathBuf::from(h).join(".local/share/berth")),
    }
}

/// A state directory that exists, named by its canonical path (the Docker objects of a
/// `berth dev up` are labelled from it, so two spellings must not make two instances).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

/// The lock of a running `berth dev up` on its state directory; dropping it releases it.
#[derive(Debug)]
pub struct SupervisorLock {
    _file: File,
}

impl StateDir {
    /// The directory given, or the default one from the environment; created if needed.
    pub fn resolve(given: Option<&Path>) -> Result<Self> {
        let path = match given {
            Some(p) => p.to_path_buf(),
            None => default_state_dir(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
                .ok_or(ControlError::NoStateDir)?,
        };
        Self::create(path)
    }

    /// `path`, created if needed. A path that is a file, or a directory this user may not
    /// list or create files in, is refused here, before any command touches it, with an
    /// error naming the directory and the fix.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if let Err(source) = std::fs::create_dir_all(&path) {
            let reason = if path.is_file() {
                "it is a file, not a directory".into()
            } else {
                format!("cannot create it: {source}")
            };
            return Err(berth_store::Error::Directory { path, reason }.into());
        }
        let path = path.canonicalize().unwrap_or(path);
        berth_store::check_directory(&path)?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's file, `berth.db`.
    pub fn store_path(&self) -> PathBuf {
        self.path.join(STORE_FILE)
    }

    /// Opens (creating and migrating) the store; each call is a connection of its own.
    pub fn open_store(&self) -> Result<Store> {
        let path = self.store_path();
        Store::open(&path).map_err(|source| {
            if source.is_file_fault() {
                // It names the file and the fix already.
                ControlError::Store(source)
            } else {
                ControlError::OpenStore { path, source }
            }
        })
    }

    /// The admin token's file, `admin.token`.
    pub fn admin_token_path(&self) -> PathBuf {
        self.path.join(ADMIN_TOKEN_FILE)
    }

    /// The admin token `berth dev up` created; an error that says to start it when missing.
    pub fn admin_token(&self) -> Result<String> {
        let path = self.admin_token_path();
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|error| ControlError::ReadAdminToken { path, error })
    }

    /// The admin token, created once (readable by its owner only) and reused afterwards so
    /// a restarted `berth dev up` keeps the token scripts already hold.
    pub fn ensure_admin_token(&self) -> Result<String> {
        let path = self.admin_token_path();
        match std::fs::read_to_string(&path) {
            Ok(t) => return Ok(t.trim().to_owned()),
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(ControlError::ReadAdminToken { path, error });
            }
            Err(_) => {}
        }
        let token = berth_contract::credential::generate_token().map_err(ControlError::Random)?;
        let create = |source| ControlError::CreateFile {
            path: path.clone(),
            source,
        };
        // create_new: two starts racing must not overwrite a token one of them handed out.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(create)?
        };
        file.write_all(token.as_bytes()).map_err(create)?;
        Ok(token)
    }

    fn lock_file(&self) -> Result<File> {
        let path = self.path.join(LOCK_FILE);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ControlError::OpenLock { path, source })
    }

    /// Takes the supervisor lock; `None` when another `berth dev up` holds it.
    pub fn lock_supervisor(&self) -> Result<Option<SupervisorLock>> {
        let file = self.lock_file()?;
        Ok(file
            .try_lock()
            .is_ok()
            .then_some(SupervisorLock { _file: file }))
    }

    /// True when a `berth dev up` holds this state directory.
    pub fn supervisor_running(&self) -> bool {
        let Ok(file) = self.lock_file() else {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn default_state_dir_prefers_xdg_data_home_then_home() {
        let xdg = default_state_dir(Some("/x".into()), Some("/h".into()));
        assert_eq!(xdg, Some(PathBuf::from("/x/berth")));
        let home = default_state_dir(Some("".into()), Some("/h".into()));
        assert_eq!(home, Some(PathBuf::from("/h/.local/share/berth")));
        assert_eq!(default_state_dir(None, None), None);
    }

    #[test]
    fn admin_token_is_created_once_owner_only_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::create(tmp.path().join("state")).unwrap();
        let missing = state.admin_token().unwrap_err().to_string();
        assert!(missing.contains("is `berth dev up` running"), "{missing}");

        let token = state.ensure_admin_token().unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(state.admin_token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(state.ensure_admin_token().unwrap(), token);
        assert_eq!(state.admin_token().unwrap(), token);
    }

    #[test]
    fn a_file_is_refused_as_state_directory_naming_it_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("state");
        std::fs::write(&file, "").unwrap();
        for path in [file.clone(), file.join("sub")] {
            let error = StateDir::create(&path).unwrap_err();
            assert_eq!(error.metric_label(), "store");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!(
                    "cannot use the state directory {}",
                    path.display()
                )),
                "{message}"
            );
            assert!(message.contains("BERTH_STATE_DIR"), "{message}");
        }
        assert!(StateDir::create(tmp.path().join("fresh")).is_ok());
    }

    #[test]
    fn the_supervisor_lock_is_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::create(tmp.path()).unwrap();
        assert!(!state.supervisor_running());
        let lock = state.lock_supervisor().unwrap().expect("free");
        assert!(state.supervisor_running());
        assert!(state.lock_supervisor().unwrap().is_none());
        drop(lock);
        assert!(!state.supervisor_running());
    }
}
