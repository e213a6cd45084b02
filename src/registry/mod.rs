//! A client for the OCI distribution API, shared by `lock`/`create` (pull) and `install`
//! (push): anonymous, basic and Bearer-token auth (the `WWW-Authenticate` challenge flow,
//! one token per repository scope), credentials from the auth files or an explicit login,
//! TLS with the system roots plus `--ca`, or plain HTTP (`--plain-http`), retries with
//! backoff and the stall timeout of [`crate::fetch`]. Everything a registry returns is
//! checked against its digest before it is used.

pub mod auth;
pub mod push;

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde::Deserialize;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::{
    Authorization, Authorizer, Cache, Download, FetchOptions, describe, http_client,
};
use crate::manifest::{ImageRef, Platform, SourceUrl};
use auth::{Challenge, Credentials};

/// Manifest media types this tool carries (OCI and Docker v2 schema 2, single and lists).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPTED: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
/// No manifest or index is larger than this (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A manifest or index as the registry served it, its bytes checked against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Sha256Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl FetchedManifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// Fails (exit 2, listing what the index has) unless every platform in `wanted` is in
    /// this index. A single-platform manifest is taken as it is.
    pub fn require_platforms(&self, image: &ImageRef, wanted: &[Platform]) -> Result<()> {
        if !self.is_index() || wanted.is_empty() {
            return Ok(());
        }
        let carried = self.platforms()?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| {
                !carried
                    .iter()
                    .any(|c| w.matches(&c.os, &c.architecture, c.variant.as_deref()))
            })
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let has: Vec<String> = carried.iter().map(ToString::to_string).collect();
        Err(Error::Usage(format!(
            "{image}: platform {} not in the image index, which has {}",
            missing.join(", "),
            if has.is_empty() {
                "none".to_string()
            } else {
                has.join(", ")
            }
        ))
        .with_hint("set `platforms` on the image (or the manifest) to ones it has"))
    }

    /// The platforms an index carries (empty for a single-platform manifest).
    pub fn platforms(&self) -> Result<Vec<Platform>> {
        #[derive(Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            platform: Option<PlatformSpec>,
        }
        if !self.is_index() {
            return Ok(Vec::new());
        }
        let index: Index = serde_json::from_slice(&self.bytes).map_err(|e| {
            Error::Verify(format!(
                "image index sha256:{} is malformed: {e}",
                self.digest
            ))
        })?;
        Ok(index
            .manifests
            .into_iter()
            .filter_map(|m| m.platform)
            .filter(|p| p.os != "unknown")
            .map(|p| Platform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant,
            })
            .collect())
    }
}

/// The `platform` of a descriptor in an image index.
#[derive(Debug, Deserialize, PartialEq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// Whether this is the platform a manifest asks for (`os/arch[/variant]`).
    pub fn matches(&self, p: &Platform) -> bool {
        p.matches(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// Speaks the distribution API to any number of registries. Clones share the client, the
/// logins and the tokens earned.
#[derive(Clone)]
pub struct RegistryClient {
    http: Client,
    plain_http: bool,
    credentials: Credentials,
    retries: u32,
    /// `--timeout`: the longest wait for a byte (uploads get more, by their size).
    timeout: Duration,
    /// The `Authorization` value that worked, by (registry, repository): a Bearer token for
    /// the repository's scope, or the registry's basic login. Shared by clones.
    tokens: Arc<Mutex<HashMap<(String, String), String>>>,
}

/// The authorization a repository earned, for blob downloads through the [`Fetcher`]:
/// renewed through the registry's challenge when a token expired.
///
/// [`Fetcher`]: crate::fetch::Fetcher
struct RepositoryAuth {
    client: RegistryClient,
    registry: String,
    repository: String,
    url: String,
}

impl Authorizer for RepositoryAuth {
    fn current(&self) -> Option<String> {
        let key = (self.registry.clone(), self.repository.clone());
        self.client.tokens.lock().ok()?.get(&key).cloned()
    }

    fn renew(&self) -> Option<String> {
        let key = (self.registry.clone(), self.repository.clone());
        let before = self.client.tokens.lock().ok()?.remove(&key);
        let target = Target {
            registry: &self.registry,
            repository: &self.repository,
            url: self.url.clone(),
            push: false,
        };
        let response = self
            .client
            .send_authorised(&target, &|c| c.head(&target.url))
            .ok()?;
        let after = self.current();
        (response.status().is_success() && after.is_some() && after != before).then_some(())?;
        after
    }
}

/// What a request is for, so that a challenge can be answered for the right scope.
struct Target<'a> {
    registry: &'a str,
    repository: &'a str,
    url: String,
    /// Whether the request writes (a token then needs the `push` scope).
    push: bool,
}

impl RegistryClient {
    pub fn new(options: &FetchOptions, plain_http: bool, credentials: Credentials) -> Result<Self> {
        Ok(RegistryClient {
            http: http_client(options)?,
            plain_http,
            credentials,
            retries: options.retries,
            timeout: options.timeout,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// `https://HOST` (or `http://` with `--plain-http`); Docker Hub's API lives on its own
    /// host.
    fn base(&self, registry: &str) -> String {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    /// The manifest (or index) `image` names: by its digest when it has one, else by its
    /// tag. Its bytes are hashed: a registry that serves other bytes than the digest asked
    /// for (or than its own `Docker-Content-Digest` says) is a verification failure.
    pub fn manifest(&self, image: &ImageRef) -> Result<FetchedManifest> {
        let reference = match (&image.digest, &image.tag) {
            (Some(d), _) => format!("sha256:{d}"),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let target = Target {
            registry: &image.registry,
            repository: &image.repository,
            url: format!(
                "{}/v2/{}/manifests/{reference}",
                self.base(&image.registry),
                image.repository
            ),
            push: false,
        };
        let response = self.get(&target, &ACCEPTED.join(", "), image)?;
        let header_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self
            .read_small(response, MAX_MANIFEST_BYTES + 1)
            .map_err(|e| network(image, format!("reading the manifest: {e}")))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::Verify(format!(
                "{image}: the registry sent a manifest over {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let digest = Sha256Digest::of_bytes(&bytes);
        let claimed = image
            .digest
            .map(|d| format!("sha256:{d}"))
            .or(header_digest);
        if let Some(claimed) = claimed
            && claimed != format!("sha256:{digest}")
        {
            return Err(Error::Verify(format!(
                "{image}: the registry served a manifest with digest sha256:{digest}, not {claimed}"
            ))
            .with_hint("the registry (or a proxy in between) is changing content; do not use it"));
        }
        // The type is what the bytes say (so a cached copy gives the same answer); the
        // header may only agree with it.
        let Some(media_type) = media_type_of(&bytes) else {
            return Err(Error::Runtime(format!(
                "{image}: manifest media type `{header_type}` is not supported (OCI and Docker v2 schema 2 manifests and indexes are)"
            )));
        };
        if ACCEPTED.contains(&header_type.as_str()) && header_type != media_type {
            return Err(Error::Verify(format!(
                "{image}: the registry says the manifest is `{header_type}`, its bytes say `{media_type}`"
            )));
        }
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// The download of blob `digest` of `image`: through the same [`crate::fetch::Fetcher`]
    /// as files (cache, resume with `If-Range`, retries, stall timeout, `--jobs`), with the
    /// authorization this repository already earned when its manifest was fetched.
    pub fn blob_download(
        &self,
        image: &ImageRef,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<Download> {
        let url = format!(
            "{}/v2/{}/blobs/sha256:{digest}",
            self.base(&image.registry),
            image.repository
        );
        let source: SourceUrl = url
            .parse()
            .map_err(|e: String| Error::Runtime(format!("{image}: {e}")))?;
        let key = (image.registry.clone(), image.repository.clone());
        Ok(Download {
            canonical: source.clone(),
            from: source,
            expected_sha256: Some(*digest),
            expected_size: Some(size),
            authorization: Some(Authorization(Arc::new(RepositoryAuth {
                client: self.clone(),
                registry: key.0,
                repository: key.1,
                url,
            }))),
            label: Some(format!("{image}: blob sha256:{digest}")),
            pinned_by: None,
        })
    }

    /// A manifest by digest, from the cache when it holds it (a second `create` needs no
    /// registry), else from the registry; stored in the cache either way.
    pub fn manifest_by_digest(
        &self,
        image: &ImageRef,
        digest: Sha256Digest,
        cache: &Cache,
    ) -> Result<FetchedManifest> {
        if let Some(path) = cache.lookup(&digest, None)
            && let Ok(bytes) = std::fs::read(&path)
            && Sha256Digest::of_bytes(&bytes) == digest
            && let Some(media_type) = media_type_of(&bytes)
        {
            return Ok(FetchedManifest {
                digest,
                media_type,
                bytes,
            });
        }
        let mut by_digest = image.clone();
        by_digest.digest = Some(digest);
        let fetched = self.manifest(&by_digest)?;
        cache.store_bytes(&fetched.bytes)?;
        Ok(fetched)
    }

    /// At most `limit` bytes of a small body (a manifest, a token), within a deadline for
    /// the whole body: a server that drips a byte now and then cannot hold a command up
    /// (the per-read timeout alone would never trip).
    fn read_small(&self, response: Response, limit: u64) -> std::io::Result<Vec<u8>> {
        let deadline = std::time::Instant::now() + self.timeout + Duration::from_secs(limit >> 16);
        let mut body = Vec::new();
        let mut reader = response.take(limit);
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&buf[..n]);
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the body arrives too slowly",
                ));
            }
        }
    }

    /// A GET with retries, answering an authentication challenge once.
    fn get(&self, target: &Target<'_>, accept: &str, image: &ImageRef) -> Result<Response> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << (attempt - 1).min(5)));
            }
            let response = match self
                .send_authorised(target, &|r| r.get(&target.url).header(ACCEPT, accept))
            {
                Ok(r) => r,
                Err(Retry::Again(why)) => {
                    last = why;
                    continue;
                }
                Err(Retry::Fatal(e)) => return Err(e),
            };
            let status = response.status();
            match status {
                s if s.is_success() => return Ok(response),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(Error::Runtime(format!(
                        "{}: authentication failed for {image} (HTTP {status})",
                        target.registry
                    ))
                    .with_hint(
                        "check the login in the docker/podman auth file (or --registry-user and BUNDLE_REGISTRY_PASSWORD)",
                    ));
                }
                StatusCode::NOT_FOUND => {
                    return Err(
                        network(image, "not found in the registry (HTTP 404)".to_string())
                            .with_hint("check the image name, tag and digest in the manifest"),
                    );
                }
                s if s.is_server_error()
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::REQUEST_TIMEOUT =>
                {
                    last = format!("HTTP {s}");
                }
                s => return Err(network(image, format!("HTTP {s}"))),
            }
        }
        Err(network(
            image,
            format!(
                "{last} (gave up after {} attempt{})",
                self.retries + 1,
                if self.retries == 0 { "" } else { "s" }
            ),
        )
        .with_hint(if self.plain_http {
            "check that the registry is reachable"
        } else {
            "check that the registry is reachable; a registry that speaks plain HTTP needs --plain-http"
        }))
    }

    /// Sends the request with what the registry asked for: nothing at first (or what
    /// worked before for this repository), then a Bearer token for the repository's scope,
    /// or the registry's basic login. `build` makes the request (it may be called twice).
    fn send_authorised(
        &self,
        target: &Target<'_>,
        build: &dyn Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, Retry> {
        let key = (target.registry.to_string(), target.repository.to_string());
        let token = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        let request = |auth: Option<&str>| -> RequestBuilder {
            let r = build(&self.http);
            match auth {
                Some(a) => r.header(AUTHORIZATION, a),
                None => r,
            }
        };
        let first = send(request(token.as_deref()))?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let login = self.credentials.for_registry(target.registry);
        let authorization = match challenge {
            Some(Challenge::Basic) => match login {
                Some(l) => basic(&l.username, &l.password),
                None => return Ok(first),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let actions = if target.push { "pull,push" } else { "pull" };
                // The API root (`/v2/`) needs a token for no repository in particular.
                let scope = scope
                    .filter(|s| !target.push || s.contains("push"))
                    .unwrap_or_else(|| match target.repository {
                        "" => String::new(),
                        r => format!("repository:{r}:{actions}"),
                    });
                let token =
                    self.token(target.registry, &realm, service.as_deref(), &scope, login)?;
                format!("Bearer {token}")
            }
            None => return Ok(first),
        };
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, authorization.clone());
        }
        send(request(Some(&authorization)))
    }

    /// A Bearer token from `registry`'s token service (with the login, if there is one).
    /// A challenge may name several scopes (a mount needs two repositories): each goes in
    /// its own `scope` parameter, as the token specification asks.
    fn token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        login: Option<&auth::Login>,
    ) -> Result<String, Retry> {
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        // A login never travels in clear text: a token service must speak TLS unless the
        // operator chose plain HTTP.
        if !self.plain_http && !realm.starts_with("https://") {
            return Err(Retry::Fatal(
                Error::Runtime(format!(
                    "the registry sends its token requests to {realm}, which is not HTTPS"
                ))
                .with_hint("use --plain-http only for a registry on a trusted network"),
            ));
        }
        let mut request = self.http.get(realm);
        for one in scope.split_whitespace() {
            request = request.query(&[("scope", one)]);
        }
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        if let Some(l) = login {
            request = request.header(AUTHORIZATION, basic(&l.username, &l.password));
        }
        let response = send(request)?;
        if response.status().is_server_error() {
            return Err(Retry::Again(format!(
                "token service {realm}: HTTP {}",
                response.status()
            )));
        }
        if !response.status().is_success() {
            return Err(Retry::Fatal(
                Error::Runtime(format!(
                    "{registry}: authentication failed (its token service {realm} answered HTTP {})",
                    response.status()
                ))
                .with_hint(
                    "check the login: --registry-user and BUNDLE_REGISTRY_PASSWORD for install, else the docker/podman auth file",
                ),
            ));
        }
        let body = self
            .read_small(response, 1 << 20)
            .map_err(|e| Retry::Again(format!("token service {realm}: {e}")))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Retry::Fatal(Error::Runtime(format!(
                "{realm}: the token service did not answer with a token: {e}"
            )))
        })?;
        parsed.token.or(parsed.access_token).ok_or_else(|| {
            Retry::Fatal(Error::Runtime(format!(
                "{realm}: the token service did not answer with a token"
            )))
        })
    }
}

/// A failed request: worth retrying or not.
enum Retry {
    Again(String),
    Fatal(Error),
}

fn send(request: RequestBuilder) -> Result<Response, Retry> {
    request.send().map_err(|e| Retry::Again(describe(&e)))
}

/// The media type a manifest states about itself (`mediaType`), or what its shape says
/// (an OCI manifest or index may leave it out).
pub fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let shape: Shape = serde_json::from_slice(bytes).ok()?;
    let media_type = match (shape.media_type, shape.manifests, shape.config) {
        (Some(m), _, _) => m,
        (None, Some(_), _) => OCI_INDEX.to_string(),
        (None, None, Some(_)) => OCI_MANIFEST.to_string(),
        _ => return None,
    };
    ACCEPTED
        .contains(&media_type.as_str())
        .then_some(media_type)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn network(image: &ImageRef, message: String) -> Error {
    Error::Network {
        url: image.to_string(),
        message,
    }
}
