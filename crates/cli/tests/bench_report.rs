//! The HTML report of `berth bench --report` looked at in a real browser: Debian's headless
//! Chromium loads a rendered report from a file, its DOM must show the run's numbers and the
//! previous runs' tiers, and its screenshot must show the charts in their colours.
//! Without Chromium the test fails under `CI` and is skipped (saying so) otherwise.

mod support;

// The report module has no I/O and depends only on berth-api and maud, so the test compiles
// it as it is rather than going through a bench run (a real run's report is checked where
// `berth bench` is).
#[allow(dead_code)]
#[path = "../src/bench/report.rs"]
mod report;

use std::collections::BTreeMap;

use berth_api::BenchReport;
use berth_api::bench::{
    AddedTime, GatewayView, Latency, LatencyBucket, LoadModel, ResourceUse, Tier, TierThresholds,
    TierVerdict, TimelinePoint,
};
use support::browser::{Chromium, hex_colour, visible_text};

/// A ten-second closed-loop run of `calculator`, with a burst of errors in second 6.
fn run(started_at: &str, tier: Tier, p50_ms: f64, p99_ms: f64, throughput: f64) -> BenchReport {
    let timeline: Vec<TimelinePoint> = (0..10)
        .map(|s| TimelinePoint {
            second: s,
            requests: 790 + u64::from(s * 37 % 50),
            errors: if s == 6 { 160 } else { 0 },
            p50_ms: p50_ms + f64::from(s % 3) * 0.4,
            p99_ms: p99_ms + f64::from(s % 4) * 2.5,
        })
        .collect();
    let requests = timeline.iter().map(|p| p.requests).sum();
    let distribution = [
        1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 250.0,
    ]
    .into_iter()
    .zip([
        2, 30, 260, 900, 1700, 2100, 1500, 800, 380, 200, 110, 60, 25, 8, 2,
    ])
    .map(|(le_ms, count)| LatencyBucket { le_ms, count })
    .collect();
    BenchReport {
        plugin: "calculator".into(),
        version: Some("1.4.2".into()),
        capabilities: vec!["add".into(), "divide".into()],
        gateway: "http://127.0.0.1:7070".into(),
        started_at: started_at.into(),
        load: LoadModel::Closed { concurrency: 16 },
        warmup_seconds: 2.0,
        duration_seconds: 10.0,
        requests,
        throughput,
        errors: BTreeMap::from([
            ("invalid_input".to_string(), 150),
            ("http_503".to_string(), 10),
        ]),
        error_ratio: 160.0 / requests as f64,
        latency: Latency {
            p50_ms,
            p90_ms: p50_ms * 1.8,
            p99_ms,
            max_ms: p99_ms * 2.2,
            mean_ms: p50_ms * 1.2,
        },
        gateway_view: Some(GatewayView {
            requests,
            errors: BTreeMap::from([("invalid_input".to_string(), 150)]),
            latency: Latency {
                p50_ms: p50_ms - 0.6,
                p90_ms: p50_ms * 1.7,
                p99_ms: p99_ms - 3.0,
                max_ms: 100.0,
                mean_ms: p50_ms * 1.1,
            },
            added_mean_ms: Some(0.42),
        }),
        added: AddedTime {
            client_mean_ms: Some(0.61),
            client_p50_ms: Some(0.48),
            metrics_mean_ms: Some(0.42),
        },
        resources: Some(ResourceUse {
            cpu_cores_mean: Some(0.21),
            cpu_cores_peak: Some(0.34),
            cpu_limit_cores: Some(0.5),
            memory_peak_bytes: Some(23 << 20),
            memory_limit_bytes: Some(64 << 20),
            samples: 10,
        }),
        thresholds: TierThresholds::default(),
        verdict: TierVerdict {
            tier,
            reasons: match tier {
                Tier::Platinum => vec![],
                _ => vec![format!("error ratio 1.980 % → {tier}")],
            },
        },
        timeline,
        distribution,
        late_sends: None,
    }
}

#[test]
fn report_shows_the_runs_numbers_and_charts_in_a_browser() {
    let test = "report_shows_the_runs_numbers_and_charts_in_a_browser";
    let Some(chromium) = Chromium::find(test) else {
        return;
    };
    let current = run("2026-11-30T12:40:00Z", Tier::Silver, 12.4, 48.7, 812.3);
    let previous = [
        run("2026-11-29T09:10:00Z", Tier::Platinum, 10.1, 35.2, 903.5),
        run("2026-11-28T16:05:00Z", Tier::Gold, 15.0, 80.5, 640.2),
    ];
    let dir = tempfile::tempdir().expect("a temporary directory");
    let page = dir.path().join("report.html");
    std::fs::write(&page, report::render(&current, &previous)).expect("writing the report");

    let text = visible_text(&chromium.dump_dom(&page));
    for shown in ["12.4 ms", "48.7 ms", "812.3 req/s", "Silver", "1.96 %"] {
        assert!(
            text.contains(shown),
            "the page does not show {shown:?}:\n{text}"
        );
    }
    let history = text
        .split_once("Previous runs of calculator")
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("no previous runs section:\n{text}"));
    for shown in [
        "Platinum",
        "Gold",
        "903.5 req/s",
        "640.2 req/s",
        "2026-11-28 16:05:00 UTC",
    ] {
        assert!(
            history.contains(shown),
            "previous runs do not show {shown:?}:\n{history}"
        );
    }

    // Tall enough for the whole page, so the previous runs' charts are in the picture.
    let png = dir.path().join("report.png");
    let shot = chromium.screenshot(&page, &png, 1280, 3400);
    // BERTH_REPORT_KEEP=DIR keeps the page and its screenshot to look at.
    if let Some(keep) = std::env::var_os("BERTH_REPORT_KEEP") {
        let keep = std::path::Path::new(&keep);
        std::fs::create_dir_all(keep).expect("creating BERTH_REPORT_KEEP");
        for file in [&page, &png] {
            let name = file.file_name().expect("a file name");
            std::fs::copy(file, keep.join(name)).expect("copying into BERTH_REPORT_KEEP");
        }
    }
    let drawn = shot.non_background_share();
    eprintln!("{:.1} % of the page drawn", drawn * 100.0);
    assert!(
        drawn > 0.05,
        "only {:.1} % of the page is drawn",
        drawn * 100.0
    );
    let find = |colour: &str| {
        shot.find_colour(hex_colour(colour), 6, 0..shot.height)
            .unwrap_or_else(|| panic!("{colour} is nowhere in the screenshot"))
    };
    for colour in [
        report::DISTRIBUTION_COLOUR,
        report::THROUGHPUT_COLOUR,
        report::ERROR_COLOUR,
        report::P50_COLOUR,
        report::P99_COLOUR,
    ] {
        eprintln!("{colour}: {:?}", find(colour));
    }
    let bars = find(report::DISTRIBUTION_COLOUR);
    assert!(
        bars.pixels > 20_000 && bars.x.len() > 800 && bars.y.len() > 150,
        "the latency distribution spans the page: {bars:?}"
    );
    let ok = find(report::THROUGHPUT_COLOUR);
    assert!(ok.pixels > 20_000, "throughput bars: {ok:?}");
    let errors = find(report::ERROR_COLOUR);
    assert!(errors.pixels > 300, "the error burst shows: {errors:?}");
    for colour in [report::P50_COLOUR, report::P99_COLOUR] {
        // Below the distribution: the latency-over-the-run lines and the previous runs' bars.
        let below = shot
            .find_colour(hex_colour(colour), 6, bars.y.end..shot.height)
            .unwrap_or_else(|| panic!("{colour} is not drawn below the distribution"));
        assert!(
            below.pixels > 2_000,
            "{colour} below the distribution: {below:?}"
        );
        assert!(
            below.y.len() > 400,
            "{colour} is drawn both over the run and by run: {below:?}"
        );
    }
}
