//! `bundle inspect`: what a bundle holds and who signed it, read from the index at the
//! front (and the seek table at the end), so it is instant on any size. The JSON form is a
//! stable interface (SPEC §6): fields may be added, never renamed or removed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bundle::index::{BaseBundle, Index};
use crate::bundle::reader::read_unverified;
use crate::bundle::volumes::BundleSource;
use crate::digest::Sha256Digest;
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub created: String,
    pub tool: String,
    pub signed_by: SignedBy,
    pub manifest_sha256: Sha256Digest,
    pub index_sha256: Sha256Digest,
    pub volumes: Vec<Volume>,
    /// The parity volumes the volume list names (`create --parity`), present or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parity_volumes: Vec<ParityVolume>,
    /// The volume list of a split bundle (`NAME.volumes`, signed beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_list: Option<String>,
    pub compression: Compression,
    pub totals: Totals,
    pub kinds: BTreeMap<String, Totals>,
    /// Set on a delta: what it was made against and what it leaves out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaReport>,
    pub artifacts: Vec<ArtifactReport>,
}

#[derive(Debug, Serialize)]
pub struct DeltaReport {
    /// `site` (a site export), `bundle` or `index`.
    pub from: String,
    pub base_sha256: Sha256Digest,
    pub bundles: Vec<BaseBundle>,
    /// Entries left out (expected in place at the site) and their bytes: what the delta
    /// saves.
    pub in_place_entries: usize,
    pub in_place_bytes: u64,
    /// The content bytes the delta does carry.
    pub carried_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct SignedBy {
    pub key_id: String,
    pub trusted_comment: String,
    /// Always false here: inspect does not check the signature (use `bundle verify`).
    pub verified: bool,
}

#[derive(Debug, Serialize)]
pub struct Volume {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct ParityVolume {
    pub path: String,
    pub size: u64,
    /// Whether it is beside the list (rebuilding needs it only when data volumes are bad).
    pub present: bool,
}

#[derive(Debug, Serialize)]
pub struct Compression {
    pub seekable: bool,
    pub frames: Option<usize>,
    /// With `--wait` the seek table (on the last medium) is not looked at.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_read: bool,
}

#[derive(Debug, Serialize, Default)]
pub struct Totals {
    pub entries: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ArtifactReport {
    pub kind: String,
    pub source: String,
    pub dest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    pub size: u64,
    pub entries: Vec<String>,
    /// Dependencies an apt repository leaves to the site's OS mirror.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<String>,
}

pub fn inspect(source: &BundleSource) -> Result<InspectReport> {
    let (head, table) = read_unverified(source)?;
    let index = Index::from_signed_bytes(&head.index_bytes)?;
    let mut kinds: BTreeMap<String, Totals> = BTreeMap::new();
    for e in &index.entries {
        let t = kinds.entry(e.kind.as_str().to_string()).or_default();
        t.entries += 1;
        t.bytes = t.bytes.saturating_add(e.size);
    }
    let artifacts = index
        .artifacts
        .iter()
        .zip(index.entries_by_artifact())
        .map(|(a, entries)| ArtifactReport {
            kind: a.kind.as_str().to_string(),
            source: a.source.clone(),
            dest: a.dest.clone(),
            sha256: a.sha256,
            size: a.size,
            entries: entries.into_iter().map(String::from).collect(),
            external: a.external.clone(),
        })
        .collect();
    Ok(InspectReport {
        format: index.format,
        name: index.name.clone(),
        version: index.version.clone(),
        created: index.created.clone(),
        tool: index.tool.clone(),
        signed_by: SignedBy {
            key_id: head.signature.key_id.to_string(),
            trusted_comment: head.signature.trusted_comment.clone(),
            verified: false,
        },
        manifest_sha256: index.manifest_sha256,
        index_sha256: Sha256Digest::of_bytes(&head.index_bytes),
        volumes: source
            .volumes()
            .iter()
            .map(|(p, n)| Volume {
                path: p.display().to_string(),
                size: *n,
            })
            .collect(),
        parity_volumes: source
            .parity_paths()
            .into_iter()
            .map(|p| ParityVolume {
                present: p.is_file(),
                path: p.display().to_string(),
                size: source.listed().map_or(0, |l| l.parity_size()),
            })
            .collect(),
        volume_list: source.volume_list().map(|p| p.display().to_string()),
        compression: Compression {
            seekable: table.is_some(),
            not_read: source.in_order_only(),
            frames: table.map(|t| t.len()),
        },
        totals: Totals {
            entries: index.entries.len(),
            bytes: index.total_bytes(),
        },
        kinds,
        delta: index.base.as_ref().map(|base| {
            let (in_place_entries, in_place_bytes) = index.in_place();
            DeltaReport {
                from: base.from.clone(),
                base_sha256: base.sha256,
                bundles: base.bundles.clone(),
                in_place_entries,
                in_place_bytes,
                carried_bytes: index.total_bytes() - in_place_bytes,
            }
        }),
        artifacts,
    })
}

impl InspectReport {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "bundle    {} {}", self.name, self.version);
        let _ = writeln!(s, "created   {} by {}", self.created, self.tool);
        let _ = writeln!(
            s,
            "signed by key {} (not checked here; run `bundle verify --pubkey`)",
            self.signed_by.key_id
        );
        let _ = writeln!(s, "trusted   {}", self.signed_by.trusted_comment);
        let _ = writeln!(s, "manifest  sha256:{}", self.manifest_sha256);
        for v in &self.volumes {
            let _ = writeln!(s, "volume    {} ({})", v.path, human_bytes(v.size));
        }
        for v in &self.parity_volumes {
            let _ = writeln!(
                s,
                "parity    {} ({}{})",
                v.path,
                human_bytes(v.size),
                if v.present { "" } else { ", not present" }
            );
        }
        if let Some(list) = &self.volume_list {
            let _ = writeln!(
                s,
                "volumes   {} of them, listed in {list} (check each stick: minisign -Vm {list} -p site.pub && sha256sum -c --ignore-missing {list})",
                self.volumes.len()
            );
        }
        let _ = writeln!(
            s,
            "stream    {}",
            match self.compression.frames {
                Some(n) => format!("seekable, {n} zstd frames"),
                None if self.compression.not_read =>
                    "seek table not read (--wait: it is on the last medium)".into(),
                None =>
                    "not seekable: no seek table (recompressed by stock zstd, or cut short)".into(),
            }
        );
        let _ = writeln!(
            s,
            "totals    {} entries, {}",
            self.totals.entries,
            human_bytes(self.totals.bytes)
        );
        for (kind, t) in &self.kinds {
            let _ = writeln!(
                s,
                "  {kind:<9} {} entries, {}",
                t.entries,
                human_bytes(t.bytes)
            );
        }
        if let Some(d) = &self.delta {
            let bundles: Vec<String> = d
                .bundles
                .iter()
                .map(|b| format!("{} {}", b.name, b.version))
                .collect();
            let _ = writeln!(
                s,
                "delta     made against {} {} (sha256:{}): carries {}, leaves out {} entries ({}) expected in place",
                match d.from.as_str() {
                    "site" => "the site export of",
                    _ => "the bundle",
                },
                if bundles.is_empty() {
                    "nothing".to_string()
                } else {
                    bundles.join(", ")
                },
                d.base_sha256,
                human_bytes(d.carried_bytes),
                d.in_place_entries,
                human_bytes(d.in_place_bytes)
            );
        }
        let _ = writeln!(s, "artifacts");
        for a in &self.artifacts {
            let _ = writeln!(
                s,
                "  {:<5} {:>10}  {}\n        -> {}",
                a.kind,
                human_bytes(a.size),
                a.source,
                a.dest
            );
            // An image's source names its upstream digest; the carried one may differ
            // (an index filtered to some platforms).
            if a.kind == "image"
                && let Some(carried) = a.sha256
            {
                let _ = writeln!(s, "        carried as sha256:{carried}");
            }
            for e in &a.external {
                let _ = writeln!(s, "        expected from the site's OS mirror: {e}");
            }
        }
        s
    }
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
