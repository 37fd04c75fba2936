//! The Helm chart (`charts/berth`) and the Grafana dashboard.
//!
//! The byte-for-byte comparisons and the dashboard's metric names are checked here; Helm
//! lint and render, `kubernetes-validate`, the RBAC comparison with the operator's calls
//! and the values schema run in `tests/chart/check_chart.py`, which this test runs. Without
//! Python or its modules the test fails when `CI` is set and is skipped (saying so) when not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::workspace_root;

/// Exit status of `check_chart.py` when a Python module is missing.
const TOOL_MISSING: i32 = 77;

fn read(path: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}; CI is set, so this fails instead of skipping (bash .ci/run installs the tools)"
    );
    eprintln!("SKIPPED: {why} (set CI=1 to make this a failure)");
}

#[test]
fn chart_crds_are_the_top_level_crds_byte_for_byte() {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(workspace_root().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let top = names("crds");
    assert!(!top.is_empty(), "crds/ holds the generated CRDs");
    assert_eq!(
        top,
        names("charts/berth/crds"),
        "charts/berth/crds/ must hold the same files as crds/"
    );
    for name in &top {
        assert!(
            read(&format!("crds/{name}")) == read(&format!("charts/berth/crds/{name}")),
            "charts/berth/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/berth/crds/"
        );
    }
}

#[test]
fn chart_dashboard_is_the_docs_dashboard_byte_for_byte() {
    assert!(
        read("charts/berth/dashboards/berth.json") == read("docs/grafana-dashboard.json"),
        "charts/berth/dashboards/berth.json differs from docs/grafana-dashboard.json"
    );
}

#[test]
fn chart_app_version_is_the_workspace_version() {
    let text = String::from_utf8(read("charts/berth/Chart.yaml")).expect("utf-8");
    let chart: serde_yaml::Value = serde_yaml::from_str(&text).expect("Chart.yaml is YAML");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"), "a Helm v3 chart");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(version),
        "appVersion (the image tag) must be the workspace version"
    );
    assert_eq!(chart["version"].as_str(), Some(version));
}

/// A metric the code registers.
#[derive(Debug)]
struct Exported {
    labels: BTreeSet<String>,
    histogram: bool,
}

/// Non-test Rust sources under `dir` (relative to the workspace root).
fn rust_sources(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path
                    .file_name()
                    .is_some_and(|n| n == "tests.rs" || n == "fixtures.rs" || n == "scenarios.rs")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&workspace_root().join(dir), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            let text = match text.find("#[cfg(test)]") {
                Some(cut) => text[..cut].to_string(),
                None => text,
            };
            (path, text)
        })
        .collect()
}

/// Every string literal in `text`, with the byte offsets of its quotes.
fn string_literals(text: &str) -> Vec<(usize, usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' => {
                // A char literal ('"') or a lifetime; skip the former only.
                if bytes.get(i + 2) == Some(&b'\'') {
                    i += 2;
                } else if bytes.get(i + 1) == Some(&b'\\') && bytes.get(i + 3) == Some(&b'\'') {
                    i += 3;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                out.push((start, i, &text[start + 1..i.min(text.len())]));
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn is_metric_name(s: &str) -> bool {
    s.starts_with("berth_")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The metrics registered in the gateway, the operator and the backends, read from the
/// literals that name them: a histogram is one whose name is the first argument of a call
/// whose name mentions "histogram"; its labels are the first `&[…]` of string literals after
/// the name.
fn exported_metrics() -> BTreeMap<String, Exported> {
    let mut out = BTreeMap::new();
    for dir in [
        "crates/gateway/src",
        "operator/src",
        "crates/docker/src",
        "crates/store/src",
    ] {
        for (_, text) in rust_sources(dir) {
            let literals = string_literals(&text);
            for (n, &(start, end, name)) in literals.iter().enumerate() {
                if !is_metric_name(name) {
                    continue;
                }
                let before = text[..start].trim_end();
                let histogram = before.ends_with('(') && {
                    let call = before[..before.len() - 1]
                        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .next()
                        .unwrap_or("");
                    call.to_ascii_lowercase().contains("histogram")
                };
                let next_metric = literals[n + 1..]
                    .iter()
                    .find(|(_, _, s)| is_metric_name(s))
                    .map_or(text.len(), |(s, _, _)| *s);
                let after = &text[end..next_metric];
                // The first `&[…]` holding string literals (a `&[&str]` type is not a list).
                let labels: Vec<String> = after
                    .match_indices("&[")
                    .map(|(open, _)| {
                        let list = &after[open + 2..];
                        let close = list.find(']').unwrap_or(list.len());
                        string_literals(&list[..close])
                            .into_iter()
                            .map(|(_, _, l)| l.to_string())
                            .collect::<Vec<_>>()
                    })
                    .find(|labels| !labels.is_empty())
                    .unwrap_or_default();
                let entry = out.entry(name.to_string()).or_insert(Exported {
                    labels: BTreeSet::new(),
                    histogram: false,
                });
                entry.histogram |= histogram;
                entry.labels.extend(labels);
            }
        }
    }
    out
}

/// Every string literal in the code that labels values can come from.
fn code_literals() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in [
        "crates/gateway/src",
        "operator/src",
        "crates/docker/src",
        "crates/api/src",
    ] {
        for (_, text) in rust_sources(dir) {
            out.extend(
                string_literals(&text)
                    .into_iter()
                    .map(|(_, _, s)| s.to_string()),
            );
        }
    }
    out
}

/// What a PromQL expression refers to.
#[derive(Debug, Default)]
struct Query {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
    /// `label="value"` / `label!="value"` matchers with a fixed value.
    values: BTreeSet<(String, String)>,
}

fn parse_promql(expr: &str) -> Query {
    let mut q = Query::default();
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '$' {
            i += 1;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with("berth_") {
                q.metrics.insert(word.clone());
            }
            last_word = word;
            continue;
        }
        if c == '(' && (last_word == "by" || last_word == "without") {
            let close = chars[i..]
                .iter()
                .position(|&c| c == ')')
                .map_or(chars.len(), |p| i + p);
            let list: String = chars[i + 1..close].iter().collect();
            q.labels.extend(
                list.split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
            i = close + 1;
            last_word.clear();
            continue;
        }
        if c == '{' {
            let close = chars[i..]
                .iter()
                .position(|&c| c == '}')
                .map_or(chars.len(), |p| i + p);
            let body: String = chars[i + 1..close].iter().collect();
            for matcher in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let op_at = matcher
                    .find(['=', '!'])
                    .expect("a label matcher has an operator");
                let label = matcher[..op_at].trim().to_string();
                let rest = &matcher[op_at..];
                let value = rest
                    .trim_start_matches(['=', '!', '~'])
                    .trim()
                    .trim_matches('"');
                if !rest.starts_with("=~") && !rest.starts_with("!~") && !value.contains('$') {
                    q.values.insert((label.clone(), value.to_string()));
                }
                q.labels.insert(label);
            }
            i = close + 1;
            continue;
        }
        if !c.is_whitespace() {
            last_word.clear();
        }
        i += 1;
    }
    q
}

fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                let title = map.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.to_string(), expr.to_string()));
                }
                if let Some(q) = map.get("definition").and_then(|e| e.as_str()) {
                    // label_values(metric, label) of a template variable.
                    let inner = q
                        .trim()
                        .strip_prefix("label_values(")
                        .and_then(|s| s.strip_suffix(')'))
                        .unwrap_or(q);
                    let (metric, label) = inner.split_once(',').unwrap_or((inner, ""));
                    out.push((
                        format!("variable {}", map["name"].as_str().unwrap_or("?")),
                        format!("sum by ({}) ({})", label.trim(), metric.trim()),
                    ));
                }
                for (_, child) in map {
                    walk(child, title, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, title, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    out
}

#[test]
fn promql_parsing_finds_metrics_labels_and_fixed_values() {
    let q = parse_promql(
        r#"histogram_quantile(0.99, sum by (le, plugin) (rate(berth_x_bucket{plugin=~"$plugin",outcome!="success"}[$__rate_interval])))"#,
    );
    assert_eq!(q.metrics, BTreeSet::from(["berth_x_bucket".to_string()]));
    assert_eq!(
        q.labels,
        BTreeSet::from(["le", "plugin", "outcome"].map(String::from))
    );
    assert_eq!(
        q.values,
        BTreeSet::from([("outcome".to_string(), "success".to_string())])
    );
}

#[test]
fn dashboard_queries_use_only_metrics_and_labels_the_code_exports() {
    let exported = exported_metrics();
    for name in [
        "berth_invocations_total",
        "berth_invocation_duration_seconds",
        "berth_reconcile_duration_seconds",
        "berth_plugins",
    ] {
        assert!(
            exported.contains_key(name),
            "{name} not found in the code: {exported:?}"
        );
    }
    assert!(exported["berth_invocation_duration_seconds"].histogram);
    assert!(!exported["berth_invocations_total"].histogram);
    let literals = code_literals();

    let text = String::from_utf8(read("docs/grafana-dashboard.json")).expect("utf-8");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "the dashboard has its queries");
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (panel, expr) in &queries {
        let q = parse_promql(expr);
        if q.metrics.is_empty() {
            problems.push(format!("{panel}: `{expr}` uses no berth metric"));
        }
        let mut allowed: BTreeSet<String> = BTreeSet::new();
        for metric in &q.metrics {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| metric.strip_suffix(s))
                .filter(|base| exported.get(*base).is_some_and(|m| m.histogram));
            match (exported.get(metric.as_str()), base) {
                (Some(m), _) => allowed.extend(m.labels.iter().cloned()),
                (None, Some(base)) => {
                    allowed.extend(exported[base].labels.iter().cloned());
                    if metric.ends_with("_bucket") {
                        allowed.insert("le".into());
                    }
                    used.insert(base.to_string());
                }
                (None, None) => problems.push(format!(
                    "{panel}: {metric} is not a metric the code exports"
                )),
            }
            used.insert(metric.clone());
        }
        for label in &q.labels {
            if !allowed.contains(label) {
                problems.push(format!(
                    "{panel}: label {label:?} is not a label of {:?}",
                    q.metrics
                ));
            }
        }
        for (label, value) in &q.values {
            if !literals.contains(value) {
                problems.push(format!(
                    "{panel}: {label}=\"{value}\": no such value appears in the code"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for wanted in [
        "berth_invocations_total",
        "berth_invocation_duration_seconds",
        "berth_plugin_cold_start_seconds",
        "berth_plugin_restarts_total",
        "berth_permission_denials_total",
        "berth_plugins",
        "berth_plugin_tier",
        "berth_benchmark_tier",
        "berth_benchmark_latency_seconds",
        "berth_benchmark_throughput",
        "berth_benchmark_error_ratio",
        "berth_benchmark_timestamp_seconds",
    ] {
        assert!(used.contains(wanted), "the dashboard shows {wanted}");
    }
}

/// The `berth` binary: the one `cargo test --workspace` built beside this test (the cli's
/// own tests need it), else a fresh `cargo build -p berth`.
fn berth_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("berth")));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "-p",
            "berth",
            "--bin",
            "berth",
            "--message-format=json",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build -p berth failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "berth")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the berth executable")
}

#[test]
fn chart_passes_helm_lint_render_kubernetes_validate_rbac_and_schema_checks() {
    let python = std::env::var("BERTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = workspace_root().join("tests/chart/check_chart.py");
    let berth = berth_binary();
    let output = match Command::new(&python)
        .arg(&script)
        .arg("--berth-bin")
        .arg(&berth)
        .current_dir(workspace_root())
        .output()
    {
        Ok(output) => output,
        Err(e) => return skip_or_fail(&format!("cannot run {python}: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(TOOL_MISSING) {
        return skip_or_fail(stdout.trim());
    }
    println!("{stdout}");
    assert!(
        output.status.success(),
        "tests/chart/check_chart.py failed:\n{stdout}\n{stderr}"
    );
}
