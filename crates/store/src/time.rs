//! How the store writes times, and every Berth process that writes store rows or audit
//! details with it.

use jiff::Timestamp;

/// Formats a time as stored: RFC 3339 in UTC with exactly three fractional digits, so that
/// text order is time order.
pub fn format_time(time: Timestamp) -> String {
    let ms = time.as_millisecond();
    let whole = Timestamp::from_second(ms.div_euclid(1000)).unwrap_or(Timestamp::UNIX_EPOCH);
    format!(
        "{}.{:03}Z",
        whole.strftime("%Y-%m-%dT%H:%M:%S"),
        ms.rem_euclid(1000)
    )
}
