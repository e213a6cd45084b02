//! `bundle install --registry` and `--oci-dir` (issue 14, part 3) against real
//! `docker-registry` instances: an upstream one (plain HTTP) the bundle is made from, and a
//! site one the bundle is installed into (TLS with a test CA and htpasswd basic auth, plain
//! HTTP, or distribution's token auth). Images are built offline with umoci and pushed with
//! skopeo; what lands in the site registry is read back with skopeo and curl. Failures of
//! single requests are injected by a forwarding proxy in front of the site registry
//! (`FaultProxy`). Everything listens on 127.0.0.1.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::net::inspect_json;
use common::registry::{
    FailingServer, Fault, FaultProxy, Registry, Settings, TokenServer, TwoPlatformIndex,
    build_image, build_image_on, build_image_with, config, create_images, images_manifest, layers,
    lock_images, push_two_platform_index, sh_ok,
};
use common::tamper::flip_entry_byte;
use common::*;

/// The site registry's login.
const USER: &str = "site-admin";
const PASSWORD: &str = "Pa55-w0rd-site";
/// The User-Agent of the tool's requests in a registry's access log.
const UA: &str = "airgap-bundle/";

/// One image of the bundle as the upstream registry serves it.
struct Image {
    repo: String,
    tag: String,
    /// The bytes its tag serves (a manifest or an index).
    raw: Vec<u8>,
}

impl Image {
    fn digest(&self) -> String {
        sha256_bytes(&self.raw)
    }
}

/// The upstream registry and the images of the bundle made from it.
struct Upstream {
    registry: Registry,
    images: Vec<Image>,
    multi: Option<TwoPlatformIndex>,
}

impl Upstream {
    fn host(&self) -> String {
        self.registry.host()
    }

    /// `HOST/REPO:TAG@sha256:…` of each image, as the lock pins it.
    fn source(&self, image: &Image) -> String {
        format!(
            "{}/{}:{}@sha256:{}",
            self.host(),
            image.repo,
            image.tag,
            image.digest()
        )
    }
}

/// Keys in the workspace, an upstream registry with `test/base:base`, `test/app:v1` (on
/// top of the base: the two share its layer) and, with `multi`, `test/multi:v1` (an OCI
/// index of a linux/amd64 and a linux/arm64 image), then `m.yaml` naming them (plus
/// `extra` top-level YAML), its lock and the bundle `b.bundle.tar.zst`.
fn upstream(ws: &Workspace, multi: bool, extra: &str) -> Upstream {
    keygen(&ws.path("site"));
    let registry = Registry::start(&ws.path("upstream"), None);
    let layout = ws.path("oci-src");
    build_image(&layout, "base", "base\n");
    build_image_on(&layout, Some("base"), "v1", "app\n");
    registry.push(&layout, "base", "test/base", None);
    registry.push(&layout, "v1", "test/app", None);
    let mut images = vec![
        Image {
            repo: "test/app".into(),
            tag: "v1".into(),
            raw: registry.raw_manifest("test/app", "v1"),
        },
        Image {
            repo: "test/base".into(),
            tag: "base".into(),
            raw: registry.raw_manifest("test/base", "base"),
        },
    ];
    let shared: Vec<String> = layers(&images[1].raw)
        .into_iter()
        .filter(|l| layers(&images[0].raw).contains(l))
        .collect();
    assert_eq!(shared.len(), 1, "app and base must share the base layer");
    let multi = multi.then(|| {
        let index = push_two_platform_index(&registry, &layout, "test/multi", "v1");
        images.push(Image {
            repo: "test/multi".into(),
            tag: "v1".into(),
            raw: index.index.clone(),
        });
        index
    });
    let up = Upstream {
        registry,
        images,
        multi,
    };
    let refs: Vec<String> = up
        .images
        .iter()
        .map(|i| format!("{}/{}:{}", up.host(), i.repo, i.tag))
        .collect();
    make_bundle(ws, &refs, extra);
    up
}

/// `m.yaml` naming `refs`, locked (plain HTTP) and bundled into `b.bundle.tar.zst`.
fn make_bundle(ws: &Workspace, refs: &[String], extra: &str) {
    ws.write("m.yaml", images_manifest(refs, extra));
    lock_images(ws, &["--plain-http"], &[]).assert_ok();
    create_images(ws, "b.bundle.tar.zst").assert_ok();
}

/// `bundle --json install BUNDLE --pubkey site.pub ARGS…` in the workspace, with HOME and
/// XDG_RUNTIME_DIR in the workspace (no auth file of the machine's user may leak into a
/// test) and `BUNDLE_REGISTRY_PASSWORD` when given.
fn install(ws: &Workspace, bundle: &str, args: &[&str], password: Option<&str>) -> Run {
    let mut all = vec!["--json", "install", bundle, "--pubkey", "site.pub"];
    all.extend_from_slice(args);
    let root = ws.root().to_str().unwrap();
    let mut envs = vec![("HOME", root), ("XDG_RUNTIME_DIR", root)];
    if let Some(p) = password {
        envs.push(("BUNDLE_REGISTRY_PASSWORD", p));
    }
    run_bundle_in(ws.root(), &all, &envs)
}

/// The TLS site registry with basic auth the install tests push into.
fn tls_site(ws: &Workspace) -> Registry {
    Registry::start_tls(&ws.path("site-registry"), Some((USER, PASSWORD)))
}

/// `install --json BUNDLE` into `site` with `--registry-user` and `--registry-ca`, the
/// password (`password`) in the environment.
fn install_into(ws: &Workspace, site: &Registry, bundle: &str, password: &str) -> Run {
    let host = site.host();
    let ca = site.ca_path();
    install(ws, bundle, &tls_args(&host, &ca), Some(password))
}

/// `--registry HOST --registry-user USER --registry-ca CA`.
fn tls_args<'a>(host: &'a str, ca: &'a Path) -> [&'a str; 6] {
    [
        "--registry",
        host,
        "--registry-user",
        USER,
        "--registry-ca",
        ca.to_str().unwrap(),
    ]
}

/// `install --json b.bundle.tar.zst --registry HOST --plain-http`, no login.
fn install_plain(ws: &Workspace, host: &str) -> Run {
    install(
        ws,
        "b.bundle.tar.zst",
        &["--registry", host, "--plain-http"],
        None,
    )
}

/// The `--json` report of a successful run.
fn report(run: &Run) -> serde_json::Value {
    run.assert_ok();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("the --json report is not JSON: {e}\n{}", run.stdout))
}

/// A counter of the report's `registry` object.
fn counter(report: &serde_json::Value, key: &str) -> u64 {
    report["registry"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("registry.{key} is not a number in the report:\n{report:#}"))
}

/// The report's image whose `name` is `name`.
fn report_image<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let images = report["registry"]["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no registry.images in the report:\n{report:#}"));
    images
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no image named {name} in the report:\n{report:#}"))
}

/// The `(digest, size)` of an image manifest's config and layers.
fn blobs_of(manifest: &[u8]) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    std::iter::once(&v["config"])
        .chain(v["layers"].as_array().unwrap().iter())
        .map(|d| {
            (
                d["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The requests that write to a registry: `PUT` and `PATCH`, and `POST` other than the
/// opening of a plain upload session (a cross-repository mount is a write).
fn writes(log: &[(String, u16)]) -> Vec<&(String, u16)> {
    log.iter()
        .filter(|(r, _)| {
            r.starts_with("PUT ")
                || r.starts_with("PATCH ")
                || (r.starts_with("POST ") && (r.contains("mount=") || r.contains("digest=")))
        })
        .collect()
}

/// Checks that the site registry holds each image under `REPO:TAG` with exactly the
/// upstream bytes, every blob readable and matching its digest (skopeo copies it out),
/// and no other tag in the repository.
fn assert_mirrors_upstream(ws: &Workspace, site: &Registry, up: &Upstream) {
    for image in &up.images {
        assert_eq!(
            site.manifest_digest(&image.repo, &image.tag, None),
            image.digest(),
            "{}:{} in the site registry is not the upstream one",
            image.repo,
            image.tag
        );
        assert_eq!(
            site.tags(&image.repo),
            std::slice::from_ref(&image.tag),
            "tags of {} in the site registry",
            image.repo
        );
        site.pull(
            &image.repo,
            &image.tag,
            &ws.path("pulled"),
            &format!("{}-{}", image.repo.replace('/', "-"), image.tag),
        );
    }
}

#[test]
fn install_pushes_every_image_with_its_upstream_digest_into_a_tls_registry_with_basic_auth() {
    let ws = Workspace::new();
    let up = upstream(&ws, true, "");
    let site = tls_site(&ws);
    let host = site.host();
    let run = install_into(&ws, &site, "b.bundle.tar.zst", PASSWORD);
    let report = report(&run);
    assert!(
        !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
        "the password was printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );

    // The report: each image under the site registry, upstream host dropped, with its
    // upstream digest (nothing was filtered), pushed.
    assert_eq!(report["registry"]["host"], host.as_str(), "{report:#}");
    assert_eq!(
        report["registry"]["images"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );
    for image in &up.images {
        let name = format!("{host}/{}:{}", image.repo, image.tag);
        let entry = report_image(&report, &name);
        let digest = format!("sha256:{}", image.digest());
        assert_eq!(entry["source"], up.source(image), "{entry:#}");
        assert_eq!(entry["digest"], digest.as_str(), "{entry:#}");
        assert_eq!(entry["upstream_digest"], digest.as_str(), "{entry:#}");
        assert_eq!(entry["status"], "pushed", "{entry:#}");
    }
    assert_mirrors_upstream(&ws, &site, &up);
    // The index's children are there by digest too.
    let multi = up.multi.as_ref().unwrap();
    for child in [&multi.amd, &multi.arm] {
        let digest = format!("sha256:{}", sha256_bytes(child));
        assert_eq!(site.manifest_status("test/multi", &digest), 200, "{digest}");
    }

    // Counters: five manifests (app, base, the index and its two children); every
    // distinct blob (4 configs, 4 layers) pushed at least once since the registry was
    // empty, and the base layer, in two repositories, pushed again or mounted.
    let mut distinct = BTreeSet::new();
    let mut pairs = 0;
    for manifest in [&up.images[0].raw, &up.images[1].raw, &multi.amd, &multi.arm] {
        for blob in blobs_of(manifest) {
            distinct.insert(blob);
            pairs += 1;
        }
    }
    assert_eq!((distinct.len(), pairs), (8, 9));
    let distinct_bytes: u64 = distinct.iter().map(|(_, size)| size).sum();
    assert_eq!(counter(&report, "manifests_pushed"), 5, "{report:#}");
    assert_eq!(counter(&report, "manifests_present"), 0, "{report:#}");
    assert_eq!(counter(&report, "blobs_present"), 0, "{report:#}");
    let pushed = counter(&report, "blobs_pushed");
    assert!(pushed >= 8, "{report:#}");
    assert_eq!(
        pushed + counter(&report, "blobs_mounted"),
        9,
        "one blob per (repository, blob): {report:#}"
    );
    assert!(
        counter(&report, "bytes_pushed") >= distinct_bytes,
        "bytes_pushed below the {distinct_bytes} bytes of the distinct blobs: {report:#}"
    );

    // Pre-flight came first: GET /v2/, and an upload session opened and cancelled in each
    // repository, before any blob moved.
    let log = site.access_log(UA);
    assert!(
        log.first().is_some_and(|(r, _)| r == "GET /v2/"),
        "{log:#?}"
    );
    let first_write = log
        .iter()
        .position(|(r, _)| r.starts_with("PUT ") || r.starts_with("PATCH "))
        .expect("no blob was written");
    for repo in ["test/app", "test/base", "test/multi"] {
        let prefix = format!("DELETE /v2/{repo}/blobs/uploads/");
        assert!(
            log[..first_write]
                .iter()
                .any(|(r, s)| r.starts_with(&prefix) && *s < 300),
            "no upload session cancelled in {repo} before the first write: {log:#?}"
        );
    }
    // No repository was made under the upstream host.
    let upstream_dash = up.host().replace(':', "-");
    assert!(
        !log.iter()
            .any(|(r, _)| r.contains(&up.host()) || r.contains(&upstream_dash)),
        "{log:#?}"
    );
}

#[test]
fn a_second_install_pushes_nothing() {
    let ws = Workspace::new();
    let up = upstream(&ws, true, "");
    let site = tls_site(&ws);
    let host = site.host();
    let ca = site.ca_path();
    let args = tls_args(&host, &ca);
    let first = report(&install(&ws, "b.bundle.tar.zst", &args, Some(PASSWORD)));
    assert!(counter(&first, "blobs_pushed") > 0, "{first:#}");
    let before = site.access_log(UA).len();

    let again = report(&install(&ws, "b.bundle.tar.zst", &args, Some(PASSWORD)));
    let log = site.access_log(UA)[before..].to_vec();
    assert!(
        !log.is_empty(),
        "the second install did not reach the registry"
    );
    assert_eq!(writes(&log), Vec::<&(String, u16)>::new(), "{log:#?}");
    // Pre-flight's upload sessions (a POST answered 202) are each cancelled.
    let count = |method: &str, status: u16| {
        log.iter()
            .filter(|(r, s)| r.starts_with(method) && *s == status)
            .count()
    };
    assert_eq!(count("POST ", 202), 3, "{log:#?}");
    assert_eq!(count("DELETE ", 204), 3, "{log:#?}");
    for key in [
        "blobs_pushed",
        "blobs_mounted",
        "bytes_pushed",
        "manifests_pushed",
    ] {
        assert_eq!(counter(&again, key), 0, "{key}: {again:#}");
    }
    assert!(counter(&again, "manifests_present") >= 3, "{again:#}");
    for image in &up.images {
        let entry = report_image(&again, &format!("{host}/{}:{}", image.repo, image.tag));
        assert_eq!(entry["status"], "present", "{entry:#}");
        assert_eq!(
            entry["digest"],
            format!("sha256:{}", image.digest()),
            "{entry:#}"
        );
    }
    assert_mirrors_upstream(&ws, &site, &up);
}

#[test]
fn a_filtered_index_is_pushed_under_the_tag_with_its_carried_digest() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let upstream = Registry::start(&ws.path("upstream"), None);
    let multi = push_two_platform_index(&upstream, &ws.path("oci-src"), "test/multi", "v1");
    let reference = format!("{}/test/multi:v1", upstream.host());
    make_bundle(
        &ws,
        std::slice::from_ref(&reference),
        "platforms: [linux/amd64]\n",
    );
    let inspected = inspect_json(&ws, "b.bundle.tar.zst");
    let carried = inspected["artifacts"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        carried,
        multi.digest(),
        "the bundle's index is not filtered"
    );

    // A plain-HTTP site registry without auth.
    let site = Registry::start(&ws.path("site-registry"), None);
    let host = site.host();
    let report = report(&install_plain(&ws, &host));
    let entry = report_image(&report, &format!("{host}/test/multi:v1"));
    assert_eq!(entry["digest"], format!("sha256:{carried}"), "{entry:#}");
    assert_eq!(
        entry["upstream_digest"],
        format!("sha256:{}", multi.digest()),
        "{entry:#}"
    );
    assert_eq!(entry["status"], "pushed", "{entry:#}");
    assert_eq!(counter(&report, "manifests_pushed"), 2, "{report:#}");

    // The tag serves the carried (filtered) index, listing the amd64 image only.
    let served = site.raw_manifest("test/multi", "v1");
    assert_eq!(sha256_bytes(&served), carried);
    let index: serde_json::Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index:#}"
    );
    assert_eq!(
        index["manifests"][0]["digest"],
        format!("sha256:{}", sha256_bytes(&multi.amd))
    );
    // The amd64 image is all there; nothing of the arm64 one is.
    let amd = format!("sha256:{}", sha256_bytes(&multi.amd));
    let arm = format!("sha256:{}", sha256_bytes(&multi.arm));
    assert_eq!(site.manifest_status("test/multi", &amd), 200);
    assert_eq!(site.manifest_status("test/multi", &arm), 404);
    for hex in layers(&multi.amd).iter().chain([&config(&multi.amd)]) {
        assert_eq!(site.blob_status("test/multi", hex), 200, "amd64 blob {hex}");
    }
    for hex in layers(&multi.arm).iter().chain([&config(&multi.arm)]) {
        assert_eq!(site.blob_status("test/multi", hex), 404, "arm64 blob {hex}");
        assert!(!site.blob_file(hex).exists(), "arm64 blob {hex} stored");
    }
    site.pull("test/multi", "v1", &ws.path("pulled"), "multi");
}

#[test]
fn a_tampered_blob_in_the_bundle_is_exit_3_naming_its_entry_and_no_tag_is_pushed() {
    let ws = Workspace::new();
    let up = upstream(&ws, false, "");
    let app = &up.images[0];
    let layer = layers(&app.raw)[1].clone();
    let entry_path = format!("oci/blobs/sha256/{layer}");

    // The same signed index, one byte of the app's own layer flipped.
    flip_entry_byte(
        &ws.path("b.bundle.tar.zst"),
        &entry_path,
        &ws.path("t.bundle.tar.zst"),
    );
    run_bundle_in(
        ws.root(),
        &["verify", "t.bundle.tar.zst", "--pubkey", "site.pub"],
        &[],
    )
    .assert_code(3)
    .assert_stderr_contains(&entry_path);

    let site = tls_site(&ws);
    let run = install_into(&ws, &site, "t.bundle.tar.zst", PASSWORD);
    run.assert_code(3)
        .assert_stderr_contains("verification failed")
        .assert_stderr_contains(&entry_path);

    // No tag and no manifest anywhere; the damaged blob was not stored.
    for image in &up.images {
        assert_eq!(
            site.tags(&image.repo),
            Vec::<String>::new(),
            "{}",
            image.repo
        );
        assert_eq!(
            site.manifest_status(&image.repo, &format!("sha256:{}", image.digest())),
            404
        );
    }
    assert_eq!(site.blob_status("test/app", &layer), 404);
    let log = site.access_log(UA);
    assert!(
        !log.iter()
            .any(|(r, _)| r.starts_with("PUT ") && r.contains("/manifests/")),
        "{log:#?}"
    );
}

#[test]
fn registry_failures_are_exit_1_naming_the_registry_before_anything_moves() {
    let ws = Workspace::new();
    let up = upstream(&ws, false, "");

    // Images and no destination for them: a usage error.
    install(&ws, "b.bundle.tar.zst", &[], None)
        .assert_code(2)
        .assert_stderr_contains("--registry");

    // A wrong password: refused at pre-flight, named, never printed; nothing written.
    let site = tls_site(&ws);
    let host = site.host();
    let wrong = "not-the-Pa55word";
    let run = install_into(&ws, &site, "b.bundle.tar.zst", wrong);
    run.assert_code(1)
        .assert_stderr_contains("authentication failed")
        .assert_stderr_contains(&host);
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong));
    let log = site.access_log(UA);
    assert!(!log.is_empty(), "the registry was not asked");
    assert!(
        log.iter()
            .all(|(r, _)| !r.starts_with("PUT ") && !r.starts_with("PATCH ")),
        "{log:#?}"
    );
    for image in &up.images {
        assert_eq!(site.tags(&image.repo), Vec::<String>::new());
    }

    // Without the CA, the site registry's certificate is not trusted.
    install(
        &ws,
        "b.bundle.tar.zst",
        &[
            "--registry",
            &host,
            "--registry-user",
            USER,
            "--retries",
            "0",
        ],
        Some(PASSWORD),
    )
    .assert_code(1)
    .assert_stderr_contains(&host);

    // A registry that is gone: its port refuses connections.
    let gone = Registry::start(&ws.path("gone-registry"), None);
    let gone_host = gone.host();
    drop(gone);
    let start = Instant::now();
    install(
        &ws,
        "b.bundle.tar.zst",
        &[
            "--registry",
            &gone_host,
            "--plain-http",
            "--retries",
            "0",
            "--timeout",
            "5",
        ],
        None,
    )
    .assert_code(1)
    .assert_stderr_contains(&gone_host);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );

    // A registry that answers 500 to everything: retried once, then exit 1 in seconds.
    let failing = FailingServer::start();
    let start = Instant::now();
    install(
        &ws,
        "b.bundle.tar.zst",
        &[
            "--registry",
            &failing.host(),
            "--plain-http",
            "--retries",
            "1",
            "--timeout",
            "5",
        ],
        None,
    )
    .assert_code(1)
    .assert_stderr_contains(&failing.host())
    .assert_stderr_contains("500");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    let requests = failing.requests();
    assert_eq!(
        requests,
        ["GET /v2/ HTTP/1.1", "GET /v2/ HTTP/1.1"],
        "one try and one retry of the pre-flight"
    );
}

#[test]
fn an_install_killed_while_pushing_leaves_no_tag_and_a_rerun_converges() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let upstream = Registry::start(&ws.path("upstream"), None);
    let layout = ws.path("oci-src");
    // Two 40 MiB layers of incompressible bytes.
    build_image_with(&layout, None, "base", &random_bytes(40 << 20, 1));
    build_image_with(&layout, Some("base"), "v1", &random_bytes(40 << 20, 2));
    upstream.push(&layout, "v1", "test/big", None);
    let raw = upstream.raw_manifest("test/big", "v1");
    assert_eq!(layers(&raw).len(), 2);
    make_bundle(&ws, &[format!("{}/test/big:v1", upstream.host())], "");

    let site = Registry::start(&ws.path("site-registry"), None);
    let host = site.host();
    let root = ws.root().to_str().unwrap();
    let mut child = Command::new(bundle_bin())
        .args([
            "install",
            "b.bundle.tar.zst",
            "--pubkey",
            "site.pub",
            "--registry",
            &host,
            "--plain-http",
            "--jobs",
            "1",
        ])
        .current_dir(ws.root())
        .env("NO_COLOR", "1")
        .env("HOME", root)
        .env("XDG_RUNTIME_DIR", root)
        .stdin(Stdio::null())
        .stdout(fs::File::create(ws.path("killed.stdout")).unwrap())
        .stderr(fs::File::create(ws.path("killed.stderr")).unwrap())
        .spawn()
        .expect("spawn bundle install");
    // Kill it (SIGKILL) as soon as a blob's bytes are arriving in the registry.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "install ended ({status}) before a blob upload was seen:\n{}",
                fs::read_to_string(ws.path("killed.stderr")).unwrap_or_default()
            );
        }
        let uploading = site
            .upload_files()
            .iter()
            .any(|f| fs::metadata(f).is_ok_and(|m| m.len() > 0))
            || site
                .access_log(UA)
                .iter()
                .any(|(r, _)| r.starts_with("PATCH ") || r.starts_with("PUT "));
        if uploading {
            break;
        }
        assert!(Instant::now() < deadline, "no upload within 120 s");
        sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(site.tags("test/big"), Vec::<String>::new());
    assert_eq!(
        site.manifest_status("test/big", &format!("sha256:{}", sha256_bytes(&raw))),
        404
    );

    // Again, to the end.
    let report = report(&install_plain(&ws, &host));
    let entry = report_image(&report, &format!("{host}/test/big:v1"));
    assert_eq!(entry["status"], "pushed", "{entry:#}");
    assert_eq!(
        site.manifest_digest("test/big", "v1", None),
        sha256_bytes(&raw)
    );
    assert_eq!(site.tags("test/big"), ["v1"]);
    site.pull("test/big", "v1", &ws.path("pulled"), "big");
}

#[test]
fn two_images_with_one_name_after_the_host_is_dropped_are_exit_2_unless_keep_host() {
    let ws = Workspace::new();
    keygen(&ws.path("site"));
    let a = Registry::start(&ws.path("upstream-a"), None);
    let b = Registry::start(&ws.path("upstream-b"), None);
    build_image(&ws.path("oci-a"), "v1", "from a\n");
    build_image(&ws.path("oci-b"), "v1", "from b\n");
    a.push(&ws.path("oci-a"), "v1", "x/app", None);
    b.push(&ws.path("oci-b"), "v1", "x/app", None);
    let (digest_a, digest_b) = (
        a.manifest_digest("x/app", "v1", None),
        b.manifest_digest("x/app", "v1", None),
    );
    assert_ne!(digest_a, digest_b);
    let (ref_a, ref_b) = (
        format!("{}/x/app:v1", a.host()),
        format!("{}/x/app:v1", b.host()),
    );
    make_bundle(&ws, &[ref_a.clone(), ref_b.clone()], "");

    let site = Registry::start(&ws.path("site-registry"), None);
    let host = site.host();
    install_plain(&ws, &host)
        .assert_code(2)
        .assert_stderr_contains("same name")
        .assert_stderr_contains(&ref_a)
        .assert_stderr_contains(&ref_b)
        .assert_stderr_contains("--keep-host");
    let log = site.access_log(UA);
    assert_eq!(writes(&log), Vec::<&(String, u16)>::new(), "{log:#?}");
    assert!(log.iter().all(|(r, _)| !r.starts_with("PUT ")), "{log:#?}");
    assert_eq!(site.tags("x/app"), Vec::<String>::new());

    // With --keep-host, each under its upstream host (the port's ':' as '-').
    let report = report(&install(
        &ws,
        "b.bundle.tar.zst",
        &["--registry", &host, "--plain-http", "--keep-host"],
        None,
    ));
    for (upstream, digest) in [(&a, &digest_a), (&b, &digest_b)] {
        let repo = format!("127.0.0.1-{}/x/app", upstream.port);
        let entry = report_image(&report, &format!("{host}/{repo}:v1"));
        assert_eq!(
            entry["source"],
            format!("{}/x/app:v1@sha256:{digest}", upstream.host()),
            "{entry:#}"
        );
        assert_eq!(site.manifest_digest(&repo, "v1", None), *digest, "{repo}");
    }
    assert_eq!(site.tags("x/app"), Vec::<String>::new());
}

#[test]
fn with_a_web_root_the_kubespray_variables_point_at_the_registry() {
    let ws = Workspace::new();
    let up = upstream(&ws, false, "");
    for (tls, web) in [(true, "www-tls"), (false, "www-plain")] {
        let dir = ws.path(format!("site-registry-{web}"));
        let site = if tls {
            Registry::start_tls(&dir, None)
        } else {
            Registry::start(&dir, None)
        };
        let host = site.host();
        let ca = if tls {
            site.ca_path().display().to_string()
        } else {
            String::new()
        };
        let web_root = ws.mkdir(web);
        let mut args = vec![
            "--registry",
            &host,
            "--web-root",
            web_root.to_str().unwrap(),
            "--base-url",
            "http://files.site.test/",
        ];
        if tls {
            args.extend(["--registry-ca", ca.as_str()]);
        } else {
            args.push("--plain-http");
        }
        let report = report(&install(&ws, "b.bundle.tar.zst", &args, None));
        assert_eq!(report["registry"]["host"], host.as_str(), "{report:#}");
        assert_mirrors_upstream(&ws, &site, &up);

        let text = fs::read_to_string(web_root.join("kubespray-offline.yml")).unwrap();
        let vars: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("kubespray-offline.yml is not YAML: {e}\n{text}"));
        assert_eq!(
            vars["registry_host"].as_str(),
            Some(host.as_str()),
            "{text}"
        );
        for var in [
            "kube_image_repo",
            "gcr_image_repo",
            "github_image_repo",
            "docker_image_repo",
            "quay_image_repo",
        ] {
            assert_eq!(
                vars[var].as_str(),
                Some("{{ registry_host }}"),
                "{var}:\n{text}"
            );
        }
        let mirrors = vars["containerd_registries_mirrors"]
            .as_sequence()
            .unwrap_or_else(|| panic!("no containerd_registries_mirrors:\n{text}"));
        let ours = mirrors
            .iter()
            .find(|m| m["prefix"].as_str() == Some(host.as_str()))
            .unwrap_or_else(|| panic!("no mirror with prefix {host}:\n{text}"));
        let scheme = if tls { "https" } else { "http" };
        let hosts: Vec<&str> = ours["mirrors"]
            .as_sequence()
            .unwrap_or_else(|| panic!("no mirrors for {host}:\n{text}"))
            .iter()
            .map(|m| m["host"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(hosts, [format!("{scheme}://{host}")], "{text}");

        // The receipt names the registry and the images pushed.
        let receipt_path = web_root.join(".bundle/images-1.0.json");
        let receipt: serde_json::Value = serde_json::from_slice(
            &fs::read(&receipt_path).unwrap_or_else(|e| panic!("{}: {e}", receipt_path.display())),
        )
        .unwrap();
        let registry = &receipt["registry"];
        let registry_host = registry["host"].as_str().or(registry.as_str());
        assert_eq!(registry_host, Some(host.as_str()), "{receipt:#}");
        let images = receipt["images"]
            .as_array()
            .or(registry["images"].as_array())
            .unwrap_or_else(|| panic!("no images in the receipt:\n{receipt:#}"));
        let names: BTreeSet<&str> = images.iter().filter_map(|i| i["name"].as_str()).collect();
        let expected: BTreeSet<String> = up
            .images
            .iter()
            .map(|i| format!("{host}/{}:{}", i.repo, i.tag))
            .collect();
        assert_eq!(
            names,
            expected.iter().map(String::as_str).collect(),
            "{receipt:#}"
        );
    }
}

#[test]
fn an_oci_dir_alone_gets_a_layout_that_skopeo_reads_with_the_upstream_digests() {
    let ws = Workspace::new();
    let up = upstream(&ws, true, "");
    let out = ws.path("site-oci");
    let report = report(&install(
        &ws,
        "b.bundle.tar.zst",
        &["--oci-dir", out.to_str().unwrap()],
        None,
    ));
    let oci_dir = report["oci_dir"]
        .as_str()
        .unwrap_or_else(|| panic!("no oci_dir in the report:\n{report:#}"));
    assert_eq!(
        fs::canonicalize(oci_dir).unwrap(),
        fs::canonicalize(&out).unwrap()
    );
    assert!(out.join("oci-layout").is_file());

    // Every blob is where its digest says.
    let blobs = out.join("blobs/sha256");
    let mut count = 0;
    for entry in fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(sha256_file(entry.path()), name, "blob {name}");
        count += 1;
    }
    // 5 manifests (app, base, index, two children), 4 configs, 4 layers.
    assert_eq!(count, 13, "blobs in {}", blobs.display());

    // Each image is named in index.json, and skopeo reads it under that name with its
    // upstream digest.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), up.images.len(), "{index:#}");
    for image in &up.images {
        let digest = format!("sha256:{}", image.digest());
        let named = manifests
            .iter()
            .find(|m| m["digest"] == digest.as_str())
            .unwrap_or_else(|| panic!("{}:{} not in index.json: {index:#}", image.repo, image.tag));
        let name = named["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_else(|| panic!("no ref.name: {named:#}"));
        assert!(
            name.ends_with(&format!("{}:{}", image.repo, image.tag)),
            "{name}"
        );
        let raw = sh_ok(&format!(
            "skopeo inspect --raw 'oci:{}:{name}'",
            out.display()
        ));
        assert_eq!(sha256_bytes(&raw), image.digest(), "{name}");
        sh_ok(&format!(
            "skopeo copy --quiet --all 'oci:{}:{name}' 'oci:{}:{}'",
            out.display(),
            ws.path("copied").display(),
            image.repo.replace('/', "-")
        ));
    }
}

#[test]
fn a_token_auth_registry_gets_a_push_token_with_the_login() {
    let ws = Workspace::new();
    let up = upstream(&ws, false, "");
    let tokens = TokenServer::start(&ws.path("token"), Some((USER, PASSWORD)), "token");
    let site =
        Registry::start_with_token_auth(&ws.path("site-registry"), &tokens.realm(), tokens.cert());
    let host = site.host();
    let args = ["--registry", &host, "--plain-http", "--registry-user", USER];

    let run = install(&ws, "b.bundle.tar.zst", &args, Some(PASSWORD));
    assert_eq!(
        run.code,
        0,
        "{}\ntoken requests: {:#?}\nregistry log: {:#?}",
        run.stderr,
        tokens.take_requests(),
        site.access_log(UA)
    );
    let report = report(&run);
    let creds = format!("{USER}:{PASSWORD}");
    for image in &up.images {
        let entry = report_image(&report, &format!("{host}/{}:{}", image.repo, image.tag));
        assert_eq!(entry["status"], "pushed", "{entry:#}");
        assert_eq!(
            site.manifest_digest(&image.repo, &image.tag, Some(&creds)),
            image.digest()
        );
    }
    // Each repository was granted push, to the login, by the registry's token service.
    let requests = tokens.take_requests();
    for repo in ["test/app", "test/base"] {
        let push = requests.iter().find(|r| {
            r.params("scope").iter().any(|s| {
                s.strip_prefix(&format!("repository:{repo}:"))
                    .is_some_and(|actions| actions.split(',').any(|a| a == "push"))
            })
        });
        let push = push.unwrap_or_else(|| panic!("no push token for {repo}: {requests:#?}"));
        assert_eq!(push.params("service"), ["test-registry"], "{push:?}");
        assert_eq!(push.user.as_deref(), Some(USER), "{push:?}");
        assert_eq!(push.status, 200, "{push:?}");
    }

    // Several scopes (a cross-repository mount needs pull on the source repository) are
    // asked as repeated `scope` parameters, one scope each, as the token spec says.
    for request in &requests {
        for scope in request.params("scope") {
            assert!(
                !scope.contains(' '),
                "several scopes joined in one `scope` parameter: {scope:?}"
            );
        }
    }

    // A wrong password: the token service refuses; the error names the registry.
    let run = install(&ws, "b.bundle.tar.zst", &args, Some("wrong-pass"));
    run.assert_code(1)
        .assert_stderr_contains("authentication failed");
    assert!(!run.stderr.contains("wrong-pass"), "{}", run.stderr);
    run.assert_stderr_contains(&host);
}

/// A bundle of `test/a:v1` (one image) and `test/b:v1` (a two-platform index), and a site
/// registry (`settings`) that already holds an older `test/a:v1` and nothing of `test/b`.
struct Rollback {
    site: Registry,
    /// The digests of the site's `test/a:v1` before the install, and of the bundle's.
    old_a: String,
    new_a: String,
    b: TwoPlatformIndex,
}

fn rollback_setup(ws: &Workspace, settings: Settings) -> Rollback {
    keygen(&ws.path("site"));
    let upstream = Registry::start(&ws.path("upstream"), None);
    let layout = ws.path("oci-src");
    build_image(&layout, "v1", "a, new content\n");
    upstream.push(&layout, "v1", "test/a", None);
    let b = push_two_platform_index(&upstream, &layout, "test/b", "v1");
    let new_a = upstream.manifest_digest("test/a", "v1", None);
    make_bundle(
        ws,
        &[
            format!("{}/test/a:v1", upstream.host()),
            format!("{}/test/b:v1", upstream.host()),
        ],
        "",
    );
    drop(upstream);

    let site = Registry::start_configured(&ws.path("site-registry"), None, settings);
    let old = ws.path("oci-old");
    build_image(&old, "v1", "a, old content\n");
    site.push(&old, "v1", "test/a", None);
    let old_a = site.manifest_digest("test/a", "v1", None);
    assert_ne!(old_a, new_a);
    assert_eq!(site.tags("test/b"), Vec::<String>::new());
    Rollback {
        site,
        old_a,
        new_a,
        b,
    }
}

/// A proxy in front of `site` that answers every `PUT` of `test/b:v1` (the index under its
/// tag, the last manifest the install pushes) 500, and the install through it, retried
/// once: exit 1 naming the registry (the proxy) and the failed push.
fn install_failing_b_tag(ws: &Workspace, site: &Registry) -> (FaultProxy, Run) {
    let b_tag = "/v2/test/b/manifests/v1";
    let proxy = FaultProxy::start(site.port, vec![Fault::every("PUT", b_tag, 500)]);
    let host = proxy.host();
    let run = install(
        ws,
        "b.bundle.tar.zst",
        &["--registry", &host, "--plain-http", "--retries", "1"],
        None,
    );
    run.assert_code(1)
        .assert_stderr_contains(&host)
        .assert_stderr_contains("pushing a manifest in test/b")
        .assert_stderr_contains("HTTP 500")
        .assert_stderr_contains("gave up after 2 attempts");
    // The tag's PUT was tried and retried, both answered by the proxy; everything else,
    // uploads included, went through it to the registry.
    assert_eq!(
        proxy.injected(),
        [format!("PUT {b_tag}"), format!("PUT {b_tag}")],
        "{:#?}",
        proxy.requests()
    );
    let forwarded = proxy.requests();
    for wanted in [
        "PATCH /v2/test/a/blobs/uploads/",
        "PUT /v2/test/a/manifests/v1",
    ] {
        assert!(
            forwarded
                .iter()
                .any(|(r, s)| r.starts_with(wanted) && *s < 300),
            "no {wanted} through the proxy: {forwarded:#?}"
        );
    }
    (proxy, run)
}

#[test]
fn a_failed_tag_push_puts_the_moved_tag_back_and_deletes_the_manifests_it_added() {
    let ws = Workspace::new();
    let Rollback {
        site,
        old_a,
        new_a,
        b,
    } = rollback_setup(&ws, Settings::default());
    let (proxy, run) = install_failing_b_tag(&ws, &site);
    run.assert_stderr_contains(&format!(
        "no tag or manifest on {} was changed",
        proxy.host()
    ));
    assert!(
        !run.stderr.contains("could not be"),
        "nothing failed to undo: {}",
        run.stderr
    );

    // test/a:v1 was moved to the new image, then put back; test/b has no tag.
    let log = site.access_log(UA);
    let puts_of_a = log
        .iter()
        .filter(|(r, s)| r == "PUT /v2/test/a/manifests/v1" && *s == 201)
        .count();
    assert_eq!(puts_of_a, 2, "moved, then put back: {log:#?}");
    assert_eq!(site.manifest_digest("test/a", "v1", None), old_a);
    assert_eq!(site.tags("test/a"), ["v1"]);
    assert_eq!(site.tags("test/b"), Vec::<String>::new());

    // Every manifest the install added is deleted; the old one of test/a stays.
    assert_eq!(
        site.manifest_status("test/a", &format!("sha256:{old_a}")),
        200
    );
    let added = [
        ("test/a", new_a.clone()),
        ("test/b", sha256_bytes(&b.amd)),
        ("test/b", sha256_bytes(&b.arm)),
    ];
    for (repo, digest) in &added {
        let reference = format!("sha256:{digest}");
        assert_eq!(
            site.manifest_status(repo, &reference),
            404,
            "{repo}@{reference}"
        );
        assert!(
            log.iter().any(
                |(r, s)| *r == format!("DELETE /v2/{repo}/manifests/{reference}") && *s == 202
            ),
            "{repo}@{reference} not deleted: {log:#?}"
        );
    }
    let index = format!("sha256:{}", b.digest());
    assert_eq!(site.manifest_status("test/b", &index), 404);
    // Nothing was deleted that the install had not tried to add (the index, whose PUT
    // never landed, may be asked too: 404).
    for (request, status) in log.iter().filter(|(r, _)| r.starts_with("DELETE ")) {
        let digest = request.rsplit_once("/manifests/sha256:").map(|(_, d)| d);
        let added = added.iter().any(|(_, d)| Some(d.as_str()) == digest);
        let index = *request == format!("DELETE /v2/test/b/manifests/{index}") && *status == 404;
        let preflight = request.contains("/blobs/uploads/");
        assert!(added || index || preflight, "{request}: {log:#?}");
    }
}

#[test]
fn a_registry_without_deletes_gets_its_tag_back_and_the_new_manifests_are_named() {
    let ws = Workspace::new();
    let Rollback {
        site,
        old_a,
        new_a,
        b,
    } = rollback_setup(
        &ws,
        Settings {
            no_deletes: true,
            ..Settings::default()
        },
    );
    let (proxy, run) = install_failing_b_tag(&ws, &site);
    let host = proxy.host();
    run.assert_stderr_contains("these new manifests could not be deleted");
    for (repo, digest) in [
        ("test/a", new_a.as_str()),
        ("test/b", sha256_bytes(&b.amd).as_str()),
        ("test/b", sha256_bytes(&b.arm).as_str()),
    ] {
        run.assert_stderr_contains(&format!("{host}/{repo}@sha256:{digest}"));
        // Still there, untagged.
        assert_eq!(site.manifest_status(repo, &format!("sha256:{digest}")), 200);
    }
    // test/a:v1 was put back, and test/b:v1 never landed: no tag is listed; nor is the
    // index, whose PUT never landed either (its DELETE is refused like the others, but it
    // is not there).
    assert_eq!(
        site.manifest_status("test/b", &format!("sha256:{}", b.digest())),
        404
    );
    assert!(
        !run.stderr.contains(&b.digest()),
        "the index that never landed is named: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("could not be put back")
            && !run.stderr.contains(&format!("{host}/test/b:v1"))
            && !run.stderr.contains(&format!("{host}/test/a:v1")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("was changed"), "{}", run.stderr);
    assert_eq!(site.manifest_digest("test/a", "v1", None), old_a);
    assert_eq!(site.tags("test/a"), ["v1"]);
    assert_eq!(site.tags("test/b"), Vec::<String>::new());
}

#[test]
fn an_upload_location_over_plain_http_behind_tls_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    upstream(&ws, false, "");
    // A TLS registry whose http.host says http://: its upload Locations do too.
    let site = Registry::start_configured(
        &ws.path("site-registry"),
        None,
        Settings {
            tls: true,
            host_scheme: Some("http"),
            ..Settings::default()
        },
    );
    let host = site.host();
    let ca = site.ca_path();
    let run = install(
        &ws,
        "b.bundle.tar.zst",
        &["--registry", &host, "--registry-ca", ca.to_str().unwrap()],
        None,
    );
    run.assert_code(1)
        .assert_stderr_contains(&host)
        .assert_stderr_contains(&format!("http://{host}/v2/"))
        .assert_stderr_contains("which is not https")
        .assert_stderr_contains("X-Forwarded-Proto");
    let log = site.access_log(UA);
    assert!(
        log.iter()
            .any(|(r, s)| r.starts_with("POST ") && r.contains("/blobs/uploads/") && *s == 202),
        "no upload session was opened: {log:#?}"
    );
    assert!(
        log.iter()
            .all(|(r, _)| !r.starts_with("PUT ") && !r.starts_with("PATCH ")),
        "{log:#?}"
    );
    assert_eq!(site.tags("test/app"), Vec::<String>::new());
}

#[test]
fn an_oci_dir_with_a_broken_index_json_is_refused_and_left_as_it_was() {
    let ws = Workspace::new();
    upstream(&ws, false, "");
    let out = ws.path("site-oci");
    sh_ok(&format!(
        "skopeo copy --quiet 'oci:{}:base' 'oci:{}:kept'",
        ws.path("oci-src").display(),
        out.display()
    ));
    let index = out.join("index.json");
    let bytes = fs::read(&index).unwrap();
    fs::write(&index, &bytes[..bytes.len() / 2]).unwrap();
    let before = tree_snapshot(&out);

    let run = install(
        &ws,
        "b.bundle.tar.zst",
        &["--oci-dir", out.to_str().unwrap()],
        None,
    );
    run.assert_code(1)
        .assert_stderr_contains(&index.display().to_string())
        .assert_stderr_contains("not an OCI image index")
        .assert_stderr_contains("nothing was installed");
    let after = tree_snapshot(&out);
    assert!(before == after, "{}", snapshot_diff(&before, &after));

    // The OCI directory as the web root too: a usage error, nothing written.
    let web_before = tree_snapshot(&out);
    install(
        &ws,
        "b.bundle.tar.zst",
        &[
            "--oci-dir",
            out.to_str().unwrap(),
            "--web-root",
            out.to_str().unwrap(),
        ],
        None,
    )
    .assert_code(2)
    .assert_stderr_contains("is the web root");
    let web_after = tree_snapshot(&out);
    assert!(
        web_before == web_after,
        "{}",
        snapshot_diff(&web_before, &web_after)
    );
}

#[test]
fn a_manifest_push_answered_400_is_not_retried_and_one_answered_500_once_is() {
    let ws = Workspace::new();
    let Rollback {
        site,
        old_a,
        new_a,
        b,
    } = rollback_setup(&ws, Settings::default());
    let b_tag = "/v2/test/b/manifests/v1";
    let install_via = |host: &str| {
        install(
            &ws,
            "b.bundle.tar.zst",
            &["--registry", host, "--plain-http", "--retries", "1"],
            None,
        )
    };

    // 400: a client error is the registry's answer, not retried; the install is undone.
    let proxy = FaultProxy::start(site.port, vec![Fault::every("PUT", b_tag, 400)]);
    let host = proxy.host();
    install_via(&host)
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "{host}: pushing v1 in test/b was answered HTTP 400"
        ))
        .assert_stderr_contains(&format!("no tag or manifest on {host} was changed"));
    assert_eq!(proxy.injected(), [format!("PUT {b_tag}")]);
    assert_eq!(site.manifest_digest("test/a", "v1", None), old_a);
    assert_eq!(site.tags("test/b"), Vec::<String>::new());
    drop(proxy);

    // 500 to the first try only: the retry lands, and the install (a re-run after the
    // rollback) ends with both tags on the bundle's images.
    let proxy = FaultProxy::start(site.port, vec![Fault::nth("PUT", b_tag, 1, 500)]);
    let host = proxy.host();
    let report = report(&install_via(&host));
    assert_eq!(proxy.injected(), [format!("PUT {b_tag}")]);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|(r, s)| *r == format!("PUT {b_tag}") && *s == 201),
        "{:#?}",
        proxy.requests()
    );
    for (name, digest) in [("test/a:v1", &new_a), ("test/b:v1", &b.digest())] {
        let entry = report_image(&report, &format!("{host}/{name}"));
        assert_eq!(entry["status"], "pushed", "{entry:#}");
        assert_eq!(entry["digest"], format!("sha256:{digest}"), "{entry:#}");
    }
    assert_eq!(site.manifest_digest("test/a", "v1", None), new_a);
    assert_eq!(site.manifest_digest("test/b", "v1", None), b.digest());
    site.pull("test/b", "v1", &ws.path("pulled"), "b");
}
