//! `bundle receipt export` (air-gapped side): what the site holds, for `create --base` on
//! the connected side. The receipts say what was installed; the site itself has the last
//! word: every recorded file is hashed again from the web root and every recorded image is
//! looked up in the registries, and only what is still there is listed.
//!
//! Order: open and share-lock the web root (no install may run meanwhile) → read every
//! receipt (one that does not parse is an error) → reach each registry (`GET /v2/`, so a
//! wrong login fails before the long part) → hash the files → walk the images' manifests
//! and `HEAD` their blobs.

mod files;
mod registry;

use std::path::Path;

use crate::delta::{SITE_EXPORT_VERSION, SiteBundle, SiteExport};
use crate::error::{Error, Result};
use crate::fs::RootDir;
use crate::install::RegistryOptions;
use crate::install::receipt::{self, RECEIPTS_DIR};
use crate::install::web_root::{self, Layout};
use crate::progress::Reporter;

/// How many names a note on stderr lists before "and N more".
const NAMED_IN_NOTES: usize = 5;

/// What the web root's receipts say was installed, checked against the web root (every
/// file hashed again) and the registries (`HEAD`).
pub fn export_site(
    web_root: &Path,
    registries: &[RegistryOptions],
    reporter: &Reporter,
) -> Result<SiteExport> {
    let root = web_root::open(web_root, Layout::WebRoot)?;
    lock_shared(&root)?;
    let receipts = receipt::all_receipts_strict(&root)?;
    if receipts.is_empty() {
        reporter.info(format!(
            "no receipts in {}: no bundle was installed into this web root",
            root.path().join(RECEIPTS_DIR).display()
        ));
    }
    let reachable = registries
        .iter()
        .map(registry::Site::connect)
        .collect::<Result<Vec<_>>>()?;
    let bundles = receipts
        .iter()
        .map(|r| SiteBundle {
            name: r.name.clone(),
            version: r.version.clone(),
            index_sha256: r.index_sha256,
            manifest_sha256: r.manifest_sha256,
        })
        .collect();
    let files = files::still_in_place(&root, &receipts, reporter)?;
    let registries = reachable
        .iter()
        .map(|site| site.still_there(&receipts, reporter))
        .collect::<Result<Vec<_>>>()?;
    Ok(SiteExport {
        airgap_bundle_site: SITE_EXPORT_VERSION,
        bundles,
        files,
        registries,
    })
}

/// A shared lock on the web root for the whole export, so that no install changes it
/// between the receipts being read and the files being hashed.
fn lock_shared(root: &RootDir) -> Result<()> {
    match root.try_lock_shared() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Runtime(format!(
            "an install is running on {}",
            root.path().display()
        ))
        .with_hint("wait for it to finish, then export again")),
        Err(e) => Err(Error::Runtime(format!(
            "cannot lock the {} {} against installs: {e}",
            root.role(),
            root.path().display()
        ))),
    }
}

/// `a (why), b (why), … and N more`: the first few of a list, for a note on stderr.
fn first_few(items: &[String]) -> String {
    let mut shown = items
        .iter()
        .take(NAMED_IN_NOTES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMED_IN_NOTES {
        shown.push_str(&format!(" and {} more", items.len() - NAMED_IN_NOTES));
    }
    shown
}

/// `1 file` / `3 files`.
fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
