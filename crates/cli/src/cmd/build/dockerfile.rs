//! Checks that a plugin's Dockerfile agrees with its manifest, before anything is built.

use berth_api::Plugin;
use berth_contract::protocol::MANIFEST_LABEL;

/// Files `berth build` puts in the build context; COPY and ADD can use nothing else.
pub const CONTEXT_FILES: [&str; 3] = ["Dockerfile", "berth.yaml", "plugin"];

/// One instruction, with the line it starts on.
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

/// Joins continuation lines, drops comments and blank lines.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = line.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        let (keyword, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instruction {
            line: start,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
    }
    if let Some((start, acc)) = pending {
        let (keyword, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instruction {
            line: start,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
    }
    out
}

/// Splits `a=b "c d"=e` into words, honouring double and single quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `KEY=VALUE` pairs of LABEL and ENV (and the legacy `ENV KEY VALUE`).
fn pairs(args: &str, legacy_space_form: bool) -> Vec<(String, String)> {
    let ws = words(args);
    if legacy_space_form && ws.first().is_some_and(|w| !w.contains('=')) {
        let key = ws[0].clone();
        return vec![(key, ws[1..].join(" "))];
    }
    ws.into_iter()
        .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Every disagreement between the Dockerfile at `file` and the manifest, one message each.
pub fn check(file: &str, text: &str, plugin: &Plugin) -> Vec<String> {
    let port = plugin.spec.port;
    let mut problems = Vec::new();
    let instructions = instructions(text);
    let mut saw_user = false;
    let mut saw_from = false;
    for ins in &instructions {
        let at = format!("{file}: line {}", ins.line);
        match ins.keyword.as_str() {
            "FROM" => saw_from = true,
            "USER" => {
                saw_user = true;
                if ins.args != "65532:65532" && ins.args != "65532" {
                    problems.push(format!(
                        "{at}: USER {} — plugins run as 65532:65532 (the runtime enforces it); write USER 65532:65532",
                        ins.args
                    ));
                }
            }
            "EXPOSE" => {
                let exposed: Vec<&str> = ins.args.split_whitespace().collect();
                let matches = exposed
                    .iter()
                    .any(|p| p.split('/').next() == Some(port.to_string().as_str()));
                if !matches {
                    problems.push(format!(
                        "{at}: EXPOSE {} but the manifest's spec.port is {port}; expose {port} or change spec.port",
                        ins.args
                    ));
                }
            }
            "ENV" => {
                for (key, value) in pairs(&ins.args, true) {
                    if key == "BERTH_PORT" && value != port.to_string() {
                        problems.push(format!(
                            "{at}: ENV BERTH_PORT={value} but the manifest's spec.port is {port}; make them equal"
                        ));
                    }
                }
            }
            "LABEL" => {
                for (key, value) in pairs(&ins.args, false) {
                    match key.as_str() {
                        k if k == MANIFEST_LABEL
                            && value != "$BERTH_MANIFEST"
                            && value != "${BERTH_MANIFEST}" =>
                        {
                            problems.push(format!(
                                "{at}: LABEL {MANIFEST_LABEL} is written out by hand; it must be the manifest itself: ARG BERTH_MANIFEST then LABEL {MANIFEST_LABEL}=\"${{BERTH_MANIFEST}}\""
                            ));
                        }
                        "org.opencontainers.image.title" if value != plugin.name() => {
                            problems.push(format!(
                                "{at}: LABEL org.opencontainers.image.title={value} but the manifest's metadata.name is {}; make them equal",
                                plugin.name()
                            ));
                        }
                        "org.opencontainers.image.version" if value != plugin.spec.version => {
                            problems.push(format!(
                                "{at}: LABEL org.opencontainers.image.version={value} but the manifest's spec.version is {}; make them equal",
                                plugin.spec.version
                            ));
                        }
                        _ => {}
                    }
                }
            }
            "COPY" | "ADD" => {
                let ws: Vec<String> = words(&ins.args)
                    .into_iter()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let sources = ws.split_last().map(|(_, s)| s).unwrap_or(&[]);
                for src in sources {
                    let name = src.trim_start_matches("./");
                    if !CONTEXT_FILES.contains(&name) {
                        problems.push(format!(
                            "{at}: {} {src}: the build context holds only {}; copy `plugin` (the static binary berth build compiles)",
                            ins.keyword,
                            CONTEXT_FILES.join(", ")
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_from {
        problems.push(format!("{file}: no FROM; start with FROM scratch"));
    }
    if !saw_user {
        problems.push(format!(
            "{file}: no USER; add USER 65532:65532 so the image does not default to root"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{Manifest, load_manifests};

    fn plugin(port: u16) -> Plugin {
        let yaml = format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: demo}}\nspec: {{image: berth/demo:0.2.0, version: 0.2.0, port: {port}}}\n"
        );
        match load_manifests("m.yaml", yaml.as_bytes())
            .documents
            .remove(0)
            .manifest
        {
            Manifest::Plugin(p) => *p,
            Manifest::Grant(_) => unreachable!(),
        }
    }

    const GOOD: &str = r#"# comment
FROM scratch
ARG BERTH_MANIFEST
LABEL dev.berth.manifest="${BERTH_MANIFEST}" \
      org.opencontainers.image.title=demo
COPY plugin /plugin
USER 65532:65532
ENV BERTH_PORT=8080
EXPOSE 8080/tcp
ENTRYPOINT ["/plugin"]
"#;

    #[test]
    fn a_dockerfile_that_agrees_has_no_problems() {
        assert_eq!(
            check("Dockerfile", GOOD, &plugin(8080)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn expose_and_env_port_must_match_spec_port() {
        let problems = check("d/Dockerfile", GOOD, &plugin(9090));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("d/Dockerfile: line 8: ENV BERTH_PORT=8080"));
        assert!(
            problems[1].contains("line 9: EXPOSE 8080/tcp but the manifest's spec.port is 9090")
        );
    }

    #[test]
    fn root_or_missing_user_is_refused() {
        let root = GOOD.replace("USER 65532:65532", "USER root");
        assert!(check("Dockerfile", &root, &plugin(8080))[0].contains("USER root"));
        let none = GOOD.replace("USER 65532:65532\n", "");
        assert!(check("Dockerfile", &none, &plugin(8080))[0].contains("no USER"));
    }

    #[test]
    fn labels_that_contradict_the_manifest_are_refused() {
        let text = GOOD
            .replace("title=demo", "title=other")
            .replace("\"${BERTH_MANIFEST}\"", "'name: demo'");
        let problems = check("Dockerfile", &text, &plugin(8080));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("written out by hand"));
        assert!(problems[1].contains("title=other"));
        assert!(problems[1].contains("line 4"));
    }

    #[test]
    fn copying_files_outside_the_context_is_refused() {
        let text = GOOD.replace(
            "COPY plugin /plugin",
            "COPY --chown=1:1 target/release/demo /plugin",
        );
        let problems = check("Dockerfile", &text, &plugin(8080));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("target/release/demo"),
            "{}",
            problems[0]
        );
    }
}
