//! The PluginBenchmark controller: a pure plan (what the status says, whether to start the
//! Job, what to write into the Plugin) and a thin reconcile that reads the cluster and
//! carries the plan out.
//!
//! A benchmark runs once. Its Job runs `berth bench` against the gateway and leaves the
//! compact report as its pod's termination message; the operator copies it into the
//! benchmark's status and its summary into the Plugin's `status.performance`, which only
//! this controller writes (field manager [`BENCH_FIELD_MANAGER`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{
    BenchReport, BenchmarkPhase, ConditionStatus, Performance, Phase, Plugin, PluginBenchmark,
    PluginBenchmarkStatus, validate_benchmark,
};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::controller::{Backoff, REPORTER, scoped};
use crate::metrics::Metrics;
use crate::plan::{Transition, cond, merge_conditions};
use crate::render::{
    BENCH_CONTAINER, BenchOptions, FIELD_MANAGER, MANAGED_BY, bench_job_name, render_bench_job,
};
use crate::{Error, Result};

/// Field manager of the Plugin's `status.performance`: one writer per field, so the Plugin
/// reconciler (which applies the rest of the status) neither wipes nor fights over it.
pub const BENCH_FIELD_MANAGER: &str = "berth-benchmark";
/// Condition: the benchmark finished (True: with a result; False: failed).
pub const COMPLETE: &str = "Complete";
/// Look again this often while the Job runs (its changes wake the controller too).
pub const RUNNING_POLL: Duration = Duration::from_secs(30);
/// Look again this often while waiting for the plugin to be Ready.
pub const PENDING_POLL: Duration = Duration::from_secs(15);
/// Label Kubernetes puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// What the controller saw of a benchmark's Job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobView {
    /// The Job's `Complete` condition is True.
    pub succeeded: bool,
    /// The Job's `Failed` condition is True: its reason and message.
    pub failed: Option<String>,
}

impl JobView {
    /// Reads the fields the plan needs.
    pub fn from_job(job: &Job) -> Self {
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let true_condition = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t && c.status == "True")
        };
        Self {
            succeeded: true_condition("Complete").is_some(),
            failed: true_condition("Failed").map(|c| {
                let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
                match c.message.as_deref().filter(|m| !m.is_empty()) {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason,
                }
            }),
        }
    }

    /// True once the Job will not change any more.
    pub fn finished(&self) -> bool {
        self.succeeded || self.failed.is_some()
    }
}

/// Everything the plan reads.
#[derive(Clone, Copy, Debug)]
pub struct BenchmarkInput<'a> {
    /// The benchmark, with the status the API server holds.
    pub benchmark: &'a PluginBenchmark,
    /// The plugin it names, when it exists.
    pub plugin: Option<&'a Plugin>,
    /// Whether the token Secret exists; `None` when not looked up (see [`needs_token_check`]).
    pub token_secret: Option<bool>,
    /// The benchmark's Job, when it exists.
    pub job: Option<&'a JobView>,
    /// The termination message of the Job's pod, once it finished.
    pub termination_message: Option<&'a str>,
    /// Now, for start and finish times.
    pub now: Timestamp,
    /// Cluster facts for the Job.
    pub options: &'a BenchOptions,
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchmarkPlan {
    /// The status to report.
    pub status: PluginBenchmarkStatus,
    /// A Job to apply.
    pub job: Option<Box<Job>>,
    /// The summary to write into the Plugin's `status.performance`.
    pub performance: Option<Performance>,
    /// The Event to publish, when the phase changed.
    pub transition: Option<Transition>,
    /// When to look again; `None` waits for a change.
    pub requeue_after: Option<Duration>,
}

/// Why a benchmark cannot start, as an Event reason and a message; `None` when it can.
fn preflight(
    benchmark: &PluginBenchmark,
    plugin: Option<&Plugin>,
) -> Option<(&'static str, String)> {
    let spec = &benchmark.spec;
    let namespace = benchmark.namespace().unwrap_or_default();
    let problems = validate_benchmark(spec);
    if !problems.is_empty() {
        return Some(("Invalid", problems.join("; ")));
    }
    let Some(plugin) = plugin else {
        return Some((
            "PluginNotFound",
            format!(
                "spec.plugin: no plugin {:?} in namespace {namespace:?}; create it first or fix the name",
                spec.plugin
            ),
        ));
    };
    let capabilities = &plugin.spec.capabilities;
    let known: Vec<&str> = capabilities.iter().map(|c| c.name.as_str()).collect();
    for (i, name) in spec.capabilities.iter().enumerate() {
        let Some(capability) = capabilities.iter().find(|c| &c.name == name) else {
            return Some((
                "UnknownCapability",
                format!(
                    "spec.capabilities[{i}]: plugin {:?} has no capability {name:?} (it has: {})",
                    spec.plugin,
                    known.join(", ")
                ),
            ));
        };
        if spec.input.is_none() && capability.examples.is_empty() {
            return Some((
                "NoInput",
                format!(
                    "spec.capabilities[{i}]: capability {name:?} has no examples in the manifest; set spec.input"
                ),
            ));
        }
    }
    if spec.capabilities.is_empty()
        && spec.input.is_none()
        && capabilities.iter().all(|c| c.examples.is_empty())
    {
        return Some((
            "NoInput",
            format!(
                "plugin {:?} has no capability with examples; name spec.capabilities and set spec.input",
                spec.plugin
            ),
        ));
    }
    None
}

fn plugin_ready(plugin: Option<&Plugin>) -> bool {
    plugin.and_then(|p| p.status.as_ref()).and_then(|s| s.phase) == Some(Phase::Ready)
}

/// True when the plan needs to know whether the token Secret exists: the Job is about to be
/// created.
pub fn needs_token_check(
    benchmark: &PluginBenchmark,
    plugin: Option<&Plugin>,
    job_exists: bool,
) -> bool {
    let status = benchmark.status.clone().unwrap_or_default();
    !status.phase.is_some_and(BenchmarkPhase::is_finished)
        && !job_exists
        && status.job_name.is_none()
        && preflight(benchmark, plugin).is_none()
        && plugin_ready(plugin)
}

/// The whole decision: from the benchmark, its plugin and its Job to the status, the Job to
/// create and the Plugin summary to write.
pub fn plan_benchmark(input: BenchmarkInput<'_>) -> BenchmarkPlan {
    let BenchmarkInput {
        benchmark,
        plugin,
        token_secret,
        job,
        termination_message,
        now,
        options,
    } = input;
    let previous = benchmark.status.clone().unwrap_or_default();
    let mut out = BenchmarkPlan {
        status: previous.clone(),
        job: None,
        performance: None,
        transition: None,
        requeue_after: None,
    };
    // A benchmark runs once: a finished one keeps its status whatever happens after.
    if previous.phase.is_some_and(BenchmarkPhase::is_finished) {
        return out;
    }
    let job_name = bench_job_name(benchmark);
    let stamp = Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    let generation = benchmark.metadata.generation;
    let mut status = PluginBenchmarkStatus {
        observed_generation: generation,
        job_name: previous.job_name.clone(),
        started_at: previous.started_at.clone(),
        ..PluginBenchmarkStatus::default()
    };
    let failed = |mut status: PluginBenchmarkStatus, reason: &str, message: String| {
        status.phase = Some(BenchmarkPhase::Failed);
        status.finished_at = Some(stamp.clone());
        status.conditions = merge_conditions(
            &previous.conditions,
            vec![cond(
                COMPLETE,
                ConditionStatus::False,
                reason,
                message.clone(),
            )],
            now,
            generation,
        );
        status.message = Some(message.clone());
        (
            status,
            Some(Transition {
                warning: true,
                reason: format!("Benchmark{reason}"),
                note: message,
            }),
        )
    };

    match job {
        None => {
            if let Some((reason, message)) = preflight(benchmark, plugin) {
                (out.status, out.transition) = failed(status, reason, message);
                return out;
            }
            // `preflight` found the plugin.
            let Some(plugin) = plugin else {
                return out;
            };
            if let Some(lost) = &previous.job_name {
                let message = format!(
                    "Job {lost} is gone before its result was read (deleted, or removed {}s after it finished while the operator was away); create the benchmark again",
                    crate::render::JOB_TTL_SECONDS
                );
                (out.status, out.transition) = failed(status, "JobLost", message);
                return out;
            }
            if !plugin_ready(Some(plugin)) {
                let phase = plugin
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map_or_else(|| "not reported yet".to_string(), |p| format!("{p:?}"));
                let message = format!(
                    "waiting for plugin {:?} to be Ready (its phase: {phase})",
                    benchmark.spec.plugin
                );
                status.phase = Some(BenchmarkPhase::Pending);
                status.conditions = merge_conditions(
                    &previous.conditions,
                    vec![cond(
                        COMPLETE,
                        ConditionStatus::Unknown,
                        "PluginNotReady",
                        message.clone(),
                    )],
                    now,
                    generation,
                );
                status.message = Some(message);
                out.requeue_after = Some(PENDING_POLL);
                out.status = status;
                return out;
            }
            if token_secret == Some(false) {
                let spec = &benchmark.spec;
                let message = format!(
                    "Secret {:?} (key \"token\") is not in namespace {:?}: mint a token with `berth gateway token --name bench --scope invoke:{}`, add its line to the gateway's tokens, then `kubectl create secret generic {} --from-literal=token=TOKEN` (or set spec.tokenSecret)",
                    spec.token_secret(),
                    benchmark.namespace().unwrap_or_default(),
                    spec.plugin,
                    spec.token_secret(),
                );
                (out.status, out.transition) = failed(status, "TokenSecretMissing", message);
                return out;
            }
            out.job = Some(Box::new(render_bench_job(benchmark, plugin, options)));
            status.job_name = Some(job_name.clone());
            status.started_at = Some(stamp.clone());
            running(&mut status, &previous, now, generation, &job_name);
            out.transition = Some(Transition {
                warning: false,
                reason: "BenchmarkStarted".into(),
                note: format!(
                    "Job {job_name} runs `berth bench {}`",
                    benchmark.spec.plugin
                ),
            });
            out.requeue_after = Some(RUNNING_POLL);
        }
        Some(view) if view.succeeded => {
            status.job_name = Some(job_name.clone());
            match read_report(termination_message) {
                Ok(report) => {
                    let performance = report.performance();
                    status.phase = Some(BenchmarkPhase::Succeeded);
                    status.finished_at = Some(stamp.clone());
                    status.tier = Some(report.verdict.tier);
                    status.conditions = merge_conditions(
                        &previous.conditions,
                        vec![cond(
                            COMPLETE,
                            ConditionStatus::True,
                            "Measured",
                            format!("{} requests", report.requests),
                        )],
                        now,
                        generation,
                    );
                    out.transition = Some(Transition {
                        warning: false,
                        reason: "BenchmarkSucceeded".into(),
                        note: format!(
                            "{}: {} (p50 {:.1} ms, p99 {:.1} ms, {:.3} % errors, {:.1} req/s)",
                            report.plugin,
                            report.verdict.tier,
                            report.latency.p50_ms,
                            report.latency.p99_ms,
                            report.error_ratio * 100.0,
                            report.throughput
                        ),
                    });
                    status.result = Some(report);
                    out.performance = Some(performance);
                    out.status = status;
                }
                Err(why) => {
                    let message = format!("Job {job_name} succeeded but {why}");
                    (out.status, out.transition) = failed(status, "NoResult", message);
                }
            }
            return out;
        }
        Some(JobView {
            failed: Some(why), ..
        }) => {
            status.job_name = Some(job_name.clone());
            let mut message = format!("Job {job_name} failed ({why})");
            if let Some(log) = termination_message.map(str::trim).filter(|m| !m.is_empty()) {
                message.push_str(": ");
                message.push_str(log);
            }
            (out.status, out.transition) = failed(status, "JobFailed", message);
            return out;
        }
        Some(_) => {
            status.job_name = Some(job_name.clone());
            if status.started_at.is_none() {
                status.started_at = Some(stamp.clone());
            }
            running(&mut status, &previous, now, generation, &job_name);
            out.requeue_after = Some(RUNNING_POLL);
        }
    }
    if previous.phase != status.phase && out.transition.is_none() {
        out.transition = Some(Transition {
            warning: false,
            reason: "BenchmarkRunning".into(),
            note: format!("Job {job_name} runs"),
        });
    }
    out.status = status;
    out
}

fn running(
    status: &mut PluginBenchmarkStatus,
    previous: &PluginBenchmarkStatus,
    now: Timestamp,
    generation: Option<i64>,
    job_name: &str,
) {
    status.phase = Some(BenchmarkPhase::Running);
    status.conditions = merge_conditions(
        &previous.conditions,
        vec![cond(
            COMPLETE,
            ConditionStatus::Unknown,
            "Running",
            format!("Job {job_name} runs"),
        )],
        now,
        generation,
    );
}

/// The report in a termination message, or why there is none.
fn read_report(message: Option<&str>) -> std::result::Result<BenchReport, String> {
    let message = message
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            "its pod left no termination message (is the image's `berth` new enough for --termination-log?)"
                .to_string()
        })?;
    let mut report: BenchReport = serde_json::from_str(message).map_err(|e| {
        format!(
            "its termination message is not a benchmark report ({e}); the message starts {:?}",
            message.chars().take(120).collect::<String>()
        )
    })?;
    // The status keeps the compact form, whatever the Job wrote.
    report.timeline.clear();
    report.distribution.clear();
    Ok(report)
}

/// What one benchmark reconcile needs besides the object.
pub struct BenchmarkContext {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on PluginBenchmarks.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Every Plugin the operator watches (shared with the Plugin controller).
    pub plugins: Store<Plugin>,
    /// Image and gateway URL for the Jobs.
    pub options: BenchOptions,
    /// Per-object retry delays after errors.
    pub backoff: Backoff,
    /// The clock; tests fix it.
    pub now: fn() -> Timestamp,
}

impl BenchmarkContext {
    /// A context for a client.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        plugins: Store<Plugin>,
        options: BenchOptions,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            metrics,
            plugins,
            options,
            backoff: Backoff::default(),
            now: Timestamp::now,
        }
    }
}

fn key_of(b: &PluginBenchmark) -> String {
    format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any())
}

/// Reconciles one PluginBenchmark. No finalizer: the Job is owned by the benchmark, so
/// deleting the benchmark lets the garbage collector remove the Job and its pod.
pub async fn reconcile(
    benchmark: Arc<PluginBenchmark>,
    ctx: Arc<BenchmarkContext>,
) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(&benchmark);
    let result = reconcile_inner(&benchmark, &ctx).await;
    ctx.metrics
        .observe_reconcile("benchmark", started.elapsed());
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

/// Counts the error and retries the object after its own, growing delay.
pub fn error_policy(
    benchmark: Arc<PluginBenchmark>,
    error: &Error,
    ctx: Arc<BenchmarkContext>,
) -> Action {
    let key = key_of(&benchmark);
    let delay = ctx.backoff.next(&key);
    warn!(benchmark = %key, error = %error, retry_in = ?delay, "benchmark reconcile failed");
    ctx.metrics.count_error("benchmark", error);
    Action::requeue(delay)
}

async fn reconcile_inner(benchmark: &PluginBenchmark, ctx: &BenchmarkContext) -> Result<Action> {
    let status = benchmark.status.clone().unwrap_or_default();
    if status.phase.is_some_and(BenchmarkPhase::is_finished) {
        return Ok(Action::await_change());
    }
    let namespace = benchmark.namespace().ok_or_else(|| {
        Error::MissingField(
            format!("PluginBenchmark/{}", benchmark.name_any()),
            "namespace",
        )
    })?;
    let _ = ctx.plugins.wait_until_ready().await;
    let plugin = ctx
        .plugins
        .get(&ObjectRef::new(&benchmark.spec.plugin).within(&namespace));
    let job_name = bench_job_name(benchmark);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job = jobs.get_opt(&job_name).await?;
    let view = job.as_ref().map(JobView::from_job);

    let token_secret = if needs_token_check(benchmark, plugin.as_deref(), job.is_some()) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        Some(
            secrets
                .get_metadata_opt(benchmark.spec.token_secret())
                .await?
                .is_some(),
        )
    } else {
        None
    };
    let termination_message = match &view {
        Some(v) if v.finished() => termination_message(&ctx.client, &namespace, &job_name).await?,
        _ => None,
    };

    let plan = plan_benchmark(BenchmarkInput {
        benchmark,
        plugin: plugin.as_deref(),
        token_secret,
        job: view.as_ref(),
        termination_message: termination_message.as_deref(),
        now: (ctx.now)(),
        options: &ctx.options,
    });

    if let Some(job) = &plan.job {
        jobs.patch(
            &job_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(job.as_ref()),
        )
        .await?;
        info!(benchmark = %key_of(benchmark), job = %job_name, "started a benchmark Job");
    }
    // The Plugin first: if this fails, the benchmark is still Running and is tried again.
    if let Some(performance) = &plan.performance {
        let stored = plugin
            .as_deref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.performance.as_ref());
        if supersedes(performance, stored) {
            write_performance(&ctx.client, &namespace, &benchmark.spec.plugin, performance).await?;
        } else {
            info!(
                benchmark = %key_of(benchmark),
                plugin = %benchmark.spec.plugin,
                "the Plugin already summarises a newer benchmark; status.performance left as it is"
            );
        }
    }
    if benchmark.status.as_ref() != Some(&plan.status) {
        let api: Api<PluginBenchmark> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "PluginBenchmark",
            "status": plan.status,
        });
        api.patch_status(
            &benchmark.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    if let Some(t) = &plan.transition {
        publish(ctx, benchmark, t).await;
    }
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// True when `performance` may replace the Plugin's `stored` summary: there is none, or
/// `stored` was not measured after it. With several benchmarks reconciled at once, an older
/// run that finishes later must not overwrite a newer one. Times compare as timestamps; a
/// time that does not parse never blocks a write.
pub fn supersedes(performance: &Performance, stored: Option<&Performance>) -> bool {
    let Some(stored) = stored else { return true };
    match (
        stored.measured_at.parse::<Timestamp>(),
        performance.measured_at.parse::<Timestamp>(),
    ) {
        (Ok(stored), Ok(this)) => stored <= this,
        _ => true,
    }
}

/// Server-side applies the Plugin's `status.performance` under [`BENCH_FIELD_MANAGER`].
/// A plugin deleted meanwhile is fine: there is nothing to summarise into.
async fn write_performance(
    client: &Client,
    namespace: &str,
    plugin: &str,
    performance: &Performance,
) -> Result<()> {
    let api: Api<Plugin> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Plugin",
        "status": { "performance": performance },
    });
    match api
        .patch_status(
            plugin,
            &PatchParams::apply(BENCH_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            warn!(plugin = %plugin, "plugin is gone; its benchmark result stays in the PluginBenchmark only");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The termination message of the bench container of the Job's pod.
async fn termination_message(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<Option<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
        .await?;
    Ok(list.items.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == BENCH_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .clone()
    }))
}

async fn publish(ctx: &BenchmarkContext, benchmark: &PluginBenchmark, t: &Transition) {
    let mut note = t.note.clone();
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    let event = KubeEvent {
        type_: if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: t.reason.clone(),
        note: Some(note),
        action: "Benchmark".into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder
        .publish(&event, &benchmark.object_ref(&()))
        .await
    {
        warn!(benchmark = %key_of(benchmark), error = %e, "could not publish an Event");
    }
}

/// Runs the PluginBenchmark controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    ctx: Arc<BenchmarkContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let benchmarks: Api<PluginBenchmark> = scoped(&client, namespace);
    let owned = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=benchmark"
    ));
    Controller::new(benchmarks, watcher::Config::default())
        .owns(scoped::<Job>(&client, namespace), owned)
        .with_config(controller::Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "benchmark controller");
            }
        })
        .await;
}
