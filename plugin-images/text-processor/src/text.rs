//! Tokenizing and counting, as pure functions.

use std::collections::HashMap;

/// English words too common to be interesting terms.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "my", "no",
    "not", "of", "on", "or", "our", "out", "she", "so", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "up", "us", "was", "we", "were", "what",
    "when", "which", "who", "will", "with", "would", "you", "your",
];

/// Lower-cased words: runs of letters and digits, keeping apostrophes inside a word (`don't`).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if (c == '\'' || c == '’')
            && !current.is_empty()
            && chars.peek().is_some_and(|n| n.is_alphanumeric())
        {
            current.push('\'');
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Counts and averages of a text.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Word tokens.
    pub words: usize,
    /// Unicode scalar values.
    pub chars: usize,
    /// Lines, as an editor counts them (a final newline does not start a new one).
    pub lines: usize,
    /// Runs of text ended by `.`, `!` or `?`, or by the end of the text.
    pub sentences: usize,
    /// Distinct word tokens.
    pub unique_words: usize,
    /// Mean characters per word, 0 without words.
    pub avg_word_length: f64,
}

/// Computes [`Stats`].
pub fn stats(text: &str) -> Stats {
    let tokens = tokenize(text);
    let unique: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let letters: usize = tokens.iter().map(|t| t.chars().count()).sum();
    let avg = if tokens.is_empty() {
        0.0
    } else {
        // Two decimals are plenty for a summary and keep the output stable.
        ((letters as f64 / tokens.len() as f64) * 100.0).round() / 100.0
    };
    Stats {
        words: tokens.len(),
        chars: text.chars().count(),
        lines: text.lines().count(),
        sentences: sentences(text),
        unique_words: unique.len(),
        avg_word_length: avg,
    }
}

fn sentences(text: &str) -> usize {
    let mut count = 0;
    let mut has_words = false;
    for c in text.chars() {
        if matches!(c, '.' | '!' | '?') {
            if has_words {
                count += 1;
                has_words = false;
            }
        } else if c.is_alphanumeric() {
            has_words = true;
        }
    }
    count + usize::from(has_words)
}

/// The `n` most frequent terms without stop words, most frequent first, ties alphabetical.
pub fn top_terms(text: &str, n: usize) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for token in tokenize(text) {
        if !STOP_WORDS.contains(&token.as_str()) {
            *counts.entry(token).or_default() += 1;
        }
    }
    let mut terms: Vec<(String, usize)> = counts.into_iter().collect();
    terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    terms.truncate(n);
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_lowercases_and_drops_punctuation() {
        assert_eq!(tokenize("Hello, hello world"), ["hello", "hello", "world"]);
        assert_eq!(tokenize("  --  "), Vec::<String>::new());
    }

    #[test]
    fn tokenize_keeps_inner_apostrophes_and_unicode_letters() {
        assert_eq!(tokenize("Don't 'quote' me"), ["don't", "quote", "me"]);
        assert_eq!(tokenize("Straße ÉTÉ 42x"), ["straße", "été", "42x"]);
    }

    #[test]
    fn stats_counts_words_chars_lines_and_sentences() {
        let s = stats("One two. Three!\nFour");
        assert_eq!(
            s,
            Stats {
                words: 4,
                chars: 20,
                lines: 2,
                sentences: 3,
                unique_words: 4,
                avg_word_length: 3.75,
            }
        );
    }

    #[test]
    fn stats_of_empty_text_is_all_zero() {
        let s = stats("");
        assert_eq!((s.words, s.chars, s.lines, s.sentences), (0, 0, 0, 0));
        assert_eq!(s.avg_word_length, 0.0);
    }

    #[test]
    fn stats_does_not_count_a_final_newline_as_a_line() {
        assert_eq!(stats("a\nb\n").lines, 2);
        assert_eq!(stats("Wait... what?!").sentences, 2);
    }

    #[test]
    fn top_terms_orders_by_count_then_name_and_skips_stop_words() {
        let terms = top_terms("apple banana apple cherry apple banana the the the the", 2);
        assert_eq!(terms, [("apple".into(), 3), ("banana".into(), 2)]);
        let tie = top_terms("pear fig", 5);
        assert_eq!(tie, [("fig".into(), 1), ("pear".into(), 1)]);
    }
}
