//! The directory a supervisor pushes to a gateway: any JSON body decodes into a
//! `SnapshotWire` or `ObservationsWire` and is converted or checked, and every failure is
//! an error the gateway answers 400 with. The first byte picks the body kind.
#![no_main]

use berth_contract::wire::usage::{
    UsageReportWire, parse_call_item, parse_destination_item, parse_egress_item,
};
use berth_contract::wire::{ObservationsWire, SnapshotWire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Ok(snapshot) = serde_json::from_slice::<SnapshotWire>(body) {
                let version = snapshot.version;
                if let Ok(entries) = snapshot.into_entries() {
                    // What converted must convert back and forth unchanged.
                    let again = SnapshotWire::from_entries(version, &entries);
                    let json = serde_json::to_vec(&again).expect("a snapshot serializes");
                    let back: SnapshotWire =
                        serde_json::from_slice(&json).expect("a serialized snapshot decodes");
                    back.into_entries()
                        .expect("a snapshot built from entries checks");
                }
            }
        }
        1 => {
            if let Ok(observations) = serde_json::from_slice::<ObservationsWire>(body) {
                let _ = observations.is_empty();
                if let Err(e) = observations.check() {
                    let _ = e.to_string();
                }
                let _ = observations.plugins();
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = parse_egress_item(text);
                let _ = parse_destination_item(text);
                let _ = parse_call_item(text);
            }
            let _ = serde_json::from_slice::<UsageReportWire>(body);
        }
    }
});
