//! Adoption at start: plugin containers of this instance that still run what the store
//! wants keep serving across a restart of `berth dev up`; the rest are removed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::Phase;
use berth_store::audit::types;
use serde_json::json;

use super::{Engine, GATEWAY_ALIAS, Runtime, Serving, Supervisor, SupervisorError, plan};

impl<E: Engine> Supervisor<E> {
    /// Takes over running containers whose revision key matches the store and that answer
    /// ready; marks the other plugin containers, and networks of plugins uninstalled while
    /// no supervisor ran, for removal.
    pub(super) async fn adopt(&mut self) -> Result<(), SupervisorError> {
        let containers = self.docker.list_managed(&self.instance).await?;
        let installed = self.store.plugins()?;
        let mut adopted = HashSet::new();
        for inst in &installed {
            let Ok(plugin) = plan::parse_installed(inst) else {
                continue;
            };
            let Ok(image) = self.docker.inspect_image(&plugin.spec.image).await else {
                continue;
            };
            let key = plan::revision_key(&inst.manifest_yaml, &image.id);
            let candidate = containers
                .iter()
                .filter(|c| {
                    c.running
                        && c.role.as_deref() == Some("plugin")
                        && c.plugin.as_deref() == Some(inst.name.as_str())
                        && c.manifest_sha256.as_deref() == Some(key.as_str())
                })
                .max_by_key(|c| c.revision);
            let Some(c) = candidate else { continue };
            let network = self.instance.plugin_network(&inst.name);
            // The gateway may be new (its settings changed): it must reach the plugin.
            let _ = self
                .docker
                .connect_network(&network, &self.gateway_id, &[GATEWAY_ALIAS.to_owned()])
                .await;
            let Ok(Some(ip)) = self.docker.container_address(&c.id, &network).await else {
                continue;
            };
            let endpoint = format!("http://{ip}:{}", plugin.spec.port);
            if self
                .wait_ready(&endpoint, &plugin, Duration::from_secs(5))
                .await
                .is_err()
            {
                continue;
            }
            let revision = c.revision.unwrap_or(0);
            adopted.insert(c.id.clone());
            self.notice(
                Some(&inst.name),
                format!("adopted running revision {revision} ({})", c.name),
            );
            self.audit(
                &inst.name,
                types::LIFECYCLE,
                "success",
                json!({"action": "adopted", "revision": revision, "container": c.name}),
            );
            let rt: &mut Runtime = self.plugins.entry(inst.name.clone()).or_default();
            rt.serving = Some(Serving {
                revision,
                key,
                container_id: c.id.clone(),
                endpoint: Some(endpoint),
                plugin: Arc::new(plugin),
                started: Instant::now(),
            });
            rt.phase = Some(Phase::Ready);
            rt.network_ready = true;
        }
        self.adopted_cleanup = containers
            .into_iter()
            .filter(|c| c.role.as_deref() == Some("plugin") && !adopted.contains(&c.id))
            .map(|c| c.id)
            .collect();
        // Networks of plugins uninstalled while no supervisor ran.
        let names: HashSet<&str> = installed.iter().map(|i| i.name.as_str()).collect();
        for plugin in self.docker.plugins_with_networks(&self.instance).await? {
            if !names.contains(plugin.as_str()) {
                self.leftovers.insert(plugin, (Instant::now(), 0));
            }
        }
        Ok(())
    }
}
