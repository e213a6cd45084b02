//! `lock` and `create` against a real upstream: a private Apache on 127.0.0.1 (never the
//! internet), or a scripted loopback server. Unreachable hosts, HTTP errors, digest
//! mismatches at `create`, resumed and stale partial downloads (Range + If-Range), the
//! download cache, `mirrors`, colliding bundle paths, parallel downloads and stalled
//! transfers (`--timeout`) (SPEC §2, §5, §6).

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::net::*;
use common::*;

/// The `name` of this file's manifests.
const NAME: &str = "net-test";

// ---------------------------------------------------------------------------
// 1. Unreachable upstream
// ---------------------------------------------------------------------------

#[test]
fn unreachable_upstream_gives_up_after_the_retries() {
    let ws = Workspace::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/release/v1/kubeadm");
    ws.write("m.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
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
        locked_manifest(NAME, &[(url.clone(), b"never served".as_slice())]),
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
    ws.write("m.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
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
    ws.write("m.yaml", manifest(NAME, &urls, ""));
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

/// Sets a file's mtime an hour back: Apache sends a weak ETag (useless for If-Range)
/// for a file modified within the last second.
fn age(path: &Path) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// The strong ETag Apache sends for `path` (from a HEAD request).
fn apache_etag(apache: &Apache, path: &str) -> String {
    let head = apache.http_request("HEAD", path, &[]);
    assert_eq!(head.status, 200, "HEAD /{path}: {head:?}");
    let etag = head
        .header("etag")
        .unwrap_or_else(|| panic!("apache sent no ETag for /{path}: {head:?}"))
        .to_string();
    assert!(etag.starts_with('"'), "not a strong ETag: {etag}");
    etag
}

#[test]
fn create_resumes_a_partial_download_with_a_range_request() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(3_000_000, 4);
    let half = data.len() / 2;
    let digest = sha256_bytes(&data);
    age(&ws.write("www/big/image.tar", &data));
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("big/image.tar");
    ws.write("l.yaml", locked_manifest(NAME, &[(url, data.as_slice())]));
    // The cache layout: partial/<expected sha256 hex>.part, and beside it
    // .part.validator with the If-Range value (the ETag of the interrupted response).
    ws.write(format!("cache/partial/{digest}.part"), &data[..half]);
    let etag = apache_etag(&apache, "big/image.tar");
    ws.write(format!("cache/partial/{digest}.part.validator"), &etag);

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
    let left = dir_names(&ws.path("cache/partial"));
    assert!(
        left.is_empty(),
        "leftovers in cache/partial (the .part and its .validator go once the blob is stored): {left:?}"
    );
}

#[test]
fn stale_partial_download_is_refetched_whole_on_the_first_run() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(400_000, 5);
    let half = data.len() / 2;
    let digest = sha256_bytes(&data);
    ws.write("www/f/tool.bin", &data);
    let apache = Apache::start(&ws.path("www"));
    let url = apache.url("f/tool.bin");
    ws.write(
        "l.yaml",
        locked_manifest(NAME, &[(url.clone(), data.as_slice())]),
    );
    // Bytes of some other version, with that version's (bogus) ETag as validator:
    // If-Range does not match, so Apache answers 200 with the whole file.
    let partial = ws.write(format!("cache/partial/{digest}.part"), pattern(half, 6));
    let validator = ws.write(
        format!("cache/partial/{digest}.part.validator"),
        "\"stale\"",
    );

    create(&ws, "l.yaml", "b.bundle.tar.zst", "cache", &[]).assert_ok();
    verify(&ws, "b.bundle.tar.zst").assert_ok();
    let log = apache.wait_access_log(|l| !gets(l, "/f/tool.bin").is_empty());
    let lines = gets(&log, "/f/tool.bin");
    assert_eq!(lines.len(), 1, "one request, on the first run:\n{log}");
    assert!(
        lines[0].contains(&format!("\" 200 {} \"bytes={half}-\"", data.len())),
        "expected a Range request answered 200 with the whole file (If-Range mismatch):\n{log}"
    );
    assert!(
        !partial.exists() && !validator.exists(),
        "the stale partial download was kept"
    );
    assert!(dir_names(&ws.path("cache/partial")).is_empty());
    assert!(ws.path(format!("cache/sha256/{digest}")).exists());
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
    ws.write("m.yaml", manifest(NAME, &urls, ""));
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
    ws.write("m.yaml", manifest(NAME, &canonical, &mirrors));
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
        ws.write(&m, manifest(NAME, &canonical, &mirrors));
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
        ws.write(&m, manifest(NAME, urls, ""));
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
    ws.write("m.yaml", manifest(NAME, &urls, ""));

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
// Retries, resume after an interruption, If-Range and stalls (a scripted loopback
// server: Apache cannot be told to fail or change on cue)
// ---------------------------------------------------------------------------

/// What the scripted server does with the n-th request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// `503 Service Unavailable`.
    Unavailable,
    /// `200` announcing the whole body, but only `n` bytes are sent before the
    /// connection is closed.
    CutAfter(usize),
    /// `200` with the whole body, or `206` with the rest when the request has
    /// `Range: bytes=N-` and its `If-Range` (if any) matches the current validator.
    Serve,
    /// Reads the request, then never answers (the connection stays open until the
    /// server is dropped).
    Silent,
    /// `200` headers announcing the whole body and its first `n` bytes, then nothing
    /// more (the connection stays open until the server is dropped).
    StallAfter(usize),
    /// `206` with `Content-Range: bytes START-END/LEN` and those bytes, whatever the
    /// request asked for (a broken proxy or cache).
    Partial { start: usize, end: usize },
}

/// What the server currently serves: upstream can change between requests.
#[derive(Clone)]
struct Content {
    body: Vec<u8>,
    /// Sent as `ETag` (exactly as given, quotes included) when set.
    etag: Option<String>,
    /// Sent as `Last-Modified` when set.
    last_modified: Option<String>,
}

/// One request as the server saw it, and the status it answered (0: none).
#[derive(Clone, Debug)]
struct Seen {
    line: String,
    range: Option<usize>,
    if_range: Option<String>,
    status: u16,
}

/// A one-file HTTP/1.1 server on 127.0.0.1 that follows a script, one connection per
/// request (served in turn), and records each request. Stopped when dropped.
struct ScriptedServer {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    content: std::sync::Arc<std::sync::Mutex<Content>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Content {
    fn new(body: Vec<u8>, etag: Option<&str>, last_modified: Option<&str>) -> Content {
        Content {
            body,
            etag: etag.map(str::to_string),
            last_modified: last_modified.map(str::to_string),
        }
    }
}

impl ScriptedServer {
    fn start(body: Vec<u8>, script: Vec<Reply>) -> ScriptedServer {
        ScriptedServer::start_with(Content::new(body, None, None), script)
    }

    /// Like [`ScriptedServer::start`], with an `ETag` on every response.
    fn start_with_etag(body: Vec<u8>, etag: &str, script: Vec<Reply>) -> ScriptedServer {
        ScriptedServer::start_with(Content::new(body, Some(etag), None), script)
    }

    fn start_with(content: Content, script: Vec<Reply>) -> ScriptedServer {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let content = std::sync::Arc::new(std::sync::Mutex::new(content));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, current, stopping) = (seen.clone(), content.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Connections a stalling reply keeps open; closed when the server stops.
            let mut held = Vec::new();
            for (n, stream) in listener.incoming().enumerate() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { break };
                let reply = script.get(n).copied().unwrap_or(Reply::Serve);
                let c = current.lock().unwrap().clone();
                if let Some(keep) = serve_one(stream, reply, &c, &log) {
                    held.push(keep);
                }
            }
            drop(held);
        });
        ScriptedServer {
            port,
            seen,
            content,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Each request's first line and Range start: `"GET /x HTTP/1.1 range=Some(5)"`.
    fn requests(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} range={:?}", s.line, s.range))
            .collect()
    }

    /// Each request in full, with the status answered.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Upstream changes: later requests get `body` and `etag`.
    fn set_content(&self, body: Vec<u8>, etag: Option<&str>) {
        let mut c = self.content.lock().unwrap();
        c.body = body;
        c.etag = etag.map(str::to_string);
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            Duration::from_secs(2),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request from `stream` and answers it per `reply`. Returns the stream when
/// the reply leaves the connection open (a stall).
fn serve_one(
    mut stream: TcpStream,
    reply: Reply,
    content: &Content,
    log: &std::sync::Mutex<Vec<Seen>>,
) -> Option<TcpStream> {
    use std::io::{BufRead, BufReader, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    let mut range = None;
    let mut if_range = None;
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
        } else if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|r| r.parse::<usize>().ok());
            } else if k.eq_ignore_ascii_case("if-range") {
                if_range = Some(v.trim().to_string());
            }
        }
    }
    let body = &content.body;
    let mut validators = String::new();
    if let Some(etag) = &content.etag {
        validators.push_str(&format!("ETag: {etag}\r\n"));
    }
    if let Some(lm) = &content.last_modified {
        validators.push_str(&format!("Last-Modified: {lm}\r\n"));
    }
    let full_head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{validators}Connection: close\r\n\r\n",
        body.len()
    );
    // RFC 9110 §13.1.5: the range is served only if If-Range matches the current
    // representation (an entity tag compared strongly, or the exact Last-Modified date).
    let if_range_holds = match &if_range {
        None => true,
        Some(v) if v.starts_with('"') => content.etag.as_deref() == Some(v.as_str()),
        Some(v) => content.last_modified.as_deref() == Some(v.as_str()),
    };
    let (status, result, keep) = match reply {
        Reply::Unavailable => (
            503,
            stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
            false,
        ),
        Reply::CutAfter(cut) => (
            200,
            stream
                .write_all(full_head.as_bytes())
                .and_then(|_| stream.write_all(&body[..cut])),
            false,
        ),
        Reply::Silent => (0, Ok(()), true),
        Reply::StallAfter(cut) => (
            200,
            stream
                .write_all(full_head.as_bytes())
                .and_then(|_| stream.write_all(&body[..cut]))
                .and_then(|_| stream.flush()),
            true,
        ),
        Reply::Partial { start, end } => (
            206,
            stream
                .write_all(
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n{validators}Connection: close\r\n\r\n",
                        end + 1 - start,
                        body.len()
                    )
                    .as_bytes(),
                )
                .and_then(|_| stream.write_all(&body[start..=end])),
            false,
        ),
        Reply::Serve => match range {
            Some(from) if from < body.len() && if_range_holds => (
                206,
                stream
                    .write_all(
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\n{validators}Connection: close\r\n\r\n",
                            body.len() - from,
                            body.len() - 1,
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| stream.write_all(&body[from..])),
                false,
            ),
            _ => (
                200,
                stream
                    .write_all(full_head.as_bytes())
                    .and_then(|_| stream.write_all(body)),
                false,
            ),
        },
    };
    let _ = result;
    log.lock().unwrap().push(Seen {
        line: first,
        range,
        if_range,
        status,
    });
    if keep {
        return Some(stream);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    None
}

#[test]
fn an_interrupted_transfer_is_resumed_on_the_retry() {
    let ws = Workspace::new();
    let data = pattern(500_000, 30);
    let cut = 200_000;
    let server =
        ScriptedServer::start_with_etag(data.clone(), "\"e1\"", vec![Reply::CutAfter(cut)]);
    let url = server.url("files/cut.bin");
    ws.write("m.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
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
    let seen = server.seen();
    assert_eq!(seen[0].if_range, None, "{seen:?}");
    assert_eq!(
        seen[1].if_range.as_deref(),
        Some("\"e1\""),
        "the resumed request must carry If-Range with the ETag of the interrupted response: {seen:?}"
    );
    assert_eq!(seen[1].status, 206, "{seen:?}");
}

/// A resume answered by a `206` that is not exactly the rest of the file (its range starts
/// elsewhere, or ends short of the end) is not spliced onto the partial download: the
/// retry after it fetches the file whole, and the lock pins the whole file.
#[test]
fn a_206_that_is_not_the_rest_of_the_file_is_not_spliced() {
    const LEN: usize = 102_400;
    const CUT: usize = 50_000;
    // As the attack's server: bytes 0..=255 over and over.
    let data: Vec<u8> = (0..LEN).map(|i| i as u8).collect();
    let cases = [
        (
            "wrong start",
            Reply::Partial {
                start: 0,
                end: CUT - 1,
            },
        ),
        (
            "short end",
            Reply::Partial {
                start: CUT,
                end: 59_999,
            },
        ),
    ];
    for (how, wrong) in cases {
        let ws = Workspace::new();
        let script = vec![Reply::CutAfter(CUT), wrong, Reply::Serve];
        // Two attempts: the cut transfer, then the resume that gets the wrong 206.
        let server = ScriptedServer::start_with_etag(data.clone(), "\"v1\"", script.clone());
        let url = server.url("files/half.bin");
        ws.write("m1.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
        lock(
            &ws,
            "m1.yaml",
            "m1.lock.yaml",
            "cache1",
            &["--retries", "1"],
        )
        .assert_code(1)
        .assert_stderr_contains(&url)
        .assert_stderr_contains("not the rest of the file")
        .assert_stderr_contains("gave up after 2 attempts");
        assert!(!ws.path("m1.lock.yaml").exists(), "{how}");

        // Three attempts: the third starts over and gets the whole file.
        let server = ScriptedServer::start_with_etag(data.clone(), "\"v1\"", script);
        let url = server.url("files/half.bin");
        ws.write("m2.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
        let run = lock(
            &ws,
            "m2.yaml",
            "m2.lock.yaml",
            "cache2",
            &["--retries", "2"],
        );
        let seen = server.seen();
        run.assert_ok();
        let files = locked_files(&ws.path("m2.lock.yaml"));
        assert_eq!(
            (files[0].1.as_str(), files[0].2),
            (sha256_bytes(&data).as_str(), LEN as u64),
            "{how}: the lock must pin the whole {LEN}-byte file, not what the 206 spliced in\n{seen:?}\n{run:?}"
        );
        let asked: Vec<(Option<usize>, Option<&str>, u16)> = seen
            .iter()
            .map(|s| (s.range, s.if_range.as_deref(), s.status))
            .collect();
        assert_eq!(
            asked,
            vec![
                (None, None, 200),
                (Some(CUT), Some("\"v1\""), 206),
                (None, None, 200),
            ],
            "{how}: cut, a resume with Range and If-Range answered by the wrong 206, then the \
             whole file from the start\n{run:?}"
        );
    }
}

#[test]
fn server_errors_are_retried_then_reported() {
    let ws = Workspace::new();
    let data = pattern(10_000, 31);
    // One 503, then the file: the retry succeeds.
    let server = ScriptedServer::start(data.clone(), vec![Reply::Unavailable]);
    let url = server.url("flaky.bin");
    ws.write("m.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
    lock(&ws, "m.yaml", "m.lock.yaml", "cache", &["--retries", "1"]).assert_ok();
    assert_eq!(
        locked_files(&ws.path("m.lock.yaml"))[0].1,
        sha256_bytes(&data)
    );
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());

    // Always 503: exit 1 after 1 + retries attempts, naming the URL and the status.
    let server = ScriptedServer::start(data, vec![Reply::Unavailable; 10]);
    let url = server.url("down.bin");
    ws.write("m2.yaml", manifest(NAME, std::slice::from_ref(&url), ""));
    lock(&ws, "m2.yaml", "m2.lock.yaml", "cache", &["--retries", "2"])
        .assert_code(1)
        .assert_stderr_contains(&url)
        .assert_stderr_contains("503")
        .assert_stderr_contains("gave up after 3 attempts");
    assert_eq!(server.requests().len(), 3, "{:?}", server.requests());
    assert!(!ws.path("m2.lock.yaml").exists());
}

// ---------------------------------------------------------------------------
// If-Range: a resume never splices bytes of two upstream versions (SPEC §5)
// ---------------------------------------------------------------------------

/// The cache's interrupted download for `digest` and its validator file (the value to
/// send as If-Range), if present.
fn partial_and_validator(
    ws: &Workspace,
    cache: &str,
    digest: &str,
) -> (Option<Vec<u8>>, Option<String>) {
    (
        fs::read(ws.path(format!("{cache}/partial/{digest}.part"))).ok(),
        fs::read_to_string(ws.path(format!("{cache}/partial/{digest}.part.validator"))).ok(),
    )
}

/// A scripted upstream serving `content` that cuts its first transfer after `half` bytes,
/// and `l.yaml` pinning `pinned` at the server's URL for `path`: (server, URL).
fn cut_upstream(
    ws: &Workspace,
    content: Content,
    half: usize,
    path: &str,
    pinned: &[u8],
) -> (ScriptedServer, String) {
    let server = ScriptedServer::start_with(content, vec![Reply::CutAfter(half)]);
    let url = server.url(path);
    ws.write("l.yaml", locked_manifest(NAME, &[(url.clone(), pinned)]));
    (server, url)
}

/// `create l.yaml -o b.bundle.tar.zst --cache cache --retries 0` (one attempt).
fn create_once(ws: &Workspace) -> Run {
    create(
        ws,
        "l.yaml",
        "b.bundle.tar.zst",
        "cache",
        &["--retries", "0"],
    )
}

#[test]
fn a_resume_after_upstream_changed_fetches_the_new_file_whole() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let v1 = pattern(400_000, 40);
    let v2 = pattern(400_000, 41);
    let half = v1.len() / 2;
    let pinned = sha256_bytes(&v2);
    // Upstream serves v1 (cut after half), while the lock pins v2.
    let (server, url) = cut_upstream(
        &ws,
        Content::new(v1.clone(), Some("\"v1\""), None),
        half,
        "dl/tool.bin",
        &v2,
    );

    let run = create_once(&ws);
    run.assert_code(1).assert_stderr_contains(&url);
    assert!(!ws.path("b.bundle.tar.zst").exists());
    let (part, validator) = partial_and_validator(&ws, "cache", &pinned);
    assert_eq!(
        part.as_deref(),
        Some(&v1[..half]),
        "the interrupted download must be kept at cache/partial/{pinned}.part"
    );

    // Upstream now serves v2 under a new ETag: the resume must not splice v1 + v2.
    server.set_content(v2.clone(), Some("\"v2\""));
    let run = create_once(&ws);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}\n{run:?}");
    assert_eq!(
        (seen[1].range, seen[1].if_range.as_deref()),
        (Some(half), Some("\"v1\"")),
        "the resume must send Range and If-Range with the ETag of the interrupted response \
         (validator file after the first run: {validator:?})\n{run:?}"
    );
    assert_eq!(
        seen[1].status, 200,
        "If-Range did not match: the server sends it whole"
    );
    run.assert_ok();
    assert_eq!(
        validator.as_deref(),
        Some("\"v1\""),
        "cache/partial/{pinned}.part.validator must hold the ETag as received"
    );
    verify(&ws, "b.bundle.tar.zst").assert_ok();
    assert!(ws.path(format!("cache/sha256/{pinned}")).exists());
    let left = dir_names(&ws.path("cache/partial"));
    assert!(left.is_empty(), "leftovers in cache/partial: {left:?}");
}

#[test]
fn a_resume_of_an_unchanged_upstream_gets_only_the_rest() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let v2 = pattern(400_000, 42);
    let half = v2.len() / 2;
    let pinned = sha256_bytes(&v2);
    let (server, url) = cut_upstream(
        &ws,
        Content::new(v2.clone(), Some("\"v2\""), None),
        half,
        "dl/tool.bin",
        &v2,
    );

    create_once(&ws).assert_code(1).assert_stderr_contains(&url);
    let (part, validator) = partial_and_validator(&ws, "cache", &pinned);
    assert_eq!(part.as_deref(), Some(&v2[..half]));
    assert_eq!(
        validator.as_deref(),
        Some("\"v2\""),
        "cache/partial/{pinned}.part.validator must hold the ETag as received"
    );

    let run = create_once(&ws);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}\n{run:?}");
    assert_eq!(
        (seen[1].range, seen[1].if_range.as_deref(), seen[1].status),
        (Some(half), Some("\"v2\""), 206),
        "{run:?}"
    );
    run.assert_ok();
    verify(&ws, "b.bundle.tar.zst").assert_ok();
    assert!(dir_names(&ws.path("cache/partial")).is_empty());
}

#[test]
fn a_resume_uses_last_modified_when_there_is_no_etag() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(300_000, 43);
    let half = data.len() / 2;
    let pinned = sha256_bytes(&data);
    let date = "Tue, 15 Oct 2024 07:28:00 GMT";
    let (server, url) = cut_upstream(
        &ws,
        Content::new(data.clone(), None, Some(date)),
        half,
        "dl/lm.bin",
        &data,
    );
    create_once(&ws).assert_code(1).assert_stderr_contains(&url);
    let (_, validator) = partial_and_validator(&ws, "cache", &pinned);
    assert_eq!(
        validator.as_deref(),
        Some(date),
        "with no ETag, cache/partial/{pinned}.part.validator must hold the Last-Modified as received"
    );
    let run = create_once(&ws);
    let seen = server.seen();
    assert_eq!(
        (seen[1].range, seen[1].if_range.as_deref(), seen[1].status),
        (Some(half), Some(date), 206),
        "{seen:?}\n{run:?}"
    );
    run.assert_ok();
    verify(&ws, "b.bundle.tar.zst").assert_ok();
}

// ---------------------------------------------------------------------------
// Nothing hangs: --timeout (SPEC §5)
// ---------------------------------------------------------------------------

/// A stalled transfer, two ways: no answer at all, and headers plus half the body.
fn stall_scripts(len: usize) -> [(&'static str, Vec<Reply>); 2] {
    [
        ("never answers", vec![Reply::Silent; 4]),
        (
            "stalls after half the body",
            vec![Reply::StallAfter(len / 2); 4],
        ),
    ]
}

#[track_caller]
fn assert_timed_out(what: &str, result: Deadlined, url: &str, server: &ScriptedServer) {
    let Deadlined {
        run,
        elapsed,
        stderr,
    } = result;
    let Some(run) = run else {
        panic!(
            "{what}: still running after {elapsed:?}; killed it (it hangs instead of \
             timing out)\n--- stderr so far ---\n{stderr}"
        );
    };
    run.assert_code(1)
        .assert_stderr_contains(url)
        .assert_stderr_contains("timed out")
        .assert_stderr_contains("gave up after 2 attempts");
    assert!(
        elapsed < Duration::from_secs(20),
        "{what}: took {elapsed:?}"
    );
    assert_eq!(
        server.seen().len(),
        2,
        "{what}: --retries 1 means two attempts: {:?}",
        server.seen()
    );
}

#[test]
fn lock_gives_up_on_a_stalled_server_after_the_timeout() {
    let ws = Workspace::new();
    let data = pattern(200_000, 50);
    for (i, (how, script)) in stall_scripts(data.len()).into_iter().enumerate() {
        let server = ScriptedServer::start_with_etag(data.clone(), "\"s\"", script);
        let url = server.url("stall/tool.bin");
        let m = format!("m{i}.yaml");
        let out = format!("m{i}.lock.yaml");
        ws.write(&m, manifest(NAME, std::slice::from_ref(&url), ""));
        let result = run_bundle_with_deadline(
            ws.root(),
            &[
                "lock",
                &m,
                "-o",
                &out,
                "--cache",
                "cache",
                "--timeout",
                "2",
                "--retries",
                "1",
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
            Duration::from_secs(20),
        );
        assert_timed_out(&format!("lock, server {how}"), result, &url, &server);
        assert!(!ws.path(&out).exists());
    }
}

#[test]
fn create_gives_up_on_a_stalled_server_after_the_timeout() {
    let ws = Workspace::new();
    site_keygen(&ws);
    let data = pattern(200_000, 51);
    ws.mkdir("out");
    for (i, (how, script)) in stall_scripts(data.len()).into_iter().enumerate() {
        let server = ScriptedServer::start_with_etag(data.clone(), "\"s\"", script);
        let url = server.url("stall/tool.bin");
        let l = format!("l{i}.yaml");
        ws.write(&l, locked_manifest(NAME, &[(url.clone(), data.as_slice())]));
        let result = run_bundle_with_deadline(
            ws.root(),
            &[
                "create",
                &l,
                "-o",
                "out/b.bundle.tar.zst",
                "--key",
                "site.key",
                "--cache",
                &format!("cache{i}"),
                "--timeout",
                "2",
                "--retries",
                "1",
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
            Duration::from_secs(20),
        );
        assert_timed_out(&format!("create, server {how}"), result, &url, &server);
        assert!(
            dir_names(&ws.path("out")).is_empty(),
            "{:?}",
            dir_names(&ws.path("out"))
        );
    }
}
