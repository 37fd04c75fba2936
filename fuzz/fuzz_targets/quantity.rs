//! Quantities (`64Mi`, `500m`, `1e3`) and durations (`1m30s`): any text parses to a
//! value or a `ParseError`, never a panic or an overflow.
#![no_main]

use berth_api::quantity::parse_duration;
use berth_api::{DurationString, Quantity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let quantity = Quantity::new(text);
    if let Err(e) = quantity.bytes() {
        let _ = e.to_string();
    }
    let _ = quantity.millis();
    let duration = DurationString::new(text);
    let parsed = duration.duration();
    assert_eq!(parsed.as_ref().ok(), parse_duration(text).as_ref().ok());
});
