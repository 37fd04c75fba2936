use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sigstore::cosign::verification_constraint::VerificationConstraintVec;
use sigstore::cosign::{Client, ClientBuilder, CosignCapabilities, verify_constraints};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

use crate::{Error, ErrorKind, Policy, Registry, Resolved};

/// A digest found signed by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The verified manifest digest.
    pub digest: String,
    /// The name of the key that signed it.
    pub key: String,
    /// The key's fingerprint.
    pub fingerprint: String,
    /// Whether the verdict came from the cache.
    pub cached: bool,
}

/// Checks signatures against a [`Policy`]; verdicts are cached by digest and key set, so
/// each digest is fetched and checked once. Refusals are not cached: a signature may be
/// added later.
#[derive(Clone)]
pub struct Verifier {
    registry: Registry,
    cache: Arc<Mutex<HashMap<(String, String), Verdict>>>,
}

pub(crate) fn sigstore_auth(registry: &Registry, host: &str) -> Auth {
    match registry.options().credentials.basic(host) {
        Some((u, p)) => Auth::Basic(u.to_owned(), p.to_owned()),
        None => Auth::Anonymous,
    }
}

pub(crate) fn cosign_client(registry: &Registry, host: &str) -> Result<Client, Error> {
    let protocol = match registry.protocol(host) {
        oci_client::client::ClientProtocol::Http => ClientProtocol::Http,
        _ => ClientProtocol::Https,
    };
    ClientBuilder::default()
        .with_oci_client_config(ClientConfig {
            protocol,
            ..Default::default()
        })
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Registry,
                format!("registry client for {host}: {e}"),
            )
        })
}

impl Verifier {
    /// A verifier reaching registries through `registry`.
    pub fn new(registry: Registry) -> Self {
        Verifier {
            registry,
            cache: Arc::default(),
        }
    }

    /// The registry access.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How many verdicts are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Checks that `resolved` carries a signature by one of the policy's keys.
    pub async fn verify(&self, resolved: &Resolved, policy: &Policy) -> Result<Verdict, Error> {
        let cache_key = (resolved.pinned.clone(), policy.key_set());
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return Ok(Verdict {
                cached: true,
                ..v.clone()
            });
        }
        let verdict = self.check(resolved, policy).await?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, verdict.clone());
        Ok(verdict)
    }

    async fn check(&self, resolved: &Resolved, policy: &Policy) -> Result<Verdict, Error> {
        let host = resolved.registry.clone();
        let auth = sigstore_auth(&self.registry, &host);
        let image = OciReference::with_digest(
            resolved.registry.clone(),
            resolved.repository.clone(),
            resolved.digest.clone(),
        );
        let mut client = cosign_client(&self.registry, &host)?;
        let layers = client
            .trusted_signature_layers(&auth, &image)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Registry,
                    format!("{}: cannot read its signatures: {e}", resolved.pinned),
                )
            })?;
        let signed: Vec<_> = layers
            .into_iter()
            .filter(|l| l.signature.is_some())
            .collect();
        if signed.is_empty() {
            // No readable signature: is there none, or one that cannot be read?
            let sig_tag = format!(
                "{}/{}:{}.sig",
                resolved.registry,
                resolved.repository,
                resolved.digest.replace(':', "-")
            );
            let sig_ref = Registry::parse(&sig_tag)?;
            return Err(if self.registry.exists(&sig_ref).await? {
                Error::new(
                    ErrorKind::Malformed,
                    format!(
                        "{}: a signature is stored at {sig_tag} but holds no readable cosign signature for this digest (malformed payload or signature); sign it again with `berth sign`",
                        resolved.pinned
                    ),
                )
            } else {
                Error::new(
                    ErrorKind::Unsigned,
                    format!(
                        "{}: the image is not signed; sign it with `berth sign {} --key KEY`",
                        resolved.pinned, resolved.pinned
                    ),
                )
            });
        }
        for key in policy.keys() {
            let constraints: VerificationConstraintVec = vec![Box::new(key.verifier.clone())];
            if verify_constraints(&signed, constraints.iter()).is_ok() {
                return Ok(Verdict {
                    digest: resolved.digest.clone(),
                    key: key.name.clone(),
                    fingerprint: key.fingerprint.clone(),
                    cached: false,
                });
            }
        }
        let names: Vec<&str> = policy.keys().iter().map(|k| k.name.as_str()).collect();
        Err(Error::new(
            ErrorKind::WrongKey,
            format!(
                "{}: signed, but by none of the trusted keys ({}); sign it with a trusted key or trust the signer's public key",
                resolved.pinned,
                names.join(", ")
            ),
        ))
    }
}
