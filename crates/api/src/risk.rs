//! Risk scoring, grant coverage and the permission diff between versions.
//!
//! The weights are documented in `docs/risk.md`; a test there keeps the table and these
//! constants in step.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::permissions::{
    Access, EgressRule, FilesystemMount, KubernetesRule, Permissions, PluginCall, SecretRef,
};
use crate::plugin::{HookMode, HookSubscription};

/// Weight of egress to any host (`host: "*"`) or any address (`/0`).
pub const W_EGRESS_ANY: u32 = 45;
/// Weight of each `*.domain` wildcard host.
pub const W_EGRESS_WILDCARD: u32 = 15;
/// Weight of each CIDR wider than a /16 (IPv4) or /48 (IPv6).
pub const W_EGRESS_WIDE_CIDR: u32 = 20;
/// Weight of each single host or narrow CIDR.
pub const W_EGRESS_HOST: u32 = 8;
/// Weight of each read-only mount.
pub const W_MOUNT_READ: u32 = 5;
/// Weight of each read-write mount.
pub const W_MOUNT_WRITE: u32 = 15;
/// Weight of each secret.
pub const W_SECRET: u32 = 10;
/// Weight of each other plugin called with named capabilities.
pub const W_PLUGIN_CALL: u32 = 4;
/// Weight of each other plugin called with `*` capabilities.
pub const W_PLUGIN_CALL_ALL: u32 = 8;
/// Weight of each Kubernetes rule with read verbs only.
pub const W_KUBE_READ: u32 = 10;
/// Weight of each Kubernetes rule with a write verb.
pub const W_KUBE_WRITE: u32 = 25;
/// Weight of each Kubernetes rule with a `*` verb, resource or group, or touching secrets.
pub const W_KUBE_BROAD: u32 = 40;
/// Weight of each filter hook (it can modify or veto other callers' events).
pub const W_FILTER_HOOK: u32 = 3;

/// Risk tiers: low < 25 ≤ moderate < 50 ≤ high < 75 ≤ critical.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RiskTier {
    /// Score below 25: runs without a grant by default.
    Low,
    /// 25 to 49.
    Moderate,
    /// 50 to 74.
    High,
    /// 75 and above.
    Critical,
}

impl RiskTier {
    /// The tier a score falls in.
    pub fn from_score(score: u32) -> Self {
        match score {
            0..25 => RiskTier::Low,
            25..50 => RiskTier::Moderate,
            50..75 => RiskTier::High,
            _ => RiskTier::Critical,
        }
    }

    /// The lower-case name used in flags, status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Moderate => "moderate",
            RiskTier::High => "high",
            RiskTier::Critical => "critical",
        }
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RiskTier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(RiskTier::Low),
            "moderate" => Ok(RiskTier::Moderate),
            "high" => Ok(RiskTier::High),
            "critical" => Ok(RiskTier::Critical),
            other => Err(format!(
                "unknown risk tier {other:?} (use low, moderate, high or critical)"
            )),
        }
    }
}

/// Score, tier and the reasons that add up to the score.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskAssessment {
    /// 0..=100.
    #[schemars(range(min = 0, max = 100))]
    pub score: u32,
    /// Tier of the score.
    pub tier: RiskTier,
    /// One line per contribution, e.g. `egress to any host (+45)`.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// Scores requested permissions and hook subscriptions. Pure and deterministic.
pub fn assess(permissions: &Permissions, hooks: &[HookSubscription]) -> RiskAssessment {
    let mut total = 0u32;
    let mut reasons = Vec::new();
    let mut add = |weight: u32, reason: String| {
        total = total.saturating_add(weight);
        reasons.push(format!("{reason} (+{weight})"));
    };
    for rule in &permissions.network.egress {
        let ports = join_ports(&rule.ports);
        if let Some(host) = &rule.host {
            if host == "*" {
                add(W_EGRESS_ANY, format!("egress to any host on {ports}"));
            } else if host.starts_with("*.") {
                add(
                    W_EGRESS_WILDCARD,
                    format!("egress to every subdomain {host} on {ports}"),
                );
            } else {
                add(W_EGRESS_HOST, format!("egress to {host} on {ports}"));
            }
        }
        if let Some(cidr) = &rule.cidr {
            match cidr.parse::<IpNet>() {
                Ok(net) if net.prefix_len() == 0 => add(
                    W_EGRESS_ANY,
                    format!("egress to any address {cidr} on {ports}"),
                ),
                Ok(net) if is_wide(&net) => add(
                    W_EGRESS_WIDE_CIDR,
                    format!("egress to wide network {cidr} on {ports}"),
                ),
                _ => add(W_EGRESS_HOST, format!("egress to {cidr} on {ports}")),
            }
        }
    }
    for mount in &permissions.filesystem {
        match mount.access {
            Access::ReadOnly => add(
                W_MOUNT_READ,
                format!("reads volume {} at {}", mount.name, mount.mount_path),
            ),
            Access::ReadWrite => add(
                W_MOUNT_WRITE,
                format!("writes volume {} at {}", mount.name, mount.mount_path),
            ),
        }
    }
    for secret in &permissions.secrets {
        add(
            W_SECRET,
            format!("reads secret {} as ${}", secret.name, secret.env),
        );
    }
    for call in &permissions.plugins {
        if call.capabilities.iter().any(|c| c == "*") {
            add(
                W_PLUGIN_CALL_ALL,
                format!("calls every capability of plugin {}", call.name),
            );
        } else {
            add(
                W_PLUGIN_CALL,
                format!(
                    "calls plugin {} ({})",
                    call.name,
                    call.capabilities.join(", ")
                ),
            );
        }
    }
    for rule in &permissions.kubernetes {
        let what = format!(
            "kubernetes {} on {}",
            rule.verbs.join("/"),
            rule.resources.join(", ")
        );
        if is_broad_kube_rule(rule) {
            add(W_KUBE_BROAD, format!("broad {what}"));
        } else if rule.verbs.iter().all(|v| is_read_verb(v)) {
            add(W_KUBE_READ, what);
        } else {
            add(W_KUBE_WRITE, what);
        }
    }
    for hook in hooks.iter().filter(|h| h.mode == HookMode::Filter) {
        add(
            W_FILTER_HOOK,
            format!("filter hook {} can modify or veto events", hook.name),
        );
    }
    let score = total.min(100);
    RiskAssessment {
        score,
        tier: RiskTier::from_score(score),
        reasons,
    }
}

fn join_ports(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    if list.len() == 1 {
        format!("port {}", list[0])
    } else {
        format!("ports {}", list.join(","))
    }
}

fn is_wide(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.prefix_len() < 16,
        IpNet::V6(n) => n.prefix_len() < 48,
    }
}

fn is_read_verb(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

fn is_broad_kube_rule(rule: &KubernetesRule) -> bool {
    rule.verbs.iter().any(|v| v == "*")
        || rule.resources.iter().any(|r| r == "*" || r == "secrets")
        || rule.api_groups.iter().any(|g| g == "*")
}

/// One atomic permission, the unit in which coverage and diffs are computed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionItem {
    /// Connect to a host (or `*.domain`, `*`) on a port.
    EgressHost {
        /// Host pattern.
        host: String,
        /// Port.
        port: u16,
    },
    /// Connect to a network on a port.
    EgressCidr {
        /// Network, as written.
        cidr: String,
        /// Port.
        port: u16,
    },
    /// Mount a volume at a path.
    Mount {
        /// Volume name.
        name: String,
        /// Path inside the container.
        mount_path: String,
        /// Access.
        access: Access,
    },
    /// Read a secret into an env var.
    Secret {
        /// Secret name.
        name: String,
        /// Key within the secret.
        key: Option<String>,
        /// Variable.
        env: String,
    },
    /// Call another plugin's capability (`*` = any).
    PluginCall {
        /// Plugin.
        plugin: String,
        /// Capability.
        capability: String,
    },
    /// Use a Kubernetes verb on a resource (optionally by name).
    Kubernetes {
        /// API group.
        api_group: String,
        /// Resource.
        resource: String,
        /// Verb.
        verb: String,
        /// Object names it is limited to; empty = all.
        resource_names: Vec<String>,
    },
}

impl fmt::Display for PermissionItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionItem::EgressHost { host, port } => write!(f, "network egress {host}:{port}"),
            PermissionItem::EgressCidr { cidr, port } => {
                write!(f, "network egress {cidr} port {port}")
            }
            PermissionItem::Mount {
                name,
                mount_path,
                access,
            } => {
                write!(f, "filesystem {name} at {mount_path} ({})", access.as_str())
            }
            PermissionItem::Secret { name, env, .. } => write!(f, "secret {name} as ${env}"),
            PermissionItem::PluginCall { plugin, capability } => {
                write!(f, "call plugin {plugin} capability {capability}")
            }
            PermissionItem::Kubernetes {
                api_group,
                resource,
                verb,
                resource_names,
            } => {
                let group = if api_group.is_empty() {
                    "core"
                } else {
                    api_group
                };
                write!(f, "kubernetes {verb} {resource} ({group})")?;
                if !resource_names.is_empty() {
                    write!(f, " named {}", resource_names.join(","))?;
                }
                Ok(())
            }
        }
    }
}

/// Flattens permissions into atomic items (sorted, without duplicates).
pub fn items(permissions: &Permissions) -> BTreeSet<PermissionItem> {
    let mut out = BTreeSet::new();
    for EgressRule { host, cidr, ports } in &permissions.network.egress {
        for &port in ports {
            if let Some(host) = host {
                out.insert(PermissionItem::EgressHost {
                    host: host.to_ascii_lowercase(),
                    port,
                });
            }
            if let Some(cidr) = cidr {
                out.insert(PermissionItem::EgressCidr {
                    cidr: cidr.clone(),
                    port,
                });
            }
        }
    }
    for FilesystemMount {
        name,
        mount_path,
        access,
    } in &permissions.filesystem
    {
        out.insert(PermissionItem::Mount {
            name: name.clone(),
            mount_path: mount_path.clone(),
            access: *access,
        });
    }
    for SecretRef { name, env, key } in &permissions.secrets {
        out.insert(PermissionItem::Secret {
            name: name.clone(),
            key: key.clone(),
            env: env.clone(),
        });
    }
    for PluginCall { name, capabilities } in &permissions.plugins {
        for capability in capabilities {
            out.insert(PermissionItem::PluginCall {
                plugin: name.clone(),
                capability: capability.clone(),
            });
        }
    }
    for rule in &permissions.kubernetes {
        let groups: Vec<String> = if rule.api_groups.is_empty() {
            vec![String::new()]
        } else {
            rule.api_groups.clone()
        };
        for api_group in &groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    out.insert(PermissionItem::Kubernetes {
                        api_group: api_group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                        resource_names: rule.resource_names.clone(),
                    });
                }
            }
        }
    }
    out
}

/// True when the granted item allows everything the requested item asks for.
pub fn item_covers(granted: &PermissionItem, requested: &PermissionItem) -> bool {
    use PermissionItem as P;
    match (granted, requested) {
        (P::EgressHost { host: g, port: gp }, P::EgressHost { host: r, port: rp }) => {
            gp == rp && host_covers(g, r)
        }
        (P::EgressCidr { cidr: g, port: gp }, P::EgressCidr { cidr: r, port: rp }) => {
            gp == rp && cidr_covers(g, r)
        }
        (P::EgressHost { host: g, port: gp }, P::EgressCidr { port: rp, .. }) => {
            gp == rp && g == "*"
        }
        (
            P::Mount {
                name: gn,
                mount_path: gm,
                access: ga,
            },
            P::Mount {
                name: rn,
                mount_path: rm,
                access: ra,
            },
        ) => gn == rn && gm == rm && ga >= ra,
        (
            P::Secret {
                name: gn,
                key: gk,
                env: ge,
            },
            P::Secret {
                name: rn,
                key: rk,
                env: re,
            },
        ) => gn == rn && gk == rk && ge == re,
        (
            P::PluginCall {
                plugin: gp,
                capability: gc,
            },
            P::PluginCall {
                plugin: rp,
                capability: rc,
            },
        ) => gp == rp && (gc == "*" || gc == rc),
        (
            P::Kubernetes {
                api_group: gg,
                resource: gr,
                verb: gv,
                resource_names: gn,
            },
            P::Kubernetes {
                api_group: rg,
                resource: rr,
                verb: rv,
                resource_names: rn,
            },
        ) => {
            (gg == "*" || gg == rg)
                && (gr == "*" || gr == rr)
                && (gv == "*" || gv == rv)
                && (gn.is_empty() || (!rn.is_empty() && rn.iter().all(|n| gn.contains(n))))
        }
        _ => false,
    }
}

fn host_covers(granted: &str, requested: &str) -> bool {
    if granted == "*" || granted == requested {
        return true;
    }
    match granted.strip_prefix("*.") {
        // `*.example.com` covers `api.example.com` and `*.api.example.com`, not `example.com`.
        Some(domain) => {
            let requested = requested.strip_prefix("*.").unwrap_or(requested);
            requested.ends_with(&format!(".{domain}"))
        }
        None => false,
    }
}

fn cidr_covers(granted: &str, requested: &str) -> bool {
    match (granted.parse::<IpNet>(), requested.parse::<IpNet>()) {
        (Ok(g), Ok(r)) => g.contains(&r),
        _ => match (granted.parse::<IpNet>(), requested.parse::<IpAddr>()) {
            (Ok(g), Ok(r)) => g.contains(&r),
            _ => granted == requested,
        },
    }
}

/// Whether grants cover a request, and what is left uncovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// Requested items no grant covers; empty when fully covered.
    pub missing: Vec<PermissionItem>,
}

impl Coverage {
    /// True when every requested item is covered.
    pub fn is_covered(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Decides whether the union of `grants` covers `requested`.
pub fn coverage<'a>(
    requested: &Permissions,
    grants: impl IntoIterator<Item = &'a Permissions>,
) -> Coverage {
    let granted: Vec<PermissionItem> = grants.into_iter().flat_map(items).collect();
    let missing = items(requested)
        .into_iter()
        .filter(|r| !granted.iter().any(|g| item_covers(g, r)))
        .collect();
    Coverage { missing }
}

/// What a new version asks for beyond what the old one was granted, and what it drops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PermissionDiff {
    /// Items the new version requests that the old grant does not cover.
    pub added: Vec<String>,
    /// Items the old grant covered that the new version no longer requests.
    pub removed: Vec<String>,
}

impl PermissionDiff {
    /// True when the new version needs no new grant.
    pub fn needs_grant(&self) -> bool {
        !self.added.is_empty()
    }
}

/// The permission diff from `granted` (what the old version holds) to `requested` (new version).
pub fn permission_diff(granted: &Permissions, requested: &Permissions) -> PermissionDiff {
    let old = items(granted);
    let new = items(requested);
    let added = new
        .iter()
        .filter(|r| !old.iter().any(|g| item_covers(g, r)))
        .map(ToString::to_string)
        .collect();
    let removed = old
        .iter()
        .filter(|g| !new.iter().any(|r| item_covers(g, r)))
        .map(ToString::to_string)
        .collect();
    PermissionDiff { added, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(host: Option<&str>, cidr: Option<&str>, ports: &[u16]) -> EgressRule {
        EgressRule {
            host: host.map(String::from),
            cidr: cidr.map(String::from),
            ports: ports.to_vec(),
        }
    }

    fn with_egress(rules: Vec<EgressRule>) -> Permissions {
        let mut p = Permissions::default();
        p.network.egress = rules;
        p
    }

    #[test]
    fn no_permissions_is_zero_risk_low_tier() {
        let r = assess(&Permissions::default(), &[]);
        assert_eq!(r.score, 0);
        assert_eq!(r.tier, RiskTier::Low);
        assert!(r.reasons.is_empty());
    }

    #[test]
    fn egress_to_any_host_weighs_far_more_than_one_host() {
        let any = assess(&with_egress(vec![egress(Some("*"), None, &[443])]), &[]);
        let one = assess(
            &with_egress(vec![egress(Some("api.example.com"), None, &[443])]),
            &[],
        );
        assert_eq!(any.score, W_EGRESS_ANY);
        assert_eq!(one.score, W_EGRESS_HOST);
        assert_eq!(any.tier, RiskTier::Moderate);
        assert_eq!(one.tier, RiskTier::Low);
        assert_eq!(
            one.reasons,
            vec!["egress to api.example.com on port 443 (+8)"]
        );
        let cidr_any = assess(
            &with_egress(vec![egress(None, Some("0.0.0.0/0"), &[80, 443])]),
            &[],
        );
        assert_eq!(cidr_any.score, W_EGRESS_ANY);
        let wide = assess(
            &with_egress(vec![egress(None, Some("10.0.0.0/8"), &[5432])]),
            &[],
        );
        assert_eq!(wide.score, W_EGRESS_WIDE_CIDR);
        let narrow = assess(
            &with_egress(vec![egress(None, Some("10.20.0.0/16"), &[5432])]),
            &[],
        );
        assert_eq!(narrow.score, W_EGRESS_HOST);
    }

    #[test]
    fn read_write_mount_weighs_more_than_read_only() {
        let mut p = Permissions::default();
        p.filesystem.push(FilesystemMount {
            name: "ws".into(),
            mount_path: "/workspace".into(),
            access: Access::ReadOnly,
        });
        let ro = assess(&p, &[]).score;
        p.filesystem[0].access = Access::ReadWrite;
        let rw = assess(&p, &[]).score;
        assert_eq!(ro, W_MOUNT_READ);
        assert_eq!(rw, W_MOUNT_WRITE);
    }

    #[test]
    fn secrets_calls_kubernetes_and_filter_hooks_add_up_and_cap_at_100() {
        let mut p = Permissions::default();
        p.secrets.push(SecretRef {
            name: "api".into(),
            env: "API_KEY".into(),
            key: None,
        });
        p.plugins.push(PluginCall {
            name: "text".into(),
            capabilities: vec!["tokenize".into()],
        });
        p.kubernetes.push(KubernetesRule {
            api_groups: vec![String::new()],
            resources: vec!["configmaps".into()],
            verbs: vec!["get".into(), "list".into()],
            resource_names: vec![],
        });
        let hooks = vec![HookSubscription {
            name: "before_command".into(),
            mode: HookMode::Filter,
            priority: 100,
            failure_policy: Default::default(),
        }];
        let r = assess(&p, &hooks);
        assert_eq!(
            r.score,
            W_SECRET + W_PLUGIN_CALL + W_KUBE_READ + W_FILTER_HOOK
        );
        assert_eq!(r.reasons.len(), 4);
        p.kubernetes[0].verbs = vec!["*".into()];
        p.network.egress.push(egress(Some("*"), None, &[443]));
        p.filesystem.push(FilesystemMount {
            name: "data".into(),
            mount_path: "/data".into(),
            access: Access::ReadWrite,
        });
        let r = assess(&p, &hooks);
        assert_eq!(r.score, 100);
        assert_eq!(r.tier, RiskTier::Critical);
    }

    #[test]
    fn tiers_have_the_documented_boundaries() {
        assert_eq!(RiskTier::from_score(24), RiskTier::Low);
        assert_eq!(RiskTier::from_score(25), RiskTier::Moderate);
        assert_eq!(RiskTier::from_score(49), RiskTier::Moderate);
        assert_eq!(RiskTier::from_score(50), RiskTier::High);
        assert_eq!(RiskTier::from_score(74), RiskTier::High);
        assert_eq!(RiskTier::from_score(75), RiskTier::Critical);
        assert_eq!("HIGH".parse::<RiskTier>(), Ok(RiskTier::High));
        assert!("extreme".parse::<RiskTier>().is_err());
    }

    #[test]
    fn wildcard_host_grant_covers_subdomains_but_not_the_apex() {
        let grant = with_egress(vec![egress(Some("*.example.com"), None, &[443])]);
        let sub = with_egress(vec![egress(Some("api.example.com"), None, &[443])]);
        let apex = with_egress(vec![egress(Some("example.com"), None, &[443])]);
        let other_port = with_egress(vec![egress(Some("api.example.com"), None, &[80])]);
        assert!(coverage(&sub, [&grant]).is_covered());
        assert!(!coverage(&apex, [&grant]).is_covered());
        assert!(!coverage(&other_port, [&grant]).is_covered());
        let evil = with_egress(vec![egress(Some("evilexample.com"), None, &[443])]);
        assert!(!coverage(&evil, [&grant]).is_covered());
    }

    #[test]
    fn cidr_grant_covers_contained_networks_only() {
        let grant = with_egress(vec![egress(None, Some("10.20.0.0/16"), &[5432])]);
        let inner = with_egress(vec![egress(None, Some("10.20.3.0/24"), &[5432])]);
        let outer = with_egress(vec![egress(None, Some("10.0.0.0/8"), &[5432])]);
        assert!(coverage(&inner, [&grant]).is_covered());
        let c = coverage(&outer, [&grant]);
        assert_eq!(
            c.missing,
            vec![PermissionItem::EgressCidr {
                cidr: "10.0.0.0/8".into(),
                port: 5432
            }]
        );
    }

    #[test]
    fn read_write_grant_covers_read_only_request_not_the_reverse() {
        let mount = |access| {
            let mut p = Permissions::default();
            p.filesystem.push(FilesystemMount {
                name: "ws".into(),
                mount_path: "/workspace".into(),
                access,
            });
            p
        };
        assert!(coverage(&mount(Access::ReadOnly), [&mount(Access::ReadWrite)]).is_covered());
        assert!(!coverage(&mount(Access::ReadWrite), [&mount(Access::ReadOnly)]).is_covered());
    }

    #[test]
    fn coverage_is_the_union_of_several_grants() {
        let mut req = with_egress(vec![egress(Some("a.example"), None, &[443])]);
        req.secrets.push(SecretRef {
            name: "s".into(),
            env: "S".into(),
            key: None,
        });
        let g1 = with_egress(vec![egress(Some("a.example"), None, &[443])]);
        let mut g2 = Permissions::default();
        g2.secrets.push(SecretRef {
            name: "s".into(),
            env: "S".into(),
            key: None,
        });
        assert!(!coverage(&req, [&g1]).is_covered());
        assert!(coverage(&req, [&g1, &g2]).is_covered());
        assert!(coverage(&Permissions::default(), std::iter::empty()).is_covered());
    }

    #[test]
    fn plugin_call_star_and_kubernetes_star_cover_specific_requests() {
        let mut grant = Permissions::default();
        grant.plugins.push(PluginCall {
            name: "text".into(),
            capabilities: vec!["*".into()],
        });
        grant.kubernetes.push(KubernetesRule {
            api_groups: vec![String::new()],
            resources: vec!["configmaps".into()],
            verbs: vec!["*".into()],
            resource_names: vec![],
        });
        let mut req = Permissions::default();
        req.plugins.push(PluginCall {
            name: "text".into(),
            capabilities: vec!["tokenize".into()],
        });
        req.kubernetes.push(KubernetesRule {
            api_groups: vec![],
            resources: vec!["configmaps".into()],
            verbs: vec!["get".into(), "update".into()],
            resource_names: vec!["cfg".into()],
        });
        assert!(coverage(&req, [&grant]).is_covered());
        req.plugins[0].name = "other".into();
        assert_eq!(coverage(&req, [&grant]).missing.len(), 1);
    }

    #[test]
    fn permission_diff_lists_what_a_new_version_adds_and_drops() {
        let old = with_egress(vec![egress(Some("api.example.com"), None, &[443])]);
        let mut new = with_egress(vec![egress(Some("api.example.com"), None, &[443, 8443])]);
        new.secrets.push(SecretRef {
            name: "token".into(),
            env: "TOKEN".into(),
            key: None,
        });
        let diff = permission_diff(&old, &new);
        assert!(diff.needs_grant());
        assert_eq!(
            diff.added,
            vec![
                "network egress api.example.com:8443",
                "secret token as $TOKEN"
            ]
        );
        assert!(diff.removed.is_empty());
        let narrower = permission_diff(&new, &old);
        assert!(!narrower.needs_grant());
        assert_eq!(narrower.removed.len(), 2);
        assert_eq!(permission_diff(&old, &old), PermissionDiff::default());
    }

    #[test]
    fn docs_risk_md_lists_every_weight_as_coded() {
        let doc = include_str!("../../../docs/risk.md");
        for (name, weight) in [
            ("W_EGRESS_ANY", W_EGRESS_ANY),
            ("W_EGRESS_WILDCARD", W_EGRESS_WILDCARD),
            ("W_EGRESS_WIDE_CIDR", W_EGRESS_WIDE_CIDR),
            ("W_EGRESS_HOST", W_EGRESS_HOST),
            ("W_MOUNT_READ", W_MOUNT_READ),
            ("W_MOUNT_WRITE", W_MOUNT_WRITE),
            ("W_SECRET", W_SECRET),
            ("W_PLUGIN_CALL", W_PLUGIN_CALL),
            ("W_PLUGIN_CALL_ALL", W_PLUGIN_CALL_ALL),
            ("W_KUBE_READ", W_KUBE_READ),
            ("W_KUBE_WRITE", W_KUBE_WRITE),
            ("W_KUBE_BROAD", W_KUBE_BROAD),
            ("W_FILTER_HOOK", W_FILTER_HOOK),
        ] {
            let row = format!("| {weight} | `{name}` |");
            assert!(
                doc.contains(&row),
                "docs/risk.md should have a row ending {row:?}"
            );
        }
    }
}
