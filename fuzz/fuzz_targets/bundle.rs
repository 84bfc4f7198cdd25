//! Evidence bundle JSON from anyone (a court is handed it): `Bundle::parse` then
//! `verify` with a fixed trusted vkey. Must never panic or hang. Seeds are valid
//! bundles signed by the fixed key, so mutations reach the replay rules.
#![no_main]
use ledger::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bundle::parse(data) {
        let _ = b.verify(custody_fuzz::vkey(), &custody_fuzz::empty_blob);
    }
});
