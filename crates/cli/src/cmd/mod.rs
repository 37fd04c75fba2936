//! One module per subcommand.

pub mod audit;
pub mod bench;
pub mod build;
pub mod children;
pub mod crd;
pub mod dev;
pub mod gateway;
pub mod local;
pub mod new;
pub mod operator;
pub mod plugin;
pub mod render;
pub mod supply;
pub mod usage;
pub mod validate;

/// Parses a duration flag (`30s`, `1m30s`, `250ms`) with the manifest's rules and hints.
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    berth_api::quantity::parse_duration(s).map_err(|e| format!("{} ({})", e.message, e.hint))
}

/// A time flag: an RFC 3339 time, or a duration (`30d`, `12h`) counted from now into the
/// past (`--since`) or the future (`--expires`).
pub fn time_arg(flag: &str, text: &str, future: bool) -> anyhow::Result<jiff::Timestamp> {
    use anyhow::Context as _;
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let d = text
        .parse::<jiff::Span>()
        .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        .ok()
        .filter(|d| !d.is_negative())
        .with_context(|| {
            format!("{flag} {text:?}: not a duration (`30d`, `12h`, `1h30m`) or an RFC 3339 time")
        })?;
    let now = jiff::Timestamp::now();
    if future {
        now.checked_add(d)
    } else {
        now.checked_sub(d)
    }
    .with_context(|| format!("{flag} {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::time_arg;

    #[test]
    fn time_flags_take_a_time_or_a_duration_either_way() {
        let now = jiff::Timestamp::now();
        let fixed = time_arg("--since", "2026-01-02T03:04:05Z", false).unwrap();
        assert_eq!(fixed.to_string(), "2026-01-02T03:04:05Z");
        let ago = time_arg("--since", "2h", false).unwrap();
        let ahead = time_arg("--expires", "30d", true).unwrap();
        assert!(ago < now && now < ahead);
        // Two hours before a moment just after `now`.
        assert!((7190..=7200).contains(&now.duration_since(ago).as_secs()));
        assert_eq!(
            time_arg("--expires", "1w", true)
                .unwrap()
                .duration_since(now)
                .as_hours(),
            7 * 24
        );
        for bad in ["soon", "-2h", "3 months"] {
            let e = time_arg("--expires", bad, true).unwrap_err().to_string();
            assert!(e.contains("not a duration (`30d`"), "{bad}: {e}");
        }
    }
}
