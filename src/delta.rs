//! Delta bundles (SPEC §3): what a site already holds, from its own exported state
//! (`bundle receipt export`) or from an earlier bundle, so that `create --base` leaves
//! those artifacts out and the signed index marks them as expected in place.
//!
//! The export is the one document that crosses the gap backwards: digests and sizes only,
//! deterministic (sorted, no times), small enough for paper-sized media.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bundle::index::{BaseBundle, DeltaBase, EntryKind, Index, IndexEntry, blob_path};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// The version of the site export this tool writes and reads.
pub const SITE_EXPORT_VERSION: u32 = 1;
/// Upper bound on a base read into memory (an index or a site export).
const MAX_BASE_BYTES: u64 = crate::bundle::index::MAX_INDEX_BYTES;

/// What a site holds, as `bundle receipt export` writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteExport {
    /// Marks the document as a site export, and its version.
    pub airgap_bundle_site: u32,
    /// The installed bundles, from the receipts under the web root, sorted by name and
    /// version.
    pub bundles: Vec<SiteBundle>,
    /// Every file the installed bundles carried that is still in the web root with the
    /// sha256 its receipt records, sorted by path (web-root paths, which are entry paths).
    pub files: Vec<SiteFile>,
    /// Per registry given to the export: the blobs and manifests of the installed
    /// bundles' images that a `HEAD` found there, sorted by host.
    #[serde(default)]
    pub registries: Vec<SiteRegistry>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteBundle {
    pub name: String,
    pub version: String,
    pub index_sha256: Sha256Digest,
    pub manifest_sha256: Sha256Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    pub path: String,
    pub sha256: Sha256Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRegistry {
    /// `HOST:PORT` as given to `--registry`.
    pub host: String,
    /// Sorted by digest, each once.
    pub blobs: Vec<SiteBlob>,
    /// Sorted by repository and digest.
    pub manifests: Vec<SiteManifest>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteBlob {
    pub digest: Sha256Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteManifest {
    pub repository: String,
    pub digest: Sha256Digest,
}

impl SiteExport {
    /// The canonical bytes: pretty JSON (a person may read it before it crosses back),
    /// every list sorted, ending in a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.bundles.sort();
        sorted.files.sort();
        sorted.registries.sort();
        for r in &mut sorted.registries {
            r.blobs.sort();
            r.blobs.dedup();
            r.manifests.sort();
            r.manifests.dedup();
        }
        let mut bytes = serde_json::to_vec_pretty(&sorted).expect("a site export serialises");
        bytes.push(b'\n');
        bytes
    }
}

/// A base given to `create --base`: the entries it holds (by path, with sha256 and size),
/// and how the delta's index records it.
#[derive(Debug)]
pub struct Base {
    holds: HashMap<String, (Sha256Digest, u64)>,
    pub record: DeltaBase,
}

impl Base {
    /// Reads OLD: a bundle (or its first volume), its `index.json`, or a site export.
    /// A malformed export or index is exit 2 with its line and column.
    pub fn load(path: &Path) -> Result<Base> {
        if looks_split(path) {
            return Self::from_bundle(path);
        }
        // Opening a FIFO waits for a writer; a directory or device is no base either.
        let meta =
            std::fs::metadata(path).map_err(|e| Error::io("cannot read the base", path, e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "--base {}: not a regular file (give a bundle, its index.json, or a site export)",
                path.display()
            )));
        }
        let mut head = [0u8; 4];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| Error::io("cannot read the base", path, e))?;
        if n == 4 && is_zstd(&head) {
            return Self::from_bundle(path);
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_BASE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| Error::io("cannot read the base", path, e))?;
        if bytes.len() as u64 > MAX_BASE_BYTES {
            return Err(Error::Usage(format!(
                "--base {}: larger than the {MAX_BASE_BYTES} bytes any index or site export has",
                path.display()
            )));
        }
        let sha256 = Sha256Digest::of_bytes(&bytes);
        // Which document it is, from its top-level keys (values skipped, not built: a
        // tree of a big export would cost many times its size).
        #[derive(Deserialize)]
        struct Probe {
            airgap_bundle_site: Option<serde::de::IgnoredAny>,
            format: Option<serde::de::IgnoredAny>,
            entries: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| at_position(path, &e))?;
        if probe.airgap_bundle_site.is_some() {
            let site: SiteExport =
                serde_json::from_slice(&bytes).map_err(|e| at_position(path, &e))?;
            if site.airgap_bundle_site != SITE_EXPORT_VERSION {
                return Err(Error::Usage(format!(
                    "--base {}: site export version {} is not supported (this tool reads version {SITE_EXPORT_VERSION})",
                    path.display(),
                    site.airgap_bundle_site
                )));
            }
            return Ok(Self::from_site(site, sha256));
        }
        if probe.entries.is_some() && probe.format.is_some() {
            // Parsed once for the position of a syntax error, once for the checks.
            serde_json::from_slice::<Index>(&bytes).map_err(|e| at_position(path, &e))?;
            let index = Index::from_signed_bytes(&bytes)
                .map_err(|e| Error::Usage(format!("--base {}: {e}", path.display())))?;
            return Ok(Self::from_index(&index, sha256, "index"));
        }
        Err(Error::Usage(format!(
            "--base {}: neither a bundle, nor a bundle's index.json, nor a site export (`bundle receipt export`)",
            path.display()
        )))
    }

    fn from_bundle(path: &Path) -> Result<Base> {
        let source = crate::bundle::media::open_bundle(path, false)?;
        let (head, _) = crate::bundle::reader::read_unverified(&source)
            .map_err(|e| Error::Usage(format!("--base {}: {e}", path.display())))?;
        let index = Index::from_signed_bytes(&head.index_bytes)
            .map_err(|e| Error::Usage(format!("--base {}: {e}", path.display())))?;
        Ok(Self::from_index(
            &index,
            Sha256Digest::of_bytes(&head.index_bytes),
            "bundle",
        ))
    }

    /// An earlier bundle (or a delta: after its install the site holds its whole set, the
    /// entries it expected in place included).
    fn from_index(index: &Index, index_sha256: Sha256Digest, from: &str) -> Base {
        let holds = index
            .entries
            .iter()
            .filter(|e| e.kind.may_be_in_place())
            .map(|e| (e.path.clone(), (e.sha256, e.size)))
            .collect();
        Base {
            holds,
            record: DeltaBase {
                from: from.to_string(),
                sha256: index_sha256,
                bundles: vec![BaseBundle {
                    name: index.name.clone(),
                    version: index.version.clone(),
                    index_sha256,
                    manifest_sha256: index.manifest_sha256,
                }],
            },
        }
    }

    fn from_site(site: SiteExport, sha256: Sha256Digest) -> Base {
        let mut holds: HashMap<String, (Sha256Digest, u64)> = site
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.sha256, f.size)))
            .collect();
        for blob in site.registries.iter().flat_map(|r| &r.blobs) {
            holds.insert(blob_path(&blob.digest), (blob.digest, blob.size));
        }
        let mut bundles: Vec<BaseBundle> = site
            .bundles
            .into_iter()
            .map(|b| BaseBundle {
                name: b.name,
                version: b.version,
                index_sha256: b.index_sha256,
                manifest_sha256: b.manifest_sha256,
            })
            .collect();
        bundles.sort();
        Base {
            holds,
            record: DeltaBase {
                from: "site".into(),
                sha256,
                bundles,
            },
        }
    }

    /// Whether the base holds `entry` (same path, same sha256, a kind a delta leaves out).
    pub fn holds(&self, path: &str, kind: EntryKind, sha256: &Sha256Digest) -> Option<u64> {
        if !kind.may_be_in_place() {
            return None;
        }
        self.holds
            .get(path)
            .filter(|(d, _)| d == sha256)
            .map(|(_, size)| *size)
    }

    /// Whether the base holds a file of this path and sha256, and its size (for leaving a
    /// download out before it starts).
    pub fn holds_entry(&self, entry: &IndexEntry) -> bool {
        self.holds(&entry.path, entry.kind, &entry.sha256)
            .is_some_and(|size| size == entry.size)
    }
}

/// A JSON syntax or schema error in `path`, with its line and column (exit 2).
fn at_position(path: &Path, e: &serde_json::Error) -> Error {
    let message = e.to_string();
    // serde_json appends " at line L column C"; the position goes in front instead.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    Error::Manifest {
        path: path.display().to_string(),
        line: e.line(),
        column: e.column(),
        message,
    }
}

fn is_zstd(head: &[u8; 4]) -> bool {
    let magic = u32::from_le_bytes(*head);
    magic == 0xFD2F_B528 || (magic & 0xFFFF_FFF0) == 0x184D_2A50
}

/// `NAME.bundle.tar.zst` that exists only as volumes (`.000` beside it).
fn looks_split(path: &Path) -> bool {
    Path::new(&format!("{}.000", path.display())).exists()
}
