//! What resolution and signature verification add to an install, side by side with the
//! check an install of a local image makes (the engine reads the image by its tag):
//!
//! - `local`: `inspect_image(tag)` on the engine — the baseline;
//! - `pinned, warm`: resolve the tag on the registry (one HEAD), read the image by digest
//!   from the engine, verify with the verdict cached by digest, and check the installed
//!   manifest against the signed label — what every later pass of the supervisor does;
//! - `pinned, cold`: the same with an empty cache (a new digest): the signature manifest
//!   and payload are fetched and checked.
//!
//! The registry is Debian's `docker-registry` on 127.0.0.1; the three are run in turn,
//! `BERTH_BENCH_RUNS` rounds (default 50). `cargo bench -p berth --bench supply` (needs
//! Docker and docker-registry; builds the calculator image).

use std::time::Instant;

use berth_api::approval::beyond_label;
use berth_docker::DockerClient;
use berth_trust::testing::TestRegistry;
use berth_trust::{Policy, Signer, TrustedKey, Verifier, keys};

#[path = "../tests/support/mod.rs"]
mod support;

use support::dev::build;
use support::repo;

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = support::wrk::runs(50);
    build(&["build", "plugin-images/calculator"]);
    let registry = TestRegistry::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tag = "berth/calculator:0.1.0";
    let remote = format!("{}/berth/calculator:0.1.0", registry.addr);
    let plugin = berth_api::load::load_single_plugin(
        "examples/calculator.yaml",
        &std::fs::read(repo().join("examples/calculator.yaml")).unwrap(),
    )
    .unwrap();
    let pair = keys::generate(b"").unwrap();
    let policy = Policy::new(
        vec![TrustedKey::from_pem("release.pub", &pair.public_pem).unwrap()],
        vec!["*".into()],
    )
    .unwrap();
    let (mut local, mut warm, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let docker = DockerClient::connect().await.unwrap();
        docker.tag_image(tag, &remote).await.unwrap();
        docker.push_image(&remote, None, |_| {}).await.unwrap();
        let signer = keys::signer("release.key", pair.private_pem.as_bytes(), b"").unwrap();
        Signer::new(registry.access())
            .sign(&remote, signer)
            .await
            .unwrap();
        let warm_verifier = Verifier::new(registry.access());
        let check = |verifier: Verifier| {
            let docker = docker.clone();
            let remote = remote.clone();
            let policy = policy.clone();
            let plugin = plugin.clone();
            async move {
                let started = Instant::now();
                let resolved = verifier.registry().resolve(&remote).await.unwrap();
                let info = docker.inspect_image(&resolved.pinned).await.unwrap();
                verifier.verify(&resolved, &policy).await.unwrap();
                let label = info.labels.get("dev.berth.manifest").map(String::as_str);
                assert!(
                    beyond_label(&plugin, &resolved.pinned, label)
                        .unwrap()
                        .is_empty()
                );
                started.elapsed().as_secs_f64() * 1000.0
            }
        };
        // One warm-up of each, not counted.
        docker.inspect_image(tag).await.unwrap();
        check(warm_verifier.clone()).await;
        for _ in 0..runs {
            let started = Instant::now();
            docker.inspect_image(tag).await.unwrap();
            local.push(started.elapsed().as_secs_f64() * 1000.0);
            warm.push(check(warm_verifier.clone()).await);
            cold.push(check(Verifier::new(registry.access())).await);
        }
    });
    let (l50, l90) = quantiles(local);
    let (w50, w90) = quantiles(warm);
    let (c50, c90) = quantiles(cold);
    println!("Supply-chain checks per install, {runs} rounds side by side (ms)\n");
    println!("| check | p50 | p90 | added p50 over local |");
    println!("|---|---|---|---|");
    println!("| local image by tag (baseline) | {l50:.2} | {l90:.2} | — |");
    println!(
        "| resolved + verified, warm cache | {w50:.2} | {w90:.2} | +{:.2} |",
        w50 - l50
    );
    println!(
        "| resolved + verified, cold cache | {c50:.2} | {c90:.2} | +{:.2} |",
        c50 - l50
    );
    println!(
        "\ntarget: warm p50 ≤ 50 ms — {}",
        if w50 <= 50.0 { "met" } else { "missed" }
    );
}
