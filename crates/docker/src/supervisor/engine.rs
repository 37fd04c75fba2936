//! The Docker Engine as the supervisor sees it: exactly the calls it makes, behind a trait,
//! so its decisions run against the real engine ([`DockerClient`]) and, in unit tests,
//! against a fake that records calls and scripts answers.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

use bollard::models::ContainerCreateBody;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::{
    ContainerEvent, ContainerStatus, DockerClient, ImageInfo, Instance, ManagedContainer, Usage,
};

/// The engine operations the supervisor uses. Each has the meaning of the
/// [`DockerClient`] method of the same name.
pub trait Engine: Clone + Send + Sync + 'static {
    /// Whether the engine answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// Container events of `instance`, as [`DockerClient::events`].
    fn events(&self, instance: &Instance) -> BoxStream<'static, Result<ContainerEvent>>;
    /// The containers of `instance`.
    fn list_managed(
        &self,
        instance: &Instance,
    ) -> impl Future<Output = Result<Vec<ManagedContainer>>> + Send;
    /// Plugins of `instance` that have a network (whether or not a container runs).
    fn plugins_with_networks(
        &self,
        instance: &Instance,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Removes the containers and network (`network`) an uninstalled plugin left.
    fn remove_plugin_leftovers(
        &self,
        instance: &Instance,
        plugin: &str,
        network: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The pool networks of `instance`.
    fn pool_networks(
        &self,
        instance: &Instance,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Removes a network (no container may be attached).
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// The image `reference` names.
    fn inspect_image(&self, reference: &str) -> impl Future<Output = Result<ImageInfo>> + Send;
    /// Pulls `reference` from its registry, with (username, password) when given.
    fn pull_image(
        &self,
        reference: &str,
        credentials: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The labels of a container.
    fn container_labels(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<HashMap<String, String>>> + Send;
    /// Creates the gateway's edge network unless it exists.
    fn ensure_edge_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Creates a plugin's internal network unless it exists.
    fn ensure_plugin_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Connects a container to a network under `aliases` (already connected is fine).
    fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Creates a named volume unless it exists.
    fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Creates and starts a container; returns its id.
    fn run_container(
        &self,
        name: &str,
        config: ContainerCreateBody,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Starts a container that exists but is not running.
    fn start_existing(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// The container's address on `network`.
    fn container_address(
        &self,
        id: &str,
        network: &str,
    ) -> impl Future<Output = Result<Option<IpAddr>>> + Send;
    /// The host port published for the container's `container_port`/tcp.
    fn published_port(
        &self,
        id: &str,
        container_port: u16,
    ) -> impl Future<Output = Result<Option<u16>>> + Send;
    /// Whether the container runs and how it last exited.
    fn container_status(&self, id: &str) -> impl Future<Output = Result<ContainerStatus>> + Send;
    /// Waits until the container is not running; returns its exit code.
    fn wait_exit(&self, id: &str) -> impl Future<Output = Result<i64>> + Send;
    /// The last `tail` lines of the container's output.
    fn logs(&self, id: &str, tail: usize) -> impl Future<Output = Result<String>> + Send;
    /// Sends `signal` to the container's main process.
    fn signal(&self, id: &str, signal: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes the container, stopping it first if needed.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// The container's CPU and memory use.
    fn usage(&self, id: &str) -> impl Future<Output = Result<Usage>> + Send;
    /// Freezes every process of the container, keeping its memory (`docker pause`).
    fn pause(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Thaws a container [`Engine::pause`] froze (`docker unpause`).
    fn unpause(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
}

// Inherent methods win over trait methods of the same name, so each body calls the client.
impl Engine for DockerClient {
    async fn ping(&self) -> Result<()> {
        DockerClient::ping(self).await
    }

    fn events(&self, instance: &Instance) -> BoxStream<'static, Result<ContainerEvent>> {
        DockerClient::events(self, instance).boxed()
    }

    async fn list_managed(&self, instance: &Instance) -> Result<Vec<ManagedContainer>> {
        DockerClient::list_managed(self, instance).await
    }

    async fn plugins_with_networks(&self, instance: &Instance) -> Result<Vec<String>> {
        DockerClient::plugins_with_networks(self, instance).await
    }

    async fn remove_plugin_leftovers(
        &self,
        instance: &Instance,
        plugin: &str,
        network: &str,
    ) -> Result<()> {
        DockerClient::remove_plugin_leftovers(self, instance, plugin, network).await
    }

    async fn pool_networks(&self, instance: &Instance) -> Result<Vec<String>> {
        DockerClient::pool_networks(self, instance).await
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        DockerClient::remove_network(self, name).await
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageInfo> {
        DockerClient::inspect_image(self, reference).await
    }

    async fn pull_image(&self, reference: &str, credentials: Option<(&str, &str)>) -> Result<()> {
        DockerClient::pull_image(self, reference, credentials).await
    }

    async fn container_labels(&self, id: &str) -> Result<HashMap<String, String>> {
        let inspect = DockerClient::inspect_container(self, id).await?;
        Ok(inspect.config.and_then(|c| c.labels).unwrap_or_default())
    }

    async fn ensure_edge_network(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
        DockerClient::ensure_edge_network(self, name, labels).await
    }

    async fn ensure_plugin_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        DockerClient::ensure_plugin_network(self, name, labels).await
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<()> {
        DockerClient::connect_network(self, network, container, aliases).await
    }

    async fn ensure_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
        DockerClient::ensure_volume(self, name, labels).await
    }

    async fn run_container(&self, name: &str, config: ContainerCreateBody) -> Result<String> {
        DockerClient::run_container(self, name, config).await
    }

    async fn start_existing(&self, id: &str) -> Result<()> {
        DockerClient::start_existing(self, id).await
    }

    async fn container_address(&self, id: &str, network: &str) -> Result<Option<IpAddr>> {
        DockerClient::container_address(self, id, network).await
    }

    async fn published_port(&self, id: &str, container_port: u16) -> Result<Option<u16>> {
        DockerClient::published_port(self, id, container_port).await
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        DockerClient::container_status(self, id).await
    }

    async fn wait_exit(&self, id: &str) -> Result<i64> {
        DockerClient::wait_exit(self, id).await
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<String> {
        DockerClient::logs(self, id, tail).await
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        DockerClient::signal(self, id, signal).await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        DockerClient::remove_container(self, id).await
    }

    async fn usage(&self, id: &str) -> Result<Usage> {
        DockerClient::usage(self, id).await
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.docker.pause_container(id).await.map_err(|e| {
            crate::Error::from_engine("pause the container", &format!("container {id}"), e)
        })
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.docker.unpause_container(id).await.map_err(|e| {
            crate::Error::from_engine("unpause the container", &format!("container {id}"), e)
        })
    }
}
