//! Exact equality of an output with a manifest example, numbers by value, and what differs.

use serde_json::Value;

/// How many differences a report names before it stops.
const SHOWN: usize = 5;

/// Equality of JSON values where numbers compare by value (`14` equals `14.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    differences(a, b).is_empty()
}

/// What differs between the example's `expected` output and the plugin's `got`: differing,
/// extra and missing fields, by path (`message`, `items[2].name`).
pub fn differences(expected: &Value, got: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk("", expected, got, &mut found);
    found
}

/// `differences` as one line, at most [`SHOWN`] of them.
pub fn describe_differences(expected: &Value, got: &Value) -> String {
    let found = differences(expected, got);
    let mut line = found
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if found.len() > SHOWN {
        line.push_str(&format!("; and {} more", found.len() - SHOWN));
    }
    line
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(path: &str, expected: &Value, got: &Value, found: &mut Vec<String>) {
    let shown = if path.is_empty() { "the output" } else { path };
    match (expected, got) {
        (Value::Number(x), Value::Number(y)) => {
            let same = match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => x == y,
            };
            if !same {
                found.push(format!("{shown} is {got}, expected {expected}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, found);
            }
            if x.len() != y.len() {
                found.push(format!(
                    "{shown} has {} elements, expected {}",
                    y.len(),
                    x.len()
                ));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (key, want) in x {
                match y.get(key) {
                    Some(have) => walk(&field(path, key), want, have, found),
                    None => found.push(format!(
                        "missing field {} (expected {want})",
                        field(path, key)
                    )),
                }
            }
            for (key, have) in y {
                if !x.contains_key(key) {
                    found.push(format!(
                        "extra field {} = {have} (the example lists every field)",
                        field(path, key)
                    ));
                }
            }
        }
        _ if expected == got => {}
        _ => found.push(format!("{shown} is {got}, expected {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_equal(&json!({"result": 14}), &json!({"result": 14.0})));
        assert!(!json_equal(
            &json!({"result": 14}),
            &json!({"result": 14.5})
        ));
        assert!(!json_equal(&json!([1, 2]), &json!([1])));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    #[test]
    fn differences_name_differing_extra_and_missing_fields() {
        let expected =
            json!({"message": "Hello, world!", "n": 1, "items": [{"k": 1}], "gone": true});
        let got =
            json!({"message": "Hello!", "n": 1.0, "items": [{"k": 2}, {"k": 3}], "debug": "x"});
        let mut found = differences(&expected, &got);
        found.sort();
        assert_eq!(
            found,
            [
                r#"extra field debug = "x" (the example lists every field)"#,
                "items has 2 elements, expected 1",
                "items[0].k is 2, expected 1",
                r#"message is "Hello!", expected "Hello, world!""#,
                "missing field gone (expected true)",
            ]
        );
    }

    #[test]
    fn a_whole_output_of_another_type_is_named_as_such() {
        assert_eq!(
            describe_differences(&json!({"a": 1}), &json!([1])),
            r#"the output is [1], expected {"a":1}"#
        );
    }
}
