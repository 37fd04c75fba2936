//! Store faults through the real binary, no Docker: a damaged `berth.db`, one locked by
//! another process, a full disk under the state directory, and a state directory this user
//! may not use. Each command exits 2 (never a panic) with an error naming the file or
//! directory and what to do, and what was committed before is still there afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A manifest of the repository's examples.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn berth_cmd(state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env("BERTH_STATE_DIR", state)
        .env_remove("BERTH_STORE")
        .env_remove("BERTH_GATEWAY_URL")
        .env_remove("BERTH_GATEWAY_TOKEN")
        .env("USER", "tester");
    command
}

fn berth(state: &Path, args: &[&str]) -> Output {
    berth_cmd(state, args).output().expect("berth runs")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Standard output of a command that must succeed.
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts `out` is a clean failure (exit 2, no panic) whose error holds every one of
/// `needles`; returns the error.
fn fault(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert!(!stderr.contains("panicked"), "{}", describe(out));
    assert!(stderr.starts_with("error: "), "{}", describe(out));
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "missing {needle:?}:\n{}",
            describe(out)
        );
    }
    stderr
}

/// A state directory with `calculator` installed and granted: two commits, two audit
/// records.
fn installed_state(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    let file = example("calculator.yaml");
    ok(berth(&state, &["install", file.to_str().unwrap()]));
    ok(berth(
        &state,
        &[
            "grant",
            "calculator",
            "--reason",
            "approved-for-fault-tests",
        ],
    ));
    let list = ok(berth(&state, &["list"]));
    assert!(list.contains("calculator"), "{list}");
    assert!(
        ok(berth(&state, &["audit", "verify"])).contains("intact: 2 record(s)"),
        "two audit records"
    );
    state
}

/// What a test that needs privileges does without them: fail under `CI`, otherwise say why
/// it skips.
fn unprivileged(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set and {why}");
    }
    eprintln!("skipping {test}: {why}; set CI=1 to make this a failure");
}

#[test]
fn a_damaged_store_is_named_with_the_fix_by_every_command_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let state = installed_state(tmp.path());
    let db = state.join("berth.db");
    let shown = db.display().to_string();
    // Closing the last connection checkpointed the WAL into the file: it is a whole copy.
    assert!(!state.join("berth.db-wal").exists());
    let backup = tmp.path().join("berth.db.backup");
    std::fs::copy(&db, &backup).unwrap();
    let hello = example("hello.yaml");
    let hello = hello.to_str().unwrap();
    let commands: [&[&str]; 9] = [
        &["list"],
        &["status", "calculator"],
        &["install", hello],
        &["grant", "calculator"],
        &["revoke", "calculator"],
        &["audit"],
        &["audit", "verify"],
        &["dev", "up"],
        &["dev", "down"],
    ];

    let good = std::fs::read(&db).unwrap();
    // Garbage from the first byte: not an SQLite file at all.
    let garbage: Vec<u8> = (0..good.len()).map(|i| (i * 31 % 251) as u8).collect();
    // The header kept, the pages after it garbage: an SQLite file that is damaged.
    let mut damaged = good.clone();
    for (i, b) in damaged.iter_mut().enumerate().skip(100) {
        *b = (i * 7 + 3) as u8;
    }
    for (what, bytes, reason) in [
        ("garbage", &garbage, "file is not a database"),
        ("damaged pages", &damaged, "malformed"),
    ] {
        std::fs::write(&db, bytes).unwrap();
        for args in commands {
            let out = berth(&state, args);
            let error = fault(&out, &[&shown, "is damaged", reason, ".damaged`", "backup"]);
            assert!(error.contains("start afresh"), "{what}: {args:?}: {error}");
            assert_eq!(
                &std::fs::read(&db).unwrap(),
                bytes,
                "{what}: `berth {args:?}` changed the damaged file"
            );
        }
    }

    // The fix the message gives: move the file aside, and either start afresh ...
    std::fs::rename(&db, state.join("berth.db.damaged")).unwrap();
    let fresh = ok(berth(&state, &["list"]));
    assert!(!fresh.contains("calculator"), "{fresh}");
    // ... or put a backup in its place: everything committed before is there.
    std::fs::remove_file(&db).unwrap();
    std::fs::copy(&backup, &db).unwrap();
    assert!(ok(berth(&state, &["list"])).contains("calculator"));
    let verify = ok(berth(&state, &["audit", "verify"]));
    assert!(verify.contains("intact: 2 record(s)"), "{verify}");
}

#[test]
fn a_store_locked_by_another_process_names_it_and_reads_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let state = installed_state(tmp.path());
    let db = state.join("berth.db");
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    // Reading needs no write lock: `list` and `audit verify` answer at once.
    let started = Instant::now();
    assert!(ok(berth(&state, &["list"])).contains("calculator"));
    assert!(ok(berth(&state, &["audit", "verify"])).contains("intact: 2 record(s)"));
    eprintln!("two reads while locked: {:?}", started.elapsed());

    let hello = example("hello.yaml");
    let started = Instant::now();
    let out = berth(&state, &["install", hello.to_str().unwrap()]);
    let waited = started.elapsed();
    eprintln!("install while locked failed after {waited:?}");
    fault(
        &out,
        &[
            &db.display().to_string(),
            "locked by another process",
            "waited 5 s",
            "berth dev up",
            "retry",
            "fuser -v",
        ],
    );
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    let out = berth(&state, &["revoke", "calculator"]);
    fault(&out, &["locked by another process"]);

    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let list = ok(berth(&state, &["list"]));
    assert!(
        !list.contains("hello"),
        "the failed install left nothing: {list}"
    );
    ok(berth(&state, &["install", hello.to_str().unwrap()]));
    let list = ok(berth(&state, &["list"]));
    assert!(
        list.contains("calculator") && list.contains("hello"),
        "{list}"
    );
    assert!(ok(berth(&state, &["audit", "verify"])).contains("intact: 3 record(s)"));
}

/// A tmpfs mounted for one test, unmounted (and its mount point removed) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`) on `dir`, or says why it could not.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs is not permitted here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes zeros to `path` until the file system says it is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
    }
    // Whatever the page cache still holds must not fit either.
    let _ = file.sync_all();
    written
}

#[test]
fn a_full_disk_fails_writes_with_the_fix_and_keeps_what_was_committed() {
    let test = "a_full_disk_fails_writes_with_the_fix_and_keeps_what_was_committed";
    let tmp = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&tmp.path().join("disk"), "1m") {
        Ok(d) => d,
        Err(why) => return unprivileged(test, &why),
    };
    let state = installed_state(&disk.0);
    let db = state.join("berth.db");
    let shown = db.display().to_string();
    let list_before = ok(berth(&state, &["list"]));

    let filler = disk.0.join("filler");
    let written = fill(&filler);
    eprintln!("filled the tmpfs with {written} bytes");
    let hello = example("hello.yaml");
    let hello = hello.to_str().unwrap();
    for args in [
        &["install", hello][..],
        &["grant", "calculator", "--reason", "again"],
        &["revoke", "calculator"],
        &["disable", "calculator"],
    ] {
        let out = berth(&state, args);
        fault(
            &out,
            &[
                &shown,
                "no space left on device",
                "what was saved before is intact",
                "df -h",
            ],
        );
    }

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(ok(berth(&state, &["list"])), list_before);
    let verify = ok(berth(&state, &["audit", "verify"]));
    assert!(verify.contains("intact: 2 record(s)"), "{verify}");
    let status = ok(berth(&state, &["status", "calculator"]));
    assert!(
        status.contains("approved-for-fault-tests"),
        "the grant is kept: {status}"
    );
    // The store works again once there is room.
    ok(berth(&state, &["install", hello]));
    assert!(ok(berth(&state, &["list"])).contains("hello"));
    assert!(ok(berth(&state, &["audit", "verify"])).contains("intact: 3 record(s)"));
}

/// `setpriv` running a command as `nobody`, or why that is not possible here.
fn as_nobody() -> Result<Command, String> {
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output()
        .map_err(|e| format!("setpriv (util-linux) cannot run: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "setpriv cannot switch to uid 65534 (not root?): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    Ok(command)
}

fn berth_as_nobody(state: &Path, args: &[&str]) -> Output {
    let mut command = as_nobody().expect("checked before");
    command
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_STATE_DIR", state)
        .env("HOME", "/nonexistent")
        .env_remove("BERTH_STORE");
    command.output().expect("setpriv runs")
}

#[test]
fn a_state_directory_this_user_may_not_use_is_named_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let test = "a_state_directory_this_user_may_not_use_is_named_with_the_fix";
    if let Err(why) = as_nobody() {
        return unprivileged(test, &why);
    }
    let tmp = tempfile::tempdir().unwrap();
    // nobody may reach the state directory, not necessarily into it.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = installed_state(tmp.path());
    let shown = state.display().to_string();
    let good = std::fs::read(state.join("berth.db")).unwrap();
    let hello = example("hello.yaml");
    let hello = hello.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["list"],
        &["install", hello],
        &["audit", "verify"],
        &["dev", "up"],
        &["dev", "down"],
    ];

    for (mode, problem) in [
        (0o700, "cannot list it: Permission denied"),
        (0o755, "cannot create files in it: Permission denied"),
    ] {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        for args in commands {
            let out = berth_as_nobody(&state, args);
            fault(
                &out,
                &[
                    &format!("cannot use the state directory {shown}"),
                    problem,
                    "chown or chmod",
                    "BERTH_STATE_DIR",
                ],
            );
        }
    }

    // The store itself, given directly, is refused the same way, naming the file.
    let out = berth_as_nobody(
        &state,
        &[
            "audit",
            "verify",
            "--store",
            state.join("berth.db").to_str().unwrap(),
        ],
    );
    fault(&out, &[&state.join("berth.db").display().to_string()]);

    assert_eq!(std::fs::read(state.join("berth.db")).unwrap(), good);
    assert!(ok(berth(&state, &["list"])).contains("calculator"));
    assert!(ok(berth(&state, &["audit", "verify"])).contains("intact: 2 record(s)"));
}

#[test]
fn a_state_directory_that_is_a_file_is_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("state");
    std::fs::write(&file, "not a directory\n").unwrap();
    let shown = file.display().to_string();
    let hello = example("hello.yaml");
    for args in [
        &["list"][..],
        &["install", hello.to_str().unwrap()],
        &["audit", "verify"],
    ] {
        let out = berth(&file, args);
        fault(
            &out,
            &[
                &format!("cannot use the state directory {shown}"),
                "it is a file, not a directory",
                "BERTH_STATE_DIR",
            ],
        );
    }
    let out = berth(&file.join("sub"), &["list"]);
    fault(
        &out,
        &[
            &format!("cannot use the state directory {shown}/sub"),
            "Not a directory",
        ],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory\n");
}
