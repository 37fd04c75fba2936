//! The conformance checks of `berth plugin test`, in the order of `docs/protocol.md`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_api::load::load_single_plugin;
use berth_api::{Capability, HookMode, Plugin};
use berth_contract::protocol::{
    ErrorBody, HEADER_CALLER, HEADER_DEADLINE_MS, HEADER_REQUEST_ID, HookAction, MANIFEST_LABEL,
    PATH_DESCRIBE, PATH_HEALTHZ, hook_path, invoke_path,
};
use berth_docker::hardening::container_env;
use berth_docker::readiness::{Describe, describe_differences};
use berth_docker::{
    ContainerOptions, DockerClient, Error as DockerError, MANAGED_BY_LABEL, plugin_container,
};
use serde_json::{Value, json};

use super::TestArgs;

/// Value of [`MANAGED_BY_LABEL`] on what `berth plugin test` creates.
pub const MANAGED_BY: &str = "berth-plugin-test";
/// Label naming the run, so one run's leftovers can be found and removed.
pub const RUN_LABEL: &str = "dev.berth.test-run";
/// The capability name used to provoke a 404; no valid manifest can declare it.
const NO_SUCH_CAPABILITY: &str = "berth-conformance-no-such-capability";

/// Pass/fail lines, printed as they happen.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn pass(&mut self, check: &str, detail: impl AsRef<str>) {
        self.passed += 1;
        println!("PASS {check:<28} {}", detail.as_ref());
    }

    fn fail(&mut self, check: &str, detail: impl AsRef<str>) {
        self.failed += 1;
        println!("FAIL {check:<28} {}", detail.as_ref());
    }

    fn record(&mut self, check: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => self.pass(check, detail),
            Err(detail) => self.fail(check, detail),
        }
    }

    fn skip(&self, check: &str, why: &str) {
        println!("SKIP {check:<28} {why}");
    }
}

/// Runs every check against `args.image` and cleans up after itself.
pub async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let docker = match DockerClient::connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let image = match docker.inspect_image(&args.image).await {
        Ok(i) => i,
        Err(DockerError::NotFound { .. }) => {
            eprintln!(
                "error: image {} is not on this Docker Engine; build it with `berth build DIR`",
                args.image
            );
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut report = Report::default();
    let Some(manifest_text) = image.labels.get(MANIFEST_LABEL) else {
        report.fail(
            "manifest label",
            format!(
                "{} has no {MANIFEST_LABEL} label; build it with `berth build`, or add ARG BERTH_MANIFEST and LABEL {MANIFEST_LABEL}=\"${{BERTH_MANIFEST}}\" to the Dockerfile",
                args.image
            ),
        );
        return Ok(finish(&args.image, &report));
    };
    let plugin = match manifest_from_label(&args.image, manifest_text) {
        Ok(p) => p,
        Err(problems) => {
            report.fail("manifest label", problems.join("; "));
            return Ok(finish(&args.image, &report));
        }
    };
    report.pass(
        "manifest label",
        format!("Plugin/{} {}", plugin.name(), plugin.spec.version),
    );

    let run_id = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    );
    let labels = HashMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (RUN_LABEL.to_owned(), run_id.clone()),
    ]);
    let network = format!("berth-test-{run_id}");
    let container = format!("berth-test-{}-{run_id}", plugin.name());

    let checks = async {
        docker
            .create_network(&network, true, labels.clone())
            .await?;
        let config = plugin_container(
            &plugin,
            &ContainerOptions {
                image: args.image.clone(),
                network: network.clone(),
                // Run alone: the protocol's variables, no gateway and no secrets.
                env: container_env(&plugin, None, None).unwrap_or_default(),
                labels: labels.clone(),
                filesystem: HashMap::new(),
                scratch_filesystem: true,
            },
        )?;
        let id = docker.run_container(&container, config).await?;
        let address = docker.container_address(&id, &network).await?;
        check_container(&docker, &id, address, &plugin, &args, &mut report).await;
        Ok::<_, DockerError>(())
    };
    let outcome = tokio::select! {
        outcome = checks => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
    };
    // Whatever happened above, leave nothing behind.
    if let Err(e) = docker.remove_labelled(RUN_LABEL, &run_id).await {
        eprintln!(
            "warning: could not remove the test container or network ({e}); remove what carries the label {RUN_LABEL}={run_id}"
        );
    }
    match outcome {
        None => {
            eprintln!("interrupted");
            Ok(ExitCode::from(130))
        }
        Some(Err(e)) => {
            eprintln!("error: could not run {}: {e}", args.image);
            Ok(ExitCode::from(2))
        }
        Some(Ok(())) => Ok(finish(&args.image, &report)),
    }
}

fn finish(image: &str, report: &Report) -> ExitCode {
    println!(
        "{image}: {} checks passed, {} failed",
        report.passed, report.failed
    );
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn manifest_from_label(image: &str, text: &str) -> Result<Plugin, Vec<String>> {
    let source = format!("{image} label {MANIFEST_LABEL}");
    load_single_plugin(&source, text.as_bytes())
        .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}

/// A client for the plugin under test, sending the gateway's headers.
struct Probe {
    http: reqwest::Client,
    base: String,
    deadline_ms: u64,
    counter: std::cell::Cell<u32>,
}

/// A plugin's answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        if s.chars().count() > 300 {
            format!("{}…", s.chars().take(300).collect::<String>())
        } else {
            s.into_owned()
        }
    }

    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the body is not JSON ({e}): {}", self.text()))
    }

    /// Checks the body is `{"error":{"code","message"}}` and returns the code.
    fn error_code(&self) -> Result<String, String> {
        let body: ErrorBody = serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "the body is not {{\"error\":{{\"code\",\"message\"}}}} ({e}): {}",
                self.text()
            )
        })?;
        if body.error.code.is_empty() || body.error.message.is_empty() {
            return Err(format!(
                "error.code and error.message must not be empty: {}",
                self.text()
            ));
        }
        Ok(body.error.code)
    }
}

impl Probe {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(HEADER_REQUEST_ID, format!("conformance-{n}"))
            .header(HEADER_DEADLINE_MS, self.deadline_ms.to_string())
            .header(HEADER_CALLER, "user:berth-plugin-test");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("no answer to {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the answer to {path}: {e}"))?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Answer, String> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}

async fn check_container(
    docker: &DockerClient,
    id: &str,
    address: Option<IpAddr>,
    plugin: &Plugin,
    args: &TestArgs,
    report: &mut Report,
) {
    let Some(address) = address else {
        report.fail("health", "the container got no address on the test network");
        return;
    };
    let timeout = plugin
        .spec
        .resources
        .resolve()
        .map(|r| r.timeout)
        .unwrap_or(Duration::from_secs(10));
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout + Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            report.fail("health", format!("could not build an HTTP client: {e}"));
            return;
        }
    };
    let host = match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let probe = Probe {
        http,
        base: format!("http://{host}:{}", plugin.spec.port),
        deadline_ms: timeout.as_millis() as u64,
        counter: std::cell::Cell::new(0),
    };

    let healthy = check_health(docker, id, &probe, args.health_timeout).await;
    report.record("health", healthy.clone());
    if healthy.is_err() {
        print_logs(docker, id).await;
        return;
    }
    report.record("describe", check_describe(&probe, plugin).await);
    for cap in &plugin.spec.capabilities {
        if cap.examples.is_empty() {
            report.skip(
                &format!("example {}", cap.name),
                "the manifest gives no examples",
            );
        }
        for (i, example) in cap.examples.iter().enumerate() {
            let name = format!("example {}#{}", cap.name, i + 1);
            report.record(
                &name,
                check_example(&probe, cap, &example.input, example.output.as_ref()).await,
            );
        }
    }
    report.record("unknown capability", check_unknown_capability(&probe).await);
    match plugin.spec.capabilities.first() {
        Some(cap) => report.record(
            "malformed json",
            check_malformed_json(&probe, &cap.name).await,
        ),
        None => report.skip("malformed json", "the plugin has no capabilities"),
    }
    for hook in &plugin.spec.hooks {
        report.record(
            &format!("hook {}", hook.name),
            check_hook(&probe, &hook.name, hook.mode).await,
        );
    }
    report.record("sigterm", check_sigterm(docker, id, args.grace).await);
    if report.failed > 0 {
        print_logs(docker, id).await;
    }
}

async fn print_logs(docker: &DockerClient, id: &str) {
    if let Ok(logs) = docker.logs(id, 30).await
        && !logs.trim().is_empty()
    {
        println!("---- last lines of the plugin's output ----");
        for line in logs.lines() {
            println!("  {line}");
        }
    }
}

async fn check_health(
    docker: &DockerClient,
    id: &str,
    probe: &Probe,
    limit: Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    let mut polls = 0u32;
    while started.elapsed() < limit {
        polls += 1;
        match probe.get(PATH_HEALTHZ).await {
            Ok(a) if a.status == 200 => {
                return Ok(format!(
                    "GET /healthz answered 200 after {:.2}s",
                    started.elapsed().as_secs_f64()
                ));
            }
            Ok(a) => last = format!("GET /healthz answered {}", a.status),
            Err(e) => last = e,
        }
        if polls.is_multiple_of(5)
            && let Ok(status) = docker.container_status(id).await
            && !status.running
        {
            return Err(format!(
                "the container exited with status {}{} before it was healthy",
                status.exit_code.unwrap_or(-1),
                if status.oom_killed {
                    " (killed: out of memory, raise spec.resources.memory)"
                } else {
                    ""
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "not healthy within {:.0}s: {last}",
        limit.as_secs_f64()
    ))
}

async fn check_describe(probe: &Probe, plugin: &Plugin) -> Result<String, String> {
    let answer = probe.get(PATH_DESCRIBE).await?;
    if answer.status != 200 {
        return Err(format!(
            "GET /v1/describe answered {}: {}",
            answer.status,
            answer.text()
        ));
    }
    let describe: Describe = serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "GET /v1/describe is not {{name, version, capabilities, hooks}} ({e}): {}",
            answer.text()
        )
    })?;
    let differences = describe_differences(&describe, plugin);
    if differences.is_empty() {
        Ok(format!(
            "{} {}: {} capabilities, {} hooks as in the manifest",
            describe.name,
            describe.version,
            describe.capabilities.len(),
            describe.hooks.len()
        ))
    } else {
        Err(format!(
            "/v1/describe disagrees with the manifest: {}",
            differences.join("; ")
        ))
    }
}

fn schema_errors(schema: &Value, instance: &Value) -> Result<Vec<String>, String> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("the schema does not compile: {e}"))?;
    Ok(validator
        .iter_errors(instance)
        .take(5)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect())
}

async fn check_example(
    probe: &Probe,
    cap: &Capability,
    input: &Value,
    expected: Option<&Value>,
) -> Result<String, String> {
    if let Some(schema) = &cap.input {
        let errors = schema_errors(schema, input).map_err(|e| format!("input {e}"))?;
        if !errors.is_empty() {
            return Err(format!(
                "the manifest's example input does not fit its own input schema: {}",
                errors.join("; ")
            ));
        }
    }
    let started = Instant::now();
    let answer = probe
        .post(&invoke_path(&cap.name), input.to_string().into_bytes())
        .await?;
    if answer.status != 200 {
        return Err(format!(
            "answered {}, expected 200: {}",
            answer.status,
            answer.text()
        ));
    }
    let output = answer.json()?;
    if let Some(schema) = &cap.output {
        let errors = schema_errors(schema, &output).map_err(|e| format!("output {e}"))?;
        if !errors.is_empty() {
            return Err(format!(
                "the output does not fit the output schema: {} (output: {})",
                errors.join("; "),
                answer.text()
            ));
        }
    }
    if let Some(expected) = expected
        && !json_equal(expected, &output)
    {
        return Err(format!("expected {expected}, got {output}"));
    }
    Ok(format!(
        "200 in {:.0} ms, output fits the schema{}",
        started.elapsed().as_secs_f64() * 1000.0,
        if expected.is_some() {
            " and equals the example"
        } else {
            ""
        }
    ))
}

/// Equality of JSON values where numbers compare by value (`14` equals `14.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

async fn check_unknown_capability(probe: &Probe) -> Result<String, String> {
    let answer = probe
        .post(&invoke_path(NO_SUCH_CAPABILITY), b"{}".to_vec())
        .await?;
    if answer.status != 404 {
        return Err(format!(
            "answered {}, expected 404: {}",
            answer.status,
            answer.text()
        ));
    }
    let code = answer.error_code()?;
    if code != "unknown_capability" {
        return Err(format!(
            "error code is {code:?}, expected \"unknown_capability\""
        ));
    }
    Ok("404 unknown_capability with an error body".into())
}

async fn check_malformed_json(probe: &Probe, capability: &str) -> Result<String, String> {
    let answer = probe
        .post(&invoke_path(capability), br#"{"unterminated": "#.to_vec())
        .await?;
    if answer.status != 400 {
        return Err(format!(
            "answered {}, expected 400: {}",
            answer.status,
            answer.text()
        ));
    }
    let code = answer.error_code()?;
    if code != "malformed_json" {
        return Err(format!(
            "error code is {code:?}, expected \"malformed_json\""
        ));
    }
    Ok("400 malformed_json with an error body".into())
}

/// A plausible event for the standard hooks, an empty one for the others.
fn sample_event(hook: &str) -> Value {
    match hook {
        "before_command" | "after_command" | "command_error" => {
            json!({"command": "echo hello", "args": ["hello"], "cwd": "/workspace"})
        }
        "file_changed" | "file_created" | "file_deleted" => json!({"path": "README.md"}),
        "before_ai_query" | "after_ai_response" => json!({"prompt": "Say hello"}),
        _ => json!({}),
    }
}

async fn check_hook(probe: &Probe, hook: &str, mode: HookMode) -> Result<String, String> {
    let body = json!({"event": sample_event(hook)})
        .to_string()
        .into_bytes();
    let answer = probe.post(&hook_path(hook), body).await?;
    match mode {
        HookMode::Observe => {
            if answer.status == 204 {
                Ok("observe hook answered 204".into())
            } else {
                Err(format!(
                    "an observe hook must answer 204, got {}: {}",
                    answer.status,
                    answer.text()
                ))
            }
        }
        HookMode::Filter => {
            if answer.status != 200 {
                return Err(format!(
                    "a filter hook must answer 200, got {}: {}",
                    answer.status,
                    answer.text()
                ));
            }
            let value = answer.json()?;
            let action: HookAction = serde_json::from_value(value.clone())
                .map_err(|e| format!("not a continue, modify or veto action ({e}): {value}"))?;
            match action {
                HookAction::Continue => Ok("filter hook answered continue".into()),
                HookAction::Modify { event } if event.is_object() => {
                    Ok("filter hook answered modify".into())
                }
                HookAction::Modify { event } => {
                    Err(format!("modify must carry an event object, got {event}"))
                }
                HookAction::Veto { reason } if !reason.trim().is_empty() => {
                    Ok(format!("filter hook answered veto ({reason})"))
                }
                HookAction::Veto { .. } => Err("veto must give a reason".into()),
            }
        }
    }
}

async fn check_sigterm(docker: &DockerClient, id: &str, grace: Duration) -> Result<String, String> {
    let started = Instant::now();
    docker
        .signal(id, "SIGTERM")
        .await
        .map_err(|e| format!("could not send SIGTERM: {e}"))?;
    match tokio::time::timeout(grace, docker.wait_exit(id)).await {
        Err(_) => Err(format!(
            "still running {:.0}s after SIGTERM; handle SIGTERM (as PID 1 the kernel ignores it otherwise)",
            grace.as_secs_f64()
        )),
        Ok(Err(e)) => Err(format!("could not wait for the container: {e}")),
        Ok(Ok(0)) => Ok(format!(
            "exited 0 after {:.2}s",
            started.elapsed().as_secs_f64()
        )),
        Ok(Ok(code)) => Err(format!(
            "exited with status {code} after SIGTERM; a drained shutdown exits 0"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_compare_by_value() {
        assert!(json_equal(&json!({"result": 14}), &json!({"result": 14.0})));
        assert!(!json_equal(
            &json!({"result": 14}),
            &json!({"result": 14.5})
        ));
        assert!(!json_equal(&json!([1, 2]), &json!([1])));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    #[test]
    fn a_label_that_is_not_a_valid_manifest_is_reported_with_its_source() {
        let errors = manifest_from_label("img:1", "kind: Plugin\n").unwrap_err();
        assert!(
            errors[0].starts_with("img:1 label dev.berth.manifest"),
            "{errors:?}"
        );
    }
}
