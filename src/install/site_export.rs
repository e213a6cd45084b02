//! `bundle receipt export` (air-gapped side): what the site holds, for `create --base`.

use std::path::Path;

use crate::delta::SiteExport;
use crate::error::{Error, Result};
use crate::install::RegistryOptions;
use crate::progress::Reporter;

/// What the web root's receipts say was installed, checked against the web root (every
/// file re-hashed) and the registries (`HEAD`).
pub fn export_site(
    _web_root: &Path,
    _registries: &[RegistryOptions],
    _reporter: &Reporter,
) -> Result<SiteExport> {
    Err(Error::Runtime("receipt export is not built yet".into()))
}
