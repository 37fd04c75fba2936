//! Kubernetes-style quantities (`64Mi`, `500m`) and durations (`5s`, `1m30s`).
//!
//! The manifest keeps these as strings, exactly as a user wrote them, so a `Plugin` read
//! back from the API server looks like the one applied. The parsers here turn them into
//! typed values and explain, in one sentence with a suggestion, why a string is rejected.

use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// Why a quantity or a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// One sentence naming the input and the rule it breaks.
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

impl ParseError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// A resource quantity as written in a manifest: `64Mi`, `1.5Gi`, `500m`, `2`, `1e3`.
///
/// Deserializes from a string or a plain integer (YAML `memory: 1024`), like Kubernetes'
/// own `Quantity`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl Quantity {
    /// Wraps a string without checking it; parse with [`Quantity::bytes`] or [`Quantity::millis`].
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The quantity as a number of bytes (memory, tmp), rounded up to a whole byte.
    pub fn bytes(&self) -> Result<u64, ParseError> {
        let value = parse_decimal_quantity(&self.0, "bytes")?;
        ceil_to_u64(value, &self.0, "bytes")
    }

    /// The quantity in thousandths (CPU millicores), rounded up to a whole milli.
    pub fn millis(&self) -> Result<u64, ParseError> {
        let value = parse_decimal_quantity(&self.0, "cpu")?;
        ceil_to_u64(value * 1000.0, &self.0, "cpu")
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_number(d).map(Quantity)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN,
            "description": "A Kubernetes quantity such as 64Mi, 1Gi, 500m or 2."
        })
    }
}

/// The pattern the CRD schema uses for quantities, so the API server rejects `64 MB`.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[KMGTPE]i|[kmMGTPE])?$";

/// A duration as written in a manifest: `5s`, `250ms`, `1m30s`, `2h`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DurationString(pub String);

impl DurationString {
    /// Wraps a string without checking it; parse with [`DurationString::duration`].
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The parsed duration.
    pub fn duration(&self) -> Result<Duration, ParseError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DurationString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(DurationString)
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 5s, 250ms, 1m30s or 2h."
        })
    }
}

/// The pattern the CRD schema uses for durations.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        U(u64),
        F(f64),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::U(u) => u.to_string(),
        Raw::F(f) => f.to_string(),
    })
}

fn ceil_to_u64(value: f64, original: &str, what: &str) -> Result<u64, ParseError> {
    if !value.is_finite() || value >= u64::MAX as f64 {
        return Err(ParseError::new(
            format!("{original:?} is too large for {what}"),
            "use a value below 16Ei",
        ));
    }
    Ok(value.ceil() as u64)
}

/// Parses `<decimal><suffix>` where suffix is a binary (Ki…Ei), decimal (k, M…E),
/// milli (m) or exponent (e3) multiplier.
fn parse_decimal_quantity(s: &str, what: &str) -> Result<f64, ParseError> {
    let hint = if what == "cpu" {
        "write a quantity such as \"500m\" or \"2\""
    } else {
        "write a quantity such as \"64Mi\" or \"1Gi\""
    };
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(ParseError::new("empty quantity", hint));
    }
    let digits_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    let invalid = |reason: &str| {
        let suggestion = suggest_quantity(trimmed, what);
        ParseError::new(
            format!("{s:?} is not a quantity: {reason}"),
            suggestion.unwrap_or_else(|| hint.to_string()),
        )
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(invalid("it must start with a number"));
    }
    if number.matches('.').count() > 1 {
        return Err(invalid("the number has more than one decimal point"));
    }
    let base: f64 = number
        .parse()
        .map_err(|_| invalid("the number cannot be read"))?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        e if (e.starts_with('e') || e.starts_with('E'))
            && e.len() > 1
            && e[1..].chars().all(|c| c.is_ascii_digit()) =>
        {
            let exp: i32 = e[1..]
                .parse()
                .map_err(|_| invalid("the exponent is too large"))?;
            if exp > 30 {
                return Err(invalid("the exponent is too large"));
            }
            10f64.powi(exp)
        }
        other => return Err(invalid(&format!("unknown suffix {other:?}"))),
    };
    Ok(base * multiplier)
}

/// Turns common mistakes (`64 MB`, `64mb`, `1GB`) into the quantity the user meant.
fn suggest_quantity(s: &str, what: &str) -> Option<String> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let digits_end = compact.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, suffix) = compact.split_at(digits_end);
    if number.is_empty() {
        return None;
    }
    let fixed = match suffix.to_ascii_lowercase().as_str() {
        "kb" | "kib" | "ki" | "k" if what != "cpu" => "Ki",
        "mb" | "mib" | "mi" => "Mi",
        "gb" | "gib" | "gi" | "g" => "Gi",
        "tb" | "tib" | "ti" | "t" => "Ti",
        "b" | "bytes" => "",
        "millicores" | "mcpu" if what == "cpu" => "m",
        "cores" | "cpu" | "cpus" if what == "cpu" => "",
        _ => return None,
    };
    Some(format!("try \"{number}{fixed}\""))
}

/// Parses a Go-style duration: one or more `<number><unit>` with units ns, us, ms, s, m, h.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let hint = "write a duration such as \"5s\", \"250ms\" or \"1m30s\"";
    let input = s.trim();
    if input.is_empty() {
        return Err(ParseError::new("empty duration", hint));
    }
    if input.chars().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::new(
            format!("{s:?} is not a duration: it has no unit"),
            format!("try \"{input}s\""),
        ));
    }
    let mut total = 0f64;
    let mut rest = input;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(num_end);
        if number.is_empty() {
            return Err(ParseError::new(
                format!("{s:?} is not a duration: expected a number at {rest:?}"),
                hint,
            ));
        }
        let value: f64 = number.parse().map_err(|_| {
            ParseError::new(
                format!("{s:?} is not a duration: {number:?} is not a number"),
                hint,
            )
        })?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_end);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(ParseError::new(
                    format!("{s:?} is not a duration: {number:?} has no unit"),
                    hint,
                ));
            }
            other => {
                let suggestion = match other.to_ascii_lowercase().as_str() {
                    "sec" | "secs" | "second" | "seconds" => Some("s"),
                    "min" | "mins" | "minute" | "minutes" => Some("m"),
                    "hr" | "hrs" | "hour" | "hours" => Some("h"),
                    "msec" | "millis" | "milliseconds" => Some("ms"),
                    _ => None,
                };
                return Err(ParseError::new(
                    format!("{s:?} is not a duration: unknown unit {other:?}"),
                    suggestion
                        .map(|u| format!("try \"{number}{u}\""))
                        .unwrap_or_else(|| hint.to_string()),
                ));
            }
        };
        total += value * seconds_per_unit;
        rest = tail;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(ParseError::new(format!("{s:?} is too long"), hint));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_parse_to_bytes() {
        assert_eq!(Quantity::new("64Mi").bytes(), Ok(64 * 1024 * 1024));
        assert_eq!(Quantity::new("1Gi").bytes(), Ok(1 << 30));
        assert_eq!(Quantity::new("1.5Gi").bytes(), Ok(3 << 29));
        assert_eq!(Quantity::new("128974848").bytes(), Ok(128_974_848));
        assert_eq!(Quantity::new("129e6").bytes(), Ok(129_000_000));
        assert_eq!(Quantity::new("129M").bytes(), Ok(129_000_000));
        assert_eq!(Quantity::new("4Ki").bytes(), Ok(4096));
        assert_eq!(Quantity::new("100k").bytes(), Ok(100_000));
    }

    #[test]
    fn cpu_quantities_parse_to_millis() {
        assert_eq!(Quantity::new("500m").millis(), Ok(500));
        assert_eq!(Quantity::new("2").millis(), Ok(2000));
        assert_eq!(Quantity::new("0.25").millis(), Ok(250));
        assert_eq!(Quantity::new("1.5").millis(), Ok(1500));
    }

    #[test]
    fn bad_quantities_name_the_input_and_suggest_a_fix() {
        let err = Quantity::new("64 MB").bytes().unwrap_err();
        assert_eq!(
            err.message,
            "\"64 MB\" is not a quantity: unknown suffix \" MB\""
        );
        assert_eq!(err.hint, "try \"64Mi\"");
        let err = Quantity::new("1GB").bytes().unwrap_err();
        assert_eq!(err.hint, "try \"1Gi\"");
        let err = Quantity::new("lots").bytes().unwrap_err();
        assert_eq!(
            err.message,
            "\"lots\" is not a quantity: it must start with a number"
        );
        assert_eq!(err.hint, "write a quantity such as \"64Mi\" or \"1Gi\"");
        let err = Quantity::new("1.2.3").millis().unwrap_err();
        assert!(err.message.contains("more than one decimal point"));
        let err = Quantity::new("2 cores").millis().unwrap_err();
        assert_eq!(err.hint, "try \"2\"");
        assert!(Quantity::new("").bytes().is_err());
        assert!(Quantity::new("1e400").bytes().is_err());
        assert!(Quantity::new("99999999999Ei").bytes().is_err());
    }

    #[test]
    fn durations_parse_go_style() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let err = parse_duration("5").unwrap_err();
        assert_eq!(err.message, "\"5\" is not a duration: it has no unit");
        assert_eq!(err.hint, "try \"5s\"");
        let err = parse_duration("5 seconds").unwrap_err();
        assert_eq!(
            err.message,
            "\"5 seconds\" is not a duration: unknown unit \" seconds\""
        );
        let err = parse_duration("5secs").unwrap_err();
        assert_eq!(err.hint, "try \"5s\"");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1..2s").is_err());
    }

    #[test]
    fn quantity_accepts_yaml_integers() {
        let q: Quantity = serde_yaml::from_str("1024").unwrap();
        assert_eq!(q, Quantity::new("1024"));
        assert_eq!(q.bytes(), Ok(1024));
    }
}
