//! A real upstream simple repository for the `python:` tests (issue 16): real wheels
//! fetched once per target dir with stock `pip download` (the machine's own pip
//! configuration names the index; no index host is written here), laid out as a PEP 503
//! tree and served by a private [`Apache`] on 127.0.0.1 — either HTML only, or with PEP 691
//! JSON beside it through Apache's own content negotiation (a type map per project), so
//! that the same URL answers JSON to a client that asks for it and HTML to one that does
//! not. Plus a stock, isolated `pip` that proves what an installed mirror serves.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{Apache, Workspace, output_ok, sha256_file, show_output};

/// Target of the binary wheels below.
pub const PYTHON: &str = "3.11";

/// `pip download` runs, each with its own options: pure wheels for the venv install,
/// a second jmespath for merges, and MarkupSafe's CPython 3.11 wheels for two platforms
/// (so that `lock` has a choice to make).
const DOWNLOADS: &[&[&str]] = &[
    &[
        "--only-binary=:all:",
        "six==1.16.0",
        "jmespath==1.0.1",
        "netaddr==1.3.0",
        "passlib==1.7.4",
    ],
    &["--only-binary=:all:", "jmespath==1.0.0"],
    &[
        "--only-binary=:all:",
        "--platform",
        "manylinux2014_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "markupsafe==2.1.5",
    ],
    &[
        "--only-binary=:all:",
        "--platform",
        "musllinux_1_1_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "markupsafe==2.1.5",
    ],
];

pub const SIX: &str = "six-1.16.0-py2.py3-none-any.whl";
pub const JMESPATH: &str = "jmespath-1.0.1-py3-none-any.whl";
pub const JMESPATH_OLD: &str = "jmespath-1.0.0-py3-none-any.whl";
pub const NETADDR: &str = "netaddr-1.3.0-py3-none-any.whl";
pub const PASSLIB: &str = "passlib-1.7.4-py2.py3-none-any.whl";
pub const MARKUPSAFE_MANYLINUX: &str =
    "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
pub const MARKUPSAFE_MUSL: &str = "MarkupSafe-2.1.5-cp311-cp311-musllinux_1_1_x86_64.whl";
pub const ALL: &[&str] = &[
    SIX,
    JMESPATH,
    JMESPATH_OLD,
    NETADDR,
    PASSLIB,
    MARKUPSAFE_MANYLINUX,
    MARKUPSAFE_MUSL,
];

/// The wheels, downloaded once into `$CARGO_TARGET_TMPDIR/pypi-wheels/` (a file lock
/// makes parallel tests wait for one download). Never modify them: copy them.
pub fn cached_wheels() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pypi-wheels");
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("mkdir {}: {e}", cache.display()));
    let lock = fs::File::create(cache.join(".lock")).expect("create lock file");
    lock.lock().expect("lock the wheel cache");
    if !ALL.iter().all(|f| cache.join(f).is_file()) {
        for args in DOWNLOADS {
            let out = Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
                .arg(&cache)
                .args(*args)
                .stdin(Stdio::null())
                .output()
                .expect("spawn pip download");
            assert!(
                out.status.success(),
                "pip download {args:?} (from the machine's configured index) failed:\n{}",
                show_output(&out)
            );
        }
    }
    for f in ALL {
        assert!(cache.join(f).is_file(), "pip download gave no {f}");
    }
    cache
}

/// A wheel's core metadata (its `.dist-info/METADATA`, what an index serves as
/// `<file>.metadata`, PEP 658), read with Python's zipfile.
pub fn core_metadata(wheel: &Path) -> Vec<u8> {
    let script = r#"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = [n for n in z.namelist() if n.endswith('.dist-info/METADATA')][0]
sys.stdout.buffer.write(z.read(name))
"#;
    output_ok(Command::new("python3").arg("-c").arg(script).arg(wheel))
}

/// The `Requires-Python` of a wheel's metadata (what PyPI serves as
/// `data-requires-python`).
pub fn requires_python(metadata: &[u8]) -> Option<String> {
    String::from_utf8_lossy(metadata)
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Requires-Python:"))
        .map(|v| v.trim().to_string())
}

/// PEP 503 normalisation, for the fixture's directory names.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// How the upstream index answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// PEP 503 HTML only.
    Html,
    /// PEP 691 JSON to clients that ask for it, HTML to the others (Apache type maps).
    Negotiated,
}

/// An upstream simple repository on 127.0.0.1: `simple/<project>/` pages linking
/// `packages/<file>` with `#sha256=`, `data-requires-python` and the file's core metadata
/// (`packages/<file>.metadata`, PEP 658), as PyPI serves them.
pub struct PyIndex {
    pub apache: Apache,
    pub root: PathBuf,
}

impl PyIndex {
    /// Serves `files` (names from [`ALL`]) from `<ws>/<dir>/`.
    pub fn build(ws: &Workspace, dir: &str, api: Api, files: &[&str]) -> PyIndex {
        let cache = cached_wheels();
        let root = ws.mkdir(dir);
        fs::create_dir_all(root.join("packages")).unwrap();
        let mut projects: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        for f in files {
            fs::copy(cache.join(f), root.join("packages").join(f)).unwrap();
            let project = normalize(f.split('-').next().unwrap());
            projects.entry(project).or_default().push(f);
        }
        let mut top = String::from("<!DOCTYPE html>\n<html><body>\n");
        for (project, files) in &projects {
            top.push_str(&format!("<a href=\"{project}/\">{project}</a>\n"));
            let dir = root.join("simple").join(project);
            fs::create_dir_all(&dir).unwrap();
            let mut html = format!("<!DOCTYPE html>\n<html><body><h1>Links for {project}</h1>\n");
            let mut json_files = Vec::new();
            for f in files {
                let path = root.join("packages").join(f);
                let sha = sha256_file(&path);
                let metadata = core_metadata(&path);
                let metadata_sha = super::sha256_bytes(&metadata);
                fs::write(
                    root.join("packages").join(format!("{f}.metadata")),
                    &metadata,
                )
                .unwrap();
                let rp = requires_python(&metadata);
                let attr = rp
                    .as_deref()
                    .map(|r| {
                        format!(
                            " data-requires-python=\"{}\"",
                            r.replace('&', "&amp;")
                                .replace('<', "&lt;")
                                .replace('>', "&gt;")
                        )
                    })
                    .unwrap_or_default();
                html.push_str(&format!(
                    "<a href=\"../../packages/{f}#sha256={sha}\"{attr} data-dist-info-metadata=\"sha256={metadata_sha}\">{f}</a><br/>\n"
                ));
                json_files.push(serde_json::json!({
                    "filename": f,
                    "url": format!("../../packages/{f}"),
                    "hashes": {"sha256": sha},
                    "requires-python": rp,
                    "size": fs::metadata(&path).unwrap().len(),
                    "yanked": false,
                    "core-metadata": {"sha256": metadata_sha},
                }));
            }
            html.push_str("</body></html>\n");
            fs::write(dir.join("index.html"), html).unwrap();
            if api == Api::Negotiated {
                let json = serde_json::json!({
                    "meta": {"api-version": "1.1"},
                    "name": project,
                    "files": json_files,
                });
                fs::write(dir.join("index.json"), json.to_string()).unwrap();
                fs::write(
                    dir.join("index.var"),
                    "URI: index.json\nContent-Type: application/vnd.pypi.simple.v1+json\n\n\
                     URI: index.html\nContent-Type: text/html; qs=0.5\n",
                )
                .unwrap();
            }
        }
        top.push_str("</body></html>\n");
        fs::write(root.join("simple/index.html"), top).unwrap();
        let extra = match api {
            Api::Html => String::new(),
            // A more specific context than the harness's own `DirectoryIndex index.html`
            // (which directives in the same context would only add to); a variant's type
            // comes from its extension, so `.json` is given PEP 691's.
            Api::Negotiated => format!(
                "LoadModule negotiation_module /usr/lib/apache2/modules/mod_negotiation.so\n\
                 AddHandler type-map .var\n\
                 <Directory \"{}\">\n\
                 DirectoryIndex index.var index.html\n\
                 AddType application/vnd.pypi.simple.v1+json .json\n\
                 </Directory>\n",
                root.canonicalize().unwrap().join("simple").display()
            ),
        };
        let apache = Apache::start_with_config(&root, &extra);
        PyIndex { apache, root }
    }

    /// `http://127.0.0.1:PORT/simple`
    pub fn index_url(&self) -> String {
        self.apache.url("simple")
    }

    /// Where upstream serves `file`.
    pub fn file_url(&self, file: &str) -> String {
        self.apache.url(&format!("packages/{file}"))
    }

    /// The served copy of `file` (to change it after a lock).
    pub fn file_path(&self, file: &str) -> PathBuf {
        self.root.join("packages").join(file)
    }
}

/// Stock pip, isolated from the machine's configuration: no config file, no
/// `PIP_FIND_LINKS` or other `PIP_*` variables, no cache; only what `args` name.
pub fn pip(python_or_pip: &Path, args: &[&str], cwd: &Path) -> Output {
    let mut cmd = Command::new(python_or_pip);
    if python_or_pip.ends_with("python3") {
        cmd.args(["-m", "pip"]);
    }
    cmd.arg("--isolated")
        .args(["--no-cache-dir", "--disable-pip-version-check"])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("PIP_CONFIG_FILE", "/dev/null");
    for (k, _) in std::env::vars() {
        if k.starts_with("PIP_") && k != "PIP_CONFIG_FILE" {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("spawn pip")
}

/// A fresh virtual environment at `dir` (stock `python3 -m venv`); its pip.
pub fn venv(dir: &Path) -> PathBuf {
    output_ok(Command::new("python3").args(["-m", "venv"]).arg(dir));
    dir.join("bin/pip")
}

/// Stock `uv` (Astral's installer), fetched once with stock pip from the machine's
/// configured index into `$CARGO_TARGET_TMPDIR/uv-tool/`; the path of its binary.
pub fn cached_uv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("uv-tool");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let lock = fs::File::create(dir.join(".lock")).expect("create lock file");
    lock.lock().expect("lock the uv cache");
    let bin = dir.join("pkg/bin/uv");
    if !bin.is_file() {
        let _ = fs::remove_dir_all(dir.join("pkg"));
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .arg("--target")
            .arg(dir.join("pkg"))
            .arg("uv==0.13.9")
            .stdin(Stdio::null())
            .output()
            .expect("spawn pip install uv");
        assert!(
            out.status.success(),
            "pip install uv (from the machine's configured index) failed:\n{}",
            show_output(&out)
        );
    }
    assert!(bin.is_file(), "pip install uv gave no {}", bin.display());
    bin
}

/// `uv ARGS` with no configuration file, no cache and none of the machine's `UV_*` or
/// `PIP_*` variables: only what `args` name.
pub fn uv(args: &[&str], cwd: &Path) -> Output {
    let mut cmd = Command::new(cached_uv());
    cmd.args(args)
        .args(["--no-config", "--no-cache"])
        .current_dir(cwd)
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("UV_") || k.starts_with("PIP_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("spawn uv")
}
