//! What an instance has on the engine: finding its containers, and removing all of it.

use std::collections::HashMap;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, Network};
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder,
};

use crate::client::DockerClient;
use crate::error::{Error, Result};
use crate::instance::{
    INSTANCE_LABEL, Instance, MANIFEST_HASH_LABEL, PLUGIN_LABEL, REVISION_LABEL, ROLE_LABEL,
};
use crate::networks::status_of;

/// A container of an instance, as listed by the engine, with Berth's labels read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedContainer {
    /// Full container id.
    pub id: String,
    /// Name, without the engine's leading `/`.
    pub name: String,
    /// [`ROLE_LABEL`]: `gateway` or `plugin`.
    pub role: Option<String>,
    /// [`PLUGIN_LABEL`]: the plugin it runs.
    pub plugin: Option<String>,
    /// [`REVISION_LABEL`], when it is a number.
    pub revision: Option<u64>,
    /// [`MANIFEST_HASH_LABEL`]: sha256 (hex) of the manifest it was created from.
    pub manifest_sha256: Option<String>,
    /// Whether it runs now.
    pub running: bool,
    /// `sha256:…` id of the image it was created from.
    pub image_id: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

impl ManagedContainer {
    fn from_summary(c: ContainerSummary) -> Option<Self> {
        let labels = c.labels.unwrap_or_default();
        let label = |k: &str| labels.get(k).cloned();
        Some(Self {
            id: c.id?,
            name: c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            role: label(ROLE_LABEL),
            plugin: label(PLUGIN_LABEL),
            revision: label(REVISION_LABEL).and_then(|r| r.parse().ok()),
            manifest_sha256: label(MANIFEST_HASH_LABEL),
            running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            image_id: c.image_id.unwrap_or_default(),
            created: c.created.unwrap_or_default(),
        })
    }
}

/// How many objects [`DockerClient::remove_instance`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Containers, running or not.
    pub containers: usize,
    /// Networks.
    pub networks: usize,
    /// Named volumes.
    pub volumes: usize,
}

fn instance_filter(instance: &Instance) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{INSTANCE_LABEL}={}", instance.id())],
    )])
}

impl DockerClient {
    /// Every container of `instance`, running or not, oldest first.
    pub async fn list_managed(&self, instance: &Instance) -> Result<Vec<ManagedContainer>> {
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&instance_filter(instance))
                    .build(),
            ))
            .await
            .map_err(|e| {
                Error::from_engine(
                    "list containers",
                    &format!("containers of instance {}", instance.id()),
                    e,
                )
            })?;
        let mut out: Vec<ManagedContainer> = containers
            .into_iter()
            .filter_map(ManagedContainer::from_summary)
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Removes everything that carries the instance's label: containers (forcibly, running
    /// or not), then networks, then volumes. Objects that vanish meanwhile are not errors,
    /// and a network that another (foreign) container still uses is detached from it first.
    pub async fn remove_instance(&self, instance: &Instance) -> Result<Removed> {
        let filters = instance_filter(instance);
        let mut removed = Removed::default();
        for c in self.list_managed(instance).await? {
            if self.remove_container_if_present(&c.id).await? {
                removed.containers += 1;
            }
        }
        let networks = self.instance_networks(instance).await?;
        for id in networks.into_iter().filter_map(|n| n.id) {
            if self.remove_network_detaching(&id).await? {
                removed.networks += 1;
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| {
                Error::from_engine(
                    "list volumes",
                    &format!("volumes of instance {}", instance.id()),
                    e,
                )
            })?;
        for v in volumes.volumes.unwrap_or_default() {
            let what = format!("volume {}", v.name);
            match self
                .docker
                .remove_volume(
                    &v.name,
                    Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
                )
                .await
            {
                Ok(()) => removed.volumes += 1,
                Err(e) if status_of(&e, &[404]) => {}
                Err(e) => return Err(Error::from_engine("remove the volume", &what, e)),
            }
        }
        Ok(removed)
    }

    /// Removes what an uninstalled plugin left behind: its containers (forcibly) and its
    /// network (`network`: its own, or the pool network it was given). Its volumes stay
    /// (they hold the plugin's data until `berth dev down`).
    pub async fn remove_plugin_leftovers(
        &self,
        instance: &Instance,
        plugin: &str,
        network: &str,
    ) -> Result<()> {
        for c in self
            .list_managed(instance)
            .await?
            .into_iter()
            .filter(|c| c.plugin.as_deref() == Some(plugin))
        {
            self.remove_container_if_present(&c.id).await?;
        }
        self.remove_network_detaching(network).await.map(|_| ())
    }

    /// The networks of `instance` made for the pool of plugin networks (label
    /// `berth.dev/pool`), given to a plugin or not.
    pub async fn pool_networks(&self, instance: &Instance) -> Result<Vec<String>> {
        Ok(self
            .instance_networks(instance)
            .await?
            .into_iter()
            .filter(|n| {
                n.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(crate::supervisor::POOL_LABEL))
            })
            .filter_map(|n| n.name)
            .collect())
    }

    /// The plugins that have a network of `instance`.
    pub async fn plugins_with_networks(&self, instance: &Instance) -> Result<Vec<String>> {
        Ok(self
            .instance_networks(instance)
            .await?
            .into_iter()
            .filter_map(|n| n.labels?.remove(PLUGIN_LABEL))
            .collect())
    }

    async fn instance_networks(&self, instance: &Instance) -> Result<Vec<Network>> {
        self.docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&instance_filter(instance))
                    .build(),
            ))
            .await
            .map_err(|e| {
                Error::from_engine(
                    "list networks",
                    &format!("networks of instance {}", instance.id()),
                    e,
                )
            })
    }

    /// Removes network `id`; when containers are still attached, detaches them and tries
    /// once more. `false` when it was already gone.
    async fn remove_network_detaching(&self, id: &str) -> Result<bool> {
        let what = format!("network {id}");
        match self.docker.remove_network(id).await {
            Ok(()) => return Ok(true),
            Err(e) if status_of(&e, &[404]) => return Ok(false),
            // 403 "has active endpoints": detach them below.
            Err(e) if status_of(&e, &[403, 409]) => {}
            Err(e) => return Err(Error::from_engine("remove the network", &what, e)),
        }
        let network = match self
            .docker
            .inspect_network(id, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => n,
            Err(e) if status_of(&e, &[404]) => return Ok(false),
            Err(e) => return Err(Error::from_engine("inspect the network", &what, e)),
        };
        for container in network.containers.unwrap_or_default().into_keys() {
            self.disconnect_network(id, &container).await?;
        }
        match self.docker.remove_network(id).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e, &[404]) => Ok(false),
            Err(e) => Err(Error::from_engine("remove the network", &what, e)),
        }
    }
}
