//! Gateway overhead: a no-op plugin called directly and through the gateway, side by side
//! in one run, at concurrency 1 and 32; then hook fan-out of a 1 KB event to 20 observers.
//!
//! Load generator, gateway and plugins talk over 127.0.0.1 and share the machine's cores,
//! as on a small host. Each role has its own Tokio runtime on its own threads, as separate
//! processes would: the load generator and the plugins one thread each, the gateway a
//! multi-thread runtime like `berth gateway`'s. Run in release mode:
//! `cargo bench -p berth-gateway`. `BENCH_SECS` sets the length of each measured phase
//! (default 3); `BENCH_GATEWAY_WORKERS` the gateway's threads (default: the core count).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use berth_gateway::{
    Auditor, Config, Endpoint, Gateway, Metrics, PluginEntry, Scope, StaticDirectory, StoreSink,
    TokenStore,
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

mod roles;
use roles::role_runtime;

const TOKEN: &str = "bench-token";
type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let workers: usize = std::env::var("BENCH_GATEWAY_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(cores);
    let plugins = role_runtime("bench-plugins", 1);
    let gateway = role_runtime("bench-gateway", workers);
    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("gateway runtime: {workers} worker thread(s); plugins and load generator: 1 each");
    load.block_on(run(Duration::from_secs_f64(secs), plugins, gateway));
}

async fn spawn(on: &tokio::runtime::Handle, app: Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    on.spawn(async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

fn noop_plugin() -> Router {
    Router::new()
        .route(
            "/v1/invoke/{capability}",
            post(|| async { ([("content-type", "application/json")], "{}") }),
        )
        .route(
            "/v1/hooks/{hook}",
            post(|| async { StatusCode::NO_CONTENT }),
        )
}

fn manifest(name: &str, spec: &str) -> berth_api::Plugin {
    serde_yaml::from_str(&format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  image: x\n  version: 1.0.0\n  {spec}\n"
    ))
    .expect("manifest")
}

#[derive(Clone)]
struct Target {
    client: HttpClient,
    uri: String,
    body: Bytes,
    token: Option<&'static str>,
}

impl Target {
    async fn call(&self) {
        let mut request = Request::post(&self.uri).header("content-type", "application/json");
        if let Some(t) = self.token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = self
            .client
            .request(request.body(Full::new(self.body.clone())).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let _ = response.into_body().collect().await.expect("body");
        assert!(status.is_success(), "status {status}");
    }
}

struct Sample {
    latencies: Vec<u64>,
    elapsed: Duration,
}

impl Sample {
    fn quantile(&mut self, q: f64) -> f64 {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `concurrency` closed loops against `target` for `duration`.
async fn measure(target: &Target, concurrency: usize, duration: Duration) -> Sample {
    let start = Instant::now();
    let stop = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < stop {
                let t = Instant::now();
                target.call().await;
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    Sample {
        latencies,
        elapsed: start.elapsed(),
    }
}

async fn run(
    duration: Duration,
    plugins: tokio::runtime::Handle,
    gateway_runtime: tokio::runtime::Handle,
) {
    let plugin = spawn(&plugins, noop_plugin()).await;
    let mut observers = Vec::new();
    for i in 0..20 {
        let addr = spawn(&plugins, noop_plugin()).await;
        observers.push(
            PluginEntry::new(manifest(
                &format!("observer-{i:02}"),
                "hooks: [{name: file_changed, mode: observe}]",
            ))
            .with_endpoints(vec![
                Endpoint::parse(&format!("http://{addr}")).expect("url"),
            ]),
        );
    }
    let mut entries = vec![
        PluginEntry::new(manifest(
            "noop",
            "capabilities: [{name: run, input: {type: object}}]\n  resources: {maxConcurrency: 256}",
        ))
        .with_endpoints(vec![Endpoint::parse(&format!("http://{plugin}")).expect("url")]),
    ];
    entries.extend(observers);
    let gateway_addr = gateway_runtime
        .spawn(async move {
            let directory = Arc::new(StaticDirectory::new(entries));
            let mut tokens = TokenStore::new();
            tokens.insert(TOKEN, "bench", vec![Scope::Admin]);
            let metrics = Metrics::new();
            let store = Arc::new(berth_store::Store::open_in_memory().expect("store"));
            let (auditor, writer) =
                Auditor::start(vec![Arc::new(StoreSink::new(store))], metrics.clone());
            std::mem::forget(writer);
            let gateway = Gateway::new(&Config::default(), directory, tokens, metrics, auditor);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(berth_gateway::serve(
                listener,
                gateway,
                Duration::from_secs(1),
                std::future::pending(),
            ));
            addr
        })
        .await
        .expect("gateway started");

    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build({
            let mut c = HttpConnector::new();
            c.set_nodelay(true);
            c
        });
    let direct = Target {
        client: client.clone(),
        uri: format!("http://{plugin}/v1/invoke/run"),
        body: Bytes::from_static(b"{}"),
        token: None,
    };
    let through = Target {
        client: client.clone(),
        uri: format!("http://{gateway_addr}/v1/plugins/noop/invoke/run"),
        body: Bytes::from_static(b"{}"),
        token: Some(TOKEN),
    };

    println!(
        "berth-gateway benchmark: no-op plugin, 127.0.0.1, {} cores",
        cores()
    );
    println!(
        "each phase {:.1}s, direct and gateway alternated twice per concurrency\n",
        duration.as_secs_f64()
    );
    println!(
        "{:>4}  {:<8}  {:>10}  {:>10}  {:>12}",
        "conc", "path", "p50 us", "p99 us", "req/s"
    );
    let mut results = Vec::new();
    for concurrency in [1usize, 32] {
        // Warm up both paths (connections, schema compilation, allocator).
        measure(&direct, concurrency, Duration::from_millis(300)).await;
        measure(&through, concurrency, Duration::from_millis(300)).await;
        let half = duration / 2;
        let mut d = measure(&direct, concurrency, half).await;
        let mut g = measure(&through, concurrency, half).await;
        let d2 = measure(&direct, concurrency, half).await;
        let g2 = measure(&through, concurrency, half).await;
        d.latencies.extend(d2.latencies);
        d.elapsed += d2.elapsed;
        g.latencies.extend(g2.latencies);
        g.elapsed += g2.elapsed;
        let (dp50, dp99, dt) = (d.quantile(0.5), d.quantile(0.99), d.throughput());
        let (gp50, gp99, gt) = (g.quantile(0.5), g.quantile(0.99), g.throughput());
        println!(
            "{concurrency:>4}  {:<8}  {dp50:>10.1}  {dp99:>10.1}  {dt:>12.0}",
            "direct"
        );
        println!(
            "{concurrency:>4}  {:<8}  {gp50:>10.1}  {gp99:>10.1}  {gt:>12.0}",
            "gateway"
        );
        results.push((concurrency, gp50 - dp50, gp99 - dp99, gt / dt));
    }

    println!("\nadded by the gateway (targets: p50 <= 100 us, p99 <= 400 us, throughput >= 50%)");
    for (c, p50, p99, ratio) in &results {
        println!(
            "  concurrency {c:>2}: p50 +{p50:.1} us [{}]  p99 +{p99:.1} us [{}]  throughput {:.0}% of direct [{}]",
            verdict(*p50 <= 100.0),
            verdict(*p99 <= 400.0),
            ratio * 100.0,
            verdict(*ratio >= 0.5)
        );
    }

    let event = Bytes::from(format!(
        r#"{{"event":{{"path":"/workspace/src/main.rs","data":"{}"}}}}"#,
        "x".repeat(1024 - 50)
    ));
    assert!((1000..1100).contains(&event.len()));
    let fanout = Target {
        client,
        uri: format!("http://{gateway_addr}/v1/hooks/file_changed"),
        body: event,
        token: Some(TOKEN),
    };
    measure(&fanout, 1, Duration::from_millis(300)).await;
    let mut f = measure(&fanout, 1, duration).await;
    let (fp50, fp99) = (f.quantile(0.5), f.quantile(0.99));
    println!(
        "\nhook fan-out, 1 KB event to 20 observe subscribers (target p99 <= 3 ms): p50 {:.3} ms, p99 {:.3} ms [{}], {:.0} events/s",
        fp50 / 1000.0,
        fp99 / 1000.0,
        verdict(fp99 <= 3000.0),
        f.throughput()
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
