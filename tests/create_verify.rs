//! `lock` → `create` → `verify` / `inspect` end to end, against a real Apache upstream
//! (reached through manifest `mirrors`, so the manifest keeps canonical upstream URLs) and
//! the stock `minisign`, `zstd` and `tar`, which must accept what `bundle` writes.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// `SOURCE_DATE_EPOCH` used wherever bundles are compared byte for byte.
const EPOCH: &str = "1700000000";
/// `EPOCH` as RFC 3339, what `inspect` must report as `created`.
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
/// The seekable-format footer magic (zstd seekable format).
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// A skippable zstd frame's magic, as used for the seek table.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// A regular zstd frame's magic.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// SPEC §3: a frame at least every 8 MiB of tar bytes.
const MAX_FRAME_TAR_BYTES: usize = 8 << 20;

const KUBEADM: &str = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm";
const KUBEADM_SHA: &str = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm.sha256";
const KUBECTL: &str = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubectl";
const KUBELET: &str = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubelet";
const STABLE: &str = "https://dl.k8s.io/release/stable-1.31.txt";
const EMPTY: &str = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/empty.txt";
const CNI: &str = "https://github.com/containernetworking/plugins/releases/download/v1.6.0/cni-plugins-linux-amd64-v1.6.0.tgz";
const CNI_SHA: &str = "https://github.com/containernetworking/plugins/releases/download/v1.6.0/cni-plugins-linux-amd64-v1.6.0.tgz.sha256";
const CRICTL: &str = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/crictl-v1.31.1-linux-amd64.tar.gz";

// ---------------------------------------------------------------------------
// Content and upstream
// ---------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*), incompressible like a real binary.
/// Starts from the raw state `seed | 1` (not [`Rng::new`]'s mixed seed).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    Rng(seed | 1).fill(len)
}

/// One upstream file, as served by the test's Apache.
struct UpFile {
    url: &'static str,
    bytes_sha256: String,
    size: u64,
}

impl UpFile {
    /// `files/<host>/<path>`, where SPEC §6 puts it in the bundle.
    fn dest(&self) -> String {
        dest_of(self.url)
    }
}

fn dest_of(url: &str) -> String {
    format!("files/{}", url.strip_prefix("https://").expect("https URL"))
}

/// A workspace with an Apache serving `upstream/<host>/<path>` and a loose manifest whose
/// canonical URLs reach it through `mirrors`.
struct Site {
    // Declared first so that Apache stops before the workspace is removed.
    apache: Apache,
    ws: Workspace,
    files: Vec<UpFile>,
    manifest: PathBuf,
}

/// The full set: a > 9 MiB binary (several frames), mid-size binaries, text files, an empty
/// file, and paths over 100 bytes (GNU long-name headers). Listed out of path order.
fn full_content() -> Vec<(&'static str, Vec<u8>)> {
    content_with_kubeadm_of(9 * 1024 * 1024 + 123_457)
}

/// The same nine files with a 2 MiB kubeadm, where a test recompresses at zstd -19 (slow).
fn medium_content() -> Vec<(&'static str, Vec<u8>)> {
    content_with_kubeadm_of(2 * 1024 * 1024 + 1)
}

fn content_with_kubeadm_of(kubeadm_len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let kubeadm = random_bytes(1, kubeadm_len);
    let kubeadm_sha = format!("{}\n", sha256_bytes(&kubeadm));
    let cni = random_bytes(2, 500_000);
    let cni_sha = format!(
        "{}  cni-plugins-linux-amd64-v1.6.0.tgz\n",
        sha256_bytes(&cni)
    );
    vec![
        (KUBEADM, kubeadm),
        (CNI, cni),
        (KUBECTL, random_bytes(3, 1024 * 1024 + 333)),
        (STABLE, b"v1.31.4\n".to_vec()),
        (CRICTL, random_bytes(4, 300_001)),
        (EMPTY, Vec::new()),
        (KUBEADM_SHA, kubeadm_sha.into_bytes()),
        (KUBELET, random_bytes(5, 700_001)),
        (CNI_SHA, cni_sha.into_bytes()),
    ]
}

/// Two small files, for tests that are about keys or reports rather than content.
fn small_content() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (STABLE, b"v1.31.4\n".to_vec()),
        (CNI, random_bytes(7, 200_000)),
    ]
}

impl Site {
    fn new(content: Vec<(&'static str, Vec<u8>)>) -> Site {
        for tool in ["minisign", "zstd", "tar", "cmp", "bash"] {
            require_tool(tool);
        }
        let ws = Workspace::new();
        let doc_root = ws.mkdir("upstream");
        let mut files = Vec::new();
        for (url, bytes) in content {
            let rel = url.strip_prefix("https://").expect("https URL");
            let local = ws.write(Path::new("upstream").join(rel), &bytes);
            // Apache runs as nobody: make every served directory world-searchable.
            let mut dir = local.parent();
            while let Some(d) = dir {
                if d == doc_root {
                    break;
                }
                fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
                dir = d.parent();
            }
            files.push(UpFile {
                url,
                bytes_sha256: sha256_bytes(&bytes),
                size: bytes.len() as u64,
            });
        }
        let apache = Apache::start(&doc_root);
        let mut m = String::from(
            "apiVersion: bundle/v1\nname: kubespray-offline\nversion: 2.27.0\nfiles:\n",
        );
        for f in &files {
            m.push_str(&format!("  - url: {}\n", f.url));
        }
        m.push_str(&format!(
            "mirrors:\n  - {{prefix: 'https://dl.k8s.io/', url: '{}'}}\n  - {{prefix: 'https://github.com/', url: '{}'}}\n",
            apache.url("dl.k8s.io/"),
            apache.url("github.com/"),
        ));
        let manifest = ws.write("manifests/k8s.yaml", m);
        Site {
            apache,
            ws,
            files,
            manifest,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.ws.path(rel)
    }

    /// `bundle keygen --out <rel> --no-password`; returns (secret, public) key paths.
    fn keygen(&self, rel: &str) -> (PathBuf, PathBuf) {
        keygen(&self.path(rel))
    }

    /// `bundle lock` into `rel` with its own cache `cache_rel`; returns the lock path.
    fn lock(&self, rel: &str, cache_rel: &str) -> PathBuf {
        let out = self.path(rel);
        let cache = self.path(cache_rel);
        run_bundle(
            &[
                "lock".as_ref(),
                self.manifest.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
                "--cache".as_ref(),
                cache.as_os_str(),
            ],
            &[],
        )
        .assert_ok();
        out
    }

    /// `bundle create LOCK -o <out_rel> --key KEY --cache <cache_rel> extra…` with `envs`.
    fn create_run(
        &self,
        lock: &Path,
        key: &Path,
        out_rel: &str,
        cache_rel: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> (PathBuf, Run) {
        let out = self.path(out_rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        let run = create_from_cache(lock, &out, key, &self.path(cache_rel), extra, envs);
        (out, run)
    }

    /// A successful create with `SOURCE_DATE_EPOCH=EPOCH`; returns the bundle path.
    fn create(&self, lock: &Path, key: &Path, out_rel: &str, cache_rel: &str) -> PathBuf {
        let (out, run) = self.create_run(
            lock,
            key,
            out_rel,
            cache_rel,
            &[],
            &[("SOURCE_DATE_EPOCH", EPOCH)],
        );
        run.assert_ok();
        out
    }

    /// keygen + lock + create: the common start of most tests.
    fn bundle(&self) -> Made {
        let (key, pubkey) = self.keygen("site");
        let lock = self.lock("k8s.lock.yaml", "cache-lock");
        let out = self.create(&lock, &key, "out/k8s.bundle.tar.zst", "cache-create");
        Made { pubkey, lock, out }
    }

    fn content_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

struct Made {
    pubkey: PathBuf,
    lock: PathBuf,
    out: PathBuf,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The lock as the bundle carries it: the same YAML without the trailing `mirrors:`
/// section (SPEC §2: no mirror URL in the bundle).
fn carried_lock(lock: &Path) -> String {
    let text = fs::read_to_string(lock).unwrap();
    let (before, _) = text
        .split_once("mirrors:\n")
        .expect("the lock keeps its mirrors");
    before.to_string()
}

/// `bundle verify BUNDLE --pubkey PUB [extra…]`.
fn verify(bundle: &Path, pubkey: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "verify".as_ref(),
        bundle.as_os_str(),
        "--pubkey".as_ref(),
        pubkey.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run_bundle(&args, &[])
}

/// `bundle inspect BUNDLE --json`, parsed.
fn inspect_json(bundle: &Path) -> Value {
    let run = run_bundle(
        &["inspect".as_ref(), bundle.as_os_str(), "--json".as_ref()],
        &[],
    );
    run.assert_ok();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON: {e}\n{}", run.stdout))
}

/// Runs `bash -c 'set -euo pipefail; SCRIPT' bash ARGS…` (stdin from `input`).
fn bash(script: &str, args: &[&Path], input: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .arg("bash")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bash");
    if let Some(bytes) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(bytes)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait bash")
}

/// Like [`bash`], panicking unless it succeeds; returns stdout.
#[track_caller]
fn bash_ok(script: &str, args: &[&Path]) -> Vec<u8> {
    let o = bash(script, args, None);
    assert!(o.status.success(), "`{script}` failed\n{}", show_output(&o));
    o.stdout
}

/// The key id at the end of a `.pub` file's first line, as minisign prints it.
fn pub_key_id(pubkey: &Path) -> String {
    let text = fs::read_to_string(pubkey).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("untrusted comment:"),
        "{}: {first}",
        pubkey.display()
    );
    let shown = first.rsplit(' ').next().unwrap().to_string();
    // Cross-check against the key itself: bytes 2..10 of the payload, a little-endian u64
    // that minisign's comment shows as `%X` (no leading zeros: one key in 256 has a
    // shorter id there) and this tool as `%016X`.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.lines().nth(1).unwrap().trim())
        .unwrap();
    assert_eq!(&raw[..2], b"Ed", "{}", pubkey.display());
    let id = u64::from_le_bytes(raw[2..10].try_into().unwrap());
    assert_eq!(
        u64::from_str_radix(&shown, 16).ok(),
        Some(id),
        "{}: the comment's key id {shown} is not the key's",
        pubkey.display()
    );
    format!("{id:016X}")
}

/// Names in a directory (to spot leftover temporary files).
fn dir_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn minisig_of(bundle: &Path) -> PathBuf {
    PathBuf::from(format!("{}.minisig", bundle.display()))
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The expected `tar -t` listing of a bundle made from `site`.
fn expected_listing(site: &Site) -> Vec<String> {
    let mut content: Vec<String> = site.files.iter().map(UpFile::dest).collect();
    content.sort();
    let mut all = vec![
        "bundle/index.json".to_string(),
        "bundle/index.json.minisig".to_string(),
        "bundle/manifest.lock.yaml".to_string(),
    ];
    all.extend(content);
    all
}

/// Walks a decompressed tar: (offset of the entry's first header, path, size) for every
/// logical entry, where GNU long-name and PAX headers belong to the entry they precede.
fn walk_tar(tar: &[u8]) -> Vec<(usize, String, u64)> {
    let cstr = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8(b[..end].to_vec()).expect("UTF-8 tar name")
    };
    let mut out = Vec::new();
    let mut pos = 0;
    let mut start = None;
    let mut long_name = None;
    loop {
        let h = &tar[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        assert_eq!(&h[257..262], b"ustar", "no tar header at offset {pos}");
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .unwrap_or_else(|e| panic!("tar size {size_field:?} at {pos}: {e}"));
        let data = pos + 512;
        let first = *start.get_or_insert(pos);
        match h[156] {
            b'L' => long_name = Some(cstr(&tar[data..data + size as usize])),
            b'x' | b'g' | b'K' => {}
            _ => {
                let name = long_name.take().unwrap_or_else(|| cstr(&h[..100]));
                out.push((first, name, size));
                start = None;
            }
        }
        pos = data + (size as usize).div_ceil(512) * 512;
    }
    out
}

// ---------------------------------------------------------------------------
// 1. Happy path
// ---------------------------------------------------------------------------

/// lock pins every file with the sha256 and size the test computed; create fetches through
/// the mirror and writes exactly OUT and OUT.minisig; verify passes; inspect --json has
/// SPEC §6's fields with the right values.
#[test]
fn lock_create_verify_inspect_happy_path() {
    let site = Site::new(full_content());
    let (key, pubkey) = site.keygen("site");
    let lock = site.lock("k8s.lock.yaml", "cache-lock");

    // The lock pins every file with the sha256 and size of the bytes upstream.
    let locked: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&fs::read(&lock).unwrap()).expect("lock is YAML");
    let entries = locked["files"].as_sequence().expect("files in lock");
    assert_eq!(entries.len(), site.files.len());
    for f in &site.files {
        let e = entries
            .iter()
            .find(|e| e["url"].as_str() == Some(f.url))
            .unwrap_or_else(|| panic!("{} missing from the lock", f.url));
        let sha = e["sha256"].as_str().unwrap_or_default();
        assert_eq!(
            sha.strip_prefix("sha256:").unwrap_or(sha),
            f.bytes_sha256,
            "lock sha256 of {}",
            f.url
        );
        assert_eq!(e["size"].as_u64(), Some(f.size), "lock size of {}", f.url);
    }

    // create fetches through the mirror (a cache of its own, so it really downloads).
    let out_dir = site.path("out");
    let out = site.create(&lock, &key, "out/k8s.bundle.tar.zst", "cache-create");
    let log = site.apache.wait_access_log(|l| {
        site.files.iter().all(|f| {
            let path = f.url.strip_prefix("https://").unwrap();
            l.matches(&format!("\"GET /{path} HTTP/1.1\" 200")).count() >= 2
        })
    });
    assert!(
        !log.contains("\" 404 "),
        "create asked the mirror for something it does not have:\n{log}"
    );
    assert_eq!(
        dir_names(&out_dir),
        BTreeSet::from([
            "k8s.bundle.tar.zst".to_string(),
            "k8s.bundle.tar.zst.minisig".to_string()
        ]),
        "create must leave exactly the bundle and its signature (no temporary files)"
    );
    assert!(fs::metadata(&out).unwrap().len() > site.content_bytes() / 2);

    let v = verify(&out, &pubkey, &[]);
    v.assert_ok();

    let j = inspect_json(&out);
    assert_eq!(j["format"], 1, "{j:#}");
    assert_eq!(j["name"], "kubespray-offline");
    assert_eq!(j["version"], "2.27.0");
    assert_eq!(j["created"], EPOCH_RFC3339);
    assert!(
        j["tool"].as_str().unwrap().contains("airgap-bundle"),
        "tool: {}",
        j["tool"]
    );
    assert_eq!(
        j["signed_by"]["key_id"].as_str().unwrap(),
        pub_key_id(&pubkey),
        "inspect's key id must be the one minisign shows for site.pub"
    );
    let trusted = j["signed_by"]["trusted_comment"].as_str().unwrap();
    assert!(trusted.contains(&format!("timestamp:{EPOCH}")), "{trusted}");
    let carried = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$0\" | tar -xO bundle/manifest.lock.yaml")
        .arg(&out)
        .output()
        .unwrap();
    assert!(carried.status.success());
    assert_eq!(
        j["manifest_sha256"].as_str().unwrap(),
        sha256_bytes(&carried.stdout),
        "manifest_sha256 is the sha256 of the carried lock"
    );
    let carried = String::from_utf8(carried.stdout).unwrap();
    let lock_text = fs::read_to_string(&lock).unwrap();
    assert!(lock_text.contains("mirrors:"), "{lock_text}");
    assert!(
        !carried.contains("mirrors") && !carried.contains("127.0.0.1"),
        "the carried lock keeps no mirror (proxy) URL: {carried}"
    );
    let volumes = j["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 1, "{j:#}");
    assert_eq!(
        volumes[0]["size"].as_u64(),
        Some(fs::metadata(&out).unwrap().len())
    );
    let lock_size = carried_lock(&lock).len() as u64;
    assert_eq!(
        j["totals"]["entries"].as_u64(),
        Some(site.files.len() as u64 + 1),
        "every file plus the locked manifest"
    );
    assert_eq!(
        j["totals"]["bytes"].as_u64(),
        Some(site.content_bytes() + lock_size)
    );
    assert_eq!(j["compression"]["seekable"], true);

    let artifacts = j["artifacts"].as_array().expect("artifacts");
    assert_eq!(artifacts.len(), site.files.len());
    for f in &site.files {
        let a = artifacts
            .iter()
            .find(|a| a["source"].as_str() == Some(f.url))
            .unwrap_or_else(|| panic!("no artifact for {}: {j:#}", f.url));
        assert_eq!(a["kind"], "file");
        assert_eq!(a["dest"].as_str().unwrap(), f.dest());
        assert_eq!(a["sha256"].as_str().unwrap(), f.bytes_sha256);
        assert_eq!(a["size"].as_u64(), Some(f.size));
        assert_eq!(a["entries"], serde_json::json!([f.dest()]));
    }
    let kubeadm = artifacts.iter().find(|a| a["source"] == KUBEADM).unwrap();
    assert_eq!(
        kubeadm["dest"],
        "files/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm"
    );
    let empty = artifacts.iter().find(|a| a["source"] == EMPTY).unwrap();
    assert_eq!(empty["size"], 0);
    assert_eq!(
        empty["sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

// ---------------------------------------------------------------------------
// 2. Determinism and reproducibility
// ---------------------------------------------------------------------------

/// Two locks (each downloading into its own cache) are byte-identical; two creates from the
/// same lock, key and SOURCE_DATE_EPOCH (different paths, different caches) are identical by
/// `cmp`; a different SOURCE_DATE_EPOCH gives a different bundle.
#[test]
fn lock_is_deterministic_and_create_is_reproducible() {
    let site = Site::new(full_content());
    let (key, _pubkey) = site.keygen("site");
    let lock_a = site.lock("a.lock.yaml", "cache-lock-a");
    let lock_b = site.lock("b.lock.yaml", "cache-lock-b");
    assert_eq!(
        fs::read(&lock_a).unwrap(),
        fs::read(&lock_b).unwrap(),
        "lock twice must give byte-identical output"
    );

    let one = site.create(&lock_a, &key, "one/k8s.bundle.tar.zst", "cache-1");
    let two = site.create(&lock_a, &key, "two/nested/k8s.bundle.tar.zst", "cache-2");
    bash_ok(r#"cmp -- "$1" "$2""#, &[&one, &two]);

    let (three, run) = site.create_run(
        &lock_a,
        &key,
        "three/k8s.bundle.tar.zst",
        "cache-1",
        &[],
        &[("SOURCE_DATE_EPOCH", "1700000001")],
    );
    run.assert_ok();
    let o = bash(r#"cmp -s -- "$1" "$2""#, &[&one, &three], None);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a different SOURCE_DATE_EPOCH must change the bundle\n{}",
        show_output(&o)
    );
    assert_eq!(inspect_json(&three)["created"], "2023-11-14T22:13:21Z");
}

// ---------------------------------------------------------------------------
// 3. Stock tools
// ---------------------------------------------------------------------------

/// `zstd -dc | tar -t` lists the signed head, the manifest, then content by path; stock tar
/// extracts the upstream bytes; stock minisign accepts the detached signature and the index
/// signature, and rejects the bundle with one byte flipped (as does `bundle verify`).
#[test]
fn stock_zstd_tar_and_minisign_read_the_bundle() {
    let site = Site::new(full_content());
    let made = site.bundle();
    let (out, pubkey) = (&made.out, &made.pubkey);

    let listing = bash_ok(r#"zstd -q -dc -- "$1" | tar -t"#, &[out]);
    let listing: Vec<String> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(listing, expected_listing(&site));

    // Stock tar extracts exactly the upstream bytes at files/<host>/<path>.
    let x = site.ws.mkdir("x");
    bash_ok(r#"zstd -q -dc -- "$1" | tar -x -C "$2""#, &[out, &x]);
    for f in &site.files {
        assert_eq!(
            sha256_file(x.join(f.dest())),
            f.bytes_sha256,
            "{} extracted by stock tar",
            f.dest()
        );
    }
    assert_eq!(
        sha256_file(x.join("bundle/manifest.lock.yaml")),
        sha256_bytes(carried_lock(&made.lock))
    );

    // The detached signature of the whole file (minisign finds OUT.minisig by itself).
    let o = bash_ok(r#"minisign -V -m "$1" -p "$2""#, &[out, pubkey]);
    assert!(
        String::from_utf8_lossy(&o).contains("verified"),
        "{}",
        String::from_utf8_lossy(&o)
    );

    // The index signature, from the two entries extracted with stock tar.
    let head = site.ws.mkdir("head");
    bash_ok(
        r#"zstd -q -dc -- "$1" | tar -x -C "$2" bundle/index.json bundle/index.json.minisig"#,
        &[out, &head],
    );
    bash_ok(
        r#"minisign -V -m "$1/bundle/index.json" -x "$1/bundle/index.json.minisig" -p "$2""#,
        &[&head, pubkey],
    );
    // … and without -x, as SPEC §3 spells it.
    bash_ok(
        r#"cd "$1/bundle" && minisign -V -p "$2" -m index.json"#,
        &[&head, pubkey],
    );

    // One flipped byte (in the middle of the big file's frames): stock minisign rejects the
    // detached signature, and verify fails with exit 3.
    let tampered = site.path("tampered.bundle.tar.zst");
    let mut bytes = fs::read(out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&tampered, &bytes).unwrap();
    let o = bash(
        r#"minisign -V -m "$1" -x "$2" -p "$3""#,
        &[&tampered, &minisig_of(out), pubkey],
        None,
    );
    assert!(
        !o.status.success(),
        "minisign accepted a tampered bundle\n{}",
        show_output(&o)
    );
    verify(&tampered, pubkey, &[])
        .assert_code(3)
        .assert_stderr_contains("verification failed");
}

// ---------------------------------------------------------------------------
// 4. Key interoperability with stock minisign
// ---------------------------------------------------------------------------

/// Keys made by `minisign -G` (unencrypted and with a password) sign bundles with our
/// `create` that our `verify` and stock `minisign -V` accept.
#[test]
fn minisign_generated_keys_sign_bundles() {
    let site = Site::new(small_content());
    let lock = site.lock("k8s.lock.yaml", "cache");
    let (mk_pub, mk_key) = (site.path("mk.pub"), site.path("mk.key"));
    bash_ok(r#"minisign -G -W -p "$1" -s "$2""#, &[&mk_pub, &mk_key]);

    let out = site.create(&lock, &mk_key, "a/k8s.bundle.tar.zst", "cache");
    verify(&out, &mk_pub, &[]).assert_ok();
    bash_ok(r#"minisign -V -m "$1" -p "$2""#, &[&out, &mk_pub]);
    assert_eq!(
        inspect_json(&out)["signed_by"]["key_id"].as_str().unwrap(),
        pub_key_id(&mk_pub)
    );

    // An encrypted minisign key, unlocked by BUNDLE_KEY_PASSWORD.
    let (mk2_pub, mk2_key) = (site.path("mk2.pub"), site.path("mk2.key"));
    let o = bash(
        r#"minisign -G -p "$1" -s "$2""#,
        &[&mk2_pub, &mk2_key],
        Some(b"pw\npw\n"),
    );
    assert!(
        o.status.success(),
        "minisign -G with a password\n{}",
        show_output(&o)
    );
    let (out2, run) = site.create_run(
        &lock,
        &mk2_key,
        "b/k8s.bundle.tar.zst",
        "cache",
        &[],
        &[("BUNDLE_KEY_PASSWORD", "pw")],
    );
    run.assert_ok();
    verify(&out2, &mk2_pub, &[]).assert_ok();
    bash_ok(r#"minisign -V -m "$1" -p "$2""#, &[&out2, &mk2_pub]);
    // The other key's public half must not verify it.
    verify(&out2, &mk_pub, &[])
        .assert_code(3)
        .assert_stderr_contains(&pub_key_id(&mk_pub));
}

/// A key from our `keygen` with BUNDLE_KEY_PASSWORD is usable by stock `minisign -S`; a
/// wrong BUNDLE_KEY_PASSWORD makes create fail with "wrong password" and write nothing.
#[test]
fn our_encrypted_key_works_with_stock_minisign_and_wrong_password_fails() {
    let site = Site::new(small_content());
    let prefix = site.path("ours");
    run_bundle(
        &["keygen".as_ref(), "--out".as_ref(), prefix.as_os_str()],
        &[("BUNDLE_KEY_PASSWORD", "pw")],
    )
    .assert_ok();
    let (key, pubkey) = (site.path("ours.key"), site.path("ours.pub"));
    // minisign's secret key layout: "Ed", then the KDF ("Sc" = scrypt, i.e. encrypted).
    let text = fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("untrusted comment:"), "{text}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.lines().nth(1).unwrap().trim())
        .unwrap();
    assert_eq!(
        &raw[..4],
        b"EdSc",
        "keygen with a password must encrypt the key"
    );

    let file = site
        .ws
        .write("message.txt", "hello from the connected side\n");
    let o = bash(
        r#"minisign -S -s "$1" -m "$2""#,
        &[&key, &file],
        Some(b"pw\n"),
    );
    assert!(
        o.status.success(),
        "stock minisign could not sign with our key\n{}",
        show_output(&o)
    );
    bash_ok(r#"minisign -V -m "$1" -p "$2""#, &[&file, &pubkey]);

    let lock = site.lock("k8s.lock.yaml", "cache");
    let out_dir = site.ws.mkdir("out");
    let (out, run) = site.create_run(
        &lock,
        &key,
        "out/k8s.bundle.tar.zst",
        "cache",
        &[],
        &[("BUNDLE_KEY_PASSWORD", "not-the-password")],
    );
    run.assert_code(2)
        .assert_stderr_contains("wrong password")
        .assert_stderr_contains("ours.key");
    assert!(
        !out.exists(),
        "a failed create must not write {}",
        out.display()
    );
    assert!(
        dir_names(&out_dir).is_empty(),
        "a failed create left {:?}",
        dir_names(&out_dir)
    );
}

// ---------------------------------------------------------------------------
// 5. Seek table vs frames
// ---------------------------------------------------------------------------

/// The seek table at the end matches the frames: sizes add up, each frame decompresses on
/// its own to the size the table gives, none holds more than 8 MiB of tar, every entry's
/// header starts a frame, and the frames together are what stock `zstd -dc` yields.
#[test]
fn seek_table_matches_frames_and_entries_start_frames() {
    let site = Site::new(full_content());
    let made = site.bundle();
    let z = fs::read(&made.out).unwrap();
    let n = z.len();

    // Footer: u32le frame count, descriptor byte, u32le magic.
    assert_eq!(u32le(&z, n - 4), SEEKABLE_MAGIC, "no seek table footer");
    let count = u32le(&z, n - 9) as usize;
    let descriptor = z[n - 5];
    assert_eq!(descriptor, 0, "no checksums, no reserved bits");
    let table_len = 8 + count * 8 + 9;
    let table_at = n - table_len;
    assert_eq!(u32le(&z, table_at), SKIPPABLE_MAGIC);
    assert_eq!(u32le(&z, table_at + 4) as usize, table_len - 8);
    let frames: Vec<(usize, usize)> = (0..count)
        .map(|i| {
            let at = table_at + 8 + i * 8;
            (u32le(&z, at) as usize, u32le(&z, at + 4) as usize)
        })
        .collect();
    assert_eq!(
        frames.iter().map(|f| f.0).sum::<usize>(),
        table_at,
        "compressed sizes must add up to the bytes before the table"
    );

    let mut tar = Vec::new();
    let mut boundaries = BTreeSet::new();
    let mut at = 0;
    for (i, &(compressed, decompressed)) in frames.iter().enumerate() {
        let slice = &z[at..at + compressed];
        assert_eq!(u32le(slice, 0), ZSTD_MAGIC, "frame {i} at {at}");
        assert_eq!(
            zstd::zstd_safe::find_frame_compressed_size(slice),
            Ok(compressed),
            "frame {i} must be exactly one zstd frame"
        );
        let bytes = zstd::stream::decode_all(slice)
            .unwrap_or_else(|e| panic!("frame {i} does not decompress on its own: {e}"));
        assert_eq!(bytes.len(), decompressed, "frame {i} size vs the table");
        assert!(
            decompressed <= MAX_FRAME_TAR_BYTES,
            "frame {i} holds {decompressed} tar bytes"
        );
        boundaries.insert(tar.len());
        tar.extend_from_slice(&bytes);
        at += compressed;
    }

    let stock = bash_ok(r#"zstd -q -dc -- "$1""#, &[&made.out]);
    assert!(stock == tar, "the frames together differ from `zstd -dc`");

    let entries = walk_tar(&tar);
    let names: Vec<String> = entries.iter().map(|e| e.1.clone()).collect();
    assert_eq!(names, expected_listing(&site));
    for (offset, name, _) in &entries {
        assert!(
            boundaries.contains(offset),
            "entry {name} starts at tar offset {offset}, not at a frame boundary"
        );
    }
    // The > 9 MiB entry is cut into several frames.
    let (big_at, _, big_size) = entries.iter().find(|e| e.1 == dest_of(KUBEADM)).unwrap();
    let big_end = *big_at as u64 + 512 + big_size;
    let inside = boundaries
        .iter()
        .filter(|&&b| b > *big_at && (b as u64) < big_end)
        .count();
    assert!(inside >= 1, "a 9 MiB entry must span several frames");
    assert!(
        count > entries.len(),
        "{count} frames for {} entries",
        entries.len()
    );

    let j = inspect_json(&made.out);
    assert_eq!(j["compression"]["seekable"], true);
    assert_eq!(j["compression"]["frames"].as_u64(), Some(count as u64));
}

// ---------------------------------------------------------------------------
// 6. Recompressed and re-tarred bundles
// ---------------------------------------------------------------------------

/// A bundle recompressed by stock zstd (one frame, no seek table) still verifies and
/// inspect says it is not seekable; re-tarred with PAX headers it still verifies; a
/// re-tarred bundle with one content byte changed does not.
#[test]
fn recompressed_and_pax_retarred_bundles_still_verify() {
    let site = Site::new(medium_content());
    let made = site.bundle();
    let (out, pubkey) = (&made.out, &made.pubkey);

    let re = site.path("re.tar.zst");
    bash_ok(
        r#"zstd -q -dc -- "$1" | zstd -q -19 -T0 -o "$2""#,
        &[out, &re],
    );
    let rz = fs::read(&re).unwrap();
    assert_ne!(
        u32le(&rz, rz.len() - 4),
        SEEKABLE_MAGIC,
        "stock zstd wrote a seek table?"
    );
    assert_eq!(
        zstd::zstd_safe::find_frame_compressed_size(&rz),
        Ok(rz.len()),
        "stock zstd should have written one frame"
    );
    assert!(inspect_json(out)["compression"]["frames"].as_u64().unwrap() > 1);
    verify(&re, pubkey, &[]).assert_ok();
    let j = inspect_json(&re);
    assert_eq!(j["compression"]["seekable"], false, "{j:#}");
    assert_eq!(j["compression"]["frames"], Value::Null);
    let text = run_bundle(&["inspect".as_ref(), re.as_os_str()], &[]);
    text.assert_ok().assert_stdout_contains("not seekable");

    let d = site.ws.mkdir("d");
    bash_ok(r#"zstd -q -dc -- "$1" | tar -x -C "$2""#, &[out, &d]);
    let pax = site.path("pax.tar.zst");
    let retar = r#"tar --format=pax -c -C "$1" bundle/index.json bundle/index.json.minisig bundle/manifest.lock.yaml files | zstd -q -o "$2""#;
    bash_ok(retar, &[&d, &pax]);
    let raw = zstd::stream::decode_all(fs::File::open(&pax).unwrap()).unwrap();
    assert!(
        raw.windows(10).any(|w| w == b"PaxHeaders"),
        "tar --format=pax wrote no PAX headers"
    );
    verify(&pax, pubkey, &[]).assert_ok();
    let j = inspect_json(&pax);
    assert_eq!(j["name"], "kubespray-offline");
    assert_eq!(j["compression"]["seekable"], false);

    // Negative control: same re-tar, one content byte changed.
    let victim = d.join(dest_of(KUBECTL));
    let mut bytes = fs::read(&victim).unwrap();
    bytes[1000] ^= 0x80;
    fs::write(&victim, bytes).unwrap();
    let bad = site.path("pax-bad.tar.zst");
    bash_ok(retar, &[&d, &bad]);
    verify(&bad, pubkey, &[])
        .assert_code(3)
        .assert_stderr_contains(&dest_of(KUBECTL));
}

// ---------------------------------------------------------------------------
// 7. Parallelism does not change the bytes
// ---------------------------------------------------------------------------

/// `--jobs 4` and `--jobs 1` (each downloading all nine files into its own cache) and
/// `--threads 1` vs the default give byte-identical bundles.
#[test]
fn jobs_and_threads_do_not_change_the_bundle() {
    let site = Site::new(full_content());
    let (key, pubkey) = site.keygen("site");
    let lock = site.lock("k8s.lock.yaml", "cache-lock");
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];

    let (j4, run) = site.create_run(&lock, &key, "j4/b.tar.zst", "c-j4", &["--jobs", "4"], &env);
    run.assert_ok();
    let (j1, run) = site.create_run(&lock, &key, "j1/b.tar.zst", "c-j1", &["--jobs", "1"], &env);
    run.assert_ok();
    let (t1, run) = site.create_run(
        &lock,
        &key,
        "t1/b.tar.zst",
        "c-j4",
        &["--threads", "1"],
        &env,
    );
    run.assert_ok();

    // Both job counts really downloaded every file (separate caches).
    site.apache.wait_access_log(|l| {
        site.files.iter().all(|f| {
            let path = f.url.strip_prefix("https://").unwrap();
            l.matches(&format!("\"GET /{path} HTTP/1.1\" 200")).count() >= 3
        })
    });
    bash_ok(r#"cmp -- "$1" "$2""#, &[&j4, &j1]);
    bash_ok(r#"cmp -- "$1" "$2""#, &[&j4, &t1]);
    verify(&j4, &pubkey, &[]).assert_ok();
    // The bundle is multi-frame, so compression threads had something to share.
    let frames = inspect_json(&j4)["compression"]["frames"].as_u64().unwrap();
    assert!(frames > 4, "{frames} frames");
}

// ---------------------------------------------------------------------------
// 8. verify --json
// ---------------------------------------------------------------------------

/// `verify --json` prints one JSON document with verified == true, the entry count and
/// byte total of the signed index, and the signing key's id.
#[test]
fn verify_json_reports_the_verified_index() {
    let site = Site::new(small_content());
    let made = site.bundle();
    let run = verify(&made.out, &made.pubkey, &["--json"]);
    run.assert_ok();
    let j: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("verify --json is not JSON: {e}\n{}", run.stdout));
    assert_eq!(j["verified"], true, "{j:#}");
    assert_eq!(
        j["entries"].as_u64(),
        Some(site.files.len() as u64 + 1),
        "{j:#}"
    );
    let lock_size = carried_lock(&made.lock).len() as u64;
    assert_eq!(j["bytes"].as_u64(), Some(site.content_bytes() + lock_size));
    assert_eq!(j["key_id"].as_str().unwrap(), pub_key_id(&made.pubkey));
    assert_eq!(j["name"], "kubespray-offline");

    // With the wrong key, --json still exits 3 and claims nothing on stdout.
    let (_, other_pub) = site.keygen("other");
    let run = verify(&made.out, &other_pub, &["--json"]);
    run.assert_code(3);
    assert!(!run.stdout.contains("\"verified\": true"), "{}", run.stdout);
}

/// SPEC §2: a bundle made through a mirror is identical to one made through another mirror
/// (here: the same files under a second path prefix of the upstream server), and the
/// carried lock holds no mirror URL.
#[test]
fn bundles_do_not_depend_on_the_mirror_used() {
    let site = Site::new(small_content());
    let (key, _pubkey) = site.keygen("site");
    // A second "proxy": the same tree under /proxy-b/ on the same server.
    let upstream = site.path("upstream");
    let proxy_b = site.path("upstream/proxy-b");
    fs::create_dir_all(&proxy_b).unwrap();
    for host in ["dl.k8s.io", "github.com"] {
        std::os::unix::fs::symlink(upstream.join(host), proxy_b.join(host)).unwrap();
    }
    let loose = fs::read_to_string(&site.manifest).unwrap();
    let via_b = loose.replace(
        &site.apache.url("dl.k8s.io/"),
        &site.apache.url("proxy-b/dl.k8s.io/"),
    );
    let via_b = via_b.replace(
        &site.apache.url("github.com/"),
        &site.apache.url("proxy-b/github.com/"),
    );
    assert_ne!(loose, via_b);
    let manifest_b = site.ws.write("manifests/k8s-b.yaml", &via_b);

    let lock_a = site.lock("a.lock.yaml", "cache-a");
    let lock_b = site.path("b.lock.yaml");
    run_bundle(
        &[
            "lock".as_ref(),
            manifest_b.as_os_str(),
            "-o".as_ref(),
            lock_b.as_os_str(),
            "--cache".as_ref(),
            site.path("cache-b").as_os_str(),
        ],
        &[],
    )
    .assert_ok();
    assert_ne!(fs::read(&lock_a).unwrap(), fs::read(&lock_b).unwrap());
    let log = site
        .apache
        .wait_access_log(|l| l.contains("/proxy-b/dl.k8s.io/"));
    assert!(log.contains("/proxy-b/github.com/"), "{log}");

    let a = site.create(&lock_a, &key, "a/k8s.bundle.tar.zst", "cache-a");
    let b = site.create(&lock_b, &key, "b/k8s.bundle.tar.zst", "cache-b");
    bash_ok(r#"cmp -- "$1" "$2""#, &[&a, &b]);
}

// ---------------------------------------------------------------------------
// 9. Split volumes and key files
// ---------------------------------------------------------------------------

/// A bundle split by stock `split` into `X.bundle.tar.zst.000`, `.001`, … verifies from
/// its base name; with a middle volume removed, verify says which volume is missing (exit
/// 1: the copy is incomplete, the bundle is not damaged) instead of reporting a truncated
/// bundle.
#[test]
fn a_missing_middle_volume_is_named() {
    require_tool("split");
    let site = Site::new(small_content());
    let made = site.bundle();
    let dir = site.ws.mkdir("volumes");
    let base = dir.join("X.bundle.tar.zst");
    let prefix = dir.join("X.bundle.tar.zst.");
    bash_ok(
        r#"split -b 40000 -d -a 3 -- "$1" "$2""#,
        &[&made.out, &prefix],
    );
    let volumes = dir_names(&dir);
    assert!(
        volumes.len() >= 3 && volumes.contains("X.bundle.tar.zst.002"),
        "a bundle of {} bytes split into {volumes:?}",
        fs::metadata(&made.out).unwrap().len()
    );

    // Positive control: every volume present.
    verify(&base, &made.pubkey, &[])
        .assert_ok()
        .assert_stderr_contains("OK: kubespray-offline 2.27.0");

    fs::remove_file(dir.join("X.bundle.tar.zst.001")).unwrap();
    verify(&base, &made.pubkey, &[])
        .assert_code(1)
        .assert_stderr_contains("X.bundle.tar.zst.001")
        .assert_stderr_contains("missing");
}

/// Key files that are missing are usage errors (exit 2) naming the file, for `verify
/// --pubkey` and `create --key`; a key path pointing at a device that never ends is
/// refused after a key's worth of bytes, quickly.
#[test]
fn missing_and_endless_key_files_are_usage_errors() {
    let site = Site::new(small_content());
    let made = site.bundle();
    let none_pub = Path::new("/nonexistent.pub");
    let none_key = Path::new("/nonexistent.key");
    assert!(!none_pub.exists() && !none_key.exists());

    verify(&made.out, none_pub, &[])
        .assert_code(2)
        .assert_stderr_contains("/nonexistent.pub")
        .assert_stderr_contains("no such public key file");

    let (out, run) = site.create_run(
        &made.lock,
        none_key,
        "out/none.bundle.tar.zst",
        "cache-create",
        &[],
        &[],
    );
    run.assert_code(2)
        .assert_stderr_contains("/nonexistent.key")
        .assert_stderr_contains("no such secret key file");
    assert!(!out.exists());

    // A key's worth of /dev/zero, not all of it (which never ends): under a deadline, so
    // that a regression fails instead of hanging.
    let lock = made.lock.as_os_str();
    let cases: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        (
            "verify --pubkey /dev/zero",
            vec![
                "verify".as_ref(),
                made.out.as_os_str(),
                "--pubkey".as_ref(),
                "/dev/zero".as_ref(),
            ],
        ),
        (
            "create --key /dev/zero",
            vec![
                "create".as_ref(),
                lock,
                "-o".as_ref(),
                "zero.bundle.tar.zst".as_ref(),
                "--key".as_ref(),
                "/dev/zero".as_ref(),
            ],
        ),
    ];
    for (what, args) in cases {
        let result = run_bundle_with_deadline(site.ws.root(), &args, &[], Duration::from_secs(20));
        let Some(run) = result.run else {
            panic!(
                "{what}: still running after {:?}; killed it",
                result.elapsed
            );
        };
        run.assert_code(2)
            .assert_stderr_contains("/dev/zero")
            .assert_stderr_contains("too large");
        assert!(
            result.elapsed < Duration::from_secs(5),
            "{what} took {:?}",
            result.elapsed
        );
    }
}
