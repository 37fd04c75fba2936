//! The plugin under `berth plugin test --exec`: `sh -c CMD` in a process group of its own,
//! its output captured, and the whole group ended on every way out.
//!
//! Debian's `sh` does not `exec` the command of `sh -c 'python3 main.py'`; it stays the
//! parent, and a SIGTERM to the group would end it at once while the plugin still drains.
//! So the shell runs `trap : TERM` first: it outlives the signal, waits for the plugin and
//! exits with the plugin's status, as a container's PID 1 would (a trap with a command is
//! reset in the programs it starts, so the plugin sees SIGTERM's default action). `berth`
//! is a child subreaper and reaps every process of the group, so none is left as a zombie.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, kill_process_group, waitpgid};
use tokio::sync::watch;

/// Lines of output kept for the report.
const KEPT_LINES: usize = 200;

/// How one process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A shell reports a child ended by signal n as status 128 + n.
            Exit::Code(143) => write!(
                f,
                "exited with status 143 (128 + 15): SIGTERM ended it without it handling it"
            ),
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(15) => write!(f, "was ended by SIGTERM (signal 15) without handling it"),
            Exit::Signal(9) => write!(f, "was killed (SIGKILL)"),
            Exit::Signal(n) => write!(f, "was ended by signal {n}"),
        }
    }
}

/// What the reaper has seen of the group.
#[derive(Clone, Copy, Debug, Default)]
struct GroupState {
    /// How the first process (the one `berth` started) ended.
    leader: Option<Exit>,
    /// No process of the group is left.
    gone: bool,
}

/// A running `sh -c CMD` and every process it started in its group.
pub struct PluginProcess {
    group: Pid,
    state: watch::Receiver<GroupState>,
    output: Arc<Mutex<VecDeque<String>>>,
    reaper: Option<std::thread::JoinHandle<()>>,
}

impl PluginProcess {
    /// Starts `sh -c command` with `env` on top of this process's environment, minus any
    /// inherited `BERTH_*` variable (the plugin sees the runtime's, not the caller's).
    pub fn spawn(command: &str, env: &[(String, String)]) -> std::io::Result<Self> {
        // Orphans of the group stay ours, so they are reaped and judged here.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("trap : TERM\n{command}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BERTH_") {
                sh.env_remove(name);
            }
        }
        sh.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = std::os::unix::process::CommandExt::process_group(&mut sh, 0).spawn()?;
        let leader = Pid::from_child(&child);
        let output = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = child.stdout.take() {
            capture(stdout, Arc::clone(&output));
        }
        if let Some(stderr) = child.stderr.take() {
            capture(stderr, Arc::clone(&output));
        }
        let (tx, state) = watch::channel(GroupState::default());
        let reaper = std::thread::Builder::new()
            .name("berth-plugin-reaper".into())
            .spawn(move || reap(leader, &tx))?;
        // The `Child` is not waited on: the reaper collects every process of the group.
        drop(child);
        Ok(PluginProcess {
            group: leader,
            state,
            output,
            reaper: Some(reaper),
        })
    }

    /// How the process `berth` started ended, once it has.
    pub fn leader_exit(&self) -> Option<Exit> {
        self.state.borrow().leader
    }

    /// Sends SIGTERM to the whole group.
    pub fn terminate(&self) -> std::io::Result<()> {
        kill_process_group(self.group, Signal::TERM).map_err(Into::into)
    }

    /// Waits until the process `berth` started has exited; how it ended.
    pub async fn wait(&mut self) -> Option<Exit> {
        let leader = self
            .state
            .wait_for(|s| s.leader.is_some() || s.gone)
            .await
            .map(|s| s.leader);
        leader.unwrap_or_else(|_| self.state.borrow().leader)
    }

    /// The last `n` lines the plugin wrote to stdout and stderr.
    pub fn output(&self, n: usize) -> Vec<String> {
        let lines = self.output.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Kills every process of the group and waits (briefly) until they are reaped.
    pub fn kill(&mut self) {
        let _ = kill_process_group(self.group, Signal::KILL);
        let Some(reaper) = self.reaper.take() else {
            return;
        };
        let started = Instant::now();
        while !reaper.is_finished() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
            // A process that changed its group is beyond reach; one still in it is not.
            let _ = kill_process_group(self.group, Signal::KILL);
        }
        if reaper.is_finished() {
            let _ = reaper.join();
        }
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn capture(stream: impl Read + Send + 'static, output: Arc<Mutex<VecDeque<String>>>) {
    let _ = std::thread::Builder::new()
        .name("berth-plugin-output".into())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                let mut lines = output.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() == KEPT_LINES {
                    lines.pop_front();
                }
                lines.push_back(text);
                line.clear();
            }
        });
}

/// Collects every process of the group `leader` leads until none is left.
fn reap(leader: Pid, tx: &watch::Sender<GroupState>) {
    loop {
        match waitpgid(leader, WaitOptions::empty()) {
            Ok(Some((pid, status))) => {
                let exit = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => continue,
                };
                if pid == leader {
                    tx.send_modify(|s| s.leader = Some(exit));
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(_) => {
                tx.send_modify(|s| s.gone = true);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_alive(group: Pid) -> bool {
        rustix::process::test_kill_process_group(group).is_ok()
    }

    #[tokio::test]
    async fn the_exit_judged_is_the_plugins_not_the_shells() {
        // The shell is not replaced by the program it starts; the program handles SIGTERM.
        let mut process = PluginProcess::spawn(
            "(trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done)",
            &[],
        )
        .unwrap();
        // Signal only once the program's handler is in place.
        let started = Instant::now();
        while process.output(1) != ["ready"] {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        process.terminate().unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(5), process.wait())
            .await
            .unwrap();
        assert_eq!(exit, Some(Exit::Code(3)));
    }

    #[tokio::test]
    async fn a_program_ended_by_sigterm_is_reported_as_such() {
        let mut process = PluginProcess::spawn("echo ready; sleep 300", &[]).unwrap();
        let started = Instant::now();
        while process.output(1) != ["ready"] {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        process.terminate().unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(5), process.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            exit.to_string(),
            "exited with status 143 (128 + 15): SIGTERM ended it without it handling it"
        );
    }

    #[tokio::test]
    async fn dropping_kills_the_whole_group_even_a_process_that_ignores_sigterm() {
        let process =
            PluginProcess::spawn("trap '' TERM; sleep 300 & sleep 300; wait", &[]).unwrap();
        let group = process.group;
        tokio::time::sleep(Duration::from_millis(100)).await;
        process.terminate().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(group_alive(group), "the group ignores SIGTERM");
        drop(process);
        assert!(!group_alive(group), "the group outlived its PluginProcess");
    }

    #[tokio::test]
    async fn output_and_environment_reach_the_report() {
        let mut process = PluginProcess::spawn(
            "echo port=$BERTH_PORT; echo oops >&2; exit 3",
            &[("BERTH_PORT".into(), "4242".into())],
        )
        .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(5), process.wait())
            .await
            .unwrap();
        assert_eq!(exit, Some(Exit::Code(3)));
        assert_eq!(process.leader_exit(), Some(Exit::Code(3)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut output = process.output(10);
        output.sort();
        assert_eq!(output, ["oops", "port=4242"]);
    }
}
