//! The install receipt `.bundle/<name>-<version>.json` under the web root: what was
//! installed, from which bundle and signed index, when. Rewritten on every install.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fs::{DirCursor, RootDir, open_file_at};

#[derive(Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub name: String,
    pub version: String,
    pub bundle: String,
    pub index_sha256: Sha256Digest,
    pub manifest_sha256: Sha256Digest,
    pub signed_by: String,
    pub created: String,
    pub installed_at: String,
    pub tool: String,
    pub files: Vec<ReceiptFile>,
    pub kubespray_vars: Option<String>,
    /// The images this install pushed (or found) on the site registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<crate::install::registry::RegistryReport>,
    /// The charts this install pushed (or found) on the chart registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_registry: Option<crate::install::registry::RegistryReport>,
    /// The apt repositories this install put under `debs/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt_repos: Vec<crate::install::kubespray::AptRepoOnSite>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptFile {
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    /// `installed` (written by this run) or `present` (already in place).
    pub status: String,
}

/// Where the receipt of `name`/`version` lives, relative to the web root (both are
/// restricted to a safe character set by the signed index).
pub fn receipt_rel_path(name: &str, version: &str) -> String {
    format!("{RECEIPTS_DIR}/{name}-{version}.json")
}

/// The receipts directory below the web root.
pub const RECEIPTS_DIR: &str = ".bundle";

/// Upper bound on a receipt's size (it lists every file of its bundle).
const MAX_RECEIPT_BYTES: u64 = 256 << 20;

/// Every receipt under the web root (to build variables covering all installed bundles),
/// read without following links.
pub fn all_receipts(root: &RootDir) -> Vec<Receipt> {
    let Ok(names) = root.list(RECEIPTS_DIR) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| n.ends_with(".json"))
        .filter_map(|n| root.read_small(&format!("{RECEIPTS_DIR}/{n}"), MAX_RECEIPT_BYTES))
        .filter_map(|b: Vec<u8>| serde_json::from_slice(&b).ok())
        .collect()
}

/// The repositories the receipts say were pushed to registry `host` (images and charts),
/// each once, sorted.
pub fn pushed_repositories(receipts: &[Receipt], host: &str) -> Vec<String> {
    let mut repos: Vec<String> = receipts
        .iter()
        .flat_map(|r| [&r.registry, &r.chart_registry])
        .flatten()
        .filter(|report| report.host == host)
        .flat_map(|report| &report.images)
        .filter_map(|image| repository_on(host, &image.name))
        .collect();
    repos.sort();
    repos.dedup();
    repos
}

/// The repository of a recorded image name on `host` (`HOST/REPOSITORY:TAG` or
/// `HOST/REPOSITORY@sha256:…`); `None` for anything else. A receipt is a file anyone
/// able to write the web root can edit, and the repository goes into request paths.
pub fn repository_on(host: &str, name: &str) -> Option<String> {
    let (on, rest) = name.split_once('/')?;
    if !on.eq_ignore_ascii_case(host) {
        return None;
    }
    let repository = match rest.split_once('@') {
        Some((repository, _)) => repository,
        None => rest
            .rsplit_once(':')
            .map_or(rest, |(repository, _)| repository),
    };
    is_repository(repository).then(|| repository.to_string())
}

/// A repository name as the distribution API allows it: lowercase letters, digits and
/// `._-` in `/`-separated components, none empty, `.` or `..`.
fn is_repository(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        })
}

/// Every receipt under the web root, sorted by file name, for the site export: one that
/// cannot be read in full or does not parse is an error naming it (exit 1), since leaving
/// it out would export a site without that bundle. Read without following links; a
/// `.bundle` that is a link or not a directory is refused.
pub fn all_receipts_strict(root: &RootDir) -> Result<Vec<Receipt>> {
    use std::io::Read;
    let names = root
        .list(RECEIPTS_DIR)
        .map_err(|e| e.into_error(root.path(), root.role()))?;
    let mut cursor = DirCursor::new(root.clone());
    let mut receipts = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(".json")) {
        let shown = root.path().join(RECEIPTS_DIR).join(name);
        let dir = cursor
            .existing_dir(RECEIPTS_DIR)
            .map_err(|e| e.into_error(root.path(), root.role()))?
            .ok_or_else(|| {
                Error::Runtime(format!(
                    "{}: removed while it was read",
                    root.path().join(RECEIPTS_DIR).display()
                ))
            })?;
        let mut bytes = Vec::new();
        open_file_at(dir, name)
            .and_then(|f| f.take(MAX_RECEIPT_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| {
                Error::io("cannot read the receipt", &shown, e).with_hint(format!(
                    "a receipt is a regular file written by `bundle install`; move `{}` out of {} if it is not one",
                    shown.display(),
                    root.path().join(RECEIPTS_DIR).display()
                ))
            })?;
        if bytes.len() as u64 > MAX_RECEIPT_BYTES {
            return Err(Error::Runtime(format!(
                "{}: larger than the {MAX_RECEIPT_BYTES} bytes a receipt may have",
                shown.display()
            )));
        }
        let receipt = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Runtime(format!("{}: not a receipt: {e}", shown.display())).with_hint(
                format!(
                    "reinstall its bundle to rewrite it, or move it out of {} if it is not one; nothing was exported",
                    root.path().join(RECEIPTS_DIR).display()
                ),
            )
        })?;
        receipts.push(receipt);
    }
    Ok(receipts)
}

impl Receipt {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|e| crate::Error::Runtime(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }
}
