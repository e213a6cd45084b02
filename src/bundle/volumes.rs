//! The bytes of a bundle as one logical stream, which may come from several volume files
//! (`x.bundle.tar.zst.000`, `.001`, …) as well as from one: readers never know the difference.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Where a bundle's bytes live.
#[derive(Clone, Debug)]
pub struct BundleSource {
    volumes: Vec<(PathBuf, u64)>,
}

impl BundleSource {
    /// Opens `path`, or its volumes `path.000`, `path.001`, … when `path` itself is absent.
    pub fn open(path: &Path) -> Result<Self> {
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(Error::Usage(format!(
                    "{}: not a bundle file",
                    path.display()
                )));
            }
            return Ok(BundleSource {
                volumes: vec![(path.to_path_buf(), meta.len())],
            });
        }
        let mut volumes = Vec::new();
        for n in 0.. {
            let vol = PathBuf::from(format!("{}.{n:03}", path.display()));
            match std::fs::metadata(&vol) {
                Ok(meta) => volumes.push((vol, meta.len())),
                Err(_) => break,
            }
        }
        // A volume after a gap means the one in the gap is missing, not that the bundle
        // ends there.
        let last = last_volume_number(path);
        if let Some(last) = last
            && last >= volumes.len()
        {
            return Err(Error::Runtime(format!(
                "volume {}.{:03} is missing (volumes up to .{last:03} are present)",
                path.display(),
                volumes.len()
            ))
            .with_hint(
                "copy the missing volume next to the others and run again; nothing was read",
            ));
        }
        if volumes.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no such bundle (nor volumes {}.000, …)",
                path.display(),
                path.display()
            )));
        }
        Ok(BundleSource { volumes })
    }

    /// Volume files in order, with their sizes.
    pub fn volumes(&self) -> &[(PathBuf, u64)] {
        &self.volumes
    }

    /// Total bytes over all volumes.
    pub fn total_len(&self) -> u64 {
        self.volumes.iter().map(|(_, n)| n).sum()
    }

    /// A fresh reader over the concatenated volumes, positioned at 0.
    pub fn reader(&self) -> Result<ConcatReader> {
        let first = &self.volumes[0].0;
        File::open(first).at("cannot open bundle", first)?;
        Ok(ConcatReader {
            volumes: self.volumes.clone(),
            pos: 0,
            open: None,
        })
    }
}

/// The highest `NNN` of the `BASE.NNN` files beside `base`, if any.
fn last_volume_number(base: &Path) -> Option<usize> {
    let dir = match base.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!("{}.", base.file_name()?.to_string_lossy());
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let digits = name.strip_prefix(&prefix)?;
            (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .max()
}

/// `Read + Seek` over the concatenation of volume files; one file is open at a time.
pub struct ConcatReader {
    volumes: Vec<(PathBuf, u64)>,
    pos: u64,
    open: Option<(usize, File)>,
}

impl ConcatReader {
    fn locate(&self, pos: u64) -> Option<(usize, u64)> {
        let mut start = 0;
        for (i, (_, len)) in self.volumes.iter().enumerate() {
            if pos < start + len {
                return Some((i, pos - start));
            }
            start += len;
        }
        None
    }
}

impl Read for ConcatReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some((vol, offset)) = self.locate(self.pos) else {
            return Ok(0);
        };
        if self.open.as_ref().is_none_or(|(i, _)| *i != vol) {
            let file = File::open(&self.volumes[vol].0)?;
            self.open = Some((vol, file));
        }
        let (_, file) = self.open.as_mut().expect("opened above");
        file.seek(SeekFrom::Start(offset))?;
        let room = (self.volumes[vol].1 - offset).min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..room])?;
        if n == 0 && room > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being read", self.volumes[vol].0.display()),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ConcatReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let total: u64 = self.volumes.iter().map(|(_, n)| n).sum();
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => total.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}
