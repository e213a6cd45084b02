//! The registries of the site export: for each `--registry`, the images the receipts say
//! were pushed there, each manifest read by digest (an index's child manifests too), and
//! every config and layer they name checked with `HEAD` in that repository. Only what the
//! registry still has is listed; what a hostile registry may send is bounded (manifest
//! size, descriptors per manifest, index depth).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Deserialize;

use super::{first_few, plural};
use crate::bundle::pool::map_on_threads;
use crate::delta::{SiteBlob, SiteManifest, SiteRegistry};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::install::RegistryOptions;
use crate::install::receipt::{self, Receipt};
use crate::install::registry::ImageReport;
use crate::progress::Reporter;
use crate::registry::push::Repo;
use crate::registry::{DOCKER_LIST, MAX_MANIFEST_BYTES, OCI_INDEX, RegistryClient, media_type_of};

/// At most this many child manifests in an index, and blobs (config and layers) in a
/// manifest: more is not an image this tool installed.
const MAX_DESCRIPTORS: usize = 1024;
/// An index may name indexes, no deeper (attestation and nested platform indexes).
const MAX_DEPTH: usize = 2;

/// A registry given to the export, reachable with the login given.
pub(super) struct Site {
    client: RegistryClient,
    host: String,
    /// `--jobs`: requests in flight.
    jobs: usize,
}

/// What the manifests of one recorded image hold, as far as the registry still has them.
#[derive(Default)]
struct Walked {
    manifests: Vec<Sha256Digest>,
    blobs: Vec<(Sha256Digest, u64)>,
    /// `repository@sha256:…` of manifests the registry no longer has.
    gone: Vec<String>,
    /// Manifests the registry has but that are not read as an image, with why.
    unread: Vec<String>,
}

/// A manifest's content, as far as the export needs it.
#[derive(Debug)]
enum Parsed {
    /// An index: its child manifests.
    Index(Vec<Sha256Digest>),
    /// An image (or chart) manifest: its config and layers, with their sizes.
    Manifest(Vec<(Sha256Digest, u64)>),
}

impl Site {
    /// Reaches the registry (`GET /v2/`): unreachable, or a login it refuses, is exit 1
    /// naming it, before the export hashes anything.
    pub(super) fn connect(options: &RegistryOptions) -> Result<Site> {
        let client = RegistryClient::new(
            &options.net,
            options.plain_http,
            options.credentials.clone(),
        )?;
        client.check_api(&options.host)?;
        Ok(Site {
            client,
            host: options.host.clone(),
            jobs: options.net.jobs.max(1),
        })
    }

    /// The blobs and manifests of the recorded images that the registry still has.
    pub(super) fn still_there(
        &self,
        receipts: &[Receipt],
        reporter: &Reporter,
    ) -> Result<SiteRegistry> {
        let images = self.recorded_images(receipts, reporter);
        let walked = map_on_threads(&images, self.jobs, |(repository, digest)| {
            Some(self.walk(repository, *digest))
        });
        let mut manifests = BTreeSet::new();
        let mut wanted: BTreeMap<(&str, Sha256Digest), u64> = BTreeMap::new();
        let (mut gone, mut unread) = (Vec::new(), Vec::new());
        for ((repository, _), walked) in images.iter().zip(walked) {
            let walked = walked.ok_or_else(|| self.stopped())??;
            for digest in walked.manifests {
                manifests.insert(SiteManifest {
                    repository: repository.clone(),
                    digest,
                });
            }
            for (digest, size) in walked.blobs {
                wanted.insert((repository.as_str(), digest), size);
            }
            gone.extend(walked.gone);
            unread.extend(walked.unread);
        }
        let wanted: Vec<((&str, Sha256Digest), u64)> = wanted.into_iter().collect();
        let present = map_on_threads(&wanted, self.jobs, |((repository, digest), _)| {
            let repo = Repo {
                registry: &self.host,
                repository,
            };
            Some(self.client.blob_exists(repo, digest))
        });
        let mut blobs = BTreeMap::new();
        let mut missing = Vec::new();
        for (((repository, digest), size), present) in wanted.iter().zip(present) {
            if present.ok_or_else(|| self.stopped())?? {
                blobs.insert(*digest, *size);
            } else {
                missing.push(format!("{repository}@sha256:{digest}"));
            }
        }
        self.note(
            reporter,
            &gone,
            "manifest recorded in receipts is gone and was left out with its blobs",
            "manifests recorded in receipts are gone and were left out with their blobs",
        );
        self.note(
            reporter,
            &unread,
            "manifest was left out with its blobs",
            "manifests were left out with their blobs",
        );
        self.note(
            reporter,
            &missing,
            "blob of the installed images is missing and was left out",
            "blobs of the installed images are missing and were left out",
        );
        reporter.detail(format!(
            "registry {}: {} manifests and {} blobs of {} images are there",
            self.host,
            manifests.len(),
            blobs.len(),
            images.len()
        ));
        Ok(SiteRegistry {
            host: self.host.clone(),
            blobs: blobs
                .into_iter()
                .map(|(digest, size)| SiteBlob { digest, size })
                .collect(),
            manifests: manifests.into_iter().collect(),
        })
    }

    /// (repository, manifest or index digest) of every image the receipts record as pushed
    /// to this registry (as images or as charts), each once, sorted.
    fn recorded_images(
        &self,
        receipts: &[Receipt],
        reporter: &Reporter,
    ) -> Vec<(String, Sha256Digest)> {
        let mut images = BTreeSet::new();
        let mut unreadable = Vec::new();
        let mut elsewhere = BTreeSet::new();
        let reports = receipts
            .iter()
            .flat_map(|r| [&r.registry, &r.chart_registry])
            .flatten();
        for report in reports {
            if !report.host.eq_ignore_ascii_case(&self.host) {
                elsewhere.insert(report.host.clone());
                continue;
            }
            for image in &report.images {
                match site_image(&self.host, image) {
                    Some(found) => {
                        images.insert(found);
                    }
                    None => unreadable.push(image.name.clone()),
                }
            }
        }
        self.note(
            reporter,
            &unreadable,
            "image in receipts is not a name and digest on this registry and was left out",
            "images in receipts are not names and digests on this registry and were left out",
        );
        if images.is_empty() {
            let others = if elsewhere.is_empty() {
                String::new()
            } else {
                format!(
                    " (they name {})",
                    elsewhere.into_iter().collect::<Vec<_>>().join(", ")
                )
            };
            reporter.info(format!(
                "registry {}: no receipt records images pushed to it{others}",
                self.host
            ));
        }
        images.into_iter().collect()
    }

    /// Reads `top` and, for an index, its child manifests from the registry, and collects
    /// the blobs they name. A manifest the registry serves with other bytes than its digest
    /// is a verification failure (exit 3): the registry is changing content.
    fn walk(&self, repository: &str, top: Sha256Digest) -> Result<Walked> {
        let repo = Repo {
            registry: &self.host,
            repository,
        };
        let mut walked = Walked::default();
        let mut seen = HashSet::new();
        let mut todo = vec![(top, 0)];
        while let Some((digest, depth)) = todo.pop() {
            if !seen.insert(digest) {
                continue;
            }
            let name = format!("{repository}@sha256:{digest}");
            let Some((served, _, bytes)) = self
                .client
                .manifest_if_present(repo, &format!("sha256:{digest}"))?
            else {
                walked.gone.push(name);
                continue;
            };
            if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                walked
                    .unread
                    .push(format!("{name} (over {MAX_MANIFEST_BYTES} bytes)"));
                continue;
            }
            if served != digest {
                return Err(Error::Verify(format!(
                    "{}: manifest {name} was served with other bytes (sha256:{served})",
                    self.host
                ))
                .with_hint(
                    "the registry (or a proxy in between) is changing content; do not use it",
                ));
            }
            match parse(&bytes) {
                Err(why) => walked.unread.push(format!("{name} ({why})")),
                Ok(Parsed::Index(_)) if depth >= MAX_DEPTH => walked
                    .unread
                    .push(format!("{name} (indexes nested over {MAX_DEPTH} deep)")),
                Ok(Parsed::Index(children)) => {
                    walked.manifests.push(digest);
                    todo.extend(children.into_iter().map(|c| (c, depth + 1)));
                }
                Ok(Parsed::Manifest(blobs)) => {
                    walked.manifests.push(digest);
                    walked.blobs.extend(blobs);
                }
            }
        }
        Ok(walked)
    }

    /// A note on stderr naming the first few of `items`, if any.
    fn note(&self, reporter: &Reporter, items: &[String], one: &str, many: &str) {
        if !items.is_empty() {
            reporter.info(format!(
                "registry {}: {}: {}",
                self.host,
                plural(items.len(), one, many),
                first_few(items)
            ));
        }
    }

    /// A worker that gave no answer (it cannot, short of a panic, which the scope would
    /// have raised).
    fn stopped(&self) -> Error {
        Error::Runtime(format!("registry {}: a request worker stopped", self.host))
    }
}

/// The repository and digest of a recorded image on `host`: its name is
/// `HOST/REPOSITORY:TAG` or `HOST/REPOSITORY@sha256:…`, its digest `sha256:…`. `None`
/// for anything else (a receipt is a file anyone able to write the web root can edit, and
/// the repository goes into request paths).
fn site_image(host: &str, image: &ImageReport) -> Option<(String, Sha256Digest)> {
    let repository = receipt::repository_on(host, &image.name)?;
    let digest = image.digest.strip_prefix("sha256:")?.parse().ok()?;
    Some((repository, digest))
}

/// What a manifest names, or why it is not read: not an image manifest or index this tool
/// carries, malformed, a digest that is not sha256, or more than [`MAX_DESCRIPTORS`].
fn parse(bytes: &[u8]) -> std::result::Result<Parsed, String> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
        size: u64,
    }
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        manifests: Vec<Descriptor>,
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let media_type =
        media_type_of(bytes).ok_or("not an image manifest or index this tool carries")?;
    let shape: Shape = serde_json::from_slice(bytes).map_err(|e| format!("malformed: {e}"))?;
    let sha256 = |d: &Descriptor| {
        d.digest
            .strip_prefix("sha256:")
            .and_then(|hex| hex.parse::<Sha256Digest>().ok())
            .ok_or_else(|| format!("names `{}`, not a sha256 digest", d.digest))
    };
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        if shape.manifests.len() > MAX_DESCRIPTORS {
            return Err(format!("more than {MAX_DESCRIPTORS} manifests"));
        }
        return shape
            .manifests
            .iter()
            .map(sha256)
            .collect::<std::result::Result<_, _>>()
            .map(Parsed::Index);
    }
    let config = shape.config.ok_or("malformed: no config")?;
    if shape.layers.len() >= MAX_DESCRIPTORS {
        return Err(format!("more than {MAX_DESCRIPTORS} blobs"));
    }
    std::iter::once(&config)
        .chain(&shape.layers)
        .map(|d| Ok((sha256(d)?, d.size)))
        .collect::<std::result::Result<_, _>>()
        .map(Parsed::Manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, digest: &str) -> ImageReport {
        ImageReport {
            source: String::new(),
            name: name.into(),
            digest: digest.into(),
            upstream_digest: None,
            status: "pushed".into(),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn recorded_names_give_repository_and_digest() {
        let host = "registry.example.org:5000";
        let by_digest = format!("{host}/library/nginx@{D}");
        for (name, repository) in [
            (
                "registry.example.org:5000/kube-apiserver:v1.31.4",
                "kube-apiserver",
            ),
            (by_digest.as_str(), "library/nginx"),
            ("REGISTRY.example.org:5000/charts/app:1.2.3", "charts/app"),
        ] {
            let (got, digest) = site_image(host, &image(name, D)).expect(name);
            assert_eq!(got, repository, "{name}");
            assert_eq!(format!("sha256:{digest}"), D);
        }
        for (name, digest) in [
            ("other.example.org:5000/app:v1", D),
            ("registry.example.org:5000/../v2/app:v1", D),
            ("registry.example.org:5000/app?x=1:v1", D),
            ("registry.example.org:5000/App:v1", D),
            ("registry.example.org:5000/app:v1", "sha512:00"),
            ("registry.example.org:5000/app:v1", &D[7..]),
        ] {
            assert!(
                site_image(host, &image(name, digest)).is_none(),
                "{name} {digest}"
            );
        }
    }

    #[test]
    fn manifests_are_read_within_bounds() {
        let blob = |n: u8| format!("{{\"digest\":\"sha256:{}\",\"size\":{n}}}", hex_of(n));
        let manifest = format!(
            "{{\"schemaVersion\":2,\"config\":{},\"layers\":[{},{}]}}",
            blob(1),
            blob(2),
            blob(3)
        );
        match parse(manifest.as_bytes()) {
            Ok(Parsed::Manifest(blobs)) => {
                assert_eq!(blobs.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 2, 3])
            }
            _ => panic!("an image manifest"),
        }
        let index = format!("{{\"schemaVersion\":2,\"manifests\":[{}]}}", blob(4));
        assert!(matches!(parse(index.as_bytes()), Ok(Parsed::Index(c)) if c.len() == 1));
        let many = vec![blob(5); MAX_DESCRIPTORS + 1].join(",");
        let huge = format!("{{\"schemaVersion\":2,\"manifests\":[{many}]}}");
        assert!(parse(huge.as_bytes()).unwrap_err().contains("more than"));
        let sha512 = manifest.replace(&format!("sha256:{}", hex_of(2)), "sha512:00");
        assert!(
            parse(sha512.as_bytes())
                .unwrap_err()
                .contains("not a sha256")
        );
        assert!(parse(b"{\"schemaVersion\":2}").is_err());
        assert!(parse(b"not json").is_err());
    }

    fn hex_of(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }
}
