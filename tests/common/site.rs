//! A site for the volume tests (`tests/volumes.rs`, `tests/parity.rs`): an Apache upstream
//! of incompressible files, a key and a lock, and the stock-tool helpers that check split
//! volumes (each stick on its own with `minisign` and `sha256sum`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde_json::Value;

use super::install::{install, make_world_readable};
use super::*;

/// `SOURCE_DATE_EPOCH` of every create whose bytes are compared.
pub const EPOCH: &str = "1700000000";
/// Another creation time: the same content, different bytes (a "foreign" bundle).
pub const OTHER_EPOCH: &str = "1700000999";
pub const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// A site: upstream Apache, key, lock
// ---------------------------------------------------------------------------

/// A big site (≥ 200 MiB of content), its unsplit bundle and a split one, shared by the
/// tests of one binary: built by the first test that asks and kept while any test holds
/// it, so that the workspace (≈ 1 GiB with the installs) is removed once they are done.
pub struct Big {
    pub site: Site,
    pub unsplit: PathBuf,
    /// The split bundle's base path (`split/big.bundle.tar.zst`).
    pub base: PathBuf,
    /// What `create --json` said about the split bundle.
    pub create_json: Value,
    /// With `clean_web`: a web root with the unsplit bundle installed.
    pub clean_web: Option<PathBuf>,
}

/// The [`Big`] kept in `slot`, or a new one of `content` whose split bundle is created
/// with `split_flags` (and a clean install of the unsplit bundle when `clean_web`).
pub fn shared_big(
    slot: &Mutex<Weak<Big>>,
    content: &[(&str, usize, u64)],
    split_flags: &[&str],
    clean_web: bool,
) -> Arc<Big> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(big) = slot.upgrade() {
        return big;
    }
    let started = Instant::now();
    let site = Site::new("big", content);
    let bytes: u64 = content.iter().map(|(_, n, _)| *n as u64).sum();
    assert!(bytes >= 200 * MIB, "{bytes} bytes of content");
    let unsplit = site.create("unsplit/big.bundle.tar.zst", &[]);
    let base = site.ws.path("split/big.bundle.tar.zst");
    let mut flags = split_flags.to_vec();
    flags.push("--json");
    let run = site.create_at(&base, EPOCH, &flags);
    run.assert_ok();
    let create_json: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("create --json is not JSON: {e}\n{}", run.stdout));
    let clean_web = clean_web.then(|| {
        let web = site.ws.mkdir("web-clean");
        install(&unsplit, &site.pubkey, &web, &[]).assert_ok();
        web
    });
    eprintln!(
        "note: the {} MiB site, its unsplit and its split bundle ({}) took {:.1?}",
        bytes / MIB,
        split_flags.join(" "),
        started.elapsed()
    );
    let big = Arc::new(Big {
        site,
        unsplit,
        base,
        create_json,
        clean_web,
    });
    *slot = Arc::downgrade(&big);
    big
}

/// A workspace with an Apache serving `upstream/<rel>`, a site key and a locked manifest
/// naming every upstream file by its `http://127.0.0.1:PORT/<rel>` URL.
pub struct Site {
    // Declared first so that Apache stops before the workspace is removed.
    pub _apache: Apache,
    pub ws: Workspace,
    pub name: String,
    pub key: PathBuf,
    pub pubkey: PathBuf,
    pub lock: PathBuf,
    pub cache: PathBuf,
    /// Web-root path (`files/127.0.0.1:PORT/<rel>`) → sha256 of the upstream file.
    pub files: BTreeMap<String, String>,
}

impl Site {
    /// `content`: (relative path, length, seed) of incompressible upstream files.
    pub fn new(name: &str, content: &[(&str, usize, u64)]) -> Site {
        for tool in ["minisign", "sha256sum", "zstd", "tar", "cmp", "cat", "bash"] {
            require_tool(tool);
        }
        let ws = Workspace::new();
        let doc_root = ws.mkdir("upstream");
        let mut shas = Vec::new();
        for (rel, len, seed) in content {
            let bytes = random_bytes(*len, *seed);
            shas.push((rel.to_string(), sha256_bytes(&bytes)));
            ws.write(Path::new("upstream").join(rel), &bytes);
        }
        make_world_readable(&doc_root);
        let apache = Apache::start(&doc_root);
        let host = format!("127.0.0.1:{}", apache.port);
        let mut manifest =
            format!("apiVersion: bundle/v1\nname: {name}\nversion: '1.0.0'\nfiles:\n");
        for (rel, _) in &shas {
            manifest.push_str(&format!("  - url: '{}'\n", apache.url(rel)));
        }
        let manifest_path = ws.write("manifest.yaml", manifest);
        let (key, pubkey) = keygen(&ws.path("site"));
        let lock = ws.path("manifest.lock.yaml");
        let cache = ws.path("cache");
        lock_into_cache(&manifest_path, &lock, &cache);
        let files = shas
            .into_iter()
            .map(|(rel, sha)| (format!("files/{host}/{rel}"), sha))
            .collect();
        Site {
            _apache: apache,
            ws,
            name: name.to_string(),
            key,
            pubkey,
            lock,
            cache,
            files,
        }
    }

    /// `bundle create LOCK -o OUT --key site.key --cache CACHE extra…` at `epoch`.
    pub fn create_at(&self, out: &Path, epoch: &str, extra: &[&str]) -> Run {
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        create_from_cache(
            &self.lock,
            out,
            &self.key,
            &self.cache,
            extra,
            &[("SOURCE_DATE_EPOCH", epoch)],
        )
    }

    /// A successful create at [`EPOCH`] into `<rel>`; returns the base path.
    pub fn create(&self, rel: &str, extra: &[&str]) -> PathBuf {
        let out = self.ws.path(rel);
        self.create_at(&out, EPOCH, extra).assert_ok();
        out
    }

    /// `bundle verify BUNDLE --pubkey site.pub`.
    pub fn verify(&self, bundle: &Path) -> Run {
        run_bundle(
            &[
                "verify".as_ref(),
                bundle.as_os_str(),
                "--pubkey".as_ref(),
                self.pubkey.as_os_str(),
            ],
            &[],
        )
    }

    /// `bundle verify BUNDLE --pubkey site.pub --json`, which must succeed: its report.
    pub fn verify_json(&self, bundle: &Path) -> serde_json::Value {
        let run = run_bundle(
            &[
                "verify".as_ref(),
                bundle.as_os_str(),
                "--pubkey".as_ref(),
                self.pubkey.as_os_str(),
                "--json".as_ref(),
            ],
            &[],
        );
        run.assert_ok();
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// What every successful verify of this site's bundle says.
    pub fn ok_line(&self) -> String {
        format!("OK: {} 1.0.0", self.name)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

pub fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", base.display()))
}

/// `BASE.NNN`.
pub fn volume(base: &Path, n: usize) -> PathBuf {
    with_suffix(base, &format!(".{n:03}"))
}

/// `NAME.NNN` (the bare file name of a volume, as the list and the messages name it).
pub fn volume_name(base: &Path, n: usize) -> String {
    volume(base, n)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

pub fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Names in a directory.
pub fn dir_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The data volumes beside `base`, in order (`BASE.000`, `BASE.001`, … with no gap).
pub fn data_volumes(base: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|n| volume(base, n))
        .take_while(|p| p.exists())
        .collect()
}

/// What a split create leaves in the output directory for `base` and `count` volumes.
pub fn split_names(base: &Path, count: usize) -> BTreeSet<String> {
    let name = file_name(base);
    let mut want: BTreeSet<String> = (0..count).map(|n| volume_name(base, n)).collect();
    for suffix in [".minisig", ".volumes", ".volumes.minisig"] {
        want.insert(format!("{name}{suffix}"));
    }
    want
}

pub fn size_of(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .len()
}

/// Runs `bash -c 'set -euo pipefail; SCRIPT' bash ARGS…` in `cwd`.
pub fn bash_in(cwd: &Path, script: &str, args: &[&OsStr]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .arg("bash")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn bash")
}

#[track_caller]
pub fn bash_ok(cwd: &Path, script: &str, args: &[&OsStr]) -> String {
    let o = bash_in(cwd, script, args);
    assert!(o.status.success(), "`{script}` failed\n{}", show_output(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `cmd` (a stock tool) in `cwd` and returns its output, whatever the status.
pub fn stock(cwd: &Path, cmd: &str, args: &[&OsStr]) -> Output {
    Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

/// A stick: a fresh directory `dir` holding copies of only `vol`, the volume list and its
/// signature, as a FAT32 stick would on arrival. Returns `dir`.
pub fn stick(dir: &Path, base: &Path, vol: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for src in [
        vol.to_path_buf(),
        with_suffix(base, ".volumes"),
        with_suffix(base, ".volumes.minisig"),
    ] {
        let to = dir.join(src.file_name().unwrap());
        // A hard link where possible (the volumes are large); the test never writes them.
        if fs::hard_link(&src, &to).is_err() {
            fs::copy(&src, &to).unwrap();
        }
    }
    dir.to_path_buf()
}

/// The stock per-stick check of SPEC §3, run inside the stick:
/// `minisign -Vm NAME.volumes -p site.pub && sha256sum -c --ignore-missing NAME.volumes`.
/// (minisign's output, sha256sum's output); either is `Err` with its output when it fails.
pub fn stock_stick_check(
    stick: &Path,
    base: &Path,
    pubkey: &Path,
) -> (Result<String, String>, Result<String, String>) {
    let list = format!("{}.volumes", file_name(base));
    let result = |o: Output| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if o.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    };
    let minisign = result(stock(
        stick,
        "minisign",
        &[
            "-Vm".as_ref(),
            list.as_ref(),
            "-p".as_ref(),
            pubkey.as_os_str(),
        ],
    ));
    let sums = result(stock(
        stick,
        "sha256sum",
        &["-c".as_ref(), "--ignore-missing".as_ref(), list.as_ref()],
    ));
    (minisign, sums)
}

/// `bundle inspect BUNDLE [--json]`.
pub fn inspect(bundle: &Path, json: bool) -> Run {
    let mut args: Vec<&OsStr> = vec!["inspect".as_ref(), bundle.as_os_str()];
    if json {
        args.push("--json".as_ref());
    }
    run_bundle(&args, &[])
}

/// The receipt of `name` 1.0.0 in a web root, parsed.
pub fn receipt(web: &Path, name: &str) -> Value {
    let text = fs::read_to_string(web.join(format!(".bundle/{name}-1.0.0.json")))
        .unwrap_or_else(|e| panic!("receipt in {}: {e}", web.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("receipt is not JSON: {e}\n{text}"))
}

/// A web root's snapshot without the receipt (which records the bundle path and the time).
pub fn snapshot_without_receipt(web: &Path, name: &str) -> BTreeMap<String, String> {
    let mut snap = tree_snapshot(web);
    let rel = format!(".bundle/{name}-1.0.0.json");
    assert!(
        snap.remove(&rel).is_some(),
        "no receipt {rel} in {}",
        web.display()
    );
    snap
}

/// Copies every file of `from` into a fresh directory `to` (real copies: a test may damage
/// them).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for name in dir_names(from) {
        fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// Shortens a file by `by` bytes.
pub fn truncate_by(p: &Path, by: u64) {
    let len = size_of(p);
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len - by)
        .unwrap();
}

/// XORs the byte at `at` with 0x5a.
pub fn flip_byte(p: &Path, at: u64) {
    let mut bytes = fs::read(p).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(p, bytes).unwrap();
}
