//! What should run, decided from the store alone: pure functions the supervisor applies.

use std::collections::{BTreeMap, HashMap};

use berth_api::approval::{Approval, decide, describe_missing};
use berth_api::risk::permission_diff;
use berth_api::{
    EgressRule, Permissions, Plugin, PluginCall, PluginGrant, PluginGrantSpec, RiskTier,
};
use berth_store::{GrantRecord, InstalledPlugin};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

/// What the supervisor should do with one installed plugin.
#[derive(Clone, Debug, PartialEq)]
pub enum Desired {
    /// Run this manifest (a new revision when its key differs from the serving one).
    Run(Box<Plugin>),
    /// Not approved. `keep_serving` is true when the serving revision's own permissions are
    /// still approved, so the old version keeps serving while the new one waits.
    AwaitApproval {
        /// Why, for status and `berth status`.
        reason: String,
        /// The old version may keep serving.
        keep_serving: bool,
    },
    /// `berth disable`, `enabled: false`, or `replicas: 0`.
    Disabled(String),
    /// The stored manifest no longer parses (a newer berth wrote it, or it was edited).
    Invalid(String),
}

/// Reads a stored manifest.
pub fn parse_installed(installed: &InstalledPlugin) -> Result<Plugin, String> {
    let file = installed.source.as_deref().unwrap_or(&installed.name);
    berth_api::load::load_single_plugin(file, installed.manifest_yaml.as_bytes()).map_err(
        |problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        },
    )
}

/// A `PluginGrant` built from a recorded local grant, so both backends decide alike.
pub fn grant_object(record: &GrantRecord) -> Result<PluginGrant, String> {
    let permissions: Permissions = serde_json::from_str(&record.permissions_json)
        .map_err(|e| format!("grant {} holds unreadable permissions: {e}", record.id))?;
    let mut grant = PluginGrant::new(
        &format!("{}-{}", record.plugin, record.id),
        PluginGrantSpec {
            plugin: record.plugin.clone(),
            permissions,
            granted_by: record.granted_by.clone(),
            reason: record.reason.clone(),
            expires_at: record.expires_at.clone(),
        },
    );
    grant.metadata.namespace = Some("local".into());
    Ok(grant)
}

/// The inter-plugin calls `plugin` may make under the recorded local grants: the one rule
/// of `berth_api::approval::allowed_calls`. Revoked records and records whose permissions
/// cannot be read grant nothing.
pub fn allowed_calls(
    plugin: &Plugin,
    grants: &[GrantRecord],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Vec<PluginCall> {
    let grants = grant_objects(grants);
    let refs: Vec<&PluginGrant> = grants.iter().collect();
    berth_api::approval::allowed_calls(plugin, &refs, now, auto_approve)
}

/// The egress `plugin` may use under the recorded local grants: the one rule of
/// `berth_api::approval::allowed_egress`, read like [`allowed_calls`].
pub fn allowed_egress(
    plugin: &Plugin,
    grants: &[GrantRecord],
    now: Timestamp,
    auto_approve: RiskTier,
) -> Vec<EgressRule> {
    let grants = grant_objects(grants);
    let refs: Vec<&PluginGrant> = grants.iter().collect();
    berth_api::approval::allowed_egress(plugin, &refs, now, auto_approve)
}

/// The grant objects of the records that are not revoked and can be read.
fn grant_objects(grants: &[GrantRecord]) -> Vec<PluginGrant> {
    grants
        .iter()
        .filter(|g| g.revoked_at.is_none())
        .filter_map(|g| grant_object(g).ok())
        .collect()
}

/// Decides what should happen to `installed`, given its manifest as [`parse_installed`]
/// read it (once per pass), its usable grants and the manifest of the revision that serves
/// now (if any).
pub fn desired(
    installed: &InstalledPlugin,
    manifest: Result<&Plugin, &str>,
    grants: &[GrantRecord],
    serving: Option<&Plugin>,
    now: Timestamp,
    auto_approve: RiskTier,
) -> Desired {
    let plugin = match manifest {
        Ok(p) => p,
        Err(e) => return Desired::Invalid(e.to_owned()),
    };
    if !installed.enabled {
        return Desired::Disabled("disabled with `berth disable`".into());
    }
    if !plugin.spec.enabled {
        return Desired::Disabled("the manifest says enabled: false".into());
    }
    if plugin.spec.replicas == 0 {
        return Desired::Disabled("the manifest asks for 0 replicas".into());
    }
    let grants: Vec<PluginGrant> = grants.iter().filter_map(|g| grant_object(g).ok()).collect();
    let refs: Vec<&PluginGrant> = grants.iter().collect();
    let decision = decide(
        &plugin.spec.permissions,
        &plugin.spec.hooks,
        &refs,
        now,
        auto_approve,
    );
    if let Approval::NotApproved { missing, expired } = &decision.approval {
        let serving_ok = serving.is_some_and(|old| {
            decide(
                &old.spec.permissions,
                &old.spec.hooks,
                &refs,
                now,
                auto_approve,
            )
            .approval
            .is_approved()
        });
        let mut reason = format!(
            "risk {} ({}) is above the auto-approve tier {}; not granted: {}",
            decision.risk.score,
            decision.risk.tier,
            auto_approve,
            describe_missing(missing)
        );
        if let Some(old) = serving.filter(|_| serving_ok) {
            let granted: Permissions = merged(&grants);
            let diff = permission_diff(&granted, &plugin.spec.permissions);
            reason = format!(
                "version {} asks for more than its grant covers (+ {}); version {} keeps serving until `berth grant {}`",
                plugin.spec.version,
                diff.added.join("; "),
                old.spec.version,
                plugin.name()
            );
        } else if !expired.is_empty() {
            reason.push_str(&format!("; expired grants: {}", expired.join(", ")));
        }
        return Desired::AwaitApproval {
            reason,
            keep_serving: serving_ok,
        };
    }
    Desired::Run(Box::new(plugin.clone()))
}

fn merged(grants: &[PluginGrant]) -> Permissions {
    let mut out = Permissions::default();
    for g in grants {
        let p = &g.spec.permissions;
        out.network.egress.extend(p.network.egress.iter().cloned());
        out.filesystem.extend(p.filesystem.iter().cloned());
        out.secrets.extend(p.secrets.iter().cloned());
        out.plugins.extend(p.plugins.iter().cloned());
        out.kubernetes.extend(p.kubernetes.iter().cloned());
    }
    out
}

/// Identifies what a revision runs: the manifest text and the image id. A rebuilt image
/// under the same tag is a new revision, as is any manifest change.
pub fn revision_key(manifest_yaml: &str, image_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(manifest_yaml.as_bytes());
    hasher.update([0]);
    hasher.update(image_id.as_bytes());
    hex::encode(hasher.finalize())
}

/// Plugins in start order: dependencies first. Plugins in a cycle are returned apart with
/// the problem that names the cycle.
pub fn start_order(plugins: &[&Plugin]) -> (Vec<String>, BTreeMap<String, String>) {
    match berth_api::deps::resolve_order(plugins, berth_api::deps::Missing::Warn) {
        Ok(order) => (order.order, BTreeMap::new()),
        Err(problems) => {
            let mut failed = BTreeMap::new();
            for p in &problems {
                let name = p
                    .object
                    .as_deref()
                    .and_then(|o| o.strip_prefix("Plugin/"))
                    .unwrap_or_default()
                    .to_owned();
                failed
                    .entry(name)
                    .or_insert_with(|| format!("{}: {}", p.path, p.message));
            }
            let order = plugins
                .iter()
                .map(|p| p.name().to_owned())
                .filter(|n| !failed.contains_key(n))
                .collect();
            (order, failed)
        }
    }
}

/// Why `plugin` cannot start yet: the first dependency that is not serving a version in
/// its range. `serving` maps plugin names to the version that serves.
pub fn waiting_for(plugin: &Plugin, serving: &HashMap<String, String>) -> Option<String> {
    for dep in &plugin.spec.depends_on {
        let Some(version) = serving.get(&dep.name) else {
            return Some(format!("waiting for {} to be Ready", dep.name));
        };
        if let Some(range) = &dep.version {
            let ok = semver::VersionReq::parse(range)
                .ok()
                .zip(semver::Version::parse(version).ok())
                .is_some_and(|(req, v)| req.matches(&v));
            if !ok {
                return Some(format!(
                    "{} serves version {version}, outside the range {range} this plugin needs",
                    dep.name
                ));
            }
        }
    }
    None
}

/// Secrets for local mode: `NAME=value` or `NAME.KEY=value` lines, `#` comments.
pub fn parse_secrets(text: &str, file: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "{file}:{}: expected NAME=value (or NAME.KEY=value)",
                i + 1
            ));
        };
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(yaml: &str) -> InstalledPlugin {
        InstalledPlugin {
            name: "p".into(),
            manifest_yaml: yaml.into(),
            source: Some("p.yaml".into()),
            enabled: true,
            token: "t".into(),
            installed_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    const LOW: &str = "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: p}\nspec:\n  image: berth/p:1.0.0\n  version: 1.0.0\n";
    const EGRESS: &str = "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: p}\nspec:\n  image: berth/p:1.1.0\n  version: 1.1.0\n  permissions:\n    network:\n      egress: [{host: \"*\", ports: [443]}]\n";

    fn grant(perms: &str, expires: Option<&str>) -> GrantRecord {
        GrantRecord {
            id: 1,
            plugin: "p".into(),
            permissions_json: perms.into(),
            risk_score: 45,
            granted_by: "alice".into(),
            reason: None,
            granted_at: "2026-01-01T00:00:00Z".into(),
            expires_at: expires.map(String::from),
            revoked_at: None,
        }
    }

    /// [`desired`] after the one parse a reconcile pass makes.
    fn decide_for(
        i: &InstalledPlugin,
        grants: &[GrantRecord],
        serving: Option<&Plugin>,
    ) -> Desired {
        let manifest = parse_installed(i);
        desired(
            i,
            manifest.as_ref().map_err(String::as_str),
            grants,
            serving,
            now(),
            RiskTier::Low,
        )
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn low_risk_plugin_runs_without_a_grant() {
        let d = decide_for(&installed(LOW), &[], None);
        assert!(matches!(d, Desired::Run(p) if p.spec.version == "1.0.0"));
    }

    #[test]
    fn risky_plugin_awaits_approval_until_granted() {
        let d = decide_for(&installed(EGRESS), &[], None);
        let Desired::AwaitApproval {
            reason,
            keep_serving,
        } = d
        else {
            panic!("{d:?}")
        };
        assert!(!keep_serving);
        assert!(reason.contains("egress"), "{reason}");
        let g = grant(
            r#"{"network":{"egress":[{"host":"*","ports":[443]}]}}"#,
            None,
        );
        assert!(matches!(
            decide_for(&installed(EGRESS), &[g], None),
            Desired::Run(_)
        ));
    }

    #[test]
    fn expired_grant_covers_nothing() {
        let g = grant(
            r#"{"network":{"egress":[{"host":"*","ports":[443]}]}}"#,
            Some("2026-05-01T00:00:00Z"),
        );
        let d = decide_for(&installed(EGRESS), &[g], None);
        assert!(
            matches!(&d, Desired::AwaitApproval { reason, .. } if reason.contains("expired")),
            "{d:?}"
        );
    }

    #[test]
    fn upgrade_asking_for_more_shows_the_diff_and_keeps_the_old_version() {
        let old = parse_installed(&installed(LOW)).unwrap();
        let d = decide_for(&installed(EGRESS), &[], Some(&old));
        let Desired::AwaitApproval {
            reason,
            keep_serving,
        } = d
        else {
            panic!("{d:?}")
        };
        assert!(keep_serving);
        assert!(reason.contains("version 1.0.0 keeps serving"), "{reason}");
        assert!(reason.contains("+ network egress *:443"), "{reason}");
    }

    #[test]
    fn disabled_and_zero_replicas_do_not_run() {
        let mut i = installed(LOW);
        i.enabled = false;
        assert!(matches!(decide_for(&i, &[], None), Desired::Disabled(_)));
        let zero = installed(&format!("{LOW}  replicas: 0\n"));
        assert!(matches!(
            decide_for(&zero, &[], None),
            Desired::Disabled(r) if r.contains("0 replicas")
        ));
    }

    #[test]
    fn unreadable_manifest_is_invalid_not_a_panic() {
        let d = decide_for(&installed("kind: Plugin\nspec: 3\n"), &[], None);
        assert!(matches!(d, Desired::Invalid(_)), "{d:?}");
    }

    #[test]
    fn revision_key_changes_with_manifest_or_image() {
        let a = revision_key("m", "sha256:1");
        assert_ne!(a, revision_key("m2", "sha256:1"));
        assert_ne!(a, revision_key("m", "sha256:2"));
        assert_eq!(a, revision_key("m", "sha256:1"));
    }

    #[test]
    fn dependency_must_serve_a_version_in_range() {
        let yaml = format!("{LOW}  dependsOn: [{{name: q, version: \">=2.0.0\"}}]\n");
        let p = parse_installed(&installed(&yaml)).unwrap();
        let mut serving = HashMap::new();
        assert!(waiting_for(&p, &serving).unwrap().contains("waiting for q"));
        serving.insert("q".to_owned(), "1.5.0".to_owned());
        assert!(
            waiting_for(&p, &serving)
                .unwrap()
                .contains("outside the range")
        );
        serving.insert("q".to_owned(), "2.1.0".to_owned());
        assert_eq!(waiting_for(&p, &serving), None);
    }

    #[test]
    fn secrets_file_lines_are_parsed() {
        let secrets = parse_secrets("# c\napi=abc\ndb.password=pw=1\n", "s.env").unwrap();
        assert_eq!(secrets["db.password"], "pw=1");
        assert_eq!(secrets["api"], "abc");
        assert!(
            parse_secrets("novalue\n", "s.env")
                .unwrap_err()
                .contains("s.env:1")
        );
    }
}
