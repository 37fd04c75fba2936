//! Child processes that must not outlive `berth` (the `cargo build` of a plugin image, the
//! gateway image's build script): each runs in a process group of its own, registered
//! here, and a SIGINT or SIGTERM to `berth` ends every registered group.
//!
//! A process group of its own, because `cargo` starts `rustc` processes that would keep
//! compiling after `cargo` itself is gone; and because a signal sent to `berth` alone (a
//! `kill`, a service manager, a test harness) does not reach its children, unlike Ctrl-C
//! in a terminal, which reaches the whole foreground group.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::process::{Pid, Signal, kill_process_group};

/// Process groups of running children.
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Whether a signal should also end `berth` (before the supervisor takes over signals).
static EXIT_ON_SIGNAL: AtomicBool = AtomicBool::new(true);
static WATCHER: OnceLock<()> = OnceLock::new();

/// A child that is ended with `berth`; dropping it (after `wait`) unregisters it.
pub struct Guarded {
    child: Child,
    group: i32,
}

impl Guarded {
    /// The child.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.group);
    }
}

/// Spawns `command` in a process group of its own and registers it, so a SIGINT or SIGTERM
/// to `berth` ends it (and whatever it started).
pub fn spawn(command: &mut Command) -> std::io::Result<Guarded> {
    watch_signals();
    let child = command.process_group(0).spawn()?;
    let group = i32::try_from(child.id()).unwrap_or(i32::MAX);
    GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(group);
    Ok(Guarded { child, group })
}

/// From now on a signal ends the registered children only; `berth` itself shuts down its
/// own way (the supervisor's graceful stop).
pub fn leave_signals_to_the_caller() {
    EXIT_ON_SIGNAL.store(false, Ordering::SeqCst);
}

/// Sends SIGTERM to every registered process group.
pub fn end_all() {
    let groups = GROUPS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for group in groups {
        if let Some(pid) = Pid::from_raw(group) {
            let _ = kill_process_group(pid, Signal::TERM);
        }
    }
}

/// Starts, once, a thread that waits for SIGINT and SIGTERM and ends the children.
fn watch_signals() {
    WATCHER.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("berth-signals".into())
            .spawn(|| {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut interrupt), Ok(mut terminate)) = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) else {
                        return;
                    };
                    loop {
                        let code = tokio::select! {
                            _ = interrupt.recv() => 130,
                            _ = terminate.recv() => 143,
                        };
                        end_all();
                        if EXIT_ON_SIGNAL.load(Ordering::SeqCst) {
                            eprintln!("stopped: the builds it started were ended");
                            std::process::exit(code);
                        }
                    }
                });
            });
        if let Err(e) = started {
            eprintln!("warning: cannot watch for signals ({e}); a build may outlive berth");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie is gone for our purposes: it runs nothing.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[test]
    fn ending_all_ends_a_child_and_the_processes_it_started() {
        // A shell that starts a grandchild and waits for it, as cargo starts rustc.
        let mut guarded = spawn(
            Command::new("sh")
                .arg("-c")
                .arg("sleep 300 & echo $! ; wait"),
        )
        .unwrap();
        let child_pid = guarded.child().id();
        // The grandchild's pid is printed on stdout; read it from /proc instead of piping:
        // every process in the group has the child's pid as its group id.
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchild = loop {
            let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
                // fields[0] = state, [1] = ppid, [2] = pgrp
                (pid != child_pid && fields.get(2)? == &child_pid.to_string().as_str())
                    .then_some(pid)
            });
            if let Some(pid) = found {
                break pid;
            }
            assert!(Instant::now() < deadline, "the grandchild never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        end_all();
        let _ = guarded.child().wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) {
            assert!(
                Instant::now() < deadline,
                "the grandchild outlived the group"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(guarded);
        assert!(
            !GROUPS
                .lock()
                .unwrap()
                .contains(&i32::try_from(child_pid).unwrap())
        );
    }
}
