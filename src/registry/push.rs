//! The push half of the distribution API, for `install --registry`: pre-flight (reachable,
//! credentials, push allowed), blob `HEAD`, cross-repository mount, chunked uploads whose
//! bytes arrive while the bundle reader verifies them (and which are only completed once
//! the whole blob matched its signed digest), and manifests by digest and by tag.
//!
//! Requests that carry no streamed bytes are retried like downloads (network errors,
//! 5xx, 408, 429, with backoff); an upload's chunks cannot be sent twice (the bytes have
//! streamed past), so a failed chunk fails the install, whose re-run converges.

use std::io::{self, Read};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

use super::{ACCEPTED, RegistryClient, Retry, Target, basic, send};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Bytes per `PATCH` of a chunked upload: registries behind a proxy with a request-size
/// limit accept them, and a large layer still goes in a handful of requests.
const UPLOAD_CHUNK: u64 = 64 << 20;
/// The slowest transfer an upload request is given time for (on top of `--timeout`): the
/// request timeout of the HTTP client is a deadline on sending the whole body, so it grows
/// with the body. A peer that stops acknowledging is noticed sooner (TCP user timeout).
const SLOWEST_UPLOAD: u64 = 64 << 10;
/// How fast a registry is assumed to finish an upload it has received (it may check the
/// digest or copy the blob to its storage) on top of `--timeout`.
const SLOWEST_COMPLETION: u64 = 16 << 20;

/// A blob's bytes as they verify: pieces from the bundle reader, then `End` once the whole
/// entry matched its signed sha256. A channel closed without `End` means the bytes did not
/// verify (or the install stopped): the upload is cancelled, never completed.
pub enum Piece {
    Data(Vec<u8>),
    End,
}

/// One repository of a registry.
#[derive(Clone, Copy)]
pub struct Repo<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
}

impl std::fmt::Display for Repo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// Why an upload stopped without completing.
#[derive(Debug)]
pub enum UploadError {
    /// The bundle reader stopped delivering (its own error says why).
    Aborted,
    Failed(Error),
}

impl From<Error> for UploadError {
    fn from(e: Error) -> Self {
        UploadError::Failed(e)
    }
}

impl RegistryClient {
    /// The deadline for a request that sends or settles `bytes` at `rate` bytes/s.
    fn deadline(&self, bytes: u64, rate: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / rate)
    }

    fn url(&self, repo: Repo<'_>, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base(repo.registry), repo.repository)
    }

    /// A request to `repo` with retries: network errors and 5xx/408/429 are retried with
    /// backoff, 401/403 after the challenge are "authentication failed"; any other status
    /// is returned for the caller to judge.
    fn call(
        &self,
        repo: Repo<'_>,
        url: &str,
        what: &str,
        build: &dyn Fn(&Client) -> RequestBuilder,
    ) -> Result<Response> {
        let target = Target {
            registry: repo.registry,
            repository: repo.repository,
            url: url.to_string(),
            push: true,
        };
        let mut last = String::new();
        let mut tries = 0;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << (attempt - 1).min(5)));
            }
            tries += 1;
            let response = match self.send_authorised(&target, build) {
                Ok(r) => r,
                Err(Retry::Again(why)) => {
                    // An untrusted certificate stays untrusted: no point asking again.
                    let certificate = why.contains("certificate");
                    last = why;
                    if certificate {
                        break;
                    }
                    continue;
                }
                Err(Retry::Fatal(e)) => return Err(e),
            };
            match response.status() {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(auth_failed(repo, what, response.status()));
                }
                s if s.is_server_error()
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::REQUEST_TIMEOUT =>
                {
                    last = format!("HTTP {s}");
                }
                _ => return Ok(response),
            }
        }
        let hint = if last.starts_with("HTTP ") {
            "the registry answered, with an error: its log says why (storage full or read-only, a proxy in front of it)"
        } else if last.contains("certificate") {
            "the registry's TLS certificate is not trusted here: pass the CA that signed it with --registry-ca PEM"
        } else if self.plain_http {
            "check that the registry is running and reachable from here"
        } else {
            "check that the registry is running and reachable from here; a registry that speaks plain HTTP needs --plain-http"
        };
        Err(Error::Network {
            url: repo.registry.to_string(),
            message: format!(
                "{what}{}: {last} (gave up after {tries} attempt{})",
                in_repository(repo),
                if tries == 1 { "" } else { "s" }
            ),
        }
        .with_hint(hint))
    }

    /// Pre-flight: the registry answers the distribution API (`GET /v2/`), and this login
    /// may push to `repo` (an upload session opened, then cancelled). Writes nothing.
    pub fn check_push_allowed(&self, repo: Repo<'_>) -> Result<()> {
        self.check_api(repo.registry)?;
        let location = self.start_upload(repo)?;
        self.cancel_upload(repo, &location);
        Ok(())
    }

    /// Pre-flight: `registry` answers the distribution API (`GET /v2/`) and accepts the
    /// login (if it asks for one). Writes nothing.
    pub fn check_api(&self, registry: &str) -> Result<()> {
        let url = format!("{}/v2/", self.base(registry));
        let api = Repo {
            registry,
            repository: "",
        };
        let response = self.call(api, &url, "checking the registry API", &|c| c.get(&url))?;
        if !response.status().is_success() {
            return Err(unexpected(api, "checking the registry API", &response)
                .with_hint("is HOST:PORT an OCI registry (distribution, Harbor, Zot)?"));
        }
        Ok(())
    }

    /// Whether `repo` has blob `digest` (`HEAD`).
    pub fn blob_exists(&self, repo: Repo<'_>, digest: &Sha256Digest) -> Result<bool> {
        let url = self.url(repo, &format!("blobs/sha256:{digest}"));
        let response = self.call(repo, &url, "checking a blob", &|c| c.head(&url))?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(repo, "checking a blob", &response)),
        }
    }

    /// Cross-repository mount of `digest` from `from` into `repo`; false when the registry
    /// would rather have the bytes (the upload session it opened instead is cancelled).
    pub fn mount_blob(&self, repo: Repo<'_>, digest: &Sha256Digest, from: &str) -> Result<bool> {
        let url = self.url(repo, "blobs/uploads/");
        let mount = format!("sha256:{digest}");
        let response = self.call(repo, &url, "mounting a blob", &|c| {
            c.post(&url)
                .query(&[("mount", mount.as_str()), ("from", from)])
                .header(CONTENT_LENGTH, 0)
        })?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(location) = self.location(repo, &response) {
                    self.cancel_upload(repo, &location);
                }
                Ok(false)
            }
            _ => Err(unexpected(repo, "mounting a blob", &response)),
        }
    }

    /// Opens an upload session; its URL.
    fn start_upload(&self, repo: Repo<'_>) -> Result<String> {
        let url = self.url(repo, "blobs/uploads/");
        let response = self.call(repo, &url, "opening an upload", &|c| {
            c.post(&url).header(CONTENT_LENGTH, 0)
        })?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(unexpected(repo, "opening an upload", &response)
                .with_hint("the login must be allowed to push to this repository"));
        }
        self.location(repo, &response)
    }

    /// Cancels an upload session (best effort: the registry expires it anyway).
    fn cancel_upload(&self, repo: Repo<'_>, location: &str) {
        let _ = self.call(repo, location, "cancelling an upload", &|c| {
            c.delete(location)
        });
    }

    /// Uploads blob `digest` of `size` bytes from `pieces` in chunks, and completes it only
    /// when `pieces` ends with [`Piece::End`] (the bytes verified). Returns the bytes sent.
    pub fn upload_blob(
        &self,
        repo: Repo<'_>,
        digest: &Sha256Digest,
        size: u64,
        pieces: Receiver<Piece>,
    ) -> Result<u64, UploadError> {
        let mut location = self.start_upload(repo)?;
        let source = Arc::new(Mutex::new(PieceReader::new(pieces)));
        let mut offset = 0u64;
        while offset < size {
            if offset > 0 {
                // A cheap authenticated request before each further chunk renews a
                // token that expired during a long upload (a chunk cannot be re-sent).
                self.call(repo, &location, "checking an upload", &|c| c.get(&location))?;
            }
            let len = (size - offset).min(UPLOAD_CHUNK);
            let body = Body::sized(
                ChunkReader {
                    source: source.clone(),
                    left: len,
                },
                len,
            );
            let range = format!("{offset}-{}", offset + len - 1);
            // Sent once, without the retry loop: the body streams from the bundle.
            let sent = self.send_once(repo, |c| {
                c.patch(&location)
                    .timeout(self.deadline(len, SLOWEST_UPLOAD))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("Content-Range", &range)
                    .header(CONTENT_LENGTH, len)
                    .body(body)
            });
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    let aborted = lock(&source).aborted;
                    self.cancel_upload(repo, &location);
                    return Err(if aborted {
                        UploadError::Aborted
                    } else {
                        UploadError::Failed(e)
                    });
                }
            };
            if response.status() != StatusCode::ACCEPTED {
                let e = unexpected(repo, "uploading a blob", &response);
                self.cancel_upload(repo, &location);
                return Err(e.into());
            }
            location = self.location(repo, &response)?;
            offset += len;
        }
        // Completed only when the reader says the whole entry matched the signed digest.
        if !lock(&source).wait_for_end() {
            self.cancel_upload(repo, &location);
            return Err(UploadError::Aborted);
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest=sha256:{digest}");
        let settle = self.deadline(size, SLOWEST_COMPLETION);
        let response = self.call(repo, &url, "completing an upload", &|c| {
            c.put(&url).timeout(settle).header(CONTENT_LENGTH, 0)
        })?;
        if response.status() != StatusCode::CREATED {
            return Err(unexpected(repo, "completing an upload", &response).into());
        }
        Ok(size)
    }

    /// Copies blob `digest` from `from` to `repo` on the same registry (when it will not
    /// mount): streamed from one to the other, checked by the registry against the digest.
    pub fn copy_blob(
        &self,
        repo: Repo<'_>,
        from: Repo<'_>,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<u64> {
        let url = self.url(from, &format!("blobs/sha256:{digest}"));
        let response = self.call(from, &url, "reading a blob", &|c| c.get(&url))?;
        if !response.status().is_success() {
            return Err(unexpected(from, "reading a blob", &response));
        }
        let location = self.start_upload(repo)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest=sha256:{digest}");
        let result = self.send_once(repo, |c| {
            c.put(&put)
                .timeout(self.deadline(size, SLOWEST_UPLOAD))
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(Body::sized(response, size))
        });
        match result {
            Ok(r) if r.status() == StatusCode::CREATED => Ok(size),
            Ok(r) => {
                let e = unexpected(repo, "copying a blob", &r);
                self.cancel_upload(repo, &location);
                Err(e)
            }
            Err(e) => {
                self.cancel_upload(repo, &location);
                Err(e)
            }
        }
    }

    /// The digest `reference` (a tag or digest) points at in `repo`, if it exists.
    pub fn manifest_digest(&self, repo: Repo<'_>, reference: &str) -> Result<Option<Sha256Digest>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let accept = ACCEPTED.join(", ");
        let response = self.call(repo, &url, "checking a manifest", &|c| {
            c.head(&url).header(ACCEPT, &accept)
        })?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let digest = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match digest {
                    Some(d) => Ok(Some(d)),
                    // A registry that does not say: the bytes do.
                    None => Ok(Some(self.manifest_bytes(repo, reference)?.0)),
                }
            }
            _ => Err(unexpected(repo, "checking a manifest", &response)),
        }
    }

    /// A manifest's digest and bytes as `repo` serves them (for putting a tag back).
    pub fn manifest_bytes(
        &self,
        repo: Repo<'_>,
        reference: &str,
    ) -> Result<(Sha256Digest, String, Vec<u8>)> {
        self.manifest_if_present(repo, reference)?.ok_or_else(|| {
            Error::Runtime(format!(
                "{}: reading a manifest{} was answered HTTP {}",
                repo.registry,
                in_repository(repo),
                StatusCode::NOT_FOUND
            ))
        })
    }

    /// Like [`RegistryClient::manifest_bytes`], but `None` when `repo` does not have it
    /// (404). At most [`super::MAX_MANIFEST_BYTES`] + 1 bytes are read: more means a body
    /// no registry serves as a manifest, which the caller refuses.
    pub fn manifest_if_present(
        &self,
        repo: Repo<'_>,
        reference: &str,
    ) -> Result<Option<(Sha256Digest, String, Vec<u8>)>> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let accept = ACCEPTED.join(", ");
        let response = self.call(repo, &url, "reading a manifest", &|c| {
            c.get(&url).header(ACCEPT, &accept)
        })?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(unexpected(repo, "reading a manifest", &response));
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(super::OCI_MANIFEST)
            .to_string();
        let bytes = self
            .read_small(response, super::MAX_MANIFEST_BYTES + 1)
            .map_err(|e| Error::Network {
                url: repo.to_string(),
                message: format!("reading a manifest: {e}"),
            })?;
        Ok(Some((Sha256Digest::of_bytes(&bytes), media_type, bytes)))
    }

    /// Puts a manifest under `reference` (its digest, or a tag). The registry must store
    /// exactly these bytes: a different `Docker-Content-Digest` is a verification failure.
    pub fn put_manifest(
        &self,
        repo: Repo<'_>,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let response = self.call(repo, &url, "pushing a manifest", &|c| {
            c.put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
        })?;
        if response.status() != StatusCode::CREATED {
            return Err(unexpected(repo, &format!("pushing {reference}"), &response));
        }
        let digest = Sha256Digest::of_bytes(bytes);
        if let Some(said) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && said != format!("sha256:{digest}")
        {
            return Err(Error::Verify(format!(
                "{repo}: the registry stored manifest sha256:{digest} as {said}"
            )));
        }
        Ok(())
    }

    /// Deletes a manifest by digest (rolling back a tag that did not exist before).
    pub fn delete_manifest(&self, repo: Repo<'_>, digest: &Sha256Digest) -> Result<()> {
        let url = self.url(repo, &format!("manifests/sha256:{digest}"));
        let response = self.call(repo, &url, "deleting a manifest", &|c| c.delete(&url))?;
        if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(unexpected(repo, "deleting a manifest", &response))
        }
    }

    /// One request whose body cannot be sent twice, with the authorization this
    /// repository already earned (pre-flight made sure there is one).
    fn send_once(
        &self,
        repo: Repo<'_>,
        build: impl FnOnce(&Client) -> RequestBuilder,
    ) -> Result<Response> {
        let key = (repo.registry.to_string(), repo.repository.to_string());
        let token = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        let mut request = build(&self.http);
        if let Some(t) = token {
            request = request.header(reqwest::header::AUTHORIZATION, t);
        } else if let Some(l) = self.credentials.for_registry(repo.registry) {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                basic(&l.username, &l.password),
            );
        }
        let response = match send(request) {
            Ok(r) => r,
            Err(Retry::Again(why)) => {
                return Err(Error::Network {
                    url: repo.registry.to_string(),
                    message: format!("uploading to {}: {why}", repo.repository),
                }
                .with_hint(format!(
                    "an upload may take --timeout ({} s) plus its size at 64 KiB/s; a registry that stops reading for --timeout fails it. Run install again: what was pushed is kept",
                    self.timeout.as_secs()
                )));
            }
            Err(Retry::Fatal(e)) => return Err(e),
        };
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(auth_failed(repo, "uploading a blob", response.status()))
            }
            _ => Ok(response),
        }
    }

    /// The absolute URL of the `Location` an upload response names.
    fn location(&self, repo: Repo<'_>, response: &Response) -> Result<String> {
        let raw = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::Runtime(format!(
                    "{}: the registry opened an upload without a Location",
                    repo
                ))
            })?;
        let base = url::Url::parse(&format!("{}/", self.base(repo.registry)))
            .map_err(|e| Error::Runtime(format!("{}: {e}", repo.registry)))?;
        let joined = base.join(raw).map_err(|e| {
            Error::Runtime(format!(
                "{repo}: the registry sent a bad upload Location: {e}"
            ))
        })?;
        // Uploads stay on the registry they were opened on, over the same scheme: a login
        // and the layers never go elsewhere, nor in clear text when TLS was asked for.
        if joined.scheme() != base.scheme() {
            let mut shown = joined.clone();
            shown.set_query(None);
            return Err(Error::Runtime(format!(
                "{repo}: the registry sent the upload to {shown}, which is not {}",
                base.scheme()
            ))
            .with_hint(
                "a TLS-terminating proxy in front of the registry must pass X-Forwarded-Proto (or the registry's http.host must be https://…)",
            ));
        }
        if joined.host_str() != base.host_str()
            || joined.port_or_known_default() != base.port_or_known_default()
        {
            return Err(Error::Runtime(format!(
                "{repo}: the registry sent the upload to another host ({joined})"
            )));
        }
        Ok(joined.to_string())
    }
}

/// ` in REPOSITORY`, or nothing for a request to the registry as a whole.
fn in_repository(repo: Repo<'_>) -> String {
    if repo.repository.is_empty() {
        String::new()
    } else {
        format!(" in {}", repo.repository)
    }
}

fn auth_failed(repo: Repo<'_>, what: &str, status: StatusCode) -> Error {
    Error::Runtime(format!(
        "{}: authentication failed ({what}{}: HTTP {status})",
        repo.registry,
        in_repository(repo)
    ))
    .with_hint(
        "check --registry-user and BUNDLE_REGISTRY_PASSWORD (or the login in the docker/podman auth file), and that this user may push",
    )
}

fn unexpected(repo: Repo<'_>, what: &str, response: &Response) -> Error {
    Error::Runtime(format!(
        "{}: {what}{} was answered HTTP {}",
        repo.registry,
        in_repository(repo),
        response.status()
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads pieces off the channel as one stream.
struct PieceReader {
    pieces: Receiver<Piece>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
    aborted: bool,
}

impl PieceReader {
    fn new(pieces: Receiver<Piece>) -> Self {
        PieceReader {
            pieces,
            current: Vec::new(),
            at: 0,
            ended: false,
            aborted: false,
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.pieces.recv() {
                Ok(Piece::Data(d)) => {
                    self.current = d;
                    self.at = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Err(_) => {
                    self.aborted = true;
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the bundle stopped delivering this blob",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }

    /// After the last byte: true once the reader sent `End` (every byte verified).
    fn wait_for_end(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.read_some(&mut probe), Ok(0))
    }
}

/// One chunk's share of the stream.
struct ChunkReader {
    source: Arc<Mutex<PieceReader>>,
    left: u64,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = lock(&self.source).read_some(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the blob ended early",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
