//! `lock` of `python`: every `{name, version}` and every requirements-file line resolved
//! through the index (PEP 691 JSON, else PEP 503 HTML) to one file per target platform —
//! the most specific compatible wheel, else the sdist — among the files whose
//! `requires-python` admits the target; `{url}` entries downloaded once when they have no
//! sha256. The lock lists every file with name, version, file name, URL and sha256 (the
//! requirements file is expanded, so the lock is self-contained), sorted and folded by
//! sha256.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::fetch::{Download, Fetcher};
use crate::manifest::{Manifest, PythonPackage, PythonSection, SourceUrl};
use crate::progress::Reporter;
use crate::python::filename::{self, DistFilename};
use crate::python::index::{self, IndexFile};
use crate::python::requirements::{self, Requirements};
use crate::python::tags::{Target, TargetPlatform};
use crate::python::{bundle_path, normalize};

/// A project page is a list of links; even the largest projects stay far below this.
const MAX_PAGE_BYTES: u64 = 64 << 20;
/// A requirements file is text an operator reads.
const MAX_REQUIREMENTS_BYTES: u64 = 8 << 20;

/// What one resolution asks for.
struct Wanted<'a> {
    /// `python.packages[2] jmespath==1.0.1`, `requirements.txt:7: jmespath==1.0.1`.
    what: String,
    name: String,
    version: pep440_rs::Version,
    /// Only files with one of these sha256 (a requirements line).
    hashes: Option<&'a [crate::digest::Sha256Digest]>,
}

/// Reads the index pages, one per project, as they are needed.
struct Index<'a> {
    base: SourceUrl,
    manifest: &'a Manifest,
    fetcher: &'a Fetcher,
    pages: BTreeMap<String, (String, Vec<IndexFile>)>,
}

impl Index<'_> {
    /// The files of project `name` (normalised), with the page URL they came from.
    fn files(&mut self, name: &str) -> Result<&(String, Vec<IndexFile>)> {
        if !self.pages.contains_key(name) {
            let canonical: SourceUrl =
                format!("{}/{name}/", self.base.as_str().trim_end_matches('/'))
                    .parse()
                    .map_err(Error::Usage)?;
            let from = self.manifest.fetch_url(&canonical)?;
            let page = self
                .fetcher
                .fetch_page(&from, Some(index::ACCEPT), MAX_PAGE_BYTES)?
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "python package `{name}` is not in the index {} ({canonical}: HTTP 404)",
                        self.base
                    ))
                    .with_hint("check the name and python.index")
                })?;
            // Relative links resolve against the canonical page, so that a mirror's URL
            // never enters the lock; a redirect moves them where the server said.
            let against = if page.url.as_str() == from.as_str() {
                canonical.as_url().clone()
            } else {
                page.url.clone()
            };
            let files = index::parse_page(&page.body, page.content_type.as_deref(), &against)
                .map_err(|why| Error::Runtime(format!("{canonical}: {why}")))?;
            self.pages
                .insert(name.to_string(), (canonical.to_string(), files));
        }
        Ok(&self.pages[name])
    }
}

/// Resolves the `python` section in place.
pub fn lock_python(
    locked: &mut Manifest,
    base_dir: &Path,
    fetcher: &Fetcher,
    reporter: &Reporter,
) -> Result<()> {
    let Some(section) = locked.python.clone() else {
        return Ok(());
    };
    let requirements = match &section.requirements {
        Some(file) => Some(read_requirements(base_dir, file)?),
        None => None,
    };
    let requirements_file = section.requirements.clone().unwrap_or_default();
    let named = section.packages.iter().any(|p| p.url.is_none())
        || requirements.as_ref().is_some_and(|r| !r.pinned.is_empty());
    let mut out: Vec<PythonPackage> = Vec::new();
    if named {
        let target = target_of(&section, locked)?;
        let base = match (
            &section.index,
            requirements.as_ref().and_then(|r| r.index_url.as_ref()),
        ) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url.parse().map_err(|e: String| {
                Error::Usage(format!("{requirements_file}: --index-url: {e}"))
            })?,
            (None, None) => {
                return Err(Error::Usage(
                    "python: packages named by version need python.index (the simple repository's URL)"
                        .into(),
                )
                .with_hint("add `index: https://pypi.example.org/simple` to the python section"));
            }
        };
        let mut index = Index {
            base,
            manifest: locked,
            fetcher,
            pages: BTreeMap::new(),
        };
        for (i, p) in section.packages.iter().enumerate() {
            if p.url.is_some() {
                continue;
            }
            let (Some(name), Some(version)) = (&p.name, &p.version) else {
                return Err(Error::Usage(format!(
                    "python.packages[{i}]{}: give either {{url, sha256}} or {{name, version}}",
                    p.name
                        .as_ref()
                        .map(|n| format!(" `{n}`"))
                        .unwrap_or_default()
                )));
            };
            let wanted = Wanted {
                what: format!("python.packages[{i}] {name}=={version}"),
                name: normalize(name)?,
                version: crate::python::version(version)?,
                hashes: None,
            };
            for platform in &target.platforms {
                out.push(resolve(&mut index, &target, platform, &wanted)?);
            }
        }
        for r in requirements.iter().flat_map(|r| &r.pinned) {
            let wanted = Wanted {
                what: format!("{requirements_file}:{}: {}", r.line, r.text),
                name: r.name.clone(),
                version: r.version.clone(),
                hashes: Some(&r.hashes),
            };
            for platform in target.platforms.iter().filter(|p| r.applies(&p.markers)) {
                out.push(resolve(&mut index, &target, platform, &wanted)?);
            }
        }
    }
    out.extend(by_url(&section, locked, fetcher, reporter)?);
    let packages = fold(out)?;
    for p in &packages {
        reporter.detail(format!(
            "locked python {} sha256:{}",
            p.filename.as_deref().unwrap_or_default(),
            p.sha256.map(|d| d.hex()).unwrap_or_default()
        ));
    }
    locked.python = Some(PythonSection {
        packages,
        requirements: None,
        ..section
    });
    Ok(())
}

/// The target interpreter and platforms of the section.
fn target_of(section: &PythonSection, m: &Manifest) -> Result<Target> {
    let Some(version) = &section.python_version else {
        return Err(Error::Usage(
            "python: packages named by version need python.python-version (the site's interpreter, e.g. 3.11)"
                .into(),
        ));
    };
    let mut platforms = section.platforms.clone();
    if platforms.is_empty() {
        for p in &m.platforms {
            if let Some(tag) = crate::python::tags::default_platform(&p.os, &p.architecture)
                && !platforms.iter().any(|t| t == tag)
            {
                platforms.push(tag.to_string());
            }
        }
    }
    if platforms.is_empty() {
        return Err(Error::Usage(
            "python: no python.platforms and no linux platform in the manifest's platforms to take them from"
                .into(),
        )
        .with_hint("add e.g. `platforms: [manylinux2014_x86_64]` to the python section"));
    }
    Target::new(version, &platforms, section.abi.as_deref())
}

fn read_requirements(base_dir: &Path, file: &str) -> Result<Requirements> {
    let path = base_dir.join(file);
    let meta = std::fs::metadata(&path)
        .at("cannot read the requirements file", &path)
        .map_err(|e| {
            Error::Usage(format!("python.requirements: {e}"))
                .with_hint("python.requirements is relative to the manifest's directory")
        })?;
    if !meta.is_file() || meta.len() > MAX_REQUIREMENTS_BYTES {
        return Err(Error::Usage(format!(
            "{}: not a requirements file (a regular file of at most {MAX_REQUIREMENTS_BYTES} bytes)",
            path.display()
        )));
    }
    let bytes = std::fs::read(&path).at("cannot read the requirements file", &path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Usage(format!("{}: not UTF-8 text", path.display())))?;
    requirements::parse(&text, &path.display().to_string())
}

/// Picks the file of `wanted` for one platform.
fn resolve(
    index: &mut Index<'_>,
    target: &Target,
    platform: &TargetPlatform,
    wanted: &Wanted<'_>,
) -> Result<PythonPackage> {
    let (page, files) = index.files(&wanted.name)?;
    pick(page, files, target, platform, wanted)
}

/// Picks the file of `wanted` for one platform among the files of its project page.
fn pick(
    page: &str,
    files: &[IndexFile],
    target: &Target,
    platform: &TargetPlatform,
    wanted: &Wanted<'_>,
) -> Result<PythonPackage> {
    let parsed: Vec<(&IndexFile, DistFilename)> = files
        .iter()
        .filter_map(|f| Some((f, filename::parse(&f.filename, Some(&wanted.name)).ok()?)))
        .collect();
    let of_version: Vec<&(&IndexFile, DistFilename)> = parsed
        .iter()
        .filter(|(_, d)| d.version == wanted.version)
        .collect();
    if of_version.is_empty() {
        let versions: BTreeSet<&pep440_rs::Version> =
            parsed.iter().map(|(_, d)| &d.version).collect();
        let versions: Vec<&pep440_rs::Version> = versions.into_iter().collect();
        let at = versions.partition_point(|v| **v < wanted.version);
        let nearest: Vec<String> = versions[at.saturating_sub(3)..(at + 3).min(versions.len())]
            .iter()
            .map(|v| v.to_string())
            .collect();
        return Err(Error::Usage(format!(
            "{}: version {} is not in the index ({page}); nearest available: {}",
            wanted.what,
            wanted.version,
            if nearest.is_empty() {
                "none".to_string()
            } else {
                nearest.join(", ")
            }
        ))
        .with_hint("pin one of the versions the index has"));
    }
    let mut seen = Vec::new();
    let mut best: Option<(&IndexFile, Option<uv_platform_tags::TagPriority>)> = None;
    for (file, dist) in &of_version {
        if let Some(rp) = &file.requires_python
            && !target.admits(rp)
        {
            seen.push(format!("{} (requires-python {rp})", file.filename));
            continue;
        }
        if let Some(hashes) = wanted.hashes
            && !file.sha256.is_some_and(|d| hashes.contains(&d))
        {
            seen.push(format!(
                "{} (sha256 not among the --hash values)",
                file.filename
            ));
            continue;
        }
        let priority = platform.wheel_priority(dist);
        let usable = priority.is_some() || !dist.is_wheel();
        if !usable {
            seen.push(format!("{} (wheel for another target)", file.filename));
            continue;
        }
        seen.push(file.filename.clone());
        let better = match &best {
            None => true,
            Some((b, bp)) => match (priority, bp) {
                (Some(p), Some(q)) => p > *q,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                // Two sdists: the .tar.gz (PEP 625's format) over a .zip.
                (None, None) => {
                    file.filename.ends_with(".tar.gz") && !b.filename.ends_with(".tar.gz")
                }
            },
        };
        if better {
            best = Some((file, priority));
        }
    }
    let Some((file, _)) = best else {
        return Err(Error::Usage(format!(
            "{}: no file fits {} on {}; files seen: {}",
            wanted.what,
            target.describe(),
            platform.tag,
            seen.join(", ")
        ))
        .with_hint("check python.python-version, python.platforms and python.abi against the files the index has"));
    };
    let Some(sha256) = file.sha256 else {
        return Err(Error::Runtime(format!(
            "{}: the index lists {} without a sha256 ({page})",
            wanted.what, file.filename
        ))
        .with_hint("pin it as {url, sha256} instead"));
    };
    bundle_path(&file.filename)?;
    Ok(PythonPackage {
        name: Some(wanted.name.clone()),
        version: Some(
            filename::parse(&file.filename, Some(&wanted.name))
                .map(|d| d.version.to_string())
                .unwrap_or_else(|_| wanted.version.to_string()),
        ),
        filename: Some(file.filename.clone()),
        url: Some(file.url.to_string().parse().map_err(Error::Usage)?),
        sha256: Some(sha256),
        size: file.size,
        requires_python: file.requires_python.clone(),
        metadata_sha256: file.metadata_sha256,
    })
}

/// The `{url[, sha256]}` entries, completed: name, version and file name from the URL,
/// sha256 and size by downloading those that have none.
fn by_url(
    section: &PythonSection,
    m: &Manifest,
    fetcher: &Fetcher,
    reporter: &Reporter,
) -> Result<Vec<PythonPackage>> {
    let mut out = Vec::new();
    let mut downloads = Vec::new();
    let mut pending = Vec::new();
    for (i, p) in section.packages.iter().enumerate() {
        let Some(url) = &p.url else { continue };
        let file = p.filename.clone().unwrap_or_else(|| file_name_of(url));
        bundle_path(&file)
            .map_err(|e| e.map_message(|m| format!("python.packages[{i}] {url}: {m}")))?;
        let project = p.name.as_deref().map(normalize).transpose()?;
        let dist = filename::parse(&file, project.as_deref()).map_err(|why| {
            Error::Usage(format!(
                "python.packages[{i}] {url}: `{file}` is not a wheel or sdist file name{}: {why}",
                project
                    .as_deref()
                    .map(|p| format!(" of `{p}`"))
                    .unwrap_or_default()
            ))
        })?;
        let mut locked = p.clone();
        locked.name = Some(dist.name.clone());
        locked.version = Some(
            p.version
                .clone()
                .unwrap_or_else(|| dist.version.to_string()),
        );
        locked.filename = Some(file);
        if p.sha256.is_none() {
            downloads.push(Download {
                canonical: url.clone(),
                from: m.fetch_url(url)?,
                expected_sha256: None,
                expected_size: None,
                authorization: None,
                label: None,
                pinned_by: None,
            });
            pending.push(out.len());
        }
        out.push(locked);
    }
    if !downloads.is_empty() {
        let bar = reporter.bytes_bar(0, "lock");
        let fetched = fetcher.fetch_all(&downloads, &bar)?;
        bar.finish_and_clear();
        for (i, f) in pending.into_iter().zip(fetched) {
            out[i].sha256 = Some(f.sha256);
            out[i].size = Some(f.size);
        }
    }
    Ok(out)
}

/// The last path segment of a URL, percent-decoded.
pub fn file_name_of(url: &SourceUrl) -> String {
    let last = url
        .as_url()
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned()
}

/// Sorted by name, version and file name; the same file (sha256) once; one file name
/// with two contents is an error (both would be `python/<file>`).
pub fn fold(mut packages: Vec<PythonPackage>) -> Result<Vec<PythonPackage>> {
    let key = |p: &PythonPackage| {
        (
            p.name.clone().unwrap_or_default(),
            p.version
                .as_deref()
                .and_then(|v| v.parse::<pep440_rs::Version>().ok()),
            p.filename.clone().unwrap_or_default(),
            p.sha256.map(|d| d.hex()).unwrap_or_default(),
        )
    };
    packages.sort_by_key(key);
    let mut out: Vec<PythonPackage> = Vec::with_capacity(packages.len());
    let mut by_file: BTreeMap<String, usize> = BTreeMap::new();
    for p in packages {
        if out
            .iter()
            .any(|o| o.sha256.is_some() && o.sha256 == p.sha256)
        {
            continue;
        }
        let file = p.filename.clone().unwrap_or_default();
        if let Some(&other) = by_file.get(&file) {
            let o: &PythonPackage = &out[other];
            let url = |p: &PythonPackage| p.url.as_ref().map(|u| u.to_string()).unwrap_or_default();
            return Err(Error::Usage(format!(
                "python: two files are named `{file}` with different contents: {} (sha256 {}) and {} (sha256 {})",
                url(o),
                o.sha256.map(|d| d.hex()).unwrap_or_default(),
                url(&p),
                p.sha256.map(|d| d.hex()).unwrap_or_default(),
            ))
            .with_hint("both would be python/<file> on the site: keep only one of them"));
        }
        by_file.insert(file, out.len());
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, sha: char, requires: Option<&str>) -> IndexFile {
        IndexFile {
            filename: name.to_string(),
            url: format!("https://files.example.org/p/{name}")
                .parse()
                .unwrap(),
            sha256: Some(sha.to_string().repeat(64).parse().unwrap()),
            requires_python: requires.map(String::from),
            size: None,
            metadata_sha256: None,
        }
    }

    fn chosen(
        files: &[IndexFile],
        platform: &str,
        hashes: Option<&[crate::digest::Sha256Digest]>,
    ) -> Result<String> {
        let target = Target::new("3.11", &[platform.to_string()], None).unwrap();
        let wanted = Wanted {
            what: "python.packages[0] m==1.0".into(),
            name: "m".into(),
            version: crate::python::version("1.0").unwrap(),
            hashes,
        };
        pick(
            "https://pypi.example.org/simple/m/",
            files,
            &target,
            &target.platforms[0],
            &wanted,
        )
        .map(|p| p.filename.unwrap())
    }

    #[test]
    fn wheels_before_sdists_and_tar_gz_before_zip() {
        let files = [
            file("m-1.0.zip", 'a', None),
            file("m-1.0.tar.gz", 'b', None),
            file("m-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", 'c', None),
            file("m-1.0-py3-none-any.whl", 'd', None),
            file("m-0.9-cp311-cp311-win_amd64.whl", 'e', None),
        ];
        assert_eq!(
            chosen(&files, "manylinux2014_x86_64", None).unwrap(),
            "m-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
        );
        assert_eq!(
            chosen(&files, "win_amd64", None).unwrap(),
            "m-1.0-py3-none-any.whl"
        );
        assert_eq!(
            chosen(&files[..3], "win_amd64", None).unwrap(),
            "m-1.0.tar.gz"
        );
        assert_eq!(chosen(&files[..1], "win_amd64", None).unwrap(), "m-1.0.zip");
    }

    #[test]
    fn requires_python_and_hashes_narrow_the_choice() {
        let files = [
            file(
                "m-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                'c',
                Some(">=3.12"),
            ),
            file("m-1.0-py3-none-any.whl", 'd', Some(">=3.7")),
            file("m-1.0.tar.gz", 'b', None),
        ];
        assert_eq!(
            chosen(&files, "manylinux2014_x86_64", None).unwrap(),
            "m-1.0-py3-none-any.whl"
        );
        let only_sdist: Vec<crate::digest::Sha256Digest> = vec!["b".repeat(64).parse().unwrap()];
        assert_eq!(
            chosen(&files, "manylinux2014_x86_64", Some(&only_sdist)).unwrap(),
            "m-1.0.tar.gz"
        );
        let e = chosen(&files[..1], "manylinux2014_x86_64", None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("(requires-python >=3.12)"), "{e}");
        let e = chosen(
            &[
                file("m-2.0-py3-none-any.whl", 'a', None),
                file("m-0.1.tar.gz", 'b', None),
            ],
            "any",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nearest available: 0.1, 2.0"), "{e}");
    }
}
