//! `text-processor`: tokenizes text and computes counts, top terms and summary statistics.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_plugin_sdk::{Context, Error, HookAction, HookMode, Plugin};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod text;

/// Longest text accepted, in bytes (the manifest says the same).
const MAX_TEXT: usize = 1024 * 1024;
/// Terms returned by `top_terms` when `n` is absent.
const DEFAULT_TOP: usize = 10;

#[derive(Deserialize)]
struct TextInput {
    text: String,
}

#[derive(Deserialize)]
struct TopTermsInput {
    text: String,
    n: Option<usize>,
}

#[derive(Serialize)]
struct Tokens {
    tokens: Vec<String>,
}

#[derive(Serialize)]
struct Term {
    term: String,
    count: usize,
}

#[derive(Serialize)]
struct Terms {
    terms: Vec<Term>,
}

fn check_len(text: &str) -> Result<(), Error> {
    if text.len() > MAX_TEXT {
        return Err(Error::invalid_input(format!(
            "text is {} bytes; the limit is {MAX_TEXT}",
            text.len()
        )));
    }
    Ok(())
}

async fn tokenize(input: TextInput, _ctx: Context) -> Result<Tokens, Error> {
    check_len(&input.text)?;
    Ok(Tokens {
        tokens: text::tokenize(&input.text),
    })
}

async fn stats(input: TextInput, _ctx: Context) -> Result<text::Stats, Error> {
    check_len(&input.text)?;
    Ok(text::stats(&input.text))
}

async fn top_terms(input: TopTermsInput, _ctx: Context) -> Result<Terms, Error> {
    check_len(&input.text)?;
    let n = input.n.unwrap_or(DEFAULT_TOP);
    if !(1..=1000).contains(&n) {
        return Err(Error::invalid_input("n must be between 1 and 1000"));
    }
    Ok(Terms {
        terms: text::top_terms(&input.text, n)
            .into_iter()
            .map(|(term, count)| Term { term, count })
            .collect(),
    })
}

fn plugin() -> Plugin {
    let changes = Arc::new(AtomicU64::new(0));
    Plugin::new("text-processor", env!("CARGO_PKG_VERSION"))
        .capability("tokenize", tokenize)
        .capability("stats", stats)
        .capability("top_terms", top_terms)
        .hook(
            "file_changed",
            HookMode::Observe,
            move |event: Value, _ctx: Context| {
                let seen = changes.fetch_add(1, Ordering::Relaxed) + 1;
                async move {
                    let path = event.get("path").and_then(Value::as_str).unwrap_or("?");
                    berth_plugin_sdk::tracing::info!(path, changes_seen = seen, "file changed");
                    Ok(HookAction::Continue)
                }
            },
        )
}

fn main() -> ExitCode {
    plugin().run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[tokio::test]
    async fn outputs_match_the_manifest_examples() {
        let t = tokenize(
            TextInput {
                text: "Hello, hello world".into(),
            },
            Context::new(),
        )
        .await
        .unwrap();
        assert_eq!(value(t), json!({"tokens": ["hello", "hello", "world"]}));
        let t = top_terms(
            TopTermsInput {
                text: "apple banana apple cherry apple banana".into(),
                n: Some(2),
            },
            Context::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            value(t),
            json!({"terms": [{"term": "apple", "count": 3}, {"term": "banana", "count": 2}]})
        );
    }

    #[tokio::test]
    async fn stats_output_uses_camel_case_fields() {
        let s = stats(
            TextInput {
                text: "One two. Three!\nFour".into(),
            },
            Context::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            value(s),
            json!({"words": 4, "chars": 20, "lines": 2, "sentences": 3, "uniqueWords": 4, "avgWordLength": 3.75})
        );
    }

    #[tokio::test]
    async fn top_terms_refuses_n_out_of_range() {
        let e = top_terms(
            TopTermsInput {
                text: "a".into(),
                n: Some(0),
            },
            Context::new(),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(e.code(), "invalid_input");
    }

    #[test]
    fn describe_subscribes_to_file_changed_as_observer() {
        let d = plugin().describe();
        assert_eq!(d.hooks.len(), 1);
        assert_eq!(d.hooks[0].mode, HookMode::Observe);
    }
}
