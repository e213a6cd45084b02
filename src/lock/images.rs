//! Locks images: a tag is resolved to the digest of what the registry serves for it
//! (`ref:tag@sha256:…`), a digest is checked to exist, and the platforms the manifest asks
//! for are checked to be in the image's index, so `create` never meets a surprise.

use crate::error::{Error, Result};
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
        if fetched.is_index() && !wanted.is_empty() {
            let carried = fetched.platforms()?;
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !carried.contains(w))
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                let has: Vec<String> = carried.iter().map(ToString::to_string).collect();
                return Err(Error::Usage(format!(
                    "{}: platform {} not in the image index, which has {}",
                    entry.reference,
                    missing.join(", "),
                    if has.is_empty() {
                        "none".to_string()
                    } else {
                        has.join(", ")
                    }
                ))
                .with_hint("set `platforms` on the image (or the manifest) to ones it has"));
            }
        }
        reporter.detail(format!(
            "locked {} sha256:{} ({})",
            entry.reference, fetched.digest, fetched.media_type
        ));
        entry.reference.digest = Some(fetched.digest);
    }
    Ok(())
}
