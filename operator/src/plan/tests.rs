use berth_api::{EgressRule, KubernetesRule, PluginGrantSpec};

use super::*;

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn calculator() -> Plugin {
    let mut p: Plugin = serde_yaml::from_str(
        r#"
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: calculator, namespace: default, generation: 1, uid: "u-1"}
spec:
  image: berth/calculator:0.1.0
  version: 0.1.0
"#,
    )
    .unwrap();
    p.metadata.generation = Some(1);
    p
}

fn fetcher() -> Plugin {
    let mut p = calculator();
    p.metadata.name = Some("http-fetch".into());
    p.spec.image = "berth/http-fetch:0.1.0".into();
    p.spec.permissions.network.egress.push(EgressRule {
        host: Some("*".into()),
        cidr: None,
        ports: vec![443],
    });
    p
}

fn grant_for(plugin: &Plugin, expires_at: Option<&str>) -> PluginGrant {
    let mut g = PluginGrant::new(
        plugin.name(),
        PluginGrantSpec {
            plugin: plugin.name().into(),
            permissions: plugin.spec.permissions.clone(),
            granted_by: "platform@example.com".into(),
            reason: None,
            expires_at: expires_at.map(String::from),
        },
    );
    g.metadata.namespace = Some("default".into());
    g
}

struct Case<'a> {
    plugin: &'a Plugin,
    grants: Vec<&'a PluginGrant>,
    dependencies: BTreeMap<String, DependencyState>,
    deployment: Option<DeploymentView>,
    auto_approve: RiskTier,
    check: Option<ImageCheck>,
}

impl<'a> Case<'a> {
    fn new(plugin: &'a Plugin) -> Self {
        Self {
            plugin,
            grants: vec![],
            dependencies: BTreeMap::new(),
            deployment: None,
            auto_approve: RiskTier::Low,
            check: None,
        }
    }

    fn plan(&self) -> Plan {
        plan_with_image(
            PlanInput {
                plugin: self.plugin,
                grants: &self.grants,
                dependencies: &self.dependencies,
                deployment: self.deployment.as_ref(),
                now: now(),
                auto_approve: self.auto_approve,
                options: &RenderOptions::default(),
                validation: None,
            },
            self.check.as_ref(),
        )
    }
}

fn condition<'a>(plan: &'a Plan, type_: &str) -> &'a Condition {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn rolled_out(revision: i64, permissions: &Permissions) -> DeploymentView {
    DeploymentView {
        revision: Some(revision),
        permissions: Some(permissions.clone()),
        spec_replicas: 1,
        generation: 2,
        observed_generation: 2,
        replicas: 1,
        updated_replicas: 1,
        available_replicas: 1,
        deadline_exceeded: false,
    }
}

/// The plugin as the API server holds it after the status of `plan` was written.
fn with_status(plugin: &Plugin, plan: &Plan) -> Plugin {
    let mut p = plugin.clone();
    p.status = Some(plan.status.clone());
    p
}

#[test]
fn new_low_risk_plugin_is_applied_and_deploying() {
    let p = calculator();
    let plan = Case::new(&p).plan();
    let Workload::Apply {
        rendered,
        remove_rbac,
        ..
    } = &plan.workload
    else {
        panic!("expected Apply, got {:?}", plan.workload)
    };
    assert!(!remove_rbac);
    assert_eq!(
        rendered.deployment.metadata.name.as_deref(),
        Some("calculator")
    );
    assert_eq!(plan.status.phase, Some(Phase::Deploying));
    assert_eq!(plan.status.observed_generation, Some(1));
    assert_eq!(
        plan.status.endpoint.as_deref(),
        Some("http://calculator.default.svc:8080")
    );
    assert_eq!(plan.status.revisions.len(), 1);
    assert_eq!(
        plan.status.revisions[0].outcome,
        RevisionOutcome::Progressing
    );
    assert_eq!(condition(&plan, VALIDATED).status, ConditionStatus::True);
    assert_eq!(
        condition(&plan, PERMISSIONS_GRANTED).reason.as_deref(),
        Some("AutoApproved")
    );
    assert_eq!(condition(&plan, PROGRESSING).status, ConditionStatus::True);
    assert_eq!(plan.requeue_after, ROLLOUT_POLL);
    let t = plan.transition.as_ref().unwrap();
    assert_eq!((t.reason.as_str(), t.warning), ("Deploying", false));
}

#[test]
fn rolled_out_revision_becomes_active_and_ready() {
    let p = calculator();
    let first = Case::new(&p).plan();
    let p = with_status(&p, &first);
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let plan = case.plan();
    assert_eq!(plan.status.phase, Some(Phase::Ready));
    assert_eq!(plan.status.revisions[0].outcome, RevisionOutcome::Active);
    assert_eq!(condition(&plan, AVAILABLE).status, ConditionStatus::True);
    assert_eq!(
        condition(&plan, PROGRESSING).reason.as_deref(),
        Some("RolloutComplete")
    );
    assert_eq!(
        plan.digest_wanted,
        Some(1),
        "a tag's digest comes from the pods"
    );
    assert_eq!(plan.requeue_after, RESYNC);
}

#[test]
fn same_input_gives_same_status_and_no_event() {
    let p = calculator();
    let first = Case::new(&p).plan();
    let p2 = with_status(&p, &first);
    let second = Case::new(&p2).plan();
    assert_eq!(first.status, second.status);
    assert_eq!(second.transition, None);
}

#[test]
fn transition_time_changes_only_with_the_condition() {
    let p = calculator();
    let mut first = Case::new(&p).plan();
    for c in &mut first.status.conditions {
        c.last_transition_time = Some("2020-01-01T00:00:00Z".into());
    }
    let p = with_status(&p, &first);
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let plan = case.plan();
    // Validated stayed True; Available went False -> True.
    assert_eq!(
        condition(&plan, VALIDATED).last_transition_time.as_deref(),
        Some("2020-01-01T00:00:00Z")
    );
    assert_eq!(
        condition(&plan, AVAILABLE).last_transition_time.as_deref(),
        Some("2026-03-01T12:00:00Z")
    );
}

#[test]
fn high_risk_plugin_awaits_approval_and_deploys_nothing() {
    let p = fetcher();
    let plan = Case::new(&p).plan();
    assert_eq!(plan.workload, Workload::Nothing);
    assert_eq!(plan.status.phase, Some(Phase::AwaitingApproval));
    let granted = condition(&plan, PERMISSIONS_GRANTED);
    assert_eq!(granted.status, ConditionStatus::False);
    assert_eq!(granted.reason.as_deref(), Some("ApprovalRequired"));
    assert!(
        granted
            .message
            .as_deref()
            .unwrap()
            .contains("network egress *:443"),
        "{granted:?}"
    );
    assert_eq!(plan.status.risk.as_ref().unwrap().tier, RiskTier::Moderate);
    assert_eq!(
        plan.status.revisions[0].outcome,
        RevisionOutcome::AwaitingApproval
    );
    assert!(plan.transition.as_ref().unwrap().warning);
}

#[test]
fn a_grant_lets_it_deploy_and_expiry_is_the_next_look() {
    let p = fetcher();
    let g = grant_for(&p, Some("2026-03-01T12:02:00Z"));
    let mut case = Case::new(&p);
    case.grants = vec![&g];
    let plan = case.plan();
    assert!(matches!(plan.workload, Workload::Apply { .. }));
    assert_eq!(
        condition(&plan, PERMISSIONS_GRANTED).reason.as_deref(),
        Some("Granted")
    );
    assert_eq!(plan.requeue_after, ROLLOUT_POLL);
    let mut case = Case::new(&p);
    case.grants = vec![&g];
    case.deployment = Some(rolled_out(1, &p.spec.permissions));
    let ready = case.plan();
    assert_eq!(ready.requeue_after, Duration::from_secs(120));
}

#[test]
fn an_expired_grant_stops_the_running_plugin() {
    let p = fetcher();
    let g = grant_for(&p, Some("2026-03-01T11:00:00Z"));
    let mut case = Case::new(&p);
    case.grants = vec![&g];
    case.deployment = Some(rolled_out(1, &p.spec.permissions));
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Remove);
    assert_eq!(plan.status.phase, Some(Phase::AwaitingApproval));
    let granted = condition(&plan, PERMISSIONS_GRANTED);
    assert_eq!(granted.reason.as_deref(), Some("GrantExpired"));
    assert!(
        granted
            .message
            .as_deref()
            .unwrap()
            .contains("expired: PluginGrant http-fetch")
    );
}

#[test]
fn raising_the_auto_approve_tier_deploys_without_a_grant() {
    let p = fetcher();
    let mut case = Case::new(&p);
    case.auto_approve = RiskTier::Moderate;
    assert!(matches!(case.plan().workload, Workload::Apply { .. }));
}

#[test]
fn missing_dependency_is_named_in_the_condition() {
    let mut p = calculator();
    p.spec.depends_on.push(berth_api::Dependency {
        name: "text-processor".into(),
        version: Some(">=1.0.0, <2.0.0".into()),
    });
    p.spec.depends_on.push(berth_api::Dependency {
        name: "tokenizer".into(),
        version: None,
    });
    let mut case = Case::new(&p);
    case.dependencies.insert(
        "tokenizer".into(),
        DependencyState {
            phase: Some(Phase::Deploying),
            version: "0.3.0".into(),
        },
    );
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Nothing);
    assert_eq!(plan.status.phase, Some(Phase::Pending));
    let deps = condition(&plan, DEPENDENCIES_READY);
    assert_eq!(deps.status, ConditionStatus::False);
    assert_eq!(
        deps.message.as_deref(),
        Some("waiting for text-processor (not found), tokenizer (phase Deploying)")
    );
}

#[test]
fn dependency_outside_its_version_range_is_not_ready() {
    let mut p = calculator();
    p.spec.depends_on.push(berth_api::Dependency {
        name: "text-processor".into(),
        version: Some(">=1.0.0".into()),
    });
    let mut case = Case::new(&p);
    case.dependencies.insert(
        "text-processor".into(),
        DependencyState {
            phase: Some(Phase::Ready),
            version: "0.9.0".into(),
        },
    );
    let plan = case.plan();
    assert!(
        condition(&plan, DEPENDENCIES_READY)
            .message
            .as_deref()
            .unwrap()
            .contains("text-processor (version 0.9.0 does not satisfy \">=1.0.0\")")
    );
    case.dependencies.get_mut("text-processor").unwrap().version = "1.2.0".into();
    let plan = case.plan();
    assert_eq!(
        condition(&plan, DEPENDENCIES_READY).status,
        ConditionStatus::True
    );
    assert!(matches!(plan.workload, Workload::Apply { .. }));
}

#[test]
fn invalid_spec_fails_with_every_message() {
    let mut p = calculator();
    p.spec.version = "v1".into();
    p.spec.resources.memory = berth_api::Quantity::new("64 MB");
    let plan = Case::new(&p).plan();
    assert_eq!(plan.status.phase, Some(Phase::Failed));
    assert_eq!(plan.workload, Workload::Keep);
    let v = condition(&plan, VALIDATED);
    assert_eq!(v.status, ConditionStatus::False);
    let message = v.message.as_deref().unwrap();
    assert!(message.contains("spec.version"), "{message}");
    assert!(message.contains("spec.resources.memory"), "{message}");
    assert!(plan.status.revisions.is_empty());
    assert_eq!(plan.transition.as_ref().unwrap().reason, "Failed");
}

#[test]
fn a_name_starting_with_a_digit_cannot_be_a_service() {
    let mut p = calculator();
    p.metadata.name = Some("1calc".into());
    let plan = Case::new(&p).plan();
    assert_eq!(plan.status.phase, Some(Phase::Failed));
    assert!(
        condition(&plan, VALIDATED)
            .message
            .as_deref()
            .unwrap()
            .contains("must start with a letter")
    );
}

fn upgraded(p: &Plugin, image: &str, version: &str) -> Plugin {
    let mut p = p.clone();
    p.spec.image = image.into();
    p.spec.version = version.into();
    p.metadata.generation = Some(2);
    p
}

/// calculator 0.1.0 Active as revision 1 with digest, then the spec moved to 0.2.0.
fn calculator_upgraded() -> Plugin {
    let p = calculator();
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let mut ready = case.plan();
    ready.record_digest(1, "sha256:aaaa".into());
    let p = with_status(&p, &ready);
    upgraded(&p, "berth/calculator:0.2.0", "0.2.0")
}

#[test]
fn new_version_is_a_new_revision() {
    let p = calculator_upgraded();
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let plan = case.plan();
    assert_eq!(plan.status.revisions.len(), 2);
    assert_eq!(plan.status.revisions[1].revision, 2);
    assert_eq!(
        plan.status.revisions[1].outcome,
        RevisionOutcome::Progressing
    );
    assert_eq!(plan.status.revisions[0].outcome, RevisionOutcome::Active);
    assert_eq!(plan.status.phase, Some(Phase::Deploying));
    let Workload::Apply { rendered, .. } = &plan.workload else {
        panic!("expected Apply")
    };
    let d = serde_json::to_value(&rendered.deployment).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "berth/calculator:0.2.0"
    );

    let p = with_status(&p, &plan);
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(2, &Permissions::default()));
    let done = case.plan();
    assert_eq!(
        done.status.revisions[0].outcome,
        RevisionOutcome::Superseded
    );
    assert_eq!(done.status.revisions[1].outcome, RevisionOutcome::Active);
}

#[test]
fn stuck_rollout_rolls_back_to_the_last_good_digest() {
    let p = calculator_upgraded();
    let first = {
        let mut case = Case::new(&p);
        case.deployment = Some(rolled_out(1, &Permissions::default()));
        case.plan()
    };
    let p = with_status(&p, &first);
    let mut stuck = rolled_out(2, &Permissions::default());
    stuck.available_replicas = 1;
    stuck.updated_replicas = 1;
    stuck.replicas = 2;
    stuck.deadline_exceeded = true;
    let mut case = Case::new(&p);
    case.deployment = Some(stuck);
    let plan = case.plan();
    assert_eq!(plan.status.phase, Some(Phase::Degraded));
    assert_eq!(
        plan.status.revisions[1].outcome,
        RevisionOutcome::RolledBack
    );
    let progressing = condition(&plan, PROGRESSING);
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    assert!(
        progressing
            .message
            .as_deref()
            .unwrap()
            .contains("rolled back to revision 1 (berth/calculator@sha256:aaaa)")
    );
    let Workload::Apply { rendered, .. } = &plan.workload else {
        panic!("expected Apply")
    };
    let d = serde_json::to_value(&rendered.deployment).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "berth/calculator@sha256:aaaa"
    );
    assert_eq!(d["metadata"]["annotations"]["berth.dev/revision"], "1");
    let t = plan.transition.as_ref().unwrap();
    assert_eq!((t.reason.as_str(), t.warning), ("RolledBack", true));

    // The rollback sticks until the spec changes again.
    let p = with_status(&p, &plan);
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let after = case.plan();
    assert_eq!(after.status.phase, Some(Phase::Degraded));
    assert_eq!(after.transition, None);
    let Workload::Apply { rendered, .. } = &after.workload else {
        panic!("expected Apply")
    };
    assert_eq!(
        rendered.deployment.metadata.annotations.as_ref().unwrap()[REVISION_ANNOTATION],
        "1"
    );
}

#[test]
fn stuck_first_rollout_has_nothing_to_roll_back_to() {
    let p = calculator();
    let first = Case::new(&p).plan();
    let p = with_status(&p, &first);
    let mut stuck = rolled_out(1, &Permissions::default());
    stuck.available_replicas = 0;
    stuck.deadline_exceeded = true;
    let mut case = Case::new(&p);
    case.deployment = Some(stuck);
    let plan = case.plan();
    assert_eq!(plan.status.phase, Some(Phase::Failed));
    assert_eq!(plan.workload, Workload::Keep);
    assert!(
        condition(&plan, PROGRESSING)
            .message
            .as_deref()
            .unwrap()
            .contains("no earlier revision")
    );
}

#[test]
fn widened_permissions_keep_the_old_revision_serving() {
    let p = calculator_upgraded();
    let mut p = p;
    p.spec.permissions.network.egress.push(EgressRule {
        host: Some("*".into()),
        cidr: None,
        ports: vec![443],
    });
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Keep);
    assert_eq!(plan.status.phase, Some(Phase::AwaitingApproval));
    let granted = condition(&plan, PERMISSIONS_GRANTED);
    assert_eq!(granted.reason.as_deref(), Some("PermissionsWidened"));
    assert!(
        granted
            .message
            .as_deref()
            .unwrap()
            .contains("revision 1 keeps serving"),
        "{granted:?}"
    );
    assert_eq!(condition(&plan, AVAILABLE).status, ConditionStatus::True);
    assert_eq!(plan.status.revisions[0].outcome, RevisionOutcome::Active);
    assert_eq!(
        plan.status.revisions[1].outcome,
        RevisionOutcome::AwaitingApproval
    );
    assert_eq!(plan.status.image_digest.as_deref(), Some("sha256:aaaa"));

    // The grant arrives: revision 2 rolls out.
    let g = grant_for(&p, None);
    let p = with_status(&p, &plan);
    let mut case = Case::new(&p);
    case.grants = vec![&g];
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let granted = case.plan();
    assert!(matches!(granted.workload, Workload::Apply { .. }));
    assert_eq!(
        granted.status.revisions[1].outcome,
        RevisionOutcome::Progressing
    );
}

#[test]
fn disabled_plugin_scales_to_zero_and_says_disabled() {
    let mut p = calculator();
    p.spec.enabled = false;
    let plan = Case::new(&p).plan();
    assert_eq!(plan.status.phase, Some(Phase::Disabled));
    let Workload::Apply { rendered, .. } = &plan.workload else {
        panic!("expected Apply")
    };
    assert_eq!(rendered.deployment.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(
        condition(&plan, AVAILABLE).reason.as_deref(),
        Some("Disabled")
    );
}

#[test]
fn dropping_a_kubernetes_permission_removes_the_role() {
    let p = calculator();
    let mut before = Permissions::default();
    before.kubernetes.push(KubernetesRule {
        api_groups: vec![],
        resources: vec!["configmaps".into()],
        verbs: vec!["get".into()],
        resource_names: vec![],
    });
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &before));
    let Workload::Apply { remove_rbac, .. } = case.plan().workload else {
        panic!("expected Apply")
    };
    assert!(remove_rbac);
}

#[test]
fn image_pinning_replaces_the_tag() {
    assert_eq!(
        pinned("berth/calc:0.1.0", Some("sha256:ab")),
        "berth/calc@sha256:ab"
    );
    assert_eq!(
        pinned("localhost:5000/berth/calc:0.1.0", Some("sha256:ab")),
        "localhost:5000/berth/calc@sha256:ab"
    );
    assert_eq!(
        pinned("localhost:5000/berth/calc", Some("sha256:ab")),
        "localhost:5000/berth/calc@sha256:ab"
    );
    assert_eq!(
        pinned("berth/calc@sha256:ab", Some("sha256:cd")),
        "berth/calc@sha256:ab"
    );
    assert_eq!(pinned("berth/calc:0.1.0", None), "berth/calc:0.1.0");
    assert_eq!(
        digest_of("berth/calc@sha256:ab").as_deref(),
        Some("sha256:ab")
    );
}

#[test]
fn revisions_are_capped() {
    let mut p = calculator();
    let mut status = PluginStatus::default();
    for n in 1..=12 {
        status.revisions.push(Revision {
            revision: n,
            version: format!("0.0.{n}"),
            image: Some(format!("berth/calculator:0.0.{n}")),
            image_digest: None,
            outcome: RevisionOutcome::Superseded,
            message: None,
        });
    }
    p.status = Some(status);
    let plan = Case::new(&p).plan();
    assert_eq!(plan.status.revisions.len(), MAX_REVISIONS);
    assert_eq!(plan.status.revisions.last().unwrap().revision, 13);
}

#[test]
fn cached_validation_is_used_as_given() {
    let p = calculator();
    let problems = vec!["spec.image: cached problem".to_string()];
    let plan = plan(PlanInput {
        plugin: &p,
        grants: &[],
        dependencies: &BTreeMap::new(),
        deployment: None,
        now: now(),
        auto_approve: RiskTier::Low,
        options: &RenderOptions::default(),
        validation: Some(&problems),
    });
    assert_eq!(plan.status.phase, Some(Phase::Failed));
    assert_eq!(
        condition(&plan, VALIDATED).message.as_deref(),
        Some("spec.image: cached problem")
    );
    assert!(validation_problems(&p).is_empty());
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn token_secret_of(plan: &Plan) -> String {
    let Workload::Apply { rendered, .. } = &plan.workload else {
        panic!("expected Apply, got {:?}", plan.workload)
    };
    let env = rendered
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    env.iter()
        .find(|e| e.name == "BERTH_PLUGIN_TOKEN")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|s| s.name.clone())
        .unwrap()
}

#[test]
fn a_new_plugin_wants_the_credential_of_its_first_revision() {
    let p = calculator();
    let mut plan = Case::new(&p).plan();
    assert_eq!(plan.credential_wanted, Some(1));
    assert!(plan.stale_credentials.is_empty());
    assert_eq!(token_secret_of(&plan), "calculator-berth-token-1");
    plan.record_credential(1, digest(1));
    assert_eq!(plan.credential_wanted, None);
    assert_eq!(
        plan.status.credentials,
        vec![PluginCredential {
            revision: 1,
            sha256: digest(1)
        }]
    );
    let Workload::Apply { rendered, .. } = &plan.workload else {
        panic!("expected Apply")
    };
    let template = rendered
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref();
    assert_eq!(
        template.unwrap().annotations.as_ref().unwrap()[CREDENTIAL_ANNOTATION],
        digest(1)
    );
}

#[test]
fn credentials_rotate_with_the_revision_and_old_ones_go_after_the_rollout() {
    let p = calculator_upgraded();
    let mut p = p;
    p.status.as_mut().unwrap().credentials = vec![PluginCredential {
        revision: 1,
        sha256: digest(1),
    }];
    // Rolling out revision 2: both digests stay accepted.
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    let mut rolling = case.plan();
    assert_eq!(rolling.credential_wanted, Some(2));
    assert_eq!(token_secret_of(&rolling), "calculator-berth-token-2");
    rolling.record_credential(2, digest(2));
    let revisions: Vec<i64> = rolling
        .status
        .credentials
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(revisions, [1, 2]);
    assert!(rolling.stale_credentials.is_empty());

    // Revision 2's pods are up but old ones still run: nothing is dropped yet.
    let p = with_status(&p, &rolling);
    let mut case = Case::new(&p);
    let mut midway = rolled_out(2, &Permissions::default());
    midway.replicas = 2;
    case.deployment = Some(midway);
    let mut plan = case.plan();
    plan.record_credential(2, digest(2));
    assert_eq!(plan.status.credentials.len(), 2);
    assert!(plan.stale_credentials.is_empty());

    // Rolled out: revision 1's digest is dropped and its Secret is stale.
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(2, &Permissions::default()));
    let mut done = case.plan();
    done.record_credential(2, digest(2));
    assert_eq!(
        done.status.credentials,
        vec![PluginCredential {
            revision: 2,
            sha256: digest(2)
        }]
    );
    assert_eq!(done.stale_credentials, [1]);
}

#[test]
fn a_held_revision_keeps_the_credentials_of_what_runs() {
    let mut p = fetcher();
    p.status = Some(PluginStatus {
        credentials: vec![PluginCredential {
            revision: 1,
            sha256: digest(1),
        }],
        ..PluginStatus::default()
    });
    let plan = Case::new(&p).plan();
    assert!(matches!(plan.workload, Workload::Nothing));
    assert_eq!(plan.credential_wanted, None);
    assert_eq!(plan.status.credentials.len(), 1);
    assert!(plan.stale_credentials.is_empty());
}

#[test]
fn a_rollback_goes_back_to_the_good_revisions_credential() {
    let mut p = calculator_upgraded();
    p.status.as_mut().unwrap().credentials = vec![PluginCredential {
        revision: 1,
        sha256: digest(1),
    }];
    let mut first = {
        let mut case = Case::new(&p);
        case.deployment = Some(rolled_out(1, &Permissions::default()));
        case.plan()
    };
    first.record_credential(2, digest(2));
    let p = with_status(&p, &first);
    let mut stuck = rolled_out(2, &Permissions::default());
    stuck.replicas = 2;
    stuck.deadline_exceeded = true;
    let mut case = Case::new(&p);
    case.deployment = Some(stuck);
    let plan = case.plan();
    assert_eq!(plan.status.phase, Some(Phase::Degraded));
    assert_eq!(plan.credential_wanted, Some(1));
    assert_eq!(token_secret_of(&plan), "calculator-berth-token-1");
    assert_eq!(
        plan.status.credentials.len(),
        2,
        "both run until the rollback is done"
    );
    assert!(plan.stale_credentials.is_empty());
}

fn accepted(plugin: &Plugin, digest: &str) -> ImageCheck {
    ImageCheck {
        image: plugin.spec.image.clone(),
        signature_required: false,
        outcome: CheckOutcome::Accepted {
            digest: digest.to_string(),
            signature: None,
        },
    }
}

fn refused(plugin: &Plugin, digest: &str) -> ImageCheck {
    ImageCheck {
        image: plugin.spec.image.clone(),
        signature_required: true,
        outcome: CheckOutcome::Refused {
            digest: Some(digest.to_string()),
            reason: "Unsigned".into(),
            message: "spec.image is not signed; sign it with `berth sign`".into(),
        },
    }
}

fn unreachable(plugin: &Plugin) -> ImageCheck {
    ImageCheck {
        image: plugin.spec.image.clone(),
        signature_required: false,
        outcome: CheckOutcome::Unknown {
            digest: None,
            reason: "RegistryUnreachable".into(),
            message: "spec.image: cannot reach the registry".into(),
        },
    }
}

fn image_of(plan: &Plan) -> String {
    let Workload::Apply { rendered, .. } = &plan.workload else {
        panic!("expected Apply, got {:?}", plan.workload)
    };
    rendered
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

#[test]
fn a_revision_is_image_version_and_digest() {
    let p = calculator();
    let mut case = Case::new(&p);
    case.check = Some(accepted(&p, &digest(1)));
    let first = case.plan();
    assert_eq!(image_of(&first), format!("berth/calculator@{}", digest(1)));
    assert_eq!(first.status.revisions[0].image_digest, Some(digest(1)));
    assert_eq!(first.status.image_digest, Some(digest(1)));
    assert_eq!(
        first.digest_wanted, None,
        "the digest is known before the pods run"
    );

    // Same digest: the same revision, nothing new to say.
    let p = with_status(&p, &first);
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    case.check = Some(accepted(&p, &digest(1)));
    let again = case.plan();
    assert_eq!(again.status.revisions.len(), 1);
    assert_eq!(again.status.revisions[0].outcome, RevisionOutcome::Active);
    assert_eq!(again.notice, None);

    // The tag names another digest: revision 2, pinned to it.
    let p = with_status(&p, &again);
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    case.check = Some(accepted(&p, &digest(2)));
    let moved = case.plan();
    assert_eq!(moved.status.revisions.len(), 2);
    assert_eq!(moved.status.revisions[1].image_digest, Some(digest(2)));
    assert_eq!(image_of(&moved), format!("berth/calculator@{}", digest(2)));
    assert_eq!(moved.status.phase, Some(Phase::Deploying));
    let notice = moved.notice.as_ref().expect("a new digest is announced");
    assert_eq!(notice.reason, "ImagePinned");
    assert_eq!(notice.details["revision"], 2);
}

#[test]
fn tags_without_a_check_run_unpinned_as_before() {
    let p = calculator();
    let plan = Case::new(&p).plan();
    assert_eq!(image_of(&plan), "berth/calculator:0.1.0");
    assert_eq!(plan.status.verification, None);
    assert!(plan.status.conditions.iter().all(|c| c.type_ != VERIFIED));
}

#[test]
fn a_revision_from_before_pinning_learns_its_digest() {
    let mut p = calculator();
    p.status = Some(PluginStatus {
        revisions: vec![Revision {
            revision: 1,
            version: "0.1.0".into(),
            image: Some("berth/calculator:0.1.0".into()),
            image_digest: None,
            outcome: RevisionOutcome::Active,
            message: None,
        }],
        ..PluginStatus::default()
    });
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    case.check = Some(accepted(&p, &digest(3)));
    let plan = case.plan();
    assert_eq!(plan.status.revisions.len(), 1);
    assert_eq!(plan.status.revisions[0].image_digest, Some(digest(3)));
    assert_eq!(image_of(&plan), format!("berth/calculator@{}", digest(3)));
}

#[test]
fn a_refused_image_starts_nothing_and_keeps_what_runs() {
    let p = calculator();
    let mut case = Case::new(&p);
    case.check = Some(refused(&p, &digest(1)));
    let first = case.plan();
    assert_eq!(first.workload, Workload::Nothing);
    assert_eq!(first.status.phase, Some(Phase::Failed));
    assert!(first.status.revisions.is_empty());
    assert_eq!(first.credential_wanted, None);
    let verified = condition(&first, VERIFIED);
    assert_eq!(
        (verified.status, verified.reason.as_deref()),
        (ConditionStatus::False, Some("Unsigned"))
    );
    assert_eq!(
        first.status.conditions[1].type_, VERIFIED,
        "after Validated"
    );
    let t = first.transition.as_ref().unwrap();
    assert!(t.note.contains("berth sign"), "{}", t.note);
    let notice = first.notice.as_ref().unwrap();
    assert!(notice.warning);
    assert_eq!((notice.audit_type, notice.outcome), ("security", "denied"));

    // Revision 1 serves; the new digest is refused: it keeps serving, untouched.
    let mut p = upgraded(&p, "berth/calculator:0.2.0", "0.2.0");
    p.status = Some(PluginStatus {
        revisions: vec![Revision {
            revision: 1,
            version: "0.1.0".into(),
            image: Some("berth/calculator:0.1.0".into()),
            image_digest: Some(digest(1)),
            outcome: RevisionOutcome::Active,
            message: None,
        }],
        ..PluginStatus::default()
    });
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    case.check = Some(refused(&p, &digest(2)));
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Keep);
    assert_eq!(plan.status.phase, Some(Phase::Degraded));
    assert_eq!(plan.status.image_digest, Some(digest(1)));
    assert_eq!(plan.status.revisions.len(), 1);
    assert_eq!(
        plan.status.verification.as_ref().unwrap().digest,
        Some(digest(2))
    );
}

#[test]
fn a_refused_image_does_not_keep_a_revision_whose_grant_expired() {
    let p = fetcher();
    let g = grant_for(&p, Some("2026-03-01T11:00:00Z"));
    let mut case = Case::new(&p);
    case.grants = vec![&g];
    case.deployment = Some(rolled_out(1, &p.spec.permissions));
    case.check = Some(refused(&p, &digest(1)));
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Remove);
    assert_ne!(plan.status.phase, Some(Phase::Ready));
    assert!(
        condition(&plan, PROGRESSING)
            .message
            .as_deref()
            .unwrap()
            .contains("no longer granted")
    );
}

#[test]
fn an_unreachable_registry_keeps_the_known_digest_and_looks_again_soon() {
    let p = calculator();
    let mut case = Case::new(&p);
    case.check = Some(accepted(&p, &digest(1)));
    let first = case.plan();
    let p = with_status(&p, &first);

    // Same spec, registry down: the revision it is runs on, pinned to what was resolved.
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    case.check = Some(unreachable(&p));
    let plan = case.plan();
    assert_eq!(image_of(&plan), format!("berth/calculator@{}", digest(1)));
    assert_eq!(plan.status.phase, Some(Phase::Ready));
    assert_eq!(condition(&plan, VERIFIED).status, ConditionStatus::Unknown);
    assert_eq!(plan.requeue_after, CHECK_RETRY);
    assert_eq!(plan.notice.as_ref().unwrap().outcome, "failure");

    // A first revision that cannot be resolved is Pending, never Ready.
    let fresh = calculator();
    let mut case = Case::new(&fresh);
    case.check = Some(unreachable(&fresh));
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Nothing);
    assert_eq!(plan.status.phase, Some(Phase::Pending));
    let t = plan.transition.as_ref().unwrap();
    assert!(t.note.contains("cannot reach the registry"), "{}", t.note);
}

#[test]
fn verification_time_changes_only_with_the_result() {
    let p = calculator();
    let mut case = Case::new(&p);
    case.check = Some(accepted(&p, &digest(1)));
    let mut first = case.plan();
    first.status.verification.as_mut().unwrap().checked_at = Some("2020-01-01T00:00:00Z".into());
    let p = with_status(&p, &first);
    let mut case = Case::new(&p);
    case.check = Some(accepted(&p, &digest(1)));
    let same = case.plan();
    assert_eq!(
        same.status, first.status,
        "an unchanged check writes nothing"
    );
    assert_eq!(same.notice, None);
    let mut case = Case::new(&p);
    case.check = Some(unreachable(&p));
    let failed = case.plan();
    assert_eq!(
        failed
            .status
            .verification
            .as_ref()
            .unwrap()
            .checked_at
            .as_deref(),
        Some("2026-03-01T12:00:00Z")
    );
}

#[test]
fn a_disabled_plugin_with_a_refused_image_is_stopped() {
    let mut p = calculator();
    p.spec.enabled = false;
    let mut case = Case::new(&p);
    case.deployment = Some(rolled_out(1, &Permissions::default()));
    case.check = Some(refused(&p, &digest(1)));
    let plan = case.plan();
    assert_eq!(plan.workload, Workload::Remove);
    assert_eq!(plan.status.phase, Some(Phase::Disabled));
}
