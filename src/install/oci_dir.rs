//! `install --oci-dir DIR`: the bundle's images as a plain OCI image layout. The blobs and
//! `oci-layout` go through the same staged tree as the web root
//! ([`super::web_root::Layout::OciDir`]); `index.json` is generated: the images already in
//! the layout under other names, then this bundle's, so several bundles can share one
//! directory.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fs::{RootDir, stat_at};

/// The annotation that names an image in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The layout's own index, at its top.
const INDEX: &str = "index.json";

/// The descriptors of the `index.json` already in the layout (none when there is none).
/// Pre-flight: one that cannot be read or is not an image index is an error (exit 1), since
/// it names images that must be kept.
pub fn existing_index(root: &RootDir) -> Result<Vec<Value>> {
    let refused = |why: &str| {
        Error::Runtime(format!(
            "{}: {why}; it names the images already in the layout, so it is not overwritten",
            root.path().join(INDEX).display()
        ))
        .with_hint("repair it or move it away, then install again; nothing was installed")
    };
    match root.read_small(INDEX, 64 << 20) {
        Some(bytes) => descriptors(&bytes).ok_or_else(|| refused("not an OCI image index")),
        None if stat_at(root.fd(), INDEX).is_ok_and(|s| s.is_none()) => Ok(Vec::new()),
        None => Err(refused(
            "cannot be read as a regular file of at most 64 MiB",
        )),
    }
}

/// The `manifests` of an image index, if `bytes` is one.
fn descriptors(bytes: &[u8]) -> Option<Vec<Value>> {
    match serde_json::from_slice::<Value>(bytes)
        .ok()?
        .get("manifests")
    {
        None => Some(Vec::new()),
        Some(Value::Array(list)) => Some(list.clone()),
        Some(_) => None,
    }
}

fn ref_name(d: &Value) -> Option<&str> {
    d.get("annotations")?.get(REF_NAME)?.as_str()
}

/// `index.json` for the layout: `existing` without the names the bundle's own index
/// (`ours`) gives again, then the bundle's.
pub fn merged_index(existing: Vec<Value>, ours: &[u8]) -> Result<Vec<u8>> {
    let ours = descriptors(ours).unwrap_or_default();
    let ours_named: BTreeSet<&str> = ours.iter().filter_map(ref_name).collect();
    let mut manifests: Vec<Value> = existing
        .into_iter()
        .filter(|d| ref_name(d).is_none_or(|n| !ours_named.contains(n)))
        .collect();
    manifests.extend(ours.iter().cloned());
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::registry::OCI_INDEX,
        "manifests": manifests,
    }))
    .map_err(|e| Error::Runtime(format!("cannot write {INDEX}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_other_names_and_replaces_ours() {
        let existing = descriptors(
            br#"{"manifests":[
                {"digest":"sha256:a","annotations":{"org.opencontainers.image.ref.name":"keep:1"}},
                {"digest":"sha256:b","annotations":{"org.opencontainers.image.ref.name":"app:1"}},
                {"digest":"sha256:c"}]}"#,
        )
        .unwrap();
        let ours = br#"{"manifests":[{"digest":"sha256:d","annotations":{"org.opencontainers.image.ref.name":"app:1"}}]}"#;
        let merged: Value = serde_json::from_slice(&merged_index(existing, ours).unwrap()).unwrap();
        let digests: Vec<&str> = merged["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, ["sha256:a", "sha256:c", "sha256:d"]);
        assert!(descriptors(br#"{"manifests":{}}"#).is_none());
        assert!(descriptors(b"{not json").is_none());
    }
}
