//! Hostile input costs little (SPEC §3 "Properties that tests pin down", §5 exit codes).
//!
//! Before the signature of `index.json` is checked, the reader holds at most the index's
//! size limit in memory whatever the tar headers claim (PAX `size`, GNU long names, floods of
//! PAX headers); after it, an entry whose data as the tar reader delivers it differs from its
//! signed size is rejected before its bytes reach a destination; a seek table never makes
//! the reader allocate what it declares; work on a large signed index is linear; and a signed
//! index is itself checked (sizes that overflow, kinds from a newer tool, unsafe names and
//! versions, paths that are both a file and a directory, control characters).
//!
//! The crafted bundles are written by streaming through `zstd::stream::write::Encoder`, so
//! a "2 GiB" bomb costs the test a few hundred KB. The binary runs under `/usr/bin/time`
//! (peak RSS) with a wall-clock deadline and, as a safety net for a regressed binary, an
//! address-space cap ([`ADDRESS_SPACE_CAP_KIB`]); a run that hits the cap or the deadline
//! still reports the RSS it reached. Each check collects every unmet expectation (exit
//! code, messages, RSS, time) and reports them together.
//!
//! Hand-built bundles are signed with a key made by `bundle keygen` through the library
//! (`SecretKey::sign`), with the trusted comment the writer uses; the positive controls
//! ([`genuine_and_handmade_bundles_verify_and_inspect`]) prove that the crafting code makes
//! bundles that verify, so each failure is due to its hostile detail alone.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use airgap_bundle::bundle::frames::{FrameSizes, encode_seek_table};
use airgap_bundle::bundle::index::{
    Artifact, DeltaBase, EntryKind, FORMAT_VERSION, INDEX_PATH, INDEX_SIG_PATH, Index, IndexEntry,
    MANIFEST_PATH, MAX_INDEX_BYTES,
};
use airgap_bundle::bundle::signing::SecretKey;
use airgap_bundle::digest::Sha256Digest;
use common::tamper::{
    Framing, RawEntry, build_bundle, decompress, make_source_bundle, pax_record, read_tar,
};
use common::*;
use tar::EntryType;

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// Peak RSS a hostile bundle may cost (KiB).
const RSS_LIMIT_KIB: u64 = 100 * 1024;
/// Address-space cap (`ulimit -v`, KiB) on every measured run: far above what a genuine
/// bundle needs (threads and allocator arenas included), far below what would make a
/// regressed binary swap the machine.
const ADDRESS_SPACE_CAP_KIB: u64 = 4 * 1024 * 1024;
/// Size of the decompression bombs (zeros, so they compress to a few hundred KB).
const BOMB_BYTES: u64 = 2 << 30;
/// The untrusted comment `bundle create` writes into signatures.
const UNTRUSTED_COMMENT: &str = "signature from airgap-bundle secret key";
/// Creation time of hand-built bundles.
const EPOCH: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------
// Running the binary under /usr/bin/time, with a deadline
// ---------------------------------------------------------------------------

/// One measured run of `bundle`.
struct Measured {
    what: String,
    run: Run,
    /// Peak RSS in KiB (`/usr/bin/time -f %M`).
    rss_kib: u64,
    /// Bytes the process wrote to files, counted as pages are dirtied (`%O`, 512-byte
    /// blocks): also counts a staged file deleted before the process ends.
    written_bytes: u64,
    elapsed: Duration,
    /// Killed at the deadline.
    timed_out: bool,
    /// What `/usr/bin/time` said about the end (a signal, say).
    time_note: String,
    /// Full stdout length; `run.stdout` holds at most [`KEEP_OUTPUT`] bytes of it.
    stdout_len: u64,
    stderr_len: u64,
    stdout_path: PathBuf,
}

/// Bytes of stdout/stderr kept in memory (a hostile name may be echoed gigabytes long).
const KEEP_OUTPUT: u64 = 1 << 20;

fn read_head(path: &Path, max: u64) -> (String, u64) {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if let Ok(f) = File::open(path) {
        let _ = f.take(max).read_to_end(&mut bytes);
    }
    (String::from_utf8_lossy(&bytes).into_owned(), len)
}

/// Pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill_pid(pid: u32) {
    // SAFETY: plain kill(2) on a pid this test started (directly or via /usr/bin/time).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Runs `bundle args...` in `scratch` (where its outputs are kept) under `ulimit -v` and
/// `/usr/bin/time`, killing it at `deadline`.
fn run_measured<S: AsRef<OsStr>>(
    scratch: &Path,
    what: &str,
    args: &[S],
    deadline: Duration,
) -> Measured {
    require_tool("/usr/bin/time");
    let tag: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let rss_path = scratch.join(format!("{tag}.rss"));
    let stdout_path = scratch.join(format!("{tag}.stdout"));
    let stderr_path = scratch.join(format!("{tag}.stderr"));
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -v "$1" && shift && exec /usr/bin/time -o "$@""#)
        .arg("sh")
        .arg(ADDRESS_SPACE_CAP_KIB.to_string())
        .arg(&rss_path)
        .arg("-f")
        .arg("%O %M")
        .arg(bundle_bin());
    cmd.args(args)
        .current_dir(scratch)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create stdout file"))
        .stderr(File::create(&stderr_path).expect("create stderr file"));
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn /usr/bin/time bundle");
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if !timed_out && start.elapsed() > deadline {
            timed_out = true;
            // Kill `bundle` (the child of /usr/bin/time), so that time still reports.
            let kids = children_of(child.id());
            if kids.is_empty() {
                kill_pid(child.id());
            }
            for k in kids {
                kill_pid(k);
            }
        }
        sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let time_out = fs::read_to_string(&rss_path).unwrap_or_default();
    let mut lines: Vec<&str> = time_out.lines().filter(|l| !l.trim().is_empty()).collect();
    let (written_blocks, rss_kib) = lines
        .pop()
        .and_then(|l| {
            let (o, m) = l.trim().split_once(' ')?;
            Some((o.parse::<u64>().ok()?, m.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("{what}: no `%O %M` from /usr/bin/time: {time_out:?}"));
    let time_note = lines.join("; ");
    let killed = time_note.contains("terminated by signal") || status.code().is_none();
    eprintln!(
        "[{what}] exit {:?}, {:.2} s, peak RSS {} KiB, wrote {} KiB{}",
        status.code(),
        elapsed.as_secs_f64(),
        rss_kib,
        written_blocks / 2,
        if timed_out {
            ", killed at the deadline"
        } else {
            ""
        }
    );
    let (stdout, stdout_len) = read_head(&stdout_path, KEEP_OUTPUT);
    let (stderr, stderr_len) = read_head(&stderr_path, KEEP_OUTPUT);
    Measured {
        what: what.to_string(),
        run: Run {
            code: if killed {
                -1
            } else {
                status.code().unwrap_or(-1)
            },
            stdout,
            stderr,
        },
        rss_kib,
        written_bytes: written_blocks * 512,
        elapsed,
        timed_out,
        time_note,
        stdout_len,
        stderr_len,
        stdout_path,
    }
}

/// What a measured run must show.
struct Expect<'a> {
    code: i32,
    stderr: &'a [&'a str],
    max_rss_kib: Option<u64>,
    max_time: Option<Duration>,
    /// Bytes written to files (a destination, staging included).
    max_written_bytes: Option<u64>,
}

impl Expect<'_> {
    /// Exit `code` with `stderr` messages, no limits.
    fn plain<'a>(code: i32, stderr: &'a [&'a str]) -> Expect<'a> {
        Expect {
            code,
            stderr,
            max_rss_kib: None,
            max_time: None,
            max_written_bytes: None,
        }
    }
}

impl Measured {
    /// Every way this run misses `want`, in one message (empty when it meets it).
    fn misses(&self, want: &Expect<'_>) -> Option<String> {
        let mut why = Vec::new();
        if self.timed_out {
            why.push(format!(
                "killed at the deadline after {:.1} s",
                self.elapsed.as_secs_f64()
            ));
        } else if let Some(max) = want.max_time
            && self.elapsed > max
        {
            why.push(format!(
                "took {:.1} s (limit {} s)",
                self.elapsed.as_secs_f64(),
                max.as_secs()
            ));
        }
        if let Some(max) = want.max_rss_kib
            && self.rss_kib > max
        {
            why.push(format!(
                "peak RSS {} MiB (limit {} MiB)",
                self.rss_kib / 1024,
                max / 1024
            ));
        }
        if let Some(max) = want.max_written_bytes
            && self.written_bytes > max
        {
            why.push(format!(
                "wrote {} MiB to files (limit {} MiB)",
                self.written_bytes >> 20,
                max >> 20
            ));
        }
        if self.run.code != want.code {
            why.push(format!(
                "exit code {}, expected {}",
                self.run.code, want.code
            ));
        }
        if self.run.stderr.contains("panicked") || self.run.stderr.contains("internal error") {
            why.push("it panicked".into());
        }
        for needle in want.stderr {
            if !self.run.stderr.contains(needle) {
                why.push(format!("stderr does not contain {needle:?}"));
            }
        }
        if why.is_empty() {
            return None;
        }
        let shorten = |s: &str| -> String {
            let s = s.replace('\0', "\\0");
            if s.len() > 2000 {
                let cut = (0..=2000).rev().find(|&i| s.is_char_boundary(i)).unwrap();
                format!("{}… [{} bytes in all]", &s[..cut], s.len())
            } else {
                s
            }
        };
        Some(format!(
            "{}: {}\n  (exit {}, {:.1} s, peak RSS {} MiB{}; stderr {} bytes, stdout {} bytes)\n--- stderr ---\n{}\n--------------",
            self.what,
            why.join("; "),
            self.run.code,
            self.elapsed.as_secs_f64(),
            self.rss_kib / 1024,
            if self.time_note.is_empty() {
                String::new()
            } else {
                format!("; time: {}", self.time_note)
            },
            self.stderr_len,
            self.stdout_len,
            shorten(&self.run.stderr),
        ))
    }
}

/// Collects unmet expectations of a test and fails once with all of them.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, m: &Measured, want: &Expect<'_>) {
        if let Some(why) = m.misses(want) {
            self.0.push(why);
        }
    }

    fn push(&mut self, why: String) {
        self.0.push(why);
    }

    /// [`run_measured`], recording how the run misses `want`.
    fn measure<S: AsRef<OsStr>>(
        &mut self,
        scratch: &Path,
        what: &str,
        args: &[S],
        deadline: Duration,
        want: &Expect<'_>,
    ) -> Measured {
        let m = run_measured(scratch, what, args, deadline);
        self.check(&m, want);
        m
    }

    #[track_caller]
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} expectation(s) not met:\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

fn verify_args(bundle: &Path, pubkey: &Path) -> Vec<OsString> {
    vec![os("verify"), bundle.into(), os("--pubkey"), pubkey.into()]
}

fn inspect_args(bundle: &Path) -> Vec<OsString> {
    vec![os("inspect"), bundle.into()]
}

// ---------------------------------------------------------------------------
// Writing a crafted tar through a streaming zstd encoder
// ---------------------------------------------------------------------------

/// A tar stream written entry by entry, header bytes as given, compressed as one plain
/// zstd stream (no seek table) straight into a file.
struct TarOut {
    enc: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    path: PathBuf,
}

impl TarOut {
    fn create(path: &Path) -> TarOut {
        let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let enc = zstd::stream::write::Encoder::new(BufWriter::new(file), 1).expect("zstd encoder");
        TarOut {
            enc,
            path: path.to_path_buf(),
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.enc.write_all(b).expect("write the crafted bundle");
    }

    /// A header block exactly as given (size field and checksum untouched).
    fn header(&mut self, h: &tar::Header) {
        self.bytes(h.as_bytes());
    }

    /// `n` zero bytes, streamed.
    fn zeros(&mut self, mut n: u64) {
        let chunk = vec![0u8; 1 << 20];
        while n > 0 {
            let k = n.min(chunk.len() as u64) as usize;
            self.bytes(&chunk[..k]);
            n -= k as u64;
        }
    }

    /// Zero padding after `data_len` bytes of entry data, to the next 512-byte block.
    fn pad(&mut self, data_len: u64) {
        let rem = data_len % 512;
        if rem != 0 {
            self.zeros(512 - rem);
        }
    }

    /// A whole entry: its header with size and checksum fitted to the data, the data, padding.
    fn entry(&mut self, e: &RawEntry) {
        let mut h = e.header.clone();
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        self.header(&h);
        self.bytes(&e.data);
        self.pad(e.data.len() as u64);
    }

    /// The end-of-archive marker, then the end of the zstd stream.
    fn finish(mut self) -> PathBuf {
        self.zeros(1024);
        let mut w = self.enc.finish().expect("finish zstd");
        w.flush().expect("flush the crafted bundle");
        self.path
    }
}

/// A header for `name` of type `kind` declaring `size` bytes, checksum set.
fn header_with_size(name: &[u8], kind: EntryType, size: u64) -> tar::Header {
    let mut h = RawEntry::new(name, kind, b"").header;
    h.set_size(size);
    h.set_cksum();
    h
}

// ---------------------------------------------------------------------------
// Hand-built, correctly signed bundles
// ---------------------------------------------------------------------------

/// A workspace with a key pair made by `bundle keygen --no-password`, loaded for signing.
struct Site {
    ws: Workspace,
    secret: SecretKey,
    pubkey: PathBuf,
}

impl Site {
    fn new() -> Site {
        let ws = Workspace::new();
        let (key, pubkey) = keygen(&ws.path("site"));
        let secret = SecretKey::load(&key, || unreachable!("made with --no-password"))
            .unwrap_or_else(|e| panic!("load {}: {e}", key.display()));
        Site { ws, secret, pubkey }
    }

    /// The `.minisig` text of `index_json` with the writer's trusted comment (the name is
    /// escaped so that a hostile one cannot break the signature file's lines).
    fn sign_index(&self, index_json: &[u8], name: &str, version: &str) -> Vec<u8> {
        let trusted = format!(
            "timestamp:{EPOCH}\tfile:{INDEX_PATH}\tbundle:{} {}",
            name.escape_default(),
            version.escape_default()
        );
        self.secret
            .sign(index_json, &trusted)
            .to_file_string(UNTRUSTED_COMMENT)
            .into_bytes()
    }

    /// The head (index, signature, locked manifest) and content entries of a bundle whose
    /// signed index is `index_json`.
    fn entries(
        &self,
        index_json: &[u8],
        manifest: &[u8],
        content: &[(String, Vec<u8>)],
    ) -> Vec<RawEntry> {
        // Only the name and version, without building a tree of a 60 MB index.
        #[derive(serde::Deserialize)]
        struct Head {
            name: String,
            version: String,
        }
        let head: Head = serde_json::from_slice(index_json).expect("the crafted index is JSON");
        let (name, version) = (head.name.as_str(), head.version.as_str());
        let mut out = vec![
            RawEntry::new(INDEX_PATH.as_bytes(), EntryType::Regular, index_json),
            RawEntry::new(
                INDEX_SIG_PATH.as_bytes(),
                EntryType::Regular,
                &self.sign_index(index_json, name, version),
            ),
            RawEntry::new(MANIFEST_PATH.as_bytes(), EntryType::Regular, manifest),
        ];
        for (path, data) in content {
            out.push(RawEntry::new(path.as_bytes(), EntryType::Regular, data));
        }
        out
    }

    /// Writes a plain (no seek table) bundle of `index_json` and `content`.
    fn bundle(
        &self,
        file: &str,
        index_json: &[u8],
        manifest: &[u8],
        content: &[(String, Vec<u8>)],
    ) -> PathBuf {
        self.ws.write(
            file,
            build_bundle(&self.entries(index_json, manifest, content), Framing::Plain),
        )
    }
}

/// A locked manifest's bytes (verify and inspect only hash it).
fn manifest_bytes(name: &str) -> Vec<u8> {
    format!(
        "apiVersion: bundle/v1\nname: {}\nversion: 1.0.0\nfiles: []\n",
        name.escape_default()
    )
    .into_bytes()
}

/// An index as the writer makes it: the manifest entry first, then one `file` entry and
/// artifact per `content` item, sorted by path.
fn index_of(name: &str, version: &str, manifest: &[u8], content: &[(String, Vec<u8>)]) -> Index {
    let mut content: Vec<&(String, Vec<u8>)> = content.iter().collect();
    content.sort_by(|a, b| a.0.cmp(&b.0));
    let mut index = Index {
        format: FORMAT_VERSION,
        name: name.to_string(),
        version: version.to_string(),
        created: "2023-11-14T22:13:20Z".to_string(),
        tool: format!("airgap-bundle {}", env!("CARGO_PKG_VERSION")),
        manifest_sha256: Sha256Digest::of_bytes(manifest),
        base: None,
        artifacts: Vec::new(),
        entries: vec![IndexEntry {
            path: MANIFEST_PATH.to_string(),
            size: manifest.len() as u64,
            sha256: Sha256Digest::of_bytes(manifest),
            kind: EntryKind::Manifest,
            artifacts: Vec::new(),
            in_place: false,
        }],
    };
    for (path, data) in content {
        let digest = Sha256Digest::of_bytes(data);
        index.artifacts.push(Artifact {
            kind: EntryKind::File,
            source: format!(
                "http://upstream.example/{}",
                path.rsplit('/').next().unwrap()
            ),
            dest: path.clone(),
            sha256: Some(digest),
            size: data.len() as u64,
            external: Vec::new(),
        });
        index.entries.push(IndexEntry {
            path: path.clone(),
            size: data.len() as u64,
            sha256: digest,
            kind: EntryKind::File,
            artifacts: vec![index.artifacts.len() - 1],
            in_place: false,
        });
    }
    index
}

fn small_content() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "files/h/docs/readme.txt".to_string(),
            b"air-gapped readme\n".repeat(20),
        ),
        (
            "files/h/tools/run.sh".to_string(),
            b"#!/bin/sh\necho hostile\n".to_vec(),
        ),
    ]
}

/// Replaces the only occurrence of `from` in `bytes` with `to`.
#[track_caller]
fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).expect("index JSON is UTF-8");
    assert_eq!(text.matches(from).count(), 1, "{from:?} in {text}");
    text.replacen(from, to, 1).into_bytes()
}

// ---------------------------------------------------------------------------
// 9. Controls
// ---------------------------------------------------------------------------

/// (control) A genuine bundle verifies (within the RSS limit the hostile cases are held to)
/// and inspects; the hand-built, library-signed bundle of the crafting code verifies and
/// inspects too; a genuine bundle rewritten through the streaming tar writer verifies.
#[test]
fn genuine_and_handmade_bundles_verify_and_inspect() {
    let ws = Workspace::new();
    let src = make_source_bundle(&ws.path("source"));
    let scratch = ws.mkdir("runs");
    let mut failures = Failures::default();

    let m = run_measured(
        &scratch,
        "verify genuine",
        &verify_args(&src.bundle, &src.pubkey),
        Duration::from_secs(60),
    );
    failures.check(
        &m,
        &Expect {
            max_rss_kib: Some(RSS_LIMIT_KIB),
            ..Expect::plain(0, &["OK: tamper-source 1.0.0"])
        },
    );
    let m = run_measured(
        &scratch,
        "inspect genuine",
        &inspect_args(&src.bundle),
        Duration::from_secs(60),
    );
    failures.check(&m, &Expect::plain(0, &[]));
    if !m.run.stdout.contains("tamper-source 1.0.0") {
        failures.push(format!(
            "inspect genuine: stdout lacks the name\n{}",
            m.run.stdout
        ));
    }

    // The streaming tar writer, with nothing changed.
    let entries = read_tar(&decompress(&fs::read(&src.bundle).unwrap()));
    let mut out = TarOut::create(&ws.path("restreamed.bundle.tar.zst"));
    for e in &entries {
        out.entry(e);
    }
    let restreamed = out.finish();
    let m = run_measured(
        &scratch,
        "verify restreamed",
        &verify_args(&restreamed, &src.pubkey),
        Duration::from_secs(60),
    );
    failures.check(&m, &Expect::plain(0, &["OK: tamper-source 1.0.0"]));

    // The hand-built, library-signed bundle (as items 4-8 make them, without their hostile detail).
    let site = Site::new();
    let content = small_content();
    let manifest = manifest_bytes("handmade");
    let json = index_of("handmade", "1.0.0", &manifest, &content).to_canonical_json();
    let handmade = site.bundle("handmade.bundle.tar.zst", &json, &manifest, &content);
    let m = run_measured(
        &scratch,
        "verify handmade",
        &verify_args(&handmade, &site.pubkey),
        Duration::from_secs(60),
    );
    failures.check(
        &m,
        &Expect {
            max_rss_kib: Some(RSS_LIMIT_KIB),
            ..Expect::plain(0, &["OK: handmade 1.0.0"])
        },
    );
    let m = run_measured(
        &scratch,
        "inspect handmade",
        &inspect_args(&handmade),
        Duration::from_secs(60),
    );
    failures.check(&m, &Expect::plain(0, &[]));
    if !m.run.stdout.contains("handmade 1.0.0") {
        failures.push(format!(
            "inspect handmade: stdout lacks the name\n{}",
            m.run.stdout
        ));
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------
// 1. Bounded before the signature
// ---------------------------------------------------------------------------

/// Runs `verify` and `inspect` on `bundle` (outputs under `runs-WHAT`), each held to `want`.
fn verify_and_inspect(site: &Site, bundle: &Path, what: &str, want: &Expect<'_>) -> Failures {
    let scratch = site.ws.mkdir(format!("runs-{what}"));
    let mut failures = Failures::default();
    let deadline = Duration::from_secs(30);
    let verify = verify_args(bundle, &site.pubkey);
    failures.measure(&scratch, &format!("verify {what}"), &verify, deadline, want);
    let inspect = inspect_args(bundle);
    failures.measure(
        &scratch,
        &format!("inspect {what}"),
        &inspect,
        deadline,
        want,
    );
    failures
}

/// Runs `verify` and `inspect` on a pre-signature bomb: exit 3, `before the signature`,
/// under 10 s and 100 MiB each.
fn expect_refused_before_signature(site: &Site, bundle: &Path, what: &str) -> Failures {
    let want = Expect {
        max_rss_kib: Some(RSS_LIMIT_KIB),
        max_time: Some(Duration::from_secs(10)),
        ..Expect::plain(3, &["before the signature"])
    };
    verify_and_inspect(site, bundle, what, &want)
}

/// A genuine small signed bundle's entries, for what follows a bomb.
fn small_signed_entries(site: &Site) -> Vec<RawEntry> {
    let content = small_content();
    let manifest = manifest_bytes("bombed");
    let json = index_of("bombed", "1.0.0", &manifest, &content).to_canonical_json();
    site.entries(&json, &manifest, &content)
}

/// A PAX extended header whose `size` says 2 GiB in front of `bundle/index.json`, whose
/// own ustar header says its real (small) size; 2 GiB of data follow, as the PAX size says.
#[test]
fn pax_size_bomb_before_the_signature_is_refused_cheaply() {
    let site = Site::new();
    let entries = small_signed_entries(&site);
    let mut out = TarOut::create(&site.ws.path("pax-bomb.bundle.tar.zst"));
    out.entry(&RawEntry::new(
        b"PaxHeaders/index.json",
        EntryType::XHeader,
        &pax_record("size", &BOMB_BYTES.to_string()),
    ));
    let index = &entries[0];
    out.header(&header_with_size(
        INDEX_PATH.as_bytes(),
        EntryType::Regular,
        index.data.len() as u64,
    ));
    out.bytes(&index.data);
    out.zeros(BOMB_BYTES - index.data.len() as u64);
    out.pad(BOMB_BYTES);
    for e in &entries[1..] {
        out.entry(e);
    }
    let bomb = out.finish();
    let size = fs::metadata(&bomb).unwrap().len();
    assert!(size < 4 << 20, "the bomb is {size} bytes compressed");
    expect_refused_before_signature(&site, &bomb, "pax-size-bomb").assert_none();
}

/// A GNU long-name entry (`L`) of 2 GiB in front of `bundle/index.json`.
#[test]
fn gnu_long_name_bomb_before_the_signature_is_refused_cheaply() {
    let site = Site::new();
    let entries = small_signed_entries(&site);
    let mut out = TarOut::create(&site.ws.path("longname-bomb.bundle.tar.zst"));
    out.header(&header_with_size(
        b"././@LongLink",
        EntryType::GNULongName,
        BOMB_BYTES,
    ));
    out.zeros(BOMB_BYTES);
    out.pad(BOMB_BYTES);
    for e in &entries {
        out.entry(e);
    }
    let bomb = out.finish();
    let size = fs::metadata(&bomb).unwrap().len();
    assert!(size < 4 << 20, "the bomb is {size} bytes compressed");
    expect_refused_before_signature(&site, &bomb, "gnu-long-name-bomb").assert_none();
}

/// 100 000 small global PAX headers (`g`) in front of an otherwise genuine signed bundle.
#[test]
fn global_pax_header_flood_before_the_signature_is_refused_cheaply() {
    let site = Site::new();
    let entries = small_signed_entries(&site);
    let mut out = TarOut::create(&site.ws.path("global-flood.bundle.tar.zst"));
    let global = RawEntry::new(
        b"pax_global_header",
        EntryType::XGlobalHeader,
        &pax_record("comment", "flood"),
    );
    for _ in 0..100_000 {
        out.entry(&global);
    }
    for e in &entries {
        out.entry(e);
    }
    let flood = out.finish();
    expect_refused_before_signature(&site, &flood, "global-pax-flood").assert_none();
}

// ---------------------------------------------------------------------------
// 2. After the signature: a PAX size that disagrees with the signed size
// ---------------------------------------------------------------------------

/// A genuine bundle whose smallest content entry keeps its signed size in its ustar header,
/// but a PAX `size` record in front of it declares 300 MiB more (and the data is padded out
/// with that many zeros). `verify` and `install` refuse it naming the entry, cheaply, and
/// install leaves the web root as it was.
#[test]
fn pax_size_disagreeing_with_the_signed_size_is_refused_before_the_destination() {
    const EXTRA: u64 = 300 << 20;
    let ws = Workspace::new();
    let src = make_source_bundle(&ws.path("source"));
    let entries = read_tar(&decompress(&fs::read(&src.bundle).unwrap()));
    let target = (3..entries.len())
        .min_by_key(|&i| entries[i].data.len())
        .expect("content entries");
    let target_path = entries[target].path();

    let mut out = TarOut::create(&ws.path("pax-oversize.bundle.tar.zst"));
    for (i, e) in entries.iter().enumerate() {
        if i != target {
            out.entry(e);
            continue;
        }
        let declared = e.data.len() as u64 + EXTRA;
        out.entry(&RawEntry::new(
            b"PaxHeaders/entry",
            EntryType::XHeader,
            &pax_record("size", &declared.to_string()),
        ));
        // The original header: the signed size, its checksum intact.
        assert_eq!(e.header.size().unwrap(), e.data.len() as u64);
        out.header(&e.header);
        out.bytes(&e.data);
        out.zeros(EXTRA);
        out.pad(declared);
    }
    let crafted = out.finish();

    let scratch = ws.mkdir("runs");
    let web = ws.mkdir("web");
    ws.write("web/index.html", "<h1>site</h1>\n");
    ws.write("web/files/local/notes.txt", "operator notes\n");
    let before = tree_snapshot(&web);

    // The 300 MiB must never reach a file: the genuine entries staged before it are ~10 MiB.
    let needles = [target_path.as_str(), "signed index says"];
    let want = Expect {
        max_rss_kib: Some(RSS_LIMIT_KIB),
        max_time: Some(Duration::from_secs(15)),
        max_written_bytes: Some(64 << 20),
        ..Expect::plain(3, &needles)
    };
    let mut failures = Failures::default();
    let deadline = Duration::from_secs(60);
    let m = run_measured(
        &scratch,
        "verify pax-oversize",
        &verify_args(&crafted, &src.pubkey),
        deadline,
    );
    failures.check(&m, &want);
    let mut install = verify_args(&crafted, &src.pubkey);
    install[0] = os("install");
    install.extend([os("--web-root"), web.clone().into()]);
    let m = run_measured(&scratch, "install pax-oversize", &install, deadline);
    failures.check(&m, &want);
    let after = tree_snapshot(&web);
    if after != before {
        failures.push(format!(
            "install pax-oversize: the web root changed\nbefore: {before:#?}\nafter: {after:#?}"
        ));
    }
    let staging: Vec<String> = fs::read_dir(&web)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bundle-staging-"))
        .collect();
    if !staging.is_empty() {
        failures.push(format!(
            "install pax-oversize: staging left behind: {staging:?}"
        ));
    }
    failures.assert_none();
}

// ---------------------------------------------------------------------------
// 3. A seek table declaring an absurd frame
// ---------------------------------------------------------------------------

/// A 2 GiB sparse file: a real zstd frame at the start, zeros (holes), and a seek table at
/// the end declaring ONE frame of the whole data length that decompresses to 1 MiB.
#[test]
fn seek_table_with_an_absurd_frame_is_refused_without_allocating_it() {
    const DATA_LEN: u64 = 2 << 30;
    let ws = Workspace::new();
    let site = Site::new();
    let path = ws.path("absurd-frame.bundle.tar.zst");
    {
        let mut f = File::create(&path).unwrap();
        f.write_all(&zstd::encode_all(&b"not much"[..], 3).unwrap())
            .unwrap();
        f.set_len(DATA_LEN).unwrap();
        f.seek(SeekFrom::Start(DATA_LEN)).unwrap();
        f.write_all(&encode_seek_table(&[FrameSizes {
            compressed: u32::try_from(DATA_LEN).unwrap(),
            decompressed: 1 << 20,
        }]))
        .unwrap();
    }
    let scratch = ws.mkdir("runs");
    let mut failures = Failures::default();
    let m = run_measured(
        &scratch,
        "verify absurd-frame",
        &verify_args(&path, &site.pubkey),
        Duration::from_secs(60),
    );
    failures.check(
        &m,
        &Expect {
            max_rss_kib: Some(RSS_LIMIT_KIB),
            max_time: Some(Duration::from_secs(10)),
            ..Expect::plain(3, &["seek table"])
        },
    );
    failures.assert_none();
}

// ---------------------------------------------------------------------------
// 4. Linear on a big index
// ---------------------------------------------------------------------------

/// A correctly signed index of N = 250 000 file entries (plus the manifest's), each the one
/// entry of its own artifact, and no content: about 58 MB, near the 64 MiB index limit
/// (500 000 entries with their 64-digit sha256 and an artifact each do not fit under it).
/// Today's `inspect` matches artifacts to entries in O(artifacts × entries). `inspect
/// --json` reports them all and `verify` says the bundle is incomplete, each in under 20 s.
#[test]
fn a_big_signed_index_is_handled_in_linear_time() {
    const N: usize = 250_000;
    let site = Site::new();
    let manifest = manifest_bytes("big-index");
    let mut index = index_of("big-index", "1.0.0", &manifest, &[]);
    let digest = Sha256Digest::of_bytes(b"x");
    for i in 0..N {
        let path = format!("files/h/d{}/f{i}", i / 1000);
        index.artifacts.push(Artifact {
            kind: EntryKind::File,
            source: format!("http://h/f{i}"),
            dest: path.clone(),
            sha256: None,
            size: 1,
            external: Vec::new(),
        });
        index.entries.push(IndexEntry {
            path,
            size: 1,
            sha256: digest,
            kind: EntryKind::File,
            artifacts: vec![i],
            in_place: false,
        });
    }
    index.entries.sort_by(|a, b| a.path.cmp(&b.path));
    let json = index.to_canonical_json();
    assert!(
        (json.len() as u64) < MAX_INDEX_BYTES,
        "the index is {} bytes, over the {MAX_INDEX_BYTES}-byte limit",
        json.len()
    );
    eprintln!("[big-index] signed index of {} bytes", json.len());
    let bundle = site.bundle("big-index.bundle.tar.zst", &json, &manifest, &[]);
    let scratch = site.ws.mkdir("runs");
    let limit = Duration::from_secs(20);
    let deadline = Duration::from_secs(25);
    let mut failures = Failures::default();

    let mut args = inspect_args(&bundle);
    args.push(os("--json"));
    let m = run_measured(&scratch, "inspect --json big-index", &args, deadline);
    failures.check(
        &m,
        &Expect {
            max_time: Some(limit),
            ..Expect::plain(0, &[])
        },
    );
    if m.run.code == 0 {
        #[derive(serde::Deserialize)]
        struct Report {
            totals: Totals,
        }
        #[derive(serde::Deserialize)]
        struct Totals {
            entries: u64,
        }
        let text = fs::read(&m.stdout_path).unwrap();
        match serde_json::from_slice::<Report>(&text) {
            Ok(r) if r.totals.entries == N as u64 + 1 => {}
            Ok(r) => failures.push(format!(
                "inspect --json big-index: totals.entries {}, expected {} (the manifest and {N} files)",
                r.totals.entries,
                N + 1
            )),
            Err(e) => failures.push(format!("inspect --json big-index: not JSON: {e}")),
        }
    }
    let m = run_measured(
        &scratch,
        "verify big-index",
        &verify_args(&bundle, &site.pubkey),
        deadline,
    );
    failures.check(
        &m,
        &Expect {
            max_time: Some(limit),
            ..Expect::plain(3, &["incomplete"])
        },
    );
    failures.assert_none();
}

// ---------------------------------------------------------------------------
// 5-8. Checks on the signed index itself
// ---------------------------------------------------------------------------

/// Two signed entries of 2^63 bytes each: their sum overflows u64.
#[test]
fn signed_sizes_that_overflow_are_refused() {
    let site = Site::new();
    let manifest = manifest_bytes("overflow");
    let content = vec![
        ("files/h/a".to_string(), b"a".to_vec()),
        ("files/h/b".to_string(), b"b".to_vec()),
    ];
    let mut index = index_of("overflow", "1.0.0", &manifest, &content);
    for e in index.entries.iter_mut().skip(1) {
        e.size = 1 << 63;
    }
    for a in index.artifacts.iter_mut() {
        a.size = 1 << 63;
    }
    let bundle = site.bundle(
        "overflow.bundle.tar.zst",
        &index.to_canonical_json(),
        &manifest,
        &[],
    );
    let scratch = site.ws.mkdir("runs");
    let want = Expect::plain(3, &["overflow"]);
    let mut failures = Failures::default();
    let deadline = Duration::from_secs(60);
    let m = run_measured(
        &scratch,
        "verify overflow",
        &verify_args(&bundle, &site.pubkey),
        deadline,
    );
    failures.check(&m, &want);
    let m = run_measured(
        &scratch,
        "inspect overflow",
        &inspect_args(&bundle),
        deadline,
    );
    failures.check(&m, &want);
    failures.assert_none();
}

/// A signed entry of a kind this tool does not know: the bundle needs a newer tool (exit 2),
/// it is not corrupt.
#[test]
fn an_unknown_entry_kind_asks_for_a_newer_tool() {
    let site = Site::new();
    let manifest = manifest_bytes("future");
    let content = vec![(
        "files/h/module.wasm".to_string(),
        b"\0asm\x01\0\0\0".to_vec(),
    )];
    let index = index_of("future", "1.0.0", &manifest, &content);
    let json = index.to_canonical_json();
    let entry = &index.entries[1];
    let as_file = format!(
        "\"path\":\"{}\",\"size\":{},\"sha256\":\"{}\",\"kind\":\"file\"",
        entry.path, entry.size, entry.sha256
    );
    let json = replace_once(
        &json,
        &as_file,
        &as_file.replace("\"kind\":\"file\"", "\"kind\":\"wasm-module\""),
    );
    let bundle = site.bundle("future.bundle.tar.zst", &json, &manifest, &content);
    let scratch = site.ws.mkdir("runs");
    let mut failures = Failures::default();
    let m = run_measured(
        &scratch,
        "verify wasm-module",
        &verify_args(&bundle, &site.pubkey),
        Duration::from_secs(60),
    );
    failures.check(&m, &Expect::plain(2, &["wasm-module", "newer"]));
    failures.assert_none();
}

/// Names and versions outside `[A-Za-z0-9._+~-]` (first character alphanumeric, at most
/// 128) are refused, content present and intact; one at the limits of the rule verifies.
#[test]
fn unsafe_names_and_versions_are_refused() {
    let site = Site::new();
    let scratch = site.ws.mkdir("runs");
    let content = small_content();
    let mut failures = Failures::default();
    let deadline = Duration::from_secs(60);
    let cases: [(&str, &str, &str); 5] = [
        (
            "name-newline",
            "evil\nfiles_repo: http://attacker/",
            "1.0.0",
        ),
        ("version-space", "hostile", "1.0 beta"),
        ("version-slash", "hostile", "1.0/../../etc"),
        ("name-leading-dash", "-hostile", "1.0.0"),
        ("name-too-long", &"a".repeat(129), "1.0.0"),
    ];
    for (tag, name, version) in cases {
        let manifest = manifest_bytes(name);
        let json = index_of(name, version, &manifest, &content).to_canonical_json();
        let bundle = site.bundle(&format!("{tag}.bundle.tar.zst"), &json, &manifest, &content);
        let field = if tag.starts_with("name") {
            "name"
        } else {
            "version"
        };
        let m = run_measured(
            &scratch,
            &format!("verify {tag}"),
            &verify_args(&bundle, &site.pubkey),
            deadline,
        );
        failures.check(&m, &Expect::plain(3, &["verification failed", field]));
    }
    // Control: every allowed character, 128 of them, in name and version.
    let allowed = format!("A{}", "z9._+~-".repeat(19)) + "abcdefgh";
    let allowed = &allowed[..128];
    let manifest = manifest_bytes(allowed);
    let json = index_of(allowed, allowed, &manifest, &content).to_canonical_json();
    let bundle = site.bundle("allowed.bundle.tar.zst", &json, &manifest, &content);
    let m = run_measured(
        &scratch,
        "verify allowed-name",
        &verify_args(&bundle, &site.pubkey),
        deadline,
    );
    failures.check(
        &m,
        &Expect::plain(0, &[&format!("OK: {allowed} {allowed}")]),
    );
    failures.assert_none();
}

/// A signed path that is both a file and a directory of another signed path, and a signed
/// path with a control character, content present and intact: verification failures.
#[test]
fn clashing_paths_and_control_characters_in_a_signed_index_are_refused() {
    let site = Site::new();
    let scratch = site.ws.mkdir("runs");
    let mut failures = Failures::default();
    let deadline = Duration::from_secs(60);

    let clash = vec![
        ("files/h/download".to_string(), b"a file\n".to_vec()),
        (
            "files/h/download/v1/tool".to_string(),
            b"#!/bin/sh\n".to_vec(),
        ),
    ];
    let manifest = manifest_bytes("clash");
    let json = index_of("clash", "1.0.0", &manifest, &clash).to_canonical_json();
    let bundle = site.bundle("clash.bundle.tar.zst", &json, &manifest, &clash);
    let m = run_measured(
        &scratch,
        "verify path-clash",
        &verify_args(&bundle, &site.pubkey),
        deadline,
    );
    failures.check(
        &m,
        &Expect::plain(3, &["verification failed", "files/h/download/v1/tool"]),
    );
    // `files/h/download` on its own too (not only as the prefix of the other path).
    let alone = m
        .run
        .stderr
        .match_indices("files/h/download")
        .any(|(at, hit)| !m.run.stderr[at + hit.len()..].starts_with("/v1/tool"));
    if !alone {
        failures.push(format!(
            "verify path-clash: stderr does not name `files/h/download` itself\n{}",
            m.run.stderr
        ));
    }

    let control = vec![("files/h/a\nb".to_string(), b"newline\n".to_vec())];
    let manifest = manifest_bytes("control");
    let json = index_of("control", "1.0.0", &manifest, &control).to_canonical_json();
    let bundle = site.bundle("control-char.bundle.tar.zst", &json, &manifest, &control);
    let m = run_measured(
        &scratch,
        "verify control-char",
        &verify_args(&bundle, &site.pubkey),
        deadline,
    );
    failures.check(&m, &Expect::plain(3, &["verification failed", "files/h/a"]));
    failures.assert_none();
}

// ---------------------------------------------------------------------------
// 10. Attack review: deep paths, repeated artifact references, large zstd windows
// ---------------------------------------------------------------------------

/// A signed index of 2000 empty entries whose paths are ~4 KB deep (`a/a/…/a/NNNNNN`, 2040
/// slashes each): checking that no path is the directory of another is linear in the total
/// length of the paths (it took 35 s before, quadratic in the depth). The paths are valid,
/// so `inspect` reports the bundle (exit 0) in a few seconds (12 s allowed for a debug
/// build on a busy 2-core machine).
#[test]
fn deep_paths_are_checked_in_linear_time() {
    const N: usize = 2000;
    const DEPTH: usize = 2040;
    let site = Site::new();
    let manifest = manifest_bytes("deep");
    let mut index = index_of("deep", "1.0.0", &manifest, &[]);
    let prefix = "a/".repeat(DEPTH);
    let empty = Sha256Digest::of_bytes(b"");
    // Already in path order: same prefix, increasing number.
    index.entries.extend((0..N).map(|i| IndexEntry {
        path: format!("{prefix}{i:06}"),
        size: 0,
        sha256: empty,
        kind: EntryKind::File,
        artifacts: Vec::new(),
        in_place: false,
    }));
    let json = index.to_canonical_json();
    let bundle = site.bundle("deep.bundle.tar.zst", &json, &manifest, &[]);
    let scratch = site.ws.mkdir("runs");
    let mut failures = Failures::default();
    let want = Expect {
        max_time: Some(Duration::from_secs(12)),
        ..Expect::plain(0, &[])
    };
    let args = inspect_args(&bundle);
    let deadline = Duration::from_secs(40);
    let m = failures.measure(&scratch, "inspect deep-paths", &args, deadline, &want);
    if m.run.code == 0 && !m.run.stdout.contains("deep 1.0.0") {
        failures.push(format!(
            "inspect deep-paths: stdout lacks the name\n{}",
            m.run.stdout
        ));
    }
    failures.assert_none();
}

/// Runs `verify` and `inspect` on a bundle whose signed index is refused: each exits 3
/// with `needles` in stderr, within `max_rss_kib` and 10 s.
fn expect_refused_index(
    site: &Site,
    bundle: &Path,
    what: &str,
    needles: &[&str],
    max_rss_kib: u64,
) {
    let want = Expect {
        max_rss_kib: Some(max_rss_kib),
        max_time: Some(Duration::from_secs(10)),
        ..Expect::plain(3, needles)
    };
    verify_and_inspect(site, bundle, what, &want).assert_none();
}

/// A signed entry naming its one artifact three million times (`[0,0,0,…]`), and one naming
/// two artifacts out of order (`[1,0]`): refused as a verification failure before any
/// report is built (a report listing every reference held gigabytes), cheaply.
#[test]
fn repeated_or_unordered_artifact_references_are_refused() {
    const REPEATS: usize = 3_000_000;
    let site = Site::new();
    let content = small_content();
    let needles = ["verification failed", "out of order or twice"];

    let manifest = manifest_bytes("repeated");
    let mut index = index_of("repeated", "1.0.0", &manifest, &content[..1]);
    index.entries[1].artifacts = vec![0; REPEATS];
    let json = index.to_canonical_json();
    let bundle = site.bundle("repeated.bundle.tar.zst", &json, &manifest, &content[..1]);
    expect_refused_index(&site, &bundle, "repeated-refs", &needles, 150 * 1024);

    let manifest = manifest_bytes("unordered");
    let mut index = index_of("unordered", "1.0.0", &manifest, &content);
    index.entries[1].artifacts = vec![1, 0];
    let json = index.to_canonical_json();
    let bundle = site.bundle("unordered.bundle.tar.zst", &json, &manifest, &content);
    expect_refused_index(&site, &bundle, "unordered-refs", &needles, RSS_LIMIT_KIB);
}

/// A signed entry with a ~4 KB path naming 17 000 distinct artifacts in order: a report
/// listing each artifact's entries would hold (4 KB + 32) × 17 000 > 64 MiB, more than
/// any bundle makes, so it is refused.
#[test]
fn more_artifact_references_than_any_bundle_makes_are_refused() {
    const ARTIFACTS: usize = 17_000;
    let path = format!("files/h/{}", "x".repeat(3990));
    assert!(
        (path.len() + 32) * ARTIFACTS > MAX_INDEX_BYTES as usize,
        "not over the bound"
    );
    let site = Site::new();
    let manifest = manifest_bytes("references");
    let mut index = index_of("references", "1.0.0", &manifest, &[]);
    index.artifacts = (0..ARTIFACTS)
        .map(|i| Artifact {
            kind: EntryKind::File,
            source: format!("http://h/a{i}"),
            dest: format!("files/h/a{i}"),
            sha256: None,
            size: 0,
            external: Vec::new(),
        })
        .collect();
    index.entries.push(IndexEntry {
        path,
        size: 0,
        sha256: Sha256Digest::of_bytes(b""),
        kind: EntryKind::File,
        artifacts: (0..ARTIFACTS).collect(),
        in_place: false,
    });
    let json = index.to_canonical_json();
    let bundle = site.bundle("references.bundle.tar.zst", &json, &manifest, &[]);
    expect_refused_index(
        &site,
        &bundle,
        "too-many-refs",
        &["verification failed", "more artifact references"],
        RSS_LIMIT_KIB,
    );
}

/// `zstd -dc IN | zstd ARGS… -o OUT` with stock zstd (reading a pipe, so the size of the
/// input is unknown and zstd keeps the window it was asked for).
fn recompress_with_stock_zstd(input: &Path, out: &Path, args: &[&str]) {
    require_tool("zstd");
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"in="$1" out="$2" && shift 2 && zstd -q -dc -- "$in" | zstd -q -f "$@" -o "$out""#)
        .arg("sh")
        .arg(input)
        .arg(out)
        .args(args)
        .status()
        .expect("spawn sh");
    assert!(status.success(), "zstd {args:?} failed: {status}");
}

/// The window a zstd frame header asks for, as a log2 (`None` for a single-segment frame,
/// which has no window descriptor).
fn window_log(frame: &[u8]) -> Option<u32> {
    assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
    let single_segment = frame[4] & 0x20 != 0;
    (!single_segment).then(|| 10 + u32::from(frame[5] >> 3))
}

/// A genuine (hand-built, signed) bundle recompressed by stock `zstd --ultra -22
/// --long=27`, without a seek table: its frame asks for a 128 MiB window, which the
/// decoder would allocate before anything is checked; verify refuses it by the frame
/// header, naming the window, under 100 MiB. The same bundle recompressed by `zstd -19`
/// (an 8 MiB window) still verifies.
#[test]
fn a_zstd_window_over_the_cap_is_refused_by_its_header() {
    let site = Site::new();
    let content = small_content();
    let manifest = manifest_bytes("window");
    let json = index_of("window", "1.0.0", &manifest, &content).to_canonical_json();
    let genuine = site.bundle("window.bundle.tar.zst", &json, &manifest, &content);
    let long = site.ws.path("long.bundle.tar.zst");
    recompress_with_stock_zstd(&genuine, &long, &["--ultra", "-22", "--long=27"]);
    let header = fs::read(&long).unwrap();
    assert_eq!(
        window_log(&header),
        Some(27),
        "stock zstd did not ask for a 128 MiB window"
    );
    let plain = site.ws.path("plain.bundle.tar.zst");
    recompress_with_stock_zstd(&genuine, &plain, &["-19"]);

    let scratch = site.ws.mkdir("runs");
    let deadline = Duration::from_secs(60);
    let mut failures = Failures::default();
    let refused = Expect {
        max_rss_kib: Some(RSS_LIMIT_KIB),
        ..Expect::plain(3, &["window"])
    };
    let args = verify_args(&long, &site.pubkey);
    failures.measure(&scratch, "verify long-window", &args, deadline, &refused);
    let verified = Expect::plain(0, &["OK: window 1.0.0"]);
    let args = verify_args(&plain, &site.pubkey);
    failures.measure(&scratch, "verify zstd-19", &args, deadline, &verified);
    failures.assert_none();
}

/// The marks of a delta are part of what the signature covers, and checked: an entry
/// marked in place in an index that is not a delta, or of a kind a delta never leaves out,
/// is a malformed index; one marked in place that is in the archive all the same is
/// refused; one marked in place and absent verifies (it is the install that checks the
/// site holds it), and verify says so.
#[test]
fn delta_marks_are_checked() {
    let site = Site::new();
    let content = small_content();
    let manifest = manifest_bytes("delta");
    let base = DeltaBase {
        from: "bundle".into(),
        sha256: Sha256Digest::of_bytes(b"an earlier index"),
        bundles: Vec::new(),
    };
    // Entries are sorted by path: [manifest, docs/readme.txt, tools/run.sh].
    let marked = |base: Option<DeltaBase>| {
        let mut index = index_of("delta", "1.0.0", &manifest, &content);
        index.base = base;
        index.entries[1].in_place = true;
        index
    };

    let json = marked(None).to_canonical_json();
    let bundle = site.bundle(
        "not-a-delta.bundle.tar.zst",
        &json,
        &manifest,
        &content[1..],
    );
    expect_refused_index(
        &site,
        &bundle,
        "in-place-without-base",
        &[
            "verification failed",
            "marked in place but the bundle is not a delta",
        ],
        RSS_LIMIT_KIB,
    );

    let mut index = marked(Some(base.clone()));
    index.entries[1].kind = EntryKind::OciLayout;
    let json = index.to_canonical_json();
    let bundle = site.bundle("layout.bundle.tar.zst", &json, &manifest, &content[1..]);
    expect_refused_index(
        &site,
        &bundle,
        "in-place-layout",
        &["verification failed", "which a delta never leaves out"],
        RSS_LIMIT_KIB,
    );

    let json = marked(Some(base.clone())).to_canonical_json();
    let present = site.bundle("present.bundle.tar.zst", &json, &manifest, &content);
    let run = run_bundle(&verify_args(&present, &site.pubkey), &[]);
    run.assert_code(3).assert_stderr_contains(
        "the signed index marks it as left out of this delta, yet it is in the archive",
    );

    let absent = site.bundle("absent.bundle.tar.zst", &json, &manifest, &content[1..]);
    let mut args = verify_args(&absent, &site.pubkey);
    run_bundle(&args, &[])
        .assert_ok()
        .assert_stderr_contains("of this delta (1 more");
    args.push("--json".into());
    run_bundle(&args, &[])
        .assert_ok()
        .assert_stdout_contains("\"in_place_entries\": 1");
    let run = run_bundle(&inspect_args(&absent), &[]);
    run.assert_ok()
        .assert_stdout_contains("leaves out 1 entries");
}
