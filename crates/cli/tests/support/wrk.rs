//! wrk, driven from the benchmarks: a Lua script that POSTs one input and prints its own
//! summary line, and a runner that reads that line back.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One wrk phase: latency percentiles (µs) and requests per second.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub p50_us: f64,
    pub p99_us: f64,
    pub rps: f64,
}

/// Writes `dir/<label>.lua`: POSTs `body` as JSON with `headers`, and prints
/// `BERTH-WRK p50=… p99=… requests=… duration_us=… errors=… non2xx=…` when done.
pub fn script(dir: &Path, label: &str, body: &str, headers: &[(&str, &str)]) -> PathBuf {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = '{body}'\n"));
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    lua.push_str(
        r#"function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BERTH-WRK p50=%d p99=%d requests=%d duration_us=%d errors=%d non2xx=%d\n",
    latency:percentile(50), latency:percentile(99), summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"#,
    );
    let path = dir.join(format!("{label}.lua"));
    std::fs::write(&path, lua).unwrap();
    path
}

/// Runs `wrk -t{threads} -c{connections} -d{secs}s` with `script` against `url`; every
/// answer must be a 2xx and at least one must come.
pub fn run(url: &str, script: &Path, threads: u32, connections: u32, secs: u64) -> Phase {
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (install it: apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("BERTH-WRK "))
        .unwrap_or_else(|| panic!("no summary from wrk: {text}"));
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let (errors, non2xx) = (field("errors"), field("non2xx"));
    assert!(
        errors == 0.0 && non2xx == 0.0,
        "{url}: {errors} socket errors, {non2xx} non-2xx answers: {text}"
    );
    let requests = field("requests");
    assert!(requests > 0.0, "{url}: no request completed");
    Phase {
        p50_us: field("p50"),
        p99_us: field("p99"),
        rps: requests / (field("duration_us") / 1e6),
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `BERTH_BENCH_RUNS`, or `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
