//! Python wheels and sdists into the bundle: each locked file downloaded (through
//! `mirrors`), checked against its sha256 and carried as `python/<file>`, one artifact per
//! file bound for `simple/<project>/` on the site.

use crate::bundle::index::{Artifact, EntryKind};
use crate::bundle::writer::{ContentEntry, ContentSource};
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
pub fn collect(
    m: &Manifest,
    fetcher: &Fetcher,
    first: usize,
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
        let project = match &p.name {
            Some(n) => normalize(n)?,
            None => filename::parse(&file, None)
                .map_err(|why| {
                    Error::Usage(format!(
                        "python package {url}: `{file}` is not a wheel or sdist file name: {why}"
                    ))
                })?
                .name,
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
        ));
    }
    let downloads: Vec<Download> = planned.iter().map(|(d, _, _)| d.clone()).collect();
    let total = downloads.iter().filter_map(|d| d.expected_size).sum();
    let bar = reporter.bytes_bar(total, "python");
    let fetched = fetcher.fetch_all(&downloads, &bar)?;
    bar.finish_and_clear();
    for ((d, path, project), f) in planned.into_iter().zip(fetched) {
        reporter.detail(format!(
            "{} {} -> {path}",
            if f.from_cache { "cached " } else { "fetched" },
            d.canonical
        ));
        let artifact = first + carried.artifacts.len();
        carried.artifacts.push(Artifact {
            kind: EntryKind::Python,
            source: d.canonical.to_string(),
            dest: format!("simple/{project}/"),
            sha256: Some(f.sha256),
            size: f.size,
            external: Vec::new(),
        });
        carried.contents.push(ContentEntry {
            path,
            kind: EntryKind::Python,
            source: ContentSource::File(f.path.clone()),
            size: f.size,
            sha256: f.sha256,
            artifacts: vec![artifact],
            origin: d.canonical.to_string(),
        });
    }
    Ok(carried)
}
