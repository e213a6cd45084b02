//! Proves the shared test harness (tests/common) works against the real
//! components: a private Apache, the raw HTTP client, tree snapshots.

mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::*;

/// Deterministic binary test data that includes CR, LF and NUL bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match i % 97 {
                0 => b'\r',
                1 => b'\n',
                2 => 0,
                _ => x as u8,
            }
        })
        .collect()
}

#[test]
fn apache_serves_exact_bytes() {
    let ws = Workspace::new();
    let data = pattern(300_000);
    ws.write("pub/dir/blob.bin", &data);
    ws.write("pub/small.txt", b"hello\r\n\r\nworld");
    let apache = Apache::start(&ws.path("pub"));

    assert_eq!(
        apache.url("dir/blob.bin"),
        format!("http://127.0.0.1:{}/dir/blob.bin", apache.port)
    );
    assert_eq!(apache.url("/x"), apache.url("x"));

    let (status, body) = apache.http_get("dir/blob.bin");
    assert_eq!(status, 200);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "served bytes differ from the file");
    assert_eq!(
        sha256_bytes(&body),
        sha256_file(ws.path("pub/dir/blob.bin"))
    );

    // A body containing the header separator must come back intact.
    let (status, body) = apache.http_get("/small.txt");
    assert_eq!(status, 200);
    assert_eq!(body, b"hello\r\n\r\nworld");

    let r = apache.http_request("HEAD", "dir/blob.bin", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Content-Length"), Some("300000"));

    // Directory listing (mod_autoindex) works.
    let (status, body) = apache.http_get("dir/");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("blob.bin"));

    let log = apache.wait_access_log(|l| l.contains("\"HEAD /dir/blob.bin HTTP/1.0\" 200"));
    assert!(
        log.contains("\"GET /dir/blob.bin HTTP/1.0\" 200 300000 \"-\""),
        "{log}"
    );
}

#[test]
fn apache_missing_file_is_404() {
    let ws = Workspace::new();
    ws.write("present.txt", b"x");
    let apache = Apache::start(ws.root());
    let (status, _) = apache.http_get("absent.txt");
    assert_eq!(status, 404);
    let (status, _) = apache.http_get("no/such/dir/file");
    assert_eq!(status, 404);
    apache.wait_access_log(|l| l.contains("\"GET /absent.txt HTTP/1.0\" 404"));
}

#[test]
fn apache_honours_range_requests() {
    let ws = Workspace::new();
    let data = pattern(10_000);
    ws.write("f.bin", &data);
    let apache = Apache::start(ws.root());

    let (status, body) = apache.http_get_range("f.bin", 5);
    assert_eq!(status, 206);
    assert_eq!(body, &data[5..]);

    let (status, body) = apache.http_get_range("f.bin", 9_999);
    assert_eq!(status, 206);
    assert_eq!(body, &data[9_999..]);

    let r = apache.http_request("GET", "f.bin", &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-9999/10000"));

    // Past the end: not satisfiable.
    let (status, _) = apache.http_get_range("f.bin", 10_000);
    assert_eq!(status, 416);

    let log = apache.wait_access_log(|l| l.contains("416"));
    assert!(
        log.contains("\"GET /f.bin HTTP/1.0\" 206 9995 \"bytes=5-\""),
        "{log}"
    );
}

#[test]
fn apache_is_gone_after_drop() {
    let ws = Workspace::new();
    ws.write("a", b"a");
    let apache = Apache::start(ws.root());
    let port = apache.port;
    let pid = apache.pid();
    let conf_dir = apache.dir().to_path_buf();
    assert!(port_accepts(port));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        fs::read_to_string(conf_dir.join("apache2.pid"))
            .unwrap()
            .trim(),
        pid.to_string(),
        "the pid file must name the process we started"
    );
    drop(apache);
    assert!(!port_accepts(port), "port {port} still accepts after drop");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "apache pid {pid} still exists after drop"
    );
    assert!(!conf_dir.exists(), "apache temp dir not removed");
}

#[test]
fn two_apaches_run_side_by_side() {
    let ws1 = Workspace::new();
    let ws2 = Workspace::new();
    ws1.write("which", b"one");
    ws2.write("which", b"two");
    let a1 = Apache::start(ws1.root());
    let a2 = Apache::start(ws2.root());
    assert_ne!(a1.port, a2.port);
    assert_eq!(a1.http_get("which"), (200, b"one".to_vec()));
    assert_eq!(a2.http_get("which"), (200, b"two".to_vec()));
    drop(a1);
    assert_eq!(a2.http_get("which"), (200, b"two".to_vec()));
}

#[test]
fn apache_sees_files_changed_after_start() {
    // EnableSendfile/EnableMMAP off: rewriting a served file is safe.
    let ws = Workspace::new();
    ws.write("f", b"first version");
    let apache = Apache::start(ws.root());
    assert_eq!(apache.http_get("f").1, b"first version");
    ws.write("f", b"second, longer version");
    assert_eq!(apache.http_get("f").1, b"second, longer version");
    ws.write("new/late.txt", b"late");
    assert_eq!(apache.http_get("new/late.txt"), (200, b"late".to_vec()));
}

#[test]
fn workspace_is_world_readable() {
    let ws = Workspace::new();
    let mode = fs::metadata(ws.root()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    assert_eq!(ws.path("a/b"), ws.root().join("a/b"));
    let p = ws.write("deep/er/file", b"z");
    assert_eq!(fs::read(&p).unwrap(), b"z");
    let root = ws.root().to_path_buf();
    drop(ws);
    assert!(!root.exists());
}

#[test]
fn tree_snapshot_detects_changes() {
    let ws = Workspace::new();
    ws.write("t/a.txt", b"alpha");
    ws.write("t/sub/b.bin", pattern(5000));
    ws.mkdir("t/empty");
    symlink("a.txt", ws.path("t/link")).unwrap();
    let t = ws.path("t");

    let before = tree_snapshot(&t);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a.txt", "empty", "link", "sub", "sub/b.bin"]
    );
    assert_eq!(before["empty"], "dir");
    assert_eq!(before["sub"], "dir");
    assert_eq!(before["link"], "link -> a.txt");
    assert_eq!(
        before["a.txt"],
        format!("{} 644", sha256_bytes(b"alpha")),
        "files are sha256 + octal mode"
    );
    assert_eq!(tree_snapshot(&t), before, "snapshot is deterministic");

    // One byte changed, same length.
    let mut data = pattern(5000);
    data[4321] ^= 1;
    ws.write("t/sub/b.bin", &data);
    let after = tree_snapshot(&t);
    assert_ne!(after, before);
    assert_ne!(after["sub/b.bin"], before["sub/b.bin"]);
    ws.write("t/sub/b.bin", pattern(5000));
    assert_eq!(tree_snapshot(&t), before, "restored tree compares equal");

    // A new file, even an empty one.
    ws.write("t/empty/new", b"");
    let after = tree_snapshot(&t);
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.contains_key("empty/new"));
    fs::remove_file(ws.path("t/empty/new")).unwrap();
    assert_eq!(tree_snapshot(&t), before);

    // A mode change.
    fs::set_permissions(ws.path("t/a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(tree_snapshot(&t), before);
    fs::set_permissions(ws.path("t/a.txt"), fs::Permissions::from_mode(0o644)).unwrap();

    // A retargeted symlink.
    fs::remove_file(ws.path("t/link")).unwrap();
    symlink("sub/b.bin", ws.path("t/link")).unwrap();
    assert_ne!(tree_snapshot(&t), before);
}

#[test]
fn sha256_file_matches_known_vectors() {
    let ws = Workspace::new();
    let empty = ws.write("empty", b"");
    assert_eq!(
        sha256_file(&empty),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let abc = ws.write("abc", b"abc");
    assert_eq!(
        sha256_file(&abc),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Larger than the read buffer.
    let big = pattern(1_000_000);
    let p = ws.write("big", &big);
    assert_eq!(sha256_file(&p), sha256_bytes(&big));
}

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("rebind free port");
}

#[test]
fn real_tools_are_installed() {
    for tool in ["/usr/sbin/apache2", "minisign", "zstd", "tar"] {
        require_tool(tool);
    }
}

#[test]
#[should_panic(expected = "missing no-such-tool-airgap: run scripts/setup-test-env.sh")]
fn require_tool_fails_loudly() {
    require_tool("no-such-tool-airgap");
}

#[test]
fn run_bundle_runs_the_binary() {
    // Only what any version of the CLI must satisfy: `--help` succeeds and
    // nothing dies by a signal (run_bundle panics on that).
    let ws = Workspace::new();
    run_bundle(&["--help"], &[]).assert_ok();
    // Paths and strings mix through OsStr; run in a chosen directory.
    let args: [&std::ffi::OsStr; 2] = ["--help".as_ref(), ws.root().as_os_str()];
    let r = run_bundle_in(ws.root(), &args, &[("RUST_BACKTRACE", "0")]);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

fn fake_run(code: i32, stderr: &str) -> Run {
    Run {
        code,
        stdout: String::new(),
        stderr: stderr.to_string(),
    }
}

#[test]
fn run_assertions_accept_expected_outcomes() {
    fake_run(0, "").assert_ok();
    fake_run(3, "error: nope")
        .assert_code(3)
        .assert_stderr_contains("nope");
}

#[test]
#[should_panic(expected = "bundle panicked")]
fn assert_ok_rejects_panics() {
    fake_run(0, "thread 'main' panicked at src/main.rs:1:1").assert_ok();
}

#[test]
#[should_panic(expected = "bundle panicked")]
fn assert_code_rejects_panics() {
    fake_run(101, "note: run with `RUST_BACKTRACE=1`").assert_code(101);
}

#[test]
#[should_panic(expected = "expected exit code 0")]
fn assert_ok_rejects_failure() {
    fake_run(1, "error").assert_ok();
}

#[test]
#[should_panic(expected = "stderr does not contain")]
fn assert_stderr_contains_rejects_missing() {
    fake_run(1, "error: something else").assert_stderr_contains("checksum");
}
