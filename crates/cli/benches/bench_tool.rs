//! The load generator's own cost: `berth bench` beside wrk against the same gateway and a
//! fast host plugin (answers at once, HTTP/1.1 keep-alive), one after the other: the
//! highest closed-loop rate each drives and the CPU time each spends per 1,000 requests
//! (the children's user + system time from `/proc/self/stat`, as `getrusage(RUSAGE_CHILDREN)`
//! counts it, around each waited run).
//!
//! `cargo bench -p berth --bench bench_tool` (needs wrk from Debian's packages).
//! `BERTH_BENCH_SECONDS` sets each run's length (default 5).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::gateway::start_gateway;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn plugin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = r#"{"ok":true}"#;
        if write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .is_err()
        {
            return;
        }
    }
}

/// User + system seconds of this process's waited-for children so far.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name in parentheses; cutime and cstime are fields 16 and 17.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[13].parse::<f64>().unwrap() + fields[14].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Run {
    rps: f64,
    p50_ms: f64,
    cpu_s: f64,
    requests: f64,
}

impl Run {
    fn cpu_ms_per_1000(&self) -> f64 {
        self.cpu_s * 1000.0 / self.requests * 1000.0
    }
}

fn mint() -> (String, String) {
    let out = Command::new(BERTH)
        .args(["gateway", "token", "--name", "bench", "--scope", "invoke:*"])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let token = String::from_utf8(out.stderr)
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    (line, token)
}

fn berth_bench(url: &str, token: &str, manifest: &str, c: u32, secs: u64) -> Run {
    let before = children_cpu();
    let out = Command::new(BERTH)
        .args([
            "bench",
            "calc",
            "add",
            "--gateway",
            url,
            "--token",
            token,
            "--manifest",
            manifest,
            "--concurrency",
            &c.to_string(),
            "--duration",
            &format!("{secs}s"),
            "--warmup",
            "0s",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let cpu_s = children_cpu() - before;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Run {
        rps: v["throughput"].as_f64().unwrap(),
        p50_ms: v["latency"]["p50Ms"].as_f64().unwrap(),
        cpu_s,
        requests: v["requests"].as_f64().unwrap(),
    }
}

fn wrk_ms(text: &str) -> f64 {
    if let Some(n) = text.strip_suffix("us") {
        n.parse::<f64>().unwrap() / 1000.0
    } else if let Some(n) = text.strip_suffix("ms") {
        n.parse().unwrap()
    } else if let Some(n) = text.strip_suffix('s') {
        n.parse::<f64>().unwrap() * 1000.0
    } else {
        f64::NAN
    }
}

fn wrk(url: &str, script: &std::path::Path, c: u32, secs: u64) -> Run {
    let before = children_cpu();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{c}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("{url}/v1/plugins/calc/invoke/add"))
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let cpu_s = children_cpu() - before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .unwrap_or_else(|| panic!("{text}"))
        .trim()
        .parse()
        .unwrap();
    let requests: f64 = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.split_once(" requests in ")
                .and_then(|(n, _)| n.parse().ok())
        })
        .unwrap_or(rps * secs as f64);
    let p50_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| wrk_ms(v.trim()))
        .unwrap_or(f64::NAN);
    Run {
        rps,
        p50_ms,
        cpu_s,
        requests,
    }
}

fn main() {
    let secs: u64 = std::env::var("BERTH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("berth-bench-tool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("calc.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: calc}\nspec:\n  image: localhost/berth/calc:0.1.0\n  version: 0.1.0\n  capabilities:\n    - name: add\n      examples:\n        - input: {a: 1, b: 2}\n  resources:\n    maxConcurrency: 512\n",
    )
    .unwrap();
    let (line, token) = mint();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let plugin_port = plugin();
    let (_gateway, port) = start_gateway(|g| {
        g.arg("--plugins")
            .arg(&manifest)
            .args([
                "--endpoint",
                &format!("calc=http://127.0.0.1:{plugin_port}"),
            ])
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--store")
            .arg(dir.join("berth.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    });
    let url = format!("http://127.0.0.1:{port}");
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"a\":1,\"b\":2}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
        ),
    )
    .unwrap();
    // Warm both the gateway and the plugin's connections.
    let started = Instant::now();
    let _ = berth_bench(&url, &token, manifest.to_str().unwrap(), 8, 1);
    eprintln!("warm-up took {:?}", started.elapsed());
    println!(
        "closed loop against a gateway and an immediate host plugin, {secs} s a run, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<6} {:<12} {:>10} {:>10} {:>12} {:>16}",
        "conns", "tool", "req/s", "p50 ms", "CPU s", "CPU ms/1000 req"
    );
    for c in [1u32, 8, 64] {
        let ours = berth_bench(&url, &token, manifest.to_str().unwrap(), c, secs);
        std::thread::sleep(Duration::from_millis(500));
        let theirs = wrk(&url, &script, c, secs);
        std::thread::sleep(Duration::from_millis(500));
        for (name, r) in [("berth bench", &ours), ("wrk", &theirs)] {
            println!(
                "{c:<6} {name:<12} {:>10.1} {:>10.3} {:>12.2} {:>16.1}",
                r.rps,
                r.p50_ms,
                r.cpu_s,
                r.cpu_ms_per_1000()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
