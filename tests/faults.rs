//! Faults at `lock` and `create` against a private Apache on 127.0.0.1: downloads
//! deduplicated by digest, a partial download without an If-Range validator, URLs whose
//! bundle paths clash (one is a directory of the other), unsafe `name` / `version`
//! values, and durable output (a failed or out-of-space `create` never leaves a
//! half-written or mismatched bundle and signature) (SPEC §2, §5, §6).
//!
//! The scripted-server faults (stalls and `--timeout`, If-Range against an upstream that
//! changed) live in `tests/network.rs`, beside its `ScriptedServer`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::net::*;
use common::*;

/// The `name` of this file's manifests.
const NAME: &str = "faults";

/// GET lines for any of `paths`, once Apache has logged at least `at_least` of them
/// (it logs after the response) and a moment more for stragglers.
fn settled_gets(apache: &Apache, paths: &[&str], at_least: usize) -> (usize, String) {
    let count = |l: &str| paths.iter().map(|p| gets(l, p).len()).sum::<usize>();
    apache.wait_access_log(|l| count(l) >= at_least);
    std::thread::sleep(Duration::from_millis(300));
    let log = apache.access_log();
    (count(&log), log)
}

/// `files/127.0.0.1:<port>/<path>`.
fn dest(apache: &Apache, path: &str) -> String {
    format!(
        "files/127.0.0.1:{}/{}",
        apache.port,
        path.trim_start_matches('/')
    )
}

/// Installs `bundle` into a fresh web root `dir` and returns it.
fn install(ws: &Workspace, bundle: &str, dir: &str) -> PathBuf {
    let root = ws.mkdir(dir);
    run_bundle_in(
        ws.root(),
        &[
            "install",
            bundle,
            "--pubkey",
            "site.pub",
            "--web-root",
            dir,
            "--base-url",
            "http://repo.local/",
        ],
        &[],
    )
    .assert_ok();
    root
}

/// `minisign -Vm BUNDLE -p site.pub` in the workspace must accept the pair.
#[track_caller]
fn assert_minisign_accepts(ws: &Workspace, bundle: &str) {
    require_tool("minisign");
    let out = Command::new("minisign")
        .args(["-Vm", bundle, "-p", "site.pub"])
        .current_dir(ws.root())
        .output()
        .expect("spawn minisign");
    assert!(
        out.status.success(),
        "minisign rejects {bundle} + .minisig:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// 1. Two artifacts with the same sha256 are downloaded once (SPEC §5)
// ---------------------------------------------------------------------------

/// Serves each `(path, content)`, creates from a locked manifest of them at `--jobs 4`
/// with an empty cache, and checks the bundle, the installed bytes and that each distinct
/// content was fetched exactly once.
fn create_with_shared_contents(files: &[(&str, &[u8])]) {
    let ws = Workspace::new();
    site_keygen(&ws);
    for (path, data) in files {
        ws.write(format!("www/{path}"), data);
    }
    let apache = Apache::start(&ws.path("www"));
    let pinned: Vec<(String, &[u8])> = files.iter().map(|(p, d)| (apache.url(p), *d)).collect();
    ws.write("l.yaml", locked_manifest(NAME, &pinned));

    create(&ws, "l.yaml", "d.bundle.tar.zst", "cache", &["--jobs", "4"]).assert_ok();
    verify(&ws, "d.bundle.tar.zst").assert_ok();

    // Every URL has its own destination in the bundle.
    let report = inspect_json(&ws, "d.bundle.tar.zst");
    let artifacts = report["artifacts"].as_array().expect("artifacts");
    assert_eq!(artifacts.len(), files.len(), "{report:#}");
    for ((path, _), a) in files.iter().zip(artifacts) {
        let d = dest(&apache, path);
        assert_eq!(a["source"], apache.url(path).as_str(), "{report:#}");
        assert_eq!(a["dest"], d.as_str(), "{report:#}");
        assert!(
            a["entries"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == d.as_str())),
            "{d} is not among the bundle's entries: {report:#}"
        );
    }
    // ... with the right bytes once installed.
    let root = install(&ws, "d.bundle.tar.zst", "web");
    for (path, data) in files {
        let got = fs::read(root.join(dest(&apache, path)))
            .unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert!(got == *data, "{path}: installed bytes differ");
    }

    // Exactly one GET per distinct content, whichever of its URLs it went to.
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for (path, data) in files {
        let sha = sha256_bytes(data);
        let p = *path;
        match groups.iter_mut().find(|(s, _)| *s == sha) {
            Some((_, paths)) => paths.push(p),
            None => groups.push((sha, vec![p])),
        }
    }
    let abs: Vec<Vec<String>> = groups
        .iter()
        .map(|(_, ps)| ps.iter().map(|p| format!("/{p}")).collect())
        .collect();
    let every: Vec<&str> = abs.iter().flatten().map(String::as_str).collect();
    let (_, log) = settled_gets(&apache, &every, groups.len());
    for paths in &abs {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let n: usize = paths.iter().map(|p| gets(&log, p).len()).sum();
        assert_eq!(
            n, 1,
            "{paths:?} share one sha256 and must be downloaded once in total, got {n} GETs:\n{log}"
        );
    }
}

#[test]
fn two_urls_with_the_same_content_are_downloaded_once() {
    let data = pattern(600_000, 1);
    create_with_shared_contents(&[("a/kubeadm", &data), ("b/kubeadm", &data)]);
}

#[test]
fn six_urls_sharing_two_contents_download_each_content_once() {
    let x = pattern(500_000, 2);
    let y = pattern(400_000, 3);
    create_with_shared_contents(&[
        ("x1/tool", &x),
        ("y1/tool", &y),
        ("x2/tool", &x),
        ("y2/tool", &y),
        ("x3/tool", &x),
        ("y3/tool", &y),
    ]);
}

#[test]
fn lock_pins_two_urls_with_identical_content() {
    // Control: at `lock` nothing is known before the download; both are fetched and pinned.
    let ws = Workspace::new();
    let data = pattern(700_000, 4);
    ws.write("www/a/tool", &data);
    ws.write("www/b/tool", &data);
    let apache = Apache::start(&ws.path("www"));
    let urls = [apache.url("a/tool"), apache.url("b/tool")];
    ws.write("m.yaml", manifest(NAME, &urls, ""));
    // A few rounds, each with an empty cache: racing downloads of one blob must not clash.
    for round in 0..3 {
        let out = format!("m{round}.lock.yaml");
        lock(
            &ws,
            "m.yaml",
            &out,
            &format!("cache{round}"),
            &["--jobs", "4"],
        )
        .assert_ok();
        let want = (sha256_bytes(&data), data.len() as u64);
        let got = locked_files(&ws.path(&out));
        assert_eq!(
            got,
            vec![
                (urls[0].clone(), want.0.clone(), want.1),
                (urls[1].clone(), want.0.clone(), want.1),
            ],
            "round {round}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. A partial download without a validator starts over (SPEC §5, If-Range)
// ---------------------------------------------------------------------------

#[test]
fn a_partial_download_without_a_validator_is_fetched_again_from_the_start() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(800_000, 5);
    let half = data.len() / 2;
    let digest = sha256_bytes(&data);
    ws.write("www/f/tool.bin", &data);
    let apache = Apache::start(&ws.path("www"));
    ws.write(
        "l.yaml",
        locked_manifest(NAME, &[(apache.url("f/tool.bin"), data.as_slice())]),
    );
    // Correct bytes, but nothing tells whether upstream is still the same file.
    ws.write(format!("cache/partial/{digest}.part"), &data[..half]);

    create(&ws, "l.yaml", "b.bundle.tar.zst", "cache", &[]).assert_ok();
    verify(&ws, "b.bundle.tar.zst").assert_ok();
    let (n, log) = settled_gets(&apache, &["/f/tool.bin"], 1);
    assert_eq!(n, 1, "{log}");
    let line = gets(&log, "/f/tool.bin")[0];
    assert!(
        line.ends_with(&format!("\" 200 {} \"-\"", data.len())),
        "without a .part.validator the download must restart from 0 (no Range): {line}"
    );
    let left = dir_names(&ws.path("cache/partial"));
    assert!(left.is_empty(), "leftovers in cache/partial: {left:?}");
}

// ---------------------------------------------------------------------------
// 3. A URL whose path is a directory of another URL's path (SPEC §6)
// ---------------------------------------------------------------------------

/// Both orders of `.../h/download` and `.../h/download/v1/tool` on an unused port (the
/// clash must be found before any connection is attempted).
fn clashing_pairs() -> Vec<[String; 2]> {
    let port = free_port();
    let file = format!("http://127.0.0.1:{port}/h/download");
    let below = format!("http://127.0.0.1:{port}/h/download/v1/tool");
    vec![[file.clone(), below.clone()], [below, file]]
}

#[test]
fn a_url_below_another_urls_file_path_is_rejected_at_lock() {
    let ws = Workspace::new();
    for (i, urls) in clashing_pairs().iter().enumerate() {
        let m = format!("m{i}.yaml");
        let out = format!("m{i}.lock.yaml");
        ws.write(&m, manifest(NAME, urls, ""));
        lock(&ws, &m, &out, "cache", &["--retries", "0"])
            .assert_code(2)
            .assert_stderr_contains("error: ")
            .assert_stderr_contains(&urls[0])
            .assert_stderr_contains(&urls[1]);
        assert!(!ws.path(&out).exists(), "a refused lock wrote -o");
    }
}

#[test]
fn a_url_below_another_urls_file_path_is_rejected_at_create() {
    let ws = Workspace::new();
    site_keygen(&ws);
    ws.mkdir("out");
    for (i, urls) in clashing_pairs().iter().enumerate() {
        let l = format!("l{i}.yaml");
        ws.write(
            &l,
            locked_manifest(
                NAME,
                &[
                    (urls[0].clone(), b"one".as_slice()),
                    (urls[1].clone(), b"two".as_slice()),
                ],
            ),
        );
        create(
            &ws,
            &l,
            "out/c.bundle.tar.zst",
            "cache",
            &["--retries", "0"],
        )
        .assert_code(2)
        .assert_stderr_contains("error: ")
        .assert_stderr_contains(&urls[0])
        .assert_stderr_contains(&urls[1]);
        let left = dir_names(&ws.path("out"));
        assert!(left.is_empty(), "a refused create wrote {left:?}");
    }
}

// ---------------------------------------------------------------------------
// 4. `name` and `version` name files: a safe character set only (SPEC §2)
// ---------------------------------------------------------------------------

/// `FILE:LINE:COL:` with this file and line, and a numeric column.
#[track_caller]
fn assert_position(run: &Run, file: &str, line: usize) {
    let prefix = format!("{file}:{line}:");
    let ok = run.stderr.match_indices(&prefix).any(|(i, _)| {
        let rest = &run.stderr[i + prefix.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    });
    assert!(ok, "stderr has no `{prefix}COL:` position\n{}", run.stderr);
}

#[test]
fn unsafe_name_or_version_is_rejected_at_lock_with_its_position() {
    let ws = Workspace::new();
    ws.write("www/f/tool", b"tool");
    let apache = Apache::start(&ws.path("www"));
    let files = format!("files:\n  - url: '{}'\n", apache.url("f/tool"));
    let long = format!("a{}", "b".repeat(128)); // 129 characters
    // (manifest, offending key, its line)
    let cases: Vec<(String, &str, usize)> = vec![
        (
            format!("apiVersion: bundle/v1\nname: \"a\\nb\"\nversion: '1.0'\n{files}"),
            "name",
            2,
        ),
        (
            format!("apiVersion: bundle/v1\nversion: '1.0'\n# the site\nname: 'x y'\n{files}"),
            "name",
            4,
        ),
        (
            format!("apiVersion: bundle/v1\nname: kubespray-offline\nversion: '1.0/evil'\n{files}"),
            "version",
            3,
        ),
        (
            format!("apiVersion: bundle/v1\nname: kubespray-offline\n{files}version: '\"q\"'\n"),
            "version",
            5,
        ),
        (
            format!("apiVersion: bundle/v1\nname: '{long}'\nversion: '1.0'\n{files}"),
            "name",
            2,
        ),
        (
            format!("apiVersion: bundle/v1\nname: '-x'\nversion: '1.0'\n{files}"),
            "name",
            2,
        ),
    ];
    for (i, (text, key, line)) in cases.iter().enumerate() {
        let m = format!("bad{i}.yaml");
        let out = format!("bad{i}.lock.yaml");
        ws.write(&m, text);
        let run = lock(&ws, &m, &out, "cache", &["--retries", "0"]);
        run.assert_code(2)
            .assert_stderr_contains("error: ")
            .assert_stderr_contains(key);
        assert_position(&run, &m, *line);
        assert!(
            !ws.path(&out).exists(),
            "case {i}: a refused lock wrote -o\n{text}"
        );
    }
    assert!(
        gets(&apache.access_log(), "/f/tool").is_empty(),
        "a manifest with a bad name was fetched:\n{}",
        apache.access_log()
    );
}

#[test]
fn safe_names_and_versions_lock_fine() {
    // Control.
    let ws = Workspace::new();
    ws.write("www/f/tool", b"tool");
    let apache = Apache::start(&ws.path("www"));
    let long = format!("a{}", "b".repeat(127)); // 128 characters
    for (i, (name, version)) in [
        ("kubespray-offline", "v2.27.0+build.1"),
        (long.as_str(), "2.27.0~rc.1_x"),
    ]
    .into_iter()
    .enumerate()
    {
        let m = format!("ok{i}.yaml");
        let out = format!("ok{i}.lock.yaml");
        ws.write(
            &m,
            format!(
                "apiVersion: bundle/v1\nname: {name}\nversion: {version}\nfiles:\n  - url: '{}'\n",
                apache.url("f/tool")
            ),
        );
        lock(&ws, &m, &out, "cache", &[]).assert_ok();
        let text = fs::read_to_string(ws.path(&out)).unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(doc["name"].as_str(), Some(name), "{text}");
        assert_eq!(doc["version"].as_str(), Some(version), "{text}");
    }
}

// ---------------------------------------------------------------------------
// 5. Durable output: a failed create leaves the previous pair as it was (SPEC §5)
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_only_the_pair(dir: &Path, name: &str) {
    let want: BTreeSet<String> = [name.to_string(), format!("{name}.minisig")].into();
    let got = dir_names(dir);
    assert_eq!(got, want, "temporary or extra files in {}", dir.display());
}

/// After a failed `create -o DIR/x.bundle.tar.zst`: `DIR` (relative to the workspace) is
/// as it was (`before`), holds only the pair, and minisign still accepts it. `what`
/// prefixes the message of a changed tree.
#[track_caller]
fn assert_previous_pair_kept(
    ws: &Workspace,
    dir: &str,
    before: &BTreeMap<String, String>,
    what: &str,
) {
    assert_eq!(
        tree_snapshot(ws.path(dir)),
        *before,
        "{what}the previous bundle changed"
    );
    assert_only_the_pair(&ws.path(dir), "x.bundle.tar.zst");
    assert_minisign_accepts(ws, &format!("{dir}/x.bundle.tar.zst"));
}

#[test]
fn a_failed_create_leaves_the_previous_bundle_and_signature_untouched() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let good = pattern(900_000, 6);
    ws.write("www/dl/tool.bin", &good);
    ws.write("www/dl/other.bin", pattern(100_000, 7));
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("dl/tool.bin");
    ws.write(
        "m.yaml",
        manifest(NAME, &[url.clone(), apache.url("dl/other.bin")], ""),
    );
    lock(&ws, "m.yaml", "m.lock.yaml", "cache-lock", &[]).assert_ok();

    ws.mkdir("out");
    create(&ws, "m.lock.yaml", "out/x.bundle.tar.zst", "cache", &[]).assert_ok();
    assert_minisign_accepts(&ws, "out/x.bundle.tar.zst");
    let before = tree_snapshot(ws.path("out"));
    assert_only_the_pair(&ws.path("out"), "x.bundle.tar.zst");

    // Upstream changes after the lock.
    let changed = pattern(900_000, 8);
    ws.write("www/dl/tool.bin", &changed);

    // (i) Fails while downloading (empty cache): sha256 mismatch, exit 3.
    create(
        &ws,
        "m.lock.yaml",
        "out/x.bundle.tar.zst",
        "cache-fresh",
        &[],
    )
    .assert_code(3)
    .assert_stderr_contains(&url)
    .assert_stderr_contains(&sha256_bytes(&good));
    assert_previous_pair_kept(&ws, "out", &before, "(i) ");

    // (ii) Fails while writing: the cached blob was damaged (same size), so its bytes do
    // not match the lock when packed (and a re-download would not either). Exit 3.
    let blob = ws.path(format!("cache/sha256/{}", sha256_bytes(&good)));
    assert!(blob.exists(), "no cached blob at {}", blob.display());
    let mut damaged = good.clone();
    damaged[good.len() - 10] ^= 0xff;
    fs::write(&blob, &damaged).unwrap();
    create(&ws, "m.lock.yaml", "out/x.bundle.tar.zst", "cache", &[])
        .assert_code(3)
        .assert_stderr_contains(&url);
    assert_previous_pair_kept(&ws, "out", &before, "(ii) ");
    verify(&ws, "out/x.bundle.tar.zst").assert_ok();
}

#[test]
fn create_onto_a_full_filesystem_fails_and_leaves_nothing_half_written() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let big = pattern(3 << 20, 9);
    let small = pattern(100_000, 10);
    ws.write("www/big.bin", &big);
    ws.write("www/small.bin", &small);
    let apache = Apache::start(&ws.path("www"));
    ws.write(
        "big.yaml",
        locked_manifest(NAME, &[(apache.url("big.bin"), big.as_slice())]),
    );
    ws.write(
        "small.yaml",
        locked_manifest(NAME, &[(apache.url("small.bin"), small.as_slice())]),
    );

    let mnt = ws.path("mnt");
    let Some(_guard) = Tmpfs::try_mount(&mnt, "size=2m") else {
        return;
    };

    // An empty 2 MiB filesystem, 3 MiB of incompressible content (cache elsewhere).
    let run = create(&ws, "big.yaml", "mnt/x.bundle.tar.zst", "cache", &[]);
    run.assert_code(1).assert_stderr_contains("No space left");
    let left = dir_names(&mnt);
    assert!(
        left.is_empty(),
        "a failed create left {left:?} on the full filesystem"
    );

    // A good small bundle there first: the failed big one leaves it as it was.
    create(&ws, "small.yaml", "mnt/x.bundle.tar.zst", "cache", &[]).assert_ok();
    let before = tree_snapshot(&mnt);
    let run = create(&ws, "big.yaml", "mnt/x.bundle.tar.zst", "cache", &[]);
    run.assert_code(1).assert_stderr_contains("No space left");
    assert_previous_pair_kept(&ws, "mnt", &before, "");
}
