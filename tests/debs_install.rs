//! Debian packages end to end (issue 15, parts 3–4): a real signed upstream apt repository
//! (real .debs from the machine's own apt sources, served by apache2 on 127.0.0.1) is
//! locked, bundled and installed into a web root served by a second apache2; a stock,
//! isolated `apt-get` (signature checking on, never `trusted=yes`) then updates from the
//! installed repository with the `.sources` snippet install wrote, and downloads jq byte for
//! byte as upstream has it. A tampered .deb in the bundle is exit 3 with the web root
//! unchanged.

mod common;

use std::fs;

use common::apt::{AptClient, AptRepo, AptRepoOptions};
use common::net::{create, lock, site_keygen};
use common::tamper::flip_entry_byte;
use common::*;

/// `m.yaml` carrying jq (and its closure) from `repo`, locked and bundled into
/// `b.bundle.tar.zst`.
fn bundle_jq(ws: &Workspace, repo: &AptRepo) {
    bundle_jq_as(ws, repo, "debs", "tools", "b");
}

/// Bundle `bundle` 1.0.0 carrying jq from `repo` as repository `repo_name`, into
/// `<out>.bundle.tar.zst` (the site key made once).
fn bundle_jq_as(ws: &Workspace, repo: &AptRepo, bundle: &str, repo_name: &str, out: &str) {
    ws.mkdir("keys");
    fs::copy(repo.key_armored(), ws.path(format!("keys/{out}.asc"))).unwrap();
    ws.write(
        format!("{out}.yaml"),
        format!(
            "apiVersion: bundle/v1\nname: {bundle}\nversion: 1.0.0\ndebs:\n  - name: {repo_name}\n    url: {}\n    suite: stable\n    components: [main]\n    architectures: [{}]\n    signed-by: keys/{out}.asc\n    packages:\n      - {{name: jq}}\n",
            repo.url(),
            repo.arch()
        ),
    );
    let (manifest, locked) = (format!("{out}.yaml"), format!("{out}.lock.yaml"));
    lock(ws, &manifest, &locked, "cache", &[]).assert_ok();
    if !ws.path("site.key").exists() {
        site_keygen(ws);
    }
    create(ws, &locked, &format!("{out}.bundle.tar.zst"), "cache", &[]).assert_ok();
}

fn install(ws: &Workspace, bundle: &str, www: &std::path::Path, base: &str) -> Run {
    run_bundle_in(
        ws.root(),
        &[
            "install",
            bundle,
            "--pubkey",
            "site.pub",
            "--web-root",
            www.to_str().unwrap(),
            "--base-url",
            base,
        ],
        &[],
    )
}

#[test]
fn stock_apt_updates_from_the_installed_repository_and_gets_jq_byte_for_byte() {
    let ws = Workspace::new();
    let repo = AptRepo::build(&ws, AptRepoOptions::default());
    bundle_jq(&ws, &repo);

    // The bundle carries the upstream InRelease and indexes byte-identical, the debs at
    // their pool paths, and the key.
    let report = common::net::inspect_json(&ws, "b.bundle.tar.zst");
    let kinds = &report["kinds"];
    assert_eq!(kinds["deb"]["entries"], 3, "{report:#}");
    assert!(
        kinds["apt-index"]["entries"].as_u64().unwrap() >= 4,
        "{report:#}"
    );
    // inspect names what the site's OS mirror must provide.
    let repo_artifact = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "apt-index")
        .unwrap();
    assert!(
        repo_artifact["external"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("libc6")),
        "{repo_artifact:#}"
    );
    run_bundle_in(ws.root(), &["inspect", "b.bundle.tar.zst"], &[])
        .assert_ok()
        .assert_stdout_contains("expected from the site's OS mirror: libc6");

    let www = ws.mkdir("www");
    let site = Apache::start(&www);
    let base = site.url("/");
    install(&ws, "b.bundle.tar.zst", &www, &base).assert_ok();
    let served = www.join("debs/tools");
    assert_eq!(
        fs::read(served.join("dists/stable/InRelease")).unwrap(),
        fs::read(repo.release_dir().join("InRelease")).unwrap(),
        "the InRelease is not upstream's, byte for byte"
    );
    let jq = repo.package("jq");
    assert_eq!(sha256_file(served.join(&jq.filename)), jq.sha256);
    // hello was not asked for: not in the pool.
    assert!(!served.join(repo.package("hello").filename).exists());

    // The snippet: the web root's URL, the upstream key inline, never trusted=yes.
    let snippet = fs::read_to_string(www.join("debs/tools.sources")).unwrap();
    assert!(
        snippet.contains(&format!("URIs: {}debs/tools", base)),
        "{snippet}"
    );
    assert!(
        snippet.contains("Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{snippet}"
    );
    assert!(!snippet.to_lowercase().contains("trusted"), "{snippet}");

    // Kubespray's apt variable for this repository (its upstream is a Debian one) points at
    // the installed copy.
    let vars: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&fs::read_to_string(www.join("kubespray-offline.yml")).unwrap())
            .unwrap();
    assert_eq!(
        vars["debian_repo"],
        format!("{base}debs/tools").as_str(),
        "{vars:?}"
    );

    // Stock apt, isolated, signature checking on.
    let apt = AptClient::new(&ws, "tools.sources", &snippet);
    apt.update_ok();
    let got = apt.download_ok(&ws.mkdir("got"), &["jq"]);
    assert_eq!(got.len(), 1);
    assert_eq!(sha256_file(&got[0]), jq.sha256);
    let upstream = repo.root().join(&jq.filename);
    assert_eq!(fs::read(&got[0]).unwrap(), fs::read(upstream).unwrap());
    // The whole carried closure, from the site repository, is installable: dpkg (dry run,
    // against this machine's package database) finds every dependency among them or in the
    // base system.
    let all = apt.download_ok(&ws.mkdir("closure"), &["jq", "libjq1", "libonig5"]);
    let out = std::process::Command::new("dpkg")
        .args(["--dry-run", "-i"])
        .args(&all)
        .output()
        .expect("run dpkg");
    assert!(
        out.status.success(),
        "dpkg --dry-run -i failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Installing again changes nothing.
    let mut before = tree_snapshot(&www);
    install(&ws, "b.bundle.tar.zst", &www, &base).assert_ok();
    let mut after = tree_snapshot(&www);
    // (The receipt records the install time.)
    before.retain(|p, _| !p.starts_with(".bundle/"));
    after.retain(|p, _| !p.starts_with(".bundle/"));
    assert_eq!(before, after, "{}", snapshot_diff(&before, &after));
}

#[test]
fn a_tampered_deb_in_the_bundle_is_exit_3_and_the_web_root_is_unchanged() {
    let ws = Workspace::new();
    let repo = AptRepo::build(&ws, AptRepoOptions::default());
    bundle_jq(&ws, &repo);
    let jq = repo.package("jq");
    let entry_path = format!("debs/tools/{}", jq.filename);
    flip_entry_byte(
        &ws.path("b.bundle.tar.zst"),
        &entry_path,
        &ws.path("t.bundle.tar.zst"),
    );

    let www = ws.mkdir("www");
    ws.write("www/index.html", "site\n");
    let before = tree_snapshot(&www);
    install(&ws, "t.bundle.tar.zst", &www, "http://web.example.org/")
        .assert_code(3)
        .assert_stderr_contains(&entry_path);
    assert_eq!(tree_snapshot(&www), before);
}

#[test]
fn an_upstream_deb_or_release_changed_since_lock_is_exit_3_at_create() {
    let ws = Workspace::new();
    let mut repo = AptRepo::build(&ws, AptRepoOptions::default());
    bundle_jq(&ws, &repo);
    // A .deb changed in the pool: create (cold cache) refuses it, naming it.
    let jq = repo.package("jq");
    let pool_file = repo.root().join(&jq.filename);
    let mut bytes = fs::read(&pool_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&pool_file, &bytes).unwrap();
    fs::remove_dir_all(ws.path("cache")).unwrap();
    create(&ws, "b.lock.yaml", "c.bundle.tar.zst", "cache", &[])
        .assert_code(3)
        .assert_stderr_contains("jq")
        .assert_stderr_contains("sha256 mismatch");
    assert!(!ws.path("c.bundle.tar.zst").exists());

    // The repository re-published (a new signed Release): the lock no longer matches.
    repo.publish();
    create(&ws, "b.lock.yaml", "d.bundle.tar.zst", "cache", &[])
        .assert_code(3)
        .assert_stderr_contains("InRelease")
        .assert_stderr_contains("lock again");
    assert!(!ws.path("d.bundle.tar.zst").exists());
}

#[test]
fn another_bundle_may_not_replace_a_repository_with_another_release() {
    let ws = Workspace::new();
    let first = AptRepo::build(&ws, AptRepoOptions::default());
    bundle_jq(&ws, &first);
    let www = ws.mkdir("www");
    install(&ws, "b.bundle.tar.zst", &www, "http://web.example.org/").assert_ok();

    // Another bundle, another upstream signing of a repository also named `tools`.
    let ws2 = Workspace::new();
    let second = AptRepo::build(&ws2, AptRepoOptions::default());
    bundle_jq_as(&ws, &second, "other", "tools", "o");
    let before = tree_snapshot(&www);
    install(&ws, "o.bundle.tar.zst", &www, "http://web.example.org/")
        .assert_code(1)
        .assert_stderr_contains("debs/tools")
        .assert_stderr_contains("bundle debs 1.0.0")
        .assert_stderr_contains("another name");
    assert_eq!(tree_snapshot(&www), before);
    // Under its own name it installs beside the first.
    bundle_jq_as(&ws, &second, "other", "tools2", "p");
    install(&ws, "p.bundle.tar.zst", &www, "http://web.example.org/").assert_ok();
    assert!(www.join("debs/tools2.sources").exists());
    assert!(www.join("debs/tools.sources").exists());
}
