//! `berth bench PLUGIN [CAPABILITY...]`: drives load through a gateway and rates the
//! plugin (decision 0061).
//!
//! Inputs are each capability's manifest `examples` (or `--input`), sent in turn. The
//! load is a closed loop of `--concurrency` callers or an open loop at `--rate` requests
//! per second (latency from each request's intended send time; see
//! [`crate::bench::load`]), for `--duration` after `--warmup`. The report sets latency,
//! throughput and errors by code beside the gateway's own view of the same run (the
//! deltas of its Prometheus histograms), the gateway's added time by both clocks, and
//! the plugin's CPU and memory against its limits; the tier comes from
//! [`berth_api::TierThresholds`]. Locally the result is stored for later comparison
//! (`--report`), and it is sent to the gateway's `POST /v1/admin/benchmarks`.
//!
//! Exit codes: 0 rated; 1 rated below `--fail-below`; 2 bad input (unknown plugin or
//! capability, a capability with no examples and no `--input`, a bad thresholds file, bad
//! flags); 3 the gateway is unreachable; 4 the token was refused (no `invoke` scope for
//! the plugin); 5 the machine could not drive the `--rate` asked for; 6 too few answers
//! in the measured part to rate (`--min-answers`); 7 the load generator itself failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use berth_api::Plugin;
use berth_api::bench::{
    AddedTime, BenchReport, GatewayView, Latency, LoadModel, ResourceUse, Tier, TierInputs,
    TierThresholds,
};
use berth_docker::control::{LocalControl, current_user};
use bytes::Bytes;
use serde_json::Value;

use super::local::StateArgs;
use crate::bench::load::{self, Call, HttpClient, Measured, Model, Plan, ms};
use crate::bench::{prom, report, resources};

/// Rated below `--fail-below`.
pub const EXIT_BELOW: u8 = 1;
/// Bad input.
pub const EXIT_INPUT: u8 = 2;
/// The gateway did not answer.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The token was refused.
pub const EXIT_ACCESS: u8 = 4;
/// The rate could not be driven.
pub const EXIT_RATE: u8 = 5;
/// Too few answers in the measured part to rate the plugin.
pub const EXIT_FEW: u8 = 6;
/// The load generator itself failed (a caller task panicked).
pub const EXIT_LOAD: u8 = 7;
/// Answers a run needs to be rated by default: the gateway's `--tier-min-calls`.
pub const MIN_ANSWERS: u64 = 20;

/// How many previous runs `--report` and the table show.
const PREVIOUS_RUNS: usize = 12;
/// The termination message a Kubernetes pod may leave.
const TERMINATION_LOG_LIMIT: usize = 4096;
/// The gateway's benchmark endpoint (decision 0061).
const PATH_ADMIN_BENCHMARKS: &str = "/v1/admin/benchmarks";

/// Options of `berth bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The plugin.
    pub plugin: String,
    /// Capabilities to drive; default: every capability with examples.
    pub capabilities: Vec<String>,
    /// The input document for every capability driven, as JSON or `@FILE`; default: each
    /// capability's manifest examples.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// Closed loop: this many callers, each sending when its last call answered.
    #[arg(long, short, default_value_t = 8, conflicts_with = "rate")]
    pub concurrency: u32,
    /// Open loop: this many requests per second whatever the answers; latency counts from
    /// each request's intended send time.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = super::duration_arg)]
    pub duration: Duration,
    /// Load sent before measuring, then thrown away.
    #[arg(long, default_value = "2s", value_parser = super::duration_arg)]
    pub warmup: Duration,
    /// Open loop: requests in flight at most; a send that would exceed it waits (and its
    /// latency still counts from its intended send time).
    #[arg(long, value_name = "N", default_value_t = load::MAX_OPEN_REQUESTS)]
    pub max_inflight: usize,
    /// Answers the measured part needs (counted ones, see the error rule) before the
    /// plugin is rated; fewer fail the run with exit code 6.
    #[arg(long, value_name = "N", default_value_t = MIN_ANSWERS)]
    pub min_answers: u64,
    /// Longest wait for one answer (a longer one counts as a `timeout` error).
    #[arg(long, default_value = "30s", value_parser = super::duration_arg)]
    pub timeout: Duration,
    /// Tier thresholds (YAML or JSON, like `TierThresholds`); default: the documented
    /// ones.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// `table` for people (both clocks side by side), `json` or `yaml` for one report.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also write an HTML report with the previous runs of the plugin.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Also write the report without timeline and distribution as compact JSON (under
    /// 4 KiB) to this file: a Kubernetes Job's termination message.
    #[arg(long, value_name = "PATH")]
    pub termination_log: Option<PathBuf>,
    /// Exit 1 when the tier is worse than this one.
    #[arg(long, value_name = "TIER")]
    pub fail_below: Option<Tier>,
    /// A gateway's base URL; default: the local `berth dev up` gateway.
    #[arg(long, env = "BERTH_GATEWAY", value_name = "URL")]
    pub gateway: Option<String>,
    /// A token for `--gateway` with `invoke` scope for the plugin (and `admin` to record
    /// the result at the gateway).
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the token from this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The plugin's manifest, for its examples and limits when benchmarking a gateway other
    /// than the local one.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// How the report is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// For people.
    Table,
    /// One `BenchReport`.
    Json,
    /// One `BenchReport`.
    Yaml,
}

/// A failure with its exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

fn fail<T>(code: u8, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        code,
        message: message.into(),
    })
}

fn input_error(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_INPUT,
        message: message.into(),
    }
}

/// Runs the benchmark; see the module's exit codes.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(bench(args)) {
        Ok(code) => Ok(code),
        Err(f) => {
            eprintln!("error: {}", f.message);
            Ok(ExitCode::from(f.code))
        }
    }
}

/// Where the load goes.
struct Target {
    base: String,
    token: String,
    /// The local state directory when the gateway is `berth dev up`'s.
    local: Option<PathBuf>,
}

fn target(args: &Args) -> Result<Target, Failure> {
    if let Some(url) = &args.gateway {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| input_error(format!("--token-file {}: {e}", file.display())))?
                .trim()
                .to_owned(),
            (None, None) => {
                return fail(
                    EXIT_INPUT,
                    "--gateway needs a token: --token, --token-file or BERTH_TOKEN",
                );
            }
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return fail(
                EXIT_INPUT,
                format!("--gateway {url:?}: not an http:// URL (e.g. http://127.0.0.1:7070)"),
            );
        }
        if url.starts_with("https://") {
            return fail(
                EXIT_INPUT,
                format!(
                    "--gateway {url:?}: berth bench speaks plain HTTP/1.1; use the gateway's http:// address"
                ),
            );
        }
        return Ok(Target {
            base: url.trim_end_matches('/').to_owned(),
            token,
            local: None,
        });
    }
    let (state, store) = args
        .state
        .open()
        .map_err(|e| input_error(format!("{e:#}")))?;
    let url = store
        .setting(berth_docker::supervisor::GATEWAY_URL_SETTING)
        .ok()
        .flatten()
        .ok_or_else(|| Failure {
            code: EXIT_UNREACHABLE,
            message: format!(
                "no local gateway is running for {} (start `berth dev up`, or name one with \
                 --gateway URL --token TOKEN)",
                state.path().display()
            ),
        })?;
    let token = state.admin_token().map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("{e} (is `berth dev up` running?)"),
    })?;
    Ok(Target {
        base: url.trim_end_matches('/').to_owned(),
        token,
        local: Some(state.path().to_path_buf()),
    })
}

/// What is known about the plugin: capability names with their examples, version and
/// limits.
struct PluginInfo {
    version: Option<String>,
    capabilities: Vec<(String, Vec<Value>)>,
    limits: resources::Limits,
}

fn from_manifest(plugin: &Plugin) -> PluginInfo {
    let limits = plugin
        .spec
        .resources
        .resolve()
        .map(|r| resources::Limits {
            cpu_cores: Some(r.cpu_millis as f64 / 1000.0),
            memory_bytes: Some(r.memory_bytes),
        })
        .unwrap_or_default();
    PluginInfo {
        version: Some(plugin.spec.version.clone()),
        capabilities: plugin
            .spec
            .capabilities
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.examples.iter().map(|e| e.input.clone()).collect(),
                )
            })
            .collect(),
        limits,
    }
}

fn from_describe(v: &Value) -> PluginInfo {
    PluginInfo {
        version: v["version"].as_str().map(str::to_owned),
        capabilities: v["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let name = c["name"].as_str()?.to_owned();
                let examples = c["examples"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("input").cloned())
                    .collect();
                Some((name, examples))
            })
            .collect(),
        limits: resources::Limits {
            cpu_cores: v["cpuMillis"].as_u64().map(|m| m as f64 / 1000.0),
            memory_bytes: v["memoryBytes"].as_u64(),
        },
    }
}

/// `GET /v1/plugins/{name}` → the plugin's description; failures mapped to exit codes.
async fn describe(client: &HttpClient, target: &Target, plugin: &str) -> Result<Value, Failure> {
    let request = http::Request::get(format!("{}/v1/plugins/{plugin}", target.base))
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", target.token),
        )
        .body(http_body_util::Full::new(Bytes::new()))
        .map_err(|e| input_error(format!("plugin name {plugin:?}: {e}")))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
    let response = match answer {
        Err(_) => {
            return fail(
                EXIT_UNREACHABLE,
                format!("the gateway at {} did not answer within 10 s", target.base),
            );
        }
        Ok(Err(e)) => {
            return fail(
                EXIT_UNREACHABLE,
                format!(
                    "the gateway at {} is unreachable ({}){}",
                    target.base,
                    error_chain(&e),
                    if target.local.is_some() {
                        "; is `berth dev up` running?"
                    } else {
                        ""
                    }
                ),
            );
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    use http_body_util::BodyExt;
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match status {
        200 => serde_json::from_slice(&body).map_err(|_| Failure {
            code: EXIT_UNREACHABLE,
            message: format!(
                "{}/v1/plugins/{plugin} did not answer JSON; is that a Berth gateway?",
                target.base
            ),
        }),
        401 => fail(
            EXIT_ACCESS,
            format!("the gateway at {} refused the token (401)", target.base),
        ),
        403 => fail(
            EXIT_ACCESS,
            format!(
                "the token lacks the scope `invoke:{plugin}` (the gateway answered 403); use a \
                 token with that scope (`berth gateway token --scope invoke:{plugin}`)"
            ),
        ),
        404 => fail(
            EXIT_INPUT,
            format!(
                "unknown plugin {plugin:?}: the gateway at {} has no such plugin (see `berth \
                 list` or GET /v1/plugins)",
                target.base
            ),
        ),
        _ => fail(
            EXIT_UNREACHABLE,
            format!(
                "{}/v1/plugins/{plugin} answered {status}: {}",
                target.base,
                String::from_utf8_lossy(&body).trim()
            ),
        ),
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The input given with `--input`.
fn read_input(text: &str) -> Result<Value, Failure> {
    let (what, raw) = match text.strip_prefix('@') {
        Some(path) => (
            path.to_owned(),
            std::fs::read_to_string(path)
                .map_err(|e| input_error(format!("--input @{path}: {e}")))?,
        ),
        None => ("--input".to_owned(), text.to_owned()),
    };
    serde_json::from_str(&raw).map_err(|e| input_error(format!("{what}: not JSON: {e}")))
}

/// Reads and checks a thresholds file; errors name the file and the field.
pub fn read_thresholds(path: &Path) -> Result<TierThresholds, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let t: TierThresholds = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        // serde_yaml's own message may already start with the path (or its first part).
        let first = field.split(['.', '[']).next().unwrap_or_default();
        if field == "." || e.inner().to_string().starts_with(first) {
            format!("{}: {}", path.display(), e.inner())
        } else {
            format!("{}: {field}: {}", path.display(), e.inner())
        }
    })?;
    t.check().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(t)
}

/// The calls to make, after checking the capabilities asked for.
fn plan_calls(
    args: &Args,
    info: &PluginInfo,
    base: &str,
) -> Result<(Vec<String>, Vec<Call>), Failure> {
    let input = args.input.as_deref().map(read_input).transpose()?;
    let known: Vec<&str> = info.capabilities.iter().map(|(n, _)| n.as_str()).collect();
    let chosen: Vec<String> = if args.capabilities.is_empty() {
        let with_examples: Vec<String> = info
            .capabilities
            .iter()
            .filter(|(_, ex)| input.is_some() || !ex.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        if with_examples.is_empty() {
            return fail(
                EXIT_INPUT,
                format!(
                    "no capability of {} has examples{}; name one and give --input JSON \
                     (capabilities: {})",
                    args.plugin,
                    if args.manifest.is_none() && info.limits.cpu_cores.is_none() {
                        " that this gateway shows (--manifest FILE reads them from the manifest)"
                    } else {
                        ""
                    },
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        with_examples
    } else {
        let mut seen = Vec::new();
        for c in &args.capabilities {
            if !known.contains(&c.as_str()) {
                return fail(
                    EXIT_INPUT,
                    format!(
                        "unknown capability {c:?} of {} (it has: {})",
                        args.plugin,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if !seen.contains(c) {
                seen.push(c.clone());
            }
        }
        seen
    };
    let mut calls = Vec::new();
    for name in &chosen {
        let inputs: Vec<Value> = match &input {
            Some(v) => vec![v.clone()],
            None => info
                .capabilities
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, ex)| ex.clone())
                .unwrap_or_default(),
        };
        if inputs.is_empty() {
            return fail(
                EXIT_INPUT,
                format!(
                    "capability {name:?} of {} has no examples; give --input JSON (or @FILE)",
                    args.plugin
                ),
            );
        }
        for v in inputs {
            calls.push(Call {
                capability: name.clone(),
                url: format!("{base}/v1/plugins/{}/invoke/{name}", args.plugin),
                body: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            });
        }
    }
    Ok((chosen, calls))
}

async fn bench(args: Args) -> Result<ExitCode, Failure> {
    if args.duration.is_zero() {
        return fail(EXIT_INPUT, "--duration must be longer than 0 s");
    }
    if args.concurrency == 0 {
        return fail(EXIT_INPUT, "--concurrency must be at least 1");
    }
    if args.max_inflight == 0 {
        return fail(EXIT_INPUT, "--max-inflight must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0 && r <= 1_000_000.0)
    {
        return fail(
            EXIT_INPUT,
            format!("--rate {r}: give requests per second between 0 and 1000000"),
        );
    }
    let thresholds = match &args.thresholds {
        Some(path) => read_thresholds(path).map_err(input_error)?,
        None => TierThresholds::default(),
    };
    let target = target(&args)?;
    let client = load::client(4);
    let described = describe(&client, &target, &args.plugin).await?;

    // What the plugin offers: the manifest named, the local store's, or the gateway's
    // description.
    let info = if let Some(path) = &args.manifest {
        let bytes = std::fs::read(path)
            .map_err(|e| input_error(format!("--manifest {}: {e}", path.display())))?;
        let plugin = berth_api::load::load_single_plugin(&path.display().to_string(), &bytes)
            .map_err(|problems| {
                input_error(
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        if plugin.name() != args.plugin {
            return fail(
                EXIT_INPUT,
                format!(
                    "--manifest {} describes {:?}, not {:?}",
                    path.display(),
                    plugin.name(),
                    args.plugin
                ),
            );
        }
        from_manifest(&plugin)
    } else if target.local.is_some() {
        let (state, store) = args
            .state
            .open()
            .map_err(|e| input_error(format!("{e:#}")))?;
        let control = LocalControl::new(&state, &store, current_user());
        match control.plugin(&args.plugin) {
            Ok(p) => from_manifest(&p),
            Err(_) => from_describe(&described),
        }
    } else {
        from_describe(&described)
    };
    let (capabilities, calls) = plan_calls(&args, &info, &target.base)?;

    let model = match args.rate {
        Some(r) => Model::Open(r),
        None => Model::Closed(args.concurrency),
    };
    let plan = Plan {
        model,
        warmup: args.warmup,
        duration: args.duration,
        calls,
        token: target.token.clone(),
        timeout: args.timeout,
        max_inflight: args.max_inflight,
    };

    // One call first: a refused token or a missing plugin says so now, not as 100 % errors.
    for call in dedup_by_capability(&plan.calls) {
        let answer = load::send(&client, call, &plan.token, plan.timeout).await;
        match answer.status {
            401 | 403 => {
                return fail(
                    EXIT_ACCESS,
                    format!(
                        "the gateway refused to invoke {}/{} with this token ({}, {}); use a \
                         token with the scope `invoke:{}`",
                        args.plugin,
                        call.capability,
                        answer.status,
                        answer.error.unwrap_or_default(),
                        args.plugin
                    ),
                );
            }
            0 if answer.error.as_deref() == Some("connect") => {
                return fail(
                    EXIT_UNREACHABLE,
                    format!("the gateway at {} stopped answering", target.base),
                );
            }
            s if !(200..300).contains(&s) => eprintln!(
                "note: a first call of {}/{} answered {} ({}); benchmarking anyway",
                args.plugin,
                call.capability,
                if s == 0 {
                    "nothing".to_owned()
                } else {
                    s.to_string()
                },
                answer.error.unwrap_or_default()
            ),
            _ => {}
        }
    }

    let metrics_url = format!("{}/metrics", target.base);
    // The gateway's series are read when the measured part begins and after it ends.
    let (started_tx, started_rx) = tokio::sync::watch::channel(false);
    let before = {
        let (client, url, mut started) = (client.clone(), metrics_url.clone(), started_rx.clone());
        tokio::spawn(async move {
            if started.wait_for(|s| *s).await.is_err() {
                return Err("the run did not start".to_owned());
            }
            resources::scrape(&client, &url)
                .await
                .and_then(|t| prom::Snapshot::parse(&t))
        })
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let source = match &target.local {
        Some(dir) => resources::Source::Docker {
            state_dir: dir.clone(),
            plugin: args.plugin.clone(),
        },
        None => resources::Source::Gauges {
            metrics_url: metrics_url.clone(),
            plugin: args.plugin.clone(),
        },
    };
    let sampler = {
        let client = client.clone();
        let limits = info.limits;
        let mut started = started_rx.clone();
        tokio::spawn(async move {
            if started.wait_for(|s| *s).await.is_err() {
                return None;
            }
            resources::sample(source, limits, client, stop_rx).await
        })
    };
    if args.output == Output::Table {
        eprintln!(
            "benchmarking {} ({}) through {}: {} after {} s warm-up, for {} s",
            args.plugin,
            capabilities.join(", "),
            target.base,
            match model {
                Model::Closed(n) => format!("closed loop, {n} callers"),
                Model::Open(r) => format!("open loop, {r} req/s"),
            },
            args.warmup.as_secs_f64(),
            args.duration.as_secs_f64()
        );
    }
    let started_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let stamp = started_at.clone();
    let measured = load::run(plan, move || {
        if let Ok(mut s) = stamp.lock() {
            *s = Some(jiff::Timestamp::now());
        }
        let _ = started_tx.send(true);
    })
    .await;
    let _ = stop_tx.send(true);
    let measured = match measured {
        Ok(m) => m,
        Err(e) => {
            return fail(
                EXIT_LOAD,
                format!("the run failed and is not rated ({e}); nothing is recorded"),
            );
        }
    };
    let before = before
        .await
        .unwrap_or_else(|_| Err("the scrape did not finish".to_owned()));
    if let Err(e) = &before {
        eprintln!("note: the gateway's metrics could not be read ({e}); its view is left out");
    }
    let resources = sampler.await.ok().flatten();
    let after = resources::scrape(&client, &metrics_url)
        .await
        .and_then(|t| prom::Snapshot::parse(&t));
    let gateway_view = match (&before, &after) {
        (Ok(b), Ok(a)) => {
            let viewed = prom::gateway_view(b, a, &args.plugin, &capabilities);
            if viewed.restarted {
                eprintln!(
                    "warning: the gateway's counters went down during the run (it restarted); \
                     its view covers only the part of the run after the restart"
                );
            }
            viewed.view
        }
        _ => None,
    };
    let started_at = started_at
        .lock()
        .ok()
        .and_then(|s| *s)
        .unwrap_or_else(jiff::Timestamp::now);

    let report = build_report(BuildInput {
        plugin: &args.plugin,
        version: info
            .version
            .clone()
            .or_else(|| described["version"].as_str().map(str::to_owned)),
        capabilities,
        gateway: &target.base,
        started_at,
        model,
        warmup: args.warmup,
        duration: args.duration,
        measured: &measured,
        gateway_view,
        resources,
        thresholds,
    });

    // Too few answers to rate: nothing is printed, stored, sent or written.
    if let Some(message) = too_few_answers(&measured, args.min_answers) {
        return fail(EXIT_FEW, message);
    }

    // Could the machine drive the rate?
    let rate_failure = match model {
        Model::Open(rate) => rate_shortfall(rate, &measured, args.duration),
        Model::Closed(_) => None,
    };

    // Previous runs, then this one stored (locally).
    let mut previous = Vec::new();
    if rate_failure.is_none()
        && let Some(dir) = &target.local
    {
        match store_run(dir, &report) {
            Ok(p) => previous = p,
            Err(e) => eprintln!("warning: the result was not stored: {e}"),
        }
    }
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report).unwrap_or_default()),
        Output::Table => print!("{}", table(&report, &previous)),
    }
    if let Some(message) = rate_failure {
        return fail(EXIT_RATE, message);
    }
    if let Some(path) = &args.report {
        let html = report::render(&report, &previous);
        if let Err(e) = std::fs::write(path, html) {
            return fail(EXIT_INPUT, format!("--report {}: {e}", path.display()));
        }
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &args.termination_log
        && let Err(e) = std::fs::write(path, termination_message(&report))
    {
        return fail(
            EXIT_INPUT,
            format!("--termination-log {}: {e}", path.display()),
        );
    }
    record_at_gateway(&client, &target, &report).await;
    if let Some(floor) = args.fail_below
        && report.verdict.tier > floor
    {
        return fail(
            EXIT_BELOW,
            format!(
                "{} rated {}, below --fail-below {floor}",
                report.plugin, report.verdict.tier
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dedup_by_capability(calls: &[Call]) -> Vec<&Call> {
    let mut out: Vec<&Call> = Vec::new();
    for c in calls {
        if !out.iter().any(|o| o.capability == c.capability) {
            out.push(c);
        }
    }
    out
}

/// Why the run has too few answers to be rated, or `None` when it has enough.
fn too_few_answers(measured: &Measured, min: u64) -> Option<String> {
    let counted = measured.counted();
    if counted >= min {
        return None;
    }
    let left_out = if measured.not_counted > 0 {
        format!(
            " ({} more were the caller's mistake or a stopped plugin, which do not count)",
            measured.not_counted
        )
    } else {
        String::new()
    };
    Some(format!(
        "only {counted} answer{} came in the measured part{left_out}; at least {min} are needed \
         to rate the plugin, so it is not rated and nothing is recorded (measure longer with \
         --duration, drive more load, or lower --min-answers)",
        if counted == 1 { "" } else { "s" }
    ))
}

/// Why an open-loop run did not drive `rate`, or `None` when it did.
fn rate_shortfall(rate: f64, measured: &Measured, duration: Duration) -> Option<String> {
    let secs = duration.as_secs_f64();
    // Requests due in the measured part but never sent count as late.
    let due = (rate * secs).floor() as u64;
    let unsent = due.saturating_sub(measured.sent);
    let late = measured.late_sends.unwrap_or(0) + unsent;
    let sent = measured.sent.max(due).max(1);
    let answered = measured.requests() as f64 / secs;
    let on_time = (sent - late.min(sent)) as f64 / secs;
    let late_share = late as f64 / sent as f64;
    if late_share <= load::MAX_LATE_SHARE && answered >= rate * load::MIN_RATE_SHARE {
        return None;
    }
    let achieved = answered.min(on_time.max(answered * (1.0 - late_share)));
    Some(format!(
        "this machine could not drive {rate} req/s: {late} of {sent} requests were sent more \
         than {} ms late or not at all, and answers came at {answered:.1} req/s; the highest rate achieved \
         was {achieved:.1} req/s (try --rate {:.0} or a closed loop with --concurrency)",
        load::LATE_BOUND.as_millis(),
        (achieved * 0.9).floor().max(1.0)
    ))
}

struct BuildInput<'a> {
    plugin: &'a str,
    version: Option<String>,
    capabilities: Vec<String>,
    gateway: &'a str,
    started_at: jiff::Timestamp,
    model: Model,
    warmup: Duration,
    duration: Duration,
    measured: &'a Measured,
    gateway_view: Option<GatewayView>,
    resources: Option<ResourceUse>,
    thresholds: TierThresholds,
}

fn build_report(i: BuildInput<'_>) -> BenchReport {
    let m = i.measured;
    let h = &m.latency;
    let requests = m.requests();
    // The error ratio follows the rule shared with the live tiers: answers that do not
    // count are left out of the denominator.
    let counted = m.counted();
    let error_ratio = if counted == 0 {
        0.0
    } else {
        m.counted_errors as f64 / counted as f64
    };
    let latency = if requests == 0 {
        Latency::default()
    } else {
        Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    };
    let added = AddedTime {
        client_mean_ms: (!m.added.is_empty())
            .then(|| m.added_sum_us / m.added.len() as f64 / 1000.0),
        client_p50_ms: (!m.added.is_empty()).then(|| ms(m.added.value_at_quantile(0.5))),
        metrics_mean_ms: i.gateway_view.as_ref().and_then(|g| g.added_mean_ms),
    };
    let tier_latency = if requests == 0 {
        f64::INFINITY
    } else {
        ms(h.value_at_quantile(i.thresholds.latency_quantile))
    };
    let verdict = i.thresholds.classify(&TierInputs {
        latency_ms: if tier_latency.is_finite() {
            tier_latency
        } else {
            f64::MAX
        },
        error_ratio: if counted == 0 { 1.0 } else { error_ratio },
        resource_ratio: i.resources.as_ref().and_then(|r| r.ratio()),
    });
    BenchReport {
        plugin: i.plugin.to_owned(),
        version: i.version,
        capabilities: i.capabilities,
        gateway: i.gateway.to_owned(),
        started_at: berth_store::format_time(i.started_at),
        load: match i.model {
            Model::Closed(n) => LoadModel::Closed { concurrency: n },
            Model::Open(rate) => LoadModel::Open { rate },
        },
        warmup_seconds: i.warmup.as_secs_f64(),
        duration_seconds: i.duration.as_secs_f64(),
        requests,
        throughput: requests as f64 / i.duration.as_secs_f64(),
        errors: m.errors.clone(),
        error_ratio,
        latency,
        gateway_view: i.gateway_view,
        added,
        resources: i.resources,
        thresholds: i.thresholds,
        verdict,
        timeline: m.timeline(i.duration),
        distribution: m.distribution(40),
        late_sends: m.late_sends,
    }
}

/// Reads the previous runs of the plugin (newest first) and stores this one.
fn store_run(state_dir: &Path, report: &BenchReport) -> anyhow::Result<Vec<BenchReport>> {
    let state = StateArgs {
        state_dir: Some(state_dir.to_path_buf()),
    };
    let (_, store) = state.open()?;
    let previous = store
        .bench_runs(&report.plugin, PREVIOUS_RUNS)?
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.report).ok())
        .collect();
    store.add_bench_run(
        &report.plugin,
        &report.started_at,
        &serde_json::to_string(report)?,
    )?;
    Ok(previous)
}

/// The report without timeline and distribution, compact, under 4 KiB.
pub fn termination_message(report: &BenchReport) -> String {
    let mut small = report.clone();
    small.timeline.clear();
    small.distribution.clear();
    let mut text = serde_json::to_string(&small).unwrap_or_default();
    // Error codes are the only unbounded part: keep the most frequent ones.
    while text.len() > TERMINATION_LOG_LIMIT && !small.errors.is_empty() {
        if let Some(least) = small
            .errors
            .iter()
            .min_by_key(|(_, n)| **n)
            .map(|(k, _)| k.clone())
        {
            small.errors.remove(&least);
        }
        if let Some(g) = &mut small.gateway_view {
            g.errors.clear();
        }
        text = serde_json::to_string(&small).unwrap_or_default();
    }
    if text.len() > TERMINATION_LOG_LIMIT {
        small.verdict.reasons.clear();
        small.capabilities.truncate(1);
        text = serde_json::to_string(&small).unwrap_or_default();
    }
    text
}

/// `POST /v1/admin/benchmarks`; a refusal or an older gateway is a note, not a failure.
async fn record_at_gateway(client: &HttpClient, target: &Target, report: &BenchReport) {
    let url = format!("{}{PATH_ADMIN_BENCHMARKS}", target.base);
    let Ok(body) = serde_json::to_vec(report) else {
        return;
    };
    let Ok(request) = http::Request::post(&url)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", target.token),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
    else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Ok(Ok(r)) if r.status().is_success() => {}
        Ok(Ok(r)) if r.status() == 404 || r.status() == 405 => eprintln!(
            "warning: the gateway has no {PATH_ADMIN_BENCHMARKS} (an older gateway); the result \
             is not recorded there"
        ),
        Ok(Ok(r)) if r.status() == 401 || r.status() == 403 => eprintln!(
            "note: the result is not recorded at the gateway: the token lacks the admin scope"
        ),
        Ok(Ok(r)) => eprintln!(
            "warning: the gateway answered {} to {PATH_ADMIN_BENCHMARKS}; the result is not \
             recorded there",
            r.status()
        ),
        Ok(Err(e)) => eprintln!(
            "warning: could not record the result at the gateway: {}",
            error_chain(&e)
        ),
        Err(_) => eprintln!("warning: the gateway did not take the result within 10 s"),
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.3}"))
}

fn table(r: &BenchReport, previous: &[BenchReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let load = match &r.load {
        LoadModel::Closed { concurrency } => format!("closed loop, {concurrency} callers"),
        LoadModel::Open { rate } => {
            format!("open loop, {rate} req/s (latency from intended send time)")
        }
    };
    let _ = writeln!(
        out,
        "{} {} — {} ({}), {} s measured after {} s warm-up",
        r.plugin,
        r.version.as_deref().unwrap_or(""),
        r.capabilities.join(", "),
        load,
        r.duration_seconds,
        r.warmup_seconds
    );
    let _ = writeln!(out, "tier: {}", r.verdict.tier);
    for reason in &r.verdict.reasons {
        let _ = writeln!(out, "  {reason}");
    }
    let _ = writeln!(out);
    let g = r.gateway_view.as_ref();
    let _ = writeln!(
        out,
        "{:<22} {:>14} {:>16}",
        "", "berth bench", "gateway metrics"
    );
    let rows: [(&str, String, String); 9] = [
        (
            "requests",
            r.requests.to_string(),
            g.map_or("-".into(), |g| g.requests.to_string()),
        ),
        (
            "throughput (req/s)",
            format!("{:.1}", r.throughput),
            g.map_or("-".into(), |g| {
                format!("{:.1}", g.requests as f64 / r.duration_seconds)
            }),
        ),
        (
            "errors",
            format!(
                "{} ({:.3} %)",
                r.errors.values().sum::<u64>(),
                r.error_ratio * 100.0
            ),
            g.map_or("-".into(), |g| g.errors.values().sum::<u64>().to_string()),
        ),
        (
            "p50 (ms)",
            format!("{:.3}", r.latency.p50_ms),
            opt_ms(g.map(|g| g.latency.p50_ms)),
        ),
        (
            "p90 (ms)",
            format!("{:.3}", r.latency.p90_ms),
            opt_ms(g.map(|g| g.latency.p90_ms)),
        ),
        (
            "p99 (ms)",
            format!("{:.3}", r.latency.p99_ms),
            opt_ms(g.map(|g| g.latency.p99_ms)),
        ),
        (
            "max (ms)",
            format!("{:.3}", r.latency.max_ms),
            g.map_or("-".into(), |g| format!("≤ {:.3}", g.latency.max_ms)),
        ),
        (
            "mean (ms)",
            format!("{:.3}", r.latency.mean_ms),
            opt_ms(g.map(|g| g.latency.mean_ms)),
        ),
        (
            "gateway added, mean",
            opt_ms(r.added.client_mean_ms),
            opt_ms(r.added.metrics_mean_ms),
        ),
    ];
    for (name, mine, theirs) in rows {
        let _ = writeln!(out, "{name:<22} {mine:>14} {theirs:>16}");
    }
    if let Some(p50) = r.added.client_p50_ms {
        let _ = writeln!(out, "{:<22} {:>14.3}", "gateway added, p50", p50);
    }
    if r.added.client_mean_ms.is_none() {
        let _ = writeln!(
            out,
            "  (the gateway sent no Server-Timing: upstream header; its added time by this \
             clock is unknown)"
        );
    }
    if let Some(late) = r.late_sends {
        let _ = writeln!(out, "{:<22} {late:>14}", "late sends (> 5 ms)");
    }
    if !r.errors.is_empty() {
        let _ = writeln!(out, "\nerrors by code:");
        for (code, n) in &r.errors {
            let _ = writeln!(out, "  {code:<30} {n:>10}");
        }
    }
    if let Some(g) = g.filter(|g| !g.errors.is_empty()) {
        let _ = writeln!(out, "gateway outcomes other than success:");
        for (code, n) in &g.errors {
            let _ = writeln!(out, "  {code:<30} {n:>10}");
        }
    }
    let _ = writeln!(out);
    match &r.resources {
        Some(res) => {
            let pct = |u: Option<f64>, l: Option<f64>| match (u, l) {
                (Some(u), Some(l)) if l > 0.0 => format!(" ({:.0} % of {l})", u / l * 100.0),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "plugin CPU: mean {} cores, peak {} cores{}",
                res.cpu_cores_mean.map_or("-".into(), |c| format!("{c:.3}")),
                res.cpu_cores_peak.map_or("-".into(), |c| format!("{c:.3}")),
                pct(res.cpu_cores_peak, res.cpu_limit_cores)
            );
            let _ = writeln!(
                out,
                "plugin memory: peak {}{} ({} samples)",
                res.memory_peak_bytes
                    .map_or("-".into(), |m| format!("{:.1} MiB", m as f64 / 1048576.0)),
                match (res.memory_peak_bytes, res.memory_limit_bytes) {
                    (Some(u), Some(l)) if l > 0 => format!(
                        " ({:.0} % of {:.0} MiB)",
                        u as f64 / l as f64 * 100.0,
                        l as f64 / 1048576.0
                    ),
                    _ => String::new(),
                },
                res.samples
            );
        }
        None => {
            let _ = writeln!(out, "plugin CPU and memory: not measured");
        }
    }
    if !previous.is_empty() {
        let _ = writeln!(out, "\nprevious runs of {}:", r.plugin);
        for p in previous {
            let _ = writeln!(
                out,
                "  {}  {:<8}  p50 {:>9.3} ms  p99 {:>9.3} ms  {:>9.1} req/s",
                p.started_at, p.verdict.tier, p.latency.p50_ms, p.latency.p99_ms, p.throughput
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> BenchReport {
        let mut measured = Measured::new();
        measured.latency.record(1500).unwrap();
        measured.errors = (0..200)
            .map(|i| (format!("code_{i:03}_{}", "x".repeat(20)), 1))
            .collect();
        measured.counted_errors = 1;
        measured.elapsed = Duration::from_secs(1);
        build_report(BuildInput {
            plugin: "calc",
            version: None,
            capabilities: vec!["add".into()],
            gateway: "http://127.0.0.1:1",
            started_at: jiff::Timestamp::UNIX_EPOCH,
            model: Model::Closed(8),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            measured: &measured,
            gateway_view: None,
            resources: None,
            thresholds: TierThresholds::default(),
        })
    }

    #[test]
    fn the_termination_message_stays_under_4_kib() {
        let r = sample_report();
        assert!(serde_json::to_string(&r).unwrap().len() > TERMINATION_LOG_LIMIT);
        let text = termination_message(&r);
        assert!(text.len() <= TERMINATION_LOG_LIMIT, "{}", text.len());
        let back: BenchReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.verdict, r.verdict);
        assert!(back.timeline.is_empty());
    }

    #[test]
    fn an_open_loop_that_fell_behind_says_what_it_reached() {
        let mut m = Measured::new();
        m.late_sends = Some(0);
        m.sent = 1000;
        m.elapsed = Duration::from_secs(10);
        for _ in 0..1000 {
            m.latency.record(1000).unwrap();
        }
        let ten = Duration::from_secs(10);
        assert_eq!(rate_shortfall(100.0, &m, ten), None);
        // Every request sent, but only 60 % of the rate answered.
        let e = rate_shortfall(166.0, &m, ten).unwrap();
        assert!(e.contains("could not drive 166 req/s"), "{e}");
        assert!(e.contains("highest rate achieved was 100.0 req/s"), "{e}");
        // On time answers but 5 % of the sends late.
        m.late_sends = Some(50);
        let e = rate_shortfall(100.0, &m, ten).unwrap();
        assert!(e.contains("50 of 1000 requests"), "{e}");
    }

    #[test]
    fn every_answer_an_error_is_bronze() {
        let r = sample_report();
        assert_eq!(r.verdict.tier, Tier::Bronze);
        assert_eq!(r.requests, 1);
    }

    #[test]
    fn too_few_answers_are_not_rated_and_left_out_answers_do_not_count() {
        let mut m = Measured::new();
        let e = too_few_answers(&m, MIN_ANSWERS).unwrap();
        assert!(e.starts_with("only 0 answers came"), "{e}");
        assert!(e.contains("at least 20"), "{e}");
        for _ in 0..25 {
            m.latency.record(1000).unwrap();
        }
        assert_eq!(too_few_answers(&m, MIN_ANSWERS), None);
        m.not_counted = 10;
        let e = too_few_answers(&m, MIN_ANSWERS).unwrap();
        assert!(
            e.starts_with("only 15 answers came") && e.contains("10 more"),
            "{e}"
        );
    }

    #[test]
    fn the_error_ratio_follows_the_shared_rule() {
        use crate::bench::load::{Answer, answer_counts};
        use berth_api::bench::Counted;
        // The plugin's own 4xx is a good answer; the gateway refusing the input is not
        // counted; a plugin failure is an error.
        assert_eq!(answer_counts(422, Some("bad_numbers"), true), Counted::Good);
        assert_eq!(
            answer_counts(400, Some("schema_violation"), false),
            Counted::NotCounted
        );
        assert_eq!(
            answer_counts(503, Some("plugin_not_ready"), false),
            Counted::NotCounted
        );
        assert_eq!(
            answer_counts(502, Some("plugin_error"), false),
            Counted::Error
        );
        assert_eq!(answer_counts(500, Some("http_500"), false), Counted::Error);
        let mut m = Measured::new();
        let answer = |status, code: &str, from_plugin| Answer {
            error: Some(code.to_owned()),
            upstream: None,
            status,
            counted: answer_counts(status, Some(code), from_plugin),
        };
        let ok = Answer::default();
        for _ in 0..96 {
            m.record(0, &ok, Duration::from_millis(1));
        }
        m.record(
            0,
            &answer(422, "bad_numbers", true),
            Duration::from_millis(1),
        );
        m.record(
            0,
            &answer(400, "schema_violation", false),
            Duration::from_millis(1),
        );
        m.record(
            0,
            &answer(400, "schema_violation", false),
            Duration::from_millis(1),
        );
        m.record(
            0,
            &answer(502, "plugin_error", false),
            Duration::from_millis(1),
        );
        let r = build_report(BuildInput {
            plugin: "calc",
            version: None,
            capabilities: vec!["add".into()],
            gateway: "http://127.0.0.1:1",
            started_at: jiff::Timestamp::UNIX_EPOCH,
            model: Model::Closed(8),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            measured: &m,
            gateway_view: None,
            resources: None,
            thresholds: TierThresholds::default(),
        });
        // Every non-2xx is listed by code …
        assert_eq!(r.errors.values().sum::<u64>(), 4);
        assert_eq!(r.errors["schema_violation"], 2);
        // … but only the plugin error counts, over the 98 answers that count.
        assert!(
            (r.error_ratio - 1.0 / 98.0).abs() < 1e-12,
            "{}",
            r.error_ratio
        );
        assert_eq!(r.requests, 100);
    }

    #[test]
    fn thresholds_files_name_the_file_and_the_field() {
        let dir = std::env::temp_dir().join(format!("berth-bench-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.yaml");
        std::fs::write(
            &file,
            "platinum: {latencyMs: 1, errorRatio: 0, resourceRatio: 0.5}\n\
             gold: {latencyMs: 2, errorRatio: 0, resourceRatio: 0.6, speed: 3}\n\
             silver: {latencyMs: 3, errorRatio: 0, resourceRatio: 0.7}\n",
        )
        .unwrap();
        let e = read_thresholds(&file).unwrap_err();
        assert!(e.contains("t.yaml: gold: unknown field `speed`"), "{e}");
        std::fs::write(
            &file,
            "platinum: {latencyMs: 5, errorRatio: 0, resourceRatio: 0.5}\n\
             gold: {latencyMs: 2, errorRatio: 0, resourceRatio: 0.6}\n\
             silver: {latencyMs: 3, errorRatio: 0, resourceRatio: 0.7}\n",
        )
        .unwrap();
        let e = read_thresholds(&file).unwrap_err();
        assert!(e.contains("t.yaml: platinum:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
