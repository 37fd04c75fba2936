//! The reconcile decision as a pure function: from a Plugin, its grants, its dependencies and
//! the Deployment as last seen, to the objects to apply and the status to report.
//!
//! The controller gathers the input and carries the plan out; everything a user can observe
//! (phase, conditions, revisions, rollbacks, approval) is decided here and unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_api::{
    Condition, ConditionStatus, ImageVerification, Permissions, Phase, Plugin, PluginCredential,
    PluginGrant, PluginStatus, Revision, RevisionOutcome, RiskTier, validate_plugin,
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;

use crate::approval::{Approval, decide, describe_missing};
use crate::audit::types as audit_types;
use crate::render::{
    CREDENTIAL_ANNOTATION, PERMISSIONS_ANNOTATION, REVISION_ANNOTATION, RenderInput, RenderOptions,
    Rendered, RevisionToRun, endpoint, render,
};
use crate::supply_chain::{CheckOutcome, ImageCheck, reasons};

/// Condition: the spec passed `berth-api` validation.
pub const VALIDATED: &str = "Validated";
/// Condition: the requested permissions are auto-approved or covered by grants.
pub const PERMISSIONS_GRANTED: &str = "PermissionsGranted";
/// Condition: every `dependsOn` plugin exists, is Ready and satisfies its version range.
pub const DEPENDENCIES_READY: &str = "DependenciesReady";
/// Condition: at least one pod serves.
pub const AVAILABLE: &str = "Available";
/// Condition: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition: the image resolved to a digest and, where the policy requires it, carries a
/// trusted signature whose manifest covers the applied permissions. Only while digests are
/// resolved (`--pin-digests`).
pub const VERIFIED: &str = "Verified";

/// `Progressing` reason: the image was refused, so no new revision starts.
pub const IMAGE_REFUSED: &str = "ImageRefused";
/// `Progressing` reason: the image could not be checked, so no new revision starts.
pub const IMAGE_NOT_CHECKED: &str = "ImageNotChecked";

/// Revisions kept in the status, newest last.
pub const MAX_REVISIONS: usize = 10;
/// Look again this often when nothing is in flight (drift correction).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Look again this often while a rollout is under way.
pub const ROLLOUT_POLL: Duration = Duration::from_secs(30);
/// Ask the registry again this soon after it could not answer.
pub const CHECK_RETRY: Duration = Duration::from_secs(60);

/// The part of a Plugin's status the Plugin reconciler writes: all of it but `performance`
/// (written by the benchmark controller) and `liveTier` (written by the gateway), each under
/// a field manager of its own. Compare the status read back through this, so a field
/// another writer changed does not make the reconciler write again.
pub fn own_fields(status: &PluginStatus) -> PluginStatus {
    PluginStatus {
        performance: None,
        live_tier: None,
        ..status.clone()
    }
}

/// What the controller saw of the plugin's Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentView {
    /// Revision from the `berth.dev/revision` annotation.
    pub revision: Option<i64>,
    /// Permissions the running revision was rendered with.
    pub permissions: Option<Permissions>,
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// `status.replicas` (all pods, old and new).
    pub replicas: i32,
    /// `status.updatedReplicas`.
    pub updated_replicas: i32,
    /// `status.availableReplicas`.
    pub available_replicas: i32,
    /// The Deployment's `Progressing` condition says `ProgressDeadlineExceeded`.
    pub deadline_exceeded: bool,
}

impl DeploymentView {
    /// Reads the fields the plan needs.
    pub fn from_deployment(d: &Deployment) -> Self {
        let annotations = d.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key));
        let status = d.status.clone().unwrap_or_default();
        Self {
            revision: annotation(REVISION_ANNOTATION).and_then(|r| r.parse().ok()),
            permissions: annotation(PERMISSIONS_ANNOTATION)
                .and_then(|p| serde_json::from_str(p).ok()),
            spec_replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            generation: d.metadata.generation.unwrap_or_default(),
            observed_generation: status.observed_generation.unwrap_or_default(),
            replicas: status.replicas.unwrap_or_default(),
            updated_replicas: status.updated_replicas.unwrap_or_default(),
            available_replicas: status.available_replicas.unwrap_or_default(),
            deadline_exceeded: status.conditions.unwrap_or_default().iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            }),
        }
    }

    /// True when `revision` runs on `replicas` up-to-date, available pods and no old ones.
    pub fn rolled_out(&self, revision: i64, replicas: i32) -> bool {
        self.revision == Some(revision)
            && self.spec_replicas == replicas
            && self.observed_generation >= self.generation
            && self.updated_replicas == replicas
            && self.replicas == replicas
            && self.available_replicas >= replicas
    }
}

/// What the controller knows of a plugin named in `dependsOn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyState {
    /// Its phase, when it has a status.
    pub phase: Option<Phase>,
    /// Its `spec.version`.
    pub version: String,
}

/// Everything the plan reads.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The plugin, with the status the API server holds.
    pub plugin: &'a Plugin,
    /// Grants naming the plugin in its namespace.
    pub grants: &'a [&'a PluginGrant],
    /// The plugins it depends on, by name; absent ones do not exist.
    pub dependencies: &'a BTreeMap<String, DependencyState>,
    /// Its Deployment, if one exists.
    pub deployment: Option<&'a DeploymentView>,
    /// Now, for grant expiry and condition transition times.
    pub now: Timestamp,
    /// Plugins at or under this tier run without a grant.
    pub auto_approve: RiskTier,
    /// Cluster facts for rendering.
    pub options: &'a RenderOptions,
    /// [`validation_problems`] of this very spec, when the caller has them cached (a spec
    /// does not change within a `metadata.generation`); computed when `None`.
    pub validation: Option<&'a [String]>,
}

/// What to do with the plugin's workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Apply these objects; delete the Role and RoleBinding when `remove_rbac`.
    Apply {
        /// The desired objects.
        rendered: Box<Rendered>,
        /// The revision they run; its credential Secret must exist before they are applied.
        revision: i64,
        /// A Kubernetes permission was dropped: its Role and RoleBinding must go.
        remove_rbac: bool,
    },
    /// Leave whatever runs as it is.
    Keep,
    /// Stop it: delete the Deployment, Role and RoleBinding (its permissions are no longer
    /// granted).
    Remove,
    /// Nothing runs and nothing should.
    Nothing,
}

/// A Kubernetes Event to publish, on a phase transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Warning for phases that need attention.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub note: String,
}

/// A supply-chain decision to publish as an Event and write as an audit record, when the
/// result of the image check changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Warning for refusals and failures.
    pub warning: bool,
    /// CamelCase reason, e.g. `SignatureVerified`, `Unsigned`, `RegistryUnreachable`.
    pub reason: String,
    /// What was decided, about which image, and the fix.
    pub note: String,
    /// Audit record type ([`crate::audit::types`]).
    pub audit_type: &'static str,
    /// `success`, `denied` or `failure`.
    pub outcome: &'static str,
    /// Audit details: image, digest, revision, signer.
    pub details: serde_json::Value,
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do with the workload.
    pub workload: Workload,
    /// The status to report.
    pub status: PluginStatus,
    /// The Event to publish, when the phase changed.
    pub transition: Option<Transition>,
    /// When to look again.
    pub requeue_after: Duration,
    /// A revision that became Active without a known digest: the controller reads it from
    /// the pods and calls [`Plan::record_digest`].
    pub digest_wanted: Option<i64>,
    /// The revision whose credential the applied Deployment names: the controller reads its
    /// Secret, or mints a token and creates one, and calls [`Plan::record_credential`].
    pub credential_wanted: Option<i64>,
    /// Revisions whose pods are gone: their Secrets are deleted once the status without
    /// their digests is written.
    pub stale_credentials: Vec<i64>,
    /// The image check's result changed: an Event and an audit record.
    pub notice: Option<Notice>,
}

impl Plan {
    /// Records the digest the pods of `revision` run.
    pub fn record_digest(&mut self, revision: i64, digest: String) {
        if let Some(r) = self
            .status
            .revisions
            .iter_mut()
            .find(|r| r.revision == revision)
        {
            r.image_digest = Some(digest.clone());
        }
        self.status.image_digest = Some(digest);
        self.digest_wanted = None;
    }

    /// Records the digest (`sha256:HEX`) of the credential of `revision`, in the status and on
    /// the pod template of the Deployment to apply (a credential issued again restarts the pods).
    pub fn record_credential(&mut self, revision: i64, sha256: String) {
        match self
            .status
            .credentials
            .iter_mut()
            .find(|c| c.revision == revision)
        {
            Some(c) => c.sha256 = sha256.clone(),
            None => {
                self.status.credentials.push(PluginCredential {
                    revision,
                    sha256: sha256.clone(),
                });
                self.status.credentials.sort_by_key(|c| c.revision);
            }
        }
        if let Workload::Apply { rendered, .. } = &mut self.workload
            && let Some(template) = rendered
                .deployment
                .spec
                .as_mut()
                .and_then(|s| s.template.metadata.as_mut())
        {
            template
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CREDENTIAL_ANNOTATION.to_string(), sha256);
        }
        self.credential_wanted = None;
    }
}

/// One condition before merging with the previous status.
pub(crate) struct Cond {
    type_: &'static str,
    status: ConditionStatus,
    reason: String,
    message: String,
}

pub(crate) fn cond(
    type_: &'static str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
) -> Cond {
    Cond {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// The digest part of an image reference pinned with `@sha256:…`.
pub fn digest_of(image: &str) -> Option<String> {
    image.split_once('@').map(|(_, d)| d.to_string())
}

/// `image` pinned to `digest` (`repo@sha256:…`), dropping any tag.
pub fn pinned(image: &str, digest: Option<&str>) -> String {
    match (digest, image.split_once('@')) {
        (None, _) => image.to_string(),
        (Some(_), Some(_)) => image.to_string(),
        (Some(d), None) => {
            // A tag follows the last ':' after the last '/'; a registry port does not.
            let slash = image.rfind('/').map_or(0, |i| i + 1);
            let repo = match image[slash..].rfind(':') {
                Some(i) => &image[..slash + i],
                None => image,
            };
            format!("{repo}@{d}")
        }
    }
}

/// Every error `berth-api` validation finds in the plugin, plus what a cluster adds, one
/// line each. Empty when the spec is valid.
pub fn validation_problems(plugin: &Plugin) -> Vec<String> {
    let mut problems: Vec<String> = validate_plugin(plugin)
        .into_iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect();
    if plugin
        .name()
        .chars()
        .next()
        .is_some_and(|c| !c.is_ascii_lowercase())
    {
        problems.push(format!(
            "metadata.name: {:?} must start with a letter in a cluster, as Service names do (rename the plugin)",
            plugin.name()
        ));
    }
    problems
}

/// Plans one reconcile without a supply-chain check: tags run as given (`berth render`,
/// `--pin-digests=false`). Pure and deterministic for a given input.
pub fn plan(input: PlanInput<'_>) -> Plan {
    plan_with_image(input, None)
}

/// Plans one reconcile with what the registry said about `spec.image` (`None`: digests are
/// not resolved). A revision is an (image, version, digest) triple: a tag that names a new
/// digest is a new revision, approved and rolled out like any other, while the old one keeps
/// serving. A refused image, or a new one that could not be checked, starts nothing and
/// stops nothing. Pure and deterministic for a given input.
pub fn plan_with_image(input: PlanInput<'_>, check: Option<&ImageCheck>) -> Plan {
    let mut plan = plan_workload(input, check);
    plan_credentials(&mut plan, input);
    if let Some(check) = check {
        plan_verification(&mut plan, input, check);
    }
    plan
}

/// `status.verification`, the `Verified` condition (after `Validated`), the Notice when the
/// result changed, and a sooner look when the registry could not answer.
fn plan_verification(plan: &mut Plan, input: PlanInput<'_>, check: &ImageCheck) {
    let previous = input.plugin.status.as_ref();
    let before = previous.and_then(|s| s.verification.as_ref());
    let stamp = Timestamp::from_second(input.now.as_second())
        .unwrap_or(input.now)
        .to_string();
    let verification = match verification_of(check) {
        None => before.cloned(),
        Some(mut v) => {
            v.checked_at = match before {
                Some(b) if same_result(b, &v) => b.checked_at.clone(),
                _ => Some(stamp),
            };
            Some(v)
        }
    };
    let verified = merge_conditions(
        previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        vec![verified_condition(check)],
        input.now,
        input.plugin.metadata.generation,
    );
    let at = plan
        .status
        .conditions
        .iter()
        .position(|c| c.type_ == VALIDATED)
        .map_or(0, |i| i + 1);
    for (offset, c) in verified.into_iter().enumerate() {
        plan.status.conditions.insert(at + offset, c);
    }
    let changed = match (&verification, before) {
        (Some(v), Some(b)) => !same_result(b, v),
        (Some(_), None) => true,
        _ => false,
    };
    if changed && !matches!(check.outcome, CheckOutcome::Skipped { .. }) {
        plan.notice = Some(notice(check, &plan.status, input.plugin));
    }
    plan.status.verification = verification;
    if matches!(check.outcome, CheckOutcome::Unknown { .. }) {
        plan.requeue_after = plan.requeue_after.min(CHECK_RETRY);
    }
}

/// Equal but for when it was checked.
fn same_result(a: &ImageVerification, b: &ImageVerification) -> bool {
    ImageVerification {
        checked_at: None,
        ..a.clone()
    } == ImageVerification {
        checked_at: None,
        ..b.clone()
    }
}

/// What `status.verification` says about a check; `None` for one that was not made.
fn verification_of(check: &ImageCheck) -> Option<ImageVerification> {
    let base = ImageVerification {
        image: check.image.clone(),
        digest: check.digest().map(str::to_string),
        signature_required: check.signature_required,
        verified: ConditionStatus::Unknown,
        signed_by: None,
        reason: None,
        message: None,
        checked_at: None,
    };
    Some(match &check.outcome {
        CheckOutcome::Accepted { signature, .. } => ImageVerification {
            verified: ConditionStatus::True,
            signed_by: signature.as_ref().map(|s| s.key.clone()),
            message: Some(verified_condition(check).message),
            ..base
        },
        CheckOutcome::Refused {
            reason, message, ..
        } => ImageVerification {
            verified: ConditionStatus::False,
            reason: Some(reason.clone()),
            message: Some(message.clone()),
            ..base
        },
        CheckOutcome::Unknown {
            reason, message, ..
        } => ImageVerification {
            reason: Some(reason.clone()),
            message: Some(message.clone()),
            ..base
        },
        CheckOutcome::Skipped { .. } => return None,
    })
}

/// The `Verified` condition of a check.
fn verified_condition(check: &ImageCheck) -> Cond {
    match &check.outcome {
        CheckOutcome::Accepted {
            digest,
            signature: Some(s),
        } => cond(
            VERIFIED,
            ConditionStatus::True,
            reasons::SIGNED,
            format!(
                "{} is signed by {} ({}) and its signed dev.berth.manifest covers spec.permissions",
                pinned(&check.image, Some(digest)),
                s.key,
                s.fingerprint
            ),
        ),
        CheckOutcome::Accepted {
            digest,
            signature: None,
        } => cond(
            VERIFIED,
            ConditionStatus::True,
            reasons::DIGEST_RESOLVED,
            format!(
                "spec.image {} is {digest} and runs pinned to it; this plugin need not be signed",
                check.image
            ),
        ),
        CheckOutcome::Refused {
            reason, message, ..
        } => cond(VERIFIED, ConditionStatus::False, reason, message.clone()),
        CheckOutcome::Unknown {
            reason, message, ..
        } => cond(VERIFIED, ConditionStatus::Unknown, reason, message.clone()),
        CheckOutcome::Skipped { message } => cond(
            VERIFIED,
            ConditionStatus::Unknown,
            reasons::NOT_CHECKED,
            message.clone(),
        ),
    }
}

/// The Event and audit record of a changed check result.
fn notice(check: &ImageCheck, status: &PluginStatus, plugin: &Plugin) -> Notice {
    let digest = check.digest();
    let revision = digest.and_then(|d| {
        status
            .revisions
            .iter()
            .rev()
            .find(|r| {
                r.image_digest.as_deref() == Some(d)
                    && r.image.as_deref() == Some(check.image.as_str())
            })
            .map(|r| r.revision)
    });
    let mut details = serde_json::json!({
        "namespace": plugin.metadata.namespace,
        "image": check.image,
        "digest": digest,
        "revision": revision,
        "signatureRequired": check.signature_required,
    });
    let (warning, reason, note, audit_type, outcome) = match &check.outcome {
        CheckOutcome::Accepted {
            digest,
            signature: Some(s),
        } => {
            details["signedBy"] = s.key.clone().into();
            details["fingerprint"] = s.fingerprint.clone().into();
            (
                false,
                "SignatureVerified".to_string(),
                format!(
                    "{} is signed by {} and its signed manifest covers spec.permissions{}",
                    pinned(&check.image, Some(digest)),
                    s.key,
                    revision
                        .map(|n| format!("; revision {n}"))
                        .unwrap_or_default()
                ),
                audit_types::SECURITY,
                "success",
            )
        }
        CheckOutcome::Accepted {
            digest,
            signature: None,
        } => (
            false,
            "ImagePinned".to_string(),
            format!(
                "spec.image {} resolved to {digest}{}",
                check.image,
                revision
                    .map(|n| format!("; revision {n} runs it pinned"))
                    .unwrap_or_default()
            ),
            audit_types::LIFECYCLE,
            "success",
        ),
        CheckOutcome::Refused {
            reason, message, ..
        }
        | CheckOutcome::Unknown {
            reason, message, ..
        } => {
            details["reason"] = reason.clone().into();
            details["message"] = message.clone().into();
            // A refusal is a security decision; no usable answer is a lifecycle failure.
            let (audit_type, outcome) = if matches!(check.outcome, CheckOutcome::Refused { .. }) {
                (audit_types::SECURITY, "denied")
            } else {
                (audit_types::LIFECYCLE, "failure")
            };
            (true, reason.clone(), message.clone(), audit_type, outcome)
        }
        CheckOutcome::Skipped { message } => (
            false,
            reasons::NOT_CHECKED.to_string(),
            message.clone(),
            audit_types::LIFECYCLE,
            "failure",
        ),
    };
    Notice {
        warning,
        reason,
        note,
        audit_type,
        outcome,
        details,
    }
}

/// Which credentials the pods may carry. The applied revision's is wanted; while a rollout
/// is under way (or the Deployment is not applied) every credential of the last status stays
/// accepted, because pods of older revisions may still run; once the applied revision runs
/// on every wanted replica and no older pod is left, the others are dropped.
fn plan_credentials(plan: &mut Plan, input: PlanInput<'_>) {
    let previous = input
        .plugin
        .status
        .as_ref()
        .map(|s| s.credentials.as_slice())
        .unwrap_or_default();
    plan.status.credentials = previous.to_vec();
    if let Workload::Apply { revision, .. } = &plan.workload {
        let revision = *revision;
        plan.credential_wanted = Some(revision);
        let wanted = if input.plugin.spec.enabled {
            input.plugin.spec.replicas
        } else {
            0
        };
        if input
            .deployment
            .is_some_and(|d| d.rolled_out(revision, wanted))
        {
            plan.status.credentials.retain(|c| c.revision == revision);
        }
    }
    plan.stale_credentials = previous
        .iter()
        .map(|c| c.revision)
        .filter(|r| !plan.status.credentials.iter().any(|c| c.revision == *r))
        .collect();
}

fn plan_workload(input: PlanInput<'_>, check: Option<&ImageCheck>) -> Plan {
    let PlanInput {
        plugin,
        grants,
        dependencies,
        deployment,
        now,
        auto_approve,
        options,
        validation,
    } = input;
    let spec = &plugin.spec;
    let previous = plugin.status.clone().unwrap_or_default();
    let generation = plugin.metadata.generation;
    // `performance` (the benchmark controller) and `liveTier` (the gateway) have writers of
    // their own: the plan neither carries nor clears them (see `own_fields`).
    let mut status = PluginStatus {
        observed_generation: generation,
        revisions: previous.revisions.clone(),
        ..PluginStatus::default()
    };
    let available = available_condition(deployment);

    // Validation first: an invalid spec cannot be rendered, and what runs keeps running.
    let problems: Vec<String> = match validation {
        Some(known) => known.to_vec(),
        None => validation_problems(plugin),
    };
    let decision = decide(&spec.permissions, &spec.hooks, grants, now, auto_approve);
    status.risk = Some(decision.risk.clone());
    if !problems.is_empty() {
        status.phase = Some(Phase::Failed);
        let unknown = |t| {
            cond(
                t,
                ConditionStatus::Unknown,
                "NotValidated",
                "the spec is not valid",
            )
        };
        let conditions = vec![
            cond(
                VALIDATED,
                ConditionStatus::False,
                "Invalid",
                problems.join("; "),
            ),
            unknown(PERMISSIONS_GRANTED),
            unknown(DEPENDENCIES_READY),
            available,
            unknown(PROGRESSING),
        ];
        return finish(
            plugin,
            &previous,
            status,
            conditions,
            Workload::Keep,
            now,
            RESYNC,
            None,
        );
    }
    let validated = cond(
        VALIDATED,
        ConditionStatus::True,
        "Valid",
        "the spec is valid",
    );

    // Approval of what the spec asks for now.
    let granted_cond = match &decision.approval {
        Approval::AutoApproved => cond(
            PERMISSIONS_GRANTED,
            ConditionStatus::True,
            "AutoApproved",
            format!(
                "risk {} ({}) is at or under the auto-approve tier {}",
                decision.risk.tier, decision.risk.score, auto_approve
            ),
        ),
        Approval::Granted { grants } => cond(
            PERMISSIONS_GRANTED,
            ConditionStatus::True,
            "Granted",
            format!("covered by PluginGrant {}", grants.join(", ")),
        ),
        Approval::NotApproved { .. } => cond(
            PERMISSIONS_GRANTED,
            ConditionStatus::False,
            "ApprovalRequired",
            "",
        ),
    };
    let mut requeue = RESYNC;
    if let Some(expiry) = decision.next_expiry {
        requeue = requeue.min(until(now, expiry));
    }

    let deps = dependency_condition(plugin, dependencies);
    let deps_ready = deps.status == ConditionStatus::True;

    // An image that was refused, or whose new reference could not be checked, starts nothing
    // and stops nothing: what runs keeps running (unless its own grant is gone).
    let same_spec = status.revisions.last().is_some_and(|last| {
        last.image.as_deref() == Some(&spec.image) && last.version == spec.version
    });
    let blocked = match check.map(|c| &c.outcome) {
        Some(CheckOutcome::Refused { message, .. }) => Some((ConditionStatus::False, message)),
        Some(CheckOutcome::Unknown { message, .. } | CheckOutcome::Skipped { message })
            if !same_spec =>
        {
            Some((ConditionStatus::Unknown, message))
        }
        _ => None,
    };
    if let Some((verdict, why)) = blocked {
        // A Deployment without the permissions annotation is judged by the spec's request:
        // a failed check must not be what stops it.
        let serving_approved = deployment.is_some_and(|d| {
            let old = d.permissions.as_ref().unwrap_or(&spec.permissions);
            let old_decision = decide(old, &spec.hooks, grants, now, auto_approve);
            if let Some(expiry) = old_decision.next_expiry {
                requeue = requeue.min(until(now, expiry));
            }
            old_decision.approval.is_approved()
        });
        let serving_revision = deployment.and_then(|d| d.revision);
        let (workload, tail) = match deployment {
            None => (Workload::Nothing, "; nothing runs".to_string()),
            Some(_) if !spec.enabled => (
                Workload::Remove,
                "; spec.enabled is false, so the running revision was stopped".to_string(),
            ),
            Some(_) if !serving_approved => (
                Workload::Remove,
                "; the running revision was stopped: its permissions are no longer granted"
                    .to_string(),
            ),
            Some(_) => (
                Workload::Keep,
                match serving_revision {
                    Some(n) => format!("; revision {n} keeps serving"),
                    None => "; the running revision keeps serving".to_string(),
                },
            ),
        };
        let keeps = matches!(workload, Workload::Keep);
        if keeps {
            status.endpoint = Some(endpoint(plugin, options));
            status.image_digest = serving_digest(&status.revisions, serving_revision);
        }
        status.phase = Some(if !spec.enabled {
            Phase::Disabled
        } else if keeps && available.status == ConditionStatus::True {
            Phase::Degraded
        } else if verdict == ConditionStatus::False {
            Phase::Failed
        } else {
            Phase::Pending
        });
        let available = if keeps {
            available
        } else {
            cond(
                AVAILABLE,
                ConditionStatus::False,
                if deployment.is_some() {
                    "Stopped"
                } else {
                    "NotDeployed"
                },
                "no pod of this plugin runs",
            )
        };
        let reason = if verdict == ConditionStatus::False {
            IMAGE_REFUSED
        } else {
            IMAGE_NOT_CHECKED
        };
        let conditions = vec![
            validated,
            not_approved_message(granted_cond, &decision.approval),
            deps,
            available,
            cond(
                PROGRESSING,
                ConditionStatus::False,
                reason,
                format!("no new revision starts: {why}{tail}"),
            ),
        ];
        return finish(
            plugin, &previous, status, conditions, workload, now, requeue, None,
        );
    }

    // The revision the spec asks for: a new one whenever the image, the version or the
    // digest the image's tag names changes.
    let accepted = check.and_then(ImageCheck::accepted_digest);
    let desired_index = match status.revisions.last_mut() {
        Some(last)
            if last.image.as_deref() == Some(&spec.image)
                && last.version == spec.version
                && match (accepted, last.image_digest.as_deref()) {
                    (Some(now), Some(before)) => now == before,
                    _ => true,
                } =>
        {
            // A revision from before digests were resolved learns its digest.
            if last.image_digest.is_none() {
                last.image_digest = accepted.map(str::to_string);
            }
            status.revisions.len() - 1
        }
        last => {
            let number = last.map_or(1, |r| r.revision + 1);
            status.revisions.push(Revision {
                revision: number,
                version: spec.version.clone(),
                image: Some(spec.image.clone()),
                image_digest: accepted
                    .map(str::to_string)
                    .or_else(|| digest_of(&spec.image)),
                outcome: RevisionOutcome::Progressing,
                message: None,
            });
            status.revisions.len() - 1
        }
    };
    let desired_number = status.revisions[desired_index].revision;
    let wanted_replicas = if spec.enabled { spec.replicas } else { 0 };

    // A rollout past its deadline is rolled back to the last revision that served.
    let mut rollback_note = None;
    if let Some(d) = deployment
        && d.revision == Some(desired_number)
        && d.deadline_exceeded
        && status.revisions[desired_index].outcome != RevisionOutcome::RolledBack
    {
        let message = format!(
            "revision {desired_number} ({}) did not become available within {}s",
            spec.image, options.progress_deadline_seconds
        );
        let r = &mut status.revisions[desired_index];
        r.outcome = RevisionOutcome::RolledBack;
        r.message = Some(message.clone());
        rollback_note = Some(message);
    }
    let rolled_back = status.revisions[desired_index].outcome == RevisionOutcome::RolledBack;
    let last_good = status.revisions[..desired_index]
        .iter()
        .rev()
        .find(|r| {
            matches!(
                r.outcome,
                RevisionOutcome::Active | RevisionOutcome::Superseded
            )
        })
        .cloned();
    let target: Option<RevisionToRun> = if rolled_back {
        last_good.as_ref().map(|r| RevisionToRun {
            number: r.revision,
            image: pinned(
                r.image.as_deref().unwrap_or(&spec.image),
                r.image_digest.as_deref(),
            ),
            version: r.version.clone(),
        })
    } else if check.is_some() {
        // Digests are resolved: the revision runs the digest it was checked as.
        Some(RevisionToRun {
            number: desired_number,
            image: pinned(
                &spec.image,
                status.revisions[desired_index].image_digest.as_deref(),
            ),
            version: spec.version.clone(),
        })
    } else {
        Some(RevisionToRun::of_spec(plugin, desired_number))
    };

    if !spec.enabled {
        status.phase = Some(Phase::Disabled);
        let workload = match (&decision.approval, &target) {
            (a, Some(t)) if a.is_approved() => apply(plugin, t, deployment, options),
            _ if deployment.is_some() => Workload::Remove,
            _ => Workload::Nothing,
        };
        if matches!(workload, Workload::Apply { .. }) {
            status.endpoint = Some(endpoint(plugin, options));
        }
        let conditions = vec![
            validated,
            not_approved_message(granted_cond, &decision.approval),
            deps,
            cond(
                AVAILABLE,
                ConditionStatus::False,
                "Disabled",
                "spec.enabled is false",
            ),
            cond(
                PROGRESSING,
                ConditionStatus::False,
                "Disabled",
                "spec.enabled is false",
            ),
        ];
        return finish(
            plugin, &previous, status, conditions, workload, now, requeue, None,
        );
    }

    if let Approval::NotApproved { missing, expired } = &decision.approval {
        // What runs keeps running while its own permissions are still granted.
        let serving_approved = deployment.is_some_and(|d| {
            d.permissions.as_ref().is_some_and(|old| {
                let old_decision = decide(old, &spec.hooks, grants, now, auto_approve);
                if let Some(expiry) = old_decision.next_expiry {
                    requeue = requeue.min(until(now, expiry));
                }
                old_decision.approval.is_approved()
            })
        });
        let serving_revision = deployment.and_then(|d| d.revision);
        let (workload, reason, tail) = if serving_approved {
            let tail = match serving_revision {
                Some(n) => format!("; revision {n} keeps serving with the permissions it had"),
                None => "; the running revision keeps serving".into(),
            };
            (Workload::Keep, "PermissionsWidened", tail)
        } else if deployment.is_some() {
            let reason = if expired.is_empty() {
                "ApprovalRequired"
            } else {
                "GrantExpired"
            };
            (
                Workload::Remove,
                reason,
                "; the running revision was stopped".to_string(),
            )
        } else if !expired.is_empty() {
            (Workload::Nothing, "GrantExpired", String::new())
        } else {
            (Workload::Nothing, "ApprovalRequired", String::new())
        };
        if serving_revision != Some(desired_number) || !matches!(workload, Workload::Keep) {
            let r = &mut status.revisions[desired_index];
            if r.outcome != RevisionOutcome::RolledBack {
                r.outcome = RevisionOutcome::AwaitingApproval;
            }
        }
        let expired_note = if expired.is_empty() {
            String::new()
        } else {
            format!(" (expired: PluginGrant {})", expired.join(", "))
        };
        let granted = cond(
            PERMISSIONS_GRANTED,
            ConditionStatus::False,
            reason,
            format!(
                "risk {} ({}) is above the auto-approve tier {} and no PluginGrant covers: {}{}{}",
                decision.risk.tier,
                decision.risk.score,
                auto_approve,
                describe_missing(missing),
                expired_note,
                tail
            ),
        );
        if matches!(workload, Workload::Keep) {
            status.endpoint = Some(endpoint(plugin, options));
            status.image_digest = serving_digest(&status.revisions, serving_revision);
        }
        status.phase = Some(Phase::AwaitingApproval);
        let available = match workload {
            Workload::Keep => available,
            _ => cond(
                AVAILABLE,
                ConditionStatus::False,
                "AwaitingApproval",
                "nothing runs until the permissions are granted",
            ),
        };
        let conditions = vec![
            validated,
            granted,
            deps,
            available,
            cond(
                PROGRESSING,
                ConditionStatus::False,
                "AwaitingApproval",
                "waiting for a PluginGrant",
            ),
        ];
        return finish(
            plugin, &previous, status, conditions, workload, now, requeue, None,
        );
    }

    if !deps_ready {
        let serving = deployment.is_some();
        status.phase = Some(if serving && available.status == ConditionStatus::True {
            Phase::Degraded
        } else {
            Phase::Pending
        });
        if serving {
            status.endpoint = Some(endpoint(plugin, options));
            status.image_digest =
                serving_digest(&status.revisions, deployment.and_then(|d| d.revision));
        }
        let conditions = vec![
            validated,
            granted_cond,
            deps,
            available,
            cond(
                PROGRESSING,
                ConditionStatus::False,
                "WaitingForDependencies",
                "no new revision starts until the dependencies are Ready",
            ),
        ];
        let workload = if serving {
            Workload::Keep
        } else {
            Workload::Nothing
        };
        return finish(
            plugin, &previous, status, conditions, workload, now, requeue, None,
        );
    }

    let Some(target) = target else {
        // Rolled back with nothing to roll back to.
        status.phase = Some(Phase::Failed);
        let conditions = vec![
            validated,
            granted_cond,
            deps,
            available,
            cond(
                PROGRESSING,
                ConditionStatus::False,
                "ProgressDeadlineExceeded",
                format!(
                    "{}; there is no earlier revision to roll back to: fix the image or the plugin",
                    status.revisions[desired_index]
                        .message
                        .clone()
                        .unwrap_or_default()
                ),
            ),
        ];
        return finish(
            plugin,
            &previous,
            status,
            conditions,
            Workload::Keep,
            now,
            requeue,
            None,
        );
    };

    let workload = apply(plugin, &target, deployment, options);
    status.endpoint = Some(endpoint(plugin, options));
    let done = deployment.is_some_and(|d| d.rolled_out(target.number, wanted_replicas));
    let mut digest_wanted = None;
    if done {
        for r in status.revisions.iter_mut() {
            if r.revision == target.number {
                r.outcome = RevisionOutcome::Active;
                r.message = None;
                if r.image_digest.is_none() {
                    r.image_digest = digest_of(&target.image);
                }
                if r.image_digest.is_none() {
                    digest_wanted = Some(r.revision);
                }
            } else if r.outcome == RevisionOutcome::Active {
                r.outcome = RevisionOutcome::Superseded;
            }
        }
    } else if !rolled_back {
        let r = &mut status.revisions[desired_index];
        r.outcome = RevisionOutcome::Progressing;
    }
    status.image_digest = serving_digest(&status.revisions, Some(target.number));

    let (phase, progressing) = if rolled_back {
        let message = status.revisions[desired_index]
            .message
            .clone()
            .unwrap_or_default();
        (
            Phase::Degraded,
            cond(
                PROGRESSING,
                ConditionStatus::False,
                "ProgressDeadlineExceeded",
                format!(
                    "{message}; rolled back to revision {} ({})",
                    target.number, target.image
                ),
            ),
        )
    } else if done {
        (
            Phase::Ready,
            cond(
                PROGRESSING,
                ConditionStatus::False,
                "RolloutComplete",
                format!(
                    "revision {} ({}) is rolled out",
                    target.number, target.image
                ),
            ),
        )
    } else {
        requeue = requeue.min(ROLLOUT_POLL);
        (
            Phase::Deploying,
            cond(
                PROGRESSING,
                ConditionStatus::True,
                "RollingOut",
                format!("rolling out revision {} ({})", target.number, target.image),
            ),
        )
    };
    status.phase = Some(phase);
    let conditions = vec![validated, granted_cond, deps, available, progressing];
    let mut plan = finish(
        plugin,
        &previous,
        status,
        conditions,
        workload,
        now,
        requeue,
        rollback_note,
    );
    plan.digest_wanted = digest_wanted;
    plan
}

fn apply(
    plugin: &Plugin,
    target: &RevisionToRun,
    deployment: Option<&DeploymentView>,
    options: &RenderOptions,
) -> Workload {
    match render(RenderInput {
        plugin,
        granted: &plugin.spec.permissions,
        revision: target,
        options,
    }) {
        Ok(rendered) => {
            let remove_rbac = plugin.spec.permissions.kubernetes.is_empty()
                && deployment
                    .and_then(|d| d.permissions.as_ref())
                    .is_some_and(|p| !p.kubernetes.is_empty());
            Workload::Apply {
                rendered: Box::new(rendered),
                revision: target.number,
                remove_rbac,
            }
        }
        // Validation has already rejected limits that do not parse.
        Err(_) => Workload::Keep,
    }
}

fn not_approved_message(mut c: Cond, approval: &Approval) -> Cond {
    if let Approval::NotApproved { missing, .. } = approval {
        c.message = format!("no PluginGrant covers: {}", describe_missing(missing));
    }
    c
}

fn serving_digest(revisions: &[Revision], serving: Option<i64>) -> Option<String> {
    let n = serving?;
    revisions
        .iter()
        .find(|r| r.revision == n)
        .and_then(|r| r.image_digest.clone())
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let secs = at.as_second().saturating_sub(now.as_second()).max(1);
    Duration::from_secs(secs as u64)
}

fn available_condition(deployment: Option<&DeploymentView>) -> Cond {
    match deployment {
        None => cond(
            AVAILABLE,
            ConditionStatus::False,
            "NotDeployed",
            "no Deployment exists",
        ),
        Some(d) if d.spec_replicas == 0 => cond(
            AVAILABLE,
            ConditionStatus::False,
            "ScaledToZero",
            "spec.replicas is 0",
        ),
        Some(d) if d.available_replicas > 0 => cond(
            AVAILABLE,
            ConditionStatus::True,
            "PodsAvailable",
            format!(
                "{} of {} pods available",
                d.available_replicas, d.spec_replicas
            ),
        ),
        Some(d) => cond(
            AVAILABLE,
            ConditionStatus::False,
            "NoPodsAvailable",
            format!("0 of {} pods available", d.spec_replicas),
        ),
    }
}

fn dependency_condition(plugin: &Plugin, dependencies: &BTreeMap<String, DependencyState>) -> Cond {
    if plugin.spec.depends_on.is_empty() {
        return cond(
            DEPENDENCIES_READY,
            ConditionStatus::True,
            "NoDependencies",
            "the plugin depends on no other plugin",
        );
    }
    let mut waiting = Vec::new();
    for dep in &plugin.spec.depends_on {
        let Some(state) = dependencies.get(&dep.name) else {
            waiting.push(format!("{} (not found)", dep.name));
            continue;
        };
        if let Some(range) = &dep.version
            && let (Ok(req), Ok(version)) = (
                semver::VersionReq::parse(range),
                semver::Version::parse(&state.version),
            )
            && !req.matches(&version)
        {
            waiting.push(format!(
                "{} (version {} does not satisfy {range:?})",
                dep.name, state.version
            ));
            continue;
        }
        match state.phase {
            Some(Phase::Ready) => {}
            Some(phase) => waiting.push(format!("{} (phase {phase})", dep.name)),
            None => waiting.push(format!("{} (no status yet)", dep.name)),
        }
    }
    if waiting.is_empty() {
        cond(
            DEPENDENCIES_READY,
            ConditionStatus::True,
            "DependenciesReady",
            "every dependency is Ready",
        )
    } else {
        cond(
            DEPENDENCIES_READY,
            ConditionStatus::False,
            "DependenciesNotReady",
            format!("waiting for {}", waiting.join(", ")),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    plugin: &Plugin,
    previous: &PluginStatus,
    mut status: PluginStatus,
    conditions: Vec<Cond>,
    workload: Workload,
    now: Timestamp,
    requeue_after: Duration,
    rollback_note: Option<String>,
) -> Plan {
    let generation = plugin.metadata.generation;
    status.conditions = merge_conditions(&previous.conditions, conditions, now, generation);
    if status.revisions.len() > MAX_REVISIONS {
        let extra = status.revisions.len() - MAX_REVISIONS;
        status.revisions.drain(..extra);
    }
    let transition = transition(previous.phase, &status, rollback_note);
    Plan {
        workload,
        status,
        transition,
        requeue_after,
        digest_wanted: None,
        credential_wanted: None,
        stale_credentials: Vec::new(),
        notice: None,
    }
}

/// Keeps `lastTransitionTime` of a condition whose status did not change, so the same input
/// gives the same status and the controller does not wake itself up.
pub(crate) fn merge_conditions(
    previous: &[Condition],
    conditions: Vec<Cond>,
    now: Timestamp,
    generation: Option<i64>,
) -> Vec<Condition> {
    let stamp = Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    conditions
        .into_iter()
        .map(|c| {
            let before = previous.iter().find(|p| p.type_ == c.type_);
            let last_transition_time = match before {
                Some(b) if b.status == c.status && b.last_transition_time.is_some() => {
                    b.last_transition_time.clone()
                }
                _ => Some(stamp.clone()),
            };
            Condition {
                type_: c.type_.to_string(),
                status: c.status,
                reason: Some(c.reason),
                message: (!c.message.is_empty()).then_some(c.message),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

fn transition(
    before: Option<Phase>,
    status: &PluginStatus,
    rollback_note: Option<String>,
) -> Option<Transition> {
    let phase = status.phase?;
    if let Some(note) = rollback_note {
        return Some(Transition {
            warning: true,
            reason: "RolledBack".into(),
            note,
        });
    }
    if before == Some(phase) {
        return None;
    }
    let key = match phase {
        Phase::Failed => VALIDATED,
        Phase::AwaitingApproval => PERMISSIONS_GRANTED,
        Phase::Pending => DEPENDENCIES_READY,
        Phase::Disabled => AVAILABLE,
        _ => PROGRESSING,
    };
    let failed_validation = status
        .conditions
        .iter()
        .any(|c| c.type_ == VALIDATED && c.status == ConditionStatus::False);
    // A plugin held back by its image says why in Progressing, whatever its phase.
    let held_by_image = status.conditions.iter().any(|c| {
        c.type_ == PROGRESSING
            && matches!(c.reason.as_deref(), Some(IMAGE_REFUSED | IMAGE_NOT_CHECKED))
    });
    let key = if (phase == Phase::Failed && !failed_validation)
        || (held_by_image && phase != Phase::Disabled)
    {
        PROGRESSING
    } else {
        key
    };
    let note = status
        .conditions
        .iter()
        .find(|c| c.type_ == key)
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    Some(Transition {
        warning: matches!(
            phase,
            Phase::Failed | Phase::AwaitingApproval | Phase::Degraded
        ),
        reason: phase.as_str().to_string(),
        note,
    })
}

#[cfg(test)]
mod tests;
