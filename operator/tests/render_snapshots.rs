//! The complete output of `berth render` for every example, compared with committed
//! snapshots. After an intended change: `BERTH_UPDATE_SNAPSHOTS=1 cargo test -p berth-operator
//! --test render_snapshots`, then review the diff.

mod common;

use berth_operator::template::TemplateOutcome;

#[test]
fn every_example_renders_as_its_snapshot() {
    let grants: Vec<String> = common::yaml_files("examples")
        .into_iter()
        .filter(|f| common::holds_kind(f, "PluginGrant"))
        .collect();
    let update = std::env::var_os("BERTH_UPDATE_SNAPSHOTS").is_some();
    let mut drifted = Vec::new();
    let mut checked = 0;
    for file in common::yaml_files("examples") {
        if !common::holds_kind(&file, "Plugin") {
            continue;
        }
        let mut files = vec![file.clone()];
        files.extend(grants.iter().filter(|g| **g != file).cloned());
        let rendered = common::render(&files, false);
        for outcome in &rendered.outcomes {
            if let TemplateOutcome::Skipped { plugin, reason, .. } = outcome {
                panic!("{file}: Plugin/{plugin} was not rendered: {reason}");
            }
        }
        assert!(
            rendered.problems.is_empty(),
            "{file}: {:?}",
            rendered.problems
        );
        let yaml = rendered.to_yaml();
        let name = std::path::Path::new(&file).file_name().unwrap().to_owned();
        let snapshot = common::root().join("operator/tests/snapshots").join(name);
        checked += 1;
        if update {
            std::fs::write(&snapshot, &yaml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(expected) if expected == yaml => {}
            Ok(_) => drifted.push(format!(
                "{} differs from the rendering of {file}",
                snapshot.display()
            )),
            Err(_) => drifted.push(format!("{} is missing", snapshot.display())),
        }
    }
    assert!(
        checked >= 5,
        "expected the five example plugins, found {checked}"
    );
    assert!(
        drifted.is_empty(),
        "rendering drifted from the snapshots:\n  {}\nIf the change is intended, run \
         BERTH_UPDATE_SNAPSHOTS=1 cargo test -p berth-operator --test render_snapshots and review the diff",
        drifted.join("\n  ")
    );
}

#[test]
fn every_benchmark_renders_its_job_as_its_snapshot() {
    let update = std::env::var_os("BERTH_UPDATE_SNAPSHOTS").is_some();
    let mut drifted = Vec::new();
    let jobs = common::benchmark_jobs();
    assert!(jobs.len() >= 2, "expected the benchmark fixtures");
    for (file, job) in jobs {
        let yaml = serde_yaml::to_string(&job).unwrap();
        let name = std::path::Path::new(&file).file_name().unwrap().to_owned();
        let snapshot = common::root()
            .join("operator/tests/snapshots/benchmarks")
            .join(name);
        if update {
            std::fs::write(&snapshot, &yaml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(expected) if expected == yaml => {}
            Ok(_) => drifted.push(format!(
                "{} differs from the Job of {file}",
                snapshot.display()
            )),
            Err(_) => drifted.push(format!("{} is missing", snapshot.display())),
        }
    }
    assert!(
        drifted.is_empty(),
        "the benchmark Jobs drifted from the snapshots:\n  {}\nIf the change is intended, run \
         BERTH_UPDATE_SNAPSHOTS=1 cargo test -p berth-operator --test render_snapshots and review the diff",
        drifted.join("\n  ")
    );
}

#[test]
fn a_plugin_without_its_grant_is_not_rendered() {
    let rendered = common::render(&["examples/http-fetch.yaml".to_string()], false);
    assert!(!rendered.is_complete());
    match &rendered.outcomes[0] {
        TemplateOutcome::Skipped { reason, .. } => {
            assert!(reason.contains("awaiting approval"), "{reason}");
            assert!(reason.contains("network egress *:443"), "{reason}");
        }
        other => panic!("expected Skipped, got {other:?}"),
    }
    assert_eq!(rendered.to_yaml(), "");
    let assumed = common::render(&["examples/http-fetch.yaml".to_string()], true);
    assert!(assumed.is_complete());
}
