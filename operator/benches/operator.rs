//! Prints numbers; asserts nothing. `cargo bench -p berth-operator --bench operator`
//!
//! 1. Memory with 1,000 Plugins (and their PluginGrants) in the operator's caches: resident
//!    set size of this process, holding a Tokio runtime, the metrics and reflector stores
//!    filled one object at a time as the watchers fill them.
//! 2. Render + diff per Plugin for 1,000 Plugins: one full plan (validation, risk, approval,
//!    revisions, conditions, every object rendered), the objects serialized as server-side
//!    apply sends them, and compared with the previous pass's objects and status.

use std::collections::BTreeMap;
use std::time::Instant;

use berth_api::{Manifest, Plugin, PluginGrant, RiskTier, load_manifests};
use berth_operator::plan::{DeploymentView, PlanInput, Workload, plan, validation_problems};
use berth_operator::render::{RenderInput, RenderOptions, RevisionToRun, render};
use kube::runtime::reflector;
use kube::runtime::watcher;

const PLUGINS: usize = 1_000;

fn examples() -> (Vec<Plugin>, Vec<PluginGrant>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut plugins = Vec::new();
    let mut grants = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path).unwrap();
        for doc in load_manifests(&path.display().to_string(), &bytes).documents {
            match doc.manifest {
                Manifest::Plugin(p) => plugins.push(*p),
                Manifest::Grant(g) => grants.push(*g),
            }
        }
    }
    (plugins, grants)
}

/// Plugin number `i` (and its grants), made from the examples.
fn member(
    i: usize,
    templates: &[Plugin],
    grant_templates: &[PluginGrant],
) -> (Plugin, Vec<PluginGrant>) {
    let mut p = templates[i % templates.len()].clone();
    let original = p.name().to_string();
    let name = format!("{original}-{i}");
    p.metadata.name = Some(name.clone());
    p.metadata.namespace = Some(format!("team-{}", i % 20));
    p.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    p.metadata.generation = Some(1);
    p.metadata.resource_version = Some(format!("{}", 1000 + i));
    for d in &mut p.spec.depends_on {
        d.name = format!("{}-{}", d.name, i);
    }
    let grants = grant_templates
        .iter()
        .filter(|g| g.spec.plugin == original)
        .map(|g| {
            let mut g = g.clone();
            g.metadata.name = Some(name.clone());
            g.metadata.namespace = p.metadata.namespace.clone();
            g.spec.plugin = name.clone();
            g
        })
        .collect();
    (p, grants)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time of this thread in nanoseconds (immune to other processes on a busy machine).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn view(p: &Plugin) -> DeploymentView {
    DeploymentView {
        revision: Some(1),
        permissions: Some(p.spec.permissions.clone()),
        spec_replicas: p.spec.replicas,
        generation: 2,
        observed_generation: 2,
        replicas: p.spec.replicas,
        updated_replicas: p.spec.replicas,
        available_replicas: p.spec.replicas,
        deadline_exceeded: false,
    }
}

fn main() {
    let start_rss = rss_kib();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = berth_operator::metrics::Metrics::new().unwrap();
    let (templates, grant_templates) = examples();
    let before_cache = rss_kib();
    let (plugin_store, mut plugin_writer) = reflector::store::<Plugin>();
    let (grant_store, mut grant_writer) = reflector::store::<PluginGrant>();
    plugin_writer.apply_watcher_event(&watcher::Event::Init);
    grant_writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..PLUGINS {
        let (p, grants) = member(i, &templates, &grant_templates);
        plugin_writer.apply_watcher_event(&watcher::Event::InitApply(p));
        for g in grants {
            grant_writer.apply_watcher_event(&watcher::Event::InitApply(g));
        }
    }
    plugin_writer.apply_watcher_event(&watcher::Event::InitDone);
    grant_writer.apply_watcher_event(&watcher::Event::InitDone);
    let after_cache = rss_kib();

    let options = RenderOptions::default();
    let mut plugins: Vec<Plugin> = plugin_store.state().iter().map(|p| (**p).clone()).collect();
    plugins.sort_by(|a, b| a.name().cmp(b.name()));
    let grants: Vec<PluginGrant> = grant_store.state().iter().map(|g| (**g).clone()).collect();
    let mut by_plugin: BTreeMap<String, Vec<&PluginGrant>> = BTreeMap::new();
    for g in &grants {
        by_plugin.entry(g.spec.plugin.clone()).or_default().push(g);
    }
    let deps = BTreeMap::new();
    // The controller validates a spec once per generation and keeps the result.
    let validations: BTreeMap<String, Vec<String>> = plugins
        .iter()
        .map(|p| (p.name().to_string(), validation_problems(p)))
        .collect();
    let planned = |p: &Plugin| {
        let g = by_plugin.get(p.name()).cloned().unwrap_or_default();
        let d = view(p);
        plan(PlanInput {
            plugin: p,
            grants: &g,
            dependencies: &deps,
            deployment: Some(&d),
            now: jiff::Timestamp::now(),
            auto_approve: RiskTier::Low,
            options: &options,
            validation: validations.get(p.name()).map(Vec::as_slice),
        })
    };

    // Warm-up pass: gives every plugin the status and objects of a previous reconcile.
    let mut previous: Vec<Vec<serde_json::Value>> = Vec::with_capacity(PLUGINS);
    for p in plugins.iter_mut() {
        let plan = planned(p);
        previous.push(match &plan.workload {
            Workload::Apply { rendered, .. } => rendered.to_values(),
            _ => Vec::new(),
        });
        p.status = Some(plan.status);
    }

    let rounds = 7;
    let mut per_plugin_us = Vec::with_capacity(rounds);
    let mut cpu_per_plugin_us = Vec::with_capacity(rounds);
    let mut unchanged = 0usize;
    for _ in 0..rounds {
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        unchanged = 0;
        for (i, p) in plugins.iter().enumerate() {
            let plan = planned(p);
            let objects = match &plan.workload {
                Workload::Apply { rendered, .. } => rendered.to_values(),
                _ => Vec::new(),
            };
            if p.status.as_ref() == Some(&plan.status) && objects == previous[i] {
                unchanged += 1;
            }
        }
        per_plugin_us.push(started.elapsed().as_secs_f64() * 1e6 / PLUGINS as f64);
        cpu_per_plugin_us.push((thread_cpu_ns() - cpu_started) as f64 / 1e3 / PLUGINS as f64);
    }
    per_plugin_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cpu_per_plugin_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = per_plugin_us[rounds / 2];
    let cpu_median = cpu_per_plugin_us[rounds / 2];

    // Where the time goes: the same work, one part at a time.
    let part = |f: &dyn Fn(&Plugin)| {
        let started = Instant::now();
        for p in &plugins {
            f(p);
        }
        started.elapsed().as_secs_f64() * 1e6 / PLUGINS as f64
    };
    let validate_us = part(&|p| {
        std::hint::black_box(berth_api::validate_plugin(p));
    });
    let render_us = part(&|p| {
        let revision = RevisionToRun::of_spec(p, 1);
        let r = render(RenderInput {
            plugin: p,
            granted: &p.spec.permissions,
            revision: &revision,
            options: &options,
        })
        .unwrap();
        std::hint::black_box(r.to_values());
    });

    println!(
        "operator benchmark ({PLUGINS} plugins, {} grants)",
        grants.len()
    );
    println!(
        "render+diff per plugin (steady state, validation cached per generation): median {median:.1} us wall, {cpu_median:.1} us CPU, over {rounds} rounds (wall min {:.1}, max {:.1}); {unchanged}/{PLUGINS} found unchanged; target <= 200 us",
        per_plugin_us[0],
        per_plugin_us[rounds - 1]
    );
    println!(
        "  rendering + JSON serialization alone {render_us:.1} us; validating a new generation adds {validate_us:.1} us (berth-api, JSON Schema compilation of capability schemas)"
    );
    println!(
        "memory: {} plugins + {} grants cached; process RSS {:.1} MiB with runtime, metrics and caches (at start {:.1} MiB, cache fill +{:.1} MiB); target <= 50 MB",
        plugin_store.len(),
        grant_store.len(),
        after_cache as f64 / 1024.0,
        start_rss as f64 / 1024.0,
        after_cache.saturating_sub(before_cache) as f64 / 1024.0
    );
    drop((runtime, metrics));
}
