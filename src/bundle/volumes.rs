//! The bytes of a bundle as one logical stream, which may come from several volume files
//! (`x.bundle.tar.zst.000`, `.001`, …) as well as from one: readers never know the difference.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::media::{Media, VolumeSupplier};
use super::signing::{PublicKey, Signature};
use super::split::VolumeList;
use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};

/// Where a bundle's bytes live.
#[derive(Clone, Debug)]
pub struct BundleSource {
    volumes: Vec<(PathBuf, u64)>,
    /// The volume list beside split volumes (`NAME.volumes`), its bytes and where it is.
    list: Option<ListedVolumes>,
    /// Which volumes a reader hashed whole, in order, and found as listed.
    matched: Arc<Mutex<Vec<bool>>>,
    /// With `--wait`: volumes come one at a time from a swapped medium, each asked for
    /// before it is opened (so the stream is read strictly in order).
    media: Option<Arc<Mutex<Media>>>,
    /// With parity: the data volumes `open` found missing or the wrong size, to be rebuilt
    /// (see [`super::parity::read_with_parity`]) before anything reads them.
    unfit: Vec<(usize, Unfit)>,
    /// Each data volume hashed against the signed list, once, on the failure path (shared
    /// by the message naming bad volumes and the parity rebuild).
    verdicts: Arc<OnceLock<Vec<Verdict>>>,
}

/// A data volume against the signed volume list.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Good,
    Differs,
    Unreadable(String),
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::Unreadable("not checked".into())
    }
}

/// What `open` found wrong with a listed data volume.
#[derive(Clone, Debug, PartialEq)]
pub enum Unfit {
    Missing,
    /// Its size on disk.
    Size(u64),
}

#[derive(Clone, Debug)]
struct ListedVolumes {
    path: PathBuf,
    text: Vec<u8>,
    parsed: VolumeList,
}

/// `NAME.bundle.tar.zst.000` names the bundle `NAME.bundle.tar.zst`.
fn base_of(path: &Path) -> Option<PathBuf> {
    let s = path.to_str()?;
    let base = s.strip_suffix(".000")?;
    (!Path::new(base).exists()).then(|| PathBuf::from(base))
}

/// Upper bound on a volume list (a line per volume).
const MAX_LIST_BYTES: u64 = 16 << 20;

impl BundleSource {
    /// Opens `path`, or its volumes `path.000`, `path.001`, … when `path` itself is absent
    /// (`path` may also name the first volume). With the signed volume list beside them, every
    /// listed volume must be there (exit 1 naming a missing one) with the size the list
    /// gives it (exit 3 naming a truncated or wrong one), before anything is read. With
    /// parity volumes in the list, such volumes are only recorded ([`BundleSource::unfit`]):
    /// [`super::parity::read_with_parity`] rebuilds them, and [`BundleSource::reader`]
    /// refuses with the same errors until then.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(base) = base_of(path) {
            return BundleSource::open(&base);
        }
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(Error::Usage(format!(
                    "{}: not a bundle file",
                    path.display()
                )));
            }
            return Ok(BundleSource {
                volumes: vec![(path.to_path_buf(), meta.len())],
                list: None,
                matched: Arc::default(),
                media: None,
                unfit: Vec::new(),
                verdicts: Default::default(),
            });
        }
        let list_path = super::split::list_path(path);
        if list_path.is_file() {
            let (text, parsed) = read_list(&list_path)?;
            return BundleSource::from_list(path, list_path, text, parsed);
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
        Ok(BundleSource {
            volumes,
            list: None,
            matched: Arc::default(),
            media: None,
            unfit: Vec::new(),
            verdicts: Default::default(),
        })
    }

    fn from_list(base: &Path, path: PathBuf, text: Vec<u8>, parsed: VolumeList) -> Result<Self> {
        let dir = match base.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut volumes = Vec::with_capacity(parsed.data.len());
        let mut unfit = Vec::new();
        for (n, (name, _)) in parsed.data.iter().enumerate() {
            let vol = dir.join(name);
            let want = parsed.size_of(n);
            match std::fs::metadata(&vol) {
                Ok(meta) if meta.is_file() => {
                    if meta.len() != want {
                        unfit.push((n, Unfit::Size(meta.len())));
                    }
                }
                _ => unfit.push((n, Unfit::Missing)),
            }
            volumes.push((vol, want));
        }
        let source = BundleSource {
            matched: Arc::new(Mutex::new(vec![false; volumes.len()])),
            volumes,
            list: Some(ListedVolumes { path, text, parsed }),
            media: None,
            unfit,
            verdicts: Default::default(),
        };
        // Without parity nothing can stand in for a bad volume: refuse before any read.
        if !source.unfit.is_empty() && !source.has_parity() {
            return Err(source.unfit_error());
        }
        Ok(source)
    }

    /// The error for the volumes `open` found missing or the wrong size: exit 3 naming the
    /// first of the wrong size, else exit 1 naming the missing ones.
    pub fn unfit_error(&self) -> Error {
        let parity_hint = if self.has_parity() {
            " (`verify` and `install` rebuild them from the parity volumes)"
        } else {
            ""
        };
        if let Some((n, Unfit::Size(got))) =
            self.unfit.iter().find(|(_, u)| matches!(u, Unfit::Size(_)))
        {
            let (vol, want) = &self.volumes[*n];
            return Error::Verify(format!(
                "volume {} is {got} bytes, the volume list says {want} ({}); nothing was read",
                vol.display(),
                if got < want { "truncated" } else { "not this bundle's volume" }
            ))
            .with_hint(format!("copy this volume again from the connected side and check it with `sha256sum -c --ignore-missing NAME.volumes`{parity_hint}"));
        }
        let names: Vec<String> = self
            .unfit
            .iter()
            .map(|(n, _)| self.volumes[*n].0.display().to_string())
            .collect();
        Error::Runtime(format!(
            "volume{} {} {} missing ({} of {} present)",
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" },
            self.volumes.len() - names.len(),
            self.volumes.len()
        ))
        .with_hint(format!(
            "copy the missing volumes next to the others and run again; nothing was read{parity_hint}"
        ))
    }

    fn has_parity(&self) -> bool {
        self.list
            .as_ref()
            .is_some_and(|l| !l.parsed.parity.is_empty())
    }

    /// The parsed volume list (not yet checked against its signature unless
    /// [`BundleSource::check_volume_list`] said so).
    pub fn listed(&self) -> Option<&VolumeList> {
        self.list.as_ref().map(|l| &l.parsed)
    }

    /// The data volumes `open` found missing or the wrong size (only with parity).
    pub fn unfit(&self) -> &[(usize, Unfit)] {
        &self.unfit
    }

    /// Which data volumes a read hashed whole and found as listed.
    pub fn matched_volumes(&self) -> Vec<bool> {
        self.matched.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Where the listed parity volumes are (beside the list), present or not.
    pub fn parity_paths(&self) -> Vec<PathBuf> {
        let Some(list) = &self.list else {
            return Vec::new();
        };
        let dir = match list.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        list.parsed
            .parity
            .iter()
            .map(|(name, _)| dir.join(name))
            .collect()
    }

    /// The same bundle with data volume `n` read from `path` for each `(n, path)` (volumes
    /// rebuilt from parity), as a fresh source.
    pub fn with_replaced(&self, replaced: &[(usize, PathBuf)]) -> BundleSource {
        let mut volumes = self.volumes.clone();
        for (n, path) in replaced {
            if let Some(v) = volumes.get_mut(*n) {
                v.0 = path.clone();
            }
        }
        BundleSource {
            matched: Arc::new(Mutex::new(vec![false; volumes.len()])),
            volumes,
            list: self.list.clone(),
            media: None,
            unfit: Vec::new(),
            verdicts: Default::default(),
        }
    }

    /// `--wait`: the volumes of `path` are read one at a time from its directory (a mount
    /// point whose medium is swapped), each asked of `supplier` before it is opened. The
    /// signed volume list must be there now; no volume needs to be. A whole bundle file
    /// at `path` has nothing to wait for and is opened as usual.
    pub fn open_waiting(path: &Path, supplier: Box<dyn VolumeSupplier>) -> Result<Self> {
        if let Some(base) = base_of(path) {
            return BundleSource::open_waiting(&base, supplier);
        }
        if path.is_file() {
            return BundleSource::open(path);
        }
        let list_path = super::split::list_path(path);
        if !list_path.is_file() {
            return Err(Error::Runtime(format!(
                "--wait: the volume list {} is not there",
                list_path.display()
            ))
            .with_hint(
                "`create` writes NAME.volumes and NAME.volumes.minisig once: copy both onto every medium (at least the first) and name the bundle in the mount point",
            ));
        }
        let (text, parsed) = read_list(&list_path)?;
        let dir = dir_of(path);
        let volumes: Vec<(PathBuf, u64)> = parsed
            .data
            .iter()
            .enumerate()
            .map(|(n, (name, _))| (dir.join(name), parsed.size_of(n)))
            .collect();
        Ok(BundleSource {
            matched: Arc::new(Mutex::new(vec![false; volumes.len()])),
            volumes,
            unfit: Vec::new(),
            verdicts: Default::default(),
            media: Some(Arc::new(Mutex::new(Media::new(
                supplier,
                parsed.clone(),
                dir.to_path_buf(),
            )))),
            list: Some(ListedVolumes {
                path: list_path,
                text,
                parsed,
            }),
        })
    }

    /// Whether the bundle can only be read once, in order (`--wait`): no seeking to the
    /// seek table in the last volume, no second look at a volume.
    pub fn in_order_only(&self) -> bool {
        self.media.is_some()
    }

    /// Hides `bar` while the operator is asked for a medium.
    pub fn attach_progress(&self, bar: &indicatif::ProgressBar) {
        if let Some(media) = &self.media
            && let Ok(mut m) = media.lock()
        {
            m.attach_progress(bar.clone());
        }
    }

    /// The error that stopped a read in the volume supplier (a missing volume, an abort),
    /// with its own exit code, rather than what the decoder made of it.
    pub fn take_media_failure(&self) -> Option<Error> {
        self.media.as_ref()?.lock().ok()?.take_failure()
    }

    /// Checks the volume list's signature (`NAME.volumes.minisig`) against `key`, when the
    /// bundle came with one.
    pub fn check_volume_list(&self, key: &PublicKey) -> Result<()> {
        let Some(list) = &self.list else {
            return Ok(());
        };
        let sig_path = PathBuf::from(format!("{}.minisig", list.path.display()));
        let text = std::fs::read_to_string(&sig_path).map_err(|e| {
            Error::Verify(format!("cannot read {}: {e}", sig_path.display()))
                .with_hint("copy the volume list's signature from the connected side too")
        })?;
        Signature::parse(&text, &sig_path.display().to_string())?.verify(
            key,
            &list.text,
            &list.path.display().to_string(),
        )
    }

    /// After a verification failure: which volumes do not hash to what the signed list
    /// says (one extra read, only on the failure path). `None` when all match or there is
    /// no list.
    pub fn diagnose(&self) -> Option<String> {
        // With --wait the other volumes are on media no longer mounted; each one was
        // checked whole before it was read, and a change since is named by the reader.
        if self.media.is_some() {
            return None;
        }
        let bad: Vec<String> = self
            .volumes
            .iter()
            .zip(self.verdicts()?)
            .filter(|(_, v)| **v != Verdict::Good)
            .map(|((path, _), _)| path.display().to_string())
            .collect();
        (!bad.is_empty()).then(|| {
            format!(
                "volume{} {} do{} not match the signed volume list (altered, swapped or wrong volume{})",
                if bad.len() == 1 { "" } else { "s" },
                bad.join(", "),
                if bad.len() == 1 { "es" } else { "" },
                if bad.len() == 1 { "" } else { "s" },
            )
        })
    }

    /// Each data volume against the signed list (`None` without a list): hashed on every
    /// core the first time it is asked for, unless a reader already found it as listed
    /// while it streamed.
    pub fn verdicts(&self) -> Option<&[Verdict]> {
        let list = self.list.as_ref()?;
        let verdicts = self.verdicts.get_or_init(|| {
            let matched = self.matched_volumes();
            let numbered: Vec<(usize, &PathBuf, &Sha256Digest)> = self
                .volumes
                .iter()
                .zip(&list.parsed.data)
                .enumerate()
                .map(|(i, ((path, _), (_, want)))| (i, path, want))
                .collect();
            super::pool::map_on_every_core(&numbered, |&(i, path, want)| {
                if matched.get(i).copied().unwrap_or(false) {
                    return Verdict::Good;
                }
                match File::open(path).and_then(Sha256Digest::of_reader) {
                    Ok((got, _)) if got == *want => Verdict::Good,
                    Ok(_) => Verdict::Differs,
                    Err(e) => Verdict::Unreadable(e.to_string()),
                }
            })
        });
        Some(verdicts)
    }

    /// After a read that verified against the signed index `index_sha256`: the volumes
    /// must be the ones the signed list names, so that a full set of another build's
    /// volumes is refused (exit 3) even when its bytes form a valid bundle. A list that
    /// records its bundle's index digest settles it without another read: every entry
    /// just verified against that very index. An older list (or media read one at a time)
    /// has every volume that was not hashed whole in order while it streamed hashed now.
    pub fn check_listed_bundle(&self, index_sha256: &Sha256Digest) -> Result<()> {
        let Some(list) = &self.list else {
            return Ok(());
        };
        if let Some(listed) = list.parsed.index.filter(|_| self.media.is_none()) {
            if listed == *index_sha256 {
                return Ok(());
            }
            let bad = self.diagnose().unwrap_or_else(|| "the volumes".into());
            return Err(Error::Verify(format!(
                "{bad}: they hold the bundle whose signed index has sha256 {index_sha256}, but the signed volume list {} names {listed} (volumes of another build?); nothing was installed",
                list.path.display()
            ))
            .with_hint("copy the volumes and the volume list of one `create` run; check each stick with `sha256sum -c --ignore-missing NAME.volumes`"));
        }
        let matched = self.matched.lock().map(|m| m.clone()).unwrap_or_default();
        let mut bad = Vec::new();
        for (n, ((path, _), (_, want))) in self.volumes.iter().zip(&list.parsed.data).enumerate() {
            if matched.get(n).copied().unwrap_or(false) {
                continue;
            }
            if self.media.is_some() {
                // Read in order from a medium now gone: it should have been matched.
                bad.push(path.display().to_string());
                continue;
            }
            let got = File::open(path)
                .and_then(Sha256Digest::of_reader)
                .at("cannot read", path)?;
            if got.0 != *want {
                bad.push(path.display().to_string());
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        Err(Error::Verify(format!(
            "volume{} {} do{} not match the signed volume list {} (volumes of another build?); nothing was installed",
            if bad.len() == 1 { "" } else { "s" },
            bad.join(", "),
            if bad.len() == 1 { "es" } else { "" },
            list.path.display()
        ))
        .with_hint("copy the volumes and the volume list of one `create` run; check each stick with `sha256sum -c --ignore-missing NAME.volumes`"))
    }

    /// The volume list, if the bundle is split and came with one.
    pub fn volume_list(&self) -> Option<&Path> {
        self.list.as_ref().map(|l| l.path.as_path())
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
        if !self.unfit.is_empty() {
            return Err(self.unfit_error());
        }
        if self.media.is_none() {
            let first = &self.volumes[0].0;
            File::open(first).at("cannot open bundle", first)?;
        }
        Ok(ConcatReader {
            volumes: self.volumes.clone(),
            pos: 0,
            open: None,
            // Hashed as they stream only where the list does not bind the index (see
            // `check_listed_bundle`), or as the second check of media read one at a time.
            listed: self
                .list
                .as_ref()
                .filter(|l| l.parsed.index.is_none() || self.media.is_some())
                .map(|l| l.parsed.data.iter().map(|(_, d)| *d).collect()),
            matched: self.matched.clone(),
            hashing: None,
            media: self.media.clone(),
        })
    }
}

/// Reads and parses a volume list (its signature is checked by
/// [`BundleSource::check_volume_list`]).
fn read_list(list_path: &Path) -> Result<(Vec<u8>, VolumeList)> {
    let file = File::open(list_path).at("cannot read", list_path)?;
    let mut text = Vec::new();
    file.take(MAX_LIST_BYTES + 1)
        .read_to_end(&mut text)
        .at("cannot read", list_path)?;
    let parsed = std::str::from_utf8(&text)
        .map_err(|_| "it is not text".to_string())
        .and_then(VolumeList::parse)
        .map_err(|why| {
            Error::Verify(format!("{}: {why}", list_path.display())).with_hint(
                "copy the volume list from the connected side again (it is signed: check it with minisign)",
            )
        })?;
    Ok((text, parsed))
}

/// The directory a bundle path names its volumes in.
fn dir_of(base: &Path) -> &Path {
    match base.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
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
    /// With a volume list: each volume's listed sha256, and which volumes were read whole,
    /// in order, and matched (shared with the [`BundleSource`] for the final check).
    listed: Option<Vec<Sha256Digest>>,
    matched: Arc<Mutex<Vec<bool>>>,
    /// The volume being hashed as it is read in order: (volume, hasher, bytes hashed).
    hashing: Option<(usize, Sha256, u64)>,
    /// With `--wait`: asked for each volume before it is opened.
    media: Option<Arc<Mutex<Media>>>,
}

impl ConcatReader {
    /// Hashes bytes read from `vol` at `offset` when they continue an in-order read of it;
    /// at the volume's end, compares with the signed list (exit 3 naming the volume).
    fn hash_in_order(&mut self, vol: usize, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let Some(listed) = &self.listed else {
            return Ok(());
        };
        if offset == 0 {
            self.hashing = Some((vol, Sha256::new(), 0));
        }
        let Some((v, hasher, done)) = self.hashing.as_mut() else {
            return Ok(());
        };
        if *v != vol || *done != offset {
            self.hashing = None;
            return Ok(());
        }
        hasher.update(bytes);
        *done += bytes.len() as u64;
        if *done < self.volumes[vol].1 {
            return Ok(());
        }
        let (_, hasher, _) = self.hashing.take().expect("checked above");
        let got = Sha256Digest::from_hasher(hasher);
        if got != listed[vol] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "volume {} does not match the signed volume list (sha256 {got}, listed {})",
                    self.volumes[vol].0.display(),
                    listed[vol]
                ),
            ));
        }
        if let Ok(mut m) = self.matched.lock() {
            m[vol] = true;
        }
        Ok(())
    }

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
            // Closed before the next medium is asked for: a held file blocks an unmount.
            self.open = None;
            if let Some(media) = &self.media {
                media
                    .lock()
                    .map_err(|_| io::Error::other("the volume supplier failed"))?
                    .supply(vol)?;
            }
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
        self.hash_in_order(vol, offset, &buf[..n])?;
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
