//! A plugin's resource limits: the bounds, resolution of the manifest's quantities into
//! runtime values ([`ResolvedResources`]), and the inverse — runtime values written back as
//! canonical quantities ([`format_memory`], [`format_cpu`]) for rendered objects.

use std::time::Duration;

use crate::plugin::Resources;
use crate::problem::Problem;
use crate::quantity::Quantity;

/// Smallest memory limit a plugin may ask for.
pub const MIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;
/// Largest memory limit a plugin may ask for.
pub const MAX_MEMORY_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Smallest CPU limit, in millicores.
pub const MIN_CPU_MILLIS: u64 = 10;
/// Largest CPU limit, in millicores.
pub const MAX_CPU_MILLIS: u64 = 64_000;
/// Largest `/tmp`.
pub const MAX_TMP_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Longest invocation deadline.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Shortest invocation deadline.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Limits with every quantity parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedResources {
    /// CPU limit in millicores.
    pub cpu_millis: u64,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Process limit.
    pub pids: i64,
    /// `/tmp` size in bytes.
    pub tmp_bytes: u64,
    /// Invocation deadline.
    pub timeout: Duration,
    /// Invocations in flight at once.
    pub max_concurrency: u32,
}

impl Resources {
    /// Parses every limit; the problems name the field under `spec.resources`.
    pub fn resolve(&self) -> Result<ResolvedResources, Vec<Problem>> {
        let mut problems = Vec::new();
        let resolved = resolve_resources(self, &mut problems);
        match resolved {
            Some(r) if problems.is_empty() => Ok(r),
            _ => Err(problems),
        }
    }
}

pub(crate) fn resolve_resources(
    r: &Resources,
    problems: &mut Vec<Problem>,
) -> Option<ResolvedResources> {
    let quantity = |q: &Quantity, field: &str, problems: &mut Vec<Problem>, cpu: bool| {
        let parsed = if cpu { q.millis() } else { q.bytes() };
        parsed
            .map_err(|e| {
                problems
                    .push(Problem::error(format!("spec.resources.{field}"), e.message).hint(e.hint))
            })
            .ok()
    };
    let cpu = quantity(&r.cpu, "cpu", problems, true);
    let memory = quantity(&r.memory, "memory", problems, false);
    let tmp = quantity(&r.tmp, "tmp", problems, false);
    let timeout = r
        .timeout
        .duration()
        .map_err(|e| {
            problems.push(Problem::error("spec.resources.timeout", e.message).hint(e.hint))
        })
        .ok();
    if let Some(cpu) = cpu {
        if cpu < MIN_CPU_MILLIS {
            problems.push(
                Problem::error(
                    "spec.resources.cpu",
                    format!("{} is below the minimum of 10m", r.cpu),
                )
                .hint("ask for at least \"10m\""),
            );
        } else if cpu > MAX_CPU_MILLIS {
            problems.push(
                Problem::error(
                    "spec.resources.cpu",
                    format!("{} is above the maximum of 64 cores", r.cpu),
                )
                .hint("ask for at most \"64\""),
            );
        }
    }
    if let Some(memory) = memory {
        if memory < MIN_MEMORY_BYTES {
            problems.push(
                Problem::error(
                    "spec.resources.memory",
                    format!("{} is below the minimum of 4Mi", r.memory),
                )
                .hint("ask for at least \"4Mi\""),
            );
        } else if memory > MAX_MEMORY_BYTES {
            problems.push(
                Problem::error(
                    "spec.resources.memory",
                    format!("{} is above the maximum of 64Gi", r.memory),
                )
                .hint("ask for at most \"64Gi\""),
            );
        }
    }
    if let Some(tmp) = tmp {
        if tmp == 0 {
            problems.push(
                Problem::error("spec.resources.tmp", "a zero-sized /tmp cannot be mounted")
                    .hint("ask for at least \"1Mi\""),
            );
        } else if tmp > MAX_TMP_BYTES {
            problems.push(
                Problem::error(
                    "spec.resources.tmp",
                    format!("{} is above the maximum of 4Gi", r.tmp),
                )
                .hint("ask for at most \"4Gi\"; mount a volume for more"),
            );
        }
    }
    if let Some(timeout) = timeout {
        if timeout > MAX_TIMEOUT {
            problems.push(
                Problem::error(
                    "spec.resources.timeout",
                    format!("{} is longer than the maximum of 15m", r.timeout),
                )
                .hint("use at most \"15m\"; long work belongs in a job, not an invocation"),
            );
        } else if timeout < MIN_TIMEOUT {
            problems.push(
                Problem::error(
                    "spec.resources.timeout",
                    format!("{} is shorter than the minimum of 10ms", r.timeout),
                )
                .hint("use at least \"10ms\""),
            );
        }
    }
    if !(1..=32768).contains(&r.pids) {
        problems.push(
            Problem::error(
                "spec.resources.pids",
                format!("{} is outside 1..32768", r.pids),
            )
            .hint("the default is 64"),
        );
    }
    if r.max_concurrency == 0 || r.max_concurrency > 100_000 {
        problems.push(
            Problem::error(
                "spec.resources.maxConcurrency",
                format!("{} is outside 1..100000", r.max_concurrency),
            )
            .hint("the default is 64"),
        );
    }
    Some(ResolvedResources {
        cpu_millis: cpu?,
        memory_bytes: memory?,
        pids: r.pids,
        tmp_bytes: tmp?,
        timeout: timeout?,
        max_concurrency: r.max_concurrency,
    })
}

/// Memory in the largest binary unit that divides it exactly (`32Mi`, `1Gi`, `1536Ki`).
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "Ti"),
        (1 << 30, "Gi"),
        (1 << 20, "Mi"),
        (1 << 10, "Ki"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// CPU in millicores (`250m`), or whole cores when exact (`2`).
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_in_canonical_units() {
        assert_eq!(format_memory(32 * 1024 * 1024), "32Mi");
        assert_eq!(format_memory(1 << 30), "1Gi");
        assert_eq!(format_memory(1536 * 1024), "1536Ki");
        assert_eq!(format_memory(1000), "1000");
        assert_eq!(format_cpu(250), "250m");
        assert_eq!(format_cpu(2000), "2");
    }

    #[test]
    fn formatting_is_the_inverse_of_resolution() {
        for bytes in [4 << 20, 64 << 20, 1536 << 10, 3 << 30] {
            assert_eq!(Quantity(format_memory(bytes)).bytes().unwrap(), bytes);
        }
        for millis in [10, 250, 1000, 2500, 64_000] {
            assert_eq!(Quantity(format_cpu(millis)).millis().unwrap(), millis);
        }
    }
}
