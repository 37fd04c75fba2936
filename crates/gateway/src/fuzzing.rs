//! Entry points for the fuzz targets in `fuzz/`: thin wrappers over parsers that are
//! private to the gateway, so they can be fed arbitrary bytes without a running server.
//! Not part of the gateway's API.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};

use crate::hooks::{FilterAnswer, parse_filter_answer};

/// The budget an invocation gets from its headers and the manifest's timeout: the
/// `Berth-Timeout` check the invoke route runs.
pub fn deadline_budget(headers: &HeaderMap, manifest: Duration) -> crate::Result<Duration> {
    crate::invoke::deadline_budget(headers, manifest)
}

/// What a filter hook's answer with `status` and `body` means: `continue`, `modify` or
/// `veto`, or why it is refused. A status outside 100–999 is refused like a bad answer.
pub fn filter_answer(status: u16, body: &[u8]) -> Result<&'static str, String> {
    let status = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
    parse_filter_answer(status, body).map(|answer| match answer {
        FilterAnswer::Continue => "continue",
        FilterAnswer::Modify(_) => "modify",
        FilterAnswer::Veto(_) => "veto",
    })
}
