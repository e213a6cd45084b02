//! Images into the bundle's OCI image layout (`oci/`): each locked image's manifest (or
//! index, filtered to the platforms asked for), its child manifests, configs and layers are
//! fetched by digest into the content-addressed cache, checked as they stream, and become
//! `oci/blobs/sha256/<hex>` entries, each stored once however many images share it; then
//! `oci/index.json` names every image (`org.opencontainers.image.ref.name`) and
//! `oci/oci-layout` marks the directory as a layout, so `skopeo copy oci:DIR/oci:REF` reads
//! it after `tar -x`.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::bundle::index::{Artifact, EntryKind};
use crate::bundle::writer::{ContentEntry, ContentSource};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::{Cache, Fetcher};
use crate::manifest::{ImageEntry, ImageRef, Platform};
use crate::progress::Reporter;
use crate::registry::{FetchedManifest, PlatformSpec, RegistryClient};

/// The annotation that names an image in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A descriptor as manifests and indexes list them (`mediaType`, `digest`, `size`, …).
#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformSpec>,
}

#[derive(Deserialize)]
struct ImageManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// What the images add to a bundle plan.
#[derive(Default)]
pub struct CarriedImages {
    pub artifacts: Vec<Artifact>,
    pub contents: Vec<ContentEntry>,
    /// The descriptors `oci/index.json` lists for these images ([`layout_entries`]).
    pub layout: Vec<Value>,
}

/// The layout's own files, generated here and written into the bundle from memory:
/// `oci/index.json` naming every image and chart of the layout, and `oci/oci-layout`.
/// `artifacts` are those the layout's index belongs to.
pub fn layout_entries(layout: Vec<Value>, artifacts: Vec<usize>) -> Result<Vec<ContentEntry>> {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::OCI_INDEX,
        "manifests": layout,
    }))
    .map_err(|e| Error::Runtime(format!("cannot write oci/index.json: {e}")))?;
    let marker = br#"{"imageLayoutVersion":"1.0.0"}"#;
    Ok([
        ("oci/index.json", index, artifacts),
        ("oci/oci-layout", marker.to_vec(), Vec::new()),
    ]
    .into_iter()
    .map(|(path, bytes, artifacts)| ContentEntry {
        path: path.to_string(),
        kind: EntryKind::OciLayout,
        size: bytes.len() as u64,
        sha256: Sha256Digest::of_bytes(&bytes),
        source: ContentSource::Generated(bytes.into()),
        artifacts,
        origin: path.to_string(),
    })
    .collect())
}

/// The descriptor that names a manifest in `oci/index.json`.
pub fn layout_descriptor(
    media_type: &str,
    digest: &Sha256Digest,
    size: usize,
    name: &str,
) -> Value {
    json!({
        "mediaType": media_type,
        "digest": format!("sha256:{digest}"),
        "size": size,
        "annotations": { REF_NAME: name },
    })
}

fn too_many(image: &ImageRef, digest: &Sha256Digest, n: usize) -> Error {
    Error::Usage(format!(
        "{image}: manifest sha256:{digest} lists {n} descriptors, more than the {MAX_DESCRIPTORS} this tool carries"
    ))
}

/// Descriptors one manifest or index may list: far more than any image has, and few enough
/// that a hostile registry cannot make `create` build millions of entries.
const MAX_DESCRIPTORS: usize = 4096;

fn digest_of(image: &ImageRef, d: &Descriptor) -> Result<Sha256Digest> {
    d.digest.parse().map_err(|_| {
        Error::Usage(format!(
            "{image}: `{}` is not a sha256 digest; only sha256 content is supported",
            d.digest
        ))
    })
}

fn malformed(image: &ImageRef, digest: &Sha256Digest, e: serde_json::Error) -> Error {
    Error::Verify(format!(
        "{image}: manifest sha256:{digest} is malformed: {e}"
    ))
}

/// One blob of the layout, before it is downloaded.
struct Wanted {
    digest: Sha256Digest,
    size: u64,
    kind: EntryKind,
    artifact: usize,
    image: ImageRef,
}

/// Collects every image of `images` (each pinned by digest) into the layout. `first` is the
/// index of the first image artifact in the bundle's artifact list. Manifests are small and
/// fetched one by one; blobs go through `fetcher` (in parallel, resumable, deduplicated).
/// A blob `in_place` says the base of a delta holds (digest, size) is not downloaded: it
/// becomes an entry left out of the archive.
#[allow(clippy::too_many_arguments)]
pub fn collect(
    images: &[ImageEntry],
    default_platforms: &[Platform],
    registry: &RegistryClient,
    fetcher: &Fetcher,
    cache: &Cache,
    first: usize,
    in_place: &dyn Fn(&Sha256Digest, u64) -> bool,
    reporter: &Reporter,
) -> Result<CarriedImages> {
    let mut carried = CarriedImages::default();
    let mut wanted_blobs: Vec<Wanted> = Vec::new();
    for (n, entry) in images.iter().enumerate() {
        let artifact = first + n;
        let image = &entry.reference;
        let upstream = image.digest.ok_or_else(|| {
            Error::Usage(format!("{image} has no digest: run `bundle lock` first"))
        })?;
        let wanted = entry.platforms.as_deref().unwrap_or(default_platforms);
        let top = registry.manifest_by_digest(image, upstream, cache)?;
        top.require_platforms(image, wanted)?;
        // This image's blobs, each once.
        let mut blobs: Vec<(Sha256Digest, u64, EntryKind)> = Vec::new();
        let mut seen = HashSet::new();
        let mut add = |digest: Sha256Digest, size: u64, kind: EntryKind| {
            if seen.insert(digest) {
                blobs.push((digest, size, kind));
            }
        };
        let top = if top.is_index() {
            let (carried_index, children) = filter_index(image, &top, wanted, cache)?;
            for child in children {
                let digest = digest_of(image, &child)?;
                let manifest = registry.manifest_by_digest(image, digest, cache)?;
                if manifest.bytes.len() as u64 != child.size {
                    return Err(Error::Verify(format!(
                        "{image}: the index says manifest sha256:{digest} is {} bytes, it is {}",
                        child.size,
                        manifest.bytes.len()
                    )));
                }
                if manifest.is_index() {
                    return Err(Error::Usage(format!(
                        "{image}: index entry sha256:{digest} is itself an index; nested indexes are not supported"
                    )));
                }
                add(digest, child.size, EntryKind::OciManifest);
                for (d, size, kind) in manifest_blobs(image, &manifest)? {
                    add(d, size, kind);
                }
            }
            carried_index
        } else {
            for (d, size, kind) in manifest_blobs(image, &top)? {
                add(d, size, kind);
            }
            top
        };
        add(top.digest, top.bytes.len() as u64, EntryKind::OciManifest);
        let size = blobs
            .iter()
            .fold(0u64, |sum, (_, s, _)| sum.saturating_add(*s));
        wanted_blobs.extend(blobs.into_iter().map(|(digest, size, kind)| Wanted {
            digest,
            size,
            kind,
            artifact,
            image: image.clone(),
        }));
        let name = image.layout_name();
        reporter.detail(format!(
            "image {image} -> oci/ as {name} (sha256:{})",
            top.digest
        ));
        carried.layout.push(layout_descriptor(
            &top.media_type,
            &top.digest,
            top.bytes.len(),
            &name,
        ));
        carried.artifacts.push(Artifact {
            kind: EntryKind::Image,
            source: image.to_string(),
            dest: name,
            sha256: Some(top.digest),
            size,
            external: Vec::new(),
        });
    }
    if images.is_empty() {
        return Ok(carried);
    }
    let downloaded = |w: &Wanted| w.kind == EntryKind::OciBlob && !in_place(&w.digest, w.size);
    let downloads = wanted_blobs
        .iter()
        .filter(|w| downloaded(w))
        .map(|w| registry.blob_download(&w.image, &w.digest, w.size))
        .collect::<Result<Vec<_>>>()?;
    let total = downloads.iter().filter_map(|d| d.expected_size).sum();
    let bar = reporter.bytes_bar(total, "images");
    let fetched = fetcher.fetch_all(&downloads, &bar)?;
    bar.finish_and_clear();
    let mut fetched = fetched.into_iter();
    for w in wanted_blobs {
        let local = match w.kind {
            EntryKind::OciBlob if !downloaded(&w) => ContentSource::InPlace,
            EntryKind::OciBlob => ContentSource::File(
                fetched
                    .next()
                    .map(|f| f.path)
                    .ok_or_else(|| Error::Runtime("a blob download went missing".into()))?,
            ),
            _ => ContentSource::File(cache.blob_path(&w.digest)),
        };
        carried.contents.push(ContentEntry {
            path: format!("oci/blobs/sha256/{}", w.digest.hex()),
            kind: w.kind,
            source: local,
            size: w.size,
            sha256: w.digest,
            artifacts: vec![w.artifact],
            origin: w.image.to_string(),
        });
    }
    Ok(carried)
}

/// A manifest's config and layers.
fn manifest_blobs(
    image: &ImageRef,
    manifest: &FetchedManifest,
) -> Result<Vec<(Sha256Digest, u64, EntryKind)>> {
    let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| malformed(image, &manifest.digest, e))?;
    if parsed.layers.len() > MAX_DESCRIPTORS {
        return Err(too_many(image, &manifest.digest, parsed.layers.len()));
    }
    std::iter::once(&parsed.config)
        .chain(&parsed.layers)
        .map(|d| Ok((digest_of(image, d)?, d.size, EntryKind::OciBlob)))
        .collect()
}

/// The index as carried and the child manifests it keeps. With no platforms asked for, or
/// all of them kept, the upstream index is carried byte-identical; otherwise a filtered
/// copy (its own digest) that lists only the platforms asked for, everything else in it
/// unchanged.
fn filter_index(
    image: &ImageRef,
    index: &FetchedManifest,
    wanted: &[Platform],
    cache: &Cache,
) -> Result<(FetchedManifest, Vec<Descriptor>)> {
    let parsed: ImageIndex =
        serde_json::from_slice(&index.bytes).map_err(|e| malformed(image, &index.digest, e))?;
    if parsed.manifests.len() > MAX_DESCRIPTORS {
        return Err(too_many(image, &index.digest, parsed.manifests.len()));
    }
    let keep: Vec<bool> = parsed
        .manifests
        .iter()
        .map(|d| {
            wanted.is_empty()
                || d.platform
                    .as_ref()
                    .is_some_and(|p| wanted.iter().any(|w| p.matches(w)))
        })
        .collect();
    let kept: Vec<Descriptor> = parsed
        .manifests
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(d, _)| d)
        .collect();
    if keep.iter().all(|k| *k) {
        return Ok((index.clone(), kept));
    }
    let mut raw: Value =
        serde_json::from_slice(&index.bytes).map_err(|e| malformed(image, &index.digest, e))?;
    if let Some(Value::Array(list)) = raw.get_mut("manifests") {
        let mut flags = keep.iter();
        list.retain(|_| *flags.next().unwrap_or(&false));
    }
    let bytes = serde_json::to_vec(&raw)
        .map_err(|e| Error::Runtime(format!("cannot write a filtered index: {e}")))?;
    let (_, digest) = cache.store_bytes(&bytes)?;
    Ok((
        FetchedManifest {
            digest,
            media_type: index.media_type.clone(),
            bytes,
        },
        kept,
    ))
}
