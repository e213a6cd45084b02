//! The web root's Helm repository: `charts/<name>-<version>.tgz` (entries of the bundle)
//! and `charts/index.yaml`, rebuilt at commit from each carried chart's own `Chart.yaml`
//! and merged with the index earlier installs left (SPEC §6: URLs relative to `charts/`).
//! The directory is also a ChartMuseum local storage directory.

use crate::bundle::index::IndexEntry;
use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::fs::RootDir;
use crate::helm::{self, ChartMetadata, repo};

/// The site index, relative to the web root.
pub const INDEX_PATH: &str = "charts/index.yaml";

/// A chart this install carries, read from its verified bytes.
pub struct CarriedChart {
    pub meta: ChartMetadata,
    pub sha256: Sha256Digest,
}

/// Reads a verified chart entry's metadata (its `Chart.yaml`), which must agree with the
/// path the signed index gives it.
pub fn carried_chart(entry: &IndexEntry, tgz: std::fs::File) -> Result<CarriedChart> {
    let meta = helm::metadata_from_reader(std::io::BufReader::new(tgz), &entry.path)?;
    if format!("charts/{}", meta.file_name()) != entry.path {
        return Err(crate::error::Error::Verify(format!(
            "{}: its Chart.yaml names it {} {}",
            entry.path, meta.name, meta.version
        )));
    }
    Ok(CarriedChart {
        meta,
        sha256: entry.sha256,
    })
}

/// The new `charts/index.yaml`, or `None` when the one in place already says it.
pub fn index_update(
    root: &RootDir,
    charts: &[CarriedChart],
    created: &str,
) -> Result<Option<Vec<u8>>> {
    if charts.is_empty() {
        return Ok(None);
    }
    let existing = root.read_small(INDEX_PATH, repo::MAX_INDEX_BYTES);
    let site: Vec<repo::SiteChart<'_>> = charts
        .iter()
        .map(|c| repo::SiteChart {
            meta: &c.meta,
            digest: c.sha256,
            created,
        })
        .collect();
    let rendered = repo::site_index(existing.as_deref(), &site)?;
    Ok((existing.as_deref() != Some(rendered.as_slice())).then_some(rendered))
}
