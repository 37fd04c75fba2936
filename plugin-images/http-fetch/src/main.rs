//! `http-fetch`: GETs a URL and returns its status, headers and a bounded body; with
//! `fetch_stats`, has `text-processor` count the words of the page through the gateway.

use std::process::ExitCode;
use std::sync::Arc;

use berth_plugin_sdk::{Context, Error, Plugin};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod fetch;

use fetch::{Config, DEFAULT_MAX_BYTES, FetchOutput, Fetcher, MAX_BYTES};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FetchInput {
    url: String,
    max_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchStatsInput {
    url: String,
}

#[derive(Serialize, Debug)]
struct FetchStatsOutput {
    status: u16,
    stats: Value,
}

async fn fetch(fetcher: &Fetcher, input: FetchInput, ctx: Context) -> Result<FetchOutput, Error> {
    let max = input.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if !(1..=MAX_BYTES).contains(&max) {
        return Err(Error::invalid_input(format!(
            "maxBytes must be between 1 and {MAX_BYTES}"
        )));
    }
    fetcher.fetch(&input.url, max, &ctx).await
}

async fn fetch_stats(
    fetcher: &Fetcher,
    input: FetchStatsInput,
    ctx: Context,
) -> Result<FetchStatsOutput, Error> {
    let page = fetcher.fetch(&input.url, MAX_BYTES, &ctx).await?;
    let stats = fetcher
        .invoke_plugin("text-processor", "stats", &json!({"text": page.body}), &ctx)
        .await?;
    Ok(FetchStatsOutput {
        status: page.status,
        stats,
    })
}

fn plugin(fetcher: Fetcher) -> Plugin {
    let fetcher = Arc::new(fetcher);
    let f2 = fetcher.clone();
    Plugin::new("http-fetch", env!("CARGO_PKG_VERSION"))
        .capability("fetch", move |input: FetchInput, ctx: Context| {
            let fetcher = fetcher.clone();
            async move { fetch(&fetcher, input, ctx).await }
        })
        .capability(
            "fetch_stats",
            move |input: FetchStatsInput, ctx: Context| {
                let fetcher = f2.clone();
                async move { fetch_stats(&fetcher, input, ctx).await }
            },
        )
}

fn main() -> ExitCode {
    berth_plugin_sdk::init_logging();
    let config = Config::from_lookup(|k| std::env::var(k).ok());
    match Fetcher::new(config) {
        Ok(fetcher) => plugin(fetcher).run(),
        Err(e) => {
            berth_plugin_sdk::tracing::error!(error = %e, "bad configuration");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
