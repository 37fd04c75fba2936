//! Reading manifests from YAML text: multi-document files, size and alias caps, and
//! deserialization errors that name the field path.

use serde::Deserialize;
use serde_yaml::Value;

use crate::grant::PluginGrant;
use crate::plugin::Plugin;
use crate::problem::Problem;
use crate::validate::{validate_grant, validate_plugin};

/// Largest manifest file read, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Most documents read from one file.
pub const MAX_DOCUMENTS: usize = 500;
/// The API group and version of every Berth object.
pub const API_VERSION: &str = "berth.dev/v1alpha1";

/// A Berth object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// A `Plugin`.
    Plugin(Box<Plugin>),
    /// A `PluginGrant`.
    Grant(Box<PluginGrant>),
}

impl Manifest {
    /// `Plugin/name` or `PluginGrant/name`.
    pub fn object(&self) -> String {
        match self {
            Manifest::Plugin(p) => format!("Plugin/{}", p.metadata.name.as_deref().unwrap_or("?")),
            Manifest::Grant(g) => {
                format!("PluginGrant/{}", g.metadata.name.as_deref().unwrap_or("?"))
            }
        }
    }
}

/// One document of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// 1-based position in the file.
    pub index: usize,
    /// The object.
    pub manifest: Manifest,
}

/// What reading a file produced: the objects that parsed and validated, and every problem.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Valid objects.
    pub documents: Vec<Document>,
    /// Problems, already tagged with the file and document.
    pub problems: Vec<Problem>,
}

impl Loaded {
    /// True when any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }
}

/// Parses and validates every document in `bytes`, read from `file` (`-` for stdin).
///
/// Nothing here panics on any input: the size is capped, YAML aliases are bounded by the
/// parser's repetition limit, and every failure becomes a [`Problem`].
pub fn load_manifests(file: &str, bytes: &[u8]) -> Loaded {
    let mut out = Loaded::default();
    if bytes.len() > MAX_MANIFEST_BYTES {
        out.problems.push(too_large(file, bytes.len() as u64));
        return out;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            out.problems.push(
                Problem::error(
                    "",
                    format!(
                        "the file is not UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                )
                .hint("save it as UTF-8")
                .in_file(file, None),
            );
            return out;
        }
    };
    let mut values = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        if index > MAX_DOCUMENTS {
            out.problems.push(
                Problem::error(
                    "",
                    format!("more than {MAX_DOCUMENTS} documents in one file"),
                )
                .hint("split it into several files")
                .in_file(file, None),
            );
            break;
        }
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => values.push((index, v)),
            Err(e) => {
                out.problems
                    .push(yaml_problem(&e).in_file(file, (index > 1).then_some(index)));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        }
    }
    let multi = values.len() > 1 || values.first().is_some_and(|(i, _)| *i > 1);
    for (index, value) in values {
        let doc_tag = multi.then_some(index);
        match parse_document(value) {
            Ok(manifest) => {
                let problems = match &manifest {
                    Manifest::Plugin(p) => validate_plugin(p),
                    Manifest::Grant(g) => validate_grant(g),
                };
                let object = manifest.object();
                let errors = problems.iter().any(Problem::is_error);
                out.problems.extend(
                    problems
                        .into_iter()
                        .map(|p| p.in_file(file, doc_tag).for_object(object.clone())),
                );
                if !errors {
                    out.documents.push(Document { index, manifest });
                }
            }
            Err(p) => out.problems.push(p.in_file(file, doc_tag)),
        }
    }
    if out.documents.is_empty() && out.problems.is_empty() {
        out.problems.push(
            Problem::error("", "no Plugin or PluginGrant in the file")
                .hint("a manifest starts with apiVersion: berth.dev/v1alpha1 and kind: Plugin")
                .in_file(file, None),
        );
    }
    out
}

/// Loads a file that must hold exactly one valid `Plugin` (a plugin folder's `berth.yaml`, an
/// image's manifest label). Returns every error, each tagged with `file`.
pub fn load_single_plugin(file: &str, bytes: &[u8]) -> Result<Plugin, Vec<Problem>> {
    let loaded = load_manifests(file, bytes);
    if loaded.has_errors() {
        return Err(loaded
            .problems
            .into_iter()
            .filter(Problem::is_error)
            .collect());
    }
    let mut plugins = loaded
        .documents
        .into_iter()
        .filter_map(|d| match d.manifest {
            Manifest::Plugin(p) => Some(*p),
            Manifest::Grant(_) => None,
        });
    match (plugins.next(), plugins.next()) {
        (Some(plugin), None) => Ok(plugin),
        _ => Err(vec![
            Problem::error("", "must hold exactly one Plugin document")
                .hint("grants and other plugins go in files of their own")
                .in_file(file, None),
        ]),
    }
}

/// The problem reported for a file over [`MAX_MANIFEST_BYTES`]; `size` is its real size.
pub fn too_large(file: &str, size: u64) -> Problem {
    Problem::error(
        "",
        format!(
            "the file is {:.1} MiB, larger than the {} MiB limit for a manifest",
            size as f64 / (1024.0 * 1024.0),
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ),
    )
    .hint("split it into several files")
    .in_file(file, None)
}

fn yaml_problem(e: &serde_yaml::Error) -> Problem {
    let message = e.to_string();
    let hint = if message.contains("repetition limit") || message.contains("recursion limit") {
        "the document expands too far through aliases or nesting; write it out plainly"
    } else {
        "fix the YAML syntax at that position"
    };
    Problem::error("", format!("not valid YAML: {message}")).hint(hint)
}

/// Turns one YAML document into a Berth object. The problem's path names the field.
pub fn parse_document(value: Value) -> Result<Manifest, Box<Problem>> {
    parse_document_unboxed(value).map_err(Box::new)
}

// Problems are built and returned once per document, off any hot path.
#[allow(clippy::result_large_err)]
fn parse_document_unboxed(value: Value) -> Result<Manifest, Problem> {
    let Value::Mapping(map) = &value else {
        return Err(Problem::error("", "the document is not a mapping")
            .hint("a manifest is a mapping with apiVersion, kind, metadata and spec"));
    };
    let get = |k: &str| map.get(Value::String(k.to_string()));
    let api_version = get("apiVersion").and_then(Value::as_str);
    let kind = get("kind").and_then(Value::as_str);
    match api_version {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(Problem::error(
                "apiVersion",
                format!("{other:?} is not a Berth API version"),
            )
            .hint(format!("use {API_VERSION}")));
        }
        None => {
            return Err(Problem::error("apiVersion", "missing")
                .hint(format!("add apiVersion: {API_VERSION}")));
        }
    }
    for key in map.keys() {
        match key.as_str() {
            Some("apiVersion" | "kind" | "metadata" | "spec" | "status") => {}
            Some(other) => {
                return Err(Problem::error(other, format!("unknown field {other:?}"))
                    .hint("top-level fields are apiVersion, kind, metadata, spec and status"));
            }
            None => return Err(Problem::error("", "a top-level key is not a string")),
        }
    }
    match kind {
        Some("Plugin") => serde_path_to_error::deserialize::<_, Plugin>(value)
            .map(|p| Manifest::Plugin(Box::new(p)))
            .map_err(|e| deser_problem(e, "Plugin")),
        Some("PluginGrant") => serde_path_to_error::deserialize::<_, PluginGrant>(value)
            .map(|g| Manifest::Grant(Box::new(g)))
            .map_err(|e| deser_problem(e, "PluginGrant")),
        Some(other) => Err(
            Problem::error("kind", format!("{other:?} is not a Berth kind"))
                .hint("use Plugin or PluginGrant"),
        ),
        None => {
            Err(Problem::error("kind", "missing").hint("add kind: Plugin or kind: PluginGrant"))
        }
    }
}

fn deser_problem(e: serde_path_to_error::Error<serde_yaml::Error>, kind: &str) -> Problem {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = e.into_inner().to_string();
    let hint = deser_hint(&inner, kind);
    Problem::error(path, inner).hint(hint)
}

fn deser_hint(message: &str, kind: &str) -> String {
    if message.starts_with("unknown field") {
        "remove it or fix its spelling; docs/manifest.md lists every field".into()
    } else if message.starts_with("missing field") {
        format!("add it; docs/manifest.md lists the required fields of a {kind}")
    } else if message.starts_with("invalid type") {
        "give a value of the expected type".into()
    } else if message.starts_with("unknown variant") {
        "use one of the listed values".into()
    } else {
        "see docs/manifest.md".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALC: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: calculator}
spec:
  image: berth/calculator:0.1.0
  version: 0.1.0
  capabilities:
    - name: evaluate
      input: {type: object, required: [expression], properties: {expression: {type: string}}}
  resources: {memory: 64Mi, timeout: 5s}
"#;

    #[test]
    fn a_valid_plugin_loads_with_defaults_filled_in() {
        let loaded = load_manifests("calc.yaml", CALC.as_bytes());
        assert_eq!(loaded.problems, vec![]);
        let Manifest::Plugin(p) = &loaded.documents[0].manifest else {
            panic!("not a plugin")
        };
        assert_eq!(p.spec.resources.memory.0, "64Mi");
        assert_eq!(p.spec.resources.cpu.0, "500m");
        assert_eq!(p.spec.port, 8080);
        assert!(p.spec.enabled);
    }

    #[test]
    fn standby_is_off_by_default_and_idle_after_must_be_a_duration_of_a_second_or_more() {
        let with = |standby: &str| {
            let text = CALC.replace(
                "  resources:",
                &format!("  standby: {standby}\n  resources:"),
            );
            load_manifests("calc.yaml", text.as_bytes())
        };
        let plain = load_manifests("calc.yaml", CALC.as_bytes());
        let Manifest::Plugin(p) = &plain.documents[0].manifest else {
            panic!("not a plugin")
        };
        assert_eq!(p.spec.standby, None);

        let loaded = with("{idleAfter: 5m}");
        assert_eq!(loaded.problems, vec![]);
        let Manifest::Plugin(p) = &loaded.documents[0].manifest else {
            panic!("not a plugin")
        };
        let standby = p.spec.standby.as_ref().expect("standby is set");
        assert_eq!(
            standby.idle_after(),
            Ok(std::time::Duration::from_secs(300))
        );

        for (value, says, hint) in [
            ("{idleAfter: \"5\"}", "it has no unit", "try \"5s\""),
            (
                "{idleAfter: 0s}",
                "shorter than the minimum of 1s",
                "at least \"1s\"",
            ),
            (
                "{idleAfter: 250ms}",
                "shorter than the minimum of 1s",
                "at least \"1s\"",
            ),
            ("{idleAfter: soon}", "is not a duration", "such as \"5s\""),
        ] {
            let loaded = with(value);
            assert_eq!(loaded.problems.len(), 1, "{value}: {:?}", loaded.problems);
            let text = loaded.problems[0].to_string();
            assert_eq!(loaded.problems[0].path, "spec.standby.idleAfter", "{value}");
            assert!(
                text.starts_with("calc.yaml: spec.standby.idleAfter: "),
                "{text}"
            );
            assert!(
                text.contains(says) && text.contains(hint),
                "{value}: {text}"
            );
        }

        let loaded = with("{idleAfter: 5m, after: 1s}");
        assert_eq!(loaded.problems.len(), 1);
        assert!(
            loaded.problems[0].path.starts_with("spec.standby"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let bad = CALC.replace("version: 0.1.0", "version: [1]");
        let loaded = load_manifests("calc.yaml", bad.as_bytes());
        assert_eq!(loaded.problems.len(), 1);
        assert_eq!(loaded.problems[0].path, "spec.version");
        assert!(
            loaded.problems[0]
                .to_string()
                .starts_with("calc.yaml: spec.version: invalid type")
        );
    }

    #[test]
    fn hook_failure_policy_defaults_to_ignore_and_rejects_other_values() {
        let with_hooks =
            |hooks: &str| CALC.replace("  resources:", &format!("  hooks: {hooks}\n  resources:"));
        let loaded = load_manifests(
            "guard.yaml",
            with_hooks("[{name: before_command, mode: filter}, {name: after_command, mode: filter, failurePolicy: Fail}]").as_bytes(),
        );
        assert_eq!(loaded.problems, vec![]);
        let Manifest::Plugin(p) = &loaded.documents[0].manifest else {
            panic!("not a plugin")
        };
        assert_eq!(p.spec.hooks[0].failure_policy, crate::FailurePolicy::Ignore);
        assert_eq!(p.spec.hooks[1].failure_policy, crate::FailurePolicy::Fail);
        let json = serde_json::to_value(&p.spec.hooks).unwrap();
        assert_eq!(
            json[0].get("failurePolicy"),
            None,
            "the default is not written out"
        );
        assert_eq!(json[1]["failurePolicy"], "Fail");

        let loaded = load_manifests(
            "guard.yaml",
            with_hooks("[{name: before_command, mode: filter, failurePolicy: fail}]").as_bytes(),
        );
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        let problem = &loaded.problems[0];
        assert_eq!(problem.path, "spec.hooks[0].failurePolicy");
        assert!(
            problem.message.starts_with("unknown variant `fail`"),
            "{problem}"
        );
        assert!(
            problem.message.contains("`Ignore`") && problem.message.contains("`Fail`"),
            "{problem}"
        );

        let loaded = load_manifests(
            "guard.yaml",
            with_hooks("[{name: file_changed, failurePolicy: Fail}]").as_bytes(),
        );
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        assert_eq!(loaded.problems[0].path, "spec.hooks[0].failurePolicy");
        assert!(
            loaded.problems[0].to_string().contains("add mode: filter"),
            "{}",
            loaded.problems[0]
        );
    }

    #[test]
    fn an_unknown_field_names_its_path() {
        let bad = CALC.replace("resources: {memory: 64Mi", "resources: {memmory: 64Mi");
        let loaded = load_manifests("calc.yaml", bad.as_bytes());
        assert_eq!(loaded.problems[0].path, "spec.resources.memmory");
        assert!(
            loaded.problems[0]
                .message
                .starts_with("unknown field `memmory`")
        );
    }

    #[test]
    fn multi_document_files_tag_problems_with_the_document() {
        let two = format!("{CALC}\n---\n{}", CALC.replace("64Mi", "64 MB"));
        let loaded = load_manifests("two.yaml", two.as_bytes());
        assert_eq!(loaded.documents.len(), 1);
        assert_eq!(
            loaded.problems[0].to_string(),
            "two.yaml#2: spec.resources.memory: \"64 MB\" is not a quantity: unknown suffix \" MB\" (try \"64Mi\")"
        );
    }

    #[test]
    fn oversized_non_utf8_and_alias_bombs_are_rejected_without_panic() {
        let big = vec![b'a'; MAX_MANIFEST_BYTES + 1];
        assert!(
            load_manifests("big", &big).problems[0]
                .message
                .contains("larger than the 1 MiB limit")
        );
        assert!(
            load_manifests("bin", &[0xff, 0xfe, 0x00]).problems[0]
                .message
                .contains("not UTF-8")
        );
        let mut bomb =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for i in 1..12 {
            bomb.push_str(&format!(
                "{}: &{} [*{},*{},*{},*{},*{},*{},*{},*{},*{}]\n",
                (b'a' + i) as char,
                (b'a' + i) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char
            ));
        }
        let loaded = load_manifests("bomb.yaml", bomb.as_bytes());
        assert!(
            loaded.problems[0].message.contains("repetition limit"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn other_kinds_and_api_versions_are_named() {
        let loaded = load_manifests("x.yaml", b"apiVersion: v1\nkind: ConfigMap\n");
        assert_eq!(loaded.problems[0].path, "apiVersion");
        let loaded = load_manifests("x.yaml", b"apiVersion: berth.dev/v1alpha1\nkind: Widget\n");
        assert_eq!(loaded.problems[0].path, "kind");
        let loaded = load_manifests("x.yaml", b"");
        assert!(
            loaded.problems[0]
                .message
                .contains("no Plugin or PluginGrant")
        );
    }

    #[test]
    fn mutated_manifests_never_panic_and_always_answer() {
        // A deterministic xorshift stream drives byte flips, cuts and insertions.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = CALC.as_bytes();
        let alphabet = b"{}[]:,-&*!|>'\"#%@ \n\t0123456789abcxyzMiKs.";
        for _ in 0..3000 {
            let mut bytes = base.to_vec();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => {
                        bytes.remove(at.min(bytes.len().saturating_sub(1)));
                    }
                }
                if bytes.is_empty() {
                    bytes.push(b'x');
                }
            }
            let loaded = load_manifests("fuzz.yaml", &bytes);
            assert!(
                !loaded.documents.is_empty() || !loaded.problems.is_empty(),
                "every input gets an answer: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
