//! Semantic validation: what the CRD schema cannot express.
//!
//! Every check runs; all problems are returned together, each with its field path and a hint.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde_json::Value;

use crate::grant::PluginGrant;
use crate::hooks;
use crate::permissions::{EgressRule, Permissions};
use crate::plugin::{FailurePolicy, HookMode, Plugin, PluginSpec};
use crate::problem::Problem;
use crate::resources::resolve_resources;

/// Environment variable prefix reserved for the runtime.
pub const RESERVED_ENV_PREFIX: &str = "BERTH_";

/// True for a DNS-1123 label: lower-case alphanumerics and `-`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_name(path: &str, name: Option<&str>, what: &str, problems: &mut Vec<Problem>) {
    match name {
        None | Some("") => problems.push(
            Problem::error(path, format!("the {what} has no name"))
                .hint("set metadata.name, e.g. \"calculator\""),
        ),
        Some(n) if !is_dns_label(n) => problems.push(
            Problem::error(path, format!("{n:?} is not a valid name"))
                .hint("use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"),
        ),
        _ => {}
    }
}

/// Validates one plugin. Returns every problem found (empty when valid).
pub fn validate_plugin(plugin: &Plugin) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_name(
        "metadata.name",
        plugin.metadata.name.as_deref(),
        "plugin",
        &mut problems,
    );
    validate_spec(plugin.name(), &plugin.spec, &mut problems);
    problems
}

fn validate_spec(own_name: &str, spec: &PluginSpec, problems: &mut Vec<Problem>) {
    if let Err(e) = crate::image_ref::check_reference(&spec.image) {
        problems.push(
            Problem::error("spec.image", format!("{:?} is not an image reference: {e}", spec.image))
                .hint("use registry/name:tag or registry/name@sha256:<digest>, e.g. \"berth/calculator:0.1.0\""),
        );
    }
    if let Err(e) = semver::Version::parse(&spec.version) {
        let hint = match spec.version.strip_prefix('v') {
            Some(rest) if semver::Version::parse(rest).is_ok() => {
                format!("drop the 'v': \"{rest}\"")
            }
            _ => "use MAJOR.MINOR.PATCH, e.g. \"0.1.0\"".to_string(),
        };
        problems.push(
            Problem::error(
                "spec.version",
                format!("{:?} is not a semantic version: {e}", spec.version),
            )
            .hint(hint),
        );
    }
    if spec.port == 0 {
        problems.push(
            Problem::error("spec.port", "port 0 cannot be served").hint("the default is 8080"),
        );
    }
    if !(0..=100).contains(&spec.replicas) {
        problems.push(
            Problem::error(
                "spec.replicas",
                format!("{} is outside 0..100", spec.replicas),
            )
            .hint("use 1 unless the plugin must scale out"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, cap) in spec.capabilities.iter().enumerate() {
        let path = format!("spec.capabilities[{i}]");
        if !is_capability_name(&cap.name) {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("{:?} is not a valid capability name", cap.name),
                )
                .hint("use a lower-case letter followed by up to 62 of [a-z0-9_-]"),
            );
        }
        if !seen.insert(cap.name.as_str()) {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("capability {:?} is declared twice", cap.name),
                )
                .hint("give each capability a unique name"),
            );
        }
        let input = check_schema(&format!("{path}.input"), cap.input.as_ref(), problems);
        let output = check_schema(&format!("{path}.output"), cap.output.as_ref(), problems);
        for (j, example) in cap.examples.iter().enumerate() {
            let epath = format!("{path}.examples[{j}]");
            if let Some(v) = &input {
                for err in v.iter_errors(&example.input) {
                    problems.push(
                        Problem::error(
                            format!(
                                "{epath}.input{}",
                                pointer_suffix(&err.instance_path().to_string())
                            ),
                            format!("the example does not match the input schema: {err}"),
                        )
                        .hint("fix the example or the schema"),
                    );
                }
            }
            if let (Some(v), Some(out)) = (&output, &example.output) {
                for err in v.iter_errors(out) {
                    problems.push(
                        Problem::error(
                            format!(
                                "{epath}.output{}",
                                pointer_suffix(&err.instance_path().to_string())
                            ),
                            format!("the example does not match the output schema: {err}"),
                        )
                        .hint("fix the example or the schema"),
                    );
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, hook) in spec.hooks.iter().enumerate() {
        let path = format!("spec.hooks[{i}].name");
        if !hooks::is_known_hook(&hook.name) {
            let hint = match hooks::closest_hook(&hook.name) {
                Some(close) => format!(
                    "did you mean \"{close}\"? Names outside the catalogue start with \"custom.\""
                ),
                None => "use a hook from the catalogue (docs/manifest.md) or \"custom.<name>\""
                    .to_string(),
            };
            problems.push(
                Problem::error(path.clone(), format!("unknown hook {:?}", hook.name)).hint(hint),
            );
        }
        if !seen.insert(hook.name.as_str()) {
            problems.push(
                Problem::error(path, format!("hook {:?} is subscribed twice", hook.name))
                    .hint("subscribe once; pick filter or observe"),
            );
        }
        if !(-10000..=10000).contains(&hook.priority) {
            problems.push(
                Problem::error(
                    format!("spec.hooks[{i}].priority"),
                    format!("{} is outside -10000..10000", hook.priority),
                )
                .hint("the default is 100; lower runs first"),
            );
        }
        if hook.failure_policy == FailurePolicy::Fail && hook.mode != HookMode::Filter {
            problems.push(
                Problem::error(
                    format!("spec.hooks[{i}].failurePolicy"),
                    format!(
                        "failurePolicy Fail on hook {:?} needs mode filter: an observer cannot \
                         stop the event, so its failures are always ignored",
                        hook.name
                    ),
                )
                .hint("add mode: filter to veto events when this plugin cannot answer, or remove failurePolicy"),
            );
        }
    }
    validate_permissions(
        "spec.permissions",
        Some(own_name),
        &spec.permissions,
        problems,
    );
    resolve_resources(&spec.resources, problems);
    if let Some(Err(e)) = spec
        .standby
        .as_ref()
        .map(crate::plugin::Standby::idle_after)
    {
        problems.push(Problem::error("spec.standby.idleAfter", e.message).hint(e.hint));
    }
    let mut seen = BTreeSet::new();
    for (i, dep) in spec.depends_on.iter().enumerate() {
        let path = format!("spec.dependsOn[{i}]");
        if !is_dns_label(&dep.name) {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("{:?} is not a valid plugin name", dep.name),
                )
                .hint("name another Plugin in the same namespace"),
            );
        }
        if dep.name == own_name {
            problems.push(
                Problem::error(format!("{path}.name"), "a plugin cannot depend on itself")
                    .hint("remove this entry"),
            );
        }
        if !seen.insert(dep.name.as_str()) {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("dependency {:?} is listed twice", dep.name),
                )
                .hint("merge the version ranges into one entry"),
            );
        }
        if let Some(range) = &dep.version
            && let Err(e) = semver::VersionReq::parse(range)
        {
            problems.push(
                Problem::error(
                    format!("{path}.version"),
                    format!("{range:?} is not a version range: {e}"),
                )
                .hint("write e.g. \">=1.0.0, <2.0.0\" or \"^1.2\""),
            );
        }
    }
}

fn pointer_suffix(pointer: &str) -> String {
    if pointer.is_empty() {
        return String::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|seg| match seg.parse::<usize>() {
            Ok(i) => format!("[{i}]"),
            Err(_) => format!(".{seg}"),
        })
        .collect()
}

fn is_capability_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_schema(
    path: &str,
    schema: Option<&Value>,
    problems: &mut Vec<Problem>,
) -> Option<jsonschema::Validator> {
    let schema = schema?;
    if !schema.is_object() {
        problems.push(
            Problem::error(path, "a JSON Schema must be an object")
                .hint("write e.g. {type: object, properties: {…}}"),
        );
        return None;
    }
    let before = problems.len();
    check_schema_types(path, schema, problems);
    if problems.len() > before {
        // The engine would only repeat the same mistake in its own words.
        return None;
    }
    match jsonschema::validator_for(schema) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(
                Problem::error(
                    format!("{path}{}", pointer_suffix(&e.instance_path().to_string())),
                    format!("not a valid JSON Schema: {e}"),
                )
                .hint("see https://json-schema.org/draft/2020-12"),
            );
            None
        }
    }
}

/// The seven type names JSON Schema knows.
const JSON_SCHEMA_TYPES: [&str; 7] = [
    "string", "number", "integer", "boolean", "object", "array", "null",
];

/// Finds `type` values that are not JSON Schema types anywhere in `schema` (through
/// `properties`, `items`, `allOf` and every other keyword that holds schemas) and says
/// which type was probably meant.
fn check_schema_types(path: &str, schema: &Value, problems: &mut Vec<Problem>) {
    let Some(object) = schema.as_object() else {
        return;
    };
    match object.get("type") {
        Some(Value::String(ty)) => check_type_name(&format!("{path}.type"), ty, problems),
        Some(Value::Array(types)) => {
            for (i, ty) in types.iter().enumerate() {
                if let Some(ty) = ty.as_str() {
                    check_type_name(&format!("{path}.type[{i}]"), ty, problems);
                }
            }
        }
        _ => {}
    }
    for (keyword, value) in object {
        match keyword.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Some(map) = value.as_object() {
                    for (name, sub) in map {
                        check_schema_types(&format!("{path}.{keyword}.{name}"), sub, problems);
                    }
                }
            }
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Some(items) = value.as_array() {
                    for (i, sub) in items.iter().enumerate() {
                        check_schema_types(&format!("{path}.{keyword}[{i}]"), sub, problems);
                    }
                }
            }
            "items" if value.is_array() => {
                for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                    check_schema_types(&format!("{path}.items[{i}]"), sub, problems);
                }
            }
            "items"
            | "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => {
                check_schema_types(&format!("{path}.{keyword}"), value, problems);
            }
            _ => {}
        }
    }
}

fn check_type_name(path: &str, ty: &str, problems: &mut Vec<Problem>) {
    if JSON_SCHEMA_TYPES.contains(&ty) {
        return;
    }
    let mut problem = Problem::error(
        path,
        format!(
            "{ty:?} is not a JSON Schema type; use one of {}",
            JSON_SCHEMA_TYPES.join(", ")
        ),
    );
    if let Some(meant) = meant_type(ty) {
        problem = problem.hint(format!("did you mean {meant:?}?"));
    }
    problems.push(problem);
}

/// The JSON Schema type a misspelt or foreign type name most likely means.
fn meant_type(ty: &str) -> Option<&'static str> {
    let lower = ty.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "str" | "text" => Some("string"),
        "int" | "long" | "i64" | "u64" => Some("integer"),
        "float" | "double" | "decimal" | "f64" => Some("number"),
        "bool" => Some("boolean"),
        "dict" | "map" | "record" => Some("object"),
        "list" | "vec" | "tuple" => Some("array"),
        "none" | "nil" => Some("null"),
        _ => None,
    };
    alias.or_else(|| {
        JSON_SCHEMA_TYPES
            .iter()
            .map(|t| (*t, crate::hooks::edit_distance(t, &lower)))
            .filter(|(_, d)| *d <= 2)
            .min_by_key(|(_, d)| *d)
            .map(|(t, _)| t)
    })
}

/// Checks permissions (requested or granted) at `base`; `own_name` rejects calls to oneself.
pub fn validate_permissions(
    base: &str,
    own_name: Option<&str>,
    p: &Permissions,
    problems: &mut Vec<Problem>,
) {
    for (i, rule) in p.network.egress.iter().enumerate() {
        validate_egress(&format!("{base}.network.egress[{i}]"), rule, problems);
    }
    let mut paths = BTreeSet::new();
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, m) in p.filesystem.iter().enumerate() {
        let path = format!("{base}.filesystem[{i}]");
        if !is_dns_label(&m.name) {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("{:?} is not a valid volume name", m.name),
                )
                .hint("use lower-case letters, digits and '-'"),
            );
        }
        let mp = m.mount_path.as_str();
        if !mp.starts_with('/') {
            problems.push(
                Problem::error(
                    format!("{path}.mountPath"),
                    format!("{mp:?} is not an absolute path"),
                )
                .hint(format!(
                    "start it with '/', e.g. \"/{}\"",
                    mp.trim_start_matches("./")
                )),
            );
        } else if mp.trim_end_matches('/').is_empty() {
            problems.push(
                Problem::error(
                    format!("{path}.mountPath"),
                    "a volume cannot be mounted on /",
                )
                .hint("mount it on a directory such as \"/workspace\""),
            );
        } else if mp.split('/').any(|seg| seg == ".." || seg == ".") {
            problems.push(
                Problem::error(
                    format!("{path}.mountPath"),
                    format!("{mp:?} contains '.' or '..'"),
                )
                .hint("write the path without relative segments"),
            );
        } else if ["/proc", "/sys", "/dev", "/tmp", "/etc"]
            .iter()
            .any(|sys| mp == *sys || mp.starts_with(&format!("{sys}/")))
        {
            problems.push(
                Problem::error(
                    format!("{path}.mountPath"),
                    format!("{mp:?} is a system path"),
                )
                .hint("mount under a directory of your own, e.g. \"/workspace\" or \"/data\""),
            );
        }
        if !paths.insert(mp.trim_end_matches('/')) {
            problems.push(
                Problem::error(
                    format!("{path}.mountPath"),
                    format!("{mp:?} is mounted twice"),
                )
                .hint("give each volume its own path"),
            );
        }
        if let Some(prev) = names.insert(m.name.as_str(), mp)
            && prev != mp
        {
            problems.push(Problem::warning(
                format!("{path}.name"),
                format!("volume {:?} is mounted at two paths", m.name),
            ));
        }
    }
    let mut envs = BTreeSet::new();
    for (i, s) in p.secrets.iter().enumerate() {
        let path = format!("{base}.secrets[{i}]");
        if s.name.is_empty()
            || !is_dns_name(&s.name)
            || s.name.chars().any(|c| c.is_ascii_uppercase())
        {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("{:?} is not a valid secret name", s.name),
                )
                .hint("use lower-case letters, digits, '-' and '.'"),
            );
        }
        let env_ok = s
            .env
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !env_ok {
            problems.push(
                Problem::error(
                    format!("{path}.env"),
                    format!("{:?} is not an environment variable name", s.env),
                )
                .hint("use letters, digits and '_', e.g. \"API_KEY\""),
            );
        } else if s.env.starts_with(RESERVED_ENV_PREFIX) {
            problems.push(
                Problem::error(
                    format!("{path}.env"),
                    format!("{:?} is reserved for the runtime", s.env),
                )
                .hint("choose a name that does not start with BERTH_"),
            );
        }
        if !envs.insert(s.env.as_str()) {
            problems.push(
                Problem::error(
                    format!("{path}.env"),
                    format!("{:?} receives two secrets", s.env),
                )
                .hint("give each secret its own variable"),
            );
        }
    }
    for (i, call) in p.plugins.iter().enumerate() {
        let path = format!("{base}.plugins[{i}]");
        if !is_dns_label(&call.name) {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    format!("{:?} is not a valid plugin name", call.name),
                )
                .hint("name another Plugin in the same namespace"),
            );
        }
        if Some(call.name.as_str()) == own_name {
            problems.push(
                Problem::error(
                    format!("{path}.name"),
                    "a plugin needs no permission to call itself",
                )
                .hint("remove this entry"),
            );
        }
        if call.capabilities.is_empty() {
            problems.push(
                Problem::error(format!("{path}.capabilities"), "no capabilities listed")
                    .hint("list capability names, or \"*\" for all"),
            );
        }
        for (j, c) in call.capabilities.iter().enumerate() {
            if c != "*" && !is_capability_name(c) {
                problems.push(
                    Problem::error(
                        format!("{path}.capabilities[{j}]"),
                        format!("{c:?} is not a capability name"),
                    )
                    .hint("use the name from the other plugin's manifest, or \"*\""),
                );
            }
        }
    }
    const VERBS: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ];
    for (i, rule) in p.kubernetes.iter().enumerate() {
        let path = format!("{base}.kubernetes[{i}]");
        if rule.resources.is_empty() {
            problems.push(
                Problem::error(format!("{path}.resources"), "no resources listed")
                    .hint("e.g. [configmaps]"),
            );
        }
        if rule.verbs.is_empty() {
            problems.push(
                Problem::error(format!("{path}.verbs"), "no verbs listed")
                    .hint("e.g. [get, list, watch]"),
            );
        }
        for (j, v) in rule.verbs.iter().enumerate() {
            if !VERBS.contains(&v.as_str()) {
                problems.push(
                    Problem::error(format!("{path}.verbs[{j}]"), format!("unknown verb {v:?}"))
                        .hint(format!("use one of {}", VERBS.join(", "))),
                );
            }
        }
    }
}

fn validate_egress(path: &str, rule: &EgressRule, problems: &mut Vec<Problem>) {
    match (&rule.host, &rule.cidr) {
        (Some(_), Some(_)) => problems.push(
            Problem::error(path, "an egress rule has both host and cidr")
                .hint("split it into two rules, one with host and one with cidr"),
        ),
        (None, None) => problems.push(
            Problem::error(path, "an egress rule needs a host or a cidr")
                .hint("add host: api.example.com or cidr: 10.0.0.0/16"),
        ),
        (Some(host), None) => {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if host != "*"
                && (!is_dns_name(name)
                    || name.contains('*')
                    || name.parse::<std::net::IpAddr>().is_ok())
            {
                let hint = if host.parse::<std::net::IpAddr>().is_ok() {
                    format!(
                        "an address goes in cidr: write cidr: {host}/{}",
                        if host.contains(':') { 128 } else { 32 }
                    )
                } else if host.contains("://") || host.contains('/') || host.contains(':') {
                    "write the host name only, without scheme, port or path".to_string()
                } else {
                    "use a DNS name, \"*.example.com\" for any subdomain, or \"*\" for any host"
                        .to_string()
                };
                problems.push(
                    Problem::error(
                        format!("{path}.host"),
                        format!("{host:?} is not a host name"),
                    )
                    .hint(hint),
                );
            }
        }
        (None, Some(cidr)) => {
            if let Err(e) = cidr.parse::<IpNet>() {
                let hint = if cidr.parse::<std::net::IpAddr>().is_ok() {
                    format!(
                        "add a prefix length, e.g. \"{cidr}/{}\"",
                        if cidr.contains(':') { 128 } else { 32 }
                    )
                } else {
                    "write an IPv4 or IPv6 network, e.g. \"10.20.0.0/16\"".to_string()
                };
                problems.push(
                    Problem::error(
                        format!("{path}.cidr"),
                        format!("{cidr:?} is not a CIDR: {e}"),
                    )
                    .hint(hint),
                );
            } else if let Ok(net) = cidr.parse::<IpNet>()
                && net.trunc() != net
            {
                problems.push(
                    Problem::error(
                        format!("{path}.cidr"),
                        format!("{cidr:?} has host bits set"),
                    )
                    .hint(format!("did you mean \"{}\"?", net.trunc())),
                );
            }
        }
    }
    if rule.ports.is_empty() {
        problems.push(
            Problem::error(format!("{path}.ports"), "no ports listed")
                .hint("list the ports the plugin connects to, e.g. [443]"),
        );
    }
    for (j, port) in rule.ports.iter().enumerate() {
        if *port == 0 {
            problems.push(
                Problem::error(format!("{path}.ports[{j}]"), "port 0 is not a port")
                    .hint("use 1..65535"),
            );
        }
    }
}

/// Validates one grant.
pub fn validate_grant(grant: &PluginGrant) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_name(
        "metadata.name",
        grant.metadata.name.as_deref(),
        "grant",
        &mut problems,
    );
    if !is_dns_label(&grant.spec.plugin) {
        problems.push(
            Problem::error(
                "spec.plugin",
                format!("{:?} is not a valid plugin name", grant.spec.plugin),
            )
            .hint("name the Plugin this grant is for"),
        );
    }
    if grant.spec.granted_by.trim().is_empty() {
        problems.push(
            Problem::error("spec.grantedBy", "a grant must say who approved it")
                .hint("e.g. grantedBy: alice@example.com"),
        );
    }
    if let Some(Err(e)) = grant.spec.expiry() {
        problems.push(
            Problem::error(
                "spec.expiresAt",
                format!(
                    "{:?} is not an RFC 3339 time: {e}",
                    grant.spec.expires_at.as_deref().unwrap_or_default()
                ),
            )
            .hint("write e.g. \"2027-01-31T00:00:00Z\""),
        );
    }
    if grant.spec.permissions.is_empty() {
        problems.push(
            Problem::warning("spec.permissions", "the grant grants nothing")
                .hint("a plugin that requests nothing needs no grant"),
        );
    }
    validate_permissions(
        "spec.permissions",
        None,
        &grant.spec.permissions,
        &mut problems,
    );
    problems
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::permissions::{Access, FilesystemMount, SecretRef};
    use crate::plugin::Resources;
    use crate::plugin::{Capability, CapabilityExample, Dependency, HookMode, HookSubscription};
    use crate::quantity::Quantity;
    use serde_json::json;
    use std::time::Duration;

    pub(crate) fn plugin(name: &str) -> Plugin {
        let mut p = Plugin::new(
            name,
            PluginSpec {
                image: format!("berth/{name}:0.1.0"),
                version: "0.1.0".into(),
                description: None,
                enabled: true,
                port: 8080,
                capabilities: vec![],
                hooks: vec![],
                permissions: Permissions::default(),
                resources: Resources::default(),
                replicas: 1,
                depends_on: vec![],
                standby: None,
            },
        );
        p.metadata.namespace = Some("default".into());
        p
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_minimal_plugin_is_valid() {
        assert_eq!(validate_plugin(&plugin("hello")), vec![]);
    }

    #[test]
    fn defaults_resolve_to_documented_limits() {
        let r = Resources::default().resolve().unwrap();
        assert_eq!(r.memory_bytes, 128 << 20);
        assert_eq!(r.cpu_millis, 500);
        assert_eq!(r.pids, 64);
        assert_eq!(r.tmp_bytes, 16 << 20);
        assert_eq!(r.timeout, Duration::from_secs(10));
        assert_eq!(r.max_concurrency, 64);
    }

    #[test]
    fn every_problem_is_collected_not_just_the_first() {
        let mut p = plugin("Bad_Name");
        p.spec.version = "v1.0".into();
        p.spec.image = "UPPER CASE".into();
        p.spec.resources.memory = Quantity::new("2Mi");
        p.spec.resources.timeout = crate::quantity::DurationString::new("1h");
        p.spec.resources.cpu = Quantity::new("64 MB");
        let problems = validate_plugin(&p);
        assert_eq!(
            paths(&problems),
            vec![
                "metadata.name",
                "spec.image",
                "spec.version",
                "spec.resources.cpu",
                "spec.resources.memory",
                "spec.resources.timeout"
            ]
        );
        assert_eq!(problems[4].message, "2Mi is below the minimum of 4Mi");
        assert_eq!(
            problems[4].hint.as_deref(),
            Some("ask for at least \"4Mi\"")
        );
    }

    #[test]
    fn duplicate_capabilities_and_hooks_and_unknown_hooks_are_rejected() {
        let mut p = plugin("calc");
        let cap = Capability {
            name: "evaluate".into(),
            description: None,
            input: None,
            output: None,
            idempotent: true,
            examples: vec![],
        };
        p.spec.capabilities = vec![cap.clone(), cap];
        let hook = |name: &str| HookSubscription {
            name: name.into(),
            mode: HookMode::Observe,
            priority: 100,
            failure_policy: FailurePolicy::Ignore,
        };
        p.spec.hooks = vec![
            hook("file_changed"),
            hook("file_changed"),
            hook("before_comand"),
            hook("custom.ok"),
        ];
        let problems = validate_plugin(&p);
        assert_eq!(
            paths(&problems),
            vec![
                "spec.capabilities[1].name",
                "spec.hooks[1].name",
                "spec.hooks[2].name"
            ]
        );
        assert!(
            problems[2]
                .hint
                .as_deref()
                .unwrap()
                .contains("did you mean \"before_command\"")
        );
    }

    #[test]
    fn failure_policy_fail_is_only_for_filters() {
        let mut p = plugin("guard");
        let hook = |name: &str, mode: HookMode, failure_policy: FailurePolicy| HookSubscription {
            name: name.into(),
            mode,
            priority: 100,
            failure_policy,
        };
        p.spec.hooks = vec![
            hook("before_command", HookMode::Filter, FailurePolicy::Fail),
            hook("file_changed", HookMode::Observe, FailurePolicy::Fail),
            hook("after_command", HookMode::Observe, FailurePolicy::Ignore),
            hook("before_ai_query", HookMode::Filter, FailurePolicy::Ignore),
        ];
        let problems = validate_plugin(&p);
        assert_eq!(paths(&problems), vec!["spec.hooks[1].failurePolicy"]);
        assert!(
            problems[0].message.contains("needs mode filter"),
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains("\"file_changed\""),
            "{problems:?}"
        );
        assert!(
            problems[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("mode: filter"),
            "{problems:?}"
        );
    }

    #[test]
    fn schemas_must_be_valid_and_examples_must_match_them() {
        let mut p = plugin("calc");
        p.spec.capabilities = vec![Capability {
            name: "evaluate".into(),
            description: None,
            input: Some(
                json!({"type": "object", "required": ["expression"], "properties": {"expression": {"type": "string"}}}),
            ),
            output: Some(json!({"type": "nonsense"})),
            idempotent: true,
            examples: vec![CapabilityExample {
                description: None,
                input: json!({"expression": 5}),
                output: None,
            }],
        }];
        let problems = validate_plugin(&p);
        assert_eq!(
            paths(&problems),
            vec![
                "spec.capabilities[0].output.type",
                "spec.capabilities[0].examples[0].input.expression"
            ]
        );
    }

    #[test]
    fn a_misspelt_schema_type_names_the_field_the_types_and_the_likely_one() {
        let mut p = plugin("greet");
        p.spec.capabilities = vec![Capability {
            name: "greet".into(),
            description: None,
            input: Some(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "strng"},
                    "tags": {"type": "array", "items": {"type": ["string", "nul"]}},
                    "n": {"anyOf": [{"type": "int"}, {"type": "zzzzzz"}]}
                }
            })),
            output: Some(json!({"type": "objcet"})),
            idempotent: true,
            examples: vec![],
        }];
        let problems: Vec<String> = validate_plugin(&p)
            .iter()
            .map(ToString::to_string)
            .collect();
        let types = "use one of string, number, integer, boolean, object, array, null";
        assert_eq!(
            problems,
            [
                format!(
                    "spec.capabilities[0].input.properties.n.anyOf[0].type: \"int\" is not a JSON Schema type; {types} (did you mean \"integer\"?)"
                ),
                format!(
                    "spec.capabilities[0].input.properties.n.anyOf[1].type: \"zzzzzz\" is not a JSON Schema type; {types}"
                ),
                format!(
                    "spec.capabilities[0].input.properties.name.type: \"strng\" is not a JSON Schema type; {types} (did you mean \"string\"?)"
                ),
                format!(
                    "spec.capabilities[0].input.properties.tags.items.type[1]: \"nul\" is not a JSON Schema type; {types} (did you mean \"null\"?)"
                ),
                format!(
                    "spec.capabilities[0].output.type: \"objcet\" is not a JSON Schema type; {types} (did you mean \"object\"?)"
                ),
            ]
        );
    }

    #[test]
    fn a_misspelt_schema_type_in_a_file_names_the_file() {
        let yaml = "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: greet}\nspec:\n  image: berth/greet:0.1.0\n  version: 0.1.0\n  capabilities:\n    - name: greet\n      input:\n        type: object\n        properties:\n          name: {type: strng}\n";
        let loaded = crate::load::load_manifests("greet/berth.yaml", yaml.as_bytes());
        let lines: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "greet/berth.yaml: spec.capabilities[0].input.properties.name.type: \"strng\" is not a JSON Schema type; use one of string, number, integer, boolean, object, array, null (did you mean \"string\"?)"
            ]
        );
    }

    #[test]
    fn egress_rules_must_be_hosts_or_cidrs_with_ports() {
        let mut p = plugin("fetch");
        let rule = |host: Option<&str>, cidr: Option<&str>, ports: Vec<u16>| EgressRule {
            host: host.map(Into::into),
            cidr: cidr.map(Into::into),
            ports,
        };
        p.spec.permissions.network.egress = vec![
            rule(Some("api.example.com"), None, vec![443]),
            rule(Some("*.example.com"), None, vec![443]),
            rule(Some("*"), None, vec![80]),
            rule(None, Some("10.20.0.0/16"), vec![5432]),
            rule(None, Some("fd00::/8"), vec![5432]),
            rule(Some("https://x.com/"), None, vec![443]),
            rule(Some("10.0.0.1"), None, vec![443]),
            rule(None, Some("10.0.0.1"), vec![443]),
            rule(None, Some("10.0.0.1/8"), vec![443]),
            rule(Some("a.com"), Some("10.0.0.0/8"), vec![443]),
            rule(None, None, vec![443]),
            rule(Some("b.com"), None, vec![]),
            rule(Some("c.com"), None, vec![0]),
        ];
        let problems = validate_plugin(&p);
        assert_eq!(
            paths(&problems),
            vec![
                "spec.permissions.network.egress[5].host",
                "spec.permissions.network.egress[6].host",
                "spec.permissions.network.egress[7].cidr",
                "spec.permissions.network.egress[8].cidr",
                "spec.permissions.network.egress[9]",
                "spec.permissions.network.egress[10]",
                "spec.permissions.network.egress[11].ports",
                "spec.permissions.network.egress[12].ports[0]",
            ]
        );
        assert_eq!(
            problems[2].hint.as_deref(),
            Some("add a prefix length, e.g. \"10.0.0.1/32\"")
        );
        assert_eq!(
            problems[3].hint.as_deref(),
            Some("did you mean \"10.0.0.0/8\"?")
        );
    }

    #[test]
    fn mount_paths_must_be_absolute_and_not_root() {
        let mut p = plugin("files");
        let mount = |path: &str| FilesystemMount {
            name: "ws".into(),
            mount_path: path.into(),
            access: Access::ReadWrite,
        };
        p.spec.permissions.filesystem = vec![
            mount("/workspace"),
            mount("workspace"),
            mount("/"),
            mount("/a/../etc"),
            mount("/proc/x"),
        ];
        let problems: Vec<_> = validate_plugin(&p)
            .into_iter()
            .filter(Problem::is_error)
            .collect();
        assert_eq!(
            paths(&problems),
            vec![
                "spec.permissions.filesystem[1].mountPath",
                "spec.permissions.filesystem[2].mountPath",
                "spec.permissions.filesystem[3].mountPath",
                "spec.permissions.filesystem[4].mountPath",
            ]
        );
    }

    #[test]
    fn secrets_may_not_use_reserved_or_duplicate_variables() {
        let mut p = plugin("s");
        let secret = |env: &str| SecretRef {
            name: "api".into(),
            env: env.into(),
            key: None,
        };
        p.spec.permissions.secrets = vec![
            secret("API_KEY"),
            secret("API_KEY"),
            secret("BERTH_PORT"),
            secret("1X"),
        ];
        assert_eq!(
            paths(&validate_plugin(&p)),
            vec![
                "spec.permissions.secrets[1].env",
                "spec.permissions.secrets[2].env",
                "spec.permissions.secrets[3].env"
            ]
        );
    }

    #[test]
    fn dependencies_need_valid_ranges_and_not_self() {
        let mut p = plugin("a");
        p.spec.depends_on = vec![
            Dependency {
                name: "b".into(),
                version: Some(">=1.0.0, <2.0.0".into()),
            },
            Dependency {
                name: "a".into(),
                version: None,
            },
            Dependency {
                name: "c".into(),
                version: Some("one point oh".into()),
            },
        ];
        assert_eq!(
            paths(&validate_plugin(&p)),
            vec!["spec.dependsOn[1].name", "spec.dependsOn[2].version"]
        );
    }
}
