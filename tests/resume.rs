//! Resumable installs (SPEC §4, issue 17 part 4): an install killed part-way keeps the
//! entries it verified and staged, keyed by the signed index's digest; the next install
//! of the same bundle reuses them, jumps over them through the seek table, and converges
//! on what a clean install gives. Staging that is not trustworthy (another bundle's, a
//! planted directory, partial files) is never reused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::install::{Built, Urls, assert_no_staging, install, make_bundle, names_starting};
use common::*;
use serde_json::Value;

const MIB: usize = 1 << 20;
/// Files in the bundle, each [`FILE_BYTES`] of random bytes.
const FILES: usize = 48;
const FILE_BYTES: usize = 4 * MIB;

fn big_bundle(ws: &Workspace, tag: &str, name: &str, seed: u64) -> Built {
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            (
                format!("blobs/part-{i:03}.bin"),
                random_bytes(FILE_BYTES, seed + i as u64),
            )
        })
        .collect();
    make_bundle(ws, tag, name, "1.0.0", &files, Urls::Local)
}

/// Splits `built` into 32 MiB volumes beside a copy named `split/NAME`.
fn split_copy(ws: &Workspace, built: &Built, tag: &str) -> PathBuf {
    let dir = built.bundle.parent().unwrap();
    let out = ws
        .mkdir(format!("{tag}-split"))
        .join(built.bundle.file_name().unwrap());
    create_from_cache(
        &dir.join("manifest.lock.yaml"),
        &out,
        &ws.path("site.key"),
        &dir.join("cache"),
        &["--split-size", "32M"],
        &[],
    )
    .assert_ok();
    out
}

/// The `c<N>` files in the web root's staging directories (complete staged entries).
fn staged_entries(web: &Path) -> usize {
    names_starting(web, ".bundle-staging-")
        .iter()
        .map(|d| {
            fs::read_dir(web.join(d))
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| {
                            let n = e.file_name().to_string_lossy().into_owned();
                            n.starts_with('c') && !n.ends_with(".part")
                        })
                        .count()
                })
                .unwrap_or(0)
        })
        .sum()
}

/// Starts `bundle install BUNDLE … --json` and SIGKILLs it once `at_least` entries are
/// staged. Returns how many were staged when it died.
fn install_and_kill(bundle: &Path, pubkey: &Path, web: &Path, at_least: usize) -> usize {
    let mut child = Command::new(bundle_bin())
        .args(["install".as_ref(), bundle.as_os_str()])
        .args(["--pubkey".as_ref(), pubkey.as_os_str()])
        .args(["--web-root".as_ref(), web.as_os_str()])
        .args(["--base-url", "http://site.example.org/", "--json"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bundle install");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if staged_entries(web) >= at_least {
            child.kill().expect("SIGKILL the install");
            let status = child.wait().expect("wait");
            assert!(
                status.code().is_none(),
                "the install finished ({status}) before it could be killed; make the bundle bigger"
            );
            return staged_entries(web);
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).ok();
            panic!(
                "the install ended ({status}) with only {} entries staged, before it could be killed:\n{stderr}",
                staged_entries(web)
            );
        }
        assert!(Instant::now() < deadline, "the install made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn install_json(bundle: &Path, pubkey: &Path, web: &Path) -> Value {
    let run = install(
        bundle,
        pubkey,
        web,
        &["--base-url", "http://site.example.org/", "--json"],
    );
    run.assert_ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// Every file of `built` is in `web` with its signed bytes, and no staging is left.
#[track_caller]
fn assert_complete(built: &Built, web: &Path) {
    for (path, (_, sha, _)) in &built.files {
        assert_eq!(&sha256_file(web.join(path)), sha, "{path}");
    }
    assert_no_staging(web);
}

/// The complete (`c<N>`, not `.part`) files in a staging directory.
fn complete_staged(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(".part"))
        .collect()
}

/// The web root without the receipt (it records the install time) and staging.
fn content(web: &Path) -> std::collections::BTreeMap<String, String> {
    let mut tree = tree_snapshot(web);
    tree.retain(|path, _| !path.starts_with(".bundle/") && !path.starts_with(".bundle-staging-"));
    tree
}

#[test]
fn an_install_killed_during_volume_3_resumes_and_converges() {
    let ws = Workspace::new();
    let built = big_bundle(&ws, "v1", "resume", 100);
    let split = split_copy(&ws, &built, "v1");
    let volumes = (0..)
        .map(|n| PathBuf::from(format!("{}.{n:03}", split.display())))
        .take_while(|p| p.exists())
        .count();
    assert!(
        volumes >= 6,
        "expected ≥ 6 volumes of 32 MiB, got {volumes}"
    );

    // Reference: a clean install of the unsplit bundle.
    let clean = ws.mkdir("clean");
    let reference = install_json(&built.bundle, &built.pubkey, &clean);
    assert_eq!(reference["reused_entries"], 0, "{reference}");

    // Killed while reading the third 32 MiB volume (entries of 4 MiB: 8 per volume).
    let web = ws.mkdir("web");
    let staged = install_and_kill(&split, &built.pubkey, &web, 2 * 8 + 2);
    assert!(staged >= 18, "only {staged} entries staged at the kill");
    assert_eq!(
        content(&web),
        Default::default(),
        "a killed install showed files under their final names"
    );
    assert_eq!(names_starting(&web, ".bundle-staging-").len(), 1);

    let resumed = install_json(&split, &built.pubkey, &web);
    let reused = resumed["reused_entries"].as_u64().unwrap() as usize;
    assert!(
        reused >= staged.min(FILES) && reused < FILES,
        "reused {reused} entries, {staged} were staged: {resumed}"
    );
    assert_eq!(
        resumed["reused_bytes"].as_u64().unwrap(),
        (reused * FILE_BYTES) as u64,
        "{resumed}"
    );
    // It jumped over what it reused instead of decompressing it again.
    assert!(
        resumed["jumped_entries"].as_u64().unwrap() as usize >= reused - 1,
        "{resumed}"
    );
    assert_eq!(
        resumed["installed"].as_u64().unwrap() as usize,
        FILES,
        "{resumed}"
    );
    assert_eq!(
        content(&web),
        content(&clean),
        "the resumed install differs from a clean one:\n{}",
        snapshot_diff(&content(&clean), &content(&web))
    );
    assert_no_staging(&web);

    // Run again: everything is in place, nothing is reused, nothing staged is left.
    let again = install_json(&split, &built.pubkey, &web);
    assert_eq!(again["reused_entries"], 0, "{again}");
    assert_eq!(again["already_present"].as_u64().unwrap() as usize, FILES);
    assert_no_staging(&web);
}

#[test]
fn another_bundles_install_removes_kept_staging_and_planted_staging_is_not_trusted() {
    let ws = Workspace::new();
    let built = big_bundle(&ws, "a", "resume-a", 500);
    let web = ws.mkdir("web");
    let staged = install_and_kill(&built.bundle, &built.pubkey, &web, 10);
    assert!(staged >= 10);

    // Another bundle's install (here: a small one) removes this bundle's kept staging.
    let other = common::install::small_bundle(&ws, "b", "other", 900);
    install(&other.bundle, &other.pubkey, &web, &[]).assert_ok();
    assert_no_staging(&web);
    let after = install_json(&built.bundle, &built.pubkey, &web);
    assert_eq!(after["reused_entries"], 0, "{after}");

    // A staging directory for this bundle that someone else could have written (mode
    // 0755), holding a right-sized file of the wrong bytes, is not reused.
    let fresh = ws.mkdir("fresh");
    install_and_kill(&built.bundle, &built.pubkey, &fresh, 4);
    let dir = fresh.join(&names_starting(&fresh, ".bundle-staging-")[0]);
    let victim = complete_staged(&dir).remove(0);
    fs::write(&victim, vec![b'X'; FILE_BYTES]).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let resumed = install_json(&built.bundle, &built.pubkey, &fresh);
    assert_eq!(resumed["reused_entries"], 0, "{resumed}");
    assert_complete(&built, &fresh);

    // A partial file and a truncated complete one in a trusted directory are not reused
    // either; the rest is.
    let third = ws.mkdir("third");
    install_and_kill(&built.bundle, &built.pubkey, &third, 8);
    let dir = third.join(&names_starting(&third, ".bundle-staging-")[0]);
    let complete = complete_staged(&dir);
    let cut = &complete[0];
    let f = fs::OpenOptions::new().write(true).open(cut).unwrap();
    f.set_len(FILE_BYTES as u64 - 1).unwrap();
    fs::write(dir.join("c999.part"), b"partial").unwrap();
    let resumed = install_json(&built.bundle, &built.pubkey, &third);
    let reused = resumed["reused_entries"].as_u64().unwrap() as usize;
    assert_eq!(reused, complete.len() - 1, "{resumed}");
    assert_complete(&built, &third);
}

#[test]
fn an_install_stopped_by_a_missing_volume_keeps_what_verified_and_the_next_run_reuses_it() {
    let ws = Workspace::new();
    let built = big_bundle(&ws, "v1", "resume-missing", 300);
    let split = split_copy(&ws, &built, "v1");
    let name = split.file_name().unwrap().to_string_lossy().into_owned();
    // One stick holding the volume list and the first three volumes only.
    let stick = ws.mkdir("stick");
    for suffix in [".volumes", ".volumes.minisig", ".000", ".001", ".002"] {
        fs::copy(
            split.with_file_name(format!("{name}{suffix}")),
            stick.join(format!("{name}{suffix}")),
        )
        .unwrap();
    }
    let web = ws.mkdir("web");
    let run = install(
        &stick.join(&name),
        &built.pubkey,
        &web,
        &["--wait", "--base-url", "http://site.example.org/"],
    );
    run.assert_code(1)
        .assert_stderr_contains(&format!("{name}.003"))
        .assert_stderr_contains("what verified so far is kept");
    let staged = staged_entries(&web);
    assert!(
        staged >= 16,
        "three 32 MiB volumes hold at least 16 whole 4 MiB entries; {staged} were kept"
    );
    assert_eq!(content(&web), Default::default(), "files under final names");

    // A run refused by a later pre-flight (here an OCI directory whose index.json is not
    // one) keeps what the earlier run verified.
    let oci = ws.mkdir("oci");
    fs::write(oci.join("index.json"), b"not an index").unwrap();
    let oci_arg = oci.to_str().unwrap();
    install(&split, &built.pubkey, &web, &["--oci-dir", oci_arg])
        .assert_code(1)
        .assert_stderr_contains("not an OCI image index");
    assert_eq!(
        staged_entries(&web),
        staged,
        "a refused run threw kept entries away"
    );

    // With every volume at hand (another directory: the same signed index), the install
    // reuses all of them and reads on from there.
    let resumed = install_json(&split, &built.pubkey, &web);
    assert_eq!(
        resumed["reused_entries"].as_u64().unwrap() as usize,
        staged,
        "{resumed}"
    );
    assert_complete(&built, &web);
}

/// A kept entry of the right size whose bytes are not the signed ones (a torn write after
/// a power loss: the staged file was renamed to `c<N>` without an fsync; a failing disk)
/// is not installed under its final name: kept entries are hashed before they are reused.
#[test]
fn a_kept_entry_of_the_right_size_but_wrong_bytes_is_not_installed() {
    let ws = Workspace::new();
    let built = big_bundle(&ws, "a", "resume-torn", 700);
    let web = ws.mkdir("web");
    install_and_kill(&built.bundle, &built.pubkey, &web, 4);
    let dir = web.join(&names_starting(&web, ".bundle-staging-")[0]);
    // Still 0700 and owned by this user: the directory itself is trusted.
    let victim = complete_staged(&dir).remove(0);
    fs::write(&victim, vec![0u8; FILE_BYTES]).unwrap();
    install_json(&built.bundle, &built.pubkey, &web);
    assert_complete(&built, &web);
}
