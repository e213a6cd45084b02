//! `bundle receipt export` (issue 18, part 1): bundles installed by the real binary into a
//! web root (and a real `docker-registry` on 127.0.0.1), then exported. The export lists
//! what the receipts record and the site still holds: files hashed again from the web root
//! (never through a link), manifests and blobs found in the registry. Output is
//! byte-identical for the same site; what is missing or changed is left out and named on
//! stderr; bad input exits 1 or 2 naming what is wrong.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::install::{Built, Urls, install, make_bundle, make_world_readable, small_bundle};
use common::registry::{
    Registry, build_image, build_image_on, create_images, images_manifest, lock_images,
    push_two_platform_index,
};
use common::*;
use serde_json::Value;

/// The site registry's login.
const USER: &str = "site-admin";
const PASSWORD: &str = "Pa55-w0rd-site";

/// `bundle receipt export --web-root WEB -o OUT EXTRA…` in the workspace, with HOME and
/// XDG_RUNTIME_DIR there (no auth file of the machine's user may leak into a test).
fn export(ws: &Workspace, web: &Path, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        "receipt".as_ref(),
        "export".as_ref(),
        "--web-root".as_ref(),
        web.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let root = ws.root().to_str().unwrap();
    let mut all = vec![("HOME", root), ("XDG_RUNTIME_DIR", root)];
    all.extend_from_slice(envs);
    run_bundle_in(ws.root(), &args, &all)
}

/// A successful export's JSON, parsed.
#[track_caller]
fn exported(ws: &Workspace, web: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (Run, Value) {
    let out = ws.path("site.json");
    let run = export(ws, web, &out, extra, envs);
    run.assert_ok();
    let text = fs::read_to_string(&out).expect("the export was written");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the export is not JSON: {e}\n{text}"));
    (run, value)
}

/// The export's files as (path, sha256, size).
fn files(export: &Value) -> Vec<(String, String, u64)> {
    export["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files list: {export:#}"))
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["sha256"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// (path, sha256 of the file on disk, size on disk) of `paths` in `web`, sorted.
fn on_disk<'a>(
    web: &Path,
    paths: impl IntoIterator<Item = &'a String>,
) -> Vec<(String, String, u64)> {
    let mut out: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let file = web.join(p);
            let size = fs::metadata(&file).unwrap().len();
            (p.clone(), sha256_file(&file), size)
        })
        .collect();
    out.sort();
    out
}

/// The export's `bundles`, with the receipt's digests beside them.
#[track_caller]
fn assert_bundles(export: &Value, web: &Path, names: &[(&str, &str)]) {
    let bundles = export["bundles"].as_array().expect("bundles");
    assert_eq!(bundles.len(), names.len(), "{export:#}");
    for (b, (name, version)) in bundles.iter().zip(names) {
        let receipt: Value = serde_json::from_slice(
            &fs::read(web.join(format!(".bundle/{name}-{version}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(b["name"], *name, "{export:#}");
        assert_eq!(b["version"], *version, "{export:#}");
        for key in ["index_sha256", "manifest_sha256"] {
            assert_eq!(b[key], receipt[key], "{key} of {name}: {export:#}");
            assert_eq!(b[key].as_str().map(str::len), Some(64), "{export:#}");
        }
    }
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Two bundles whose files map to fixed web-root paths (`files/example.org/…`), both
/// carrying `bin/tool` with other bytes; the second installed last.
fn two_bundles(ws: &Workspace) -> (Built, Built) {
    let first = make_bundle(
        ws,
        "first",
        "first",
        "1.0.0",
        &[
            ("example.org/bin/tool".into(), random_bytes(120_000, 1)),
            ("example.org/etc/a.txt".into(), b"first bundle\n".to_vec()),
        ],
        Urls::CanonicalViaMirrors,
    );
    let second = make_bundle(
        ws,
        "second",
        "second",
        "2.0.0",
        &[
            ("example.org/bin/tool".into(), random_bytes(90_000, 2)),
            ("example.org/etc/b.txt".into(), b"second bundle\n".to_vec()),
        ],
        Urls::CanonicalViaMirrors,
    );
    (first, second)
}

#[test]
fn export_lists_every_installed_bundle_and_file_with_the_sha256_on_disk() {
    let ws = Workspace::new();
    let (first, second) = two_bundles(&ws);
    let web = ws.mkdir("web");
    install(&first.bundle, &first.pubkey, &web, &[]).assert_ok();
    install(&second.bundle, &second.pubkey, &web, &[]).assert_ok();

    let (run, export) = exported(&ws, &web, &[], &[]);
    assert_eq!(export["airgap_bundle_site"], 1, "{export:#}");
    assert_bundles(&export, &web, &[("first", "1.0.0"), ("second", "2.0.0")]);
    // Every recorded path once; the tool both bundles carry with the bytes the disk has
    // (the second bundle's), and nothing reported left out.
    let paths: BTreeSet<&String> = first.files.keys().chain(second.files.keys()).collect();
    assert_eq!(paths.len(), 3);
    assert_eq!(files(&export), on_disk(&web, paths), "{export:#}");
    let tool = &files(&export)[0];
    assert_eq!(tool.0, "files/example.org/bin/tool");
    assert_eq!(tool.1, second.files["files/example.org/bin/tool"].1);
    assert_ne!(tool.1, first.files["files/example.org/bin/tool"].1);
    assert!(!run.stderr.contains("left out"), "{}", run.stderr);
    assert_eq!(export["registries"], serde_json::json!([]), "{export:#}");

    // The same site gives the same bytes, also after a re-install rewrote a receipt (with
    // a new install time).
    let bytes = fs::read(ws.path("site.json")).unwrap();
    assert!(bytes.ends_with(b"}\n"));
    exported(&ws, &web, &[], &[]);
    assert_eq!(fs::read(ws.path("site.json")).unwrap(), bytes);
    // Re-installing the second bundle changes nothing but its receipt's install time.
    let receipt = web.join(".bundle/second-2.0.0.json");
    let before = fs::read(&receipt).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    install(&second.bundle, &second.pubkey, &web, &[]).assert_ok();
    assert_ne!(
        fs::read(&receipt).unwrap(),
        before,
        "the receipt was not rewritten"
    );
    exported(&ws, &web, &[], &[]);
    assert_eq!(fs::read(ws.path("site.json")).unwrap(), bytes);

    // Re-installing the first bundle puts its tool back: now that one is listed.
    install(&first.bundle, &first.pubkey, &web, &[]).assert_ok();
    let (run, again) = exported(&ws, &web, &[], &[]);
    let tool = &files(&again)[0];
    assert_eq!(tool.0, "files/example.org/bin/tool");
    assert_eq!(tool.1, first.files["files/example.org/bin/tool"].1);
    assert_eq!(files(&again).len(), 3, "{again:#}");
    assert!(!run.stderr.contains("left out"), "{}", run.stderr);
}

#[test]
fn files_missing_changed_or_replaced_by_a_symlink_are_left_out_and_named() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "up", "site", 40);
    let web = ws.mkdir("web");
    install(&built.bundle, &built.pubkey, &web, &[]).assert_ok();
    let host = &built.host;
    let path = |rel: &str| format!("files/{host}/{rel}");

    // Positive control: all four are listed.
    let (_, before) = exported(&ws, &web, &[], &[]);
    let all: Vec<String> = built.files.keys().cloned().collect();
    assert_eq!(files(&before), on_disk(&web, &all), "{before:#}");
    assert_eq!(all.len(), 4);

    // kubeadm: one byte changed, same size. kubectl: deleted. readme.txt: a symlink to
    // a copy with the very bytes recorded (following it would list it). cni/: the
    // directory replaced by a symlink to a copy of it.
    let outside = ws.mkdir("outside");
    site::flip_byte(&web.join(path("bin/kubeadm")), 1000);
    fs::remove_file(web.join(path("bin/kubectl"))).unwrap();
    let readme = web.join(path("etc/readme.txt"));
    fs::copy(&readme, outside.join("readme.txt")).unwrap();
    fs::remove_file(&readme).unwrap();
    symlink(outside.join("readme.txt"), &readme).unwrap();
    let cni = web.join(path("cni"));
    fs::create_dir(outside.join("cni")).unwrap();
    fs::rename(
        cni.join("cni-plugins.tgz"),
        outside.join("cni/cni-plugins.tgz"),
    )
    .unwrap();
    fs::remove_dir(&cni).unwrap();
    symlink(outside.join("cni"), &cni).unwrap();

    let (run, after) = exported(&ws, &web, &[], &[]);
    assert_eq!(files(&after), Vec::new(), "{after:#}");
    assert_bundles(&after, &web, &[("site", "1.0.0")]);
    run.assert_stderr_contains(
        "4 files recorded in receipts are missing or changed and were left out",
    );
    for (rel, why) in [
        ("bin/kubeadm", "changed"),
        ("bin/kubectl", "missing"),
        ("etc/readme.txt", "is a symlink"),
        ("cni/cni-plugins.tgz", "is a symlink"),
    ] {
        run.assert_stderr_contains(&path(rel));
        let named = format!("{} (", path(rel));
        let at = run.stderr.find(&named).unwrap();
        assert!(
            run.stderr[at..].split(')').next().unwrap().contains(why),
            "{rel} not said to be {why}:\n{}",
            run.stderr
        );
    }

    // One file put back as it was: listed again, the others still named.
    fs::write(web.join(path("bin/kubectl")), random_bytes(200_000, 41)).unwrap();
    let (run, back) = exported(&ws, &web, &[], &[]);
    assert_eq!(
        files(&back),
        on_disk(&web, &[path("bin/kubectl")]),
        "{back:#}"
    );
    run.assert_stderr_contains("3 files recorded in receipts are missing or changed");
}

#[test]
fn a_receipt_that_does_not_parse_or_is_a_symlink_is_an_error_naming_it() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "up", "site", 50);
    let web = ws.mkdir("web");
    install(&built.bundle, &built.pubkey, &web, &[]).assert_ok();
    exported(&ws, &web, &[], &[]);
    let out = ws.path("refused.json");

    let broken = web.join(".bundle/broken-1.0.json");
    fs::write(&broken, "this is not JSON\n").unwrap();
    let run = export(&ws, &web, &out, &[], &[]);
    run.assert_code(1)
        .assert_stderr_contains(".bundle/broken-1.0.json")
        .assert_stderr_contains("not a receipt");
    assert!(!out.exists(), "an export was written");

    // JSON, but not a receipt.
    fs::write(&broken, "{\"name\": \"x\"}\n").unwrap();
    export(&ws, &web, &out, &[], &[])
        .assert_code(1)
        .assert_stderr_contains(".bundle/broken-1.0.json");
    fs::remove_file(&broken).unwrap();

    // A valid receipt reached through a link is not read.
    let copy = ws.path("receipt-copy.json");
    fs::copy(web.join(".bundle/site-1.0.0.json"), &copy).unwrap();
    symlink(&copy, web.join(".bundle/linked-1.0.json")).unwrap();
    export(&ws, &web, &out, &[], &[])
        .assert_code(1)
        .assert_stderr_contains(".bundle/linked-1.0.json");
    assert!(!out.exists(), "an export was written");
    fs::remove_file(web.join(".bundle/linked-1.0.json")).unwrap();

    // Not a `.json`: not a receipt, ignored.
    fs::write(web.join(".bundle/notes.txt"), "kept by the operator\n").unwrap();
    exported(&ws, &web, &[], &[]);
}

#[test]
fn a_web_root_without_receipts_exports_empty_lists() {
    let ws = Workspace::new();
    let web = ws.mkdir("web");
    fs::create_dir_all(web.join("files/example.org")).unwrap();
    fs::write(
        web.join("files/example.org/untracked"),
        "no receipt names me\n",
    )
    .unwrap();
    let (run, empty) = exported(&ws, &web, &[], &[]);
    assert_eq!(
        empty,
        serde_json::json!({"airgap_bundle_site": 1, "bundles": [], "files": [], "registries": []})
    );
    run.assert_stderr_contains("no receipts");

    // No such web root: a usage error.
    export(&ws, &ws.path("nowhere"), &ws.path("x.json"), &[], &[])
        .assert_code(2)
        .assert_stderr_contains("nowhere");
}

#[test]
fn an_export_while_an_install_holds_the_web_root_is_refused() {
    // An install holds an exclusive flock on the web root for its whole run; the export
    // takes a shared one, so it never reads a web root an install is changing. (`flock
    // --no-fork` holds it in the process that is killed, by its pid, afterwards.)
    require_tool("flock");
    let ws = Workspace::new();
    let web = ws.mkdir("web");
    let out = ws.path("site.json");
    let mut holder = Command::new("flock")
        .args([
            "--exclusive",
            "--no-fork",
            web.to_str().unwrap(),
            "sleep",
            "60",
        ])
        .spawn()
        .expect("start flock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Command::new("flock")
        .args(["--shared", "--nonblock", web.to_str().unwrap(), "true"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = export(&ws, &web, &out, &[], &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    run.assert_code(1)
        .assert_stderr_contains("an install is running");
    assert!(!out.exists(), "an export was written");
    // The lock released: the export runs.
    exported(&ws, &web, &[], &[]);
}

#[test]
fn registry_flags_without_a_registry_or_a_bad_registry_are_usage_errors() {
    let ws = Workspace::new();
    let web = ws.mkdir("web");
    let out = ws.path("site.json");
    export(
        &ws,
        &web,
        &out,
        &["--registry-user", USER],
        &[("BUNDLE_REGISTRY_PASSWORD", "x")],
    )
    .assert_code(2)
    .assert_stderr_contains("--registry-user needs --registry");
    export(
        &ws,
        &web,
        &out,
        &["--registry", "http://127.0.0.1:5000"],
        &[],
    )
    .assert_code(2)
    .assert_stderr_contains("--registry http://127.0.0.1:5000");
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------
// Registries
// ---------------------------------------------------------------------------

/// (repository, digest) of manifests and (digest, size) of blobs in a registry, sorted.
type RegistryContent = (Vec<(String, String)>, Vec<(String, u64)>);

/// A workspace whose web root holds an installed bundle of one file and three images
/// (`test/app:v1` on top of `test/base:base`, sharing its layer, and `test/multi:v1`, an
/// index of two platforms), pushed into a site registry with a basic login.
struct ImageSite {
    ws: Workspace,
    web: PathBuf,
    site: Registry,
    /// The file's web-root path.
    file: String,
}

impl ImageSite {
    fn new() -> ImageSite {
        let ws = Workspace::new();
        keygen(&ws.path("site"));
        let upstream = Registry::start(&ws.path("upstream"), None);
        let layout = ws.path("oci-src");
        build_image(&layout, "base", "base\n");
        build_image_on(&layout, Some("base"), "v1", "app\n");
        upstream.push(&layout, "base", "test/base", None);
        upstream.push(&layout, "v1", "test/app", None);
        push_two_platform_index(&upstream, &layout, "test/multi", "v1");
        ws.write("www/f/tool", random_bytes(50_000, 7));
        make_world_readable(&ws.path("www"));
        let apache = Apache::start(&ws.path("www"));
        let refs: Vec<String> = ["test/app:v1", "test/base:base", "test/multi:v1"]
            .iter()
            .map(|r| format!("{}/{r}", upstream.host()))
            .collect();
        let files = format!("files:\n  - url: '{}'\n", apache.url("f/tool"));
        ws.write("m.yaml", images_manifest(&refs, &files));
        lock_images(&ws, &["--plain-http"], &[]).assert_ok();
        create_images(&ws, "b.bundle.tar.zst").assert_ok();
        let file = format!("files/127.0.0.1:{}/f/tool", apache.port);
        drop(apache);
        drop(upstream);

        let site = Registry::start(&ws.path("site-registry"), Some((USER, PASSWORD)));
        let web = ws.mkdir("web");
        let root = ws.root().to_str().unwrap();
        run_bundle_in(
            ws.root(),
            &[
                "install",
                "b.bundle.tar.zst",
                "--pubkey",
                "site.pub",
                "--web-root",
                "web",
                "--registry",
                &site.host(),
                "--plain-http",
                "--registry-user",
                USER,
            ],
            &[
                ("HOME", root),
                ("XDG_RUNTIME_DIR", root),
                ("BUNDLE_REGISTRY_PASSWORD", PASSWORD),
            ],
        )
        .assert_ok();
        ImageSite {
            ws,
            web,
            site,
            file,
        }
    }

    /// `export --registry SITE --plain-http --registry-user USER` with `password`.
    fn export(&self, password: &str) -> Run {
        let host = self.site.host();
        export(
            &self.ws,
            &self.web,
            &self.ws.path("site.json"),
            &[
                "--registry",
                &host,
                "--plain-http",
                "--registry-user",
                USER,
                "--retries",
                "0",
            ],
            &[("BUNDLE_REGISTRY_PASSWORD", password)],
        )
    }

    fn exported(&self) -> (Run, Value) {
        let run = self.export(PASSWORD);
        run.assert_ok();
        let text = fs::read_to_string(self.ws.path("site.json")).unwrap();
        (run, serde_json::from_str(&text).unwrap())
    }

    /// (repository, manifest digest) of every manifest the site registry serves for the
    /// three images, the index's children included, and the (digest, size) of every blob
    /// those manifests name, as the registry serves them.
    fn served(&self) -> RegistryContent {
        let mut manifests = Vec::new();
        let mut blobs = Vec::new();
        for (repo, tag) in [
            ("test/app", "v1"),
            ("test/base", "base"),
            ("test/multi", "v1"),
        ] {
            let raw = self.site.raw_manifest(repo, tag);
            manifests.push((repo.to_string(), sha256_bytes(&raw)));
            let v: Value = serde_json::from_slice(&raw).unwrap();
            let images: Vec<Vec<u8>> = match v["manifests"].as_array() {
                Some(children) => children
                    .iter()
                    .map(|c| {
                        let digest = c["digest"].as_str().unwrap();
                        let child = self.site.raw_manifest(repo, digest);
                        assert_eq!(format!("sha256:{}", sha256_bytes(&child)), digest);
                        manifests.push((repo.to_string(), sha256_bytes(&child)));
                        child
                    })
                    .collect(),
                None => vec![raw],
            };
            for image in images {
                let v: Value = serde_json::from_slice(&image).unwrap();
                for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
                    let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
                    assert_eq!(self.site.blob_status(repo, hex), 200, "{repo} {hex}");
                    blobs.push((hex.to_string(), d["size"].as_u64().unwrap()));
                }
            }
        }
        manifests.sort();
        manifests.dedup();
        blobs.sort();
        blobs.dedup();
        (manifests, blobs)
    }

    /// `DELETE` on the site registry (with its login), which must succeed.
    fn delete(&self, path: &str) {
        output_ok(Command::new("curl").args([
            "-sSf",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            "-X",
            "DELETE",
            &format!("http://{}{path}", self.site.host()),
        ]));
    }
}

/// The export's registry entry for `host`: (manifests as (repository, digest), blobs as
/// (digest, size)).
fn registry_of(export: &Value, host: &str) -> RegistryContent {
    let registries = export["registries"].as_array().expect("registries");
    assert_eq!(registries.len(), 1, "{export:#}");
    let r = &registries[0];
    assert_eq!(r["host"], host, "{export:#}");
    let manifests = r["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["repository"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let blobs = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    (manifests, blobs)
}

#[test]
fn export_lists_the_manifests_and_blobs_the_registry_still_serves() {
    let s = ImageSite::new();
    let host = s.site.host();
    let (served_manifests, served_blobs) = s.served();
    // app, base, the index and its two children; 4 configs and 4 layers (app and base
    // share the base layer).
    assert_eq!((served_manifests.len(), served_blobs.len()), (5, 8));

    let (run, export) = s.exported();
    assert!(!run.stderr.contains("left out"), "{}", run.stderr);
    assert!(!run.stderr.contains(PASSWORD) && !run.stdout.contains(PASSWORD));
    assert_bundles(&export, &s.web, &[("images", "1.0")]);
    assert_eq!(
        files(&export),
        on_disk(&s.web, std::slice::from_ref(&s.file)),
        "{export:#}"
    );
    assert_eq!(
        registry_of(&export, &host),
        (served_manifests.clone(), served_blobs.clone())
    );
    let bytes = fs::read(s.ws.path("site.json")).unwrap();
    s.exported();
    assert_eq!(
        fs::read(s.ws.path("site.json")).unwrap(),
        bytes,
        "not byte-identical"
    );

    // Without --registry the registry is not looked at.
    let (_, web_only) = exported(&s.ws, &s.web, &[], &[]);
    assert_eq!(web_only["registries"], serde_json::json!([]));

    // The app's manifest deleted: it is left out with the blobs only it names (its config
    // and its own layer; the base layer stays, through the base image).
    let app = served_manifests
        .iter()
        .find(|(r, _)| r == "test/app")
        .unwrap()
        .1
        .clone();
    let app_raw = s.site.raw_manifest("test/app", "v1");
    let base_raw = s.site.raw_manifest("test/base", "base");
    let only_app: Vec<String> = common::registry::layers(&app_raw)
        .into_iter()
        .chain([common::registry::config(&app_raw)])
        .filter(|d| !common::registry::layers(&base_raw).contains(d))
        .collect();
    assert_eq!(only_app.len(), 2);
    s.delete(&format!("/v2/test/app/manifests/sha256:{app}"));
    // A blob of the base image deleted from its repository: left out too.
    let base_config = common::registry::config(&base_raw);
    s.delete(&format!("/v2/test/base/blobs/sha256:{base_config}"));

    let (run, after) = s.exported();
    let (manifests, blobs) = registry_of(&after, &host);
    let mut want_manifests = served_manifests.clone();
    want_manifests.retain(|(r, _)| r != "test/app");
    assert_eq!(manifests, want_manifests, "{after:#}");
    let mut want_blobs = served_blobs.clone();
    want_blobs.retain(|(d, _)| !only_app.contains(d) && *d != base_config);
    assert_eq!(blobs, want_blobs, "{after:#}");
    run.assert_stderr_contains(&format!(
        "registry {host}: 1 manifest recorded in receipts is gone and was left out with its blobs: test/app@sha256:{app}"
    ))
    .assert_stderr_contains(&format!(
        "registry {host}: 1 blob of the installed images is missing and was left out: test/base@sha256:{base_config}"
    ));
    // The web root's part is unchanged.
    assert_eq!(after["files"], export["files"]);
    assert_eq!(after["bundles"], export["bundles"]);
}

#[test]
fn an_unreachable_registry_or_a_refused_login_is_an_error_naming_the_registry() {
    let ws = Workspace::new();
    let web = ws.mkdir("web");
    let out = ws.path("site.json");

    // Nothing listens: exit 1 naming it, nothing written.
    let closed = format!("127.0.0.1:{}", free_port());
    let run = export(
        &ws,
        &web,
        &out,
        &[
            "--registry",
            &closed,
            "--plain-http",
            "--retries",
            "0",
            "--timeout",
            "5",
        ],
        &[],
    );
    run.assert_code(1).assert_stderr_contains(&closed);
    assert!(!out.exists(), "an export was written");

    // A registry that refuses the login: exit 1 naming it. The right one: exit 0, the
    // registry listed with nothing (no receipt records images pushed to it).
    let site = Registry::start(&ws.path("site-registry"), Some((USER, PASSWORD)));
    let host = site.host();
    let args = [
        "--registry",
        host.as_str(),
        "--plain-http",
        "--registry-user",
        USER,
        "--retries",
        "0",
    ];
    export(
        &ws,
        &web,
        &out,
        &args,
        &[("BUNDLE_REGISTRY_PASSWORD", "wrong")],
    )
    .assert_code(1)
    .assert_stderr_contains(&host)
    .assert_stderr_contains("authentication failed");
    assert!(!out.exists(), "an export was written");
    let (run, listed) = exported(&ws, &web, &args, &[("BUNDLE_REGISTRY_PASSWORD", PASSWORD)]);
    assert_eq!(
        listed["registries"],
        serde_json::json!([{"host": host, "blobs": [], "manifests": []}])
    );
    run.assert_stderr_contains(&format!(
        "registry {host}: no receipt records images pushed to it"
    ));
}
