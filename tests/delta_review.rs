//! Delta bundles under review (SPEC §3 "Delta bundles"): a base that does not say what the
//! lock says, bases that are not regular files, and what a refused delta install may touch.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::install::*;
use common::tamper::{decompress, read_tar};
use common::*;
use serde_json::{Value, json};

/// The signed index of `bundle`, parsed.
fn index_of(bundle: &Path) -> Value {
    let tar = decompress(&fs::read(bundle).unwrap());
    let entry = read_tar(&tar)
        .into_iter()
        .find(|e| e.path() == "bundle/index.json")
        .expect("an index");
    serde_json::from_slice(&entry.data).unwrap()
}

/// The entry of `index` (a signed index) at `path`.
fn entry_at<'a>(index: &'a Value, path: &str) -> &'a Value {
    index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no entry {path}: {index:#}"))
}

/// The lock and cache [`make_bundle`] left beside `built`.
fn lock_and_cache(built: &Built) -> (PathBuf, PathBuf) {
    let dir = built.bundle.parent().unwrap();
    (dir.join("manifest.lock.yaml"), dir.join("cache"))
}

/// `create LOCK -o OUT --key site.key --cache CACHE --base BASE` for `built`'s lock.
fn create_delta(ws: &Workspace, built: &Built, base: &Path, out: &str) -> (Run, PathBuf) {
    let (lock, cache) = lock_and_cache(built);
    let out = ws.path(out);
    let run = create_from_cache(
        &lock,
        &out,
        &ws.path("site.key"),
        &cache,
        &["--base", base.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    (run, out)
}

/// A site export of one installed bundle holding `files` (path, sha256, size).
fn site_export(built: &Built, files: &[(String, String, u64)]) -> Value {
    json!({
        "airgap_bundle_site": 1,
        "bundles": [{
            "name": built.name,
            "version": built.version,
            "index_sha256": "0".repeat(64),
            "manifest_sha256": "1".repeat(64),
        }],
        "files": files
            .iter()
            .map(|(path, sha256, size)| json!({"path": path, "sha256": sha256, "size": size}))
            .collect::<Vec<_>>(),
        "registries": [],
    })
}

/// A base (a stale or hand-edited site export) that records a file with the lock's sha256
/// but another size does not hold that file: the delta carries it, with the size the lock
/// and the bytes say. It was left out with the base's size in the signed index (a delta no
/// site could install, and `inspect` reporting bytes that were never saved), and a size
/// near 2^64 made `create` panic adding the sizes up.
#[test]
fn a_base_recording_another_size_for_the_same_sha256_does_not_hold_the_file() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "v1", "demo", 11);
    let (path, (_, sha256, size)) = built
        .files
        .iter()
        .find(|(p, _)| p.ends_with("bin/kubeadm"))
        .map(|(p, f)| (p.clone(), f.clone()))
        .unwrap();
    for claimed in [5u64, size + 1, u64::MAX] {
        let export = site_export(&built, &[(path.clone(), sha256.clone(), claimed)]);
        let base = ws.write(format!("site-{claimed}.json"), export.to_string());
        let (run, out) = create_delta(&ws, &built, &base, &format!("d-{claimed}.bundle.tar.zst"));
        run.assert_ok();
        let index = index_of(&out);
        let entry = entry_at(&index, &path);
        assert_eq!(entry["size"], size, "base size {claimed}: {entry}");
        assert_eq!(
            entry["in_place"],
            Value::Null,
            "base size {claimed}: {entry}"
        );
        assert_eq!(entry["sha256"], sha256.as_str());
    }
    // The same export with the right size leaves it out (the base is otherwise good).
    let export = site_export(&built, &[(path.clone(), sha256.clone(), size)]);
    let base = ws.write("site-right.json", export.to_string());
    let (run, out) = create_delta(&ws, &built, &base, "d-right.bundle.tar.zst");
    run.assert_ok();
    let index = index_of(&out);
    let entry = entry_at(&index, &path);
    assert_eq!(entry["in_place"], true, "{entry}");
    assert_eq!(entry["size"], size);
}

/// `--base` that is not a regular file (a directory, a FIFO nobody writes to, a character
/// device) is a usage error (exit 2) naming it, at once: a FIFO made `create` wait forever
/// for a writer, a directory was exit 1.
#[test]
fn a_base_that_is_not_a_regular_file_is_a_usage_error_at_once() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "v1", "demo", 12);
    let dir = ws.mkdir("base-dir");
    let fifo = ws.path("base-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (lock, cache) = lock_and_cache(&built);
    let key = ws.path("site.key");
    let out = ws.path("never.bundle.tar.zst");
    for base in [dir.as_path(), fifo.as_path(), Path::new("/dev/null")] {
        let extra = ["--base", base.to_str().unwrap()];
        let args = create_args(&lock, &out, &key, &cache, &extra);
        let run = run_bundle_with_deadline(ws.root(), &args, &[], Duration::from_secs(60));
        let run = run
            .run
            .unwrap_or_else(|| panic!("--base {} hangs", base.display()));
        run.assert_code(2)
            .assert_stderr_contains(&base.display().to_string())
            .assert_stderr_contains("not a regular file");
        assert!(!out.exists());
    }
}

/// A delta refused because what it expects is not in place (SPEC §3: before any data
/// moves) leaves what an interrupted install of another bundle kept staged: it was removed
/// first, so the operator who tried the wrong delta lost the sticks already read. A delta
/// whose pre-flight passes removes it, as any install of another bundle does (§6).
#[test]
fn a_refused_delta_keeps_what_another_bundle_kept_staged() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "v1", "demo", 13);
    let web = ws.mkdir("web");
    install(&built.bundle, &built.pubkey, &web, &[]).assert_ok();
    let export = ws.path("site.json");
    run_bundle(
        &[
            "receipt".as_ref(),
            "export".as_ref(),
            "--web-root".as_ref(),
            web.as_os_str(),
            "-o".as_ref(),
            export.as_os_str(),
        ],
        &[],
    )
    .assert_ok();
    let (run, delta) = create_delta(&ws, &built, &export, "d.bundle.tar.zst");
    run.assert_ok();
    let other_staging = |root: &Path| {
        let dir = root.join(".bundle-staging-0123456789abcdef");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        fs::write(dir.join("c1"), b"verified bytes of another bundle").unwrap();
        dir
    };

    let empty = ws.mkdir("empty");
    let kept = other_staging(&empty);
    let before = tree_snapshot(&empty);
    install(&delta, &built.pubkey, &empty, &[])
        .assert_code(1)
        .assert_stderr_contains("of what it expects in place are missing")
        .assert_stderr_contains("nothing was installed");
    assert_eq!(
        tree_snapshot(&empty),
        before,
        "a refused delta changed the web root"
    );
    assert!(kept.join("c1").exists());

    let kept = other_staging(&web);
    install(&delta, &built.pubkey, &web, &[]).assert_ok();
    assert!(
        !kept.exists(),
        "a delta that installed left another bundle's staging"
    );
    assert_no_staging(&web);
}
