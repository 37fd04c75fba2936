//! Shared by the rendering tests: read manifests and render them as `berth render` does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use berth_api::RiskTier;
use berth_operator::render::RenderOptions;
use berth_operator::template::{Template, TemplateOptions, template};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ sits in the workspace")
        .to_path_buf()
}

/// `*.yaml` files in `dir` (relative to the workspace root), sorted, as relative paths.
pub fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .map(|p| format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files
}

/// Reads files named relative to the workspace root.
pub fn read(files: &[String]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|f| {
            (
                f.clone(),
                std::fs::read(root().join(f)).unwrap_or_else(|e| panic!("{f}: {e}")),
            )
        })
        .collect()
}

/// True when the file holds a document of this kind.
pub fn holds_kind(file: &str, kind: &str) -> bool {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    text.lines().any(|l| l.trim() == format!("kind: {kind}"))
}

/// Renders with the operator's defaults; grant expiry judged at a fixed time.
pub fn render(files: &[String], assume_granted: bool) -> Template {
    template(
        &read(files),
        &TemplateOptions {
            render: RenderOptions::default(),
            auto_approve: RiskTier::Low,
            assume_granted,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
        },
    )
}

/// The PluginBenchmarks under `operator/tests/benchmarks`, each with a UID so that it owns
/// its Job, and the Job the operator renders for it.
pub fn benchmark_jobs() -> Vec<(String, k8s_openapi::api::batch::v1::Job)> {
    yaml_files("operator/tests/benchmarks")
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(root().join(&file)).unwrap();
            let mut benchmark: berth_api::PluginBenchmark =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            let problems = berth_api::validate_benchmark(&benchmark.spec);
            assert!(problems.is_empty(), "{file}: {problems:?}");
            benchmark.metadata.uid = Some("5c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5".into());
            let file_of = format!("examples/{}.yaml", benchmark.spec.plugin);
            let bytes = std::fs::read(root().join(&file_of)).unwrap();
            let plugin = berth_api::load::load_single_plugin(&file_of, &bytes)
                .unwrap_or_else(|e| panic!("{file_of}: {e:?}"));
            let job = berth_operator::render::render_bench_job(
                &benchmark,
                &plugin,
                &berth_operator::render::BenchOptions::default(),
            );
            (file, job)
        })
        .collect()
}
