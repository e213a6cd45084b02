//! Debian repositories into the bundle, under `debs/<repo>/`, laid out as the upstream
//! repository is (SPEC §6, Debian trust model: upstream metadata byte-identical):
//!
//! - the signed Release the lock resolved against (`InRelease`, or `Release` and
//!   `Release.gpg`), fetched again and checked against the lock's sha256;
//! - every `Packages` variant that Release lists for the carried components and
//!   architectures, each checked against the signed sums (and under `by-hash/` too when the
//!   Release asks clients to fetch by hash);
//! - each locked `.deb` at its `Filename`, checked against the lock;
//! - the upstream key (armored, from the lock) as `debs/<repo>/key.asc`.
//!
//! Stock apt on the site then checks the upstream signature with the upstream key; only the
//! carried `.deb`s are in the pool.

use crate::apt::release::{self, Release, RepoKey};
use crate::apt::{MAX_RELEASE_BYTES, RepoLayout, safe_filename, source_url};
use crate::bundle::index::{Artifact, EntryKind};
use crate::bundle::writer::{ContentEntry, ContentSource};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::{Download, Fetched, Fetcher};
use crate::manifest::{Manifest, SourceUrl};
use crate::progress::Reporter;

/// What the debs add to a bundle plan.
#[derive(Default)]
pub struct CarriedDebs {
    pub artifacts: Vec<Artifact>,
    pub contents: Vec<ContentEntry>,
}

/// A relative path as it goes into a URL: each segment percent-encoded except the
/// characters URLs keep as they are (apt does the same: `file_1%3a5.44_amd64.deb` is fetched
/// as `file_1%253a5.44_amd64.deb`).
fn escape_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~+:@!$&'()*,;=".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn generated(path: String, bytes: Vec<u8>, artifact: usize, origin: &str) -> ContentEntry {
    ContentEntry {
        sha256: Sha256Digest::of_bytes(&bytes),
        size: bytes.len() as u64,
        path,
        kind: EntryKind::AptIndex,
        source: ContentSource::Generated(bytes.into()),
        artifacts: vec![artifact],
        origin: origin.to_string(),
    }
}

/// Collects every repository of `m.debs`; `first` is the index of the first artifact.
/// A deb a delta's base holds (`in_place(dest, sha256, size)`) is not downloaded.
pub fn collect(
    m: &Manifest,
    fetcher: &Fetcher,
    first: usize,
    in_place: &dyn Fn(&str, EntryKind, &Sha256Digest, u64) -> bool,
    reporter: &Reporter,
) -> Result<CarriedDebs> {
    let mut carried = CarriedDebs::default();
    crate::manifest::check_deb_repo_names(&m.debs)?;
    for repo in &m.debs {
        let dir = repo.dir()?;
        let layout = RepoLayout::of(repo.url.as_str(), &repo.suite);
        let locked = repo.release.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "debs `{}` has no locked Release: run `bundle lock` first",
                repo.name
            ))
        })?;
        let key_text = repo.signed_by.clone().unwrap_or_default();
        let key = RepoKey::parse(
            key_text.as_bytes(),
            &format!("debs `{}` signed-by", repo.name),
        )?;
        let meta_artifact = first + carried.artifacts.len();
        let release_rel = |name: &str| {
            if layout.release_rel.is_empty() {
                format!("{dir}/{name}")
            } else {
                format!("{dir}/{}/{name}", layout.release_rel)
            }
        };

        // The signed Release, exactly the one the lock resolved against.
        let get = |name: &str| -> Result<(SourceUrl, Vec<u8>)> {
            let canonical = source_url(&format!("{}/{name}", layout.release_dir))?;
            let bytes = fetcher
                .fetch_small(&m.fetch_url(&canonical)?, MAX_RELEASE_BYTES)?
                .ok_or_else(|| Error::Network {
                    url: canonical.to_string(),
                    message: "not found (HTTP 404)".into(),
                })?;
            Ok((canonical, bytes))
        };
        let (origin, signed) = get(&locked.file)?;
        let digest = Sha256Digest::of_bytes(&signed);
        if digest != locked.sha256 {
            return Err(Error::Verify(format!(
                "{origin}: sha256 {digest} is not the {} the lock resolved against ({})",
                locked.file, locked.sha256
            ))
            .with_hint("the repository was updated since `bundle lock`: lock again, then create"));
        }
        let text = if locked.file == "InRelease" {
            release::verify_inrelease(&signed, &key, origin.as_str())?
        } else {
            let (_, signature) = get("Release.gpg")?;
            release::verify_detached(&signed, &signature, &key, origin.as_str())?;
            carried.contents.push(generated(
                release_rel("Release.gpg"),
                signature,
                meta_artifact,
                origin.as_str(),
            ));
            String::from_utf8(signed.clone())
                .map_err(|_| Error::Verify(format!("{origin}: not a text file")))?
        };
        // The lock already checked the expiry (or was told not to).
        let parsed = Release::parse(&text, origin.as_str(), None)?;
        let by_hash = text
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("Acquire-By-Hash: yes"));
        carried.contents.push(generated(
            release_rel(&locked.file),
            signed,
            meta_artifact,
            origin.as_str(),
        ));
        carried.contents.push(generated(
            format!("{dir}/key.asc"),
            key.armored()?.into_bytes(),
            meta_artifact,
            origin.as_str(),
        ));

        // Every Packages variant listed for what is carried, checked against the sums.
        // The architectures `lock` read (the same rule), so apt finds each index it asks for.
        let arches = repo.arches(&m.platforms);
        let components = layout.components(&repo.components);
        let mut index_downloads = Vec::new();
        let mut index_paths = Vec::new();
        for component in &components {
            for arch in &arches {
                let prefix = layout.index_dir(component, arch);
                for (path, listed) in parsed.sha256.iter().filter(|(p, _)| {
                    p.strip_prefix(&prefix)
                        .is_some_and(|f| f.starts_with("Packages"))
                }) {
                    index_downloads.push(layout.index_download(m, path, listed)?);
                    index_paths.push((path.clone(), listed.sha256));
                }
            }
        }
        // The debs, at their Filename.
        let deb_downloads = repo
            .packages
            .iter()
            .map(|p| {
                let filename = p.filename.as_deref().unwrap_or_default();
                let filename = safe_filename(filename).map_err(|e| {
                    Error::Usage(format!("debs `{}` {}: Filename: {e}", repo.name, p.name))
                })?;
                let canonical = source_url(&format!("{}/{}", layout.root, escape_path(&filename)))?;
                Ok(Download {
                    from: m.fetch_url(&canonical)?,
                    canonical,
                    expected_sha256: p.sha256,
                    expected_size: p.size,
                    authorization: None,
                    label: Some(format!(
                        "debs `{}` {} {}",
                        repo.name,
                        p.name,
                        p.version.as_deref().unwrap_or("")
                    )),
                    pinned_by: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let all: Vec<Download> = index_downloads
            .iter()
            .chain(&deb_downloads)
            .cloned()
            .collect();
        // The indexes are always carried; a deb the base holds is left out.
        let left_out: Vec<bool> = std::iter::repeat_n(false, index_downloads.len())
            .chain(repo.packages.iter().map(|p| {
                let dest = safe_filename(p.filename.as_deref().unwrap_or_default())
                    .map(|f| format!("{dir}/{f}"));
                match (dest, p.sha256, p.size) {
                    (Ok(dest), Some(sha256), Some(size)) => {
                        in_place(&dest, EntryKind::Deb, &sha256, size)
                    }
                    _ => false,
                }
            }))
            .collect();
        let total = all
            .iter()
            .zip(&left_out)
            .filter(|(_, out)| !**out)
            .filter_map(|(d, _)| d.expected_size)
            .sum();
        let bar = reporter.bytes_bar(total, "debs");
        let fetched = fetcher.fetch_all_but(&all, &left_out, &bar)?;
        bar.finish_and_clear();
        let (index_fetched, deb_fetched) = fetched.split_at(index_downloads.len());
        let index_fetched: Vec<Fetched> = index_fetched.iter().flatten().cloned().collect();

        carried.artifacts.push(Artifact {
            kind: EntryKind::AptIndex,
            source: layout.release_dir.clone(),
            dest: dir.clone(),
            sha256: Some(locked.sha256),
            size: 0,
            external: repo
                .external
                .iter()
                .map(|e| format!("{} needed by {}: {}", e.relation, e.required_by, e.reason))
                .collect(),
        });
        for ((path, digest), f) in index_paths.iter().zip(&index_fetched) {
            let mut at = vec![release_rel(path)];
            if by_hash {
                let (dir_part, _) = path.rsplit_once('/').unwrap_or(("", path));
                let hashed = if dir_part.is_empty() {
                    format!("by-hash/SHA256/{}", digest.hex())
                } else {
                    format!("{dir_part}/by-hash/SHA256/{}", digest.hex())
                };
                at.push(release_rel(&hashed));
            }
            for p in at {
                carried.contents.push(ContentEntry {
                    path: p,
                    kind: EntryKind::AptIndex,
                    source: ContentSource::File(f.path.clone()),
                    size: f.size,
                    sha256: f.sha256,
                    artifacts: vec![meta_artifact],
                    origin: origin.to_string(),
                });
            }
        }
        for ((p, d), f) in repo.packages.iter().zip(&deb_downloads).zip(deb_fetched) {
            let filename = safe_filename(p.filename.as_deref().unwrap_or_default())
                .map_err(|e| Error::Usage(format!("debs `{}` {}: {e}", repo.name, p.name)))?;
            let dest = format!("{dir}/{filename}");
            let artifact = first + carried.artifacts.len();
            let (source, sha256, size, how) = super::fetched_or_in_place(f.as_ref(), d)?;
            reporter.detail(format!("{how} {} -> {dest}", d.canonical));
            carried.artifacts.push(Artifact {
                kind: EntryKind::Deb,
                source: d.canonical.to_string(),
                dest: dest.clone(),
                sha256: Some(sha256),
                size,
                external: Vec::new(),
            });
            carried.contents.push(ContentEntry {
                path: dest,
                kind: EntryKind::Deb,
                source,
                size,
                sha256,
                artifacts: vec![artifact],
                origin: d.canonical.to_string(),
            });
        }
    }
    Ok(carried)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_paths_are_escaped_for_urls() {
        assert_eq!(
            super::escape_path("pool/main/f/file/file_1%3a5.44-3_amd64.deb"),
            "pool/main/f/file/file_1%253a5.44-3_amd64.deb"
        );
        assert_eq!(
            super::escape_path("pool/a b#c?.deb"),
            "pool/a%20b%23c%3F.deb"
        );
        assert_eq!(
            super::escape_path("pool/jq_1.6-2.1+deb12u3_amd64.deb"),
            "pool/jq_1.6-2.1+deb12u3_amd64.deb"
        );
    }
}
