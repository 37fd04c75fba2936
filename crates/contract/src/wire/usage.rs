//! Usage receipts on the wire: what `GET /v1/admin/usage` answers, how a granted item is
//! keyed in the gateway's counters and the store, and how granted and used items are put
//! side by side ([`usage_report`]) and narrowed to what was used ([`narrowed_permissions`]).

use std::collections::BTreeMap;

use berth_api::{EgressRule, Permissions, PluginCall, PluginGrant, PluginGrantSpec};
use serde::{Deserialize, Serialize};

/// Gateway path that answers a [`UsageReportWire`] (admin token; `?since=` RFC 3339 time or
/// a duration such as `30d`).
pub const PATH_ADMIN_USAGE: &str = "/v1/admin/usage";

/// What kind of granted item a count is about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum UsageKind {
    /// An egress rule (host pattern or CIDR, with its ports).
    Egress,
    /// An inter-plugin call item (target plugin and capability, or `*`).
    Call,
    /// A destination (`host:port`) reached through an egress rule ([`destination_item`]):
    /// what a wildcard or CIDR rule was actually used for, so it can be narrowed.
    Destination,
}

impl UsageKind {
    /// `egress` or `call`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Egress => "egress",
            UsageKind::Call => "call",
            UsageKind::Destination => "destination",
        }
    }

    /// The kind named `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "egress" => Some(UsageKind::Egress),
            "call" => Some(UsageKind::Call),
            "destination" => Some(UsageKind::Destination),
            _ => None,
        }
    }
}

/// The key of an egress rule: its host pattern (or CIDR) as granted, a space, its ports
/// sorted and joined by commas (`api.example.com 443`, `10.0.0.0/8 5432,6432`).
pub fn egress_item(rule: &EgressRule) -> String {
    let mut ports = rule.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let target = rule
        .host
        .as_deref()
        .or(rule.cidr.as_deref())
        .unwrap_or_default();
    format!("{target} {}", ports.join(","))
}

/// The rule an [`egress_item`] key stands for; `None` when `key` is not one.
pub fn parse_egress_item(key: &str) -> Option<EgressRule> {
    let (target, ports) = key.rsplit_once(' ')?;
    let ports = ports
        .split(',')
        .map(|p| p.parse::<u16>().ok())
        .collect::<Option<Vec<u16>>>()?;
    if target.is_empty() || ports.is_empty() {
        return None;
    }
    let cidr = target.contains('/');
    Some(EgressRule {
        host: (!cidr).then(|| target.to_owned()),
        cidr: cidr.then(|| target.to_owned()),
        ports,
    })
}

/// Distinct destinations remembered per plugin; beyond them a rule's further destinations
/// are counted under [`MORE_DESTINATIONS`], and the rule is not narrowed.
pub const MAX_DESTINATIONS: usize = 64;

/// The destination of a [`destination_item`] that stands for "more than were remembered".
pub const MORE_DESTINATIONS: &str = "*";

/// The key of a destination reached through an egress rule: the rule's [`egress_item`], a
/// tab, and `host:port` as the proxy saw it (normalized name or IP literal,
/// `api.example.com:443`, `[fd00::1]:443`), or [`MORE_DESTINATIONS`].
pub fn destination_item(rule_item: &str, destination: &str) -> String {
    format!("{rule_item}\t{destination}")
}

/// The rule key and destination of a [`destination_item`] key.
pub fn parse_destination_item(key: &str) -> Option<(&str, &str)> {
    key.split_once('\t')
        .filter(|(r, d)| !r.is_empty() && !d.is_empty())
}

/// The key of an inter-plugin call item: `TARGET/CAPABILITY` (`calc/add`, `calc/*`).
pub fn call_item(target: &str, capability: &str) -> String {
    format!("{target}/{capability}")
}

/// The target and capability of a [`call_item`] key.
pub fn parse_call_item(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
        .filter(|(t, c)| !t.is_empty() && !c.is_empty())
}

/// The answer of `GET /v1/admin/usage`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageReportWire {
    /// Start of the window (RFC 3339). Stored counts are bucketed by UTC day, so the window
    /// starts at the beginning of that day.
    pub since: String,
    /// When the report was made (RFC 3339).
    pub until: String,
    /// One entry per plugin with a grant or a use, sorted by name.
    pub plugins: Vec<PluginUsageWire>,
}

/// One plugin's granted items with their use, and used items no longer granted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PluginUsageWire {
    /// The plugin.
    pub plugin: String,
    /// The permissions the plugin requests (its manifest), when it is in the directory:
    /// what a narrowed grant keeps besides egress and calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Permissions>,
    /// Egress rules: granted ones first (in grant order), then used ones no longer granted.
    #[serde(default)]
    pub egress: Vec<EgressUsageWire>,
    /// Where the egress rules took the plugin: each destination with the rule it went
    /// through, sorted by rule and destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationUsageWire>,
    /// Call items: granted ones first, then used ones no longer granted.
    #[serde(default)]
    pub calls: Vec<CallUsageWire>,
}

/// One egress rule and its use in the window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressUsageWire {
    /// The rule.
    pub rule: EgressRule,
    /// False for a rule that was used in the window but is not granted now.
    pub granted: bool,
    /// Connections and requests it allowed in the window.
    pub count: u64,
    /// The last one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// One destination reached through an egress rule in the window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DestinationUsageWire {
    /// The rule it went through.
    pub rule: EgressRule,
    /// `host:port`, or [`MORE_DESTINATIONS`] for destinations beyond
    /// [`MAX_DESTINATIONS`] that were counted but not remembered.
    pub destination: String,
    /// Connections and requests.
    pub count: u64,
    /// The last one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// One inter-plugin call item and its use in the window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallUsageWire {
    /// The plugin called.
    pub target: String,
    /// The capability as granted (`*` for all).
    pub capability: String,
    /// False for an item used in the window but not granted now.
    pub granted: bool,
    /// Invocations it allowed in the window.
    pub count: u64,
    /// The last one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// A count of one item: from the store, from the gateway's memory, or both added up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedItem {
    /// The plugin that used it.
    pub plugin: String,
    /// Egress rule or call.
    pub kind: UsageKind,
    /// [`egress_item`] or [`call_item`] key.
    pub item: String,
    /// How many times.
    pub count: u64,
    /// The last use (RFC 3339, as the store writes it: text order is time order).
    pub last_used: String,
}

/// A plugin's grants as the directory holds them now.
#[derive(Clone, Copy, Debug)]
pub struct GrantedItems<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// What it requests (its manifest).
    pub requested: Option<&'a Permissions>,
    /// Egress in force.
    pub egress: &'a [EgressRule],
    /// Calls in force.
    pub calls: &'a [PluginCall],
}

/// Puts every granted item beside its use, and adds used items that are not granted now.
/// Counts of the same item (store and memory) are added up.
pub fn usage_report(
    since: String,
    until: String,
    granted: &[GrantedItems<'_>],
    used: &[UsedItem],
) -> UsageReportWire {
    let mut totals: BTreeMap<(&str, UsageKind, &str), (u64, &str)> = BTreeMap::new();
    for u in used {
        let entry = totals
            .entry((u.plugin.as_str(), u.kind, u.item.as_str()))
            .or_insert((0, ""));
        entry.0 += u.count;
        if u.last_used.as_str() > entry.1 {
            entry.1 = u.last_used.as_str();
        }
    }
    let mut plugins: BTreeMap<String, PluginUsageWire> = BTreeMap::new();
    let mut seen: std::collections::HashSet<(&str, UsageKind, String)> = Default::default();
    for g in granted {
        let report = plugins
            .entry(g.plugin.to_owned())
            .or_insert_with(|| empty(g.plugin));
        report.requested = g.requested.cloned();
        for rule in g.egress {
            let key = egress_item(rule);
            let (count, last) = totals
                .get(&(g.plugin, UsageKind::Egress, key.as_str()))
                .copied()
                .unwrap_or((0, ""));
            seen.insert((g.plugin, UsageKind::Egress, key));
            report.egress.push(EgressUsageWire {
                rule: rule.clone(),
                granted: true,
                count,
                last_used: (!last.is_empty()).then(|| last.to_owned()),
            });
        }
        for call in g.calls {
            for capability in &call.capabilities {
                let key = call_item(&call.name, capability);
                let (count, last) = totals
                    .get(&(g.plugin, UsageKind::Call, key.as_str()))
                    .copied()
                    .unwrap_or((0, ""));
                seen.insert((g.plugin, UsageKind::Call, key));
                report.calls.push(CallUsageWire {
                    target: call.name.clone(),
                    capability: capability.clone(),
                    granted: true,
                    count,
                    last_used: (!last.is_empty()).then(|| last.to_owned()),
                });
            }
        }
    }
    for ((plugin, kind, item), (count, last)) in &totals {
        if seen.contains(&(*plugin, *kind, (*item).to_owned())) {
            continue;
        }
        let report = plugins
            .entry((*plugin).to_owned())
            .or_insert_with(|| empty(plugin));
        let last_used = (!last.is_empty()).then(|| (*last).to_owned());
        match kind {
            UsageKind::Destination => {
                if let Some((rule, destination)) = parse_destination_item(item)
                    && let Some(rule) = parse_egress_item(rule)
                {
                    report.destinations.push(DestinationUsageWire {
                        rule,
                        destination: destination.to_owned(),
                        count: *count,
                        last_used,
                    });
                }
            }
            UsageKind::Egress => {
                if let Some(rule) = parse_egress_item(item) {
                    report.egress.push(EgressUsageWire {
                        rule,
                        granted: false,
                        count: *count,
                        last_used,
                    });
                }
            }
            UsageKind::Call => {
                if let Some((target, capability)) = parse_call_item(item) {
                    report.calls.push(CallUsageWire {
                        target: target.to_owned(),
                        capability: capability.to_owned(),
                        granted: false,
                        count: *count,
                        last_used,
                    });
                }
            }
        }
    }
    UsageReportWire {
        since,
        until,
        plugins: plugins.into_values().collect(),
    }
}

fn empty(plugin: &str) -> PluginUsageWire {
    PluginUsageWire {
        plugin: plugin.to_owned(),
        requested: None,
        egress: Vec::new(),
        destinations: Vec::new(),
        calls: Vec::new(),
    }
}

/// The permissions of a grant narrowed to what `usage` shows was used: each granted egress
/// rule with a use in the window becomes the destinations it was used for — a host rule
/// (`*`, `*.example.com`, or a name granted on several ports) one rule per name with only
/// the ports used (an IP literal reached through `*` a `/32` or `/128` CIDR rule), a CIDR
/// rule the same CIDR with only the ports used — unless more
/// destinations went through it than were remembered, or none were recorded, in which
/// case it stays as granted; call items with a use; everything else the plugin requests
/// (filesystem, secrets, Kubernetes) as requested, since the gateway does not see it used.
pub fn narrowed_permissions(usage: &PluginUsageWire) -> Permissions {
    let mut permissions = usage.requested.clone().unwrap_or_default();
    let mut egress: Vec<EgressRule> = Vec::new();
    let mut add = |rule: EgressRule| match egress
        .iter_mut()
        .find(|r| r.host == rule.host && r.cidr == rule.cidr)
    {
        Some(existing) => {
            existing.ports.extend(rule.ports);
            existing.ports.sort_unstable();
            existing.ports.dedup();
        }
        None => egress.push(rule),
    };
    for used in usage.egress.iter().filter(|e| e.granted && e.count > 0) {
        let seen: Vec<&DestinationUsageWire> = usage
            .destinations
            .iter()
            .filter(|d| d.rule == used.rule && d.count > 0)
            .collect();
        let whole = seen.is_empty() || seen.iter().any(|d| d.destination == MORE_DESTINATIONS);
        let narrowed: Option<Vec<EgressRule>> = (!whole)
            .then(|| {
                seen.iter()
                    .map(|d| {
                        let (host, port) = split_destination(&d.destination)?;
                        Some(match &used.rule.cidr {
                            Some(cidr) => EgressRule {
                                host: None,
                                cidr: Some(cidr.clone()),
                                ports: vec![port],
                            },
                            // An address belongs in a CIDR rule (manifest.md).
                            None => match host.parse::<std::net::IpAddr>() {
                                Ok(ip) => EgressRule {
                                    host: None,
                                    cidr: Some(format!(
                                        "{ip}/{}",
                                        if ip.is_ipv4() { 32 } else { 128 }
                                    )),
                                    ports: vec![port],
                                },
                                Err(_) => EgressRule {
                                    host: Some(host.to_owned()),
                                    cidr: None,
                                    ports: vec![port],
                                },
                            },
                        })
                    })
                    .collect()
            })
            .flatten();
        match narrowed {
            Some(rules) => rules.into_iter().for_each(&mut add),
            None => add(used.rule.clone()),
        }
    }
    permissions.network.egress = egress;
    let mut calls: Vec<PluginCall> = Vec::new();
    for c in usage.calls.iter().filter(|c| c.granted && c.count > 0) {
        match calls.iter_mut().find(|p| p.name == c.target) {
            Some(call) => call.capabilities.push(c.capability.clone()),
            None => calls.push(PluginCall {
                name: c.target.clone(),
                capabilities: vec![c.capability.clone()],
            }),
        }
    }
    permissions.plugins = calls;
    permissions
}

/// `(host, port)` of a `host:port` destination, brackets of an IPv6 literal removed.
fn split_destination(destination: &str) -> Option<(&str, u16)> {
    let (host, port) = destination.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// A `PluginGrant` (`berth.dev/v1alpha1`) of [`narrowed_permissions`], named
/// `PLUGIN-used`, that both `berth grant PLUGIN --from FILE` and `kubectl apply -f FILE`
/// take. `namespace` is set when the report came from a cluster's gateway that serves one.
pub fn narrowed_grant(
    usage: &PluginUsageWire,
    report: &UsageReportWire,
    granted_by: &str,
    namespace: Option<&str>,
) -> PluginGrant {
    // An object name is at most 63 characters; a plugin name may already be that long.
    let base: String = usage.plugin.chars().take(58).collect();
    let mut grant = PluginGrant::new(
        &format!("{}-used", base.trim_end_matches('-')),
        PluginGrantSpec {
            plugin: usage.plugin.clone(),
            permissions: narrowed_permissions(usage),
            granted_by: granted_by.to_owned(),
            reason: Some(format!(
                "narrowed to the egress and calls used from {} to {} (berth usage)",
                report.since, report.until
            )),
            expires_at: None,
        },
    );
    grant.metadata.namespace = namespace.map(str::to_owned);
    grant
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, ports: &[u16]) -> EgressRule {
        EgressRule {
            host: Some(host.into()),
            cidr: None,
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn item_keys_round_trip() {
        let r = rule("*.example.com", &[8443, 443, 443]);
        assert_eq!(egress_item(&r), "*.example.com 443,8443");
        assert_eq!(
            parse_egress_item("*.example.com 443,8443"),
            Some(rule("*.example.com", &[443, 8443]))
        );
        let cidr = parse_egress_item("fd00::/8 5432").unwrap();
        assert_eq!(cidr.cidr.as_deref(), Some("fd00::/8"));
        assert_eq!(cidr.host, None);
        for bad in ["", "host", "host x", "host 70000", " 443"] {
            assert_eq!(parse_egress_item(bad), None, "{bad:?}");
        }
        assert_eq!(call_item("calc", "*"), "calc/*");
        assert_eq!(parse_call_item("calc/add"), Some(("calc", "add")));
        assert_eq!(parse_call_item("calc/"), None);
        assert_eq!(
            UsageKind::parse(UsageKind::Call.as_str()),
            Some(UsageKind::Call)
        );
    }

    fn used(plugin: &str, kind: UsageKind, item: &str, count: u64, last: &str) -> UsedItem {
        UsedItem {
            plugin: plugin.into(),
            kind,
            item: item.into(),
            count,
            last_used: last.into(),
        }
    }

    #[test]
    fn report_adds_up_counts_and_lists_what_is_no_longer_granted() {
        let egress = [
            rule("api.example.com", &[443]),
            rule("cdn.example.com", &[443]),
        ];
        let calls = [PluginCall {
            name: "calc".into(),
            capabilities: vec!["add".into(), "mul".into()],
        }];
        let granted = [GrantedItems {
            plugin: "fetch",
            requested: None,
            egress: &egress,
            calls: &calls,
        }];
        let report = usage_report(
            "2026-03-01T00:00:00.000Z".into(),
            "2026-03-31T00:00:00.000Z".into(),
            &granted,
            &[
                used(
                    "fetch",
                    UsageKind::Egress,
                    "api.example.com 443",
                    2,
                    "2026-03-02T00:00:00.000Z",
                ),
                used(
                    "fetch",
                    UsageKind::Egress,
                    "api.example.com 443",
                    1,
                    "2026-03-05T00:00:00.000Z",
                ),
                used(
                    "fetch",
                    UsageKind::Call,
                    "calc/add",
                    4,
                    "2026-03-03T00:00:00.000Z",
                ),
                used(
                    "fetch",
                    UsageKind::Egress,
                    "old.example.com 80",
                    1,
                    "2026-03-01T00:00:00.000Z",
                ),
                used(
                    "gone",
                    UsageKind::Call,
                    "calc/*",
                    1,
                    "2026-03-01T00:00:00.000Z",
                ),
            ],
        );
        assert_eq!(report.plugins.len(), 2);
        let fetch = &report.plugins[0];
        assert_eq!(fetch.egress.len(), 3);
        assert_eq!(fetch.egress[0].count, 3);
        assert_eq!(
            fetch.egress[0].last_used.as_deref(),
            Some("2026-03-05T00:00:00.000Z")
        );
        assert_eq!((fetch.egress[1].count, fetch.egress[1].granted), (0, true));
        assert_eq!(fetch.egress[1].last_used, None);
        assert!(!fetch.egress[2].granted);
        assert_eq!(fetch.egress[2].rule, rule("old.example.com", &[80]));
        assert_eq!(fetch.calls.len(), 2);
        assert_eq!(fetch.calls[0].count, 4);
        assert_eq!(fetch.calls[1].count, 0);
        let gone = &report.plugins[1];
        assert_eq!(gone.plugin, "gone");
        assert!(!gone.calls[0].granted);

        let narrowed = narrowed_permissions(fetch);
        assert_eq!(
            narrowed.network.egress,
            vec![rule("api.example.com", &[443])]
        );
        assert_eq!(
            narrowed.plugins,
            vec![PluginCall {
                name: "calc".into(),
                capabilities: vec!["add".into()],
            }]
        );

        let json = serde_json::to_string(&report).unwrap();
        let back: UsageReportWire = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn wildcard_and_cidr_rules_narrow_to_the_destinations_used() {
        let star = rule("*", &[80, 443]);
        let wild = rule("*.example.com", &[443]);
        let cidr = EgressRule {
            host: None,
            cidr: Some("10.20.0.0/16".into()),
            ports: vec![5432, 6432],
        };
        let busy = rule("*.busy.example", &[443]);
        let unused = rule("*.unused.example", &[443]);
        let egress = [
            star.clone(),
            wild.clone(),
            cidr.clone(),
            busy.clone(),
            unused,
        ];
        let granted = [GrantedItems {
            plugin: "fetch",
            requested: None,
            egress: &egress,
            calls: &[],
        }];
        let at = "2026-03-02T00:00:00.000Z";
        let uses = [
            used("fetch", UsageKind::Egress, &egress_item(&star), 3, at),
            used("fetch", UsageKind::Egress, &egress_item(&wild), 1, at),
            used("fetch", UsageKind::Egress, &egress_item(&cidr), 1, at),
            used("fetch", UsageKind::Egress, &egress_item(&busy), 99, at),
            used(
                "fetch",
                UsageKind::Destination,
                &destination_item(&egress_item(&star), "upstream.test:80"),
                2,
                at,
            ),
            used(
                "fetch",
                UsageKind::Destination,
                &destination_item(&egress_item(&star), "[fd00::1]:443"),
                1,
                at,
            ),
            used(
                "fetch",
                UsageKind::Destination,
                &destination_item(&egress_item(&wild), "api.example.com:443"),
                1,
                at,
            ),
            used(
                "fetch",
                UsageKind::Destination,
                &destination_item(&egress_item(&cidr), "10.20.1.5:5432"),
                1,
                at,
            ),
            used(
                "fetch",
                UsageKind::Destination,
                &destination_item(&egress_item(&busy), MORE_DESTINATIONS),
                99,
                at,
            ),
        ];
        let report = usage_report(at.into(), at.into(), &granted, &uses);
        let fetch = &report.plugins[0];
        assert_eq!(fetch.destinations.len(), 5, "{fetch:?}");
        assert_eq!(
            fetch.egress.len(),
            5,
            "destinations are not rules: {fetch:?}"
        );
        let narrowed = narrowed_permissions(fetch).network.egress;
        assert_eq!(
            narrowed,
            vec![
                // Destinations in their sorted order: "[fd00::1]:443" < "upstream.test:80".
                EgressRule {
                    host: None,
                    cidr: Some("fd00::1/128".into()),
                    ports: vec![443],
                },
                rule("upstream.test", &[80]),
                rule("api.example.com", &[443]),
                EgressRule {
                    host: None,
                    cidr: Some("10.20.0.0/16".into()),
                    ports: vec![5432],
                },
                // More destinations than remembered: kept as granted.
                busy,
            ]
        );
        assert_eq!(
            parse_destination_item(&destination_item("* 80", "a.test:80")),
            Some(("* 80", "a.test:80"))
        );
        assert_eq!(parse_destination_item("no tab"), None);
    }
}
