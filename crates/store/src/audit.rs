//! Audit events and their SHA-256 hash chain. Pure: no I/O.
//!
//! Each event carries the hash of the one before it (`prevHash`) and its own `hash`, computed
//! over a canonical JSON form of every other field. Editing, removing or reordering a record
//! breaks the chain at a place [`verify_chain`] names.

use std::fmt;

use jiff::Timestamp;

use crate::time::format_time;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prevHash` of the first event of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Audit event types the gateway and the backends write.
pub mod types {
    /// A plugin was installed, started, updated, rolled back, stopped, removed.
    pub const LIFECYCLE: &str = "lifecycle";
    /// A grant was given, revoked or expired; a permission decision was taken.
    pub const PERMISSION: &str = "permission";
    /// A denial, an invalid credential, an OOM kill, a crash.
    pub const SECURITY: &str = "security";
    /// One failed invocation.
    pub const INVOCATION: &str = "invocation";
    /// Successful invocations of one plugin over an interval, read from the metrics.
    pub const INVOCATION_SUMMARY: &str = "invocation-summary";
    /// Allowed egress of one plugin over an interval: connections per granted rule, bytes.
    pub const EGRESS_SUMMARY: &str = "egress-summary";
    /// A hook delivery that failed, timed out or vetoed the event.
    pub const HOOK: &str = "hook";
}

/// One audit record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Position in its chain, from 1; 0 until sealed.
    pub seq: u64,
    /// Unique id (UUIDv7, so ids sort by creation time).
    pub id: String,
    /// When it happened: RFC 3339, UTC, millisecond precision.
    pub time: String,
    /// Who did it: a token name, `plugin:NAME`, `gateway`, `operator`, `anonymous`.
    pub actor: String,
    /// The plugin concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// One of [`types`], or another lower-case word.
    #[serde(rename = "type")]
    pub type_: String,
    /// What happened, as structured data.
    #[serde(default)]
    pub details: Value,
    /// Risk score (0–100) of the plugin at the time, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_score: Option<u32>,
    /// `success`, `failure`, `denied`, `timeout`, `vetoed`, …
    pub outcome: String,
    /// Hash of the previous record of the chain.
    #[serde(default)]
    pub prev_hash: String,
    /// SHA-256 (hex) of this record's canonical form, `prevHash` included.
    #[serde(default)]
    pub hash: String,
}

impl AuditEvent {
    /// A new, unsealed event stamped with a fresh id and the current time.
    pub fn new(
        actor: impl Into<String>,
        type_: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self::at(Timestamp::now(), actor, type_, outcome)
    }

    /// A new, unsealed event at a given time.
    pub fn at(
        time: Timestamp,
        actor: impl Into<String>,
        type_: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            seq: 0,
            id: uuid::Uuid::now_v7().to_string(),
            time: format_time(time),
            actor: actor.into(),
            plugin: None,
            type_: type_.into(),
            details: Value::Object(Map::new()),
            risk_score: None,
            outcome: outcome.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Sets the plugin concerned.
    pub fn plugin(mut self, plugin: impl Into<String>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }

    /// Sets the details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Sets the risk score.
    pub fn risk_score(mut self, score: u32) -> Self {
        self.risk_score = Some(score);
        self
    }

    /// The SHA-256 (hex) of every field but `hash`, in canonical JSON (sorted keys, no spaces).
    pub fn compute_hash(&self) -> String {
        let mut object = Map::new();
        object.insert("seq".into(), Value::from(self.seq));
        object.insert("id".into(), Value::from(self.id.as_str()));
        object.insert("time".into(), Value::from(self.time.as_str()));
        object.insert("actor".into(), Value::from(self.actor.as_str()));
        object.insert(
            "plugin".into(),
            self.plugin.as_deref().map_or(Value::Null, Value::from),
        );
        object.insert("type".into(), Value::from(self.type_.as_str()));
        object.insert("details".into(), self.details.clone());
        object.insert(
            "riskScore".into(),
            self.risk_score.map_or(Value::Null, Value::from),
        );
        object.insert("outcome".into(), Value::from(self.outcome.as_str()));
        object.insert("prevHash".into(), Value::from(self.prev_hash.as_str()));
        let mut text = String::with_capacity(256);
        canonical_json(&Value::Object(object), &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// The parsed `time`, when it is well-formed.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.time.parse().ok()
    }
}

/// The running end of a chain: seals events one after the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditChain {
    seq: u64,
    last_hash: String,
}

impl Default for AuditChain {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self {
            seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }

    /// A chain that continues after the record `seq` whose hash is `last_hash`.
    pub fn resume(seq: u64, last_hash: impl Into<String>) -> Self {
        Self {
            seq,
            last_hash: last_hash.into(),
        }
    }

    /// Position of the last sealed record (0 when empty).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Hash of the last sealed record.
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Links `event` to the chain: sets `seq`, `prevHash` and `hash`.
    pub fn seal(&mut self, mut event: AuditEvent) -> AuditEvent {
        self.seq += 1;
        event.seq = self.seq;
        event.prev_hash = std::mem::take(&mut self.last_hash);
        event.hash = event.compute_hash();
        self.last_hash = event.hash.clone();
        event
    }
}

/// Where and how a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ChainBreak {
    /// The record's content no longer matches its hash, or its hash no longer matches what
    /// the next record chained to (it was edited and its hash recomputed).
    Altered {
        /// 1-based position in storage order.
        position: u64,
        /// The record's `seq`.
        seq: u64,
        /// The record's id.
        id: String,
        /// What gave it away.
        reason: String,
    },
    /// Records are missing.
    Removed {
        /// The first missing `seq`.
        first_missing: u64,
        /// The last missing `seq`.
        last_missing: u64,
        /// Id of the record that follows the gap, if any.
        before_id: Option<String>,
    },
    /// A record is out of place.
    Reordered {
        /// 1-based position in storage order.
        position: u64,
        /// The `seq` found there.
        seq: u64,
        /// The `seq` that belongs there.
        expected_seq: u64,
        /// The record's id.
        id: String,
    },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Altered {
                position,
                seq,
                id,
                reason,
            } => write!(
                f,
                "record #{seq} (id {id}, position {position}) was altered: {reason}"
            ),
            ChainBreak::Removed {
                first_missing,
                last_missing,
                before_id,
            } => {
                if first_missing == last_missing {
                    write!(f, "record #{first_missing} was removed")?;
                } else {
                    write!(
                        f,
                        "records #{first_missing} to #{last_missing} were removed"
                    )?;
                }
                match before_id {
                    Some(id) => write!(f, " (the gap is before id {id})"),
                    None => write!(f, " (from the end of the log)"),
                }
            }
            ChainBreak::Reordered {
                position,
                seq,
                expected_seq,
                id,
            } => write!(
                f,
                "record #{seq} (id {id}) was moved: it sits at position {position}, where #{expected_seq} belongs"
            ),
        }
    }
}

/// The newest record a store says it holds, kept apart from the records so that removing
/// records from the end is also seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// `seq` of the newest record.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// What [`verify_chain`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    /// Records read.
    pub records: u64,
    /// Hash of the last record read (the genesis hash when empty); publish it elsewhere to
    /// anchor the log.
    pub last_hash: String,
    /// The first break, if any.
    pub first_break: Option<ChainBreak>,
}

impl ChainReport {
    /// True when the chain is intact.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Walks `events` in storage order and names the first record that was altered, removed or
/// reordered. `head` is what the store recorded as its newest record.
pub fn verify_chain(events: &[AuditEvent], head: Option<&ChainHead>) -> ChainReport {
    let mut report = ChainReport {
        records: events.len() as u64,
        last_hash: events
            .last()
            .map_or_else(|| GENESIS_HASH.to_owned(), |e| e.hash.clone()),
        first_break: None,
    };
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH;
    for (index, event) in events.iter().enumerate() {
        let position = index as u64 + 1;
        if event.compute_hash() != event.hash {
            report.first_break = Some(ChainBreak::Altered {
                position,
                seq: event.seq,
                id: event.id.clone(),
                reason: "its content does not match its hash".into(),
            });
            return report;
        }
        if event.seq != expected_seq {
            let belongs_later = events[index + 1..].iter().any(|e| e.seq == expected_seq);
            report.first_break = Some(if event.seq < expected_seq || belongs_later {
                ChainBreak::Reordered {
                    position,
                    seq: event.seq,
                    expected_seq,
                    id: event.id.clone(),
                }
            } else {
                ChainBreak::Removed {
                    first_missing: expected_seq,
                    last_missing: event.seq - 1,
                    before_id: Some(event.id.clone()),
                }
            });
            return report;
        }
        if event.prev_hash != prev_hash {
            // Both records hash correctly but no longer link: the previous one was rewritten
            // with a recomputed hash.
            report.first_break = Some(match index.checked_sub(1).map(|i| &events[i]) {
                Some(previous) => ChainBreak::Altered {
                    position: position - 1,
                    seq: previous.seq,
                    id: previous.id.clone(),
                    reason: format!(
                        "its hash does not match the prevHash of record #{}",
                        event.seq
                    ),
                },
                None => ChainBreak::Altered {
                    position,
                    seq: event.seq,
                    id: event.id.clone(),
                    reason: "it is first but does not chain to the genesis hash".into(),
                },
            });
            return report;
        }
        prev_hash = &event.hash;
        expected_seq += 1;
    }
    if let Some(head) = head {
        let last_seq = expected_seq - 1;
        if head.seq > last_seq {
            report.first_break = Some(ChainBreak::Removed {
                first_missing: last_seq + 1,
                last_missing: head.seq,
                before_id: None,
            });
        } else if head.seq == last_seq && head.seq > 0 && head.hash != prev_hash {
            let last = &events[events.len() - 1];
            report.first_break = Some(ChainBreak::Altered {
                position: events.len() as u64,
                seq: last.seq,
                id: last.id.clone(),
                reason: "its hash does not match the head the store recorded".into(),
            });
        }
    }
    report
}

/// Writes `value` as JSON with object keys sorted at every level and no whitespace, so the
/// hash does not depend on how a map happened to be ordered.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut chain = AuditChain::new();
        (0..n)
            .map(|i| {
                chain.seal(
                    AuditEvent::new("tester", types::INVOCATION, "failure")
                        .plugin("calc")
                        .details(json!({"n": i, "b": {"z": 1, "a": [1, 2]}})),
                )
            })
            .collect()
    }

    fn head(events: &[AuditEvent]) -> ChainHead {
        let last = events.last().unwrap();
        ChainHead {
            seq: last.seq,
            hash: last.hash.clone(),
        }
    }

    #[test]
    fn sealed_chain_verifies() {
        let events = chain(5);
        assert_eq!(events[0].prev_hash, GENESIS_HASH);
        assert_eq!(events[1].prev_hash, events[0].hash);
        let report = verify_chain(&events, Some(&head(&events)));
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 5);
    }

    #[test]
    fn hash_ignores_key_order_of_details() {
        let mut a = AuditEvent::new("x", "t", "o").details(json!({"a": 1, "b": 2}));
        let mut b = a.clone();
        b.details = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        a.hash = a.compute_hash();
        b.hash = b.compute_hash();
        assert_eq!(a.hash, b.hash);
    }

    #[test]
    fn edited_record_is_named() {
        let mut events = chain(5);
        let h = head(&events);
        events[2].outcome = "success".into();
        let report = verify_chain(&events, Some(&h));
        match report.first_break {
            Some(ChainBreak::Altered { seq: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edited_record_with_recomputed_hash_is_named() {
        let mut events = chain(5);
        let h = head(&events);
        events[1].actor = "someone-else".into();
        events[1].hash = events[1].compute_hash();
        match verify_chain(&events, Some(&h)).first_break {
            Some(ChainBreak::Altered { seq: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn removed_record_is_named() {
        let mut events = chain(5);
        let h = head(&events);
        events.remove(1);
        match verify_chain(&events, Some(&h)).first_break {
            Some(ChainBreak::Removed {
                first_missing: 2,
                last_missing: 2,
                before_id: Some(id),
            }) => assert_eq!(id, events[1].id),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn removed_tail_is_seen_through_the_head() {
        let mut events = chain(5);
        let h = head(&events);
        events.truncate(3);
        match verify_chain(&events, Some(&h)).first_break {
            Some(ChainBreak::Removed {
                first_missing: 4,
                last_missing: 5,
                before_id: None,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn swapped_records_are_named() {
        let mut events = chain(5);
        let h = head(&events);
        events.swap(1, 3);
        match verify_chain(&events, Some(&h)).first_break {
            Some(ChainBreak::Reordered {
                position: 2,
                seq: 4,
                expected_seq: 2,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn time_format_sorts_as_text() {
        let a = format_time(Timestamp::from_millisecond(1_700_000_000_000).unwrap());
        let b = format_time(Timestamp::from_millisecond(1_700_000_000_100).unwrap());
        assert_eq!(a, "2023-11-14T22:13:20.000Z");
        assert!(a < b);
        assert_eq!(
            a.parse::<Timestamp>().unwrap().as_millisecond(),
            1_700_000_000_000
        );
    }
}
