//! DSSE envelope JSON from a client (`POST /v1/events`) or a log: `Envelope::from_json`
//! then `open` (decode, verify, parse the event). Must never panic.
#![no_main]
use ledger::envelope::{open_all, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::from_json(data) else {
        return;
    };
    // What we write for an envelope we read back unchanged.
    let again = Envelope::from_json(&env.to_json()).expect("to_json output parses");
    assert_eq!(again, env);
    let single = env.clone().open().map(|o| o.event_id);
    let batch = open_all(vec![env]).pop().expect("one verdict per envelope");
    // Strict single and batch opening agree (the audit relies on it).
    assert_eq!(single.is_ok(), batch.is_ok());
});
