//! The CustomResourceDefinitions, rendered from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::benchmark::PluginBenchmark;
use crate::grant::PluginGrant;
use crate::plugin::Plugin;

/// The `plugins.berth.dev` CRD.
pub fn plugin_crd() -> CustomResourceDefinition {
    tidy(Plugin::crd())
}

/// The `plugingrants.berth.dev` CRD.
pub fn grant_crd() -> CustomResourceDefinition {
    tidy(PluginGrant::crd())
}

/// The `pluginbenchmarks.berth.dev` CRD.
pub fn benchmark_crd() -> CustomResourceDefinition {
    tidy(PluginBenchmark::crd())
}

/// The `plugins.berth.dev` CRD as YAML.
pub fn plugin_crd_yaml() -> String {
    serde_yaml::to_string(&plugin_crd()).expect("a CRD always serializes")
}

/// The `plugingrants.berth.dev` CRD as YAML.
pub fn grant_crd_yaml() -> String {
    serde_yaml::to_string(&grant_crd()).expect("a CRD always serializes")
}

/// The `pluginbenchmarks.berth.dev` CRD as YAML.
pub fn benchmark_crd_yaml() -> String {
    serde_yaml::to_string(&benchmark_crd()).expect("a CRD always serializes")
}

/// Every CRD as one multi-document YAML stream, as `berth crd` prints them.
pub fn all_crds_yaml() -> String {
    format!(
        "{}---\n{}---\n{}",
        plugin_crd_yaml(),
        grant_crd_yaml(),
        benchmark_crd_yaml()
    )
}

/// File names under `crds/` and their contents.
pub fn crd_files() -> [(&'static str, String); 3] {
    [
        ("plugins.berth.dev.yaml", plugin_crd_yaml()),
        ("plugingrants.berth.dev.yaml", grant_crd_yaml()),
        ("pluginbenchmarks.berth.dev.yaml", benchmark_crd_yaml()),
    ]
}

/// The derived schema marks int-or-string quantities `nullable`, which would let `null`
/// through the API server although no quantity can be null; drop that flag.
fn tidy(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a CRD always serializes");
    strip_nullable_int_or_string(&mut value);
    serde_json::from_value(value).expect("the tidied CRD still deserializes")
}

fn strip_nullable_int_or_string(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                map.remove("nullable");
            }
            map.values_mut().for_each(strip_nullable_int_or_string);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nullable_int_or_string),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crds")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn committed_crds_match_the_rust_types() {
        for (name, yaml) in crd_files() {
            assert!(
                committed(name) == yaml,
                "crds/{name} is out of date with the Rust types: run `cargo run -p berth -- crd --write crds/`"
            );
        }
    }

    #[test]
    fn plugin_crd_has_short_name_status_and_printer_columns() {
        let crd = plugin_crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["plg".to_string()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, vec!["Phase", "Version", "Risk", "Tier", "Age"]);
    }

    #[test]
    fn benchmark_crd_has_short_name_status_and_printer_columns() {
        let crd = benchmark_crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["pbench".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, vec!["Plugin", "Tier", "Phase", "Age"]);
        let yaml = benchmark_crd_yaml();
        let value: Value = serde_yaml::from_str(&yaml).unwrap();
        let status = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        assert_eq!(
            status["result"]["x-kubernetes-preserve-unknown-fields"],
            Value::Bool(true)
        );
    }

    #[test]
    fn quantities_are_int_or_string_with_a_pattern_and_not_nullable() {
        let yaml = plugin_crd_yaml();
        let value: Value = serde_yaml::from_str(&yaml).unwrap();
        let memory = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["resources"]["properties"]["memory"];
        assert_eq!(memory["x-kubernetes-int-or-string"], Value::Bool(true));
        assert!(memory.get("nullable").is_none());
        assert!(memory["pattern"].as_str().unwrap().starts_with("^[0-9]"));
    }
}
