//! `bundle/index.json`: the signed table of contents. The signature covers these bytes, and
//! these bytes cover every entry (path, size, sha256), so nothing else needs trusting.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// The bundle format version this tool writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const INDEX_PATH: &str = "bundle/index.json";
pub const INDEX_SIG_PATH: &str = "bundle/index.json.minisig";
pub const MANIFEST_PATH: &str = "bundle/manifest.lock.yaml";
/// Upper bound on `index.json`, read into memory before its signature is checked.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// What an entry is, which decides the install target it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// The locked manifest the bundle was made from.
    Manifest,
    /// A plain file for the web root's `files/`.
    File,
    /// A config or layer blob of an image, under `oci/blobs/sha256/`.
    #[serde(rename = "oci-blob")]
    OciBlob,
    /// An image manifest or index, under `oci/blobs/sha256/`.
    #[serde(rename = "oci-manifest")]
    OciManifest,
    /// The OCI layout's own files: `oci/oci-layout` and `oci/index.json`.
    #[serde(rename = "oci-layout")]
    OciLayout,
    /// An image (the kind of an artifact, never of an entry).
    Image,
    /// A Debian package, under `debs/<repo>/` as its repository's `Filename` says.
    Deb,
    /// A repository's signed metadata, byte-identical to upstream (`InRelease`,
    /// `Packages*`), and its key, under `debs/<repo>/`.
    #[serde(rename = "apt-index")]
    AptIndex,
    /// A packaged Helm chart (`charts/<name>-<version>.tgz`), for the web root's Helm repo.
    Chart,
    /// A chart as an OCI artifact in `oci/` (the kind of an artifact, never of an entry):
    /// its `dest` is its name on a site chart registry (`charts/demo:1.2.5`).
    #[serde(rename = "oci-chart")]
    OciChart,
    /// A Python wheel or sdist (`python/<file>`), for the web root's PEP 503 mirror.
    Python,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Manifest => "manifest",
            EntryKind::File => "file",
            EntryKind::OciBlob => "oci-blob",
            EntryKind::OciManifest => "oci-manifest",
            EntryKind::OciLayout => "oci-layout",
            EntryKind::Image => "image",
            EntryKind::Deb => "deb",
            EntryKind::AptIndex => "apt-index",
            EntryKind::Chart => "chart",
            EntryKind::OciChart => "oci-chart",
            EntryKind::Python => "python",
        }
    }

    /// Content a site keeps under its own digest (a file in the web root, a blob in the
    /// registry), which a delta may leave out and expect in place. Indexes, manifests and
    /// the layout's own files are always carried: they are small and say what the set is.
    pub fn may_be_in_place(self) -> bool {
        matches!(
            self,
            EntryKind::File
                | EntryKind::Deb
                | EntryKind::Chart
                | EntryKind::Python
                | EntryKind::OciBlob
        )
    }

    /// Part of the bundle's OCI image layout (`oci/`).
    pub fn is_oci(self) -> bool {
        matches!(
            self,
            EntryKind::OciBlob | EntryKind::OciManifest | EntryKind::OciLayout
        )
    }
}

/// One artifact of the manifest (a file, later an image, a package …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub kind: EntryKind,
    /// Where it came from (canonical URL or image reference).
    pub source: String,
    /// Where it goes on the destination (web-root path or image name).
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    pub size: u64,
    /// For an apt repository: the dependencies left to the site's OS mirror
    /// (`libc6 (>= 2.34) needed by jq 1.6-2.1 (amd64): base system`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<String>,
}

/// One tar entry after the signature, with what it must hash to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub path: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub kind: EntryKind,
    /// Indexes into `Index::artifacts` of the artifacts this entry belongs to (a shared
    /// blob belongs to several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<usize>,
    /// A delta left this entry out: the site holds it already (a file in the web root with
    /// this sha256, a blob in the registry), and install checks that before reading.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

/// The entry path of an OCI blob in a bundle.
pub fn blob_path(digest: &Sha256Digest) -> String {
    format!("oci/blobs/sha256/{}", digest.hex())
}

/// What a delta bundle was made against (`create --base`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaBase {
    /// `site` (a site export), `bundle` or `index` (an earlier bundle or its index.json).
    pub from: String,
    /// The sha256 of the base as given: the export's bytes, or the earlier index's.
    pub sha256: Sha256Digest,
    /// The bundles the base says the site has installed.
    pub bundles: Vec<BaseBundle>,
}

/// One installed bundle a delta's base names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BaseBundle {
    pub name: String,
    pub version: String,
    pub index_sha256: Sha256Digest,
    pub manifest_sha256: Sha256Digest,
}

/// The whole index. Fields may be added in later versions, never renamed or removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub created: String,
    pub tool: String,
    pub manifest_sha256: Sha256Digest,
    /// Set on a delta: what it was made against. Its entries marked `in_place` are not
    /// in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DeltaBase>,
    pub artifacts: Vec<Artifact>,
    pub entries: Vec<IndexEntry>,
}

impl Index {
    /// Canonical bytes: fixed field order, no whitespace, entries sorted by path.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("index serialises")
    }

    /// Parses signed index bytes and checks that they describe a bundle this tool can read.
    /// Linear in the size of the index, whoever wrote it (`inspect` runs this on an index
    /// whose signature it does not check).
    pub fn from_signed_bytes(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| Error::Verify(format!("{INDEX_PATH} is not a bundle index: {e}")))?;
        if version.format != FORMAT_VERSION {
            return Err(Error::Usage(format!(
                "bundle format version {} is not supported by this tool (it reads version {FORMAT_VERSION})",
                version.format
            ))
            .with_hint("use the airgap-bundle release that made the bundle, or a newer one"));
        }
        let index: Index = serde_json::from_slice(bytes).map_err(|e| {
            if let Some(kind) = unknown_kind(bytes) {
                return Error::Usage(format!(
                    "this bundle has entries of kind `{kind}`, which this version of airgap-bundle \
                     does not know"
                ))
                .with_hint(
                    "a newer `bundle` is needed to read it (the bundle itself is not damaged)",
                );
            }
            Error::Verify(format!("{INDEX_PATH} is not a valid version-1 index: {e}"))
        })?;
        index.validate()?;
        Ok(index)
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Error::Verify(format!("signed index: {what}"));
        for (what, value) in [("name", &self.name), ("version", &self.version)] {
            super::check_release_name(value)
                .map_err(|why| bad(format!("the bundle {what} {value:?} {why}")))?;
        }
        let mut seen = std::collections::HashSet::with_capacity(self.entries.len());
        let mut total: u64 = 0;
        let mut reported: usize = 0;
        for e in &self.entries {
            super::check_entry_path(&e.path)
                .map_err(|why| bad(format!("entry {:?}: {why}", e.path)))?;
            if [INDEX_PATH, INDEX_SIG_PATH].contains(&e.path.as_str())
                || !seen.insert(e.path.as_str())
            {
                return Err(bad(format!("it lists `{}` twice", e.path)));
            }
            if e.in_place && (self.base.is_none() || !e.kind.may_be_in_place()) {
                return Err(bad(format!(
                    "entry `{}` of kind {} is marked in place{}",
                    e.path,
                    e.kind.as_str(),
                    if self.base.is_none() {
                        " but the bundle is not a delta"
                    } else {
                        ", which a delta never leaves out"
                    }
                )));
            }
            if e.artifacts.iter().any(|&a| a >= self.artifacts.len()) {
                return Err(bad(format!("entry `{}` names an unknown artifact", e.path)));
            }
            // Each artifact once, in order: a list cannot repeat itself to blow up reports.
            if e.artifacts.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!(
                    "entry `{}` lists its artifacts out of order or twice",
                    e.path
                )));
            }
            // What a report that lists every artifact's entries would hold.
            reported =
                reported.saturating_add((e.path.len() + 32).saturating_mul(e.artifacts.len()));
            if reported > MAX_INDEX_BYTES as usize {
                return Err(bad(format!(
                    "more artifact references than any bundle makes (at `{}`)",
                    e.path
                )));
            }
            total = total.checked_add(e.size).ok_or_else(|| {
                bad(format!(
                    "the entry sizes overflow a 64-bit count at `{}`",
                    e.path
                ))
            })?;
        }
        if let Some((dir, inside)) =
            super::find_path_clash(self.entries.iter().map(|e| e.path.as_str()))
        {
            return Err(bad(format!(
                "`{dir}` is a file and also the directory of `{inside}`"
            )));
        }
        Ok(())
    }

    /// Sum of all entry sizes (what install writes, what verify hashes); cannot overflow
    /// once the index validated.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.size))
    }

    /// Entries a delta left out (and their bytes): what install expects in place.
    pub fn in_place(&self) -> (usize, u64) {
        self.entries
            .iter()
            .filter(|e| e.in_place)
            .fold((0, 0u64), |(n, b), e| (n + 1, b.saturating_add(e.size)))
    }

    /// The entries of every artifact, in one pass (artifact `i` → its entries' paths).
    pub fn entries_by_artifact(&self) -> Vec<Vec<&str>> {
        let mut out = vec![Vec::new(); self.artifacts.len()];
        for e in &self.entries {
            for &a in &e.artifacts {
                if let Some(list) = out.get_mut(a) {
                    list.push(e.path.as_str());
                }
            }
        }
        out
    }
}

/// The first entry or artifact kind this tool does not know, for an index that failed to
/// parse (a bundle from a newer tool is not a damaged one: SPEC §3).
fn unknown_kind(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Kinds {
        #[serde(default)]
        artifacts: Vec<KindOnly>,
        #[serde(default)]
        entries: Vec<KindOnly>,
    }
    #[derive(Deserialize)]
    struct KindOnly {
        kind: String,
    }
    let kinds: Kinds = serde_json::from_slice(bytes).ok()?;
    kinds
        .entries
        .into_iter()
        .chain(kinds.artifacts)
        .map(|k| k.kind)
        .find(|k| {
            serde_json::from_value::<EntryKind>(serde_json::Value::String(k.clone())).is_err()
        })
}
