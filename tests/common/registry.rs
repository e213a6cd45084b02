//! A real `docker-registry` (CNCF distribution 2.8) on a free 127.0.0.1 port, optionally
//! with htpasswd basic auth or distribution's token auth (with [`TokenServer`], a small
//! token service on 127.0.0.1 that signs RS256 JWTs with a key made by the `openssl` CLI),
//! optionally over TLS with a certificate from a test CA made by the `openssl` CLI
//! ([`Registry::start_tls`]), and small real images built offline with `umoci` and pushed
//! with `skopeo`. Stopped (by pid, or the server's thread joined) when dropped. Also a
//! server that answers every request with 500 ([`FailingServer`]) and the `lock` /
//! `create` runs of image manifests shared by the image tests, and a forwarding proxy that
//! answers chosen requests with an error instead ([`FaultProxy`]).

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::{
    Run, Workspace, free_port, output_ok, port_accepts, require_tool, run_bundle_in, sha256_bytes,
};

/// The `service` (the JWT's `aud`) and `issuer` (`iss`) a token-auth registry expects.
pub const TOKEN_SERVICE: &str = "test-registry";
pub const TOKEN_ISSUER: &str = "test-issuer";

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What [`Registry::start_configured`] changes in a registry's config.
#[derive(Debug, Default, Clone, Copy)]
pub struct Settings {
    /// Serve HTTPS, as [`Registry::start_tls`] does.
    pub tls: bool,
    /// `storage.delete.enabled: false`: a `DELETE` of a manifest is answered 405.
    pub no_deletes: bool,
    /// `http.host` set to `SCHEME://127.0.0.1:PORT` (its own address): the scheme its
    /// upload `Location`s name, whatever the request came in over. Without it, they name
    /// the request's own `Host` (so a [`FaultProxy`] in front gets the uploads too).
    pub host_scheme: Option<&'static str>,
}

pub struct Registry {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    /// With TLS: the directory holding the test CA's certificate as `ca.crt` (what
    /// skopeo's `--cert-dir` wants).
    cert_dir: Option<PathBuf>,
    /// The basic login it requires (`user:password`), used by the inspection helpers.
    login: Option<String>,
}

impl Registry {
    /// Starts a registry storing under `dir`; with `login`, it requires that basic login.
    pub fn start(dir: &Path, login: Option<(&str, &str)>) -> Registry {
        Registry::start_configured(dir, login, Settings::default())
    }

    /// Like [`Registry::start`], serving HTTPS with a certificate for `IP:127.0.0.1` and
    /// `DNS:localhost` signed by a test CA made under `dir` ([`Registry::ca_path`]).
    pub fn start_tls(dir: &Path, login: Option<(&str, &str)>) -> Registry {
        let tls = Settings {
            tls: true,
            ..Settings::default()
        };
        Registry::start_configured(dir, login, tls)
    }

    /// Like [`Registry::start`], with the config changed as `settings` say.
    pub fn start_configured(
        dir: &Path,
        login: Option<(&str, &str)>,
        settings: Settings,
    ) -> Registry {
        fs::create_dir_all(dir).unwrap();
        let mut auth = String::new();
        if let Some((user, password)) = login {
            require_tool("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let htpasswd = dir.join("htpasswd");
            fs::write(&htpasswd, &out.stdout).unwrap();
            auth = format!(
                "auth: {{htpasswd: {{realm: test-registry, path: {}}}}}\n",
                htpasswd.display()
            );
        }
        let cert_dir = settings.tls.then(|| make_test_ca(&dir.join("tls")));
        let mut registry = Registry::serve(dir, &auth, cert_dir, settings);
        registry.login = login.map(|(u, p)| format!("{u}:{p}"));
        registry
    }

    /// Starts a registry storing under `dir` (a registry may have run there before: its
    /// images stay) with distribution's token auth: it sends clients to `realm` for a
    /// Bearer token and accepts JWTs for [`TOKEN_SERVICE`] from [`TOKEN_ISSUER`] whose
    /// `x5c` certificate is in `rootcertbundle`.
    pub fn start_with_token_auth(dir: &Path, realm: &str, rootcertbundle: &Path) -> Registry {
        Registry::serve(
            dir,
            &format!(
                "auth: {{token: {{realm: \"{realm}\", service: {TOKEN_SERVICE}, issuer: {TOKEN_ISSUER}, rootcertbundle: {}}}}}\n",
                rootcertbundle.display()
            ),
            None,
            Settings::default(),
        )
    }

    /// Writes the config (storage under `dir/data`, a free port, TLS with the server
    /// certificate beside `cert_dir`'s CA, then `auth`; deletes and `http.host` as
    /// `settings` say) and waits for the registry to accept connections.
    fn serve(dir: &Path, auth: &str, cert_dir: Option<PathBuf>, settings: Settings) -> Registry {
        require_tool("docker-registry");
        fs::create_dir_all(dir).unwrap();
        // A free port can be taken by another test between `free_port` and the bind: the
        // registry then exits at once (while the port accepts, for someone else). Try again
        // on another port.
        for _ in 0..5 {
            let port = free_port();
            let tls = match &cert_dir {
                Some(d) => format!(
                    ", tls: {{certificate: {}, key: {}}}",
                    d.join("server.pem").display(),
                    d.join("server-key.pem").display()
                ),
                None => String::new(),
            };
            let http_host = settings
                .host_scheme
                .map(|scheme| format!(", host: \"{scheme}://127.0.0.1:{port}\""))
                .unwrap_or_default();
            let config = format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}{tls}{http_host}}}\n{auth}",
                dir.join("data").display(),
                !settings.no_deletes
            );
            let config_path = dir.join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log = fs::File::create(dir.join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut registry = Registry {
                port,
                dir: dir.to_path_buf(),
                child,
                cert_dir: cert_dir.clone(),
                login: None,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut exited = false;
            while !port_accepts(port) {
                if registry.child.try_wait().ok().flatten().is_some() {
                    exited = true;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "docker-registry did not start on port {port}:\n{}",
                    registry.log()
                );
                sleep(Duration::from_millis(50));
            }
            // Still ours a moment later (not someone else's listener on a port we lost)?
            sleep(Duration::from_millis(100));
            if !exited && registry.child.try_wait().ok().flatten().is_none() {
                return registry;
            }
        }
        panic!(
            "docker-registry could not start on a free port (5 tries) under {}",
            dir.display()
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The test CA's certificate (PEM) that signed the server certificate. Panics for a
    /// registry without TLS.
    pub fn ca_path(&self) -> PathBuf {
        self.cert_dir
            .as_ref()
            .expect("a registry started with start_tls")
            .join("ca.crt")
    }

    /// `https://127.0.0.1:PORT/PATH` with TLS, `http://…` without.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.cert_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.host())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// The requests (`"GET /v2/…"`) and statuses of the registry's access log, in order,
    /// of the clients whose User-Agent contains `user_agent`.
    pub fn access_log(&self, user_agent: &str) -> Vec<(String, u16)> {
        self.log()
            .lines()
            .filter(|line| line.contains("] \"") && line.contains(user_agent))
            .filter_map(|line| {
                let (_, rest) = line.split_once("] \"")?;
                let (request, rest) = rest.split_once('"')?;
                let status = rest.split_whitespace().next()?.parse().ok()?;
                let request = request.rsplit_once(' ').map_or(request, |(r, _)| r);
                Some((request.to_string(), status))
            })
            .collect()
    }

    /// skopeo's TLS flag for this registry: its CA with TLS, no verification (plain HTTP)
    /// without. `prefix` is `"dest-"`, `"src-"` or `""`.
    fn skopeo_tls(&self, prefix: &str) -> String {
        match &self.cert_dir {
            Some(d) => format!("--{prefix}cert-dir={}", d.display()),
            None => format!("--{prefix}tls-verify=false"),
        }
    }

    /// `creds`, else the login the registry was started with.
    fn creds<'a>(&'a self, creds: Option<&'a str>) -> Option<&'a str> {
        creds.or(self.login.as_deref())
    }

    /// Pushes the image `oci:LAYOUT:TAG` to `HOST/REPO:TAG` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) {
        let mut args = vec![
            "copy".to_string(),
            "--quiet".to_string(),
            self.skopeo_tls("dest-"),
        ];
        if let Some(c) = self.creds(creds) {
            args.push(format!("--dest-creds={c}"));
        }
        args.push(format!("oci:{}:{tag}", layout.display()));
        args.push(format!("docker://{}/{repo}:{tag}", self.host()));
        run_ok("skopeo", &args);
    }

    /// Copies `HOST/REPO:REFERENCE` (every platform of an index) into the OCI layout
    /// `oci:LAYOUT:NAME` with skopeo, which checks every blob's digest as it reads it.
    pub fn pull(&self, repo: &str, reference: &str, layout: &Path, name: &str) {
        let mut args = vec![
            "copy".to_string(),
            "--quiet".to_string(),
            "--all".to_string(),
            self.skopeo_tls("src-"),
        ];
        if let Some(c) = self.creds(None) {
            args.push(format!("--src-creds={c}"));
        }
        args.push(self.docker_ref(repo, reference));
        args.push(format!("oci:{}:{name}", layout.display()));
        run_ok("skopeo", &args);
    }

    /// `docker://HOST/REPO:TAG` or `docker://HOST/REPO@sha256:…`.
    fn docker_ref(&self, repo: &str, reference: &str) -> String {
        let sep = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!("docker://{}/{repo}{sep}{reference}", self.host())
    }

    /// The sha256 of the manifest bytes the registry serves for `repo:reference`.
    pub fn manifest_digest(&self, repo: &str, reference: &str, creds: Option<&str>) -> String {
        sha256_bytes(self.raw_manifest_as(repo, reference, creds))
    }

    /// The manifest bytes the registry serves for `repo:reference`.
    pub fn raw_manifest(&self, repo: &str, reference: &str) -> Vec<u8> {
        self.raw_manifest_as(repo, reference, None)
    }

    fn raw_manifest_as(&self, repo: &str, reference: &str, creds: Option<&str>) -> Vec<u8> {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".to_string(),
            self.skopeo_tls(""),
        ];
        if let Some(c) = self.creds(creds) {
            args.push(format!("--creds={c}"));
        }
        args.push(self.docker_ref(repo, reference));
        run_ok("skopeo", &args)
    }

    /// Where the registry stores blob `sha256:HEX` on disk.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The directory of the uploads in progress of every repository (their `data` files
    /// grow while a blob is uploaded).
    pub fn upload_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, under_uploads: bool, out: &mut Vec<PathBuf>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let path = e.path();
                let name = e.file_name();
                let uploads = under_uploads || name == "_uploads";
                if path.is_dir() {
                    walk(&path, uploads, out);
                } else if uploads && name == "data" {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &self.dir.join("data/docker/registry/v2/repositories"),
            false,
            &mut out,
        );
        out
    }

    /// curl's arguments to reach this registry: its CA, and its login.
    fn curl_args(&self) -> Vec<String> {
        let mut args = vec!["-sS".to_string()];
        if self.cert_dir.is_some() {
            args.push("--cacert".to_string());
            args.push(self.ca_path().display().to_string());
        }
        if let Some(login) = &self.login {
            args.push("-u".to_string());
            args.push(login.clone());
        }
        args
    }

    /// PUTs raw manifest bytes (an index, say) under `repo:tag`.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) {
        let file = self.dir.join("put-manifest.json");
        fs::write(&file, bytes).unwrap();
        let mut args = self.curl_args();
        args.extend([
            "-f".to_string(),
            "-X".to_string(),
            "PUT".to_string(),
            "-H".to_string(),
            format!("Content-Type: {media_type}"),
            "--data-binary".to_string(),
            format!("@{}", file.display()),
            self.url(&format!("/v2/{repo}/manifests/{tag}")),
        ]);
        run_ok("curl", &args);
    }

    /// The status of `HEAD /v2/<repo>/blobs/sha256:<hex>` (with the registry's login).
    pub fn blob_status(&self, repo: &str, hex: &str) -> u16 {
        self.status("HEAD", &format!("/v2/{repo}/blobs/sha256:{hex}"))
            .0
    }

    /// The status of `HEAD /v2/<repo>/manifests/<reference>` (with the registry's login).
    pub fn manifest_status(&self, repo: &str, reference: &str) -> u16 {
        self.status("HEAD", &format!("/v2/{repo}/manifests/{reference}"))
            .0
    }

    /// The tags of `repo` (`GET /v2/<repo>/tags/list`): empty when the repository is
    /// unknown (404) or has none.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let (status, body) = self.status("GET", &format!("/v2/{repo}/tags/list"));
        match status {
            404 => Vec::new(),
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("tags/list of {repo} is not JSON: {e}"));
                v["tags"]
                    .as_array()
                    .map(|t| t.iter().map(|t| t.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            }
            other => panic!(
                "tags/list of {repo}: HTTP {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// `METHOD path` with curl: the status and the body.
    fn status(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let body = self.dir.join("curl-body");
        let _ = fs::remove_file(&body);
        let mut args = self.curl_args();
        // distribution answers 404 to a manifest request that does not accept its type.
        args.extend([
            "-H".to_string(),
            format!(
                "Accept: {OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
            ),
        ]);
        if method == "HEAD" {
            args.push("--head".to_string());
        } else {
            args.extend(["-X".to_string(), method.to_string()]);
        }
        args.extend([
            "-o".to_string(),
            body.display().to_string(),
            "-w".to_string(),
            "%{http_code}".to_string(),
            self.url(path),
        ]);
        let out = run_ok("curl", &args);
        let status = String::from_utf8_lossy(&out)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {method} {path}: no status"));
        (status, fs::read(&body).unwrap_or_default())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate it signed for `IP:127.0.0.1` and `DNS:localhost`
/// (ECDSA P-256, made with the `openssl` CLI) in `dir`: `ca.crt`, `server.pem` and
/// `server-key.pem`. Only the CA's certificate ends in `.crt` and no file in `.cert` or
/// `.key` (skopeo reads those as client certificates), so `dir` is a skopeo
/// `--cert-dir`. Returns `dir`.
pub fn make_test_ca(dir: &Path) -> PathBuf {
    require_tool("openssl");
    fs::create_dir_all(dir).unwrap();
    let p = |name: &str| dir.join(name).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_crt) = (p("ca-key.pem"), p("ca.crt"));
    ca.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-days",
        "2",
        "-subj",
        "/CN=airgap-bundle test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run_ok(
        "openssl",
        &ca.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    let (key, csr, crt, ext) = (
        p("server-key.pem"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    let mut req = vec!["req", "-new"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    run_ok(
        "openssl",
        &req.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let sign = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-set_serial",
        "2",
        "-days",
        "2",
        "-out",
        &crt,
        "-extfile",
        &ext,
    ];
    run_ok(
        "openssl",
        &sign.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    dir.to_path_buf()
}

fn run_ok(program: &str, args: &[String]) -> Vec<u8> {
    require_tool(program);
    output_ok(Command::new(program).args(args))
}

/// Builds a small real image `oci:LAYOUT:TAG` offline with umoci: an empty base plus one
/// file whose content is `content`.
pub fn build_image(layout: &Path, tag: &str, content: &str) {
    build_image_on(layout, None, tag, content);
}

/// Like [`build_image`], but on top of the layers of the image `oci:LAYOUT:BASE` (so the
/// two share its layers).
pub fn build_image_on(layout: &Path, base: Option<&str>, tag: &str, content: &str) {
    build_image_with(layout, base, tag, content.as_bytes());
}

/// Like [`build_image_on`], with any bytes as the file's content (its layer is as big as
/// they are, gzipped).
pub fn build_image_with(layout: &Path, base: Option<&str>, tag: &str, content: &[u8]) {
    require_tool("umoci");
    let layout_s = layout.display().to_string();
    if !layout.join("oci-layout").exists() {
        run_ok(
            "umoci",
            &["init".into(), "--layout".into(), layout_s.clone()],
        );
    }
    let image = format!("{layout_s}:{tag}");
    match base {
        None => run_ok("umoci", &["new".into(), "--image".into(), image.clone()]),
        Some(base) => run_ok(
            "umoci",
            &[
                "tag".into(),
                "--image".into(),
                format!("{layout_s}:{base}"),
                tag.into(),
            ],
        ),
    };
    let bundle = layout.with_extension(format!("unpack-{tag}"));
    let _ = fs::remove_dir_all(&bundle);
    run_ok(
        "umoci",
        &[
            "unpack".into(),
            "--rootless".into(),
            "--image".into(),
            image.clone(),
            bundle.display().to_string(),
        ],
    );
    fs::write(bundle.join("rootfs/hello"), content).unwrap();
    run_ok(
        "umoci",
        &[
            "repack".into(),
            "--image".into(),
            image,
            bundle.display().to_string(),
        ],
    );
    let _ = fs::remove_dir_all(&bundle);
}

/// An OCI index of two images for two platforms, as served by a registry.
pub struct TwoPlatformIndex {
    /// The index bytes (what the tag serves).
    pub index: Vec<u8>,
    /// The manifest of the `linux/amd64` image, and of the `linux/arm64` one.
    pub amd: Vec<u8>,
    pub arm: Vec<u8>,
}

impl TwoPlatformIndex {
    /// The index's digest (hex).
    pub fn digest(&self) -> String {
        sha256_bytes(&self.index)
    }
}

/// Builds two images (`amd`, `arm`) in `layout`, pushes them to `REPO:amd` and `REPO:arm`
/// and puts an OCI index naming them as `linux/amd64` and `linux/arm64` under `REPO:TAG`.
pub fn push_two_platform_index(
    registry: &Registry,
    layout: &Path,
    repo: &str,
    tag: &str,
) -> TwoPlatformIndex {
    build_image(layout, "amd", "amd64 build\n");
    build_image(layout, "arm", "arm64 build\n");
    registry.push(layout, "amd", repo, None);
    registry.push(layout, "arm", repo, None);
    let amd = registry.raw_manifest(repo, "amd");
    let arm = registry.raw_manifest(repo, "arm");
    let entry = |raw: &[u8], arch: &str| {
        format!(
            "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"sha256:{}\",\"size\":{},\"platform\":{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}}}",
            sha256_bytes(raw),
            raw.len()
        )
    };
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{},{}]}}",
        entry(&amd, "amd64"),
        entry(&arm, "arm64")
    )
    .into_bytes();
    registry.put_manifest(repo, tag, OCI_INDEX, &index);
    TwoPlatformIndex { index, amd, arm }
}

/// The layer digests (hex) of an image manifest.
pub fn layers(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect()
}

/// The config digest (hex) of an image manifest.
pub fn config(manifest: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string()
}

// ---------------------------------------------------------------------------
// Image manifests: lock and create
// ---------------------------------------------------------------------------

/// A manifest called `images` naming `refs`, plus any extra top-level YAML.
pub fn images_manifest(refs: &[String], extra: &str) -> String {
    let mut m = String::from("apiVersion: bundle/v1\nname: images\nversion: '1.0'\nimages:\n");
    for r in refs {
        m.push_str(&format!("  - ref: '{r}'\n"));
    }
    m.push_str(extra);
    m
}

/// `bundle lock m.yaml -o m.lock.yaml --cache cache EXTRA…` in the workspace, with HOME
/// in the workspace (no auth file of the machine's user may leak into a test).
pub fn lock_images(ws: &Workspace, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut args = vec!["lock", "m.yaml", "-o", "m.lock.yaml", "--cache", "cache"];
    args.extend_from_slice(extra);
    let mut all = vec![("HOME", ws.root().to_str().unwrap())];
    all.extend_from_slice(envs);
    run_bundle_in(ws.root(), &args, &all)
}

/// `bundle create m.lock.yaml -o OUT --key site.key --plain-http` with a fixed epoch.
pub fn create_images(ws: &Workspace, out: &str) -> Run {
    run_bundle_in(
        ws.root(),
        &[
            "create",
            "m.lock.yaml",
            "-o",
            out,
            "--key",
            "site.key",
            "--cache",
            "cache",
            "--plain-http",
            "--retries",
            "0",
        ],
        &[
            ("HOME", ws.root().to_str().unwrap()),
            ("SOURCE_DATE_EPOCH", "1700000000"),
        ],
    )
}

/// Every entry path of a bundle, from `inspect --json`.
pub fn entry_paths(report: &serde_json::Value) -> Vec<String> {
    let mut paths: Vec<String> = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["entries"].as_array().unwrap().iter())
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// A docker `config.json` / containers `auth.json` with a login for `host`.
pub fn auth_file(host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}")
}

/// Runs a bash script (`-euo pipefail`) that must succeed; its stdout.
pub fn sh_ok(script: &str) -> Vec<u8> {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// A server that always fails
// ---------------------------------------------------------------------------

/// A server on a free 127.0.0.1 port, served by a thread of the test, that answers every
/// request with `500 Internal Server Error` and closes the connection. Every request line
/// is recorded. Stopped when dropped.
pub struct FailingServer {
    pub port: u16,
    server: LocalServer<String>,
}

/// A thread of the test serving connections on a free 127.0.0.1 port, one at a time,
/// with `handle` (which records what it was asked in `requests`). Stopped when dropped.
struct LocalServer<R> {
    port: u16,
    requests: Arc<Mutex<Vec<R>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<R: Send + 'static> LocalServer<R> {
    fn start(mut handle: impl FnMut(TcpStream, &Mutex<Vec<R>>) + Send + 'static) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        handle(stream, &requests);
                    }
                }
            })
        };
        LocalServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl<R> Drop for LocalServer<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FailingServer {
    pub fn start() -> FailingServer {
        let server = LocalServer::start(|stream, requests| {
            answer_500(stream, requests);
        });
        FailingServer {
            port: server.port,
            server,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The request lines (`"GET /v2/ HTTP/1.1"`) answered so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.server.requests.lock().unwrap().clone()
    }
}

/// The head of one HTTP request (up to the blank line), or `None` when the client goes
/// away or sends more than 64 KiB of it.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() > 64 << 10 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// Whether the header line `line` is header `name` (any case).
fn is_header(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

/// The value (trimmed) of the first header `name` among the header `lines`.
fn header_value<'a>(lines: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    let line = lines.into_iter().find(|l| is_header(l, name))?;
    line.split_once(':').map(|(_, value)| value.trim())
}

/// Reads a request head from `stream`, records its request line in `requests` (before
/// answering), answers 500 and closes.
fn answer_500(mut stream: TcpStream, requests: &Mutex<Vec<String>>) -> Option<()> {
    let head = read_head(&mut stream)?;
    let line = String::from_utf8_lossy(&head)
        .split("\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    requests.lock().unwrap().push(line);
    answer_error(stream, 500, "always failing");
    Some(())
}

/// Answers `status` with a distribution-style JSON error saying `message`, and closes.
fn answer_error(mut stream: TcpStream, status: u16, message: &str) {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Injected",
    };
    let body = serde_json::json!({"errors": [{"code": "UNKNOWN", "message": message}]}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

// ---------------------------------------------------------------------------
// A forwarding proxy that injects failures
// ---------------------------------------------------------------------------

/// A rule of a [`FaultProxy`]: a request with `method` whose target contains `path` is
/// answered `status` (and not forwarded): every such request, or with `nth` only the
/// n-th (1-based) of them.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub path: String,
    pub nth: Option<usize>,
    pub status: u16,
}

impl Fault {
    /// Every `METHOD …path…` request is answered `status`.
    pub fn every(method: &str, path: &str, status: u16) -> Fault {
        Fault {
            method: method.to_string(),
            path: path.to_string(),
            nth: None,
            status,
        }
    }

    /// Only the `n`-th (1-based) `METHOD …path…` request is answered `status`.
    pub fn nth(method: &str, path: &str, n: usize, status: u16) -> Fault {
        Fault {
            nth: Some(n),
            ..Fault::every(method, path, status)
        }
    }
}

/// One request a [`FaultProxy`] answered.
#[derive(Debug, Clone)]
struct Proxied {
    /// `METHOD TARGET` (as [`Registry::access_log`] gives them).
    request: String,
    status: u16,
    injected: bool,
}

/// A plain-HTTP forwarding proxy on a free 127.0.0.1 port, served by a thread of the
/// test, one connection at a time: it reads a request (head, and a body of its
/// `Content-Length`: the tool sends sized bodies), answers a matching [`Fault`]'s status
/// itself, or else forwards the request unchanged (its `Host` too, so distribution's
/// upload `Location`s name the proxy) to `127.0.0.1:upstream_port` with `Connection:
/// close`, and pipes the whole response back. Each connection carries one request and is
/// closed after it. Every request is recorded. Stopped when dropped.
pub struct FaultProxy {
    pub port: u16,
    server: LocalServer<Proxied>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, rules: Vec<Fault>) -> FaultProxy {
        let mut matched = vec![0usize; rules.len()];
        let server = LocalServer::start(move |stream, requests| {
            proxy_one(stream, upstream_port, &rules, &mut matched, requests);
        });
        FaultProxy {
            port: server.port,
            server,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests (`"PUT /v2/…"`) and the statuses they got, in order, forwarded or not.
    pub fn requests(&self) -> Vec<(String, u16)> {
        let log = self.server.requests.lock().unwrap();
        log.iter().map(|p| (p.request.clone(), p.status)).collect()
    }

    /// The requests answered by a [`Fault`], in order.
    pub fn injected(&self) -> Vec<String> {
        let log = self.server.requests.lock().unwrap();
        log.iter()
            .filter(|p| p.injected)
            .map(|p| p.request.clone())
            .collect()
    }
}

/// Serves one connection of a [`FaultProxy`]; `matched` counts each rule's matches so far.
fn proxy_one(
    mut client: TcpStream,
    upstream_port: u16,
    rules: &[Fault],
    matched: &mut [usize],
    requests: &Mutex<Vec<Proxied>>,
) -> Option<()> {
    let mut head = read_head(&mut client)?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut body = head.split_off(end);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next()?.to_string();
    let headers: Vec<&str> = lines.collect();
    let length: usize = header_value(headers.iter().copied(), "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut buf = vec![0u8; 64 << 10];
    while body.len() < length {
        let n = client.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next()?, parts.next()?);
    let request = format!("{method} {target}");

    // Every rule counts its matches; the first one that fires answers.
    let mut fault = None;
    for (rule, seen) in rules.iter().zip(matched.iter_mut()) {
        if rule.method == method && target.contains(&rule.path) {
            *seen += 1;
            if fault.is_none() && rule.nth.is_none_or(|n| n == *seen) {
                fault = Some(rule.status);
            }
        }
    }
    if let Some(status) = fault {
        requests.lock().unwrap().push(Proxied {
            request,
            status,
            injected: true,
        });
        answer_error(client, status, "injected by the test's fault proxy");
        return Some(());
    }

    let mut upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)).ok()?;
    upstream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut forwarded = format!("{request_line}\r\n");
    for header in headers.iter().filter(|l| !is_header(l, "connection")) {
        forwarded.push_str(header);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes()).ok()?;
    upstream.write_all(&body).ok()?;
    let mut response = Vec::new();
    // The upstream closes after its answer (`Connection: close`).
    let _ = upstream.read_to_end(&mut response);
    let status = String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Recorded before answering, so a client that got the answer finds it recorded.
    requests.lock().unwrap().push(Proxied {
        request,
        status,
        injected: false,
    });
    client.write_all(&response).ok()?;
    client.flush().ok()
}

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The path, without the query (`/token`).
    pub path: String,
    /// The query's `(key, value)` pairs, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Whether the request had an `Authorization` header.
    pub authorization: bool,
    /// The user of an `Authorization: Basic` header.
    pub user: Option<String>,
    /// The status the server answered.
    pub status: u16,
}

impl TokenRequest {
    /// The values of the query parameter `key`, in order.
    pub fn params(&self, key: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A small token service for distribution's token auth on a free 127.0.0.1 port, served
/// by a thread of the test: `GET /token?service=…&scope=TYPE:NAME:ACTIONS…` answers
/// `{"<field>": JWT}`, an RS256 JWT (signed with `openssl dgst -sha256 -sign`, its
/// self-signed certificate in the header's `x5c`) granting exactly the requested scopes
/// to [`TOKEN_SERVICE`] from [`TOKEN_ISSUER`]. With a login, only a request with that
/// basic login gets a token; any other gets 401. Every request is recorded. Stopped when
/// dropped.
pub struct TokenServer {
    pub port: u16,
    cert: PathBuf,
    server: LocalServer<TokenRequest>,
}

struct Issuer {
    key: PathBuf,
    x5c: String,
    login: Option<(String, String)>,
    field: String,
    issued: u64,
}

impl TokenServer {
    /// Makes a key and a self-signed certificate under `dir` and starts serving. The token
    /// is in the answer's `field` (`token` or `access_token`).
    pub fn start(dir: &Path, login: Option<(&str, &str)>, field: &str) -> TokenServer {
        require_tool("openssl");
        fs::create_dir_all(dir).unwrap();
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let (key_s, cert_s) = (key.display().to_string(), cert.display().to_string());
        let args = [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key_s,
            "-out",
            &cert_s,
            "-days",
            "1",
            "-subj",
            "/CN=token",
        ];
        run_ok("openssl", &args.map(String::from));
        let der = run_ok(
            "openssl",
            &[
                "x509".into(),
                "-in".into(),
                cert.display().to_string(),
                "-outform".into(),
                "der".into(),
            ],
        );
        let mut issuer = Issuer {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(der),
            login: login.map(|(u, p)| (u.to_string(), p.to_string())),
            field: field.to_string(),
            issued: 0,
        };
        let server = LocalServer::start(move |stream, requests| {
            issuer.answer(stream, requests);
        });
        TokenServer {
            port: server.port,
            cert,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate a registry must trust (its `rootcertbundle`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The requests answered since the last call, in order.
    pub fn take_requests(&self) -> Vec<TokenRequest> {
        std::mem::take(&mut *self.server.requests.lock().unwrap())
    }
}

impl Issuer {
    /// Reads one request from `stream`, records it in `requests` (before answering, so a
    /// client that got the answer finds it recorded), answers it and closes the
    /// connection.
    fn answer(&mut self, mut stream: TcpStream, requests: &Mutex<Vec<TokenRequest>>) -> Option<()> {
        let head = read_head(&mut stream)?;
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let target = lines.next()?.split_whitespace().nth(1)?.to_string();
        let authorization =
            header_value(lines.take_while(|l| !l.is_empty()), "authorization").map(String::from);
        let basic = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let mut request = TokenRequest {
            path: path.to_string(),
            query,
            authorization: authorization.is_some(),
            user: basic.as_ref().map(|(u, _)| u.clone()),
            status: 200,
        };
        let (status, headers, body) = if request.path != "/token" {
            (404, String::new(), "{}".to_string())
        } else if self.login.is_some() && basic != self.login {
            (
                401,
                "WWW-Authenticate: Basic realm=\"token\"\r\n".to_string(),
                "{\"details\":\"incorrect username or password\"}".to_string(),
            )
        } else {
            let subject = basic.map_or("anonymous".to_string(), |(u, _)| u);
            let token = self.sign(&subject, &request.params("scope"));
            let body = serde_json::json!({ self.field.as_str(): token, "expires_in": 300 });
            (200, String::new(), body.to_string())
        };
        request.status = status;
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            _ => "Not Found",
        };
        requests.lock().unwrap().push(request);
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.flush();
        Some(())
    }

    /// An RS256 JWT for `subject` granting the `scopes` (`TYPE:NAME:ACTION,…`).
    fn sign(&mut self, subject: &str, scopes: &[String]) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.issued += 1;
        // The token spec repeats `scope` for several scopes; some clients join them with
        // spaces in one (as the challenge lists them), which is granted too.
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .flat_map(|scope| scope.split_whitespace())
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.x5c] });
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": format!("token-{}", self.issued),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .arg("-sign")
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl dgst -sign failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{signing_input}.{}", b64(&out.stdout))
    }
}

/// Decodes `%XX` and `+` of a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
