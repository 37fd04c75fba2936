//! A Docker daemon of a test's own — its own socket, data root, exec root, pid file and
//! **network namespace** — so the test can stop and restart it without touching the
//! machine's daemon.
//!
//! The namespace matters: a `dockerd` manages links by name (`docker0`, and at a restart
//! it deletes a "stale" default bridge by that name), so one sharing the machine's network
//! namespace removed the machine daemon's `docker0`. In a namespace of its own it has its
//! own `docker0`, routes and iptables; `berth` commands that talk to its published gateway
//! port run in the namespace too (`Dev::on_daemon`), while `docker` reaches it through its
//! socket. Storage is `vfs` (no overlay mounts to share).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::describe_output;

/// A `dockerd` started by the test; stopped and its files removed on drop.
pub struct TestDaemon {
    dir: tempfile::TempDir,
    child: RefCell<Option<Child>>,
}

impl TestDaemon {
    /// Starts a daemon and waits until it answers; panics (with its log) when it does not.
    pub fn start() -> Self {
        // A short path: containerd's sockets live under the exec root.
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let me = Self {
            dir,
            child: RefCell::new(None),
        };
        let before = interfaces();
        me.create_netns();
        me.spawn();
        // Starting it must not take anything from the machine (its daemon's `docker0`).
        let after = interfaces();
        let gone: Vec<&String> = before.iter().filter(|i| !after.contains(i)).collect();
        assert!(gone.is_empty(), "the test's dockerd removed {gone:?}");
        me
    }

    /// The network namespace the daemon and its containers live in.
    pub fn netns(&self) -> String {
        format!("berth-test-{}", std::process::id())
    }

    fn create_netns(&self) {
        let ns = self.netns();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        for args in [
            vec!["netns", "add", &ns],
            vec!["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                describe_output(&out)
            );
        }
    }

    /// Starts the daemon (again) and waits until it answers.
    pub fn spawn(&self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        // `nsenter --net` changes the network namespace only (`ip netns exec` would also
        // remount /sys and hide the cgroup mounts dockerd needs).
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns()))
            .arg("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("-H")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dockerd: {e}"));
        *self.child.borrow_mut() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exited = self
                .child
                .borrow_mut()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap();
            if let Some(status) = exited {
                panic!("dockerd exited ({status}):\n{}", self.log());
            }
            if self.docker(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test's dockerd did not answer within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `unix://…/docker.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .unwrap()
    }

    /// `docker ARGS` against this daemon, which must succeed; its trimmed standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Copies `images` from the machine's daemon into this one (`docker save | docker load`).
    pub fn load_images(&self, images: &[&str]) {
        let archive = self.dir.path().join("images.tar");
        let out = Command::new("docker")
            .arg("save")
            .arg("-o")
            .arg(&archive)
            .args(images)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker save: {}",
            describe_output(&out)
        );
        self.ok(&["load", "-i", &archive.display().to_string()]);
        let _ = std::fs::remove_file(&archive);
    }

    /// Stops the daemon as a service manager would (SIGTERM: it stops its containers, then
    /// exits) and waits for it.
    pub fn stop(&self) {
        let Some(mut child) = self.child.borrow_mut().take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon and starts it again with the same settings and files.
    pub fn restart(&self) {
        self.stop();
        self.spawn();
    }

    /// The daemon's directory (data root, exec root, socket, pid file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid file the daemon writes.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.path().join("docker.pid")
    }
}

/// The machine's network interfaces, by name.
fn interfaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // Whatever the test left: containers first, so their networks can go.
        if self.child.borrow().is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let _ = self.docker(&["network", "prune", "-f"]);
        }
        self.stop();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns()])
            .output();
        // vfs layers can hold read-only directories; the temporary directory removes the rest.
        let _ = Command::new("rm")
            .arg("-rf")
            .arg(self.dir.path().join("data"))
            .status();
    }
}
