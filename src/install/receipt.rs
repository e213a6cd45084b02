//! The install receipt `.bundle/<name>-<version>.json` under the web root: what was
//! installed, from which bundle and signed index, when. Rewritten on every install.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::fs::RootDir;

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

/// Every receipt under the web root (to build variables covering all installed bundles),
/// read without following links.
pub fn all_receipts(root: &RootDir) -> Vec<Receipt> {
    let Ok(names) = root.list(RECEIPTS_DIR) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| n.ends_with(".json"))
        .filter_map(|n| root.read_small(&format!("{RECEIPTS_DIR}/{n}"), 256 << 20))
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
        .filter_map(|image| {
            let path = image.name.strip_prefix(host)?.strip_prefix('/')?;
            let repo = match path.split_once('@') {
                Some((repo, _)) => repo,
                // The tag follows the last `:` after the last `/`.
                None => match path.rsplit_once(':') {
                    Some((repo, tag)) if !tag.contains('/') => repo,
                    _ => path,
                },
            };
            Some(repo.to_string())
        })
        .collect();
    repos.sort();
    repos.dedup();
    repos
}

impl Receipt {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|e| crate::Error::Runtime(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }
}
