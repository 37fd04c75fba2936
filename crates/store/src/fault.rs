//! Store faults: SQLite's and the system's errors about the file itself (damaged, locked by
//! another process, disk full, no access) turned into errors that name the file and say what
//! to do. Errors about a statement stay [`Error::Sqlite`].

use std::io::ErrorKind;
use std::path::Path;

use rusqlite::ErrorCode;

use crate::sqlite::BUSY_TIMEOUT;
use crate::{Error, Result};

/// The directory of `path`, `.` when it has none.
pub(crate) fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `error`, named after the store file `path` when it is a fault of the file.
pub(crate) fn classify(path: &Path, error: Error) -> Error {
    let sqlite = match &error {
        Error::Sqlite(e) | Error::Open { source: e, .. } | Error::Migration { source: e, .. } => e,
        Error::Io { path: at, source } | Error::Permissions { path: at, source } => {
            return classify_io(at, source).unwrap_or(error);
        }
        _ => return error,
    };
    let Some(code) = sqlite.sqlite_error_code() else {
        return error;
    };
    let path = path.to_path_buf();
    let reason = sqlite.to_string();
    match code {
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => Error::Damaged { path, reason },
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Error::Busy {
            path,
            waited: BUSY_TIMEOUT,
            reason,
        },
        ErrorCode::DiskFull => Error::DiskFull { path, reason },
        ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
            Error::Access { path, reason }
        }
        // SQLite reports some writes that ran out of space (growing the -shm file, say) as
        // I/O errors; the free space tells them apart.
        ErrorCode::SystemIoFailure if no_space_left(parent(&path)) => Error::DiskFull {
            path,
            reason: format!("{reason}; the file system is full"),
        },
        ErrorCode::SystemIoFailure => Error::FileIo { path, reason },
        _ => error,
    }
}

/// An error of the file system at `path` as a fault, `None` when it is none of those.
fn classify_io(path: &Path, source: &std::io::Error) -> Option<Error> {
    let path = path.to_path_buf();
    let reason = source.to_string();
    match source.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(Error::DiskFull { path, reason }),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            Some(Error::Access { path, reason })
        }
        _ => None,
    }
}

/// True when the file system holding `dir` has no block left for this user.
fn no_space_left(dir: &Path) -> bool {
    rustix::fs::statvfs(dir).is_ok_and(|s| s.f_bavail == 0)
}

/// Checks that `dir` is a directory this user may list and create files in, so a command
/// fails before it starts with an error that names the directory and the fix
/// ([`Error::Directory`]). Creates nothing that stays.
pub fn check_directory(dir: &Path) -> Result<()> {
    let fault = |reason: String| Error::Directory {
        path: dir.to_path_buf(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(fault("it is a file, not a directory".into())),
        Ok(_) => {}
        Err(e) => return Err(fault(e.to_string())),
    }
    std::fs::read_dir(dir).map_err(|e| fault(format!("cannot list it: {e}")))?;
    // access(2) answers for this user, as creating a file would, without creating one
    // (and says EROFS for a read-only file system).
    rustix::fs::access(
        dir,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| {
        fault(format!(
            "cannot create files in it: {}",
            std::io::Error::from(e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn a_file_of_garbage_is_named_as_damaged() {
        let dir = crate::TempDir::new();
        let path = dir.join("berth.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let error = Store::open(&path).unwrap_err();
        assert!(matches!(error, Error::Damaged { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");
        assert!(message.contains(".damaged"), "{message}");
        assert_eq!(error.metric_label(), "damaged");
    }

    #[test]
    fn a_store_cut_short_is_named_as_damaged_when_read() {
        let dir = crate::TempDir::new();
        let path = dir.join("berth.db");
        {
            let store = Store::open(&path).unwrap();
            let big = "x".repeat(4000);
            for i in 0..50 {
                store
                    .upsert_plugin(&format!("p{i}"), &big, None)
                    .expect("install");
            }
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        let error = Store::open(&path)
            .and_then(|s| s.plugins())
            .expect_err("half a file");
        assert!(matches!(error, Error::Damaged { .. }), "{error:?}");
    }

    #[test]
    fn a_write_lock_held_elsewhere_is_named_as_busy_and_reads_go_on() {
        let dir = crate::TempDir::new();
        let path = dir.join("berth.db");
        let store = Store::open(&path).unwrap();
        store.set_setting("k", "v").unwrap();
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // A second store opens and reads while the lock is held (WAL readers do not wait).
        let other = Store::open(&path).unwrap();
        assert_eq!(other.setting("k").unwrap().as_deref(), Some("v"));
        let started = std::time::Instant::now();
        let error = other.set_enabled("p", true).unwrap_err();
        assert!(started.elapsed() >= BUSY_TIMEOUT, "{:?}", started.elapsed());
        assert!(matches!(error, Error::Busy { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("another process"), "{message}");
        holder.execute_batch("ROLLBACK").unwrap();
        assert!(!other.set_enabled("p", true).unwrap());
    }

    #[test]
    fn a_file_instead_of_a_directory_is_named() {
        let dir = crate::TempDir::new();
        let file = dir.join("state");
        std::fs::write(&file, "").unwrap();
        let error = check_directory(&file).unwrap_err();
        assert!(matches!(error, Error::Directory { .. }), "{error:?}");
        assert!(error.to_string().contains("it is a file, not a directory"));
        assert!(error.to_string().contains("BERTH_STATE_DIR"));
        check_directory(&dir.join("")).unwrap();
    }

    #[test]
    fn statement_errors_are_not_faults() {
        let store = Store::open_in_memory().unwrap();
        let error = store
            .with_connection(|c| c.execute("SELECT * FROM no_such_table", []))
            .unwrap_err();
        assert!(matches!(error, Error::Sqlite(_)), "{error:?}");
    }
}
