//! One contract under both backends: the allowed-calls (and allowed-egress) rule gives the
//! same answer in the gateway's static directory, the operator's cluster directory and the
//! local supervisor, and both backends give a plugin the same environment variable names.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::{EgressRule, Plugin, PluginCall, PluginGrant, RiskTier};
use berth_contract::PluginDirectory;
use berth_docker::hardening::{LocalSecrets, PluginGateway, container_env};
use berth_docker::supervisor::plan;
use berth_operator::render::{RenderInput, RenderOptions, RevisionToRun, render};
use berth_store::GrantRecord;
use jiff::Timestamp;

const CALLER: &str = r#"apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: caller, namespace: default}
spec:
  image: berth/caller:1.0.0
  version: 1.0.0
  permissions:
    network: {egress: [{host: "*", ports: [443]}]}
    plugins: [{name: target, capabilities: [a, b]}]
    secrets: [{name: weather, env: WEATHER_KEY}]
"#;

/// A grant to `caller` of `calls` (and the egress, when `full`).
fn grant(name: &str, calls: &[&str], egress: bool, expires_at: Option<&str>) -> PluginGrant {
    let egress = if egress {
        r#"network: {egress: [{host: "*", ports: [443]}]}"#
    } else {
        ""
    };
    let expiry = expires_at
        .map(|e| format!("  expiresAt: \"{e}\"\n"))
        .unwrap_or_default();
    serde_yaml::from_str(&format!(
        "apiVersion: berth.dev/v1alpha1\nkind: PluginGrant\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  plugin: caller\n  grantedBy: ops\n{expiry}  permissions:\n    {egress}\n    plugins: [{{name: target, capabilities: [{}]}}]\n    secrets: [{{name: weather, env: WEATHER_KEY}}]\n",
        calls.join(", ")
    ))
    .expect("grant parses")
}

struct Case {
    name: &'static str,
    tier: RiskTier,
    /// Grants in force, and whether each was revoked afterwards.
    grants: Vec<(PluginGrant, bool)>,
    expected: Vec<&'static str>,
    /// Whether the requested `*:443` egress is allowed.
    egress: bool,
}

fn cases() -> Vec<Case> {
    let far = Some("2099-01-01T00:00:00Z");
    let past = Some("2020-01-01T00:00:00Z");
    vec![
        Case {
            name: "no grant, moderate risk under the default tier",
            tier: RiskTier::Low,
            grants: vec![],
            expected: vec![],
            egress: false,
        },
        Case {
            name: "a full grant",
            tier: RiskTier::Low,
            grants: vec![(grant("full", &["a", "b"], true, far), false)],
            expected: vec!["a", "b"],
            egress: true,
        },
        Case {
            name: "a partial grant allows what it names",
            tier: RiskTier::Low,
            grants: vec![(grant("partial", &["a"], false, None), false)],
            expected: vec!["a"],
            egress: false,
        },
        Case {
            name: "an expired grant covers nothing",
            tier: RiskTier::Low,
            grants: vec![(grant("old", &["a", "b"], true, past), false)],
            expected: vec![],
            egress: false,
        },
        Case {
            name: "a configured tier other than low auto-approves",
            tier: RiskTier::High,
            grants: vec![],
            expected: vec!["a", "b"],
            egress: true,
        },
        Case {
            name: "a revoked grant covers nothing",
            tier: RiskTier::Low,
            grants: vec![(grant("revoked", &["a", "b"], true, None), true)],
            expected: vec![],
            egress: false,
        },
        Case {
            name: "a revoked full grant beside a partial one leaves the partial",
            tier: RiskTier::Low,
            grants: vec![
                (grant("revoked", &["a", "b"], true, None), true),
                (grant("partial", &["b"], false, far), false),
            ],
            expected: vec!["b"],
            egress: false,
        },
    ]
}

/// What a directory entry allows: the capabilities of `target`, and the egress rules as
/// `host:port`.
fn allowed(entry: &berth_contract::PluginEntry) -> (Vec<String>, Vec<String>) {
    (
        capabilities(&entry.granted_calls),
        egress(&entry.granted_egress),
    )
}

fn egress(rules: &[EgressRule]) -> Vec<String> {
    rules
        .iter()
        .flat_map(|r| {
            let target = r.host.clone().or(r.cidr.clone()).unwrap_or_default();
            r.ports.iter().map(move |p| format!("{target}:{p}"))
        })
        .collect()
}

fn capabilities(calls: &[PluginCall]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.name == "target")
        .flat_map(|c| c.capabilities.clone())
        .collect()
}

/// `berth gateway --plugins DIR --auto-approve-tier T`: revoked grants are not in the files.
fn gateway_static(plugin: &Plugin, case: &Case) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("caller.yaml"),
        serde_yaml::to_string(plugin).unwrap(),
    )
    .unwrap();
    for (i, (g, revoked)) in case.grants.iter().enumerate() {
        if !revoked {
            std::fs::write(
                dir.path().join(format!("grant-{i}.yaml")),
                serde_yaml::to_string(g).unwrap(),
            )
            .unwrap();
        }
    }
    let directory = berth_gateway::directory::load(&[dir.path().to_path_buf()], &[], case.tier)
        .expect("the static directory loads");
    let snapshot = directory.snapshot();
    allowed(snapshot.get("caller").expect("caller listed"))
}

/// The operator's cluster directory: a revoked PluginGrant is deleted from the namespace.
fn operator_directory(plugin: &Plugin, case: &Case, now: Timestamp) -> (Vec<String>, Vec<String>) {
    let grants: Vec<Arc<PluginGrant>> = case
        .grants
        .iter()
        .filter(|(_, revoked)| !revoked)
        .map(|(g, _)| Arc::new(g.clone()))
        .collect();
    let entries = berth_operator::directory::entries(
        &[Arc::new(plugin.clone())],
        &grants,
        &[],
        now,
        case.tier,
    );
    allowed(&entries[0])
}

/// The local supervisor: grants are store records, and `berth revoke` marks them revoked.
fn local_supervisor(plugin: &Plugin, case: &Case, now: Timestamp) -> (Vec<String>, Vec<String>) {
    let records: Vec<GrantRecord> = case
        .grants
        .iter()
        .enumerate()
        .map(|(i, (g, revoked))| GrantRecord {
            id: i as i64 + 1,
            plugin: "caller".into(),
            permissions_json: serde_json::to_string(&g.spec.permissions).unwrap(),
            risk_score: 30,
            granted_by: g.spec.granted_by.clone(),
            reason: None,
            granted_at: "2026-01-01T00:00:00.000Z".into(),
            expires_at: g.spec.expires_at.clone(),
            revoked_at: revoked.then(|| "2026-01-02T00:00:00.000Z".into()),
        })
        .collect();
    (
        capabilities(&plan::allowed_calls(plugin, &records, now, case.tier)),
        egress(&plan::allowed_egress(plugin, &records, now, case.tier)),
    )
}

#[test]
fn the_allowed_calls_rule_agrees_in_all_three_directories() {
    let plugin: Plugin = serde_yaml::from_str(CALLER).unwrap();
    let risk = berth_api::assess(&plugin.spec.permissions, &plugin.spec.hooks);
    assert_eq!(
        risk.tier,
        RiskTier::High,
        "the cases assume a high-risk caller"
    );
    let now = Timestamp::now();
    for case in cases() {
        let expected = (
            case.expected
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
            if case.egress {
                vec!["*:443".to_owned()]
            } else {
                vec![]
            },
        );
        assert_eq!(
            gateway_static(&plugin, &case),
            expected,
            "gateway static directory: {}",
            case.name
        );
        assert_eq!(
            operator_directory(&plugin, &case, now),
            expected,
            "operator directory: {}",
            case.name
        );
        assert_eq!(
            local_supervisor(&plugin, &case, now),
            expected,
            "local supervisor: {}",
            case.name
        );
    }
}

#[test]
fn both_backends_give_a_plugin_the_same_variable_names() {
    let plugin: Plugin = serde_yaml::from_str(CALLER).unwrap();
    let values = HashMap::from([("weather".to_owned(), "k".to_owned())]);
    let local: Vec<String> = container_env(
        &plugin,
        Some(PluginGateway {
            url: "http://172.20.0.2:7400".into(),
            token: "token".into(),
            egress_proxy: Some("172.20.0.2:7401".into()),
        }),
        Some(LocalSecrets {
            values: &values,
            file: "secrets.env",
        }),
    )
    .expect("local environment")
    .into_iter()
    .map(|(name, _)| name)
    .collect();

    let options = RenderOptions::default();
    let revision = RevisionToRun::of_spec(&plugin, 1);
    let rendered = render(RenderInput {
        plugin: &plugin,
        granted: &plugin.spec.permissions,
        revision: &revision,
        options: &options,
    })
    .expect("renders");
    let deployment = serde_json::to_value(&rendered.deployment).unwrap();
    let cluster: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();

    assert_eq!(local, cluster);
    for name in [
        "BERTH_PORT",
        "BERTH_PLUGIN_NAME",
        "BERTH_PLUGIN_VERSION",
        "BERTH_GATEWAY_URL",
        "BERTH_PLUGIN_TOKEN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "WEATHER_KEY",
    ] {
        assert!(local.iter().any(|n| n == name), "{name} missing: {local:?}");
    }
}
