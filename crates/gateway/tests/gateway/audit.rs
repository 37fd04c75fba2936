//! The audit log the gateway writes: what goes in, and that tampering shows.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use berth_store::audit::types;
use berth_store::{AuditQuery, ChainBreak, Store};
use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn failures_and_denials_are_recorded_one_by_one_and_successes_are_summarised() {
    let rec = Recorder::default();
    let addr = spawn_plugin(echo_plugin(rec.clone())).await;
    let failing = Arc::new(AtomicBool::new(true));
    let bad = spawn_plugin(flaky_plugin(Recorder::default(), failing, 0)).await;
    let h = Harness::start(vec![
        entry(plugin("calc", CALC_SPEC), &[addr]),
        entry(plugin("flaky", "capabilities: [{name: run}]"), &[bad]),
    ])
    .await;
    for _ in 0..3 {
        let r = h
            .invoke(INVOKE_ALL, "calc", "evaluate", r#"{"expression":"1"}"#)
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    h.invoke(INVOKE_ALL, "flaky", "run", "{}")
        .await
        .expect(StatusCode::BAD_GATEWAY, "plugin_error");
    h.invoke(INVOKE_CALC, "flaky", "run", "{}")
        .await
        .expect(StatusCode::FORBIDDEN, "forbidden");
    h.flush_audit().await;

    let all = h.store.query_audit(&AuditQuery::default()).unwrap();
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.type_.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (types::INVOCATION, "plugin_error"),
            (types::SECURITY, "denied")
        ],
        "successful calls are not written one by one"
    );
    assert_eq!(all[0].plugin.as_deref(), Some("flaky"));
    assert_eq!(all[0].details["capability"], "run");
    assert_eq!(all[0].details["attempts"], 1);

    assert_eq!(h.gateway.summarize_now(), 1);
    h.flush_audit().await;
    let summaries = h
        .store
        .query_audit(&AuditQuery {
            type_: Some(types::INVOCATION_SUMMARY.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].plugin.as_deref(), Some("calc"));
    assert_eq!(summaries[0].details["invocations"], 3);
    assert_eq!(
        summaries[0].details["capabilities"]["evaluate"]["invocations"],
        3
    );
    assert_eq!(
        h.gateway.summarize_now(),
        0,
        "nothing new since the last summary"
    );
    assert_eq!(
        h.counter(
            "berth_audit_events_total",
            &[("type", "invocation-summary")]
        ),
        1.0
    );
}

fn tampered_copy(source: &std::path::Path, name: &str, sql: &str) -> Store {
    let dir = source.parent().unwrap();
    let copy = dir.join(format!("{name}.db"));
    std::fs::copy(source, &copy).unwrap();
    let store = Store::open(&copy).unwrap();
    store.with_connection(|c| c.execute_batch(sql)).unwrap();
    store
}

#[tokio::test]
async fn gateway_audit_log_verifies_and_edits_deletions_and_reorderings_are_named() {
    let dir = std::env::temp_dir().join(format!("berth-audit-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("berth.db");
    {
        let h = Harness::start(vec![]).await;
        let store = Store::open(&path).unwrap();
        // Events from real denials, written by the gateway's auditor into a file store.
        for _ in 0..6 {
            h.invoke("wrong-token", "calc", "evaluate", "{}").await;
        }
        h.flush_audit().await;
        let events = h.store.query_audit(&AuditQuery::default()).unwrap();
        assert_eq!(events.len(), 6);
        let unsealed = events
            .into_iter()
            .map(|mut e| {
                e.seq = 0;
                e.prev_hash.clear();
                e.hash.clear();
                e
            })
            .collect();
        store.append_audit(unsealed).unwrap();
        assert!(h.store.verify_audit().unwrap().is_intact());
        h.stop().await;
    }
    let report = Store::open(&path).unwrap().verify_audit().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 6);

    let edited = tampered_copy(
        &path,
        "edited",
        "UPDATE audit_events SET actor = 'admin' WHERE seq = 3",
    );
    match edited.verify_audit().unwrap().first_break {
        Some(ChainBreak::Altered { seq: 3, .. }) => {}
        other => panic!("edit not named: {other:?}"),
    }
    let deleted = tampered_copy(&path, "deleted", "DELETE FROM audit_events WHERE seq = 4");
    match deleted.verify_audit().unwrap().first_break {
        Some(ChainBreak::Removed {
            first_missing: 4,
            last_missing: 4,
            ..
        }) => {}
        other => panic!("deletion not named: {other:?}"),
    }
    let reordered = tampered_copy(
        &path,
        "reordered",
        "UPDATE audit_events SET position = 100 WHERE seq = 2;
         UPDATE audit_events SET position = 2 WHERE seq = 5;
         UPDATE audit_events SET position = 5 WHERE seq = 2;",
    );
    match reordered.verify_audit().unwrap().first_break {
        Some(ChainBreak::Reordered {
            position: 2,
            seq: 5,
            ..
        }) => {}
        other => panic!("reordering not named: {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
