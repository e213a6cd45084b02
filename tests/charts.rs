//! Helm charts end to end (issue 16, the chart half): real charts packaged by the test
//! (`Chart.yaml`, `values.yaml`, a template; stock `tar czf`, as `helm package` lays them
//! out) served from an `apache2` HTTP Helm repository with a generated `index.yaml`, and
//! Helm OCI artifacts pushed to a real `docker-registry`. `bundle lock` picks and pins the
//! charts, `create` carries them, `install` writes `charts/` and an `index.yaml` into a web
//! root served by a second apache2, checked against Helm's index schema with every URL
//! fetched over HTTP and compared with its digest, and pushes charts as Helm OCI artifacts
//! to a chart registry (a second `docker-registry`), read back with `skopeo inspect --raw`.
//! Bad input (versions not in the index, changed upstream charts, tampered bundles, missing
//! logins, a missing web root) is checked for its exit code and message. Everything
//! listens on 127.0.0.1; no helm binary is needed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use common::helm::{
    HELM_CONFIG, HELM_LAYER, chart_meta, check_served_repo, description, helm_manifest_parts,
    is_rfc3339, is_semver, package_chart, push_oci_chart, registry_blob, served_repo, write_index,
};
use common::install::{make_world_readable, names_starting};
use common::net::{gets, inspect_json};
use common::registry::{Registry, entry_paths};
use common::tamper::flip_entry_byte;
use common::*;

/// The charts of the upstream repository: (name, version, appVersion).
const UPSTREAM: &[(&str, &str, &str)] = &[
    ("demo", "1.1.0", "4.0.0"),
    ("demo", "1.2.0", "4.1.0"),
    ("demo", "1.2.5", "4.2.3"),
    ("demo", "1.3.0", "5.0.0"),
    ("other", "0.1.0", "0.9.1"),
];

/// The dependency demo 1.2.5 declares (its subchart packaged under `charts/common/`).
const DEMO_DEPENDENCY: &str = "dependencies:\n  - name: common\n    version: 2.1.0\n    repository: https://charts.example.org/library\n";

/// The basic login of the protected repository.
const REPO_USER: &str = "helm-reader";
const REPO_PASSWORD: &str = "Chart-Pa55-w0rd";

/// An upstream HTTP Helm repository: `<www>/charts/` served by apache2.
struct HelmRepo {
    apache: Apache,
    /// The directory served as `/charts/`.
    dir: PathBuf,
    /// (name, version) → the `.tgz` as served.
    charts: BTreeMap<(String, String), PathBuf>,
}

impl HelmRepo {
    /// The repository URL, as a manifest names it: `http://127.0.0.1:PORT/charts`.
    fn url(&self) -> String {
        self.apache.url("charts")
    }

    /// The served `.tgz` of `name` `version`.
    fn tgz(&self, name: &str, version: &str) -> &Path {
        self.charts
            .get(&(name.to_string(), version.to_string()))
            .unwrap_or_else(|| panic!("no {name} {version} upstream"))
    }
}

/// The charts of [`UPSTREAM`] packaged into `<tag>/www/charts/` with an `index.yaml` of
/// relative URLs, served by apache2 (with `auth`, every path under `/charts` needs that
/// basic login).
fn helm_repo(ws: &Workspace, tag: &str, auth: Option<(&str, &str)>) -> HelmRepo {
    let www = ws.mkdir(format!("{tag}/www"));
    let dir = ws.mkdir(format!("{tag}/www/charts"));
    let mut charts = BTreeMap::new();
    for (name, version, app) in UPSTREAM {
        let extra = if (*name, *version) == ("demo", "1.2.5") {
            DEMO_DEPENDENCY
        } else {
            ""
        };
        let tgz = package_chart(&dir, name, version, app, extra);
        charts.insert((name.to_string(), version.to_string()), tgz);
    }
    // The chart sources stay out of the served tree.
    fs::rename(dir.join("src"), ws.path(format!("{tag}/src"))).unwrap();
    let tgzs: Vec<PathBuf> = charts.values().cloned().collect();
    write_index(&dir, &tgzs, true, "");
    make_world_readable(&www);
    let apache = match auth {
        Some((user, password)) => Apache::start_with_basic_auth(&www, "/charts", user, password),
        None => Apache::start(&www),
    };
    HelmRepo {
        apache,
        dir,
        charts,
    }
}

/// A manifest called `name` (version 1.0.0) with the chart entries `charts` (flow maps).
fn manifest(name: &str, charts: &[String]) -> String {
    let mut m = format!("apiVersion: bundle/v1\nname: {name}\nversion: 1.0.0\ncharts:\n");
    for c in charts {
        m.push_str(&format!("  - {c}\n"));
    }
    m
}

/// A chart entry from an HTTP repository.
fn http_chart(repo: &str, name: &str, version: &str) -> String {
    format!("{{repo: '{repo}', name: {name}, version: '{version}'}}")
}

/// An OCI chart entry.
fn oci_chart(reference: &str) -> String {
    format!("{{ref: '{reference}'}}")
}

/// `HOME` in the workspace, so that no `~/.netrc`, auth file or cache of the machine's
/// user leaks into a test, then `envs`.
fn with_home<'a>(ws: &'a Workspace, envs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("HOME", ws.root().to_str().unwrap())];
    all.extend_from_slice(envs);
    all
}

/// `bundle lock MANIFEST -o OUT --cache cache EXTRA…` in the workspace.
fn lock(ws: &Workspace, manifest: &str, out: &str, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut args = vec!["lock", manifest, "-o", out, "--cache", "cache"];
    args.extend_from_slice(extra);
    run_bundle_in(ws.root(), &args, &with_home(ws, envs))
}

/// `bundle create LOCKED -o OUT --key site.key --cache CACHE EXTRA…` in the workspace,
/// with a fixed `SOURCE_DATE_EPOCH` (the site key made once).
fn create(
    ws: &Workspace,
    locked: &str,
    out: &str,
    cache: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Run {
    if !ws.path("site.key").exists() {
        keygen(&ws.path("site"));
    }
    let mut args = vec![
        "create", locked, "-o", out, "--key", "site.key", "--cache", cache,
    ];
    args.extend_from_slice(extra);
    let mut all = vec![("SOURCE_DATE_EPOCH", "1700000000")];
    all.extend_from_slice(envs);
    run_bundle_in(ws.root(), &args, &with_home(ws, &all))
}

/// `<tag>.yaml` with `charts`, locked into `<tag>.lock.yaml` and bundled into
/// `<tag>.bundle.tar.zst` (`extra` given to both `lock` and `create`); the bundle's name.
fn bundle_charts(ws: &Workspace, tag: &str, charts: &[String], extra: &[&str]) -> String {
    ws.write(
        format!("{tag}.yaml"),
        manifest(&format!("charts-{tag}"), charts),
    );
    let (m, l, b) = (
        format!("{tag}.yaml"),
        format!("{tag}.lock.yaml"),
        format!("{tag}.bundle.tar.zst"),
    );
    lock(ws, &m, &l, extra, &[]).assert_ok();
    create(ws, &l, &b, "cache", extra, &[]).assert_ok();
    b
}

/// `bundle install BUNDLE --pubkey site.pub [--web-root WWW] EXTRA…` in the workspace.
fn install(ws: &Workspace, bundle: &str, www: Option<&Path>, extra: &[&str]) -> Run {
    let mut args = vec!["install", bundle, "--pubkey", "site.pub"];
    if let Some(w) = www {
        args.extend(["--web-root", w.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    run_bundle_in(ws.root(), &args, &with_home(ws, &[]))
}

/// The `charts` entries of a lock file.
fn locked_charts(ws: &Workspace, lock: &str) -> Vec<serde_yaml_ng::Value> {
    let text = fs::read_to_string(ws.path(lock)).unwrap_or_else(|e| panic!("{lock}: {e}"));
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("lock is not YAML: {e}\n{text}"));
    doc["charts"]
        .as_sequence()
        .unwrap_or_else(|| panic!("the lock has no charts:\n{text}"))
        .clone()
}

/// A string field of a YAML map (panics naming the map when it is absent).
#[track_caller]
fn field<'a>(v: &'a serde_yaml_ng::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {v:?}"))
}

/// The kind of the bundle artifact that holds entry `path` (from `inspect --json`).
fn kind_of_entry(report: &serde_json::Value, path: &str) -> String {
    report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["entries"]
                .as_array()
                .is_some_and(|e| e.iter().any(|p| p == path))
        })
        .unwrap_or_else(|| panic!("no artifact holds {path}:\n{report:#}"))["kind"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The requests of a registry access log that write: `PUT`, `PATCH`, and a `POST` that
/// mounts or uploads in one go (a plain upload-session `POST` is pre-flight).
fn writes(log: &[(String, u16)]) -> Vec<&(String, u16)> {
    log.iter()
        .filter(|(r, _)| {
            r.starts_with("PUT ")
                || r.starts_with("PATCH ")
                || (r.starts_with("POST ") && (r.contains("mount=") || r.contains("digest=")))
        })
        .collect()
}

/// Whether an error message reports an HTTP 401.
fn says_unauthorized(stderr: &str) -> bool {
    stderr.contains("401") || stderr.to_ascii_lowercase().contains("unauthorized")
}

/// The installed index's URLs are relative to `charts/` (SPEC §6): exactly the file name.
#[track_caller]
fn assert_relative_url(index: &common::helm::CheckedIndex, name: &str, version: &str) {
    assert_eq!(
        index.entry(name, version).urls,
        vec![format!("{name}-{version}.tgz")],
        "{:?}",
        index.entry(name, version).yaml
    );
}

// ---------------------------------------------------------------------------
// 0. The fixtures themselves (no chart support of the tool needed)
// ---------------------------------------------------------------------------

#[test]
fn fixtures_package_serve_and_push_charts_as_helm_does() {
    require_tool("skopeo");
    let ws = Workspace::new();

    // A packaged chart: one top directory named after the chart, the files helm packages.
    let pkg = ws.mkdir("pkg");
    let tgz = package_chart(&pkg, "demo", "1.2.5", "4.2.3", DEMO_DEPENDENCY);
    assert_eq!(tgz, pkg.join("demo-1.2.5.tgz"));
    let listing = String::from_utf8(output_ok(Command::new("tar").arg("tzf").arg(&tgz))).unwrap();
    for f in [
        "demo/Chart.yaml",
        "demo/values.yaml",
        "demo/templates/configmap.yaml",
        "demo/charts/common/Chart.yaml",
    ] {
        assert!(listing.lines().any(|l| l == f), "{f} not in:\n{listing}");
    }
    assert!(listing.lines().all(|l| l.starts_with("demo/")), "{listing}");
    let meta = chart_meta(&tgz);
    assert_eq!(
        (
            meta.api_version.as_str(),
            meta.name.as_str(),
            meta.version.as_str()
        ),
        ("v2", "demo", "1.2.5")
    );
    assert_eq!(meta.app_version.as_deref(), Some("4.2.3"));
    assert_eq!(meta.chart_type.as_deref(), Some("application"));
    assert_eq!(
        meta.description.as_deref(),
        Some(description("demo", "1.2.5").as_str())
    );
    assert_eq!(meta.dependencies.len(), 1);
    assert_eq!(meta.dependencies[0].name, "common");
    assert_eq!(meta.dependencies[0].version, "2.1.0");

    // The checkers.
    for ok in [
        "2024-05-06T07:08:09Z",
        "2024-05-06T07:08:09.123456789Z",
        "2024-05-06T07:08:09+02:00",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2024-05-06",
        "2024-13-06T07:08:09Z",
        "2024-05-06T07:08:09",
        "06/05/2024",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
    for ok in ["1.2.5", "v1.16.2", "0.1.0-rc.1+build.5"] {
        assert!(is_semver(ok), "{ok}");
    }
    for bad in ["1.2", "~1.2", "1.2.x", ""] {
        assert!(!is_semver(bad), "{bad}");
    }

    // A served repository with relative URLs passes the index check; each URL serves the
    // chart's bytes.
    let repo = helm_repo(&ws, "up", None);
    let index = check_served_repo(&repo.apache, "charts");
    let expected: Vec<(String, String)> = UPSTREAM
        .iter()
        .map(|(n, v, _)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(index.versions(), expected);
    for e in &index.entries {
        assert_eq!(e.bytes, fs::read(repo.tgz(&e.name, &e.version)).unwrap());
    }
    // The same charts indexed with absolute URLs elsewhere on the server.
    let abs = repo.dir.parent().unwrap().join("abs");
    fs::create_dir_all(&abs).unwrap();
    let tgzs: Vec<PathBuf> = repo.charts.values().cloned().collect();
    let text = write_index(&abs, &tgzs, false, &repo.apache.url("charts/"));
    assert!(
        text.contains(&repo.apache.url("charts/demo-1.3.0.tgz")),
        "{text}"
    );
    make_world_readable(&abs);
    assert_eq!(check_served_repo(&repo.apache, "abs").versions(), expected);
    // A wrong digest, a relative URL to nowhere and a missing apiVersion are caught.
    let good = fs::read_to_string(abs.join("index.yaml")).unwrap();
    let wrong = sha256_bytes(b"not the chart");
    let demo_digest = sha256_file(repo.tgz("demo", "1.2.0"));
    fs::write(
        abs.join("index.yaml"),
        good.replace(&demo_digest, &wrong)
            .replace(&repo.apache.url("charts/other-0.1.0.tgz"), "missing.tgz")
            .replace("apiVersion: v1\n", ""),
    )
    .unwrap();
    let problems = served_repo(&repo.apache, "abs").unwrap_err().join("\n");
    assert!(problems.contains(&wrong), "{problems}");
    assert!(problems.contains("missing.tgz: HTTP 404"), "{problems}");
    assert!(problems.contains("apiVersion"), "{problems}");

    // Basic auth on /charts: refused without the login, served with it; / stays open.
    let protected = helm_repo(&ws, "auth", Some((REPO_USER, REPO_PASSWORD)));
    let (status, _) = protected.apache.http_get("charts/index.yaml");
    assert_eq!(status, 401);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{REPO_USER}:{REPO_PASSWORD}"))
    );
    let r = protected
        .apache
        .http_request("GET", "charts/index.yaml", &[("Authorization", &basic)]);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("apiVersion: v1"));
    let wrong_login = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{REPO_USER}:nope"))
    );
    let r = protected.apache.http_request(
        "GET",
        "charts/demo-1.2.5.tgz",
        &[("Authorization", &wrong_login)],
    );
    assert_eq!(r.status, 401);

    // A Helm OCI artifact in a real docker-registry, as skopeo sees it.
    let registry = Registry::start(&ws.path("registry"), None);
    let digest = push_oci_chart(registry.port, "charts/demo", "1.2.5", &tgz, &meta);
    let raw = registry.raw_manifest("charts/demo", "1.2.5");
    assert_eq!(format!("sha256:{}", sha256_bytes(&raw)), digest);
    let (config_type, config_hex, layers) = helm_manifest_parts(&raw);
    assert_eq!(config_type, HELM_CONFIG);
    assert_eq!(layers, vec![(HELM_LAYER.to_string(), sha256_file(&tgz))]);
    assert_eq!(
        registry_blob(registry.port, "charts/demo", &layers[0].1),
        fs::read(&tgz).unwrap()
    );
    let config: serde_json::Value =
        serde_json::from_slice(&registry_blob(registry.port, "charts/demo", &config_hex)).unwrap();
    assert_eq!(config["name"], "demo");
    assert_eq!(config["version"], "1.2.5");
    assert_eq!(config["apiVersion"], "v2");
    assert_eq!(config["appVersion"], "4.2.3");
    assert_eq!(config["type"], "application");
    assert_eq!(registry.tags("charts/demo"), vec!["1.2.5".to_string()]);
}

// ---------------------------------------------------------------------------
// 1. A range, lock/create/install, a valid Helm repository on the site
// ---------------------------------------------------------------------------

#[test]
fn a_range_picks_the_highest_match_and_install_serves_a_valid_helm_repository() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let tgz = repo.tgz("demo", "1.2.5").to_path_buf();

    // A repository URL without an index.yaml: exit 1 naming the index URL and the 404.
    ws.write(
        "none.yaml",
        manifest(
            "none",
            &[http_chart(&repo.apache.url("nothing-here"), "demo", "~1.2")],
        ),
    );
    lock(&ws, "none.yaml", "none.lock.yaml", &["--retries", "0"], &[])
        .assert_code(1)
        .assert_stderr_contains(&repo.apache.url("nothing-here/index.yaml"))
        .assert_stderr_contains("404");
    assert!(!ws.path("none.lock.yaml").exists());

    // ~1.2 → 1.2.5: the exact version as the index has it, the relative URL resolved
    // against the repository URL (below /charts/, not beside it), the index's digest.
    ws.write(
        "m.yaml",
        manifest("charts", &[http_chart(&repo.url(), "demo", "~1.2")]),
    );
    lock(&ws, "m.yaml", "m.lock.yaml", &[], &[]).assert_ok();
    let locked = locked_charts(&ws, "m.lock.yaml");
    assert_eq!(locked.len(), 1, "{locked:?}");
    let c = &locked[0];
    assert_eq!(field(c, "repo"), repo.url());
    assert_eq!(field(c, "name"), "demo");
    assert_eq!(field(c, "version"), "1.2.5");
    assert_eq!(field(c, "url"), repo.apache.url("charts/demo-1.2.5.tgz"));
    assert_eq!(field(c, "sha256"), sha256_file(&tgz));
    // Deterministic: the same input and upstream give the same bytes.
    let first = fs::read(ws.path("m.lock.yaml")).unwrap();
    lock(&ws, "m.yaml", "m2.lock.yaml", &[], &[]).assert_ok();
    assert_eq!(fs::read(ws.path("m2.lock.yaml")).unwrap(), first);

    // create carries the chart as charts/demo-1.2.5.tgz (kind chart), and nothing but the
    // picked version was downloaded.
    create(&ws, "m.lock.yaml", "b.bundle.tar.zst", "cache", &[], &[]).assert_ok();
    let report = inspect_json(&ws, "b.bundle.tar.zst");
    assert!(
        entry_paths(&report).contains(&"charts/demo-1.2.5.tgz".to_string()),
        "{report:#}"
    );
    assert_eq!(kind_of_entry(&report, "charts/demo-1.2.5.tgz"), "chart");
    let log = repo.apache.access_log();
    for other in ["demo-1.1.0", "demo-1.2.0", "demo-1.3.0", "other-0.1.0"] {
        assert!(
            gets(&log, &format!("/charts/{other}.tgz")).is_empty(),
            "{other} was downloaded:\n{log}"
        );
    }

    // Install into a fresh web root served by a second apache.
    let www = ws.mkdir("www");
    let site = Apache::start(&www);
    install(
        &ws,
        "b.bundle.tar.zst",
        Some(&www),
        &["--base-url", &site.url("/")],
    )
    .assert_ok();
    assert_eq!(
        fs::read(www.join("charts/demo-1.2.5.tgz")).unwrap(),
        fs::read(&tgz).unwrap(),
        "the installed chart is not upstream's, byte for byte"
    );
    for f in ["charts/demo-1.2.5.tgz", "charts/index.yaml"] {
        let mode = fs::metadata(www.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f} has mode {mode:o}");
    }
    let index = check_served_repo(&site, "charts");
    assert_eq!(
        index.versions(),
        vec![("demo".to_string(), "1.2.5".to_string())]
    );
    assert!(
        index.doc["generated"].as_str().is_some_and(is_rfc3339),
        "{:?}",
        index.doc
    );
    assert_relative_url(&index, "demo", "1.2.5");
    let e = &index.entry("demo", "1.2.5").yaml;
    assert_eq!(field(e, "digest"), sha256_file(&tgz));
    // Built from the chart's own Chart.yaml (the upstream index has no description or type).
    assert_eq!(field(e, "apiVersion"), "v2");
    assert_eq!(field(e, "appVersion"), "4.2.3");
    assert_eq!(field(e, "description"), description("demo", "1.2.5"));
    assert_eq!(field(e, "type"), "application");
    let deps = e["dependencies"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no dependencies in {e:?}"));
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!(field(&deps[0], "name"), "common");
    assert_eq!(field(&deps[0], "version"), "2.1.0");
    assert_eq!(
        field(&deps[0], "repository"),
        "https://charts.example.org/library"
    );

    // Every range form picks the highest match; an exact version picks itself.
    for (i, (constraint, picked)) in [
        (">=1.2 <1.3", "1.2.5"),
        ("^1", "1.3.0"),
        ("1.2.x", "1.2.5"),
        (">=1.1 <2", "1.3.0"),
        ("~1.1", "1.1.0"),
        ("1.2.0", "1.2.0"),
    ]
    .into_iter()
    .enumerate()
    {
        let (m, l) = (format!("r{i}.yaml"), format!("r{i}.lock.yaml"));
        ws.write(
            &m,
            manifest("charts", &[http_chart(&repo.url(), "demo", constraint)]),
        );
        lock(&ws, &m, &l, &[], &[]).assert_ok();
        let c = &locked_charts(&ws, &l)[0];
        assert_eq!(field(c, "version"), picked, "{constraint}");
        assert_eq!(
            field(c, "url"),
            repo.apache.url(&format!("charts/demo-{picked}.tgz")),
            "{constraint}"
        );
        assert_eq!(
            field(c, "sha256"),
            sha256_file(repo.tgz("demo", picked)),
            "{constraint}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Absolute URLs in the upstream index
// ---------------------------------------------------------------------------

#[test]
fn absolute_urls_in_the_upstream_index_are_pinned_as_given() {
    let ws = Workspace::new();
    let www = ws.mkdir("up/www");
    let pkgs = ws.mkdir("up/www/pkgs");
    let index_dir = ws.mkdir("up/www/repo");
    let demo = package_chart(&pkgs, "demo", "1.2.5", "4.2.3", "");
    // A chart versioned the cert-manager way, with a leading v.
    let cm = package_chart(&pkgs, "cm", "v0.3.0", "v0.3.0", "");
    // A chart the index lists but the server no longer has.
    let ghost = package_chart(&pkgs, "ghost", "0.1.0", "0.1.0", "");
    fs::remove_dir_all(pkgs.join("src")).unwrap();
    make_world_readable(&www);
    let apache = Apache::start(&www);
    write_index(
        &index_dir,
        &[demo.clone(), cm.clone(), ghost.clone()],
        false,
        &apache.url("pkgs/"),
    );
    fs::remove_file(&ghost).unwrap();
    let repo_url = apache.url("repo");

    ws.write(
        "m.yaml",
        manifest(
            "abs",
            &[
                http_chart(&repo_url, "demo", "1.2.5"),
                http_chart(&repo_url, "cm", "v0.3.0"),
            ],
        ),
    );
    lock(&ws, "m.yaml", "m.lock.yaml", &[], &[]).assert_ok();
    let locked = locked_charts(&ws, "m.lock.yaml");
    let by_name = |n: &str| {
        locked
            .iter()
            .find(|c| c["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("no {n} in the lock: {locked:?}"))
    };
    let d = by_name("demo");
    assert_eq!(field(d, "version"), "1.2.5");
    assert_eq!(field(d, "url"), apache.url("pkgs/demo-1.2.5.tgz"));
    assert_eq!(field(d, "sha256"), sha256_file(&demo));
    let c = by_name("cm");
    assert_eq!(field(c, "version"), "v0.3.0");
    assert_eq!(field(c, "url"), apache.url("pkgs/cm-v0.3.0.tgz"));
    assert_eq!(field(c, "sha256"), sha256_file(&cm));

    create(&ws, "m.lock.yaml", "b.bundle.tar.zst", "cache", &[], &[]).assert_ok();
    let site_root = ws.mkdir("www");
    let site = Apache::start(&site_root);
    install(
        &ws,
        "b.bundle.tar.zst",
        Some(&site_root),
        &["--base-url", &site.url("/")],
    )
    .assert_ok();
    let index = check_served_repo(&site, "charts");
    assert_eq!(
        index.versions(),
        vec![
            ("cm".to_string(), "v0.3.0".to_string()),
            ("demo".to_string(), "1.2.5".to_string())
        ]
    );
    // On the site the URLs are relative to charts/, whatever upstream had.
    assert_relative_url(&index, "demo", "1.2.5");
    assert_relative_url(&index, "cm", "v0.3.0");
    assert_eq!(
        fs::read(site_root.join("charts/cm-v0.3.0.tgz")).unwrap(),
        fs::read(&cm).unwrap()
    );

    // The ghost's URL answers 404: exit 1 naming it, at lock or (if lock does not download)
    // at create; no bundle either way.
    let ghost_url = apache.url("pkgs/ghost-0.1.0.tgz");
    ws.write(
        "g.yaml",
        manifest("ghost", &[http_chart(&repo_url, "ghost", "0.1.0")]),
    );
    let run = lock(&ws, "g.yaml", "g.lock.yaml", &["--retries", "0"], &[]);
    let failed = if run.code == 0 {
        assert_eq!(
            field(&locked_charts(&ws, "g.lock.yaml")[0], "url"),
            ghost_url
        );
        create(
            &ws,
            "g.lock.yaml",
            "g.bundle.tar.zst",
            "cache-g",
            &["--retries", "0"],
            &[],
        )
    } else {
        run
    };
    failed
        .assert_code(1)
        .assert_stderr_contains(&ghost_url)
        .assert_stderr_contains("404");
    assert!(!ws.path("g.bundle.tar.zst").exists());
}

// ---------------------------------------------------------------------------
// 3. Merging installs
// ---------------------------------------------------------------------------

#[test]
fn installs_merge_into_one_index_and_a_reinstall_changes_nothing() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let a = bundle_charts(&ws, "a", &[http_chart(&repo.url(), "demo", "~1.2")], &[]);
    let b = bundle_charts(&ws, "b", &[http_chart(&repo.url(), "other", "0.1.0")], &[]);
    let www = ws.mkdir("www");
    let site = Apache::start(&www);
    let base = site.url("/");

    install(&ws, &a, Some(&www), &["--base-url", &base]).assert_ok();
    let after_a = check_served_repo(&site, "charts");
    assert_eq!(
        after_a.versions(),
        vec![("demo".to_string(), "1.2.5".to_string())]
    );

    // B signed by another key: exit 3, charts/ untouched.
    keygen(&ws.path("stranger"));
    let charts_before = tree_snapshot(www.join("charts"));
    run_bundle_in(
        ws.root(),
        &[
            "install",
            &b,
            "--pubkey",
            "stranger.pub",
            "--web-root",
            www.to_str().unwrap(),
        ],
        &with_home(&ws, &[]),
    )
    .assert_code(3);
    assert_eq!(tree_snapshot(www.join("charts")), charts_before);

    install(&ws, &b, Some(&www), &["--base-url", &base]).assert_ok();
    let after_b = check_served_repo(&site, "charts");
    assert_eq!(
        after_b.versions(),
        vec![
            ("demo".to_string(), "1.2.5".to_string()),
            ("other".to_string(), "0.1.0".to_string())
        ]
    );
    // A's entry is kept as it was.
    assert_eq!(
        after_b.entry("demo", "1.2.5").yaml,
        after_a.entry("demo", "1.2.5").yaml
    );
    assert_eq!(
        field(&after_b.entry("other", "0.1.0").yaml, "description"),
        description("other", "0.1.0")
    );
    assert_relative_url(&after_b, "other", "0.1.0");
    assert!(www.join("charts/demo-1.2.5.tgz").is_file());
    assert!(www.join("charts/other-0.1.0.tgz").is_file());

    // Installing B again, then A again: charts/ byte for byte as it was, both charts listed.
    let before = tree_snapshot(www.join("charts"));
    install(&ws, &b, Some(&www), &["--base-url", &base]).assert_ok();
    let after = tree_snapshot(www.join("charts"));
    assert_eq!(before, after, "{}", snapshot_diff(&before, &after));
    install(&ws, &a, Some(&www), &["--base-url", &base]).assert_ok();
    let after = tree_snapshot(www.join("charts"));
    assert_eq!(before, after, "{}", snapshot_diff(&before, &after));
    assert_eq!(
        check_served_repo(&site, "charts").versions(),
        after_b.versions()
    );
}

// ---------------------------------------------------------------------------
// 4. Versions not in the index
// ---------------------------------------------------------------------------

#[test]
fn a_version_not_in_the_index_is_exit_2_naming_available_versions() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let demo_versions = ["1.1.0", "1.2.0", "1.2.5", "1.3.0"];
    for (i, wanted) in ["9.9.9", ">=2.0.0 <3", "~0.4"].into_iter().enumerate() {
        let (m, l) = (format!("m{i}.yaml"), format!("m{i}.lock.yaml"));
        ws.write(
            &m,
            manifest("charts", &[http_chart(&repo.url(), "demo", wanted)]),
        );
        let run = lock(&ws, &m, &l, &[], &[]);
        run.assert_code(2).assert_stderr_contains("demo");
        if wanted == "9.9.9" {
            run.assert_stderr_contains(wanted);
        }
        assert!(
            demo_versions.iter().any(|v| run.stderr.contains(v)),
            "{wanted}: no available version of demo named:\n{}",
            run.stderr
        );
        assert!(!ws.path(&l).exists(), "{wanted}: a lock was written");
    }
}

// ---------------------------------------------------------------------------
// 5. Upstream changed since lock
// ---------------------------------------------------------------------------

#[test]
fn an_upstream_chart_changed_since_lock_is_exit_3_at_create() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    ws.write(
        "m.yaml",
        manifest("charts", &[http_chart(&repo.url(), "demo", "~1.2")]),
    );
    lock(&ws, "m.yaml", "m.lock.yaml", &[], &[]).assert_ok();
    let served = repo.tgz("demo", "1.2.5").to_path_buf();
    let locked_sha = sha256_file(&served);
    assert_eq!(
        field(&locked_charts(&ws, "m.lock.yaml")[0], "sha256"),
        locked_sha
    );

    // Re-packaged upstream under the same name and version, other bytes.
    let repack = ws.mkdir("repack");
    let other = package_chart(
        &repack,
        "demo",
        "1.2.5",
        "4.2.3",
        "keywords: [republished]\n",
    );
    fs::copy(&other, &served).unwrap();
    let actual_sha = sha256_file(&served);
    assert_ne!(actual_sha, locked_sha);

    let url = repo.apache.url("charts/demo-1.2.5.tgz");
    create(
        &ws,
        "m.lock.yaml",
        "c.bundle.tar.zst",
        "cache-cold",
        &[],
        &[],
    )
    .assert_code(3)
    .assert_stderr_contains(&url)
    .assert_stderr_contains(&locked_sha)
    .assert_stderr_contains(&actual_sha);
    assert!(
        names_starting(ws.root(), "c.bundle").is_empty(),
        "create wrote {:?}",
        names_starting(ws.root(), "c.bundle")
    );
}

// ---------------------------------------------------------------------------
// 6. A tampered chart in the bundle
// ---------------------------------------------------------------------------

#[test]
fn a_tampered_chart_in_the_bundle_is_exit_3_and_the_web_root_is_unchanged() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let a = bundle_charts(&ws, "a", &[http_chart(&repo.url(), "other", "0.1.0")], &[]);
    let b = bundle_charts(&ws, "b", &[http_chart(&repo.url(), "demo", "~1.2")], &[]);
    let entry = "charts/demo-1.2.5.tgz";
    flip_entry_byte(&ws.path(&b), entry, &ws.path("t.bundle.tar.zst"));

    // A web root with a Helm repository already in it.
    let www = ws.mkdir("www");
    ws.write("www/index.html", "site\n");
    install(
        &ws,
        &a,
        Some(&www),
        &["--base-url", "http://web.example.org/"],
    )
    .assert_ok();
    assert!(www.join("charts/index.yaml").is_file());

    let before = tree_snapshot(&www);
    install(
        &ws,
        "t.bundle.tar.zst",
        Some(&www),
        &["--base-url", "http://web.example.org/"],
    )
    .assert_code(3)
    .assert_stderr_contains(entry);
    let after = tree_snapshot(&www);
    assert_eq!(before, after, "{}", snapshot_diff(&before, &after));
    run_bundle_in(
        ws.root(),
        &["verify", "t.bundle.tar.zst", "--pubkey", "site.pub"],
        &[],
    )
    .assert_code(3)
    .assert_stderr_contains(entry);
    // The untampered bundle installs.
    install(
        &ws,
        &b,
        Some(&www),
        &["--base-url", "http://web.example.org/"],
    )
    .assert_ok();
    assert_eq!(
        fs::read(www.join(entry)).unwrap(),
        fs::read(repo.tgz("demo", "1.2.5")).unwrap()
    );
}

// ---------------------------------------------------------------------------
// 7. OCI charts
// ---------------------------------------------------------------------------

#[test]
fn an_oci_chart_is_pinned_by_digest_and_reaches_the_chart_registry_unchanged() {
    require_tool("skopeo");
    let ws = Workspace::new();
    let upstream = Registry::start(&ws.path("upstream-registry"), None);
    let up = upstream.host();
    let pkg = ws.mkdir("pkg");
    let tgz = package_chart(&pkg, "app", "0.1.0", "1.0.0", "");
    let meta = chart_meta(&tgz);
    let digest = push_oci_chart(upstream.port, "charts/app", "0.1.0", &tgz, &meta);
    let tgz_sha = sha256_file(&tgz);

    // A tag the registry does not have: a runtime error naming the reference.
    ws.write(
        "missing.yaml",
        manifest(
            "missing",
            &[oci_chart(&format!("oci://{up}/charts/app:9.9.9"))],
        ),
    );
    let run = lock(
        &ws,
        "missing.yaml",
        "missing.lock.yaml",
        &["--plain-http", "--retries", "0"],
        &[],
    );
    assert!(
        (run.code == 1 || run.code == 2) && !run.stderr.contains("panicked"),
        "expected exit 1 or 2:\n{run:?}"
    );
    run.assert_stderr_contains(&format!("{up}/charts/app:9.9.9"));
    assert!(!ws.path("missing.lock.yaml").exists());

    // lock pins the tag's manifest digest.
    let b = bundle_charts(
        &ws,
        "b",
        &[oci_chart(&format!("oci://{up}/charts/app:0.1.0"))],
        &["--plain-http"],
    );
    let locked = locked_charts(&ws, "b.lock.yaml");
    assert_eq!(locked.len(), 1);
    assert_eq!(
        field(&locked[0], "ref"),
        format!("oci://{up}/charts/app:0.1.0@{digest}")
    );
    // The bundle's oci/ layout holds the artifact's blobs.
    let raw_up = upstream.raw_manifest("charts/app", "0.1.0");
    let (_, config_hex, _) = helm_manifest_parts(&raw_up);
    let paths = entry_paths(&inspect_json(&ws, &b));
    for hex in [&tgz_sha, &config_hex] {
        let p = format!("oci/blobs/sha256/{hex}");
        assert!(paths.contains(&p), "{p} not in {paths:#?}");
    }

    let site = Registry::start(&ws.path("site-registry"), None);
    let host = site.host();
    let www = ws.mkdir("www");
    let web = Apache::start(&www);
    let base = web.url("/");

    // Plain HTTP registry spoken to over TLS (no --plain-http): exit 1 naming it, nothing
    // written anywhere.
    let before = tree_snapshot(&www);
    install(
        &ws,
        &b,
        Some(&www),
        &[
            "--base-url",
            &base,
            "--chart-registry",
            &host,
            "--retries",
            "0",
        ],
    )
    .assert_code(1)
    .assert_stderr_contains(&host);
    assert_eq!(tree_snapshot(&www), before);
    assert_eq!(site.tags("charts/app"), Vec::<String>::new());

    install(
        &ws,
        &b,
        Some(&www),
        &[
            "--base-url",
            &base,
            "--chart-registry",
            &host,
            "--plain-http",
        ],
    )
    .assert_ok();

    // The registry serves the upstream manifest, byte for byte, under the upstream path.
    let raw = site.raw_manifest("charts/app", "0.1.0");
    assert_eq!(format!("sha256:{}", sha256_bytes(&raw)), digest);
    let (config_type, _, layers) = helm_manifest_parts(&raw);
    assert_eq!(config_type, HELM_CONFIG);
    assert_eq!(layers, vec![(HELM_LAYER.to_string(), tgz_sha.clone())]);
    assert_eq!(
        registry_blob(site.port, "charts/app", &tgz_sha),
        fs::read(&tgz).unwrap()
    );
    assert_eq!(site.tags("charts/app"), vec!["0.1.0".to_string()]);

    // The web root's Helm repository has it too: the tgz is the layer.
    assert_eq!(
        fs::read(www.join("charts/app-0.1.0.tgz")).unwrap(),
        fs::read(&tgz).unwrap()
    );
    let index = check_served_repo(&web, "charts");
    assert_eq!(
        index.versions(),
        vec![("app".to_string(), "0.1.0".to_string())]
    );
    assert_relative_url(&index, "app", "0.1.0");
    let e = &index.entry("app", "0.1.0").yaml;
    assert_eq!(field(e, "digest"), tgz_sha);
    assert_eq!(field(e, "appVersion"), "1.0.0");
    assert_eq!(field(e, "description"), description("app", "0.1.0"));
    assert_eq!(field(e, "type"), "application");
}

// ---------------------------------------------------------------------------
// 8. HTTP charts pushed to a chart registry
// ---------------------------------------------------------------------------

#[test]
fn an_http_chart_is_pushed_to_the_chart_registry_as_a_helm_artifact_once() {
    require_tool("skopeo");
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let tgz = repo.tgz("demo", "1.2.5").to_path_buf();
    let tgz_sha = sha256_file(&tgz);
    let b = bundle_charts(&ws, "b", &[http_chart(&repo.url(), "demo", "~1.2")], &[]);
    let www = ws.mkdir("www");
    let web = Apache::start(&www);
    let base = web.url("/");

    // A chart registry nobody listens on: exit 1 naming it, the web root untouched.
    let nobody = format!("127.0.0.1:{}", free_port());
    let before = tree_snapshot(&www);
    install(
        &ws,
        &b,
        Some(&www),
        &[
            "--base-url",
            &base,
            "--chart-registry",
            &nobody,
            "--plain-http",
            "--retries",
            "0",
        ],
    )
    .assert_code(1)
    .assert_stderr_contains(&nobody);
    assert_eq!(tree_snapshot(&www), before);

    let site = Registry::start(&ws.path("site-registry"), None);
    let host = site.host();
    let args = [
        "--base-url",
        base.as_str(),
        "--chart-registry",
        host.as_str(),
        "--plain-http",
    ];
    install(&ws, &b, Some(&www), &args).assert_ok();

    let raw = site.raw_manifest("charts/demo", "1.2.5");
    let (config_type, config_hex, layers) = helm_manifest_parts(&raw);
    assert_eq!(config_type, HELM_CONFIG);
    assert_eq!(layers, vec![(HELM_LAYER.to_string(), tgz_sha.clone())]);
    assert_eq!(
        registry_blob(site.port, "charts/demo", &tgz_sha),
        fs::read(&tgz).unwrap()
    );
    // The config is the chart's metadata, so `helm pull` knows what it got.
    let config: serde_json::Value =
        serde_json::from_slice(&registry_blob(site.port, "charts/demo", &config_hex))
            .expect("the config blob is JSON");
    assert_eq!(config["name"], "demo", "{config}");
    assert_eq!(config["version"], "1.2.5", "{config}");
    assert_eq!(config["apiVersion"], "v2", "{config}");
    assert_eq!(config["appVersion"], "4.2.3", "{config}");
    assert_eq!(site.tags("charts/demo"), vec!["1.2.5".to_string()]);
    let index = check_served_repo(&web, "charts");
    assert_eq!(
        index.versions(),
        vec![("demo".to_string(), "1.2.5".to_string())]
    );

    // Again: exit 0, nothing written to the registry, the same manifest, charts/ unchanged.
    let charts_before = tree_snapshot(www.join("charts"));
    let seen = site.access_log("").len();
    install(&ws, &b, Some(&www), &args).assert_ok();
    let log = site.access_log("")[seen..].to_vec();
    assert_eq!(writes(&log), Vec::<&(String, u16)>::new(), "{log:#?}");
    assert_eq!(site.raw_manifest("charts/demo", "1.2.5"), raw);
    assert_eq!(tree_snapshot(www.join("charts")), charts_before);
}

// ---------------------------------------------------------------------------
// 9. A repository behind basic auth: netrc
// ---------------------------------------------------------------------------

#[test]
fn a_repository_behind_basic_auth_takes_its_login_from_netrc() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", Some((REPO_USER, REPO_PASSWORD)));
    let index_url = repo.apache.url("charts/index.yaml");
    let chart_url = repo.apache.url("charts/demo-1.2.5.tgz");
    ws.write(
        "m.yaml",
        manifest("charts", &[http_chart(&repo.url(), "demo", "1.2.5")]),
    );
    let netrc = |file: &str, machine: &str, password: &str| {
        let p = ws.write(
            file,
            format!("machine {machine}\n  login {REPO_USER}\n  password {password}\n"),
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = netrc("good.netrc", "127.0.0.1", REPO_PASSWORD);
    let elsewhere = netrc("elsewhere.netrc", "charts.example.org", REPO_PASSWORD);
    let wrong_password = "Not-The-Pa55word";
    let wrong = netrc("wrong.netrc", "127.0.0.1", wrong_password);

    // No login (no NETRC, no ~/.netrc), a netrc for another machine, a wrong password:
    // exit 1 naming the index URL and the 401; no lock; the password never printed.
    for envs in [
        vec![],
        vec![("NETRC", elsewhere.as_str())],
        vec![("NETRC", wrong.as_str())],
    ] {
        let run = lock(&ws, "m.yaml", "m.lock.yaml", &["--retries", "0"], &envs);
        run.assert_code(1).assert_stderr_contains(&index_url);
        assert!(says_unauthorized(&run.stderr), "{envs:?}: {run:?}");
        assert!(!run.stderr.contains(wrong_password) && !run.stdout.contains(wrong_password));
        assert!(!ws.path("m.lock.yaml").exists(), "{envs:?}");
    }

    // NETRC names the file with the login.
    lock(
        &ws,
        "m.yaml",
        "m.lock.yaml",
        &[],
        &[("NETRC", good.as_str())],
    )
    .assert_ok();
    let c = &locked_charts(&ws, "m.lock.yaml")[0];
    assert_eq!(field(c, "url"), chart_url);
    assert_eq!(field(c, "sha256"), sha256_file(repo.tgz("demo", "1.2.5")));
    let text = fs::read_to_string(ws.path("m.lock.yaml")).unwrap();
    assert!(
        !text.contains(REPO_PASSWORD),
        "the lock holds the password:\n{text}"
    );

    // Without NETRC, ~/.netrc is read.
    let home = ws.mkdir("home");
    fs::copy(&good, home.join(".netrc")).unwrap();
    fs::set_permissions(home.join(".netrc"), fs::Permissions::from_mode(0o600)).unwrap();
    lock(
        &ws,
        "m.yaml",
        "home.lock.yaml",
        &[],
        &[("HOME", home.to_str().unwrap())],
    )
    .assert_ok();
    assert_eq!(
        fs::read(ws.path("home.lock.yaml")).unwrap(),
        fs::read(ws.path("m.lock.yaml")).unwrap()
    );

    // create needs the login too (a cold cache each time).
    let run = create(
        &ws,
        "m.lock.yaml",
        "x.bundle.tar.zst",
        "cache-x",
        &["--retries", "0"],
        &[],
    );
    run.assert_code(1).assert_stderr_contains(&chart_url);
    assert!(says_unauthorized(&run.stderr), "{run:?}");
    assert!(names_starting(ws.root(), "x.bundle").is_empty());
    let run = create(
        &ws,
        "m.lock.yaml",
        "x.bundle.tar.zst",
        "cache-x2",
        &["--retries", "0"],
        &[("NETRC", wrong.as_str())],
    );
    run.assert_code(1);
    assert!(says_unauthorized(&run.stderr), "{run:?}");
    create(
        &ws,
        "m.lock.yaml",
        "b.bundle.tar.zst",
        "cache-b",
        &[],
        &[("NETRC", good.as_str())],
    )
    .assert_ok();

    let www = ws.mkdir("www");
    let site = Apache::start(&www);
    install(
        &ws,
        "b.bundle.tar.zst",
        Some(&www),
        &["--base-url", &site.url("/")],
    )
    .assert_ok();
    let index = check_served_repo(&site, "charts");
    assert_eq!(
        index.versions(),
        vec![("demo".to_string(), "1.2.5".to_string())]
    );
}

// ---------------------------------------------------------------------------
// 10. No web root
// ---------------------------------------------------------------------------

#[test]
fn a_bundle_with_charts_needs_a_web_root() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let b = bundle_charts(&ws, "b", &[http_chart(&repo.url(), "demo", "~1.2")], &[]);
    let site = Registry::start(&ws.path("site-registry"), None);
    let host = site.host();

    for extra in [
        vec![],
        vec!["--chart-registry", host.as_str(), "--plain-http"],
    ] {
        let run = install(&ws, &b, None, &extra);
        run.assert_code(2).assert_stderr_contains("--web-root");
        assert!(
            run.stderr.to_ascii_lowercase().contains("chart"),
            "{extra:?}: the message does not say charts need it:\n{}",
            run.stderr
        );
    }
    assert_eq!(site.tags("charts/demo"), Vec::<String>::new());
    assert!(
        writes(&site.access_log("")).is_empty(),
        "{:#?}",
        site.access_log("")
    );

    // With a web root the same bundle installs.
    let www = ws.mkdir("www");
    install(
        &ws,
        &b,
        Some(&www),
        &["--base-url", "http://web.example.org/"],
    )
    .assert_ok();
    assert!(www.join("charts/index.yaml").is_file());
}

// ---------------------------------------------------------------------------
// 10. Hostile input: upstream files, existing web-root files, colliding charts
// ---------------------------------------------------------------------------

/// Runs `bundle ARGS` in the workspace (`HOME` there) with its address space capped at
/// 4 GiB and a deadline, so that a memory or time bomb fails the test instead of the
/// machine. `None` when it was killed (by the deadline or a failed allocation's abort).
fn run_limited(ws: &Workspace, args: &[&str], deadline_s: u64) -> Option<Run> {
    let out = Command::new("timeout")
        .arg("-s")
        .arg("KILL")
        .arg(deadline_s.to_string())
        .arg("sh")
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" \"$@\"")
        .arg(bundle_bin())
        .args(args)
        .current_dir(ws.root())
        .env("HOME", ws.root())
        .env("NO_COLOR", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn timeout sh bundle");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        // 137: killed by the deadline; 134: aborted on a failed allocation.
        Some(code) if code != 137 && code != 134 && code != 124 => Some(Run {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        }),
        _ => {
            eprintln!("bundle {args:?} was killed: {:?}\n{stderr}", out.status);
            None
        }
    }
}

/// `HEAD` then the anchor `bomb: &a [x, x, …]` (`n` items): what follows names it `n`
/// times (`*a`), a few dozen KB that a naive YAML reader expands to `n`² nodes.
fn alias_bomb(n: usize, head: &str) -> String {
    format!("{head}bomb: &a [{}]\n", "x,".repeat(n))
}

#[test]
fn yaml_alias_bombs_upstream_cost_little_at_lock() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let n = 16_000;

    // An index.yaml of ~450 KB whose `urls` lists are all one 16 000-item alias.
    let mut index = alias_bomb(n, "apiVersion: v1\n");
    index.push_str("entries:\n  demo:\n");
    for i in 0..n {
        index.push_str(&format!("  - {{version: '0.0.{i}', urls: *a}}\n"));
    }
    fs::write(repo.dir.join("index.yaml"), &index).unwrap();
    ws.write(
        "bomb.yaml",
        manifest("bomb", &[http_chart(&repo.url(), "demo", "1.2.5")]),
    );
    let run = run_limited(
        &ws,
        &[
            "lock",
            "bomb.yaml",
            "-o",
            "bomb.lock.yaml",
            "--cache",
            "cache",
        ],
        60,
    )
    .expect("lock of an alias-bomb index.yaml blew up instead of refusing it");
    run.assert_code(3).assert_stderr_contains("index.yaml");
    assert!(run.stderr.contains("alias"), "{}", run.stderr);
    assert!(!ws.path("bomb.lock.yaml").exists());

    // A chart whose Chart.yaml (~80 KB) is the bomb, listed with its true digest (packaged
    // with stock tar and indexed by hand: the fixtures would read the bomb themselves).
    let mut chart_yaml = alias_bomb(n, "apiVersion: v2\nname: demo\nversion: 9.0.0\n");
    chart_yaml.push_str("maintainers: [");
    chart_yaml.push_str(&"*a,".repeat(n));
    chart_yaml.push_str("]\n");
    ws.write("pkg/demo/Chart.yaml", chart_yaml);
    let tgz = repo.dir.join("demo-9.0.0.tgz");
    output_ok(
        Command::new("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(ws.path("pkg"))
            .arg("demo"),
    );
    fs::write(
        repo.dir.join("index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  demo:\n  - name: demo\n    version: 9.0.0\n    digest: {}\n    urls: [demo-9.0.0.tgz]\n",
            sha256_file(&tgz)
        ),
    )
    .unwrap();
    make_world_readable(&repo.dir);
    let run = run_limited(
        &ws,
        &[
            "lock",
            "bomb.yaml",
            "-o",
            "bomb.lock.yaml",
            "--cache",
            "cache",
        ],
        60,
    );
    // The manifest asks for 1.2.5, which is no longer listed: exit 2 before any download.
    run.expect("lock blew up").assert_code(2);
    ws.write(
        "bomb.yaml",
        manifest("bomb", &[http_chart(&repo.url(), "demo", "9.0.0")]),
    );
    let run = run_limited(
        &ws,
        &[
            "lock",
            "bomb.yaml",
            "-o",
            "bomb.lock.yaml",
            "--cache",
            "cache",
        ],
        60,
    )
    .expect("lock of a chart whose Chart.yaml is an alias bomb blew up instead of refusing it");
    run.assert_code(3).assert_stderr_contains("Chart.yaml");
    assert!(run.stderr.contains("alias"), "{}", run.stderr);
    assert!(!ws.path("bomb.lock.yaml").exists());
}

/// A web root holding charts/index.yaml as `bytes` (written by someone else) refuses an
/// install of `bundle` with exit 1 naming the file, before any data moves: the web root
/// and `site` (a chart registry) are left as they were.
#[track_caller]
fn refuses_existing_index(
    ws: &Workspace,
    bundle: &str,
    site: &Registry,
    tag: &str,
    plant: impl Fn(&Path),
) {
    let www = ws.mkdir(format!("www-{tag}"));
    fs::create_dir_all(www.join("charts")).unwrap();
    plant(&www.join("charts/index.yaml"));
    let before = tree_snapshot(&www);
    let seen = site.access_log("").len();
    let host = site.host();
    let run = run_limited(
        ws,
        &[
            "install",
            bundle,
            "--pubkey",
            "site.pub",
            "--web-root",
            www.to_str().unwrap(),
            "--base-url",
            "http://web.example.org/",
            "--chart-registry",
            &host,
            "--plain-http",
        ],
        60,
    )
    .unwrap_or_else(|| panic!("{tag}: install blew up on the existing charts/index.yaml"));
    run.assert_code(1)
        .assert_stderr_contains("charts/index.yaml");
    assert!(!run.stderr.contains("panicked"), "{tag}: {}", run.stderr);
    let after = tree_snapshot(&www);
    assert_eq!(before, after, "{tag}: {}", snapshot_diff(&before, &after));
    let log = site.access_log("")[seen..].to_vec();
    assert_eq!(
        writes(&log),
        Vec::<&(String, u16)>::new(),
        "{tag}: the chart registry was written to before the refusal"
    );
    assert_eq!(site.tags("charts/demo"), Vec::<String>::new(), "{tag}");
}

#[test]
fn an_existing_charts_index_that_is_not_a_helm_index_is_refused_before_data_moves() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let b = bundle_charts(&ws, "b", &[http_chart(&repo.url(), "demo", "~1.2")], &[]);
    let site = Registry::start(&ws.path("site-registry"), None);

    // Not YAML at all.
    refuses_existing_index(&ws, &b, &site, "garbage", |p| {
        fs::write(p, "entries: [unclosed\n\t: :\n").unwrap()
    });
    // YAML, but no Helm index: replacing it would destroy someone's file.
    refuses_existing_index(&ws, &b, &site, "not-an-index", |p| {
        fs::write(p, "just a note somebody left here\n").unwrap()
    });
    // A 30 KB alias bomb (billions of nodes once expanded).
    refuses_existing_index(&ws, &b, &site, "bomb", |p| {
        let n = 12_000;
        let mut y = alias_bomb(n, "apiVersion: v1\n");
        y.push_str("entries:\n  demo: [");
        y.push_str(&"*a,".repeat(n));
        y.push_str("]\n");
        fs::write(p, y).unwrap()
    });
    // Larger than any index the install would read (sparse: no disk used): replacing it
    // with this bundle's charts alone would drop every earlier entry.
    refuses_existing_index(&ws, &b, &site, "huge", |p| {
        let f = fs::File::create(p).unwrap();
        f.set_len((128 << 20) + 1).unwrap();
    });
    // A symlink (to a file outside the web root) and a symlink at charts/.
    let outside = ws.write("outside-index.yaml", "apiVersion: v1\nentries: {}\n");
    refuses_existing_index(&ws, &b, &site, "symlink", |p| {
        std::os::unix::fs::symlink(&outside, p).unwrap()
    });
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        "apiVersion: v1\nentries: {}\n"
    );
    let www = ws.mkdir("www-charts-link");
    let elsewhere = ws.mkdir("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, www.join("charts")).unwrap();
    install(
        &ws,
        &b,
        Some(&www),
        &["--base-url", "http://web.example.org/"],
    )
    .assert_code(1)
    .assert_stderr_contains("charts");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A genuine index from elsewhere is merged into, its entries kept.
    let www = ws.mkdir("www-genuine");
    fs::create_dir_all(www.join("charts")).unwrap();
    fs::write(
        www.join("charts/index.yaml"),
        "apiVersion: v1\nentries:\n  kept:\n  - name: kept\n    version: 0.0.1\n    urls: [kept-0.0.1.tgz]\n    digest: 00\ngenerated: \"2020-01-01T00:00:00Z\"\n",
    )
    .unwrap();
    install(
        &ws,
        &b,
        Some(&www),
        &["--base-url", "http://web.example.org/"],
    )
    .assert_ok();
    let text = fs::read_to_string(www.join("charts/index.yaml")).unwrap();
    assert!(text.contains("kept-0.0.1.tgz"), "{text}");
    assert!(text.contains("demo-1.2.5.tgz"), "{text}");
}

#[test]
fn an_http_and_an_oci_chart_that_would_share_a_registry_name_are_refused_at_create() {
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let upstream = Registry::start(&ws.path("upstream-registry"), None);
    let up = upstream.host();
    // The very chart the HTTP repository serves, pushed as a Helm OCI artifact under the
    // name the site's chart registry gives HTTP charts (`charts/<name>:<version>`).
    let tgz = repo.tgz("demo", "1.2.5").to_path_buf();
    push_oci_chart(
        upstream.port,
        "charts/demo",
        "1.2.5",
        &tgz,
        &chart_meta(&tgz),
    );
    ws.write(
        "both.yaml",
        manifest(
            "both",
            &[
                http_chart(&repo.url(), "demo", "1.2.5"),
                oci_chart(&format!("oci://{up}/charts/demo:1.2.5")),
            ],
        ),
    );
    lock(&ws, "both.yaml", "both.lock.yaml", &["--plain-http"], &[]).assert_ok();
    let run = create(
        &ws,
        "both.lock.yaml",
        "both.bundle.tar.zst",
        "cache",
        &["--plain-http"],
        &[],
    );
    run.assert_code(2)
        .assert_stderr_contains("charts/demo:1.2.5");
    assert!(
        run.stderr.contains(&repo.url()) && run.stderr.contains(&format!("oci://{up}")),
        "the message names both charts:\n{}",
        run.stderr
    );
    assert!(!ws.path("both.bundle.tar.zst").exists());
}

#[test]
fn images_and_charts_reach_the_registry_the_chart_registry_and_the_oci_dir_at_once() {
    require_tool("skopeo");
    let ws = Workspace::new();
    let repo = helm_repo(&ws, "up", None);
    let upstream = Registry::start(&ws.path("upstream-registry"), None);
    let up = upstream.host();
    let layout = ws.path("oci-src");
    common::registry::build_image(&layout, "v1", "app\n");
    upstream.push(&layout, "v1", "test/app", None);
    let image_raw = upstream.raw_manifest("test/app", "v1");
    let pkg = ws.mkdir("pkg");
    let tgz = package_chart(&pkg, "app", "0.1.0", "1.0.0", "");
    push_oci_chart(
        upstream.port,
        "charts/app",
        "0.1.0",
        &tgz,
        &chart_meta(&tgz),
    );
    let chart_raw = upstream.raw_manifest("charts/app", "0.1.0");
    let mut m = manifest(
        "all",
        &[
            http_chart(&repo.url(), "demo", "1.2.5"),
            oci_chart(&format!("oci://{up}/charts/app:0.1.0")),
        ],
    );
    m.push_str(&format!("images:\n  - ref: '{up}/test/app:v1'\n"));
    ws.write("all.yaml", m);
    lock(&ws, "all.yaml", "all.lock.yaml", &["--plain-http"], &[]).assert_ok();
    create(
        &ws,
        "all.lock.yaml",
        "all.bundle.tar.zst",
        "cache",
        &["--plain-http"],
        &[],
    )
    .assert_ok();

    let images = Registry::start(&ws.path("site-images"), None);
    let charts = Registry::start(&ws.path("site-charts"), None);
    let www = ws.mkdir("www");
    let oci = ws.path("oci-out");
    let (ih, ch) = (images.host(), charts.host());
    let args = [
        "--base-url",
        "http://web.example.org/",
        "--registry",
        ih.as_str(),
        "--chart-registry",
        ch.as_str(),
        "--oci-dir",
        oci.to_str().unwrap(),
        "--plain-http",
    ];
    install(&ws, "all.bundle.tar.zst", Some(&www), &args).assert_ok();

    // Each registry got its own artifacts, byte for byte, and nothing else.
    assert_eq!(images.raw_manifest("test/app", "v1"), image_raw);
    for l in common::registry::layers(&image_raw) {
        let hex = l.trim_start_matches("sha256:");
        assert_eq!(images.blob_status("test/app", hex), 200, "{l}");
    }
    assert_eq!(images.tags("charts/app"), Vec::<String>::new());
    assert_eq!(images.tags("charts/demo"), Vec::<String>::new());
    assert_eq!(charts.raw_manifest("charts/app", "0.1.0"), chart_raw);
    assert_eq!(charts.tags("test/app"), Vec::<String>::new());
    let demo = repo.tgz("demo", "1.2.5");
    let raw = charts.raw_manifest("charts/demo", "1.2.5");
    let (config_type, _, layers) = helm_manifest_parts(&raw);
    assert_eq!(config_type, HELM_CONFIG);
    assert_eq!(layers, vec![(HELM_LAYER.to_string(), sha256_file(demo))]);
    assert_eq!(
        registry_blob(charts.port, "charts/demo", &sha256_file(demo)),
        fs::read(demo).unwrap()
    );
    assert_eq!(
        registry_blob(charts.port, "charts/app", &sha256_file(&tgz)),
        fs::read(&tgz).unwrap()
    );
    // The OCI directory holds all three, readable by skopeo.
    for (name, raw) in [
        (format!("{up}/test/app:v1"), &image_raw),
        ("charts/demo:1.2.5".to_string(), &raw),
    ] {
        let out = output_ok(
            Command::new("skopeo")
                .arg("inspect")
                .arg("--raw")
                .arg(format!("oci:{}:{name}", oci.display())),
        );
        assert_eq!(&out, raw, "{name}");
    }
    let index = fs::read_to_string(oci.join("index.json")).unwrap();
    assert!(index.contains(&sha256_bytes(&chart_raw)), "{index}");
    // The web root has both charts.
    assert!(www.join("charts/demo-1.2.5.tgz").is_file());
    assert!(www.join("charts/app-0.1.0.tgz").is_file());

    // Again: nothing written anywhere.
    let (seen_i, seen_c) = (images.access_log("").len(), charts.access_log("").len());
    let (www_before, oci_before) = (tree_snapshot(www.join("charts")), tree_snapshot(&oci));
    install(&ws, "all.bundle.tar.zst", Some(&www), &args).assert_ok();
    assert!(writes(&images.access_log("")[seen_i..]).is_empty());
    assert!(writes(&charts.access_log("")[seen_c..]).is_empty());
    assert_eq!(tree_snapshot(www.join("charts")), www_before);
    assert_eq!(tree_snapshot(&oci), oci_before);
}
