//! Delta bundles (SPEC §3 "Delta bundles") for the kinds `tests/delta.rs` does not cover:
//! Debian packages and Python wheels in a web root, and images installed into an OCI
//! layout with `--oci-dir`. Real components only: a signed upstream apt repository of real
//! .debs (`common::apt`), an upstream simple index of real wheels (`common::pypi`), an
//! upstream `docker-registry` with images built by umoci, all on 127.0.0.1; the installed
//! web root is served by apache2 and read by stock `apt-get` (signature checking on) and
//! stock `pip`; the installed OCI layout is read by skopeo.
//!
//! The story: v1 is installed; upstream one package gets a new version (a deb rebuilt with
//! a bumped version and the repository re-signed), one wheel moves to another version and
//! one image gets a new top layer; v2 is locked. A delta of v2 against v1 (its bundle, or
//! the site's `receipt export`) leaves out what v1 holds unchanged, and installing it over
//! v1 gives the same bytes as installing the full v2. A delta whose in-place entries the
//! site lacks is refused before anything moves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::apt::{AptClient, AptRepo, AptRepoOptions};
use common::delta::{
    Made, Reader, create_in, hex, install_in, lock_in, push_on_base, run_in, site_workspace,
    upstream_images,
};
use common::pypi::{self, Api, PyIndex};
use common::registry::{Registry, config, layers, sh_ok};
use common::*;
use serde_json::Value;

/// The bundle's name (every version has the same one).
const NAME: &str = "site";
/// The apt repository's name in the manifest (`debs/<REPO>/` in the web root).
const REPO: &str = "tools";
/// The packages asked for: jq brings libjq1 and libonig5 along; hello is the one whose
/// version changes upstream between v1 and v2.
const DEBS: &[&str] = &["jq", "hello"];
/// The upstream file every version carries unchanged (served by the index's Apache).
const FILE: &str = "dl/tool.bin";

// ---------------------------------------------------------------------------
// Bundles and their signed indexes (read as stock tools read them: [`Reader::Stock`])
// ---------------------------------------------------------------------------

/// The entries of `new` that `held` (path → sha256) has with the same sha256, of the kinds
/// a delta leaves out.
fn expected_in_place(held: &BTreeMap<String, String>, new: &Made) -> BTreeSet<String> {
    new.entries()
        .into_iter()
        .filter(|(path, (kind, sha, _, _))| {
            ["file", "oci-blob", "deb", "chart", "python"].contains(&kind.as_str())
                && held.get(path) == Some(sha)
        })
        .map(|(p, _)| p)
        .collect()
}

/// path → sha256 of every entry of a bundle's index.
fn held_by_bundle(base: &Made) -> BTreeMap<String, String> {
    base.entries()
        .into_iter()
        .map(|(p, (_, sha, _, _))| (p, sha))
        .collect()
}

/// A delta's index lists what the full bundle's lists (apart from the marks), marks exactly
/// `in_place`, and its archive carries every other entry and none of those; it is well
/// under the full bundle's size.
#[track_caller]
fn check_delta(
    delta: &Made,
    full: &Made,
    in_place: &BTreeSet<String>,
    from: &str,
    base_sha256: &str,
) {
    let what = delta.path.display();
    assert!(full.in_place().is_empty(), "the full bundle marks entries");
    let unmarked = |m: &Made| -> BTreeMap<String, (String, String)> {
        m.entries()
            .into_iter()
            .map(|(p, (k, s, _, _))| (p, (k, s)))
            .collect()
    };
    assert_eq!(
        unmarked(delta),
        unmarked(full),
        "{what}: the delta's index must list the whole new set"
    );
    assert_eq!(
        &delta.in_place_paths(),
        in_place,
        "{what}: in-place entries"
    );
    let base = &delta.index["base"];
    assert_eq!(base["from"], from, "{what}: base {base:#}");
    assert_eq!(hex(&base["sha256"]), base_sha256, "{what}: base {base:#}");
    let archive = delta.archive_paths();
    for (path, (_, _, _, marked)) in delta.entries() {
        assert_eq!(
            archive.contains(&path),
            !marked,
            "{what}: {path} (in_place: {marked}) {} the archive",
            if marked { "is in" } else { "is not in" }
        );
    }
    assert!(
        delta.size() * 100 < full.size() * 15,
        "{what}: {} bytes is not a small fraction of the full bundle's {}",
        delta.size(),
        full.size()
    );
}

/// `cp -a FROM TO`.
fn copy_tree(from: &Path, to: &Path) {
    output_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// A web root's snapshot without `.bundle/` (the receipts record times).
fn content(web: &Path) -> BTreeMap<String, String> {
    let mut snap = tree_snapshot(web);
    snap.retain(|k, _| !k.starts_with(".bundle/") && k != ".bundle");
    snap
}

/// The files v2's receipt in `web` lists: (path, sha256).
fn receipt_files(web: &Path) -> BTreeSet<(String, String)> {
    let path = web.join(format!(".bundle/{NAME}-2.0.0.json"));
    let receipt: Value = serde_json::from_slice(
        &fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    receipt["files"]
        .as_array()
        .unwrap_or_else(|| panic!("a receipt without files: {receipt:#}"))
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), hex(&f["sha256"])))
        .collect()
}

#[track_caller]
fn assert_same_tree(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    assert!(got == want, "{what}:\n{}", snapshot_diff(want, got));
}

// ---------------------------------------------------------------------------
// Debian packages and Python wheels
// ---------------------------------------------------------------------------

/// The connected side for debs and wheels: the upstream apt repository, the upstream
/// simple index (whose Apache also serves [`FILE`]), the site key and the cache.
struct Upstream {
    repo: AptRepo,
    index: PyIndex,
    ws: Workspace,
}

impl Upstream {
    fn new() -> Upstream {
        let ws = site_workspace();
        let repo = AptRepo::build(
            &ws,
            AptRepoOptions {
                packages: vec!["hello", "jq", "libjq1", "libonig5"],
                ..AptRepoOptions::default()
            },
        );
        let index = PyIndex::build(
            &ws,
            "pypi",
            Api::Html,
            &[pypi::SIX, pypi::JMESPATH_OLD, pypi::JMESPATH, pypi::NETADDR],
        );
        write_file(index.root.join(FILE), random_bytes(1_000_000, 7));
        ws.mkdir("keys");
        fs::copy(repo.key_armored(), ws.path("keys/tools.asc")).unwrap();
        Upstream { repo, index, ws }
    }

    fn run(&self, args: &[&str]) -> Run {
        run_in(&self.ws, args)
    }

    /// Writes and locks version `version`: [`FILE`], [`DEBS`] (and their closure) from the
    /// apt repository, six, netaddr and jmespath `jmespath`. Returns the lock.
    fn lock(&self, version: &str, jmespath: &str) -> PathBuf {
        let debs: String = DEBS
            .iter()
            .map(|d| format!("      - {{name: {d}}}\n"))
            .collect();
        let manifest = format!(
            "apiVersion: bundle/v1\nname: {NAME}\nversion: '{version}'\n\
             files:\n  - url: '{file}'\n\
             debs:\n  - name: {REPO}\n    url: {url}\n    suite: stable\n    components: [main]\n    architectures: [{arch}]\n    signed-by: keys/tools.asc\n    packages:\n{debs}\
             python:\n  index: {index}\n  python-version: '{py}'\n  platforms: [manylinux2014_x86_64]\n  packages:\n\
             \x20   - {{name: six, version: 1.16.0}}\n\
             \x20   - {{name: netaddr, version: 1.3.0}}\n\
             \x20   - {{name: jmespath, version: {jmespath}}}\n",
            file = self.index.apache.url(FILE),
            url = self.repo.url(),
            arch = self.repo.arch(),
            index = self.index.index_url(),
            py = pypi::PYTHON,
        );
        let m = self.ws.write(format!("m-{version}.yaml"), manifest);
        let lock = self.ws.path(format!("m-{version}.lock.yaml"));
        lock_in(&self.ws, &m, &lock, &[]);
        lock
    }

    /// `create LOCK -o NAME --key site.key --cache cache EXTRA…`, which must succeed.
    fn made(&self, lock: &Path, name: &str, extra: &[&str]) -> Made {
        let out = self.ws.path(name);
        create_in(&self.ws, lock, &out, "cache", extra).assert_ok();
        Made::read(&out, Reader::Stock)
    }

    /// v1: hello as upstream has it, jmespath 1.0.0.
    fn v1(&self) -> Made {
        let lock = self.lock("1.0.0", "1.0.0");
        self.made(&lock, "v1.bundle.tar.zst", &[])
    }

    /// Upstream moves on: hello gets a new version (the real deb rebuilt by stock dpkg-deb
    /// with its version bumped, beside the old one in the pool, the repository re-indexed
    /// and re-signed). v2 asks for jmespath 1.0.1. Returns v2's lock and the new hello's
    /// path below the repository root.
    fn upgrade_to_v2(&mut self) -> (PathBuf, String) {
        let old = self.repo.package("hello");
        let version = format!("{}+kinds1", old.version);
        let unpacked = self.ws.path("hello-src");
        let old_path = self.repo.root().join(&old.filename);
        output_ok(
            Command::new("dpkg-deb")
                .arg("-R")
                .arg(&old_path)
                .arg(&unpacked),
        );
        let control = unpacked.join("DEBIAN/control");
        let text = fs::read_to_string(&control).unwrap();
        let bumped = text.replace(
            &format!("\nVersion: {}\n", old.version),
            &format!("\nVersion: {version}\n"),
        );
        assert_ne!(bumped, text, "no Version line in {text}");
        fs::write(&control, bumped).unwrap();
        let file_name = format!("hello_{version}_{}.deb", old.arch);
        let new_path = old_path.with_file_name(&file_name);
        output_ok(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zxz", "-b"])
                .arg(&unpacked)
                .arg(&new_path),
        );
        self.repo.publish();
        let new = self.repo.package("hello");
        assert_eq!(new.version, version, "apt-ftparchive lists the new hello");
        (self.lock("2.0.0", "1.0.1"), new.filename)
    }

    /// `install BUNDLE --pubkey site.pub --web-root WEB --base-url BASE`.
    fn install(&self, bundle: &Path, web: &Path, base: &str) -> Run {
        install_in(
            &self.ws,
            bundle,
            &["--web-root", web.to_str().unwrap(), "--base-url", base],
        )
    }

    /// The web path of a deb at `filename` below the repository root.
    fn deb_path(&self, filename: &str) -> String {
        format!("debs/{REPO}/{}", filename.trim_start_matches("./"))
    }

    /// The web path of [`FILE`].
    fn file_path(&self) -> String {
        format!("files/127.0.0.1:{}/{FILE}", self.index.apache.port)
    }
}

/// v1 installed into a web root served by its own Apache: (web root, Apache, base URL).
fn v1_site(up: &Upstream, v1: &Made) -> (PathBuf, Apache, String) {
    let web = up.ws.mkdir("site");
    let apache = Apache::start(&web);
    let base = apache.url("/");
    up.install(&v1.path, &web, &base).assert_ok();
    (web, apache, base)
}

#[test]
fn debs_and_wheels_deltas_install_like_the_full_bundle_and_stock_apt_and_pip_read_them() {
    let mut up = Upstream::new();
    let v1 = up.v1();
    let (web, site, base) = v1_site(&up, &v1);
    let old_hello = up.deb_path(&up.repo.package("hello").filename);
    assert!(
        web.join(&old_hello).is_file(),
        "v1 installed no {old_hello}"
    );

    // What the site holds, exported on the air-gapped side.
    let export_path = up.ws.path("site.json");
    up.run(&[
        "receipt",
        "export",
        "--web-root",
        web.to_str().unwrap(),
        "-o",
        export_path.to_str().unwrap(),
    ])
    .assert_ok();
    let export: Value = serde_json::from_slice(&fs::read(&export_path).unwrap()).unwrap();
    let held_by_site: BTreeMap<String, String> = export["files"]
        .as_array()
        .unwrap_or_else(|| panic!("an export without files: {export:#}"))
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), hex(&f["sha256"])))
        .collect();

    // Copies of the v1 site, taken before anything else is installed on it.
    let full_web = up.ws.path("full-web");
    let export_web = up.ws.path("export-web");
    copy_tree(&web, &full_web);
    copy_tree(&web, &export_web);

    let (lock2, new_hello) = up.upgrade_to_v2();
    let new_hello_path = up.deb_path(&new_hello);
    let full = up.made(&lock2, "v2.bundle.tar.zst", &[]);
    let from_bundle = up.made(
        &lock2,
        "v2-from-bundle.bundle.tar.zst",
        &["--base", v1.path.to_str().unwrap()],
    );
    let from_site = up.made(
        &lock2,
        "v2-from-site.bundle.tar.zst",
        &["--base", export_path.to_str().unwrap()],
    );

    // What each delta must leave out: everything v1 holds with the same sha256 — the
    // unchanged debs, wheels and file — and nothing else.
    let in_place = expected_in_place(&held_by_bundle(&v1), &full);
    let unchanged_debs: Vec<String> = ["jq", "libjq1", "libonig5"]
        .iter()
        .map(|p| up.deb_path(&up.repo.package(p).filename))
        .collect();
    let kept_wheels: Vec<String> = [pypi::SIX, pypi::NETADDR]
        .iter()
        .map(|w| format!("python/{w}"))
        .collect();
    for p in unchanged_debs
        .iter()
        .chain(&kept_wheels)
        .chain([&up.file_path()])
    {
        assert!(
            in_place.contains(p),
            "{p} not expected in place: {in_place:#?}"
        );
    }
    let changed_wheel = format!("python/{}", pypi::JMESPATH);
    for p in [&new_hello_path, &changed_wheel] {
        assert!(full.entries().contains_key(p), "v2 does not carry {p}");
        assert!(!in_place.contains(p), "{p} expected in place");
    }
    let v1_index = sha256_bytes(&v1.index_bytes);
    check_delta(&from_bundle, &full, &in_place, "bundle", &v1_index);
    // The export lists the web root's files (debs and wheels among them); a delta made from
    // it leaves out the same entries.
    assert_eq!(
        expected_in_place(&held_by_site, &full),
        in_place,
        "what the export holds: {export:#}"
    );
    let export_sha = sha256_file(&export_path);
    check_delta(&from_site, &full, &in_place, "site", &export_sha);
    // The apt indexes are carried (v2's repository was re-signed).
    for (path, (kind, _, _, marked)) in from_bundle.entries() {
        if kind == "apt-index" {
            assert!(!marked, "{path} marked in place");
        }
    }

    // The full v2 over one copy, each delta over another: the same bytes everywhere but
    // the receipts (apt indexes, `.sources` snippets, `simple/` pages, the Kubespray
    // variables), the same base URL.
    let v1_content = content(&full_web);
    up.install(&full.path, &full_web, &base).assert_ok();
    let report: Value = serde_json::from_str(
        &up.install(&from_bundle.path, &web, &base)
            .assert_ok()
            .stdout
            .clone(),
    )
    .unwrap();
    assert_eq!(
        report["in_place_entries"],
        in_place.len() as u64,
        "{report:#}"
    );
    up.install(&from_site.path, &export_web, &base).assert_ok();
    let want = content(&full_web);
    assert_ne!(want, v1_content, "the full v2 changed nothing");
    for p in [
        "kubespray-offline.yml".to_string(),
        format!("debs/{REPO}.sources"),
        format!("debs/{REPO}/dists/stable/InRelease"),
        "simple/index.html".to_string(),
        "simple/jmespath/index.html".to_string(),
        new_hello_path.clone(),
        changed_wheel.clone(),
    ] {
        assert!(want.contains_key(&p), "the full install wrote no {p}");
    }
    assert_same_tree(
        &content(&web),
        &want,
        "the delta from the v1 bundle differs from the full v2",
    );
    assert_same_tree(
        &content(&export_web),
        &want,
        "the delta from the site export differs from the full v2",
    );
    // The receipts: v1's as it was, v2's listing the same files (in-place ones too).
    for dir in [&web, &export_web] {
        assert_eq!(
            fs::read(dir.join(format!(".bundle/{NAME}-1.0.0.json"))).unwrap(),
            fs::read(full_web.join(format!(".bundle/{NAME}-1.0.0.json"))).unwrap(),
            "v1's receipt in {}",
            dir.display()
        );
        assert_eq!(
            receipt_files(dir),
            receipt_files(&full_web),
            "v2's receipt in {}",
            dir.display()
        );
    }
    assert!(receipt_files(&web).contains(&(
        unchanged_debs[0].clone(),
        full.entries()[&unchanged_debs[0]].1.clone()
    )));
    assert_eq!(
        fs::read(web.join(format!("debs/{REPO}/dists/stable/InRelease"))).unwrap(),
        fs::read(up.repo.release_dir().join("InRelease")).unwrap(),
        "the installed InRelease is not upstream's v2 one"
    );

    // Stock apt, isolated, signature checking on, against the delta-installed repository
    // served by Apache: the new hello (carried) and jq (in place), byte for byte.
    let snippet = fs::read_to_string(web.join(format!("debs/{REPO}.sources"))).unwrap();
    assert!(!snippet.to_lowercase().contains("trusted"), "{snippet}");
    let apt = AptClient::new(&up.ws, "tools.sources", &snippet);
    apt.update_ok();
    let got = apt.download_ok(&up.ws.mkdir("apt-got"), &["hello", "jq"]);
    let names: Vec<String> = got
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let new_name = Path::new(&new_hello).file_name().unwrap().to_string_lossy();
    assert!(names.iter().any(|n| *n == new_name), "{names:?}");
    let hello_upstream = sha256_file(up.repo.root().join(&new_hello));
    for path in &got {
        let name = path.file_name().unwrap().to_string_lossy();
        let want = if name.starts_with("hello_") {
            hello_upstream.clone()
        } else {
            up.repo.package("jq").sha256
        };
        assert_eq!(sha256_file(path), want, "{}", path.display());
    }
    let out = apt.run(
        apt.dir(),
        &[
            "install",
            "--download-only",
            "-y",
            "--no-install-recommends",
            "hello",
        ],
    );
    assert!(
        out.status.success(),
        "apt-get install --download-only hello:\n{}",
        show_output(&out)
    );
    let fetched = apt
        .dir()
        .join("cache/archives")
        .join(new_name.replace(':', "%3a"));
    assert_eq!(
        sha256_file(&fetched),
        hello_upstream,
        "apt-get install --download-only"
    );
    let log = site.access_log();
    assert!(
        // (apt escapes the `+` of the version.)
        log.contains(&format!("GET /{} ", new_hello_path.replace('+', "%2b"))),
        "apt did not fetch the new hello from the site:\n{log}"
    );

    // Stock pip from the delta-installed simple/ tree: the changed wheel (carried) and an
    // unchanged one (in place), byte for byte, and an install of the changed one.
    let simple = site.url("simple");
    let out = pypi::pip(
        Path::new("python3"),
        &[
            "download",
            "--no-deps",
            "--index-url",
            &simple,
            "-d",
            "pip-got",
            "jmespath==1.0.1",
            "six==1.16.0",
        ],
        up.ws.root(),
    );
    assert!(out.status.success(), "pip download:\n{}", show_output(&out));
    for w in [pypi::JMESPATH, pypi::SIX] {
        assert_eq!(
            sha256_file(up.ws.path("pip-got").join(w)),
            sha256_file(pypi::cached_wheels().join(w)),
            "{w}"
        );
    }
    let target = up.ws.path("pip-target");
    let out = pypi::pip(
        Path::new("python3"),
        &[
            "install",
            "--no-deps",
            "--index-url",
            &simple,
            "--target",
            target.to_str().unwrap(),
            "jmespath==1.0.1",
        ],
        up.ws.root(),
    );
    assert!(out.status.success(), "pip install:\n{}", show_output(&out));
    assert!(
        target.join("jmespath-1.0.1.dist-info").is_dir(),
        "pip installed no jmespath 1.0.1 into {}",
        target.display()
    );
    let log = site.access_log();
    assert!(
        log.contains(&format!("GET /{changed_wheel} ")),
        "pip did not fetch {changed_wheel} from the site:\n{log}"
    );
}

#[test]
fn a_debs_delta_on_a_web_root_missing_an_in_place_deb_is_refused_and_writes_nothing() {
    let mut up = Upstream::new();
    let v1 = up.v1();
    let (web, _site, base) = v1_site(&up, &v1);
    let (lock2, _) = up.upgrade_to_v2();
    let delta = up.made(
        &lock2,
        "v2-delta.bundle.tar.zst",
        &["--base", v1.path.to_str().unwrap()],
    );
    let jq = up.deb_path(&up.repo.package("jq").filename);
    let libjq1 = up.deb_path(&up.repo.package("libjq1").filename);
    let six = format!("python/{}", pypi::SIX);
    for p in [&jq, &libjq1, &six] {
        assert!(delta.in_place().contains_key(p), "{p} not in place");
    }

    // One in-place deb deleted from the site.
    let jq_bytes = fs::read(web.join(&jq)).unwrap();
    fs::remove_file(web.join(&jq)).unwrap();
    let before = tree_snapshot(&web);
    let run = up.install(&delta.path, &web, &base);
    run.assert_code(1)
        .assert_stderr_contains(&jq)
        .assert_stderr_contains("nothing was installed");
    assert!(
        !run.stderr.contains(&libjq1) && !run.stderr.contains(&six),
        "names entries that are in place:\n{}",
        run.stderr
    );
    let after = tree_snapshot(&web);
    assert!(
        before == after,
        "the refused install changed the web root:\n{}",
        snapshot_diff(&before, &after)
    );

    // An in-place wheel with other bytes (same size) is as good as missing.
    write_file(web.join(&jq), &jq_bytes);
    let six_path = web.join(&six);
    let mut bytes = fs::read(&six_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&six_path, &bytes).unwrap();
    let before = tree_snapshot(&web);
    let run = up.install(&delta.path, &web, &base);
    run.assert_code(1)
        .assert_stderr_contains(&six)
        .assert_stderr_contains("nothing was installed");
    assert!(!run.stderr.contains(&jq), "{}", run.stderr);
    assert_eq!(tree_snapshot(&web), before, "the refused install wrote");

    // Positive control: with the wheel restored, the same delta installs.
    fs::copy(pypi::cached_wheels().join(pypi::SIX), &six_path).unwrap();
    up.install(&delta.path, &web, &base).assert_ok();
}

// ---------------------------------------------------------------------------
// --oci-dir
// ---------------------------------------------------------------------------

/// The connected side for images: an upstream registry with `test/base:base` (one 2 MB
/// layer) and `test/app:v1` (that layer and a 100 KB one), the site key.
struct Images {
    upstream: Registry,
    ws: Workspace,
    layout: PathBuf,
}

impl Images {
    fn new() -> Images {
        let ws = site_workspace();
        let (upstream, layout) = upstream_images(&ws, 2_000_000);
        Images {
            upstream,
            ws,
            layout,
        }
    }

    /// Locks and bundles both images as version `version` into `<out>`; `extra` for create.
    fn bundle(&self, version: &str, out: &str, extra: &[&str]) -> Made {
        let up = self.upstream.host();
        let m = self.ws.write(
            format!("i-{version}.yaml"),
            format!(
                "apiVersion: bundle/v1\nname: images\nversion: '{version}'\nimages:\n  - ref: '{up}/test/app:v1'\n  - ref: '{up}/test/base:base'\n"
            ),
        );
        let lock = self.ws.path(format!("i-{version}.lock.yaml"));
        if !lock.exists() {
            lock_in(&self.ws, &m, &lock, &["--plain-http"]);
        }
        let path = self.ws.path(out);
        let args = [&["--plain-http"], extra].concat();
        create_in(&self.ws, &lock, &path, "cache", &args).assert_ok();
        Made::read(&path, Reader::Stock)
    }

    fn install(&self, bundle: &Path, oci_dir: &Path) -> Run {
        install_in(&self.ws, bundle, &["--oci-dir", oci_dir.to_str().unwrap()])
    }
}

/// The `org.opencontainers.image.ref.name` under which an OCI layout's `index.json` names
/// the manifest `digest` (hex).
fn ref_name(oci_dir: &Path, digest: &str) -> String {
    let index: Value =
        serde_json::from_slice(&fs::read(oci_dir.join("index.json")).unwrap()).unwrap();
    let want = format!("sha256:{digest}");
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == want.as_str())
        .unwrap_or_else(|| panic!("{want} not in {}: {index:#}", oci_dir.display()))["annotations"]
        ["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_oci_dir_delta_installs_like_the_full_bundle_and_refuses_a_missing_blob() {
    let im = Images::new();
    let v1 = im.bundle("1.0.0", "v1.bundle.tar.zst", &[]);
    let site = im.ws.path("oci");
    im.install(&v1.path, &site).assert_ok();
    let base_layer = layers(&im.upstream.raw_manifest("test/base", "base"))[0].clone();
    assert!(site.join(format!("blobs/sha256/{base_layer}")).is_file());

    // Copies of the v1 layout, taken before anything else is installed.
    let (full_dir, broken) = (im.ws.path("oci-full"), im.ws.path("oci-broken"));
    copy_tree(&site, &full_dir);
    copy_tree(&site, &broken);

    // Upstream, test/app:v1 gets a new top layer on the same base.
    push_on_base(
        &im.layout,
        &im.upstream,
        ("app-2", 100_000, 201),
        "test/app:v1",
    );
    let app = im.upstream.raw_manifest("test/app", "v1");
    let app_digest = sha256_bytes(&app);
    let new_layer = layers(&app).last().unwrap().clone();
    let full = im.bundle("2.0.0", "v2.bundle.tar.zst", &[]);
    let delta = im.bundle(
        "2.0.0",
        "v2-delta.bundle.tar.zst",
        &["--base", v1.path.to_str().unwrap()],
    );
    let in_place = expected_in_place(&held_by_bundle(&v1), &full);
    let blob = |hex: &str| format!("oci/blobs/sha256/{hex}");
    let base_config = config(&im.upstream.raw_manifest("test/base", "base"));
    for hex in [&base_layer, &base_config] {
        assert!(in_place.contains(&blob(hex)), "{hex} not expected in place");
    }
    for hex in [&new_layer, &app_digest, &config(&app)] {
        assert!(!in_place.contains(&blob(hex)), "{hex} expected in place");
    }
    check_delta(
        &delta,
        &full,
        &in_place,
        "bundle",
        &sha256_bytes(&v1.index_bytes),
    );

    im.install(&full.path, &full_dir).assert_ok();
    let report: Value =
        serde_json::from_str(&im.install(&delta.path, &site).assert_ok().stdout.clone()).unwrap();
    assert_eq!(
        report["in_place_entries"],
        in_place.len() as u64,
        "{report:#}"
    );
    assert_same_tree(
        &tree_snapshot(&site),
        &tree_snapshot(&full_dir),
        "the delta's --oci-dir differs from the full v2's",
    );
    assert!(site.join(format!("blobs/sha256/{new_layer}")).is_file());

    // skopeo reads the changed image from the delta-installed layout, with its upstream
    // digest, and copies it out (checking every blob).
    let name = ref_name(&site, &app_digest);
    let raw = sh_ok(&format!(
        "skopeo inspect --raw 'oci:{}:{name}'",
        site.display()
    ));
    assert_eq!(sha256_bytes(&raw), app_digest);
    sh_ok(&format!(
        "skopeo copy --quiet 'oci:{}:{name}' 'dir:{}'",
        site.display(),
        im.ws.path("copied").display()
    ));
    assert_eq!(
        sha256_file(im.ws.path("copied").join(&new_layer)),
        new_layer,
        "skopeo copied another layer"
    );

    // A layout missing one in-place blob: refused, naming it, nothing written.
    fs::remove_file(broken.join(format!("blobs/sha256/{base_layer}"))).unwrap();
    let before = tree_snapshot(&broken);
    let run = im.install(&delta.path, &broken);
    run.assert_code(1)
        .assert_stderr_contains(&blob(&base_layer))
        .assert_stderr_contains("nothing was installed");
    assert!(
        !run.stderr.contains(&base_config),
        "names a blob that is in place:\n{}",
        run.stderr
    );
    let after = tree_snapshot(&broken);
    assert!(
        before == after,
        "the refused install changed the layout:\n{}",
        snapshot_diff(&before, &after)
    );
}
