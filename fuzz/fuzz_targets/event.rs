//! Event payload bytes (the DSSE payload, signed by an actor): `Event::parse`.
//! Must never panic; an event that parses survives `to_payload` unchanged.
#![no_main]
use ledger::event::{Event, MAX_PAYLOAD_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = Event::parse(data) else {
        return;
    };
    let p = ev.to_payload();
    // `to_payload` writes empty refs/attachments out, so it may outgrow the limit.
    if p.len() <= MAX_PAYLOAD_BYTES {
        assert_eq!(Event::parse(&p).expect("to_payload output parses"), ev);
    }
});
