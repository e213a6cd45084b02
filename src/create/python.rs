//! Python wheels and sdists into the bundle: each locked file downloaded (through
//! `mirrors`), checked against its sha256 and carried as `python/<file>` (with its core
//! metadata as `python/<file>.metadata` when the lock pins one, PEP 658), one artifact per
//! file bound for `simple/<project>/` on the site.

use crate::bundle::index::{Artifact, EntryKind};
use crate::bundle::writer::{ContentEntry, ContentSource};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::{Download, Fetcher};
use crate::lock::python::{file_name_of, fold};
use crate::manifest::Manifest;
use crate::progress::Reporter;
use crate::python::{bundle_path, filename, normalize};

/// What the python section adds to a bundle plan.
#[derive(Default)]
pub struct CarriedPython {
    pub artifacts: Vec<Artifact>,
    pub contents: Vec<ContentEntry>,
}

/// Collects `m.python`; `first` is the index of the first artifact.
/// A file a delta's base holds (`in_place(path, kind, sha256, size)`) is not downloaded.
pub fn collect(
    m: &Manifest,
    fetcher: &Fetcher,
    first: usize,
    in_place: &dyn Fn(&str, EntryKind, &Sha256Digest, u64) -> bool,
    reporter: &Reporter,
) -> Result<CarriedPython> {
    let mut carried = CarriedPython::default();
    let Some(section) = &m.python else {
        return Ok(carried);
    };
    // A hand-edited lock may name a file twice, or two contents under one name.
    let mut packages = section.packages.clone();
    for p in &mut packages {
        if let (None, Some(url)) = (&p.filename, &p.url) {
            p.filename = Some(file_name_of(url));
        }
    }
    let packages = fold(packages)?;
    let mut planned = Vec::new();
    for p in &packages {
        let (Some(url), Some(sha256)) = (&p.url, p.sha256) else {
            continue; // refused by create's pre-flight (unpinned)
        };
        let file = p.filename.clone().unwrap_or_else(|| file_name_of(url));
        let path = bundle_path(&file)?;
        // The page it is listed on is its own project's: pip skips another project's files.
        let named = p.name.as_deref().map(normalize).transpose()?;
        let project = filename::parse(&file, named.as_deref())
            .map_err(|why| {
                Error::Usage(format!(
                    "python package {url}: `{file}` is not a wheel or sdist file name{}: {why}",
                    named
                        .as_deref()
                        .map(|p| format!(" of `{p}`"))
                        .unwrap_or_default()
                ))
                .with_hint("a hand-edited lock? lock the manifest again")
            })?
            .name;
        // PEP 658: the core metadata beside the file, when the lock pinned it.
        let metadata = match p.metadata_sha256 {
            Some(digest) => {
                let canonical: crate::manifest::SourceUrl =
                    format!("{url}.metadata").parse().map_err(Error::Usage)?;
                Some((
                    Download {
                        from: m.fetch_url(&canonical)?,
                        canonical,
                        expected_sha256: Some(digest),
                        expected_size: None,
                        authorization: None,
                        label: None,
                        pinned_by: None,
                    },
                    format!("{path}.metadata"),
                ))
            }
            None => None,
        };
        planned.push((
            Download {
                canonical: url.clone(),
                from: m.fetch_url(url)?,
                expected_sha256: Some(sha256),
                expected_size: p.size,
                authorization: None,
                label: None,
                pinned_by: None,
            },
            path,
            project,
            metadata,
        ));
    }
    let downloads: Vec<Download> = planned
        .iter()
        .map(|(d, _, _, _)| d.clone())
        .chain(
            planned
                .iter()
                .filter_map(|(_, _, _, m)| Some(m.as_ref()?.0.clone())),
        )
        .collect();
    // The sizes come from the index's pages, unchecked until the bytes arrive.
    let total = downloads
        .iter()
        .filter_map(|d| d.expected_size)
        .fold(0u64, u64::saturating_add);
    // A wheel or sdist the base holds is left out (its small metadata file is carried).
    let left_out: Vec<bool> = planned
        .iter()
        .map(
            |(d, path, _, _)| match (d.expected_sha256, d.expected_size) {
                (Some(sha256), Some(size)) => in_place(path, EntryKind::Python, &sha256, size),
                _ => false,
            },
        )
        .chain(
            planned
                .iter()
                .filter(|(_, _, _, m)| m.is_some())
                .map(|_| false),
        )
        .collect();
    let bar = reporter.bytes_bar(total, "python");
    let fetched = fetcher.fetch_all_but(&downloads, &left_out, &bar)?;
    bar.finish_and_clear();
    let (files, metadata) = fetched.split_at(planned.len());
    let mut metadata = metadata.iter().flatten();
    for ((d, path, project, meta), f) in planned.into_iter().zip(files) {
        let (source, sha256, size, how) = super::fetched_or_in_place(f.as_ref(), &d)?;
        reporter.detail(format!("{how} {} -> {path}", d.canonical));
        let artifact = first + carried.artifacts.len();
        carried.artifacts.push(Artifact {
            kind: EntryKind::Python,
            source: d.canonical.to_string(),
            dest: format!("simple/{project}/"),
            sha256: Some(sha256),
            size,
            external: Vec::new(),
        });
        carried.contents.push(ContentEntry {
            path,
            kind: EntryKind::Python,
            source,
            size,
            sha256,
            artifacts: vec![artifact],
            origin: d.canonical.to_string(),
        });
        if let Some((md, mpath)) = meta
            && let Some(mf) = metadata.next()
        {
            carried.contents.push(ContentEntry {
                path: mpath,
                kind: EntryKind::Python,
                source: ContentSource::File(mf.path.clone()),
                size: mf.size,
                sha256: mf.sha256,
                artifacts: vec![artifact],
                origin: md.canonical.to_string(),
            });
        }
    }
    Ok(carried)
}
