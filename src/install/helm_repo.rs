//! The web root's Helm repository: `charts/<name>-<version>.tgz` (entries of the bundle)
//! and `charts/index.yaml`, rebuilt at commit from each carried chart's own `Chart.yaml`
//! and merged with the index earlier installs left (SPEC §6: URLs relative to `charts/`).
//! The directory is also a ChartMuseum local storage directory.

use crate::bundle::index::IndexEntry;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
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
        return Err(Error::Verify(format!(
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
    let existing = existing_index(root)?;
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

/// The `charts/index.yaml` already in the web root (`None` when there is none), checked to
/// be a Helm index this install can merge into: pre-flight calls it so that one which is
/// not (malformed, oversize, an alias bomb) stops the install before any data moves
/// (exit 1, naming it) instead of being replaced or read at any cost. A symlink or other
/// non-file in its place is refused by the web root's own pre-flight.
pub fn existing_index(root: &RootDir) -> Result<Option<Vec<u8>>> {
    let shown = root.path().join(INDEX_PATH);
    let Some(bytes) = super::web_root::existing_generated(
        root,
        INDEX_PATH,
        repo::MAX_INDEX_BYTES,
        "a Helm index",
        "this bundle's charts",
    )?
    else {
        return Ok(None);
    };
    repo::existing_entries(&bytes)
        .map_err(|e| e.map_message(|m| format!("{}: {m}", shown.display())))?;
    Ok(Some(bytes))
}
