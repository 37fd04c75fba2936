//! The building blocks of the local Docker backend against a real Docker Engine, with the
//! misbehaving `probe` plugin (`test-images/probe`): limits hold, plugins are isolated from
//! the host and from each other, and an instance's objects can be listed, watched and
//! removed.
//!
//! Containers are created as `berth dev up` creates them: `plugin_container()` on the
//! plugin's own network from `ensure_plugin_network()`. That network has no host address, so
//! the host has no route to the plugin; tests reach it through a relay (the probe image in
//! relay mode) on the plugin's network and the instance's edge network, the way the gateway
//! reaches plugins. Each test has its own `Instance`,
//! so tests run in parallel, and a guard removes everything the instance labelled, pass or
//! fail. Tests fail when `CI` is set and the engine is unreachable; without `CI` they say
//! why they skip.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_api::Plugin;
use berth_api::load::load_single_plugin;
use berth_docker::hardening::container_env;
use berth_docker::{
    ContainerEvent, ContainerOptions, DockerClient, EventAction, FilesystemSource, INSTANCE_LABEL,
    Instance, MANAGED_BY_LABEL, NotReady, PLUGIN_LABEL, REVISION_LABEL, ROLE_LABEL,
    plugin_container, wait_ready,
};
use futures::StreamExt;
use serde_json::{Value, json};

mod support;

use support::{describe_output, repo, target_dir};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const PROBE_IMAGE: &str = "berth/probe:0.1.0";
const PROBE_PORT: u16 = 8080;
const MIB: i64 = 1024 * 1024;

/// The engine, or `None` when it is unreachable and `CI` is unset (then the test skips).
async fn docker_or_skip(test: &str) -> Option<DockerClient> {
    match DockerClient::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            support::docker_unreachable(test, &e.to_string());
            None
        }
    }
}

/// Builds `berth/probe:0.1.0` with the real `berth build`, once per run of this file.
fn build_probe_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let started = Instant::now();
        let dir = repo().join("test-images/probe");
        let output = Command::new(BERTH)
            .args(["build", dir.to_str().unwrap()])
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("run berth build");
        eprintln!(
            "berth build test-images/probe took {:.1}s\n{}",
            started.elapsed().as_secs_f64(),
            describe_output(&output)
        );
        if output.status.success() {
            Ok(())
        } else {
            Err(describe_output(&output))
        }
    });
    if let Err(e) = result {
        panic!("berth build test-images/probe failed:\n{e}");
    }
}

async fn probe_image() {
    tokio::task::spawn_blocking(build_probe_image)
        .await
        .unwrap();
}

fn probe_manifest_text() -> String {
    std::fs::read_to_string(repo().join("test-images/probe/berth.yaml")).unwrap()
}

fn probe_manifest(text: &str) -> Plugin {
    load_single_plugin("test-images/probe/berth.yaml", text.as_bytes()).unwrap()
}

/// Removes everything the instance labelled when the test ends, passed or failed.
struct Cleanup {
    instance: Instance,
}

impl Cleanup {
    /// A fresh instance for `test`, unique per run so parallel and repeated runs never meet.
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "berth-docker-backend-{test}-{}-{nanos}",
            std::process::id()
        ));
        Self {
            instance: Instance::for_state_dir(&dir),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let instance = self.instance.clone();
        // Drop may run inside the test's runtime, which cannot block on another future.
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let docker = DockerClient::connect().await?;
                    docker.remove_instance(&instance).await
                })
        })
        .join();
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!(
                "warning: could not clean up instance {}: {e}",
                self.instance.id()
            ),
            Err(_) => eprintln!("warning: the cleanup of {} panicked", self.instance.id()),
        }
    }
}

/// A running probe container of `instance`, as `berth dev up` would run plugin `name`.
struct Probe {
    /// Container id.
    id: String,
    /// The plugin's own network.
    network: String,
    /// Base URL of the probe, through its relay.
    base: String,
    /// The probe's address on its network.
    address: IpAddr,
}

/// Creates plugin `name`'s network and starts the probe on it at revision 1, then waits
/// until it is ready.
async fn start_probe(docker: &DockerClient, instance: &Instance, name: &str) -> Probe {
    start_probe_with(
        docker,
        instance,
        name,
        &probe_manifest_text(),
        HashMap::new(),
    )
    .await
}

async fn start_probe_with(
    docker: &DockerClient,
    instance: &Instance,
    name: &str,
    manifest_text: &str,
    filesystem: HashMap<String, FilesystemSource>,
) -> Probe {
    let plugin = probe_manifest(manifest_text);
    let network = instance.plugin_network(name);
    docker
        .ensure_plugin_network(&network, instance.labels())
        .await
        .unwrap();
    let config = plugin_container(
        &plugin,
        &ContainerOptions {
            image: PROBE_IMAGE.into(),
            network: network.clone(),
            env: container_env(&plugin, None, None).unwrap(),
            labels: instance.plugin_labels(name, 1, "0000"),
            filesystem,
            scratch_filesystem: false,
        },
    )
    .unwrap();
    let id = docker
        .run_container(&instance.plugin_container_name(name, 1), config)
        .await
        .unwrap();
    let address = docker
        .container_address(&id, &network)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the probe got no address on {network}"));
    let base = relay_to(docker, instance, name, address, &network).await;
    if let Err(e) = wait_ready(&base, &plugin, Duration::from_secs(20)).await {
        let logs = docker.logs(&id, 30).await.unwrap_or_default();
        panic!("the probe did not get ready: {e}\n{logs}");
    }
    Probe {
        id,
        network,
        base,
        address,
    }
}

/// Starts a relay to `target`:8080 on the instance's edge network (which the host reaches)
/// and on `network`; returns the base URL that reaches `target` through it.
async fn relay_to(
    docker: &DockerClient,
    instance: &Instance,
    name: &str,
    target: IpAddr,
    network: &str,
) -> String {
    let edge = instance.edge_network();
    docker
        .ensure_edge_network(&edge, instance.labels())
        .await
        .unwrap();
    let mut labels = instance.labels();
    labels.insert(ROLE_LABEL.to_owned(), "relay".to_owned());
    let mut config = plugin_container(
        &probe_manifest(&probe_manifest_text()),
        &ContainerOptions {
            image: PROBE_IMAGE.into(),
            network: edge.clone(),
            labels,
            ..Default::default()
        },
    )
    .unwrap();
    config.cmd = Some(vec!["--relay".into(), format!("{target}:{PROBE_PORT}")]);
    let relay = docker
        .run_container(&format!("berth-{}-{name}-relay", instance.id()), config)
        .await
        .unwrap();
    docker.connect_network(network, &relay, &[]).await.unwrap();
    let address = docker
        .container_address(&relay, &edge)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the relay got no address on {edge}"));
    format!("http://{address}:{PROBE_PORT}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Invokes `capability` with `input`; the output JSON, or why there was none.
async fn invoke(base: &str, capability: &str, input: Value) -> Result<Value, String> {
    let response = http()
        .post(format!("{base}/v1/invoke/{capability}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(input.to_string())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{e:?}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// Connects from the probe at `base` to `host:port`; whether it connected, and the error.
async fn probe_connect(base: &str, host: IpAddr, port: u16) -> (bool, Value) {
    let out = invoke(
        base,
        "connect",
        json!({"host": host.to_string(), "port": port, "timeoutMs": 1000}),
    )
    .await
    .unwrap();
    (out["connected"].as_bool().unwrap(), out["error"].clone())
}

/// Every IPv4 address of this host's interfaces except loopback, from `ip -o -4 addr show`
/// or, without `ip`, the local entries of /proc/net/fib_trie.
fn host_ipv4_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    if let Ok(output) = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        && output.status.success()
    {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "inet"
                    && let Some(cidr) = words.next()
                    && let Ok(ip) = cidr.split('/').next().unwrap_or_default().parse()
                {
                    out.push(ip);
                }
            }
        }
    } else {
        let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap();
        let mut last: Option<Ipv4Addr> = None;
        for line in trie.lines() {
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("|-- ") {
                last = addr.parse().ok();
            } else if line.contains("/32 host LOCAL")
                && let Some(ip) = last
            {
                out.push(ip);
            }
        }
    }
    out.retain(|ip| !ip.is_loopback());
    out.sort();
    out.dedup();
    out
}

/// The gateway address of every Docker network on this engine.
async fn docker_gateways(docker: &DockerClient) -> Vec<Ipv4Addr> {
    let networks = docker
        .bollard()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    let mut out: Vec<Ipv4Addr> = networks
        .into_iter()
        .filter_map(|n| n.ipam)
        .flat_map(|ipam| ipam.config.unwrap_or_default())
        .filter_map(|c| c.gateway)
        .filter_map(|g| g.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Reads events until `done` says the ones wanted have come, or the time is up.
async fn collect_events(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<ContainerEvent>,
    limit: Duration,
    mut done: impl FnMut(&[ContainerEvent]) -> bool,
) -> Vec<ContainerEvent> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => seen.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// Drives the instance's event stream in a task, forwarding container events.
fn watch_events(
    docker: &DockerClient,
    instance: &Instance,
) -> tokio::sync::mpsc::UnboundedReceiver<ContainerEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = Box::pin(docker.events(instance));
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("event stream broke: {e}");
                    break;
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kills_the_plugin_and_reports_it() {
    let Some(docker) = docker_or_skip("memory_limit_oom_kills_the_plugin_and_reports_it").await
    else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("oom");
    let instance = &guard.instance;
    let mut events = watch_events(&docker, instance);
    let probe = start_probe(&docker, instance, "probe").await;
    let started = collect_events(&mut events, Duration::from_secs(10), |seen| {
        seen.iter()
            .any(|e| e.id == probe.id && e.action == EventAction::Start)
    })
    .await;
    assert!(
        started
            .iter()
            .any(|e| e.id == probe.id && e.action == EventAction::Start),
        "no start event: {started:?}"
    );

    // 64 MiB touched against a 32Mi limit without swap: the kernel kills the plugin.
    let answer = invoke(&probe.base, "allocate", json!({"mebibytes": 64})).await;
    assert!(
        answer.is_err(),
        "allocating past the limit answered {answer:?}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), docker.wait_exit(&probe.id))
        .await
        .expect("the probe still runs after exceeding its memory limit")
        .unwrap();
    let status = docker.container_status(&probe.id).await.unwrap();
    assert!(!status.running);
    assert!(
        status.oom_killed,
        "inspect does not say OOMKilled: {status:?}"
    );
    assert_eq!(exit, 137, "killed by SIGKILL");

    let seen = collect_events(&mut events, Duration::from_secs(10), |seen| {
        let mine =
            |a: fn(&EventAction) -> bool| seen.iter().any(|e| e.id == probe.id && a(&e.action));
        mine(|a| *a == EventAction::Oom) && mine(|a| matches!(a, EventAction::Die { .. }))
    })
    .await;
    let mine: Vec<&ContainerEvent> = seen.iter().filter(|e| e.id == probe.id).collect();
    assert!(
        mine.iter().any(|e| e.action == EventAction::Oom),
        "no oom event: {mine:?}"
    );
    let die = mine
        .iter()
        .find(|e| matches!(e.action, EventAction::Die { .. }))
        .unwrap_or_else(|| panic!("no die event: {mine:?}"));
    assert_eq!(
        die.action,
        EventAction::Die {
            exit_code: Some(137)
        }
    );
    assert_eq!(die.plugin.as_deref(), Some("probe"));
    assert_eq!(die.role.as_deref(), Some("plugin"));
    assert_eq!(die.revision, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_loop_stops_at_the_pids_limit() {
    let Some(docker) = docker_or_skip("fork_loop_stops_at_the_pids_limit").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("pids");
    let probe = start_probe(&docker, &guard.instance, "probe").await;
    let out = invoke(&probe.base, "spawn", json!({"count": 100}))
        .await
        .unwrap();
    eprintln!("spawn 100 under pids: 16 → {out}");
    let started = out["started"].as_u64().unwrap();
    assert!(started < 16, "{started} processes started under pids: 16");
    assert!(
        out["error"].is_string(),
        "the limit was hit without an error: {out}"
    );
    // The plugin is still alive and answers after hitting the limit.
    let again = invoke(&probe.base, "write", json!({"path": "/tmp/after-spawn"}))
        .await
        .unwrap();
    assert_eq!(again["ok"], true, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_the_root_filesystem_fails() {
    let Some(docker) = docker_or_skip("writing_to_the_root_filesystem_fails").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("rootfs");
    let probe = start_probe(&docker, &guard.instance, "probe").await;
    let root = invoke(&probe.base, "write", json!({"path": "/probe-was-here"}))
        .await
        .unwrap();
    assert_eq!(root["ok"], false, "{root}");
    assert!(
        root["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{root}"
    );
    let tmp = invoke(&probe.base, "write", json!({"path": "/tmp/probe-was-here"}))
        .await
        .unwrap();
    assert_eq!(tmp, json!({"ok": true, "error": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_without_network_grant_cannot_reach_host() {
    let Some(docker) = docker_or_skip("plugin_without_network_grant_cannot_reach_host").await
    else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("host");
    let instance = &guard.instance;
    // A wildcard listener, the kind decision 0003 found reachable from internal networks.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = start_probe(&docker, instance, "probe").await;

    let mut targets = host_ipv4_addresses();
    targets.extend(docker_gateways(&docker).await);
    targets.sort();
    targets.dedup();
    assert!(!targets.is_empty(), "found no host addresses to probe");
    let isolated = futures::future::join_all(
        targets
            .iter()
            .map(|ip| probe_connect(&probe.base, IpAddr::V4(*ip), port)),
    )
    .await;
    let reached: Vec<String> = targets
        .iter()
        .zip(&isolated)
        .filter(|(_, (connected, _))| *connected)
        .map(|(ip, _)| format!("{ip}:{port}"))
        .collect();
    assert!(
        reached.is_empty(),
        "a plugin on {} reached the host at {reached:?}",
        probe.network
    );

    // Control: on an ordinary bridge the same probe does reach the listener, so the
    // refusals above are the plugin network's doing.
    let control = format!("berth-{}-control", instance.id());
    docker
        .create_network(&control, false, instance.labels())
        .await
        .unwrap();
    docker
        .connect_network(&control, &probe.id, &[])
        .await
        .unwrap();
    let mut reached_from_control = Vec::new();
    for ip in &targets {
        if probe_connect(&probe.base, IpAddr::V4(*ip), port).await.0 {
            reached_from_control.push(*ip);
        }
    }
    assert!(
        !reached_from_control.is_empty(),
        "the control probe on {control} reached none of {targets:?}:{port}; the test cannot tell isolation from a broken probe"
    );
    // The connections really ended at this listener (and not at something else on the way).
    listener.set_nonblocking(true).unwrap();
    let accepted = std::iter::from_fn(|| listener.accept().ok()).count();
    assert!(
        accepted >= reached_from_control.len(),
        "the listener accepted {accepted} connections, the control probe reported {reached_from_control:?}"
    );
    let errors: Vec<String> = isolated
        .iter()
        .map(|(_, error)| error.as_str().unwrap_or_default().to_owned())
        .collect();
    eprintln!(
        "probed {targets:?} on port {port}: none reached from {} ({errors:?}); {reached_from_control:?} reached from {control}",
        probe.network
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_cannot_reach_another_plugin_directly() {
    let Some(docker) = docker_or_skip("plugin_cannot_reach_another_plugin_directly").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("peers");
    let instance = &guard.instance;
    let (a, b) = tokio::join!(
        start_probe(&docker, instance, "probe-a"),
        start_probe(&docker, instance, "probe-b")
    );
    assert_ne!(a.network, b.network);
    let (a_to_b, a_err) = probe_connect(&a.base, b.address, PROBE_PORT).await;
    assert!(!a_to_b, "probe-a reached probe-b at {}", b.address);
    let (b_to_a, b_err) = probe_connect(&b.base, a.address, PROBE_PORT).await;
    assert!(!b_to_a, "probe-b reached probe-a at {}", a.address);
    eprintln!("a→b: {a_err}, b→a: {b_err}");

    // A container on both networks, as the gateway will be, reaches both plugins. Like the
    // gateway it also sits on the edge network, where the host reaches it.
    let plugin = probe_manifest(&probe_manifest_text());
    let edge = instance.edge_network();
    let gateway_config = plugin_container(
        &plugin,
        &ContainerOptions {
            image: PROBE_IMAGE.into(),
            network: edge.clone(),
            env: container_env(&plugin, None, None).unwrap(),
            labels: instance.gateway_labels(),
            ..Default::default()
        },
    )
    .unwrap();
    let gateway = docker
        .run_container(&instance.gateway_container_name(), gateway_config)
        .await
        .unwrap();
    for network in [&a.network, &b.network] {
        docker
            .connect_network(network, &gateway, &["gateway".to_owned()])
            .await
            .unwrap();
    }
    // Connecting again is not an error.
    docker
        .connect_network(&b.network, &gateway, &["gateway".to_owned()])
        .await
        .unwrap();
    let address = docker
        .container_address(&gateway, &edge)
        .await
        .unwrap()
        .unwrap();
    let gateway_base = format!("http://{address}:{PROBE_PORT}");
    wait_ready(&gateway_base, &plugin, Duration::from_secs(20))
        .await
        .unwrap();
    for target in [&a, &b] {
        let (connected, error) = probe_connect(&gateway_base, target.address, PROBE_PORT).await;
        assert!(
            connected,
            "the gateway on both networks did not reach {} ({error})",
            target.address
        );
    }
    docker
        .disconnect_network(&b.network, &gateway)
        .await
        .unwrap();
    // Disconnecting what is not connected is not an error either.
    docker
        .disconnect_network(&b.network, &gateway)
        .await
        .unwrap();
    // (Whether it still reaches probe-b now says little: from the edge network unrouted
    // traffic leaves through the host's default route, and what answers there is not ours.)
    assert_eq!(
        docker
            .container_address(&gateway, &b.network)
            .await
            .unwrap(),
        None,
        "still attached to {} after disconnecting",
        b.network
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_applied_to_the_container() {
    let Some(docker) = docker_or_skip("limits_are_applied_to_the_container").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("limits");
    let instance = &guard.instance;
    let probe = start_probe(&docker, instance, "probe").await;
    let inspect = docker.inspect_container(&probe.id).await.unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(32 * MIB));
    assert_eq!(host.memory_swap, Some(32 * MIB), "no swap beyond the limit");
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.pids_limit, Some(16));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    let security = host.security_opt.unwrap_or_default();
    assert!(
        security.iter().any(|o| o == "no-new-privileges:true"),
        "{security:?}"
    );
    assert!(
        !security.iter().any(|o| o.starts_with("seccomp")),
        "seccomp must stay the engine default: {security:?}"
    );
    assert_ne!(host.privileged, Some(true));
    let tmpfs = host.tmpfs.unwrap_or_default();
    assert!(
        tmpfs
            .get("/tmp")
            .is_some_and(|o| o.contains("size=1048576")),
        "{tmpfs:?}"
    );
    assert!(
        host.port_bindings.unwrap_or_default().is_empty(),
        "ports published"
    );
    assert_ne!(host.publish_all_ports, Some(true));
    let config = inspect.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("65532:65532"));
    let labels = config.labels.unwrap();
    assert_eq!(labels[INSTANCE_LABEL], instance.id());
    assert_eq!(labels[PLUGIN_LABEL], "probe");
    assert_eq!(labels[REVISION_LABEL], "1");
    assert_eq!(labels[ROLE_LABEL], "plugin");
    assert_eq!(labels[MANAGED_BY_LABEL], "berth");
    let published = inspect
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    assert!(
        published
            .values()
            .all(|b| b.as_ref().is_none_or(Vec::is_empty)),
        "{published:?}"
    );
    assert_eq!(
        docker.published_port(&probe.id, PROBE_PORT).await.unwrap(),
        None
    );
    let plugins: Vec<_> = docker
        .list_managed(instance)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.role.as_deref() == Some("plugin"))
        .collect();
    assert_eq!(plugins.len(), 1, "{plugins:?}");
    assert_eq!(plugins[0].id, probe.id);
    assert_eq!(plugins[0].name, instance.plugin_container_name("probe", 1));
    assert_eq!(plugins[0].plugin.as_deref(), Some("probe"));
    assert_eq!(plugins[0].revision, Some(1));
    assert_eq!(plugins[0].manifest_sha256.as_deref(), Some("0000"));
    assert!(plugins[0].running);
    assert!(plugins[0].image_id.starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_instance_leaves_nothing_behind() {
    let Some(docker) = docker_or_skip("remove_instance_leaves_nothing_behind").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("remove");
    let instance = &guard.instance;
    let volume = instance.volume("probe", "data");
    docker
        .ensure_volume(&volume, instance.labels())
        .await
        .unwrap();
    // Ensuring twice is fine.
    docker
        .ensure_volume(&volume, instance.labels())
        .await
        .unwrap();
    docker
        .ensure_edge_network(&instance.edge_network(), instance.labels())
        .await
        .unwrap();
    docker
        .ensure_edge_network(&instance.edge_network(), instance.labels())
        .await
        .unwrap();
    let with_volume = probe_manifest_text().replace(
        "  permissions:\n",
        "  permissions:\n    filesystem: [{name: data, mountPath: /data, access: readWrite}]\n",
    );
    let running = start_probe_with(
        &docker,
        instance,
        "probe",
        &with_volume,
        HashMap::from([("data".to_owned(), FilesystemSource::Volume(volume.clone()))]),
    )
    .await;
    let stopped = start_probe(&docker, instance, "other").await;
    docker.signal(&stopped.id, "SIGKILL").await.unwrap();
    docker.wait_exit(&stopped.id).await.unwrap();
    let listed = docker.list_managed(instance).await.unwrap();
    // Two plugins and their two relays; one plugin stopped.
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed.iter().filter(|c| c.running).count(), 3, "{listed:?}");
    assert!(listed.iter().any(|c| c.id == running.id && c.running));
    assert!(listed.iter().any(|c| c.id == stopped.id && !c.running));

    let removed = docker.remove_instance(instance).await.unwrap();
    assert_eq!(removed.containers, 4, "{removed:?}");
    assert_eq!(
        removed.networks, 3,
        "two plugin networks and the edge: {removed:?}"
    );
    assert_eq!(removed.volumes, 1, "{removed:?}");

    let label = HashMap::from([(
        "label".to_owned(),
        vec![format!("{INSTANCE_LABEL}={}", instance.id())],
    )]);
    assert!(docker.list_managed(instance).await.unwrap().is_empty());
    let networks = docker
        .bollard()
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&label)
                .build(),
        ))
        .await
        .unwrap();
    assert!(networks.is_empty(), "{networks:?}");
    let volumes = docker
        .bollard()
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::default()
                .filters(&label)
                .build(),
        ))
        .await
        .unwrap();
    assert!(
        volumes.volumes.unwrap_or_default().is_empty(),
        "volumes left behind"
    );
    // Removing again finds nothing and is not an error.
    assert_eq!(
        docker.remove_instance(instance).await.unwrap(),
        berth_docker::Removed::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reports_memory_and_cpu() {
    let Some(docker) = docker_or_skip("usage_reports_memory_and_cpu").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("usage");
    let probe = start_probe(&docker, &guard.instance, "probe").await;
    // Keep the probe busy (allocating and touching 8 MiB over and over) while sampling.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        let base = probe.base.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                invoke(&base, "allocate", json!({"mebibytes": 8}))
                    .await
                    .unwrap();
            }
        })
    };
    let usage = docker.usage(&probe.id).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.await.unwrap();
    eprintln!("usage while busy: {usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    assert!(usage.memory_bytes <= 32 * MIB as u64, "{usage:?}");
    assert!(usage.cpu_cores > 0.0, "{usage:?}");
    assert!(usage.cpu_cores.is_finite());
}

/// The next log line; `None` when the stream ended. Fails after 10 s without either.
async fn next_line<S>(lines: &mut S) -> Option<String>
where
    S: futures::Stream<Item = berth_docker::Result<String>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .expect("no log line and no end of the stream within 10 s")
        .map(|line| line.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stream_follows_output() {
    let Some(docker) = docker_or_skip("logs_stream_follows_output").await else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("logs");
    let probe = start_probe(&docker, &guard.instance, "probe").await;
    let mut lines = Box::pin(docker.logs_stream(&probe.id, true, 100));
    // Lines already written come first.
    loop {
        let line = next_line(&mut lines).await.expect("the log stream ended");
        if line.contains("listening") {
            break;
        }
    }
    // Then lines written after the stream was opened.
    invoke(&probe.base, "write", json!({"path": "/tmp/x"}))
        .await
        .unwrap();
    loop {
        let line = next_line(&mut lines).await.expect("the log stream ended");
        assert!(!line.ends_with('\n'));
        if line.contains("answered") {
            break;
        }
    }
    // And the stream ends when the container stops.
    docker.signal(&probe.id, "SIGTERM").await.unwrap();
    let mut tail = Vec::new();
    while let Some(line) = next_line(&mut lines).await {
        tail.push(line);
    }
    assert!(tail.iter().any(|l| l.contains("stopped")), "{tail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ready_accepts_a_matching_plugin_and_names_a_describe_mismatch() {
    let Some(docker) =
        docker_or_skip("wait_ready_accepts_a_matching_plugin_and_names_a_describe_mismatch").await
    else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("ready");
    let instance = &guard.instance;
    let plugin = probe_manifest(&probe_manifest_text());
    let network = instance.plugin_network("probe");
    docker
        .ensure_plugin_network(&network, instance.labels())
        .await
        .unwrap();
    let config = plugin_container(
        &plugin,
        &ContainerOptions {
            image: PROBE_IMAGE.into(),
            network: network.clone(),
            env: container_env(&plugin, None, None).unwrap(),
            labels: instance.plugin_labels("probe", 1, "0000"),
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let id = docker
        .run_container(&instance.plugin_container_name("probe", 1), config)
        .await
        .unwrap();
    let created = started.elapsed();
    let address = docker
        .container_address(&id, &network)
        .await
        .unwrap()
        .unwrap();
    let base = relay_to(&docker, instance, "probe", address, &network).await;
    let relayed = started.elapsed();
    wait_ready(&base, &plugin, Duration::from_secs(20))
        .await
        .unwrap();
    let ready = started.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "probe created and started in {:.0} ms; relay up at {:.0} ms; ready at {:.0} ms",
        ms(created),
        ms(relayed),
        ms(ready)
    );

    let newer = probe_manifest(&probe_manifest_text().replace("version: 0.1.0", "version: 0.2.0"));
    let err = wait_ready(&base, &newer, Duration::from_secs(5))
        .await
        .unwrap_err();
    let NotReady::DescribeMismatch(differences) = &err else {
        panic!("expected a describe mismatch, got {err:?}")
    };
    assert_eq!(
        differences,
        &[r#"version is "0.1.0", the manifest says "0.2.0""#.to_owned()]
    );
    assert!(err.to_string().contains("version"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_plugin_network_that_is_not_isolated_is_refused() {
    let Some(docker) =
        docker_or_skip("an_existing_plugin_network_that_is_not_isolated_is_refused").await
    else {
        return;
    };
    let guard = Cleanup::new("loose");
    let instance = &guard.instance;
    let name = instance.plugin_network("probe");
    // Internal, but with an address on the host: a plugin could still reach host services.
    docker
        .create_network(&name, true, instance.labels())
        .await
        .unwrap();
    let refused = docker
        .ensure_plugin_network(&name, instance.labels())
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains(&name) && text.contains("com.docker.network.bridge.inhibit_ipv4"),
        "{text}"
    );
    assert!(text.contains("docker network rm"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_create_one_network() {
    let Some(docker) = docker_or_skip("concurrent_ensures_create_one_network").await else {
        return;
    };
    let guard = Cleanup::new("ensure");
    let instance = &guard.instance;
    let name = instance.plugin_network("probe");
    let results = futures::future::join_all(
        (0..4).map(|_| docker.ensure_plugin_network(&name, instance.labels())),
    )
    .await;
    for r in results {
        r.unwrap();
    }
    let filters = HashMap::from([("name".to_owned(), vec![name.clone()])]);
    let same_name = docker
        .bollard()
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name.as_str()))
        .count();
    assert_eq!(same_name, 1, "{name} exists {same_name} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_volume_is_writable_by_the_plugin_unless_mounted_read_only() {
    let Some(docker) =
        docker_or_skip("a_new_volume_is_writable_by_the_plugin_unless_mounted_read_only").await
    else {
        return;
    };
    probe_image().await;
    let guard = Cleanup::new("volumes");
    let instance = &guard.instance;
    let manifest = probe_manifest_text().replace(
        "  permissions:\n",
        "  permissions:\n    filesystem:\n      - {name: data, mountPath: /data, access: readWrite}\n      - {name: seed, mountPath: /seed, access: readOnly}\n",
    );
    let mut filesystem = HashMap::new();
    for mount in ["data", "seed"] {
        let volume = instance.volume("probe", mount);
        docker
            .ensure_volume(&volume, instance.labels())
            .await
            .unwrap();
        filesystem.insert(mount.to_owned(), FilesystemSource::Volume(volume));
    }
    let probe = start_probe_with(&docker, instance, "probe", &manifest, filesystem).await;
    let data = invoke(&probe.base, "write", json!({"path": "/data/file"}))
        .await
        .unwrap();
    assert_eq!(data, json!({"ok": true, "error": null}));
    let seed = invoke(&probe.base, "write", json!({"path": "/seed/file"}))
        .await
        .unwrap();
    assert_eq!(seed["ok"], false, "{seed}");
    assert!(
        seed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{seed}"
    );
}
