//! Where `create` writes a bundle's compressed bytes: one file, or volumes of at most
//! `--split-size` bytes each (`NAME.000`, `.001`, …, SPEC §3), filled one after the other as
//! the stream is produced (the connected machine never needs room for the unsplit bundle
//! beside its volumes). Each volume is hashed as it is written and synced when full; they
//! reach their final names only when the whole bundle is written and signed.
//!
//! The signed volume list (`NAME.volumes`) is `sha256sum` output, so each stick is checked
//! on arrival with stock tools: `minisign -Vm NAME.volumes -p site.pub && sha256sum -c
//! --ignore-missing NAME.volumes`. Its first line is a comment `sha256sum` skips, which
//! records what a reader needs beyond the sums: the split size and total length.

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

/// The name of data volume `n` of `base` (`NAME.bundle.tar.zst.003`).
pub fn volume_path(base: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n:03}", base.display()))
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
/// relative, as the volumes sit beside it).
pub fn volume_list(split: u64, volumes: &[(String, Sha256Digest, u64)]) -> String {
    let total: u64 = volumes.iter().map(|(_, _, n)| n).sum();
    let mut out = format!(
        "{LIST_MAGIC} split-size={split} data={} total={total}\n",
        volumes.len()
    );
    for (name, sha256, _) in volumes {
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
}

impl VolumeList {
    pub fn parse(text: &str) -> Result<VolumeList, String> {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let fields = header
            .strip_prefix(LIST_MAGIC)
            .ok_or("it does not start with the airgap-bundle volume list header")?;
        let mut split = None;
        let mut data = None;
        let mut total = None;
        for field in fields.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .ok_or(format!("bad header field `{field}`"))?;
            let v: u64 = v
                .parse()
                .map_err(|_| format!("bad header field `{field}`"))?;
            match k {
                "split-size" => split = Some(v),
                "data" => data = Some(v),
                "total" => total = Some(v),
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
        let mut volumes = Vec::new();
        for line in lines.filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (hex, name) = line
                .split_once("  ")
                .ok_or(format!("`{line}` is not a sha256sum line"))?;
            let sha256: Sha256Digest = hex.parse().map_err(|e| format!("`{line}`: {e}"))?;
            if name.contains('/') || name.starts_with('.') {
                return Err(format!("`{name}` is not a volume name"));
            }
            volumes.push((name.to_string(), sha256));
        }
        if volumes.len() as u64 != count || count > 100_000 {
            return Err(format!(
                "the header says {count} data volumes, the list has {}",
                volumes.len()
            ));
        }
        Ok(VolumeList {
            split,
            total,
            data: volumes,
        })
    }

    /// The size data volume `n` must have.
    pub fn size_of(&self, n: usize) -> u64 {
        let start = self.split * n as u64;
        self.total.saturating_sub(start).min(self.split)
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
        let text = volume_list(4, &listed);
        let parsed = VolumeList::parse(&text).unwrap();
        assert_eq!(parsed.total, 10);
        assert_eq!(parsed.data.len(), 3);
        assert_eq!(parsed.size_of(2), 2);
        assert!(VolumeList::parse("nonsense").is_err());
        let lying = text.replace("total=10", "total=40");
        assert!(VolumeList::parse(&lying).unwrap_err().contains("add up"));
    }
}
