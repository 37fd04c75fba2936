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

/// What the build context of a Dockerfile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// The Rust path: only [`CONTEXT_FILES`], so COPY and ADD can name nothing else.
    StaticBinary,
    /// The plugin folder itself (less `.dockerignore`); any source is the builder's to check.
    Folder,
}

/// Whether `value` expands the build argument `BERTH_MANIFEST` and nothing else.
fn is_manifest_arg(value: &str) -> bool {
    value == "$BERTH_MANIFEST" || value == "${BERTH_MANIFEST}"
}

/// Every disagreement between the Dockerfile at `file` and the manifest, one message each.
/// Only the final stage becomes the image, so USER, EXPOSE, ENV and LABEL are checked
/// there; earlier stages may build as any user.
pub fn check(file: &str, text: &str, plugin: &Plugin, context: Context) -> Vec<String> {
    let port = plugin.spec.port;
    let mut problems = Vec::new();
    let instructions = instructions(text);
    let final_from = instructions.iter().rposition(|i| i.keyword == "FROM");
    let Some(final_from) = final_from else {
        problems.push(format!(
            "{file}: no FROM; start with FROM scratch (or FROM the base image your language needs)"
        ));
        return problems;
    };
    let final_line = instructions[final_from].line;
    let mut last_user: Option<&Instruction> = None;
    let mut exposes = false;
    let mut manifest_arg = false;
    let mut manifest_label = false;
    for (index, ins) in instructions.iter().enumerate() {
        let at = format!("{file}: line {}", ins.line);
        let in_final = index > final_from;
        match ins.keyword.as_str() {
            "USER" if in_final => last_user = Some(ins),
            "ARG" if in_final => {
                manifest_arg |= words(&ins.args)
                    .iter()
                    .any(|w| w.split('=').next() == Some("BERTH_MANIFEST"));
            }
            "EXPOSE" if in_final => {
                exposes = true;
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
            "ENV" if in_final => {
                for (key, value) in pairs(&ins.args, true) {
                    if key == "BERTH_PORT" && value != port.to_string() {
                        problems.push(format!(
                            "{at}: ENV BERTH_PORT={value} but the manifest's spec.port is {port}; make them equal"
                        ));
                    }
                }
            }
            "LABEL" if in_final => {
                for (key, value) in pairs(&ins.args, false) {
                    match key.as_str() {
                        k if k == MANIFEST_LABEL && !is_manifest_arg(&value) => {
                            manifest_label = true;
                            problems.push(format!(
                                "{at}: LABEL {MANIFEST_LABEL} is written out by hand; it must be the manifest itself: ARG BERTH_MANIFEST then LABEL {MANIFEST_LABEL}=\"${{BERTH_MANIFEST}}\""
                            ));
                        }
                        k if k == MANIFEST_LABEL => {
                            manifest_label = true;
                            if !manifest_arg {
                                problems.push(format!(
                                    "{at}: LABEL {MANIFEST_LABEL} uses BERTH_MANIFEST before this stage declares it, so the label is empty; put ARG BERTH_MANIFEST after line {final_line}'s FROM and before this LABEL"
                                ));
                            }
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
            "COPY" | "ADD" if context == Context::StaticBinary => {
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
    match last_user {
        None => problems.push(format!(
            "{file}: no USER in the final stage (line {final_line}'s FROM onwards); add USER 65532:65532 so the image does not default to root"
        )),
        Some(user) if user.args != "65532:65532" && user.args != "65532" => {
            problems.push(format!(
                "{file}: line {}: USER {} — plugins run as 65532:65532 (the runtime enforces it); write USER 65532:65532",
                user.line, user.args
            ));
        }
        Some(_) => {}
    }
    if !exposes {
        problems.push(format!(
            "{file}: the final stage (line {final_line}'s FROM onwards) has no EXPOSE; add EXPOSE {port} (the manifest's spec.port)"
        ));
    }
    if !manifest_label {
        problems.push(format!(
            "{file}: the final stage (line {final_line}'s FROM onwards) has no {MANIFEST_LABEL} label; add ARG BERTH_MANIFEST then LABEL {MANIFEST_LABEL}=\"${{BERTH_MANIFEST}}\" after that FROM"
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
            check("Dockerfile", GOOD, &plugin(8080), Context::StaticBinary),
            Vec::<String>::new()
        );
    }

    #[test]
    fn expose_and_env_port_must_match_spec_port() {
        let problems = check("d/Dockerfile", GOOD, &plugin(9090), Context::StaticBinary);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("d/Dockerfile: line 8: ENV BERTH_PORT=8080"));
        assert!(
            problems[1].contains("line 9: EXPOSE 8080/tcp but the manifest's spec.port is 9090")
        );
    }

    #[test]
    fn root_or_missing_user_is_refused() {
        let root = GOOD.replace("USER 65532:65532", "USER root");
        assert!(
            check("Dockerfile", &root, &plugin(8080), Context::StaticBinary)[0]
                .contains("USER root")
        );
        let none = GOOD.replace("USER 65532:65532\n", "");
        assert!(
            check("Dockerfile", &none, &plugin(8080), Context::StaticBinary)[0].contains("no USER")
        );
    }

    #[test]
    fn labels_that_contradict_the_manifest_are_refused() {
        let text = GOOD
            .replace("title=demo", "title=other")
            .replace("\"${BERTH_MANIFEST}\"", "'name: demo'");
        let problems = check("Dockerfile", &text, &plugin(8080), Context::StaticBinary);
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
        let problems = check("Dockerfile", &text, &plugin(8080), Context::StaticBinary);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("target/release/demo"),
            "{}",
            problems[0]
        );
    }

    const MULTI_STAGE: &str = r#"ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE} AS build
USER root
RUN echo building
COPY src/ /src/
FROM ${PYTHON_IMAGE}
COPY --from=build /src /app
ARG BERTH_MANIFEST
LABEL dev.berth.manifest="${BERTH_MANIFEST}"
USER 65532:65532
ENV BERTH_PORT=8080
EXPOSE 8080
ENTRYPOINT ["python3", "/app/main.py"]
"#;

    #[test]
    fn a_multi_stage_folder_build_is_checked_on_its_final_stage_only() {
        assert_eq!(
            check("Dockerfile", MULTI_STAGE, &plugin(8080), Context::Folder),
            Vec::<String>::new()
        );
        // The same file for the Rust path: its context has no src/.
        let problems = check(
            "Dockerfile",
            MULTI_STAGE,
            &plugin(8080),
            Context::StaticBinary,
        );
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("line 5: COPY src/"), "{problems:#?}");
    }

    #[test]
    fn user_65532_in_an_earlier_stage_does_not_count() {
        let text = MULTI_STAGE
            .replace("USER root", "USER 65532:65532")
            .replace("USER 65532:65532\nENV", "ENV");
        let problems = check("Dockerfile", &text, &plugin(8080), Context::Folder);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("no USER in the final stage (line 6's FROM onwards)"),
            "{problems:#?}"
        );
    }

    #[test]
    fn manifest_argument_declared_only_before_the_final_from_is_refused() {
        let text = MULTI_STAGE.replace("ARG BERTH_MANIFEST\n", "").replace(
            "FROM ${PYTHON_IMAGE} AS build",
            "ARG BERTH_MANIFEST\nFROM ${PYTHON_IMAGE} AS build",
        );
        let problems = check("d/Dockerfile", &text, &plugin(8080), Context::Folder);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("d/Dockerfile: line 9: LABEL dev.berth.manifest uses BERTH_MANIFEST before this stage declares it"),
            "{problems:#?}"
        );
    }

    #[test]
    fn final_stage_without_expose_or_manifest_label_is_refused() {
        let text = MULTI_STAGE
            .replace("EXPOSE 8080\n", "")
            .replace("LABEL dev.berth.manifest=\"${BERTH_MANIFEST}\"\n", "");
        let problems = check("Dockerfile", &text, &plugin(9090), Context::Folder);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("ENV BERTH_PORT=8080"), "{problems:#?}");
        assert!(
            problems[1].contains("has no EXPOSE; add EXPOSE 9090"),
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("has no dev.berth.manifest label"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_dockerfile_without_from_says_where_to_start() {
        let problems = check("Dockerfile", "USER 65532\n", &plugin(8080), Context::Folder);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("no FROM"), "{problems:#?}");
    }
}
