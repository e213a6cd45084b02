//! `bundle lock`: resolves a loose manifest into a locked one (every artifact pinned by
//! sha256 or digest). One resolver per artifact kind; the output is deterministic.

pub mod charts;
pub mod debs;
pub mod files;
pub mod images;
pub mod python;

use crate::error::Result;
use crate::fetch::Fetcher;
use crate::manifest::{LoadedManifest, Manifest};
use crate::progress::Reporter;
use crate::registry::RegistryClient;

/// Pins every entry of the manifest, fetching what is not pinned yet.
pub fn lock_manifest(
    loaded: &LoadedManifest,
    fetcher: &Fetcher,
    registry: &RegistryClient,
    reporter: &Reporter,
) -> Result<Manifest> {
    let manifest = &loaded.manifest;
    manifest.check_image_names()?;
    manifest.check_charts()?;
    let mut locked = manifest.clone();
    files::lock_files(&mut locked, fetcher, reporter)?;
    images::lock_images(&mut locked, registry, reporter)?;
    debs::lock_debs(&mut locked, loaded.base_dir(), fetcher, reporter)?;
    charts::lock_charts(&mut locked, fetcher, registry, reporter)?;
    python::lock_python(&mut locked, loaded.base_dir(), fetcher, reporter)?;
    Ok(locked)
}
