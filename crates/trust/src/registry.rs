use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::{Credentials, Error, ErrorKind};

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Loopback registries
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) always are, as Docker does.
    pub insecure: Vec<String>,
    /// Credentials by registry host.
    pub credentials: Credentials,
}

/// A tag (or digest) resolved to the manifest digest the registry holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `host[:port]`.
    pub registry: String,
    /// The repository, e.g. `berth/calculator`.
    pub repository: String,
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
    /// `registry/repository@digest`: what runs.
    pub pinned: String,
}

/// Registry access shared by resolution, signing and verification: one client per
/// registry host, each keeping its tokens.
#[derive(Clone)]
pub struct Registry {
    options: Arc<RegistryOptions>,
    clients: Arc<Mutex<HashMap<String, Arc<Client>>>>,
}

/// Whether `image` names a registry host (`host.domain/…`, `host:port/…`, `localhost/…`):
/// only such images can be resolved, pushed or verified against a registry. Others live
/// in the local engine alone (or on Docker Hub, which this machine cannot reach).
pub fn has_registry_host(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

pub(crate) fn is_plain_http(host: &str, insecure: &[String]) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    name == "localhost"
        || name == "[::1]"
        || name.starts_with("127.")
        || insecure.iter().any(|i| i == host || i == name)
}

impl Registry {
    /// Registry access with these options.
    pub fn new(options: RegistryOptions) -> Self {
        Registry {
            options: Arc::new(options),
            clients: Arc::default(),
        }
    }

    /// The options.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// The protocol for `host`.
    pub(crate) fn protocol(&self, host: &str) -> ClientProtocol {
        if is_plain_http(host, &self.options.insecure) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        }
    }

    pub(crate) fn client(&self, host: &str) -> Arc<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(Client::new(ClientConfig {
                    protocol: self.protocol(host),
                    connect_timeout: Some(Duration::from_secs(5)),
                    read_timeout: Some(Duration::from_secs(30)),
                    ..Default::default()
                }))
            })
            .clone()
    }

    pub(crate) fn auth(&self, host: &str) -> RegistryAuth {
        self.options.credentials.for_host(host)
    }

    /// Parses `image`, which must name a registry.
    pub fn parse(image: &str) -> Result<Reference, Error> {
        if !has_registry_host(image) {
            return Err(Error::new(
                ErrorKind::BadReference,
                format!(
                    "{image} names no registry; push it (`berth push {image} --to HOST:PORT/REPO`) and refer to it as HOST:PORT/REPO:TAG"
                ),
            ));
        }
        image.parse::<Reference>().map_err(|e| {
            Error::new(
                ErrorKind::BadReference,
                format!("{image} is not an image reference: {e}"),
            )
        })
    }

    /// Resolves `image` (a tag, or a digest the registry must hold) to the manifest digest
    /// the registry holds now.
    pub async fn resolve(&self, image: &str) -> Result<Resolved, Error> {
        let reference = Self::parse(image)?;
        let host = reference.resolve_registry().to_owned();
        let client = self.client(&host);
        let digest = client
            .fetch_manifest_digest(&reference, &self.auth(&host))
            .await
            .map_err(|e| Error::from_oci(image, e))?;
        let registry = reference.registry().to_owned();
        let repository = reference.repository().to_owned();
        Ok(Resolved {
            pinned: format!("{registry}/{repository}@{digest}"),
            registry,
            repository,
            digest,
        })
    }

    /// The labels of the image config `image` points to.
    pub async fn config_labels(&self, image: &str) -> Result<BTreeMap<String, String>, Error> {
        let reference = Self::parse(image)?;
        let host = reference.resolve_registry().to_owned();
        let client = self.client(&host);
        let (_, _, config) = client
            .pull_manifest_and_config(&reference, &self.auth(&host))
            .await
            .map_err(|e| Error::from_oci(image, e))?;
        #[derive(serde::Deserialize)]
        struct ImageConfig {
            #[serde(default)]
            config: Option<Inner>,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(default, rename = "Labels")]
            labels: Option<BTreeMap<String, String>>,
        }
        let parsed: ImageConfig = serde_json::from_str(&config).map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("{image}: the image config is not JSON: {e}"),
            )
        })?;
        Ok(parsed.config.and_then(|c| c.labels).unwrap_or_default())
    }

    /// Whether the registry holds `image` (used to tell "unsigned" from an unreadable
    /// signature).
    pub(crate) async fn exists(&self, reference: &Reference) -> Result<bool, Error> {
        let host = reference.resolve_registry().to_owned();
        match self
            .client(&host)
            .fetch_manifest_digest(reference, &self.auth(&host))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = Error::from_oci(&reference.whole(), e);
                match e.kind {
                    ErrorKind::NotFound => Ok(false),
                    _ => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_speak_plain_http() {
        assert!(is_plain_http("127.0.0.1:5000", &[]));
        assert!(is_plain_http("localhost:5000", &[]));
        assert!(is_plain_http("localhost", &[]));
        assert!(!is_plain_http("registry.example:5000", &[]));
        assert!(is_plain_http(
            "registry.example:5000",
            &["registry.example:5000".into()]
        ));
        assert!(is_plain_http("10.0.0.1:5000", &["10.0.0.1".into()]));
    }

    #[test]
    fn registry_hosts_are_told_apart_from_local_names() {
        assert!(has_registry_host("127.0.0.1:5000/berth/calculator:0.1.0"));
        assert!(has_registry_host("localhost/x"));
        assert!(has_registry_host("ghcr.io/berth/x@sha256:00"));
        assert!(!has_registry_host("berth/calculator:0.1.0"));
        assert!(!has_registry_host("calculator"));
    }

    #[test]
    fn local_names_are_refused_with_the_fix() {
        let e = Registry::parse("berth/calculator:0.1.0").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReference);
        assert!(e.message.contains("berth push"), "{e}");
    }
}
