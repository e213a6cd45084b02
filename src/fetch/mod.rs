//! Downloads over HTTP(S): parallel (`--jobs`), deduplicated by digest, retried with
//! backoff, given up on after `--timeout` seconds without a byte, resumed with HTTP Range
//! (and `If-Range`, so bytes of two upstream versions are never spliced) after an
//! interruption, hashed while streaming into the content-addressed [`cache::Cache`], and
//! checked against the pinned sha256 before anything uses them.

pub mod cache;
pub mod netrc;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};

pub use cache::Cache;

use crate::digest::{HashingWriter, Sha256Digest};
use crate::error::{Error, IoContext, Result};
use crate::manifest::SourceUrl;

/// Network settings shared by `lock` and `create`.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub cache_dir: PathBuf,
    pub jobs: usize,
    /// Extra PEM roots trusted on top of the system's.
    pub ca: Option<PathBuf>,
    /// Attempts after the first one.
    pub retries: u32,
    /// A request that delivers no byte for this long is a (retried) network error.
    pub timeout: Duration,
}

/// A source of `Authorization` header values for one origin.
pub trait Authorizer: Send + Sync {
    /// The header value to send now.
    fn current(&self) -> Option<String>;
    /// A fresh value after the server refused the current one (401), if one can be had.
    fn renew(&self) -> Option<String>;
}

/// A shared [`Authorizer`] (never printed: it holds secrets).
#[derive(Clone)]
pub struct Authorization(pub std::sync::Arc<dyn Authorizer>);

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorization(..)")
    }
}

/// One thing to download.
#[derive(Clone, Debug)]
pub struct Download {
    /// The URL the artifact is known by (digest, bundle path, index).
    pub canonical: SourceUrl,
    /// Where it is actually fetched from (a mirror, or the canonical URL).
    pub from: SourceUrl,
    pub expected_sha256: Option<Sha256Digest>,
    pub expected_size: Option<u64>,
    /// Where the request's `Authorization` header comes from (a registry's token or
    /// login), renewed once when the server answers 401 (a token that expired while a
    /// long `create` worked through its blobs).
    pub authorization: Option<Authorization>,
    /// What the download is, in errors (an image blob, say), when the URL alone is not.
    pub label: Option<String>,
    /// What pins `expected_sha256`, in errors: the lock (`None`), or another signed source
    /// (`the signed Release`).
    pub pinned_by: Option<&'static str>,
}

impl Download {
    /// The download of a manifest file entry, through the manifest's `mirrors`.
    pub fn for_file(
        manifest: &crate::manifest::Manifest,
        entry: &crate::manifest::FileEntry,
    ) -> Result<Self> {
        Ok(Download {
            canonical: entry.url.clone(),
            from: manifest.fetch_url(&entry.url)?,
            expected_sha256: entry.sha256,
            expected_size: entry.size,
            authorization: None,
            label: None,
            pinned_by: None,
        })
    }
}

/// A downloaded, verified blob in the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub path: PathBuf,
    pub from_cache: bool,
}

/// A small document fetched fresh ([`Fetcher::fetch_page`]).
pub struct Page {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// Where the body came from in the end (after redirects).
    pub url: url::Url,
}

pub struct Fetcher {
    client: Client,
    cache: Cache,
    retries: u32,
    jobs: usize,
    timeout: Duration,
    /// Logins for hosts that need one (a Helm repository or Python index behind auth).
    netrc: netrc::Netrc,
}

/// A failed attempt: worth retrying or not.
enum Attempt {
    Retry(String),
    Fatal(Error),
    /// The server refused the authorization and a fresh one was had: try again at once
    /// (once per download, not counted as a retry).
    Renewed,
}

/// The HTTP client every connected-side request goes through (downloads and registries):
/// user agent, connect and stall timeouts, extra CA roots, proxies from the environment.
pub fn http_client(options: &FetchOptions) -> Result<Client> {
    let mut builder = Client::builder()
        .user_agent(concat!("airgap-bundle/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(options.timeout.min(Duration::from_secs(15)))
        // The blocking client applies this to the wait for the response headers and to
        // every read of the body: a stall, not a slow transfer, trips it.
        .timeout(options.timeout)
        // Data sent and never acknowledged for this long ends the connection: a peer that
        // stopped reading an upload is noticed without a deadline on the whole request.
        .tcp_user_timeout(options.timeout);
    if let Some(ca) = &options.ca {
        let pem = std::fs::read(ca).at("cannot read CA bundle", ca)?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::Usage(format!(
                "{}: not a PEM certificate bundle: {e}",
                ca.display()
            ))
        })? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| Error::Runtime(format!("cannot set up the HTTP client: {e}")))
}

impl Fetcher {
    pub fn new(options: &FetchOptions) -> Result<Self> {
        Ok(Fetcher {
            client: http_client(options)?,
            cache: Cache::open(&options.cache_dir)?,
            retries: options.retries,
            jobs: options.jobs.max(1),
            timeout: options.timeout,
            netrc: netrc::Netrc::from_environment()?,
        })
    }

    /// A GET of `url` with the download's own authorization, else the netrc login for
    /// its host.
    fn get(&self, url: &SourceUrl, authorization: Option<&Authorization>) -> RequestBuilder {
        let request = self.client.get(url.as_str());
        let value = match authorization {
            Some(a) => a.0.current(),
            None => self.netrc.authorization_for(url.as_url()),
        };
        match value {
            Some(v) => request.header(reqwest::header::AUTHORIZATION, v),
            None => request,
        }
    }

    /// The pinned artifact, when the cache already holds it.
    fn cached(&self, d: &Download, bar: &ProgressBar) -> Result<Option<Fetched>> {
        let Some(digest) = d.expected_sha256 else {
            return Ok(None);
        };
        let Some(path) = self.cache.lookup(&digest, d.expected_size) else {
            return Ok(None);
        };
        let size = std::fs::metadata(&path).at("cannot read", &path)?.len();
        bar.inc(size);
        Ok(Some(Fetched {
            sha256: digest,
            size,
            path,
            from_cache: true,
        }))
    }

    /// Downloads (or finds in the cache) one artifact, verified against its pin if any.
    pub fn fetch(&self, d: &Download, bar: &ProgressBar) -> Result<Fetched> {
        if let Some(hit) = self.cached(d, bar)? {
            return Ok(hit);
        }
        let key = match d.expected_sha256 {
            Some(digest) => digest.hex(),
            None => Sha256Digest::of_bytes(d.from.as_str().as_bytes()).hex(),
        };
        let partial = self.cache.partial_path(&key);
        // Another process sharing the cache may be downloading the same blob: wait for it,
        // then use what it stored.
        let _guard = self.cache.lock_partial(&partial)?;
        if let Some(hit) = self.cached(d, bar)? {
            return Ok(hit);
        }
        let mut last = String::new();
        let mut renewed = false;
        let mut attempt = 0;
        while attempt <= self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << (attempt - 1).min(5)));
            }
            match self.try_once(d, &partial, bar, !renewed) {
                Ok((sha256, size)) => return self.finish(d, &partial, sha256, size),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => last = why,
                Err(Attempt::Renewed) => {
                    renewed = true;
                    continue;
                }
            }
            attempt += 1;
        }
        Err(Error::Network {
            url: d.from.to_string(),
            message: format!(
                "{last} (gave up after {} attempt{})",
                self.retries + 1,
                if self.retries == 0 { "" } else { "s" }
            ),
        }
        .with_hint("check that the server is reachable, or set a `mirrors` entry"))
    }

    fn finish(
        &self,
        d: &Download,
        partial: &Path,
        sha256: Sha256Digest,
        size: u64,
    ) -> Result<Fetched> {
        let size_ok = d.expected_size.is_none_or(|s| s == size);
        if let Some(expected) = d.expected_sha256
            && (expected != sha256 || !size_ok)
        {
            let _ = std::fs::remove_file(partial);
            let _ = std::fs::remove_file(Cache::validator_path(partial));
            let via = if d.from == d.canonical {
                String::new()
            } else {
                format!(" (fetched from {})", d.from)
            };
            let what = d.label.clone().unwrap_or_else(|| d.canonical.to_string());
            let pins = d.pinned_by.unwrap_or("the lock");
            let message = match d.expected_size {
                Some(expected_size) if expected == sha256 => format!(
                    "{what}{via}: size mismatch: {pins} pins {expected_size} bytes, the download has {size}"
                ),
                _ => format!(
                    "{what}{via}: sha256 mismatch: {pins} pins {expected}, the download is {sha256} ({size} bytes)"
                ),
            };
            return Err(Error::Verify(message)
            .with_hint(
                "the upstream content changed or is damaged: check it, then run `bundle lock` again",
            ));
        }
        let path = self.cache.commit(partial, &sha256)?;
        Ok(Fetched {
            sha256,
            size,
            path,
            from_cache: false,
        })
    }

    /// One HTTP request, resuming the partial file when the server honours Range.
    fn try_once(
        &self,
        d: &Download,
        partial: &Path,
        bar: &ProgressBar,
        may_renew: bool,
    ) -> Result<(Sha256Digest, u64), Attempt> {
        let fatal = |e: Error| Attempt::Fatal(e);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .at("cannot write", partial)
            .map_err(fatal)?;
        let mut have = file
            .metadata()
            .at("cannot read", partial)
            .map_err(fatal)?
            .len();
        // Resume only what can be asked for conditionally: without the validator of the
        // response that started the partial file, the upstream may have changed since.
        let validator_path = Cache::validator_path(partial);
        let validator = std::fs::read_to_string(&validator_path)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v.is_ascii());
        if have > 0 && validator.is_none() {
            have = 0;
        }
        let mut request = self.get(&d.from, d.authorization.as_ref());
        if have > 0
            && let Some(validator) = &validator
        {
            request = request
                .header(reqwest::header::RANGE, format!("bytes={have}-"))
                .header(reqwest::header::IF_RANGE, validator.as_str());
        }
        let mut response = request.send().map_err(|e| {
            Attempt::Retry(if e.is_timeout() {
                self.stalled()
            } else {
                describe(&e)
            })
        })?;
        let status = response.status();
        // The length the whole file must have once a resume completes.
        let mut whole_len = None;
        let resumed = match status {
            StatusCode::PARTIAL_CONTENT => match content_range(&response) {
                // Only exactly "the rest of the file" is a resume.
                Some((start, end, total)) if have > 0 && start == have && end + 1 == total => {
                    whole_len = Some(total);
                    true
                }
                _ => {
                    forget_partial(&file, partial).map_err(fatal)?;
                    return Err(Attempt::Retry(format!(
                        "the server answered with a range that is not the rest of the file ({}); restarting",
                        response
                            .headers()
                            .get(reqwest::header::CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("no Content-Range")
                    )));
                }
            },
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                // Our partial file is complete or stale: start over without Range.
                forget_partial(&file, partial).map_err(fatal)?;
                return Err(Attempt::Retry(
                    "server refused to resume; restarting".into(),
                ));
            }
            s if s.is_success() => false,
            StatusCode::UNAUTHORIZED
                if may_renew && d.authorization.as_ref().and_then(|a| a.0.renew()).is_some() =>
            {
                return Err(Attempt::Renewed);
            }
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                return Err(Attempt::Retry(format!("HTTP {s}")));
            }
            s => {
                return Err(fatal(
                    Error::Network {
                        url: d.from.to_string(),
                        message: format!("HTTP {s}"),
                    }
                    .with_hint("check the URL in the manifest (and its `mirrors` entry)"),
                ));
            }
        };
        let start = if resumed { have } else { 0 };
        if !resumed {
            forget_partial(&file, partial).map_err(fatal)?;
            // Remember what this response was, so that a later resume asks for the rest of
            // the same file only.
            if let Some(v) = resume_validator(&response) {
                crate::fs::write_atomically(&validator_path, v.as_bytes(), 0o644).map_err(fatal)?;
            }
        }
        file.seek(SeekFrom::Start(start))
            .at("cannot write", partial)
            .map_err(fatal)?;
        let mut sink = HashingWriter::new(&mut file);
        if resumed {
            seed_from_file(&mut sink, partial, have).map_err(fatal)?;
            bar.inc(have);
        }
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Attempt::Retry(self.describe_read(&e))),
            };
            sink.write_all(&buf[..n])
                .map_err(|e| fatal(Error::io("cannot write", partial, e)))?;
            bar.inc(n as u64);
        }
        sink.flush().at("cannot write", partial).map_err(fatal)?;
        let (_, sha256, size) = sink.finish();
        if let Some(total) = whole_len
            && size != total
        {
            return Err(Attempt::Retry(format!(
                "the resumed transfer ended at {size} of {total} bytes"
            )));
        }
        Ok((sha256, size))
    }

    /// A small file that is not pinned (a repository's `InRelease`): fetched fresh, never
    /// from the cache, at most `limit` bytes, with the usual retries; `None` when the
    /// server says it does not exist (404 or 410).
    pub fn fetch_small(&self, url: &SourceUrl, limit: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.fetch_page(url, None, limit)?.map(|page| page.body))
    }

    /// [`Fetcher::fetch_small`] with an `Accept` header, telling what came back: a
    /// simple repository's project page, whose content type says JSON or HTML and whose
    /// final URL (after redirects) is what relative links resolve against.
    pub fn fetch_page(
        &self,
        url: &SourceUrl,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<Option<Page>> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << (attempt - 1).min(5)));
            }
            let mut request = self.get(url, None);
            if let Some(accept) = accept {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            let response = match request.send() {
                Ok(r) => r,
                Err(e) => {
                    last = describe(&e);
                    continue;
                }
            };
            let status = response.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Ok(None);
            }
            if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
            {
                last = format!("HTTP {status}");
                continue;
            }
            if !status.is_success() {
                return Err(Error::Network {
                    url: url.to_string(),
                    message: format!("HTTP {status}"),
                });
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let final_url = response.url().clone();
            let mut body = Vec::new();
            match response.take(limit + 1).read_to_end(&mut body) {
                Ok(_) if body.len() as u64 > limit => {
                    return Err(Error::Verify(format!(
                        "{url}: larger than the {limit} bytes such a file may have"
                    )));
                }
                Ok(_) => {
                    return Ok(Some(Page {
                        body,
                        content_type,
                        url: final_url,
                    }));
                }
                Err(e) => last = self.describe_read(&e),
            }
        }
        Err(Error::Network {
            url: url.to_string(),
            message: format!(
                "{last} (gave up after {} attempt{})",
                self.retries + 1,
                if self.retries == 0 { "" } else { "s" }
            ),
        }
        .with_hint("check that the server is reachable, or set a `mirrors` entry"))
    }

    fn stalled(&self) -> String {
        format!(
            "timed out: no data from the server for {} s (--timeout)",
            self.timeout.as_secs()
        )
    }

    /// A failed read of a response body, telling a stall apart from a broken transfer.
    fn describe_read(&self, e: &std::io::Error) -> String {
        let mut timed_out = e.kind() == std::io::ErrorKind::TimedOut;
        let mut causes = Vec::new();
        let mut source = e.get_ref().map(|r| r as &(dyn std::error::Error + 'static));
        while let Some(s) = source {
            if let Some(r) = s.downcast_ref::<reqwest::Error>() {
                timed_out |= r.is_timeout();
            }
            causes.push(s.to_string());
            source = s.source();
        }
        if timed_out {
            self.stalled()
        } else if causes.is_empty() {
            format!("transfer interrupted: {e}")
        } else {
            format!("transfer interrupted: {}", causes.join(": "))
        }
    }

    /// Fetches everything on `jobs` threads; results in input order. The first failure
    /// stops new downloads from starting and is returned.
    /// Downloads with the same pinned sha256 are fetched once and share the result.
    pub fn fetch_all(&self, downloads: &[Download], bar: &ProgressBar) -> Result<Vec<Fetched>> {
        let mut unique: Vec<Download> = Vec::new();
        let mut slot_of: Vec<usize> = Vec::with_capacity(downloads.len());
        let mut by_digest: std::collections::HashMap<Sha256Digest, usize> =
            std::collections::HashMap::new();
        for d in downloads {
            let slot = match d.expected_sha256 {
                Some(digest) => *by_digest.entry(digest).or_insert_with(|| {
                    unique.push(d.clone());
                    unique.len() - 1
                }),
                None => {
                    unique.push(d.clone());
                    unique.len() - 1
                }
            };
            slot_of.push(slot);
        }
        let fetched = self.fetch_unique(&unique, bar)?;
        Ok(slot_of.into_iter().map(|i| fetched[i].clone()).collect())
    }

    /// Like [`Fetcher::fetch_all`], but the downloads `left_out` says a delta's base holds
    /// are not fetched: `None` in their place.
    pub fn fetch_all_but(
        &self,
        downloads: &[Download],
        left_out: &[bool],
        bar: &ProgressBar,
    ) -> Result<Vec<Option<Fetched>>> {
        let wanted: Vec<Download> = downloads
            .iter()
            .zip(left_out)
            .filter(|(_, out)| !**out)
            .map(|(d, _)| d.clone())
            .collect();
        let mut fetched = self.fetch_all(&wanted, bar)?.into_iter();
        Ok(left_out
            .iter()
            .map(|out| if *out { None } else { fetched.next() })
            .collect())
    }

    fn fetch_unique(&self, downloads: &[Download], bar: &ProgressBar) -> Result<Vec<Fetched>> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let slots: Vec<std::sync::Mutex<Option<Result<Fetched>>>> = (0..downloads.len())
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..self.jobs.min(downloads.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(d) = downloads.get(i) else { break };
                        let r = self.fetch(d, bar);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(r);
                        }
                    }
                });
            }
        });
        let mut out = Vec::with_capacity(downloads.len());
        let mut first_err = None;
        for r in slots
            .into_iter()
            .map(|slot| slot.into_inner().ok().flatten())
        {
            match r {
                Some(Ok(f)) => out.push(f),
                Some(Err(e)) => {
                    // A digest mismatch outranks other failures: it is the one to act on.
                    let worse = first_err
                        .as_ref()
                        .is_none_or(|p: &Error| p.exit_code() != 3 && e.exit_code() == 3);
                    if worse {
                        first_err = Some(e);
                    }
                }
                None => {}
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Hashes the bytes already in a partial file so the digest covers the whole download.
fn seed_from_file<W: Write>(
    hashing: &mut HashingWriter<W>,
    partial: &Path,
    have: u64,
) -> Result<()> {
    let mut f = File::open(partial).at("cannot read", partial)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = have;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).at("cannot read", partial)?;
        if n == 0 {
            break;
        }
        hashing.seed(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Empties a partial download and forgets its validator, so the next attempt starts over.
fn forget_partial(file: &File, partial: &Path) -> Result<()> {
    file.set_len(0).at("cannot truncate", partial)?;
    match std::fs::remove_file(Cache::validator_path(partial)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
            "cannot remove",
            Cache::validator_path(partial),
            e,
        )),
        _ => Ok(()),
    }
}

/// What `If-Range` may carry for this response: a strong ETag, else `Last-Modified`.
fn resume_validator(response: &reqwest::blocking::Response) -> Option<String> {
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    header(reqwest::header::ETAG)
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| header(reqwest::header::LAST_MODIFIED))
        .map(String::from)
}

/// `Content-Range: bytes START-END/TOTAL`, all three required.
fn content_range(response: &reqwest::blocking::Response) -> Option<(u64, u64, u64)> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (start <= end && end < total).then_some((start, end, total))
}

/// A reqwest error with its causes, the way an operator wants to read it.
pub fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
