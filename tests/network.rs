//! `lock` and `create` against a real upstream: a private Apache on 127.0.0.1 (never the
//! internet). Unreachable hosts, HTTP errors, digest mismatches at `create`, resumed and
//! stale partial downloads, the download cache, `mirrors`, colliding bundle paths and
//! parallel downloads (SPEC §2, §5, §6).

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;

/// Deterministic incompressible test data (xorshift), different for every `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A loose manifest for `urls`, plus any extra top-level YAML.
fn manifest(urls: &[String], extra: &str) -> String {
    let mut m = String::from("apiVersion: bundle/v1\nname: net-test\nversion: '1.0'\nfiles:\n");
    for u in urls {
        m.push_str(&format!("  - url: '{u}'\n"));
    }
    m.push_str(extra);
    m
}

/// A locked manifest (sha256 and size pinned) for `(url, content)` pairs.
fn locked_manifest(files: &[(String, &[u8])]) -> String {
    let mut m = String::from("apiVersion: bundle/v1\nname: net-test\nversion: '1.0'\nfiles:\n");
    for (u, data) in files {
        m.push_str(&format!(
            "  - url: '{u}'\n    sha256: {}\n    size: {}\n",
            sha256_bytes(data),
            data.len()
        ));
    }
    m
}

/// `bundle keygen` in the workspace: `site.key` / `site.pub`.
fn site_keygen(ws: &Workspace) {
    keygen(&ws.path("site"));
}

fn lock(ws: &Workspace, manifest: &str, out: &str, cache: &str, extra: &[&str]) -> Run {
    let mut args = vec!["lock", manifest, "-o", out, "--cache", cache];
    args.extend_from_slice(extra);
    run_bundle_in(ws.root(), &args, &[])
}

fn create(ws: &Workspace, locked: &str, out: &str, cache: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "create", locked, "-o", out, "--key", "site.key", "--cache", cache,
    ];
    args.extend_from_slice(extra);
    run_bundle_in(ws.root(), &args, &[("SOURCE_DATE_EPOCH", "1700000000")])
}

fn verify(ws: &Workspace, bundle: &str) -> Run {
    run_bundle_in(ws.root(), &["verify", bundle, "--pubkey", "site.pub"], &[])
}

/// `inspect --json` of a bundle, parsed.
fn inspect_json(ws: &Workspace, bundle: &str) -> serde_json::Value {
    let run = run_bundle_in(ws.root(), &["inspect", bundle, "--json"], &[]);
    run.assert_ok();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON: {e}\n{}", run.stdout))
}

/// The `files` entries of a lock file: (url, sha256, size).
fn locked_files(path: &Path) -> Vec<(String, String, u64)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("lock is not YAML: {e}\n{text}"));
    doc["files"]
        .as_sequence()
        .unwrap_or_else(|| panic!("lock has no files:\n{text}"))
        .iter()
        .map(|f| {
            (
                f["url"].as_str().expect("url").to_string(),
                f["sha256"].as_str().expect("sha256 pinned").to_string(),
                f["size"].as_u64().expect("size pinned"),
            )
        })
        .collect()
}

/// Access-log lines for `GET <path>`.
fn gets<'a>(log: &'a str, path: &str) -> Vec<&'a str> {
    let needle = format!("\"GET {path} HTTP/");
    log.lines().filter(|l| l.contains(&needle)).collect()
}

/// Names in a directory (empty if it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

// ---------------------------------------------------------------------------
// 1. Unreachable upstream
// ---------------------------------------------------------------------------

#[test]
fn unreachable_upstream_gives_up_after_the_retries() {
    let ws = Workspace::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/release/v1/kubeadm");
    ws.write("m.yaml", manifest(std::slice::from_ref(&url), ""));
    let run = lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--retries", "1"]);
    run.assert_code(1)
        .assert_stderr_contains("error: ")
        .assert_stderr_contains(&url)
        .assert_stderr_contains("gave up after 2 attempts");
    assert!(!ws.path("m.lock.yaml").exists(), "a failed lock wrote -o");

    // The same at `create`, from a locked manifest: exit 1, nothing written.
    site_keygen(&ws);
    ws.write(
        "l.yaml",
        locked_manifest(&[(url.clone(), b"never served".as_slice())]),
    );
    ws.mkdir("out");
    let run = create(
        &ws,
        "l.yaml",
        "out/b.bundle.tar.zst",
        "cache",
        &["--retries", "1"],
    );
    run.assert_code(1)
        .assert_stderr_contains(&url)
        .assert_stderr_contains("gave up after 2 attempts");
    assert!(
        dir_names(&ws.path("out")).is_empty(),
        "{:?}",
        dir_names(&ws.path("out"))
    );
}

// ---------------------------------------------------------------------------
// 2. HTTP 404
// ---------------------------------------------------------------------------

#[test]
fn http_404_names_the_url_and_the_status() {
    let ws = Workspace::new();
    ws.write("www/present.bin", b"here");
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("releases/v9/absent.tar.gz");
    ws.write("m.yaml", manifest(std::slice::from_ref(&url), ""));
    let run = lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--retries", "1"]);
    run.assert_code(1)
        .assert_stderr_contains("error: ")
        .assert_stderr_contains(&url)
        .assert_stderr_contains("404");
    assert!(!ws.path("m.lock.yaml").exists(), "a failed lock wrote -o");
    apache.wait_access_log(|l| l.contains("\"GET /releases/v9/absent.tar.gz HTTP/1.1\" 404"));
}

// ---------------------------------------------------------------------------
// 3. sha256 mismatch at create
// ---------------------------------------------------------------------------

#[test]
fn upstream_change_after_lock_is_a_verification_failure_at_create() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let original = pattern(200_000, 1);
    ws.write("www/dl/tool.bin", &original);
    ws.write("www/dl/other.bin", pattern(50_000, 2));
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("dl/tool.bin");
    let urls = [url.clone(), apache.url("dl/other.bin")];
    ws.write("m.yaml", manifest(&urls, ""));
    lock(&ws, "m.yaml", "m.lock.yaml", "cache-lock", &[]).assert_ok();
    let pinned = sha256_bytes(&original);
    assert_eq!(locked_files(&ws.path("m.lock.yaml"))[0].1, pinned);

    // Upstream replaces the file with different bytes of the same size.
    let changed = pattern(200_000, 3);
    let actual = sha256_bytes(&changed);
    ws.write("www/dl/tool.bin", &changed);

    ws.mkdir("out");
    let run = create(&ws, "m.lock.yaml", "out/k8s.bundle.tar.zst", "cache", &[]);
    run.assert_code(3)
        .assert_stderr_contains("error: ")
        .assert_stderr_contains(&url)
        .assert_stderr_contains(&pinned)
        .assert_stderr_contains(&actual);

    assert!(!ws.path("out/k8s.bundle.tar.zst").exists(), "-o written");
    let left = dir_names(&ws.path("out"));
    assert!(
        left.iter().all(|n| !n.ends_with(".partial")),
        "temporary file left in the output directory: {left:?}"
    );
    assert!(
        left.is_empty(),
        "files left in the output directory: {left:?}"
    );
    let partial = ws.path(format!("cache/partial/{pinned}.part"));
    assert!(!partial.exists(), "partial download of the bad file kept");
    let partials = dir_names(&ws.path("cache/partial"));
    assert!(
        partials.is_empty(),
        "leftovers in cache/partial: {partials:?}"
    );
    assert!(
        !ws.path(format!("cache/sha256/{actual}")).exists()
            && !ws.path(format!("cache/sha256/{pinned}")).exists(),
        "the mismatching download was stored in the cache"
    );
}

// ---------------------------------------------------------------------------
// 4. Resume and stale partial downloads
// ---------------------------------------------------------------------------

#[test]
fn create_resumes_a_partial_download_with_a_range_request() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(3_000_000, 4);
    let half = data.len() / 2;
    let digest = sha256_bytes(&data);
    ws.write("www/big/image.tar", &data);
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("big/image.tar");
    ws.write("l.yaml", locked_manifest(&[(url, data.as_slice())]));
    // The cache layout of src/fetch/cache.rs: partial/<expected sha256 hex>.part.
    ws.write(format!("cache/partial/{digest}.part"), &data[..half]);

    create(&ws, "l.yaml", "b.bundle.tar.zst", "cache", &[]).assert_ok();

    let range = format!("\"bytes={half}-\"");
    let log = apache.wait_access_log(|l| l.contains(&range));
    let lines = gets(&log, "/big/image.tar");
    assert_eq!(lines.len(), 1, "expected one resumed request:\n{log}");
    assert!(
        lines[0].contains(&format!("206 {} {range}", data.len() - half)),
        "the resumed request was not answered 206 with the rest of the file:\n{log}"
    );
    verify(&ws, "b.bundle.tar.zst").assert_ok();
    assert!(ws.path(format!("cache/sha256/{digest}")).exists());
    assert!(dir_names(&ws.path("cache/partial")).is_empty());
}

#[test]
fn stale_partial_download_fails_once_and_is_discarded() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(400_000, 5);
    let half = data.len() / 2;
    let digest = sha256_bytes(&data);
    ws.write("www/f/tool.bin", &data);
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("f/tool.bin");
    ws.write("l.yaml", locked_manifest(&[(url.clone(), data.as_slice())]));
    let partial = ws.write(format!("cache/partial/{digest}.part"), pattern(half, 6));

    let run = create(&ws, "l.yaml", "b.bundle.tar.zst", "cache", &[]);
    run.assert_code(3)
        .assert_stderr_contains(&url)
        .assert_stderr_contains(&digest);
    assert!(!ws.path("b.bundle.tar.zst").exists());
    assert!(!partial.exists(), "the stale partial download was kept");

    create(&ws, "l.yaml", "b.bundle.tar.zst", "cache", &[]).assert_ok();
    verify(&ws, "b.bundle.tar.zst").assert_ok();
    let log = apache.wait_access_log(|l| l.contains("\"GET /f/tool.bin HTTP/1.1\" 200"));
    assert_eq!(gets(&log, "/f/tool.bin").len(), 2, "{log}");
}

// ---------------------------------------------------------------------------
// 5. The download cache
// ---------------------------------------------------------------------------

#[test]
fn second_create_works_offline_from_the_cache_and_is_byte_identical() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let a = pattern(300_000, 7);
    let b = b"#!/bin/sh\necho hello\n".repeat(1000);
    ws.write("www/a.bin", &a);
    ws.write("www/dir/b.sh", &b);
    let apache = Apache::start(&ws.path("www"));
    let port = apache.port;
    let urls = [apache.url("a.bin"), apache.url("dir/b.sh")];
    ws.write("m.yaml", manifest(&urls, ""));
    lock(&ws, "m.yaml", "m.lock.yaml", "cache-lock", &[]).assert_ok();

    ws.mkdir("out1");
    ws.mkdir("out2");
    create(&ws, "m.lock.yaml", "out1/k.bundle.tar.zst", "cache", &[]).assert_ok();
    let log = apache.wait_access_log(|l| gets(l, "/dir/b.sh").len() == 2);
    assert_eq!(
        gets(&log, "/a.bin").len(),
        2,
        "lock and create each fetch once:\n{log}"
    );

    drop(apache);
    assert!(!port_accepts(port), "apache still answers");

    create(&ws, "m.lock.yaml", "out2/k.bundle.tar.zst", "cache", &[]).assert_ok();
    assert_eq!(
        sha256_file(ws.path("out1/k.bundle.tar.zst")),
        sha256_file(ws.path("out2/k.bundle.tar.zst")),
        "same lock, key, cache and SOURCE_DATE_EPOCH must give the same bundle"
    );
    assert_eq!(
        fs::read(ws.path("out1/k.bundle.tar.zst.minisig")).unwrap(),
        fs::read(ws.path("out2/k.bundle.tar.zst.minisig")).unwrap()
    );
    verify(&ws, "out2/k.bundle.tar.zst").assert_ok();
}

// ---------------------------------------------------------------------------
// 6. Mirrors
// ---------------------------------------------------------------------------

#[test]
fn mirror_is_used_for_fetching_but_the_canonical_url_is_recorded() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let kubeadm = pattern(120_000, 8);
    let kubectl = pattern(90_000, 9);
    let rel = "release/v1.31.4/bin/linux/amd64";
    ws.write(format!("www/mirror/dl.k8s.io/{rel}/kubeadm"), &kubeadm);
    ws.write(format!("www/mirror/dl.k8s.io/{rel}/kubectl"), &kubectl);
    let apache = Apache::start(&ws.path("www"));
    let canonical = [
        format!("https://dl.k8s.io/{rel}/kubeadm"),
        format!("https://dl.k8s.io/{rel}/kubectl"),
    ];
    let mirrors = format!(
        "mirrors:\n  - prefix: 'https://dl.k8s.io/'\n    url: '{}'\n",
        apache.url("mirror/dl.k8s.io/")
    );
    ws.write("m.yaml", manifest(&canonical, &mirrors));
    lock(&ws, "m.yaml", "m.lock.yaml", "cache-lock", &[]).assert_ok();

    let files = locked_files(&ws.path("m.lock.yaml"));
    assert_eq!(
        files,
        vec![
            (
                canonical[0].clone(),
                sha256_bytes(&kubeadm),
                kubeadm.len() as u64
            ),
            (
                canonical[1].clone(),
                sha256_bytes(&kubectl),
                kubectl.len() as u64
            ),
        ]
    );
    let log = apache
        .wait_access_log(|l| !gets(l, &format!("/mirror/dl.k8s.io/{rel}/kubectl")).is_empty());
    assert_eq!(
        gets(&log, &format!("/mirror/dl.k8s.io/{rel}/kubeadm")).len(),
        1,
        "{log}"
    );

    create(&ws, "m.lock.yaml", "k.bundle.tar.zst", "cache", &[]).assert_ok();
    verify(&ws, "k.bundle.tar.zst").assert_ok();
    let report = inspect_json(&ws, "k.bundle.tar.zst");
    let artifacts = report["artifacts"].as_array().expect("artifacts");
    assert_eq!(artifacts.len(), 2, "{report:#}");
    for (a, url) in artifacts.iter().zip(&canonical) {
        let dest = format!("files/{}", url.trim_start_matches("https://"));
        assert_eq!(a["source"], url.as_str(), "{report:#}");
        assert_eq!(a["dest"], dest.as_str(), "{report:#}");
        assert_eq!(a["entries"], serde_json::json!([dest]), "{report:#}");
    }
    assert!(
        !report.to_string().contains("127.0.0.1"),
        "the mirror leaked into the bundle's artifacts: {report:#}"
    );

    // A mirror serving different bytes than the lock pins: exit 3, and the error names
    // the canonical URL (the artifact the operator knows), not just the mirror.
    ws.write(
        format!("www/mirror/dl.k8s.io/{rel}/kubectl"),
        pattern(90_000, 10),
    );
    ws.mkdir("out");
    let run = create(
        &ws,
        "m.lock.yaml",
        "out/bad.bundle.tar.zst",
        "cache-fresh",
        &[],
    );
    run.assert_code(3)
        .assert_stderr_contains(&canonical[1])
        .assert_stderr_contains(&sha256_bytes(&kubectl));
    assert!(dir_names(&ws.path("out")).is_empty());
}

#[test]
fn the_longest_matching_mirror_prefix_wins() {
    let ws = Workspace::new();
    let long = pattern(40_000, 11);
    let short = pattern(40_000, 12);
    let other = pattern(30_000, 13);
    // The same file under both mirrors with different bytes: the digest in the lock
    // tells which mirror was used.
    ws.write("www/long/bin/kubeadm", &long);
    ws.write("www/short/release/v1.31.4/bin/kubeadm", &short);
    ws.write("www/short/other/tool", &other);
    let apache = Apache::start(&ws.path("www"));
    let canonical = [
        "https://dl.k8s.io/release/v1.31.4/bin/kubeadm".to_string(),
        "https://dl.k8s.io/other/tool".to_string(),
    ];
    let short_entry = format!(
        "  - {{prefix: 'https://dl.k8s.io/', url: '{}'}}\n",
        apache.url("short/")
    );
    let long_entry = format!(
        "  - {{prefix: 'https://dl.k8s.io/release/v1.31.4/', url: '{}'}}\n",
        apache.url("long/")
    );
    // Both orders: the longest prefix wins, not the first or the last entry.
    for (i, order) in [[&short_entry, &long_entry], [&long_entry, &short_entry]]
        .iter()
        .enumerate()
    {
        let mirrors = format!("mirrors:\n{}{}", order[0], order[1]);
        let m = format!("m{i}.yaml");
        let out = format!("m{i}.lock.yaml");
        ws.write(&m, manifest(&canonical, &mirrors));
        lock(&ws, &m, &out, &format!("cache{i}"), &[]).assert_ok();
        let files = locked_files(&ws.path(&out));
        assert_eq!(files[0].0, canonical[0]);
        assert_eq!(
            files[0].1,
            sha256_bytes(&long),
            "order {i}: kubeadm was not fetched through the longer prefix"
        );
        assert_eq!(files[1].0, canonical[1]);
        assert_eq!(files[1].1, sha256_bytes(&other));
    }
    let log = apache.wait_access_log(|l| gets(l, "/short/other/tool").len() == 2);
    assert_eq!(gets(&log, "/long/bin/kubeadm").len(), 2, "{log}");
    assert!(
        gets(&log, "/short/release/v1.31.4/bin/kubeadm").is_empty(),
        "the shorter prefix was used:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 7. Two URLs, one bundle path
// ---------------------------------------------------------------------------

#[test]
fn two_urls_mapping_to_the_same_bundle_path_are_rejected_at_lock() {
    let ws = Workspace::new();
    ws.write("www/f/a.bin", b"aaaa");
    let apache = Apache::start(&ws.path("www"));
    let cases = [
        // Differing only by the query string (not part of the path, SPEC §6).
        [
            apache.url("f/a.bin?arch=amd64"),
            apache.url("f/a.bin?arch=arm64"),
        ],
        // Differing only by percent-encoding.
        [apache.url("f/a.bin"), apache.url("f/%61.bin")],
    ];
    for (i, urls) in cases.iter().enumerate() {
        let m = format!("m{i}.yaml");
        let out = format!("m{i}.lock.yaml");
        ws.write(&m, manifest(urls, ""));
        let run = lock(&ws, &m, &out, "cache", &[]);
        run.assert_code(2)
            .assert_stderr_contains("error: ")
            .assert_stderr_contains(&urls[0])
            .assert_stderr_contains(&urls[1])
            .assert_stderr_contains(&format!("files/127.0.0.1:{}/f/a.bin", apache.port));
        assert!(!ws.path(&out).exists());
    }
    // Rejected before anything was downloaded.
    assert!(
        gets(&apache.access_log(), "/f/a.bin").is_empty(),
        "{}",
        apache.access_log()
    );
}

// ---------------------------------------------------------------------------
// 8. Parallel downloads
// ---------------------------------------------------------------------------

#[test]
fn parallel_downloads_fetch_every_file_exactly_once() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let contents: Vec<Vec<u8>> = (0..6)
        .map(|i| pattern(150_000 + i * 1000, 20 + i as u64))
        .collect();
    for (i, c) in contents.iter().enumerate() {
        ws.write(format!("www/p/file{i}.bin"), c);
    }
    let apache = Apache::start(&ws.path("www"));
    let urls: Vec<String> = (0..6)
        .map(|i| apache.url(&format!("p/file{i}.bin")))
        .collect();
    ws.write("m.yaml", manifest(&urls, ""));

    lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--jobs", "3"]).assert_ok();
    let files = locked_files(&ws.path("m.lock.yaml"));
    for (i, (url, sha, size)) in files.iter().enumerate() {
        assert_eq!(url, &urls[i], "lock must keep the manifest's order");
        assert_eq!(sha, &sha256_bytes(&contents[i]));
        assert_eq!(*size, contents[i].len() as u64);
    }
    let all_once = |l: &str| (0..6).all(|i| gets(l, &format!("/p/file{i}.bin")).len() == 1);
    apache.wait_access_log(all_once);

    // create from the same cache: nothing is fetched again.
    create(
        &ws,
        "m.lock.yaml",
        "p.bundle.tar.zst",
        "cache",
        &["--jobs", "3"],
    )
    .assert_ok();
    verify(&ws, "p.bundle.tar.zst").assert_ok();

    // create from an empty cache: each file fetched once more, in parallel.
    create(
        &ws,
        "m.lock.yaml",
        "q.bundle.tar.zst",
        "cache2",
        &["--jobs", "3"],
    )
    .assert_ok();
    let log =
        apache.wait_access_log(|l| (0..6).all(|i| gets(l, &format!("/p/file{i}.bin")).len() >= 2));
    for i in 0..6 {
        let lines = gets(&log, &format!("/p/file{i}.bin"));
        assert_eq!(
            lines.len(),
            2,
            "file{i} fetched more than once per run:\n{log}"
        );
        assert!(lines.iter().all(|l| l.contains("\" 200 ")), "{log}");
    }
    assert_eq!(
        sha256_file(ws.path("p.bundle.tar.zst")),
        sha256_file(ws.path("q.bundle.tar.zst"))
    );
}

// ---------------------------------------------------------------------------
// Retries and resume after an interruption (a scripted loopback server: Apache
// cannot be told to fail on cue)
// ---------------------------------------------------------------------------

/// What the scripted server does with the n-th request.
#[derive(Clone, Copy)]
enum Reply {
    /// `503 Service Unavailable`.
    Unavailable,
    /// `200` announcing the whole body, but only `n` bytes are sent before the
    /// connection is closed.
    CutAfter(usize),
    /// `200` with the whole body, or `206` when the request has `Range: bytes=N-`.
    Serve,
}

/// A one-file HTTP/1.1 server on 127.0.0.1 that follows a script, one connection per
/// request, and records each request's first line and Range header.
struct ScriptedServer {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ScriptedServer {
    fn start(body: Vec<u8>, script: Vec<Reply>) -> ScriptedServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                let mut range = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if first.is_empty() {
                        first = line.trim().to_string();
                    } else if line.trim().is_empty() {
                        break;
                    } else if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("range")
                    {
                        range = v
                            .trim()
                            .strip_prefix("bytes=")
                            .and_then(|r| r.strip_suffix('-'))
                            .and_then(|r| r.parse::<usize>().ok());
                    }
                }
                log.lock().unwrap().push(format!("{first} range={range:?}"));
                let reply = script.get(n).copied().unwrap_or(Reply::Serve);
                let _ = match reply {
                    Reply::Unavailable => stream.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                    Reply::CutAfter(cut) => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| stream.write_all(&body[..cut])),
                    Reply::Serve => match range {
                        Some(from) if from < body.len() => stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                                    body.len() - from,
                                    body.len() - 1,
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|_| stream.write_all(&body[from..])),
                        _ => stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|_| stream.write_all(&body)),
                    },
                };
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        ScriptedServer { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

#[test]
fn an_interrupted_transfer_is_resumed_on_the_retry() {
    let ws = Workspace::new();
    let data = pattern(500_000, 30);
    let cut = 200_000;
    let server = ScriptedServer::start(data.clone(), vec![Reply::CutAfter(cut)]);
    let url = server.url("files/cut.bin");
    ws.write("m.yaml", manifest(std::slice::from_ref(&url), ""));
    lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--retries", "2"]).assert_ok();
    let files = locked_files(&ws.path("m.lock.yaml"));
    assert_eq!(files[0].1, sha256_bytes(&data));
    assert_eq!(files[0].2, data.len() as u64);
    let requests = server.requests();
    assert_eq!(
        requests,
        vec![
            "GET /files/cut.bin HTTP/1.1 range=None".to_string(),
            format!("GET /files/cut.bin HTTP/1.1 range=Some({cut})"),
        ],
        "the retry must resume where the interrupted transfer stopped"
    );
}

#[test]
fn server_errors_are_retried_then_reported() {
    let ws = Workspace::new();
    let data = pattern(10_000, 31);
    // One 503, then the file: the retry succeeds.
    let server = ScriptedServer::start(data.clone(), vec![Reply::Unavailable]);
    let url = server.url("flaky.bin");
    ws.write("m.yaml", manifest(std::slice::from_ref(&url), ""));
    lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--retries", "1"]).assert_ok();
    assert_eq!(
        locked_files(&ws.path("m.lock.yaml"))[0].1,
        sha256_bytes(&data)
    );
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());

    // Always 503: exit 1 after 1 + retries attempts, naming the URL and the status.
    let server = ScriptedServer::start(data, vec![Reply::Unavailable; 10]);
    let url = server.url("down.bin");
    ws.write("m2.yaml", manifest(std::slice::from_ref(&url), ""));
    lock(&ws, "m2.yaml", "m2.lock.yaml", "cache", &["--retries", "2"])
        .assert_code(1)
        .assert_stderr_contains(&url)
        .assert_stderr_contains("503")
        .assert_stderr_contains("gave up after 3 attempts");
    assert_eq!(server.requests().len(), 3, "{:?}", server.requests());
    assert!(!ws.path("m2.lock.yaml").exists());
}
