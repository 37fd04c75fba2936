//! A pool of pre-created plugin networks (`berth dev up --network-pool N`), so that an
//! install does not wait for a network to be created and the gateway to join it.
//!
//! A pool network has the shape of any plugin network (internal, no host address, decision
//! 0003), the instance's labels and [`POOL_LABEL`], and the gateway already joined. An
//! install takes one and the pool is filled again in the background. A network is given to
//! one plugin only, ever: the store records which (`dev.network.<plugin>` and its reverse),
//! it is never handed back, and it goes with the plugin's other leftovers when the plugin is
//! uninstalled. Free pool networks are adopted by the next `dev up` and removed by `dev
//! down` like every other object of the instance.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{Engine, GATEWAY_ALIAS, Supervisor};

/// Label marking a network created for the pool.
pub const POOL_LABEL: &str = "berth.dev/pool";

/// After a failed creation, how long before the pool is filled again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Store setting: the network given to `plugin`.
fn network_key(plugin: &str) -> String {
    format!("dev.network.{plugin}")
}

/// Store setting: the plugin a pool network was given to.
fn owner_key(network: &str) -> String {
    format!("dev.network-owner.{network}")
}

/// A created pool network (or why it could not be), as the filling task reports it.
pub(super) struct Filled {
    pub network: String,
    /// The gateway container it was joined to.
    pub gateway_id: String,
    pub result: Result<(), String>,
}

/// The supervisor's pool.
#[derive(Default)]
pub(super) struct Pool {
    /// Networks ready to be given, the gateway joined.
    pub free: Vec<String>,
    /// Creations under way.
    pub filling: usize,
    /// Set after a failed creation: no new one before then.
    pub paused_until: Option<Instant>,
    pub next: u64,
    /// Plugins that have a network of their own name (made before the pool, or when it was
    /// empty): they keep it, so that no plugin ever has two.
    pub own: HashSet<String>,
}

impl<E: Engine> Supervisor<E> {
    /// The network `plugin` runs on: the pool network given to it, else its own name.
    pub(super) fn network_of(&self, plugin: &str) -> String {
        if let Some(n) = self.plugins.get(plugin).and_then(|r| r.network.clone()) {
            return n;
        }
        self.store
            .setting(&network_key(plugin))
            .ok()
            .flatten()
            .unwrap_or_else(|| self.instance.plugin_network(plugin))
    }

    /// Whether a network was recorded for `plugin` (given from the pool).
    pub(super) fn recorded_network(&self, plugin: &str) -> Option<String> {
        self.store.setting(&network_key(plugin)).ok().flatten()
    }

    /// Takes a free pool network for `plugin` and records it; `None` when the pool is empty
    /// or the record cannot be written.
    pub(super) fn take_pool_network(&mut self, plugin: &str) -> Option<String> {
        let network = self.pool.free.pop()?;
        let recorded = self
            .store
            .set_setting(&owner_key(&network), plugin)
            .and_then(|()| self.store.set_setting(&network_key(plugin), &network));
        match recorded {
            Ok(()) => Some(network),
            Err(e) => {
                let _ = self.store.delete_setting(&owner_key(&network));
                self.pool.free.push(network);
                self.notice(
                    Some(plugin),
                    format!("cannot record a pool network ({e}); creating one"),
                );
                None
            }
        }
    }

    /// Forgets the network record of an uninstalled plugin whose leftovers are gone.
    pub(super) fn forget_network(&self, plugin: &str, network: &str) {
        let _ = self.store.delete_setting(&network_key(plugin));
        let _ = self.store.delete_setting(&owner_key(network));
    }

    /// Starts creating pool networks until free and under way make the configured size.
    pub(super) fn fill_pool(&mut self) {
        let size = self.config.network_pool;
        if size == 0 || self.engine.is_some() || self.gateway.down.is_some() {
            return;
        }
        if self.pool.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        while self.pool.free.len() + self.pool.filling < size {
            self.pool.filling += 1;
            self.pool.next += 1;
            // `_` cannot appear in a plugin name, so no plugin's own network has this name.
            let network = format!(
                "berth-{}_pool-{}-{}",
                self.instance.id(),
                jiff::Timestamp::now().as_millisecond(),
                self.pool.next
            );
            let mut labels = self.instance.labels();
            labels.insert(POOL_LABEL.into(), "true".into());
            let docker = self.docker.clone();
            let gateway_id = self.gateway_id.clone();
            let done = self.pool_tx.clone();
            tokio::spawn(async move {
                let result = async {
                    docker.ensure_plugin_network(&network, labels).await?;
                    docker
                        .connect_network(&network, &gateway_id, &[GATEWAY_ALIAS.to_owned()])
                        .await
                }
                .await
                .map_err(|e| e.to_string());
                let _ = done.send(Filled {
                    network,
                    gateway_id,
                    result,
                });
            });
        }
    }

    /// A pool network is created (or not).
    pub(super) async fn pool_filled(&mut self, filled: Filled) {
        self.pool.filling = self.pool.filling.saturating_sub(1);
        match filled.result {
            Ok(()) => {
                if filled.gateway_id != self.gateway_id {
                    // The gateway was created again meanwhile: the new one joins it.
                    let _ = self
                        .docker
                        .connect_network(
                            &filled.network,
                            &self.gateway_id,
                            &[GATEWAY_ALIAS.to_owned()],
                        )
                        .await;
                }
                self.pool.free.push(filled.network);
            }
            Err(e) => {
                self.pool.paused_until = Some(Instant::now() + RETRY_AFTER);
                self.notice(
                    None,
                    format!(
                        "cannot create a network for the pool ({e}); installs create their own"
                    ),
                );
            }
        }
    }

    /// At start: free pool networks join the pool (the gateway may be new), networks given
    /// to plugins no longer installed are left over, then the pool is filled.
    pub(super) async fn adopt_pool(&mut self, installed: &HashSet<&str>) {
        let Ok(networks) = self.docker.pool_networks(&self.instance).await else {
            return;
        };
        for network in networks {
            match self.store.setting(&owner_key(&network)).ok().flatten() {
                None if self.pool.free.len() < self.config.network_pool => {
                    let joined = self
                        .docker
                        .connect_network(&network, &self.gateway_id, &[GATEWAY_ALIAS.to_owned()])
                        .await;
                    if joined.is_ok() {
                        self.pool.free.push(network);
                    }
                }
                // More free networks than the pool wants (it was made smaller).
                None => {
                    let _ = self.docker.remove_network(&network).await;
                }
                Some(plugin) if !installed.contains(plugin.as_str()) => {
                    self.leftovers.insert(plugin, (Instant::now(), 0));
                }
                Some(_) => {}
            }
        }
    }

    /// After the gateway container was created again: it joins every free pool network.
    pub(super) async fn rejoin_pool(&mut self) {
        let mut joined = Vec::new();
        for network in std::mem::take(&mut self.pool.free) {
            if self
                .docker
                .connect_network(&network, &self.gateway_id, &[GATEWAY_ALIAS.to_owned()])
                .await
                .is_ok()
            {
                joined.push(network);
            }
        }
        self.pool.free = joined;
    }
}
