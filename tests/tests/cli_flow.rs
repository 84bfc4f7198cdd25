//! The whole flow through the real `custody` and `custody-node` binaries: a brand
//! registers, scans, detects with a screenshot, sends a notice; a marketplace takes
//! down, relays a counter-notice, reinstates; the case shows in order; the bundle of
//! the reinstatement verifies offline with the node stopped, and any tampering with
//! it is caught and named.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use custody_e2e::*;
use serde_json::Value;
use std::path::Path;

struct Flow {
    work: tempfile::TempDir,
    vkey: String,
    bundle: std::path::PathBuf,
    files: std::path::PathBuf,
    reinstatement: u64,
}

fn index_of(run: &Run) -> u64 {
    assert!(run.ok, "custody failed:\n{}\n{}", run.stdout, run.stderr);
    run.json()["index"].as_u64().expect("receipt index")
}

fn public_key(run: &Run) -> String {
    assert!(run.ok, "{}", run.stderr);
    run.json()["public_key"].as_str().unwrap().to_owned()
}

/// Runs the README's walkthrough and stops the node.
fn walkthrough() -> Flow {
    let node = Node::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = Some(node.url.as_str());
    ledger::keyfile::write(&w.join("admin.key"), &admin()).unwrap();
    let brand = public_key(&custody(w, None, &["--json", "keygen", "-o", "brand.key"]));
    let market = public_key(&custody(w, None, &["--json", "keygen", "-o", "market.key"]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.join("brand.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key files must be private");
    }
    let vkey = node.vkey();
    let c = |key: &str, args: &[&str]| {
        let mut all = vec!["--json", "--key", key, "--log-key", vkey.as_str()];
        all.extend_from_slice(args);
        custody(w, url, &all)
    };
    index_of(&c(
        "admin.key",
        &[
            "actor",
            "register",
            "--public-key",
            &brand,
            "--name",
            "Acme legal",
            "--org",
            "Acme",
            "--role",
            "brand",
        ],
    ));
    index_of(&c(
        "admin.key",
        &[
            "actor",
            "register",
            "--public-key",
            &market,
            "--name",
            "Shopmart T&S",
            "--org",
            "Shopmart",
            "--role",
            "marketplace",
        ],
    ));
    let right = index_of(&c(
        "brand.key",
        &[
            "append",
            "right",
            "--right-type",
            "trademark",
            "--registration-number",
            "EU-018000001",
            "--office",
            "EUIPO",
            "--jurisdiction",
            "EU",
            "--owner",
            "Acme SA",
            "--class",
            "25",
            "--valid-until",
            "2034-01-01",
        ],
    ));
    let scan = index_of(&c(
        "brand.key",
        &[
            "append",
            "scan",
            "--product-id",
            "04012345678901",
            "--serial",
            "SN-77",
            "--marking",
            "qr",
            "--result",
            "counterfeit",
            "--country",
            "FR",
            "--device",
            "scanner-7",
        ],
    ));
    std::fs::write(
        w.join("listing.png"),
        b"\x89PNG\r\n\x1a\n a screenshot of the listing",
    )
    .unwrap();
    let detection = index_of(&c(
        "brand.key",
        &[
            "append",
            "detection",
            "--case",
            "acme-0001",
            "--ref",
            &scan.to_string(),
            "--attach",
            "listing.png",
            "--marketplace",
            "shopmart",
            "--listing-url",
            "https://shopmart.example/item/991",
            "--listing-id",
            "991",
            "--seller-id",
            "s-42",
            "--method",
            "image_match",
            "--confidence",
            "97",
        ],
    ));
    let notice = index_of(&c(
        "brand.key",
        &[
            "append",
            "notice",
            "--case",
            "acme-0001",
            "--ref",
            &detection.to_string(),
            "--right",
            &right.to_string(),
            "--regime",
            "eu-dsa",
            "--listing-url",
            "https://shopmart.example/item/991",
            "--contact-name",
            "Acme legal",
            "--contact-email",
            "legal@acme.example",
            "--explanation",
            "Counterfeit of EU TM 018000001",
            "--affirm",
        ],
    ));
    let takedown = index_of(&c(
        "market.key",
        &[
            "append",
            "takedown",
            "--case",
            "acme-0001",
            "--ref",
            &notice.to_string(),
            "--decision",
            "removed",
            "--ground",
            "EU TM infringement",
            "--statement-of-reasons",
            "Notice and test purchase scan",
            "--redress",
            "Appeal within 6 months",
        ],
    ));
    let counter = index_of(&c(
        "market.key",
        &[
            "append",
            "counter-notice",
            "--case",
            "acme-0001",
            "--ref",
            &takedown.to_string(),
            "--listing-url",
            "https://shopmart.example/item/991",
            "--seller-name",
            "S. Seller",
            "--seller-address",
            "1 Rue X, Paris",
            "--seller-phone",
            "+33 1 00 00 00 00",
            "--statement",
            "Genuine stock",
            "--affirm",
        ],
    ));
    let reinstatement = index_of(&c(
        "market.key",
        &[
            "append",
            "reinstatement",
            "--case",
            "acme-0001",
            "--ref",
            &counter.to_string(),
            "--listing-url",
            "https://shopmart.example/item/991",
            "--reason",
            "Complaint upheld",
        ],
    ));

    // The case reads in order, each step in its due-process state.
    let case = custody(w, url, &["--json", "case", "acme-0001"]);
    assert!(case.ok, "{}", case.stderr);
    let steps: Vec<(String, String)> = case.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["state_after"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("detection", "detected"),
        ("notice", "noticed"),
        ("takedown", "removed"),
        ("counter_notice", "countered"),
        ("reinstatement", "reinstated"),
    ];
    assert_eq!(
        steps,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
    let table = custody(w, url, &["case", "acme-0001"]);
    assert!(
        table.stdout.contains("reinstated") && table.stdout.contains("counter_notice"),
        "{}",
        table.stdout
    );

    let b = custody(
        w,
        url,
        &[
            "--log-key",
            &vkey,
            "bundle",
            &reinstatement.to_string(),
            "-o",
            "evidence.json",
            "--attachments",
            "files",
        ],
    );
    assert!(b.ok, "{}", b.stderr);
    drop(node.stop_and_keep());
    Flow {
        vkey,
        bundle: w.join("evidence.json"),
        files: w.join("files"),
        reinstatement,
        work,
    }
}

fn verify(flow: &Flow, bundle: &Path) -> Run {
    custody(
        flow.work.path(),
        None,
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--log-key",
            &flow.vkey,
            "--attachments",
            flow.files.to_str().unwrap(),
        ],
    )
}

#[test]
fn the_walkthrough_ends_in_a_bundle_that_verifies_offline() {
    let flow = walkthrough();
    // The node is stopped: this is offline.
    let run = verify(&flow, &flow.bundle);
    assert!(run.ok, "verify failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("VERIFIED"), "{}", run.stdout);
    for kind in [
        "right",
        "scan",
        "detection",
        "notice",
        "takedown",
        "counter_notice",
        "reinstatement",
    ] {
        assert!(
            run.stdout.contains(kind),
            "the report does not show the {kind}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("Shopmart T&S (Shopmart)"),
        "the report names who signed:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 of 1 attachments checked"),
        "{}",
        run.stdout
    );
    let json = custody(
        flow.work.path(),
        None,
        &[
            "--json",
            "verify",
            flow.bundle.to_str().unwrap(),
            "--log-key",
            &flow.vkey,
        ],
    );
    assert_eq!(json.json()["subject"].as_u64(), Some(flow.reinstatement));
}

/// Writes a modified copy of the bundle and returns `custody verify`'s verdict.
fn tampered(flow: &Flow, name: &str, edit: impl FnOnce(&mut Value)) -> Run {
    let mut b: Value = serde_json::from_slice(&std::fs::read(&flow.bundle).unwrap()).unwrap();
    edit(&mut b);
    let path = flow.work.path().join(name);
    std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
    verify(flow, &path)
}

fn flip_hex(s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    c[10] = if c[10] == '0' { '1' } else { '0' };
    c.into_iter().collect()
}

#[test]
fn any_tampering_with_a_bundle_fails_verify_and_names_what_failed() {
    let flow = walkthrough();
    let last = |b: &Value| b["entries"].as_array().unwrap().len() - 1;

    let entry = tampered(&flow, "entry.json", |b| {
        let i = last(b);
        let mut bytes = B64
            .decode(b["entries"][i]["entry"].as_str().unwrap())
            .unwrap();
        let pos = bytes.windows(6).position(|w| w == b"logged").unwrap();
        bytes[pos] = b'L';
        b["entries"][i]["entry"] = Value::String(B64.encode(bytes));
    });
    assert!(
        !entry.ok && entry.stderr.contains("inclusion proof for entry"),
        "{}",
        entry.stderr
    );

    let proof = tampered(&flow, "proof.json", |b| {
        let i = last(b);
        let h = b["entries"][i]["inclusion_proof"][0]
            .as_str()
            .unwrap()
            .to_owned();
        b["entries"][i]["inclusion_proof"][0] = Value::String(flip_hex(&h));
    });
    assert!(
        !proof.ok && proof.stderr.contains("inclusion proof"),
        "{}",
        proof.stderr
    );

    let checkpoint = tampered(&flow, "checkpoint.json", |b| {
        let note = b["checkpoint"].as_str().unwrap();
        let mut lines: Vec<String> = note.split('\n').map(str::to_owned).collect();
        lines[1] = (lines[1].parse::<u64>().unwrap() + 1).to_string();
        b["checkpoint"] = Value::String(lines.join("\n"));
    });
    assert!(
        !checkpoint.ok
            && checkpoint
                .stderr
                .contains("checkpoint signature does not verify"),
        "{}",
        checkpoint.stderr
    );

    let signature = tampered(&flow, "signature.json", |b| {
        // Re-sign nothing: swap the signature of the subject for another entry's.
        let i = last(b);
        let mut entry: Value = serde_json::from_slice(
            &B64.decode(b["entries"][i]["entry"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let other: Value = serde_json::from_slice(
            &B64.decode(b["entries"][i - 1]["entry"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        entry["envelope"]["signatures"][0]["sig"] =
            other["envelope"]["signatures"][0]["sig"].clone();
        b["entries"][i]["entry"] = Value::String(B64.encode(serde_json::to_vec(&entry).unwrap()));
    });
    assert!(
        !signature.ok && signature.stderr.contains("VERIFICATION FAILED"),
        "{}",
        signature.stderr
    );

    // One byte of the screenshot.
    let file = std::fs::read_dir(&flow.files)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let attachment = verify(&flow, &flow.bundle);
    assert!(
        !attachment.ok && attachment.stderr.contains("attachment \"listing.png\""),
        "{}",
        attachment.stderr
    );

    let other_log = custody(
        flow.work.path(),
        None,
        &[
            "verify",
            flow.bundle.to_str().unwrap(),
            "--log-key",
            "custody.test/other+12345678+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
        ],
    );
    assert!(!other_log.ok);
}
