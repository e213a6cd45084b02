//! A real `docker-registry` (CNCF distribution 2.8) on a free 127.0.0.1 port, optionally
//! with htpasswd basic auth or distribution's token auth (with [`TokenServer`], a small
//! token service on 127.0.0.1 that signs RS256 JWTs with a key made by the `openssl` CLI),
//! and small real images built offline with `umoci` and pushed with `skopeo`. Stopped (by
//! pid, or the token server's thread joined) when dropped.

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

use super::{free_port, port_accepts, require_tool, sha256_bytes};

/// The `service` (the JWT's `aud`) and `issuer` (`iss`) a token-auth registry expects.
pub const TOKEN_SERVICE: &str = "test-registry";
pub const TOKEN_ISSUER: &str = "test-issuer";

pub struct Registry {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry storing under `dir`; with `login`, it requires that basic login.
    pub fn start(dir: &Path, login: Option<(&str, &str)>) -> Registry {
        let mut auth = String::new();
        if let Some((user, password)) = login {
            require_tool("htpasswd");
            fs::create_dir_all(dir).unwrap();
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
        Registry::serve(dir, &auth)
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
        )
    }

    /// Writes the config (storage under `dir/data`, a free port, then `auth`) and waits
    /// for the registry to accept connections.
    fn serve(dir: &Path, auth: &str) -> Registry {
        require_tool("docker-registry");
        fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n{auth}",
            dir.join("data").display()
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
        let registry = Registry {
            port,
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_accepts(port) {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on port {port}:\n{}",
                registry.log()
            );
            sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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

    /// Pushes the image `oci:LAYOUT:TAG` to `HOST/REPO:TAG` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) {
        let mut args = vec![
            "copy".to_string(),
            "--quiet".to_string(),
            "--dest-tls-verify=false".to_string(),
        ];
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        }
        args.push(format!("oci:{}:{tag}", layout.display()));
        args.push(format!("docker://{}/{repo}:{tag}", self.host()));
        run_ok("skopeo", &args);
    }

    /// The sha256 of the manifest bytes the registry serves for `repo:reference`.
    pub fn manifest_digest(&self, repo: &str, reference: &str, creds: Option<&str>) -> String {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".to_string(),
            "--tls-verify=false".to_string(),
        ];
        if let Some(c) = creds {
            args.push(format!("--creds={c}"));
        }
        args.push(format!("docker://{}/{repo}:{reference}", self.host()));
        sha256_bytes(run_ok("skopeo", &args))
    }

    /// The manifest bytes the registry serves for `repo:reference`.
    pub fn raw_manifest(&self, repo: &str, reference: &str) -> Vec<u8> {
        run_ok(
            "skopeo",
            &[
                "inspect".into(),
                "--raw".into(),
                "--tls-verify=false".into(),
                format!("docker://{}/{repo}:{reference}", self.host()),
            ],
        )
    }

    /// Where the registry stores blob `sha256:HEX` on disk.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// PUTs raw manifest bytes (an index, say) under `repo:tag`.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) {
        let file = self.dir.join("put-manifest.json");
        fs::write(&file, bytes).unwrap();
        run_ok(
            "curl",
            &[
                "-fsS".to_string(),
                "-X".to_string(),
                "PUT".to_string(),
                "-H".to_string(),
                format!("Content-Type: {media_type}"),
                "--data-binary".to_string(),
                format!("@{}", file.display()),
                format!("http://{}/v2/{repo}/manifests/{tag}", self.host()),
            ],
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_ok(program: &str, args: &[String]) -> Vec<u8> {
    require_tool(program);
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds a small real image `oci:LAYOUT:TAG` offline with umoci: an empty base plus one
/// file whose content is `content`.
pub fn build_image(layout: &Path, tag: &str, content: &str) {
    build_image_on(layout, None, tag, content);
}

/// Like [`build_image`], but on top of the layers of the image `oci:LAYOUT:BASE` (so the
/// two share its layers).
pub fn build_image_on(layout: &Path, base: Option<&str>, tag: &str, content: &str) {
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
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
                    if let Ok(stream) = stream
                        && let Some(request) = issuer.answer(stream)
                    {
                        requests.lock().unwrap().push(request);
                    }
                }
            })
        };
        TokenServer {
            port,
            cert,
            requests,
            stop,
            thread: Some(thread),
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
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Issuer {
    /// Reads one request from `stream`, answers it and closes the connection.
    fn answer(&mut self, mut stream: TcpStream) -> Option<TokenRequest> {
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
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let target = lines.next()?.split_whitespace().nth(1)?.to_string();
        let authorization = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.trim().to_string());
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
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.flush();
        Some(request)
    }

    /// An RS256 JWT for `subject` granting the `scopes` (`TYPE:NAME:ACTION,…`).
    fn sign(&mut self, subject: &str, scopes: &[String]) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.issued += 1;
        let access: Vec<serde_json::Value> = scopes
            .iter()
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
