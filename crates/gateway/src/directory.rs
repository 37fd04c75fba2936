//! The static backend of `berth gateway`: plugins and grants loaded from manifest files,
//! endpoints given on the command line. The directory model itself is `berth-contract`'s.

use std::path::PathBuf;

use berth_api::approval::{allowed_calls, allowed_egress};
use berth_api::load::{Manifest, load_manifests};
use berth_api::{Phase, PluginGrant, RiskTier};
use berth_contract::{Endpoint, PluginEntry, StaticDirectory};

use crate::{Error, Result};

/// Loads `Plugin` and `PluginGrant` manifests from `paths` (files or directories) and
/// attaches `endpoints` (`(plugin name, base URL)`).
///
/// A plugin with an endpoint is `Ready`; without one it is `Pending`, unless
/// `status.endpoint` in its manifest names one. Its inter-plugin calls follow
/// [`allowed_calls`] with the `PluginGrant`s in the same files and `auto_approve`.
pub fn load(
    paths: &[PathBuf],
    endpoints: &[(String, String)],
    auto_approve: RiskTier,
) -> Result<StaticDirectory> {
    let mut plugins = Vec::new();
    let mut grants: Vec<PluginGrant> = Vec::new();
    for path in paths {
        for file in yaml_files(path)? {
            let bytes = std::fs::read(&file)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
            let name = file.display().to_string();
            let loaded = load_manifests(&name, &bytes);
            if let Some(problem) = loaded.problems.iter().find(|p| p.is_error()) {
                return Err(Error::Config(problem.to_string()));
            }
            for doc in loaded.documents {
                match doc.manifest {
                    Manifest::Plugin(p) => plugins.push(*p),
                    Manifest::Grant(g) => grants.push(*g),
                }
            }
        }
    }
    for (name, _) in endpoints {
        if !plugins.iter().any(|p| p.name() == name) {
            return Err(Error::Config(format!(
                "--endpoint {name}=…: no Plugin named {name:?} in the given manifests"
            )));
        }
    }
    let now = jiff::Timestamp::now();
    let mut entries = Vec::new();
    for plugin in plugins {
        let name = plugin.name().to_owned();
        let mut urls: Vec<&str> = endpoints
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, u)| u.as_str())
            .collect();
        if urls.is_empty()
            && let Some(url) = plugin.status.as_ref().and_then(|s| s.endpoint.as_deref())
        {
            urls.push(url);
        }
        let parsed = urls
            .into_iter()
            .map(Endpoint::parse)
            .collect::<berth_contract::Result<Vec<_>>>()?;
        let own: Vec<&PluginGrant> = grants.iter().filter(|g| g.spec.plugin == name).collect();
        let granted = allowed_calls(&plugin, &own, now, auto_approve);
        let egress = allowed_egress(&plugin, &own, now, auto_approve);
        let mut entry = PluginEntry::new(plugin)
            .with_endpoints(parsed)
            .with_granted_calls(granted)
            .with_granted_egress(egress);
        if entry.endpoints.is_empty() && !entry.is_disabled() {
            entry.phase = Phase::Pending;
        }
        entries.push(entry);
    }
    Ok(StaticDirectory::new(entries))
}

fn yaml_files(path: &PathBuf) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_file() {
        return Ok(vec![path.clone()]);
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(yaml_files(&p)?);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use berth_api::Plugin;
    use berth_contract::PluginDirectory;

    use super::*;

    fn plugin(yaml: &str) -> Plugin {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn risky_plugin_gets_only_granted_calls() {
        let p = plugin(
            r#"apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: a}
spec:
  image: x
  version: 1.0.0
  permissions:
    network: {egress: [{host: "*", ports: [443]}]}
    plugins: [{name: b, capabilities: [one, two]}]
"#,
        );
        let grant: PluginGrant = serde_yaml::from_str(
            r#"apiVersion: berth.dev/v1alpha1
kind: PluginGrant
metadata: {name: a-grant}
spec:
  plugin: a
  grantedBy: ops
  permissions:
    plugins: [{name: b, capabilities: [two]}]
"#,
        )
        .unwrap();
        let calls = allowed_calls(&p, &[&grant], jiff::Timestamp::now(), RiskTier::Low);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].capabilities, ["two"]);
        assert!(allowed_calls(&p, &[], jiff::Timestamp::now(), RiskTier::Low).is_empty());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            serde_yaml::to_string(&p).unwrap(),
        )
        .unwrap();
        let directory = load(&[dir.path().to_path_buf()], &[], RiskTier::Low).unwrap();
        assert!(
            directory
                .snapshot()
                .get("a")
                .unwrap()
                .granted_calls
                .is_empty()
        );
        let directory = load(&[dir.path().to_path_buf()], &[], RiskTier::Moderate).unwrap();
        assert_eq!(
            directory.snapshot().get("a").unwrap().granted_calls,
            p.spec.permissions.plugins,
            "the configured tier decides, not a hard-coded low"
        );
    }
}
