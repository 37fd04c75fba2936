//! `.dockerignore` as the Docker CLI reads it, so `berth build` sends the context
//! `docker build` would: patterns are relative to the context root (`*.pyc` matches only at
//! the top; `**/*.pyc` at any depth), a pattern that matches a folder excludes everything
//! in it, `!` re-includes, and the last matching line wins.

/// One piece of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A character that must appear as is.
    Literal(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `?`: one character other than `/`.
    Question,
    /// `**/` (or `**` inside a pattern): nothing, or any run of characters ending in `/`.
    AnyFolders,
    /// `**` at the end of a pattern: anything.
    AnyRest,
    /// `[...]`: one character from (or, negated, not from) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One line of a `.dockerignore`.
#[derive(Clone, Debug)]
struct Pattern {
    tokens: Vec<Token>,
    /// `!pattern`: a match re-includes.
    exception: bool,
}

/// The patterns of one `.dockerignore`, in file order.
#[derive(Clone, Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// Cleans a path the way Go's `filepath.Clean` does for relative, `/`-separated paths.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() {
                    Token::AnyRest
                } else {
                    Token::AnyFolders
                });
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Question),
            '\\' => {
                i += 1;
                let c = chars
                    .get(i)
                    .ok_or_else(|| format!("{pattern:?} ends in a lone backslash"))?;
                tokens.push(Token::Literal(*c));
            }
            '[' => {
                i += 1;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(format!("{pattern:?} has an unclosed ["));
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        i += 1;
                        *chars
                            .get(i)
                            .ok_or_else(|| format!("{pattern:?} has an unclosed ["))?
                    } else {
                        c
                    };
                    let hi = if chars.get(i + 1) == Some(&'-') && chars.get(i + 2) != Some(&']') {
                        i += 2;
                        *chars
                            .get(i)
                            .ok_or_else(|| format!("{pattern:?} has an unclosed ["))?
                    } else {
                        lo
                    };
                    ranges.push((lo, hi));
                    i += 1;
                }
                tokens.push(Token::Class { negated, ranges });
            }
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// Whether `tokens` match all of `text`.
fn matches(tokens: &[Token], text: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match first {
        Token::Literal(c) => text.first() == Some(c) && matches(rest, &text[1..]),
        Token::Question => text.first().is_some_and(|c| *c != '/') && matches(rest, &text[1..]),
        Token::Class { negated, ranges } => {
            text.first().is_some_and(|c| {
                *c != '/' && ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated
            }) && matches(rest, &text[1..])
        }
        Token::Star => {
            let run = text.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|n| matches(rest, &text[n..]))
        }
        Token::AnyFolders => {
            matches(rest, text)
                || (0..text.len()).any(|n| text[n] == '/' && matches(rest, &text[n + 1..]))
        }
        Token::AnyRest => true,
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        matches(&self.tokens, &chars)
    }
}

impl DockerIgnore {
    /// Reads the text of a `.dockerignore`; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let body = clean(body);
            let body = body.strip_prefix('/').unwrap_or(&body);
            let tokens = compile(body).map_err(|e| format!("line {}: {e}", n + 1))?;
            patterns.push(Pattern { tokens, exception });
        }
        Ok(Self { patterns })
    }

    /// Whether any line re-includes (`!`); without one, an excluded folder can be skipped.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out: the last pattern
    /// that matches it or one of its parent folders decides.
    pub fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = path
            .char_indices()
            .filter(|(_, c)| *c == '/')
            .map(|(i, _)| &path[..i])
            .collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the answer is worth matching.
            if pattern.exception != excluded {
                continue;
            }
            if pattern.matches(path) || parents.iter().any(|p| pattern.matches(p)) {
                excluded = !pattern.exception;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap()
    }

    #[test]
    fn a_plain_name_matches_at_the_root_only_and_excludes_what_is_inside() {
        let i = ignore("tests\n__pycache__\n");
        assert!(i.excludes("tests"));
        assert!(i.excludes("tests/test_app.py"));
        assert!(i.excludes("__pycache__/x.pyc"));
        assert!(!i.excludes("berth_plugin/__pycache__/x.pyc"));
        assert!(!i.excludes("testsuite.py"));
    }

    #[test]
    fn double_star_matches_any_number_of_folders() {
        let i = ignore("**/__pycache__\n**/*.pyc\nbuild/**\n");
        assert!(i.excludes("__pycache__/a"));
        assert!(i.excludes("berth_plugin/__pycache__/a.cpython-311.pyc"));
        assert!(i.excludes("a/b/c.pyc"));
        assert!(i.excludes("c.pyc"));
        assert!(i.excludes("build/x/y"));
        assert!(!i.excludes("main.py"));
    }

    #[test]
    fn single_star_and_question_mark_stay_within_one_folder() {
        let i = ignore("*.md\ndocs/?.txt\n");
        assert!(i.excludes("README.md"));
        assert!(!i.excludes("docs/README.md"));
        assert!(i.excludes("docs/a.txt"));
        assert!(!i.excludes("docs/ab.txt"));
    }

    #[test]
    fn the_last_matching_line_wins_and_exceptions_reinclude() {
        let i = ignore("# comment\n*.md\n!README.md\n");
        assert!(i.excludes("CHANGES.md"));
        assert!(!i.excludes("README.md"));
        let i = ignore("!README.md\n*.md\n");
        assert!(i.excludes("README.md"));
        assert!(i.has_exceptions());
        assert!(!ignore("a\n").has_exceptions());
    }

    #[test]
    fn leading_slash_and_dot_segments_are_cleaned() {
        let i = ignore("/node_modules\n./dist/\n");
        assert!(i.excludes("node_modules/x/index.js"));
        assert!(i.excludes("dist/main.js"));
        assert!(!i.excludes("src/dist/main.js"));
    }

    #[test]
    fn character_classes_and_escapes() {
        let i = ignore("[a-c].txt\n[^x]y\n\\*star\n");
        assert!(i.excludes("b.txt"));
        assert!(!i.excludes("d.txt"));
        assert!(i.excludes("zy"));
        assert!(!i.excludes("xy"));
        assert!(i.excludes("*star"));
        assert!(!i.excludes("astar"));
        assert!(
            DockerIgnore::parse("ok\n[abc\n")
                .unwrap_err()
                .starts_with("line 2:")
        );
    }
}
