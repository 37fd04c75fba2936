//! One connection to the Docker Engine and the operations Berth needs from it.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, NetworkCreateRequest};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};

/// A connected Docker Engine.
#[derive(Clone, Debug)]
pub struct DockerClient {
    pub(crate) docker: Docker,
}

/// What to build and how to tag it.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// `name:tag` to give the image.
    pub tag: String,
    /// Labels added to the image.
    pub labels: HashMap<String, String>,
    /// `ARG` values.
    pub build_args: HashMap<String, String>,
}

/// The parts of an image Berth reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:…` image id.
    pub id: String,
    /// Labels of the image config.
    pub labels: HashMap<String, String>,
    /// `USER` of the image config.
    pub user: Option<String>,
    /// `EXPOSE`d ports, as `8080/tcp`.
    pub exposed_ports: Vec<String>,
    /// Repository tags.
    pub tags: Vec<String>,
}

/// A container's state as the engine reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Whether it runs.
    pub running: bool,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Whether the kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

impl DockerClient {
    /// Connects through `DOCKER_HOST` or the local socket and agrees on an API version
    /// (Berth needs 1.41, Docker 20.10, or later).
    pub async fn connect() -> Result<Self> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| Error::Unreachable { source: e })?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| Error::from_engine("negotiate the API version", "the engine", e))?;
        docker
            .ping()
            .await
            .map_err(|e| Error::from_engine("ping", "the engine", e))?;
        Ok(Self { docker })
    }

    /// Whether the engine answers.
    pub async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| Error::from_engine("ping", "the engine", e))
    }

    /// The underlying bollard client, for operations this wrapper does not cover yet.
    pub fn bollard(&self) -> &Docker {
        &self.docker
    }

    /// Builds an image from a tar `context`, reporting each line of builder output to
    /// `progress`, and returns the image id. The build stream is read to its end.
    pub async fn build_image(
        &self,
        context: Vec<u8>,
        request: &BuildRequest,
        mut progress: impl FnMut(&str),
    ) -> Result<String> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&request.tag)
            .rm(true)
            .forcerm(true)
            .labels(&request.labels)
            .buildargs(&request.build_args)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        let mut image_id = None;
        let mut last_lines: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match e {
                bollard::errors::Error::DockerStreamError { error } => {
                    Error::Build { message: error }
                }
                e => Error::from_engine("build the image", &request.tag, e),
            })?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(Error::Build {
                    message: with_context(&last_lines, &detail),
                });
            }
            if let Some(line) = info.stream.as_deref().map(str::trim_end)
                && !line.is_empty()
            {
                progress(line);
                last_lines.push(line.to_owned());
                if last_lines.len() > 5 {
                    last_lines.remove(0);
                }
            }
            if let Some(status) = info.status.as_deref() {
                progress(status);
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        match image_id {
            Some(id) => Ok(id),
            // Older engines only say so in the output; fall back to inspecting the tag.
            None => self.inspect_image(&request.tag).await.map(|i| i.id),
        }
    }

    /// Pulls `reference` (`repo@sha256:…` or `repo:tag`) from its registry with
    /// `credentials` (username, password) when given.
    pub async fn pull_image(
        &self,
        reference: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<()> {
        let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let creds = credentials.map(|(u, p)| bollard::auth::DockerCredentials {
            username: Some(u.to_owned()),
            password: Some(p.to_owned()),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, creds);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::from_engine("pull the image", reference, e))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(Error::Registry {
                    image: reference.to_owned(),
                    message: detail,
                });
            }
        }
        Ok(())
    }

    /// Pushes `repo:tag` to its registry with `credentials` when given; returns the
    /// manifest digest the registry stored, reporting progress lines to `progress`.
    pub async fn push_image(
        &self,
        reference: &str,
        credentials: Option<(&str, &str)>,
        mut progress: impl FnMut(&str),
    ) -> Result<String> {
        let (repo, tag) = match reference.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (reference, "latest"),
        };
        let options = bollard::query_parameters::PushImageOptionsBuilder::default()
            .tag(tag)
            .build();
        let creds = credentials.map(|(u, p)| bollard::auth::DockerCredentials {
            username: Some(u.to_owned()),
            password: Some(p.to_owned()),
            ..Default::default()
        });
        let mut stream = self.docker.push_image(repo, Some(options), creds);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::from_engine("push the image", reference, e))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(Error::Registry {
                    image: reference.to_owned(),
                    message: detail,
                });
            }
            if let Some(status) = info.status.as_deref() {
                // The last line names the digest: "TAG: digest: sha256:… size: N".
                if let Some(rest) = status.split("digest: ").nth(1) {
                    digest = rest.split_whitespace().next().map(str::to_owned);
                }
                progress(status);
            }
        }
        digest.ok_or_else(|| Error::Registry {
            image: reference.to_owned(),
            message: "the engine reported no digest for the push".into(),
        })
    }

    /// Tags `source` as `target` (`repo:tag`).
    pub async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let (repo, tag) = match target.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (target, "latest"),
        };
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| Error::from_engine("tag the image", source, e))
    }

    /// Reads an image's id, labels, user and exposed ports.
    pub async fn inspect_image(&self, reference: &str) -> Result<ImageInfo> {
        let image = self.docker.inspect_image(reference).await.map_err(|e| {
            Error::from_engine("inspect the image", &format!("image {reference}"), e)
        })?;
        let config = image.config.unwrap_or_default();
        Ok(ImageInfo {
            id: image.id.unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
            user: config.user.filter(|u| !u.is_empty()),
            exposed_ports: config.exposed_ports.unwrap_or_default(),
            tags: image.repo_tags.unwrap_or_default(),
        })
    }

    /// Removes an image (by tag or id); a missing image is [`Error::NotFound`]. Without
    /// `force`, an image a container still uses is kept ([`Error::Conflict`]).
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<()> {
        self.docker
            .remove_image(
                reference,
                Some(RemoveImageOptionsBuilder::default().force(force).build()),
                None,
            )
            .await
            .map_err(|e| {
                Error::from_engine("remove the image", &format!("image {reference}"), e)
            })?;
        Ok(())
    }

    /// Creates a bridge network; `internal` ones have no route out of the host.
    pub async fn create_network(
        &self,
        name: &str,
        internal: bool,
        labels: HashMap<String, String>,
    ) -> Result<String> {
        let created = self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                internal: Some(internal),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::from_engine("create the network", &format!("network {name}"), e))?;
        Ok(created.id)
    }

    /// Removes a network.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        self.docker
            .remove_network(name)
            .await
            .map_err(|e| Error::from_engine("remove the network", &format!("network {name}"), e))
    }

    /// Creates and starts a container; if it cannot start, it is removed again.
    pub async fn run_container(&self, name: &str, config: ContainerCreateBody) -> Result<String> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                config,
            )
            .await
            .map_err(|e| {
                Error::from_engine("create the container", &format!("container {name}"), e)
            })?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove_container(&created.id).await;
            return Err(Error::from_engine(
                "start the container",
                &format!("container {name}"),
                e,
            ));
        }
        Ok(created.id)
    }

    /// The container's address on `network`.
    pub async fn container_address(&self, id: &str, network: &str) -> Result<Option<IpAddr>> {
        let inspect = self.inspect_container(id).await?;
        Ok(inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|endpoint| endpoint.ip_address)
            .and_then(|ip| ip.parse().ok()))
    }

    /// Whether the container runs, and how it last exited.
    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let state = self.inspect_container(id).await?.state.unwrap_or_default();
        Ok(ContainerStatus {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    /// Everything the engine knows about the container (`docker inspect`).
    pub async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<bollard::models::ContainerInspectResponse> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| Error::from_engine("inspect the container", &format!("container {id}"), e))
    }

    /// Sends `signal` (`SIGTERM`, `SIGKILL`, …) to the container's main process.
    pub async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        self.docker
            .kill_container(
                id,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal(signal)
                        .build(),
                ),
            )
            .await
            .map_err(|e| Error::from_engine("signal the container", &format!("container {id}"), e))
    }

    /// Waits until the container is not running and returns its exit code.
    pub async fn wait_exit(&self, id: &str) -> Result<i64> {
        let mut stream = self.docker.wait_container(
            id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(Error::from_engine(
                "wait for the container",
                &format!("container {id}"),
                e,
            )),
            None => self
                .container_status(id)
                .await
                .map(|s| s.exit_code.unwrap_or(-1)),
        }
    }

    /// The last `tail` lines of the container's output.
    pub async fn logs(&self, id: &str, tail: usize) -> Result<String> {
        let mut stream = self.docker.logs(
            id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .tail(&tail.to_string())
                    .build(),
            ),
        );
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| Error::from_engine("read the logs", &format!("container {id}"), e))?;
            out.push_str(&chunk.to_string());
        }
        Ok(out)
    }

    /// The container's output (stdout and stderr), one item per line without its line
    /// break: the last `tail` lines, then, with `follow`, new lines as they are written until
    /// the container stops or the stream is dropped. Nothing is read unless it is polled.
    /// The engine splits lines longer than 16 KiB; their pieces arrive as separate items.
    pub fn logs_stream(
        &self,
        id: &str,
        follow: bool,
        tail: usize,
    ) -> impl Stream<Item = Result<String>> + Send + 'static + use<> {
        let what = format!("container {id}");
        self.docker
            .logs(
                id,
                Some(
                    LogsOptionsBuilder::default()
                        .stdout(true)
                        .stderr(true)
                        .follow(follow)
                        .tail(&tail.to_string())
                        .build(),
                ),
            )
            .flat_map(move |chunk| {
                let items: Vec<Result<String>> = match chunk {
                    Ok(chunk) => {
                        let bytes = chunk.into_bytes();
                        String::from_utf8_lossy(&bytes)
                            .lines()
                            .map(|l| Ok(l.to_owned()))
                            .collect()
                    }
                    Err(e) => vec![Err(Error::from_engine("read the logs", &what, e))],
                };
                futures::stream::iter(items)
            })
    }

    /// Starts a container that exists but is not running (a restart after a crash); one
    /// that already runs is left as it is.
    pub async fn start_existing(&self, id: &str) -> Result<()> {
        // The engine answers 304 for a running container, which bollard counts as success.
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| Error::from_engine("start the container", &format!("container {id}"), e))
    }

    /// The host port the engine published for the container's `container_port`/tcp, if any.
    pub async fn published_port(&self, id: &str, container_port: u16) -> Result<Option<u16>> {
        let inspect = self.inspect_container(id).await?;
        let key = format!("{container_port}/tcp");
        Ok(inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&key))
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .find_map(|binding| binding.host_port.and_then(|p| p.parse().ok())))
    }

    /// Removes the container and its anonymous volumes, stopping it first if needed.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        self.docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| Error::from_engine("remove the container", &format!("container {id}"), e))
    }

    /// [`DockerClient::remove_container`], where a container already gone or already being
    /// removed is no error; `true` when this call removed it.
    pub async fn remove_container_if_present(&self, id: &str) -> Result<bool> {
        match self.remove_container(id).await {
            Ok(()) => Ok(true),
            // 409: removal of this container is already in progress.
            Err(Error::NotFound { .. } | Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ids of the containers, running or not, that match every engine filter given
    /// (`("label", "k=v")`, `("ancestor", "image:tag")`, …).
    pub async fn container_ids(&self, filters: &[(&str, &str)]) -> Result<Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in filters {
            map.entry((*k).to_owned())
                .or_default()
                .push((*v).to_owned());
        }
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&map)
                    .build(),
            ))
            .await
            .map_err(|e| Error::from_engine("list containers", "containers", e))?;
        Ok(containers.into_iter().filter_map(|c| c.id).collect())
    }

    /// Removes every container, then every network, that carries `label=value`; returns
    /// how many objects went.
    pub async fn remove_labelled(&self, label: &str, value: &str) -> Result<usize> {
        let selector = format!("{label}={value}");
        let filters: HashMap<String, Vec<String>> =
            [("label".to_owned(), vec![selector.clone()])].into();
        let mut removed = 0;
        for id in self.container_ids(&[("label", &selector)]).await? {
            match self.remove_container(&id).await {
                Ok(()) => removed += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| Error::from_engine("list networks", "networks", e))?;
        for n in networks {
            if let Some(id) = n.id {
                match self.remove_network(&id).await {
                    Ok(()) => removed += 1,
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}

fn with_context(last_lines: &[String], detail: &str) -> String {
    if last_lines.is_empty() {
        detail.to_owned()
    } else {
        format!("{detail} (after: {})", last_lines.join(" | "))
    }
}
