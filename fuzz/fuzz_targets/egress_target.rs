//! Egress destinations: any authority (`host:port`, `[v6]:port`) and any host name
//! normalizes or is refused with a `TargetError`; a normalized name is stable.
#![no_main]

use berth_gateway::egress::rules::{Target, normalize_host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let default_port = (flags & 1 == 1).then_some(443);
    if let Ok(target) = Target::parse_authority(text, default_port) {
        let shown = target.to_string();
        let again = Target::parse_authority(&shown, None)
            .unwrap_or_else(|e| panic!("{shown:?} from {text:?} does not parse again: {e}"));
        assert_eq!(again, target);
    }
    if let Ok(host) = normalize_host(text) {
        assert_eq!(normalize_host(&host).as_deref(), Ok(host.as_str()));
    }
});
