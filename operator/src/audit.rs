//! Audit records of the operator's supply-chain decisions.
//!
//! In a cluster the audit trail is JSON lines on standard output and Kubernetes Events
//! (DESIGN.md, Audit). The operator publishes an Event for each decision and writes the
//! same decision here as one `{"audit": {…}}` line, the shape of the gateway's stdout sink,
//! so one log pipeline collects both.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// Who the operator's records name as the actor.
pub const ACTOR: &str = "berth-operator";

/// Record types, as the gateway and the store name them.
pub mod types {
    /// A plugin's image was pinned, a revision started or stopped.
    pub const LIFECYCLE: &str = "lifecycle";
    /// A signature was verified or an image refused.
    pub const SECURITY: &str = "security";
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// When it happened: RFC 3339, UTC.
    pub time: String,
    /// Always [`ACTOR`].
    pub actor: String,
    /// The plugin's name (its namespace is in `details`).
    pub plugin: String,
    /// One of [`types`].
    #[serde(rename = "type")]
    pub type_: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// What was decided, about which image and digest.
    pub details: Value,
}

/// Somewhere audit records go.
pub trait AuditSink: Send + Sync + 'static {
    /// Writes one record; never fails the reconcile.
    fn record(&self, record: AuditRecord);
}

/// JSON lines on standard output, one `{"audit": {…}}` object each.
#[derive(Debug, Default)]
pub struct StdoutAudit;

impl AuditSink for StdoutAudit {
    fn record(&self, record: AuditRecord) {
        let line = serde_json::json!({ "audit": record }).to_string();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        // A closed stdout must not take the operator down; the Event still records it.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Keeps records in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAudit {
    /// Every record so far, oldest first.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, record: AuditRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_in_the_gateway_shape() {
        let record = AuditRecord {
            time: "2026-03-01T12:00:00Z".into(),
            actor: ACTOR.into(),
            plugin: "calculator".into(),
            type_: types::SECURITY.into(),
            outcome: "denied".into(),
            details: serde_json::json!({"reason": "Unsigned"}),
        };
        let line = serde_json::json!({ "audit": record });
        assert_eq!(line["audit"]["type"], "security");
        assert_eq!(line["audit"]["actor"], "berth-operator");
        assert_eq!(line["audit"]["details"]["reason"], "Unsigned");
        let memory = MemoryAudit::default();
        memory.record(record.clone());
        assert_eq!(memory.records(), vec![record]);
    }
}
