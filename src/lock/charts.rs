//! Locks Helm charts. An HTTP chart's version (exact or a semver range) is picked from its
//! repository's `index.yaml`, and its absolute URL and sha256 (the index's `digest`) are
//! pinned after the chart was downloaded, checked against that digest, and found to be
//! the chart it claims to be (its own `Chart.yaml`). An OCI chart's tag is resolved to the
//! digest of the manifest the registry serves, which must be a Helm chart's.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::fetch::{Download, Fetcher};
use crate::helm::{self, repo};
use crate::manifest::{ChartSource, Manifest, SourceUrl};
use crate::progress::Reporter;
use crate::registry::RegistryClient;

/// The repository URL as a base for relative chart URLs (Helm adds the trailing slash).
fn repo_base(repo: &SourceUrl) -> url::Url {
    let mut base = repo.as_url().clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.set_query(None);
    base
}

fn parse_url(s: &str, what: &str) -> Result<SourceUrl> {
    s.parse()
        .map_err(|e: String| Error::Usage(format!("{what}: {e}")))
}

pub fn lock_charts(
    manifest: &mut Manifest,
    fetcher: &Fetcher,
    registry: &RegistryClient,
    reporter: &Reporter,
) -> Result<()> {
    let mut indexes: HashMap<String, Vec<u8>> = HashMap::new();
    let mut downloads = Vec::new();
    let mut todo = Vec::new();
    for i in 0..manifest.charts.len() {
        let entry = manifest.charts[i].clone();
        match entry.source(i)? {
            ChartSource::Oci(image) => {
                let fetched = registry.manifest(&image)?;
                require_helm_manifest(&image.to_string(), &fetched.bytes)?;
                let mut pinned = image.clone();
                pinned.digest = Some(fetched.digest);
                reporter.detail(format!("locked chart oci://{pinned}"));
                manifest.charts[i].reference = Some(format!("oci://{pinned}"));
            }
            ChartSource::Http { .. } if entry.url.is_some() && entry.sha256.is_some() => {}
            ChartSource::Http {
                repo,
                name,
                version,
            } => {
                let base = repo_base(repo);
                let index_url = parse_url(
                    base.join("index.yaml")
                        .map_err(|e| Error::Usage(format!("{repo}: {e}")))?
                        .as_str(),
                    "index.yaml",
                )?;
                if !indexes.contains_key(index_url.as_str()) {
                    let from = manifest.fetch_url(&index_url)?;
                    let bytes = fetcher
                        .fetch_small(&from, repo::MAX_INDEX_BYTES)?
                        .ok_or_else(|| {
                            Error::Network {
                                url: from.to_string(),
                                message: "HTTP 404: the repository has no index.yaml".into(),
                            }
                            .with_hint("`repo` must be the URL that `helm repo add` takes")
                        })?;
                    indexes.insert(index_url.to_string(), bytes);
                }
                let bytes = &indexes[index_url.as_str()];
                let what = format!("chart `{name}` in {repo}");
                let versions = repo::versions_of(bytes, name, index_url.as_str())?
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{repo}: the repository index has no chart `{name}`"
                        ))
                        .with_hint("check the chart name (`helm search repo` lists them)")
                    })?;
                let picked = repo::select(&versions, version, &what)?;
                let first = picked.urls.first().ok_or_else(|| {
                    Error::Usage(format!(
                        "{what} {}: the index lists no URL for it",
                        picked.version
                    ))
                })?;
                let url = parse_url(
                    base.join(first)
                        .map_err(|e| Error::Usage(format!("{what}: url `{first}`: {e}")))?
                        .as_str(),
                    &what,
                )?;
                let digest = match &picked.digest {
                    Some(d) => Some(d.parse().map_err(|e| {
                        Error::Verify(format!(
                            "{what} {}: index digest `{d}`: {e}",
                            picked.version
                        ))
                    })?),
                    None => None,
                };
                let chart = &mut manifest.charts[i];
                chart.version = Some(picked.version.clone());
                chart.url = Some(url.clone());
                downloads.push(Download {
                    canonical: url.clone(),
                    from: manifest.fetch_url(&url)?,
                    expected_sha256: digest,
                    expected_size: None,
                    authorization: None,
                    label: Some(format!("chart {name} {} ({url})", picked.version)),
                    pinned_by: Some("the repository index"),
                });
                todo.push(i);
            }
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let bar = reporter.bytes_bar(0, "charts");
    let fetched = fetcher.fetch_all(&downloads, &bar)?;
    bar.finish_and_clear();
    for (i, f) in todo.into_iter().zip(fetched) {
        let chart = &mut manifest.charts[i];
        let (name, version) = (
            chart.name.clone().unwrap_or_default(),
            chart.version.clone().unwrap_or_default(),
        );
        let url = chart
            .url
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default();
        let meta = helm::read_chart_metadata(&f.path, &url)?;
        if meta.name != name || meta.version != version {
            return Err(Error::Verify(format!(
                "{url}: the index lists it as {name} {version}, its Chart.yaml says {} {}",
                meta.name, meta.version
            ))
            .with_hint("the repository index is inconsistent; report it upstream"));
        }
        reporter.detail(format!(
            "locked chart {name} {version} {url} sha256:{}",
            f.sha256
        ));
        chart.sha256 = Some(f.sha256);
    }
    Ok(())
}

/// An OCI chart's manifest must be an image manifest whose config is Helm's.
pub fn require_helm_manifest(what: &str, bytes: &[u8]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "mediaType")]
        media_type: String,
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        config: Option<Config>,
    }
    let shape: Option<Shape> = serde_json::from_slice(bytes).ok();
    match shape.and_then(|s| s.config) {
        Some(c) if c.media_type == helm::CONFIG_MEDIA_TYPE => Ok(()),
        Some(c) => Err(Error::Usage(format!(
            "{what} is not a Helm chart: its config media type is `{}`, not `{}`",
            c.media_type,
            helm::CONFIG_MEDIA_TYPE
        ))
        .with_hint("list container images under `images:`, charts under `charts:`")),
        None => Err(Error::Usage(format!(
            "{what} is not a Helm chart: not a single OCI manifest with a config"
        ))),
    }
}
