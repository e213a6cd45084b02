//! Helm charts into the bundle. Every chart is carried twice over the same bytes:
//!
//! - `charts/<name>-<version>.tgz` (kind `chart`), for the web root's Helm repository;
//! - an OCI artifact in the shared `oci/` layout (Helm's config and layer media types), for
//!   `--chart-registry` and `--oci-dir`. An OCI chart keeps its upstream manifest
//!   byte-identical; an HTTP chart gets the manifest `helm push` would write (its config
//!   from its own `Chart.yaml`, its layer the `.tgz` itself, `created` the bundle's time).
//!
//! Each chart is two artifacts: `chart` (the `.tgz`, dest its web-root path) and
//! `oci-chart` (the manifest, dest its name on a chart registry).

use serde::Deserialize;

use super::images::{self, CarriedImages};
use crate::bundle::index::{Artifact, EntryKind};
use crate::bundle::writer::{ContentEntry, ContentSource};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fetch::{Cache, Download, Fetcher};
use crate::helm::{self, ChartMetadata};
use crate::lock::charts::require_helm_manifest;
use crate::manifest::{ChartSource, ImageEntry, Manifest};
use crate::progress::Reporter;
use crate::registry::RegistryClient;

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

#[derive(Deserialize)]
struct ChartManifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The site registry name of an HTTP chart (`charts/<name>`), as `helm push … oci://HOST/charts`
/// names it.
fn http_chart_name(meta: &ChartMetadata) -> String {
    format!("charts/{}:{}", meta.name, meta.oci_tag())
}

fn chart_artifact(
    source: String,
    meta: &ChartMetadata,
    sha256: Sha256Digest,
    size: u64,
) -> Artifact {
    Artifact {
        kind: EntryKind::Chart,
        source,
        dest: format!("charts/{}", meta.file_name()),
        sha256: Some(sha256),
        size,
        external: Vec::new(),
    }
}

fn chart_entry(
    meta: &ChartMetadata,
    path: std::path::PathBuf,
    sha256: Sha256Digest,
    size: u64,
    artifact: usize,
    origin: &str,
) -> ContentEntry {
    ContentEntry {
        path: format!("charts/{}", meta.file_name()),
        kind: EntryKind::Chart,
        source: ContentSource::File(path),
        size,
        sha256,
        artifacts: vec![artifact],
        origin: origin.to_string(),
    }
}

/// Collects every chart of `m.charts`; `first` is the index of the first artifact, and
/// `created` (RFC 3339) dates the OCI manifests made for HTTP charts.
#[allow(clippy::too_many_arguments)]
pub fn collect(
    m: &Manifest,
    registry: &RegistryClient,
    fetcher: &Fetcher,
    cache: &Cache,
    first: usize,
    created: &str,
    reporter: &Reporter,
) -> Result<CarriedImages> {
    let mut oci = Vec::new();
    let mut http = Vec::new();
    for (i, entry) in m.charts.iter().enumerate() {
        match entry.source(i)? {
            ChartSource::Oci(image) => oci.push(ImageEntry {
                reference: image,
                platforms: None,
            }),
            ChartSource::Http { name, version, .. } => {
                let (Some(url), Some(sha256)) = (&entry.url, entry.sha256) else {
                    return Err(Error::Usage(format!(
                        "charts[{i}] {name} {version} is not locked: run `bundle lock` first"
                    )));
                };
                http.push((name, version, url, sha256));
            }
        }
    }
    // OCI charts: fetched as images are (manifest and blobs by digest, checked).
    // A chart's layer is read for its metadata: always downloaded (the post-collection
    // pass may still leave it out of a delta).
    let mut carried = images::collect(
        &oci,
        &[],
        registry,
        fetcher,
        cache,
        first,
        &|_, _| false,
        reporter,
    )?;
    let mut tgz_entries = Vec::new();
    let mut chart_artifacts = Vec::new();
    let next_artifact = |carried: &CarriedImages, extra: &Vec<Artifact>| {
        first + carried.artifacts.len() + extra.len()
    };
    for n in 0..carried.artifacts.len() {
        let artifact = &mut carried.artifacts[n];
        let what = format!("oci://{}", artifact.source);
        let digest = artifact
            .sha256
            .ok_or_else(|| Error::Runtime(format!("{what}: no digest")))?;
        let manifest_bytes = std::fs::read(cache.blob_path(&digest))
            .map_err(|e| Error::io("cannot read", cache.blob_path(&digest), e))?;
        require_helm_manifest(&what, &manifest_bytes)?;
        let parsed: ChartManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::Verify(format!("{what}: manifest: {e}")))?;
        let layer = match parsed.layers.as_slice() {
            [one] if one.media_type == helm::LAYER_MEDIA_TYPE => one,
            _ => {
                return Err(Error::Usage(format!(
                    "{what}: a Helm chart manifest has one layer of type {}",
                    helm::LAYER_MEDIA_TYPE
                )));
            }
        };
        let layer_digest: Sha256Digest = layer
            .digest
            .parse()
            .map_err(|e| Error::Usage(format!("{what}: layer digest `{}`: {e}", layer.digest)))?;
        let (path, size) = carried
            .contents
            .iter()
            .find(|c| c.sha256 == layer_digest)
            .and_then(|c| match &c.source {
                ContentSource::File(p) => Some((p.clone(), c.size)),
                ContentSource::Generated(_) | ContentSource::InPlace => None,
            })
            .ok_or_else(|| Error::Runtime(format!("{what}: its layer was not fetched")))?;
        let meta = helm::read_chart_metadata(&path, &what)?;
        let upstream: crate::manifest::ImageRef = artifact
            .source
            .parse()
            .map_err(|e: String| Error::Runtime(e))?;
        artifact.kind = EntryKind::OciChart;
        artifact.dest = match &upstream.tag {
            Some(tag) => format!("{}:{tag}", upstream.repository),
            None => format!("{}@sha256:{digest}", upstream.repository),
        };
        artifact.source = what.clone();
        reporter.detail(format!("chart {what} -> charts/{}", meta.file_name()));
        chart_artifacts.push((what, meta, layer_digest, path, size));
    }
    let mut extra = Vec::new();
    for (what, meta, digest, path, size) in chart_artifacts {
        let idx = next_artifact(&carried, &extra);
        tgz_entries.push(chart_entry(&meta, path, digest, size, idx, &what));
        extra.push(chart_artifact(what, &meta, digest, size));
    }
    // HTTP charts: the pinned .tgz, and an OCI form made from it.
    let downloads = http
        .iter()
        .map(|(name, version, url, sha256)| {
            Ok(Download {
                canonical: (*url).clone(),
                from: m.fetch_url(url)?,
                expected_sha256: Some(*sha256),
                expected_size: None,
                authorization: None,
                label: Some(format!("chart {name} {version} ({url})")),
                pinned_by: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let bar = reporter.bytes_bar(0, "charts");
    let fetched = fetcher.fetch_all(&downloads, &bar)?;
    bar.finish_and_clear();
    for ((name, version, url, _), f) in http.iter().zip(fetched) {
        let meta = helm::read_chart_metadata(&f.path, url.as_str())?;
        if meta.name != *name || meta.version != *version {
            return Err(Error::Verify(format!(
                "{url}: locked as {name} {version}, its Chart.yaml says {} {}",
                meta.name, meta.version
            )));
        }
        let tgz_artifact = next_artifact(&carried, &extra);
        tgz_entries.push(chart_entry(
            &meta,
            f.path.clone(),
            f.sha256,
            f.size,
            tgz_artifact,
            url.as_str(),
        ));
        extra.push(chart_artifact(url.to_string(), &meta, f.sha256, f.size));
        let oci_artifact = tgz_artifact + 1;
        let form = helm::oci_chart(&meta, f.sha256, f.size, created);
        let manifest_digest = Sha256Digest::of_bytes(&form.manifest);
        let name_on_registry = http_chart_name(&meta);
        extra.push(Artifact {
            kind: EntryKind::OciChart,
            source: url.to_string(),
            dest: name_on_registry.clone(),
            sha256: Some(manifest_digest),
            size: f.size + (form.config.len() + form.manifest.len()) as u64,
            external: Vec::new(),
        });
        let blob = |path: String, kind, source: ContentSource, size: u64, sha256| ContentEntry {
            path,
            kind,
            source,
            size,
            sha256,
            artifacts: vec![oci_artifact],
            origin: url.to_string(),
        };
        let config_digest = Sha256Digest::of_bytes(&form.config);
        tgz_entries.push(blob(
            format!("oci/blobs/sha256/{}", f.sha256.hex()),
            EntryKind::OciBlob,
            ContentSource::File(f.path.clone()),
            f.size,
            f.sha256,
        ));
        tgz_entries.push(blob(
            format!("oci/blobs/sha256/{}", config_digest.hex()),
            EntryKind::OciBlob,
            ContentSource::Generated(form.config.clone().into()),
            form.config.len() as u64,
            config_digest,
        ));
        tgz_entries.push(blob(
            format!("oci/blobs/sha256/{}", manifest_digest.hex()),
            EntryKind::OciManifest,
            ContentSource::Generated(form.manifest.clone().into()),
            form.manifest.len() as u64,
            manifest_digest,
        ));
        carried.layout.push(images::layout_descriptor(
            crate::registry::OCI_MANIFEST,
            &manifest_digest,
            form.manifest.len(),
            &name_on_registry,
        ));
        reporter.detail(format!(
            "chart {url} -> charts/{} and oci/ as {name_on_registry}",
            meta.file_name()
        ));
    }
    carried.artifacts.extend(extra);
    check_registry_names(&carried.artifacts)?;
    carried.contents.extend(tgz_entries);
    Ok(carried)
}

/// Two charts that a chart registry would hold under one name (`charts/<name>:<version>`
/// of an HTTP chart, an OCI chart's upstream path and tag) with different manifests are
/// refused (exit 2, naming both): `install --chart-registry` could push only one of them.
fn check_registry_names(artifacts: &[Artifact]) -> Result<()> {
    let mut named: std::collections::HashMap<&str, &Artifact> = std::collections::HashMap::new();
    for a in artifacts.iter().filter(|a| a.kind == EntryKind::OciChart) {
        match named.insert(&a.dest, a) {
            Some(other) if other.sha256 != a.sha256 => {
                return Err(Error::Usage(format!(
                    "charts `{}` and `{}` would both be `{}` on a chart registry, as different artifacts",
                    other.source, a.source, a.dest
                ))
                .with_hint("keep only one of them in the manifest"));
            }
            _ => {}
        }
    }
    Ok(())
}
