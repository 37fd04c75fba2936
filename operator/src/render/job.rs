//! The Job that runs one `PluginBenchmark`: `berth bench` against the gateway.

use std::collections::BTreeMap;

use berth_api::{Plugin, PluginBenchmark};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, KeyToPath,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::workload::{hardened_container, runtime_default};
use super::{MANAGED_BY, PLUGIN_LABEL, PLUGIN_UID, label_value};

/// Name of the container that runs `berth bench`.
pub const BENCH_CONTAINER: &str = "bench";
/// Label naming the PluginBenchmark a Job belongs to.
pub const BENCHMARK_LABEL: &str = "berth.dev/benchmark";
/// Where the token Secret is mounted.
pub const TOKEN_DIR: &str = "/var/run/berth/bench";
/// Where the plugin's manifest and the thresholds are projected from the pod's annotations.
pub const CONFIG_DIR: &str = "/var/run/berth/bench-config";
/// Pod annotation with the plugin's manifest (YAML): `berth bench --manifest` reads its
/// capabilities' examples and limits from it, whatever the gateway shows.
pub const MANIFEST_ANNOTATION: &str = "berth.dev/manifest";
/// Pod annotation with the spec's thresholds (JSON), for `berth bench --thresholds`.
pub const THRESHOLDS_ANNOTATION: &str = "berth.dev/thresholds";
/// Where the container writes its compact report (the pod's termination message).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Seconds a Job may run beyond its warm-up and measured part (image pull, start, report).
pub const DEADLINE_SLACK_SECONDS: i64 = 180;
/// Seconds a finished Job is kept: long enough for the operator to read its result.
pub const JOB_TTL_SECONDS: i32 = 3600;

/// The `berth` image the Jobs run unless told otherwise (the chart passes its own).
pub const DEFAULT_BENCH_IMAGE: &str = "berth/berth:latest";

/// Cluster facts the Job needs; set from the operator's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// The image with the `berth` binary (the operator's own).
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// The gateway's base URL as pods in the plugin's namespace reach it.
    pub gateway_url: String,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            image: DEFAULT_BENCH_IMAGE.into(),
            image_pull_policy: "IfNotPresent".into(),
            gateway_url: super::RenderOptions::default().gateway_url,
        }
    }
}

/// The Job's name: the benchmark's name (cut to fit a label value) and, when it has one,
/// the first 8 characters of its UID, so that a benchmark deleted and created again under
/// the same name never finds the old run's Job.
pub fn bench_job_name(benchmark: &PluginBenchmark) -> String {
    let mut base: String = benchmark
        .name_any()
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(46)
        .collect();
    while base.ends_with('-') {
        base.pop();
    }
    match benchmark.metadata.uid.as_deref() {
        Some(uid) => {
            let short: String = uid
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect::<String>()
                .to_ascii_lowercase();
            format!("{base}-bench-{short}")
        }
        None => format!("{base}-bench"),
    }
}

/// The arguments of `berth bench` for a benchmark.
pub fn bench_args(benchmark: &PluginBenchmark, options: &BenchOptions) -> Vec<String> {
    let spec = &benchmark.spec;
    let mut args = vec!["bench".to_string(), spec.plugin.clone()];
    args.extend(spec.capabilities.iter().cloned());
    args.extend([
        "--gateway".into(),
        options.gateway_url.clone(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/token"),
        "--output".into(),
        "json".into(),
        "--termination-log".into(),
        TERMINATION_LOG.into(),
        "--duration".into(),
        spec.duration.to_string(),
        "--warmup".into(),
        spec.warmup.to_string(),
        "--manifest".into(),
        format!("{CONFIG_DIR}/manifest.yaml"),
    ]);
    match (spec.effective_concurrency(), spec.rate) {
        (Some(c), _) => args.extend(["--concurrency".into(), c.to_string()]),
        (None, Some(r)) => args.extend(["--rate".into(), r.to_string()]),
        (None, None) => {}
    }
    if let Some(input) = &spec.input {
        args.extend(["--input".into(), input.to_string()]);
    }
    if spec.thresholds.is_some() {
        args.extend([
            "--thresholds".into(),
            format!("{CONFIG_DIR}/thresholds.json"),
        ]);
    }
    args
}

/// The labels on a benchmark's Job and pod.
pub fn bench_labels(benchmark: &PluginBenchmark) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "berth-bench".into()),
        (
            "app.kubernetes.io/instance".to_string(),
            label_value(&benchmark.name_any()),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "benchmark".into(),
        ),
        ("app.kubernetes.io/part-of".to_string(), "berth".into()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (
            PLUGIN_LABEL.to_string(),
            label_value(&benchmark.spec.plugin),
        ),
        (
            BENCHMARK_LABEL.to_string(),
            label_value(&benchmark.name_any()),
        ),
    ])
}

/// The Job of a benchmark: one pod, never retried, hardened like a plugin's (non-root,
/// read-only root file system, no capabilities, RuntimeDefault seccomp, no service account
/// token), with the gateway token mounted from its Secret, a deadline of warm-up plus
/// duration plus slack, and owned by the PluginBenchmark. The plugin's manifest and the
/// thresholds reach `berth bench` as files projected from pod annotations (no ConfigMap to
/// create, no extra permission). The spec must be valid.
pub fn render_bench_job(
    benchmark: &PluginBenchmark,
    plugin: &Plugin,
    options: &BenchOptions,
) -> Job {
    let spec = &benchmark.spec;
    let manifest = serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": plugin.name_any()},
        "spec": plugin.spec,
    });
    let mut annotations = BTreeMap::from([(
        MANIFEST_ANNOTATION.to_string(),
        serde_yaml::to_string(&manifest).expect("a manifest serializes"),
    )]);
    let mut projected = vec![projected_file(MANIFEST_ANNOTATION, "manifest.yaml")];
    if let Some(t) = &spec.thresholds {
        annotations.insert(
            THRESHOLDS_ANNOTATION.to_string(),
            serde_json::to_string(t).expect("thresholds serialize"),
        );
        projected.push(projected_file(THRESHOLDS_ANNOTATION, "thresholds.json"));
    }
    let seconds = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs_f64().ceil() as i64);
    let deadline = seconds(spec.warmup()) + seconds(spec.duration());
    let labels = bench_labels(benchmark);
    let container = Container {
        name: BENCH_CONTAINER.into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some(options.image_pull_policy.clone()),
        args: Some(bench_args(benchmark, options)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("1".into())),
                ("memory".to_string(), Quantity("256Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(hardened_container()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        termination_message_path: Some(TERMINATION_LOG.into()),
        // A failed run leaves the end of its log (the error) as the message instead.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(bench_job_name(benchmark)),
            namespace: benchmark.namespace(),
            labels: Some(labels.clone()),
            owner_references: owner_reference(benchmark),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline + DEADLINE_SLACK_SECONDS),
            ttl_seconds_after_finished: Some(JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PLUGIN_UID),
                        run_as_group: Some(PLUGIN_UID),
                        fs_group: Some(PLUGIN_UID),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "token".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(spec.token_secret().to_string()),
                                items: Some(vec![KeyToPath {
                                    key: "token".into(),
                                    path: "token".into(),
                                    mode: None,
                                }]),
                                // Group-readable: the file belongs to root and fsGroup.
                                default_mode: Some(0o440),
                                optional: Some(false),
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "config".into(),
                            downward_api: Some(DownwardAPIVolumeSource {
                                items: Some(projected),
                                default_mode: Some(0o444),
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource {
                                medium: Some("Memory".into()),
                                size_limit: Some(Quantity("16Mi".into())),
                            }),
                            ..Volume::default()
                        },
                    ]),
                    termination_grace_period_seconds: Some(10),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

fn projected_file(annotation: &str, path: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: format!("metadata.annotations['{annotation}']"),
        }),
        mode: None,
        resource_field_ref: None,
    }
}

fn owner_reference(benchmark: &PluginBenchmark) -> Option<Vec<OwnerReference>> {
    benchmark.metadata.uid.as_ref()?;
    benchmark.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        vec![o]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benchmark(extra: serde_json::Value) -> PluginBenchmark {
        let mut spec = serde_json::json!({"plugin": "calculator"});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "PluginBenchmark",
            "metadata": {"name": "calc.nightly", "namespace": "default", "uid": "0F1e2d3c-aaaa-bbbb"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn calculator() -> Plugin {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": "calculator", "namespace": "default"},
            "spec": {"image": "berth/calculator:0.1.0", "version": "0.1.0"}
        }))
        .unwrap()
    }

    #[test]
    fn job_names_fit_a_label_and_carry_the_uid() {
        let b = benchmark(serde_json::json!({}));
        assert_eq!(bench_job_name(&b), "calc-nightly-bench-0f1e2d3c");
        let mut long = b.clone();
        long.metadata.name = Some("x".repeat(200));
        assert!(bench_job_name(&long).len() <= 63);
        long.metadata.uid = None;
        assert!(bench_job_name(&long).ends_with("-bench"));
    }

    #[test]
    fn a_closed_loop_job_runs_berth_bench_against_the_gateway() {
        let b = benchmark(serde_json::json!({"capabilities": ["add"], "input": {"a": 1}}));
        let job = render_bench_job(&b, &calculator(), &BenchOptions::default());
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(
            spec.active_deadline_seconds,
            Some(35 + DEADLINE_SLACK_SECONDS)
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap();
        assert_eq!(&args[..3], &["bench", "calculator", "add"]);
        let joined = args.join(" ");
        assert!(
            joined.contains("--gateway http://berth-gateway.berth-system.svc:8080"),
            "{joined}"
        );
        assert!(joined.contains("--token-file /var/run/berth/bench/token"));
        assert!(joined.contains("--termination-log /dev/termination-log"));
        assert!(joined.contains("--concurrency 4"));
        assert!(joined.contains(r#"--input {"a":1}"#));
        assert!(!joined.contains("--rate"));
        assert!(joined.contains("--manifest /var/run/berth/bench-config/manifest.yaml"));
        assert!(!joined.contains("--thresholds"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "PluginBenchmark");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn an_open_loop_job_passes_the_rate_and_the_thresholds() {
        let b = benchmark(serde_json::json!({
            "rate": 200, "duration": "1m", "warmup": "0s", "tokenSecret": "calc-bench",
            "thresholds": berth_api::TierThresholds::default()
        }));
        let job = render_bench_job(&b, &calculator(), &BenchOptions::default());
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        assert!(args.contains("--rate 200"), "{args}");
        assert!(!args.contains("--concurrency"));
        assert!(args.contains("--duration 1m --warmup 0s"));
        assert!(args.contains("--thresholds /var/run/berth/bench-config/thresholds.json"));
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("calc-bench")
        );
        let annotations = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        let manifest = berth_api::load::load_single_plugin(
            "manifest.yaml",
            annotations[MANIFEST_ANNOTATION].as_bytes(),
        )
        .unwrap();
        assert_eq!(manifest.spec, calculator().spec);
        let thresholds: berth_api::TierThresholds =
            serde_json::from_str(&annotations[THRESHOLDS_ANNOTATION]).unwrap();
        assert!(thresholds.check().is_ok());
    }
}
