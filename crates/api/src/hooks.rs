//! The hook catalogue: the standard events a plugin can subscribe to, and the shape of
//! each event.
//!
//! This module is the normative definition: `docs/protocol.md` carries the table that
//! [`catalogue_markdown`] renders (a test fails when the two drift), and
//! `berth plugin test` sends [`sample_event`] to every hook a plugin subscribes to.

use serde_json::{Map, Value};

use FieldType as T;

/// The JSON type of one event field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A JSON number without a fraction.
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// An array whose items are strings.
    StringArray,
    /// An object whose values are strings.
    StringMap,
}

impl FieldType {
    /// How the catalogue table names the type.
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::StringArray => "array of strings",
            FieldType::StringMap => "object of strings",
        }
    }

    /// True when `value` is of this type.
    pub fn admits(self, value: &Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::Integer => value.is_i64() || value.is_u64(),
            FieldType::Number => value.is_number(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::StringArray => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            FieldType::StringMap => value
                .as_object()
                .is_some_and(|map| map.values().all(Value::is_string)),
        }
    }
}

/// One field of a hook's event.
#[derive(Clone, Copy, Debug)]
pub struct EventField {
    /// The key in the event object.
    pub name: &'static str,
    /// Its JSON type.
    pub ty: FieldType,
    /// Whether every emitter sends it.
    pub required: bool,
    /// What it holds, for the catalogue table.
    pub meaning: &'static str,
    /// A typical value as JSON text; [`sample_event`] is made of these.
    pub example: &'static str,
}

/// A standard hook: its name, when it fires, and its event's fields.
#[derive(Clone, Copy, Debug)]
pub struct StandardHook {
    /// The name plugins subscribe to.
    pub name: &'static str,
    /// When the event is published.
    pub description: &'static str,
    /// The event's fields. Emitters MAY add others; plugins ignore what they do not know.
    pub fields: &'static [EventField],
}

impl StandardHook {
    /// The field called `name`, if the event has one.
    pub fn field(&self, name: &str) -> Option<&'static EventField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn required(
    name: &'static str,
    ty: FieldType,
    meaning: &'static str,
    example: &'static str,
) -> EventField {
    EventField {
        name,
        ty,
        required: true,
        meaning,
        example,
    }
}

const fn optional(
    name: &'static str,
    ty: FieldType,
    meaning: &'static str,
    example: &'static str,
) -> EventField {
    EventField {
        name,
        ty,
        required: false,
        meaning,
        example,
    }
}

const SCOPE: EventField = required(
    "scope",
    T::String,
    "`platform` (Berth itself) or `session` (one user's session)",
    r#""platform""#,
);
const SESSION: EventField = optional(
    "session",
    T::String,
    "the session's id; present when `scope` is `session`",
    r#""s-42""#,
);
const COMMAND: EventField = required(
    "command",
    T::String,
    "the command line as typed: the program and its arguments, e.g. `git push --force`",
    r#""echo hello""#,
);
const ARGS: EventField = required(
    "args",
    T::StringArray,
    "the command's arguments after the program, as given (already split, unexpanded), e.g. `[\"push\", \"--force\"]`",
    r#"["hello"]"#,
);
const CWD: EventField = required(
    "cwd",
    T::String,
    "absolute path of the directory the command runs in",
    r#""/workspace""#,
);
const ENV: EventField = optional(
    "env",
    T::StringMap,
    "variables the command sets on top of the inherited environment (never the whole environment)",
    r#"{"GREETING": "hello"}"#,
);
const DURATION_MS: EventField = optional(
    "durationMs",
    T::Number,
    "how long it took, in milliseconds",
    "12.5",
);
const PATH: EventField = required(
    "path",
    T::String,
    "the file's path relative to the workspace root, `/`-separated, e.g. `src/main.rs`",
    r#""README.md""#,
);
const SIZE: EventField = optional(
    "size",
    T::Integer,
    "the file's size in bytes afterwards",
    "1024",
);
const SIZE_STATE: EventField = optional("size", T::Integer, "the state's size in bytes", "2048");

const PROMPT: EventField = required(
    "prompt",
    T::String,
    "the prompt text as it will be (or was) sent",
    r#""Say hello""#,
);
const MODEL: EventField = optional(
    "model",
    T::String,
    "the model's name, e.g. `gpt-4o`",
    r#""example-model""#,
);
const DEBUG_SESSION: EventField = required(
    "session",
    T::String,
    "the debugging session's id; `debug_complete` carries the same id",
    r#""dbg-1""#,
);
const TARGET: EventField = optional(
    "target",
    T::String,
    "what is being debugged: a program, a test or a process",
    r#""cargo test parser""#,
);
const PIPELINE: EventField = required("pipeline", T::String, "the pipeline's name", r#""release""#);
const RUN: EventField = required(
    "run",
    T::String,
    "the run's id; `pipeline_complete` carries the same id",
    r#""run-7""#,
);
const KEY: EventField = required(
    "key",
    T::String,
    "what the state is stored under",
    r#""session/s-42""#,
);
const PLUGIN: EventField = required(
    "plugin",
    T::String,
    "the plugin's `metadata.name`",
    r#""calculator""#,
);
const VERSION: EventField = required(
    "version",
    T::String,
    "the plugin's `spec.version`",
    r#""0.1.0""#,
);

/// The standard hooks, in catalogue order. Anything else must be `custom.<name>`.
pub const STANDARD_HOOKS: &[StandardHook] = &[
    StandardHook {
        name: "startup",
        description: "the platform or a session starts",
        fields: &[SCOPE, SESSION],
    },
    StandardHook {
        name: "shutdown",
        description: "the platform or a session stops",
        fields: &[
            SCOPE,
            SESSION,
            optional(
                "reason",
                T::String,
                "why, in words, when known",
                r#""user logged out""#,
            ),
        ],
    },
    StandardHook {
        name: "before_command",
        description: "a command is about to run; filters may modify or veto it",
        fields: &[COMMAND, ARGS, CWD, ENV],
    },
    StandardHook {
        name: "after_command",
        description: "a command finished",
        fields: &[
            COMMAND,
            ARGS,
            CWD,
            required(
                "exitCode",
                T::Integer,
                "the command's exit status (0 for success)",
                "0",
            ),
            DURATION_MS,
        ],
    },
    StandardHook {
        name: "command_error",
        description: "a command failed",
        fields: &[
            COMMAND,
            ARGS,
            CWD,
            required(
                "error",
                T::String,
                "what went wrong, in words",
                r#""exited with status 1""#,
            ),
            optional(
                "exitCode",
                T::Integer,
                "the exit status, when the command ran and exited",
                "1",
            ),
        ],
    },
    StandardHook {
        name: "file_changed",
        description: "a watched file changed",
        fields: &[PATH, SIZE],
    },
    StandardHook {
        name: "file_created",
        description: "a watched file was created",
        fields: &[PATH, SIZE],
    },
    StandardHook {
        name: "file_deleted",
        description: "a watched file was deleted",
        fields: &[PATH],
    },
    StandardHook {
        name: "before_ai_query",
        description: "a prompt is about to be sent to a model; filters may redact or veto",
        fields: &[PROMPT, MODEL],
    },
    StandardHook {
        name: "after_ai_response",
        description: "a model answered",
        fields: &[
            PROMPT,
            required(
                "response",
                T::String,
                "the model's answer text",
                r#""Hello!""#,
            ),
            MODEL,
            DURATION_MS,
        ],
    },
    StandardHook {
        name: "debug_start",
        description: "a debugging session starts",
        fields: &[DEBUG_SESSION, TARGET],
    },
    StandardHook {
        name: "debug_complete",
        description: "a debugging session ends",
        fields: &[DEBUG_SESSION, TARGET, DURATION_MS],
    },
    StandardHook {
        name: "pipeline_start",
        description: "a pipeline run starts",
        fields: &[PIPELINE, RUN],
    },
    StandardHook {
        name: "pipeline_complete",
        description: "a pipeline run ends",
        fields: &[
            PIPELINE,
            RUN,
            required(
                "status",
                T::String,
                "`succeeded`, `failed` or `cancelled`",
                r#""succeeded""#,
            ),
            DURATION_MS,
        ],
    },
    StandardHook {
        name: "memory_save",
        description: "state is about to be persisted",
        fields: &[KEY, SIZE_STATE],
    },
    StandardHook {
        name: "memory_load",
        description: "state was loaded",
        fields: &[KEY, SIZE_STATE],
    },
    StandardHook {
        name: "plugin_installed",
        description: "a plugin was installed",
        fields: &[PLUGIN, VERSION],
    },
    StandardHook {
        name: "plugin_removed",
        description: "a plugin was removed",
        fields: &[PLUGIN, VERSION],
    },
];

/// The standard hook called `name`.
pub fn standard_hook(name: &str) -> Option<&'static StandardHook> {
    STANDARD_HOOKS.iter().find(|h| h.name == name)
}

/// The event `berth plugin test` sends to `hook`: every required catalogue field with its
/// example value. `custom.*` and unknown hooks get an empty object.
pub fn sample_event(name: &str) -> Value {
    let mut event = Map::new();
    if let Some(hook) = standard_hook(name) {
        for field in hook.fields.iter().filter(|f| f.required) {
            let value = serde_json::from_str(field.example)
                .expect("catalogue examples are valid JSON (checked by a test)");
            event.insert(field.name.to_owned(), value);
        }
    }
    Value::Object(event)
}

/// What is wrong with `event` as an event of the standard hook `name`: missing required
/// fields and fields of the wrong type. Empty when it fits (or the hook is not standard).
pub fn event_mismatches(name: &str, event: &Value) -> Vec<String> {
    let Some(hook) = standard_hook(name) else {
        return Vec::new();
    };
    let Some(object) = event.as_object() else {
        return vec!["the event is not a JSON object".to_owned()];
    };
    let mut problems = Vec::new();
    for field in hook.fields {
        match object.get(field.name) {
            None if field.required => {
                problems.push(format!("{} is missing", field.name));
            }
            Some(value) if !field.ty.admits(value) => problems.push(format!(
                "{} is {}, expected {}",
                field.name,
                json_type_name(value),
                field.ty.describe()
            )),
            _ => {}
        }
    }
    problems
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The catalogue as the Markdown table `docs/protocol.md` carries: one row per event field.
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "| hook | published when | field | type | required | meaning |\n|---|---|---|---|---|---|\n",
    );
    for hook in STANDARD_HOOKS {
        for (i, field) in hook.fields.iter().enumerate() {
            let (name, when) = if i == 0 {
                (format!("`{}`", hook.name), hook.description)
            } else {
                (String::new(), "")
            };
            out.push_str(&format!(
                "| {name} | {when} | `{}` | {} | {} | {} |\n",
                field.name,
                field.ty.describe(),
                if field.required { "yes" } else { "no" },
                field.meaning.replace('|', "\\|"),
            ));
        }
    }
    out
}

/// Prefix of user-defined hooks.
pub const CUSTOM_PREFIX: &str = "custom.";

/// True for a standard name or a well-formed `custom.<name>`.
pub fn is_known_hook(name: &str) -> bool {
    standard_hook(name).is_some() || is_custom_hook(name)
}

/// True for `custom.<name>` with a non-empty, lower-case name of `[a-z0-9_.-]`.
pub fn is_custom_hook(name: &str) -> bool {
    name.strip_prefix(CUSTOM_PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 128
            && rest.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    })
}

/// The standard name closest to `name`, for "did you mean" hints.
pub fn closest_hook(name: &str) -> Option<&'static str> {
    STANDARD_HOOKS
        .iter()
        .map(|h| (h.name, edit_distance(h.name, name)))
        .filter(|(_, d)| *d <= 3)
        .min_by_key(|(_, d)| *d)
        .map(|(n, _)| n)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_and_custom_hooks_are_known() {
        assert!(is_known_hook("before_command"));
        assert!(is_known_hook("custom.deploy.done"));
        assert!(!is_known_hook("custom."));
        assert!(!is_known_hook("custom.Upper"));
        assert!(!is_known_hook("before_comand"));
        assert_eq!(closest_hook("before_comand"), Some("before_command"));
        assert_eq!(closest_hook("zzzzzzzzzzzz"), None);
    }

    #[test]
    fn every_example_is_json_of_its_fields_type() {
        for hook in STANDARD_HOOKS {
            for field in hook.fields {
                let value: Value = serde_json::from_str(field.example).unwrap_or_else(|e| {
                    panic!("{}.{}: example is not JSON: {e}", hook.name, field.name)
                });
                assert!(
                    field.ty.admits(&value),
                    "{}.{}: example {} is not {}",
                    hook.name,
                    field.name,
                    field.example,
                    field.ty.describe()
                );
            }
            let mut names: Vec<_> = hook.fields.iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(
                names.len(),
                hook.fields.len(),
                "{}: a field twice",
                hook.name
            );
            assert!(
                hook.fields.iter().any(|f| f.required),
                "{}: an event needs at least one required field",
                hook.name
            );
        }
    }

    #[test]
    fn sample_events_carry_the_required_fields_and_fit_the_catalogue() {
        for hook in STANDARD_HOOKS {
            let sample = sample_event(hook.name);
            assert_eq!(event_mismatches(hook.name, &sample), Vec::<String>::new());
            let keys: Vec<_> = sample.as_object().unwrap().keys().cloned().collect();
            let required: Vec<_> = hook
                .fields
                .iter()
                .filter(|f| f.required)
                .map(|f| f.name.to_owned())
                .collect();
            let mut sorted = required.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "{}", hook.name);
        }
        assert_eq!(
            sample_event("before_command"),
            serde_json::json!({"command": "echo hello", "args": ["hello"], "cwd": "/workspace"})
        );
        assert_eq!(sample_event("custom.deploy.done"), serde_json::json!({}));
        assert_eq!(sample_event("no_such_hook"), serde_json::json!({}));
    }

    #[test]
    fn events_that_do_not_fit_are_described() {
        let bad = serde_json::json!({"command": "ls", "args": "-l", "cwd": "/w"});
        assert_eq!(
            event_mismatches("before_command", &bad),
            vec!["args is a string, expected array of strings".to_owned()]
        );
        let missing = serde_json::json!({"args": [], "cwd": "/w"});
        assert_eq!(
            event_mismatches("before_command", &missing),
            vec!["command is missing".to_owned()]
        );
        assert_eq!(
            event_mismatches("file_changed", &serde_json::json!([1])),
            vec!["the event is not a JSON object".to_owned()]
        );
        assert!(event_mismatches("custom.x", &serde_json::json!(1)).is_empty());
    }

    #[test]
    fn catalogue_markdown_has_a_row_per_field() {
        let table = catalogue_markdown();
        let rows = table.lines().count() - 2;
        let fields: usize = STANDARD_HOOKS.iter().map(|h| h.fields.len()).sum();
        assert_eq!(rows, fields);
        assert!(table.contains(
            "| `before_command` | a command is about to run; filters may modify or veto it | `command` | string | yes |"
        ));
        assert!(table.contains("|  |  | `args` | array of strings | yes |"));
    }

    const BEGIN: &str = "<!-- hook-catalogue:begin -->";
    const END: &str = "<!-- hook-catalogue:end -->";

    /// `docs/protocol.md` with the catalogue between the markers replaced by `table`.
    fn with_table(doc: &str, table: &str) -> Option<String> {
        let start = doc.find(BEGIN)? + BEGIN.len();
        let end = start + doc[start..].find(END)?;
        Some(format!("{}\n{table}{}", &doc[..start], &doc[end..]))
    }

    #[test]
    fn hook_catalogue_in_protocol_md_matches_the_module() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let expected = with_table(&doc, &catalogue_markdown())
            .unwrap_or_else(|| panic!("{} lacks the {BEGIN} … {END} markers", path.display()));
        if expected == doc {
            return;
        }
        if std::env::var_os("BERTH_UPDATE_DOCS").is_some() {
            std::fs::write(&path, expected).unwrap();
            return;
        }
        panic!(
            "the hook catalogue in docs/protocol.md differs from crates/api/src/hooks.rs; \
             regenerate it with `BERTH_UPDATE_DOCS=1 cargo test -p berth-api hook_catalogue`"
        );
    }
}
