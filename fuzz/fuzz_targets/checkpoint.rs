//! Checkpoint notes and log keys from a node, a mirror or a bundle, verified with a
//! fixed vkey: the input as a whole note; the input as a checkpoint body signed with
//! the fixed key (so the body parser is reached); the input as a vkey. Must never
//! panic; a checkpoint that verifies re-signs to the same size and root.
#![no_main]
use custody_fuzz::{log_key, vkey};
use ledger::checkpoint::CheckpointVerifier;
use ledger::replay::signed_note_key;
use libfuzzer_sys::fuzz_target;
use signed_note::{Note, StandardSigner};
use std::sync::OnceLock;

fn verifier() -> &'static CheckpointVerifier {
    static V: OnceLock<CheckpointVerifier> = OnceLock::new();
    V.get_or_init(|| CheckpointVerifier::new(vkey()).expect("fixed vkey parses"))
}

/// The fixed key as a signed-note signer (the `LogKey` only signs checkpoints it
/// writes itself).
fn signer() -> &'static StandardSigner {
    static S: OnceLock<StandardSigner> = OnceLock::new();
    S.get_or_init(|| {
        use base64::Engine;
        let mut public = vec![1u8];
        public.extend_from_slice(log_key().signing_key().verifying_key().as_bytes());
        let mut private = vec![1u8];
        private.extend_from_slice(&custody_fuzz::LOG_SEED);
        let skey = format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            custody_fuzz::ORIGIN,
            signed_note::key_id(custody_fuzz::ORIGIN, &public),
            base64::engine::general_purpose::STANDARD.encode(private)
        );
        StandardSigner::new(&skey).expect("fixed key parses")
    })
}

fn check_verified(note: &str) {
    if let Ok(cp) = verifier().verify(note) {
        let again = log_key().sign(cp.size, cp.root).expect("re-sign");
        let cp2 = verifier()
            .verify(&again.note)
            .expect("own checkpoint verifies");
        assert_eq!((cp2.size, cp2.root), (cp.size, cp.root));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_verified(text);
    if let Ok(mut note) = Note::new(data, &[]) {
        if note.add_sigs(&[signer()]).is_ok() {
            if let Ok(signed) = String::from_utf8(note.to_bytes()) {
                check_verified(&signed);
            }
        }
    }
    if let Ok(v) = CheckpointVerifier::new(text) {
        let own = log_key()
            .sign(3, ledger::types::RootHash([3; 32]))
            .expect("sign");
        let _ = v.verify(&own.note);
    }
    let _ = signed_note_key(text);
});
