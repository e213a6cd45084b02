//! Install of a delta bundle (SPEC §3): before any data moves, everything the delta left
//! out must be where it expects it (the base's receipts, web-root files with their sha256,
//! registry blobs); otherwise the install is refused, naming what is missing.

use super::receipt::{self, Receipt};
use super::web_root;
use crate::bundle::index::Index;
use crate::error::{Error, Result};

/// How many missing entries a refusal names (the count says the rest).
const NAMED: usize = 12;

/// The receipts of the base's bundles that the web root lacks, when the delta expects web
/// content in place: a receipt of the same name, version and locked manifest.
pub fn missing_receipts(receipts: &[Receipt], index: &Index) -> Vec<String> {
    let Some(base) = &index.base else {
        return Vec::new();
    };
    if !index
        .entries
        .iter()
        .any(|e| e.in_place && web_root::is_web_entry(e))
    {
        return Vec::new();
    }
    base.bundles
        .iter()
        .filter(|b| {
            !receipts.iter().any(|r| {
                r.name == b.name && r.version == b.version && r.manifest_sha256 == b.manifest_sha256
            })
        })
        .map(|b| {
            format!(
                "{} (the receipt of {} {}, locked manifest sha256:{})",
                receipt::receipt_rel_path(&b.name, &b.version),
                b.name,
                b.version,
                b.manifest_sha256
            )
        })
        .collect()
}

/// Refuses the install (exit 1) when anything the delta expects is missing.
pub fn refuse_if_missing(index: &Index, missing: Vec<String>) -> Result<()> {
    let Some(base) = &index.base else {
        return Ok(());
    };
    if missing.is_empty() {
        return Ok(());
    }
    let bundles: Vec<String> = base
        .bundles
        .iter()
        .map(|b| format!("{} {}", b.name, b.version))
        .collect();
    let more = match missing.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!("\n  … and {n} more"),
    };
    Err(Error::Runtime(format!(
        "{} {} is a delta made against {}; {} of what it expects in place {} missing:\n  {}{more}\nnothing was installed",
        index.name,
        index.version,
        describe_base(index),
        missing.len(),
        if missing.len() == 1 { "is" } else { "are" },
        missing[..missing.len().min(NAMED)].join("\n  "),
    ))
    .with_hint(format!(
        "install what the delta was made against first ({}), or install the full bundle; a delta made from this site's own `bundle receipt export` matches it",
        if bundles.is_empty() { "nothing is named".to_string() } else { bundles.join(", ") }
    )))
}

/// `the site export sha256:…` / `the bundle NAME VERSION`.
pub fn describe_base(index: &Index) -> String {
    let Some(base) = &index.base else {
        return "nothing (a full bundle)".into();
    };
    let bundles: Vec<String> = base
        .bundles
        .iter()
        .map(|b| format!("{} {}", b.name, b.version))
        .collect();
    match base.from.as_str() {
        "site" => format!(
            "a site export (sha256:{}) of {}",
            base.sha256,
            if bundles.is_empty() {
                "a site with no bundles".to_string()
            } else {
                bundles.join(", ")
            }
        ),
        _ => format!("{} (index sha256:{})", bundles.join(", "), base.sha256),
    }
}
