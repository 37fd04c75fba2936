//! Protocol v1 logs: one JSON object per line with `timestamp`, `level`, `message` and, for
//! lines that belong to a request, `request_id`, all at the top level; other fields follow.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A `tracing` layer that writes every event as one protocol v1 JSON log line. Fields of the
/// spans an event is in (the SDK's `invoke` and `hook` spans carry `request_id`) are lifted
/// to the top level beside the event's own.
pub struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    /// Writes lines to `writer` (e.g. `std::io::stdout`).
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

/// Span fields, kept in the span's extensions until it closes.
struct SpanFields(Map<String, Value>);

impl<S, W> tracing_subscriber::Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Collect::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.0));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(map)) = extensions.get_mut::<SpanFields>() {
            let mut fields = Collect::default();
            values.record(&mut fields);
            map.extend(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                    fields.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut own = Collect::default();
        event.record(&mut own);
        fields.extend(own.0);
        if !fields.contains_key("request_id")
            && let Ok(Some(id)) = crate::plugin::REQUEST_ID.try_with(Clone::clone)
        {
            fields.insert("request_id".to_owned(), Value::String(id));
        }
        let line = render_line(
            SystemTime::now(),
            *event.metadata().level(),
            event.metadata().target(),
            fields,
        );
        let mut writer = self.writer.make_writer();
        let _ = writer.write_all(line.as_bytes());
    }
}

/// One log line, newline included: the four protocol fields first, then `target` and the
/// rest. Empty strings are dropped (the SDK's spans leave absent headers empty).
fn render_line(
    now: SystemTime,
    level: Level,
    target: &str,
    mut fields: Map<String, Value>,
) -> String {
    fields.retain(|_, v| v.as_str().is_none_or(|s| !s.is_empty()));
    let message = fields
        .remove("message")
        .unwrap_or_else(|| Value::String(String::new()));
    let request_id = fields.remove("request_id");
    fields.remove("timestamp");
    fields.remove("level");
    fields.remove("target");
    let mut line = String::with_capacity(128);
    let _ = write!(
        line,
        r#"{{"timestamp":"{}","level":"{}","message":{}"#,
        rfc3339_millis(now),
        level_name(level),
        message
    );
    if let Some(id) = request_id {
        let _ = write!(line, r#","request_id":{id}"#);
    }
    let _ = write!(line, r#","target":{}"#, Value::String(target.to_owned()));
    for (key, value) in fields {
        let _ = write!(line, ",{}:{value}", Value::String(key));
    }
    line.push_str("}\n");
    line
}

/// The protocol's four level names; `TRACE` is logged as `DEBUG`.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// `2026-11-30T15:04:05.123Z`: RFC 3339, UTC, milliseconds.
fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[derive(Default)]
struct Collect(Map<String, Value>);

impl Visit for Collect {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().to_owned(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_051_045_123);
        assert_eq!(rfc3339_millis(t), "2026-11-30T15:04:05.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn protocol_fields_come_first_and_empty_strings_are_dropped() {
        let mut fields = Map::new();
        fields.insert("message".into(), "answered".into());
        fields.insert("request_id".into(), "req-1".into());
        fields.insert("caller".into(), "".into());
        fields.insert("status".into(), 200.into());
        let line = render_line(UNIX_EPOCH, Level::TRACE, "p", fields);
        assert_eq!(
            line,
            "{\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"level\":\"DEBUG\",\"message\":\"answered\",\"request_id\":\"req-1\",\"target\":\"p\",\"status\":200}\n"
        );
    }
}
