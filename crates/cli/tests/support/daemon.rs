//! A Docker daemon of a test's own — its own socket, data root, exec root and pid file —
//! so the test can stop and restart it without touching the machine's daemon.
//!
//! It stays out of the machine daemon's way: a default bridge of its own (`--bridge NAME`,
//! created by the test: `--bridge none` would make it delete the machine daemon's
//! `docker0`, which both would otherwise share by name), no iptables rules of its own (`--iptables=false`: the published gateway port goes through
//! `docker-proxy`, and local mode's isolation needs no rules, decision 0003), networks from
//! an address pool of its own, and the `vfs` storage driver (no overlay mounts to share).
//! One rule is needed all the same: the machine daemon sets the FORWARD policy to DROP, and
//! with `bridge-nf-call-iptables` on, frames between two containers on one of the test
//! daemon's bridges pass that chain; the test lets through what stays inside its pool
//! while its daemon lives.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::describe_output;

/// Where the test daemon's networks come from: apart from the machine daemon's defaults
/// (172.17.0.0/12 and 192.168.0.0/16).
const ADDRESS_POOL: &str = "10.213.0.0/16";
/// The test daemon's default bridge's address (no container of the tests uses it).
const BRIDGE_ADDRESS: &str = "10.214.255.1/24";

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
        std::fs::write(
            dir.path().join("daemon.json"),
            format!(r#"{{"default-address-pools": [{{"base": "{ADDRESS_POOL}", "size": 24}}]}}"#),
        )
        .unwrap();
        let me = Self {
            dir,
            child: RefCell::new(None),
        };
        let before = interfaces();
        me.create_bridge();
        me.forward_rule("-I");
        me.spawn();
        // Starting it must not take anything from the machine (its daemon's `docker0`).
        let after = interfaces();
        let gone: Vec<&String> = before.iter().filter(|i| !after.contains(i)).collect();
        assert!(gone.is_empty(), "the test's dockerd removed {gone:?}");
        me
    }

    /// Starts the daemon (again) and waits until it answers.
    pub fn spawn(&self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
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
            .args([
                "--storage-driver",
                "vfs",
                "--bridge",
                &self.bridge(),
                "--iptables=false",
                "--ip6tables=false",
            ])
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

    /// The name of the test daemon's default bridge (at most 15 characters).
    fn bridge(&self) -> String {
        format!("bt{}", std::process::id())
    }

    /// Creates the default bridge the test daemon uses instead of `docker0`.
    fn create_bridge(&self) {
        let bridge = self.bridge();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", BRIDGE_ADDRESS, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
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

    /// Adds (`-I`) or deletes (`-D`) the FORWARD rule for the test daemon's pool.
    fn forward_rule(&self, op: &str) {
        let comment = format!("berth-test-dockerd-{}", std::process::id());
        let out = Command::new("iptables")
            .args([
                op,
                "FORWARD",
                "-s",
                ADDRESS_POOL,
                "-d",
                ADDRESS_POOL,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "ACCEPT",
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            // Without iptables nothing filters forwarded frames either.
            Ok(o) => eprintln!("iptables {op} FORWARD: {}", describe_output(&o)),
            Err(e) => eprintln!("iptables {op} FORWARD: {e}"),
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
        self.forward_rule("-D");
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
        // vfs layers can hold read-only directories; the temporary directory removes the rest.
        let _ = Command::new("rm")
            .arg("-rf")
            .arg(self.dir.path().join("data"))
            .status();
    }
}
