//! The gateway container of local mode and the admin client that feeds it.
//!
//! The gateway runs from the `berth` image on an ordinary "edge" network, with its port
//! published on 127.0.0.1 only, and joins every plugin network: it is the one thing
//! plugins can reach, and the way in from the host (also where the host cannot reach
//! container addresses). It writes audit events into the same store file, mounted at
//! `/state`, and gets its directory pushed by the supervisor.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use super::{Engine, SupervisorConfig, SupervisorError};
use crate::Instance;

/// Port the gateway listens on inside its container.
pub const GATEWAY_PORT: u16 = 7070;
/// Port of the gateway's egress proxy inside its container; plugins reach it at the
/// gateway's address on their own network (`HTTP_PROXY`).
pub const EGRESS_PORT: u16 = 7401;
/// Network alias of the gateway on every plugin network.
pub const GATEWAY_ALIAS: &str = "berth-gateway";
/// Settings key: the gateway's URL at its address on the edge network
/// (`http://172.x.y.z:7070`), which a Linux host reaches directly, without Docker's userland
/// proxy (decision draft "direct gateway address"). Absent where the engine does not run
/// on this host's kernel; the CLI uses it only when it connects, else [`GATEWAY_URL_SETTING`]
/// (127.0.0.1, which works everywhere).
///
/// [`GATEWAY_URL_SETTING`]: super::GATEWAY_URL_SETTING
pub const GATEWAY_DIRECT_URL_SETTING: &str = "dev.gateway-direct-url";
/// How long a connection to the direct address may take before the published port is
/// used instead: a bridge on this host answers in well under a millisecond.
pub const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_millis(50);
/// Label holding a digest of the gateway container's configuration, so that a restarted
/// supervisor adopts a gateway started with the same settings and replaces any other.
pub const CONFIG_LABEL: &str = "berth.dev/config-sha256";

/// How the gateway container is set up.
#[derive(Clone, Debug)]
pub struct GatewaySpec {
    /// The `berth` image.
    pub image: String,
    /// Host port on 127.0.0.1; 0 lets Docker choose.
    pub host_port: u16,
    /// The state directory, mounted at `/state` (the store lives there).
    pub state_dir: String,
    /// `uid:gid` to run as: the owner of the state directory, so the store stays writable
    /// by both sides.
    pub user: String,
    /// The tokens-file line of the admin token the supervisor and the CLI use.
    pub admin_token_line: String,
    /// The edge network.
    pub network: String,
    /// Labels for the container.
    pub labels: HashMap<String, String>,
    /// `--egress-allow-private`: host rules may reach private ranges (a service on the
    /// developer's network); other plugins' networks stay refused.
    pub egress_allow_private: bool,
    /// `--egress-deny`: this host's own addresses (`a.b.c.d/32`), which the gateway cannot
    /// see from inside its container, so a host service listening on all addresses is not
    /// reachable through the proxy.
    pub egress_deny: Vec<String>,
    /// `NAME:ADDR` lines for the gateway's `/etc/hosts` (Docker's `ExtraHosts`; ADDR may be
    /// `host-gateway`), for names of internal services that are not in DNS. The egress
    /// proxy resolves through them and checks the address like any other.
    pub extra_hosts: Vec<String>,
}

impl GatewaySpec {
    /// The digest stored in [`CONFIG_LABEL`].
    pub fn config_digest(&self, image_id: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            image_id,
            &self.host_port.to_string(),
            &self.state_dir,
            &self.user,
            &self.admin_token_line,
            &self.network,
            if self.egress_allow_private {
                "egress-allow-private"
            } else {
                ""
            },
            &self.egress_deny.join(","),
            &self.extra_hosts.join(","),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// The container configuration of the gateway. Pure.
pub fn gateway_container(spec: &GatewaySpec, config_digest: &str) -> ContainerCreateBody {
    let port_key = format!("{GATEWAY_PORT}/tcp");
    let mut labels = spec.labels.clone();
    labels.insert(CONFIG_LABEL.into(), config_digest.into());
    let host_port = if spec.host_port == 0 {
        String::new()
    } else {
        spec.host_port.to_string()
    };
    let mut cmd: Vec<String> = [
        "gateway",
        "--backend",
        "pushed",
        "--listen",
        &format!("0.0.0.0:{GATEWAY_PORT}"),
        "--store",
        "/state/berth.db",
        "--audit-summary-interval",
        "10s",
        // The proxy only accepts a plugin's credential from that plugin's own address.
        "--egress-listen",
        &format!("0.0.0.0:{EGRESS_PORT}"),
        "--egress-check-source",
    ]
    .map(String::from)
    .to_vec();
    if spec.egress_allow_private {
        cmd.push("--egress-allow-private".into());
    }
    if !spec.egress_deny.is_empty() {
        cmd.push("--egress-deny".into());
        cmd.push(spec.egress_deny.join(","));
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: Some(spec.user.clone()),
        cmd: Some(cmd),
        env: Some(vec![
            format!("BERTH_TOKENS={}", spec.admin_token_line),
            "BERTH_LOG=info".into(),
        ]),
        exposed_ports: Some(vec![port_key.clone()]),
        labels: Some(labels),
        stop_signal: Some("SIGTERM".into()),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/state:rw", spec.state_dir)]),
            port_bindings: Some(HashMap::from([(
                port_key,
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host_port),
                }]),
            )])),
            memory: Some(256 * 1024 * 1024),
            memory_swap: Some(256 * 1024 * 1024),
            pids_limit: Some(512),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            network_mode: Some(spec.network.clone()),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// This machine's interface addresses as `/32` or `/128` networks, loopback left out (the
/// gateway always denies it), sorted so the gateway's configuration digest is stable.
pub fn host_addresses() -> Vec<String> {
    let mut addresses: Vec<String> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| match i.ip() {
            std::net::IpAddr::V4(ip) => format!("{ip}/32"),
            std::net::IpAddr::V6(ip) => format!("{ip}/128"),
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// `uid:gid` owning `dir`.
pub fn owner_of(dir: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    Ok(format!("{}:{}", meta.uid(), meta.gid()))
}

/// Talks to the gateway's admin API with the admin token.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for the gateway at `base` (`http://127.0.0.1:7070`).
    pub fn new(base: &str, token: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; returns the status and body.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, String), String> {
        self.send_with(method, path, body, &[]).await
    }

    /// Sends a request with extra headers; returns the status and body.
    pub async fn send_with(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<(u16, String), String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .map_err(|_| format!("{}{path}: no answer within 60 s", self.base))?
            .map_err(|e| format!("{}{path}: {e}", self.base))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Asks the gateway to `GET url` (a plugin's `/healthz` or `/v1/describe`): the gateway
    /// is the only thing on the plugin's network. Returns the plugin's status and body.
    pub async fn probe(&self, url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
        let body = serde_json::json!({"url": url, "timeoutMs": timeout.as_millis() as u64});
        let (status, text) = self
            .send(
                http::Method::POST,
                "/v1/admin/probe",
                Some(body.to_string().into_bytes()),
            )
            .await?;
        if status != 200 {
            return Err(format!("the gateway refused the probe ({status}): {text}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("probe answer: {e}"))?;
        if let Some(error) = answer["error"].as_str() {
            return Err(error.to_owned());
        }
        let code = answer["status"].as_u64().unwrap_or(0) as u16;
        let body = answer["body"].as_str().unwrap_or_default().to_owned();
        Ok((code, Bytes::from(body)))
    }

    /// Sends restarts, cold starts and usage to the gateway's metrics. Best effort: a lost
    /// observation is a missing sample, not a reason to stop supervising.
    pub async fn observe(&self, observations: &berth_contract::wire::ObservationsWire) {
        if let Ok(body) = serde_json::to_vec(observations) {
            let _ = self
                .send(http::Method::POST, "/v1/admin/observations", Some(body))
                .await;
        }
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.send(http::Method::GET, "/healthz", None).await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("{status}: {body}"),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the gateway at {} did not become healthy within {} s: {last}",
                    self.base,
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The gateway's URL at its address on `edge`, when this host can route to container
/// addresses at all (Linux, engine on this kernel); `None` elsewhere.
pub(super) async fn direct_url<E: Engine>(docker: &E, id: &str, edge: &str) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let ip = docker.container_address(id, edge).await.ok().flatten()?;
    let addr = std::net::SocketAddr::new(ip, GATEWAY_PORT);
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(DIRECT_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(_)) => Some(format!("http://{addr}")),
        _ => None,
    }
}

/// Writes [`GATEWAY_DIRECT_URL_SETTING`] for the gateway container `id` when this host
/// reaches it there, and removes it otherwise, so the CLI never tries an address that
/// is stale or unreachable from here. Call it once the gateway answers.
pub(super) async fn record_direct_url<E: Engine>(
    docker: &E,
    store: &berth_store::Store,
    instance: &Instance,
    id: &str,
) {
    let _ = match direct_url(docker, id, &instance.edge_network()).await {
        Some(url) => store.set_setting(GATEWAY_DIRECT_URL_SETTING, &url),
        None => store.delete_setting(GATEWAY_DIRECT_URL_SETTING),
    };
}

/// Whether a TCP connection to the `http://host:port` of `url` opens within
/// [`DIRECT_CONNECT_TIMEOUT`].
pub fn reachable(url: &str) -> bool {
    let Some(addr) = url
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        return false;
    };
    std::net::TcpStream::connect_timeout(&addr, DIRECT_CONNECT_TIMEOUT).is_ok()
}

/// The URL to reach the gateway at: `direct` when it is set and connects, else
/// `published` (127.0.0.1, the way in on every platform).
pub fn preferred_url<'a>(published: &'a str, direct: Option<&'a str>) -> &'a str {
    match direct {
        Some(d) if reachable(d) => d,
        _ => published,
    }
}

/// Creates (or adopts) the edge network and the gateway container; returns its id and URL.
pub(super) async fn ensure_gateway<E: Engine>(
    docker: &E,
    instance: &Instance,
    config: &SupervisorConfig,
) -> Result<(String, String), SupervisorError> {
    let edge = instance.edge_network();
    docker.ensure_edge_network(&edge, instance.labels()).await?;
    let image = docker.inspect_image(&config.gateway_image).await?;
    let state_dir = config
        .state_dir
        .canonicalize()
        .unwrap_or_else(|_| config.state_dir.clone());
    let user = owner_of(&state_dir).map_err(|e| {
        SupervisorError::Gateway(format!(
            "cannot read the owner of {}: {e}",
            state_dir.display()
        ))
    })?;
    let spec = GatewaySpec {
        image: config.gateway_image.clone(),
        host_port: config.gateway_port,
        state_dir: state_dir.display().to_string(),
        user,
        admin_token_line: format!(
            "berth-cli {} admin",
            berth_contract::credential::digest_line(&config.admin_token)
        ),
        network: edge.clone(),
        labels: instance.gateway_labels(),
        egress_allow_private: config.egress_allow_private,
        egress_deny: host_addresses(),
        extra_hosts: config.extra_hosts.clone(),
    };
    let digest = spec.config_digest(&image.id);
    let name = instance.gateway_container_name();
    let existing = docker
        .list_managed(instance)
        .await?
        .into_iter()
        .find(|c| c.role.as_deref() == Some("gateway"));
    let existing_digest = match &existing {
        Some(c) => docker
            .container_labels(&c.id)
            .await
            .ok()
            .and_then(|mut l| l.remove(CONFIG_LABEL)),
        None => None,
    };
    let id = match existing {
        Some(c) if c.running && existing_digest.as_deref() == Some(digest.as_str()) => c.id,
        Some(c) => {
            docker.remove_container(&c.id).await?;
            docker
                .run_container(&name, gateway_container(&spec, &digest))
                .await?
        }
        None => {
            docker
                .run_container(&name, gateway_container(&spec, &digest))
                .await?
        }
    };
    let port = docker
        .published_port(&id, GATEWAY_PORT)
        .await?
        .ok_or_else(|| SupervisorError::Gateway("the gateway's port was not published".into()))?;
    Ok((id, format!("http://127.0.0.1:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16) -> GatewaySpec {
        GatewaySpec {
            image: "berth/berth:0.1.0".into(),
            host_port: port,
            state_dir: "/home/u/.local/share/berth".into(),
            user: "1000:1000".into(),
            admin_token_line: "berth-cli sha256:00 admin".into(),
            network: "berth-x-edge".into(),
            labels: HashMap::new(),
            egress_allow_private: false,
            egress_deny: vec!["192.168.1.20/32".into()],
            extra_hosts: Vec::new(),
        }
    }

    #[test]
    fn the_direct_address_is_used_only_when_it_connects() {
        let published = "http://127.0.0.1:7070";
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = format!("http://{}", listener.local_addr().unwrap());
        assert_eq!(preferred_url(published, Some(&open)), open);
        drop(listener);
        // Nothing listens there any more: refused at once, the published port is used.
        assert_eq!(preferred_url(published, Some(&open)), published);
        assert_eq!(preferred_url(published, None), published);
        assert_eq!(preferred_url(published, Some("not a url")), published);
    }

    #[test]
    fn gateway_publishes_on_loopback_only() {
        let body = gateway_container(&spec(7070), "d");
        let host = body.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        let b = bindings["7070/tcp"].as_ref().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some("7070"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.labels.unwrap()[CONFIG_LABEL], "d");
    }

    #[test]
    fn port_zero_lets_docker_choose() {
        let host = gateway_container(&spec(0), "d").host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        assert_eq!(
            bindings["7070/tcp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn config_digest_changes_with_any_setting() {
        let a = spec(7070).config_digest("img");
        assert_ne!(a, spec(7071).config_digest("img"));
        assert_ne!(a, spec(7070).config_digest("img2"));
        assert_eq!(a, spec(7070).config_digest("img"));
        let private = GatewaySpec {
            egress_allow_private: true,
            ..spec(7070)
        };
        assert_ne!(a, private.config_digest("img"));
        let moved = GatewaySpec {
            egress_deny: vec!["192.168.1.21/32".into()],
            ..spec(7070)
        };
        assert_ne!(a, moved.config_digest("img"));
        let hosts = GatewaySpec {
            extra_hosts: vec!["db.internal:10.1.2.3".into()],
            ..spec(7070)
        };
        assert_ne!(a, hosts.config_digest("img"));
    }

    #[test]
    fn added_hosts_go_to_the_gateways_hosts_file() {
        let none = gateway_container(&spec(7070), "d").host_config.unwrap();
        assert_eq!(none.extra_hosts, None);
        let hosts = GatewaySpec {
            extra_hosts: vec![
                "db.internal:10.1.2.3".into(),
                "host.internal:host-gateway".into(),
            ],
            ..spec(7070)
        };
        let host = gateway_container(&hosts, "d").host_config.unwrap();
        assert_eq!(
            host.extra_hosts.unwrap(),
            ["db.internal:10.1.2.3", "host.internal:host-gateway"]
        );
    }

    #[test]
    fn gateway_serves_the_egress_proxy_checking_the_source() {
        let cmd = gateway_container(&spec(7070), "d").cmd.unwrap();
        let listen = cmd.iter().position(|a| a == "--egress-listen").unwrap();
        assert_eq!(cmd[listen + 1], format!("0.0.0.0:{EGRESS_PORT}"));
        assert!(cmd.contains(&"--egress-check-source".to_owned()));
        assert!(!cmd.contains(&"--egress-allow-private".to_owned()));
        let private = GatewaySpec {
            egress_allow_private: true,
            ..spec(7070)
        };
        let cmd = gateway_container(&private, "d").cmd.unwrap();
        assert!(cmd.contains(&"--egress-allow-private".to_owned()));
        let deny = cmd.iter().position(|a| a == "--egress-deny").unwrap();
        assert_eq!(cmd[deny + 1], "192.168.1.20/32");
    }
}
