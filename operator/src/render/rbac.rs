//! Role and RoleBinding, rendered only for granted Kubernetes permissions.

use berth_api::{Permissions, Plugin};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::{RenderOptions, namespace_of, object_meta};

/// A namespaced Role with one rule per granted Kubernetes permission.
pub fn render_role(plugin: &Plugin, options: &RenderOptions, granted: &Permissions) -> Role {
    let rules = granted
        .kubernetes
        .iter()
        .map(|rule| PolicyRule {
            api_groups: Some(if rule.api_groups.is_empty() {
                vec![String::new()]
            } else {
                rule.api_groups.clone()
            }),
            resources: Some(rule.resources.clone()),
            verbs: rule.verbs.clone(),
            resource_names: (!rule.resource_names.is_empty()).then(|| rule.resource_names.clone()),
            non_resource_urls: None,
        })
        .collect();
    Role {
        metadata: object_meta(plugin, options, &plugin.spec.version),
        rules: Some(rules),
    }
}

/// Binds the plugin's Role to its ServiceAccount.
pub fn render_role_binding(plugin: &Plugin, options: &RenderOptions) -> RoleBinding {
    RoleBinding {
        metadata: object_meta(plugin, options, &plugin.spec.version),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: plugin.name().to_string(),
        },
        subjects: Some(vec![Subject {
            api_group: None,
            kind: "ServiceAccount".into(),
            name: plugin.name().to_string(),
            namespace: Some(namespace_of(plugin, options).to_string()),
        }]),
    }
}
