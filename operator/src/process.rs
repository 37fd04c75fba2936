//! The `berth operator` process: start-up checks, HTTP endpoints, leader election and the
//! two controllers.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{Plugin, PluginBenchmark, PluginGrant};
use kube::Client;
use kube::api::ListParams;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::benchmark::{self, BenchmarkContext};
use crate::config::Config;
use crate::controller::{self, Backoff, Context, scoped};
use crate::grants::{self, GrantContext};
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::server::{self, Health};
use crate::supply_chain::SupplyChain;
use crate::{Error, Result};

/// Fails with a clear message when the Plugin, PluginGrant or PluginBenchmark CRD is not
/// installed. Lists in
/// the watched namespace when there is one, so a namespaced operator needs no cluster-wide
/// rights.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<()> {
    let probe = ListParams::default().limit(1);
    match scoped::<Plugin>(client, namespace).list(&probe).await {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(Error::CrdMissing {
                crd: "plugins.berth.dev",
            });
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    match scoped::<PluginGrant>(client, namespace).list(&probe).await {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(Error::CrdMissing {
                crd: "plugingrants.berth.dev",
            });
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    match scoped::<PluginBenchmark>(client, namespace)
        .list(&probe)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::CrdMissing {
            crd: "pluginbenchmarks.berth.dev",
        }),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// A future that resolves once `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the operator until SIGINT/SIGTERM, or until leadership is lost (then it exits with an
/// error so the pod restarts and competes again).
pub async fn run(config: Config) -> Result<()> {
    // Keys and flags are checked before anything connects: a bad key fails the start.
    let supply_chain = config
        .supply_chain()?
        .map(|o| Arc::new(SupplyChain::new(o)));
    match &supply_chain {
        Some(s) => info!(
            pull_secrets = ?s.options().pull_secrets,
            trusted_keys = s.options().policy.keys().len(),
            signed_plugins = ?s.options().policy.required(),
            "image tags are resolved to digests"
        ),
        None => warn!("--pin-digests=false: plugin images run by tag, unverified"),
    }
    let client = Client::try_default().await.map_err(Error::Connect)?;
    check_crds(&client, config.namespace.as_deref()).await?;
    let metrics = Arc::new(Metrics::new()?);
    let health = Arc::new(Health::default());
    let server = tokio::spawn(server::serve(
        config.listen,
        server::router(metrics.clone(), health.clone()),
    ));
    health.set_ready(true);
    info!(listen = %config.listen, "operator started; CRDs present");

    let identity = config
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("berth-operator-{}", std::process::id()));
    let lock = config.leader_elect.then(|| {
        LeaseLock::new(
            client.clone(),
            &config.lease_namespace,
            &config.lease_name,
            &identity,
            config.lease_duration(),
        )
    });
    let renew_every = (config.lease_duration() / 3).max(Duration::from_secs(1));

    let (stop_tx, stop_rx) = watch::channel(false);
    let lost_leadership = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let work = {
        let client = client.clone();
        let config = config.clone();
        let metrics = metrics.clone();
        let health = health.clone();
        let lock = lock.clone();
        let lost = lost_leadership.clone();
        let stop_tx = stop_tx.clone();
        let identity = identity.clone();
        async move {
            if let Some(lock) = &lock {
                info!(identity = %identity, lease = %config.lease_name, "waiting to lead");
                lock.acquire(renew_every).await;
                let lock = lock.clone();
                let stop_tx = stop_tx.clone();
                tokio::spawn(async move {
                    lock.hold(renew_every).await;
                    lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = stop_tx.send(true);
                });
            }
            health.set_leader(true);
            run_controllers(
                client,
                &config,
                metrics,
                supply_chain,
                Some(identity),
                stop_rx,
            )
            .await;
        }
    };
    let mut work = tokio::spawn(work);
    let mut server = server;
    tokio::select! {
        _ = shutdown_signal() => {
            info!("stopping");
            let _ = stop_tx.send(true);
            let _ = (&mut work).await;
        }
        _ = &mut work => {}
        result = &mut server => {
            let _ = stop_tx.send(true);
            return match result {
                Ok(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
    }
    health.set_leader(false);
    if let Some(lock) = &lock
        && !lost_leadership.load(std::sync::atomic::Ordering::SeqCst)
        && let Err(e) = lock.release().await
    {
        warn!(error = %e, "could not release the leader Lease");
    }
    if lost_leadership.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::LeadershipLost {
            lease: format!("{}/{}", config.lease_namespace, config.lease_name),
        });
    }
    Ok(())
}

/// Runs the Plugin, PluginGrant and PluginBenchmark controllers until `stop` turns true.
pub async fn run_controllers(
    client: Client,
    config: &Config,
    metrics: Arc<Metrics>,
    supply_chain: Option<Arc<SupplyChain>>,
    instance: Option<String>,
    stop: watch::Receiver<bool>,
) {
    let (store_tx, store_rx) = oneshot::channel();
    let (bench_store_tx, bench_store_rx) = oneshot::channel();
    let namespace = config.namespace.as_deref();
    let bench_instance = instance.clone();
    let plugin_controller = controller::run(
        client.clone(),
        namespace,
        config.concurrency,
        |plugins, grants| {
            let _ = store_tx.send(plugins.clone());
            let _ = bench_store_tx.send(plugins.clone());
            Arc::new(
                Context::new(
                    client.clone(),
                    metrics.clone(),
                    config.auto_approve_tier,
                    config.render_options(),
                    plugins,
                    grants,
                    instance,
                )
                .with_supply_chain(supply_chain),
            )
        },
        stopped(stop.clone()),
    );
    let grant_controller = async {
        let Ok(plugins) = store_rx.await else { return };
        let ctx = Arc::new(GrantContext {
            client: client.clone(),
            metrics: metrics.clone(),
            plugins,
            backoff: Backoff::default(),
            now: jiff::Timestamp::now,
        });
        grants::run(client.clone(), namespace, ctx, stopped(stop.clone())).await;
    };
    let benchmark_controller = async {
        let Ok(plugins) = bench_store_rx.await else {
            return;
        };
        let ctx = Arc::new(BenchmarkContext::new(
            client.clone(),
            metrics.clone(),
            plugins,
            config.bench_options(),
            bench_instance,
        ));
        benchmark::run(client.clone(), namespace, ctx, stopped(stop.clone())).await;
    };
    futures::join!(plugin_controller, grant_controller, benchmark_controller);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
