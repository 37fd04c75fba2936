//! PluginBenchmark reconcile scenarios against a mocked API server: every call, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::bench::{AddedTime, Latency, LoadModel};
use berth_api::{
    BenchReport, BenchmarkPhase, ConditionStatus, Phase, Plugin, PluginBenchmark,
    PluginBenchmarkStatus, PluginStatus, Tier, TierThresholds, TierVerdict,
};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use crate::benchmark::{
    BENCH_FIELD_MANAGER, BenchmarkContext, COMPLETE, PENDING_POLL, RUNNING_POLL, reconcile,
};
use crate::fixtures::{ApiServerVerifier, Expect, NOW, Reply, Seen, fill_plugins};

const NS: &str = "default";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const PODS: &str = "/api/v1/namespaces/default/pods";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const PLUGINS: &str = "/apis/berth.dev/v1alpha1/namespaces/default/plugins";
const BENCHMARKS: &str = "/apis/berth.dev/v1alpha1/namespaces/default/pluginbenchmarks";
const JOB: &str = "nightly-bench-0b1c2d3e";

fn calculator(phase: Phase) -> Plugin {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": "calculator", "namespace": NS, "uid": "uid-calculator"},
        "spec": {
            "image": "berth/calculator:0.1.0",
            "version": "0.1.0",
            "capabilities": [
                {"name": "evaluate", "examples": [{"input": {"expression": "1+1"}}]},
                {"name": "bare"}
            ]
        },
        "status": {"phase": phase}
    }))
    .unwrap()
}

fn benchmark(spec: Value) -> PluginBenchmark {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "PluginBenchmark",
        "metadata": {
            "name": "nightly", "namespace": NS, "uid": "0b1c2d3e-0000-4000-8000-000000000000",
            "generation": 1, "resourceVersion": "7"
        },
        "spec": spec,
    }))
    .unwrap()
}

fn running(b: PluginBenchmark) -> PluginBenchmark {
    let mut b = b;
    b.status = Some(PluginBenchmarkStatus {
        phase: Some(BenchmarkPhase::Running),
        job_name: Some(JOB.into()),
        started_at: Some(NOW.into()),
        observed_generation: Some(1),
        ..PluginBenchmarkStatus::default()
    });
    b
}

fn report() -> BenchReport {
    BenchReport {
        plugin: "calculator".into(),
        version: Some("0.1.0".into()),
        capabilities: vec!["evaluate".into()],
        gateway: "http://berth-gateway.berth-system.svc:8080".into(),
        started_at: "2026-03-01T11:59:00Z".into(),
        load: LoadModel::Closed { concurrency: 4 },
        warmup_seconds: 5.0,
        duration_seconds: 30.0,
        requests: 9000,
        throughput: 300.0,
        errors: BTreeMap::new(),
        error_ratio: 0.0,
        latency: Latency {
            p50_ms: 2.5,
            p90_ms: 4.0,
            p99_ms: 9.0,
            max_ms: 20.0,
            mean_ms: 3.0,
        },
        gateway_view: None,
        added: AddedTime::default(),
        resources: None,
        thresholds: TierThresholds::default(),
        verdict: TierVerdict {
            tier: Tier::Platinum,
            reasons: Vec::new(),
        },
        timeline: Vec::new(),
        distribution: Vec::new(),
        late_sends: None,
    }
}

fn job(condition: &str, reason: Option<&str>, message: Option<&str>) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": JOB, "namespace": NS},
        "status": {"conditions": [
            {"type": condition, "status": "True", "reason": reason, "message": message}
        ]}
    })
}

fn pods_with_message(message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {},
        "items": [{
            "metadata": {"name": format!("{JOB}-x1"), "namespace": NS},
            "status": {"containerStatuses": [{
                "name": "bench", "image": "berth/berth:latest", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": message}}
            }]}
        }]
    })
}

fn status_patch(b: &PluginBenchmark) -> Expect {
    let mut e = Expect::apply(format!("{BENCHMARKS}/nightly/status"));
    e.reply = Reply::WithStatus(serde_json::to_value(b).unwrap());
    e
}

async fn reconcile_with(
    b: &PluginBenchmark,
    plugins: &[&Plugin],
    expected: Vec<Expect>,
) -> (Action, Vec<Seen>) {
    let (ctx, verifier, mut writer): (Arc<BenchmarkContext>, ApiServerVerifier, _) =
        BenchmarkContext::test();
    fill_plugins(&mut writer, plugins);
    let server = verifier.run(expected);
    let result = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(b.clone()), ctx))
        .await
        .expect("reconcile made a call nobody answered, or hung");
    let seen = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("verifier finished")
        .expect("every expected call was made");
    (result.expect("reconcile succeeds"), seen)
}

fn status_of(seen: &[Seen]) -> PluginBenchmarkStatus {
    let patch = seen
        .iter()
        .find(|s| s.path.starts_with(BENCHMARKS) && s.path.ends_with("/status"))
        .expect("a benchmark status patch");
    assert_eq!(patch.body["kind"], "PluginBenchmark");
    serde_json::from_value(patch.body["status"].clone()).unwrap()
}

fn event_of(seen: &[Seen]) -> &Value {
    &seen
        .iter()
        .find(|s| s.path.ends_with("/events"))
        .expect("an Event")
        .body
}

#[tokio::test]
async fn a_new_benchmark_starts_a_hardened_job_and_reports_running() {
    let b = benchmark(json!({"plugin": "calculator", "capabilities": ["evaluate"]}));
    let p = calculator(Phase::Ready);
    let (action, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(Method::GET, format!("{JOBS}/{JOB}"), Reply::Error(404)),
            Expect::new(
                Method::GET,
                format!("{SECRETS}/berth-bench-token"),
                Reply::Json(json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "berth-bench-token", "namespace": NS}
                })),
            ),
            Expect::apply(format!("{JOBS}/{JOB}")),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    assert_eq!(action, Action::requeue(RUNNING_POLL));
    let job = &seen[2].body;
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["kind"],
        "PluginBenchmark"
    );
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["uid"],
        "0b1c2d3e-0000-4000-8000-000000000000"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[..3], &["bench", "calculator", "evaluate"]);
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Running));
    assert_eq!(status.job_name.as_deref(), Some(JOB));
    assert_eq!(status.started_at.as_deref(), Some(NOW));
    assert_eq!(event_of(&seen)["reason"], "BenchmarkStarted");
}

#[tokio::test]
async fn a_succeeded_job_fills_the_status_and_the_plugin_performance() {
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let p = calculator(Phase::Ready);
    let mut plugin_patch = Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(serde_json::to_value(&p).unwrap()),
    );
    plugin_patch.query_contains = &["fieldManager=berth-benchmark", "force=true"];
    let message = serde_json::to_string(&report()).unwrap();
    let (action, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(
                Method::GET,
                format!("{JOBS}/{JOB}"),
                Reply::Json(job("Complete", None, None)),
            ),
            Expect::new(Method::GET, PODS, Reply::Json(pods_with_message(&message))),
            plugin_patch,
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    assert_eq!(action, Action::await_change());
    // Only `status.performance`, under the benchmark's own field manager.
    let plugin_body = &seen[2].body;
    assert_eq!(plugin_body["kind"], "Plugin");
    assert_eq!(
        plugin_body["status"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["performance"]
    );
    let performance: berth_api::Performance =
        serde_json::from_value(plugin_body["status"]["performance"].clone()).unwrap();
    assert_eq!(performance, report().performance());
    assert_eq!(performance.tier, "Platinum");

    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Succeeded));
    assert_eq!(status.tier, Some(Tier::Platinum));
    assert_eq!(status.finished_at.as_deref(), Some(NOW));
    assert_eq!(status.started_at.as_deref(), Some(NOW));
    assert_eq!(status.result, Some(report()));
    let complete = &status.conditions[0];
    assert_eq!(
        (complete.type_.as_str(), complete.status),
        (COMPLETE, ConditionStatus::True)
    );
    let event = event_of(&seen);
    assert_eq!(event["reason"], "BenchmarkSucceeded");
    assert!(
        event["note"].as_str().unwrap().contains("Platinum"),
        "{event}"
    );
    assert_eq!(BENCH_FIELD_MANAGER, "berth-benchmark");
}

/// The calculator with a benchmark summary measured at `measured_at`.
fn calculator_measured_at(measured_at: &str) -> Plugin {
    let mut p = calculator(Phase::Ready);
    let mut performance = report().performance();
    performance.tier = "Bronze".into();
    performance.measured_at = measured_at.into();
    p.status
        .get_or_insert_with(PluginStatus::default)
        .performance = Some(performance);
    p
}

#[tokio::test]
async fn an_older_run_finishing_later_leaves_the_plugins_newer_performance() {
    // This run started at 11:59:00Z; the Plugin summarises one measured at 11:59:30Z, written
    // with an offset so that comparing the strings would get the order wrong.
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let p = calculator_measured_at("2026-03-01T10:59:30-01:00");
    let message = serde_json::to_string(&report()).unwrap();
    let (action, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(
                Method::GET,
                format!("{JOBS}/{JOB}"),
                Reply::Json(job("Complete", None, None)),
            ),
            Expect::new(Method::GET, PODS, Reply::Json(pods_with_message(&message))),
            // No PATCH of plugins/calculator/status.
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(!seen.iter().any(|s| s.path.starts_with(PLUGINS)));
    // The benchmark itself still records its own result.
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Succeeded));
    assert_eq!(status.result, Some(report()));
}

#[tokio::test]
async fn a_newer_run_replaces_an_older_performance() {
    // Stored 11:58:00Z (12:58 at +01:00, later than 11:59 as a string): older than this run.
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let p = calculator_measured_at("2026-03-01T12:58:00+01:00");
    let mut plugin_patch = Expect::new(
        Method::PATCH,
        format!("{PLUGINS}/calculator/status"),
        Reply::WithStatus(serde_json::to_value(&p).unwrap()),
    );
    plugin_patch.query_contains = &["fieldManager=berth-benchmark", "force=true"];
    let message = serde_json::to_string(&report()).unwrap();
    let (_, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(
                Method::GET,
                format!("{JOBS}/{JOB}"),
                Reply::Json(job("Complete", None, None)),
            ),
            Expect::new(Method::GET, PODS, Reply::Json(pods_with_message(&message))),
            plugin_patch,
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    let performance: berth_api::Performance =
        serde_json::from_value(seen[2].body["status"]["performance"].clone()).unwrap();
    assert_eq!(performance, report().performance());
}

#[test]
fn performance_times_compare_as_timestamps() {
    use crate::benchmark::supersedes;
    let at = |t: &str| {
        let mut p = report().performance();
        p.measured_at = t.into();
        p
    };
    let this = at("2026-03-01T11:59:00Z");
    assert!(supersedes(&this, None));
    assert!(supersedes(&this, Some(&at("2026-03-01T11:59:00+00:00"))));
    assert!(supersedes(&this, Some(&at("2026-03-01T12:58:59+01:00"))));
    assert!(!supersedes(&this, Some(&at("2026-03-01T10:59:01-01:00"))));
    assert!(supersedes(&this, Some(&at("not a time"))));
}

#[tokio::test]
async fn a_failed_job_fails_the_benchmark_with_its_log_and_a_warning() {
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let p = calculator(Phase::Ready);
    let (action, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(
                Method::GET,
                format!("{JOBS}/{JOB}"),
                Reply::Json(job(
                    "Failed",
                    Some("BackoffLimitExceeded"),
                    Some("Job has reached the specified backoff limit"),
                )),
            ),
            Expect::new(
                Method::GET,
                PODS,
                Reply::Json(pods_with_message(
                    "error: the token has no invoke:calculator scope (403)\n",
                )),
            ),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    assert_eq!(action, Action::await_change());
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Failed));
    let message = status.message.unwrap();
    assert!(message.contains("BackoffLimitExceeded"), "{message}");
    assert!(message.contains("invoke:calculator scope"), "{message}");
    assert_eq!(status.result, None);
    let event = event_of(&seen);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "BenchmarkJobFailed");
}

#[tokio::test]
async fn a_succeeded_job_without_a_report_fails_the_benchmark() {
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let p = calculator(Phase::Ready);
    let (_, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(
                Method::GET,
                format!("{JOBS}/{JOB}"),
                Reply::Json(job("Complete", None, None)),
            ),
            Expect::new(
                Method::GET,
                PODS,
                Reply::Json(pods_with_message("{\"tier\": 1}")),
            ),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Failed));
    assert!(
        status
            .message
            .unwrap()
            .contains("is not a benchmark report")
    );
    assert_eq!(event_of(&seen)["reason"], "BenchmarkNoResult");
}

#[tokio::test]
async fn an_unknown_plugin_fails_without_a_job() {
    let b = benchmark(json!({"plugin": "calculatr"}));
    let p = calculator(Phase::Ready);
    let (action, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(Method::GET, format!("{JOBS}/{JOB}"), Reply::Error(404)),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    assert_eq!(action, Action::await_change());
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Failed));
    assert_eq!(status.job_name, None);
    assert!(
        status.message.unwrap().contains("no plugin \"calculatr\""),
        "the message names the plugin"
    );
    assert_eq!(event_of(&seen)["reason"], "BenchmarkPluginNotFound");
}

#[tokio::test]
async fn a_capability_without_examples_or_input_fails_by_field() {
    let b = benchmark(json!({"plugin": "calculator", "capabilities": ["bare"]}));
    let p = calculator(Phase::Ready);
    let (_, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(Method::GET, format!("{JOBS}/{JOB}"), Reply::Error(404)),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    let message = status_of(&seen).message.unwrap();
    assert!(
        message.starts_with("spec.capabilities[0]:") && message.contains("set spec.input"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_token_secret_says_how_to_make_one() {
    let b = benchmark(json!({"plugin": "calculator"}));
    let p = calculator(Phase::Ready);
    let (_, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(Method::GET, format!("{JOBS}/{JOB}"), Reply::Error(404)),
            Expect::new(
                Method::GET,
                format!("{SECRETS}/berth-bench-token"),
                Reply::Error(404),
            ),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Failed));
    let message = status.message.unwrap();
    assert!(
        message.contains("berth gateway token --name bench --scope invoke:calculator"),
        "{message}"
    );
}

#[tokio::test]
async fn a_plugin_not_ready_yet_keeps_the_benchmark_pending() {
    let b = benchmark(json!({"plugin": "calculator"}));
    let p = calculator(Phase::Deploying);
    let (action, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(Method::GET, format!("{JOBS}/{JOB}"), Reply::Error(404)),
            status_patch(&b),
        ],
    )
    .await;
    assert_eq!(action, Action::requeue(PENDING_POLL));
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Pending));
    assert!(status.message.unwrap().contains("Deploying"));
}

#[tokio::test]
async fn a_running_job_changes_nothing() {
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let mut b = b;
    // The status as the first pass wrote it, condition included.
    let first = crate::benchmark::plan_benchmark(crate::benchmark::BenchmarkInput {
        benchmark: &b,
        plugin: Some(&calculator(Phase::Ready)),
        token_secret: None,
        job: Some(&crate::benchmark::JobView::default()),
        termination_message: None,
        now: crate::fixtures::now(),
        options: &crate::render::BenchOptions::default(),
    });
    b.status = Some(first.status);
    let p = calculator(Phase::Ready);
    let (action, _) = reconcile_with(
        &b,
        &[&p],
        vec![Expect::new(
            Method::GET,
            format!("{JOBS}/{JOB}"),
            Reply::Json(json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": JOB, "namespace": NS},
                "status": {"active": 1}
            })),
        )],
    )
    .await;
    assert_eq!(action, Action::requeue(RUNNING_POLL));
}

#[tokio::test]
async fn a_finished_benchmark_makes_no_calls_and_its_job_goes_with_it() {
    let mut b = running(benchmark(json!({"plugin": "calculator"})));
    if let Some(s) = b.status.as_mut() {
        s.phase = Some(BenchmarkPhase::Succeeded);
    }
    let (action, seen) = reconcile_with(&b, &[], vec![]).await;
    assert_eq!(action, Action::await_change());
    assert!(seen.is_empty());
    // Deleting the benchmark deletes its Job: the garbage collector follows the controller
    // owner reference, which blocks the owner's deletion until the Job is gone.
    let job = crate::render::render_bench_job(
        &b,
        &calculator(Phase::Ready),
        &crate::render::BenchOptions::default(),
    );
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
}

#[tokio::test]
async fn a_job_gone_before_its_result_fails_the_benchmark() {
    let b = running(benchmark(json!({"plugin": "calculator"})));
    let p = calculator(Phase::Ready);
    let (_, seen) = reconcile_with(
        &b,
        &[&p],
        vec![
            Expect::new(Method::GET, format!("{JOBS}/{JOB}"), Reply::Error(404)),
            status_patch(&b),
            Expect::event(NS),
        ],
    )
    .await;
    let status = status_of(&seen);
    assert_eq!(status.phase, Some(BenchmarkPhase::Failed));
    assert!(status.message.unwrap().contains("is gone"));
}

#[test]
fn the_plugin_reconciler_ignores_fields_other_writers_own() {
    let mut status = PluginStatus {
        phase: Some(Phase::Ready),
        ..PluginStatus::default()
    };
    let own = status.clone();
    status.performance = Some(report().performance());
    status.live_tier = Some(berth_api::LiveTier {
        tier: Some(Tier::Gold),
        reasons: Vec::new(),
        calls: 10,
        window_seconds: 300,
        inputs: None,
        since: None,
    });
    assert_eq!(crate::plan::own_fields(&status), own);
}
