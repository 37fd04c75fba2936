//! May a plugin run with what it asks for? Risk tier, auto-approval and grant coverage.

use crate::risk::{PermissionItem, coverage, item_covers, items};
use crate::{
    EgressRule, HookSubscription, Permissions, Plugin, PluginCall, PluginGrant, RiskAssessment,
    RiskTier, assess, validate_grant,
};
use jiff::Timestamp;

/// The answer for one set of requested permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    /// The risk tier is at or under the operator's auto-approve tier.
    AutoApproved,
    /// Unexpired grants cover every requested item.
    Granted {
        /// Names of the grants that were considered, sorted.
        grants: Vec<String>,
    },
    /// Something requested is not covered.
    NotApproved {
        /// The uncovered items.
        missing: Vec<PermissionItem>,
        /// Grants for this plugin that have expired, sorted.
        expired: Vec<String>,
    },
}

impl Approval {
    /// True when the plugin may run with the permissions.
    pub fn is_approved(&self) -> bool {
        !matches!(self, Approval::NotApproved { .. })
    }
}

/// The decision, with the risk it was based on and when it must be looked at again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Risk of the requested permissions and hooks.
    pub risk: RiskAssessment,
    /// The answer.
    pub approval: Approval,
    /// The earliest expiry of a grant that covers something now: decide again then.
    pub next_expiry: Option<Timestamp>,
}

/// Decides whether `requested` may run. `grants` are the grants naming this plugin in its
/// namespace; invalid and expired grants cover nothing.
pub fn decide(
    requested: &Permissions,
    hooks: &[HookSubscription],
    grants: &[&PluginGrant],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Decision {
    let risk = assess(requested, hooks);
    let usable: Vec<&PluginGrant> = usable(grants, now).collect();
    let next_expiry = usable
        .iter()
        .filter_map(|g| g.spec.expiry().and_then(Result::ok))
        .min();
    let names = |list: &[&PluginGrant]| {
        let mut v: Vec<String> = list
            .iter()
            .map(|g| g.metadata.name.clone().unwrap_or_default())
            .collect();
        v.sort();
        v
    };
    let approval = if risk.tier <= auto_approve {
        Approval::AutoApproved
    } else {
        let cover = coverage(requested, usable.iter().map(|g| &g.spec.permissions));
        if cover.is_covered() {
            Approval::Granted {
                grants: names(&usable),
            }
        } else {
            let expired: Vec<&PluginGrant> = grants
                .iter()
                .copied()
                .filter(|g| g.spec.is_expired(now))
                .collect();
            Approval::NotApproved {
                missing: cover.missing,
                expired: names(&expired),
            }
        }
    };
    Decision {
        risk,
        next_expiry: if approval.is_approved() {
            next_expiry
        } else {
            None
        },
        approval,
    }
}

/// The one rule for who may call whom: the inter-plugin calls `plugin` may make now.
///
/// All it asks for when [`decide`] approves it (auto-approved at or under `auto_approve`,
/// or every item covered by grants); otherwise each requested capability that some usable
/// grant covers on its own — a partial grant allows what it names and nothing more.
/// `grants` are the grants naming this plugin; expired and invalid ones cover nothing, and
/// a revoked grant is simply absent. The gateway's static directory, the operator's
/// cluster directory and the local supervisor all call this.
pub fn allowed_calls(
    plugin: &Plugin,
    grants: &[&PluginGrant],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Vec<PluginCall> {
    let requested = &plugin.spec.permissions.plugins;
    let Some(held) = held_unless_approved(plugin, grants, now, auto_approve) else {
        return requested.clone();
    };
    requested
        .iter()
        .filter_map(|call| {
            let capabilities: Vec<String> = call
                .capabilities
                .iter()
                .filter(|capability| {
                    covered(
                        &held,
                        &Permissions {
                            plugins: vec![PluginCall {
                                name: call.name.clone(),
                                capabilities: vec![(*capability).clone()],
                            }],
                            ..Permissions::default()
                        },
                    )
                })
                .cloned()
                .collect();
            (!capabilities.is_empty()).then(|| PluginCall {
                name: call.name.clone(),
                capabilities,
            })
        })
        .collect()
}

/// The egress a plugin may use now, by the same rule as [`allowed_calls`]: every rule it
/// requests when [`decide`] approves it; otherwise, of each requested rule, the ports a
/// usable grant covers (a rule left with no port is dropped). The egress proxy enforces
/// exactly this.
pub fn allowed_egress(
    plugin: &Plugin,
    grants: &[&PluginGrant],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Vec<EgressRule> {
    let requested = &plugin.spec.permissions.network.egress;
    let Some(held) = held_unless_approved(plugin, grants, now, auto_approve) else {
        return requested.clone();
    };
    requested
        .iter()
        .filter_map(|rule| {
            let ports: Vec<u16> = rule
                .ports
                .iter()
                .copied()
                .filter(|port| {
                    let mut one = Permissions::default();
                    one.network.egress.push(EgressRule {
                        ports: vec![*port],
                        ..rule.clone()
                    });
                    covered(&held, &one)
                })
                .collect();
            (!ports.is_empty()).then(|| EgressRule {
                ports,
                ..rule.clone()
            })
        })
        .collect()
}

/// `None` when [`decide`] approves the plugin as a whole; otherwise every item its usable
/// grants hold, to allow requested pieces one by one.
fn held_unless_approved(
    plugin: &Plugin,
    grants: &[&PluginGrant],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Option<Vec<PermissionItem>> {
    let decision = decide(
        &plugin.spec.permissions,
        &plugin.spec.hooks,
        grants,
        now,
        auto_approve,
    );
    (!decision.approval.is_approved()).then(|| {
        usable(grants, now)
            .flat_map(|g| items(&g.spec.permissions))
            .collect()
    })
}

/// True when `held` covers every item of `wanted`.
fn covered(held: &[PermissionItem], wanted: &Permissions) -> bool {
    items(wanted)
        .iter()
        .all(|w| held.iter().any(|h| item_covers(h, w)))
}

/// The grants that can cover anything at `now`: unexpired and valid.
fn usable<'a>(
    grants: &'a [&'a PluginGrant],
    now: Timestamp,
) -> impl Iterator<Item = &'a PluginGrant> + 'a {
    grants
        .iter()
        .copied()
        .filter(move |g| !g.spec.is_expired(now) && !validate_grant(g).iter().any(|p| p.is_error()))
}

/// What `applied` asks for beyond the manifest its image carries in the
/// `dev.berth.manifest` label (`label`, the label's text; `image` names it in errors).
/// When the image is signed, the label is what the signer declared: an applied manifest
/// may narrow those permissions, never widen them. `Err` when the label is missing or is
/// not one valid Plugin.
pub fn beyond_label(
    applied: &Plugin,
    image: &str,
    label: Option<&str>,
) -> Result<Vec<PermissionItem>, String> {
    let Some(text) = label.filter(|t| !t.trim().is_empty()) else {
        return Err(format!(
            "{image} carries no dev.berth.manifest label, so its signature covers no permissions; build it with `berth build`"
        ));
    };
    let declared = crate::load::load_single_plugin(
        &format!("{image} label dev.berth.manifest"),
        text.as_bytes(),
    )
    .map_err(|problems| {
        let first = problems
            .first()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "not a Plugin".into());
        format!("{image}: the dev.berth.manifest label is not a valid Plugin: {first}")
    })?;
    Ok(coverage(
        &applied.spec.permissions,
        std::iter::once(&declared.spec.permissions),
    )
    .missing)
}

/// Uncovered items as one line: the first few, then how many more.
pub fn describe_missing(missing: &[PermissionItem]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = missing.iter().take(SHOWN).map(|m| m.to_string()).collect();
    if missing.len() > SHOWN {
        parts.push(format!("and {} more", missing.len() - SHOWN));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use crate::{EgressRule, PluginGrantSpec};

    use super::*;

    fn any_host() -> Permissions {
        let mut p = Permissions::default();
        p.network.egress.push(EgressRule {
            host: Some("*".into()),
            cidr: None,
            ports: vec![443],
        });
        p
    }

    fn grant(name: &str, permissions: Permissions, expires_at: Option<&str>) -> PluginGrant {
        let mut g = PluginGrant::new(
            name,
            PluginGrantSpec {
                plugin: "fetch".into(),
                permissions,
                granted_by: "platform@example.com".into(),
                reason: None,
                expires_at: expires_at.map(String::from),
            },
        );
        g.metadata.namespace = Some("default".into());
        g
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn nothing_requested_is_auto_approved_at_any_tier() {
        let d = decide(&Permissions::default(), &[], &[], now(), RiskTier::Low);
        assert_eq!(d.approval, Approval::AutoApproved);
        assert_eq!(d.risk.score, 0);
    }

    #[test]
    fn moderate_risk_waits_for_a_grant_under_the_default_tier() {
        let d = decide(&any_host(), &[], &[], now(), RiskTier::Low);
        assert_eq!(d.risk.tier, RiskTier::Moderate);
        match d.approval {
            Approval::NotApproved { missing, expired } => {
                assert_eq!(describe_missing(&missing), "network egress *:443");
                assert!(expired.is_empty());
            }
            other => panic!("expected NotApproved, got {other:?}"),
        }
    }

    #[test]
    fn raising_the_auto_approve_tier_approves_moderate_risk() {
        let d = decide(&any_host(), &[], &[], now(), RiskTier::Moderate);
        assert_eq!(d.approval, Approval::AutoApproved);
    }

    #[test]
    fn a_covering_grant_approves_and_its_expiry_is_the_next_look() {
        let g = grant("fetch", any_host(), Some("2026-06-01T00:00:00Z"));
        let d = decide(&any_host(), &[], &[&g], now(), RiskTier::Low);
        assert_eq!(
            d.approval,
            Approval::Granted {
                grants: vec!["fetch".into()]
            }
        );
        assert_eq!(d.next_expiry, Some("2026-06-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn an_expired_grant_covers_nothing_and_is_named() {
        let g = grant("fetch", any_host(), Some("2025-06-01T00:00:00Z"));
        let d = decide(&any_host(), &[], &[&g], now(), RiskTier::Low);
        match d.approval {
            Approval::NotApproved { expired, .. } => assert_eq!(expired, vec!["fetch"]),
            other => panic!("expected NotApproved, got {other:?}"),
        }
        assert_eq!(d.next_expiry, None);
    }

    #[test]
    fn a_grant_for_less_than_requested_does_not_cover() {
        let mut narrow = Permissions::default();
        narrow.network.egress.push(EgressRule {
            host: Some("api.example.com".into()),
            cidr: None,
            ports: vec![443],
        });
        let g = grant("fetch", narrow, None);
        let d = decide(&any_host(), &[], &[&g], now(), RiskTier::Low);
        assert!(!d.approval.is_approved());
    }

    #[test]
    fn describe_missing_shortens_long_lists() {
        let mut p = Permissions::default();
        p.network.egress.push(EgressRule {
            host: Some("*".into()),
            cidr: None,
            ports: (1..=8).collect(),
        });
        let d = decide(&p, &[], &[], now(), RiskTier::Low);
        let Approval::NotApproved { missing, .. } = d.approval else {
            panic!("expected NotApproved")
        };
        assert!(describe_missing(&missing).ends_with("; and 3 more"));
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    const LABEL: &str = "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: calc}\nspec:\n  image: r:5000/calc:1\n  version: 1.0.0\n  capabilities: [{name: add}]\n  permissions:\n    network:\n      egress: [{host: api.example.com, ports: [443]}]\n";

    fn applied(egress: &[(&str, u16)]) -> Plugin {
        let mut p = crate::load::load_single_plugin("l", LABEL.as_bytes()).unwrap();
        p.spec.permissions.network.egress = egress
            .iter()
            .map(|(h, port)| EgressRule {
                host: Some((*h).into()),
                cidr: None,
                ports: vec![*port],
            })
            .collect();
        p
    }

    #[test]
    fn a_manifest_may_narrow_the_signed_label_but_not_widen_it() {
        assert!(
            beyond_label(&applied(&[]), "img", Some(LABEL))
                .unwrap()
                .is_empty()
        );
        assert!(
            beyond_label(&applied(&[("api.example.com", 443)]), "img", Some(LABEL))
                .unwrap()
                .is_empty()
        );
        let wider = beyond_label(&applied(&[("evil.example", 443)]), "img", Some(LABEL)).unwrap();
        assert_eq!(describe_missing(&wider), "network egress evil.example:443");
    }

    #[test]
    fn a_missing_or_broken_label_is_named() {
        let e = beyond_label(&applied(&[]), "r/x@sha256:1", None).unwrap_err();
        assert!(
            e.starts_with("r/x@sha256:1 carries no dev.berth.manifest label"),
            "{e}"
        );
        let e = beyond_label(&applied(&[]), "img", Some("kind: [")).unwrap_err();
        assert!(
            e.starts_with("img: the dev.berth.manifest label is not a valid Plugin"),
            "{e}"
        );
    }
}
