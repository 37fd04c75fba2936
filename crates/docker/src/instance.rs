//! One local installation of Berth and the names and labels of what it creates.
//!
//! Every container, network and volume `berth dev up` creates carries the instance's labels
//! and a name derived from its id, so several installations (a developer's, and each test's)
//! coexist on one engine and `berth dev down` removes only its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::MANAGED_BY_LABEL;

/// Label naming the instance an object belongs to.
pub const INSTANCE_LABEL: &str = "berth.dev/instance";
/// Label naming the plugin a container runs.
pub const PLUGIN_LABEL: &str = "berth.dev/plugin";
/// Label carrying the revision number of a plugin container.
pub const REVISION_LABEL: &str = "berth.dev/revision";
/// Label carrying the sha256 (hex) of the manifest a plugin container was created from.
pub const MANIFEST_HASH_LABEL: &str = "berth.dev/manifest-sha256";
/// Label saying what a container is: [`ROLE_GATEWAY`] or [`ROLE_PLUGIN`].
pub const ROLE_LABEL: &str = "berth.dev/role";
/// [`ROLE_LABEL`] value of the gateway container.
pub const ROLE_GATEWAY: &str = "gateway";
/// [`ROLE_LABEL`] value of plugin containers.
pub const ROLE_PLUGIN: &str = "plugin";
/// [`MANAGED_BY_LABEL`] value on what an instance creates.
pub const MANAGED_BY: &str = "berth";

/// One `berth dev up` installation; every Docker object it creates carries its labels, so
/// several can coexist (tests run many in parallel) and `dev down` removes only its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    id: String,
}

impl Instance {
    /// The instance that keeps its state in `dir`: its id is the first 10 hex digits of the
    /// sha256 of the absolute path (canonical when the directory exists), so the same
    /// directory always finds its containers again, also after a restart of `berth`.
    pub fn for_state_dir(dir: &Path) -> Instance {
        let absolute = dir
            .canonicalize()
            .or_else(|_| std::path::absolute(dir))
            .unwrap_or_else(|_| PathBuf::from(dir));
        let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        let id: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        Instance { id }
    }

    /// The instance with this id (as found on a label).
    pub fn from_id(id: &str) -> Instance {
        Instance { id: id.to_owned() }
    }

    /// The id, as written into names and the [`INSTANCE_LABEL`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Labels on every object of the instance: managed by `berth`, and the instance id.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (INSTANCE_LABEL.to_owned(), self.id.clone()),
        ])
    }

    /// Labels of a plugin container: [`Instance::labels`] plus role, plugin name, revision
    /// and the manifest's hash (to tell whether a running container is still current).
    pub fn plugin_labels(
        &self,
        plugin: &str,
        revision: u64,
        manifest_sha256: &str,
    ) -> HashMap<String, String> {
        let mut labels = self.labels();
        labels.extend([
            (ROLE_LABEL.to_owned(), ROLE_PLUGIN.to_owned()),
            (PLUGIN_LABEL.to_owned(), plugin.to_owned()),
            (REVISION_LABEL.to_owned(), revision.to_string()),
            (MANIFEST_HASH_LABEL.to_owned(), manifest_sha256.to_owned()),
        ]);
        labels
    }

    /// Labels of the gateway container: [`Instance::labels`] plus the gateway role.
    pub fn gateway_labels(&self) -> HashMap<String, String> {
        let mut labels = self.labels();
        labels.insert(ROLE_LABEL.to_owned(), ROLE_GATEWAY.to_owned());
        labels
    }

    /// The plugin's own internal network: `berth-{id}-{plugin}`.
    pub fn plugin_network(&self, plugin: &str) -> String {
        format!("berth-{}-{plugin}", self.id)
    }

    /// The ordinary network the gateway publishes its port from: `berth-{id}-edge`.
    pub fn edge_network(&self) -> String {
        format!("berth-{}-edge", self.id)
    }

    /// The gateway container's name: `berth-{id}-gateway`.
    pub fn gateway_container_name(&self) -> String {
        format!("berth-{}-gateway", self.id)
    }

    /// The name of a plugin's container at `revision`: `berth-{id}-{plugin}-r{revision}`.
    pub fn plugin_container_name(&self, plugin: &str, revision: u64) -> String {
        format!("berth-{}-{plugin}-r{revision}", self.id)
    }

    /// The named volume behind a plugin's filesystem permission:
    /// `berth-{id}-{plugin}-{mount}`.
    pub fn volume(&self, plugin: &str, mount: &str) -> String {
        format!("berth-{}-{plugin}-{mount}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_ten_hex_digits_of_the_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let a = Instance::for_state_dir(dir.path());
        assert_eq!(a.id().len(), 10);
        assert!(a.id().chars().all(|c| c.is_ascii_hexdigit()));
        // The same existing directory, spelled another way, is the same instance.
        std::fs::create_dir(dir.path().join("x")).unwrap();
        let b = Instance::for_state_dir(&dir.path().join("x/.."));
        assert_eq!(a, b);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a, Instance::for_state_dir(other.path()));
    }

    #[test]
    fn a_directory_that_does_not_exist_yet_still_gets_a_stable_id() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("state");
        let before = Instance::for_state_dir(&missing);
        assert_eq!(before, Instance::for_state_dir(&missing));
        assert_eq!(Instance::from_id(before.id()), before);
    }

    #[test]
    fn names_carry_the_instance_id() {
        let i = Instance::from_id("0123456789");
        assert_eq!(i.plugin_network("calc"), "berth-0123456789-calc");
        assert_eq!(i.edge_network(), "berth-0123456789-edge");
        assert_eq!(i.gateway_container_name(), "berth-0123456789-gateway");
        assert_eq!(
            i.plugin_container_name("calc", 3),
            "berth-0123456789-calc-r3"
        );
        assert_eq!(i.volume("calc", "ws"), "berth-0123456789-calc-ws");
    }

    #[test]
    fn labels_name_the_instance_role_and_plugin() {
        let i = Instance::from_id("abc");
        assert_eq!(
            i.labels(),
            HashMap::from([
                (MANAGED_BY_LABEL.to_owned(), "berth".to_owned()),
                (INSTANCE_LABEL.to_owned(), "abc".to_owned()),
            ])
        );
        let p = i.plugin_labels("calc", 7, "ff00");
        assert_eq!(p[ROLE_LABEL], "plugin");
        assert_eq!(p[PLUGIN_LABEL], "calc");
        assert_eq!(p[REVISION_LABEL], "7");
        assert_eq!(p[MANIFEST_HASH_LABEL], "ff00");
        assert_eq!(p[INSTANCE_LABEL], "abc");
        let g = i.gateway_labels();
        assert_eq!(g[ROLE_LABEL], "gateway");
        assert!(!g.contains_key(PLUGIN_LABEL));
    }
}
