//! The install receipt `.bundle/<name>-<version>.json` under the web root: what was
//! installed, from which bundle and signed index, when. Rewritten on every install.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::Result;

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
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptFile {
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    /// `installed` (written by this run) or `present` (already in place).
    pub status: String,
}

/// Where the receipt of `name`/`version` lives.
pub fn receipt_path(web_root: &Path, name: &str, version: &str) -> PathBuf {
    web_root
        .join(".bundle")
        .join(format!("{name}-{version}.json"))
}

/// Every receipt under the web root (to build variables covering all installed bundles).
pub fn all_receipts(web_root: &Path) -> Vec<Receipt> {
    let Ok(dir) = std::fs::read_dir(web_root.join(".bundle")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

impl Receipt {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|e| crate::Error::Runtime(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }
}
