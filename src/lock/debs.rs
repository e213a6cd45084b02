//! `lock` of `debs`: for each repository, the `InRelease` (or `Release` + `Release.gpg`)
//! checked against its `signed-by` key, each `Packages` index checked against the signed
//! SHA256 list before it is read, then the named packages and their dependency closure
//! over every carried repository, each pinned by version, architecture, file name, size
//! and sha256. The key goes into the lock (armored) so the lock is self-contained;
//! dependencies no carried repository provides are listed under the repository's
//! `external`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::apt::packages::{self, BinaryPackage};
use crate::apt::release::{self, Release, RepoKey};
use crate::apt::resolve::{self, Closure, Universe, Wanted};
use crate::apt::{MAX_RELEASE_BYTES, RepoLayout, source_url};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;
use crate::manifest::{DebPackage, DebRepo, ExternalDep, LockedRelease, Manifest};
use crate::progress::Reporter;

/// Key files are small.
const MAX_KEY_BYTES: u64 = 1 << 20;

/// The repository's key: the armored key a lock carries, or the `signed-by` file
/// (relative to the manifest's directory).
fn repo_key(repo: &DebRepo, base_dir: &Path) -> Result<RepoKey> {
    let Some(signed_by) = &repo.signed_by else {
        return Err(Error::Usage(format!(
            "debs `{}`: no signed-by key; an apt repository is only carried with the key that signs it",
            repo.name
        ))
        .with_hint("set signed-by to the repository's public key file (.asc or .gpg)"));
    };
    if signed_by
        .trim_start()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK")
    {
        return RepoKey::parse(
            signed_by.as_bytes(),
            &format!("debs `{}` signed-by", repo.name),
        );
    }
    let path = base_dir.join(signed_by);
    let meta = std::fs::metadata(&path).at("cannot read the signed-by key", &path);
    let meta = meta.map_err(|e| {
        Error::Usage(format!("debs `{}`: {e}", repo.name))
            .with_hint("signed-by is relative to the manifest's directory")
    })?;
    if !meta.is_file() || meta.len() > MAX_KEY_BYTES {
        return Err(Error::Usage(format!(
            "{}: not a key file (a regular file of at most {MAX_KEY_BYTES} bytes)",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(&path).at("cannot read the signed-by key", &path)?,
            MAX_KEY_BYTES + 1,
        ),
        &mut bytes,
    )
    .at("cannot read the signed-by key", &path)?;
    if bytes.len() as u64 > MAX_KEY_BYTES {
        return Err(Error::Usage(format!(
            "{}: over {MAX_KEY_BYTES} bytes, not a key file",
            path.display()
        )));
    }
    RepoKey::parse(&bytes, &path.display().to_string())
}

/// The signed Release of a repository, checked with its key, and what the lock records
/// of it.
fn signed_release(
    repo: &DebRepo,
    key: &RepoKey,
    manifest: &Manifest,
    fetcher: &Fetcher,
) -> Result<(Release, LockedRelease)> {
    let layout = RepoLayout::of(repo.url.as_str(), &repo.suite);
    let get = |name: &str| -> Result<(String, Option<Vec<u8>>)> {
        let canonical = source_url(&format!("{}/{name}", layout.release_dir))?;
        let from = manifest.fetch_url(&canonical)?;
        Ok((
            canonical.to_string(),
            fetcher.fetch_small(&from, MAX_RELEASE_BYTES)?,
        ))
    };
    let (origin, inrelease) = get("InRelease")?;
    let (text, file, signed_bytes) = match inrelease {
        Some(bytes) => (
            release::verify_inrelease(&bytes, key, &origin)?,
            "InRelease",
            bytes,
        ),
        None => {
            let (origin, release) = get("Release")?;
            let release = release.ok_or_else(|| {
                Error::Network {
                    url: origin.clone(),
                    message: "no InRelease and no Release (HTTP 404)".into(),
                }
                .with_hint("check the repository's url and suite")
            })?;
            let (sig_origin, signature) = get("Release.gpg")?;
            let signature = signature.ok_or_else(|| {
                Error::Verify(format!("{sig_origin}: missing; the Release is not signed"))
            })?;
            release::verify_detached(&release, &signature, key, &origin)?;
            let text = String::from_utf8(release.clone())
                .map_err(|_| Error::Verify(format!("{origin}: not a text file")))?;
            (text, "Release", release)
        }
    };
    let now = (repo.check_valid_until != Some(false)).then(crate::timefmt::now_epoch);
    let parsed = Release::parse(&text, &origin, now)?;
    let locked = LockedRelease {
        file: file.to_string(),
        sha256: crate::digest::Sha256Digest::of_bytes(&signed_bytes),
        valid_until: parsed.valid_until.map(crate::timefmt::rfc3339),
    };
    Ok((parsed, locked))
}

/// The `Packages` index to read for a component and architecture: the first of
/// `.gz`, `.xz`, plain that the signed Release lists.
fn index_path(
    release: &Release,
    layout: &RepoLayout,
    component: &str,
    arch: &str,
) -> Option<String> {
    let dir = layout.index_dir(component, arch);
    ["Packages.gz", "Packages.xz", "Packages"]
        .iter()
        .map(|f| format!("{dir}{f}"))
        .find(|p| release.sha256.contains_key(p))
}

/// Resolves every `debs` repository whose packages are not all pinned yet.
pub fn lock_debs(
    locked: &mut Manifest,
    base_dir: &Path,
    fetcher: &Fetcher,
    reporter: &Reporter,
) -> Result<()> {
    let pending = locked.debs.iter().any(|r| {
        r.packages
            .iter()
            .any(|p| p.sha256.is_none() || p.filename.is_none())
    });
    if !pending {
        return Ok(());
    }
    let mut universe: Vec<BinaryPackage> = Vec::new();
    let mut keys = Vec::new();
    let mut releases = Vec::new();
    let mut arches_all: Vec<String> = Vec::new();
    crate::manifest::check_deb_repo_names(&locked.debs)?;
    for (n, repo) in locked.debs.iter().enumerate() {
        let key = repo_key(repo, base_dir)?;
        let (release, locked_release) = signed_release(repo, &key, locked, fetcher)?;
        releases.push(locked_release);
        let layout = RepoLayout::of(repo.url.as_str(), &repo.suite);
        let arches = repo.arches(&locked.platforms);
        let components = layout.components(&repo.components);
        let mut downloads = Vec::new();
        let mut paths = Vec::new();
        for component in &components {
            for arch in &arches {
                let Some(path) = index_path(&release, &layout, component, arch) else {
                    let listed: Vec<&String> = release
                        .sha256
                        .keys()
                        .filter(|k| {
                            k.rsplit('/')
                                .next()
                                .is_some_and(|f| f.starts_with("Packages"))
                        })
                        .collect();
                    return Err(Error::Usage(format!(
                        "debs `{}`: the signed Release lists no Packages index for {}{arch}; it lists {}",
                        repo.name,
                        if layout.flat { String::new() } else { format!("{component}/") },
                        if listed.is_empty() {
                            "none".to_string()
                        } else {
                            listed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        }
                    ))
                    .with_hint("check the repository's components and architectures"));
                };
                downloads.push(layout.index_download(locked, &path, &release.sha256[&path])?);
                paths.push(path);
            }
        }
        let bar = reporter.bytes_bar(0, "indexes");
        let fetched = fetcher.fetch_all(&downloads, &bar)?;
        bar.finish_and_clear();
        for ((fetched, path), download) in fetched.iter().zip(&paths).zip(&downloads) {
            let origin = download.canonical.to_string();
            let bytes = std::fs::read(&fetched.path).at("cannot read", &fetched.path)?;
            let text = packages::decompress(path, &bytes, &origin)?;
            universe.extend(packages::parse(&text, n, &origin)?);
        }
        reporter.detail(format!(
            "debs {}: Release signed by {}, {} index(es) read",
            repo.name,
            key.fingerprint,
            paths.len()
        ));
        for a in arches {
            if !arches_all.contains(&a) {
                arches_all.push(a);
            }
        }
        keys.push(key);
    }
    // The same package may be listed by several indexes (several components): keep one.
    let mut seen = BTreeSet::new();
    universe.retain(|p| {
        seen.insert((
            p.repo,
            p.name.clone(),
            p.arch.clone(),
            p.version.to_string(),
        ))
    });
    let universe = Universe::new(universe);
    let wanted: Vec<Wanted> = locked
        .debs
        .iter()
        .enumerate()
        .flat_map(|(n, repo)| {
            repo.packages.iter().map(move |p| Wanted {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                repo: n,
            })
        })
        .collect();
    let closures: Vec<Closure> = locked
        .debs
        .iter()
        .map(|r| r.closure.unwrap_or_default())
        .collect();
    let resolution = resolve::resolve(&universe, &wanted, &closures, &arches_all).map_err(|e| {
        let names: Vec<&str> = locked.debs.iter().map(|r| r.name.as_str()).collect();
        e.map_message(|m| format!("debs ({}): {m}", names.join(", ")))
    })?;

    let mut per_repo: BTreeMap<usize, Vec<DebPackage>> = BTreeMap::new();
    let mut external: BTreeMap<usize, Vec<ExternalDep>> = BTreeMap::new();
    for &i in &resolution.selected {
        let p = universe.package(i);
        per_repo.entry(p.repo).or_default().push(DebPackage {
            name: p.name.clone(),
            version: Some(p.version.to_string()),
            arch: Some(p.arch.clone()),
            sha256: Some(p.sha256),
            size: Some(p.size),
            filename: Some(p.filename.clone()),
        });
    }
    for e in &resolution.external {
        // Filed under the repository of the package that needs it.
        let repo = resolution
            .selected
            .iter()
            .map(|&i| universe.package(i))
            .find(|p| format!("{} {} ({})", p.name, p.version, p.arch) == e.required_by)
            .map_or(0, |p| p.repo);
        external.entry(repo).or_default().push(ExternalDep {
            relation: e.relation.clone(),
            required_by: e.required_by.clone(),
            reason: e.reason.clone(),
        });
    }
    for (n, ((repo, key), release)) in locked.debs.iter_mut().zip(&keys).zip(releases).enumerate() {
        repo.release = Some(release);
        let mut pinned = per_repo.remove(&n).unwrap_or_default();
        pinned.sort_by(|a, b| (&a.name, &a.arch, &a.version).cmp(&(&b.name, &b.arch, &b.version)));
        repo.packages = pinned;
        repo.external = external.remove(&n).unwrap_or_default();
        repo.signed_by = Some(key.armored()?);
        for e in &repo.external {
            reporter.info(format!(
                "debs {}: {} (needed by {}) is expected from the site's OS mirror: {}",
                repo.name, e.relation, e.required_by, e.reason
            ));
        }
    }
    Ok(())
}
