//! Images into the bundle's OCI image layout (`oci/`): each locked image's manifest (or
//! index, filtered to the platforms asked for), its child manifests, configs and layers are
//! fetched by digest into the content-addressed cache, checked as they stream, and become
//! `oci/blobs/sha256/<hex>` entries, each stored once however many images share it; then
//! `oci/index.json` names every image (`org.opencontainers.image.ref.name`) and
//! `oci/oci-layout` marks the directory as a layout, so `skopeo copy oci:DIR/oci:REF` reads
//! it after `tar -x`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::bundle::index::{Artifact, EntryKind};
use crate::bundle::writer::ContentEntry;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::Cache;
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
}

fn digest_of(image: &ImageRef, d: &Descriptor) -> Result<Sha256Digest> {
    d.digest.parse().map_err(|e: String| {
        Error::Verify(format!(
            "{image}: a descriptor names `{}`, which is not a sha256 digest: {e}",
            d.digest
        ))
    })
}

fn malformed(image: &ImageRef, digest: &Sha256Digest, e: serde_json::Error) -> Error {
    Error::Verify(format!(
        "{image}: manifest sha256:{digest} is malformed: {e}"
    ))
}

/// Collects every image of `images` (each pinned by digest) into the layout. `first` is the
/// index of the first image artifact in the bundle's artifact list.
pub fn collect(
    images: &[ImageEntry],
    default_platforms: &[Platform],
    registry: &RegistryClient,
    cache: &Cache,
    first: usize,
    reporter: &Reporter,
) -> Result<CarriedImages> {
    let mut carried = CarriedImages::default();
    let mut layout_index = Vec::new();
    // Each image has one name in the layout (and, later, one tag on the site registry).
    let mut named: std::collections::HashMap<String, &ImageRef> = std::collections::HashMap::new();
    for entry in images {
        if let Some(other) = named.insert(ref_name(&entry.reference), &entry.reference) {
            return Err(Error::Usage(format!(
                "{other} and {} are both named `{}` in the bundle",
                entry.reference,
                ref_name(&entry.reference)
            ))
            .with_hint("list each image once"));
        }
    }
    for (n, entry) in images.iter().enumerate() {
        let artifact = first + n;
        let image = &entry.reference;
        let upstream = image.digest.ok_or_else(|| {
            Error::Usage(format!("{image} has no digest: run `bundle lock` first"))
        })?;
        let wanted = entry.platforms.as_deref().unwrap_or(default_platforms);
        let top = registry.manifest_by_digest(image, upstream, cache)?;
        top.require_platforms(image, wanted)?;
        let mut blobs: Vec<(Sha256Digest, u64, EntryKind)> = Vec::new();
        let top = if top.is_index() {
            let (carried_index, children) = filter_index(image, &top, wanted, cache)?;
            for child in children {
                let digest = digest_of(image, &child)?;
                let manifest = registry.manifest_by_digest(image, digest, cache)?;
                blobs.push((digest, manifest.bytes.len() as u64, EntryKind::OciManifest));
                blobs.extend(manifest_blobs(image, &manifest)?);
            }
            carried_index
        } else {
            blobs.extend(manifest_blobs(image, &top)?);
            top
        };
        blobs.push((top.digest, top.bytes.len() as u64, EntryKind::OciManifest));
        let mut size = 0u64;
        for (digest, blob_size, kind) in blobs {
            let local = if kind == EntryKind::OciManifest {
                cache.blob_path(&digest)
            } else {
                registry.blob_into_cache(image, &digest, blob_size, cache)?
            };
            size = size.saturating_add(blob_size);
            carried.contents.push(ContentEntry {
                path: format!("oci/blobs/sha256/{}", digest.hex()),
                kind,
                local,
                size: blob_size,
                sha256: digest,
                artifacts: vec![artifact],
                origin: image.to_string(),
            });
        }
        let name = ref_name(image);
        reporter.detail(format!(
            "image {image} -> oci/ as {name} (sha256:{})",
            top.digest
        ));
        layout_index.push(json!({
            "mediaType": top.media_type,
            "digest": format!("sha256:{}", top.digest),
            "size": top.bytes.len(),
            "annotations": { REF_NAME: name },
        }));
        carried.artifacts.push(Artifact {
            kind: EntryKind::Image,
            source: image.to_string(),
            dest: name,
            sha256: Some(top.digest),
            size,
        });
    }
    if images.is_empty() {
        return Ok(carried);
    }
    let all: Vec<usize> = (first..first + images.len()).collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::OCI_INDEX,
        "manifests": layout_index,
    }))
    .map_err(|e| Error::Runtime(format!("cannot write oci/index.json: {e}")))?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (path, bytes, artifacts) in [
        ("oci/index.json", index.as_slice(), all),
        ("oci/oci-layout", layout.as_slice(), Vec::new()),
    ] {
        let (local, sha256) = cache.store_bytes(bytes)?;
        carried.contents.push(ContentEntry {
            path: path.to_string(),
            kind: EntryKind::OciLayout,
            local,
            size: bytes.len() as u64,
            sha256,
            artifacts,
            origin: path.to_string(),
        });
    }
    Ok(carried)
}

/// The name an image has in the layout: `registry/repository:tag` (or `@sha256:…` when it
/// was pinned without a tag).
fn ref_name(image: &ImageRef) -> String {
    let mut named = image.clone();
    if named.tag.is_some() {
        named.digest = None;
    }
    named.to_string()
}

/// A manifest's config and layers.
fn manifest_blobs(
    image: &ImageRef,
    manifest: &FetchedManifest,
) -> Result<Vec<(Sha256Digest, u64, EntryKind)>> {
    let parsed: ImageManifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| malformed(image, &manifest.digest, e))?;
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
