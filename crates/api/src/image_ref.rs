//! The image-reference check of `spec.image`, cheap for the common shape.
//!
//! The OCI reference grammar is one large regular expression that `oci-spec` compiles on
//! first use; that compilation is most of the cost of `berth install` before it talks to
//! anyone. Most references have a plain shape (`[registry[:port]/]path[:tag]`), which
//! [`is_plain_reference`] recognises by hand. It only ever says "valid" for a string the
//! library accepts too; everything else (digests, odd input, errors to explain) goes to the
//! library, whose answer stands.

use std::str::FromStr;

use oci_spec::distribution::{ParseError, Reference};

/// Longest repository name the grammar allows.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Longest tag the grammar allows.
const TAG_LENGTH_MAX: usize = 128;

/// Checks an image reference: `Ok` when it is one, else the library's reason.
pub fn check_reference(reference: &str) -> Result<(), ParseError> {
    if is_plain_reference(reference) {
        return Ok(());
    }
    Reference::from_str(reference).map(|_| ())
}

/// Whether `s` is `[domain[:port]/]component(/component)*[:tag]` in the OCI grammar's
/// terms, without a digest. `false` means "not recognised here", not "invalid".
pub fn is_plain_reference(s: &str) -> bool {
    let last_slash = s.rfind('/');
    let (name, tag) = match s.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&s[..colon], Some(&s[colon + 1..]))
        }
        _ => (s, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) || name.len() > NAME_TOTAL_LENGTH_MAX {
        return false;
    }
    let mut segments = name.split('/');
    let Some(first) = segments.next() else {
        return false;
    };
    let rest: Vec<&str> = segments.collect();
    if rest.is_empty() {
        return is_path_component(first);
    }
    (is_path_component(first) || is_domain(first)) && rest.iter().all(|c| is_path_component(c))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &s[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Host name labels (ASCII letters, digits, inner `-`) joined by `.`, with an optional
/// numeric port.
fn is_domain(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (the grammar's `\w` also takes other letters; those
/// go to the library).
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASES: &[&str] = &[
        "berth/calculator:0.1.0",
        "calculator",
        "calculator:latest",
        "registry.example.com/team/calc:1.2.3-rc.1",
        "localhost:5000/calc:dev",
        "localhost:5000/calc",
        "Registry.Example.com:443/a/b/c",
        "a__b/c--d/e.f_g:T_1.x-y",
        "a___b/c",
        "a._b",
        "-a/b",
        "a-/b",
        "a//b",
        "/a",
        "a/",
        "A/b",
        "a/B",
        "UPPER CASE",
        "a:",
        "a:-x",
        "a:.x",
        "a:b:c",
        "a/b:c/d",
        "ex-ample.com:/a",
        "ex-ample.com:12a/a",
        "-example.com/a",
        "example-.com/a",
        "exa_mple.com/a",
        "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "a:b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "a:tägé",
        "",
        ":",
        "a..b",
        "a.b",
        "a-----b",
    ];

    #[test]
    fn the_hand_check_never_accepts_what_the_library_refuses() {
        for case in CASES {
            if is_plain_reference(case) {
                assert!(
                    Reference::from_str(case).is_ok(),
                    "{case:?} accepted by hand, refused by the library"
                );
            }
        }
        let long_tag = format!("a:{}", "x".repeat(129));
        let long_name = format!("{}:1", "a".repeat(256));
        for case in [long_tag, long_name] {
            assert!(!is_plain_reference(&case));
            assert!(check_reference(&case).is_err());
        }
    }

    #[test]
    fn the_answer_is_the_librarys_for_every_case() {
        for case in CASES {
            assert_eq!(
                check_reference(case).is_ok(),
                Reference::from_str(case).is_ok(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn common_references_do_not_need_the_library() {
        for case in [
            "berth/calculator:0.1.0",
            "calculator",
            "registry.example.com/team/calc:1.2.3-rc.1",
            "localhost:5000/calc:dev",
        ] {
            assert!(is_plain_reference(case), "{case:?}");
        }
        assert!(!is_plain_reference("UPPER CASE"));
    }
}
