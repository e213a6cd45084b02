//! `bundle install` into an Apache web root (SPEC §4, §5, §6): end to end through a real
//! Apache and Kubespray's own download templates, idempotent re-runs, the tamper matrix with
//! nothing written, SIGKILL at any point, full disks (bytes and inodes), read-only web roots
//! and usage errors.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use airgap_bundle::bundle::signing::SecretKey;
use common::install::*;
use common::tamper::{
    self, Framing, TamperKeys, build_bundle, decompress, make_source_bundle, read_tar,
};
use common::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Like [`install`], run through `sh -c 'umask 077; exec "$0" "$@"'`.
fn install_umask_077(bundle: &Path, pubkey: &Path, web_root: &Path, extra: &[&str]) -> Run {
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" \"$@\"")
        .arg(bundle_bin())
        .arg("install")
        .arg(bundle)
        .arg("--pubkey")
        .arg(pubkey)
        .arg("--web-root")
        .arg(web_root)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh");
    Run {
        code: out.status.code().expect("install was killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `install ... --json`, asserted successful and parsed.
#[track_caller]
fn install_json(bundle: &Path, pubkey: &Path, web_root: &Path) -> serde_json::Value {
    let run = install(bundle, pubkey, web_root, &["--json"]);
    run.assert_ok();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("install --json is not JSON: {e}\n{}", run.stdout))
}

/// Every path below `dir` whose name starts with `.tmp-` (left-over atomic-write temporaries).
fn temp_files(dir: &Path) -> Vec<String> {
    tree_snapshot(dir)
        .into_keys()
        .filter(|p| p.rsplit('/').next().unwrap_or(p).starts_with(".tmp-"))
        .collect()
}

/// Every file and directory below `root`: files must be 0644, directories 0755.
#[track_caller]
fn assert_public_modes(root: &Path) {
    let mut bad = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walk the web root");
        let mode = entry.metadata().expect("stat").mode() & 0o7777;
        let want = if entry.file_type().is_dir() {
            0o755
        } else {
            0o644
        };
        if mode != want {
            bad.push(format!(
                "{} is {mode:o}, expected {want:o}",
                entry.path().display()
            ));
        }
    }
    assert!(bad.is_empty(), "wrong modes:\n{}", bad.join("\n"));
}

/// (mtime in ns, inode) of every regular file below `root`, by relative path.
fn file_stamps(root: &Path) -> BTreeMap<String, (i64, u64)> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().expect("stat");
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            (rel, (m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// Renders a Jinja-style template of plain `{{ var }}` substitutions, resolving variables
/// that themselves contain templates (as Ansible does), and fails on an undefined variable.
fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut s = template.to_string();
    for _ in 0..100 {
        let Some(start) = s.find("{{") else {
            return s;
        };
        let end = start
            + s[start..]
                .find("}}")
                .unwrap_or_else(|| panic!("unclosed {{{{ in {s}"));
        let name = s[start + 2..end].trim().to_string();
        let value = vars
            .get(&name)
            .unwrap_or_else(|| panic!("undefined variable `{name}` rendering {template}"));
        s.replace_range(start..end + 2, value);
    }
    panic!("template does not converge: {template}");
}

fn receipt(web_root: &Path, name: &str, version: &str) -> serde_json::Value {
    let path = web_root.join(format!(".bundle/{name}-{version}.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("receipt is not JSON: {e}\n{text}"))
}

/// The free bytes an unprivileged writer sees on the filesystem holding `path`.
fn statvfs_free(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_bavail as u64 * st.f_frsize as u64
}

// ---------------------------------------------------------------------------
// 1. End to end: Apache upstream → bundle → install → Apache web root → Kubespray URLs
// ---------------------------------------------------------------------------

const KUBE: &str = "dl.k8s.io/release/v1.31.4/bin/linux/amd64";
const CNI: &str = "github.com/containernetworking/plugins/releases/download/v1.6.0/cni-plugins-linux-amd64-v1.6.0.tgz";

#[test]
fn end_to_end_through_apache_and_kubespray_templates() {
    let ws = Workspace::new();
    let files = vec![
        (format!("{KUBE}/kubeadm"), random_bytes(3 << 20, 11)),
        (format!("{KUBE}/kubelet"), random_bytes(2 << 20, 12)),
        (CNI.to_string(), random_bytes((3 << 20) / 2, 13)),
    ];
    let built = make_bundle(
        &ws,
        "k8s",
        "kubespray-offline",
        "2.27.0",
        &files,
        Urls::CanonicalViaMirrors,
    );
    // The mirror is for fetching only: the bundle keeps the canonical paths.
    let expected_paths: Vec<String> = files.iter().map(|(r, _)| format!("files/{r}")).collect();
    assert_eq!(built.files.keys().cloned().collect::<Vec<_>>(), {
        let mut p = expected_paths.clone();
        p.sort();
        p
    });

    let web = ws.mkdir("web");
    let site = Apache::start(&web);
    let base_url = site.url("");

    let run = install_umask_077(
        &built.bundle,
        &built.pubkey,
        &web,
        &["--base-url", &base_url],
    );
    run.assert_ok();
    let vars_path = web.join("kubespray-offline.yml");
    run.assert_stderr_contains(&format!("Kubespray variables: {}", vars_path.display()))
        .assert_stderr_contains("installed kubespray-offline 2.27.0: 3 files written");
    assert_no_staging(&web);
    assert!(temp_files(&web).is_empty(), "{:?}", temp_files(&web));
    assert_public_modes(&web);

    // Every installed file, over HTTP from the web-root Apache, equals the upstream file.
    for (dest, (rel, sha, size)) in &built.files {
        let (status, body) = site.http_get(dest);
        assert_eq!(status, 200, "GET /{dest}");
        assert_eq!(body.len() as u64, *size, "GET /{dest}");
        assert_eq!(sha256_bytes(&body), *sha, "GET /{dest}");
        assert_eq!(sha256_file(built.upstream.join(rel)), *sha);
    }

    // kubespray-offline.yml, served with the rest, rendered through Kubespray's defaults.
    let (status, served) = site.http_get("kubespray-offline.yml");
    assert_eq!(status, 200);
    assert_eq!(served, fs::read(&vars_path).unwrap());
    let text = String::from_utf8(served).expect("UTF-8");
    let doc: BTreeMap<String, serde_yaml_ng::Value> = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("kubespray-offline.yml is not YAML: {e}\n{text}"));
    let mut vars: BTreeMap<String, String> = doc
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("{k} is not a string:\n{text}"));
            (k.clone(), v.to_string())
        })
        .collect();
    let base = base_url.trim_end_matches('/');
    assert_eq!(vars["files_repo"], format!("{base}/files"), "{text}");
    assert_eq!(
        vars["dl_k8s_io_url"], "{{ files_repo }}/dl.k8s.io",
        "{text}"
    );
    assert_eq!(vars["github_url"], "{{ files_repo }}/github.com", "{text}");
    for (k, v) in [
        ("kube_version", "1.31.4"),
        ("image_arch", "amd64"),
        ("cni_version", "1.6.0"),
    ] {
        vars.insert(k.into(), v.into());
    }
    let templates = [
        (
            "{{ dl_k8s_io_url }}/release/v{{ kube_version }}/bin/linux/{{ image_arch }}/kubeadm",
            format!("files/{KUBE}/kubeadm"),
        ),
        (
            "{{ dl_k8s_io_url }}/release/v{{ kube_version }}/bin/linux/{{ image_arch }}/kubelet",
            format!("files/{KUBE}/kubelet"),
        ),
        (
            "{{ github_url }}/containernetworking/plugins/releases/download/v{{ cni_version }}/cni-plugins-linux-{{ image_arch }}-v{{ cni_version }}.tgz",
            format!("files/{CNI}"),
        ),
    ];
    for (template, dest) in templates {
        let url = render(template, &vars);
        let path = url
            .strip_prefix(&base_url)
            .unwrap_or_else(|| panic!("{url} is not under --base-url {base_url}"));
        let (status, body) = site.http_get(path);
        assert_eq!(status, 200, "GET {url} (from {template})");
        assert_eq!(
            sha256_bytes(&body),
            built.files[&dest].1,
            "GET {url} (from {template})"
        );
    }

    // The receipt.
    let verify = run_bundle(
        &[
            "verify".as_ref(),
            built.bundle.as_os_str(),
            "--pubkey".as_ref(),
            built.pubkey.as_os_str(),
            "--json".as_ref(),
        ],
        &[],
    );
    verify.assert_ok();
    let verified: serde_json::Value = serde_json::from_str(&verify.stdout).expect("verify --json");
    let r = receipt(&web, "kubespray-offline", "2.27.0");
    assert_eq!(r["name"], "kubespray-offline", "{r:#}");
    assert_eq!(r["version"], "2.27.0", "{r:#}");
    assert_eq!(r["index_sha256"], verified["index_sha256"], "{r:#}");
    assert_eq!(r["signed_by"], verified["key_id"], "{r:#}");
    assert_eq!(
        r["bundle"],
        built
            .bundle
            .canonicalize()
            .unwrap()
            .to_string_lossy()
            .as_ref(),
        "{r:#}"
    );
    assert_eq!(
        r["kubespray_vars"],
        vars_path.to_string_lossy().as_ref(),
        "{r:#}"
    );
    let installed_at = r["installed_at"].as_str().expect("installed_at");
    assert!(
        installed_at.len() >= 20 && installed_at.as_bytes()[10] == b'T',
        "installed_at is not RFC 3339: {installed_at}"
    );
    let receipt_files: BTreeMap<String, (String, u64, String)> = r["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                (
                    f["sha256"].as_str().unwrap().to_string(),
                    f["size"].as_u64().unwrap(),
                    f["status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, u64, String)> = built
        .files
        .iter()
        .map(|(d, (_, sha, size))| (d.clone(), (sha.clone(), *size, "installed".to_string())))
        .collect();
    assert_eq!(receipt_files, want, "{r:#}");

    // --json: a parseable report on stdout, nothing else; a re-run writes nothing.
    let report = install_json(&built.bundle, &built.pubkey, &web);
    assert_eq!(report["name"], "kubespray-offline", "{report:#}");
    assert_eq!(report["version"], "2.27.0", "{report:#}");
    assert_eq!(report["installed"], 0, "{report:#}");
    assert_eq!(report["already_present"], 3, "{report:#}");
    assert_eq!(report["bytes_written"], 0, "{report:#}");
    assert_eq!(
        report["kubespray_vars"],
        vars_path.to_string_lossy().as_ref(),
        "{report:#}"
    );
    assert_eq!(
        report["receipt"],
        web.join(".bundle/kubespray-offline-2.27.0.json")
            .to_string_lossy()
            .as_ref(),
        "{report:#}"
    );
    let r = receipt(&web, "kubespray-offline", "2.27.0");
    assert!(
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == "present"),
        "{r:#}"
    );
    assert_no_staging(&web);
    drop(site);
}

// ---------------------------------------------------------------------------
// 2. Idempotence
// ---------------------------------------------------------------------------

#[test]
fn reinstall_writes_nothing_and_repairs_a_wrong_file() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "b", "idem", 100);
    let n = built.files.len();
    let web = ws.mkdir("web");
    let receipt_rel = format!(".bundle/{}-{}.json", built.name, built.version);

    let first = install_json(&built.bundle, &built.pubkey, &web);
    assert_eq!(first["installed"], n, "{first:#}");
    assert_eq!(first["already_present"], 0, "{first:#}");
    let total: u64 = built.files.values().map(|f| f.2).sum();
    assert_eq!(first["bytes_written"], total, "{first:#}");
    let snap1 = tree_snapshot(&web);
    let stamps1 = file_stamps(&web);
    let receipt1 = fs::read(web.join(&receipt_rel)).unwrap();

    // Let a rewrite show in the mtimes, then re-run.
    sleep(Duration::from_millis(20));
    let second = install_json(&built.bundle, &built.pubkey, &web);
    assert_eq!(second["installed"], 0, "{second:#}");
    assert_eq!(second["already_present"], n, "{second:#}");
    assert_eq!(second["bytes_written"], 0, "{second:#}");
    let mut snap2 = tree_snapshot(&web);
    let mut stamps2 = file_stamps(&web);
    assert_ne!(
        fs::read(web.join(&receipt_rel)).unwrap(),
        receipt1,
        "the receipt records the statuses and time of the last install"
    );
    let (mut s1, mut t1) = (snap1.clone(), stamps1.clone());
    for m in [&mut s1, &mut snap2] {
        assert!(m.remove(&receipt_rel).is_some(), "receipt in the snapshot");
    }
    for m in [&mut t1, &mut stamps2] {
        m.remove(&receipt_rel);
    }
    assert_eq!(s1, snap2, "an idempotent re-install changed the web root");
    assert_eq!(
        t1, stamps2,
        "an idempotent re-install rewrote files (mtime or inode changed)"
    );
    assert_no_staging(&web);

    // -v names every file; --quiet prints nothing.
    let verbose = install(&built.bundle, &built.pubkey, &web, &["-v"]);
    verbose.assert_ok();
    for dest in built.files.keys() {
        verbose.assert_stderr_contains(&format!("present   {dest}"));
    }
    verbose.assert_stderr_contains(&format!("0 files written (0 B), {n} already present"));
    let quiet = install(&built.bundle, &built.pubkey, &web, &["--quiet"]);
    quiet.assert_ok();
    assert_eq!(quiet.stderr, "", "--quiet printed something");
    assert_eq!(quiet.stdout, "", "--quiet printed something");

    // A destination with the wrong content (same size, and truncated) is replaced.
    let mut dests = built.files.keys();
    let same_size = dests.next().unwrap().clone();
    let truncated = dests.next().unwrap().clone();
    let size = built.files[&same_size].2 as usize;
    fs::write(web.join(&same_size), random_bytes(size, 999)).unwrap();
    fs::write(web.join(&truncated), b"partial").unwrap();
    let third = install_json(&built.bundle, &built.pubkey, &web);
    assert_eq!(third["installed"], 2, "{third:#}");
    assert_eq!(third["already_present"], n - 2, "{third:#}");
    for dest in [&same_size, &truncated] {
        assert_eq!(sha256_file(web.join(dest)), built.files[dest].1, "{dest}");
    }
    let r = receipt(&web, &built.name, &built.version);
    for f in r["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let want = if path == same_size || path == truncated {
            "installed"
        } else {
            "present"
        };
        assert_eq!(f["status"], want, "{r:#}");
    }
    let mut snap3 = tree_snapshot(&web);
    snap3.remove(&receipt_rel);
    assert_eq!(
        snap3, snap2,
        "the repaired web root equals the first install"
    );
    assert_public_modes(&web);
    assert_no_staging(&web);
}

// ---------------------------------------------------------------------------
// 3. Tamper matrix through install: exit 3, web root untouched
// ---------------------------------------------------------------------------

#[test]
fn tampered_bundles_write_nothing() {
    let ws = Workspace::new();
    let src = make_source_bundle(&ws.path("source"));
    let keys = TamperKeys::generate(&ws.path("keys"), &src.pubkey);

    // A web root in use: an unrelated file, and a previous install of another bundle
    // (signed with the same trusted key).
    let web = ws.mkdir("web");
    ws.write("web/index.html", "<h1>site</h1>\n");
    ws.write("web/files/local/notes.txt", "operator notes\n");
    make_world_readable(&web);
    let previous = {
        let other_ws = Workspace::new();
        let files = vec![
            ("prev/a.bin".to_string(), random_bytes(50_000, 1)),
            ("prev/b/c.bin".to_string(), random_bytes(60_000, 2)),
        ];
        // Signed by the tamper source's key, so the trusted key installs both bundles.
        fs::copy(&src.key, other_ws.path("site.key")).unwrap();
        fs::copy(&src.pubkey, other_ws.path("site.pub")).unwrap();
        let built = make_bundle(&other_ws, "p", "previous", "0.1", &files, Urls::Local);
        let bundle = ws.path("previous.bundle.tar.zst");
        fs::copy(&built.bundle, &bundle).unwrap();
        (bundle, built.files)
    };
    install(&previous.0, &src.pubkey, &web, &[]).assert_ok();
    let baseline = tree_snapshot(&web);
    assert!(baseline.contains_key(".bundle/previous-0.1.json"));
    assert!(baseline.contains_key("kubespray-offline.yml"));

    let cases = tamper::tamper_cases(&ws.path("cases"), &src.bundle, &keys);
    assert!(cases.len() > 30, "only {} tamper cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let run = install(&case.bundle, &case.pubkey, &web, &[]);
        if let Some(why) = case.mismatch(&run) {
            failures.push(why);
        }
        let after = tree_snapshot(&web);
        if after != baseline {
            failures.push(format!(
                "case `{}`: the web root changed\n{}",
                case.name,
                snapshot_diff(&baseline, &after)
            ));
            // Restore the baseline for the next case.
            let _ = fs::remove_dir_all(&web);
            ws.mkdir("web");
            ws.write("web/index.html", "<h1>site</h1>\n");
            ws.write("web/files/local/notes.txt", "operator notes\n");
            make_world_readable(&web);
            install(&previous.0, &src.pubkey, &web, &[]).assert_ok();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} tamper cases failed through install:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );

    // A bundle of an unknown format version, properly signed by the trusted key: refused
    // with the version named, before anything is written.
    let entries = read_tar(&decompress(&fs::read(&src.bundle).unwrap()));
    let mut index: serde_json::Value = serde_json::from_slice(&entries[0].data).unwrap();
    index["format"] = serde_json::json!(2);
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let secret = SecretKey::load(&src.key, || unreachable!("unencrypted key")).unwrap();
    let signature = secret
        .sign(&index_bytes, "c")
        .to_file_string("x")
        .into_bytes();
    let mut v2 = entries.clone();
    v2[0].data = index_bytes;
    v2[1].data = signature;
    let v2_bundle = ws.write("format-2.bundle.tar.zst", build_bundle(&v2, Framing::Plain));
    let run = install(&v2_bundle, &src.pubkey, &web, &[]);
    // Exit 2: the bundle is authentic but needs another release of the tool (a usage
    // problem), not a verification failure.
    run.assert_code(2)
        .assert_stderr_contains("format version 2 is not supported")
        .assert_stderr_contains("reads version 1");
    assert_eq!(
        tree_snapshot(&web),
        baseline,
        "format 2: the web root changed"
    );

    // Positive control: the untampered bundle installs into the same web root, and the
    // Kubespray variables then cover both bundles.
    let report = install_json(&src.bundle, &src.pubkey, &web);
    assert_eq!(report["installed"], src.content.len(), "{report:#}");
    let vars = fs::read_to_string(web.join("kubespray-offline.yml")).unwrap();
    assert!(
        vars.contains("bundles installed: previous 0.1, tamper-source 1.0.0"),
        "{vars}"
    );
    for (dest, (_, sha, _)) in &previous.1 {
        assert_eq!(sha256_file(web.join(dest)), *sha, "{dest} kept");
    }
    assert_eq!(
        fs::read_to_string(web.join("files/local/notes.txt")).unwrap(),
        "operator notes\n"
    );
    assert_no_staging(&web);
}

// ---------------------------------------------------------------------------
// 4. Crash safety: SIGKILL at any point, then a re-run finishes the job
// ---------------------------------------------------------------------------

#[test]
fn sigkill_at_any_point_never_shows_a_torn_file_and_a_rerun_finishes() {
    let ws = Workspace::new();
    let t0 = Instant::now();
    let mut files = Vec::new();
    for i in 0..40 {
        files.push((
            format!("small/part-{i:02}.bin"),
            random_bytes(4 << 20, 1000 + i),
        ));
    }
    for i in 0..2 {
        files.push((
            format!("large/blob-{i}.bin"),
            random_bytes(60 << 20, 2000 + i),
        ));
    }
    let built = make_bundle(&ws, "big", "crash", "1.0.0", &files, Urls::Local);
    drop(files);
    let setup = t0.elapsed();

    // Reference: one uninterrupted install into A, timed once the setup's dirty pages are
    // on disk (the install's own syncfs would otherwise flush them too).
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let web_a = ws.mkdir("web-a");
    let t = Instant::now();
    install(&built.bundle, &built.pubkey, &web_a, &[]).assert_ok();
    let duration = t.elapsed();
    unsafe { libc::sync() };

    let web_b = ws.mkdir("web-b");
    let web_c = ws.mkdir("web-c");
    let expected = &built.files;
    let mut log = Vec::new();
    let spawn = |web: &Path| {
        Command::new(bundle_bin())
            .arg("install")
            .arg(&built.bundle)
            .arg("--pubkey")
            .arg(&built.pubkey)
            .arg("--web-root")
            .arg(web)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bundle install")
    };
    // SIGKILLs `child` (unless it finished first), then checks that every file visible
    // under its final name in `web` is whole. Returns the number of files in place.
    let mut kill_and_check = |mut child: std::process::Child, web: &Path, label: String| {
        let finished = child.try_wait().expect("try_wait").is_some();
        if !finished {
            child.kill().expect("SIGKILL the install");
        }
        let status = child.wait().expect("wait");
        let present = check_no_torn_file(web, expected);
        log.push(format!(
            "{label}: {}, {present}/{} files in place, receipt: {}, staging left: {}",
            if finished {
                format!("finished first ({status})")
            } else {
                "killed".to_string()
            },
            expected.len(),
            web.join(".bundle/crash-1.0.0.json").exists(),
            !names_starting(web, ".bundle-staging-").is_empty()
        ));
        present
    };

    // B: kills spread over the run, each run resuming what the last one left.
    for fraction in [0.1, 0.3, 0.5, 0.7, 0.9] {
        let child = spawn(&web_b);
        let delay = duration.mul_f64(fraction);
        sleep(delay);
        kill_and_check(
            child,
            &web_b,
            format!("B {:.0}% ({delay:?})", fraction * 100.0),
        );
    }

    // C: kills aimed by watching the web root, since the commit (renames into place) and
    // the receipt take milliseconds at the very end of the run: as soon as the first file
    // is in place (the commit is under way), as soon as anything appears in `.bundle/` (the
    // receipt is being written), as soon as a temporary file appears at the top of the web
    // root (`kubespray-offline.yml` is being written).
    let first = web_c.join(expected.keys().next().expect("files"));
    let has_entry_starting =
        |dir: PathBuf, prefix: &'static str| move || !names_starting(&dir, prefix).is_empty();
    type Watch<'a> = (&'a str, Box<dyn Fn() -> bool + 'a>);
    let watches: [Watch; 3] = [
        ("C: first file in place", Box::new(|| first.exists())),
        (
            "C: receipt being written",
            Box::new(has_entry_starting(web_c.join(".bundle"), "")),
        ),
        (
            "C: variables being written",
            Box::new(has_entry_starting(web_c.clone(), ".tmp-")),
        ),
    ];
    let mut in_commit = 0;
    for (n, (label, fired)) in watches.iter().enumerate() {
        let mut child = spawn(&web_c);
        let t = Instant::now();
        while !fired() && t.elapsed() < duration * 10 && child.try_wait().unwrap().is_none() {
            sleep(Duration::from_micros(50));
        }
        let present = kill_and_check(child, &web_c, format!("{label} ({:?})", t.elapsed()));
        if n == 0 {
            in_commit = present;
        }
    }

    let report = install_json(&built.bundle, &built.pubkey, &web_c);
    let n = expected.len() as u64;
    assert_eq!(
        report["installed"].as_u64().unwrap() + report["already_present"].as_u64().unwrap(),
        n,
        "{report:#}"
    );
    let report = install_json(&built.bundle, &built.pubkey, &web_b);
    assert_eq!(
        report["installed"].as_u64().unwrap() + report["already_present"].as_u64().unwrap(),
        n,
        "{report:#}"
    );
    let strip = |web: &Path| {
        let mut s = tree_snapshot(web);
        s.retain(|k, _| !(k.starts_with(".bundle/") && k.ends_with(".json")));
        s
    };
    let a = strip(&web_a);
    for (name, web) in [("B", &web_b), ("C", &web_c)] {
        assert_no_staging(web);
        let b = strip(web);
        assert!(
            a == b,
            "the interrupted-then-finished web root {name} differs from the reference:\n{}\nkills:\n{}",
            snapshot_diff(&a, &b),
            log.join("\n")
        );
        assert_public_modes(web);
        receipt(web, "crash", "1.0.0");
    }
    assert_no_staging(&web_a);
    eprintln!(
        "crash test: setup {setup:?}, uninterrupted install {duration:?}, total {:?}, \
         files in place when killed mid-commit: {in_commit}/{n}\n{}",
        t0.elapsed(),
        log.join("\n")
    );
}

/// Every file under `files/` must be one the bundle carries, complete and correct; returns
/// how many are in place. Also: a receipt or variables file, when present, is whole.
#[track_caller]
fn check_no_torn_file(web: &Path, expected: &BTreeMap<String, (String, String, u64)>) -> usize {
    let mut present = 0;
    let files = web.join("files");
    if files.exists() {
        for entry in walkdir::WalkDir::new(&files) {
            let entry = entry.expect("walk");
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(web)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let (_, sha, size) = expected
                .get(&rel)
                .unwrap_or_else(|| panic!("unexpected file visible after SIGKILL: {rel}"));
            let meta = entry.metadata().unwrap();
            assert_eq!(meta.len(), *size, "torn file visible after SIGKILL: {rel}");
            assert_eq!(
                sha256_file(entry.path()),
                *sha,
                "wrong content visible after SIGKILL: {rel}"
            );
            assert_eq!(meta.mode() & 0o777, 0o644, "{rel}");
            present += 1;
        }
    }
    if let Ok(rd) = fs::read_dir(web.join(".bundle")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                let bytes = fs::read(e.path()).unwrap();
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|err| panic!("torn receipt {name}: {err}"));
            }
        }
    }
    if let Ok(text) = fs::read_to_string(web.join("kubespray-offline.yml")) {
        assert!(
            text.contains("files_repo: "),
            "torn variables file:\n{text}"
        );
    }
    present
}

// ---------------------------------------------------------------------------
// 5. Full disk, no inodes, read-only web root
// ---------------------------------------------------------------------------

#[test]
fn not_enough_space_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    let files = vec![
        ("a/one.bin".to_string(), random_bytes(3 << 20, 21)),
        ("b/two.bin".to_string(), random_bytes(3 << 20, 22)),
    ];
    let built = make_bundle(&ws, "b", "big", "1.0.0", &files, Urls::Local);
    let needed: u64 = built.files.values().map(|f| f.2).sum();
    let mnt = ws.path("small-fs");
    let _guard = Tmpfs::mount(&mnt, "size=2m");
    let free = statvfs_free(&mnt);
    let before = tree_snapshot(&mnt);
    assert!(before.is_empty());

    let run = install(&built.bundle, &built.pubkey, &mnt, &[]);
    run.assert_code(1)
        .assert_stderr_contains("not enough space")
        .assert_stderr_contains(&format!("needs {needed} bytes"))
        .assert_stderr_contains(&format!("{free} are free"))
        .assert_stderr_contains("nothing was written");
    assert_eq!(
        tree_snapshot(&mnt),
        before,
        "a refused install wrote something"
    );
}

/// Runs out of inodes at every possible point (staging, each directory of the commit, the
/// receipt, the variables file): every failure exits 1 saying so and leaves the web root
/// as it was; with enough inodes the install succeeds.
#[test]
fn running_out_of_inodes_at_any_point_leaves_the_web_root_unchanged() {
    let ws = Workspace::new();
    let rels = [
        "top.bin",
        "n1/f1.bin",
        "n1/n2/f2.bin",
        "n1/n2/n3/f3.bin",
        "n1/n2/n3/n4/f4.bin",
        "m1/f5.bin",
        "m1/m2/f6.bin",
        "m1/m2/f7.bin",
        "z/f8.bin",
        "z/f9.bin",
    ];
    let files: Vec<(String, Vec<u8>)> = rels
        .iter()
        .enumerate()
        .map(|(i, r)| (r.to_string(), random_bytes(64 << 10, 300 + i as u64)))
        .collect();
    let built = make_bundle(&ws, "b", "nested", "1.0.0", &files, Urls::Local);
    let mnt = ws.path("inode-fs");

    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    let mut succeeded = false;
    for nr_inodes in 8..60 {
        let guard = Tmpfs::mount(&mnt, &format!("size=50m,nr_inodes={nr_inodes}"));
        let run = install(&built.bundle, &built.pubkey, &mnt, &[]);
        let after = tree_snapshot(&mnt);
        if run.code == 0 {
            for (dest, (_, sha, _)) in &built.files {
                assert_eq!(sha256_file(mnt.join(dest)), *sha, "{dest}");
            }
            assert_no_staging(&mnt);
            outcomes.push(format!("nr_inodes={nr_inodes}: installed"));
            succeeded = true;
            drop(guard);
            break;
        }
        outcomes.push(format!(
            "nr_inodes={nr_inodes}: exit {}: {}",
            run.code,
            first_line(&run.stderr)
        ));
        if run.code != 1 || !run.stderr.contains("No space left") {
            failures.push(format!(
                "nr_inodes={nr_inodes}: expected exit 1 and \"No space left\", got exit {}\n{}",
                run.code, run.stderr
            ));
        }
        // SPEC §5: an error says what to do next.
        if run.code == 1 && !run.stderr.contains("hint:") {
            failures.push(format!(
                "nr_inodes={nr_inodes}: no hint on what to do next\n{}",
                run.stderr
            ));
        }
        if run.stderr.contains("panicked") {
            failures.push(format!("nr_inodes={nr_inodes}: panic\n{}", run.stderr));
        }
        if !after.is_empty() {
            failures.push(format!(
                "nr_inodes={nr_inodes}: the failed install left {:?}\n{}",
                after.keys().collect::<Vec<_>>(),
                run.stderr
            ));
        }
        drop(guard);
    }
    assert!(succeeded, "never succeeded:\n{}", outcomes.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n\noutcomes:\n{}",
        failures.join("\n\n"),
        outcomes.join("\n")
    );
    // nr_inodes=8 runs out while staging; later ones while the commit creates directories.
    assert!(outcomes[0].contains("exit 1"), "{}", outcomes.join("\n"));
    assert!(
        outcomes.len() > 12,
        "the commit's own directory creation was never starved:\n{}",
        outcomes.join("\n")
    );
    eprintln!("inode exhaustion:\n{}", outcomes.join("\n"));
}

#[test]
fn read_only_web_root_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "b", "ro", 400);
    let mnt = ws.path("ro-fs");
    let _guard = Tmpfs::mount(&mnt, "size=10m,ro");
    let run = install(&built.bundle, &built.pubkey, &mnt, &[]);
    run.assert_code(1)
        .assert_stderr_contains("not writable")
        .assert_stderr_contains(&mnt.display().to_string())
        .assert_stderr_contains("nothing was written");
    assert!(tree_snapshot(&mnt).is_empty());
}

// ---------------------------------------------------------------------------
// 6. Usage
// ---------------------------------------------------------------------------

#[test]
fn web_root_required_and_checked() {
    let ws = Workspace::new();
    let built = small_bundle(&ws, "b", "usage", 500);
    let before = tree_snapshot(ws.root());

    // No --web-root for a bundle that carries files: a usage error naming the flag.
    let run = run_bundle(
        &[
            "install".as_ref(),
            built.bundle.as_os_str(),
            "--pubkey".as_ref(),
            built.pubkey.as_os_str(),
        ],
        &[],
    );
    run.assert_code(2)
        .assert_stderr_contains("--web-root")
        .assert_stderr_contains("4 files");

    // A web root that does not exist: a usage error naming it, and it is not created.
    let missing = ws.path("no/such/web-root");
    let run = install(&built.bundle, &built.pubkey, &missing, &[]);
    run.assert_code(2)
        .assert_stderr_contains(&missing.display().to_string())
        .assert_stderr_contains("no such directory");
    assert!(!missing.exists() && !ws.path("no").exists());

    // A web root that is a regular file: a usage error.
    let file = ws.write("not-a-dir", "x");
    let before_file = tree_snapshot(ws.root());
    let run = install(&built.bundle, &built.pubkey, &file, &[]);
    run.assert_code(2)
        .assert_stderr_contains("not a directory")
        .assert_stderr_contains(&file.display().to_string());
    assert_eq!(tree_snapshot(ws.root()), before_file);

    fs::remove_file(&file).unwrap();
    assert_eq!(
        tree_snapshot(ws.root()),
        before,
        "a refused install wrote something"
    );
}
