//! The Docker backend's [`PluginDirectory`]: what the supervisor knows, as the gateway
//! needs to see it. The supervisor publishes into it; a pusher sends every snapshot to the
//! gateway container.

use std::sync::Arc;

use berth_gateway::directory::SnapshotWire;
use berth_gateway::{DirectorySnapshot, PluginDirectory, PluginEntry};
use tokio::sync::watch;

/// Plugins of one local installation, as published by the supervisor.
#[derive(Debug)]
pub struct DockerDirectory {
    tx: watch::Sender<Arc<DirectorySnapshot>>,
}

impl Default for DockerDirectory {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerDirectory {
    /// An empty, not yet synced directory.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(DirectorySnapshot::default()));
        Self { tx }
    }

    /// Publishes `entries` as the whole directory at `version`.
    pub fn publish(&self, version: u64, entries: Vec<PluginEntry>) {
        self.tx
            .send_replace(Arc::new(DirectorySnapshot::new(version, true, entries)));
    }

    /// The current snapshot in the gateway's wire format.
    pub fn wire(&self) -> SnapshotWire {
        let snapshot = self.snapshot();
        SnapshotWire::from_entries(snapshot.version, snapshot.plugins().map(|e| e.as_ref()))
    }
}

impl PluginDirectory for DockerDirectory {
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

    #[test]
    fn published_snapshot_is_seen_by_subscribers_and_on_the_wire() {
        let dir = DockerDirectory::new();
        let mut rx = dir.subscribe();
        assert!(!dir.snapshot().synced);
        let plugin = berth_api::load::load_single_plugin(
            "p.yaml",
            b"apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: p}\nspec: {image: 'berth/p:1.0.0', version: 1.0.0}\n",
        )
        .unwrap();
        dir.publish(7, vec![PluginEntry::new(plugin).with_revision(3)]);
        assert!(rx.has_changed().unwrap());
        let snap = rx.borrow_and_update().clone();
        assert!(snap.synced);
        assert_eq!(snap.version, 7);
        let wire = dir.wire();
        assert_eq!(wire.version, 7);
        assert_eq!(wire.plugins[0].revision, 3);
    }
}
