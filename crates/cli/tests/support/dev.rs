//! `berth dev up` against the real Docker Engine for the CLI's Docker tests: the Docker
//! check, image builds, one `dev up` per state directory ([`Dev`]) and stand-ins for
//! services outside Berth ([`StandIns`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{describe_output, repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// True when Docker answers; under `CI` an unreachable engine fails the test.
pub fn docker_or_skip(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        super::docker_unreachable(test, "`docker info` failed");
    }
    ok
}

/// `berth ARGS` from the workspace root with this build's target directory; it must succeed.
pub fn build(args: &[&str]) {
    let mut berth = Command::new(BERTH);
    berth.args(args);
    run_build(berth, &format!("berth {}", args.join(" ")));
}

/// Builds the gateway image with `crates/cli/build-image.sh`.
pub fn build_gateway_image() {
    run_build(
        Command::new(repo().join("crates/cli/build-image.sh")),
        "build-image.sh",
    );
}

/// Runs `command` from the workspace root with this build's target directory; it must
/// succeed.
fn run_build(mut command: Command, what: &str) {
    let out = command
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{what}: {}", describe_output(&out));
}

/// `docker ARGS`, which must succeed; its trimmed standard output.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One `berth dev up` with its own state directory; `dev down` on drop.
pub struct Dev {
    state: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
    /// `DOCKER_HOST` for `berth` and `docker`: a daemon of the test's own; else the machine's.
    docker_host: Option<String>,
    /// The network namespace `berth` runs in, the daemon's (its published ports are there).
    netns: Option<String>,
}

impl Dev {
    pub fn new() -> Self {
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("dev-up.log");
        Self {
            state,
            child: None,
            log,
            docker_host: None,
            netns: None,
        }
    }

    /// A `Dev` whose `berth` and `docker` commands use `daemon`, and whose `berth`
    /// commands run in its network namespace.
    pub fn on_daemon(daemon: &super::daemon::TestDaemon) -> Self {
        let mut dev = Self::new();
        dev.docker_host = Some(daemon.host());
        dev.netns = Some(daemon.netns());
        dev
    }

    /// `docker` against this `Dev`'s daemon.
    fn docker_command(&self) -> Command {
        let mut c = Command::new("docker");
        if let Some(host) = &self.docker_host {
            c.env("DOCKER_HOST", host);
        }
        c
    }

    /// `berth ARGS` for this state directory and daemon, from the workspace root.
    pub fn berth_command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg(BERTH);
                c
            }
            None => Command::new(BERTH),
        };
        c.args(args)
            .env("BERTH_STATE_DIR", self.dir())
            .current_dir(repo());
        if let Some(host) = &self.docker_host {
            c.env("DOCKER_HOST", host);
        }
        c
    }

    /// Panics when `berth dev up` has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().unwrap()
        {
            panic!("berth dev up exited ({status}):\n{}", self.log_text());
        }
    }

    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_command(args).output().unwrap()
    }

    /// `berth ARGS`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {}: {}\n--- dev up log ---\n{}",
            args.join(" "),
            describe_output(&out),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts `berth dev up ARGS --port 0 --no-build` and waits until every plugin has
    /// left the starting phases and the gateway is up.
    pub fn up(&mut self, args: &[&str]) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = self
            .berth_command(&["dev", "up"])
            .args(args)
            .args(["--port", "0", "--no-build"])
            .env("CARGO_TARGET_DIR", target_dir())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_settled(Duration::from_secs(120));
    }

    fn wait_settled(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            let list = self.list();
            let settled = !list.is_empty()
                && list.iter().all(|p| {
                    !matches!(
                        p["phase"].as_str(),
                        Some("Installed" | "Pending" | "Deploying" | "Stopped")
                    )
                });
            // The supervisor prints where the gateway is once it has started and adopted.
            if settled && self.gateway_url().is_some() && self.log_text().contains("gateway:") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugins did not settle: {list:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the plugin has no running container (stops drain first).
    pub fn wait_gone(&self, plugin: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.plugin_containers(plugin).is_empty() {
            assert!(Instant::now() < deadline, "{plugin} still has a container");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `berth list --json`: one object per plugin (none when the command fails).
    pub fn list(&self) -> Vec<Value> {
        let out = self.berth(&["list", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// `plugin`'s entry in `berth list --json`, or null.
    pub fn plugin(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|p| p["name"] == name)
            .unwrap_or(Value::Null)
    }

    /// `plugin`'s phase, or empty when it is not listed.
    pub fn phase(&self, name: &str) -> String {
        self.plugin(name)["phase"]
            .as_str()
            .map(String::from)
            .unwrap_or_default()
    }

    pub fn status(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", name, "--json"])).unwrap()
    }

    pub fn gateway_url(&self) -> Option<String> {
        let store = berth_store::Store::open(self.dir().join("berth.db")).ok()?;
        store
            .setting(berth_docker::supervisor::GATEWAY_URL_SETTING)
            .ok()
            .flatten()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Kills the `dev up` process (the supervisor), leaving its containers running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn instance(&self) -> String {
        berth_docker::Instance::for_state_dir(self.dir())
            .id()
            .to_owned()
    }

    pub fn gateway_container(&self) -> String {
        berth_docker::Instance::for_state_dir(self.dir()).gateway_container_name()
    }

    /// Names of Docker objects of this instance: containers, networks, volumes.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=berth.dev/instance={}", self.instance());
        let mut out = Vec::new();
        for args in [
            vec!["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
            vec!["network", "ls", "--filter", &label, "--format", "{{.Name}}"],
            vec!["volume", "ls", "--filter", &label, "--format", "{{.Name}}"],
        ] {
            let o = self.docker_command().args(&args).output().unwrap();
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
        out
    }

    /// `docker ps` of `plugin`'s running containers, one line each in `format`.
    fn ps_plugin(&self, plugin: &str, format: &str) -> Output {
        self.docker_command()
            .args([
                "ps",
                "--filter",
                &format!("label=berth.dev/instance={}", self.instance()),
                "--filter",
                &format!("label=berth.dev/plugin={plugin}"),
                "--format",
                format,
            ])
            .output()
            .unwrap()
    }

    /// IDs of `plugin`'s running containers.
    pub fn plugin_containers(&self, plugin: &str) -> Vec<String> {
        let o = self.ps_plugin(plugin, "{{.ID}}");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// The name of `plugin`'s one running container.
    pub fn container_of(&self, plugin: &str) -> String {
        let out = self.ps_plugin(plugin, "{{.Names}}");
        assert!(out.status.success(), "docker ps: {}", describe_output(&out));
        let names = String::from_utf8_lossy(&out.stdout);
        let mut names = names.trim().lines();
        let name = names.next().unwrap_or_default().to_owned();
        assert!(
            !name.is_empty() && names.next().is_none(),
            "{plugin}: {name}"
        );
        name
    }

    /// The network of `plugin`'s running container (its own, or one from the pool).
    pub fn network_of(&self, plugin: &str) -> String {
        let container = self.container_of(plugin);
        let out = self
            .docker_command()
            .args([
                "inspect",
                &container,
                "-f",
                "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let networks: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            networks.len(),
            1,
            "{plugin} is on one network: {networks:?}"
        );
        networks[0].to_owned()
    }

    /// `berth invoke PLUGIN CAPABILITY INPUT`, answered 200: the output.
    pub fn invoke(&self, plugin: &str, capability: &str, input: &Value) -> Value {
        let answer = self.ok(&["invoke", plugin, capability, &input.to_string()]);
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    /// The security events of `plugin` in the audit log, as JSON text.
    pub fn security_audit(&self, plugin: &str) -> String {
        self.ok(&[
            "audit", "--plugin", plugin, "--type", "security", "--output", "json",
        ])
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.kill();
        let _ = self.berth(&["dev", "down"]);
    }
}

/// Stand-ins for services outside Berth on a network of their own; everything goes on drop.
pub struct StandIns {
    network: String,
    containers: Vec<String>,
}

impl StandIns {
    /// The network and the HTTP stand-in `upstream.test` (+ `api.wild.test`, `other.test`):
    /// `berth/hello` serving `GET /healthz` on port 80.
    pub fn start(tag: &str) -> Self {
        let network = format!("berth-test-egress-{}-{tag}", std::process::id());
        let mut me = Self {
            network,
            containers: Vec::new(),
        };
        me.remove();
        docker(&["network", "create", &me.network]);
        let upstream = format!("{}-upstream", me.network);
        me.containers.push(upstream.clone());
        docker(&[
            "run",
            "-d",
            "--name",
            &upstream,
            "--network",
            &me.network,
            "--network-alias",
            "upstream.test",
            "--network-alias",
            "api.wild.test",
            "--network-alias",
            "other.test",
            "-e",
            "BERTH_PORT=80",
            // Port 80 as UID 65532 (Docker 20.10 sets this by default; said for older ones).
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "berth/hello:0.1.0",
        ]);
        me
    }

    /// Starts the TLS stand-in `tls.test` on port 443; returns its certificate (PEM).
    pub fn start_tls(&mut self) -> String {
        let tls = format!("{}-tls", self.network);
        self.containers.push(tls.clone());
        docker(&[
            "run",
            "-d",
            "--name",
            &tls,
            "--network",
            &self.network,
            "--network-alias",
            "tls.test",
            "-e",
            "BERTH_PORT=443",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "berth/probe:0.1.0",
            "--tls-serve",
            "tls.test",
        ]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("docker")
                .args(["logs", &tls])
                .output()
                .unwrap();
            // The certificate comes first on standard output, then the log lines.
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            const END: &str = "-----END CERTIFICATE-----";
            if let (Some(start), Some(end)) = (text.find("-----BEGIN"), text.find(END))
                && text.contains("serving TLS")
            {
                return text[start..end + END.len()].to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the TLS stand-in did not start: {}",
                describe_output(&out)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address of the stand-in `which` (`upstream`, `tls`) on the stand-ins' network.
    pub fn address(&self, which: &str) -> String {
        docker(&[
            "inspect",
            &format!("{}-{which}", self.network),
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network
            ),
        ])
    }

    /// Puts `container` (the gateway) on the stand-ins' network, also known there as
    /// `aliases`.
    pub fn connect(&self, container: &str, aliases: &[&str]) {
        let mut args = vec!["network", "connect"];
        for a in aliases {
            args.extend(["--alias", a]);
        }
        args.extend([self.network.as_str(), container]);
        docker(&args);
    }

    fn remove(&self) {
        let name_filter = format!("name={}-", self.network);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &name_filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let attached = Command::new("docker")
            .args([
                "network",
                "inspect",
                &self.network,
                "-f",
                "{{range .Containers}}{{.Name}} {{end}}",
            ])
            .output();
        if let Ok(attached) = attached {
            for name in String::from_utf8_lossy(&attached.stdout).split_whitespace() {
                let _ = Command::new("docker")
                    .args(["network", "disconnect", "-f", &self.network, name])
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Waits until `what` holds, for at most `limit`.
pub fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
