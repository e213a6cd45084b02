//! Shared support for the `bundle install` tests (`tests/install.rs`,
//! `tests/install_guard.rs`): world-readable upstream trees, the workspace's site key, test
//! bundles made by the real binary (`lock` + `create`) and running `bundle install`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{
    Apache, Run, Workspace, create_from_cache, keygen, lock_into_cache, random_bytes, run_bundle,
    sha256_bytes, write_file,
};

/// `chmod -R a+rX`-like: directories 0755, files 0644 (Apache runs as `nobody`).
pub fn make_world_readable(path: &Path) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        for entry in fs::read_dir(path).expect("read_dir") {
            make_world_readable(&entry.expect("dir entry").path());
        }
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    }
}

/// `bundle keygen --no-password` once per workspace: (`site.key`, `site.pub`).
pub fn site_keys(ws: &Workspace) -> (PathBuf, PathBuf) {
    let key = ws.path("site.key");
    if !key.exists() {
        return keygen(&ws.path("site"));
    }
    (key, ws.path("site.pub"))
}

/// How the manifest names the files of a test bundle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Urls {
    /// `http://127.0.0.1:PORT/<rel>` straight from the upstream Apache.
    Local,
    /// `https://<rel>` (the first segment of `rel` is the host), fetched through `mirrors:`
    /// entries that point at the upstream Apache.
    CanonicalViaMirrors,
}

/// A bundle made by the real binary (`lock` + `create`), and what it must install.
pub struct Built {
    pub bundle: PathBuf,
    pub pubkey: PathBuf,
    pub name: String,
    pub version: String,
    /// `127.0.0.1:PORT` of the upstream Apache (the host directory under `files/` for
    /// [`Urls::Local`]).
    pub host: String,
    /// Upstream copy of every file (served by the upstream Apache while it ran).
    pub upstream: PathBuf,
    /// Web-root path (`files/<host>/<path>`) → (upstream relative path, sha256, size).
    pub files: BTreeMap<String, (String, String, u64)>,
}

/// Serves `files` (relative path → bytes) from a private upstream Apache, writes a manifest,
/// locks it and creates a bundle signed with the workspace's site key (`--cache` in the
/// workspace).
pub fn make_bundle(
    ws: &Workspace,
    tag: &str,
    name: &str,
    version: &str,
    files: &[(String, Vec<u8>)],
    urls: Urls,
) -> Built {
    let (key, pubkey) = site_keys(ws);
    let dir = ws.mkdir(tag);
    let www = dir.join("www");
    for (rel, bytes) in files {
        write_file(www.join(rel), bytes);
    }
    make_world_readable(&www);
    let apache = Apache::start(&www);
    let host = format!("127.0.0.1:{}", apache.port);

    let mut manifest =
        format!("apiVersion: bundle/v1\nname: {name}\nversion: '{version}'\nfiles:\n");
    let mut expected = BTreeMap::new();
    let mut hosts = BTreeSet::new();
    for (rel, bytes) in files {
        let (url, dest) = match urls {
            Urls::Local => (apache.url(rel), format!("files/{host}/{rel}")),
            Urls::CanonicalViaMirrors => {
                hosts.insert(rel.split('/').next().expect("host").to_string());
                (format!("https://{rel}"), format!("files/{rel}"))
            }
        };
        manifest.push_str(&format!("  - url: '{url}'\n"));
        expected.insert(dest, (rel.clone(), sha256_bytes(bytes), bytes.len() as u64));
    }
    if !hosts.is_empty() {
        manifest.push_str("mirrors:\n");
        for host in &hosts {
            manifest.push_str(&format!(
                "  - {{prefix: 'https://{host}/', url: '{}'}}\n",
                apache.url(&format!("{host}/"))
            ));
        }
    }
    let manifest_path = dir.join("manifest.yaml");
    write_file(&manifest_path, &manifest);
    let lock = dir.join("manifest.lock.yaml");
    let cache = dir.join("cache");
    let bundle = dir.join(format!("{name}.bundle.tar.zst"));
    lock_into_cache(&manifest_path, &lock, &cache);
    create_from_cache(&lock, &bundle, &key, &cache, &[], &[]).assert_ok();
    drop(apache);
    Built {
        bundle,
        pubkey,
        name: name.to_string(),
        version: version.to_string(),
        host,
        upstream: www,
        files: expected,
    }
}

/// A few small files under one host (`files/127.0.0.1:PORT/...`).
pub fn small_bundle(ws: &Workspace, tag: &str, name: &str, seed: u64) -> Built {
    let files = vec![
        ("bin/kubeadm".to_string(), random_bytes(300_000, seed)),
        ("bin/kubectl".to_string(), random_bytes(200_000, seed + 1)),
        (
            "cni/cni-plugins.tgz".to_string(),
            random_bytes(150_000, seed + 2),
        ),
        (
            "etc/readme.txt".to_string(),
            b"hello from the bundle\n".to_vec(),
        ),
    ];
    make_bundle(ws, tag, name, "1.0.0", &files, Urls::Local)
}

/// The arguments `install BUNDLE --pubkey PUB --web-root DIR`.
pub fn install_args<'a>(bundle: &'a Path, pubkey: &'a Path, web_root: &'a Path) -> Vec<&'a OsStr> {
    vec![
        "install".as_ref(),
        bundle.as_os_str(),
        "--pubkey".as_ref(),
        pubkey.as_os_str(),
        "--web-root".as_ref(),
        web_root.as_os_str(),
    ]
}

/// `bundle install BUNDLE --pubkey PUB --web-root DIR EXTRA...`.
pub fn install(bundle: &Path, pubkey: &Path, web_root: &Path, extra: &[&str]) -> Run {
    let mut args = install_args(bundle, pubkey, web_root);
    args.extend(extra.iter().map(OsStr::new));
    run_bundle(&args, &[])
}

/// Names at the top of `dir` that start with `prefix`.
pub fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
pub fn assert_no_staging(web_root: &Path) {
    let left = names_starting(web_root, ".bundle-staging-");
    assert!(
        left.is_empty(),
        "staging directories survived in {}: {left:?}",
        web_root.display()
    );
}

/// The first line of `s` (of a run's stderr, for a summary table).
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}
