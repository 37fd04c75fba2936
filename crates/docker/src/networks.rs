//! Networks of an instance, created idempotently.
//!
//! Each plugin sits alone on an internal bridge without a host address (decision 0003), so it
//! reaches neither the host, nor the outside, nor another plugin; the gateway joins every
//! plugin network plus one ordinary "edge" network from which it publishes its port on
//! 127.0.0.1 only.

use std::collections::HashMap;

use bollard::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptionsBuilder};

use crate::client::DockerClient;
use crate::error::{Error, Result};

/// Bridge option that leaves the bridge without an IPv4 address: containers on it have no
/// route to any host address.
pub const INHIBIT_IPV4_OPTION: &str = "com.docker.network.bridge.inhibit_ipv4";
/// Bridge option giving the default host address of published ports.
pub const HOST_BINDING_IPV4_OPTION: &str = "com.docker.network.bridge.host_binding_ipv4";

/// What an instance network must look like.
struct NetworkShape {
    internal: bool,
    options: HashMap<String, String>,
}

impl NetworkShape {
    fn plugin() -> Self {
        Self {
            internal: true,
            options: HashMap::from([(INHIBIT_IPV4_OPTION.to_owned(), "true".to_owned())]),
        }
    }

    fn edge() -> Self {
        Self {
            internal: false,
            options: HashMap::from([(HOST_BINDING_IPV4_OPTION.to_owned(), "127.0.0.1".to_owned())]),
        }
    }

    /// Why an existing network with these settings is not acceptable, if it is not.
    fn mismatch(&self, internal: bool, options: &HashMap<String, String>) -> Option<String> {
        if internal != self.internal {
            return Some(if self.internal {
                "it is not internal, so a plugin on it could reach the outside".to_owned()
            } else {
                "it is internal, so a port published from it cannot be reached".to_owned()
            });
        }
        self.options
            .iter()
            .find(|(k, v)| options.get(*k) != Some(*v))
            .map(|(k, v)| format!("it lacks the option {k}={v}"))
    }
}

impl DockerClient {
    /// Makes sure the plugin network `name` exists: a bridge that is `internal` and has no
    /// host address (`com.docker.network.bridge.inhibit_ipv4=true`, decision 0003). An
    /// existing network of that name is accepted only with both settings, so a plugin never
    /// lands on a network from which it could reach the host; otherwise [`Error::Conflict`].
    pub async fn ensure_plugin_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.ensure_network(name, NetworkShape::plugin(), labels)
            .await
    }

    /// Makes sure the gateway's edge network `name` exists: an ordinary (not internal)
    /// bridge whose published ports bind to 127.0.0.1 by default. An existing network of
    /// that name that is internal or binds elsewhere is [`Error::Conflict`].
    pub async fn ensure_edge_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.ensure_network(name, NetworkShape::edge(), labels)
            .await
    }

    async fn ensure_network(
        &self,
        name: &str,
        shape: NetworkShape,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        // Engines before API 1.44 happily create two networks of one name, after which the
        // name is ambiguous and unusable; creations from this process therefore take turns.
        static CREATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _turn = CREATION.lock().await;
        let what = format!("network {name}");
        for attempt in 0..3u64 {
            match self.check_network(name, &shape).await {
                Ok(()) => return Ok(()),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let created = self
                .docker
                .create_network(NetworkCreateRequest {
                    name: name.to_owned(),
                    driver: Some("bridge".into()),
                    internal: Some(shape.internal),
                    options: Some(shape.options.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::from_engine("create the network", &what, e))?;
            if self.networks_named(name).await?.len() <= 1 {
                return Ok(());
            }
            // Another process created one too: withdraw ours (nobody uses it yet) and take
            // theirs; if both withdrew, try again after a pause that differs per process.
            match self.docker.remove_network(&created.id).await {
                Ok(()) => {}
                Err(e) if status_of(&e, &[404]) => {}
                Err(e) => return Err(Error::from_engine("remove the duplicate network", &what, e)),
            }
            let pause = 5 + (u64::from(std::process::id()) + attempt) % 20;
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        self.check_network(name, &shape).await
    }

    /// Ids of the networks called exactly `name`.
    async fn networks_named(&self, name: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| Error::from_engine("list networks", &format!("network {name}"), e))?;
        // The engine's name filter also matches parts of names.
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect())
    }

    /// `Ok` when `name` exists with the settings of `shape`.
    async fn check_network(&self, name: &str, shape: &NetworkShape) -> Result<()> {
        let what = format!("network {name}");
        let network = self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
            .map_err(|e| Error::from_engine("inspect the network", &what, e))?;
        match shape.mismatch(
            network.internal.unwrap_or(false),
            &network.options.unwrap_or_default(),
        ) {
            None => Ok(()),
            Some(why) => Err(Error::Conflict {
                what,
                message: format!(
                    "a network of that name exists but {why}; remove it (`docker network rm {name}`) and try again"
                ),
            }),
        }
    }

    /// Attaches `container` to `network`, reachable there under `aliases` besides its name.
    /// A container that is already attached is left as it is.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        let result = self
            .docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: container.to_owned(),
                    endpoint_config: Some(EndpointSettings {
                        aliases: (!aliases.is_empty()).then(|| aliases.to_vec()),
                        ..Default::default()
                    }),
                },
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            // 20.10 answers 403 ("endpoint … already exists"); newer engines 409.
            Err(e)
                if status_of(&e, &[403, 409]) && self.is_attached(container, network).await? =>
            {
                Ok(())
            }
            Err(e) => Err(Error::from_engine(
                "connect the container to the network",
                &format!("network {network} or container {container}"),
                e,
            )),
        }
    }

    /// Detaches `container` from `network`; a container that is not attached, or a container
    /// or network that no longer exists, is fine.
    pub async fn disconnect_network(&self, network: &str, container: &str) -> Result<()> {
        let result = self
            .docker
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container: container.to_owned(),
                    force: Some(true),
                },
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e, &[404]) => Ok(()),
            // 20.10 answers 403 ("container … is not connected to the network …"), and 500
            // when the container is being removed; both are fine once it is not attached.
            Err(e)
                if status_of(&e, &[403, 409, 500])
                    && !self.is_attached(container, network).await? =>
            {
                Ok(())
            }
            Err(e) => Err(Error::from_engine(
                "disconnect the container from the network",
                &format!("network {network} or container {container}"),
                e,
            )),
        }
    }

    /// Whether `container` is attached to `network` (by name or id); a missing container
    /// is not attached.
    async fn is_attached(&self, container: &str, network: &str) -> Result<bool> {
        let inspect = match self.inspect_container(container).await {
            Ok(i) => i,
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let networks = inspect
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        Ok(networks.iter().any(|(name, endpoint)| {
            name == network
                || endpoint
                    .network_id
                    .as_deref()
                    .is_some_and(|id| !network.is_empty() && id.starts_with(network))
        }))
    }
}

/// Whether the engine answered with one of `codes`.
pub(crate) fn status_of(e: &bollard::errors::Error, codes: &[u16]) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_network_must_be_internal_and_without_a_host_address() {
        let shape = NetworkShape::plugin();
        let inhibit = HashMap::from([(INHIBIT_IPV4_OPTION.to_owned(), "true".to_owned())]);
        assert_eq!(shape.mismatch(true, &inhibit), None);
        assert!(
            shape
                .mismatch(false, &inhibit)
                .unwrap()
                .contains("not internal")
        );
        assert!(
            shape
                .mismatch(true, &HashMap::new())
                .unwrap()
                .contains(INHIBIT_IPV4_OPTION)
        );
    }

    #[test]
    fn an_edge_network_must_not_be_internal() {
        let shape = NetworkShape::edge();
        let local = HashMap::from([(HOST_BINDING_IPV4_OPTION.to_owned(), "127.0.0.1".to_owned())]);
        assert_eq!(shape.mismatch(false, &local), None);
        assert!(shape.mismatch(true, &local).unwrap().contains("internal"));
        assert!(
            shape
                .mismatch(false, &HashMap::new())
                .unwrap()
                .contains("127.0.0.1")
        );
    }
}
