//! What a container uses right now: CPU cores and memory, from one stats sample.

use bollard::models::{ContainerMemoryStats, ContainerStatsResponse};
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;

use crate::client::DockerClient;
use crate::error::{Error, Result};

/// A container's resource use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU cores in use, averaged over the engine's sampling interval (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Memory in use, without the page cache the kernel can drop (what `docker stats`
    /// shows, and what counts towards an OOM kill).
    pub memory_bytes: u64,
}

impl Usage {
    /// Computes usage from one stats answer that carries both the current and the
    /// previous CPU sample.
    pub fn from_stats(stats: &ContainerStatsResponse) -> Usage {
        Usage {
            cpu_cores: cpu_cores(stats),
            memory_bytes: stats
                .memory_stats
                .as_ref()
                .map(memory_in_use)
                .unwrap_or_default(),
        }
    }
}

fn cpu_cores(stats: &ContainerStatsResponse) -> f64 {
    let (Some(cpu), Some(pre)) = (&stats.cpu_stats, &stats.precpu_stats) else {
        return 0.0;
    };
    let total = |s: &bollard::models::ContainerCpuStats| {
        s.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or_default()
    };
    // Without a previous reading there is no interval to average over.
    if pre.system_cpu_usage.unwrap_or_default() == 0 {
        return 0.0;
    }
    let container_delta = total(cpu).saturating_sub(total(pre)) as f64;
    let system_delta = cpu
        .system_cpu_usage
        .unwrap_or_default()
        .saturating_sub(pre.system_cpu_usage.unwrap_or_default()) as f64;
    if container_delta <= 0.0 || system_delta <= 0.0 {
        return 0.0;
    }
    // system_cpu_usage sums every CPU of the host, so the share times the number of CPUs
    // gives cores (as `docker stats` computes its percentage).
    let cpus = cpu
        .online_cpus
        .filter(|n| *n > 0)
        .map(f64::from)
        .or_else(|| {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|p| p.len() as f64)
                .filter(|n| *n > 0.0)
        })
        .unwrap_or(1.0);
    container_delta / system_delta * cpus
}

fn memory_in_use(memory: &ContainerMemoryStats) -> u64 {
    let usage = memory.usage.unwrap_or_default();
    let stats = memory.stats.as_ref();
    // cgroup v1 reports total_inactive_file, v2 inactive_file, old engines only cache.
    let reclaimable = ["total_inactive_file", "inactive_file", "cache"]
        .iter()
        .find_map(|k| stats.and_then(|s| s.get(*k)).copied())
        .filter(|r| *r < usage)
        .unwrap_or_default();
    usage - reclaimable
}

impl DockerClient {
    /// One sample of the container's CPU and memory use. The engine takes about a second
    /// to answer, because it measures CPU between two readings.
    pub async fn usage(&self, id: &str) -> Result<Usage> {
        let what = format!("container {id}");
        let mut stream = self.docker.stats(
            id,
            Some(
                StatsOptionsBuilder::default()
                    .stream(false)
                    .one_shot(false)
                    .build(),
            ),
        );
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item.map_err(|e| Error::from_engine("read the stats", &what, e))?);
        }
        let stats = last.ok_or_else(|| Error::Daemon {
            action: "read the stats".into(),
            status: 200,
            message: format!("the engine sent no stats for {what}; is it running?"),
        })?;
        Ok(Usage::from_stats(&stats))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage};

    fn cpu(total: u64, system: u64) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(4),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_cores_come_from_the_deltas_between_two_samples() {
        let stats = ContainerStatsResponse {
            // 0.5 s of CPU time while the host's 4 CPUs accumulated 4 s: half a core.
            cpu_stats: Some(cpu(1_500_000_000, 14_000_000_000)),
            precpu_stats: Some(cpu(1_000_000_000, 10_000_000_000)),
            ..Default::default()
        };
        let usage = Usage::from_stats(&stats);
        assert!((usage.cpu_cores - 0.5).abs() < 1e-9, "{usage:?}");
    }

    #[test]
    fn no_previous_sample_means_no_cpu_reading() {
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500_000_000, 14_000_000_000)),
            precpu_stats: Some(ContainerCpuStats::default()),
            ..Default::default()
        };
        // An empty precpu would otherwise look like the whole lifetime in one interval.
        assert_eq!(Usage::from_stats(&stats).cpu_cores, 0.0);
    }

    #[test]
    fn memory_leaves_out_the_inactive_page_cache() {
        let memory = |stats: &[(&str, u64)]| ContainerMemoryStats {
            usage: Some(10_000),
            stats: Some(
                stats
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect::<HashMap<_, _>>(),
            ),
            ..Default::default()
        };
        assert_eq!(
            memory_in_use(&memory(&[("total_inactive_file", 3_000)])),
            7_000
        );
        assert_eq!(memory_in_use(&memory(&[("inactive_file", 2_000)])), 8_000);
        assert_eq!(memory_in_use(&memory(&[("cache", 1_000)])), 9_000);
        assert_eq!(memory_in_use(&memory(&[])), 10_000);
        assert_eq!(
            memory_in_use(&memory(&[("inactive_file", 20_000)])),
            10_000,
            "more cache than usage is ignored"
        );
    }
}
