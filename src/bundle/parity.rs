//! Parity volumes (`create --parity N`, SPEC §3): a Reed–Solomon code across the data
//! volumes, so that `verify` and `install` rebuild up to N missing or damaged ones.
//!
//! Geometry: every data volume is cut into stripes of `shard` bytes at the same offsets
//! (the last, shorter volume reads as zeros past its end); the k data shards of a stripe
//! are coded into N recovery shards, and recovery shard j of every stripe, in order, is
//! parity volume j (`NAME.p0j`). So a parity volume is as long as the first data volume
//! (rounded up to even: the coder works on 16-bit symbols), and encoding or rebuilding
//! holds one stripe at a time: memory is about `2·next_power_of_two(k+N)·shard` bytes
//! (the coder's work space), at most [`CODER_BUDGET`] for the stripe widths `create`
//! picks, whatever the volume sizes. The stripe width is recorded in the signed list
//! (`shard=`): the code's bytes depend on it (reed-solomon-simd pairs bytes into symbols
//! within 64-byte blocks), so the reader must use the writer's, whatever formula a later
//! version picks.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use sha2::{Digest, Sha256};

use super::pool::map_on_every_core;
use super::signing::PublicKey;
use super::split::WrittenVolume;
use super::volumes::{BundleSource, Unfit, Verdict};
use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::progress::Reporter;

/// Most parity volumes a bundle may have (`--parity 1..=255`).
pub const MAX_PARITY: usize = 255;
/// What the coder's work space may take with the stripe width `create` picks.
const CODER_BUDGET: usize = 64 << 20;
/// The widest stripe (and what a small bundle uses): 1 MiB reads are efficient anywhere.
const MAX_SHARD: usize = 1 << 20;
/// What a signed list's geometry may ask of the reader's memory (a newer writer may pick
/// wider stripes than this one; anything above is refused, not allocated).
const READER_BUDGET: u64 = 256 << 20;

/// The coder's work space, in shards, for k data and n parity shards (an upper bound for
/// both rates of reed-solomon-simd's encoder and decoder).
fn work_shards(k: u64, n: u64) -> u64 {
    2 * (k + n).next_power_of_two()
}

/// The stripe width `create` uses for k data and n parity volumes: as wide as the budget
/// allows, a multiple of 64 (the coder's SIMD block), from 64 bytes to 1 MiB.
pub fn shard_bytes(k: usize, n: usize) -> usize {
    let per = CODER_BUDGET as u64 / work_shards(k as u64, n as u64);
    ((per as usize) & !63).clamp(64, MAX_SHARD)
}

/// A parity volume's length for a first data volume of `first` bytes.
pub fn parity_len(first: u64) -> u64 {
    first + (first & 1)
}

/// Checks a list's parity geometry (before its signature is checked: nothing here
/// allocates): counts the coder supports, an even stripe width of at most 1 MiB, and a
/// work space within [`READER_BUDGET`].
pub fn check_geometry(k: u64, n: u64, shard: u64) -> std::result::Result<(), String> {
    if n == 0 || n > MAX_PARITY as u64 {
        return Err(format!("parity={n}: 1 to {MAX_PARITY} parity volumes"));
    }
    if !ReedSolomonEncoder::supports(k as usize, n as usize) {
        return Err(format!(
            "{k} data volumes with {n} parity volumes are more than the code supports"
        ));
    }
    if shard == 0 || shard % 2 == 1 || shard > MAX_SHARD as u64 {
        return Err(format!(
            "shard={shard}: the stripe width must be even, at most {MAX_SHARD}"
        ));
    }
    if work_shards(k, n).saturating_mul(shard) > READER_BUDGET {
        return Err(format!(
            "shard={shard} with {k}+{n} volumes needs more than {} MiB to decode",
            READER_BUDGET >> 20
        ));
    }
    Ok(())
}

fn coder_error(e: reed_solomon_simd::Error) -> Error {
    Error::Runtime(format!("parity coder: {e}"))
}

/// Reads stripes of volume files: `(path, bytes)` each, zeros past a file's bytes.
/// Files stay open while there are few of them (the descriptor limit), else each read
/// opens its file.
struct Shards {
    files: Vec<(PathBuf, u64)>,
    open: Vec<Option<File>>,
    keep_open: bool,
}

impl Shards {
    fn new(files: Vec<(PathBuf, u64)>) -> Self {
        let keep_open = files.len() <= 256;
        Shards {
            open: files.iter().map(|_| None).collect(),
            files,
            keep_open,
        }
    }

    /// Fills `buf` with shard `i`'s bytes at `offset` (zeros past its end).
    fn read(&mut self, i: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (path, len) = &self.files[i];
        let have = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[have..].fill(0);
        if have == 0 {
            return Ok(());
        }
        let fresh;
        let file = match &self.open[i] {
            Some(f) => f,
            None if self.keep_open => {
                self.open[i] = Some(File::open(path).at("cannot open", path)?);
                self.open[i].as_ref().expect("opened above")
            }
            None => {
                fresh = File::open(path).at("cannot open", path)?;
                &fresh
            }
        };
        file.read_exact_at(&mut buf[..have], offset)
            .at("cannot read", path)
    }
}

/// One output volume being written: hashed as it is written.
struct Out {
    file: File,
    hasher: Sha256,
    size: u64,
    path: PathBuf,
}

impl Out {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).at("cannot write", &self.path)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// The stripes of a volume of `len` bytes: (offset, width), the last one possibly
/// narrower (still even: `len` is).
fn stripes(len: u64, shard: usize) -> impl Iterator<Item = (u64, usize)> {
    (0..len.div_ceil(shard as u64)).map(move |s| {
        let offset = s * shard as u64;
        (offset, (len - offset).min(shard as u64) as usize)
    })
}

/// `create --parity n`: codes the synced data volumes `(path, bytes)` (the first one the
/// largest) into `n` parity volumes, temporary files `{prefix}pNN.….partial` in `dir`,
/// each hashed as it is written and synced. Returns them and the stripe width.
pub fn write_parity(
    data: &[(PathBuf, u64)],
    n: usize,
    dir: &Path,
    prefix: &str,
) -> Result<(Vec<WrittenVolume>, usize)> {
    let k = data.len();
    let shard = shard_bytes(k, n);
    let len = parity_len(data.first().map_or(0, |(_, size)| *size));
    if !ReedSolomonEncoder::supports(k, n) {
        return Err(Error::Usage(format!(
            "{k} data volumes with {n} parity volumes are more than the Reed–Solomon code supports"
        ))
        .with_hint("use a larger --split-size or fewer parity volumes"));
    }
    let mut outs = Vec::with_capacity(n);
    let mut tmps = Vec::with_capacity(n);
    for j in 0..n {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{prefix}p{j:02}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .at("cannot create a temporary file in", dir)?;
        // Each write is a whole stripe's shard: no buffer needed (nor wanted: N of them).
        let file = tmp.reopen().at("cannot open", tmp.path())?;
        outs.push(Out {
            file,
            hasher: Sha256::new(),
            size: 0,
            path: tmp.path().to_path_buf(),
        });
        tmps.push(tmp);
    }
    let mut shards = Shards::new(data.to_vec());
    let mut buf = vec![0u8; shard];
    let mut encoder = ReedSolomonEncoder::new(k, n, shard).map_err(coder_error)?;
    for (offset, width) in stripes(len, shard) {
        encoder.reset(k, n, width).map_err(coder_error)?;
        for i in 0..k {
            shards.read(i, offset, &mut buf[..width])?;
            encoder
                .add_original_shard(&buf[..width])
                .map_err(coder_error)?;
        }
        let result = encoder.encode().map_err(coder_error)?;
        for (out, recovery) in outs.iter_mut().zip(result.recovery_iter()) {
            out.write(recovery)?;
        }
    }
    let mut written = Vec::with_capacity(n);
    for (out, tmp) in outs.into_iter().zip(tmps) {
        let Out {
            mut file,
            hasher,
            size,
            path,
        } = out;
        file.flush().at("cannot write", &path)?;
        drop(file);
        tmp.as_file().sync_all().at("cannot sync", &path)?;
        written.push(WrittenVolume {
            tmp,
            sha256: Sha256Digest::from_hasher(hasher),
            size,
        });
    }
    Ok((written, shard))
}

/// What is wrong with a volume, as the rebuild found it.
#[derive(Debug, Clone)]
enum Why {
    Missing,
    Size { got: u64, want: u64 },
    Differs,
    Unreadable(String),
}

impl Why {
    fn describe(&self) -> String {
        match self {
            Why::Missing => "missing".into(),
            Why::Size { got, want } => format!("{got} bytes, the list says {want}"),
            Why::Differs => "does not match the signed volume list".into(),
            Why::Unreadable(e) => format!("unreadable: {e}"),
        }
    }
}

/// Checks one volume file against its listed size and sha256.
fn check_volume(path: &Path, want_size: u64, want: &Sha256Digest) -> Option<Why> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Some(Why::Unreadable("not a file".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Why::Missing),
        Err(e) => return Some(Why::Unreadable(e.to_string())),
    };
    if meta.len() != want_size {
        return Some(Why::Size {
            got: meta.len(),
            want: want_size,
        });
    }
    match File::open(path).and_then(Sha256Digest::of_reader) {
        Ok((got, _)) if got == *want => None,
        Ok(_) => Some(Why::Differs),
        Err(e) => Some(Why::Unreadable(e.to_string())),
    }
}

/// Data volumes rebuilt from parity for one read: the source that reads them in place of
/// the bad ones, and the temporary directory holding them (removed when this is dropped).
pub struct Rebuilt {
    pub source: BundleSource,
    /// The data volumes that were rebuilt, by the names they have beside the others.
    pub volumes: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// Hashes the volumes a read did not already find as listed, and rebuilds the bad data
/// volumes from the good ones into a temporary directory (`TMPDIR`), each checked against
/// the signed list. `Ok(None)` when every data volume is good (nothing to rebuild).
/// More bad volumes than parity volumes: exit 3 naming them all (exit 1 when all of them
/// are merely missing). The caller has checked the list's signature.
fn rebuild(source: &BundleSource, reporter: &Reporter) -> Result<Option<Rebuilt>> {
    let Some(list) = source.listed() else {
        return Ok(None);
    };
    let n = list.parity.len();
    if n == 0 {
        return Ok(None);
    }
    let k = list.data.len();
    let unfit = source.unfit();
    let data_paths: Vec<PathBuf> = source.volumes().iter().map(|(p, _)| p.clone()).collect();
    let parity_paths = source.parity_paths();
    // Volumes open found missing or the wrong size are bad as they are; the others are
    // judged by their hash against the list (computed once per source, on every core, and
    // shared with the message that names bad volumes).
    let verdicts = source.verdicts().unwrap_or_default();
    let bad_data: Vec<(usize, Why)> = (0..data_paths.len())
        .filter_map(|i| {
            let why = match unfit.iter().find(|(u, _)| *u == i) {
                Some((_, Unfit::Missing)) => Why::Missing,
                Some((_, Unfit::Size(got))) => Why::Size {
                    got: *got,
                    want: list.size_of(i),
                },
                None => match verdicts.get(i) {
                    Some(Verdict::Good) => return None,
                    Some(Verdict::Differs) => Why::Differs,
                    Some(Verdict::Unreadable(e)) => Why::Unreadable(e.clone()),
                    None => return None,
                },
            };
            Some((i, why))
        })
        .collect();
    if bad_data.is_empty() {
        return Ok(None);
    }
    let numbered: Vec<(usize, &PathBuf)> = parity_paths.iter().enumerate().collect();
    let bad_parity: Vec<(usize, Why)> = map_on_every_core(&numbered, |&(j, path)| {
        check_volume(path, list.parity_size(), &list.parity[j].1)
    })
    .into_iter()
    .enumerate()
    .filter_map(|(j, why)| Some((j, why?)))
    .collect();
    if bad_data.len() + bad_parity.len() > n {
        return Err(too_many(
            &data_paths,
            &parity_paths,
            &bad_data,
            &bad_parity,
            n,
        ));
    }
    let need: u64 = bad_data.iter().map(|(i, _)| list.size_of(*i)).sum();
    let tmp_root = std::env::temp_dir();
    if let Ok(st) = rustix::fs::statvfs(&tmp_root) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < need {
            return Err(Error::Runtime(format!(
                "rebuilding {} volume{} from parity needs {need} bytes in {}, which has {free} free; nothing was installed",
                bad_data.len(),
                if bad_data.len() == 1 { "" } else { "s" },
                tmp_root.display()
            ))
            .with_hint("set TMPDIR to a directory with enough free space and run again"));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("airgap-bundle-rebuild.")
        .tempdir_in(&tmp_root)
        .at("cannot create a temporary directory in", &tmp_root)?;
    // The good shards: data volumes by index, then just enough parity volumes.
    let good_parity: Vec<usize> = (0..n)
        .filter(|j| !bad_parity.iter().any(|(b, _)| b == j))
        .take(bad_data.len())
        .collect();
    let mut files: Vec<(PathBuf, u64)> = (0..k)
        .map(|i| (data_paths[i].clone(), list.size_of(i)))
        .collect();
    files.extend(
        good_parity
            .iter()
            .map(|&j| (parity_paths[j].clone(), list.parity_size())),
    );
    let mut shards = Shards::new(files);
    let mut outs = Vec::with_capacity(bad_data.len());
    for (i, _) in &bad_data {
        let name = data_paths[*i]
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("{i:03}")));
        let path = dir.path().join(name);
        let file = File::create(&path).at("cannot create", &path)?;
        outs.push(Out {
            file,
            hasher: Sha256::new(),
            size: 0,
            path,
        });
    }
    let shard = list.shard;
    let mut buf = vec![0u8; shard];
    let mut decoder = ReedSolomonDecoder::new(k, n, shard).map_err(coder_error)?;
    for (offset, width) in stripes(list.parity_size(), shard) {
        decoder.reset(k, n, width).map_err(coder_error)?;
        for i in (0..k).filter(|i| !bad_data.iter().any(|(b, _)| b == i)) {
            shards.read(i, offset, &mut buf[..width])?;
            decoder
                .add_original_shard(i, &buf[..width])
                .map_err(coder_error)?;
        }
        for (slot, &j) in good_parity.iter().enumerate() {
            shards.read(k + slot, offset, &mut buf[..width])?;
            decoder
                .add_recovery_shard(j, &buf[..width])
                .map_err(coder_error)?;
        }
        let result = decoder.decode().map_err(coder_error)?;
        for ((i, _), out) in bad_data.iter().zip(outs.iter_mut()) {
            let restored = result.restored_original(*i).ok_or_else(|| {
                Error::Runtime(format!("parity coder did not restore volume {i}"))
            })?;
            let keep = list.size_of(*i).saturating_sub(offset).min(width as u64) as usize;
            out.write(&restored[..keep])?;
        }
    }
    let mut replaced = Vec::with_capacity(bad_data.len());
    let mut names = Vec::with_capacity(bad_data.len());
    for ((i, why), out) in bad_data.iter().zip(outs) {
        let Out {
            mut file,
            hasher,
            path,
            ..
        } = out;
        file.flush().at("cannot write", &path)?;
        drop(file);
        if Sha256Digest::from_hasher(hasher) != list.data[*i].1 {
            return Err(Error::Verify(format!(
                "volume {} rebuilt from parity does not match the signed volume list (a surviving volume changed while it was read?); nothing was installed",
                data_paths[*i].display()
            ))
            .with_hint("copy the volumes again from the connected side and check each with `sha256sum -c --ignore-missing NAME.volumes`"));
        }
        reporter.info(format!(
            "rebuilt {} from parity ({}; {} of {} parity volumes used)",
            data_paths[*i].display(),
            why.describe(),
            good_parity.len(),
            n
        ));
        replaced.push((*i, path));
        names.push(data_paths[*i].clone());
    }
    Ok(Some(Rebuilt {
        source: source.with_replaced(&replaced),
        volumes: names,
        _dir: dir,
    }))
}

/// The error for more bad volumes than parity can rebuild.
fn too_many(
    data: &[PathBuf],
    parity: &[PathBuf],
    bad_data: &[(usize, Why)],
    bad_parity: &[(usize, Why)],
    n: usize,
) -> Error {
    let named: Vec<String> = bad_data
        .iter()
        .map(|(i, why)| (&data[*i], why))
        .chain(bad_parity.iter().map(|(j, why)| (&parity[*j], why)))
        .map(|(p, why)| format!("{} ({})", p.display(), why.describe()))
        .collect();
    // Missing or unreadable (a failing stick: the operating system's error, not wrong
    // bytes) is a runtime error; any volume with wrong bytes or size makes it exit 3.
    let all_missing = bad_data
        .iter()
        .chain(bad_parity)
        .all(|(_, why)| matches!(why, Why::Missing | Why::Unreadable(_)));
    let message = format!(
        "volumes {} are missing or damaged; the {n} parity volume{} can rebuild at most {n}; nothing was installed",
        named.join(", "),
        if n == 1 { "" } else { "s" },
    );
    let hint = "copy the missing or damaged volumes again from the connected side (check each stick with `sha256sum -c --ignore-missing NAME.volumes`) and run again";
    if all_missing {
        Error::Runtime(message).with_hint(hint)
    } else {
        Error::Verify(message).with_hint(hint)
    }
}

/// Runs one verifying read of `source` (`verify`'s or `install`'s, from the start) and
/// rebuilds from parity when the bundle has parity volumes: before the read when volumes
/// are missing or the wrong size, or after a read that failed verification (then the read
/// runs once more, on the rebuilt volumes). The volume list's signature is checked before
/// anything is hashed or written. Returns what the read returned and the data volumes that
/// were rebuilt; the rebuilt copies are removed when this returns.
pub fn read_with_parity<T>(
    source: &BundleSource,
    key: &PublicKey,
    reporter: &Reporter,
    mut read: impl FnMut(&BundleSource) -> Result<T>,
) -> Result<(T, Vec<PathBuf>)> {
    // Volumes read one at a time from swapped media (`--wait`) are never all present at
    // once: nothing to rebuild from.
    if source.in_order_only() || source.listed().is_none_or(|l| l.parity.is_empty()) {
        return read(source).map(|v| (v, Vec::new()));
    }
    source.check_volume_list(key)?;
    if !source.unfit().is_empty() {
        let rebuilt = rebuild(source, reporter)?.ok_or_else(|| source.unfit_error())?;
        let value = read(&rebuilt.source)?;
        return Ok((value, rebuilt.volumes.clone()));
    }
    match read(source) {
        Err(e) if e.exit_code() == 3 => match rebuild(source, reporter)? {
            Some(rebuilt) => {
                let value = read(&rebuilt.source)?;
                Ok((value, rebuilt.volumes.clone()))
            }
            None => Err(e),
        },
        other => other.map(|v| (v, Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, u64) {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        (p, bytes.len() as u64)
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn stripe_width_keeps_the_coder_within_budget() {
        assert_eq!(shard_bytes(4, 2), MAX_SHARD);
        for (k, n) in [(1, 1), (4, 2), (64, 2), (1000, 255), (30_000, 255)] {
            let c = shard_bytes(k, n);
            assert!(c.is_multiple_of(64) && c >= 64, "{k}+{n}: {c}");
            assert!(
                work_shards(k as u64, n as u64) * c as u64 <= CODER_BUDGET as u64 || c == 64,
                "{k}+{n}: {c}"
            );
            check_geometry(k as u64, n as u64, c as u64).unwrap();
        }
        assert!(check_geometry(4, 2, 3).is_err());
        assert!(check_geometry(4, 0, 64).is_err());
        assert!(check_geometry(4, 256, 64).is_err());
        assert!(check_geometry(60_000, 255, 1 << 20).is_err());
        assert_eq!(parity_len(7), 8);
        assert_eq!(parity_len(8), 8);
    }

    /// Writes `bytes` as volumes of `split` bytes `b.000`, … with `n` parity volumes and
    /// the list, as `create` lays them out; returns the base path.
    fn lay_out(dir: &Path, bytes: &[u8], split: usize, n: usize) -> PathBuf {
        let base = dir.join("b");
        let data: Vec<(PathBuf, u64)> = bytes
            .chunks(split)
            .enumerate()
            .map(|(i, c)| write(dir, &format!("b.{i:03}"), c))
            .collect();
        let (parity, shard) = write_parity(&data, n, dir, ".b.").unwrap();
        let listed: Vec<(String, Sha256Digest, u64)> = data
            .iter()
            .enumerate()
            .map(|(i, (p, size))| {
                let sha = File::open(p).and_then(Sha256Digest::of_reader).unwrap().0;
                (format!("b.{i:03}"), sha, *size)
            })
            .collect();
        let mut parity_listed = Vec::new();
        for (j, v) in parity.into_iter().enumerate() {
            let name = format!("b.p{j:02}");
            parity_listed.push((name.clone(), v.sha256));
            v.tmp.persist(dir.join(name)).unwrap();
        }
        let text =
            super::super::split::volume_list(split as u64, &listed, &parity_listed, shard, None);
        std::fs::write(dir.join("b.volumes"), text).unwrap();
        base
    }

    /// Three data volumes (the last short and odd), two parity volumes: every loss of at
    /// most two of the five volumes (missing, truncated or altered, parity included) is
    /// rebuilt byte for byte by `rebuild`, and three are refused naming them all, exit 1
    /// when all three are missing, else 3.
    #[test]
    fn encode_then_rebuild_round_trips_with_a_short_last_volume() {
        let bytes = pseudo_random(2 * 10_000 + 3_333, 7);
        let names = ["b.000", "b.001", "b.002", "b.p00", "b.p01"];
        let damage = |dir: &Path, name: &str, how: usize| {
            let p = dir.join(name);
            match how % 3 {
                0 => std::fs::remove_file(&p).unwrap(),
                1 => {
                    let mut bytes = std::fs::read(&p).unwrap();
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0x5a;
                    std::fs::write(&p, bytes).unwrap();
                }
                _ => {
                    let len = std::fs::metadata(&p).unwrap().len();
                    File::options()
                        .write(true)
                        .open(&p)
                        .unwrap()
                        .set_len(len - 1)
                        .unwrap();
                }
            }
        };
        let mut case = 0;
        for a in 0..5 {
            for b in a + 1..5 {
                case += 1;
                let dir = tempfile::tempdir().unwrap();
                let base = lay_out(dir.path(), &bytes, 10_000, 2);
                let pristine: Vec<Vec<u8>> = names[..3]
                    .iter()
                    .map(|n| std::fs::read(dir.path().join(n)).unwrap())
                    .collect();
                damage(dir.path(), names[a], case);
                damage(dir.path(), names[b], case + 1);
                let source = BundleSource::open(&base).unwrap();
                let rebuilt = rebuild(&source, &Reporter::silent()).unwrap();
                let lost: Vec<usize> = [a, b].into_iter().filter(|&x| x < 3).collect();
                let Some(rebuilt) = rebuilt else {
                    assert!(lost.is_empty(), "lost {a},{b}: nothing rebuilt");
                    continue;
                };
                let want: Vec<PathBuf> = lost.iter().map(|&i| dir.path().join(names[i])).collect();
                assert_eq!(rebuilt.volumes, want, "lost {a},{b}");
                for (i, (path, size)) in rebuilt.source.volumes().iter().enumerate() {
                    assert_eq!(
                        std::fs::read(path).unwrap(),
                        pristine[i],
                        "lost {a},{b}: volume {i}"
                    );
                    assert_eq!(*size, pristine[i].len() as u64);
                }
                let tmp = rebuilt.source.volumes()[lost[0]].0.clone();
                assert!(
                    !tmp.starts_with(dir.path()),
                    "rebuilt in place: {}",
                    tmp.display()
                );
                drop(rebuilt);
                assert!(!tmp.exists(), "the rebuilt copy outlived its read");
            }
        }
        for (lose, code) in [([0, 1, 3], 3), ([0, 1, 2], 1), ([1, 3, 4], 1)] {
            let dir = tempfile::tempdir().unwrap();
            let base = lay_out(dir.path(), &bytes, 10_000, 2);
            for (k, &x) in lose.iter().enumerate() {
                damage(dir.path(), names[x], if code == 1 { 0 } else { k });
            }
            let source = BundleSource::open(&base).unwrap();
            let err = match rebuild(&source, &Reporter::silent()) {
                Err(e) => e,
                Ok(_) => panic!("{lose:?}: rebuilt three of five volumes with two parity"),
            };
            assert_eq!(err.exit_code(), code, "{lose:?}: {err}");
            for &x in &lose {
                assert!(err.to_string().contains(names[x]), "{lose:?}: {err}");
            }
        }
    }

    #[test]
    fn one_data_volume_gets_copies() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pseudo_random(5_001, 3);
        let data = vec![write(dir.path(), "b.000", &bytes)];
        let (parity, _) = write_parity(&data, 2, dir.path(), ".b.").unwrap();
        for p in &parity {
            let got = std::fs::read(p.tmp.path()).unwrap();
            assert_eq!(got.len(), 5_002);
            assert!(got[..5_001] == bytes[..], "parity of one volume is a copy");
        }
    }
}
