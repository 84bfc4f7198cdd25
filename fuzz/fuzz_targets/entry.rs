//! Entry (leaf) bytes from a store, a tile, an entry bundle or an evidence bundle:
//! `Entry::parse`, `replay::logged_event` and a replay of the entry at index 0.
//! Must never panic; what `encode` writes for a parsed entry parses back the same.
#![no_main]
use ledger::cases::Rules;
use ledger::entry::{encode, Entry, MAX_ENTRY_BYTES};
use ledger::replay::{logged_event, Replayer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = logged_event(data);
    let _ = Replayer::new(Rules::default()).apply(0, data);
    let _ = Replayer::new(Rules::default()).apply(1, data);
    let Ok(e) = Entry::parse(data) else {
        return;
    };
    let bytes = encode(e.logged_at, &e.envelope);
    if bytes.len() <= MAX_ENTRY_BYTES {
        let again = Entry::parse(&bytes).expect("encode output parses");
        assert_eq!((again.logged_at, again.envelope), (e.logged_at, e.envelope));
    }
});
