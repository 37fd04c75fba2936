//! A fake [`Engine`] that records every call and keeps containers in memory, and a fake
//! gateway admin API on a local port that answers readiness probes from the fake's
//! containers, so supervisor decisions are tested without Docker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::Engine;
use crate::ContainerEvent;
use crate::error::{Error, Result};
use crate::{
    ContainerStatus, INSTANCE_LABEL, ImageInfo, Instance, MANIFEST_HASH_LABEL, ManagedContainer,
    PLUGIN_LABEL, REVISION_LABEL, ROLE_LABEL, Usage,
};

/// One container of the fake engine.
#[derive(Clone, Debug)]
pub(super) struct FakeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    pub exit_code: i64,
    pub ip: IpAddr,
}

/// What the fake engine holds; tests read and script it through [`FakeEngine::state`].
#[derive(Default)]
pub(super) struct FakeState {
    /// Every call, in order: `"run berth-…-calc-r1"`, `"signal berth-…-calc-r1 SIGTERM"`, …
    pub calls: Vec<String>,
    /// Images by reference.
    pub images: HashMap<String, ImageInfo>,
    /// `/v1/describe` answer of containers of an image, by image reference.
    pub describes: HashMap<String, String>,
    /// Images whose containers exit with code 1 as soon as they start.
    pub crashing_images: HashSet<String>,
    pub containers: Vec<FakeContainer>,
    /// Plugin networks → the plugin they belong to.
    pub plugin_networks: BTreeMap<String, String>,
    /// Networks created for the pool.
    pub pool_networks: std::collections::BTreeSet<String>,
    /// The fake gateway's port, published as the gateway container's.
    pub gateway_port: u16,
    /// Directory snapshots the gateway received.
    pub pushed: Vec<Value>,
    /// Observations the gateway received.
    pub observed: Vec<Value>,
    /// The engine does not answer pings (it is restarting).
    pub engine_down: bool,
    next: u32,
}

impl FakeState {
    fn find(&self, id_or_name: &str) -> Option<&FakeContainer> {
        self.containers
            .iter()
            .find(|c| c.id == id_or_name || c.name == id_or_name)
    }

    fn find_mut(&mut self, id_or_name: &str) -> Option<&mut FakeContainer> {
        self.containers
            .iter_mut()
            .find(|c| c.id == id_or_name || c.name == id_or_name)
    }

    fn name_of(&self, id: &str) -> String {
        self.find(id)
            .map_or_else(|| id.to_owned(), |c| c.name.clone())
    }

    /// Adds a container as if an earlier supervisor had created it.
    pub fn add_container(
        &mut self,
        name: &str,
        image: &str,
        labels: HashMap<String, String>,
    ) -> String {
        self.next += 1;
        let id = format!("id{}", self.next);
        let running = !self.crashing_images.contains(image);
        self.containers.push(FakeContainer {
            id: id.clone(),
            name: name.to_owned(),
            image: image.to_owned(),
            labels,
            running,
            exit_code: if running { 0 } else { 1 },
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, self.next as u8)),
        });
        id
    }

    /// The calls whose text starts with `prefix`.
    pub fn calls_starting(&self, prefix: &str) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn not_found(what: &str) -> Error {
    Error::NotFound {
        what: what.to_owned(),
    }
}

/// The fake engine; clones share one [`FakeState`].
#[derive(Clone, Default)]
pub(super) struct FakeEngine {
    state: Arc<Mutex<FakeState>>,
}

impl FakeEngine {
    /// The state, to script answers and read the calls.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, call: String) {
        self.state().calls.push(call);
    }
}

impl Engine for FakeEngine {
    async fn ping(&self) -> Result<()> {
        if self.state().engine_down {
            return Err(Error::Unreachable {
                source: bollard::errors::Error::SocketNotFoundError("fake engine down".into()),
            });
        }
        Ok(())
    }

    fn events(&self, _instance: &Instance) -> BoxStream<'static, Result<ContainerEvent>> {
        // Tests deliver events by calling the supervisor directly.
        futures::stream::pending().boxed()
    }

    async fn list_managed(&self, instance: &Instance) -> Result<Vec<ManagedContainer>> {
        let s = self.state();
        Ok(s.containers
            .iter()
            .filter(|c| c.labels.get(INSTANCE_LABEL).map(String::as_str) == Some(instance.id()))
            .map(|c| ManagedContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                role: c.labels.get(ROLE_LABEL).cloned(),
                plugin: c.labels.get(PLUGIN_LABEL).cloned(),
                revision: c.labels.get(REVISION_LABEL).and_then(|r| r.parse().ok()),
                manifest_sha256: c.labels.get(MANIFEST_HASH_LABEL).cloned(),
                running: c.running,
                image_id: s
                    .images
                    .get(&c.image)
                    .map(|i| i.id.clone())
                    .unwrap_or_default(),
                created: 0,
            })
            .collect())
    }

    async fn plugins_with_networks(&self, _instance: &Instance) -> Result<Vec<String>> {
        Ok(self.state().plugin_networks.values().cloned().collect())
    }

    async fn remove_plugin_leftovers(
        &self,
        _instance: &Instance,
        plugin: &str,
        network: &str,
    ) -> Result<()> {
        let mut s = self.state();
        s.calls.push(format!("remove-leftovers {plugin} {network}"));
        s.containers
            .retain(|c| c.labels.get(PLUGIN_LABEL).map(String::as_str) != Some(plugin));
        s.plugin_networks.remove(network);
        s.pool_networks.remove(network);
        Ok(())
    }

    async fn pool_networks(&self, _instance: &Instance) -> Result<Vec<String>> {
        Ok(self.state().pool_networks.iter().cloned().collect())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        let mut s = self.state();
        s.calls.push(format!("remove-network {name}"));
        s.plugin_networks.remove(name);
        s.pool_networks.remove(name);
        Ok(())
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageInfo> {
        self.state()
            .images
            .get(reference)
            .cloned()
            .ok_or_else(|| not_found(&format!("image {reference}")))
    }

    async fn pull_image(&self, reference: &str, _credentials: Option<(&str, &str)>) -> Result<()> {
        self.state().calls.push(format!("pull {reference}"));
        Err(not_found(&format!("image {reference}")))
    }

    async fn container_labels(&self, id: &str) -> Result<HashMap<String, String>> {
        self.state()
            .find(id)
            .map(|c| c.labels.clone())
            .ok_or_else(|| not_found(id))
    }

    async fn ensure_edge_network(
        &self,
        name: &str,
        _labels: HashMap<String, String>,
    ) -> Result<()> {
        self.record(format!("edge-network {name}"));
        Ok(())
    }

    async fn ensure_plugin_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut s = self.state();
        s.calls.push(format!("network {name}"));
        if labels.contains_key(super::POOL_LABEL) {
            s.pool_networks.insert(name.to_owned());
        } else {
            let plugin = labels.get(PLUGIN_LABEL).cloned().unwrap_or_default();
            s.plugin_networks.insert(name.to_owned(), plugin);
        }
        Ok(())
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        _aliases: &[String],
    ) -> Result<()> {
        let mut s = self.state();
        let name = s.name_of(container);
        s.calls.push(format!("connect {network} {name}"));
        Ok(())
    }

    async fn ensure_volume(&self, name: &str, _labels: HashMap<String, String>) -> Result<()> {
        self.record(format!("volume {name}"));
        Ok(())
    }

    async fn run_container(&self, name: &str, config: ContainerCreateBody) -> Result<String> {
        let mut s = self.state();
        s.calls.push(format!("run {name}"));
        if s.find(name).is_some() {
            return Err(Error::Conflict {
                what: format!("container {name}"),
                message: "the name is in use".into(),
            });
        }
        let image = config.image.unwrap_or_default();
        Ok(s.add_container(name, &image, config.labels.unwrap_or_default()))
    }

    async fn start_existing(&self, id: &str) -> Result<()> {
        let mut s = self.state();
        let name = s.name_of(id);
        s.calls.push(format!("start {name}"));
        let crashing = s.crashing_images.clone();
        let c = s.find_mut(id).ok_or_else(|| not_found(id))?;
        c.running = !crashing.contains(&c.image);
        Ok(())
    }

    async fn container_address(&self, id: &str, _network: &str) -> Result<Option<IpAddr>> {
        Ok(self.state().find(id).map(|c| c.ip))
    }

    async fn published_port(&self, _id: &str, _container_port: u16) -> Result<Option<u16>> {
        Ok(Some(self.state().gateway_port))
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let s = self.state();
        let c = s.find(id).ok_or_else(|| not_found(id))?;
        Ok(ContainerStatus {
            running: c.running,
            exit_code: Some(c.exit_code),
            oom_killed: false,
        })
    }

    async fn wait_exit(&self, id: &str) -> Result<i64> {
        loop {
            match self.state().find(id) {
                None => return Err(not_found(id)),
                Some(c) if !c.running => return Ok(c.exit_code),
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn logs(&self, _id: &str, _tail: usize) -> Result<String> {
        Ok("listening\n".into())
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let mut s = self.state();
        let name = s.name_of(id);
        s.calls.push(format!("signal {name} {signal}"));
        let c = s.find_mut(id).ok_or_else(|| not_found(id))?;
        c.running = false;
        c.exit_code = 143;
        Ok(())
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let mut s = self.state();
        let name = s.name_of(id);
        s.calls.push(format!("pause {name}"));
        s.find_mut(id).ok_or_else(|| not_found(id))?;
        Ok(())
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        let mut s = self.state();
        let name = s.name_of(id);
        s.calls.push(format!("unpause {name}"));
        s.find_mut(id).ok_or_else(|| not_found(id))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut s = self.state();
        let name = s.name_of(id);
        s.calls.push(format!("remove {name}"));
        s.containers.retain(|c| c.id != id && c.name != id);
        Ok(())
    }

    async fn usage(&self, _id: &str) -> Result<Usage> {
        Ok(Usage::default())
    }
}

/// Serves the gateway's admin API on 127.0.0.1 for `engine`: probes reach the fake's
/// containers by address (a running container answers `/healthz` and the `/v1/describe`
/// scripted for its image), pushes and observations are kept. Returns the port.
pub(super) async fn serve_gateway(engine: FakeEngine) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let port = listener.local_addr().expect("bound").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let engine = engine.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let engine = engine.clone();
                    async move { Ok::<_, Infallible>(answer(&engine, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

async fn answer(
    engine: &FakeEngine,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/healthz") => json!("ok"),
        ("PUT", "/v1/admin/directory") => {
            engine.state().pushed.push(json_body);
            json!({})
        }
        ("POST", "/v1/admin/observations") => {
            engine.state().observed.push(json_body);
            json!({})
        }
        ("POST", "/v1/admin/probe") => probe(engine, json_body["url"].as_str().unwrap_or("")),
        _ => {
            return http::Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .expect("a response");
        }
    };
    http::Response::new(Full::new(Bytes::from(reply.to_string())))
}

fn probe(engine: &FakeEngine, url: &str) -> Value {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return json!({"error": format!("{url} is not a URL")});
    };
    let ip: Option<IpAddr> = uri.host().and_then(|h| h.parse().ok());
    let s = engine.state();
    let Some(c) = s.containers.iter().find(|c| Some(c.ip) == ip && c.running) else {
        return json!({"error": "connection refused"});
    };
    match uri.path() {
        "/healthz" => json!({"status": 200, "body": "ok"}),
        "/v1/describe" => match s.describes.get(&c.image) {
            Some(describe) => json!({"status": 200, "body": describe}),
            None => json!({"status": 404, "body": "no describe"}),
        },
        _ => json!({"status": 404, "body": ""}),
    }
}
