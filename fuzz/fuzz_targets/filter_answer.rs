//! A filter hook's answer: any status and body is `continue`, `modify`, `veto` or a
//! refusal the gateway records, never a panic. The first two bytes are the status.
#![no_main]

use berth_contract::protocol::HookAction;
use berth_gateway::fuzzing::filter_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = u16::from_be_bytes(*status) % 1000;
    let parsed = filter_answer(status, body);
    // A body the SDK's typed answer decodes is one the gateway accepts.
    if (200..300).contains(&status)
        && status != 204
        && let Ok(action) = serde_json::from_slice::<HookAction>(body)
        && !matches!(action, HookAction::Modify { ref event } if !event.is_object())
    {
        assert!(parsed.is_ok(), "{action:?} refused: {parsed:?}");
    }
});
