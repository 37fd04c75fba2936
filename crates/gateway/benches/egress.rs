//! The egress proxy's cost: the same upstream reached directly and through the proxy, side
//! by side in one run, alternating in blocks.
//!
//! - Time to first byte of a small `GET` (a 13-byte answer), each request on a new
//!   connection, as a plugin's first call to an API: directly, and as an absolute-form
//!   request through the proxy (credential check, name resolution through a static map,
//!   grant check, connect, forward).
//! - Throughput of a 100 MB download: directly, and through a `CONNECT` tunnel — the
//!   proxy as it runs (bytes moved by `splice(2)`), and the same proxy copying through
//!   user-space buffers (`EgressSettings::splice_tunnels` off), alternating.
//!
//! Upstream, proxy and client each get their own Tokio runtime and threads, as separate
//! processes would: upstream and client one thread each, the proxy a 2-worker runtime like
//! `berth gateway`'s. Where they meet:
//!
//! - `BENCH_TOPOLOGY=loopback` (default): everything on 127.0.0.1, so the proxy runs with
//!   a deny set that leaves loopback open (the only difference from production settings).
//! - `BENCH_TOPOLOGY=namespaces` (root; `ip` from iproute2): the local-mode topology, as
//!   Docker builds it — the upstream, the gateway (proxy) and the plugin (client) each in
//!   their own network namespace, joined by veth pairs: plugin ↔ gateway, gateway ↔
//!   upstream, and, for the direct baseline only, plugin ↔ upstream. Addresses are in
//!   10.251.0.0/16, so the proxy allows private ranges (`--egress-allow-private`). The
//!   namespaces are removed at the end. `BENCH_LINK_RATE` (e.g. `1gbit`, a `tc` rate) caps
//!   what the upstream sends on both of its links with a token bucket (`tbf`), as a
//!   destination behind a real network link would: without it, every path here is limited
//!   by the CPU, not by a network.
//!
//! Run in release mode: `cargo bench -p berth-gateway --bench egress`. `BENCH_REQUESTS` sets the number of
//! small requests per path (default 2000), `BENCH_MB` the download size (default 100),
//! `BENCH_DOWNLOADS` the downloads per path (default 5).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use berth_api::{EgressRule, Plugin};
use berth_gateway::egress::{DenySet, EgressPolicy, StaticResolver};
use berth_gateway::{
    Auditor, Config, EgressProxy, EgressSettings, Gateway, Metrics, PluginEntry, StaticDirectory,
    StoreSink, TokenStore,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod roles;
use roles::{enter_netns, role_runtime_in};

const TOKEN: &str = "bench-plugin-token";
const SMALL_BODY: &[u8] = b"{\"ok\": true}\n";

fn main() {
    let requests: usize = env_or("BENCH_REQUESTS", 2000);
    let megabytes: usize = env_or("BENCH_MB", 100);
    let namespaces = match std::env::var("BENCH_TOPOLOGY").as_deref() {
        Ok("namespaces") => Some(Namespaces::create()),
        Ok("loopback") | Err(_) => None,
        Ok(other) => panic!("BENCH_TOPOLOGY={other}: use loopback or namespaces"),
    };
    let places = namespaces
        .as_ref()
        .map_or_else(Places::loopback, Namespaces::places);
    let netns = |role: &str| namespaces.as_ref().map(|n| n.path(role));
    let upstream = role_runtime_in("bench-upstream", 1, netns("up"));
    let proxy = role_runtime_in("bench-proxy", 2, netns("gw"));
    // The client runs on this thread.
    if let Some(path) = netns("cl") {
        enter_netns(&path);
    }
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    client.block_on(run(requests, megabytes, &places, upstream, proxy));
    drop(namespaces);
}

/// Where each role binds and whom it reaches at which address.
#[derive(Clone, Copy)]
struct Places {
    name: &'static str,
    /// The upstream's listeners.
    upstream_bind: IpAddr,
    /// The upstream as the client reaches it directly (the baseline).
    upstream_from_client: IpAddr,
    /// The upstream as the proxy reaches it (what the test names resolve to).
    upstream_from_proxy: IpAddr,
    /// The proxy's listener, which the client reaches.
    proxy_bind: IpAddr,
    /// Whether the proxy must allow private ranges to reach the upstream.
    allow_private: bool,
}

impl Places {
    fn loopback() -> Self {
        let lo = IpAddr::from([127, 0, 0, 1]);
        Self {
            name: "127.0.0.1",
            upstream_bind: lo,
            upstream_from_client: lo,
            upstream_from_proxy: lo,
            proxy_bind: lo,
            allow_private: false,
        }
    }
}

/// Three network namespaces (`up`, `gw`, `cl`) joined by veth pairs, removed on drop.
struct Namespaces {
    prefix: String,
}

impl Namespaces {
    /// (namespace, interface, address/prefix, peer namespace, peer interface, peer address)
    const LINKS: [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ); 3] = [
        (
            "gw",
            "to-up",
            "10.251.1.1/30",
            "up",
            "to-gw",
            "10.251.1.2/30",
        ),
        (
            "cl",
            "to-gw",
            "10.251.2.1/30",
            "gw",
            "to-cl",
            "10.251.2.2/30",
        ),
        (
            "cl",
            "to-up",
            "10.251.3.1/30",
            "up",
            "to-cl",
            "10.251.3.2/30",
        ),
    ];

    fn create() -> Self {
        let namespaces = Self {
            prefix: format!("berth-bench-{}", std::process::id()),
        };
        for role in ["up", "gw", "cl"] {
            ip(&["netns", "add", &namespaces.name(role)]);
            ip(&["-n", &namespaces.name(role), "link", "set", "lo", "up"]);
        }
        let rate = std::env::var("BENCH_LINK_RATE").ok();
        for (a, a_if, a_addr, b, b_if, b_addr) in Self::LINKS {
            let (a_ns, b_ns) = (namespaces.name(a), namespaces.name(b));
            ip(&[
                "link", "add", a_if, "netns", &a_ns, "type", "veth", "peer", "name", b_if, "netns",
                &b_ns,
            ]);
            for (ns, interface, address) in [(&a_ns, a_if, a_addr), (&b_ns, b_if, b_addr)] {
                ip(&["-n", ns, "addr", "add", address, "dev", interface]);
                ip(&["-n", ns, "link", "set", interface, "up"]);
                if let Some(rate) = rate.as_deref().filter(|_| ns.ends_with("-up")) {
                    command(
                        "ip",
                        &[
                            "netns", "exec", ns, "tc", "qdisc", "add", "dev", interface, "root",
                            "tbf", "rate", rate, "burst", "256kb", "latency", "50ms",
                        ],
                    );
                }
            }
        }
        namespaces
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn path(&self, role: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(self.name(role))
    }

    fn places(&self) -> Places {
        Places {
            name: if std::env::var_os("BENCH_LINK_RATE").is_some() {
                "network namespaces joined by veth pairs, the upstream's links rate-limited"
            } else {
                "network namespaces joined by veth pairs"
            },
            upstream_bind: IpAddr::from([0, 0, 0, 0]),
            upstream_from_client: IpAddr::from([10, 251, 3, 2]),
            upstream_from_proxy: IpAddr::from([10, 251, 1, 2]),
            proxy_bind: IpAddr::from([10, 251, 2, 2]),
            allow_private: true,
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so their peers.
        for role in ["up", "gw", "cl"] {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name(role)])
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    command("ip", args);
}

fn command(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    assert!(status.success(), "{program} {} failed", args.join(" "));
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Answers every request on a connection with a 13-byte body, then closes.
async fn small_server(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            if read_head(&mut socket).await.is_none() {
                return;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                SMALL_BODY.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.write_all(SMALL_BODY).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Sends `bytes` on every connection as soon as it is accepted, then closes.
async fn bulk_server(listener: TcpListener, bytes: usize) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let chunk = vec![0u8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if socket.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
            let _ = socket.shutdown().await;
        });
    }
}

/// Reads up to the end of an HTTP head; returns what followed it.
async fn read_head(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.split_off(end + 4));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
}

fn plugin() -> Plugin {
    serde_yaml::from_str(
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: fetcher}\nspec: {image: berth/fetcher:0.1.0, version: 0.1.0}\n",
    )
    .expect("manifest")
}

fn host_rule(host: &str, port: u16) -> EgressRule {
    EgressRule {
        host: Some(host.into()),
        cidr: None,
        ports: vec![port],
    }
}

async fn start_proxy(places: Places, small: u16, bulk: u16, splice: bool) -> SocketAddr {
    let entry = PluginEntry::new(plugin())
        .with_token(TOKEN)
        .with_granted_egress(vec![
            host_rule("api.test", small),
            host_rule("bulk.test", bulk),
        ]);
    let directory = Arc::new(StaticDirectory::new([entry]));
    let metrics = Metrics::new();
    let store = Arc::new(berth_store::Store::open_in_memory().expect("store"));
    let (auditor, writer) = Auditor::start(vec![Arc::new(StoreSink::new(store))], metrics.clone());
    std::mem::forget(writer);
    let gateway = Gateway::new(
        &Config::default(),
        directory,
        TokenStore::new(),
        metrics,
        auditor,
    );
    let upstream = [places.upstream_from_proxy];
    let resolver = StaticResolver::new()
        .with("api.test", &upstream)
        .with("bulk.test", &upstream);
    let settings = EgressSettings {
        splice_tunnels: splice,
        ..EgressSettings::new(EgressPolicy::new(DenySet::empty(), places.allow_private))
    };
    let proxy = EgressProxy::with_resolver(gateway, settings, Arc::new(resolver));
    let listener = TcpListener::bind((places.proxy_bind, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    addr
}

fn credential() -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("fetcher:{TOKEN}"));
    format!("Basic {encoded}")
}

/// One small GET on a new connection to `connect`, sending `request`; the time to the
/// first byte of the answer, after checking the whole answer is a 200 with the body.
async fn first_byte(connect: SocketAddr, request: &[u8]) -> Duration {
    let start = Instant::now();
    let mut socket = TcpStream::connect(connect).await.expect("connect");
    let _ = socket.set_nodelay(true);
    socket.write_all(request).await.expect("send");
    let mut answer = Vec::with_capacity(512);
    let mut first = [0u8; 1];
    socket.read_exact(&mut first).await.expect("first byte");
    let took = start.elapsed();
    answer.push(first[0]);
    socket.read_to_end(&mut answer).await.expect("answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(SMALL_BODY),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    took
}

/// Downloads everything `connect` sends (after a `CONNECT` when `tunnel` is given).
async fn download(connect: SocketAddr, tunnel: Option<&str>, expected: usize) -> Duration {
    let start = Instant::now();
    let mut socket = TcpStream::connect(connect).await.expect("connect");
    let mut received = 0;
    if let Some(target) = tunnel {
        let request = format!(
            "CONNECT {target} HTTP/1.1\r\nhost: {target}\r\nproxy-authorization: {}\r\n\r\n",
            credential()
        );
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.expect("tunnel answer");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = socket.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        received += n;
    }
    assert_eq!(received, expected, "bytes received");
    start.elapsed()
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn run(
    requests: usize,
    megabytes: usize,
    places: &Places,
    upstream: tokio::runtime::Handle,
    proxy_runtime: tokio::runtime::Handle,
) {
    let bytes = megabytes << 20;
    // Bound on the upstream's own runtime, so the sockets are in its namespace.
    let bind = places.upstream_bind;
    let (small, bulk) = upstream
        .spawn(async move {
            let small = TcpListener::bind((bind, 0)).await.expect("bind");
            let bulk = TcpListener::bind((bind, 0)).await.expect("bind");
            (small, bulk)
        })
        .await
        .expect("listeners");
    let small_addr = SocketAddr::new(
        places.upstream_from_client,
        small.local_addr().expect("addr").port(),
    );
    let bulk_addr = SocketAddr::new(
        places.upstream_from_client,
        bulk.local_addr().expect("addr").port(),
    );
    // The servers run for the whole process; their join handles are not needed.
    drop(upstream.spawn(small_server(small)));
    drop(upstream.spawn(bulk_server(bulk, bytes)));
    let proxy = proxy_runtime
        .spawn(start_proxy(
            *places,
            small_addr.port(),
            bulk_addr.port(),
            true,
        ))
        .await
        .expect("proxy started");
    // The same proxy with tunnels copied through user-space buffers, for comparison.
    let buffered = proxy_runtime
        .spawn(start_proxy(
            *places,
            small_addr.port(),
            bulk_addr.port(),
            false,
        ))
        .await
        .expect("proxy started");

    let direct_request = b"GET /small HTTP/1.1\r\nhost: api.test\r\nconnection: close\r\n\r\n";
    let proxied_request = format!(
        "GET http://api.test:{}/small HTTP/1.1\r\nhost: api.test:{}\r\nproxy-authorization: {}\r\nconnection: close\r\n\r\n",
        small_addr.port(),
        small_addr.port(),
        credential()
    );

    // Warm-up, then blocks of 100 alternating between the paths.
    for _ in 0..50 {
        first_byte(small_addr, direct_request).await;
        first_byte(proxy, proxied_request.as_bytes()).await;
    }
    let mut direct = Vec::with_capacity(requests);
    let mut proxied = Vec::with_capacity(requests);
    while direct.len() < requests {
        for _ in 0..100.min(requests - direct.len()) {
            direct.push(first_byte(small_addr, direct_request).await);
        }
        for _ in 0..100.min(requests - proxied.len()) {
            proxied.push(first_byte(proxy, proxied_request.as_bytes()).await);
        }
    }
    direct.sort();
    proxied.sort();

    println!(
        "berth egress proxy benchmark: {}, {} cores; proxy on a 2-worker runtime",
        places.name,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!(
        "time to first byte, small GET on a new connection ({requests} per path, alternating blocks of 100)"
    );
    println!("  path       p50 us    p90 us    p99 us");
    for (name, s) in [("direct", &direct), ("proxy", &proxied)] {
        println!(
            "  {name:<8} {:>8.1}  {:>8.1}  {:>8.1}",
            quantile(s, 0.5),
            quantile(s, 0.9),
            quantile(s, 0.99)
        );
    }
    let added = quantile(&proxied, 0.5) - quantile(&direct, 0.5);
    println!(
        "  added by the proxy at p50: {added:+.1} us [{}] (target <= 1000 us)",
        if added <= 1000.0 { "met" } else { "MISSED" }
    );

    let target = format!("bulk.test:{}", bulk_addr.port());
    let _ = download(bulk_addr, None, bytes).await;
    let _ = download(proxy, Some(&target), bytes).await;
    let _ = download(buffered, Some(&target), bytes).await;
    let runs = env_or("BENCH_DOWNLOADS", 5);
    let (mut direct_secs, mut spliced_secs, mut buffered_secs) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        direct_secs.push(download(bulk_addr, None, bytes).await.as_secs_f64());
        spliced_secs.push(download(proxy, Some(&target), bytes).await.as_secs_f64());
        buffered_secs.push(download(buffered, Some(&target), bytes).await.as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mb = megabytes as f64;
    let d = median(&mut direct_secs);
    println!();
    println!("{megabytes} MB download, {runs} runs each alternating (median; best in brackets)");
    println!(
        "  direct                      {:>8.1} MB/s  ({:.1})",
        mb / d,
        mb / best(&direct_secs)
    );
    for (name, secs) in [
        ("CONNECT tunnel, splice", &mut spliced_secs),
        ("CONNECT tunnel, buffered", &mut buffered_secs),
    ] {
        let t = median(secs);
        let ratio = d / t * 100.0;
        println!(
            "  {name:<26}  {:>8.1} MB/s  ({:.1})  {ratio:.0}% of direct [{}] (target >= 80%)",
            mb / t,
            mb / best(secs),
            if ratio >= 80.0 { "met" } else { "MISSED" }
        );
    }
}
