//! The tamper matrix through `bundle verify` (SPEC §3, §5): every tampered variant of a valid
//! bundle exits 3 with a message that says what failed and, where the tamper is about one
//! entry, names it. Positive controls first prove that the good bundle and the crafting code's
//! untouched rebuilds verify, so each failure is due to its tamper alone.

mod common;

use std::fs;
use std::path::Path;

use common::tamper::{
    Framing, RawEntry, SourceBundle, TamperKeys, build_bundle, decompress, make_source_bundle,
    pax_record, read_tar, rebuild_unchanged, tamper_cases,
};
use common::*;

fn verify(bundle: &Path, pubkey: &Path) -> Run {
    run_bundle(
        &[
            "verify".as_ref(),
            bundle.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
        ],
        &[],
    )
}

#[track_caller]
fn assert_verifies(what: &str, bundle: &Path, pubkey: &Path) {
    let run = verify(bundle, pubkey);
    if run.code != 0 {
        panic!(
            "{what} ({}) should verify\nexit code {}\n--- stderr ---\n{}",
            bundle.display(),
            run.code,
            run.stderr
        );
    }
    run.assert_ok()
        .assert_stderr_contains("OK: tamper-source 1.0.0");
}

fn source(ws: &Workspace) -> SourceBundle {
    make_source_bundle(&ws.path("source"))
}

#[test]
fn good_bundle_and_untouched_rebuilds_verify() {
    let ws = Workspace::new();
    let src = source(&ws);
    assert_verifies("the good bundle", &src.bundle, &src.pubkey);

    // Decompress, walk, rebuild and recompress with no change: still valid, both ways.
    let seekable = ws.write(
        "rebuilt-seekable.bundle.tar.zst",
        rebuild_unchanged(&src.bundle, Framing::Seekable),
    );
    assert_eq!(
        sha256_file(&seekable),
        sha256_file(&src.bundle),
        "rebuilding through the frame writer must reproduce the good bundle byte for byte"
    );
    assert_verifies("the seekable rebuild", &seekable, &src.pubkey);
    let plain = ws.write(
        "rebuilt-plain.bundle.tar.zst",
        rebuild_unchanged(&src.bundle, Framing::Plain),
    );
    assert_verifies("the plain (no seek table) rebuild", &plain, &src.pubkey);

    // The same tar bytes as the good bundle.
    let good_tar = decompress(&fs::read(&src.bundle).unwrap());
    assert!(decompress(&fs::read(&plain).unwrap()) == good_tar);

    // The seek table alone stripped: a valid bundle without one (SPEC §3).
    let good = fs::read(&src.bundle).unwrap();
    let frames = common::tamper::seek_table(&good);
    let table_len = 8 + 8 * frames.len() + 9;
    let stripped = ws.write(
        "no-seek-table.bundle.tar.zst",
        &good[..good.len() - table_len],
    );
    assert_verifies("the bundle without its seek table", &stripped, &src.pubkey);
}

/// SPEC §6: a bundle re-tarred with PAX headers, entries and signed index unchanged, stays
/// valid.
#[test]
fn retarred_with_pax_headers_still_verifies() {
    let ws = Workspace::new();
    let src = source(&ws);
    let entries = read_tar(&decompress(&fs::read(&src.bundle).unwrap()));

    // A PAX extended header before every entry (as `tar --format=pax` writes).
    let mut with_pax = Vec::new();
    for e in &entries {
        let records = [
            pax_record("mtime", "1700000000.5"),
            pax_record("comment", "re-tarred"),
        ]
        .concat();
        let name = format!("PaxHeaders/{}", e.path().rsplit('/').next().unwrap());
        with_pax.push(RawEntry::new(
            name.as_bytes(),
            tar::EntryType::XHeader,
            &records,
        ));
        with_pax.push(e.clone());
    }
    let pax = ws.write(
        "pax.bundle.tar.zst",
        build_bundle(&with_pax, Framing::Plain),
    );
    assert_verifies("the bundle with per-entry PAX headers", &pax, &src.pubkey);

    // A global PAX header first (as Python's tarfile and `git archive` write).
    let mut global = vec![RawEntry::new(
        b"pax_global_header",
        tar::EntryType::XGlobalHeader,
        &pax_record("comment", "re-tarred"),
    )];
    global.extend(entries.iter().cloned());
    let global = ws.write(
        "pax-global.bundle.tar.zst",
        build_bundle(&global, Framing::Plain),
    );
    assert_verifies("the bundle with a global PAX header", &global, &src.pubkey);
}

#[test]
fn every_tampered_bundle_fails_verify_with_exit_3() {
    let ws = Workspace::new();
    let src = source(&ws);
    let keys = TamperKeys::generate(&ws.path("keys"), &src.pubkey);
    // The control this matrix stands on: untouched, the crafting code's output verifies.
    let control = ws.write(
        "control.bundle.tar.zst",
        rebuild_unchanged(&src.bundle, Framing::Plain),
    );
    assert_verifies("the untouched plain rebuild", &control, &src.pubkey);

    let cases = tamper_cases(&ws.path("cases"), &src.bundle, &keys);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let good_sha = sha256_file(&src.bundle);
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            case.pubkey != src.pubkey || sha256_file(&case.bundle) != good_sha,
            "case {} is not tampered",
            case.name
        );
        let run = verify(&case.bundle, &case.pubkey);
        if let Some(why) = case.mismatch(&run) {
            failures.push(why);
        }
        if !run.stdout.is_empty() {
            failures.push(format!(
                "case `{}`: verify printed on stdout: {}",
                case.name, run.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} tamper cases did not fail as expected:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
