//! Fixtures of the control plane's tests: a state directory in a temporary folder and a
//! small manifest whose egress can be widened.

use std::path::PathBuf;

use berth_api::Plugin;
use berth_store::{AuditEvent, AuditQuery, Store};

use super::StateDir;

/// A temporary state directory with its store; the folder goes when this is dropped.
pub(super) struct Fixture {
    pub(super) tmp: tempfile::TempDir,
    pub(super) state: StateDir,
    pub(super) store: Store,
}

impl Fixture {
    pub(super) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::create(tmp.path().join("state")).unwrap();
        let store = state.open_store().unwrap();
        Self { tmp, state, store }
    }

    /// Writes `yaml` as `file` in the temporary folder and loads it.
    pub(super) fn manifest(&self, file: &str, yaml: &str) -> (PathBuf, Plugin) {
        let path = self.tmp.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        let plugin = berth_api::load::load_single_plugin(file, yaml.as_bytes()).unwrap();
        (path, plugin)
    }

    /// Every audit event of `plugin`, oldest first.
    pub(super) fn audit(&self, plugin: &str) -> Vec<AuditEvent> {
        self.store
            .query_audit(&AuditQuery {
                plugin: Some(plugin.into()),
                ..AuditQuery::default()
            })
            .unwrap()
    }
}

/// A plugin `calc` at `version`, reaching `egress` ports on any host.
pub(super) fn calc_yaml(version: &str, egress: &[u16]) -> String {
    let permissions = if egress.is_empty() {
        String::new()
    } else {
        format!(
            "  permissions:\n    network:\n      egress: [{{host: \"*\", ports: {egress:?}}}]\n"
        )
    };
    format!(
        "apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata:
  name: calc
spec:
  image: berth/calc:{version}
  version: {version}
  capabilities:
    - name: evaluate
      input: {{type: object}}
      output: {{type: object}}
{permissions}  resources:
    memory: 16Mi
"
    )
}
