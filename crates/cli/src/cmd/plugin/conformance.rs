//! The conformance checks of `berth plugin test`, in the order of `docs/protocol.md`. The
//! plugin under test is a container started from an image, or with `--exec` a local process;
//! both meet the same checks through [`Subject`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_api::load::load_single_plugin;
use berth_api::{Capability, HookMode, Plugin};
use berth_contract::protocol::{
    HEADER_CALLER, HEADER_DEADLINE_MS, HEADER_REQUEST_ID, HookAction, MANIFEST_LABEL,
    PATH_DESCRIBE, PATH_HEALTHZ, hook_path, invoke_path,
};
use berth_docker::hardening::container_env;
use berth_docker::readiness::{Describe, describe_differences};
use berth_docker::{
    ContainerOptions, DockerClient, Error as DockerError, MANAGED_BY_LABEL, plugin_container,
};
use serde_json::{Value, json};

use super::TestArgs;

mod compare;
mod probe;
mod process;
mod raw;
mod subject;

use probe::{Probe, connection_refused, one_line};
use process::{Exit, PluginProcess};
use subject::{Subject, interrupted};

/// Value of [`MANAGED_BY_LABEL`] on what `berth plugin test` creates.
pub const MANAGED_BY: &str = "berth-plugin-test";
/// Label naming the run, so one run's leftovers can be found and removed.
pub const RUN_LABEL: &str = "dev.berth.test-run";
/// The capability name used to provoke a 404; no valid manifest can declare it.
const NO_SUCH_CAPABILITY: &str = "berth-conformance-no-such-capability";
/// A path outside the protocol, to provoke `404 not_found`.
const NO_SUCH_PATH: &str = "/berth-conformance/no-such-path";
/// A `Berth-Deadline-Ms` value that is not a number.
const DEADLINE_GARBAGE: &str = "soon";
/// A body that is not JSON.
const MALFORMED_BODY: &[u8] = br#"{"unterminated": "#;
/// `Berth-Deadline-Ms` as messages spell it.
const DEADLINE: &str = "Berth-Deadline-Ms";
/// The manifest `--exec` reads unless `--manifest` names another.
const DEFAULT_MANIFEST: &str = "berth.yaml";
/// The `Berth-Caller` every request carries.
const CALLER: &str = "user:berth-plugin-test";
/// Lines of the plugin's output shown when a check fails.
const OUTPUT_LINES: usize = 30;

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

/// `1 check`, `2 checks`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Runs every check against the image or the `--exec` command and cleans up after itself.
pub async fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    match (&args.exec, &args.image) {
        (Some(command), _) => run_process(command, &args).await,
        (None, Some(image)) => run_image(image, &args).await,
        (None, None) => {
            eprintln!("error: give an IMAGE or --exec CMD");
            Ok(ExitCode::from(2))
        }
    }
}

/// Where the plugin under test is reached, and the `BERTH_PORT` it was given.
#[derive(Clone, Copy, Debug)]
struct Target {
    addr: SocketAddr,
    port: u16,
}

async fn run_image(image_name: &str, args: &TestArgs) -> anyhow::Result<ExitCode> {
    let docker = match DockerClient::connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let image = match docker.inspect_image(image_name).await {
        Ok(i) => i,
        Err(DockerError::NotFound { .. }) => {
            eprintln!(
                "error: image {image_name} is not on this Docker Engine; build it with `berth build DIR`"
            );
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut report = Report::default();
    let manifest_text = match image.labels.get(MANIFEST_LABEL) {
        None => {
            report.fail(
                "manifest label",
                format!(
                    "{image_name} has no {MANIFEST_LABEL} label; build it with `berth build`, or add ARG BERTH_MANIFEST and LABEL {MANIFEST_LABEL}=\"${{BERTH_MANIFEST}}\" to the Dockerfile"
                ),
            );
            return Ok(finish(image_name, &report));
        }
        Some(text) if text.trim().is_empty() => {
            report.fail("manifest label", empty_label(image_name));
            return Ok(finish(image_name, &report));
        }
        Some(text) => text,
    };
    let plugin = match manifest_from_label(image_name, manifest_text) {
        Ok(p) => p,
        Err(problems) => {
            report.fail("manifest label", problems.join("; "));
            return Ok(finish(image_name, &report));
        }
    };
    report.pass(
        "manifest label",
        format!("Plugin/{} {}", plugin.name(), plugin.spec.version),
    );
    if let Some(note) = image_note(image_name, &plugin.spec.image) {
        println!("{note}");
    }

    let run_id = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    );
    let labels = std::collections::HashMap::from([
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
                image: image_name.to_owned(),
                network: network.clone(),
                // Run alone: the protocol's variables, no gateway and no secrets.
                env: container_env(&plugin, None, None).unwrap_or_default(),
                labels: labels.clone(),
                filesystem: std::collections::HashMap::new(),
                scratch_filesystem: true,
            },
        )?;
        let id = docker.run_container(&container, config).await?;
        let address = docker.container_address(&id, &network).await?;
        let mut subject = Subject::Container {
            docker: &docker,
            id,
        };
        match address {
            Some(address) => {
                let target = Target {
                    addr: SocketAddr::new(address, plugin.spec.port),
                    port: plugin.spec.port,
                };
                check_all(&mut subject, target, &plugin, args, &mut report).await;
            }
            None => report.fail("health", "the container got no address on the test network"),
        }
        Ok::<_, DockerError>(())
    };
    let outcome = tokio::select! {
        outcome = checks => Some(outcome),
        _ = interrupted() => None,
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
            eprintln!("error: could not run {image_name}: {e}");
            Ok(ExitCode::from(2))
        }
        Some(Ok(())) => Ok(finish(image_name, &report)),
    }
}

async fn run_process(command: &str, args: &TestArgs) -> anyhow::Result<ExitCode> {
    let path = args
        .manifest
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MANIFEST));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "error: cannot read the manifest {} ({e}); name the plugin's berth.yaml with --manifest FILE",
                path.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let label = format!("`{command}`");
    println!("{}", exec_warning(command));
    let mut report = Report::default();
    let plugin = match load_single_plugin(&path.display().to_string(), text.as_bytes()) {
        Ok(plugin) => plugin,
        Err(problems) => {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            report.fail("manifest", problems.join("; "));
            return Ok(finish(&label, &report));
        }
    };
    report.pass(
        "manifest",
        format!(
            "{}: Plugin/{} {}",
            path.display(),
            plugin.name(),
            plugin.spec.version
        ),
    );
    let port = match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
    {
        Ok(addr) => addr.port(),
        Err(e) => {
            eprintln!("error: cannot find a free local port: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let env = process_env(&plugin, port);
    let process = match PluginProcess::spawn(command, &env) {
        Ok(process) => process,
        Err(e) => {
            eprintln!("error: cannot start sh -c {command:?}: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let target = Target {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        port,
    };
    let mut subject = Subject::Process(process);
    let finished = tokio::select! {
        () = check_all(&mut subject, target, &plugin, args, &mut report) => true,
        () = interrupted() => false,
    };
    // Ends every process of the group, whatever happened above.
    drop(subject);
    if !finished {
        eprintln!("interrupted; the plugin's processes were ended");
        return Ok(ExitCode::from(130));
    }
    Ok(finish(&label, &report))
}

/// The first line of every `--exec` run: what it does not check.
fn exec_warning(command: &str) -> String {
    format!(
        "note: --exec runs `{command}` as a local process without isolation: no memory, CPU or pids limits, no read-only filesystem, the host's network and your user; `berth plugin test IMAGE` checks the plugin as it deploys"
    )
}

/// The container's environment for a local process: `BERTH_PORT` is a free local port.
fn process_env(plugin: &Plugin, port: u16) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = container_env(plugin, None, None)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| name != "BERTH_PORT")
        .collect();
    env.push(("BERTH_PORT".into(), port.to_string()));
    env
}

fn empty_label(image: &str) -> String {
    format!(
        "{image}: the {MANIFEST_LABEL} label is empty: the image was built without --build-arg BERTH_MANIFEST=\"$(cat berth.yaml)\"; build it with `berth build DIR`"
    )
}

/// A note when the image under test is not the one the manifest deploys.
fn image_note(tested: &str, spec_image: &str) -> Option<String> {
    (tested != spec_image).then(|| {
        format!(
            "note: plugin test runs the image named here, {tested}; the manifest's spec.image is {spec_image}, and that is what deploys use"
        )
    })
}

fn finish(subject: &str, report: &Report) -> ExitCode {
    println!(
        "{subject}: {} passed, {} failed",
        count(report.passed, "check", "checks"),
        report.failed
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

async fn check_all(
    subject: &mut Subject<'_>,
    target: Target,
    plugin: &Plugin,
    args: &TestArgs,
    report: &mut Report,
) {
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
    let probe = Probe {
        http,
        target,
        timeout,
        counter: std::cell::Cell::new(0),
    };

    let healthy = check_health(subject, &probe, args.health_timeout).await;
    report.record("health", healthy.clone());
    if healthy.is_err() {
        print_output(subject).await;
        return;
    }
    if matches!(subject, Subject::Process(_)) {
        match check_listen_address(&target).await {
            Some(result) => report.record("listen address", result),
            None => report.skip(
                "listen address",
                "127.0.0.2 is unreachable here, so a loopback-only listener cannot be told apart",
            ),
        }
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
    // The first capability with an example: its input is one the plugin answers 200 to.
    let example = plugin
        .spec
        .capabilities
        .iter()
        .find_map(|cap| cap.examples.first().map(|e| (cap.name.as_str(), &e.input)));
    const NO_EXAMPLE: &str = "no capability has an example input to send";
    match example {
        Some((cap, input)) => {
            report.record("deadline 0", check_deadline_zero(&probe, cap, input).await);
            report.record(
                "deadline garbage",
                check_deadline_garbage(&probe, cap, input).await,
            );
        }
        None => {
            report.skip("deadline 0", NO_EXAMPLE);
            report.skip("deadline garbage", NO_EXAMPLE);
        }
    }
    let first_capability = plugin.spec.capabilities.first().map(|c| c.name.as_str());
    report.record(
        "error precedence",
        check_error_precedence(&probe, first_capability).await,
    );
    for hook in &plugin.spec.hooks {
        report.record(
            &format!("hook {}", hook.name),
            check_hook(&probe, &hook.name, hook.mode).await,
        );
    }
    report.record("keep-alive", check_keep_alive(&probe).await);
    let sigterm_sent = Instant::now();
    let terminated = match example {
        Some((cap, input)) => {
            let (result, terminated) = check_drain(subject, &probe, cap, input).await;
            report.record("sigterm drain", result);
            terminated
        }
        None => {
            report.skip("sigterm drain", NO_EXAMPLE);
            subject.terminate().await
        }
    };
    let sigterm = match terminated {
        Ok(()) => check_exit(subject, sigterm_sent, args.grace).await,
        Err(e) => Err(e),
    };
    report.record("sigterm", sigterm);
    if report.failed > 0 {
        print_output(subject).await;
    }
}

async fn print_output(subject: &Subject<'_>) {
    let lines = subject.output().await;
    if lines.iter().any(|l| !l.trim().is_empty()) {
        println!("---- last lines of the plugin's output ----");
        for line in lines {
            println!("  {line}");
        }
    }
}

async fn check_health(
    subject: &Subject<'_>,
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
            Ok(a) => last = format!("GET /healthz answered {}: {}", a.status, a.text()),
            Err(e) => last = e,
        }
        if polls.is_multiple_of(5)
            && let Some(why) = subject.stopped().await
        {
            return Err(format!("{why} before it was healthy"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "not healthy within {:.0}s: {last}",
        limit.as_secs_f64()
    ))
}

/// Whether a plugin run as a local process also answers on an address other than 127.0.0.1,
/// as it must in a container; `None` when this host cannot tell.
async fn check_listen_address(target: &Target) -> Option<Result<String, String>> {
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), target.port);
    let connect = tokio::net::TcpStream::connect(other);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => Some(Ok(format!(
            "answers on {other} too: it listens on every address, as in a container"
        ))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(Err(format!(
            "it answers at {} but connection refused at {other}: it listens on the loopback address only, which nothing outside its container reaches; {}",
            target.addr,
            connection_refused(target)
                .split_once(": ")
                .map(|(_, fix)| fix.to_owned())
                .unwrap_or_default()
        ))),
        _ => None,
    }
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
            "{} {}: {}, {} as in the manifest",
            describe.name,
            describe.version,
            count(describe.capabilities.len(), "capability", "capabilities"),
            count(describe.hooks.len(), "hook", "hooks")
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
        && !compare::json_equal(expected, &output)
    {
        return Err(format!(
            "the output differs from the example: {} (expected {expected}, got {output})",
            compare::describe_differences(expected, &output)
        ));
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

async fn check_unknown_capability(probe: &Probe) -> Result<String, String> {
    let answer = probe
        .post(&invoke_path(NO_SUCH_CAPABILITY), b"{}".to_vec())
        .await?;
    answer.expect_error(404, "unknown_capability")?;
    Ok("404 unknown_capability with an error body".into())
}

async fn check_malformed_json(probe: &Probe, capability: &str) -> Result<String, String> {
    let answer = probe
        .post(&invoke_path(capability), MALFORMED_BODY.to_vec())
        .await?;
    answer.expect_error(400, "malformed_json")?;
    Ok("400 malformed_json with an error body".into())
}

async fn check_deadline_zero(probe: &Probe, cap: &str, input: &Value) -> Result<String, String> {
    let answer = probe
        .send(
            reqwest::Method::POST,
            &invoke_path(cap),
            Some(input.to_string().into_bytes()),
            Some("0"),
        )
        .await?;
    answer
        .expect_error(504, "deadline_exceeded")
        .map_err(|e| format!("{DEADLINE}: 0 (already expired) {e}"))?;
    Ok(format!(
        "{DEADLINE}: 0 on {cap} answered 504 deadline_exceeded"
    ))
}

async fn check_deadline_garbage(probe: &Probe, cap: &str, input: &Value) -> Result<String, String> {
    let answer = probe
        .send(
            reqwest::Method::POST,
            &invoke_path(cap),
            Some(input.to_string().into_bytes()),
            Some(DEADLINE_GARBAGE),
        )
        .await?;
    answer
        .expect_error(400, "bad_request")
        .map_err(|e| format!("{DEADLINE}: {DEADLINE_GARBAGE} on {cap} {e}"))?;
    // Health ignores the protocol headers: the same value is no error there.
    let health = probe
        .send(
            reqwest::Method::GET,
            PATH_HEALTHZ,
            None,
            Some(DEADLINE_GARBAGE),
        )
        .await?;
    if health.status != 200 {
        return Err(format!(
            "GET /healthz with {DEADLINE}: {DEADLINE_GARBAGE} answered {}, expected 200 (health ignores protocol headers): {}",
            health.status,
            health.text()
        ));
    }
    Ok(format!(
        "{DEADLINE}: {DEADLINE_GARBAGE} answered 400 bad_request on {cap}, ignored by /healthz"
    ))
}

/// One request of the error-precedence check and the answer the protocol requires.
struct PrecedenceCase {
    request: String,
    method: reqwest::Method,
    path: String,
    body: Option<Vec<u8>>,
    deadline: Option<&'static str>,
    status: u16,
    code: &'static str,
}

/// The requests of the error-precedence check; each sits where two rules of the order meet.
fn precedence_cases(first_capability: Option<&str>) -> Vec<PrecedenceCase> {
    let invoke_target = invoke_path(first_capability.unwrap_or(NO_SUCH_CAPABILITY));
    let mut cases = vec![
        PrecedenceCase {
            request: format!("POST {NO_SUCH_PATH}"),
            method: reqwest::Method::POST,
            path: NO_SUCH_PATH.into(),
            body: Some(MALFORMED_BODY.to_vec()),
            deadline: Some(DEADLINE_GARBAGE),
            status: 404,
            code: "not_found",
        },
        PrecedenceCase {
            request: format!("GET {invoke_target}"),
            method: reqwest::Method::GET,
            path: invoke_target,
            body: None,
            deadline: Some(DEADLINE_GARBAGE),
            status: 405,
            code: "method_not_allowed",
        },
        PrecedenceCase {
            request: format!(
                "POST {} with a malformed body",
                invoke_path(NO_SUCH_CAPABILITY)
            ),
            method: reqwest::Method::POST,
            path: invoke_path(NO_SUCH_CAPABILITY),
            body: Some(MALFORMED_BODY.to_vec()),
            deadline: Some(DEADLINE_GARBAGE),
            status: 404,
            code: "unknown_capability",
        },
    ];
    if let Some(cap) = first_capability {
        cases.push(PrecedenceCase {
            request: format!(
                "POST {} with {DEADLINE}: {DEADLINE_GARBAGE} and a malformed body",
                invoke_path(cap)
            ),
            method: reqwest::Method::POST,
            path: invoke_path(cap),
            body: Some(MALFORMED_BODY.to_vec()),
            deadline: Some(DEADLINE_GARBAGE),
            status: 400,
            code: "bad_request",
        });
    }
    cases
}

async fn check_error_precedence(
    probe: &Probe,
    first_capability: Option<&str>,
) -> Result<String, String> {
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for case in precedence_cases(first_capability) {
        let answer = probe
            .send(case.method.clone(), &case.path, case.body, case.deadline)
            .await?;
        let mut result = answer.expect_error(case.status, case.code);
        if result.is_ok() && case.status == 405 {
            let allow = answer.allow.as_deref().unwrap_or_default();
            if !allow.to_ascii_uppercase().contains("POST") {
                result = Err(format!(
                    "405 must carry an Allow header naming POST, got {}",
                    answer.allow.as_deref().unwrap_or("none")
                ));
            }
        }
        match result {
            Ok(()) => passed.push(format!("{} {}", case.status, case.code)),
            Err(e) => failed.push(format!("{}: {e}", case.request)),
        }
    }
    if failed.is_empty() {
        Ok(passed.join(", "))
    } else {
        Err(format!(
            "{} (the first rule that applies wins: path, method, capability, deadline header, body)",
            failed.join("; ")
        ))
    }
}

async fn check_hook(probe: &Probe, hook: &str, mode: HookMode) -> Result<String, String> {
    let body = json!({"event": berth_api::hooks::sample_event(hook)})
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
                    let mismatches = berth_api::hooks::event_mismatches(hook, &event);
                    if mismatches.is_empty() {
                        Ok("filter hook answered modify".into())
                    } else {
                        // SHOULD, not MUST: the gateway passes any object on.
                        Ok(format!(
                            "filter hook answered modify; the event should keep the hook's fields: {}",
                            mismatches.join("; ")
                        ))
                    }
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

fn connect_failure(e: &std::io::Error, target: &Target) -> String {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        connection_refused(target)
    } else {
        format!("cannot connect to {}: {e}", target.addr)
    }
}

const KEEP_ALIVE_RULE: &str =
    "plugins must keep HTTP/1.1 connections open (keep-alive): the gateway reuses them";

/// Two requests on one TCP connection, both answered.
async fn check_keep_alive(probe: &Probe) -> Result<String, String> {
    let target = probe.target;
    let mut connection = raw::Connection::open(target.addr)
        .await
        .map_err(|e| connect_failure(&e, &target))?;
    let limit = probe.timeout + Duration::from_secs(2);
    for (i, path) in [PATH_HEALTHZ, PATH_DESCRIBE].into_iter().enumerate() {
        let head = raw::request_head(
            "GET",
            path,
            &probe.host(),
            &[
                (
                    HEADER_REQUEST_ID,
                    format!("conformance-keep-alive-{}", i + 1),
                ),
                (HEADER_CALLER, CALLER.into()),
            ],
            None,
        );
        let answer = match connection.send(head.as_bytes()).await {
            Ok(()) => connection.read_response(limit).await,
            Err(e) => Err(format!("sending failed ({e})")),
        };
        let answer = match (i, answer) {
            (_, Ok(answer)) => answer,
            (0, Err(e)) => return Err(format!("GET {path}: {e}")),
            (_, Err(e)) => {
                return Err(format!(
                    "a second request (GET {path}) on the connection got no answer: {e}; {KEEP_ALIVE_RULE}"
                ));
            }
        };
        if answer.status != 200 {
            return Err(format!(
                "GET {path} on {} request of the connection answered {}: {}",
                if i == 0 { "the first" } else { "the second" },
                answer.status,
                one_line(&answer.body)
            ));
        }
        if i == 0 && answer.closes() {
            return Err(format!(
                "the answer to GET {path} closes the connection ({}{}); {KEEP_ALIVE_RULE}",
                answer.version,
                answer
                    .header("connection")
                    .map(|v| format!(", Connection: {v}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(format!(
        "GET {PATH_HEALTHZ} and GET {PATH_DESCRIBE} answered 200 on one connection (local port {})",
        connection.local_port()
    ))
}

const DRAIN_RULE: &str = "on SIGTERM finish the requests in flight, including one whose body is still arriving, then exit 0";

/// A request half sent when SIGTERM arrives must still be answered. Returns the check's
/// result and whether SIGTERM was sent.
async fn check_drain(
    subject: &Subject<'_>,
    probe: &Probe,
    cap: &str,
    input: &Value,
) -> (Result<String, String>, Result<(), String>) {
    let mut body = input.to_string().into_bytes();
    if body.len() < 2 {
        // JSON allows trailing white space; the body must split in two.
        body.push(b' ');
    }
    let split = body.len() / 2;
    let path = invoke_path(cap);
    let head = raw::request_head(
        "POST",
        &path,
        &probe.host(),
        &[
            ("Content-Type", "application/json".into()),
            (HEADER_REQUEST_ID, "conformance-drain".into()),
            (HEADER_DEADLINE_MS, probe.default_deadline()),
            (HEADER_CALLER, CALLER.into()),
        ],
        Some(body.len()),
    );
    let target = probe.target;
    let mut connection = match raw::Connection::open(target.addr).await {
        Ok(c) => c,
        Err(e) => return (Err(connect_failure(&e, &target)), subject.terminate().await),
    };
    let mut first = head.into_bytes();
    first.extend_from_slice(&body[..split]);
    if let Err(e) = connection.send(&first).await {
        return (
            Err(format!("sending the request failed: {e}")),
            subject.terminate().await,
        );
    }
    // Let the plugin read the head before the signal, so the request is in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Err(e) = subject.terminate().await {
        return (Err(e.clone()), Err(e));
    }
    // Let the plugin begin its shutdown before the rest of the body arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = match connection.send(&body[split..]).await {
        Ok(()) => {
            connection
                .read_response(probe.timeout + Duration::from_secs(2))
                .await
        }
        Err(e) => Err(format!("the rest of the body could not be sent ({e})")),
    };
    let result = match answer {
        Err(e) => Err(format!(
            "POST {path} half sent when SIGTERM arrived got no answer: {e}; {DRAIN_RULE}"
        )),
        Ok(answer) if answer.status != 200 => Err(format!(
            "POST {path} half sent when SIGTERM arrived answered {}, expected 200: {}; {DRAIN_RULE}",
            answer.status,
            one_line(&answer.body)
        )),
        Ok(answer) => match serde_json::from_slice::<Value>(&answer.body) {
            Ok(_) => Ok(format!(
                "POST {path} half sent when SIGTERM arrived was answered 200 once its body completed"
            )),
            Err(e) => Err(format!(
                "POST {path} half sent when SIGTERM arrived answered 200 without a JSON body ({e})"
            )),
        },
    };
    (result, Ok(()))
}

async fn check_exit(
    subject: &mut Subject<'_>,
    signalled: Instant,
    grace: Duration,
) -> Result<String, String> {
    let hint = subject.sigterm_hint();
    let left = grace.saturating_sub(signalled.elapsed());
    match tokio::time::timeout(left, subject.wait_exit()).await {
        Err(_) => Err(format!(
            "still running {:.0}s after SIGTERM; {hint}",
            grace.as_secs_f64()
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Exit::Code(0))) => Ok(format!(
            "exited with status 0, {:.2}s after SIGTERM",
            signalled.elapsed().as_secs_f64()
        )),
        Ok(Ok(exit)) => Err(format!(
            "after SIGTERM the plugin {exit}; a drained shutdown exits 0; {hint}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_that_is_not_a_valid_manifest_is_reported_with_its_source() {
        let errors = manifest_from_label("img:1", "kind: Plugin\n").unwrap_err();
        assert!(
            errors[0].starts_with("img:1 label dev.berth.manifest"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_empty_label_names_the_forgotten_build_argument() {
        assert_eq!(
            empty_label("berth/x:1"),
            "berth/x:1: the dev.berth.manifest label is empty: the image was built without --build-arg BERTH_MANIFEST=\"$(cat berth.yaml)\"; build it with `berth build DIR`"
        );
    }

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1, "hook", "hooks"), "1 hook");
        assert_eq!(count(0, "hook", "hooks"), "0 hooks");
        assert_eq!(count(1, "capability", "capabilities"), "1 capability");
        assert_eq!(count(2, "capability", "capabilities"), "2 capabilities");
        assert_eq!(count(1, "check", "checks"), "1 check");
    }

    #[test]
    fn a_note_says_which_image_runs_when_it_is_not_spec_image() {
        assert_eq!(image_note("berth/hello:0.1.0", "berth/hello:0.1.0"), None);
        let note = image_note("berth/hello:dev", "berth/hello:0.1.0").unwrap();
        assert!(note.starts_with("note: "), "{note}");
        assert!(note.contains("berth/hello:dev"), "{note}");
        assert!(
            note.contains("spec.image is berth/hello:0.1.0, and that is what deploys use"),
            "{note}"
        );
    }

    #[test]
    fn the_process_gets_the_containers_environment_with_a_local_port() {
        let plugin = load_single_plugin(
            "m.yaml",
            b"apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: p}\nspec:\n  image: p:1\n  version: 1.0.0\n  port: 9000\n  capabilities: [{name: c}]\n",
        )
        .unwrap();
        let env = process_env(&plugin, 4321);
        let ports: Vec<_> = env.iter().filter(|(k, _)| k == "BERTH_PORT").collect();
        assert_eq!(ports, [&("BERTH_PORT".to_owned(), "4321".to_owned())]);
        assert!(
            env.iter()
                .any(|(k, v)| k == "BERTH_PLUGIN_NAME" && v == "p")
        );
    }

    #[test]
    fn precedence_sends_each_rule_against_the_next() {
        let cases = precedence_cases(Some("greet"));
        let summary: Vec<_> = cases
            .iter()
            .map(|c| (c.method.as_str(), c.path.as_str(), c.status, c.code))
            .collect();
        assert_eq!(
            summary,
            [
                ("POST", NO_SUCH_PATH, 404, "not_found"),
                ("GET", "/v1/invoke/greet", 405, "method_not_allowed"),
                (
                    "POST",
                    "/v1/invoke/berth-conformance-no-such-capability",
                    404,
                    "unknown_capability"
                ),
                ("POST", "/v1/invoke/greet", 400, "bad_request"),
            ]
        );
        assert!(cases.iter().all(|c| c.deadline == Some(DEADLINE_GARBAGE)));
        assert_eq!(precedence_cases(None).len(), 3);
    }
}
