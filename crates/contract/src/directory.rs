//! Where the gateway finds plugins: the [`PluginDirectory`] trait each backend implements,
//! and [`StaticDirectory`], an in-memory implementation a backend (or a test) feeds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_api::risk::assess;
use berth_api::{EgressRule, Phase, Plugin, PluginCall};
use http::Uri;
use tokio::sync::watch;

use crate::credential;
use crate::{Error, Result};

/// One plugin as the gateway needs to see it.
#[derive(Clone, Debug)]
pub struct PluginEntry {
    /// The manifest of the revision that serves.
    pub plugin: Arc<Plugin>,
    /// Changes whenever the manifest changes; compiled schemas are cached per revision.
    pub revision: u64,
    /// Lifecycle phase; `Ready` and `Degraded` serve.
    pub phase: Phase,
    /// Base URLs (`http://host:port`) of the instances that passed their health check.
    pub endpoints: Vec<Endpoint>,
    /// Inter-plugin calls this plugin may make: requested *and* granted (or auto-approved).
    pub granted_calls: Vec<PluginCall>,
    /// Egress this plugin may use through the egress proxy: requested *and* granted (or
    /// auto-approved), by `berth_api::approval::allowed_egress`.
    pub granted_egress: Vec<EgressRule>,
    /// SHA-256 digests of the plugin's own tokens (`BERTH_PLUGIN_TOKEN`); a caller that
    /// presents one of them acts as this plugin.
    pub token_sha256: Vec<[u8; 32]>,
    /// Risk score (0–100) of the requested permissions.
    pub risk_score: u32,
}

impl PluginEntry {
    /// A `Ready` entry for `plugin` at revision 1 with no endpoints, no grants and no tokens.
    pub fn new(plugin: Plugin) -> Self {
        let risk_score = assess(&plugin.spec.permissions, &plugin.spec.hooks).score;
        let phase = if plugin.spec.enabled {
            Phase::Ready
        } else {
            Phase::Disabled
        };
        Self {
            plugin: Arc::new(plugin),
            revision: 1,
            phase,
            endpoints: Vec::new(),
            granted_calls: Vec::new(),
            granted_egress: Vec::new(),
            token_sha256: Vec::new(),
            risk_score,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    /// Sets the endpoints.
    pub fn with_endpoints(mut self, endpoints: Vec<Endpoint>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Sets the phase.
    pub fn with_phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    /// Sets the revision.
    pub fn with_revision(mut self, revision: u64) -> Self {
        self.revision = revision;
        self
    }

    /// Sets the granted inter-plugin calls.
    pub fn with_granted_calls(mut self, calls: Vec<PluginCall>) -> Self {
        self.granted_calls = calls;
        self
    }

    /// Sets the granted egress.
    pub fn with_granted_egress(mut self, egress: Vec<EgressRule>) -> Self {
        self.granted_egress = egress;
        self
    }

    /// Adds a plugin token (given in clear; only its digest is kept).
    pub fn with_token(mut self, token: &str) -> Self {
        self.token_sha256.push(credential::digest(token));
        self
    }

    /// Adds a plugin token by its SHA-256 digest, for backends that never hold the token
    /// itself (the supervisor pushes digests only).
    pub fn with_token_digest(mut self, digest: [u8; 32]) -> Self {
        self.token_sha256.push(digest);
        self
    }

    /// Sets the risk score (0–100), for backends that assessed it themselves.
    pub fn with_risk_score(mut self, risk_score: u32) -> Self {
        self.risk_score = risk_score;
        self
    }

    /// True when the plugin is enabled, in a serving phase and has an endpoint.
    pub fn is_ready(&self) -> bool {
        self.plugin.spec.enabled
            && matches!(self.phase, Phase::Ready | Phase::Degraded)
            && !self.endpoints.is_empty()
    }

    /// True when the plugin was switched off (`enabled: false` or phase `Disabled`).
    pub fn is_disabled(&self) -> bool {
        !self.plugin.spec.enabled || self.phase == Phase::Disabled
    }

    /// True when this plugin's grants cover calling `capability` of `target`.
    pub fn may_call(&self, target: &str, capability: &str) -> bool {
        self.granted_calls.iter().any(|call| {
            call.name == target
                && call
                    .capabilities
                    .iter()
                    .any(|c| c == "*" || c == capability)
        })
    }
}

/// A plugin instance's base URL, e.g. `http://10.0.0.7:8080`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Endpoint {
    /// Parses `http://host:port` (a trailing `/` is allowed; no other path).
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::Endpoint {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| invalid("no scheme"))?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(invalid(
                "only http:// is supported between gateway and plugins",
            ));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("give the base URL only, without a path"));
        }
        Ok(Self { scheme, authority })
    }

    /// The URI of `path` (starting with `/`) on this endpoint.
    pub fn uri(&self, path: &str) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .unwrap_or_default()
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Every plugin at one moment. Immutable; a change publishes a new snapshot.
#[derive(Clone, Debug, Default)]
pub struct DirectorySnapshot {
    /// Increases with every published change.
    pub version: u64,
    /// False until the backend has loaded its first full view (the gateway is not ready).
    pub synced: bool,
    plugins: BTreeMap<String, Arc<PluginEntry>>,
    tokens: HashMap<[u8; 32], String>,
}

impl DirectorySnapshot {
    /// A snapshot of `entries`, keyed by plugin name.
    pub fn new(version: u64, synced: bool, entries: impl IntoIterator<Item = PluginEntry>) -> Self {
        let mut snapshot = Self {
            version,
            synced,
            ..Self::default()
        };
        for entry in entries {
            snapshot
                .plugins
                .insert(entry.name().to_owned(), Arc::new(entry));
        }
        snapshot.index_tokens();
        snapshot
    }

    fn index_tokens(&mut self) {
        self.tokens = self
            .plugins
            .values()
            .flat_map(|e| e.token_sha256.iter().map(|t| (*t, e.name().to_owned())))
            .collect();
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<PluginEntry>> {
        self.plugins.get(name)
    }

    /// Every plugin, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<PluginEntry>> {
        self.plugins.values()
    }

    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// True when there is no plugin.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The plugin whose token has this SHA-256 digest.
    pub fn plugin_for_token(&self, digest: &[u8; 32]) -> Option<&str> {
        self.tokens.get(digest).map(String::as_str)
    }
}

/// How the gateway finds plugins. Backends implement it: the Docker backend from its
/// containers and store, the operator from `Plugin` objects and Endpoints.
///
/// The hot path calls [`PluginDirectory::snapshot`] once per request, so it must be cheap
/// (an `Arc` clone). Publish changes as whole new snapshots; the gateway notices through
/// [`PluginDirectory::subscribe`] and through each entry's `revision`.
pub trait PluginDirectory: Send + Sync + 'static {
    /// The current view.
    fn snapshot(&self) -> Arc<DirectorySnapshot>;
    /// A receiver that sees every new snapshot.
    fn subscribe(&self) -> watch::Receiver<Arc<DirectorySnapshot>>;
}

/// An in-memory directory: plugins and endpoints given up front (by `berth gateway` from
/// manifests and `--endpoint` flags, or by tests), changed with [`StaticDirectory::upsert`]
/// and friends. A backend may also embed one and publish its view through it (the
/// operator's cluster directory does).
#[derive(Debug)]
pub struct StaticDirectory {
    tx: watch::Sender<Arc<DirectorySnapshot>>,
}

impl StaticDirectory {
    /// A synced directory holding `entries`.
    pub fn new(entries: impl IntoIterator<Item = PluginEntry>) -> Self {
        let (tx, _) = watch::channel(Arc::new(DirectorySnapshot::new(1, true, entries)));
        Self { tx }
    }

    /// An empty directory that reports not synced until [`StaticDirectory::replace_all`].
    pub fn unsynced() -> Self {
        let (tx, _) = watch::channel(Arc::new(DirectorySnapshot::default()));
        Self { tx }
    }

    /// Adds or replaces a plugin. A changed manifest should come with a new revision.
    pub fn upsert(&self, entry: PluginEntry) {
        self.modify(|map| {
            map.insert(entry.name().to_owned(), entry);
        });
    }

    /// Removes a plugin.
    pub fn remove(&self, name: &str) {
        self.modify(|map| {
            map.remove(name);
        });
    }

    /// Changes a plugin's phase.
    pub fn set_phase(&self, name: &str, phase: Phase) {
        self.modify(|map| {
            if let Some(e) = map.get_mut(name) {
                e.phase = phase;
            }
        });
    }

    /// Replaces a plugin's endpoints.
    pub fn set_endpoints(&self, name: &str, endpoints: Vec<Endpoint>) {
        self.modify(|map| {
            if let Some(e) = map.get_mut(name) {
                e.endpoints = endpoints;
            }
        });
    }

    /// Replaces every entry at once and marks the directory synced.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = PluginEntry>) {
        let version = self.tx.borrow().version + 1;
        self.tx
            .send_replace(Arc::new(DirectorySnapshot::new(version, true, entries)));
    }

    fn modify(&self, f: impl FnOnce(&mut BTreeMap<String, PluginEntry>)) {
        self.tx.send_modify(|current| {
            let mut map: BTreeMap<String, PluginEntry> = current
                .plugins
                .iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect();
            f(&mut map);
            *current = Arc::new(DirectorySnapshot::new(
                current.version + 1,
                current.synced,
                map.into_values(),
            ));
        });
    }
}

impl PluginDirectory for StaticDirectory {
    fn snapshot(&self) -> Arc<DirectorySnapshot> {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<DirectorySnapshot>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(yaml: &str) -> Plugin {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn endpoint_accepts_base_urls_only() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            e.uri("/healthz").to_string(),
            "http://127.0.0.1:8080/healthz"
        );
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://x:1/v1").is_err());
        assert!(Endpoint::parse("nonsense").is_err());
    }

    #[test]
    fn entry_is_ready_only_when_enabled_serving_and_reachable() {
        let p = plugin(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: a}\nspec: {image: x, version: 1.0.0}",
        );
        let entry = PluginEntry::new(p);
        assert!(!entry.is_ready(), "no endpoint");
        let entry = entry.with_endpoints(vec![Endpoint::parse("http://127.0.0.1:1").unwrap()]);
        assert!(entry.is_ready());
        assert!(entry.clone().with_phase(Phase::Degraded).is_ready());
        assert!(!entry.clone().with_phase(Phase::Deploying).is_ready());
    }

    #[test]
    fn plugin_tokens_are_indexed_by_digest() {
        let p = plugin(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: a}\nspec: {image: x, version: 1.0.0}",
        );
        let dir = StaticDirectory::new([PluginEntry::new(p).with_token("secret")]);
        let digest = credential::digest("secret");
        assert_eq!(dir.snapshot().plugin_for_token(&digest), Some("a"));
        dir.remove("a");
        assert_eq!(dir.snapshot().plugin_for_token(&digest), None);
    }
}
