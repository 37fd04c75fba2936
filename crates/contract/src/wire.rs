//! What a supervisor in another process sends the gateway, as JSON (camelCase): the whole
//! plugin directory for `PUT /v1/admin/directory` ([`SnapshotWire`]) and what it saw of
//! the plugins for `POST /v1/admin/observations` ([`ObservationsWire`]).
//!
//! In local Docker mode the gateway runs in a container on the plugin networks while the
//! supervisor that starts the plugins runs on the host; these types are the contract
//! between the two, so they tolerate fields they do not know (a newer supervisor may talk
//! to an older gateway image).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_api::{EgressRule, Phase, Plugin, PluginCall};
use serde::{Deserialize, Serialize};

use crate::credential::{format_digest, parse_digest};
use crate::directory::{Endpoint, PluginEntry};
use crate::{Error, Result};
pub use crate::{INVALID_OBSERVATIONS, INVALID_SNAPSHOT};

pub mod usage;
pub use usage::{
    CallUsageWire, DestinationUsageWire, EgressUsageWire, PATH_ADMIN_USAGE, PluginUsageWire,
    UsageKind, UsageReportWire,
};

/// Gateway path a supervisor `PUT`s a [`SnapshotWire`] to (admin token).
pub const PATH_ADMIN_DIRECTORY: &str = "/v1/admin/directory";
/// Gateway path a supervisor `POST`s [`ObservationsWire`] to (admin token).
pub const PATH_ADMIN_OBSERVATIONS: &str = "/v1/admin/observations";
/// Gateway path a supervisor `POST`s a readiness probe to (admin token).
pub const PATH_ADMIN_PROBE: &str = "/v1/admin/probe";

/// Every plugin the gateway should route to, at one version of the supervisor's view.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotWire {
    /// Increases with every snapshot the supervisor computes; the gateway refuses one
    /// older than the last it applied, so a delayed retry cannot roll routing back.
    pub version: u64,
    /// One entry per plugin; names must be unique.
    pub plugins: Vec<EntryWire>,
}

/// One plugin of a [`SnapshotWire`]: a [`PluginEntry`] as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntryWire {
    /// The manifest of the serving revision, as the full `Plugin` object.
    pub plugin: Plugin,
    /// Changes whenever the manifest changes; the gateway compiles schemas per revision.
    pub revision: u64,
    /// Lifecycle phase; `Ready` and `Degraded` serve.
    pub phase: Phase,
    /// Base URLs of the healthy instances, e.g. `http://172.20.0.3:8080`.
    pub endpoints: Vec<String>,
    /// Inter-plugin calls the plugin requests and holds a grant (or auto-approval) for.
    #[serde(default)]
    pub granted_calls: Vec<PluginCall>,
    /// Egress the plugin requests and holds a grant (or auto-approval) for.
    #[serde(default)]
    pub granted_egress: Vec<EgressRule>,
    /// `sha256:<64 hex>` of the plugin's `BERTH_PLUGIN_TOKEN`; the token itself never
    /// leaves the supervisor.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Risk score (0–100) of the permissions the plugin requests.
    #[serde(default)]
    pub risk_score: u32,
}

/// The answer to a directory push that was applied.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PushAnswerWire {
    /// The version of the snapshot now in force.
    pub version: u64,
    /// How many plugins it holds.
    pub plugins: usize,
}

impl SnapshotWire {
    /// The wire form of `entries` at `version`.
    ///
    /// The wire carries one token digest per plugin: of an entry with several, the first
    /// is sent (entries the supervisor builds have exactly one).
    pub fn from_entries<'a>(
        version: u64,
        entries: impl IntoIterator<Item = &'a PluginEntry>,
    ) -> Self {
        Self {
            version,
            plugins: entries.into_iter().map(EntryWire::from).collect(),
        }
    }

    /// Checks every entry and turns it into a [`PluginEntry`]. The first problem found is
    /// a 400 `invalid_snapshot` whose message starts with the field's path, e.g.
    /// `plugins[0].endpoints[1]: …`.
    pub fn into_entries(self) -> Result<Vec<PluginEntry>> {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut tokens: HashMap<[u8; 32], usize> = HashMap::new();
        let mut entries = Vec::with_capacity(self.plugins.len());
        for (i, wire) in self.plugins.into_iter().enumerate() {
            let entry = wire.into_entry(i)?;
            // Names key the directory and tokens identify one plugin: a duplicate would
            // silently drop an entry or let one plugin's token act as another.
            if let Some(first) = names.insert(entry.name().to_owned(), i) {
                return Err(invalid(
                    format!("plugins[{i}].plugin.metadata.name"),
                    format!("plugin {:?} is also plugins[{first}]", entry.name()),
                ));
            }
            for digest in &entry.token_sha256 {
                if let Some(first) = tokens.insert(*digest, i) {
                    return Err(invalid(
                        format!("plugins[{i}].tokenSha256"),
                        format!("the same token digest is also plugins[{first}]'s"),
                    ));
                }
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl From<&PluginEntry> for EntryWire {
    fn from(entry: &PluginEntry) -> Self {
        Self {
            plugin: (*entry.plugin).clone(),
            revision: entry.revision,
            phase: entry.phase,
            endpoints: entry.endpoints.iter().map(ToString::to_string).collect(),
            granted_calls: entry.granted_calls.clone(),
            granted_egress: entry.granted_egress.clone(),
            token_sha256: entry.token_sha256.first().map(format_digest),
            risk_score: entry.risk_score,
        }
    }
}

impl EntryWire {
    /// Checks this entry, the `i`-th of its snapshot, and turns it into a [`PluginEntry`].
    fn into_entry(self, i: usize) -> Result<PluginEntry> {
        // The name keys routing, metric labels and token identities, so it must follow the
        // manifest rules. The rest of the manifest was validated by the supervisor when it
        // was installed; enforcing every rule here again would let a gateway image of
        // another Berth version refuse a whole directory over a rule that changed, and the
        // gateway already copes with a schema that does not compile (500 for that
        // capability) or resources it cannot read (defaults).
        if let Some(problem) = berth_api::validate_plugin(&self.plugin)
            .into_iter()
            .find(|p| p.is_error() && p.path == "metadata.name")
        {
            return Err(invalid(
                format!("plugins[{i}].plugin.metadata.name"),
                problem.message,
            ));
        }
        let endpoints = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(j, url)| {
                Endpoint::parse(url).map_err(|e| invalid(format!("plugins[{i}].endpoints[{j}]"), e))
            })
            .collect::<Result<Vec<_>>>()?;
        if self.risk_score > 100 {
            return Err(invalid(
                format!("plugins[{i}].riskScore"),
                format!("{} is not a score from 0 to 100", self.risk_score),
            ));
        }
        let mut entry = PluginEntry::new(self.plugin)
            .with_revision(self.revision)
            .with_phase(self.phase)
            .with_endpoints(endpoints)
            .with_granted_calls(self.granted_calls)
            .with_granted_egress(self.granted_egress)
            .with_risk_score(self.risk_score);
        if let Some(text) = &self.token_sha256 {
            let digest =
                parse_digest(text).map_err(|e| invalid(format!("plugins[{i}].tokenSha256"), e))?;
            entry = entry.with_token_digest(digest);
        }
        Ok(entry)
    }
}

/// What the supervisor saw of the plugins since its last report; every list may be left
/// out. Observations of plugins that are not in the directory are dropped, because nothing
/// would ever remove their series again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservationsWire {
    /// Restarts, each counted in `berth_plugin_restarts_total{plugin,reason}`.
    #[serde(default)]
    pub restarts: Vec<RestartWire>,
    /// Cold starts, each observed in `berth_plugin_cold_start_seconds{plugin}`.
    #[serde(default)]
    pub cold_starts: Vec<ColdStartWire>,
    /// Resource readings, set in `berth_plugin_cpu_cores` and `berth_plugin_memory_bytes`.
    #[serde(default)]
    pub usage: Vec<UsageWire>,
    /// Local mode's supervisor: outages of the gateway container and of the Docker Engine
    /// since `berth dev up` started, set in the `berth_local_*` gauges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<SupervisorWire>,
}

/// What local mode's supervisor counted since `berth dev up` started. Totals, not
/// increments, so a gateway that restarted (and lost its counters) shows them right.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorWire {
    /// Times the gateway container was started or created again.
    pub gateway_restarts: u64,
    /// Seconds the gateway container was not serving, summed over its outages.
    pub gateway_down_seconds: f64,
    /// Times the Docker Engine stopped answering.
    pub engine_outages: u64,
}

/// One restart of a plugin instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestartWire {
    /// The plugin.
    pub plugin: String,
    /// Why: `oom`, `crash`, `health`, `update`, … (letters, digits, `_` and `-`, at most
    /// 32 characters: it becomes a label value).
    pub reason: String,
}

/// Time one plugin instance took from start to its first healthy answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ColdStartWire {
    /// The plugin.
    pub plugin: String,
    /// Seconds, e.g. `0.21`.
    pub seconds: f64,
}

/// What a plugin uses now, summed over its instances.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageWire {
    /// The plugin.
    pub plugin: String,
    /// CPU in use, in cores (`0.05` is 5% of one core).
    pub cpu_cores: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
}

impl ObservationsWire {
    /// True when there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
            && self.cold_starts.is_empty()
            && self.usage.is_empty()
            && self.supervisor.is_none()
    }

    /// Checks every value before any is recorded, so a bad report changes nothing. The
    /// first problem is a 400 `invalid_observations` naming the field, e.g.
    /// `coldStarts[0].seconds: …`.
    pub fn check(&self) -> Result<()> {
        let bad = |path: String, why: String| Error::Observations(format!("{path}: {why}"));
        for (i, r) in self.restarts.iter().enumerate() {
            let well_formed = (1..=32).contains(&r.reason.len())
                && r.reason
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !well_formed {
                return Err(bad(
                    format!("restarts[{i}].reason"),
                    format!(
                        "{:?} must be 1 to 32 letters, digits, `_` or `-` (e.g. oom, crash)",
                        r.reason
                    ),
                ));
            }
        }
        for (i, c) in self.cold_starts.iter().enumerate() {
            // `Duration::from_secs_f64` would panic on these; refuse them instead.
            if Duration::try_from_secs_f64(c.seconds).is_err() {
                return Err(bad(
                    format!("coldStarts[{i}].seconds"),
                    format!("{} is not a non-negative number of seconds", c.seconds),
                ));
            }
        }
        for (i, u) in self.usage.iter().enumerate() {
            if !u.cpu_cores.is_finite() || u.cpu_cores < 0.0 {
                return Err(bad(
                    format!("usage[{i}].cpuCores"),
                    format!("{} is not a non-negative number of cores", u.cpu_cores),
                ));
            }
        }
        if let Some(s) = &self.supervisor
            && (!s.gateway_down_seconds.is_finite() || s.gateway_down_seconds < 0.0)
        {
            return Err(bad(
                "supervisor.gatewayDownSeconds".into(),
                format!(
                    "{} is not a non-negative number of seconds",
                    s.gateway_down_seconds
                ),
            ));
        }
        Ok(())
    }

    /// The plugins these observations are about, each once.
    pub fn plugins(&self) -> HashSet<&str> {
        self.restarts
            .iter()
            .map(|r| r.plugin.as_str())
            .chain(self.cold_starts.iter().map(|c| c.plugin.as_str()))
            .chain(self.usage.iter().map(|u| u.plugin.as_str()))
            .collect()
    }
}

fn invalid(path: String, why: impl std::fmt::Display) -> Error {
    Error::Snapshot(format!("{path}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{digest, digest_line};

    fn plugin(name: &str) -> Plugin {
        serde_yaml::from_str(&format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  image: localhost/berth/{name}:0.1.0\n  version: 0.1.0\n  capabilities: [{{name: run, input: {{type: object}}}}]\n"
        ))
        .unwrap()
    }

    fn full_entry() -> PluginEntry {
        PluginEntry::new(plugin("calc"))
            .with_revision(7)
            .with_phase(Phase::Degraded)
            .with_endpoints(vec![
                Endpoint::parse("http://172.20.0.3:8080").unwrap(),
                Endpoint::parse("http://172.20.0.4:8080/").unwrap(),
            ])
            .with_granted_calls(vec![PluginCall {
                name: "echo".into(),
                capabilities: vec!["say".into()],
            }])
            .with_granted_egress(vec![EgressRule {
                host: Some("api.example.com".into()),
                cidr: None,
                ports: vec![443],
            }])
            .with_token("calc-token")
            .with_risk_score(42)
    }

    fn snapshot_json(plugins: serde_json::Value) -> SnapshotWire {
        serde_json::from_value(serde_json::json!({"version": 3, "plugins": plugins})).unwrap()
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let original = full_entry();
        let wire = SnapshotWire::from_entries(3, [&original]);
        let json = serde_json::to_value(&wire).unwrap();
        let entry = &json["plugins"][0];
        assert_eq!(json["version"], 3);
        assert_eq!(entry["plugin"]["metadata"]["name"], "calc");
        assert_eq!(entry["plugin"]["kind"], "Plugin");
        assert_eq!(entry["revision"], 7);
        assert_eq!(entry["phase"], "Degraded");
        assert_eq!(
            entry["endpoints"],
            serde_json::json!(["http://172.20.0.3:8080", "http://172.20.0.4:8080"])
        );
        assert_eq!(entry["grantedCalls"][0]["name"], "echo");
        assert_eq!(entry["grantedEgress"][0]["host"], "api.example.com");
        assert_eq!(entry["tokenSha256"], digest_line("calc-token").as_str());
        assert_eq!(entry["riskScore"], 42);

        let back: SnapshotWire = serde_json::from_value(json).unwrap();
        assert_eq!(back, wire);
        let entries = back.into_entries().unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.plugin, original.plugin);
        assert_eq!(e.revision, 7);
        assert_eq!(e.phase, Phase::Degraded);
        assert_eq!(e.endpoints, original.endpoints);
        assert_eq!(e.granted_calls, original.granted_calls);
        assert_eq!(e.granted_egress, original.granted_egress);
        assert_eq!(e.token_sha256, vec![digest("calc-token")]);
        assert_eq!(e.risk_score, 42);
    }

    #[test]
    fn optional_entry_fields_default_to_nothing_granted() {
        let wire = snapshot_json(serde_json::json!([{
            "plugin": serde_json::to_value(plugin("a")).unwrap(),
            "revision": 1,
            "phase": "Ready",
            "endpoints": [],
            "aFieldFromANewerSupervisor": true,
        }]));
        let entries = wire.into_entries().unwrap();
        assert!(entries[0].granted_calls.is_empty());
        assert!(entries[0].granted_egress.is_empty());
        assert!(entries[0].token_sha256.is_empty());
        assert_eq!(entries[0].risk_score, 0);
        assert!(!entries[0].is_ready(), "no endpoint");
    }

    #[test]
    fn bad_entries_are_refused_naming_the_field() {
        let message = |wire: SnapshotWire| match wire.into_entries() {
            Err(e @ Error::Snapshot(_)) => {
                assert_eq!(e.code(), INVALID_SNAPSHOT);
                e.to_string()
            }
            other => panic!("expected a bad request, got {other:?}"),
        };
        let mut wire = SnapshotWire::from_entries(1, [&full_entry()]);
        wire.plugins[0].endpoints[1] = "https://172.20.0.4:8080".into();
        assert!(message(wire).starts_with("plugins[0].endpoints[1]: "));

        let mut wire = SnapshotWire::from_entries(1, [&full_entry()]);
        wire.plugins[0].token_sha256 = Some("calc-token".into());
        assert!(message(wire).starts_with("plugins[0].tokenSha256: "));

        let mut wire = SnapshotWire::from_entries(1, [&full_entry()]);
        wire.plugins[0].token_sha256 = Some(format!("sha256:+{}", "0".repeat(63)));
        assert!(message(wire).starts_with("plugins[0].tokenSha256: "));

        let mut wire = SnapshotWire::from_entries(1, [&full_entry()]);
        wire.plugins[0].risk_score = 101;
        assert!(message(wire).starts_with("plugins[0].riskScore: "));

        for name in [None, Some("Not_A_Name".to_owned())] {
            let mut wire = SnapshotWire::from_entries(1, [&full_entry()]);
            wire.plugins[0].plugin.metadata.name = name;
            assert!(message(wire).starts_with("plugins[0].plugin.metadata.name: "));
        }

        let other = PluginEntry::new(plugin("calc"));
        let wire = SnapshotWire::from_entries(1, [&full_entry(), &other]);
        let m = message(wire);
        assert!(m.starts_with("plugins[1].plugin.metadata.name: "), "{m}");
        assert!(m.contains("plugins[0]"), "{m}");

        let other = PluginEntry::new(plugin("echo")).with_token("calc-token");
        let wire = SnapshotWire::from_entries(1, [&full_entry(), &other]);
        assert!(message(wire).starts_with("plugins[1].tokenSha256: "));
    }

    #[test]
    fn observations_decode_with_every_list_optional() {
        let o: ObservationsWire = serde_json::from_str("{}").unwrap();
        assert!(o.is_empty());
        let o: ObservationsWire = serde_json::from_str(
            r#"{"restarts":[{"plugin":"x","reason":"oom"}],
                "coldStarts":[{"plugin":"x","seconds":0.21}],
                "usage":[{"plugin":"y","cpuCores":0.05,"memoryBytes":1234567}]}"#,
        )
        .unwrap();
        o.check().unwrap();
        assert_eq!(o.restarts[0].reason, "oom");
        assert_eq!(o.cold_starts[0].seconds, 0.21);
        assert_eq!(o.usage[0].memory_bytes, 1_234_567);
        assert_eq!(o.plugins(), HashSet::from(["x", "y"]));
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["usage"][0]["cpuCores"], 0.05);
        assert_eq!(json["coldStarts"][0]["plugin"], "x");
    }

    #[test]
    fn observations_refuse_values_that_cannot_be_recorded() {
        let field = |o: ObservationsWire| match o.check() {
            Err(e @ Error::Observations(_)) => {
                assert_eq!(e.code(), INVALID_OBSERVATIONS);
                e.to_string()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }
            other => panic!("expected a bad request, got {other:?}"),
        };
        let restart = |reason: &str| ObservationsWire {
            restarts: vec![RestartWire {
                plugin: "x".into(),
                reason: reason.into(),
            }],
            ..Default::default()
        };
        assert_eq!(field(restart("")), "restarts[0].reason");
        assert_eq!(field(restart("out of memory")), "restarts[0].reason");
        assert_eq!(field(restart(&"a".repeat(33))), "restarts[0].reason");
        for seconds in [-1.0, f64::NAN, f64::INFINITY] {
            let o = ObservationsWire {
                cold_starts: vec![ColdStartWire {
                    plugin: "x".into(),
                    seconds,
                }],
                ..Default::default()
            };
            assert_eq!(field(o), "coldStarts[0].seconds");
        }
        let o = ObservationsWire {
            usage: vec![UsageWire {
                plugin: "x".into(),
                cpu_cores: -0.5,
                memory_bytes: 1,
            }],
            ..Default::default()
        };
        assert_eq!(field(o), "usage[0].cpuCores");
        for seconds in [-1.0, f64::NAN, f64::INFINITY] {
            let o = ObservationsWire {
                supervisor: Some(SupervisorWire {
                    gateway_down_seconds: seconds,
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert_eq!(field(o), "supervisor.gatewayDownSeconds");
        }
        let ok = ObservationsWire {
            supervisor: Some(SupervisorWire {
                gateway_restarts: 2,
                gateway_down_seconds: 3.5,
                engine_outages: 1,
            }),
            ..Default::default()
        };
        assert!(ok.check().is_ok() && !ok.is_empty());
        let text = serde_json::to_string(&ok).unwrap();
        assert!(text.contains(r#""gatewayDownSeconds":3.5"#), "{text}");
    }
}
