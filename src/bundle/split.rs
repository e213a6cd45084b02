//! Where `create` writes a bundle's compressed bytes: one file, or volumes of at most
//! `--split-size` bytes each (`NAME.000`, `.001`, …, SPEC §3), filled one after the other as
//! the stream is produced (the connected machine never needs room for the unsplit bundle
//! beside its volumes). Each volume is hashed as it is written and synced when full; they
//! reach their final names only when the whole bundle is written and signed.
//!
//! The signed volume list (`NAME.volumes`) is `sha256sum` output, so each stick is checked
//! on arrival with stock tools: `minisign -Vm NAME.volumes -p site.pub && sha256sum -c
//! --ignore-missing NAME.volumes`. Its first line is a comment `sha256sum` skips, which
//! records what a reader needs beyond the sums: the split size and total length, and with
//! `--parity N` the parity volumes' count and stripe width (their lines follow the data
//! volumes' lines, see [`super::parity`]).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::digest::Sha256Digest;

/// The comment that opens a volume list.
pub const LIST_MAGIC: &str = "# airgap-bundle volumes v1";

/// Parses `--split-size`: bytes, or a number with K/M/G/T (powers of 1024), e.g. `700M`,
/// `4G`. At least 1 MiB, so that a bundle does not become millions of files.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim_end_matches(['B', 'b', 'i'])),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or a number with K, M, G or T)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit (K, M, G or T, powers of 1024)"
            ));
        }
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("`{s}` is below the smallest volume size, 1M"));
    }
    Ok(bytes)
}

/// `--split-size` and `--parity` together: how `create` cuts the compressed stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    /// Bytes per volume (data and parity alike).
    pub size: u64,
    /// Reed–Solomon parity volumes written across the data volumes (0: none).
    pub parity: usize,
}

impl Split {
    /// Checks the combination: a parity volume is as long as the first data volume rounded
    /// up to an even length (the coder works on 16-bit symbols), so with parity the size
    /// must be even for the parity volumes to fit it too (`4G - 1` for FAT32 is not: use
    /// `4294967294`).
    pub fn new(size: u64, parity: usize) -> Result<Split, String> {
        if parity > super::parity::MAX_PARITY {
            return Err(format!(
                "--parity {parity}: at most {} parity volumes",
                super::parity::MAX_PARITY
            ));
        }
        if parity > 0 && size % 2 == 1 {
            return Err(format!(
                "--split-size {size} is odd: with --parity the size must be even (parity volumes are an even number of bytes), e.g. {}",
                size - 1
            ));
        }
        Ok(Split { size, parity })
    }
}

/// The name of data volume `n` of `base` (`NAME.bundle.tar.zst.003`).
pub fn volume_path(base: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n:03}", base.display()))
}

/// The name of parity volume `j` of `base` (`NAME.bundle.tar.zst.p01`).
pub fn parity_path(base: &Path, j: usize) -> PathBuf {
    PathBuf::from(format!("{}.p{j:02}", base.display()))
}

/// `.p00` … `.p254`: the suffix of parity volume `j`.
pub fn parity_suffix(j: usize) -> String {
    format!(".p{j:02}")
}

/// The signed volume list beside `base`.
pub fn list_path(base: &Path) -> PathBuf {
    PathBuf::from(format!("{}.volumes", base.display()))
}

/// One finished volume, under its temporary name until the bundle is complete.
pub struct WrittenVolume {
    pub tmp: NamedTempFile,
    pub sha256: Sha256Digest,
    pub size: u64,
}

struct Current {
    tmp: NamedTempFile,
    hasher: Sha256,
    size: u64,
}

/// The compressed bytes' destination: one temporary file, or one per volume.
pub struct VolumeOutput {
    dir: PathBuf,
    prefix: String,
    split: Option<u64>,
    done: Vec<WrittenVolume>,
    current: Option<Current>,
}

impl VolumeOutput {
    /// Temporary files named `.{file_name}.…partial` in `dir`; `split` bytes per volume.
    pub fn new(dir: &Path, file_name: &str, split: Option<u64>) -> Self {
        VolumeOutput {
            dir: dir.to_path_buf(),
            prefix: format!(".{file_name}."),
            split,
            done: Vec::new(),
            current: None,
        }
    }

    fn open(&mut self) -> io::Result<&mut Current> {
        if self.current.is_none() {
            let tmp = tempfile::Builder::new()
                .prefix(&format!("{}{:03}.", self.prefix, self.done.len()))
                .suffix(".partial")
                .tempfile_in(&self.dir)?;
            self.current = Some(Current {
                tmp,
                hasher: Sha256::new(),
                size: 0,
            });
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    /// Syncs the current volume and sets it aside.
    fn close_current(&mut self) -> io::Result<()> {
        if let Some(c) = self.current.take() {
            c.tmp.as_file().sync_all()?;
            self.done.push(WrittenVolume {
                tmp: c.tmp,
                sha256: Sha256Digest::from_hasher(c.hasher),
                size: c.size,
            });
        }
        Ok(())
    }

    /// The volumes, each synced. A bundle is never empty, so there is at least one.
    pub fn finish(mut self) -> io::Result<Vec<WrittenVolume>> {
        if self.current.is_none() && self.done.is_empty() {
            self.open()?;
        }
        self.close_current()?;
        Ok(self.done)
    }
}

impl Write for VolumeOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let split = self.split;
        let current = self.open()?;
        let room = split.map_or(buf.len() as u64, |s| s - current.size);
        let n = (buf.len() as u64).min(room) as usize;
        let n = current.tmp.as_file_mut().write(&buf[..n])?;
        current.hasher.update(&buf[..n]);
        current.size += n as u64;
        if split.is_some_and(|s| current.size == s) {
            self.close_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The volume list: the header comment, then one `sha256sum` line per volume (names
/// relative, as the volumes sit beside it), the parity volumes' lines after the data
/// volumes'. A list without parity is byte for byte what earlier versions wrote.
///
/// `index` is the sha256 of the bundle's signed `index.json`: a reader whose streamed bundle
/// verified against that index has read exactly the listed bundle's content, so it need
/// not hash the volumes again (they are hashed only to name the bad ones on a failure).
pub fn volume_list(
    split: u64,
    volumes: &[(String, Sha256Digest, u64)],
    parity: &[(String, Sha256Digest)],
    shard: usize,
    index: Option<&Sha256Digest>,
) -> String {
    let total: u64 = volumes.iter().map(|(_, _, n)| n).sum();
    let mut out = format!(
        "{LIST_MAGIC} split-size={split} data={} total={total}",
        volumes.len()
    );
    if !parity.is_empty() {
        out.push_str(&format!(" parity={} shard={shard}", parity.len()));
    }
    if let Some(index) = index {
        out.push_str(&format!(" index={}", index.hex()));
    }
    out.push('\n');
    for (name, sha256) in volumes
        .iter()
        .map(|(name, sha256, _)| (name, sha256))
        .chain(parity.iter().map(|(name, sha256)| (name, sha256)))
    {
        out.push_str(&format!("{}  {name}\n", sha256.hex()));
    }
    out
}

/// A parsed volume list.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeList {
    pub split: u64,
    pub total: u64,
    /// File name and sha256 of each data volume, in order.
    pub data: Vec<(String, Sha256Digest)>,
    /// File name and sha256 of each parity volume (`NAME.p00`, …), in order; empty when
    /// the bundle has none.
    pub parity: Vec<(String, Sha256Digest)>,
    /// The parity stripe width: bytes of each volume coded together (0 without parity).
    pub shard: usize,
    /// The sha256 of the bundle's signed `index.json` (lists written before it was recorded
    /// have none).
    pub index: Option<Sha256Digest>,
}

/// Most data volumes a list may name (a line each).
const MAX_DATA_VOLUMES: u64 = 100_000;

impl VolumeList {
    /// Parses a list strictly: a crafted one (read before its signature is checked) can
    /// name no path outside the directory, no more than [`MAX_DATA_VOLUMES`] data and
    /// [`super::parity::MAX_PARITY`] parity volumes, and no parity geometry the coder
    /// cannot handle in bounded memory.
    pub fn parse(text: &str) -> Result<VolumeList, String> {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let fields = header
            .strip_prefix(LIST_MAGIC)
            .ok_or("it does not start with the airgap-bundle volume list header")?;
        let mut split = None;
        let mut data = None;
        let mut total = None;
        let mut parity = None;
        let mut shard = None;
        let mut index = None;
        for field in fields.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .ok_or(format!("bad header field `{field}`"))?;
            if k == "index" {
                let digest: Sha256Digest = v
                    .parse()
                    .map_err(|_| format!("bad header field `{field}`"))?;
                index = Some(digest);
                continue;
            }
            let v: u64 = v
                .parse()
                .map_err(|_| format!("bad header field `{field}`"))?;
            match k {
                "split-size" => split = Some(v),
                "data" => data = Some(v),
                "total" => total = Some(v),
                "parity" => parity = Some(v),
                "shard" => shard = Some(v),
                _ => {}
            }
        }
        let (Some(split), Some(count), Some(total)) = (split, data, total) else {
            return Err("the header lacks split-size, data or total".into());
        };
        if split == 0
            || total > split.saturating_mul(count)
            || (count > 0 && total <= split.saturating_mul(count - 1))
        {
            return Err("the header's sizes do not add up".into());
        }
        if count > MAX_DATA_VOLUMES {
            return Err(format!("the header says {count} data volumes, too many"));
        }
        let parity_count = parity.unwrap_or(0);
        let shard = match (parity_count, shard) {
            (0, None) => 0,
            (0, Some(_)) => return Err("the header gives a shard size without parity".into()),
            (n, Some(c)) => {
                super::parity::check_geometry(count, n, c)?;
                c as usize
            }
            (_, None) => return Err("the header gives parity without a shard size".into()),
        };
        let mut volumes = Vec::new();
        for line in lines.filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            if volumes.len() as u64 >= count + parity_count {
                return Err(format!(
                    "the header says {count} data and {parity_count} parity volumes, the list has more"
                ));
            }
            let (hex, name) = line
                .split_once("  ")
                .ok_or(format!("`{line}` is not a sha256sum line"))?;
            let sha256: Sha256Digest = hex.parse().map_err(|e| format!("`{line}`: {e}"))?;
            if name.contains('/') || name.starts_with('.') || name.is_empty() {
                return Err(format!("`{name}` is not a volume name"));
            }
            volumes.push((name.to_string(), sha256));
        }
        if volumes.len() as u64 != count + parity_count {
            return Err(format!(
                "the header says {count} data and {parity_count} parity volumes, the list has {}",
                volumes.len()
            ));
        }
        let parity = volumes.split_off(count as usize);
        if !parity.is_empty() {
            // Parity volumes are named after the first data volume, in order.
            let stem = volumes
                .first()
                .and_then(|(name, _)| name.strip_suffix(".000"))
                .ok_or("a list with parity must name its first data volume `….000`")?;
            for (j, (name, _)) in parity.iter().enumerate() {
                let want = format!("{stem}{}", parity_suffix(j));
                if *name != want {
                    return Err(format!("parity volume {j} is `{name}`, expected `{want}`"));
                }
            }
        }
        Ok(VolumeList {
            split,
            total,
            data: volumes,
            parity,
            shard,
            index,
        })
    }

    /// The size data volume `n` must have.
    pub fn size_of(&self, n: usize) -> u64 {
        let start = self.split * n as u64;
        self.total.saturating_sub(start).min(self.split)
    }

    /// The size every parity volume must have: the first (largest) data volume's, rounded
    /// up to even.
    pub fn parity_size(&self) -> u64 {
        super::parity::parity_len(self.size_of(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("2097152").unwrap(), 2 << 20);
        assert!(parse_size("10K").unwrap_err().contains("smallest"));
        assert!(parse_size("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_size("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn volumes_fill_in_turn_and_the_list_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = VolumeOutput::new(dir.path(), "b", Some(4));
        out.write_all(b"0123456789").unwrap();
        let volumes = out.finish().unwrap();
        let sizes: Vec<u64> = volumes.iter().map(|v| v.size).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(volumes[1].sha256, Sha256Digest::of_bytes(b"4567"));
        let listed: Vec<(String, Sha256Digest, u64)> = volumes
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("b.{i:03}"), v.sha256, v.size))
            .collect();
        let text = volume_list(4, &listed, &[], 0, None);
        let parsed = VolumeList::parse(&text).unwrap();
        assert_eq!(parsed.total, 10);
        assert_eq!(parsed.data.len(), 3);
        assert_eq!(parsed.size_of(2), 2);
        assert!(VolumeList::parse("nonsense").is_err());
        let lying = text.replace("total=10", "total=40");
        assert!(VolumeList::parse(&lying).unwrap_err().contains("add up"));
        assert!(parsed.parity.is_empty());
        assert!(!text.contains("parity"), "{text}");
    }

    #[test]
    fn parity_lines_follow_the_data_lines_and_are_parsed_strictly() {
        let d = |b: &[u8]| Sha256Digest::of_bytes(b);
        let listed = vec![
            ("b.000".to_string(), d(b"0"), 4),
            ("b.001".to_string(), d(b"1"), 2),
        ];
        let parity = vec![
            ("b.p00".to_string(), d(b"p0")),
            ("b.p01".to_string(), d(b"p1")),
        ];
        let text = volume_list(4, &listed, &parity, 64, None);
        assert!(
            text.starts_with(&format!(
                "{LIST_MAGIC} split-size=4 data=2 total=6 parity=2 shard=64\n"
            )),
            "{text}"
        );
        let parsed = VolumeList::parse(&text).unwrap();
        assert_eq!(parsed.data.len(), 2);
        assert_eq!(parsed.parity, parity);
        assert_eq!(parsed.shard, 64);
        assert_eq!(parsed.parity_size(), 4);
        let bad = |from: &str, to: &str| {
            assert!(text.contains(from));
            VolumeList::parse(&text.replace(from, to)).unwrap_err()
        };
        assert!(bad("b.p01", "b.p02").contains("expected `b.p01`"));
        assert!(bad("b.p01", "../b.p01").contains("not a volume name"));
        assert!(bad("b.p00", "x/b.p00").contains("not a volume name"));
        assert!(bad("parity=2", "parity=3").contains("the list has 4"));
        assert!(bad("parity=2", "parity=1").contains("has more"));
        assert!(bad("parity=2", "parity=99999999").contains("parity"));
        assert!(bad(" shard=64", "").contains("shard"));
        assert!(bad("shard=64", "shard=63").contains("even"));
        assert!(bad("shard=64", "shard=99999999999").contains("shard"));
        // Parity never reorders with the data: a parity line among them is refused.
        let swapped = text
            .replace("  b.001\n", "  b.tmp\n")
            .replace("  b.p00\n", "  b.001\n");
        assert!(VolumeList::parse(&swapped).is_err());
    }

    #[test]
    fn parity_needs_an_even_split_size() {
        assert_eq!(Split::new(1 << 20, 2).unwrap().parity, 2);
        assert!(Split::new((1 << 20) + 1, 2).unwrap_err().contains("odd"));
        assert!(Split::new((1 << 20) + 1, 0).is_ok());
        assert!(Split::new(1 << 20, 256).is_err());
    }
}
