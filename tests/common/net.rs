//! Shared support for the `lock` / `create` tests against a real upstream
//! (`tests/network.rs`, `tests/faults.rs`): test data, manifests, the commands run in a
//! workspace (with `site.key` / `site.pub` in it), lock files and Apache access logs.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::{Run, Workspace, keygen, run_bundle_in, sha256_bytes};

/// Deterministic incompressible test data (xorshift), different for every `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

/// The head of a manifest called `name`, up to `files:`.
fn manifest_head(name: &str) -> String {
    format!("apiVersion: bundle/v1\nname: {name}\nversion: '1.0'\nfiles:\n")
}

/// A loose manifest called `name` for `urls`, plus any extra top-level YAML.
pub fn manifest(name: &str, urls: &[String], extra: &str) -> String {
    let mut m = manifest_head(name);
    for u in urls {
        m.push_str(&format!("  - url: '{u}'\n"));
    }
    m.push_str(extra);
    m
}

/// A locked manifest called `name` (sha256 and size pinned) for `(url, content)` pairs.
pub fn locked_manifest(name: &str, files: &[(String, &[u8])]) -> String {
    let mut m = manifest_head(name);
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
pub fn site_keygen(ws: &Workspace) {
    keygen(&ws.path("site"));
}

/// `bundle lock MANIFEST -o OUT --cache CACHE EXTRA...` in the workspace.
pub fn lock(ws: &Workspace, manifest: &str, out: &str, cache: &str, extra: &[&str]) -> Run {
    let mut args = vec!["lock", manifest, "-o", out, "--cache", cache];
    args.extend_from_slice(extra);
    run_bundle_in(ws.root(), &args, &[])
}

/// `bundle create LOCKED -o OUT --key site.key --cache CACHE EXTRA...` in the workspace,
/// with a fixed `SOURCE_DATE_EPOCH`.
pub fn create(ws: &Workspace, locked: &str, out: &str, cache: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "create", locked, "-o", out, "--key", "site.key", "--cache", cache,
    ];
    args.extend_from_slice(extra);
    run_bundle_in(ws.root(), &args, &[("SOURCE_DATE_EPOCH", "1700000000")])
}

/// `bundle verify BUNDLE --pubkey site.pub` in the workspace.
pub fn verify(ws: &Workspace, bundle: &str) -> Run {
    run_bundle_in(ws.root(), &["verify", bundle, "--pubkey", "site.pub"], &[])
}

/// `inspect --json` of a bundle, parsed.
pub fn inspect_json(ws: &Workspace, bundle: &str) -> serde_json::Value {
    let run = run_bundle_in(ws.root(), &["inspect", bundle, "--json"], &[]);
    run.assert_ok();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON: {e}\n{}", run.stdout))
}

/// The `files` entries of a lock file: (url, sha256, size).
pub fn locked_files(path: &Path) -> Vec<(String, String, u64)> {
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
pub fn gets<'a>(log: &'a str, path: &str) -> Vec<&'a str> {
    let needle = format!("\"GET {path} HTTP/");
    log.lines().filter(|l| l.contains(&needle)).collect()
}

/// Names in a directory (empty if it does not exist), sorted.
pub fn dir_names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}
