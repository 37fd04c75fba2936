//! The HTML report of a `berth bench` run (`--report FILE.html`).
//!
//! One self-contained file: inline CSS, charts drawn here as inline SVG, no script, no font
//! and nothing else to load (a Content-Security-Policy in the page forbids any load, so a
//! mistake shows as a blank spot rather than a request). It shows the tier with its reasons
//! and thresholds, the headline numbers beside the gateway's own view of the run, the
//! latency distribution, latency and throughput over the run, the load model, and the
//! previous runs of the same plugin. Every string from the report is escaped (maud escapes
//! every splice); the output depends only on its inputs (no time of rendering), so the same
//! runs render to the same bytes.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use berth_api::BenchReport;
use berth_api::bench::{
    GatewayView, LatencyBucket, LoadModel, Tier, TierLimit, TimelinePoint, quantile_label,
};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// Colour of the median (p50) series in every chart.
pub const P50_COLOUR: &str = "#2563eb";
/// Colour of the 99th percentile series in every chart.
pub const P99_COLOUR: &str = "#dc2626";
/// Colour of throughput (successful answers) bars.
pub const THROUGHPUT_COLOUR: &str = "#16a34a";
/// Colour of error answers in the throughput chart.
pub const ERROR_COLOUR: &str = "#f59e0b";
/// Colour of the latency distribution's bars.
pub const DISTRIBUTION_COLOUR: &str = "#7c3aed";

/// The most previous runs drawn; older ones are left out.
const MAX_PREVIOUS: usize = 12;

/// What is shown where a measure is missing.
const NOT_MEASURED: &str = "not measured";

/// Renders the report of `current`, comparing it with those of `previous` that benchmarked
/// the same plugin (others are ignored; the list may be in any order and may hold
/// `current` itself).
pub fn render(current: &BenchReport, previous: &[BenchReport]) -> String {
    let history = history(current, previous);
    let tier = current.verdict.tier;
    let title = format!("berth bench · {} · {}", current.plugin, tier);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy"
                    content="default-src 'none'; style-src 'unsafe-inline'";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) (PreEscaped(tier_css())) }
            }
            body {
                header {
                    h1 {
                        (current.plugin)
                        @if let Some(v) = &current.version { " " span.version { (v) } }
                        " " (badge(tier))
                    }
                    p.meta {
                        "Capabilities: " (list_or(&current.capabilities, "none named"))
                        " · gateway " code { (current.gateway) }
                        " · started " (when(&current.started_at))
                    }
                }
                (tier_section(current))
                (numbers_section(current))
                section #distribution {
                    h2 { "Latency distribution" }
                    (distribution_chart(&current.distribution, current.latency.p50_ms, current.latency.p99_ms))
                }
                section #timeline {
                    h2 { "Over the run" }
                    div.charts {
                        figure {
                            figcaption { "Latency per second" }
                            (latency_chart(&current.timeline))
                        }
                        figure {
                            figcaption { "Answers per second" }
                            (throughput_chart(&current.timeline, current.throughput))
                        }
                    }
                }
                (gateway_section(current))
                (resources_section(current))
                (load_section(current))
                (history_section(current, &history))
                footer {
                    "berth bench report for " (current.plugin) ", run started " (current.started_at) "."
                }
            }
        }
    };
    page.into_string()
}

const CSS: &str = "\
:root{color-scheme:light}
body{margin:0 auto;max-width:1180px;padding:24px 32px 48px;background:#fff;color:#1f2328;\
font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
h1{font-size:28px;margin:0 0 4px}h2{font-size:20px;margin:0 0 12px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
section{margin:28px 0}.meta{color:#57606a;margin:0}.version{color:#57606a;font-weight:400}
code{font:13px ui-monospace,'DejaVu Sans Mono',monospace;background:#f3f4f6;padding:1px 4px;border-radius:4px}
.badge{display:inline-block;color:#fff;border-radius:6px;padding:2px 12px;font-size:.8em;vertical-align:middle}
.badge.big{font-size:26px;padding:6px 22px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(124px,1fr));gap:12px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px}
.card .label{color:#57606a;font-size:13px}.card .value{font-size:20px;font-weight:600;white-space:nowrap}
table{border-collapse:collapse;margin:8px 0}th,td{border-bottom:1px solid #d0d7de;padding:5px 14px 5px 0;text-align:left}
td.num,th.num{text-align:right}tr.current td{font-weight:600;background:#f6f8fa}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:20px}figure{margin:0}
figcaption{font-weight:600;margin-bottom:4px}svg{width:100%;height:auto;display:block}
svg text{font:11px system-ui,'DejaVu Sans',sans-serif;fill:#57606a}
svg text.halo{paint-order:stroke;stroke:#fff;stroke-width:3px;fill:#1f2328}
.empty{color:#57606a;font-style:italic}.warn{color:#9a3412}
.legend span{margin-right:16px}.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
footer{color:#57606a;font-size:13px;border-top:1px solid #d0d7de;padding-top:8px}
";

/// The colour a tier is shown in, in badges and chart labels.
fn tier_colour(tier: Tier) -> &'static str {
    match tier {
        Tier::Platinum => "#475569",
        Tier::Gold => "#a16207",
        Tier::Silver => "#6b7280",
        Tier::Bronze => "#9a3412",
    }
}

fn tier_css() -> String {
    Tier::ALL
        .into_iter()
        .map(|t| format!(".tier-{t}{{background:{}}}\n", tier_colour(t)))
        .collect()
}

fn badge(tier: Tier) -> Markup {
    html! { span class=(format!("badge tier-{tier}")) { (tier) } }
}

fn big_badge(tier: Tier) -> Markup {
    html! { span class=(format!("badge big tier-{tier}")) { (tier) } }
}

fn tier_section(r: &BenchReport) -> Markup {
    let t = &r.thresholds;
    let q = quantile_label(t.latency_quantile);
    let at_quantile = latency_at(r, t.latency_quantile).filter(|_| r.requests > 0);
    let resource_ratio = r.resources.as_ref().and_then(|u| u.ratio());
    let row = |tier: Tier, limit: &TierLimit| {
        html! {
            tr class=[(r.verdict.tier == tier).then_some("current")] {
                td { (badge(tier)) }
                td.num { "< " (ms(limit.latency_ms)) }
                td.num { "< " (percent(limit.error_ratio)) }
                td.num { "< " (percent(limit.resource_ratio)) }
            }
        }
    };
    html! {
        section #tier {
            h2 { "Tier" }
            p { (big_badge(r.verdict.tier)) }
            @if r.verdict.reasons.is_empty() {
                p { "Within every Platinum bound." }
            } @else {
                p { "Held at " (r.verdict.tier) " by:" }
                ul { @for reason in &r.verdict.reasons { li { (reason) } } }
            }
            table {
                thead {
                    tr {
                        th { "Tier" }
                        th.num { "p" (q) " latency" }
                        th.num { "error ratio" }
                        th.num { "CPU or memory of its limit" }
                    }
                }
                tbody {
                    (row(Tier::Platinum, &t.platinum))
                    (row(Tier::Gold, &t.gold))
                    (row(Tier::Silver, &t.silver))
                    tr class=[(r.verdict.tier == Tier::Bronze).then_some("current")] {
                        td { (badge(Tier::Bronze)) }
                        td colspan="3" { "anything worse" }
                    }
                    tr {
                        td { "This run" }
                        td.num { (opt(at_quantile, ms)) }
                        td.num { (percent(r.error_ratio)) }
                        td.num { (opt(resource_ratio, percent)) }
                    }
                }
            }
            p.meta { "A tier is the worst of the three ratings; the thresholds are the run's (berth bench --thresholds or the defaults)." }
        }
    }
}

fn numbers_section(r: &BenchReport) -> Markup {
    let l = &r.latency;
    let cards = [
        ("p50", "p50 latency", answered(r.requests, l.p50_ms)),
        ("p90", "p90 latency", answered(r.requests, l.p90_ms)),
        ("p99", "p99 latency", answered(r.requests, l.p99_ms)),
        ("max", "max latency", answered(r.requests, l.max_ms)),
        ("mean", "mean latency", answered(r.requests, l.mean_ms)),
        ("throughput", "throughput", rate(r.throughput)),
        ("requests", "answers", count(r.requests)),
        ("error-ratio", "error ratio", percent(r.error_ratio)),
    ];
    html! {
        section #numbers {
            h2 { "Numbers" }
            div.cards {
                @for (key, label, value) in &cards {
                    div.card data-measure=(key) {
                        div.label { (label) }
                        div.value { (value) }
                    }
                }
            }
            h3 { "Errors by code" }
            (errors_table(&r.errors, r.requests))
        }
    }
}

fn errors_table(errors: &BTreeMap<String, u64>, total: u64) -> Markup {
    html! {
        @if errors.is_empty() {
            p.empty { "No errors." }
        } @else {
            table.errors {
                thead { tr { th { "code" } th.num { "answers" } th.num { "share" } } }
                tbody {
                    @for (code, n) in errors {
                        tr {
                            td { code { (code) } }
                            td.num { (count(*n)) }
                            td.num { (percent(ratio(*n, total))) }
                        }
                    }
                }
            }
        }
    }
}

fn gateway_section(r: &BenchReport) -> Markup {
    let gv: Option<&GatewayView> = r.gateway_view.as_ref();
    let client_errors: u64 = r.errors.values().sum();
    let g = |f: fn(&GatewayView) -> String| gv.map_or_else(|| NOT_MEASURED.to_string(), f);
    let rows = [
        ("answers", count(r.requests), g(|v| count(v.requests))),
        (
            "errors",
            count(client_errors),
            g(|v| count(v.errors.values().sum())),
        ),
        (
            "p50",
            answered(r.requests, r.latency.p50_ms),
            g(|v| answered(v.requests, v.latency.p50_ms)),
        ),
        (
            "p90",
            answered(r.requests, r.latency.p90_ms),
            g(|v| answered(v.requests, v.latency.p90_ms)),
        ),
        (
            "p99",
            answered(r.requests, r.latency.p99_ms),
            g(|v| answered(v.requests, v.latency.p99_ms)),
        ),
        (
            "max",
            answered(r.requests, r.latency.max_ms),
            g(|v| answered(v.requests, v.latency.max_ms)),
        ),
        (
            "mean",
            answered(r.requests, r.latency.mean_ms),
            g(|v| answered(v.requests, v.latency.mean_ms)),
        ),
    ];
    let metrics_added = r
        .added
        .metrics_mean_ms
        .or_else(|| gv.and_then(|v| v.added_mean_ms));
    html! {
        section #gateway {
            h2 { "The gateway's view" }
            p.meta {
                "The same run by berth bench's clock and by the deltas of the gateway's Prometheus series over the run "
                "(quantiles interpolated in histogram buckets; its max is the upper bound of the highest bucket used)."
            }
            table.side-by-side {
                thead { tr { th { "measure" } th.num { "berth bench" } th.num { "gateway metrics" } } }
                tbody {
                    @for (name, client, gateway) in &rows {
                        tr { td { (name) } td.num { (client) } td.num { (gateway) } }
                    }
                }
            }
            @if let Some(v) = gv {
                @if !v.errors.is_empty() {
                    h3 { "Errors by outcome, as the gateway counted them" }
                    (errors_table(&v.errors, v.requests))
                }
            }
            h3 { "Time the gateway adds" }
            table.added {
                thead { tr { th { "clock" } th.num { "mean" } th.num { "median" } } }
                tbody {
                    tr {
                        td { "berth bench (latency minus the plugin's Server-Timing)" }
                        td.num { (opt(r.added.client_mean_ms, ms)) }
                        td.num { (opt(r.added.client_p50_ms, ms)) }
                    }
                    tr {
                        td { "gateway metrics (invocation minus upstream histogram)" }
                        td.num { (opt(metrics_added, ms)) }
                        td.num { (NOT_MEASURED) }
                    }
                }
            }
        }
    }
}

fn resources_section(r: &BenchReport) -> Markup {
    html! {
        section #resources {
            h2 { "Plugin resources" }
            @match &r.resources {
                None => p.empty { "CPU and memory: " (NOT_MEASURED) "." },
                Some(u) => {
                    table {
                        thead { tr { th { "resource" } th.num { "mean" } th.num { "peak" } th.num { "limit" } th.num { "peak of limit" } th {} } }
                        tbody {
                            @let cpu_ratio = u.cpu_cores_peak.zip(u.cpu_limit_cores).filter(|(_, l)| *l > 0.0).map(|(p, l)| p / l);
                            tr {
                                td { "CPU" }
                                td.num { (opt(u.cpu_cores_mean, cores)) }
                                td.num { (opt(u.cpu_cores_peak, cores)) }
                                td.num { (opt(u.cpu_limit_cores, cores)) }
                                td.num { (opt(cpu_ratio, percent)) }
                                td { (meter(cpu_ratio)) }
                            }
                            @let mem_ratio = u.memory_peak_bytes.zip(u.memory_limit_bytes).filter(|(_, l)| *l > 0).map(|(p, l)| p as f64 / l as f64);
                            tr {
                                td { "memory" }
                                td.num { "—" }
                                td.num { (opt(u.memory_peak_bytes, bytes)) }
                                td.num { (opt(u.memory_limit_bytes, bytes)) }
                                td.num { (opt(mem_ratio, percent)) }
                                td { (meter(mem_ratio)) }
                            }
                        }
                    }
                    p.meta { (u.samples) " samples." }
                }
            }
        }
    }
}

fn load_section(r: &BenchReport) -> Markup {
    html! {
        section #load {
            h2 { "Load" }
            @match &r.load {
                LoadModel::Closed { concurrency } => p {
                    "Closed loop: " strong { (concurrency) " callers" }
                    ", each sending its next request when the last one answered."
                },
                LoadModel::Open { rate: per_second } => p {
                    "Open loop: " strong { (rate(*per_second)) }
                    " on a fixed schedule whatever the answers; latency counts from each request's intended send time "
                    "(no coordinated omission)."
                },
            }
            p {
                "Warm-up " (seconds(r.warmup_seconds)) ", then " (seconds(r.duration_seconds)) " measured; "
                (count(r.requests)) " answers."
            }
            @if let Some(late) = r.late_sends.filter(|n| *n > 0) {
                p.warn {
                    (count(late)) " requests could not be sent on time because the machine could not keep up; "
                    "they count from their intended send time."
                }
            }
        }
    }
}

fn history_section(current: &BenchReport, history: &[&BenchReport]) -> Markup {
    html! {
        section #history {
            h2 { "Previous runs of " (current.plugin) }
            @if history.len() <= 1 {
                p.empty { "No previous runs of this plugin." }
            } @else {
                div.charts {
                    figure {
                        figcaption { "Latency by run" }
                        (history_latency_chart(history, current))
                    }
                    figure {
                        figcaption { "Throughput by run" }
                        (history_throughput_chart(history, current))
                    }
                }
            }
            table.history {
                thead {
                    tr {
                        th { "started" } th { "tier" } th.num { "p50" } th.num { "p99" }
                        th.num { "throughput" } th.num { "error ratio" } th { "load" }
                    }
                }
                tbody {
                    @for run in history.iter().rev() {
                        @let is_current = std::ptr::eq(*run, current);
                        tr class=[is_current.then_some("current")] {
                            td { (when(&run.started_at)) @if is_current { " (this run)" } }
                            td { (badge(run.verdict.tier)) }
                            td.num { (answered(run.requests, run.latency.p50_ms)) }
                            td.num { (answered(run.requests, run.latency.p99_ms)) }
                            td.num { (rate(run.throughput)) }
                            td.num { (percent(run.error_ratio)) }
                            td { (load_short(&run.load)) }
                        }
                    }
                }
            }
        }
    }
}

/// The runs to compare, oldest first, ending with `current`: the latest [`MAX_PREVIOUS`]
/// of `previous` that benchmarked the same plugin and are not `current` itself.
fn history<'a>(current: &'a BenchReport, previous: &'a [BenchReport]) -> Vec<&'a BenchReport> {
    let mut runs: Vec<&BenchReport> = previous
        .iter()
        .filter(|p| p.plugin == current.plugin && p.started_at != current.started_at)
        .collect();
    runs.sort_by(|a, b| chronological(&a.started_at, &b.started_at));
    let skip = runs.len().saturating_sub(MAX_PREVIOUS);
    runs.drain(..skip);
    runs.push(current);
    runs
}

fn chronological(a: &str, b: &str) -> Ordering {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn latency_at(r: &BenchReport, q: f64) -> Option<f64> {
    [
        (0.5, r.latency.p50_ms),
        (0.9, r.latency.p90_ms),
        (0.99, r.latency.p99_ms),
    ]
    .into_iter()
    .find(|(at, _)| (q - at).abs() < 1e-9)
    .map(|(_, v)| v)
}

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}

fn when(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

fn short_when(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%m-%d %H:%M").to_string(),
        Err(_) => rfc3339.chars().take(16).collect(),
    }
}

fn load_short(load: &LoadModel) -> String {
    match load {
        LoadModel::Closed { concurrency } => format!("closed, {concurrency} callers"),
        LoadModel::Open { rate: r } => format!("open, {}", rate(*r)),
    }
}

fn finite(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn opt<T>(v: Option<T>, f: fn(T) -> String) -> String {
    v.map_or_else(|| NOT_MEASURED.to_string(), f)
}

/// Milliseconds, with the precision a reader needs at that size.
fn ms(v: f64) -> String {
    match finite(v) {
        None => NOT_MEASURED.to_string(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
    }
}

/// A latency quantile of `answers` answers: none when there were no answers.
fn answered(answers: u64, v: f64) -> String {
    if answers == 0 {
        NOT_MEASURED.to_string()
    } else {
        ms(v)
    }
}

fn rate(v: f64) -> String {
    finite(v).map_or_else(|| NOT_MEASURED.to_string(), |v| format!("{v:.1} req/s"))
}

fn percent(ratio: f64) -> String {
    match finite(ratio).map(|r| r * 100.0) {
        None => NOT_MEASURED.to_string(),
        Some(0.0) => "0 %".to_string(),
        Some(p) if p >= 10.0 => format!("{p:.1} %"),
        Some(p) if p >= 1.0 => format!("{p:.2} %"),
        Some(p) => format!("{p:.3} %"),
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cores(v: f64) -> String {
    finite(v).map_or_else(|| NOT_MEASURED.to_string(), |v| format!("{v:.3} cores"))
}

fn bytes(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn seconds(v: f64) -> String {
    finite(v).map_or_else(|| NOT_MEASURED.to_string(), |v| format!("{v:.1} s"))
}

/// A coordinate for an SVG attribute: one decimal, never NaN.
fn c(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".to_string()
    }
}

/// A chart's viewBox and the drawing area inside it, leaving room for the axes' labels.
struct Plot {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Plot {
    const fn new(w: f64, h: f64) -> Self {
        Self {
            w,
            h,
            left: 58.0,
            right: w - 14.0,
            top: 22.0,
            bottom: h - 42.0,
        }
    }
}

/// Charts drawn two side by side.
const HALF: Plot = Plot::new(560.0, 260.0);
/// Charts drawn across the page.
const WIDE: Plot = Plot::new(1120.0, 300.0);

impl Plot {
    fn width(&self) -> f64 {
        self.right - self.left
    }

    fn height(&self) -> f64 {
        self.bottom - self.top
    }

    /// The y coordinate of `v` on an axis from 0 to `top`.
    fn y(&self, v: f64, top: f64) -> f64 {
        let v = finite(v).unwrap_or(0.0).min(top);
        self.bottom - v / top * self.height()
    }
}

/// Round axis ticks from 0 covering `max`: (the axis top, the ticks).
fn ticks(max: f64) -> (f64, Vec<f64>) {
    let max = finite(max).filter(|m| *m > 0.0).unwrap_or(1.0);
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let n = (max / step).ceil().max(1.0) as usize;
    let top = step * n as f64;
    (top, (0..=n).map(|i| step * i as f64).collect())
}

fn tick_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The frame every chart shares: horizontal grid lines with their labels, the axes and
/// the y axis' title.
fn frame(plot: &Plot, top: f64, y_ticks: &[f64], y_title: &str) -> Markup {
    html! {
        @for t in y_ticks {
            @let y = plot.y(*t, top);
            line x1=(c(plot.left)) x2=(c(plot.right)) y1=(c(y)) y2=(c(y)) stroke="#e5e7eb" {}
            text x=(c(plot.left - 6.0)) y=(c(y + 4.0)) text-anchor="end" { (tick_label(*t)) }
        }
        line x1=(c(plot.left)) x2=(c(plot.left)) y1=(c(plot.top)) y2=(c(plot.bottom)) stroke="#57606a" {}
        line x1=(c(plot.left)) x2=(c(plot.right)) y1=(c(plot.bottom)) y2=(c(plot.bottom)) stroke="#57606a" {}
        text x="12" y=(c(plot.top + plot.height() / 2.0)) text-anchor="middle"
            transform=(format!("rotate(-90 12 {})", c(plot.top + plot.height() / 2.0))) { (y_title) }
    }
}

fn svg(plot: &Plot, label: &str, body: Markup) -> Markup {
    html! {
        svg viewBox=(format!("0 0 {} {}", plot.w, plot.h)) role="img" aria-label=(label) {
            title { (label) }
            (body)
        }
    }
}

fn legend(items: &[(&str, &str)]) -> Markup {
    html! {
        div.legend {
            @for (colour, label) in items {
                span { span.swatch style=(format!("background:{colour}")) {} (label) }
            }
        }
    }
}

fn no_data(what: &str) -> Markup {
    html! { p.empty { (what) ": " (NOT_MEASURED) "." } }
}

/// Bars of the latency distribution, one per bucket and equally wide (buckets usually
/// grow geometrically), with the p50 and p99 marked where they fall.
fn distribution_chart(buckets: &[LatencyBucket], p50: f64, p99: f64) -> Markup {
    let plot = &WIDE;
    let buckets: Vec<&LatencyBucket> = buckets
        .iter()
        .filter(|b| finite(b.le_ms).is_some())
        .collect();
    if buckets.is_empty() {
        return no_data("Latency distribution");
    }
    let (top, y_ticks) = ticks(buckets.iter().map(|b| b.count).max().unwrap_or(0) as f64);
    let n = buckets.len() as f64;
    let bw = plot.width() / n;
    let label_every = (buckets.len() as f64 / 10.0).ceil().max(1.0) as usize;
    // Where a latency falls on the bucket axis: its bucket's slot, interpolated between the
    // bucket's bounds.
    let position = |v: f64| -> Option<f64> {
        let v = finite(v)?;
        let i = buckets.iter().position(|b| b.le_ms >= v);
        let slot = match i {
            None => n,
            Some(i) => {
                let lower = if i == 0 { 0.0 } else { buckets[i - 1].le_ms };
                let span = buckets[i].le_ms - lower;
                let frac = if span > 0.0 {
                    ((v - lower) / span).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                i as f64 + frac
            }
        };
        Some(plot.left + slot * bw)
    };
    let markers = [("p50", p50, P50_COLOUR), ("p99", p99, P99_COLOUR)];
    let body = html! {
        (frame(plot, top, &y_ticks, "answers"))
        @for (i, b) in buckets.iter().enumerate() {
            @let x = plot.left + i as f64 * bw;
            @let y = plot.y(b.count as f64, top);
            rect x=(c(x + bw * 0.1)) y=(c(y)) width=(c(bw * 0.8)) height=(c(plot.bottom - y))
                fill=(DISTRIBUTION_COLOUR) {
                title { "≤ " (ms(b.le_ms)) ": " (count(b.count)) " answers" }
            }
            @if i % label_every == 0 || i + 1 == buckets.len() {
                text x=(c(x + bw)) y=(c(plot.bottom + 14.0)) text-anchor="middle" { (tick_label(b.le_ms)) }
            }
        }
        text x=(c(plot.left + plot.width() / 2.0)) y=(c(plot.h - 8.0)) text-anchor="middle" { "latency ≤ (ms)" }
        @for (name, v, colour) in markers {
            @if let Some(x) = position(v) {
                line x1=(c(x)) x2=(c(x)) y1=(c(plot.top)) y2=(c(plot.bottom)) stroke=(colour)
                    stroke-width="2" stroke-dasharray="5 3" {}
                text x=(c(x + 3.0)) y=(c(plot.top - 6.0)) style=(format!("fill:{colour}")) { (name) " " (ms(v)) }
            }
        }
    };
    html! {
        (svg(plot, "Latency distribution", body))
        (legend(&[(DISTRIBUTION_COLOUR, "answers per latency bucket"), (P50_COLOUR, "p50"), (P99_COLOUR, "p99")]))
    }
}

/// Seconds of the timeline and the x coordinate of a second's slot.
struct TimeAxis {
    plot: &'static Plot,
    first: u32,
    slots: f64,
}

impl TimeAxis {
    fn new(plot: &'static Plot, points: &[TimelinePoint]) -> Option<Self> {
        let first = points.iter().map(|p| p.second).min()?;
        let last = points.iter().map(|p| p.second).max()?;
        Some(Self {
            plot,
            first,
            slots: f64::from(last - first) + 1.0,
        })
    }

    /// The left edge of `second`'s slot.
    fn x(&self, second: u32) -> f64 {
        self.plot.left + f64::from(second - self.first) / self.slots * self.plot.width()
    }

    fn slot_width(&self) -> f64 {
        self.plot.width() / self.slots
    }

    fn labels(&self) -> Markup {
        let plot = self.plot;
        let (_, marks) = ticks(self.slots);
        html! {
            @for m in marks.iter().filter(|m| **m <= self.slots) {
                @let x = plot.left + m / self.slots * plot.width();
                text x=(c(x)) y=(c(plot.bottom + 14.0)) text-anchor="middle" { (tick_label(*m)) }
            }
            text x=(c(plot.left + plot.width() / 2.0)) y=(c(self.plot.h - 8.0)) text-anchor="middle" { "seconds into the run" }
        }
    }
}

/// p50 and p99 of each second as lines; seconds without answers break the lines.
fn latency_chart(timeline: &[TimelinePoint]) -> Markup {
    let plot = &HALF;
    let Some(axis) = TimeAxis::new(plot, timeline) else {
        return no_data("Latency over the run");
    };
    let max = timeline
        .iter()
        .filter(|p| p.requests > 0)
        .flat_map(|p| [p.p50_ms, p.p99_ms])
        .filter_map(finite)
        .fold(0.0, f64::max);
    let (top, y_ticks) = ticks(max);
    let mut points: Vec<&TimelinePoint> = timeline.iter().collect();
    points.sort_by_key(|p| p.second);
    let series = |value: fn(&TimelinePoint) -> f64| -> (String, Vec<(f64, f64)>) {
        let mut d = String::new();
        let mut dots = Vec::new();
        let mut previous: Option<u32> = None;
        for p in &points {
            let Some(v) = finite(value(p)).filter(|_| p.requests > 0) else {
                previous = None;
                continue;
            };
            let x = axis.x(p.second) + axis.slot_width() / 2.0;
            let y = plot.y(v, top);
            let joined = previous.is_some_and(|s| p.second == s + 1);
            let _ = write!(d, "{}{} {} ", if joined { "L" } else { "M" }, c(x), c(y));
            dots.push((x, y));
            previous = Some(p.second);
        }
        (d.trim_end().to_string(), dots)
    };
    let lines = [
        (P99_COLOUR, series(|p| p.p99_ms)),
        (P50_COLOUR, series(|p| p.p50_ms)),
    ];
    let show_dots = points.len() <= 60;
    let body = html! {
        (frame(plot, top, &y_ticks, "ms"))
        (axis.labels())
        @for (colour, (d, dots)) in &lines {
            @if !d.is_empty() {
                path d=(d) fill="none" stroke=(colour) stroke-width="2.5" stroke-linejoin="round" {}
            }
            @if show_dots {
                @for (x, y) in dots {
                    circle cx=(c(*x)) cy=(c(*y)) r="3" fill=(colour) {}
                }
            }
        }
    };
    html! {
        (svg(plot, "Latency per second of the run", body))
        (legend(&[(P50_COLOUR, "p50"), (P99_COLOUR, "p99")]))
    }
}

/// Answers per second as bars, errors stacked on successes, and the run's mean
/// throughput as a dashed line.
fn throughput_chart(timeline: &[TimelinePoint], mean: f64) -> Markup {
    let plot = &HALF;
    let Some(axis) = TimeAxis::new(plot, timeline) else {
        return no_data("Throughput over the run");
    };
    let max = timeline
        .iter()
        .map(|p| p.requests as f64)
        .fold(finite(mean).unwrap_or(0.0), f64::max);
    let (top, y_ticks) = ticks(max);
    let bw = axis.slot_width();
    let body = html! {
        (frame(plot, top, &y_ticks, "answers / s"))
        (axis.labels())
        @for p in timeline {
            @let errors = p.errors.min(p.requests);
            @let x = axis.x(p.second) + bw * 0.1;
            @let y_all = plot.y(p.requests as f64, top);
            @let y_ok = plot.y((p.requests - errors) as f64, top);
            rect x=(c(x)) y=(c(y_ok)) width=(c(bw * 0.8)) height=(c(plot.bottom - y_ok)) fill=(THROUGHPUT_COLOUR) {
                title { "second " (p.second) ": " (count(p.requests)) " answers, " (count(errors)) " errors" }
            }
            @if errors > 0 {
                rect x=(c(x)) y=(c(y_all)) width=(c(bw * 0.8)) height=(c(y_ok - y_all)) fill=(ERROR_COLOUR) {}
            }
        }
        @if let Some(m) = finite(mean) {
            @let y = plot.y(m, top);
            line x1=(c(plot.left)) x2=(c(plot.right)) y1=(c(y)) y2=(c(y)) stroke="#1f2328"
                stroke-width="1.5" stroke-dasharray="6 4" {}
            text.halo x=(c(plot.right)) y=(c(y - 5.0)) text-anchor="end" { "mean " (rate(m)) }
        }
    };
    html! {
        (svg(plot, "Answers per second of the run", body))
        (legend(&[(THROUGHPUT_COLOUR, "successful answers"), (ERROR_COLOUR, "errors")]))
    }
}

/// The x labels of a chart by run: each run's start and tier.
fn run_labels(plot: &Plot, runs: &[&BenchReport], current: &BenchReport, gw: f64) -> Markup {
    html! {
        @for (i, run) in runs.iter().enumerate() {
            @let x = plot.left + (i as f64 + 0.5) * gw;
            @let is_current = std::ptr::eq(*run, current);
            text x=(c(x)) y=(c(plot.bottom + 14.0)) text-anchor="middle" {
                @if is_current { "this run" } @else { (short_when(&run.started_at)) }
            }
            text x=(c(x)) y=(c(plot.bottom + 28.0)) text-anchor="middle" style=(format!("fill:{}", tier_colour(run.verdict.tier))) { (run.verdict.tier) }
        }
    }
}

fn history_latency_chart(runs: &[&BenchReport], current: &BenchReport) -> Markup {
    let plot = &HALF;
    let max = runs
        .iter()
        .flat_map(|r| [r.latency.p50_ms, r.latency.p99_ms])
        .filter_map(finite)
        .fold(0.0, f64::max);
    let (top, y_ticks) = ticks(max);
    let gw = plot.width() / runs.len() as f64;
    let body = html! {
        (frame(plot, top, &y_ticks, "ms"))
        (run_labels(plot, runs, current, gw))
        @for (i, run) in runs.iter().enumerate() {
            @let x = plot.left + i as f64 * gw;
            @for (j, (v, colour)) in [(run.latency.p50_ms, P50_COLOUR), (run.latency.p99_ms, P99_COLOUR)].into_iter().enumerate() {
                @let y = plot.y(v, top);
                rect x=(c(x + gw * (0.12 + 0.38 * j as f64))) y=(c(y)) width=(c(gw * 0.36)) height=(c(plot.bottom - y)) fill=(colour) {
                    title { (if j == 0 { "p50 " } else { "p99 " }) (ms(v)) }
                }
            }
        }
    };
    html! {
        (svg(plot, "Latency of each run", body))
        (legend(&[(P50_COLOUR, "p50"), (P99_COLOUR, "p99")]))
    }
}

fn history_throughput_chart(runs: &[&BenchReport], current: &BenchReport) -> Markup {
    let plot = &HALF;
    let max = runs
        .iter()
        .map(|r| r.throughput)
        .filter_map(finite)
        .fold(0.0, f64::max);
    let (top, y_ticks) = ticks(max);
    let gw = plot.width() / runs.len() as f64;
    let body = html! {
        (frame(plot, top, &y_ticks, "answers / s"))
        (run_labels(plot, runs, current, gw))
        @for (i, run) in runs.iter().enumerate() {
            @let y = plot.y(run.throughput, top);
            rect x=(c(plot.left + (i as f64 + 0.2) * gw)) y=(c(y)) width=(c(gw * 0.6)) height=(c(plot.bottom - y)) fill=(THROUGHPUT_COLOUR) {
                title { (rate(run.throughput)) }
            }
        }
    };
    html! {
        (svg(plot, "Throughput of each run", body))
        (legend(&[(THROUGHPUT_COLOUR, "throughput")]))
    }
}

/// A bar showing a share of a limit, red from 90 %.
fn meter(ratio: Option<f64>) -> Markup {
    let Some(r) = ratio.and_then(finite) else {
        return html! {};
    };
    let colour = if r >= 0.9 {
        P99_COLOUR
    } else {
        THROUGHPUT_COLOUR
    };
    html! {
        svg.meter viewBox="0 0 200 14" width="200" height="14" role="img" aria-label=(percent(r)) style="width:200px" {
            rect x="0" y="0" width="200" height="14" fill="#e5e7eb" rx="3" {}
            rect x="0" y="0" width=(c(200.0 * r.min(1.0))) height="14" fill=(colour) rx="3" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::bench::{
        AddedTime, GatewayView, Latency, ResourceUse, TierThresholds, TierVerdict,
    };

    fn report(plugin: &str, started_at: &str, tier: Tier) -> BenchReport {
        BenchReport {
            plugin: plugin.into(),
            version: Some("1.2.0".into()),
            capabilities: vec!["add".into()],
            gateway: "http://127.0.0.1:7070".into(),
            started_at: started_at.into(),
            load: LoadModel::Closed { concurrency: 8 },
            warmup_seconds: 2.0,
            duration_seconds: 3.0,
            requests: 3000,
            throughput: 1000.0,
            errors: BTreeMap::from([("http_503".to_string(), 3)]),
            error_ratio: 0.001,
            latency: Latency {
                p50_ms: 4.2,
                p90_ms: 7.5,
                p99_ms: 12.5,
                max_ms: 30.0,
                mean_ms: 5.0,
            },
            gateway_view: Some(GatewayView {
                requests: 3000,
                errors: BTreeMap::from([("plugin_error".to_string(), 3)]),
                latency: Latency {
                    p50_ms: 4.0,
                    p90_ms: 7.0,
                    p99_ms: 12.0,
                    max_ms: 50.0,
                    mean_ms: 4.8,
                },
                added_mean_ms: Some(0.4),
            }),
            added: AddedTime {
                client_mean_ms: Some(0.5),
                client_p50_ms: Some(0.45),
                metrics_mean_ms: Some(0.4),
            },
            resources: Some(ResourceUse {
                cpu_cores_mean: Some(0.2),
                cpu_cores_peak: Some(0.3),
                cpu_limit_cores: Some(0.5),
                memory_peak_bytes: Some(20 << 20),
                memory_limit_bytes: Some(64 << 20),
                samples: 3,
            }),
            thresholds: TierThresholds::default(),
            verdict: TierVerdict {
                tier,
                reasons: vec!["error ratio 0.100 % → Gold".into()],
            },
            timeline: (0..3)
                .map(|s| TimelinePoint {
                    second: s,
                    requests: 1000,
                    errors: 1,
                    p50_ms: 4.0 + f64::from(s),
                    p99_ms: 12.0 + f64::from(s),
                })
                .collect(),
            distribution: [1.0, 2.5, 5.0, 10.0, 25.0, 50.0]
                .into_iter()
                .zip([10, 300, 2000, 600, 80, 10])
                .map(|(le_ms, count)| LatencyBucket { le_ms, count })
                .collect(),
            late_sends: None,
        }
    }

    /// Every number in an SVG attribute that places or sizes something.
    fn svg_numbers(html: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for attr in [
            "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height", "d",
        ] {
            let needle = format!(" {attr}=\"");
            for (at, _) in html.match_indices(&needle) {
                let rest = &html[at + needle.len()..];
                let value = &rest[..rest.find('"').unwrap()];
                for word in value.split([' ', ',']) {
                    let word = word.trim_start_matches(['M', 'L']);
                    if word.is_empty() {
                        continue;
                    }
                    let n: f64 = word
                        .parse()
                        .unwrap_or_else(|_| panic!("{attr}=\"{value}\" is not numeric"));
                    out.push((attr.to_string(), n));
                }
            }
        }
        out
    }

    fn assert_geometry_sane(html: &str) {
        let numbers = svg_numbers(html);
        assert!(!numbers.is_empty(), "the report draws something");
        for (attr, n) in numbers {
            assert!(n.is_finite(), "{attr} is {n}");
            assert!(
                (0.0..=WIDE.w).contains(&n),
                "{attr}={n} falls outside the chart"
            );
        }
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
    }

    #[test]
    fn strings_from_the_report_are_escaped() {
        let mut r = report(
            "<script>alert(1)</script>",
            "2026-11-30T12:00:00Z",
            Tier::Gold,
        );
        r.errors.insert("\"><img src=x onerror=alert(2)>".into(), 1);
        r.version = Some("</title><b>".into());
        r.capabilities = vec!["a&b".into()];
        r.verdict.reasons = vec!["<i>why</i>".into()];
        let html = render(&r, &[]);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
        assert!(html.contains("a&amp;b"));
    }

    #[test]
    fn the_page_loads_nothing_and_forbids_loading() {
        let html = render(&report("calc", "2026-11-30T12:00:00Z", Tier::Gold), &[]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("default-src 'none'"));
        for needle in [" src=", " href=", "<script", "<link", "url(", "@import"] {
            assert!(!html.contains(needle), "the report holds {needle:?}");
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = report("calc", "2026-11-30T12:00:00Z", Tier::Gold);
        let prev = [report("calc", "2026-11-29T12:00:00Z", Tier::Silver)];
        assert_eq!(render(&a, &prev), render(&a, &prev));
    }

    #[test]
    fn charts_stay_inside_their_frames() {
        let r = report("calc", "2026-11-30T12:00:00Z", Tier::Gold);
        let prev = [
            report("calc", "2026-11-29T12:00:00Z", Tier::Silver),
            report("calc", "2026-11-28T12:00:00Z", Tier::Platinum),
        ];
        let html = render(&r, &prev);
        assert_geometry_sane(&html);
        assert_eq!(html.matches("<svg viewBox").count(), 5, "five charts");
        for colour in [
            P50_COLOUR,
            P99_COLOUR,
            THROUGHPUT_COLOUR,
            ERROR_COLOUR,
            DISTRIBUTION_COLOUR,
        ] {
            assert!(html.contains(&format!("fill=\"{colour}\"")), "{colour}");
        }
    }

    #[test]
    fn missing_and_broken_measures_say_not_measured() {
        let mut r = report("calc", "2026-11-30T12:00:00Z", Tier::Gold);
        r.timeline.clear();
        r.distribution.clear();
        r.gateway_view = None;
        r.resources = None;
        r.added = AddedTime::default();
        r.latency.p99_ms = f64::NAN;
        r.throughput = f64::INFINITY;
        let html = render(&r, &[]);
        assert!(!html.contains("<svg viewBox"), "no chart without data");
        assert!(html.contains("Latency distribution: not measured."));
        assert!(html.contains("Latency over the run: not measured."));
        assert!(html.contains("CPU and memory: not measured."));
        assert!(html.contains("No previous runs of this plugin."));
        r.requests = 0;
        let html = render(&r, &[]);
        assert!(!html.contains("0.00 ms"), "no answers, no latency: {html}");
        assert!(!html.contains("NaN") && !html.contains("inf "), "{html}");
    }

    #[test]
    fn degenerate_data_draws_finite_shapes() {
        let mut r = report("calc", "2026-11-30T12:00:00Z", Tier::Platinum);
        r.timeline = vec![TimelinePoint {
            second: 7,
            requests: 0,
            errors: 5,
            p50_ms: f64::NAN,
            p99_ms: -1.0,
        }];
        r.distribution = vec![
            LatencyBucket {
                le_ms: f64::NAN,
                count: 3,
            },
            LatencyBucket {
                le_ms: 5.0,
                count: 0,
            },
        ];
        r.latency.p50_ms = 1e9;
        r.throughput = 0.0;
        let prev = [report("calc", "not a date", Tier::Bronze)];
        let html = render(&r, &prev);
        assert_geometry_sane(&html);
    }

    #[test]
    fn previous_runs_are_this_plugins_oldest_first() {
        let r = report("calc", "2026-11-30T12:00:00Z", Tier::Gold);
        let prev = [
            report("calc", "2026-11-29T12:00:00Z", Tier::Silver),
            report("other", "2026-11-29T13:00:00Z", Tier::Bronze),
            report("calc", "2026-11-28T12:00:00Z", Tier::Platinum),
            report("calc", "2026-11-30T12:00:00Z", Tier::Gold),
        ];
        let runs = history(&r, &prev);
        let started: Vec<&str> = runs.iter().map(|r| r.started_at.as_str()).collect();
        assert_eq!(
            started,
            [
                "2026-11-28T12:00:00Z",
                "2026-11-29T12:00:00Z",
                "2026-11-30T12:00:00Z"
            ]
        );
        assert!(std::ptr::eq(runs[2], &r));
        let many: Vec<BenchReport> = (0..20)
            .map(|d| {
                report(
                    "calc",
                    &format!("2026-11-{:02}T12:00:00Z", d + 1),
                    Tier::Gold,
                )
            })
            .collect();
        assert_eq!(history(&r, &many).len(), MAX_PREVIOUS + 1);
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(ms(4.234), "4.23 ms");
        assert_eq!(ms(48.75), "48.8 ms");
        assert_eq!(ms(480.4), "480 ms");
        assert_eq!(ms(1234.0), "1.23 s");
        assert_eq!(ms(f64::NAN), NOT_MEASURED);
        assert_eq!(percent(0.0), "0 %");
        assert_eq!(percent(0.0012), "0.120 %");
        assert_eq!(percent(0.5), "50.0 %");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(ticks(7.0), (8.0, vec![0.0, 2.0, 4.0, 6.0, 8.0]));
        assert_eq!(ticks(0.0).0, 1.0);
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(12.5), "12.5");
        assert_eq!(tick_label(40.0), "40");
    }
}
