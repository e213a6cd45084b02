//! The tamper matrix: tampered variants of a valid bundle made by the real binary (SPEC §3
//! "Properties that tests pin down", §5 exit code 3), reusable by every command that reads a
//! bundle (`verify`, `install`, …).
//!
//! [`make_source_bundle`] makes the good bundle (keygen, lock and create against a private
//! Apache); [`TamperKeys::generate`] adds a second, untrusted key pair; [`tamper_cases`] writes
//! one file per tamper and says how the reader must fail on it ([`TamperCase::check`]).
//!
//! Variants are crafted two ways. Compressed-level tampers (byte flips, truncation, trailing
//! bytes, a lying seek table) edit the original bytes. Tar-level tampers decompress to a tar
//! in memory, walk it, rebuild it entry by entry with the original headers and recompress it:
//! as one plain zstd stream (no seek table, the `zstd -dc | zstd` case) or, for the cases
//! marked `-seekable`, through the library's own frame writer (frames cut at every entry and a
//! seek table, as `bundle create` writes). [`rebuild_unchanged`] is the positive control for
//! that crafting code: with no tamper it gives back a bundle that verifies.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airgap_bundle::bundle::frames::{self, FrameSizes, FrameWriter};
use airgap_bundle::bundle::index::{INDEX_PATH, INDEX_SIG_PATH, Index, MANIFEST_PATH};
use airgap_bundle::bundle::signing::{SecretKey, Signature};
use airgap_bundle::digest::Sha256Digest;
use tar::{EntryType, Header};

use crate::common::{Apache, Run, run_bundle};

/// Size of the large file of the source bundle: over 9 MiB, so that its entry spans
/// several frames (the writer starts a new frame at least every 4 MiB of tar bytes).
pub const BIG_FILE_BYTES: usize = 9 * 1024 * 1024 + 300 * 1024;

/// The zstd level of recompressed variants (the writer's own level).
const LEVEL: i32 = 3;

/// Seek table layout (zstd seekable format): skippable-frame header, 8 bytes per frame, footer.
const TABLE_HEADER: usize = 8;
const TABLE_ENTRY: usize = 8;
const TABLE_FOOTER: usize = 9;

// ---------------------------------------------------------------------------
// The source bundle and the keys
// ---------------------------------------------------------------------------

/// A valid bundle made by the real binary, and what went into it.
pub struct SourceBundle {
    pub bundle: PathBuf,
    /// The signing key (unencrypted) and the public key a verifier trusts.
    pub key: PathBuf,
    pub pubkey: PathBuf,
    pub lock: PathBuf,
    /// Paths of the content entries (`files/127.0.0.1:PORT/…`), in bundle order.
    pub content: Vec<String>,
    /// The entry of the file larger than 9 MiB.
    pub big_entry: String,
}

/// Deterministic bytes that compress about 2:1 (a 16-symbol alphabet), so the bundle's
/// frames are real compressed data, not runs.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b"0123456789abcdef"[(x >> 7) as usize & 15]
        })
        .collect()
}

fn write_world_readable(path: &Path, bytes: &[u8]) {
    let parent = path.parent().expect("a parent directory");
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod 644");
}

fn mkdir_755(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod 755");
}

#[track_caller]
fn bundle_ok(args: &[&OsStr]) -> Run {
    let run = run_bundle(args, &[]);
    run.assert_ok();
    run
}

/// Makes the good bundle under `dir` (which Apache's `nobody` workers must be able to
/// traverse: a `Workspace` or a directory inside one): four files served by a private Apache
/// (one over 9 MiB), `bundle keygen --no-password`, `bundle lock`, `bundle create --cache`.
pub fn make_source_bundle(dir: &Path) -> SourceBundle {
    mkdir_755(dir);
    let www = dir.join("www");
    let files: [(&str, Vec<u8>); 4] = [
        ("big.bin", pattern(BIG_FILE_BYTES, 0x9e37_79b9)),
        ("docs/readme.txt", b"air-gapped readme\n".repeat(120)),
        ("tools/kubeadm", pattern(70_000, 7)),
        (
            "tools/small.sh",
            b"#!/bin/sh\necho tamper-source\n".to_vec(),
        ),
    ];
    for dir in ["", "docs", "tools"] {
        mkdir_755(&www.join(dir));
    }
    for (rel, bytes) in &files {
        write_world_readable(&www.join(rel), bytes);
    }
    let apache = Apache::start(&www);

    let mut manifest =
        String::from("apiVersion: bundle/v1\nname: tamper-source\nversion: 1.0.0\nfiles:\n");
    for (rel, _) in &files {
        manifest.push_str(&format!("  - url: {}\n", apache.url(rel)));
    }
    let manifest_path = dir.join("manifest.yaml");
    write_world_readable(&manifest_path, manifest.as_bytes());

    let prefix = dir.join("site");
    let key = dir.join("site.key");
    let pubkey = dir.join("site.pub");
    let lock = dir.join("source.lock.yaml");
    let cache = dir.join("cache");
    let bundle = dir.join("source.bundle.tar.zst");
    let os = OsStr::new;
    crate::common::keygen(&prefix);
    bundle_ok(&[
        os("lock"),
        manifest_path.as_os_str(),
        os("-o"),
        lock.as_os_str(),
        os("--cache"),
        cache.as_os_str(),
    ]);
    bundle_ok(&[
        os("create"),
        lock.as_os_str(),
        os("-o"),
        bundle.as_os_str(),
        os("--key"),
        key.as_os_str(),
        os("--cache"),
        cache.as_os_str(),
    ]);
    let host = format!("127.0.0.1:{}", apache.port);
    drop(apache);

    let mut content: Vec<String> = files
        .iter()
        .map(|(rel, _)| format!("files/{host}/{rel}"))
        .collect();
    content.sort();
    SourceBundle {
        bundle,
        key,
        pubkey,
        lock,
        content,
        big_entry: format!("files/{host}/big.bin"),
    }
}

/// Key material for the signature cases.
pub struct TamperKeys {
    /// The public key the good bundle verifies with (what the operator trusts).
    pub trusted_pub: PathBuf,
    /// A second key pair, made by `bundle keygen --no-password`, that nobody trusts.
    pub other_key: PathBuf,
    pub other_pub: PathBuf,
}

impl TamperKeys {
    /// Generates the untrusted key pair as `dir/other.key` and `dir/other.pub`.
    pub fn generate(dir: &Path, trusted_pub: &Path) -> TamperKeys {
        mkdir_755(dir);
        let prefix = dir.join("other");
        crate::common::keygen(&prefix);
        TamperKeys {
            trusted_pub: trusted_pub.to_path_buf(),
            other_key: dir.join("other.key"),
            other_pub: dir.join("other.pub"),
        }
    }

    fn other_secret(&self) -> SecretKey {
        SecretKey::load(&self.other_key, || {
            unreachable!("the second key was made with --no-password")
        })
        .unwrap_or_else(|e| panic!("load {}: {e}", self.other_key.display()))
    }
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// One tampered bundle and how a reader must fail on it.
#[derive(Debug, Clone)]
pub struct TamperCase {
    pub name: &'static str,
    pub bundle: PathBuf,
    /// The key to pass as `--pubkey`: the trusted one, except in the wrong-key case.
    pub pubkey: PathBuf,
    pub expect_code: i32,
    /// What failed: a substring of stderr.
    pub expect_message: &'static str,
    /// The entry the message must name, when the tamper is about one entry (the full
    /// path; it holds the Apache port, so it is not `'static`).
    pub expect_entry: Option<String>,
}

impl TamperCase {
    /// Why `run` is not the outcome this case demands, or `None` when it is: the exit
    /// code, no panic, "verification failed" (for exit 3), the message and the entry.
    pub fn mismatch(&self, run: &Run) -> Option<String> {
        let mut why = Vec::new();
        if run.stderr.contains("panicked")
            || run.stderr.contains("RUST_BACKTRACE")
            || run.stderr.contains("internal error")
        {
            why.push("it panicked".to_string());
        }
        if run.code != self.expect_code {
            why.push(format!(
                "exit code {}, expected {}",
                run.code, self.expect_code
            ));
        }
        let mut needles = vec![self.expect_message];
        if self.expect_code == 3 && self.expect_message != "verification failed" {
            needles.push("verification failed");
        }
        if let Some(entry) = &self.expect_entry {
            needles.push(entry);
        }
        for needle in needles {
            if !run.stderr.contains(needle) {
                why.push(format!("stderr does not contain {needle:?}"));
            }
        }
        if why.is_empty() {
            return None;
        }
        Some(format!(
            "case `{}` ({}): {}\n--- stderr ---\n{}--------------",
            self.name,
            self.bundle.display(),
            why.join("; "),
            run.stderr
        ))
    }

    #[track_caller]
    pub fn check(&self, run: &Run) {
        if let Some(why) = self.mismatch(run) {
            panic!("{why}");
        }
    }
}

/// One tar entry of a bundle: its header as stored and its data.
#[derive(Clone)]
pub struct RawEntry {
    pub header: Header,
    pub data: Vec<u8>,
}

impl RawEntry {
    pub fn path(&self) -> String {
        String::from_utf8_lossy(&self.header.path_bytes()).into_owned()
    }

    /// A new entry whose name bytes are written into the header as given (the tar crate's
    /// `set_path` refuses absolute paths and `..`, which is the point of some cases).
    pub fn new(name: &[u8], kind: EntryType, data: &[u8]) -> RawEntry {
        let mut header = Header::new_gnu();
        let slot = &mut header.as_old_mut().name;
        assert!(name.len() < slot.len(), "name too long for a tar header");
        slot[..name.len()].copy_from_slice(name);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_cksum();
        RawEntry {
            header,
            data: data.to_vec(),
        }
    }
}

/// The tar stream of a bundle (stock zstd decoding: seek table skipped).
pub fn decompress(bundle: &[u8]) -> Vec<u8> {
    zstd::decode_all(bundle).expect("decompress the source bundle")
}

/// Every entry of a tar stream, in order, with its headers exactly as stored.
pub fn read_tar(tar_bytes: &[u8]) -> Vec<RawEntry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("read the tar") {
        let mut entry = entry.expect("read a tar entry");
        assert_eq!(
            entry.path_bytes(),
            entry.header().path_bytes(),
            "long names (GNU/PAX) are not supported by the crafting code"
        );
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read a tar entry");
        out.push(RawEntry { header, data });
    }
    out
}

/// How a crafted tar is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One plain zstd stream, no seek table (a bundle recompressed by stock zstd).
    Plain,
    /// The library's frame writer: a frame per entry (and every 4 MiB), then a seek table.
    Seekable,
}

fn append<W: Write>(builder: &mut tar::Builder<W>, entry: &RawEntry) {
    let mut header = entry.header.clone();
    header.set_size(entry.data.len() as u64);
    header.set_cksum();
    builder
        .append(&header, entry.data.as_slice())
        .expect("append a tar entry");
}

/// The tar stream of `entries` (headers kept, size and checksum fitted to the data).
pub fn build_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        append(&mut builder, e);
    }
    builder.into_inner().expect("finish the tar")
}

/// A compressed bundle holding `entries`.
pub fn build_bundle(entries: &[RawEntry], framing: Framing) -> Vec<u8> {
    match framing {
        Framing::Plain => zstd::encode_all(build_tar(entries).as_slice(), LEVEL).expect("zstd"),
        Framing::Seekable => {
            let mut builder = tar::Builder::new(FrameWriter::new(Vec::new(), 0));
            for e in entries {
                builder.get_mut().cut().expect("cut a frame");
                append(&mut builder, e);
            }
            let frames = builder.into_inner().expect("finish the tar");
            frames.finish().expect("write the seek table").0
        }
    }
}

/// The good bundle decompressed, walked and rebuilt with no change (positive control).
pub fn rebuild_unchanged(good: &Path, framing: Framing) -> Vec<u8> {
    let bytes = fs::read(good).unwrap_or_else(|e| panic!("read {}: {e}", good.display()));
    build_bundle(&read_tar(&decompress(&bytes)), framing)
}

/// A PAX extended-header record: `"<len> <key>=<value>\n"`, `len` counting itself.
pub fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// The seek table at the end of a bundle.
pub fn seek_table(bundle: &[u8]) -> Vec<FrameSizes> {
    frames::read_seek_table(&mut Cursor::new(bundle), bundle.len() as u64)
        .expect("read the seek table")
        .expect("the bundle has a seek table")
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0xff;
    out
}

/// Collects cases, writing each variant into the case directory.
struct Cases<'a> {
    dir: &'a Path,
    trusted_pub: &'a Path,
    out: Vec<TamperCase>,
}

impl Cases<'_> {
    fn push(
        &mut self,
        name: &'static str,
        bundle: PathBuf,
        pubkey: &Path,
        expect_message: &'static str,
        entry: Option<&str>,
    ) {
        assert!(
            self.out.iter().all(|c| c.name != name),
            "two cases named {name}"
        );
        self.out.push(TamperCase {
            name,
            bundle,
            pubkey: pubkey.to_path_buf(),
            expect_code: 3,
            expect_message,
            expect_entry: entry.map(str::to_string),
        });
    }

    /// A tampered bundle, checked with the trusted key.
    fn bytes(
        &mut self,
        name: &'static str,
        bytes: &[u8],
        expect_message: &'static str,
        entry: Option<&str>,
    ) {
        let path = self.dir.join(format!("{name}.bundle.tar.zst"));
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let trusted = self.trusted_pub.to_path_buf();
        self.push(name, path, &trusted, expect_message, entry);
    }

    /// A tampered tar, compressed with `framing`.
    fn entries(
        &mut self,
        name: &'static str,
        entries: &[RawEntry],
        framing: Framing,
        expect_message: &'static str,
        entry: Option<&str>,
    ) {
        self.bytes(name, &build_bundle(entries, framing), expect_message, entry);
    }
}

/// Every tampered variant of `good`, written under `ws`. All expect exit code 3.
pub fn tamper_cases(ws: &Path, good: &Path, key: &TamperKeys) -> Vec<TamperCase> {
    mkdir_755(ws);
    let original = fs::read(good).unwrap_or_else(|e| panic!("read {}: {e}", good.display()));
    let entries = read_tar(&decompress(&original));
    let head: Vec<String> = entries.iter().take(3).map(RawEntry::path).collect();
    assert_eq!(
        head,
        [INDEX_PATH, INDEX_SIG_PATH, MANIFEST_PATH],
        "the source bundle's head"
    );
    assert!(
        entries.len() >= 6,
        "the source bundle needs 3 content files"
    );
    let content = 3..entries.len();
    let big = content
        .clone()
        .max_by_key(|&i| entries[i].data.len())
        .expect("content");
    let small = content
        .clone()
        .filter(|&i| i != big)
        .min_by_key(|&i| entries[i].data.len())
        .expect("content");
    let last = entries.len() - 1;
    assert!(
        entries[big].data.len() > 9 << 20,
        "the big entry must span several frames"
    );
    let big_path = entries[big].path();
    let small_path = entries[small].path();
    let last_path = entries[last].path();

    let table = seek_table(&original);
    assert!(table.len() >= 6, "expected several frames: {table:?}");
    let table_start = original.len() - TABLE_HEADER - TABLE_ENTRY * table.len() - TABLE_FOOTER;
    let frame_start = |i: usize| -> usize {
        table[..i]
            .iter()
            .map(|f| f.compressed as usize)
            .sum::<usize>()
    };
    let last_frame = table.len() - 1;
    let biggest_frame = (0..table.len())
        .max_by_key(|&i| table[i].decompressed)
        .expect("frames");
    let entry_at = |i: usize| table_start + TABLE_HEADER + TABLE_ENTRY * i;

    let mut cases = Cases {
        dir: ws,
        trusted_pub: &key.trusted_pub,
        out: Vec::new(),
    };
    let failed = "verification failed";

    // --- bytes of the compressed file --------------------------------------------------
    cases.bytes(
        "compressed-flip-first-byte",
        &flip(&original, 0),
        failed,
        None,
    );
    cases.bytes(
        "compressed-flip-in-first-frame",
        &flip(&original, table[0].compressed as usize / 2),
        failed,
        None,
    );
    cases.bytes(
        "compressed-flip-middle",
        &flip(&original, original.len() / 2),
        failed,
        None,
    );
    cases.bytes(
        "compressed-flip-before-seek-table",
        &flip(&original, table_start - 1),
        failed,
        None,
    );
    cases.bytes(
        "seek-table-flip-skippable-magic",
        &flip(&original, table_start),
        failed,
        None,
    );
    cases.bytes(
        "seek-table-flip-compressed-size",
        &flip(&original, entry_at(1)),
        failed,
        None,
    );
    cases.bytes(
        "seek-table-flip-decompressed-size",
        &flip(&original, entry_at(biggest_frame) + 4),
        failed,
        None,
    );
    cases.bytes(
        "seek-table-flip-frame-count",
        &flip(&original, original.len() - TABLE_FOOTER),
        failed,
        None,
    );
    cases.bytes(
        "seek-table-flip-descriptor",
        &flip(&original, original.len() - 5),
        failed,
        None,
    );
    cases.bytes(
        "seek-table-flip-seekable-magic",
        &flip(&original, original.len() - 1),
        failed,
        None,
    );

    // --- a seek table that lies -----------------------------------------------------------
    // Frame 0 swaps its decompressed size with a smaller, then with a larger frame's: the
    // sums still match, so only checking each frame against the table catches it.
    let swap_decompressed = |b: usize| {
        let mut lie = original.clone();
        lie[entry_at(0) + 4..entry_at(0) + 8].copy_from_slice(&table[b].decompressed.to_le_bytes());
        lie[entry_at(b) + 4..entry_at(b) + 8].copy_from_slice(&table[0].decompressed.to_le_bytes());
        lie
    };
    let smaller = (1..table.len())
        .find(|&j| table[j].decompressed < table[0].decompressed)
        .expect("a frame smaller than the first");
    let larger = (1..table.len())
        .find(|&j| table[j].decompressed > table[0].decompressed)
        .expect("a frame larger than the first");
    cases.bytes(
        "seek-table-lie-decompressed-too-small",
        &swap_decompressed(smaller),
        "does not match",
        None,
    );
    cases.bytes(
        "seek-table-lie-decompressed-too-large",
        &swap_decompressed(larger),
        "does not match",
        None,
    );
    let b = (1..table.len())
        .find(|&j| table[j].compressed != table[0].compressed)
        .expect("frames of different sizes");
    let mut lie = original.clone();
    lie[entry_at(0)..entry_at(0) + 4].copy_from_slice(&table[b].compressed.to_le_bytes());
    lie[entry_at(b)..entry_at(b) + 4].copy_from_slice(&table[0].compressed.to_le_bytes());
    cases.bytes("seek-table-lie-compressed-sizes", &lie, "seek table", None);

    // --- truncation ---------------------------------------------------------------------
    cases.bytes(
        "truncated-at-half",
        &original[..original.len() / 2],
        failed,
        None,
    );
    let mid_last = frame_start(last_frame) + table[last_frame].compressed as usize / 2;
    cases.bytes(
        "truncated-in-last-frame",
        &original[..mid_last],
        failed,
        None,
    );
    cases.bytes(
        "truncated-last-byte",
        &original[..original.len() - 1],
        failed,
        None,
    );
    // Cut cleanly between two frames: the zstd stream is well-formed, the tar is not whole.
    // The last frame holds the whole last entry (a small one) and the end-of-archive.
    assert!(
        entries[last].data.len() < 1 << 20,
        "the last entry is small"
    );
    cases.bytes(
        "truncated-at-frame-boundary",
        &original[..frame_start(last_frame)],
        "incomplete",
        Some(&last_path),
    );

    // --- bytes after the end --------------------------------------------------------------
    let appended = |tail: &[u8]| [original.as_slice(), tail].concat();
    cases.bytes(
        "trailing-garbage",
        &appended(b"GARBAGE AFTER THE SEEK TABLE\n"),
        failed,
        None,
    );
    cases.bytes("trailing-zeros", &appended(&[0u8; 4096]), failed, None);
    cases.bytes(
        "trailing-zstd-frame-of-zeros",
        &appended(&zstd::encode_all(&[0u8; 10240][..], LEVEL).expect("zstd")),
        failed,
        None,
    );
    cases.bytes("trailing-second-copy", &appended(&original), failed, None);

    // --- content ------------------------------------------------------------------------
    let mut flipped_content = entries.clone();
    let mid = flipped_content[big].data.len() / 2;
    flipped_content[big].data[mid] ^= 0x01;
    let sha_mismatch = "does not match the signed index";
    cases.entries(
        "content-byte-flipped",
        &flipped_content,
        Framing::Plain,
        sha_mismatch,
        Some(&big_path),
    );
    cases.entries(
        "content-byte-flipped-seekable",
        &flipped_content,
        Framing::Seekable,
        sha_mismatch,
        Some(&big_path),
    );
    let mut last_byte = entries.clone();
    *last_byte[small].data.last_mut().expect("data") ^= 0x20;
    cases.entries(
        "content-last-byte-flipped",
        &last_byte,
        Framing::Plain,
        sha_mismatch,
        Some(&small_path),
    );

    let mut oversize = entries.clone();
    oversize[small]
        .data
        .extend_from_slice(b"\nrm -rf / # appended\n");
    cases.entries(
        "oversize-entry",
        &oversize,
        Framing::Plain,
        "the signed index says",
        Some(&small_path),
    );
    cases.entries(
        "oversize-entry-seekable",
        &oversize,
        Framing::Seekable,
        "the signed index says",
        Some(&small_path),
    );
    let mut undersize = entries.clone();
    undersize[small].data.pop();
    cases.entries(
        "undersize-entry",
        &undersize,
        Framing::Plain,
        "the signed index says",
        Some(&small_path),
    );

    // --- structure ----------------------------------------------------------------------
    let mut extra = entries.clone();
    extra.push(RawEntry::new(b"files/evil", EntryType::Regular, b"evil\n"));
    cases.entries(
        "extra-entry",
        &extra,
        Framing::Plain,
        "not in the signed index",
        Some("files/evil"),
    );
    cases.entries(
        "extra-entry-seekable",
        &extra,
        Framing::Seekable,
        "not in the signed index",
        Some("files/evil"),
    );
    let mut renamed = entries.clone();
    let renamed_path = format!("{small_path}.renamed");
    renamed[small] = RawEntry::new(
        renamed_path.as_bytes(),
        EntryType::Regular,
        &entries[small].data,
    );
    cases.entries(
        "renamed-entry",
        &renamed,
        Framing::Plain,
        "not in the signed index",
        Some(&renamed_path),
    );

    let mut duplicate = entries.clone();
    duplicate.insert(small + 1, entries[small].clone());
    cases.entries(
        "duplicate-entry",
        &duplicate,
        Framing::Plain,
        "appears twice",
        Some(&small_path),
    );
    let mut head_again = entries.clone();
    head_again.insert(3, entries[0].clone());
    cases.entries(
        "index-repeated-after-head",
        &head_again,
        Framing::Plain,
        "duplicate of the signed head",
        Some(INDEX_PATH),
    );

    let mut missing = entries.clone();
    missing.remove(small);
    cases.entries(
        "missing-entry",
        &missing,
        Framing::Plain,
        "incomplete",
        Some(&small_path),
    );
    cases.entries(
        "missing-entry-seekable",
        &missing,
        Framing::Seekable,
        "incomplete",
        Some(&small_path),
    );

    // Entries that could escape or alias the destination, inserted right after the head
    // (before any content), each with the name bytes written straight into the header.
    let hostile: [(&'static str, RawEntry, &'static str, &str); 7] = [
        (
            "absolute-path",
            RawEntry::new(b"/etc/evil", EntryType::Regular, b"evil\n"),
            "absolute path",
            "/etc/evil",
        ),
        (
            "dotdot-path",
            RawEntry::new(b"../evil", EntryType::Regular, b"evil\n"),
            "`..`",
            "../evil",
        ),
        (
            "dotdot-inside-path",
            RawEntry::new(b"files/../../evil", EntryType::Regular, b"evil\n"),
            "`..`",
            "files/../../evil",
        ),
        (
            "symlink-entry",
            symlink_like(b"files/evil-link", EntryType::Symlink, b"/etc/passwd"),
            "symbolic links are not allowed",
            "files/evil-link",
        ),
        (
            "hard-link-entry",
            symlink_like(
                b"files/evil-hardlink",
                EntryType::Link,
                small_path.as_bytes(),
            ),
            "hard links are not allowed",
            "files/evil-hardlink",
        ),
        (
            "char-device-entry",
            device(b"files/evil-null", EntryType::Char),
            "device files",
            "files/evil-null",
        ),
        (
            "fifo-entry",
            RawEntry::new(b"files/evil-fifo", EntryType::Fifo, b""),
            "FIFOs are not allowed",
            "files/evil-fifo",
        ),
    ];
    for (name, entry, message, path) in hostile {
        let mut list = entries.clone();
        list.insert(3, entry);
        cases.entries(name, &list, Framing::Plain, message, Some(path));
    }
    // A symlink that replaces a signed entry under its own name.
    let mut replaced = entries.clone();
    replaced[small] = symlink_like(small_path.as_bytes(), EntryType::Symlink, b"/etc/shadow");
    cases.entries(
        "symlink-replacing-entry",
        &replaced,
        Framing::Plain,
        "symbolic links are not allowed",
        Some(&small_path),
    );

    // --- order of the head ------------------------------------------------------------------
    let mut manifest_first = entries.clone();
    let manifest = manifest_first.remove(2);
    manifest_first.insert(0, manifest);
    cases.entries(
        "manifest-before-index",
        &manifest_first,
        Framing::Plain,
        "expected `bundle/index.json` next",
        Some(MANIFEST_PATH),
    );
    let mut sig_first = entries.clone();
    sig_first.swap(0, 1);
    cases.entries(
        "signature-before-index",
        &sig_first,
        Framing::Plain,
        "expected `bundle/index.json` next",
        Some(INDEX_SIG_PATH),
    );

    // --- the signature ------------------------------------------------------------------------
    let mut unsigned = entries.clone();
    unsigned.remove(1);
    cases.entries(
        "signature-removed",
        &unsigned,
        Framing::Plain,
        "expected `bundle/index.json.minisig` next",
        None,
    );
    for (name, text, message) in [
        ("signature-empty", &b""[..], "malformed signature"),
        (
            "signature-garbage",
            &b"untrusted comment: hello\nthis is not base64 !!!\n"[..],
            "malformed signature",
        ),
        (
            "signature-binary",
            &[0xff, 0xfe, 0x00, 0x80, 0xc3][..],
            "is not text",
        ),
    ] {
        let mut list = entries.clone();
        list[1].data = text.to_vec();
        cases.entries(name, &list, Framing::Plain, message, Some(INDEX_SIG_PATH));
    }

    let original_sig_text = String::from_utf8(entries[1].data.clone()).expect("signature text");
    let original_sig =
        Signature::parse(&original_sig_text, INDEX_SIG_PATH).expect("the good signature parses");
    let mut comment = entries.clone();
    comment[1].data = original_sig_text
        .replace(
            &format!("trusted comment: {}", original_sig.trusted_comment),
            &format!("trusted comment: {}\tforged", original_sig.trusted_comment),
        )
        .into_bytes();
    assert_ne!(comment[1].data, entries[1].data, "trusted comment edited");
    cases.entries(
        "signature-trusted-comment-edited",
        &comment,
        Framing::Plain,
        "trusted comment signature does not match",
        Some(INDEX_PATH),
    );

    // --- the index ------------------------------------------------------------------------------
    let index: Index = serde_json::from_slice(&entries[0].data).expect("the good index parses");
    assert_eq!(
        index.to_canonical_json(),
        entries[0].data,
        "the index round-trips through the library's canonical JSON"
    );
    let i_small = index
        .entries
        .iter()
        .position(|e| e.path == small_path)
        .expect("small entry indexed");
    let i_big = index
        .entries
        .iter()
        .position(|e| e.path == big_path)
        .expect("big entry indexed");

    // The size of an entry edited, the old signature kept.
    let mut edited = index.clone();
    edited.entries[i_small].size += 1;
    let mut size_edited = entries.clone();
    size_edited[0].data = edited.to_canonical_json();
    cases.entries(
        "index-size-edited",
        &size_edited,
        Framing::Plain,
        "signature does not match",
        Some(INDEX_PATH),
    );

    // Content changed and the index made to match it: the realistic attack.
    let mut consistent = index.clone();
    consistent.entries[i_big].sha256 = Sha256Digest::of_bytes(&flipped_content[big].data);
    let consistent_json = consistent.to_canonical_json();
    let mut sha_edited = flipped_content.clone();
    sha_edited[0].data = consistent_json.clone();
    cases.entries(
        "index-sha256-edited",
        &sha_edited,
        Framing::Plain,
        "signature does not match",
        Some(INDEX_PATH),
    );

    // ... and re-signed with another key.
    let other = key.other_secret();
    let resigned = other.sign(&consistent_json, &original_sig.trusted_comment);
    let mut resigned_entries = sha_edited.clone();
    resigned_entries[1].data = resigned
        .to_file_string("signature from airgap-bundle secret key")
        .into_bytes();
    cases.entries(
        "index-resigned-other-key",
        &resigned_entries,
        Framing::Plain,
        "signed by key",
        Some(INDEX_PATH),
    );
    // ... re-signed with another key that claims the trusted key's id.
    let mut forged = resigned;
    forged.key_id = original_sig.key_id;
    let mut forged_entries = sha_edited.clone();
    forged_entries[1].data = forged
        .to_file_string("signature from airgap-bundle secret key")
        .into_bytes();
    cases.entries(
        "index-resigned-forged-key-id",
        &forged_entries,
        Framing::Plain,
        "signature does not match",
        Some(INDEX_PATH),
    );

    // --- the key ----------------------------------------------------------------------------------
    let good_copy = ws.join("wrong-pubkey.bundle.tar.zst");
    fs::copy(good, &good_copy).expect("copy the good bundle");
    let other_pub = key.other_pub.clone();
    cases.push(
        "wrong-pubkey",
        good_copy,
        &other_pub,
        "signed by key",
        Some(INDEX_PATH),
    );

    cases.out
}

fn symlink_like(name: &[u8], kind: EntryType, target: &[u8]) -> RawEntry {
    let mut entry = RawEntry::new(name, kind, b"");
    let slot = &mut entry.header.as_old_mut().linkname;
    slot[..target.len()].copy_from_slice(target);
    entry.header.set_cksum();
    entry
}

fn device(name: &[u8], kind: EntryType) -> RawEntry {
    let mut entry = RawEntry::new(name, kind, b"");
    entry.header.set_device_major(1).expect("device major");
    entry.header.set_device_minor(3).expect("device minor");
    entry.header.set_cksum();
    entry
}

/// Writes `dst`: the bundle `src` with one byte in the middle of entry `entry_path` flipped,
/// its signed index unchanged (a tampered entry under a valid signature).
pub fn flip_entry_byte(src: &Path, entry_path: &str, dst: &Path) {
    let mut entries = read_tar(&decompress(&std::fs::read(src).unwrap()));
    let target = entries
        .iter_mut()
        .find(|e| e.path() == entry_path)
        .unwrap_or_else(|| panic!("no entry {entry_path} in the bundle"));
    let mid = target.data.len() / 2;
    target.data[mid] ^= 0x01;
    std::fs::write(dst, build_bundle(&entries, Framing::Seekable)).unwrap();
}
