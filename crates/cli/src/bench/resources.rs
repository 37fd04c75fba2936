//! The plugin's CPU and memory while a run measures, against its limits: locally from
//! the Docker Engine's stats of the plugin's containers (summed over replicas), otherwise
//! from the gateway's `berth_plugin_cpu_cores` / `berth_plugin_memory_bytes` gauges.

use std::path::PathBuf;
use std::time::Duration;

use berth_api::bench::ResourceUse;
use berth_docker::{DockerClient, Instance};
use tokio::sync::watch;

use super::load::HttpClient;
use super::prom::{CPU, MEMORY, Snapshot};

/// Where the samples come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The containers of a `berth dev up` instance.
    Docker {
        /// Its state directory (names the instance).
        state_dir: PathBuf,
        /// The plugin.
        plugin: String,
    },
    /// A gateway's gauges.
    Gauges {
        /// Its `/metrics` URL.
        metrics_url: String,
        /// The plugin.
        plugin: String,
    },
}

/// The plugin's limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// CPU in cores.
    pub cpu_cores: Option<f64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// Samples until `stop` turns true; `None` when no sample could be taken.
pub async fn sample(
    source: Source,
    limits: Limits,
    client: HttpClient,
    mut stop: watch::Receiver<bool>,
) -> Option<ResourceUse> {
    let mut cpu = Vec::new();
    let mut memory: Option<u64> = None;
    let docker = match &source {
        Source::Docker { .. } => DockerClient::connect().await.ok(),
        Source::Gauges { .. } => None,
    };
    loop {
        let reading = match &source {
            Source::Docker { state_dir, plugin } => match &docker {
                Some(d) => docker_sample(d, state_dir, plugin).await,
                None => None,
            },
            Source::Gauges {
                metrics_url,
                plugin,
            } => gauge_sample(&client, metrics_url, plugin).await,
        };
        if let Some((c, m)) = reading {
            if let Some(c) = c {
                cpu.push(c);
            }
            if let Some(m) = m {
                memory = Some(memory.map_or(m, |x| x.max(m)));
            }
        }
        if *stop.borrow() {
            break;
        }
        // The engine's stats take about a second themselves; the gauges are cheap.
        let pause = match source {
            Source::Docker { .. } => Duration::from_millis(100),
            Source::Gauges { .. } => Duration::from_secs(1),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    if cpu.is_empty() && memory.is_none() {
        return None;
    }
    let samples = cpu.len().max(usize::from(memory.is_some())) as u32;
    Some(ResourceUse {
        cpu_cores_mean: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
        cpu_cores_peak: cpu.iter().copied().reduce(f64::max),
        cpu_limit_cores: limits.cpu_cores,
        memory_peak_bytes: memory,
        memory_limit_bytes: limits.memory_bytes,
        samples,
    })
}

async fn docker_sample(
    docker: &DockerClient,
    state_dir: &std::path::Path,
    plugin: &str,
) -> Option<(Option<f64>, Option<u64>)> {
    let instance = Instance::for_state_dir(state_dir);
    let containers = docker.list_managed(&instance).await.ok()?;
    let ids: Vec<String> = containers
        .into_iter()
        .filter(|c| {
            c.running
                && c.plugin.as_deref() == Some(plugin)
                && c.role.as_deref() == Some(berth_docker::instance::ROLE_PLUGIN)
        })
        .map(|c| c.id)
        .collect();
    if ids.is_empty() {
        return None;
    }
    let usages = futures::future::join_all(ids.iter().map(|id| docker.usage(id))).await;
    let ok: Vec<_> = usages.into_iter().filter_map(Result::ok).collect();
    if ok.is_empty() {
        return None;
    }
    Some((
        Some(ok.iter().map(|u| u.cpu_cores).sum()),
        Some(ok.iter().map(|u| u.memory_bytes).sum()),
    ))
}

async fn gauge_sample(
    client: &HttpClient,
    metrics_url: &str,
    plugin: &str,
) -> Option<(Option<f64>, Option<u64>)> {
    let text = scrape(client, metrics_url).await.ok()?;
    let snapshot = Snapshot::parse(&text).ok()?;
    let cpu = snapshot.gauge(CPU, plugin);
    let memory = snapshot
        .gauge(MEMORY, plugin)
        .filter(|m| m.is_finite() && *m >= 0.0)
        .map(|m| m as u64);
    (cpu.is_some() || memory.is_some()).then_some((cpu, memory))
}

/// `GET url` → the body; errors say what failed.
pub async fn scrape(client: &HttpClient, url: &str) -> Result<String, String> {
    use http_body_util::BodyExt;
    let request = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| format!("{url}: no answer within 10 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: the answer is not UTF-8"))
}
