//! Shared by the delta-bundle tests (`tests/delta.rs`, `tests/delta_kinds.rs`): a bundle's
//! signed index and archive paths, `bundle` runs in a workspace, and the upstream images
//! (built with umoci, pushed with skopeo) the deltas are made from.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::registry::{Registry, build_image_with};
use super::tamper::{decompress, read_tar};
use super::{Run, Workspace, create_args, keygen, output_ok, random_bytes, run_bundle_in};

/// `SOURCE_DATE_EPOCH` of every run (bundles made from the same lock compare equal).
pub const EPOCH: &str = "1700000000";

/// How a bundle's index and archive are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The tests' own decoding (stock zstd, `common::tamper`'s tar reader); the index must
    /// be the archive's first entry.
    Decoder,
    /// A stock pipeline: `zstd -dc B | tar -xO bundle/index.json` and `zstd -dc B | tar -t`.
    Stock,
}

/// A bundle on disk and its signed index.
pub struct Made {
    pub path: PathBuf,
    pub index_bytes: Vec<u8>,
    pub index: Value,
    reader: Reader,
}

impl Made {
    /// Reads the bundle at `path` and its index with `reader`.
    pub fn read(path: &Path, reader: Reader) -> Made {
        let index_bytes = match reader {
            Reader::Decoder => bundle_index_bytes(path),
            Reader::Stock => output_ok(Command::new("sh").arg("-c").arg(format!(
                "zstd -dc '{}' | tar -xO bundle/index.json",
                path.display()
            ))),
        };
        let index = serde_json::from_slice(&index_bytes)
            .unwrap_or_else(|e| panic!("index.json of {} is not JSON: {e}", path.display()));
        Made {
            path: path.to_path_buf(),
            index_bytes,
            index,
            reader,
        }
    }

    pub fn size(&self) -> u64 {
        fs::metadata(&self.path).unwrap().len()
    }

    /// Every entry of the index: path → (kind, sha256, size, in_place).
    pub fn entries(&self) -> BTreeMap<String, (String, String, u64, bool)> {
        self.index["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_string(),
                    (
                        e["kind"].as_str().unwrap().to_string(),
                        hex(&e["sha256"]),
                        e["size"].as_u64().unwrap(),
                        e["in_place"].as_bool().unwrap_or(false),
                    ),
                )
            })
            .collect()
    }

    /// The entries the index marks in place: path → size.
    pub fn in_place(&self) -> BTreeMap<String, u64> {
        self.entries()
            .into_iter()
            .filter(|(_, (_, _, _, in_place))| *in_place)
            .map(|(path, (_, _, size, _))| (path, size))
            .collect()
    }

    /// The paths the index marks `"in_place": true`.
    pub fn in_place_paths(&self) -> BTreeSet<String> {
        self.in_place().into_keys().collect()
    }

    /// Every entry path in the bundle's tar stream, in order (read as [`Made::read`] read
    /// the index).
    pub fn archive_paths(&self) -> Vec<String> {
        match self.reader {
            Reader::Decoder => read_tar(&decompress(&fs::read(&self.path).unwrap()))
                .iter()
                .map(|e| e.path())
                .collect(),
            Reader::Stock => {
                let out = output_ok(
                    Command::new("sh")
                        .arg("-c")
                        .arg(format!("zstd -dc '{}' | tar -t", self.path.display())),
                );
                String::from_utf8(out)
                    .unwrap()
                    .lines()
                    .map(|l| l.trim_end_matches('/').to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            }
        }
    }
}

/// A digest as lowercase hex, with or without its `sha256:` prefix in the JSON.
pub fn hex(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a digest string: {v}"))
        .trim_start_matches("sha256:")
        .to_string()
}

/// The bytes of `bundle/index.json`, the first entry of a bundle (stock zstd decoding).
pub fn bundle_index_bytes(bundle: &Path) -> Vec<u8> {
    let entries = read_tar(&decompress(&fs::read(bundle).unwrap()));
    let first = entries.first().expect("an empty bundle");
    assert_eq!(first.path(), "bundle/index.json", "{}", bundle.display());
    first.data.clone()
}

// ---------------------------------------------------------------------------
// Runs in a workspace
// ---------------------------------------------------------------------------

/// Runs `bundle ARGS…` in `ws`, with HOME and XDG_RUNTIME_DIR in it (no auth file of the
/// machine's user may leak into a test) and `SOURCE_DATE_EPOCH` [`EPOCH`].
pub fn run_in<S: AsRef<OsStr>>(ws: &Workspace, args: &[S]) -> Run {
    let root = ws.root().to_str().unwrap();
    run_bundle_in(
        ws.root(),
        args,
        &[
            ("HOME", root),
            ("XDG_RUNTIME_DIR", root),
            ("SOURCE_DATE_EPOCH", EPOCH),
        ],
    )
}

/// A workspace holding the site key pair `site.key`/`site.pub`.
pub fn site_workspace() -> Workspace {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    ws
}

/// `bundle --json install BUNDLE --pubkey site.pub TARGET…` in `ws`.
pub fn install_in(ws: &Workspace, bundle: &Path, target: &[&str]) -> Run {
    let mut args = vec![
        "--json",
        "install",
        bundle.to_str().unwrap(),
        "--pubkey",
        "site.pub",
    ];
    args.extend_from_slice(target);
    run_in(ws, &args)
}

/// `bundle lock MANIFEST -o LOCK --cache cache EXTRA…` in `ws`, which must succeed.
pub fn lock_in(ws: &Workspace, manifest: &Path, lock: &Path, extra: &[&str]) {
    let mut args = vec![
        "lock",
        manifest.to_str().unwrap(),
        "-o",
        lock.to_str().unwrap(),
        "--cache",
        "cache",
    ];
    args.extend_from_slice(extra);
    run_in(ws, &args).assert_ok();
}

/// `bundle create LOCK -o OUT --key site.key --cache CACHE EXTRA…` in `ws`.
pub fn create_in(ws: &Workspace, lock: &Path, out: &Path, cache: &str, extra: &[&str]) -> Run {
    run_in(
        ws,
        &create_args(lock, out, Path::new("site.key"), Path::new(cache), extra),
    )
}

// ---------------------------------------------------------------------------
// Upstream images
// ---------------------------------------------------------------------------

/// An upstream `docker-registry` storing under `<ws>/upstream` and the OCI layout
/// `<ws>/oci-src`, with `test/base:base` (one layer of `base_len` random bytes) and
/// `test/app:v1` (that layer and a 100 KB one) built in the layout and pushed.
pub fn upstream_images(ws: &Workspace, base_len: usize) -> (Registry, PathBuf) {
    let upstream = Registry::start(&ws.path("upstream"), None);
    let layout = ws.path("oci-src");
    build_image_with(&layout, None, "base", &random_bytes(base_len, 100));
    build_image_with(&layout, Some("base"), "app-1", &random_bytes(100_000, 101));
    push(&layout, "base", &upstream, "test/base:base");
    push(&layout, "app-1", &upstream, "test/app:v1");
    (upstream, layout)
}

/// Pushes the image `oci:LAYOUT:TAG` to `registry` as `DEST` (`REPO:TAG`).
pub fn push(layout: &Path, tag: &str, registry: &Registry, dest: &str) {
    output_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", registry.host())),
    );
}

/// Builds `tag` in `layout`: the `base` image plus a layer of `len` random bytes from
/// `seed`, and pushes it to `registry` as `dest`.
pub fn push_on_base(
    layout: &Path,
    registry: &Registry,
    (tag, len, seed): (&str, usize, u64),
    dest: &str,
) {
    build_image_with(layout, Some("base"), tag, &random_bytes(len, seed));
    push(layout, tag, registry, dest);
}
