//! Dependency resolution over a set of plugins: semver ranges and a topological start order.

use std::collections::{BTreeMap, BTreeSet};

use crate::plugin::Plugin;
use crate::problem::Problem;

/// How to treat a dependency that is not in the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The set is everything that will run: a missing dependency is an error.
    Error,
    /// The dependency may already be installed elsewhere: warn only.
    Warn,
}

/// A start order in which every plugin comes after the plugins it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartOrder {
    /// Plugin names, dependencies first; ties in alphabetical order.
    pub order: Vec<String>,
    /// Warnings (missing dependencies under [`Missing::Warn`]).
    pub warnings: Vec<Problem>,
}

/// Resolves `plugins` into a start order, or names every unsatisfiable range and every cycle.
///
/// The returned problems carry the plugin's name as their object; the caller adds the file.
pub fn resolve_order(plugins: &[&Plugin], missing: Missing) -> Result<StartOrder, Vec<Problem>> {
    let by_name: BTreeMap<&str, &Plugin> = plugins.iter().map(|p| (p.name(), *p)).collect();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for plugin in plugins {
        let name = plugin.name();
        let entry = edges.entry(name).or_default();
        for (i, dep) in plugin.spec.depends_on.iter().enumerate() {
            let path = format!("spec.dependsOn[{i}]");
            let Some(target) = by_name.get(dep.name.as_str()) else {
                let p = Problem::error(
                    &path,
                    format!(
                        "depends on {:?}, which is not among the plugins given",
                        dep.name
                    ),
                )
                .hint(format!(
                    "add the manifest of {:?} or remove the dependency",
                    dep.name
                ))
                .for_object(format!("Plugin/{name}"));
                match missing {
                    Missing::Error => problems.push(p),
                    Missing::Warn => warnings.push(Problem {
                        severity: crate::problem::Severity::Warning,
                        ..p
                    }),
                }
                continue;
            };
            if let Some(range) = &dep.version
                && let (Ok(req), Ok(version)) = (
                    semver::VersionReq::parse(range),
                    semver::Version::parse(&target.spec.version),
                )
                && !req.matches(&version)
            {
                problems.push(
                    Problem::error(
                        format!("{path}.version"),
                        format!(
                            "{:?} is at {version}, which does not satisfy {range:?}",
                            dep.name
                        ),
                    )
                    .hint(format!(
                        "widen the range or install a version of {:?} that satisfies it",
                        dep.name
                    ))
                    .for_object(format!("Plugin/{name}")),
                );
            }
            entry.insert(target.name());
        }
    }
    // Kahn's algorithm; the ready set is ordered so the result is deterministic.
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = edges.clone();
    let mut order = Vec::with_capacity(remaining.len());
    loop {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in &ready {
            remaining.remove(name);
            order.push(name.to_string());
        }
        for deps in remaining.values_mut() {
            for name in &ready {
                deps.remove(name);
            }
        }
    }
    if !remaining.is_empty() {
        for cycle in find_cycles(&remaining) {
            let first = cycle[0];
            let mut shown: Vec<&str> = cycle.clone();
            shown.push(first);
            problems.push(
                Problem::error(
                    "spec.dependsOn",
                    format!("dependency cycle: {}", shown.join(" -> ")),
                )
                .hint("break the cycle by removing one of these dependencies")
                .for_object(format!("Plugin/{first}")),
            );
        }
    }
    if problems.is_empty() {
        Ok(StartOrder { order, warnings })
    } else {
        Err(problems)
    }
}

/// Finds the distinct cycles among nodes that Kahn's algorithm could not order.
fn find_cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut cycles: Vec<Vec<&str>> = Vec::new();
    let mut in_cycle: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        if in_cycle.contains(start) {
            continue;
        }
        // Walk first edges from `start` until a node repeats; that loop is a cycle.
        let mut path: Vec<&str> = vec![start];
        let mut current = *start;
        while let Some(next) = graph
            .get(current)
            .and_then(|d| d.iter().find(|n| graph.contains_key(*n)))
        {
            if let Some(pos) = path.iter().position(|n| n == next) {
                let cycle = path[pos..].to_vec();
                if cycle.iter().all(|n| !in_cycle.contains(n)) {
                    in_cycle.extend(cycle.iter().copied());
                    // Rotate so the smallest name leads, for stable messages.
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| **n)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    let mut rotated = cycle[min..].to_vec();
                    rotated.extend_from_slice(&cycle[..min]);
                    cycles.push(rotated);
                }
                break;
            }
            path.push(next);
            current = next;
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Dependency;
    use crate::validate::tests::plugin;

    fn with_deps(name: &str, version: &str, deps: &[(&str, Option<&str>)]) -> Plugin {
        let mut p = plugin(name);
        p.spec.version = version.into();
        p.spec.depends_on = deps
            .iter()
            .map(|(n, v)| Dependency {
                name: n.to_string(),
                version: v.map(String::from),
            })
            .collect();
        p
    }

    #[test]
    fn dependencies_start_first_in_a_stable_order() {
        let a = with_deps("a", "1.0.0", &[("c", Some(">=1.0.0, <2.0.0"))]);
        let b = with_deps("b", "1.0.0", &[]);
        let c = with_deps("c", "1.4.2", &[("b", None)]);
        let d = with_deps("d", "0.1.0", &[("a", None), ("b", Some("^1"))]);
        let order = resolve_order(&[&d, &a, &c, &b], Missing::Error).unwrap();
        assert_eq!(order.order, vec!["b", "c", "a", "d"]);
        assert!(order.warnings.is_empty());
    }

    #[test]
    fn a_cycle_is_reported_by_name() {
        let a = with_deps("a", "1.0.0", &[("b", None)]);
        let b = with_deps("b", "1.0.0", &[("c", None)]);
        let c = with_deps("c", "1.0.0", &[("a", None)]);
        let free = with_deps("free", "1.0.0", &[]);
        let err = resolve_order(&[&a, &b, &c, &free], Missing::Error).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].message, "dependency cycle: a -> b -> c -> a");
        assert_eq!(err[0].object.as_deref(), Some("Plugin/a"));
    }

    #[test]
    fn two_separate_cycles_are_both_named() {
        let a = with_deps("a", "1.0.0", &[("b", None)]);
        let b = with_deps("b", "1.0.0", &[("a", None)]);
        let x = with_deps("x", "1.0.0", &[("y", None)]);
        let y = with_deps("y", "1.0.0", &[("x", None)]);
        let z = with_deps("z", "1.0.0", &[("x", None)]);
        let err = resolve_order(&[&a, &b, &x, &y, &z], Missing::Error).unwrap_err();
        let messages: Vec<_> = err.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "dependency cycle: a -> b -> a",
                "dependency cycle: x -> y -> x"
            ]
        );
    }

    #[test]
    fn an_unsatisfiable_range_names_both_sides() {
        let a = with_deps("a", "1.0.0", &[("b", Some(">=2.0.0"))]);
        let b = with_deps("b", "1.3.0", &[]);
        let err = resolve_order(&[&a, &b], Missing::Error).unwrap_err();
        assert_eq!(err[0].path, "spec.dependsOn[0].version");
        assert_eq!(
            err[0].message,
            "\"b\" is at 1.3.0, which does not satisfy \">=2.0.0\""
        );
    }

    #[test]
    fn a_missing_dependency_is_an_error_or_a_warning_as_asked() {
        let a = with_deps("a", "1.0.0", &[("ghost", None)]);
        assert_eq!(resolve_order(&[&a], Missing::Error).unwrap_err().len(), 1);
        let ok = resolve_order(&[&a], Missing::Warn).unwrap();
        assert_eq!(ok.order, vec!["a"]);
        assert_eq!(ok.warnings.len(), 1);
    }
}
