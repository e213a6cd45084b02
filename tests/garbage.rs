//! Garbage in, clean errors out (SPEC §3, §5): empty and random files, truncated and
//! byte-changed bundles, garbage keys and manifests. Every case must end in an `error:`
//! line and the documented exit code — never a panic, a backtrace or a hang. The binary is
//! used for the representative cases; the many variants of the property tests call the
//! library directly (`read_verified`, `inspect`) for speed.
//!
//! One allowance, from SPEC §6: a bundle whose compressed bytes changed but whose
//! decompressed tar stream is byte-identical (the "decompressed and recompressed" case)
//! stays valid, so a mutation that only touches zstd framing without changing a single
//! decompressed byte may verify. Any mutation that changes content, the seek table or
//! what follows it must fail with exit 3.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Duration;

use airgap_bundle::bundle::reader::{DiscardSink, ReadOptions, read_verified};
use airgap_bundle::bundle::signing::PublicKey;
use airgap_bundle::bundle::volumes::BundleSource;
use base64::Engine as _;
use common::*;

// ---------------------------------------------------------------------------
// A valid bundle, made without a network
// ---------------------------------------------------------------------------

/// A workspace with `site.key`/`site.pub` and a valid `good.bundle.tar.zst`, created from
/// a locked manifest whose files are pre-seeded in the download cache (`sha256/<hex>`,
/// src/fetch/cache.rs), so `create` never touches the (unreachable) URLs.
struct Fixture {
    ws: Workspace,
    bundle: Vec<u8>,
    /// Where the seek table (the trailing skippable frame) starts.
    table_start: usize,
    /// The decompressed tar stream of the bundle.
    tar: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let ws = Workspace::new();
        keygen(&ws.path("site"));
        let mut rng = Rng::new(7);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("dl/random.bin", rng.bytes(150_000)),
            (
                "dl/readme.txt",
                b"kubeadm init --config kubeadm.yaml\n".repeat(400),
            ),
            // Over one 4 MiB frame of tar bytes: the bundle has a multi-frame entry.
            ("dl/big.img", b"0123456789abcdef".repeat(300_000)),
        ];
        let port = free_port();
        let mut manifest =
            String::from("apiVersion: bundle/v1\nname: garbage\nversion: '1'\nfiles:\n");
        for (path, data) in &files {
            let digest = sha256_bytes(data);
            ws.write(format!("cache/sha256/{digest}"), data);
            manifest.push_str(&format!(
                "  - url: http://127.0.0.1:{port}/{path}\n    sha256: {digest}\n    size: {}\n",
                data.len()
            ));
        }
        ws.write("locked.yaml", manifest);
        common::net::create(
            &ws,
            "locked.yaml",
            "good.bundle.tar.zst",
            "cache",
            &["--retries", "0"],
        )
        .assert_ok();
        let bundle = std::fs::read(ws.path("good.bundle.tar.zst")).unwrap();
        verify_bin(&ws, "good.bundle.tar.zst").assert_ok();
        let table_start = seek_table_start(&bundle).expect("a fresh bundle has a seek table");
        let tar = zstd::stream::decode_all(&bundle[..]).expect("stock zstd decodes the bundle");
        Fixture {
            ws,
            bundle,
            table_start,
            tar,
        }
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        self.ws.write(name, bytes)
    }

    fn pubkey(&self) -> PublicKey {
        PublicKey::load(&self.ws.path("site.pub")).expect("load site.pub")
    }

    /// May a variant that verified be accepted? Only when no decompressed byte changed
    /// and the seek table is the original one, or was stripped whole (SPEC §3, §6).
    fn is_content_neutral(&self, variant: &[u8]) -> bool {
        let table = &self.bundle[self.table_start..];
        let stripped = variant == &self.bundle[..self.table_start];
        let table_intact = variant.len() >= table.len() && variant.ends_with(table);
        (stripped || table_intact)
            && zstd::stream::decode_all(variant).is_ok_and(|tar| tar == self.tar)
    }
}

/// Start of the zstd seekable-format seek table at the end of `bundle`, if any.
fn seek_table_start(bundle: &[u8]) -> Option<usize> {
    let n = bundle.len();
    if n < 17 || bundle[n - 4..] != 0x8F92_EAB1u32.to_le_bytes() {
        return None;
    }
    let count = u32::from_le_bytes(bundle[n - 9..n - 5].try_into().unwrap()) as usize;
    n.checked_sub(8 + count * 8 + 9)
}

fn verify_bin(ws: &Workspace, bundle: &str) -> Run {
    run_bundle_in(ws.root(), &["verify", bundle, "--pubkey", "site.pub"], &[])
}

fn inspect_bin(ws: &Workspace, bundle: &str) -> Run {
    run_bundle_in(ws.root(), &["inspect", bundle], &[])
}

/// Exit `code` with an `error:` line and no panic.
#[track_caller]
fn assert_clean_error(run: &Run, codes: &[i32], what: &str) {
    assert!(
        codes.contains(&run.code),
        "{what}: exit {} (expected one of {codes:?})\n{}",
        run.code,
        run.stderr
    );
    run.assert_code(run.code);
    if run.code != 0 {
        assert!(
            run.stderr.starts_with("error: ") || run.stderr.contains("\nerror: "),
            "{what}: no `error:` line\n{}",
            run.stderr
        );
    }
    assert!(
        !run.stderr.contains("internal error") && !run.stderr.contains("stack backtrace"),
        "{what}: {}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// Through the binary
// ---------------------------------------------------------------------------

#[test]
fn files_that_are_not_bundles_fail_verification() {
    let fx = Fixture::new();
    let mut rng = Rng::new(1);
    let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
    skippable.extend_from_slice(&100u32.to_le_bytes());
    skippable.extend(rng.bytes(100));
    let mut zstd_magic = 0xFD2F_B528u32.to_le_bytes().to_vec();
    zstd_magic.extend(rng.bytes(1000));
    let other_tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/hosts", &b"hello"[..]).unwrap();
        zstd::stream::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one zero byte", vec![0]),
        ("13 random bytes", rng.bytes(13)),
        ("512 zero bytes", vec![0; 512]),
        ("4 KiB random", rng.bytes(4096)),
        ("100 KB random", rng.bytes(100_000)),
        ("zstd magic then random", zstd_magic),
        ("a lone skippable frame", skippable),
        (
            "zstd of text",
            zstd::stream::encode_all(&b"hello world\n"[..], 3).unwrap(),
        ),
        ("zstd of a foreign tar", other_tar),
        ("the uncompressed tar", fx.tar.clone()),
        ("the seek table alone", fx.bundle[fx.table_start..].to_vec()),
        (
            "the bundle twice",
            [fx.bundle.clone(), fx.bundle.clone()].concat(),
        ),
    ];
    for (what, bytes) in &cases {
        fx.write("case.bin", bytes);
        assert_clean_error(&verify_bin(&fx.ws, "case.bin"), &[3], what);
        let inspect_ok = *what == "the bundle twice";
        let codes: &[i32] = if inspect_ok { &[0, 2, 3] } else { &[2, 3] };
        assert_clean_error(&inspect_bin(&fx.ws, "case.bin"), codes, what);
    }
}

#[test]
fn truncated_bundles_fail_verification() {
    let fx = Fixture::new();
    let n = fx.bundle.len();
    let mut cuts: Vec<usize> = (0..30).map(|k| n * k / 30).collect();
    cuts.extend([
        1,
        n - 1,
        n - 9,
        fx.table_start - 1,
        fx.table_start + 1,
        fx.table_start - 4,
    ]);
    for cut in cuts {
        let what = format!("cut at {cut} of {n}");
        fx.write("cut.bundle.tar.zst", &fx.bundle[..cut]);
        let verify = verify_bin(&fx.ws, "cut.bundle.tar.zst");
        assert_clean_error(&verify, &[3], &what);
        assert_clean_error(
            &inspect_bin(&fx.ws, "cut.bundle.tar.zst"),
            &[0, 2, 3],
            &what,
        );
    }
    // Cut exactly before the seek table: the stock-zstd form of the same bundle, which
    // SPEC §3 says still verifies (by streaming).
    fx.write("stripped.bundle.tar.zst", &fx.bundle[..fx.table_start]);
    verify_bin(&fx.ws, "stripped.bundle.tar.zst").assert_ok();
}

#[test]
fn bundles_with_a_changed_byte_fail_verification() {
    let fx = Fixture::new();
    let n = fx.bundle.len();
    let mut rng = Rng::new(0x5eed);
    let mut neutral = Vec::new();
    for i in 0..40 {
        let pos = rng.below(n);
        let mut m = fx.bundle.clone();
        m[pos] ^= rng.nonzero_byte();
        let what = format!(
            "mutation {i}: byte {pos} of {n} {:#04x} -> {:#04x}",
            fx.bundle[pos], m[pos]
        );
        fx.write("mut.bundle.tar.zst", &m);
        let verify = verify_bin(&fx.ws, "mut.bundle.tar.zst");
        if verify.code == 0 && fx.is_content_neutral(&m) {
            neutral.push(what.clone());
        } else {
            assert_clean_error(&verify, &[3], &what);
        }
        assert_clean_error(
            &inspect_bin(&fx.ws, "mut.bundle.tar.zst"),
            &[0, 2, 3],
            &what,
        );
    }
    if !neutral.is_empty() {
        eprintln!("content-neutral mutations (allowed by SPEC §6): {neutral:#?}");
    }
    assert!(
        neutral.len() < 4,
        "suspiciously many undetected mutations: {neutral:#?}"
    );
}

#[test]
fn bytes_after_the_seek_table_fail_verification() {
    let fx = Fixture::new();
    let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
    skippable.extend_from_slice(&14u32.to_le_bytes());
    skippable.extend_from_slice(b"unsigned cargo");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a zero byte", vec![0]),
        ("text", b"trailing garbage\n".to_vec()),
        // (A frame of zeros would only extend the tar's end-of-archive padding, which a
        // re-tarred bundle may have too; SPEC §6. Anything else after the end is not.)
        (
            "another zstd frame",
            zstd::stream::encode_all(&b"extra content"[..], 3).unwrap(),
        ),
        // A skippable frame after the seek table carries bytes nothing signs; stock zstd
        // ignores it, but SPEC §3 makes any bytes after the stream's end a failure.
        ("a skippable frame", skippable.clone()),
    ];
    for (what, tail) in &cases {
        fx.write("tail.bundle.tar.zst", [fx.bundle.as_slice(), tail].concat());
        assert_clean_error(&verify_bin(&fx.ws, "tail.bundle.tar.zst"), &[3], what);
    }
    // The same in front of the first frame.
    fx.write(
        "head.bundle.tar.zst",
        [skippable.as_slice(), &fx.bundle].concat(),
    );
    assert_clean_error(
        &verify_bin(&fx.ws, "head.bundle.tar.zst"),
        &[3],
        "skippable frame in front",
    );
}

#[test]
fn garbage_public_keys_are_clean_errors() {
    let fx = Fixture::new();
    let mut rng = Rng::new(2);
    let b64 = |raw: &[u8]| base64::engine::general_purpose::STANDARD.encode(raw);
    let comment = "untrusted comment: minisign public key\n";
    let mut wrong_key = b"Ed".to_vec();
    wrong_key.extend(rng.bytes(40));
    let real_pub = std::fs::read_to_string(fx.ws.path("site.pub")).unwrap();
    let real_line = real_pub.lines().nth(1).unwrap().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("random bytes", rng.bytes(64)),
        ("comment only", comment.as_bytes().to_vec()),
        (
            "not base64",
            format!("{comment}!!!!not base64!!!!\n").into_bytes(),
        ),
        (
            "42 random bytes",
            format!("{comment}{}\n", b64(&rng.bytes(42))).into_bytes(),
        ),
        (
            "Ed + random",
            format!("{comment}{}\n", b64(&wrong_key)).into_bytes(),
        ),
        (
            "too short",
            format!("{comment}{}\n", b64(&wrong_key[..30])).into_bytes(),
        ),
        (
            "truncated line",
            format!("{comment}{}\n", &real_line[..real_line.len() - 4]).into_bytes(),
        ),
        ("1 MB random", rng.bytes(1_000_000)),
        (
            "the secret key",
            std::fs::read(fx.ws.path("site.key")).unwrap(),
        ),
        (
            "a signature file",
            std::fs::read(fx.ws.path("good.bundle.tar.zst.minisig")).unwrap(),
        ),
    ];
    for (what, bytes) in &cases {
        fx.write("garbage.pub", bytes);
        let run = run_bundle_in(
            fx.ws.root(),
            &["verify", "good.bundle.tar.zst", "--pubkey", "garbage.pub"],
            &[],
        );
        assert_clean_error(&run, &[2, 3], what);
    }
    // The key of another signer is a verification failure, not a usage error.
    keygen(&fx.ws.path("other"));
    let run = run_bundle_in(
        fx.ws.root(),
        &["verify", "good.bundle.tar.zst", "--pubkey", "other.pub"],
        &[],
    );
    assert_clean_error(&run, &[3], "another signer's key");
}

#[test]
fn garbage_secret_keys_are_clean_errors() {
    let fx = Fixture::new();
    let mut rng = Rng::new(3);
    let engine = base64::engine::general_purpose::STANDARD;
    let real = std::fs::read_to_string(fx.ws.path("site.key")).unwrap();
    let mut lines = real.lines();
    let comment = lines.next().unwrap().to_string();
    let raw = engine.decode(lines.next().unwrap().trim()).unwrap();
    let with_raw = |raw: &[u8]| format!("{comment}\n{}\n", engine.encode(raw)).into_bytes();
    // Flip bytes only past the algorithm/KDF fields (bytes 0..6), so no variant asks for
    // a password or runs scrypt.
    let mut checksum_flipped = raw.clone();
    let last = checksum_flipped.len() - 1;
    checksum_flipped[last] ^= 0x01;
    let mut key_flipped = raw.clone();
    key_flipped[70] ^= 0x80;
    let mut random_tail = raw[..6].to_vec();
    random_tail.extend(rng.bytes(raw.len() - 6));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("random bytes", rng.bytes(200)),
        ("comment only", format!("{comment}\n").into_bytes()),
        ("not base64", format!("{comment}\n%%%%\n").into_bytes()),
        ("half a key", with_raw(&raw[..raw.len() / 2])),
        ("checksum changed", with_raw(&checksum_flipped)),
        ("secret key changed", with_raw(&key_flipped)),
        ("random after the header", with_raw(&random_tail)),
        (
            "the public key",
            std::fs::read(fx.ws.path("site.pub")).unwrap(),
        ),
        ("1 MB random", rng.bytes(1_000_000)),
    ];
    for (what, bytes) in &cases {
        fx.write("garbage.key", bytes);
        let run = run_bundle_in(
            fx.ws.root(),
            &[
                "create",
                "locked.yaml",
                "-o",
                "x.bundle.tar.zst",
                "--key",
                "garbage.key",
                "--cache",
                "cache",
                "--retries",
                "0",
            ],
            &[],
        );
        assert_clean_error(&run, &[2, 3], what);
        assert!(
            !fx.ws.path("x.bundle.tar.zst").exists(),
            "{what}: bundle written"
        );
    }
}

#[test]
fn garbage_manifests_are_clean_errors() {
    let fx = Fixture::new();
    let mut rng = Rng::new(4);
    let alphabet = b" -:{}[]&*!|>'\"%@`#,?\nab01";
    let printable: Vec<u8> = (0..2000)
        .map(|_| alphabet[rng.below(alphabet.len())])
        .collect();
    // (Nesting depth is kept at 5,000: parse time grows quadratically with it — 50,000
    // levels take ~14 s; see the report.)
    let deep = format!(
        "apiVersion: bundle/v1\nname: x\nversion: '1'\nfiles: {}{}\n",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let mut bomb = String::from(
        "apiVersion: bundle/v1\nname: x\nversion: '1'\nplatforms: &a0 [a, a, a, a, a, a, a, a, a]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!("x{i}: &a{i} [{}]\n", vec![prev; 9].join(", ")));
    }
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("random bytes", "m.yaml", rng.bytes(3000)),
        ("random printable", "m.yaml", printable.clone()),
        ("random printable json", "m.json", printable),
        ("random json bytes", "m.json", rng.bytes(3000)),
        ("deeply nested", "m.yaml", deep.clone().into_bytes()),
        (
            "deeply nested json",
            "m.json",
            format!(
                "{{\"files\": {}{}}}",
                "[".repeat(50_000),
                "]".repeat(50_000)
            )
            .into_bytes(),
        ),
        ("alias bomb", "m.yaml", bomb.into_bytes()),
        ("a bundle as manifest", "m.yaml", fx.bundle[..5000].to_vec()),
        (
            "NUL bytes",
            "m.yaml",
            b"apiVersion: bundle/v1\0\nname: x\n".to_vec(),
        ),
    ];
    for (what, name, bytes) in &cases {
        fx.write(name, bytes);
        for cmd in ["lock", "create"] {
            let mut args = vec![
                cmd,
                *name,
                "-o",
                "out.x",
                "--cache",
                "cache",
                "--retries",
                "0",
            ];
            if cmd == "create" {
                args.extend(["--key", "site.key"]);
            }
            let run = run_bundle_in(fx.ws.root(), &args, &[]);
            assert_clean_error(&run, &[2], &format!("{cmd} {what}"));
            assert!(
                !fx.ws.path("out.x").exists(),
                "{cmd} {what}: output written"
            );
        }
    }
}

/// A reader that went away (`bundle inspect | head -1`) is not a crash. SPEC §5: no
/// panics. Observed: `failed printing to stdout: Broken pipe` panic — see the report.
#[test]
fn output_to_a_closed_pipe_is_not_a_panic() {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    use std::process::{Command, Stdio};
    let fx = Fixture::new();
    for args in [
        vec!["inspect", "good.bundle.tar.zst"],
        vec!["inspect", "good.bundle.tar.zst", "--json"],
        vec![
            "verify",
            "good.bundle.tar.zst",
            "--pubkey",
            "site.pub",
            "--json",
        ],
    ] {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read_end);
        let out = Command::new(bundle_bin())
            .args(&args)
            .current_dir(fx.ws.root())
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::piped())
            .output()
            .expect("run bundle");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{args:?} with stdout closed panicked:\n{stderr}"
        );
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{args:?}: {:?}\n{stderr}",
            out.status
        );
    }
}

// ---------------------------------------------------------------------------
// In process: many variants, fast
// ---------------------------------------------------------------------------

/// Panics on threads without a name (the library's decoder and worker threads) — they
/// would otherwise only show up as a closed channel.
static THREAD_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_thread_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_none() {
                THREAD_PANICS.lock().unwrap().push(info.to_string());
            }
            previous(info);
        }));
    });
}

/// What the library said about one variant.
enum Outcome {
    Verified,
    Failed(i32, String),
}

/// Runs `read_verified` and `inspect` on `path` on a named thread, turning a panic or a
/// hang (60 s) into a test failure that names `label` (the seed and the variant).
fn check_in_process(path: &Path, key: &PublicKey, label: &str) -> Outcome {
    let before = THREAD_PANICS.lock().unwrap().len();
    let (tx, rx) = std::sync::mpsc::channel();
    let owned_path = path.to_path_buf();
    let key = key.clone();
    std::thread::Builder::new()
        .name("garbage-variant".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(|| {
                // inspect never verifies: any result is fine, a panic is not.
                if let Ok(source) = BundleSource::open(&owned_path) {
                    let _ = airgap_bundle::inspect::inspect(&source);
                }
                let source =
                    BundleSource::open(&owned_path).map_err(|e| (e.exit_code(), e.to_string()))?;
                read_verified(
                    &source,
                    ReadOptions {
                        pubkey: &key,
                        progress: None,
                    },
                    &mut |_| Ok(()),
                    &mut DiscardSink,
                )
                .map(|_| ())
                .map_err(|e| (e.exit_code(), e.to_string()))
            });
            let _ = tx.send(result);
        })
        .expect("spawn");
    let outcome = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(Ok(()))) => Outcome::Verified,
        Ok(Ok(Err((code, msg)))) => Outcome::Failed(code, msg),
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{label}: the library panicked: {msg}")
        }
        Err(_) => panic!("{label}: no result within 60 s (hang?)"),
    };
    let panics = THREAD_PANICS.lock().unwrap()[before..].to_vec();
    assert!(
        panics.is_empty(),
        "{label}: a library thread panicked: {panics:#?}"
    );
    outcome
}

#[test]
fn property_damaged_bundles_never_verify_and_never_panic() {
    record_thread_panics();
    let fx = Fixture::new();
    let key = fx.pubkey();
    let n = fx.bundle.len();
    let seed = 0xA1B2_C3D4u64;
    let mut rng = Rng::new(seed);
    let mut neutral = 0;
    for i in 0..300 {
        let mut v = fx.bundle.clone();
        let kind = match i % 6 {
            0 | 1 => {
                let cut = rng.below(n);
                v.truncate(cut);
                format!("truncated to {cut}")
            }
            2 | 3 => {
                let pos = rng.below(n);
                v[pos] ^= rng.nonzero_byte();
                format!("byte {pos} changed")
            }
            4 => {
                let k = 2 + rng.below(7);
                let spots: Vec<usize> = (0..k).map(|_| rng.below(n)).collect();
                for &p in &spots {
                    v[p] ^= rng.nonzero_byte();
                }
                format!("bytes {spots:?} changed")
            }
            _ => {
                let pos = rng.below(n);
                if rng.next().is_multiple_of(2) {
                    let most = 64.min(n - pos);
                    let len = 1 + rng.below(most);
                    v.drain(pos..pos + len);
                    format!("{len} bytes deleted at {pos}")
                } else {
                    let len = 1 + rng.below(64);
                    let extra = rng.bytes(len);
                    v.splice(pos..pos, extra);
                    format!("{len} bytes inserted at {pos}")
                }
            }
        };
        let label = format!("seed {seed:#x} variant {i} ({kind})");
        let path = fx.write("variant.bundle.tar.zst", &v);
        match check_in_process(&path, &key, &label) {
            Outcome::Failed(3, _) => {}
            Outcome::Failed(code, msg) => panic!("{label}: exit code {code}, expected 3: {msg}"),
            Outcome::Verified if fx.is_content_neutral(&v) => neutral += 1,
            Outcome::Verified => panic!("{label}: a damaged bundle verified"),
        }
    }
    eprintln!("{neutral} of 300 variants were content-neutral and verified");
    assert!(neutral < 10, "{neutral} of 300 damaged variants verified");
}

#[test]
fn every_change_to_the_seek_table_is_detected() {
    record_thread_panics();
    let fx = Fixture::new();
    let key = fx.pubkey();
    let n = fx.bundle.len();
    // The seekable format's descriptor byte (5th from the end) has two unused low bits
    // whose value does not matter; every other bit of the table matters.
    let descriptor = n - 5;
    let mut undetected = Vec::new();
    for pos in fx.table_start..n {
        for mask in [0x01u8, 0x02, 0x10, 0x80, 0xff] {
            if pos == descriptor && mask & 0x7c == 0 && mask & 0x80 == 0 {
                continue;
            }
            let mut v = fx.bundle.clone();
            v[pos] ^= mask;
            let label = format!(
                "seek table byte {pos} (table at {}) ^ {mask:#04x}",
                fx.table_start
            );
            let path = fx.write("table.bundle.tar.zst", &v);
            match check_in_process(&path, &key, &label) {
                Outcome::Failed(3, _) => {}
                Outcome::Failed(code, msg) => {
                    panic!("{label}: exit code {code}, expected 3: {msg}")
                }
                Outcome::Verified => undetected.push(label),
            }
        }
    }
    assert!(
        undetected.is_empty(),
        "changes to the seek table that still verify (SPEC §3: exit 3):\n{}",
        undetected.join("\n")
    );
}
