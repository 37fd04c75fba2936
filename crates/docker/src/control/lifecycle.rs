//! The desired-state writes of local mode, each with its audit event.

use std::path::Path;

use berth_api::risk::{PermissionDiff, PermissionItem, permission_diff};
use berth_api::{Permissions, Plugin, PluginGrant, RiskAssessment, assess};
use berth_store::audit::types;
use berth_store::format_time;
use berth_store::{AuditEvent, GrantRecord, InstalledPlugin, Store};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{ControlError, Result, StateDir};
use crate::supervisor::gateway::preferred_url;
use crate::supervisor::{AdminClient, GATEWAY_DIRECT_URL_SETTING, GATEWAY_URL_SETTING, plan};

/// Local mode's control plane over one state directory and one connection to its store:
/// every change a command makes goes through here, audited as `actor`.
#[derive(Debug)]
pub struct LocalControl<'a> {
    pub(super) state: &'a StateDir,
    pub(super) store: &'a Store,
    actor: String,
}

/// What `install` found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallOutcome {
    /// The plugin's name.
    pub name: String,
    /// The version now installed.
    pub version: String,
    /// The version installed before and how the permissions differ from it, when a
    /// loadable manifest of the same name was installed.
    pub previous: Option<Previous>,
    /// Whether anything was recorded.
    pub change: InstallChange,
}

/// The version an install replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    /// Its version.
    pub version: String,
    /// What the new manifest asks for beyond it, and what it no longer asks for.
    pub diff: PermissionDiff,
}

/// What an install recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallChange {
    /// The same manifest from the same file: nothing recorded, nothing audited.
    Unchanged,
    /// A plugin of a new name (or replacing a manifest that no longer loads).
    Installed,
    /// A new manifest that asks for nothing the previous version did not.
    Updated,
    /// A new manifest asking for more than the previous version: the running `berth dev
    /// up` holds it `AwaitingApproval` until `berth grant`, unless auto-approval covers its
    /// risk, and the previous revision keeps serving meanwhile.
    NeedsGrant,
}

/// What `grant` recorded, with what the user is shown about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Granted {
    /// The plugin as installed.
    pub plugin: Plugin,
    /// Its risk.
    pub risk: RiskAssessment,
    /// What it asks for, one item a line.
    pub items: Vec<PermissionItem>,
    /// What it asks for beyond the latest grant still in force; empty without one.
    pub new_since_last_grant: Vec<String>,
    /// The grant as stored.
    pub record: GrantRecord,
    /// What the plugin asks for that this grant does not cover, when its risk is above
    /// local mode's auto-approve tier (`low`): the supervisor then holds it
    /// `AwaitingApproval`. Always empty for [`LocalControl::grant`].
    pub not_covered: Vec<String>,
    /// Why the audit event could not be written, if it could not; the grant stands.
    pub audit_error: Option<String>,
}

/// What `revoke` recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// How many grants were in force and are now revoked.
    pub count: usize,
    /// Why the audit event could not be written, if it could not; the revocation stands.
    pub audit_error: Option<String>,
}

impl<'a> LocalControl<'a> {
    /// The control plane of `state` through `store` (a connection to its `berth.db`),
    /// auditing as `actor` (see [`super::current_user`]).
    pub fn new(state: &'a StateDir, store: &'a Store, actor: impl Into<String>) -> Self {
        Self {
            state,
            store,
            actor: actor.into(),
        }
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        self.state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// A client of the local gateway that the running `berth dev up` published, with the
    /// state directory's admin token, for `berth invoke` and `berth hook`. It goes to the
    /// gateway's own address when this host reaches it (Linux: no userland proxy on the
    /// way), else to the published port on 127.0.0.1.
    pub fn gateway(&self) -> Result<AdminClient> {
        let url =
            self.store
                .setting(GATEWAY_URL_SETTING)?
                .ok_or_else(|| ControlError::NoGateway {
                    state_dir: self.state.path().to_path_buf(),
                })?;
        let direct = self.store.setting(GATEWAY_DIRECT_URL_SETTING)?;
        let url = preferred_url(&url, direct.as_deref());
        Ok(AdminClient::new(url, &self.state.admin_token()?))
    }

    /// The installed plugin `name`, or an error that says how to list and install.
    pub fn installed(&self, name: &str) -> Result<InstalledPlugin> {
        self.store
            .plugin(name)?
            .ok_or_else(|| ControlError::NotInstalled {
                name: name.to_owned(),
            })
    }

    /// The manifest of the installed plugin `name`, loaded.
    pub fn plugin(&self, name: &str) -> Result<Plugin> {
        let installed = self.installed(name)?;
        plan::parse_installed(&installed)
            .map_err(|problems| ControlError::InstalledManifest { problems })
    }

    /// Installs or upgrades `plugin`, read as `yaml` from `file`, and audits it with its
    /// risk and permission diff. The same manifest from the same file records nothing.
    pub fn install(&self, file: &Path, yaml: &str, plugin: &Plugin) -> Result<InstallOutcome> {
        let source = file
            .canonicalize()
            .unwrap_or_else(|_| file.to_path_buf())
            .display()
            .to_string();
        self.install_from(&source, yaml, plugin)
    }

    /// [`LocalControl::install`] with the source recorded as given (`--watch` re-records
    /// the path already stored).
    pub fn install_from(
        &self,
        source: &str,
        yaml: &str,
        plugin: &Plugin,
    ) -> Result<InstallOutcome> {
        let name = plugin.name();
        let installed = self.store.plugin(name)?;
        let before = installed
            .as_ref()
            .and_then(|p| plan::parse_installed(p).ok());
        let previous = before.as_ref().map(|old| Previous {
            version: old.spec.version.clone(),
            diff: permission_diff(&old.spec.permissions, &plugin.spec.permissions),
        });
        let mut outcome = InstallOutcome {
            name: name.to_owned(),
            version: plugin.spec.version.clone(),
            previous,
            change: InstallChange::Unchanged,
        };
        if installed
            .as_ref()
            .is_some_and(|p| p.manifest_yaml == yaml && p.source.as_deref() == Some(source))
        {
            return Ok(outcome);
        }
        self.store.upsert_plugin(name, yaml, Some(source))?;
        let risk = assess(&plugin.spec.permissions, &plugin.spec.hooks);
        let mut details = json!({
            "action": if outcome.previous.is_some() { "updated" } else { "installed" },
            "version": plugin.spec.version,
            "image": plugin.spec.image,
            "source": source,
            "riskScore": risk.score,
        });
        outcome.change = match &outcome.previous {
            Some(old) => {
                details["previousVersion"] = json!(old.version);
                details["permissionsAdded"] = json!(old.diff.added);
                details["permissionsRemoved"] = json!(old.diff.removed);
                if old.diff.needs_grant() {
                    InstallChange::NeedsGrant
                } else {
                    InstallChange::Updated
                }
            }
            None => InstallChange::Installed,
        };
        // An install's audit event is part of the install: failing to write it fails it.
        self.store.append_audit(vec![
            AuditEvent::new(&self.actor, types::LIFECYCLE, "success")
                .plugin(name)
                .details(details)
                .risk_score(risk.score),
        ])?;
        Ok(outcome)
    }

    /// Removes the installed plugin `name` (its audit records and revisions' numbers stay);
    /// returns why the audit event could not be written, if it could not.
    pub fn uninstall(&self, name: &str) -> Result<Option<String>> {
        self.installed(name)?;
        self.store.remove_plugin(name)?;
        Ok(self.audit(name, types::LIFECYCLE, json!({"action": "uninstalled"})))
    }

    /// Enables or disables the installed plugin `name`; returns why the audit event could
    /// not be written, if it could not.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<Option<String>> {
        self.installed(name)?;
        self.store.set_enabled(name, enabled)?;
        let action = if enabled { "enabled" } else { "disabled" };
        Ok(self.audit(name, types::LIFECYCLE, json!({ "action": action })))
    }

    /// Grants what the installed version of `name` asks for, recording who (this control
    /// plane's actor), why and until when.
    pub fn grant(
        &self,
        name: &str,
        reason: Option<&str>,
        expires: Option<Timestamp>,
    ) -> Result<Granted> {
        let plugin = self.plugin(name)?;
        let expires = expires.map(format_time);
        let risk = assess(&plugin.spec.permissions, &plugin.spec.hooks);
        let items = berth_api::risk::items(&plugin.spec.permissions)
            .into_iter()
            .collect();
        let now = format_time(Timestamp::now());
        // active_grants is newest first: compare with the latest grant in force.
        let latest: Option<Permissions> = self
            .store
            .active_grants(name, &now)?
            .iter()
            .find_map(|g| serde_json::from_str(&g.permissions_json).ok());
        let new_since_last_grant = latest
            .map(|old| permission_diff(&old, &plugin.spec.permissions).added)
            .unwrap_or_default();
        let permissions = serde_json::to_string(&plugin.spec.permissions)?;
        let record = self.store.add_grant(
            name,
            &permissions,
            risk.score,
            &self.actor,
            reason,
            expires.as_deref(),
        )?;
        let audit_error = self.audit(
            name,
            types::PERMISSION,
            json!({
                "action": "granted",
                "grant": record.id,
                "version": plugin.spec.version,
                "permissions": plugin.spec.permissions,
                "reason": reason,
                "expiresAt": expires,
            }),
        );
        Ok(Granted {
            plugin,
            risk,
            items,
            new_since_last_grant,
            record,
            not_covered: Vec::new(),
            audit_error,
        })
    }

    /// Records the permissions of `grant` (a `PluginGrant` read from `source_name`, such as
    /// the narrowed grant `berth usage --output yaml` prints) as the one grant of `name` in
    /// force: the grants in force before are revoked in the same transaction, so a narrowed
    /// grant narrows. What the plugin asks for beyond it stays ungranted (egress rules and
    /// calls are allowed item by item). Its `reason` and `expiresAt` are kept; the grant is
    /// recorded as given by this control plane's actor, with the file's `grantedBy` in the
    /// audit event. Nothing is written when the grant is for another plugin or has expired.
    pub fn grant_from(
        &self,
        name: &str,
        grant: &PluginGrant,
        source_name: &str,
    ) -> Result<Granted> {
        let plugin = self.plugin(name)?;
        if grant.spec.plugin != name {
            return Err(ControlError::GrantForOtherPlugin {
                source_name: source_name.to_owned(),
                name: name.to_owned(),
                found: grant.spec.plugin.clone(),
            });
        }
        let expires = match grant.spec.expires_at.as_deref() {
            None => None,
            Some(text) => {
                let at: Timestamp = text.parse().map_err(|e| ControlError::GrantExpiry {
                    source_name: source_name.to_owned(),
                    problem: format!("{text:?} is not an RFC 3339 time: {e}"),
                })?;
                if at <= Timestamp::now() {
                    return Err(ControlError::GrantExpiry {
                        source_name: source_name.to_owned(),
                        problem: format!("{text} has passed; set a later time or remove it"),
                    });
                }
                Some(format_time(at))
            }
        };
        let permissions = &grant.spec.permissions;
        let risk = assess(permissions, &plugin.spec.hooks);
        let items = berth_api::risk::items(permissions).into_iter().collect();
        let now = format_time(Timestamp::now());
        let latest: Option<Permissions> = self
            .store
            .active_grants(name, &now)?
            .iter()
            .find_map(|g| serde_json::from_str(&g.permissions_json).ok());
        let new_since_last_grant = latest
            .map(|old| permission_diff(&old, permissions).added)
            .unwrap_or_default();
        let json = serde_json::to_string(permissions)?;
        let reason = grant.spec.reason.as_deref();
        let (record, replaced) = self.store.replace_grants(
            name,
            &json,
            risk.score,
            &self.actor,
            reason,
            expires.as_deref(),
        )?;
        let audit_error = self.audit(
            name,
            types::PERMISSION,
            json!({
                "action": "granted",
                "grant": record.id,
                "version": plugin.spec.version,
                "permissions": permissions,
                "reason": reason,
                "expiresAt": expires,
                "from": source_name,
                "grantName": grant.metadata.name,
                "grantedBy": grant.spec.granted_by,
                "replaced": replaced,
            }),
        );
        let requested = assess(&plugin.spec.permissions, &plugin.spec.hooks);
        let not_covered = if requested.tier <= berth_api::RiskTier::Low {
            Vec::new()
        } else {
            berth_api::risk::coverage(&plugin.spec.permissions, [permissions])
                .missing
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        Ok(Granted {
            plugin,
            risk,
            items,
            new_since_last_grant,
            record,
            not_covered,
            audit_error,
        })
    }

    /// Revokes every grant of `name` in force; the supervisor stops it if it needs one.
    pub fn revoke(&self, name: &str) -> Result<Revoked> {
        self.installed(name)?;
        let count = self.store.revoke_grants(name)?;
        let audit_error = self.audit(
            name,
            types::PERMISSION,
            json!({"action": "revoked", "grants": count}),
        );
        Ok(Revoked { count, audit_error })
    }

    /// Writes one successful audit event; a failure is returned, not raised, because the
    /// change it records is already committed.
    fn audit(&self, plugin: &str, type_: &str, details: Value) -> Option<String> {
        let event = AuditEvent::new(&self.actor, type_, "success")
            .plugin(plugin)
            .details(details);
        self.store
            .append_audit(vec![event])
            .err()
            .map(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Fixture, calc_yaml};
    use super::*;

    const ACTOR: &str = "user:test";

    #[test]
    fn first_install_is_audited_with_its_risk() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let yaml = calc_yaml("1.0.0", &[]);
        let (file, plugin) = f.manifest("calc.yaml", &yaml);

        let outcome = control.install(&file, &yaml, &plugin).unwrap();

        assert_eq!(outcome.change, InstallChange::Installed);
        assert_eq!(outcome.previous, None);
        let installed = control.installed("calc").unwrap();
        assert_eq!(installed.manifest_yaml, yaml);
        let source = file.canonicalize().unwrap().display().to_string();
        assert_eq!(installed.source.as_deref(), Some(source.as_str()));
        let events = f.audit("calc");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.actor.as_str(), e.type_.as_str()),
            (ACTOR, types::LIFECYCLE)
        );
        assert_eq!(e.outcome, "success");
        let risk = assess(&plugin.spec.permissions, &plugin.spec.hooks).score;
        assert_eq!(e.risk_score, Some(risk));
        assert_eq!(e.details["action"], "installed");
        assert_eq!(e.details["version"], "1.0.0");
        assert_eq!(e.details["source"], source.as_str());
        assert_eq!(e.details["riskScore"], risk);
    }

    #[test]
    fn reinstalling_the_same_manifest_records_nothing() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let yaml = calc_yaml("1.0.0", &[]);
        let (file, plugin) = f.manifest("calc.yaml", &yaml);
        control.install(&file, &yaml, &plugin).unwrap();
        let counter = f.store.change_counter().unwrap();

        let again = control.install(&file, &yaml, &plugin).unwrap();

        assert_eq!(again.change, InstallChange::Unchanged);
        let previous = again.previous.expect("installed before");
        assert_eq!(previous.version, "1.0.0");
        assert_eq!(previous.diff, PermissionDiff::default());
        assert_eq!(f.store.change_counter().unwrap(), counter);
        assert_eq!(f.audit("calc").len(), 1);
    }

    #[test]
    fn upgrade_asking_for_more_shows_the_diff_and_needs_a_grant() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let old = calc_yaml("1.0.0", &[]);
        let (file, plugin) = f.manifest("calc.yaml", &old);
        control.install(&file, &old, &plugin).unwrap();
        let wider = calc_yaml("1.1.0", &[443]);
        let (file, plugin) = f.manifest("calc-wider.yaml", &wider);

        let outcome = control.install(&file, &wider, &plugin).unwrap();

        assert_eq!(outcome.change, InstallChange::NeedsGrant);
        let previous = outcome.previous.unwrap();
        assert_eq!(previous.version, "1.0.0");
        assert_eq!(previous.diff.added, ["network egress *:443"]);
        assert!(previous.diff.removed.is_empty());
        let events = f.audit("calc");
        assert_eq!(events.len(), 2);
        let d = &events[1].details;
        assert_eq!(d["action"], "updated");
        assert_eq!(d["previousVersion"], "1.0.0");
        assert_eq!(d["permissionsAdded"], json!(["network egress *:443"]));
        assert_eq!(d["permissionsRemoved"], json!([]));

        let narrower = calc_yaml("1.2.0", &[]);
        let (file, plugin) = f.manifest("calc.yaml", &narrower);
        let back = control.install(&file, &narrower, &plugin).unwrap();
        assert_eq!(back.change, InstallChange::Updated);
        assert_eq!(
            back.previous.unwrap().diff.removed,
            ["network egress *:443"]
        );
    }

    #[test]
    fn grant_is_audited_with_actor_reason_and_expiry() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let yaml = calc_yaml("1.0.0", &[443]);
        let (file, plugin) = f.manifest("calc.yaml", &yaml);
        control.install(&file, &yaml, &plugin).unwrap();
        let expires: Timestamp = "2999-01-02T03:04:05Z".parse().unwrap();

        let granted = control.grant("calc", Some("tests"), Some(expires)).unwrap();

        assert_eq!(granted.record.granted_by, ACTOR);
        assert_eq!(granted.record.reason.as_deref(), Some("tests"));
        assert_eq!(granted.record.expires_at, Some(format_time(expires)));
        assert_eq!(granted.audit_error, None);
        let shown: Vec<String> = granted.items.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["network egress *:443"]);
        assert!(granted.new_since_last_grant.is_empty(), "no earlier grant");
        let events = f.audit("calc");
        let e = events.last().unwrap();
        assert_eq!(
            (e.actor.as_str(), e.type_.as_str()),
            (ACTOR, types::PERMISSION)
        );
        assert_eq!(e.outcome, "success");
        assert_eq!(e.details["action"], "granted");
        assert_eq!(e.details["grant"], granted.record.id);
        assert_eq!(e.details["version"], "1.0.0");
        assert_eq!(e.details["reason"], "tests");
        assert_eq!(e.details["expiresAt"], format_time(expires).as_str());
        assert_eq!(
            e.details["permissions"],
            serde_json::to_value(&plugin.spec.permissions).unwrap()
        );

        let wider = calc_yaml("1.1.0", &[443, 8443]);
        let (file, plugin) = f.manifest("calc.yaml", &wider);
        control.install(&file, &wider, &plugin).unwrap();
        let again = control.grant("calc", None, None).unwrap();
        assert_eq!(again.new_since_last_grant, ["network egress *:8443"]);

        // Compared with the latest grant, not the first: only 9443 is new.
        let widest = calc_yaml("1.2.0", &[443, 8443, 9443]);
        let (file, plugin) = f.manifest("calc.yaml", &widest);
        control.install(&file, &widest, &plugin).unwrap();
        let third = control.grant("calc", None, None).unwrap();
        assert_eq!(third.new_since_last_grant, ["network egress *:9443"]);
        assert_eq!(
            f.audit("calc").last().unwrap().details["reason"],
            Value::Null
        );
    }

    /// A plugin `fetch` reaching two domains on 443, like http-fetch with two allowed hosts;
    /// the wildcards put it above the auto-approved tier, so grants decide.
    const FETCH_YAML: &str = "apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata:
  name: fetch
spec:
  image: berth/fetch:1.0.0
  version: 1.0.0
  capabilities:
    - name: get
      input: {type: object}
      output: {type: object}
  permissions:
    network:
      egress:
        - {host: \"*.example.com\", ports: [443]}
        - {host: \"*.example.org\", ports: [443]}
  resources:
    memory: 16Mi
";

    /// The usage report of `fetch` when only api.example.com was used.
    fn fetch_usage(
        plugin: &Plugin,
    ) -> (
        berth_contract::wire::UsageReportWire,
        berth_contract::wire::PluginUsageWire,
    ) {
        use berth_contract::wire::{EgressUsageWire, PluginUsageWire, UsageReportWire};
        let egress = &plugin.spec.permissions.network.egress;
        let usage = PluginUsageWire {
            plugin: "fetch".into(),
            requested: Some(plugin.spec.permissions.clone()),
            destinations: Vec::new(),
            egress: vec![
                EgressUsageWire {
                    rule: egress[0].clone(),
                    granted: true,
                    count: 3,
                    last_used: Some("2026-03-02T00:00:00.000Z".into()),
                },
                EgressUsageWire {
                    rule: egress[1].clone(),
                    granted: true,
                    count: 0,
                    last_used: None,
                },
            ],
            calls: Vec::new(),
        };
        let report = UsageReportWire {
            since: "2026-03-01T00:00:00.000Z".into(),
            until: "2026-03-31T00:00:00.000Z".into(),
            plugins: vec![usage.clone()],
        };
        (report, usage)
    }

    fn load_grant(text: &str) -> PluginGrant {
        let loaded = berth_api::load_manifests("narrowed.yaml", text.as_bytes());
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        match &loaded.documents[0].manifest {
            berth_api::Manifest::Grant(g) => (**g).clone(),
            other => panic!("not a grant: {other:?}"),
        }
    }

    #[test]
    fn a_narrowed_grant_from_a_file_replaces_the_wider_one_and_narrows_egress() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let (file, plugin) = f.manifest("fetch.yaml", FETCH_YAML);
        control.install(&file, FETCH_YAML, &plugin).unwrap();
        control.grant("fetch", None, None).unwrap();
        let (report, usage) = fetch_usage(&plugin);
        let narrowed = berth_contract::wire::usage::narrowed_grant(&usage, &report, ACTOR, None);
        // JSON is YAML: the loader reads what `berth usage --output json|yaml` prints.
        let grant = load_grant(&serde_json::to_string(&narrowed).unwrap());

        let granted = control
            .grant_from("fetch", &grant, "narrowed.yaml")
            .unwrap();

        let shown: Vec<String> = granted.items.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["network egress *.example.com:443"]);
        let now = Timestamp::now();
        let active = f.store.active_grants("fetch", &format_time(now)).unwrap();
        assert_eq!(active.len(), 1, "the wider grant is revoked");
        assert_eq!(active[0].id, granted.record.id);
        assert!(
            granted
                .record
                .reason
                .as_deref()
                .unwrap()
                .contains("berth usage"),
            "{:?}",
            granted.record.reason
        );
        let allowed = plan::allowed_egress(&plugin, &active, now, berth_api::RiskTier::Low);
        assert_eq!(
            allowed,
            vec![plugin.spec.permissions.network.egress[0].clone()]
        );
        assert_eq!(granted.not_covered, ["network egress *.example.org:443"]);
        let e = f.audit("fetch").pop().unwrap();
        assert_eq!(e.details["from"], "narrowed.yaml");
        assert_eq!(e.details["replaced"], 1);
        assert_eq!(e.details["grantName"], "fetch-used");
    }

    #[test]
    fn a_grant_file_for_another_plugin_or_already_expired_writes_nothing() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let (file, plugin) = f.manifest("fetch.yaml", FETCH_YAML);
        control.install(&file, FETCH_YAML, &plugin).unwrap();
        control.grant("fetch", None, None).unwrap();
        let (report, usage) = fetch_usage(&plugin);
        let mut grant = berth_contract::wire::usage::narrowed_grant(&usage, &report, ACTOR, None);
        let counter = f.store.change_counter().unwrap();

        grant.spec.plugin = "other".into();
        let e = control
            .grant_from("fetch", &grant, "narrowed.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("narrowed.yaml: spec.plugin: the grant is for \"other\", not \"fetch\""),
            "{e}"
        );
        grant.spec.plugin = "fetch".into();
        grant.spec.expires_at = Some("2001-01-01T00:00:00Z".into());
        let e = control
            .grant_from("fetch", &grant, "narrowed.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.expiresAt: 2001-01-01T00:00:00Z has passed"),
            "{e}"
        );

        assert_eq!(f.store.change_counter().unwrap(), counter);
        assert_eq!(f.store.grants("fetch").unwrap().len(), 1);
    }

    #[test]
    fn revoke_is_audited_with_how_many_grants_it_withdrew() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let yaml = calc_yaml("1.0.0", &[443]);
        let (file, plugin) = f.manifest("calc.yaml", &yaml);
        control.install(&file, &yaml, &plugin).unwrap();
        control.grant("calc", None, None).unwrap();
        control.grant("calc", None, None).unwrap();

        let revoked = control.revoke("calc").unwrap();

        assert_eq!(revoked.count, 2);
        let e = f.audit("calc").pop().unwrap();
        assert_eq!(
            (e.actor.as_str(), e.type_.as_str()),
            (ACTOR, types::PERMISSION)
        );
        assert_eq!(e.details, json!({"action": "revoked", "grants": 2}));
        assert_eq!(control.revoke("calc").unwrap().count, 0);
    }

    #[test]
    fn enable_disable_and_uninstall_are_audited() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let yaml = calc_yaml("1.0.0", &[]);
        let (file, plugin) = f.manifest("calc.yaml", &yaml);
        control.install(&file, &yaml, &plugin).unwrap();

        assert_eq!(control.set_enabled("calc", false).unwrap(), None);
        assert!(!control.installed("calc").unwrap().enabled);
        assert_eq!(control.set_enabled("calc", true).unwrap(), None);
        assert_eq!(control.uninstall("calc").unwrap(), None);

        let actions: Vec<Value> = f.audit("calc")[1..]
            .iter()
            .map(|e| e.details["action"].clone())
            .collect();
        assert_eq!(actions, ["disabled", "enabled", "uninstalled"]);
        assert!(f.store.plugin("calc").unwrap().is_none());
    }

    #[test]
    fn commands_on_a_plugin_not_installed_say_how_to_install_it() {
        let f = Fixture::new();
        let control = LocalControl::new(&f.state, &f.store, ACTOR);
        let e = control.grant("nope", None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no plugin \"nope\" is installed (see `berth list`; install with `berth install FILE`)"
        );
        assert!(matches!(
            control.revoke("nope"),
            Err(ControlError::NotInstalled { .. })
        ));
        assert!(matches!(
            control.uninstall("nope"),
            Err(ControlError::NotInstalled { .. })
        ));
        assert!(f.audit("nope").is_empty());
    }
}
