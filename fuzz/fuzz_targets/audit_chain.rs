//! The audit chain check over a damaged store: a small valid chain is written to a
//! SQLite store, then fuzzer-chosen damage is applied — a field of a record or of the head
//! overwritten with any SQLite value, records deleted or moved, or bytes of the database
//! file flipped — and `verify_audit` must answer with a report or a clean error, never
//! panic. An undamaged chain must verify intact.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use berth_store::{AuditEvent, Store};
use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;
use serde_json::json;

const RECORDS: u8 = 4;

const COLUMNS: &[&str] = &[
    "position",
    "seq",
    "id",
    "time",
    "actor",
    "plugin",
    "type",
    "details",
    "risk_score",
    "outcome",
    "prev_hash",
    "hash",
];

/// Reads the fuzzer's bytes as a sequence of choices.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn int(&mut self) -> Option<i64> {
        let (bytes, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(i64::from_le_bytes(*bytes))
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let len = usize::from(self.byte()?).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }

    /// Any SQLite value: NULL, an integer, a real, text or a blob.
    fn value(&mut self) -> Option<Value> {
        Some(match self.byte()? % 5 {
            0 => Value::Null,
            1 => Value::Integer(self.int()?),
            2 => Value::Real(f64::from_bits(self.int()? as u64)),
            3 => Value::Text(String::from_utf8_lossy(self.bytes()?).into_owned()),
            _ => Value::Blob(self.bytes()?.to_vec()),
        })
    }
}

fn sample_chain(store: &Store) {
    let events = (0..RECORDS)
        .map(|i| {
            AuditEvent::new("gateway", "invoke", "success")
                .plugin(format!("plugin-{i}"))
                .details(json!({"capability": "add", "n": i, "nested": {"b": [1, 2.5, null]}}))
                .risk_score(u32::from(i) * 10)
        })
        .collect();
    store.append_audit(events).expect("a fresh store appends");
}

fn damage_rows(store: &Store, mut choices: Choices<'_>) {
    while let Some(op) = choices.byte() {
        let row = i64::from(choices.byte().unwrap_or(0) % (RECORDS + 1));
        let _ = store.with_connection(|conn| match op % 5 {
            0 | 1 => {
                let column = COLUMNS[usize::from(choices.byte().unwrap_or(0)) % COLUMNS.len()];
                let value = choices.value().unwrap_or(Value::Null);
                conn.execute(
                    &format!("UPDATE audit_events SET {column} = ?1 WHERE position = ?2"),
                    (value, row),
                )
            }
            2 => conn.execute("DELETE FROM audit_events WHERE position = ?1", [row]),
            3 => {
                let column =
                    ["seq", "hash", "singleton"][usize::from(choices.byte().unwrap_or(0)) % 3];
                let value = choices.value().unwrap_or(Value::Null);
                conn.execute(&format!("UPDATE audit_head SET {column} = ?1"), [value])
            }
            _ => conn.execute(
                "UPDATE audit_events SET position = ?1 WHERE position = ?2",
                (i64::from(choices.byte().unwrap_or(0)) - 128, row),
            ),
        });
    }
}

/// The bytes of a store file holding the sample chain, written once.
fn pristine_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = scratch_path();
        let _ = std::fs::remove_file(&path);
        {
            let store = Store::open(&path).expect("a new store file opens");
            sample_chain(&store);
        }
        let bytes = std::fs::read(&path).expect("the store file reads");
        let _ = std::fs::remove_file(&path);
        bytes
    })
}

fn scratch_path() -> PathBuf {
    let dir = Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("berth-fuzz-audit-{}.db", std::process::id()))
}

fn damage_file(mut choices: Choices<'_>) {
    let mut file = pristine_file().to_vec();
    while let (Some(hi), Some(lo), Some(b)) = (choices.byte(), choices.byte(), choices.byte()) {
        let at = (usize::from(hi) << 8 | usize::from(lo)) % file.len();
        file[at] ^= b;
    }
    let path = scratch_path();
    std::fs::write(&path, &file).expect("the store file writes");
    if let Ok(store) = Store::open(&path) {
        let _ = store.verify_audit();
    }
    let _ = std::fs::remove_file(&path);
}

/// One in-memory store with the sample chain, opened once; each input damages it inside a
/// transaction that is rolled back afterwards.
fn shared_store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(|| {
        let store = Store::open_in_memory().expect("an in-memory store opens");
        sample_chain(&store);
        Mutex::new(store)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut choices = Choices(data);
    match choices.byte() {
        Some(mode) if mode % 16 == 0 => damage_file(choices),
        mode => {
            let store = shared_store().lock().unwrap_or_else(|e| e.into_inner());
            store
                .with_connection(|c| c.execute_batch("BEGIN"))
                .expect("a transaction begins");
            if mode.is_some() {
                damage_rows(&store, choices);
            }
            let verified = store.verify_audit();
            store
                .with_connection(|c| c.execute_batch("ROLLBACK"))
                .expect("the damage rolls back");
            match verified {
                Ok(report) if mode.is_none() => assert!(report.is_intact(), "{report:?}"),
                Ok(report) => {
                    let _ = report.first_break.map(|b| b.to_string());
                }
                Err(e) if mode.is_none() => panic!("an intact store does not verify: {e}"),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
});
