//! Locks images: a tag is resolved to the digest of what the registry serves for it
//! (`ref:tag@sha256:…`), a digest is checked to exist, and the platforms the manifest asks
//! for are checked to be in the image's index, so `create` never meets a surprise.

use crate::error::Result;
use crate::manifest::{Manifest, Platform};
use crate::progress::Reporter;
use crate::registry::RegistryClient;

pub fn lock_images(
    manifest: &mut Manifest,
    registry: &RegistryClient,
    reporter: &Reporter,
) -> Result<()> {
    let default_platforms = manifest.platforms.clone();
    for entry in &mut manifest.images {
        let fetched = registry.manifest(&entry.reference)?;
        let wanted: &[Platform] = entry.platforms.as_deref().unwrap_or(&default_platforms);
        fetched.require_platforms(&entry.reference, wanted)?;
        reporter.detail(format!(
            "locked {} sha256:{} ({})",
            entry.reference, fetched.digest, fetched.media_type
        ));
        entry.reference.digest = Some(fetched.digest);
    }
    Ok(())
}
