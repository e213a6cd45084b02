//! The registry target of `install --registry` (SPEC §4): the bundle's images pushed into
//! the site registry under names without the upstream host.
//!
//! - Pre-flight (after the signature, before any data moves): every target name is free of
//!   clashes, the registry answers, the login may push to every repository (an upload
//!   session opened and cancelled), and a `HEAD` per blob and manifest finds what is
//!   already there.
//! - While the bundle streams: each blob that is missing is uploaded by a worker as its
//!   bytes verify ([`Piece`]s through a small bounded channel, so memory stays flat), and
//!   completed only once the whole blob matched its signed digest; a blob the registry
//!   has in another repository is mounted from there. Manifests are kept in memory.
//! - After the whole bundle verified: child manifests by digest, then each image's
//!   manifest or index under its tag. A failure while tagging puts the tags already moved
//!   back, so an install that fails leaves no new tag; one killed is finished by a re-run
//!   (blobs and manifests already there are skipped by `HEAD`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::bundle::index::{EntryKind, Index, IndexEntry};
use crate::bundle::reader::{EntryReader, EntrySink};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::manifest::ImageRef;
use crate::progress::Reporter;
use crate::registry::push::{Piece, Repo, UploadError};
use crate::registry::{RegistryClient, media_type_of};

/// Bytes per piece handed from the bundle reader to an upload worker.
const PIECE: usize = 512 << 10;
/// Pieces queued per upload: with the worker's own, memory per upload stays ~2 MiB.
const QUEUED_PIECES: usize = 2;
/// A manifest larger than this is not pushed (distribution's own limit).
const MAX_MANIFEST: u64 = 4 << 20;

/// One image as the site registry will hold it.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    /// Its artifact in the bundle's index.
    pub artifact: usize,
    /// The upstream reference, with its digest.
    pub source: String,
    pub repository: String,
    pub tag: Option<String>,
    /// What goes under the tag: the carried manifest or (possibly filtered) index.
    pub digest: Sha256Digest,
    /// What upstream served (differs from `digest` when platforms were filtered).
    pub upstream_digest: Option<Sha256Digest>,
    /// The platform manifests of an index, pushed by digest before it.
    pub children: Vec<Sha256Digest>,
}

impl PlannedImage {
    /// `HOST:PORT/repository:tag` (or `@sha256:…` without a tag).
    pub fn name(&self, host: &str) -> String {
        match &self.tag {
            Some(t) => format!("{host}/{}:{t}", self.repository),
            None => format!("{host}/{}@sha256:{}", self.repository, self.digest),
        }
    }

    fn reference(&self) -> String {
        self.tag
            .clone()
            .unwrap_or_else(|| format!("sha256:{}", self.digest))
    }
}

/// The site registry's name for an upstream image: without the upstream host (as
/// Kubespray's `registry_host` expects), or with it as the first path segment
/// (`--keep-host`; a port's `:` becomes `-`, which a repository name allows).
pub fn site_repository(image: &ImageRef, keep_host: bool) -> String {
    if keep_host {
        let host: String = image
            .registry
            .chars()
            .filter(|c| !matches!(c, '[' | ']'))
            .map(|c| if c == ':' { '-' } else { c })
            .collect();
        format!("{host}/{}", image.repository)
    } else {
        image.repository.clone()
    }
}

/// The images of a verified index, named for the site registry. Two images that would
/// get one name (repository and tag) with different content are refused (exit 2).
pub fn plan(index: &Index, keep_host: bool) -> Result<Vec<PlannedImage>> {
    plan_kind(index, EntryKind::Image, |artifact| {
        let upstream: ImageRef = artifact.source.parse().map_err(|e: String| {
            Error::Verify(format!("image artifact `{}`: {e}", artifact.source))
        })?;
        Ok((
            site_repository(&upstream, keep_host),
            upstream.tag.clone(),
            upstream.digest,
        ))
    })
}

/// The charts of a verified index as OCI artifacts, named for a chart registry by the
/// name `create` gave them (`charts/<name>:<version>`, or an OCI chart's upstream path).
pub fn plan_charts(index: &Index) -> Result<Vec<PlannedImage>> {
    plan_kind(index, EntryKind::OciChart, |artifact| {
        let bad = || {
            Error::Verify(format!(
                "chart artifact `{}`: bad name `{}`",
                artifact.source, artifact.dest
            ))
        };
        let (repository, tag) = match artifact.dest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') && !r.contains('@') => (r, Some(t.to_string())),
            _ => (artifact.dest.split('@').next().unwrap_or_default(), None),
        };
        if repository.is_empty() || repository.starts_with('/') || repository.contains("..") {
            return Err(bad());
        }
        let upstream = artifact
            .source
            .starts_with("oci://")
            .then_some(artifact.sha256)
            .flatten();
        Ok((repository.to_string(), tag, upstream))
    })
}

/// The artifacts of `kind` with their site names (`name_of` gives repository, tag and
/// upstream digest), checked against the index's manifests and for name clashes.
fn plan_kind(
    index: &Index,
    kind: EntryKind,
    name_of: impl Fn(
        &crate::bundle::index::Artifact,
    ) -> Result<(String, Option<String>, Option<Sha256Digest>)>,
) -> Result<Vec<PlannedImage>> {
    let mut images = Vec::new();
    let mut named: BTreeMap<(String, String), (String, Sha256Digest)> = BTreeMap::new();
    for (n, artifact) in index.artifacts.iter().enumerate() {
        if artifact.kind != kind {
            continue;
        }
        let (repository, tag, upstream_digest) = name_of(artifact)?;
        let digest = artifact.sha256.ok_or_else(|| {
            Error::Verify(format!(
                "{} artifact `{}` has no digest",
                kind.as_str(),
                artifact.source
            ))
        })?;
        let manifests: Vec<&IndexEntry> = index
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::OciManifest && e.artifacts.contains(&n))
            .collect();
        if !manifests.iter().any(|e| e.sha256 == digest) {
            return Err(Error::Verify(format!(
                "{} `{}`: its manifest sha256:{digest} is not in the bundle",
                kind.as_str(),
                artifact.source
            )));
        }
        if let Some(big) = manifests.iter().find(|e| e.size > MAX_MANIFEST) {
            return Err(Error::Usage(format!(
                "{} `{}`: manifest {} is {} bytes, over the {MAX_MANIFEST} a registry accepts",
                kind.as_str(),
                artifact.source,
                big.path,
                big.size
            )));
        }
        let image = PlannedImage {
            artifact: n,
            source: artifact.source.clone(),
            repository,
            tag,
            digest,
            upstream_digest,
            children: manifests
                .iter()
                .map(|e| e.sha256)
                .filter(|d| *d != digest)
                .collect(),
        };
        let key = (image.repository.clone(), image.reference());
        if let Some((other, other_digest)) = named.get(&key)
            && *other_digest != digest
        {
            return Err(Error::Usage(format!(
                "`{other}` and `{}` would get the same name `{}:{}` on the site registry",
                image.source, key.0, key.1
            ))
            .with_hint(
                "pass --keep-host to keep the upstream host in image names; nothing was pushed",
            ));
        }
        named.insert(key, (image.source.clone(), digest));
        images.push(image);
    }
    Ok(images)
}

/// What the registry target did, for the report and the receipt.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RegistryReport {
    pub host: String,
    /// `https://HOST:PORT`, or `http://` with `--plain-http`.
    pub url: String,
    pub blobs_pushed: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub bytes_pushed: u64,
    pub manifests_pushed: usize,
    pub manifests_present: usize,
    pub images: Vec<ImageReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageReport {
    pub source: String,
    pub name: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_digest: Option<String>,
    /// `pushed` (tagged by this run) or `present` (the tag already pointed here).
    pub status: String,
}

/// What pre-flight found on the registry.
#[derive(Default)]
struct Found {
    /// (repository, blob or manifest digest) already there.
    present: HashSet<(String, Sha256Digest)>,
    /// What each image's tag points at now.
    tags: HashMap<usize, Option<Sha256Digest>>,
}

/// One unit of work for an upload worker.
enum Job {
    /// Upload the bytes arriving on `pieces` into `repos[0]`, then mount into the rest.
    Upload {
        digest: Sha256Digest,
        size: u64,
        repos: Vec<String>,
        pieces: Receiver<Piece>,
    },
    /// Mount (or copy) a blob `from` has into `repos`.
    Mount {
        digest: Sha256Digest,
        size: u64,
        from: String,
        repos: Vec<String>,
    },
}

#[derive(Default)]
struct Progress {
    blobs_pushed: usize,
    blobs_mounted: usize,
    bytes_pushed: u64,
    errors: Vec<Error>,
}

/// The registry target while the bundle streams.
pub struct RegistryTarget {
    client: Arc<RegistryClient>,
    host: String,
    images: Vec<PlannedImage>,
    /// The repositories each blob goes to.
    blob_repos: HashMap<Sha256Digest, Vec<String>>,
    found: Found,
    /// Blobs a delta left out that none of their own repositories has, and a repository
    /// an earlier install pushed that has each (mounted from there).
    elsewhere: HashMap<Sha256Digest, String>,
    manifests: HashMap<Sha256Digest, Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    progress: Arc<Mutex<Progress>>,
    blobs_present: usize,
    /// Tags moved by this install and what they pointed at before.
    moved: Vec<(usize, Option<Sha256Digest>)>,
    /// Manifests (repository, digest) this install added, children before their index.
    created: Vec<(String, Sha256Digest)>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RegistryTarget {
    /// Pre-flight (SPEC §4) for `images` on `host`; starts `jobs` upload workers.
    /// `pushed_before` are repositories earlier installs pushed to `host` (from the
    /// receipts): where a blob a delta left out is looked for when none of its own
    /// repositories has it.
    pub fn preflight(
        client: RegistryClient,
        host: &str,
        index: &Index,
        images: Vec<PlannedImage>,
        jobs: usize,
        pushed_before: &[String],
    ) -> Result<Self> {
        let client = Arc::new(client);
        let mut repos: Vec<&str> = images.iter().map(|i| i.repository.as_str()).collect();
        repos.sort_unstable();
        repos.dedup();
        for repository in &repos {
            client.check_push_allowed(Repo {
                registry: host,
                repository,
            })?;
        }
        let mut blob_repos: HashMap<Sha256Digest, Vec<String>> = HashMap::new();
        for entry in index
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::OciBlob)
        {
            let mut targets: Vec<String> = entry
                .artifacts
                .iter()
                .filter_map(|a| artifact_image(&images, *a))
                .map(|i| i.repository.clone())
                .collect();
            targets.sort();
            targets.dedup();
            if !targets.is_empty() {
                blob_repos.insert(entry.sha256, targets);
            }
        }
        // Everything to look up with HEAD, looked up in parallel.
        let mut probes: Vec<(String, Sha256Digest)> = blob_repos
            .iter()
            .flat_map(|(d, repos)| repos.iter().map(|r| (r.clone(), *d)))
            .collect();
        for image in &images {
            probes.push((image.repository.clone(), image.digest));
            probes.extend(
                image
                    .children
                    .iter()
                    .map(|c| (image.repository.clone(), *c)),
            );
        }
        probes.sort();
        probes.dedup();
        let manifests: HashSet<Sha256Digest> = images
            .iter()
            .flat_map(|i| std::iter::once(i.digest).chain(i.children.iter().copied()))
            .collect();
        let present = parallel_probe(&client, host, &probes, &manifests, jobs)?;
        let elsewhere = find_elsewhere(
            &client,
            host,
            index,
            &blob_repos,
            &present,
            pushed_before,
            jobs,
        );
        let mut found = Found {
            present,
            tags: HashMap::new(),
        };
        for (n, image) in images.iter().enumerate() {
            let at = match &image.tag {
                Some(tag) => client.manifest_digest(
                    Repo {
                        registry: host,
                        repository: &image.repository,
                    },
                    tag,
                )?,
                None => found
                    .present
                    .contains(&(image.repository.clone(), image.digest))
                    .then_some(image.digest),
            };
            found.tags.insert(n, at);
        }
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(0);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let workers = (0..jobs.max(1))
            .map(|_| {
                let client = client.clone();
                let jobs_rx = jobs_rx.clone();
                let progress = progress.clone();
                let host = host.to_string();
                std::thread::spawn(move || worker(&client, &host, &jobs_rx, &progress))
            })
            .collect();
        Ok(RegistryTarget {
            client,
            host: host.to_string(),
            images,
            blob_repos,
            found,
            elsewhere,
            manifests: HashMap::new(),
            jobs: Some(jobs_tx),
            workers,
            progress,
            blobs_present: 0,
            moved: Vec::new(),
            created: Vec::new(),
        })
    }

    fn first_error(&self) -> Option<Error> {
        let mut p = locked(&self.progress);
        if p.errors.is_empty() {
            None
        } else {
            Some(p.errors.remove(0))
        }
    }

    fn dispatch(&self, job: Job) -> Result<()> {
        if let Some(e) = self.first_error() {
            return Err(e);
        }
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self
                .first_error()
                .unwrap_or_else(|| Error::Runtime("the upload workers stopped".into()))),
        }
    }

    /// Streams one blob's bytes to an upload worker as they verify.
    fn upload(
        &self,
        entry: &IndexEntry,
        repos: Vec<String>,
        data: &mut EntryReader<'_>,
    ) -> Result<()> {
        let (tx, rx) = sync_channel::<Piece>(QUEUED_PIECES);
        self.dispatch(Job::Upload {
            digest: entry.sha256,
            size: entry.size,
            repos,
            pieces: rx,
        })?;
        loop {
            let mut piece = vec![0u8; PIECE.min(entry.size.max(1) as usize)];
            let mut filled = 0;
            // Fill a whole piece (or reach the verified end).
            while filled < piece.len() {
                match data.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    // Dropping `tx` without `End` cancels the upload.
                    Err(e) => return Err(data.read_error(e)),
                }
            }
            if filled == 0 {
                // `Ok(0)` from the reader: every byte matched the signed digest.
                if tx.send(Piece::End).is_err() {
                    return Err(self.worker_gone());
                }
                return Ok(());
            }
            piece.truncate(filled);
            if tx.send(Piece::Data(piece)).is_err() {
                return Err(self.worker_gone());
            }
        }
    }

    fn worker_gone(&self) -> Error {
        // Give the worker a moment to record why it stopped.
        for _ in 0..50 {
            if let Some(e) = self.first_error() {
                return e;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Error::Runtime(format!("{}: an upload stopped", self.host))
    }

    /// Waits for every upload, then (the whole bundle verified) pushes the manifests and
    /// tags. A failure while tagging puts back the tags already moved; so does
    /// [`RegistryTarget::undo_tags`] when a later target fails.
    pub fn push_tags(&mut self, plain_http: bool, reporter: &Reporter) -> Result<RegistryReport> {
        self.join_workers();
        if let Some(e) = self.first_error() {
            return Err(e);
        }
        let progress = std::mem::take(&mut *locked(&self.progress));
        let mut report = RegistryReport {
            host: self.host.clone(),
            url: format!(
                "{}://{}",
                if plain_http { "http" } else { "https" },
                self.host
            ),
            blobs_pushed: progress.blobs_pushed,
            blobs_mounted: progress.blobs_mounted,
            blobs_present: self.blobs_present,
            bytes_pushed: progress.bytes_pushed,
            ..RegistryReport::default()
        };
        if let Err(e) = self.push_manifests(&mut report, reporter) {
            return Err(self.undo_tags(e));
        }
        Ok(report)
    }

    /// Undoes what this install did to tags and manifests (a later step failed): every tag
    /// it moved points where it did before, and every manifest it added is deleted (which
    /// needs a registry that allows deletes: distribution's `storage.delete.enabled`).
    /// Says so in `e`, naming what could not be undone.
    pub fn undo_tags(&mut self, e: Error) -> Error {
        let (tags, manifests) = self.undo();
        let mut notes = Vec::new();
        if !tags.is_empty() {
            notes.push(format!(
                "these tags could not be put back and need checking: {}",
                tags.join(", ")
            ));
        }
        if !manifests.is_empty() {
            notes.push(format!(
                "these new manifests could not be deleted (untagged; the registry may not allow deletes): {}",
                manifests.join(", ")
            ));
        }
        if notes.is_empty() {
            e.map_message(|m| format!("{m}; no tag or manifest on {} was changed", self.host))
        } else {
            e.map_message(|m| format!("{m}; {}", notes.join("; ")))
        }
    }

    /// Pushes each image's child manifests by digest, then its manifest or index under its
    /// tag, recording before each push what the rollback must undo.
    fn push_manifests(&mut self, report: &mut RegistryReport, reporter: &Reporter) -> Result<()> {
        for n in 0..self.images.len() {
            let image = self.images[n].clone();
            let repo = Repo {
                registry: &self.host,
                repository: &image.repository,
            };
            for child in &image.children {
                let key = (image.repository.clone(), *child);
                if self.found.present.contains(&key) || self.created.contains(&key) {
                    report.manifests_present += 1;
                    continue;
                }
                let bytes = self.manifest(child)?.clone();
                self.created.push(key);
                self.client.put_manifest(
                    repo,
                    &format!("sha256:{child}"),
                    &media_type(&bytes),
                    &bytes,
                )?;
                report.manifests_pushed += 1;
            }
            let before = self.found.tags.get(&n).copied().flatten();
            let status = if before == Some(image.digest) {
                report.manifests_present += 1;
                "present"
            } else {
                let bytes = self.manifest(&image.digest)?.clone();
                let key = (image.repository.clone(), image.digest);
                if !self.found.present.contains(&key) && !self.created.contains(&key) {
                    self.created.push(key);
                }
                if image.tag.is_some() {
                    self.moved.push((n, before));
                }
                self.client
                    .put_manifest(repo, &image.reference(), &media_type(&bytes), &bytes)?;
                report.manifests_pushed += 1;
                "pushed"
            };
            let name = image.name(&self.host);
            reporter.detail(format!("{status:<7} {name} (sha256:{})", image.digest));
            report.images.push(ImageReport {
                source: image.source.clone(),
                name,
                digest: format!("sha256:{}", image.digest),
                upstream_digest: image.upstream_digest.map(|d| format!("sha256:{d}")),
                status: status.into(),
            });
        }
        Ok(())
    }

    fn manifest(&self, digest: &Sha256Digest) -> Result<&Vec<u8>> {
        self.manifests.get(digest).ok_or_else(|| {
            Error::Verify(format!(
                "manifest sha256:{digest} is listed for an image but not in the bundle"
            ))
        })
    }

    /// Puts moved tags back (newest first) and deletes the manifests this install added;
    /// returns the tags and manifests it could not.
    fn undo(&mut self) -> (Vec<String>, Vec<String>) {
        let mut tags = Vec::new();
        for (n, before) in std::mem::take(&mut self.moved).into_iter().rev() {
            let image = &self.images[n];
            let repo = Repo {
                registry: &self.host,
                repository: &image.repository,
            };
            let reference = image.reference();
            let now = self.client.manifest_digest(repo, &reference);
            let outcome = match (now, before) {
                // Never moved (its push failed before it landed).
                (Ok(now), before) if now == before => Ok(()),
                (Ok(_), Some(old)) => self
                    .client
                    .manifest_bytes(repo, &format!("sha256:{old}"))
                    .and_then(|(_, media, bytes)| {
                        self.client.put_manifest(repo, &reference, &media, &bytes)
                    }),
                // A new tag goes with its manifest, deleted below (the registry has no
                // other way to remove a tag), unless that manifest was there before.
                (Ok(_), None)
                    if !self
                        .created
                        .contains(&(image.repository.clone(), image.digest)) =>
                {
                    Err(Error::Runtime(
                        "the tag is new and its manifest was not".into(),
                    ))
                }
                (Ok(_), None) => Ok(()),
                (Err(e), _) => Err(e),
            };
            if outcome.is_err() {
                tags.push(image.name(&self.host));
            }
        }
        let mut manifests = Vec::new();
        for (repository, digest) in std::mem::take(&mut self.created).into_iter().rev() {
            let repo = Repo {
                registry: &self.host,
                repository: &repository,
            };
            // A registry that refuses deletes refuses them whether or not the manifest is
            // there: only one that is there is worth naming.
            if self.client.delete_manifest(repo, &digest).is_err()
                && !matches!(
                    self.client
                        .manifest_digest(repo, &format!("sha256:{digest}")),
                    Ok(None)
                )
            {
                manifests.push(format!("{}/{repository}@sha256:{digest}", self.host));
            }
        }
        (tags, manifests)
    }

    fn join_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for RegistryTarget {
    fn drop(&mut self) {
        self.join_workers();
    }
}

fn media_type(bytes: &[u8]) -> String {
    media_type_of(bytes).unwrap_or_else(|| crate::registry::OCI_MANIFEST.to_string())
}

/// The planned image of artifact `n`, if it is an image.
fn artifact_image(images: &[PlannedImage], n: usize) -> Option<&PlannedImage> {
    images.iter().find(|i| i.artifact == n)
}

/// `HEAD` of every (repository, digest) in `probes`, `jobs` at a time; manifests by their
/// manifest URL, blobs by their blob URL. Returns those present.
fn parallel_probe(
    client: &RegistryClient,
    host: &str,
    probes: &[(String, Sha256Digest)],
    manifests: &HashSet<Sha256Digest>,
    jobs: usize,
) -> Result<HashSet<(String, Sha256Digest)>> {
    let next = Mutex::new(0usize);
    let found = Mutex::new(HashSet::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 16) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = locked(&next);
                        let i = *n;
                        *n += 1;
                        i
                    };
                    if i >= probes.len() || locked(&failure).is_some() {
                        return;
                    }
                    let (repository, digest) = &probes[i];
                    let repo = Repo {
                        registry: host,
                        repository,
                    };
                    let there = if manifests.contains(digest) {
                        client
                            .manifest_digest(repo, &format!("sha256:{digest}"))
                            .map(|d| d.is_some())
                    } else {
                        client.blob_exists(repo, digest)
                    };
                    match there {
                        Ok(true) => {
                            locked(&found).insert((repository.clone(), *digest));
                        }
                        Ok(false) => {}
                        Err(e) => {
                            locked(&failure).get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(found.into_inner().unwrap_or_else(|p| p.into_inner())),
    }
}

/// For each blob a delta left out that none of its own repositories holds, a repository
/// among `pushed_before` that does (`HEAD`), if any. A registry that refuses these lookups
/// (a login without pull rights there) leaves them unfound: the blob is then reported
/// missing, never guessed.
fn find_elsewhere(
    client: &RegistryClient,
    host: &str,
    index: &Index,
    blob_repos: &HashMap<Sha256Digest, Vec<String>>,
    present: &HashSet<(String, Sha256Digest)>,
    pushed_before: &[String],
    jobs: usize,
) -> HashMap<Sha256Digest, String> {
    let probes: Vec<(String, Sha256Digest)> = strays(index, blob_repos, present)
        .flat_map(|(e, own)| {
            pushed_before
                .iter()
                .filter(|r| !own.contains(r))
                .map(|r| (r.clone(), e.sha256))
        })
        .collect();
    // Receipts are files a local user who can write the web root could inflate: at most
    // this many lookups, after which the rest is reported missing (never guessed).
    const MAX_PROBES: usize = 4096;
    if probes.is_empty() {
        return HashMap::new();
    }
    let probes = &probes[..probes.len().min(MAX_PROBES)];
    let found = parallel_probe(client, host, probes, &HashSet::new(), jobs).unwrap_or_default();
    let mut elsewhere = HashMap::new();
    let mut found: Vec<(String, Sha256Digest)> = found.into_iter().collect();
    found.sort();
    for (repo, digest) in found {
        elsewhere.entry(digest).or_insert(repo);
    }
    elsewhere
}

/// The blobs a delta left out that none of their own repositories holds (pre-flight's
/// `HEAD`), with those repositories.
fn strays<'a>(
    index: &'a Index,
    blob_repos: &'a HashMap<Sha256Digest, Vec<String>>,
    present: &'a HashSet<(String, Sha256Digest)>,
) -> impl Iterator<Item = (&'a IndexEntry, &'a Vec<String>)> {
    index
        .entries
        .iter()
        .filter(|e| e.in_place && e.kind == EntryKind::OciBlob)
        .filter_map(|e| Some((e, blob_repos.get(&e.sha256)?)))
        .filter(|(e, repos)| {
            !repos
                .iter()
                .any(|r| present.contains(&(r.clone(), e.sha256)))
        })
}

/// An upload worker: takes jobs until the channel closes.
fn worker(
    client: &RegistryClient,
    host: &str,
    jobs: &Mutex<Receiver<Job>>,
    progress: &Mutex<Progress>,
) {
    loop {
        let job = match locked(jobs).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let outcome = match job {
            Job::Upload {
                digest,
                size,
                repos,
                pieces,
            } => {
                let first = Repo {
                    registry: host,
                    repository: &repos[0],
                };
                match client.upload_blob(first, &digest, size, pieces) {
                    Ok(bytes) => {
                        {
                            let mut p = locked(progress);
                            p.blobs_pushed += 1;
                            p.bytes_pushed += bytes;
                        }
                        spread(
                            client,
                            host,
                            &digest,
                            size,
                            &repos[0],
                            &repos[1..],
                            progress,
                        )
                    }
                    // The reader reports why the bytes stopped.
                    Err(UploadError::Aborted) => Ok(()),
                    Err(UploadError::Failed(e)) => {
                        Err(e.map_message(|m| format!("{m} (blob sha256:{digest})")))
                    }
                }
            }
            Job::Mount {
                digest,
                size,
                from,
                repos,
            } => spread(client, host, &digest, size, &from, &repos, progress),
        };
        if let Err(e) = outcome {
            locked(progress).errors.push(e);
        }
    }
}

/// Puts blob `digest` (present in `from`) into each of `repos`: a mount, or a copy
/// within the registry where it will not mount.
fn spread(
    client: &RegistryClient,
    host: &str,
    digest: &Sha256Digest,
    size: u64,
    from: &str,
    repos: &[String],
    progress: &Mutex<Progress>,
) -> Result<()> {
    for repository in repos {
        let repo = Repo {
            registry: host,
            repository,
        };
        // A registry that refuses the mount (some want pull rights on the other repository
        // that the login lacks) gets the bytes instead.
        if client.mount_blob(repo, digest, from).unwrap_or(false) {
            locked(progress).blobs_mounted += 1;
        } else {
            let from = Repo {
                registry: host,
                repository: from,
            };
            let bytes = client.copy_blob(repo, from, digest, size)?;
            let mut p = locked(progress);
            p.blobs_pushed += 1;
            p.bytes_pushed += bytes;
        }
    }
    Ok(())
}

impl RegistryTarget {
    /// Puts a blob into every repository that needs it: nothing where it is, a mount from
    /// a repository that has it, else an upload of `data` as it verifies (`None`: a blob
    /// a delta left out, which pre-flight found in at least one repository).
    fn place_blob(&mut self, entry: &IndexEntry, data: Option<&mut EntryReader<'_>>) -> Result<()> {
        let Some(repos) = self.blob_repos.get(&entry.sha256) else {
            return Ok(());
        };
        let (have, missing): (Vec<&String>, Vec<&String>) = repos
            .iter()
            .partition(|r| self.found.present.contains(&((*r).clone(), entry.sha256)));
        let missing: Vec<String> = missing.into_iter().cloned().collect();
        match (have.first(), missing.is_empty(), data) {
            (_, true, _) => {
                self.blobs_present += 1;
                Ok(())
            }
            (Some(from), false, _) => {
                let from = (*from).clone();
                self.dispatch(Job::Mount {
                    digest: entry.sha256,
                    size: entry.size,
                    from,
                    repos: missing,
                })
            }
            (None, false, None) if self.elsewhere.contains_key(&entry.sha256) => {
                let from = self.elsewhere[&entry.sha256].clone();
                self.dispatch(Job::Mount {
                    digest: entry.sha256,
                    size: entry.size,
                    from,
                    repos: missing,
                })
            }
            (None, false, Some(data)) => self.upload(entry, missing, data),
            (None, false, None) => Err(Error::Runtime(format!(
                "{}: blob sha256:{} expected in place is in none of the repositories {}",
                self.host,
                entry.sha256,
                missing.join(", ")
            ))),
        }
    }

    /// The blobs a delta left out that none of their repositories on this registry holds
    /// (pre-flight's `HEAD`), named for the refusal.
    pub fn missing_in_place(&self, index: &Index) -> Vec<String> {
        strays(index, &self.blob_repos, &self.found.present)
            .filter(|(e, _)| !self.elsewhere.contains_key(&e.sha256))
            .map(|(e, repos)| {
                format!(
                    "blob sha256:{} (for {}) on {}",
                    e.sha256,
                    repos.join(", "),
                    self.host
                )
            })
            .collect()
    }

    /// Whether this target takes `entry`: the manifests of its images and the blobs it
    /// pushes.
    pub fn wants(&self, entry: &IndexEntry) -> bool {
        match entry.kind {
            EntryKind::OciManifest => self
                .images
                .iter()
                .any(|i| i.digest == entry.sha256 || i.children.contains(&entry.sha256)),
            EntryKind::OciBlob => self.blob_repos.contains_key(&entry.sha256),
            _ => false,
        }
    }
}

impl EntrySink for RegistryTarget {
    /// A blob every repository that needs it already has (pre-flight's `HEAD`).
    fn holds(&self, entry: &IndexEntry) -> bool {
        entry.kind == EntryKind::OciBlob
            && self.blob_repos.get(&entry.sha256).is_some_and(|repos| {
                repos
                    .iter()
                    .all(|r| self.found.present.contains(&(r.clone(), entry.sha256)))
            })
    }

    fn skipped(&mut self, _entry: &IndexEntry) -> Result<()> {
        self.blobs_present += 1;
        Ok(())
    }

    /// A blob a delta left out: pre-flight found it in at least one of its repositories
    /// ([`RegistryTarget::missing_in_place`]); it is mounted into the others.
    fn expected(&mut self, entry: &IndexEntry) -> Result<()> {
        match entry.kind {
            EntryKind::OciBlob => self.place_blob(entry, None),
            _ => Ok(()),
        }
    }

    fn accept(&mut self, entry: &IndexEntry, data: &mut EntryReader<'_>) -> Result<()> {
        match entry.kind {
            EntryKind::OciManifest => {
                if entry.size > MAX_MANIFEST {
                    return Ok(());
                }
                let mut bytes = Vec::with_capacity(entry.size as usize);
                data.read_to_end(&mut bytes)
                    .map_err(|e| data.read_error(e))?;
                self.manifests.insert(entry.sha256, bytes);
                Ok(())
            }
            EntryKind::OciBlob => self.place_blob(entry, Some(data)),
            _ => Ok(()),
        }
    }
}
