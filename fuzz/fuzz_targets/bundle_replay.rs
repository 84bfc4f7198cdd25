//! Evidence bundles whose every signature is valid: the input is a scenario (see
//! `custody_fuzz::scenario_bundle`) of payloads signed here with fixed keys, logged
//! in a tree and checkpointed with the fixed log key, then `Bundle::parse` and
//! `verify`. This reaches the replay rules (roles, refs, due process) with events
//! and bundle fields no honest log would write. Must never panic or hang.
//!
//! With `CUSTODY_FUZZ_DUMP=<file>` the built bundle is written there first (and the
//! verdict printed), so a crashing scenario becomes a `bundle` regression input.
#![no_main]
use ledger::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(json) = custody_fuzz::scenario_bundle(data) else {
        return;
    };
    let dump = std::env::var_os("CUSTODY_FUZZ_DUMP");
    if let Some(path) = &dump {
        std::fs::write(path, &json).expect("write dump");
    }
    // Fuzzed `rules` may not have the shape of rules: then it stops at parsing.
    let Ok(b) = Bundle::parse(&json) else {
        return;
    };
    let verdict = b.verify(custody_fuzz::vkey(), &custody_fuzz::empty_blob);
    if dump.is_some() {
        match verdict {
            Ok(r) => eprintln!(
                "verified: {} entries, subject {}",
                r.entries.len(),
                r.subject
            ),
            Err(e) => eprintln!("refused: {e}"),
        }
    }
});
