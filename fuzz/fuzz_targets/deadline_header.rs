//! The caller's deadline, `Berth-Timeout`: any header value is a budget no longer than the
//! manifest's timeout and never zero, or a 400 `invalid_timeout`.
#![no_main]

use std::time::Duration;

use berth_contract::protocol::HEADER_TIMEOUT;
use berth_gateway::fuzzing::deadline_budget;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((manifest, value)) = data.split_first_chunk::<4>() else {
        return;
    };
    let manifest = Duration::from_millis(u64::from(u32::from_be_bytes(*manifest)) + 1);
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_TIMEOUT, value);
    if let Ok(budget) = deadline_budget(&headers, manifest) {
        assert!(
            !budget.is_zero() && budget <= manifest,
            "{budget:?} for {manifest:?}"
        );
    }
});
