//! The supply chain of a plugin's image: the digest its reference names now, who signed that
//! digest, and whether the signed manifest covers what the Plugin asks for.
//!
//! [`ImageCheck`] is what the plan reads; [`SupplyChain`] gathers it from the registry
//! (berth-trust), with the credentials of the pull secrets in the plugin's namespace. A tag
//! is resolved again once `--resolve-interval-seconds` have passed or when the spec changes;
//! a `@sha256:` reference is never resolved. Verdicts and labels are kept by digest: a
//! digest names content that cannot change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use berth_api::Plugin;
use berth_contract::protocol::MANIFEST_LABEL;
use berth_trust::{
    Credentials, Error as TrustError, ErrorKind, Policy, Registry, RegistryOptions, Resolved,
    TrustedKey, Verifier, has_registry_host,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::approval::{beyond_label, describe_missing};
use crate::plan::digest_of;

/// Reasons of the `Verified` condition and of `status.verification` beyond berth-trust's own
/// ([`ErrorKind::reason`]: `Unsigned`, `UntrustedSignature`, `MalformedSignature`,
/// `ImageNotFound`, `RegistryUnreachable`, `RegistryUnauthorized`, …).
pub mod reasons {
    /// Signed by a trusted key, and the signed manifest covers the applied permissions.
    pub const SIGNED: &str = "Signed";
    /// Resolved to a digest; no signature is required for this plugin.
    pub const DIGEST_RESOLVED: &str = "DigestResolved";
    /// The applied permissions go beyond the image's signed `dev.berth.manifest` label.
    pub const PERMISSIONS_NOT_SIGNED: &str = "PermissionsNotSigned";
    /// A pull secret named by `--image-pull-secret` does not exist and the registry wants one.
    pub const PULL_SECRET_MISSING: &str = "PullSecretMissing";
    /// A pull secret is not a readable `kubernetes.io/dockerconfigjson` Secret.
    pub const PULL_SECRET_INVALID: &str = "PullSecretInvalid";
    /// The operator may not read a pull secret.
    pub const PULL_SECRET_UNREADABLE: &str = "PullSecretUnreadable";
    /// The image was not checked (the spec is not valid).
    pub const NOT_CHECKED: &str = "NotChecked";
}

/// Cached verdicts and labels kept at most; the caches start over beyond it.
const MAX_CACHED: usize = 4096;

/// How images are resolved and verified; from the operator's flags.
#[derive(Clone, Debug)]
pub struct SupplyChainOptions {
    /// `kubernetes.io/dockerconfigjson` Secrets read from each plugin's namespace.
    pub pull_secrets: Vec<String>,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Trusted keys and the plugins that must be signed.
    pub policy: Policy,
    /// How long a tag's digest is reused.
    pub resolve_interval: Duration,
}

/// The key a digest was found signed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The trusted key's name (its file name).
    pub key: String,
    /// `sha256:HEX` of the key's PEM.
    pub fingerprint: String,
}

/// What the registry says about the spec's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCheck {
    /// `spec.image` as checked.
    pub image: String,
    /// Whether the policy requires this plugin to be signed.
    pub signature_required: bool,
    /// The answer.
    pub outcome: CheckOutcome,
}

/// The answer of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The image may run as this digest.
    Accepted {
        /// `sha256:HEX` of the image manifest.
        digest: String,
        /// Who signed it, when a signature is required.
        signature: Option<Signature>,
    },
    /// The registry answered and the image may not run.
    Refused {
        /// The refused digest, when the reference resolved.
        digest: Option<String>,
        /// CamelCase reason.
        reason: String,
        /// What was found and the fix.
        message: String,
    },
    /// No usable answer (registry unreachable, credentials refused, pull secret missing);
    /// the next check may succeed.
    Unknown {
        /// The digest, when the reference resolved before the failure.
        digest: Option<String>,
        /// CamelCase reason.
        reason: String,
        /// What failed and the fix.
        message: String,
    },
    /// Not checked.
    Skipped {
        /// Why.
        message: String,
    },
}

impl ImageCheck {
    /// The digest the image may run as.
    pub fn accepted_digest(&self) -> Option<&str> {
        match &self.outcome {
            CheckOutcome::Accepted { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// Whatever digest the check learned, accepted or not.
    pub fn digest(&self) -> Option<&str> {
        match &self.outcome {
            CheckOutcome::Accepted { digest, .. } => Some(digest),
            CheckOutcome::Refused { digest, .. } | CheckOutcome::Unknown { digest, .. } => {
                digest.as_deref()
            }
            CheckOutcome::Skipped { .. } => None,
        }
    }

    /// A check that was not made.
    pub fn skipped(plugin: &Plugin, signature_required: bool, message: &str) -> Self {
        ImageCheck {
            image: plugin.spec.image.clone(),
            signature_required,
            outcome: CheckOutcome::Skipped {
                message: message.to_string(),
            },
        }
    }
}

/// `image` with the registry Docker assumes when it names none (`docker.io`, and
/// `library/` for a one-part name), as the kubelet reads it.
pub fn qualified(image: &str) -> String {
    if has_registry_host(image) {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

/// Reads trusted public keys: each path a PEM file or a directory whose every file (but
/// hidden ones, such as a mounted ConfigMap's `..data`) is one. A key is named by its file.
pub fn load_trusted_keys(paths: &[PathBuf]) -> Result<Vec<TrustedKey>, String> {
    let mut keys = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "--require-signature {}: {e}; give a public key PEM file (`berth keygen` writes one) or a directory of them (chart: supplyChain.trustedKeys)",
                path.display()
            )
        })?;
        if !meta.is_dir() {
            keys.push(read_key(path)?);
            continue;
        }
        let entries = std::fs::read_dir(path)
            .map_err(|e| format!("--require-signature {}: {e}", path.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
                    && p.is_file()
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!(
                "--require-signature {}: the directory holds no key file; put the signer's public key (cosign.pub, `berth keygen`) in it",
                path.display()
            ));
        }
        for file in files {
            keys.push(read_key(&file)?);
        }
    }
    Ok(keys)
}

fn read_key(path: &Path) -> Result<TrustedKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--require-signature {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    TrustedKey::from_pem(&name, &text)
        .map_err(|e| format!("--require-signature {}: {}", path.display(), e.message))
}

/// A tag resolved for one plugin.
struct Resolution {
    image: String,
    generation: Option<i64>,
    resolved: Resolved,
    at: Timestamp,
}

/// Registry access with the credentials of one namespace's pull secrets.
#[derive(Clone)]
struct Access {
    registry: Registry,
    namespace: String,
    found: Vec<String>,
    missing: Vec<String>,
}

/// Resolves and verifies plugin images; shared by every reconcile.
pub struct SupplyChain {
    options: SupplyChainOptions,
    resolutions: Mutex<HashMap<String, Resolution>>,
    verdicts: Mutex<HashMap<String, Signature>>,
    labels: Mutex<HashMap<String, Option<String>>>,
}

impl std::fmt::Debug for SupplyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupplyChain")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn refused(digest: Option<&str>, reason: &str, message: String) -> CheckOutcome {
    CheckOutcome::Refused {
        digest: digest.map(str::to_string),
        reason: reason.to_string(),
        message,
    }
}

fn unknown(digest: Option<&str>, reason: &str, message: String) -> CheckOutcome {
    CheckOutcome::Unknown {
        digest: digest.map(str::to_string),
        reason: reason.to_string(),
        message,
    }
}

impl SupplyChain {
    /// A supply chain with these options and empty caches.
    pub fn new(options: SupplyChainOptions) -> Self {
        SupplyChain {
            options,
            resolutions: Mutex::default(),
            verdicts: Mutex::default(),
            labels: Mutex::default(),
        }
    }

    /// The options.
    pub fn options(&self) -> &SupplyChainOptions {
        &self.options
    }

    /// When to look at `plugin`'s image again: a tag after the resolve interval, a digest
    /// reference never on its own account.
    pub fn recheck_after(&self, plugin: &Plugin) -> Option<Duration> {
        digest_of(&plugin.spec.image)
            .is_none()
            .then_some(self.options.resolve_interval)
    }

    /// Forgets what was resolved for a deleted plugin.
    pub fn forget(&self, plugin: &Plugin) {
        lock(&self.resolutions).remove(&cache_key(plugin));
    }

    /// Checks `plugin`'s image. Only an unexpected Kubernetes API error (reading a pull
    /// secret) is an `Err`; every registry answer is an [`ImageCheck`].
    pub async fn check(
        &self,
        client: &Client,
        plugin: &Plugin,
        now: Timestamp,
    ) -> crate::Result<ImageCheck> {
        let signature_required = self.options.policy.requires(plugin.name());
        let outcome = self
            .outcome(client, plugin, signature_required, now)
            .await?;
        Ok(ImageCheck {
            image: plugin.spec.image.clone(),
            signature_required,
            outcome,
        })
    }

    async fn outcome(
        &self,
        client: &Client,
        plugin: &Plugin,
        signature_required: bool,
        now: Timestamp,
    ) -> crate::Result<CheckOutcome> {
        let image = plugin.spec.image.as_str();
        let reference = qualified(image);
        let namespace = plugin.namespace().unwrap_or_default();
        let mut opened: Option<Access> = None;

        // The digest: named in the reference, cached, or asked of the registry.
        let resolved = if let Some(digest) = digest_of(image) {
            match Registry::parse(&reference) {
                Ok(r) => Resolved {
                    pinned: format!("{}/{}@{digest}", r.registry(), r.repository()),
                    registry: r.registry().to_string(),
                    repository: r.repository().to_string(),
                    digest,
                },
                Err(e) => {
                    return Ok(refused(
                        None,
                        e.kind.reason(),
                        format!("spec.image {}", e.message),
                    ));
                }
            }
        } else if let Some(resolved) = self.cached_resolution(plugin, now) {
            resolved
        } else {
            let access = match self.open(&mut opened, client, &namespace).await? {
                Ok(a) => a,
                Err(outcome) => return Ok(outcome),
            };
            match access.registry.resolve(&reference).await {
                Ok(resolved) => {
                    self.remember_resolution(plugin, &resolved, now);
                    resolved
                }
                Err(e) => return Ok(access.failure(&reference, None, e)),
            }
        };
        let digest = resolved.digest.clone();
        if !signature_required {
            return Ok(CheckOutcome::Accepted {
                digest,
                signature: None,
            });
        }

        // Who signed that digest.
        let cached = lock(&self.verdicts).get(&resolved.pinned).cloned();
        let signature = match cached {
            Some(s) => s,
            None => {
                let access = match self.open(&mut opened, client, &namespace).await? {
                    Ok(a) => a,
                    Err(outcome) => return Ok(outcome),
                };
                let verifier = Verifier::new(access.registry.clone());
                match verifier.verify(&resolved, &self.options.policy).await {
                    Ok(v) => {
                        let s = Signature {
                            key: v.key,
                            fingerprint: v.fingerprint,
                        };
                        remember(&self.verdicts, &resolved.pinned, s.clone());
                        s
                    }
                    Err(e) => return Ok(access.failure(&reference, Some(&digest), e)),
                }
            }
        };

        // What the signed manifest declares, against what the Plugin asks for.
        let cached = lock(&self.labels).get(&resolved.pinned).cloned();
        let label = match cached {
            Some(l) => l,
            None => {
                let access = match self.open(&mut opened, client, &namespace).await? {
                    Ok(a) => a,
                    Err(outcome) => return Ok(outcome),
                };
                match access.registry.config_labels(&resolved.pinned).await {
                    Ok(labels) => {
                        let label = labels.get(MANIFEST_LABEL).cloned();
                        remember(&self.labels, &resolved.pinned, label.clone());
                        label
                    }
                    Err(e) => return Ok(access.failure(&reference, Some(&digest), e)),
                }
            }
        };
        Ok(
            match beyond_label(plugin, &resolved.pinned, label.as_deref()) {
                Err(problem) => refused(
                    Some(&digest),
                    reasons::PERMISSIONS_NOT_SIGNED,
                    format!(
                        "spec.image: {problem}; the signature by {} covers no permissions: publish the image with `berth build` and sign it again",
                        signature.key
                    ),
                ),
                Ok(extra) if !extra.is_empty() => refused(
                    Some(&digest),
                    reasons::PERMISSIONS_NOT_SIGNED,
                    format!(
                        "spec.permissions asks for {} beyond the dev.berth.manifest label of {} signed by {}: remove them from the Plugin, or publish an image whose berth.yaml declares them and sign it",
                        describe_missing(&extra),
                        resolved.pinned,
                        signature.key
                    ),
                ),
                Ok(_) => CheckOutcome::Accepted {
                    digest,
                    signature: Some(signature),
                },
            },
        )
    }

    /// Registry access with the namespace's pull secrets, read once per check.
    async fn open(
        &self,
        slot: &mut Option<Access>,
        client: &Client,
        namespace: &str,
    ) -> crate::Result<Result<Access, CheckOutcome>> {
        if let Some(access) = slot {
            return Ok(Ok(access.clone()));
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut credentials = Credentials::none();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in &self.options.pull_secrets {
            let fix = format!(
                "recreate it with `kubectl create secret docker-registry {name} -n {namespace} --docker-server=HOST --docker-username=USER --docker-password=PASSWORD`"
            );
            let secret = match secrets.get_opt(name).await {
                Ok(Some(secret)) => secret,
                Ok(None) => {
                    missing.push(name.clone());
                    continue;
                }
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    return Ok(Err(unknown(
                        None,
                        reasons::PULL_SECRET_UNREADABLE,
                        format!(
                            "the operator may not read Secret {namespace}/{name} (named by --image-pull-secret): grant its ServiceAccount get on secrets in {namespace} (the chart's RBAC does)"
                        ),
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let type_ = secret.type_.as_deref().unwrap_or("Opaque");
            if type_ != "kubernetes.io/dockerconfigjson" {
                return Ok(Err(unknown(
                    None,
                    reasons::PULL_SECRET_INVALID,
                    format!(
                        "Secret {namespace}/{name} (named by --image-pull-secret) has type {type_}, not kubernetes.io/dockerconfigjson: {fix}"
                    ),
                )));
            }
            let Some(bytes) = secret
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
            else {
                return Ok(Err(unknown(
                    None,
                    reasons::PULL_SECRET_INVALID,
                    format!(
                        "Secret {namespace}/{name} (named by --image-pull-secret) has no .dockerconfigjson key: {fix}"
                    ),
                )));
            };
            let source = format!("Secret {namespace}/{name} key .dockerconfigjson");
            match Credentials::from_docker_config(&source, &bytes.0) {
                Ok(c) => credentials.merge(c),
                Err(e) => {
                    return Ok(Err(unknown(
                        None,
                        reasons::PULL_SECRET_INVALID,
                        format!("{}: {fix}", e.message),
                    )));
                }
            }
            found.push(name.clone());
        }
        let access = Access {
            registry: Registry::new(RegistryOptions {
                insecure: self.options.insecure_registries.clone(),
                credentials,
            }),
            namespace: namespace.to_string(),
            found,
            missing,
        };
        *slot = Some(access.clone());
        Ok(Ok(access))
    }

    fn cached_resolution(&self, plugin: &Plugin, now: Timestamp) -> Option<Resolved> {
        let resolutions = lock(&self.resolutions);
        let r = resolutions.get(&cache_key(plugin))?;
        let age = now.as_second().saturating_sub(r.at.as_second());
        let fresh = age >= 0
            && (age as u64) < self.options.resolve_interval.as_secs()
            && r.image == plugin.spec.image
            && r.generation == plugin.metadata.generation;
        fresh.then(|| r.resolved.clone())
    }

    fn remember_resolution(&self, plugin: &Plugin, resolved: &Resolved, now: Timestamp) {
        let mut resolutions = lock(&self.resolutions);
        if resolutions.len() >= MAX_CACHED {
            resolutions.clear();
        }
        resolutions.insert(
            cache_key(plugin),
            Resolution {
                image: plugin.spec.image.clone(),
                generation: plugin.metadata.generation,
                resolved: resolved.clone(),
                at: now,
            },
        );
    }
}

fn remember<T>(cache: &Mutex<HashMap<String, T>>, key: &str, value: T) {
    let mut cache = lock(cache);
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    cache.insert(key.to_string(), value);
}

fn cache_key(plugin: &Plugin) -> String {
    format!(
        "{}/{}",
        plugin.namespace().unwrap_or_default(),
        plugin.name_any()
    )
}

fn list(names: &[String], namespace: &str) -> String {
    names
        .iter()
        .map(|n| format!("{namespace}/{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Access {
    /// What a registry error means for the plugin, with the fix.
    fn failure(&self, reference: &str, digest: Option<&str>, e: TrustError) -> CheckOutcome {
        let host = Registry::parse(reference)
            .map(|r| r.registry().to_string())
            .unwrap_or_else(|_| "the registry".into());
        let reason = e.kind.reason();
        let ns = &self.namespace;
        match e.kind {
            ErrorKind::Unauthorized if !self.missing.is_empty() => unknown(
                digest,
                reasons::PULL_SECRET_MISSING,
                format!(
                    "spec.image {reference}: {host} refused access and the pull secret {} named by --image-pull-secret does not exist: create it with `kubectl create secret docker-registry NAME -n {ns} --docker-server={host} --docker-username=USER --docker-password=PASSWORD`, or correct supplyChain.pullSecrets",
                    list(&self.missing, ns)
                ),
            ),
            ErrorKind::Unauthorized if self.found.is_empty() => unknown(
                digest,
                reason,
                format!(
                    "spec.image {}; no pull secret is configured: create a docker-registry Secret in {ns} and name it in supplyChain.pullSecrets (--image-pull-secret)",
                    e.message
                ),
            ),
            ErrorKind::Unauthorized => unknown(
                digest,
                reason,
                format!(
                    "spec.image {}; the credentials come from Secret {}: put working credentials for {host} in it (`kubectl create secret docker-registry NAME -n {ns} --docker-server={host} --docker-username=USER --docker-password=PASSWORD --dry-run=client -o yaml | kubectl apply -f -`)",
                    e.message,
                    list(&self.found, ns)
                ),
            ),
            ErrorKind::Unreachable => unknown(
                digest,
                reason,
                format!(
                    "spec.image {}; the operator's NetworkPolicy must let it reach {host} (supplyChain.registryEgress), and a registry that serves plain HTTP must be listed in supplyChain.insecureRegistries (--insecure-registry {host})",
                    e.message
                ),
            ),
            ErrorKind::NotFound => refused(
                digest,
                reason,
                format!("spec.image {}, or correct spec.image", e.message),
            ),
            kind if kind.is_refusal() || kind == ErrorKind::BadReference => {
                refused(digest, reason, format!("spec.image {}", e.message))
            }
            _ => unknown(digest, reason, format!("spec.image {}", e.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_registry_are_docker_hub_names() {
        assert_eq!(
            qualified("berth/calculator:0.1.0"),
            "docker.io/berth/calculator:0.1.0"
        );
        assert_eq!(qualified("busybox"), "docker.io/library/busybox");
        assert_eq!(
            qualified("127.0.0.1:5000/berth/calculator@sha256:00"),
            "127.0.0.1:5000/berth/calculator@sha256:00"
        );
    }

    #[test]
    fn trusted_keys_are_read_from_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let release = berth_trust::keys::generate(b"").unwrap();
        let team = berth_trust::keys::generate(b"").unwrap();
        std::fs::write(dir.path().join("release.pub"), &release.public_pem).unwrap();
        std::fs::write(dir.path().join("team.pub"), &team.public_pem).unwrap();
        // A mounted ConfigMap's bookkeeping entries are skipped.
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let keys = load_trusted_keys(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["release.pub", "team.pub"]);
        let one = load_trusted_keys(&[dir.path().join("team.pub")]).unwrap();
        assert_eq!(one[0].fingerprint, keys[1].fingerprint);

        let e = load_trusted_keys(&[dir.path().join("absent.pub")]).unwrap_err();
        assert!(e.starts_with("--require-signature "), "{e}");
        assert!(e.contains("absent.pub"), "{e}");
        std::fs::write(dir.path().join("bad.pub"), "not a key").unwrap();
        let e = load_trusted_keys(&[dir.path().join("bad.pub")]).unwrap_err();
        assert!(
            e.contains("bad.pub") && e.contains("not a public key PEM"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = load_trusted_keys(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(e.contains("holds no key file"), "{e}");
    }
}
