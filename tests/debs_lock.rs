//! `lock` of `debs` (issue 15, parts 1–2) against a real signed apt repository built from
//! real .debs (the machine's own apt sources), served by apache2 on 127.0.0.1: the
//! `InRelease` (or `Release` + `Release.gpg`) is checked with the `signed-by` key in Rust,
//! the `Packages` index against the signed Release, jq's dependency closure is pinned and
//! libc6 is external; a wrong key, an expired or malformed Release, a changed index and an
//! unknown package are refused with the exit codes of SPEC §5.

mod common;

use std::fs;

use common::apt::{AptRepo, AptRepoOptions, KeyAlgo};
use common::net::lock;
use common::*;

/// `m.yaml` with one repository `tools` at `repo`, its key at `keys/<key>`, and `packages`
/// (YAML flow entries).
fn write_manifest(
    ws: &Workspace,
    repo: &AptRepo,
    key: &std::path::Path,
    packages: &[&str],
    extra: &str,
) {
    ws.mkdir("keys");
    let name = key.file_name().unwrap().to_str().unwrap();
    fs::copy(key, ws.path(format!("keys/{name}"))).unwrap();
    let suite = repo.suite();
    let components = if suite == "./" {
        ""
    } else {
        "    components: [main]\n"
    };
    ws.write(
        "m.yaml",
        format!(
            "apiVersion: bundle/v1\nname: debs\nversion: 1.0.0\ndebs:\n  - name: tools\n    url: {}\n    suite: '{suite}'\n{components}    architectures: [{}]\n    signed-by: keys/{name}\n{extra}    packages:\n{}",
            repo.url(),
            repo.arch(),
            packages
                .iter()
                .map(|p| format!("      - {p}\n"))
                .collect::<String>()
        ),
    );
}

fn lock_m(ws: &Workspace) -> Run {
    lock(ws, "m.yaml", "m.lock.yaml", "cache", &[])
}

/// The lock's `debs[0]`.
fn locked_repo(ws: &Workspace) -> serde_yaml_ng::Value {
    let text = fs::read_to_string(ws.path("m.lock.yaml")).unwrap();
    let lock: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    lock["debs"][0].clone()
}

/// `name version arch sha256 size filename` of each locked package.
fn locked_packages(repo: &serde_yaml_ng::Value) -> Vec<String> {
    repo["packages"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["arch"].as_str().unwrap(),
                p["sha256"].as_str().unwrap(),
                p["size"].as_u64().unwrap(),
                p["filename"].as_str().unwrap()
            )
        })
        .collect()
}

/// What the lock must pin for `names`, from the fixture's own table.
fn expected(repo: &AptRepo, names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .map(|n| {
            let d = repo.package(n);
            format!(
                "{} {} {} {} {} {}",
                d.name,
                d.version,
                d.arch,
                d.sha256,
                d.size,
                d.filename.trim_start_matches("./")
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn lock_pins_jq_and_its_closure_from_the_signed_index_and_lists_libc6_as_external() {
    let ws = Workspace::new();
    let repo = AptRepo::build(&ws, AptRepoOptions::default());
    write_manifest(&ws, &repo, &repo.key_armored(), &["{name: jq}"], "");
    let run = lock_m(&ws);
    run.assert_ok()
        .assert_stderr_contains("libc6")
        .assert_stderr_contains("expected from the site's OS mirror");
    let locked = locked_repo(&ws);
    assert_eq!(
        locked_packages(&locked),
        expected(&repo, &["jq", "libjq1", "libonig5"]),
        "{locked:?}"
    );
    // libc6 is external, with what needs it and why.
    let external = locked["external"].as_sequence().unwrap();
    assert!(
        external
            .iter()
            .any(|e| e["relation"].as_str().unwrap().starts_with("libc6")
                && e["required-by"].as_str().unwrap().starts_with("jq ")
                && e["reason"] == "not in the carried repositories"),
        "{external:?}"
    );
    // The lock names the signed Release it resolved against (create carries exactly it).
    assert_eq!(locked["release"]["file"], "InRelease");
    assert_eq!(
        locked["release"]["sha256"].as_str().unwrap(),
        sha256_file(repo.release_dir().join("InRelease"))
    );
    // The key travels in the lock, armored, so the lock is self-contained.
    let key = locked["signed-by"].as_str().unwrap();
    assert!(
        key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{key}"
    );
    // The Release was read from InRelease, the index from the signed list.
    let log = repo.apache().access_log();
    assert!(log.contains("/dists/stable/InRelease"), "{log}");
    assert!(log.contains("/binary-"), "{log}");

    // Deterministic, and a lock of the lock (moved elsewhere: the key is inside it) is
    // the same lock.
    let first = fs::read(ws.path("m.lock.yaml")).unwrap();
    lock_m(&ws).assert_ok();
    assert_eq!(fs::read(ws.path("m.lock.yaml")).unwrap(), first);
    ws.mkdir("elsewhere");
    fs::copy(ws.path("m.lock.yaml"), ws.path("elsewhere/again.yaml")).unwrap();
    lock(&ws, "elsewhere/again.yaml", "again.lock.yaml", "cache", &[]).assert_ok();
    assert_eq!(fs::read(ws.path("again.lock.yaml")).unwrap(), first);

    // closure: none carries only what is named.
    write_manifest(
        &ws,
        &repo,
        &repo.key_armored(),
        &["{name: jq}"],
        "    closure: none\n",
    );
    lock_m(&ws).assert_ok();
    assert_eq!(locked_packages(&locked_repo(&ws)), expected(&repo, &["jq"]));
}

#[test]
fn a_binary_key_a_flat_repo_and_release_gpg_without_inrelease_work() {
    let ws = Workspace::new();
    let mut options = AptRepoOptions {
        flat: true,
        key_algo: KeyAlgo::Rsa3072,
        ..AptRepoOptions::default()
    };
    options.packages = vec!["hello"];
    let repo = AptRepo::build(&ws, options);
    // Only Release + Release.gpg: the detached signature is checked.
    fs::remove_file(repo.release_dir().join("InRelease")).unwrap();
    write_manifest(&ws, &repo, &repo.key_binary(), &["{name: hello}"], "");
    lock_m(&ws).assert_ok();
    assert_eq!(
        locked_packages(&locked_repo(&ws)),
        expected(&repo, &["hello"])
    );
    let log = repo.apache().access_log();
    assert!(log.contains("Release.gpg"), "{log}");
}

#[test]
fn a_release_signed_by_another_key_or_expired_or_malformed_is_exit_3() {
    // Signed by another key than signed-by names.
    let ws = Workspace::new();
    let repo = AptRepo::build(
        &ws,
        AptRepoOptions {
            sign_with_other_key: true,
            ..AptRepoOptions::default()
        },
    );
    write_manifest(&ws, &repo, &repo.key_armored(), &["{name: jq}"], "");
    lock_m(&ws)
        .assert_code(3)
        .assert_stderr_contains("InRelease")
        .assert_stderr_contains("not by the signed-by key")
        .assert_stderr_contains(repo.key_fingerprint());
    assert!(!ws.path("m.lock.yaml").exists());

    // Expired (Valid-Until in the past).
    let ws = Workspace::new();
    let repo = AptRepo::build(
        &ws,
        AptRepoOptions {
            valid_until_past: true,
            ..AptRepoOptions::default()
        },
    );
    write_manifest(&ws, &repo, &repo.key_armored(), &["{name: jq}"], "");
    lock_m(&ws)
        .assert_code(3)
        .assert_stderr_contains("expired")
        .assert_stderr_contains("Valid-Until");
    // A snapshot mirror: the signature is still checked, the expiry is not.
    write_manifest(
        &ws,
        &repo,
        &repo.key_armored(),
        &["{name: jq}"],
        "    check-valid-until: false\n",
    );
    lock_m(&ws).assert_ok();
    assert!(
        locked_repo(&ws)["release"]["valid-until"]
            .as_str()
            .is_some()
    );

    // Malformed: the signature block cut off.
    let ws = Workspace::new();
    let repo = AptRepo::build(&ws, AptRepoOptions::default());
    let inrelease = repo.release_dir().join("InRelease");
    let text = fs::read_to_string(&inrelease).unwrap();
    let cut = text.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    fs::write(&inrelease, &text[..cut]).unwrap();
    write_manifest(&ws, &repo, &repo.key_armored(), &["{name: jq}"], "");
    lock_m(&ws)
        .assert_code(3)
        .assert_stderr_contains("InRelease");

    // A revoked key signs nothing (apt says REVKEYSIG).
    let ws_revoked = Workspace::new();
    let repo_r = AptRepo::build(&ws_revoked, AptRepoOptions::default());
    let revoked = ws_revoked.path("revoked.asc");
    repo_r.export_revoked_key(&revoked);
    write_manifest(&ws_revoked, &repo_r, &revoked, &["{name: jq}"], "");
    lock_m(&ws_revoked)
        .assert_code(3)
        .assert_stderr_contains("revoked")
        .assert_stderr_contains(repo_r.key_fingerprint());

    // Nor a key that has expired since it signed (apt says EXPKEYSIG).
    let ws_expired = Workspace::new();
    let repo_e = AptRepo::build(
        &ws_expired,
        AptRepoOptions {
            expired_key: true,
            ..AptRepoOptions::default()
        },
    );
    write_manifest(
        &ws_expired,
        &repo_e,
        &repo_e.key_armored(),
        &["{name: jq}"],
        "",
    );
    lock_m(&ws_expired)
        .assert_code(3)
        .assert_stderr_contains("expired 2024-01-01")
        .assert_stderr_contains(repo_e.key_fingerprint());

    // A signed-by file that is not a key: exit 2 naming it.
    ws.write("keys/junk.asc", "not a key\n");
    write_manifest(&ws, &repo, &ws.path("keys/junk.asc"), &["{name: jq}"], "");
    lock_m(&ws)
        .assert_code(2)
        .assert_stderr_contains("junk.asc")
        .assert_stderr_contains("not an OpenPGP public key");
}

#[test]
fn an_index_that_does_not_match_the_signed_release_is_exit_3() {
    let ws = Workspace::new();
    let repo = AptRepo::build(&ws, AptRepoOptions::default());
    // Change every Packages file after signing (the Release still lists the old sums).
    let index = repo.packages_index();
    for ext in ["", ".gz", ".xz"] {
        let path = std::path::PathBuf::from(format!("{}{ext}", index.display()));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x20;
        fs::write(&path, bytes).unwrap();
    }
    write_manifest(&ws, &repo, &repo.key_armored(), &["{name: jq}"], "");
    lock_m(&ws)
        .assert_code(3)
        .assert_stderr_contains("Packages")
        .assert_stderr_contains("the signed Release pins");
    assert!(!ws.path("m.lock.yaml").exists());
}

#[test]
fn unknown_packages_and_versions_are_exit_2_with_what_there_is() {
    let ws = Workspace::new();
    let repo = AptRepo::build(&ws, AptRepoOptions::default());
    write_manifest(&ws, &repo, &repo.key_armored(), &["{name: jqq}"], "");
    lock_m(&ws)
        .assert_code(2)
        .assert_stderr_contains("`jqq` is not in the repository")
        .assert_stderr_contains("nearest names: jq");
    let jq = repo.package("jq");
    write_manifest(
        &ws,
        &repo,
        &repo.key_armored(),
        &["{name: jq, version: '0.1-1'}"],
        "",
    );
    lock_m(&ws)
        .assert_code(2)
        .assert_stderr_contains("jq` 0.1-1")
        .assert_stderr_contains(&jq.version);
    // A pinned version that is there is taken.
    write_manifest(
        &ws,
        &repo,
        &repo.key_armored(),
        &[&format!("{{name: jq, version: '{}'}}", jq.version)],
        "    closure: none\n",
    );
    lock_m(&ws).assert_ok();
    assert_eq!(locked_packages(&locked_repo(&ws)), expected(&repo, &["jq"]));
}

/// The first Debian `deb` source of this machine (deb822 `.sources` or one-line
/// `sources.list`) signed by a keyring file: (URI, suite, keyring). Read at run time, so no
/// mirror is written into the repository.
fn machine_debian_source() -> Option<(String, String, String)> {
    let mut texts = Vec::new();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            texts.push(fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    for text in texts {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            };
            if field("Types").as_deref() == Some("deb")
                && let (Some(uri), Some(suite), Some(key)) =
                    (field("URIs"), field("Suites"), field("Signed-By"))
                && key.contains("debian-archive-keyring")
                && !suite.contains("security")
            {
                return Some((uri, suite, key));
            }
        }
    }
    None
}

#[test]
fn lock_against_the_machines_real_debian_mirror() {
    let Some((uri, suite, keyring)) = machine_debian_source() else {
        eprintln!(
            "SKIPPED: this machine has no deb822 Debian source signed by debian-archive-keyring"
        );
        return;
    };
    let ws = Workspace::new();
    ws.mkdir("keys");
    fs::copy(&keyring, ws.path("keys/debian.gpg")).unwrap();
    // The machine's mirror may be a snapshot (its Valid-Until long past): checked as apt
    // here is configured, the signature all the same.
    ws.write(
        "m.yaml",
        format!(
            "apiVersion: bundle/v1\nname: real\nversion: 1.0.0\ndebs:\n  - name: debian\n    url: {uri}\n    suite: {suite}\n    components: [main]\n    architectures: [amd64]\n    signed-by: keys/debian.gpg\n    check-valid-until: false\n    packages:\n      - {{name: hello}}\n"
        ),
    );
    let run = lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--retries", "1"]);
    if run.code == 1 && run.stderr.contains("cannot connect") {
        eprintln!(
            "SKIPPED: the machine's Debian mirror is unreachable:\n{}",
            run.stderr
        );
        return;
    }
    run.assert_ok();
    let locked = locked_repo(&ws);
    let names: Vec<&str> = locked["packages"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"hello"), "{names:?}");
    // libc6 is Priority: required in Debian: left to the site's mirror by default.
    assert!(!names.contains(&"libc6"), "{names:?}");
    let external = locked["external"].as_sequence().unwrap();
    assert!(
        external
            .iter()
            .any(|e| e["relation"].as_str().unwrap().starts_with("libc6")),
        "{external:?}"
    );
}
