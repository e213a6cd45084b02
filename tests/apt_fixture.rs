//! The apt fixture (`tests/common/apt.rs`) that the `debs:` tests of issue 15 lock against:
//! a real upstream repository of real debs, signed by a throwaway key, that a stock,
//! isolated `apt-get` with signature checking accepts, and refuses when the signature is by
//! another key or the `Release` has expired. Everything is served on 127.0.0.1.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::Instant;

use common::apt::{AptClient, AptRepo, AptRepoOptions, KeyAlgo};
use common::*;

/// Builds a repository, saying how long it took (the first build of a run may download the
/// debs).
fn build(ws: &Workspace, options: AptRepoOptions) -> AptRepo {
    let start = Instant::now();
    let repo = AptRepo::build(ws, options);
    eprintln!("AptRepo::build took {:?}", start.elapsed());
    repo
}

#[test]
fn dists_repo_is_accepted_by_stock_apt_and_serves_the_pool_debs() {
    let ws = Workspace::new();
    let repo = build(&ws, AptRepoOptions::default());

    let names: BTreeSet<String> = repo.packages().into_iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        ["hello", "jq", "libjq1", "libonig5"]
            .map(String::from)
            .into(),
    );
    for deb in repo.packages() {
        let file = repo.root().join(&deb.filename);
        assert!(deb.filename.starts_with("pool/main/"), "{deb:?}");
        assert_eq!(fs::metadata(&file).unwrap().len(), deb.size, "{deb:?}");
        assert_eq!(sha256_file(&file), deb.sha256, "{deb:?}");
        assert_eq!(deb.arch, repo.arch(), "{deb:?}");
        assert!(!deb.version.is_empty(), "{deb:?}");
    }
    assert!(
        repo.package("libonig5")
            .filename
            .starts_with("pool/main/libo/libonig/"),
        "Debian's pool prefix for lib* sources"
    );

    let dists = repo.root().join("dists/stable");
    let release = fs::read_to_string(dists.join("Release")).unwrap();
    let arch = repo.arch();
    for line in [
        "Suite: stable".to_string(),
        "Codename: stable".to_string(),
        "Components: main".to_string(),
        format!("Architectures: {arch}"),
        "Valid-Until: ".to_string(),
        "SHA256:".to_string(),
        format!("main/binary-{arch}/Packages.xz"),
        format!("main/binary-{arch}/Packages.gz"),
    ] {
        assert!(
            release.contains(&line),
            "{line:?} not in Release:\n{release}"
        );
    }
    let in_release = fs::read_to_string(dists.join("InRelease")).unwrap();
    assert!(in_release.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));
    let armored = fs::read_to_string(repo.key_armored()).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert_ne!(fs::read(repo.key_binary()).unwrap().first(), Some(&b'-'));

    // The detached signature too, which apt only reads when there is no InRelease.
    require_tool("gpgv");
    output_ok(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(repo.key_binary())
            .arg(dists.join("Release.gpg"))
            .arg(dists.join("Release")),
    );

    let apt = AptClient::new(&ws, "fixture.list", &repo.sources_line(&repo.key_binary()));
    apt.update_ok();
    repo.apache()
        .wait_access_log(|log| log.contains("GET /debian/dists/stable/InRelease HTTP/1.1\" 200"));

    let got = apt.download_ok(&ws.path("got"), &["jq"]);
    let jq = repo.package("jq");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        fs::read(&got[0]).unwrap(),
        fs::read(repo.root().join(&jq.filename)).unwrap(),
        "apt-get download jq gives the pool's deb byte for byte"
    );
}

/// A repository built with `options`, and what an isolated `apt-get update` that trusts
/// only the repository key said when it refused it.
fn refused(ws: &Workspace, options: AptRepoOptions) -> (AptRepo, String) {
    let repo = build(ws, options);
    let apt = AptClient::new(ws, "fixture.list", &repo.sources_line(&repo.key_armored()));
    let text = apt.update_refused();
    (repo, text)
}

#[test]
fn repo_signed_by_another_key_is_refused_by_stock_apt() {
    let ws = Workspace::new();
    let options = AptRepoOptions {
        sign_with_other_key: true,
        ..AptRepoOptions::default()
    };
    let (repo, text) = refused(&ws, options);
    let fpr = repo.other_key_fingerprint();
    let signer = format!("NO_PUBKEY {}", &fpr[fpr.len() - 16..]);
    assert!(
        text.contains(&signer) && text.contains("is not signed"),
        "expected a signature error naming {signer}:\n{text}"
    );

    // Positive control: the signature is good, it is just by the other key.
    let other = repo.sources_line(&repo.other_key_binary());
    AptClient::new(&ws, "other.list", &other).update_ok();
}

#[test]
fn expired_release_is_refused_by_stock_apt() {
    let ws = Workspace::new();
    let options = AptRepoOptions {
        valid_until_past: true,
        ..AptRepoOptions::default()
    };
    let (_repo, text) = refused(&ws, options);
    assert!(
        text.contains("is expired"),
        "expected an expired Release:\n{text}"
    );
}

#[test]
fn flat_repo_with_an_rsa_key_is_accepted_by_stock_apt() {
    let ws = Workspace::new();
    let repo = build(
        &ws,
        AptRepoOptions {
            flat: true,
            packages: vec!["hello"],
            key_algo: KeyAlgo::Rsa3072,
            ..AptRepoOptions::default()
        },
    );
    for name in [
        "Packages",
        "Packages.gz",
        "Packages.xz",
        "Release",
        "InRelease",
    ] {
        assert!(repo.root().join(name).is_file(), "{name} in the flat root");
    }
    let hello = repo.package("hello");
    assert!(
        hello.filename.starts_with("./hello_"),
        "flat Filename: {hello:?}"
    );
    assert!(repo.root().join(&hello.filename).is_file());

    let apt = AptClient::new(&ws, "fixture.list", &repo.sources_line(&repo.key_armored()));
    apt.update_ok();
    repo.apache()
        .wait_access_log(|log| log.contains("GET /debian/./InRelease HTTP/1.1\" 200"));

    let got = apt.download_ok(&ws.path("got"), &["hello"]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(sha256_file(&got[0]), hello.sha256);
}
