//! Reconcile scenarios against a mocked API server: every call the operator makes, in order.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{
    ConditionStatus, EgressRule, Phase, Plugin, PluginGrant, PluginGrantSpec, PluginStatus,
    Revision, RevisionOutcome,
};
use http::Method;
use serde_json::{Value, json};

use crate::controller::{Context, FINALIZER, error_policy, reconcile};
use crate::fixtures::{Expect, Reply, Seen, mock_client, now};
use crate::grants::{GrantContext, PLUGIN_FOUND};
use crate::leader::LeaseLock;
use crate::plan::{DEPENDENCIES_READY, PERMISSIONS_GRANTED, PROGRESSING, VALIDATED};
use crate::{Error, check_crds};

const NS: &str = "default";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";
const SA: &str = "/api/v1/namespaces/default/serviceaccounts";
const SVC: &str = "/api/v1/namespaces/default/services";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
const ROLE: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
const PLUGINS: &str = "/apis/berth.dev/v1alpha1/namespaces/default/plugins";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

fn plugin(name: &str, image: &str, version: &str) -> Plugin {
    let mut p: Plugin = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "generation": 1, "resourceVersion": "100",
            "finalizers": [FINALIZER]
        },
        "spec": {"image": image, "version": version}
    }))
    .unwrap();
    p.spec.resources.memory = berth_api::Quantity::new("32Mi");
    p
}

fn calculator() -> Plugin {
    plugin("calculator", "berth/calculator:0.1.0", "0.1.0")
}

fn http_fetch() -> Plugin {
    let mut p = plugin("http-fetch", "berth/http-fetch:0.1.0", "0.1.0");
    p.spec.permissions.network.egress.push(EgressRule {
        host: Some("*".into()),
        cidr: None,
        ports: vec![80, 443],
    });
    p
}

fn grant_for(p: &Plugin) -> PluginGrant {
    let mut g = PluginGrant::new(
        p.name(),
        PluginGrantSpec {
            plugin: p.name().into(),
            permissions: p.spec.permissions.clone(),
            granted_by: "platform@example.com".into(),
            reason: Some("reviewed".into()),
            expires_at: Some("2027-01-01T00:00:00Z".into()),
        },
    );
    g.metadata.namespace = Some(NS.into());
    g
}

fn plugin_json(p: &Plugin) -> Value {
    serde_json::to_value(p).unwrap()
}

/// A Deployment of `name` as the API server would report it.
fn deployment(
    name: &str,
    revision: i64,
    image: &str,
    permissions: &Value,
    ready: bool,
    stuck: bool,
) -> Value {
    let progressing = if stuck {
        json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"})
    } else {
        json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": NS, "generation": 2,
            "annotations": {
                "berth.dev/revision": revision.to_string(),
                "berth.dev/granted-permissions": permissions.to_string()
            }
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"berth.dev/plugin": name}},
            "template": {"spec": {"containers": [{"name": "plugin", "image": image}]}}
        },
        "status": {
            "observedGeneration": 2,
            "replicas": if stuck { 2 } else { 1 },
            "updatedReplicas": 1,
            "availableReplicas": if ready || stuck { 1 } else { 0 },
            "conditions": [progressing]
        }
    })
}

/// A credential issued for revision `revision` of `name`: no Secret yet, so one is created.
fn credential_issued(name: &str, revision: i64) -> Vec<Expect> {
    vec![
        Expect::new(
            Method::GET,
            format!("{SECRETS}/{name}-berth-token-{revision}"),
            Reply::Error(404),
        ),
        Expect::new(Method::POST, SECRETS, Reply::Echo),
    ]
}

/// The credential Secret of revision `revision` of `name` exists already.
fn credential_found(name: &str, revision: i64, secret: &Value) -> Expect {
    Expect::new(
        Method::GET,
        format!("{SECRETS}/{name}-berth-token-{revision}"),
        Reply::Json(secret.clone()),
    )
}

/// The body of the first call to a path ending with `suffix`.
fn body_of<'a>(seen: &'a [Seen], method: Method, suffix: &str) -> &'a Value {
    &seen
        .iter()
        .find(|s| s.method == method && s.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {method} …{suffix}"))
        .body
}

/// The token a created credential Secret holds (the test reads it back like a pod would).
fn token_of(secret: &Value) -> String {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.clone()).unwrap();
    String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
}

/// Credential issue for revision 1, then every object of the calculator.
fn workload_applies() -> Vec<Expect> {
    let mut calls = credential_issued("calculator", 1);
    calls.extend(calculator_applies());
    calls
}

fn calculator_applies() -> Vec<Expect> {
    vec![
        Expect::apply(format!("{SA}/calculator")),
        Expect::apply(format!("{SVC}/calculator")),
        Expect::apply(format!("{NETPOL}/calculator")),
        Expect::apply(format!("{DEPLOY}/calculator")),
    ]
}

async fn reconcile_with(
    p: &Plugin,
    ctx: Arc<Context>,
    verifier: crate::fixtures::ApiServerVerifier,
    expected: Vec<Expect>,
) -> (Result<kube::runtime::controller::Action, Error>, Vec<Seen>) {
    let server = verifier.run(expected);
    let result = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(p.clone()), ctx))
        .await
        .expect("reconcile made a call nobody answered, or hung");
    let seen = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("verifier finished")
        .expect("every expected call was made");
    (result, seen)
}

fn status_of(seen: &[Seen]) -> PluginStatus {
    let patch = seen
        .iter()
        .find(|s| s.path.ends_with("/status"))
        .expect("a status patch");
    assert_eq!(patch.body["apiVersion"], "berth.dev/v1alpha1");
    assert_eq!(patch.body["kind"], "Plugin");
    serde_json::from_value(patch.body["status"].clone()).unwrap()
}

fn condition<'a>(status: &'a PluginStatus, type_: &str) -> &'a berth_api::Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

fn event_of(seen: &[Seen]) -> &Value {
    &seen
        .iter()
        .find(|s| s.path.ends_with("/events"))
        .expect("an Event")
        .body
}

#[tokio::test]
async fn new_plugin_gets_the_finalizer_first() {
    let mut p = calculator();
    p.metadata.finalizers = None;
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut finalized = plugin_json(&p);
    finalized["metadata"]["finalizers"] = json!([FINALIZER]);
    let (result, seen) = reconcile_with(
        &p,
        ctx,
        verifier,
        vec![Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator"),
            Reply::Json(finalized),
        )],
    )
    .await;
    result.unwrap();
    assert_eq!(
        seen[0].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ])
    );
}

#[tokio::test]
async fn new_low_risk_plugin_is_applied_and_reported_deploying() {
    let p = calculator();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Error(404),
    )];
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx.clone(), verifier, expected).await;
    assert_eq!(
        result.unwrap(),
        kube::runtime::controller::Action::requeue(crate::plan::ROLLOUT_POLL)
    );

    let deployment = body_of(&seen, Method::PATCH, "/deployments/calculator");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "uid-calculator"
    );
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::Deploying));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://calculator.default.svc:8080")
    );
    assert_eq!(status.revisions[0].outcome, RevisionOutcome::Progressing);
    assert_eq!(
        condition(&status, VALIDATED)
            .last_transition_time
            .as_deref(),
        Some(crate::fixtures::NOW)
    );
    let event = event_of(&seen);
    assert_eq!(event["reason"], "Deploying");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["name"], "calculator");
    let metrics = ctx.metrics.encode().unwrap();
    assert!(
        metrics.contains("berth_plugins{phase=\"Deploying\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rolled_out_plugin_is_ready_with_the_digest_its_pods_run() {
    let mut p = calculator();
    p.status = Some(PluginStatus {
        revisions: vec![Revision {
            revision: 1,
            version: "0.1.0".into(),
            image: Some("berth/calculator:0.1.0".into()),
            image_digest: None,
            outcome: RevisionOutcome::Progressing,
            message: None,
        }],
        ..PluginStatus::default()
    });
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Json(deployment(
            "calculator",
            1,
            "berth/calculator:0.1.0",
            &json!({}),
            true,
            false,
        )),
    )];
    expected.push(Expect::new(
        Method::GET,
        "/api/v1/namespaces/default/pods",
        Reply::Json(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [{
                "metadata": {"name": "calculator-abc", "namespace": NS},
                "status": {"containerStatuses": [{
                    "name": "plugin", "image": "berth/calculator:0.1.0",
                    "imageID": format!("docker.io/berth/calculator@{digest}"),
                    "ready": true, "restartCount": 0
                }]}
            }]
        })),
    ));
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.image_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(status.revisions[0].outcome, RevisionOutcome::Active);
    assert_eq!(event_of(&seen)["reason"], "Ready");
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    let p = calculator();
    // First pass: learn the status the operator reports.
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Error(404),
    )];
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (_, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    let secret = body_of(&seen, Method::POST, "/secrets").clone();
    let mut p = p;
    p.status = Some(status_of(&seen));

    // Second pass with that status: apply again (drift correction), no status write, no Event.
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Error(404),
        ),
        credential_found("calculator", 1, &secret),
    ];
    expected.extend(calculator_applies());
    let (result, _) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
}

#[tokio::test]
async fn live_tier_and_performance_from_other_writers_cause_no_status_write() {
    let p = calculator();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Error(404),
    )];
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (_, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    let secret = body_of(&seen, Method::POST, "/secrets").clone();
    let written = status_of(&seen);
    assert_eq!(written.performance, None);
    assert_eq!(written.live_tier, None);

    // The gateway and the benchmark controller have added their fields since.
    let mut p = p;
    let mut status = written;
    status.live_tier = Some(berth_api::LiveTier {
        tier: Some(berth_api::Tier::Gold),
        reasons: vec!["p90 latency 612 ms → Gold".into()],
        calls: 120,
        window_seconds: 300,
        inputs: None,
        since: Some(crate::fixtures::NOW.into()),
    });
    status.performance = Some(berth_api::Performance {
        tier: "Platinum".into(),
        p50_ms: 2.0,
        p99_ms: 9.0,
        error_rate: 0.0,
        throughput: Some(300.0),
        measured_at: crate::fixtures::NOW.into(),
    });
    p.status = Some(status);
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Error(404),
        ),
        credential_found("calculator", 1, &secret),
    ];
    expected.extend(calculator_applies());
    // No status patch: the verifier would not answer one and the reconcile would time out.
    let (result, _) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
}

#[tokio::test]
async fn first_reconcile_issues_a_credential_kept_only_in_a_secret() {
    let p = calculator();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Error(404),
    )];
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();

    let secret = body_of(&seen, Method::POST, "/secrets");
    assert_eq!(secret["metadata"]["name"], "calculator-berth-token-1");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "berth-operator"
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        "uid-calculator"
    );
    assert_eq!(secret["immutable"], true);
    let token = token_of(secret);
    assert_eq!(token.len(), 64);

    // The status carries the digest, never the token.
    let status = status_of(&seen);
    let digest = berth_contract::credential::digest_line(&token);
    assert_eq!(
        status.credentials,
        vec![berth_api::PluginCredential {
            revision: 1,
            sha256: digest.clone()
        }]
    );
    // Only the Secret holds the token: not the status, the Event, the Deployment or anything
    // else the operator sent.
    for call in seen.iter().filter(|s| !s.path.ends_with("/secrets")) {
        assert!(
            !call.body.to_string().contains(&token),
            "{} {} carries the token",
            call.method,
            call.path
        );
    }

    // The Deployment takes the token from that Secret, and the proxy URL from the token.
    let deployment = body_of(&seen, Method::PATCH, "/deployments/calculator");
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["berth.dev/credential-sha256"],
        digest.as_str()
    );
    let env = template["spec"]["containers"][0]["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap();
    assert_eq!(
        var("BERTH_PLUGIN_TOKEN")["valueFrom"]["secretKeyRef"],
        json!({"name": "calculator-berth-token-1", "key": "token"})
    );
    assert_eq!(
        var("HTTPS_PROXY")["value"],
        "http://calculator:$(BERTH_PLUGIN_TOKEN)@berth-gateway.berth-system.svc:7401"
    );
}

#[tokio::test]
async fn a_new_revision_rotates_the_credential_and_drops_the_old_one_after_rollout() {
    let old_token = "a".repeat(64);
    let old_digest = berth_contract::credential::digest_line(&old_token);
    let mut p = plugin("calculator", "berth/calculator:0.2.0", "0.2.0");
    p.metadata.generation = Some(2);
    p.status = Some(PluginStatus {
        phase: Some(Phase::Ready),
        revisions: vec![Revision {
            revision: 1,
            version: "0.1.0".into(),
            image: Some("berth/calculator:0.1.0".into()),
            image_digest: Some(format!("sha256:{}", "11".repeat(32))),
            outcome: RevisionOutcome::Active,
            message: None,
        }],
        credentials: vec![berth_api::PluginCredential {
            revision: 1,
            sha256: old_digest.clone(),
        }],
        ..PluginStatus::default()
    });

    // Revision 2 starts rolling out while revision 1 serves: a new Secret, both digests.
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Json(deployment(
            "calculator",
            1,
            "berth/calculator:0.1.0",
            &json!({}),
            true,
            false,
        )),
    )];
    expected.extend(credential_issued("calculator", 2));
    expected.extend(calculator_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    assert!(!seen.iter().any(|s| s.method == Method::DELETE));
    let secret = body_of(&seen, Method::POST, "/secrets");
    assert_eq!(secret["metadata"]["name"], "calculator-berth-token-2");
    let new_token = token_of(secret);
    let new_digest = berth_contract::credential::digest_line(&new_token);
    assert_ne!(new_token, old_token);
    let status = status_of(&seen);
    assert_eq!(
        status.credentials,
        vec![
            berth_api::PluginCredential {
                revision: 1,
                sha256: old_digest.clone()
            },
            berth_api::PluginCredential {
                revision: 2,
                sha256: new_digest.clone()
            },
        ]
    );
    let deployment_sent = body_of(&seen, Method::PATCH, "/deployments/calculator");
    let env = deployment_sent["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(
        env.to_string().contains("calculator-berth-token-2"),
        "{env}"
    );

    // The gateway accepts both tokens while both revisions' pods may run.
    let mut during = p.clone();
    during.status = Some(status.clone());
    let entries = crate::directory::entries(
        &[Arc::new(during.clone())],
        &[],
        &[],
        now(),
        berth_api::RiskTier::Low,
    );
    let snapshot = berth_contract::DirectorySnapshot::new(1, true, entries);
    for token in [&old_token, &new_token] {
        assert_eq!(
            snapshot.plugin_for_token(&berth_contract::credential::digest(token)),
            Some("calculator")
        );
    }

    // Revision 2 runs on every replica: revision 1's digest is dropped and its Secret deleted,
    // after the status is written.
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&during], &[]);
    let mut expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Json(deployment(
                "calculator",
                2,
                "berth/calculator:0.2.0",
                &json!({}),
                true,
                false,
            )),
        ),
        Expect::new(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Reply::Json(
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            ),
        ),
        credential_found("calculator", 2, secret),
    ];
    expected.extend(calculator_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&during)),
    ));
    expected.push(Expect::event(NS));
    expected.push(Expect::new(
        Method::DELETE,
        format!("{SECRETS}/calculator-berth-token-1"),
        Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
    ));
    let (result, seen) = reconcile_with(&during, ctx, verifier, expected).await;
    result.unwrap();
    let status = status_of(&seen);
    assert_eq!(
        status.credentials,
        vec![berth_api::PluginCredential {
            revision: 2,
            sha256: new_digest
        }]
    );
    let mut after = during;
    after.status = Some(status);
    let entries = crate::directory::entries(
        &[Arc::new(after)],
        &[],
        &[],
        now(),
        berth_api::RiskTier::Low,
    );
    let snapshot = berth_contract::DirectorySnapshot::new(2, true, entries);
    assert_eq!(
        snapshot.plugin_for_token(&berth_contract::credential::digest(&old_token)),
        None
    );
    assert_eq!(
        snapshot.plugin_for_token(&berth_contract::credential::digest(&new_token)),
        Some("calculator")
    );
}

#[tokio::test]
async fn an_existing_credential_secret_is_reused_without_a_new_token() {
    let token = "b".repeat(64);
    let digest = berth_contract::credential::digest_line(&token);
    let mut p = calculator();
    p.status = Some(PluginStatus {
        credentials: vec![berth_api::PluginCredential {
            revision: 1,
            sha256: digest.clone(),
        }],
        ..PluginStatus::default()
    });
    let secret = serde_json::to_value(crate::render::render_token_secret(
        &p,
        &crate::render::RenderOptions::default(),
        1,
        &token,
    ))
    .unwrap();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Error(404),
        ),
        credential_found("calculator", 1, &secret),
    ];
    expected.extend(calculator_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    assert!(
        !seen
            .iter()
            .any(|s| s.method == Method::POST && s.path.ends_with("/secrets"))
    );
    assert_eq!(
        status_of(&seen).credentials,
        vec![berth_api::PluginCredential {
            revision: 1,
            sha256: digest
        }]
    );
}

#[tokio::test]
async fn high_risk_plugin_awaits_approval_and_gets_no_deployment() {
    let p = http_fetch();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/http-fetch"),
            Reply::Error(404),
        ),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/http-fetch/status"),
            Reply::WithStatus(plugin_json(&p)),
        ),
        Expect::event(NS),
    ];
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("/deployments") && s.method == Method::PATCH)
    );
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::AwaitingApproval));
    let granted = condition(&status, PERMISSIONS_GRANTED);
    assert_eq!(granted.status, ConditionStatus::False);
    assert!(
        granted
            .message
            .as_deref()
            .unwrap()
            .contains("network egress *:443")
    );
    assert_eq!(status.risk.unwrap().tier, berth_api::RiskTier::Moderate);
    let event = event_of(&seen);
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("AwaitingApproval"), Some("Warning"))
    );
}

#[tokio::test]
async fn grant_added_deploys_the_plugin() {
    let p = http_fetch();
    let g = grant_for(&p);
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[&g]);
    let expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/http-fetch"),
        Reply::Error(404),
    )]
    .into_iter()
    .chain(credential_issued("http-fetch", 1))
    .chain([
        Expect::apply(format!("{SA}/http-fetch")),
        Expect::apply(format!("{SVC}/http-fetch")),
        Expect::apply(format!("{NETPOL}/http-fetch")),
        Expect::apply(format!("{DEPLOY}/http-fetch")),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/http-fetch/status"),
            Reply::WithStatus(plugin_json(&p)),
        ),
        Expect::event(NS),
    ])
    .collect();
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    // `host: "*"` goes through the egress proxy: no address block is opened directly.
    let policy = body_of(&seen, Method::PATCH, "/networkpolicies/http-fetch");
    assert_eq!(policy["spec"]["egress"].as_array().unwrap().len(), 2);
    assert!(!policy.to_string().contains("ipBlock"));
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::Deploying));
    assert_eq!(
        condition(&status, PERMISSIONS_GRANTED).reason.as_deref(),
        Some("Granted")
    );
}

#[tokio::test]
async fn missing_dependency_is_named_and_nothing_is_deployed() {
    let mut p = calculator();
    p.spec.depends_on.push(berth_api::Dependency {
        name: "text-processor".into(),
        version: Some(">=1.0.0".into()),
    });
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Error(404),
        ),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator/status"),
            Reply::WithStatus(plugin_json(&p)),
        ),
        Expect::event(NS),
    ];
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::Pending));
    let deps = condition(&status, DEPENDENCIES_READY);
    assert_eq!(deps.status, ConditionStatus::False);
    assert_eq!(
        deps.message.as_deref(),
        Some("waiting for text-processor (not found)")
    );
}

#[tokio::test]
async fn ready_dependency_from_the_cache_lets_it_deploy() {
    let mut p = calculator();
    p.spec.depends_on.push(berth_api::Dependency {
        name: "text-processor".into(),
        version: Some(">=1.0.0".into()),
    });
    let mut dep = plugin("text-processor", "berth/text-processor:1.0.0", "1.0.0");
    dep.status = Some(PluginStatus {
        phase: Some(Phase::Ready),
        ..PluginStatus::default()
    });
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p, &dep], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Error(404),
    )];
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    assert_eq!(
        condition(&status_of(&seen), DEPENDENCIES_READY).status,
        ConditionStatus::True
    );
}

#[tokio::test]
async fn invalid_spec_fails_with_the_messages() {
    let mut p = calculator();
    p.spec.version = "v0.1".into();
    p.spec.resources.memory = berth_api::Quantity::new("1Ki");
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Error(404),
        ),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator/status"),
            Reply::WithStatus(plugin_json(&p)),
        ),
        Expect::event(NS),
    ];
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::Failed));
    let validated = condition(&status, VALIDATED);
    assert_eq!(validated.status, ConditionStatus::False);
    let message = validated.message.as_deref().unwrap();
    assert!(message.contains("spec.version"), "{message}");
    assert!(message.contains("spec.resources.memory"), "{message}");
    let event = event_of(&seen);
    assert_eq!(event["reason"], "Failed");
    assert!(event["note"].as_str().unwrap().contains("spec.version"));
}

#[tokio::test]
async fn deleting_a_plugin_cleans_up_then_drops_the_finalizer() {
    let mut p = calculator();
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let gone = |path: String| {
        Expect::new(
            Method::DELETE,
            path,
            Reply::Json(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ),
        )
    };
    let expected = vec![
        gone(format!("{DEPLOY}/calculator")),
        gone(format!("{NETPOL}/calculator")),
        gone(format!("{SVC}/calculator")),
        Expect::new(
            Method::DELETE,
            format!("{BINDING}/calculator"),
            Reply::Error(404),
        ),
        Expect::new(
            Method::DELETE,
            format!("{ROLE}/calculator"),
            Reply::Error(404),
        ),
        gone(format!("{SA}/calculator")),
        Expect::event(NS),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator"),
            Reply::Json(plugin_json(&p)),
        ),
    ];
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    assert_eq!(
        result.unwrap(),
        kube::runtime::controller::Action::await_change()
    );
    assert_eq!(event_of(&seen)["reason"], "Deleted");
    assert_eq!(
        seen.last().unwrap().body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ])
    );
}

#[tokio::test]
async fn deleting_a_plugin_deletes_its_credential_secrets() {
    let mut p = calculator();
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    p.status = Some(PluginStatus {
        credentials: [1, 2]
            .map(|revision| berth_api::PluginCredential {
                revision,
                sha256: format!("sha256:{}", "cd".repeat(32)),
            })
            .to_vec(),
        ..PluginStatus::default()
    });
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let gone = |path: String| Expect::new(Method::DELETE, path, Reply::Error(404));
    let expected = vec![
        gone(format!("{DEPLOY}/calculator")),
        gone(format!("{NETPOL}/calculator")),
        gone(format!("{SVC}/calculator")),
        gone(format!("{BINDING}/calculator")),
        gone(format!("{ROLE}/calculator")),
        gone(format!("{SA}/calculator")),
        gone(format!("{SECRETS}/calculator-berth-token-1")),
        gone(format!("{SECRETS}/calculator-berth-token-2")),
        Expect::event(NS),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator"),
            Reply::Json(plugin_json(&p)),
        ),
    ];
    let (result, _) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
}

#[tokio::test]
async fn failed_cleanup_keeps_the_finalizer() {
    let mut p = calculator();
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let expected = vec![Expect::new(
        Method::DELETE,
        format!("{DEPLOY}/calculator"),
        Reply::Error(500),
    )];
    let (result, seen) = reconcile_with(&p, ctx.clone(), verifier, expected).await;
    let error = result.unwrap_err();
    assert_eq!(error.metric_label(), "kube");
    assert_eq!(seen.len(), 1, "no finalizer patch after a failed cleanup");
    let action = error_policy(Arc::new(p.clone()), &error, ctx.clone());
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
    let again = error_policy(Arc::new(p), &error, ctx.clone());
    assert_eq!(
        again,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    let metrics = ctx.metrics.encode().unwrap();
    assert!(
        metrics.contains("berth_reconcile_errors_total{controller=\"plugin\",error=\"kube\"} 2"),
        "{metrics}"
    );
}

/// calculator upgraded to 0.2.0 while revision 1 (0.1.0, known digest) serves.
fn upgraded_calculator() -> Plugin {
    let mut p = plugin("calculator", "berth/calculator:0.2.0", "0.2.0");
    p.metadata.generation = Some(2);
    p.status = Some(PluginStatus {
        phase: Some(Phase::Deploying),
        revisions: vec![
            Revision {
                revision: 1,
                version: "0.1.0".into(),
                image: Some("berth/calculator:0.1.0".into()),
                image_digest: Some(format!("sha256:{}", "11".repeat(32))),
                outcome: RevisionOutcome::Active,
                message: None,
            },
            Revision {
                revision: 2,
                version: "0.2.0".into(),
                image: Some("berth/calculator:0.2.0".into()),
                image_digest: None,
                outcome: RevisionOutcome::Progressing,
                message: None,
            },
        ],
        ..PluginStatus::default()
    });
    p
}

#[tokio::test]
async fn rollout_past_its_deadline_rolls_back_to_the_last_good_digest() {
    let p = upgraded_calculator();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let mut expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Json(deployment(
            "calculator",
            2,
            "berth/calculator:0.2.0",
            &json!({}),
            false,
            true,
        )),
    )];
    expected.extend(workload_applies());
    expected.push(Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(plugin_json(&p)),
    ));
    expected.push(Expect::event(NS));
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    let deployment = body_of(&seen, Method::PATCH, "/deployments/calculator");
    let good = format!("berth/calculator@sha256:{}", "11".repeat(32));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        good
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["berth.dev/revision"],
        "1"
    );
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(status.revisions[1].outcome, RevisionOutcome::RolledBack);
    let progressing = condition(&status, PROGRESSING);
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    assert!(
        progressing
            .message
            .as_deref()
            .unwrap()
            .contains("rolled back to revision 1")
    );
    let event = event_of(&seen);
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("RolledBack"), Some("Warning"))
    );
}

#[tokio::test]
async fn widened_permissions_keep_the_old_revision_serving() {
    let mut p = upgraded_calculator();
    p.spec.permissions.secrets.push(berth_api::SecretRef {
        name: "db".into(),
        env: "DB_PASSWORD".into(),
        key: None,
    });
    p.spec.permissions.network.egress.push(EgressRule {
        host: Some("*".into()),
        cidr: None,
        ports: vec![443],
    });
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let expected = vec![
        Expect::new(
            Method::GET,
            format!("{DEPLOY}/calculator"),
            Reply::Json(deployment(
                "calculator",
                1,
                "berth/calculator:0.1.0",
                &json!({}),
                true,
                false,
            )),
        ),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator/status"),
            Reply::WithStatus(plugin_json(&p)),
        ),
        Expect::event(NS),
    ];
    let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
    assert!(
        !seen
            .iter()
            .any(|s| s.method == Method::PATCH && !s.path.ends_with("/status"))
    );
    assert!(!seen.iter().any(|s| s.method == Method::DELETE));
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(Phase::AwaitingApproval));
    let granted = condition(&status, PERMISSIONS_GRANTED);
    assert_eq!(granted.reason.as_deref(), Some("PermissionsWidened"));
    assert!(
        granted
            .message
            .as_deref()
            .unwrap()
            .contains("revision 1 keeps serving")
    );
    assert_eq!(status.revisions[0].outcome, RevisionOutcome::Active);
    assert_eq!(
        status.revisions[1].outcome,
        RevisionOutcome::AwaitingApproval
    );
    assert_eq!(
        condition(&status, crate::plan::AVAILABLE).status,
        ConditionStatus::True
    );
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off() {
    let p = calculator();
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let expected = vec![Expect::new(
        Method::GET,
        format!("{DEPLOY}/calculator"),
        Reply::Error(500),
    )];
    let (result, _) = reconcile_with(&p, ctx, verifier, expected).await;
    assert_eq!(result.unwrap_err().metric_label(), "kube");
}

#[tokio::test]
async fn grant_for_a_missing_plugin_is_reported_orphaned() {
    let g = grant_for(&http_fetch());
    let (client, verifier) = mock_client();
    let (plugins, mut writer) = kube::runtime::reflector::store::<Plugin>();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    let ctx = Arc::new(GrantContext {
        client,
        metrics: Arc::new(crate::metrics::Metrics::new().unwrap()),
        plugins,
        backoff: Default::default(),
        now: crate::fixtures::now,
    });
    let mut response = serde_json::to_value(&g).unwrap();
    response["metadata"]["name"] = json!("http-fetch");
    let server = verifier.run(vec![Expect::new(
        Method::PATCH,
        "/apis/berth.dev/v1alpha1/namespaces/default/plugingrants/http-fetch/status",
        Reply::WithStatus(response),
    )]);
    let action = tokio::time::timeout(
        Duration::from_secs(5),
        crate::grants::reconcile(Arc::new(g), ctx),
    )
    .await
    .unwrap()
    .unwrap();
    let seen = server.await.unwrap();
    let status: berth_api::PluginGrantStatus =
        serde_json::from_value(seen[0].body["status"].clone()).unwrap();
    assert_eq!(status.state, Some(berth_api::GrantState::Orphaned));
    let found = status
        .conditions
        .iter()
        .find(|c| c.type_ == PLUGIN_FOUND)
        .unwrap();
    assert_eq!(found.status, ConditionStatus::False);
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(crate::plan::RESYNC)
    );
}

#[tokio::test]
async fn missing_crds_are_reported_clearly() {
    let (client, verifier) = mock_client();
    let server = verifier.run(vec![Expect::new(
        Method::GET,
        "/apis/berth.dev/v1alpha1/plugins",
        Reply::Error(404),
    )]);
    let error = check_crds(&client, None).await.unwrap_err();
    server.await.unwrap();
    let text = error.to_string();
    assert!(text.contains("plugins.berth.dev"), "{text}");
    assert!(text.contains("kubectl apply -f crds/"), "{text}");
}

#[tokio::test]
async fn a_missing_benchmark_crd_is_named() {
    let (client, verifier) = mock_client();
    let empty = |kind: &str| {
        Reply::Json(
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": kind, "metadata": {}, "items": []}),
        )
    };
    let server = verifier.run(vec![
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/plugins",
            empty("PluginList"),
        ),
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/plugingrants",
            empty("PluginGrantList"),
        ),
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/pluginbenchmarks",
            Reply::Error(404),
        ),
    ]);
    let text = check_crds(&client, None).await.unwrap_err().to_string();
    server.await.unwrap();
    assert!(text.contains("pluginbenchmarks.berth.dev"), "{text}");
}

#[tokio::test]
async fn installed_crds_pass_the_check() {
    let (client, verifier) = mock_client();
    let empty = |kind: &str| {
        Reply::Json(
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": kind, "metadata": {}, "items": []}),
        )
    };
    let server = verifier.run(vec![
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/plugins",
            empty("PluginList"),
        ),
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/plugingrants",
            empty("PluginGrantList"),
        ),
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/pluginbenchmarks",
            empty("PluginBenchmarkList"),
        ),
    ]);
    check_crds(&client, None).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_namespaced_operator_checks_crds_in_its_namespace() {
    let (client, verifier) = mock_client();
    let empty = |kind: &str| {
        Reply::Json(
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": kind, "metadata": {}, "items": []}),
        )
    };
    let server = verifier.run(vec![
        Expect::new(Method::GET, PLUGINS, empty("PluginList")),
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/namespaces/default/plugingrants",
            empty("PluginGrantList"),
        ),
        Expect::new(
            Method::GET,
            "/apis/berth.dev/v1alpha1/namespaces/default/pluginbenchmarks",
            empty("PluginBenchmarkList"),
        ),
    ]);
    check_crds(&client, Some(NS)).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn cleanup_without_rights_on_roles_still_completes() {
    let mut p = calculator();
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let (ctx, verifier, mut caches) = Context::test();
    caches.fill(&[&p], &[]);
    let gone = |path: String| {
        Expect::new(
            Method::DELETE,
            path,
            Reply::Json(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ),
        )
    };
    let expected = vec![
        gone(format!("{DEPLOY}/calculator")),
        gone(format!("{NETPOL}/calculator")),
        gone(format!("{SVC}/calculator")),
        Expect::new(
            Method::DELETE,
            format!("{BINDING}/calculator"),
            Reply::Error(403),
        ),
        Expect::new(
            Method::DELETE,
            format!("{ROLE}/calculator"),
            Reply::Error(403),
        ),
        gone(format!("{SA}/calculator")),
        Expect::event(NS),
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/calculator"),
            Reply::Json(plugin_json(&p)),
        ),
    ];
    let (result, _) = reconcile_with(&p, ctx, verifier, expected).await;
    result.unwrap();
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/berth-system/leases/berth-operator";

fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "berth-operator", "namespace": "berth-system", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": transitions
        }
    })
}

fn lock(client: kube::Client) -> LeaseLock {
    LeaseLock::new(
        client,
        "berth-system",
        "berth-operator",
        "replica-a",
        Duration::from_secs(15),
    )
    .with_clock(crate::fixtures::now)
}

#[tokio::test]
async fn first_replica_creates_the_lease() {
    let (client, verifier) = mock_client();
    let server = verifier.run(vec![
        Expect::new(Method::GET, LEASE, Reply::Error(404)),
        Expect::new(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/berth-system/leases",
            Reply::Echo,
        ),
    ]);
    assert!(lock(client).try_acquire_or_renew().await.unwrap());
    let seen = server.await.unwrap();
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "replica-a");
    assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn a_live_lease_of_another_replica_is_left_alone() {
    let (client, verifier) = mock_client();
    let server = verifier.run(vec![Expect::new(
        Method::GET,
        LEASE,
        Reply::Json(lease("replica-b", "2026-03-01T11:59:55.000000Z", 3)),
    )]);
    assert!(!lock(client).try_acquire_or_renew().await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_resource_version() {
    let (client, verifier) = mock_client();
    let server = verifier.run(vec![
        Expect::new(
            Method::GET,
            LEASE,
            Reply::Json(lease("replica-b", "2026-03-01T11:59:00.000000Z", 3)),
        ),
        Expect::new(Method::PUT, LEASE, Reply::Echo),
    ]);
    assert!(lock(client).try_acquire_or_renew().await.unwrap());
    let seen = server.await.unwrap();
    let put = &seen[1].body;
    assert_eq!(put["metadata"]["resourceVersion"], "7");
    assert_eq!(put["spec"]["holderIdentity"], "replica-a");
    assert_eq!(put["spec"]["leaseTransitions"], 4);
}

#[tokio::test]
async fn losing_the_race_for_a_lease_is_not_an_error() {
    let (client, verifier) = mock_client();
    let server = verifier.run(vec![
        Expect::new(
            Method::GET,
            LEASE,
            Reply::Json(lease("replica-b", "2026-03-01T11:59:00.000000Z", 3)),
        ),
        Expect::new(Method::PUT, LEASE, Reply::Error(409)),
    ]);
    assert!(!lock(client).try_acquire_or_renew().await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn the_leader_renews_and_releases_its_lease() {
    let (client, verifier) = mock_client();
    let server = verifier.run(vec![
        Expect::new(
            Method::GET,
            LEASE,
            Reply::Json(lease("replica-a", "2026-03-01T11:59:55.000000Z", 1)),
        ),
        Expect::new(Method::PUT, LEASE, Reply::Echo),
        Expect::new(
            Method::GET,
            LEASE,
            Reply::Json(lease("replica-a", "2026-03-01T12:00:00.000000Z", 1)),
        ),
        Expect::new(Method::PUT, LEASE, Reply::Echo),
    ]);
    let l = lock(client);
    assert!(l.try_acquire_or_renew().await.unwrap());
    l.release().await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen[1].body["spec"]["leaseTransitions"], 1);
    assert!(
        seen[1].body["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .starts_with("2026-03-01T12:00:00")
    );
    assert_eq!(seen[3].body["spec"].get("holderIdentity"), None);
}

/// Digest pinning and signatures against a real registry (Debian's docker-registry on
/// 127.0.0.1, with and without htpasswd) and the mocked API server.
mod supply_chain {
    use std::collections::BTreeMap;

    use berth_api::{ImageVerification, SecretRef};
    use berth_contract::protocol::MANIFEST_LABEL;
    use berth_trust::testing::TestRegistry;
    use berth_trust::{Policy, Signer, TrustedKey, keys};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::runtime::controller::Action;

    use super::*;
    use crate::audit::{MemoryAudit, types};
    use crate::fixtures::{ApiServerVerifier, Caches, kubernetes_validate};
    use crate::plan::{
        AVAILABLE, CHECK_RETRY, IMAGE_NOT_CHECKED, IMAGE_REFUSED, ROLLOUT_POLL, VERIFIED,
    };
    use crate::render::RenderOptions;
    use crate::supply_chain::{SupplyChain, SupplyChainOptions};

    const PULL: &str = "registry-pull";

    fn options(
        pull_secrets: &[&str],
        trusted: &[(&str, &str)],
        require: &[&str],
    ) -> SupplyChainOptions {
        let keys = trusted
            .iter()
            .map(|(name, pem)| TrustedKey::from_pem(name, pem).unwrap())
            .collect();
        SupplyChainOptions {
            pull_secrets: pull_secrets.iter().map(|s| s.to_string()).collect(),
            insecure_registries: vec![],
            policy: Policy::new(keys, require.iter().map(|s| s.to_string()).collect()).unwrap(),
            resolve_interval: Duration::from_secs(300),
        }
    }

    /// A context resolving with `supply`; plugin pods get its pull secrets.
    fn context(
        supply: &Arc<SupplyChain>,
    ) -> (Arc<Context>, ApiServerVerifier, Caches, Arc<MemoryAudit>) {
        let render = RenderOptions {
            image_pull_secrets: supply.options().pull_secrets.clone(),
            ..RenderOptions::default()
        };
        Context::test_with(Some(supply.clone()), render)
    }

    /// The label `berth build` gives an image built from `p`'s manifest.
    fn labels_of(p: &Plugin) -> BTreeMap<String, String> {
        let manifest = json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": p.name()},
            "spec": p.spec,
        });
        BTreeMap::from([(
            MANIFEST_LABEL.to_string(),
            serde_yaml::to_string(&manifest).unwrap(),
        )])
    }

    fn status_patch(p: &Plugin) -> Expect {
        Expect::new(
            Method::PATCH,
            format!("{PLUGINS}/{}/status", p.name()),
            Reply::WithStatus(plugin_json(p)),
        )
    }

    fn get_deployment(name: &str, reply: Reply) -> Expect {
        Expect::new(Method::GET, format!("{DEPLOY}/{name}"), reply)
    }

    /// `(reason, type)` of every Event published, in order.
    fn events(seen: &[Seen]) -> Vec<(String, String)> {
        seen.iter()
            .filter(|s| s.path.ends_with("/events"))
            .map(|s| {
                (
                    s.body["reason"].as_str().unwrap_or_default().to_string(),
                    s.body["type"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn note_of<'a>(seen: &'a [Seen], reason: &str) -> &'a str {
        seen.iter()
            .find(|s| s.path.ends_with("/events") && s.body["reason"] == reason)
            .and_then(|s| s.body["note"].as_str())
            .unwrap_or_else(|| panic!("no {reason} Event"))
    }

    /// Nothing but the status and Events was written: the workload is left as it was.
    fn workload_untouched(seen: &[Seen]) {
        for s in seen {
            let allowed = s.method == Method::GET
                || (s.method == Method::PATCH && s.path.ends_with("/status"))
                || (s.method == Method::POST && s.path.ends_with("/events"));
            assert!(allowed, "the workload was touched: {} {}", s.method, s.path);
        }
    }

    fn image_of(deployment: &Value) -> &str {
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
    }

    fn verification(status: &PluginStatus) -> &ImageVerification {
        status.verification.as_ref().expect("status.verification")
    }

    /// The Verified condition, which follows Validated.
    fn verified(status: &PluginStatus) -> &berth_api::Condition {
        let at = status
            .conditions
            .iter()
            .position(|c| c.type_ == VALIDATED)
            .unwrap();
        let c = &status.conditions[at + 1];
        assert_eq!(c.type_, VERIFIED, "Verified follows Validated");
        c
    }

    /// `p` serving revision 1 (`image` pinned to `digest`), Ready.
    fn serving(p: &mut Plugin, image: &str, version: &str, digest: &str) {
        p.status = Some(PluginStatus {
            phase: Some(Phase::Ready),
            image_digest: Some(digest.to_string()),
            revisions: vec![Revision {
                revision: 1,
                version: version.into(),
                image: Some(image.into()),
                image_digest: Some(digest.to_string()),
                outcome: RevisionOutcome::Active,
                message: None,
            }],
            ..PluginStatus::default()
        });
    }

    fn sign(reg: &TestRegistry, image: &str, private_pem: &str) -> impl Future<Output = ()> {
        let signer = Signer::new(reg.access());
        let key = keys::signer("key", private_pem.as_bytes(), b"").unwrap();
        let image = image.to_string();
        async move {
            signer.sign(&image, key).await.unwrap();
        }
    }

    fn any_egress(p: &mut Plugin) {
        p.spec.permissions.network.egress.push(EgressRule {
            host: Some("*".into()),
            cidr: None,
            ports: vec![443],
        });
    }

    #[tokio::test]
    async fn a_tag_runs_pinned_to_its_digest_and_a_moved_tag_is_a_new_revision() {
        let reg = TestRegistry::start();
        let image = format!("{}/berth/calculator:0.1.0", reg.addr);
        let mut p = plugin("calculator", &image, "0.1.0");
        let d1 = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "1")
            .await;
        let pinned1 = format!("{}/berth/calculator@{d1}", reg.addr);
        let supply = Arc::new(SupplyChain::new(options(&[], &[], &[])));

        // Resolved once: revision 1 is (image, version, d1) and runs pinned to d1.
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let mut expected = vec![get_deployment("calculator", Reply::Error(404))];
        expected.extend(workload_applies());
        expected.extend([status_patch(&p), Expect::event(NS), Expect::event(NS)]);
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        assert_eq!(result.unwrap(), Action::requeue(ROLLOUT_POLL));
        let sent = body_of(&seen, Method::PATCH, "/deployments/calculator");
        assert_eq!(image_of(sent), pinned1);
        kubernetes_validate(std::slice::from_ref(sent));
        let status = status_of(&seen);
        assert_eq!(status.revisions.len(), 1);
        assert_eq!(
            status.revisions[0].image_digest.as_deref(),
            Some(d1.as_str())
        );
        assert_eq!(status.image_digest.as_deref(), Some(d1.as_str()));
        let v = verification(&status);
        assert_eq!(
            (
                v.verified,
                v.digest.as_deref(),
                v.signature_required,
                v.signed_by.as_deref()
            ),
            (ConditionStatus::True, Some(d1.as_str()), false, None)
        );
        assert_eq!(v.checked_at.as_deref(), Some(crate::fixtures::NOW));
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::True, Some("DigestResolved"))
        );
        assert_eq!(
            events(&seen),
            [
                ("Deploying".into(), "Normal".into()),
                ("ImagePinned".into(), "Normal".into())
            ]
        );
        assert!(note_of(&seen, "ImagePinned").contains(&d1));
        let records = audit.records();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].type_.as_str(), records[0].outcome.as_str()),
            (types::LIFECYCLE, "success")
        );
        assert_eq!(records[0].details["digest"], d1.as_str());
        assert_eq!(records[0].details["revision"], 1);

        // The tag moves. Within the resolve interval the digest already resolved stands: the
        // registry is not asked, nothing changes and the status is not written again.
        let d2 = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "2")
            .await;
        assert_ne!(d1, d2);
        let secret = body_of(&seen, Method::POST, "/secrets").clone();
        p.status = Some(status.clone());
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let mut expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            credential_found("calculator", 1, &secret),
        ];
        expected.extend(calculator_applies());
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        assert_eq!(
            image_of(body_of(&seen, Method::PATCH, "/deployments/calculator")),
            pinned1
        );
        assert!(audit.records().is_empty());

        // Resolved again (a new interval; here a fresh operator): d2 is revision 2, rolled
        // out pinned while revision 1 serves.
        let mut status = status;
        status.phase = Some(Phase::Ready);
        status.revisions[0].outcome = RevisionOutcome::Active;
        p.status = Some(status);
        let supply = Arc::new(SupplyChain::new(options(&[], &[], &[])));
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let mut expected = vec![get_deployment(
            "calculator",
            Reply::Json(deployment(
                "calculator",
                1,
                &pinned1,
                &json!({}),
                true,
                false,
            )),
        )];
        expected.extend(credential_issued("calculator", 2));
        expected.extend(calculator_applies());
        expected.extend([status_patch(&p), Expect::event(NS), Expect::event(NS)]);
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        let sent = body_of(&seen, Method::PATCH, "/deployments/calculator");
        assert_eq!(
            image_of(sent),
            format!("{}/berth/calculator@{d2}", reg.addr)
        );
        assert_eq!(sent["metadata"]["annotations"]["berth.dev/revision"], "2");
        let status = status_of(&seen);
        let revisions: Vec<(i64, Option<&str>, RevisionOutcome)> = status
            .revisions
            .iter()
            .map(|r| (r.revision, r.image_digest.as_deref(), r.outcome))
            .collect();
        assert_eq!(
            revisions,
            [
                (1, Some(d1.as_str()), RevisionOutcome::Active),
                (2, Some(d2.as_str()), RevisionOutcome::Progressing)
            ]
        );
        assert_eq!(status.revisions[1].image.as_deref(), Some(image.as_str()));
        assert_eq!(verification(&status).digest.as_deref(), Some(d2.as_str()));
        assert_eq!(
            events(&seen),
            [
                ("Deploying".into(), "Normal".into()),
                ("ImagePinned".into(), "Normal".into())
            ]
        );
        assert!(note_of(&seen, "ImagePinned").contains("revision 2"));
        assert_eq!(audit.records()[0].details["revision"], 2);
    }

    #[tokio::test]
    async fn a_tag_pushed_again_with_wider_permissions_waits_for_approval_while_the_old_digest_serves()
     {
        let reg = TestRegistry::start();
        let image = format!("{}/berth/http-fetch:0.1.0", reg.addr);
        let mut p = plugin("http-fetch", &image, "0.1.0");
        any_egress(&mut p);
        let d1 = reg
            .push_image("berth/http-fetch:0.1.0", &labels_of(&p), "1")
            .await;
        let pinned1 = format!("{}/berth/http-fetch@{d1}", reg.addr);
        let granted = serde_json::to_value(&p.spec.permissions).unwrap();
        let old_grant = grant_for(&p);

        // The same tag, pushed again from a berth.yaml that also reads a secret, applied.
        let mut wider = p.clone();
        wider.metadata.generation = Some(2);
        wider.spec.permissions.secrets.push(SecretRef {
            name: "db".into(),
            env: "DB_PASSWORD".into(),
            key: None,
        });
        let d2 = reg
            .push_image("berth/http-fetch:0.1.0", &labels_of(&wider), "2")
            .await;
        serving(&mut wider, &image, "0.1.0", &d1);
        let supply = Arc::new(SupplyChain::new(options(&[], &[], &[])));
        let (ctx, verifier, mut caches, _) = context(&supply);
        caches.fill(&[&wider], &[&old_grant]);
        let serving_deployment =
            || Reply::Json(deployment("http-fetch", 1, &pinned1, &granted, true, false));
        let expected = vec![
            get_deployment("http-fetch", serving_deployment()),
            status_patch(&wider),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&wider, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::AwaitingApproval));
        let revisions: Vec<(i64, Option<&str>, RevisionOutcome)> = status
            .revisions
            .iter()
            .map(|r| (r.revision, r.image_digest.as_deref(), r.outcome))
            .collect();
        assert_eq!(
            revisions,
            [
                (1, Some(d1.as_str()), RevisionOutcome::Active),
                (2, Some(d2.as_str()), RevisionOutcome::AwaitingApproval)
            ]
        );
        let granted_cond = condition(&status, PERMISSIONS_GRANTED);
        assert_eq!(granted_cond.reason.as_deref(), Some("PermissionsWidened"));
        let message = granted_cond.message.as_deref().unwrap();
        assert!(message.contains("secret db as $DB_PASSWORD"), "{message}");
        assert!(message.contains("revision 1 keeps serving"), "{message}");
        assert_eq!(status.image_digest.as_deref(), Some(d1.as_str()));
        assert_eq!(condition(&status, AVAILABLE).status, ConditionStatus::True);
        assert_eq!(
            events(&seen),
            [
                ("AwaitingApproval".into(), "Warning".into()),
                ("ImagePinned".into(), "Normal".into())
            ]
        );

        // Granted: revision 2 rolls out, pinned to d2.
        let mut approved = wider.clone();
        approved.status = Some(status);
        let new_grant = grant_for(&approved);
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&approved], &[&new_grant]);
        let mut expected = vec![get_deployment("http-fetch", serving_deployment())];
        expected.extend(credential_issued("http-fetch", 2));
        expected.extend([
            Expect::apply(format!("{SA}/http-fetch")),
            Expect::apply(format!("{SVC}/http-fetch")),
            Expect::apply(format!("{NETPOL}/http-fetch")),
            Expect::apply(format!("{DEPLOY}/http-fetch")),
            status_patch(&approved),
            Expect::event(NS),
        ]);
        let (result, seen) = reconcile_with(&approved, ctx, verifier, expected).await;
        result.unwrap();
        let sent = body_of(&seen, Method::PATCH, "/deployments/http-fetch");
        assert_eq!(
            image_of(sent),
            format!("{}/berth/http-fetch@{d2}", reg.addr)
        );
        assert_eq!(sent["metadata"]["annotations"]["berth.dev/revision"], "2");
        assert!(sent.to_string().contains("DB_PASSWORD"));
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Deploying));
        assert_eq!(status.revisions[1].outcome, RevisionOutcome::Progressing);
        assert_eq!(events(&seen), [("Deploying".into(), "Normal".into())]);
        assert!(
            audit.records().is_empty(),
            "the digest was announced already"
        );
    }

    #[tokio::test]
    async fn an_unsigned_image_is_refused_and_nothing_runs() {
        let reg = TestRegistry::start();
        let release = keys::generate(b"").unwrap();
        let image = format!("{}/berth/calculator:0.1.0", reg.addr);
        let p = plugin("calculator", &image, "0.1.0");
        let digest = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "1")
            .await;
        let supply = Arc::new(SupplyChain::new(options(
            &[],
            &[("release.pub", &release.public_pem)],
            &["*"],
        )));
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert!(
            status.revisions.is_empty(),
            "a refused digest is no revision"
        );
        assert_eq!(status.endpoint, None);
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::False, Some("Unsigned"))
        );
        let message = c.message.as_deref().unwrap();
        assert!(
            message.contains(&digest) && message.contains("berth sign"),
            "{message}"
        );
        let v = verification(&status);
        assert_eq!(
            (
                v.verified,
                v.reason.as_deref(),
                v.digest.as_deref(),
                v.signature_required
            ),
            (
                ConditionStatus::False,
                Some("Unsigned"),
                Some(digest.as_str()),
                true
            )
        );
        let progressing = condition(&status, PROGRESSING);
        assert_eq!(progressing.reason.as_deref(), Some(IMAGE_REFUSED));
        assert!(
            progressing
                .message
                .as_deref()
                .unwrap()
                .ends_with("; nothing runs")
        );
        assert_eq!(condition(&status, AVAILABLE).status, ConditionStatus::False);
        assert_eq!(
            events(&seen),
            [
                ("Failed".into(), "Warning".into()),
                ("Unsigned".into(), "Warning".into())
            ]
        );
        assert!(note_of(&seen, "Failed").contains("berth sign"));
        let records = audit.records();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].type_.as_str(), records[0].outcome.as_str()),
            (types::SECURITY, "denied")
        );
        assert_eq!(records[0].details["reason"], "Unsigned");
        assert_eq!(records[0].details["digest"], digest.as_str());
        assert_eq!(records[0].plugin, "calculator");
    }

    #[tokio::test]
    async fn an_image_signed_by_an_untrusted_key_is_refused_while_the_old_revision_serves() {
        let reg = TestRegistry::start();
        let release = keys::generate(b"").unwrap();
        let stranger = keys::generate(b"").unwrap();
        let old = format!("{}/berth/calculator:0.1.0", reg.addr);
        let new = format!("{}/berth/calculator:0.2.0", reg.addr);
        let mut p = plugin("calculator", &new, "0.2.0");
        p.metadata.generation = Some(2);
        let d1 = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "1")
            .await;
        reg.push_image("berth/calculator:0.2.0", &labels_of(&p), "2")
            .await;
        sign(&reg, &new, &stranger.private_pem).await;
        serving(&mut p, &old, "0.1.0", &d1);
        let supply = Arc::new(SupplyChain::new(options(
            &[],
            &[("release.pub", &release.public_pem)],
            &["calc*"],
        )));
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let pinned1 = format!("{}/berth/calculator@{d1}", reg.addr);
        let expected = vec![
            get_deployment(
                "calculator",
                Reply::Json(deployment(
                    "calculator",
                    1,
                    &pinned1,
                    &json!({}),
                    true,
                    false,
                )),
            ),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(
            status.revisions.len(),
            1,
            "the refused digest is no revision"
        );
        assert_eq!(status.image_digest.as_deref(), Some(d1.as_str()));
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::False, Some("UntrustedSignature"))
        );
        assert!(c.message.as_deref().unwrap().contains("release.pub"));
        let progressing = condition(&status, PROGRESSING);
        assert!(
            progressing
                .message
                .as_deref()
                .unwrap()
                .ends_with("; revision 1 keeps serving")
        );
        assert_eq!(condition(&status, AVAILABLE).status, ConditionStatus::True);
        assert_eq!(
            events(&seen),
            [
                ("Degraded".into(), "Warning".into()),
                ("UntrustedSignature".into(), "Warning".into())
            ]
        );
        assert_eq!(audit.records()[0].details["reason"], "UntrustedSignature");
    }

    #[tokio::test]
    async fn a_malformed_signature_is_refused() {
        let reg = TestRegistry::start();
        let release = keys::generate(b"").unwrap();
        let image = format!("{}/berth/calculator:0.1.0", reg.addr);
        let p = plugin("calculator", &image, "0.1.0");
        let digest = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "1")
            .await;
        reg.push_malformed_signature("berth/calculator", &digest, b"{not json")
            .await;
        let supply = Arc::new(SupplyChain::new(options(
            &[],
            &[("release.pub", &release.public_pem)],
            &["calculator"],
        )));
        let (ctx, verifier, mut caches, _) = context(&supply);
        caches.fill(&[&p], &[]);
        let expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(
            verified(&status).reason.as_deref(),
            Some("MalformedSignature")
        );
        assert_eq!(
            verification(&status).reason.as_deref(),
            Some("MalformedSignature")
        );
        assert_eq!(events(&seen)[1].0, "MalformedSignature");
    }

    #[tokio::test]
    async fn a_signed_image_runs_with_its_signer_in_status_and_a_wider_unsigned_push_is_refused() {
        let reg = TestRegistry::start();
        let release = keys::generate(b"").unwrap();
        let image = format!("{}/berth/calculator:0.1.0", reg.addr);
        let p = plugin("calculator", &image, "0.1.0");
        let d1 = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "1")
            .await;
        sign(&reg, &image, &release.private_pem).await;
        let trusted = [("release.pub", release.public_pem.as_str())];
        let supply = Arc::new(SupplyChain::new(options(&[], &trusted, &["*"])));
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let mut expected = vec![get_deployment("calculator", Reply::Error(404))];
        expected.extend(workload_applies());
        expected.extend([status_patch(&p), Expect::event(NS), Expect::event(NS)]);
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        let pinned1 = format!("{}/berth/calculator@{d1}", reg.addr);
        assert_eq!(
            image_of(body_of(&seen, Method::PATCH, "/deployments/calculator")),
            pinned1
        );
        let status = status_of(&seen);
        let v = verification(&status);
        assert_eq!(
            (
                v.verified,
                v.signed_by.as_deref(),
                v.signature_required,
                v.reason.as_deref()
            ),
            (ConditionStatus::True, Some("release.pub"), true, None)
        );
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::True, Some("Signed"))
        );
        assert_eq!(
            events(&seen),
            [
                ("Deploying".into(), "Normal".into()),
                ("SignatureVerified".into(), "Normal".into())
            ]
        );
        let records = audit.records();
        assert_eq!(
            (records[0].type_.as_str(), records[0].outcome.as_str()),
            (types::SECURITY, "success")
        );
        assert_eq!(records[0].details["signedBy"], "release.pub");
        assert_eq!(
            records[0].details["fingerprint"],
            TrustedKey::from_pem("k", &release.public_pem)
                .unwrap()
                .fingerprint
        );

        // The same tag pushed again with a label that widens the permissions and no new
        // signature, and the wider manifest applied with a grant: refused, and revision 1
        // keeps serving untouched.
        let mut wider = p.clone();
        wider.metadata.generation = Some(2);
        any_egress(&mut wider);
        let d2 = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&wider), "2")
            .await;
        serving(&mut wider, &image, "0.1.0", &d1);
        let grant = grant_for(&wider);
        let supply = Arc::new(SupplyChain::new(options(&[], &trusted, &["*"])));
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&wider], &[&grant]);
        let expected = vec![
            get_deployment(
                "calculator",
                Reply::Json(deployment(
                    "calculator",
                    1,
                    &pinned1,
                    &json!({}),
                    true,
                    false,
                )),
            ),
            status_patch(&wider),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&wider, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(status.revisions.len(), 1);
        let v = verification(&status);
        assert_eq!(
            (v.verified, v.reason.as_deref(), v.digest.as_deref()),
            (ConditionStatus::False, Some("Unsigned"), Some(d2.as_str()))
        );
        assert_eq!(
            events(&seen),
            [
                ("Degraded".into(), "Warning".into()),
                ("Unsigned".into(), "Warning".into())
            ]
        );
        assert_eq!(audit.records()[0].outcome, "denied");
    }

    #[tokio::test]
    async fn permissions_beyond_the_signed_manifest_are_refused() {
        let reg = TestRegistry::start();
        let release = keys::generate(b"").unwrap();
        let image = format!("{}/berth/calculator:0.1.0", reg.addr);
        let signed = plugin("calculator", &image, "0.1.0");
        let digest = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&signed), "1")
            .await;
        sign(&reg, &image, &release.private_pem).await;
        // Applied by digest (no resolution) and asking for egress the signer never declared.
        let mut p = plugin(
            "calculator",
            &format!("{}/berth/calculator@{digest}", reg.addr),
            "0.1.0",
        );
        any_egress(&mut p);
        let grant = grant_for(&p);
        let supply = Arc::new(SupplyChain::new(options(
            &[],
            &[("release.pub", &release.public_pem)],
            &["*"],
        )));
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[&grant]);
        let expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Failed));
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::False, Some("PermissionsNotSigned"))
        );
        let message = c.message.as_deref().unwrap();
        assert!(
            message.contains("spec.permissions asks for network egress *:443"),
            "{message}"
        );
        assert!(message.contains("signed by release.pub"), "{message}");
        assert_eq!(
            events(&seen),
            [
                ("Failed".into(), "Warning".into()),
                ("PermissionsNotSigned".into(), "Warning".into())
            ]
        );
        assert_eq!(audit.records()[0].details["reason"], "PermissionsNotSigned");
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_named_and_stops_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let old = format!("127.0.0.1:{port}/berth/calculator:0.1.0");
        let new = format!("127.0.0.1:{port}/berth/calculator:0.2.0");
        let d1 = format!("sha256:{}", "11".repeat(32));
        let pinned1 = format!("127.0.0.1:{port}/berth/calculator@{d1}");
        let mut p = plugin("calculator", &new, "0.2.0");
        p.metadata.generation = Some(2);
        serving(&mut p, &old, "0.1.0", &d1);
        let supply = Arc::new(SupplyChain::new(options(&[], &[], &[])));

        // A new version cannot be resolved: revision 1 keeps serving, untouched.
        let (ctx, verifier, mut caches, audit) = context(&supply);
        caches.fill(&[&p], &[]);
        let expected = vec![
            get_deployment(
                "calculator",
                Reply::Json(deployment(
                    "calculator",
                    1,
                    &pinned1,
                    &json!({}),
                    true,
                    false,
                )),
            ),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        assert_eq!(result.unwrap(), Action::requeue(CHECK_RETRY));
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(status.revisions.len(), 1);
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::Unknown, Some("RegistryUnreachable"))
        );
        let message = c.message.as_deref().unwrap();
        for part in [
            new.as_str(),
            "cannot reach the registry",
            "supplyChain.registryEgress",
            "supplyChain.insecureRegistries",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        let progressing = condition(&status, PROGRESSING);
        assert_eq!(progressing.reason.as_deref(), Some(IMAGE_NOT_CHECKED));
        assert!(
            progressing
                .message
                .as_deref()
                .unwrap()
                .ends_with("revision 1 keeps serving")
        );
        assert_eq!(verification(&status).verified, ConditionStatus::Unknown);
        assert_eq!(
            events(&seen),
            [
                ("Degraded".into(), "Warning".into()),
                ("RegistryUnreachable".into(), "Warning".into())
            ]
        );
        assert_eq!(audit.records()[0].outcome, "failure");

        // A first revision that cannot be resolved: nothing runs and it is not Ready.
        let fresh = plugin("calculator", &new, "0.2.0");
        let (ctx, verifier, mut caches, _) = context(&supply);
        caches.fill(&[&fresh], &[]);
        let expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            status_patch(&fresh),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&fresh, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(condition(&status, AVAILABLE).status, ConditionStatus::False);
        let event = seen.iter().find(|s| s.path.ends_with("/events")).unwrap();
        assert_eq!(event.body["reason"], "Pending");
        assert!(
            event.body["note"]
                .as_str()
                .unwrap()
                .contains("cannot reach the registry")
        );
    }

    /// The pull secret as the API server returns it.
    fn pull_secret(config_json: &str) -> Value {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(PULL.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(config_json.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        serde_json::to_value(secret).unwrap()
    }

    #[tokio::test]
    async fn credentials_come_from_the_pull_secret_and_wrong_or_missing_ones_are_named() {
        let reg = TestRegistry::start_with_login("berth", "s3cret");
        let release = keys::generate(b"").unwrap();
        let image = format!("{}/berth/calculator:0.1.0", reg.addr);
        let p = plugin("calculator", &image, "0.1.0");
        let digest = reg
            .push_image("berth/calculator:0.1.0", &labels_of(&p), "1")
            .await;
        sign(&reg, &image, &release.private_pem).await;
        let trusted = [("release.pub", release.public_pem.as_str())];
        let get_pull = |reply| Expect::new(Method::GET, format!("{SECRETS}/{PULL}"), reply);

        // Resolved and verified with the Secret's credentials; pods pull with it too.
        let supply = Arc::new(SupplyChain::new(options(&[PULL], &trusted, &["*"])));
        let (ctx, verifier, mut caches, _) = context(&supply);
        caches.fill(&[&p], &[]);
        let mut expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            get_pull(Reply::Json(pull_secret(&reg.docker_config_json()))),
        ];
        expected.extend(workload_applies());
        expected.extend([status_patch(&p), Expect::event(NS), Expect::event(NS)]);
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        let sent = body_of(&seen, Method::PATCH, "/deployments/calculator");
        assert_eq!(
            image_of(sent),
            format!("{}/berth/calculator@{digest}", reg.addr)
        );
        assert_eq!(
            sent["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": PULL}])
        );
        kubernetes_validate(std::slice::from_ref(sent));
        let status = status_of(&seen);
        assert_eq!(
            verification(&status).signed_by.as_deref(),
            Some("release.pub")
        );

        // Wrong credentials (say, a rotated password): named, with the Secret and the fix.
        let mut expired = reg.docker_config_json();
        use base64::Engine as _;
        let old = base64::engine::general_purpose::STANDARD.encode("berth:s3cret");
        let new = base64::engine::general_purpose::STANDARD.encode("berth:expired");
        expired = expired.replace(&old, &new);
        let supply = Arc::new(SupplyChain::new(options(&[PULL], &trusted, &["*"])));
        let (ctx, verifier, mut caches, _) = context(&supply);
        caches.fill(&[&p], &[]);
        let expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            get_pull(Reply::Json(pull_secret(&expired))),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        assert_eq!(result.unwrap(), Action::requeue(CHECK_RETRY));
        workload_untouched(&seen);
        let status = status_of(&seen);
        assert_eq!(status.phase, Some(Phase::Pending));
        let c = verified(&status);
        assert_eq!(
            (c.status, c.reason.as_deref()),
            (ConditionStatus::Unknown, Some("RegistryUnauthorized"))
        );
        let message = c.message.as_deref().unwrap();
        for part in [
            image.as_str(),
            "refused the credentials",
            "Secret default/registry-pull",
            "kubectl create secret docker-registry",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }

        // The Secret does not exist: named, with how to create it.
        let supply = Arc::new(SupplyChain::new(options(&[PULL], &trusted, &["*"])));
        let (ctx, verifier, mut caches, _) = context(&supply);
        caches.fill(&[&p], &[]);
        let expected = vec![
            get_deployment("calculator", Reply::Error(404)),
            get_pull(Reply::Error(404)),
            status_patch(&p),
            Expect::event(NS),
            Expect::event(NS),
        ];
        let (result, seen) = reconcile_with(&p, ctx, verifier, expected).await;
        result.unwrap();
        workload_untouched(&seen);
        let status = status_of(&seen);
        let c = verified(&status);
        assert_eq!(c.reason.as_deref(), Some("PullSecretMissing"));
        let message = c.message.as_deref().unwrap();
        for part in [
            "default/registry-pull",
            "does not exist",
            &format!("--docker-server={}", reg.addr),
            "supplyChain.pullSecrets",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        assert_eq!(events(&seen)[1].0, "PullSecretMissing");
    }
}
