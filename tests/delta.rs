//! Delta bundles (SPEC §3 "Delta bundles", issue 18) end to end, against real components:
//! an upstream `apache2` serving ten files and a Helm repository, an upstream
//! `docker-registry` serving two images built with umoci, and site web roots and site
//! registries (`docker-registry` on free 127.0.0.1 ports) that bundles are installed into.
//!
//! The story every test tells: v1 (files, two images, a chart) is installed on a site;
//! upstream one file changes, one image gets a new layer and a chart is added; v2 is locked.
//! A delta of v2 made against what the site holds (its exported state, the v1 bundle, or
//! v1's `index.json`) carries only what changed, and installing it over the v1 site gives
//! what installing the full v2 over the same site gives. A delta whose expectations the site
//! does not meet is refused before anything moves; a malformed base is a usage error with
//! its position.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airgap_bundle::inspect::human_bytes;
use common::delta::{
    EPOCH, Made, Reader, create_in, hex, install_in, lock_in, push_on_base, run_in, site_workspace,
    upstream_images,
};
use common::helm::{package_chart, write_index};
use common::install::make_world_readable;
use common::registry::{Registry, config, layers};
use common::tamper::{Framing, RawEntry, build_bundle, decompress, read_tar, rebuild_unchanged};
use common::*;
use serde_json::Value;

/// The bundle's name (every version has the same one, as a site's upgrades do).
const NAME: &str = "k8s";
/// The URL the site's web root is served under (what the Kubespray variables name).
const BASE_URL: &str = "http://site.example.org/";
/// The User-Agent of the tool's requests in a registry's access log.
const UA: &str = "airgap-bundle/";
/// The site registry's repositories (the upstream host dropped).
const REPOS: &[&str] = &["test/app", "test/base", "test/tool"];
/// The images of v1 and v2 (`test/app:v1` changes upstream between them); v3 adds one in a
/// repository of its own, on the same base layer.
const IMAGES: &[&str] = &["test/app:v1", "test/base:base"];
const IMAGES_V3: &[&str] = &["test/app:v1", "test/base:base", "test/tool:v1"];
/// The repositories of [`IMAGES`].
const V1_REPOS: &[&str] = &["test/app", "test/base"];

/// Upstream files: (path below the upstream web root, size, seed). About 2.9 MB.
const FILES: &[(&str, usize, u64)] = &[
    ("dl/bin/kubeadm", 420_000, 1),
    ("dl/bin/kubectl", 150_000, 2),
    ("dl/bin/kubelet", 380_000, 3),
    ("dl/cni/cni-plugins.tgz", 300_000, 4),
    ("dl/crictl.tar.gz", 260_000, 5),
    ("dl/etcd.tar.gz", 340_000, 6),
    ("dl/calicoctl", 280_000, 7),
    ("dl/helm.tar.gz", 240_000, 8),
    ("dl/runc", 120_000, 9),
    ("dl/containerd.tar.gz", 310_000, 10),
];
/// The file v2 changes upstream (same URL, new bytes).
const CHANGED_IN_V2: &str = "dl/bin/kubectl";
/// The file v3 changes upstream.
const CHANGED_IN_V3: &str = "dl/runc";
/// An unchanged file (every delta expects it in place).
const UNCHANGED: &str = "dl/bin/kubeadm";
/// The chart every version carries (in place in every delta), and the one v2 adds.
const KEPT_CHART: &str = "charts/demo-1.0.0.tgz";
const ADDED_CHART: &str = "charts/demo-1.1.0.tgz";

/// The kinds a delta may leave out (SPEC §3: files, blobs, debs, charts, wheels).
const IN_PLACE_KINDS: &[&str] = &["file", "oci-blob", "deb", "chart", "python"];

// ---------------------------------------------------------------------------
// The upstream side: files, charts and images, locked and bundled
// ---------------------------------------------------------------------------

/// The connected side: the upstream servers, the site key and the download cache.
struct Fixture {
    // Servers first: they stop before the workspace is removed.
    apache: Apache,
    upstream: Registry,
    ws: Workspace,
    /// `127.0.0.1:PORT` of the upstream Apache (the host directory under `files/`).
    host: String,
    /// The upstream OCI layout the images are built in.
    layout: PathBuf,
}

/// What only these tests ask of a bundle (see [`common::delta::Made`]).
impl Made {
    fn index_sha256(&self) -> String {
        sha256_bytes(&self.index_bytes)
    }

    fn manifest_sha256(&self) -> String {
        hex(&self.index["manifest_sha256"])
    }

    fn version(&self) -> String {
        self.index["version"].as_str().unwrap().to_string()
    }

    /// What a delta made against this bundle names as its base bundle.
    fn as_base_bundle(&self) -> BaseBundle {
        BaseBundle {
            name: NAME.to_string(),
            version: self.version(),
            index_sha256: self.index_sha256(),
            manifest_sha256: self.manifest_sha256(),
        }
    }

    /// The sum of every entry's size (the whole set the index lists).
    fn total_bytes(&self) -> u64 {
        self.entries().values().map(|(_, _, size, _)| size).sum()
    }
}

/// One installed bundle a delta's base names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BaseBundle {
    name: String,
    version: String,
    index_sha256: String,
    manifest_sha256: String,
}

/// The base bundles `record` (a delta's `base`, or the `delta` of `inspect --json`) names,
/// sorted.
#[track_caller]
fn base_bundles(record: &Value, name: &str, what: &dyn std::fmt::Display) -> Vec<BaseBundle> {
    let mut bundles: Vec<BaseBundle> = record["bundles"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {name} without bundles: {record:#}"))
        .iter()
        .map(BaseBundle::from_json)
        .collect();
    bundles.sort();
    bundles
}

impl BaseBundle {
    fn from_json(v: &Value) -> BaseBundle {
        BaseBundle {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            version: v["version"].as_str().unwrap_or_default().to_string(),
            index_sha256: hex(&v["index_sha256"]),
            manifest_sha256: hex(&v["manifest_sha256"]),
        }
    }
}

impl Fixture {
    /// Keys, the upstream files and charts served by Apache, and the upstream registry
    /// with `test/base:base` (one 400 KB layer) and `test/app:v1` (that layer plus a
    /// 100 KB one).
    fn new() -> Fixture {
        let ws = site_workspace();
        let www = ws.mkdir("www");
        for (rel, len, seed) in FILES {
            write_file(www.join(rel), random_bytes(*len, *seed));
        }
        let charts = ws.mkdir("www/charts");
        let tgzs = vec![
            package_chart(&charts, "demo", "1.0.0", "4.0.0", ""),
            package_chart(&charts, "demo", "1.1.0", "4.1.0", ""),
        ];
        // The chart sources stay out of the served tree.
        fs::rename(charts.join("src"), ws.path("chart-src")).unwrap();
        write_index(&charts, &tgzs, true, "");
        make_world_readable(&www);
        let apache = Apache::start(&www);
        let host = format!("127.0.0.1:{}", apache.port);

        let (upstream, layout) = upstream_images(&ws, 400_000);
        Fixture {
            apache,
            upstream,
            ws,
            host,
            layout,
        }
    }

    /// `files/127.0.0.1:PORT/<rel>`: where an upstream file lands in the web root.
    fn web_path(&self, rel: &str) -> String {
        format!("files/{}/{rel}", self.host)
    }

    /// Runs `bundle ARGS…` in the workspace (see [`run_in`]).
    fn run(&self, args: &[&str]) -> Run {
        run_in(&self.ws, args)
    }

    /// Writes the manifest of `version` (every file, the `images`, the `charts` versions of
    /// demo) and locks it; returns the lock.
    fn lock(&self, version: &str, images: &[&str], charts: &[&str]) -> PathBuf {
        let mut m = format!("apiVersion: bundle/v1\nname: {NAME}\nversion: '{version}'\nfiles:\n");
        for (rel, _, _) in FILES {
            m.push_str(&format!("  - url: '{}'\n", self.apache.url(rel)));
        }
        let up = self.upstream.host();
        m.push_str("images:\n");
        for image in images {
            m.push_str(&format!("  - ref: '{up}/{image}'\n"));
        }
        m.push_str("charts:\n");
        for chart in charts {
            m.push_str(&format!(
                "  - {{repo: '{}', name: demo, version: '{chart}'}}\n",
                self.apache.url("charts")
            ));
        }
        let manifest = self.ws.write(format!("m-{version}.yaml"), m);
        let lock = self.ws.path(format!("m-{version}.lock.yaml"));
        lock_in(&self.ws, &manifest, &lock, &["--plain-http"]);
        lock
    }

    /// `bundle create LOCK -o OUT --key site.key --cache CACHE --plain-http EXTRA…`.
    fn create_with_cache(&self, lock: &Path, out: &Path, cache: &str, extra: &[&str]) -> Run {
        let args = [&["--plain-http"], extra].concat();
        create_in(&self.ws, lock, out, cache, &args)
    }

    /// A successful create into `<name>` (with the shared cache).
    fn made(&self, lock: &Path, name: &str, extra: &[&str]) -> Made {
        let out = self.ws.path(name);
        self.create_with_cache(lock, &out, "cache", extra)
            .assert_ok();
        Made::read(&out, Reader::Decoder)
    }

    /// A delta of `lock` made against `base` (a bundle, an index.json or a site export).
    fn delta(&self, lock: &Path, name: &str, base: &Path) -> Made {
        self.made(lock, name, &["--base", base.to_str().unwrap()])
    }

    /// v1: every file, both images, demo 1.0.0.
    fn v1(&self) -> Made {
        let lock = self.lock("1.0.0", IMAGES, &["1.0.0"]);
        self.made(&lock, "v1.bundle.tar.zst", &[])
    }

    /// Upstream moves on: one file gets new bytes, `test/app:v1` a new manifest whose
    /// top layer changed (the base layer is kept), and demo 1.1.0 joins. Returns v2's lock.
    fn upgrade_to_v2(&self) -> PathBuf {
        self.upgrade(
            (CHANGED_IN_V2, 202),
            (("app-2", 100_000, 201), "test/app:v1"),
            ("2.0.0", IMAGES),
        )
    }

    /// Upstream moves on again: one more file changes, and `test/tool:v1` joins (the base
    /// layer plus one of its own, in a repository no earlier version used). Returns v3's
    /// lock.
    fn upgrade_to_v3(&self) -> PathBuf {
        self.upgrade(
            (CHANGED_IN_V3, 303),
            (("tool-1", 50_000, 301), "test/tool:v1"),
            ("3.0.0", IMAGES_V3),
        )
    }

    /// One step upstream: the file `rel` gets new bytes (from `seed`), the image `build`
    /// (tag, layer size, seed: a layer on the base) is pushed as `dest`, and `version` is
    /// locked with `images` and demo 1.0.0 and 1.1.0. Returns the lock.
    fn upgrade(
        &self,
        (rel, seed): (&str, u64),
        (build, dest): ((&str, usize, u64), &str),
        (version, images): (&str, &[&str]),
    ) -> PathBuf {
        self.change_file(rel, seed);
        push_on_base(&self.layout, &self.upstream, build, dest);
        self.lock(version, images, &["1.0.0", "1.1.0"])
    }

    /// New bytes (of the same size) at an upstream file's URL.
    fn change_file(&self, rel: &str, seed: u64) {
        let path = self.ws.path("www").join(rel);
        let len = fs::metadata(&path).unwrap().len() as usize;
        write_file(&path, random_bytes(len, seed));
        make_world_readable(&path);
    }

    /// The upstream bytes of a file now.
    fn upstream_file(&self, rel: &str) -> Vec<u8> {
        fs::read(self.ws.path("www").join(rel)).unwrap()
    }

    /// The digest (hex) of the layer `test/base:base` and `test/app:v1` share.
    fn base_layer(&self) -> String {
        layers(&self.upstream.raw_manifest("test/base", "base"))[0].clone()
    }

    /// The config and layer digests (hex) of the images upstream now: the blobs an install
    /// with `--registry` (and no `--chart-registry`) pushes or expects there.
    fn image_blobs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for image in IMAGES {
            let (repo, tag) = image.split_once(':').unwrap();
            let raw = self.upstream.raw_manifest(repo, tag);
            out.insert(config(&raw));
            out.extend(layers(&raw));
        }
        out
    }

    /// The entries of `in_place` an install into a web root and a registry checks: every
    /// web-root entry and the images' blobs (a chart's blobs in the bundle's OCI layout are
    /// for `--chart-registry`, which these installs do not use).
    fn checked(&self, in_place: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let blobs = self.image_blobs();
        in_place
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix("oci/blobs/sha256/")
                    .is_none_or(|hex| blobs.contains(hex))
            })
            .map(|(p, n)| (p.clone(), *n))
            .collect()
    }

    /// The digest (hex) of the top layer of `test/app:v1` upstream now.
    fn app_top_layer(&self) -> String {
        layers(&self.upstream.raw_manifest("test/app", "v1"))
            .last()
            .unwrap()
            .clone()
    }

    // -----------------------------------------------------------------------
    // Sites
    // -----------------------------------------------------------------------

    /// An empty site: `<tag>/web` and an empty registry storing under `<tag>/registry`.
    fn site(&self, tag: &str) -> Site {
        let dir = self.ws.mkdir(tag);
        let web = self.ws.mkdir(format!("{tag}/web"));
        let registry = Registry::start(&dir.join("registry"), None);
        Site { registry, web, dir }
    }

    /// A copy of `from` (web root and registry storage, `cp -a`, while nothing writes to
    /// them) as `<tag>`, with a registry of its own serving the copied storage.
    fn copy_site(&self, from: &Site, tag: &str) -> Site {
        let dir = self.ws.mkdir(tag);
        for part in ["web", "registry"] {
            output_ok(
                Command::new("cp")
                    .arg("-a")
                    .arg(from.dir.join(part))
                    .arg(dir.join(part)),
            );
        }
        let registry = Registry::start(&dir.join("registry"), None);
        Site {
            registry,
            web: dir.join("web"),
            dir,
        }
    }

    /// `bundle --json install BUNDLE --pubkey site.pub --web-root WEB --registry HOST
    /// --plain-http --base-url http://site.example.org/`.
    fn install(&self, bundle: &Path, site: &Site) -> Run {
        let host = site.registry.host();
        install_in(
            &self.ws,
            bundle,
            &[
                "--web-root",
                site.web.to_str().unwrap(),
                "--registry",
                &host,
                "--plain-http",
                "--base-url",
                BASE_URL,
            ],
        )
    }

    /// An install that must succeed: its `--json` report.
    #[track_caller]
    fn install_ok(&self, bundle: &Path, site: &Site) -> Value {
        let run = self.install(bundle, site);
        run.assert_ok();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("install --json is not JSON: {e}\n{}", run.stdout))
    }

    /// v1 installed on a fresh site `site`.
    fn v1_site(&self, v1: &Made) -> Site {
        let site = self.site("site");
        self.install_ok(&v1.path, &site);
        site
    }

    /// `bundle receipt export --web-root WEB --registry HOST --plain-http -o OUT`.
    fn export(&self, site: &Site, out: &Path) -> Run {
        let host = site.registry.host();
        self.run(&[
            "receipt",
            "export",
            "--web-root",
            site.web.to_str().unwrap(),
            "--registry",
            &host,
            "--plain-http",
            "-o",
            out.to_str().unwrap(),
        ])
    }

    fn verify_json(&self, bundle: &Path) -> Value {
        let run = self.run(&[
            "--json",
            "verify",
            bundle.to_str().unwrap(),
            "--pubkey",
            "site.pub",
        ]);
        run.assert_ok();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("verify --json is not JSON: {e}\n{}", run.stdout))
    }

    fn inspect(&self, bundle: &Path, json: bool) -> Run {
        let mut args = vec!["inspect", bundle.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let run = self.run(&args);
        run.assert_ok();
        run
    }
}

/// An installed site: a web root and a registry.
struct Site {
    registry: Registry,
    web: PathBuf,
    /// Holds `web/` and `registry/`.
    dir: PathBuf,
}

impl Site {
    /// Every tag of the site's repositories and the digest it serves: "REPO:TAG" → hex.
    fn tags(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for repo in REPOS {
            for tag in self.registry.tags(repo) {
                let digest = self.registry.manifest_digest(repo, &tag, None);
                out.insert(format!("{repo}:{tag}"), digest);
            }
        }
        out
    }

    /// The requests of the tool that wrote to the registry after the first `since` of
    /// them: `PUT`, `PATCH`, and `POST` other than the opening of a plain upload session
    /// (a mount is a write).
    fn writes_since(&self, since: usize) -> Vec<(String, u16)> {
        let mut all = self.writes();
        all.split_off(since.min(all.len()))
    }

    /// Every request of the tool that wrote to the registry (see [`Site::writes_since`]).
    fn writes(&self) -> Vec<(String, u16)> {
        self.registry
            .access_log(UA)
            .into_iter()
            .filter(|(r, _)| {
                r.starts_with("PUT ")
                    || r.starts_with("PATCH ")
                    || (r.starts_with("POST ") && (r.contains("mount=") || r.contains("digest=")))
            })
            .collect()
    }

    /// The web root's snapshot without `.bundle/` (receipts) and the Kubespray variables
    /// (which name the registry, whose port differs between two sites).
    fn content(&self) -> BTreeMap<String, String> {
        let mut snap = tree_snapshot(&self.web);
        snap.retain(|k, _| !k.starts_with(".bundle/") && k != "kubespray-offline.yml");
        snap
    }

    /// The receipts under `.bundle/`, parsed: file name → receipt.
    fn receipts(&self) -> BTreeMap<String, Value> {
        let dir = self.web.join(".bundle");
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| {
                let text = fs::read_to_string(e.path()).unwrap();
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("{} is not JSON: {err}", e.path().display()));
                (e.file_name().to_string_lossy().into_owned(), v)
            })
            .collect()
    }
}

/// The `files` a receipt or a site export records: (path, sha256, size), in its order.
fn file_records(record: &Value) -> Vec<(String, String, u64)> {
    record["files"]
        .as_array()
        .unwrap_or_else(|| panic!("without files: {record:#}"))
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                hex(&f["sha256"]),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// What must be the same in two receipts (not the time, the bundle path, the index digest
/// of a delta vs a full bundle, or whether a file was written or found): name, version,
/// the locked manifest, and every file with its sha256 and size.
fn receipt_gist(receipt: &Value) -> Value {
    let mut files = file_records(receipt);
    files.sort();
    serde_json::json!({
        "name": receipt["name"],
        "version": receipt["version"],
        "manifest_sha256": hex(&receipt["manifest_sha256"]),
        "files": files,
    })
}

/// The web root of `site` is what `before` snapshotted (`after` is its snapshot now), its
/// registry has the tags `tags` and (unless `writes_before` is `None`) no write of the tool
/// after the first `writes_before`.
#[track_caller]
fn assert_site_kept(
    site: &Site,
    (before, after): (&BTreeMap<String, String>, &BTreeMap<String, String>),
    tags: &BTreeMap<String, String>,
    writes_before: Option<usize>,
    what: &str,
) {
    assert!(
        before == after,
        "{what} changed the web root:\n{}",
        snapshot_diff(before, after)
    );
    assert_eq!(&site.tags(), tags, "{what}: tags");
    if let Some(writes_before) = writes_before {
        assert_eq!(
            site.writes_since(writes_before),
            Vec::new(),
            "{what} wrote to the registry"
        );
    }
}

/// `got` holds what `want` holds: the same web root (every file, its bytes and mode, apart
/// from the receipts), the same Kubespray variables (each naming its own registry), the
/// same receipts (apart from times and statuses), and the same tags on the registry with
/// the same digests, every image readable from `got` by skopeo (which checks each blob).
#[track_caller]
fn assert_same_site(got: &Site, want: &Site, what: &str) {
    let (g, w) = (got.content(), want.content());
    assert!(
        g == w,
        "{what}: the web root differs from the full bundle's install:\n{}",
        snapshot_diff(&w, &g)
    );
    let vars = |site: &Site| {
        fs::read_to_string(site.web.join("kubespray-offline.yml"))
            .unwrap_or_else(|e| panic!("{what}: kubespray-offline.yml: {e}"))
    };
    assert_eq!(
        vars(got),
        vars(want).replace(&want.registry.host(), &got.registry.host()),
        "{what}: kubespray-offline.yml differs from the full bundle's install"
    );
    let (g, w) = (got.receipts(), want.receipts());
    assert_eq!(
        g.keys().collect::<Vec<_>>(),
        w.keys().collect::<Vec<_>>(),
        "{what}: receipts"
    );
    for (name, receipt) in &g {
        assert_eq!(
            receipt_gist(receipt),
            receipt_gist(&w[name]),
            "{what}: receipt {name}"
        );
    }
    let tags = got.tags();
    assert_eq!(
        tags,
        want.tags(),
        "{what}: the registry's tags differ from the full bundle's install"
    );
    assert!(!tags.is_empty(), "{what}: no tags at all");
    for (n, name) in tags.keys().enumerate() {
        let (repo, tag) = name.split_once(':').unwrap();
        got.registry
            .pull(repo, tag, &got.dir.join("pulled"), &format!("image-{n}"));
    }
}

/// The entries of `new` that `base` holds with the same path and sha256, of the kinds a
/// delta leaves out: path → size. This is what a delta of `new` against `base` must mark
/// in place.
fn held_by(base: &Made, new: &Made) -> BTreeMap<String, u64> {
    let held: BTreeSet<(String, String)> = base
        .entries()
        .into_iter()
        .map(|(path, (_, sha, _, _))| (path, sha))
        .collect();
    held_of(new, &held)
}

/// The entries of `new` that `held` lists (path, sha256), of the kinds a delta leaves out:
/// path → size.
fn held_of(new: &Made, held: &BTreeSet<(String, String)>) -> BTreeMap<String, u64> {
    new.entries()
        .into_iter()
        .filter(|(path, (kind, sha, _, _))| {
            IN_PLACE_KINDS.contains(&kind.as_str()) && held.contains(&(path.clone(), sha.clone()))
        })
        .map(|(path, (_, _, size, _))| (path, size))
        .collect()
}

/// The entries of `new` that a site export lists with the same path (a file) or digest (a
/// registry blob) and sha256, of the kinds a delta leaves out: path → size.
fn held_by_site(export: &Value, new: &Made) -> BTreeMap<String, u64> {
    let mut held: BTreeSet<(String, String)> = export["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), hex(&f["sha256"])))
        .collect();
    for registry in export["registries"].as_array().unwrap() {
        for blob in registry["blobs"].as_array().unwrap() {
            let hex = hex(&blob["digest"]);
            held.insert((format!("oci/blobs/sha256/{hex}"), hex));
        }
    }
    held_of(new, &held)
}

/// The index entries without their `in_place` mark.
fn unmarked(index: &Value) -> Vec<Value> {
    index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("in_place");
            e
        })
        .collect()
}

/// What a delta must say about its base.
struct Expect<'a> {
    from: &'a str,
    base_sha256: String,
    bundles: Vec<BaseBundle>,
    in_place: BTreeMap<String, u64>,
}

/// Checks a delta against the full bundle of the same lock: its signed index lists the
/// whole set (the full bundle's entries and artifacts) with exactly `expect.in_place`
/// marked and the base recorded; its archive holds everything else and nothing in place;
/// it is under 15 % of the full bundle's bytes.
#[track_caller]
fn check_delta_format(delta: &Made, full: &Made, expect: &Expect) {
    let what = delta.path.display();
    assert!(
        full.in_place().is_empty() && full.index.get("base").is_none(),
        "the full bundle is marked as a delta"
    );
    assert!(!expect.in_place.is_empty(), "the base holds nothing");
    for key in ["name", "version", "manifest_sha256", "artifacts", "created"] {
        assert_eq!(delta.index[key], full.index[key], "{what}: {key}");
    }
    assert_eq!(
        unmarked(&delta.index),
        unmarked(&full.index),
        "{what}: the delta's index must list the whole new set, as the full bundle's does"
    );
    assert_eq!(
        delta.in_place(),
        expect.in_place,
        "{what}: in-place entries"
    );
    let base = &delta.index["base"];
    assert_eq!(base["from"], expect.from, "{what}: base {base:#}");
    assert_eq!(hex(&base["sha256"]), expect.base_sha256, "{what}: {base:#}");
    assert_eq!(
        base_bundles(base, "base", &what),
        expect.bundles,
        "{what}: base bundles"
    );

    // The archive: the index, its signature, and every entry not in place, once each.
    let mut got = delta.archive_paths();
    got.sort();
    let mut want: Vec<String> = delta
        .entries()
        .into_iter()
        .filter(|(_, (_, _, _, in_place))| !in_place)
        .map(|(path, _)| path)
        .chain([
            "bundle/index.json".into(),
            "bundle/index.json.minisig".into(),
        ])
        .collect();
    want.sort();
    assert_eq!(got, want, "{what}: the archive's entries");

    assert!(
        delta.size() * 100 < full.size() * 15,
        "{what}: {} bytes is not a small fraction of the full bundle's {}",
        delta.size(),
        full.size()
    );
}

/// Checks what `inspect` (text and `--json`) and `verify --json` say about a delta.
#[track_caller]
fn check_delta_reports(fx: &Fixture, delta: &Made, expect: &Expect) {
    let what = delta.path.display();
    let in_place_bytes: u64 = expect.in_place.values().sum();
    let in_place_entries = expect.in_place.len() as u64;

    let run = fx.inspect(&delta.path, true);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let d = &report["delta"];
    assert_eq!(d["from"], expect.from, "{what}: inspect {d:#}");
    assert_eq!(hex(&d["base_sha256"]), expect.base_sha256, "{what}: {d:#}");
    assert_eq!(
        base_bundles(d, "inspect --json delta", &what),
        expect.bundles,
        "{what}: inspect delta.bundles"
    );
    assert_eq!(d["in_place_entries"], in_place_entries, "{what}: {d:#}");
    assert_eq!(d["in_place_bytes"], in_place_bytes, "{what}: {d:#}");
    assert_eq!(
        d["carried_bytes"],
        delta.total_bytes() - in_place_bytes,
        "{what}: {d:#}"
    );

    let text = fx.inspect(&delta.path, false).stdout;
    let line = text
        .lines()
        .find(|l| l.starts_with("delta "))
        .unwrap_or_else(|| panic!("{what}: no `delta ` line in inspect:\n{text}"));
    for b in &expect.bundles {
        assert!(
            line.contains(&b.name) && line.contains(&b.version),
            "{what}: the delta line does not name the base {} {}: {line}",
            b.name,
            b.version
        );
    }
    assert!(
        line.contains(&human_bytes(in_place_bytes)) || line.contains(&in_place_bytes.to_string()),
        "{what}: the delta line does not give the {in_place_bytes} bytes saved: {line}"
    );

    let verified = fx.verify_json(&delta.path);
    assert_eq!(
        verified["in_place_entries"], in_place_entries,
        "{verified:#}"
    );
    assert_eq!(verified["in_place_bytes"], in_place_bytes, "{verified:#}");
}

/// The `in_place_*` counters of an install's `--json` report.
#[track_caller]
fn check_install_report(report: &Value, expect: &BTreeMap<String, u64>) {
    assert_eq!(
        report["in_place_entries"],
        expect.len() as u64,
        "install --json: {report:#}"
    );
    assert_eq!(
        report["in_place_bytes"],
        expect.values().sum::<u64>(),
        "install --json: {report:#}"
    );
}

/// The refused install of a delta said `nothing was installed` and named each of
/// `missing` (web-root paths, and blobs as `sha256:HEX`) and none of `present`. A long
/// list may name some and count the rest (`… and N more`): each is named or counted.
#[track_caller]
fn assert_names_missing(run: &Run, missing: &[String], present: &[String]) {
    run.assert_code(1)
        .assert_stderr_contains("nothing was installed");
    let unnamed: Vec<&String> = missing
        .iter()
        .filter(|m| !run.stderr.contains(m.as_str()))
        .collect();
    if !unnamed.is_empty() {
        let named = missing.len() - unnamed.len();
        // `and N more`, N counting at least the ones not named.
        let counted = run.stderr.split("and ").skip(1).find_map(|rest| {
            let (n, tail) = rest.split_once(' ')?;
            tail.starts_with("more").then(|| n.parse::<usize>().ok())?
        });
        assert!(
            named >= missing.len().min(5) && counted.is_some_and(|n| n >= unnamed.len()),
            "stderr names {named} of the {} missing entries and does not count the other {}: {unnamed:#?}\n{}",
            missing.len(),
            unnamed.len(),
            run.stderr
        );
    }
    for p in present {
        assert!(
            !run.stderr.contains(p.as_str()),
            "stderr names {p}, which is in place:\n{}",
            run.stderr
        );
    }
}

/// The `sha256:HEX` of every blob of `entries` (path → size) and the other paths.
fn named(entries: &BTreeMap<String, u64>) -> Vec<String> {
    entries
        .keys()
        .map(|p| match p.strip_prefix("oci/blobs/sha256/") {
            Some(hex) => format!("sha256:{hex}"),
            None => p.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn deltas_from_the_v1_bundle_and_from_its_index_are_small_and_install_like_the_full_bundle() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let site = fx.v1_site(&v1);
    let lock2 = fx.upgrade_to_v2();
    let full = fx.made(&lock2, "v2.bundle.tar.zst", &[]);

    // From the v1 bundle, with a cache that holds nothing: the files and image blobs v1
    // carried unchanged are not even downloaded.
    let log_before = fx.apache.access_log().lines().count();
    let registry_log_before = fx.upstream.access_log(UA).len();
    let from_bundle_path = fx.ws.path("v2-from-bundle.bundle.tar.zst");
    fx.create_with_cache(
        &lock2,
        &from_bundle_path,
        "fresh-cache",
        &["--base", v1.path.to_str().unwrap()],
    )
    .assert_ok();
    let changed_url = format!("/{CHANGED_IN_V2}");
    let log = fx.apache.wait_access_log(|l| {
        l.lines()
            .skip(log_before)
            .any(|l| l.contains(&format!("\"GET {changed_url} ")))
    });
    let fetched: Vec<&str> = log
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("\"GET /dl/"))
        .collect();
    assert_eq!(
        fetched.len(),
        1,
        "create --base downloaded files the base holds:\n{fetched:#?}"
    );
    let blob_gets: Vec<String> = fx.upstream.access_log(UA)[registry_log_before..]
        .iter()
        .filter(|(r, _)| r.starts_with("GET ") && r.contains("/blobs/sha256:"))
        .map(|(r, _)| r.clone())
        .collect();
    let top = fx.app_top_layer();
    assert!(
        blob_gets.iter().any(|r| r.contains(&top)),
        "the new layer was not downloaded: {blob_gets:#?}"
    );
    let base_layer = fx.base_layer();
    assert!(
        !blob_gets.iter().any(|r| r.contains(&base_layer)),
        "create --base downloaded the layer the base holds: {blob_gets:#?}"
    );
    let from_bundle = Made::read(&from_bundle_path, Reader::Decoder);

    // From v1's index.json, as `zstd -dc B | tar -xO bundle/index.json` extracts it.
    let index_json = fx.ws.path("v1.index.json");
    let extracted = Made::read(&v1.path, Reader::Stock).index_bytes;
    assert_eq!(extracted, v1.index_bytes);
    fs::write(&index_json, &extracted).unwrap();
    let from_index = fx.delta(&lock2, "v2-from-index.bundle.tar.zst", &index_json);

    let in_place = held_by(&v1, &full);
    // Sanity of the fixture: what changed is carried, the rest is in place.
    for p in [fx.web_path(UNCHANGED), KEPT_CHART.to_string()] {
        assert!(in_place.contains_key(&p), "{p} not expected in place");
    }
    for p in [fx.web_path(CHANGED_IN_V2), ADDED_CHART.to_string()] {
        assert!(!in_place.contains_key(&p), "{p} expected in place");
    }
    assert!(in_place.contains_key(&format!("oci/blobs/sha256/{}", fx.base_layer())));
    assert!(!in_place.contains_key(&format!("oci/blobs/sha256/{}", fx.app_top_layer())));
    let expect = |from: &'static str| Expect {
        from,
        base_sha256: v1.index_sha256(),
        bundles: vec![v1.as_base_bundle()],
        in_place: in_place.clone(),
    };
    check_delta_format(&from_bundle, &full, &expect("bundle"));
    check_delta_format(&from_index, &full, &expect("index"));
    // The same delta whichever way the base came in, but for the record of it.
    assert_eq!(from_bundle.archive_paths(), from_index.archive_paths());

    // Installed over copies of the v1 site, each delta gives what the full v2 gives.
    let reference = fx.copy_site(&site, "reference");
    let a = fx.copy_site(&site, "site-a");
    let b = fx.copy_site(&site, "site-b");
    fx.install_ok(&full.path, &reference);
    let report_a = fx.install_ok(&from_bundle.path, &a);
    let report_b = fx.install_ok(&from_index.path, &b);
    assert_same_site(&a, &reference, "delta from the v1 bundle");
    assert_same_site(&b, &reference, "delta from v1's index.json");
    // The files changed upstream are the new ones.
    let kubectl = fs::read(a.web.join(fx.web_path(CHANGED_IN_V2))).unwrap();
    assert_eq!(kubectl, fx.upstream_file(CHANGED_IN_V2));

    // What the reports say.
    check_install_report(&report_a, &in_place);
    check_install_report(&report_b, &in_place);
    check_delta_reports(&fx, &from_bundle, &expect("bundle"));
    check_delta_reports(&fx, &from_index, &expect("index"));
    let full_report: Value = serde_json::from_str(&fx.inspect(&full.path, true).stdout).unwrap();
    assert!(
        full_report.get("delta").is_none(),
        "inspect --json of a full bundle has a delta: {full_report:#}"
    );
    assert!(
        !fx.inspect(&full.path, false)
            .stdout
            .lines()
            .any(|l| l.starts_with("delta ")),
        "inspect of a full bundle shows a delta line"
    );
}

#[test]
fn a_delta_from_the_site_export_is_small_and_installs_like_the_full_bundle() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let site = fx.v1_site(&v1);

    // What the site holds, exported on the air-gapped side.
    let export_path = fx.ws.path("site.json");
    fx.export(&site, &export_path).assert_ok();
    let export_bytes = fs::read(&export_path).unwrap();
    let export: Value = serde_json::from_slice(&export_bytes)
        .unwrap_or_else(|e| panic!("the export is not JSON: {e}"));
    assert_eq!(export["airgap_bundle_site"], 1, "{export:#}");
    let bundles: Vec<BaseBundle> = export["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(BaseBundle::from_json)
        .collect();
    assert_eq!(bundles, vec![v1.as_base_bundle()], "{export:#}");
    let files: BTreeSet<(String, String, u64)> = file_records(&export).into_iter().collect();
    let web_entries: BTreeSet<(String, String, u64)> = v1
        .entries()
        .into_iter()
        .filter(|(_, (kind, _, _, _))| kind == "file" || kind == "chart")
        .map(|(path, (_, sha, size, _))| (path, sha, size))
        .collect();
    assert_eq!(files, web_entries, "the export's files: {export:#}");
    let registries = export["registries"].as_array().unwrap();
    assert_eq!(registries.len(), 1, "{export:#}");
    assert_eq!(registries[0]["host"], site.registry.host().as_str());
    let blobs: BTreeSet<(String, u64)> = registries[0]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (hex(&b["digest"]), b["size"].as_u64().unwrap()))
        .collect();
    // The images' blobs, which install pushed (a chart's blobs in the bundle's OCI layout
    // are for `--chart-registry`: this site has none).
    let entries = v1.entries();
    let image_blobs: BTreeSet<(String, u64)> = fx
        .image_blobs()
        .into_iter()
        .map(|hex| {
            let size = entries[&format!("oci/blobs/sha256/{hex}")].2;
            (hex, size)
        })
        .collect();
    assert_eq!(blobs, image_blobs, "the export's blobs: {export:#}");
    let manifests: BTreeSet<(String, String)> = registries[0]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["repository"].as_str().unwrap().to_string(),
                hex(&m["digest"]),
            )
        })
        .collect();
    for repo in V1_REPOS {
        let tag = &site.registry.tags(repo)[0];
        let digest = site.registry.manifest_digest(repo, tag, None);
        assert!(
            manifests.contains(&(repo.to_string(), digest)),
            "the export misses the manifest of {repo}:{tag}: {export:#}"
        );
    }
    // Deterministic: the same site exports the same bytes.
    let again = fx.ws.path("site-again.json");
    fx.export(&site, &again).assert_ok();
    assert_eq!(fs::read(&again).unwrap(), export_bytes);

    let reference = fx.copy_site(&site, "reference");
    let lock2 = fx.upgrade_to_v2();
    let full = fx.made(&lock2, "v2.bundle.tar.zst", &[]);
    let delta = fx.delta(&lock2, "v2-from-site.bundle.tar.zst", &export_path);
    let expect = Expect {
        from: "site",
        base_sha256: sha256_bytes(&export_bytes),
        bundles: vec![v1.as_base_bundle()],
        in_place: held_by_site(&export, &full),
    };
    // What the export lists is what a delta from v1's own bundle leaves out, less the
    // charts' OCI blobs, which this site never pushed anywhere.
    let from_bundle = held_by(&v1, &full);
    assert!(expect.in_place.len() < from_bundle.len());
    for (path, size) in &expect.in_place {
        assert_eq!(from_bundle.get(path), Some(size), "{path}");
    }
    check_delta_format(&delta, &full, &expect);

    fx.install_ok(&full.path, &reference);
    let report = fx.install_ok(&delta.path, &site);
    assert_same_site(&site, &reference, "delta from the site export");
    check_install_report(&report, &expect.in_place);
    check_delta_reports(&fx, &delta, &expect);
}

#[test]
fn a_delta_on_an_empty_site_is_refused_naming_every_missing_entry_and_writes_nothing() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let lock2 = fx.upgrade_to_v2();
    let delta = fx.delta(&lock2, "v2-delta.bundle.tar.zst", &v1.path);
    let full = fx.made(&lock2, "v2.bundle.tar.zst", &[]);
    let in_place = held_by(&v1, &full);

    let empty = fx.site("empty");
    let before = tree_snapshot(&empty.web);
    let run = fx.install(&delta.path, &empty);
    // Everything the delta expects in place is missing; what it carries is not.
    let carried = [
        fx.web_path(CHANGED_IN_V2),
        ADDED_CHART.to_string(),
        format!("sha256:{}", fx.app_top_layer()),
    ];
    let checked = fx.checked(&in_place);
    assert!(checked.len() < in_place.len() && checked.len() > 10);
    assert_names_missing(&run, &named(&checked), &carried);
    let after = tree_snapshot(&empty.web);
    assert!(
        before == after,
        "the refused install changed the web root:\n{}",
        snapshot_diff(&before, &after)
    );
    assert_eq!(empty.tags(), BTreeMap::new(), "tags on the site registry");
    assert_eq!(
        empty.writes(),
        Vec::new(),
        "the refused install wrote to the registry"
    );

    // Positive control: the full bundle installs on the same empty site.
    fx.install_ok(&full.path, &empty);
    assert!(!empty.tags().is_empty());
}

#[test]
fn a_delta_installed_twice_changes_nothing_the_second_time_but_its_receipt() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let site = fx.v1_site(&v1);
    let lock2 = fx.upgrade_to_v2();
    let delta = fx.delta(&lock2, "v2-delta.bundle.tar.zst", &v1.path);
    let in_place = delta.in_place();

    let first = fx.install_ok(&delta.path, &site);
    check_install_report(&first, &in_place);
    let receipt = format!(".bundle/{NAME}-2.0.0.json");
    let without_receipt = |site: &Site| {
        let mut snap = tree_snapshot(&site.web);
        assert!(snap.remove(&receipt).is_some(), "no receipt {receipt}");
        snap
    };
    let before = without_receipt(&site);
    let tags = site.tags();
    let writes_before = site.writes().len();

    let second = fx.install_ok(&delta.path, &site);
    check_install_report(&second, &in_place);
    assert_site_kept(
        &site,
        (&before, &without_receipt(&site)),
        &tags,
        Some(writes_before),
        "the second install",
    );
    let receipt: Value =
        serde_json::from_str(&fs::read_to_string(site.web.join(&receipt)).unwrap()).unwrap();
    assert_eq!(receipt["version"], "2.0.0");
}

#[test]
fn a_delta_whose_base_the_site_does_not_hold_is_refused_naming_what_is_missing() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let site = fx.v1_site(&v1);
    let lock2 = fx.upgrade_to_v2();
    let full = fx.made(&lock2, "v2.bundle.tar.zst", &[]);
    let from_v1 = fx.delta(&lock2, "v2-from-v1.bundle.tar.zst", &v1.path);
    // A delta made against the wrong base: the full v2 (which the site never got). It
    // expects everything in place, the new file, layer and chart included.
    let from_v2 = fx.delta(&lock2, "v2-from-v2.bundle.tar.zst", &full.path);
    assert_eq!(from_v2.in_place(), held_by(&full, &full));

    let web_before = tree_snapshot(&site.web);
    let tags_before = site.tags();
    let writes_before = site.writes().len();
    let run = fx.install(&from_v2.path, &site);
    assert_names_missing(
        &run,
        &[
            fx.web_path(CHANGED_IN_V2),
            ADDED_CHART.to_string(),
            format!("sha256:{}", fx.app_top_layer()),
        ],
        &[
            fx.web_path(UNCHANGED),
            KEPT_CHART.to_string(),
            format!("sha256:{}", fx.base_layer()),
        ],
    );
    assert_site_kept(
        &site,
        (&web_before, &tree_snapshot(&site.web)),
        &tags_before,
        Some(writes_before),
        "the refused install of a delta from the wrong base",
    );

    // The right base, but the site lost something since: a file edited in the web root…
    let edited = site.web.join(fx.web_path(UNCHANGED));
    let original = fs::read(&edited).unwrap();
    let mut changed = original.clone();
    changed[1000] ^= 0x5a;
    fs::write(&edited, &changed).unwrap();
    let web_before = tree_snapshot(&site.web);
    let run = fx.install(&from_v1.path, &site);
    assert_names_missing(
        &run,
        &[fx.web_path(UNCHANGED)],
        &[fx.web_path("dl/bin/kubelet"), KEPT_CHART.to_string()],
    );
    assert_site_kept(
        &site,
        (&web_before, &tree_snapshot(&site.web)),
        &tags_before,
        None,
        "the refused install",
    );
    fs::write(&edited, &original).unwrap();

    // …or a blob deleted from the registry (from every repository that linked it).
    let layer = fx.base_layer();
    for repo in V1_REPOS {
        output_ok(Command::new("curl").args([
            "-fsS",
            "-X",
            "DELETE",
            &format!(
                "http://{}/v2/{repo}/blobs/sha256:{layer}",
                site.registry.host()
            ),
        ]));
        assert_eq!(site.registry.blob_status(repo, &layer), 404);
    }
    let web_before = tree_snapshot(&site.web);
    let run = fx.install(&from_v1.path, &site);
    assert_names_missing(
        &run,
        &[format!("sha256:{layer}")],
        &[fx.web_path(UNCHANGED)],
    );
    assert_site_kept(
        &site,
        (&web_before, &tree_snapshot(&site.web)),
        &tags_before,
        Some(writes_before),
        "the refused install",
    );
}

#[test]
fn a_malformed_base_is_a_usage_error_with_its_position_and_writes_nothing() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    // A lock whose file no server serves: a base that is refused must be refused before
    // any download (which would be exit 1).
    let data = b"never downloaded\n";
    ws.write(
        "m.lock.yaml",
        common::net::locked_manifest(
            "delta-base",
            &[("http://127.0.0.1:9/dl/tool".to_string(), data.as_slice())],
        ),
    );
    let sha = "ab".repeat(32);
    // (file name, text, the line the error is on, words the message must have)
    let cases: Vec<(&str, String, usize, &str)> = vec![
        (
            "broken.json",
            format!(
                "{{\n  \"airgap_bundle_site\": 1,\n  \"bundles\": [],\n  \"files\": [\n    {{\"path\": \"files/example.org/a\", \"sha256\": \"{sha}\", \"size\": 1,,}}\n  ]\n}}\n"
            ),
            5,
            "",
        ),
        (
            "truncated.json",
            "{\n  \"airgap_bundle_site\": 1,\n  \"bundles\": [\n".to_string(),
            4,
            "",
        ),
        (
            "unknown-key.json",
            "{\n  \"airgap_bundle_site\": 1,\n  \"bundles\": [],\n  \"bogus\": true,\n  \"files\": []\n}\n"
                .to_string(),
            4,
            "bogus",
        ),
        (
            "unknown-file-key.json",
            format!(
                "{{\n  \"airgap_bundle_site\": 1,\n  \"bundles\": [],\n  \"files\": [\n    {{\"path\": \"files/example.org/a\", \"sha256\": \"{sha}\", \"size\": 1, \"mode\": 420}}\n  ]\n}}\n"
            ),
            5,
            "mode",
        ),
        (
            "wrong-type.json",
            format!(
                "{{\n  \"airgap_bundle_site\": 1,\n  \"bundles\": [],\n  \"files\": [\n    {{\"path\": \"files/example.org/a\", \"sha256\": \"{sha}\",\n     \"size\": \"one\"}}\n  ]\n}}\n"
            ),
            6,
            "",
        ),
        (
            "bad-digest.json",
            "{\n  \"airgap_bundle_site\": 1,\n  \"bundles\": [],\n  \"files\": [\n    {\"path\": \"files/example.org/a\", \"sha256\": \"xyz\", \"size\": 1}\n  ]\n}\n"
                .to_string(),
            5,
            "",
        ),
        (
            "broken-index.json",
            "{\n  \"format\": 1,\n  \"entries\": [\n    {\"path\": \"files/example.org/a\" \"size\": 1}\n  ]\n}\n"
                .to_string(),
            4,
            "",
        ),
        (
            "wrong-type-index.json",
            "{\n  \"format\": 1,\n  \"name\": 7,\n  \"entries\": []\n}\n".to_string(),
            3,
            "",
        ),
    ];
    let (lock, key, cache) = (
        ws.path("m.lock.yaml"),
        ws.path("site.key"),
        ws.path("cache"),
    );
    let create = |base: &Path, out: &Path| {
        create_from_cache(
            &lock,
            out,
            &key,
            &cache,
            &["--base", base.to_str().unwrap()],
            &[("SOURCE_DATE_EPOCH", EPOCH)],
        )
    };
    for (file, text, line, words) in &cases {
        let base = ws.write(file, text);
        let out = ws.path(format!("out-{file}.bundle.tar.zst"));
        let run = create(&base, &out);
        run.assert_code(2).assert_stderr_contains(words);
        // PATH:LINE:COLUMN:, the column a number.
        let at = format!("{}:{line}:", base.display());
        let pos = run
            .stderr
            .find(&at)
            .unwrap_or_else(|| panic!("{file}: stderr does not name {at}COLUMN:\n{}", run.stderr));
        let rest = &run.stderr[pos + at.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        assert!(
            digits > 0 && rest[digits..].starts_with(':'),
            "{file}: no column after {at}:\n{}",
            run.stderr
        );
        for written in [
            out.clone(),
            PathBuf::from(format!("{}.minisig", out.display())),
        ] {
            assert!(
                !written.exists(),
                "{file}: {} was written",
                written.display()
            );
        }
    }

    // A site export of a version this tool does not read, and JSON that is neither an
    // export nor an index: exit 2, naming the file.
    for (file, text, words) in [
        (
            "future.json",
            "{\"airgap_bundle_site\": 2, \"bundles\": [], \"files\": []}\n",
            "version",
        ),
        ("other.json", "{\"hello\": \"world\"}\n", "site export"),
    ] {
        let base = ws.write(file, text);
        let out = ws.path(format!("out-{file}.bundle.tar.zst"));
        create(&base, &out)
            .assert_code(2)
            .assert_stderr_contains(&base.display().to_string())
            .assert_stderr_contains(words);
        assert!(!out.exists());
    }
}

#[test]
fn a_delta_of_a_delta_installs_like_the_full_bundle() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let site = fx.v1_site(&v1);
    let reference = fx.copy_site(&site, "reference");

    let lock2 = fx.upgrade_to_v2();
    let full2 = fx.made(&lock2, "v2.bundle.tar.zst", &[]);
    let delta2 = fx.delta(&lock2, "v2-delta.bundle.tar.zst", &v1.path);
    fx.install_ok(&full2.path, &reference);
    fx.install_ok(&delta2.path, &site);

    // v3 made against the v2 delta: after its install the site holds v2's whole set,
    // the entries the v2 delta expected in place included.
    let lock3 = fx.upgrade_to_v3();
    let full3 = fx.made(&lock3, "v3.bundle.tar.zst", &[]);
    let delta3 = fx.delta(&lock3, "v3-delta.bundle.tar.zst", &delta2.path);
    let expect = Expect {
        from: "bundle",
        base_sha256: delta2.index_sha256(),
        bundles: vec![delta2.as_base_bundle()],
        in_place: held_by(&delta2, &full3),
    };
    // Of what v2 had, only the file changed for v3 is carried; the new image's base layer
    // is in place (in other repositories than the new one), its own layer carried.
    assert_eq!(expect.in_place, held_by(&full2, &full3));
    assert!(!expect.in_place.contains_key(&fx.web_path(CHANGED_IN_V3)));
    assert!(expect.in_place.contains_key(&fx.web_path(CHANGED_IN_V2)));
    let tool = fx.upstream.raw_manifest("test/tool", "v1");
    let tool_layers = layers(&tool);
    assert_eq!(tool_layers[0], fx.base_layer());
    assert!(
        expect
            .in_place
            .contains_key(&format!("oci/blobs/sha256/{}", tool_layers[0]))
    );
    assert!(
        !expect
            .in_place
            .contains_key(&format!("oci/blobs/sha256/{}", tool_layers[1]))
    );
    check_delta_format(&delta3, &full3, &expect);

    fx.install_ok(&full3.path, &reference);
    let report = fx.install_ok(&delta3.path, &site);
    assert_same_site(&site, &reference, "v3 delta over the v2 delta");
    check_install_report(&report, &expect.in_place);
    assert_eq!(
        fs::read(site.web.join(fx.web_path(CHANGED_IN_V3))).unwrap(),
        fx.upstream_file(CHANGED_IN_V3)
    );
}

#[test]
fn an_in_place_entry_found_in_the_archive_is_a_verification_failure() {
    let fx = Fixture::new();
    let v1 = fx.v1();
    let lock2 = fx.upgrade_to_v2();
    let delta = fx.delta(&lock2, "v2-delta.bundle.tar.zst", &v1.path);
    let path = fx.web_path(UNCHANGED);
    assert!(delta.in_place().contains_key(&path));
    let verify =
        |bundle: &Path| fx.run(&["verify", bundle.to_str().unwrap(), "--pubkey", "site.pub"]);

    // Positive control: the delta's entries rebuilt unchanged still verify.
    let control = fx.ws.path("control.bundle.tar.zst");
    fs::write(&control, rebuild_unchanged(&delta.path, Framing::Seekable)).unwrap();
    verify(&control).assert_ok();

    // The in-place file's genuine bytes (its signed sha256) added to the archive, at the
    // end or first among the content: the signed index says it is not there.
    let entries = read_tar(&decompress(&fs::read(&delta.path).unwrap()));
    let extra = RawEntry::new(
        path.as_bytes(),
        tar::EntryType::Regular,
        &fx.upstream_file(UNCHANGED),
    );
    assert_eq!(
        sha256_bytes(&extra.data),
        delta.entries()[&path].1,
        "the added bytes are the signed ones"
    );
    let at_end: Vec<RawEntry> = entries.iter().cloned().chain([extra.clone()]).collect();
    let mut in_order = entries.clone();
    in_order.insert(3, extra);
    for (name, tampered) in [("at-end", at_end), ("in-order", in_order)] {
        for framing in [Framing::Seekable, Framing::Plain] {
            let out = fx
                .ws
                .path(format!("tampered-{name}-{framing:?}.bundle.tar.zst"));
            fs::write(&out, build_bundle(&tampered, framing)).unwrap();
            verify(&out).assert_code(3).assert_stderr_contains(&path);
        }
    }
}
