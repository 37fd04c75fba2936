//! Which bytes a revision runs, and whether the platform trusts them: an image from a
//! registry is resolved to its manifest digest and run by it (pulled when the engine lacks
//! it); a local image runs by its image id. Where the platform requires a signature, the
//! digest must carry one by a trusted key, and the installed manifest may not ask for more
//! than the image's signed `dev.berth.manifest` label declares.

use berth_api::Plugin;
use berth_api::approval::{beyond_label, describe_missing};
use berth_contract::protocol::MANIFEST_LABEL;
use berth_store::audit::types;
use berth_trust::{ErrorKind, Policy, Registry, RegistryOptions, Resolved, Verifier};
use serde_json::json;

use super::engine::Engine;
use super::{Phase, Supervisor};
use crate::client::ImageInfo;

/// The platform's supply-chain settings for local mode (`dev up --require-signature`).
#[derive(Clone, Debug, Default)]
pub struct SupplyChain {
    /// Trusted keys and which plugins must be signed.
    pub policy: Policy,
    /// How registries are reached.
    pub registry: RegistryOptions,
}

/// An image checked for a revision.
#[derive(Clone, Debug)]
pub struct Checked {
    /// What the container is created from: `repo@sha256:…` or the engine's image id.
    pub run: String,
    /// How revisions show it: the pinned reference, or the local tag (its id is `digest`).
    pub shown: String,
    /// The registry manifest digest, or the engine's image id for a local image.
    pub digest: String,
    /// The trusted key that signed it, when a signature was required.
    pub signed_by: Option<String>,
    /// The image's `dev.berth.manifest` label.
    pub label: Option<String>,
}

/// Why an image cannot run (now).
pub(super) struct Refusal {
    reason: &'static str,
    message: String,
    digest: Option<String>,
    /// A verdict about the image itself (not about reaching it): a security event.
    security: bool,
}

impl Refusal {
    fn trust(e: berth_trust::Error, digest: Option<String>) -> Self {
        Refusal {
            reason: e.kind.reason(),
            security: e.kind.is_refusal(),
            message: e.message,
            digest,
        }
    }
}

impl<E: Engine> Supervisor<E> {
    fn verifier(&mut self) -> Verifier {
        self.verifier
            .get_or_insert_with(|| {
                Verifier::new(Registry::new(self.config.supply.registry.clone()))
            })
            .clone()
    }

    /// Resolves, fetches and (where required) verifies the image of `plugin`.
    pub(super) async fn check_image(
        &mut self,
        name: &str,
        plugin: &Plugin,
    ) -> Result<(Checked, ImageInfo), Refusal> {
        let image = plugin.spec.image.as_str();
        let required = self.config.supply.policy.requires(name);
        if !berth_trust::has_registry_host(image) {
            if required {
                return Err(Refusal {
                    reason: ErrorKind::BadReference.reason(),
                    message: format!(
                        "{name} must be signed, but {image} is a local image and signatures live in a registry; push it (`berth push {image} --to HOST:PORT/REPO:TAG`), sign it, and install it by that reference"
                    ),
                    digest: None,
                    security: true,
                });
            }
            let info = self.docker.inspect_image(image).await.map_err(|e| Refusal {
                reason: "ImageNotFound",
                message: format!(
                    "image {image} is not available: {e}; build it (`berth build plugin-images/{name}`) or load it"
                ),
                digest: None,
                security: false,
            })?;
            let checked = Checked {
                run: info.id.clone(),
                shown: image.to_owned(),
                digest: info.id.clone(),
                signed_by: None,
                label: info.labels.get(MANIFEST_LABEL).cloned(),
            };
            return Ok((checked, info));
        }
        let verifier = self.verifier();
        let resolved: Resolved = verifier
            .registry()
            .resolve(image)
            .await
            .map_err(|e| Refusal::trust(e, None))?;
        let info = match self.docker.inspect_image(&resolved.pinned).await {
            Ok(i) => i,
            Err(_) => {
                let creds = self
                    .config
                    .supply
                    .registry
                    .credentials
                    .basic(&resolved.registry)
                    .map(|(u, p)| (u.to_owned(), p.to_owned()));
                self.docker
                    .pull_image(
                        &resolved.pinned,
                        creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                    )
                    .await
                    .map_err(|e| Refusal {
                        reason: "PullFailed",
                        message: format!("cannot pull {}: {e}", resolved.pinned),
                        digest: Some(resolved.digest.clone()),
                        security: false,
                    })?;
                self.docker
                    .inspect_image(&resolved.pinned)
                    .await
                    .map_err(|e| Refusal {
                        reason: "PullFailed",
                        message: format!("{} was pulled but cannot be read: {e}", resolved.pinned),
                        digest: Some(resolved.digest.clone()),
                        security: false,
                    })?
            }
        };
        let label = info.labels.get(MANIFEST_LABEL).cloned();
        let mut signed_by = None;
        if required {
            let verdict = verifier
                .verify(&resolved, &self.config.supply.policy)
                .await
                .map_err(|e| Refusal::trust(e, Some(resolved.digest.clone())))?;
            match beyond_label(plugin, &resolved.pinned, label.as_deref()) {
                Ok(missing) if missing.is_empty() => {}
                Ok(missing) => {
                    return Err(Refusal {
                        reason: "PermissionsNotSigned",
                        message: format!(
                            "{}: the installed manifest asks for more than the signed image declares ({}); install the manifest the image carries, or publish and sign an image that declares it",
                            resolved.pinned,
                            describe_missing(&missing)
                        ),
                        digest: Some(resolved.digest.clone()),
                        security: true,
                    });
                }
                Err(message) => {
                    return Err(Refusal {
                        reason: "PermissionsNotSigned",
                        message,
                        digest: Some(resolved.digest.clone()),
                        security: true,
                    });
                }
            }
            if !verdict.cached {
                self.audit(
                    name,
                    types::SECURITY,
                    "success",
                    json!({
                        "action": "signature-verified",
                        "image": image,
                        "digest": resolved.digest,
                        "signedBy": verdict.key,
                        "keyFingerprint": verdict.fingerprint,
                    }),
                );
            }
            signed_by = Some(verdict.key);
        }
        Ok((
            Checked {
                run: resolved.pinned.clone(),
                shown: resolved.pinned.clone(),
                digest: resolved.digest,
                signed_by,
                label,
            },
            info,
        ))
    }

    /// Records a refusal: the plugin keeps serving what it served (a failed check of a new
    /// image never stops a running revision); with nothing serving it is `Failed`.
    pub(super) fn refuse(&mut self, name: &str, plugin: &Plugin, refusal: Refusal) {
        let serving = self.serving_key(name).is_some();
        let key = format!(
            "{}|{}|{}",
            refusal.digest.as_deref().unwrap_or("-"),
            refusal.reason,
            refusal.message
        );
        let rt = self.plugins.entry(name.to_owned()).or_default();
        let first = rt.refused.as_deref() != Some(key.as_str());
        rt.refused = Some(key);
        if first {
            self.audit(
                name,
                if refusal.security {
                    types::SECURITY
                } else {
                    types::LIFECYCLE
                },
                if refusal.security {
                    "denied"
                } else {
                    "failure"
                },
                json!({
                    "action": "image-refused",
                    "image": plugin.spec.image,
                    "digest": refusal.digest,
                    "reason": refusal.reason,
                    "message": refusal.message,
                    "keptServing": serving,
                }),
            );
        }
        let reason = format!("{}: {}", refusal.reason, refusal.message);
        if serving {
            self.set_phase(
                name,
                Phase::Degraded,
                Some(format!(
                    "the running revision keeps serving; the new image was refused: {reason}"
                )),
            );
        } else {
            self.set_phase(name, Phase::Failed, Some(reason));
        }
    }
}

/// What the new image's label declares beyond the old one's, and what it dropped: the
/// permission diff of a new revision, for its audit record. `null` when either image has
/// no readable label.
pub(super) fn label_diff(old: Option<&str>, new: Option<&str>) -> serde_json::Value {
    let parse = |text: Option<&str>| {
        text.and_then(|t| berth_api::load::load_single_plugin("label", t.as_bytes()).ok())
    };
    match (parse(old), parse(new)) {
        (Some(old), Some(new)) => {
            let added = berth_api::risk::coverage(
                &new.spec.permissions,
                std::iter::once(&old.spec.permissions),
            )
            .missing;
            let removed = berth_api::risk::coverage(
                &old.spec.permissions,
                std::iter::once(&new.spec.permissions),
            )
            .missing;
            json!({
                "added": added.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "removed": removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        }
        _ => serde_json::Value::Null,
    }
}
