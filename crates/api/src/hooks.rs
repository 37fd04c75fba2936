//! The hook catalogue: the standard events a plugin can subscribe to.

/// Standard hook names. Anything else must be `custom.<name>`.
pub const STANDARD_HOOKS: &[(&str, &str)] = &[
    ("startup", "the platform or a session starts"),
    ("shutdown", "the platform or a session stops"),
    (
        "before_command",
        "a command is about to run; filters may modify or veto it",
    ),
    ("after_command", "a command finished"),
    ("command_error", "a command failed"),
    ("file_changed", "a watched file changed"),
    ("file_created", "a watched file was created"),
    ("file_deleted", "a watched file was deleted"),
    (
        "before_ai_query",
        "a prompt is about to be sent to a model; filters may redact or veto",
    ),
    ("after_ai_response", "a model answered"),
    ("debug_start", "a debugging session starts"),
    ("debug_complete", "a debugging session ends"),
    ("pipeline_start", "a pipeline run starts"),
    ("pipeline_complete", "a pipeline run ends"),
    ("memory_save", "state is about to be persisted"),
    ("memory_load", "state was loaded"),
    ("plugin_installed", "a plugin was installed"),
    ("plugin_removed", "a plugin was removed"),
];

/// Prefix of user-defined hooks.
pub const CUSTOM_PREFIX: &str = "custom.";

/// True for a standard name or a well-formed `custom.<name>`.
pub fn is_known_hook(name: &str) -> bool {
    STANDARD_HOOKS.iter().any(|(n, _)| *n == name) || is_custom_hook(name)
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
        .map(|(n, _)| (*n, edit_distance(n, name)))
        .filter(|(_, d)| *d <= 3)
        .min_by_key(|(_, d)| *d)
        .map(|(n, _)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
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
}
