//! `bundle create`: locked manifest → verified downloads in the cache → signed bundle.
//! Files come from [`crate::fetch`]; images from the registries ([`images`]).

pub mod charts;
pub mod debs;
pub mod images;
pub mod python;

use std::path::{Path, PathBuf};

use crate::bundle::index::{Artifact, EntryKind, blob_path};
use crate::bundle::signing::SecretKey;
use crate::bundle::writer::{BundlePlan, ContentEntry, ContentSource, WrittenBundle, write_bundle};
use crate::delta::Base;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::{Cache, Download, FetchOptions, Fetched, Fetcher};
use crate::manifest;
use crate::progress::Reporter;
use crate::registry::RegistryClient;
use crate::registry::auth::Credentials;

pub struct CreateOptions {
    pub locked: PathBuf,
    pub out: PathBuf,
    pub fetch: FetchOptions,
    /// Compression threads (0: one per core).
    pub threads: usize,
    /// Speak plain HTTP to registries.
    pub plain_http: bool,
    /// `--split-size` (volumes of at most this many bytes) and `--parity`.
    pub split: Option<crate::bundle::split::Split>,
    /// `--include-tool`: the running binary and its signature beside the bundle.
    pub include_tool: bool,
    /// `--base OLD`: make a delta that leaves out what OLD holds (a site export, an
    /// earlier bundle, or its index.json).
    pub base: Option<PathBuf>,
}

/// Checks a locked manifest and the output path before any download starts.
/// Returns the manifest and each file's `files/<host>/<path>`.
fn preflight(
    options: &CreateOptions,
) -> Result<(manifest::LoadedManifest, Vec<String>, Option<Base>)> {
    let loaded = manifest::load(&options.locked)?;
    let m = &loaded.manifest;
    m.check_image_names()?;
    m.check_charts()?;
    let unpinned = m.unpinned_entries();
    if !unpinned.is_empty() {
        return Err(Error::Usage(format!(
            "{} is not locked; these entries are not pinned:\n  {}",
            options.locked.display(),
            unpinned.join("\n  "),
        ))
        .with_hint(format!(
            "run `bundle lock {} -o LOCKED` and create from its output",
            options.locked.display()
        )));
    }
    let dests = m.file_dest_paths()?;
    if options.out.is_dir() {
        return Err(Error::Usage(format!(
            "-o {}: is a directory; give a file name",
            options.out.display()
        )));
    }
    let parent = options
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::Usage(format!(
            "-o {}: directory {} does not exist",
            options.out.display(),
            parent.display()
        )));
    }
    // Read before any download: a malformed base is a usage error (exit 2) up front.
    let base = options.base.as_deref().map(Base::load).transpose()?;
    Ok((loaded, dests, base))
}

/// Where a download's bytes come from in the bundle: the fetched file, or nothing (`None`:
/// a delta's base holds it, so it is left out with its pinned sha256 and size). Also how
/// the detail line names it.
fn fetched_or_in_place(
    fetched: Option<&Fetched>,
    download: &Download,
) -> Result<(ContentSource, Sha256Digest, u64, &'static str)> {
    match (fetched, download.expected_sha256, download.expected_size) {
        (Some(f), _, _) => Ok((
            ContentSource::File(f.path.clone()),
            f.sha256,
            f.size,
            if f.from_cache { "cached  " } else { "fetched " },
        )),
        (None, Some(sha256), Some(size)) => Ok((ContentSource::InPlace, sha256, size, "in place")),
        (None, _, _) => Err(Error::Runtime(format!(
            "{}: left out of the delta without a pinned sha256 and size",
            download.canonical
        ))),
    }
}

/// The lock as the bundle carries it: canonical YAML without `mirrors`, so a bundle made
/// through a mirror is identical to one made without, and no proxy URL crosses the gap.
fn carried_lock(m: &manifest::Manifest) -> Result<Vec<u8>> {
    let mut carried = m.clone();
    carried.mirrors.clear();
    Ok(carried.to_yaml()?.into_bytes())
}

pub fn create(
    options: &CreateOptions,
    key: &SecretKey,
    reporter: &Reporter,
) -> Result<WrittenBundle> {
    let (loaded, dests, base) = preflight(options)?;
    let m = &loaded.manifest;
    // A file the base holds (same path, same sha256) is not even downloaded.
    let held: Vec<Option<Fetched>> = m
        .files
        .iter()
        .zip(&dests)
        .map(|(f, dest)| {
            // Only with the size the lock records: a base that records another size
            // for this sha256 (stale, hand-edited) does not hold the file, and its size
            // must never reach the signed index.
            let (sha256, size) = (f.sha256?, f.size?);
            if base.as_ref()?.holds(dest, EntryKind::File, &sha256)? != size {
                return None;
            }
            Some(Fetched {
                sha256,
                size,
                path: PathBuf::new(),
                from_cache: true,
            })
        })
        .collect();
    let downloads = m
        .files
        .iter()
        .zip(&held)
        .filter(|(_, held)| held.is_none())
        .map(|(f, _)| Download::for_file(m, f))
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = downloads.iter().filter_map(|d| d.expected_size).sum();
    let fetcher = Fetcher::new(&options.fetch)?;
    let bar = reporter.bytes_bar(total, "download");
    let mut fetched = fetcher.fetch_all(&downloads, &bar)?.into_iter();
    bar.finish_and_clear();
    let fetched: Vec<(Fetched, bool)> = held
        .into_iter()
        .map(|held| match held {
            Some(f) => Some((f, true)),
            None => fetched.next().map(|f| (f, false)),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::Runtime("a download went missing".into()))?;

    let mut artifacts = Vec::with_capacity(fetched.len());
    let mut contents = Vec::with_capacity(fetched.len());
    for (i, ((entry, dest), (f, in_place))) in m.files.iter().zip(dests).zip(&fetched).enumerate() {
        reporter.detail(format!(
            "{} {} -> {dest}",
            match (in_place, f.from_cache) {
                (true, _) => "in place",
                (false, true) => "cached  ",
                (false, false) => "fetched ",
            },
            entry.url
        ));
        artifacts.push(Artifact {
            kind: EntryKind::File,
            source: entry.url.to_string(),
            dest: dest.clone(),
            sha256: Some(f.sha256),
            size: f.size,
            external: Vec::new(),
        });
        contents.push(ContentEntry {
            path: dest,
            kind: EntryKind::File,
            source: match in_place {
                true => ContentSource::InPlace,
                false => ContentSource::File(f.path.clone()),
            },
            size: f.size,
            sha256: f.sha256,
            artifacts: vec![i],
            origin: entry.url.to_string(),
        });
    }
    let created_epoch = crate::timefmt::build_epoch();
    // What the base holds at this path with this sha256 and size is not downloaded.
    let held_by_base = |path: &str, kind: EntryKind, sha256: &Sha256Digest, size: u64| {
        base.as_ref()
            .is_some_and(|b| b.holds(path, kind, sha256) == Some(size))
    };
    if !m.images.is_empty() || !m.charts.is_empty() {
        let registry = RegistryClient::new(
            &options.fetch,
            options.plain_http,
            Credentials::from_auth_files()?,
        )?;
        let cache = Cache::open(&options.fetch.cache_dir)?;
        let carried = images::collect(
            &m.images,
            &m.platforms,
            &registry,
            &fetcher,
            &cache,
            artifacts.len(),
            &|digest, size| held_by_base(&blob_path(digest), EntryKind::OciBlob, digest, size),
            reporter,
        )?;
        let mut layout = carried.layout;
        artifacts.extend(carried.artifacts);
        contents.extend(carried.contents);
        let carried = charts::collect(
            m,
            &registry,
            &fetcher,
            &cache,
            artifacts.len(),
            &crate::timefmt::rfc3339(created_epoch),
            reporter,
        )?;
        layout.extend(carried.layout);
        artifacts.extend(carried.artifacts);
        contents.extend(carried.contents);
        // The layout's index belongs to every image and chart it names.
        let named: Vec<usize> = artifacts
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.kind, EntryKind::Image | EntryKind::OciChart))
            .map(|(i, _)| i)
            .collect();
        contents.extend(images::layout_entries(layout, named)?);
    }
    if !m.debs.is_empty() {
        let carried = debs::collect(m, &fetcher, artifacts.len(), &held_by_base, reporter)?;
        artifacts.extend(carried.artifacts);
        contents.extend(carried.contents);
    }
    if m.python.is_some() {
        let carried = python::collect(m, &fetcher, artifacts.len(), &held_by_base, reporter)?;
        artifacts.extend(carried.artifacts);
        contents.extend(carried.contents);
    }
    if let Some(base) = &base {
        // Everything else the base holds with the same sha256 (blobs, debs, charts,
        // wheels) is left out too.
        for c in &mut contents {
            if base.holds(&c.path, c.kind, &c.sha256) == Some(c.size) {
                c.source = ContentSource::InPlace;
            }
        }
    }
    let plan = BundlePlan {
        name: m.name.clone(),
        version: m.version.clone(),
        locked_manifest: carried_lock(m)?,
        artifacts,
        contents,
        created_epoch,
        base: base.map(|b| b.record),
    };
    let total_content: u64 = plan.contents.iter().map(|c| c.size).sum();
    let bar = reporter.bytes_bar(total_content, "pack");
    let mut written = write_bundle(
        plan,
        key,
        &options.out,
        options.split,
        options.threads,
        &bar,
    )?;
    bar.finish_and_clear();
    if options.include_tool {
        let dir = crate::fs::parent_dir(&options.out);
        written.tool = Some(crate::bundle::writer::include_tool(
            dir,
            key,
            created_epoch,
        )?);
    }
    Ok(written)
}
