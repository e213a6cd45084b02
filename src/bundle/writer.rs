//! Writes a bundle: the signed index first, then its signature, the locked manifest and
//! the content in a fixed order, through the seekable frame writer, into a temporary file
//! that is renamed into place only when complete, plus a detached signature of the file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use indicatif::ProgressBar;

use super::frames::{FrameSizes, FrameWriter};
use super::index::{
    Artifact, DeltaBase, EntryKind, FORMAT_VERSION, INDEX_PATH, INDEX_SIG_PATH, Index, IndexEntry,
    MANIFEST_PATH,
};
use super::signing::{Prehasher, SecretKey};
use super::split::{self, Split, VolumeOutput, WrittenVolume};
use crate::digest::{HashingReader, Sha256Digest};
use crate::error::{Error, IoContext, Result};
use crate::fs::{file_name_of, parent_dir, sync_dir};
use crate::progress::ProgressReader;

/// Where a content entry's bytes are while the bundle is written.
#[derive(Debug, Clone)]
pub enum ContentSource {
    /// A file (the download cache): streamed, never held in memory.
    File(PathBuf),
    /// Content the tool generated (an OCI `index.json`, later apt and PyPI indexes).
    Generated(std::sync::Arc<[u8]>),
    /// Left out of a delta: the base holds it, the index marks it in place.
    InPlace,
}

impl ContentSource {
    fn open(&self) -> Result<Box<dyn Read>> {
        match self {
            ContentSource::File(path) => Ok(Box::new(File::open(path).at("cannot read", path)?)),
            ContentSource::Generated(bytes) => Ok(Box::new(io::Cursor::new(bytes.clone()))),
            ContentSource::InPlace => Err(Error::Runtime(
                "an entry left out of a delta has no bytes to read".into(),
            )),
        }
    }

    /// What the source is, in errors.
    fn describe(&self) -> String {
        match self {
            ContentSource::File(path) => format!("cached copy {}", path.display()),
            ContentSource::Generated(_) => "generated content".to_string(),
            ContentSource::InPlace => "an entry expected in place".to_string(),
        }
    }
}

/// One content entry to pack: where its bytes are now and what they must hash to.
#[derive(Debug, Clone)]
pub struct ContentEntry {
    pub path: String,
    pub kind: EntryKind,
    pub source: ContentSource,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub artifacts: Vec<usize>,
    /// Names the artifact in errors (its canonical URL).
    pub origin: String,
}

/// Everything that goes into a bundle.
pub struct BundlePlan {
    pub name: String,
    pub version: String,
    pub locked_manifest: Vec<u8>,
    pub artifacts: Vec<Artifact>,
    pub contents: Vec<ContentEntry>,
    /// Unix seconds recorded as creation time and as every entry's mtime.
    pub created_epoch: u64,
    /// `create --base`: what the delta was made against (its in-place entries are the
    /// contents whose source is [`ContentSource::InPlace`]).
    pub base: Option<DeltaBase>,
}

/// What `write_bundle` produced.
#[derive(Debug)]
pub struct WrittenBundle {
    pub path: PathBuf,
    pub signature_path: PathBuf,
    /// With `--split-size`: the volumes (path, bytes), and the signed volume list.
    pub volumes: Vec<(PathBuf, u64)>,
    /// With `--parity`: the parity volumes (path, bytes).
    pub parity_volumes: Vec<(PathBuf, u64)>,
    pub volume_list: Option<PathBuf>,
    /// With `--include-tool`: the binary beside the bundle and its signature.
    pub tool: Option<(PathBuf, PathBuf)>,
    pub bytes: u64,
    pub frames: Vec<FrameSizes>,
    pub index: Index,
}

/// Writes the compressed bytes to the file on a thread of its own, prehashing them for
/// the detached signature there, so the packing thread only reads, hashes and copies.
struct OutputSink {
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<Finished>>>,
}

/// What the writer thread leaves: the volume output (its last volume not synced yet), the
/// prehash of all the bytes and their count.
type Finished = (VolumeOutput, Prehasher, u64);

impl OutputSink {
    fn new(mut out: VolumeOutput) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(2);
        let worker = std::thread::spawn(move || {
            let mut prehash = Prehasher::default();
            let mut bytes = 0u64;
            for chunk in rx {
                out.write_all(&chunk)?;
                prehash.update(&chunk);
                bytes += chunk.len() as u64;
            }
            Ok((out, prehash, bytes))
        });
        OutputSink {
            tx: Some(tx),
            worker: Some(worker),
        }
    }

    /// Waits for the writer thread: the volumes, the prehash and the bytes written.
    fn finish(mut self) -> io::Result<Finished> {
        self.tx = None;
        self.join()
    }

    fn join(&mut self) -> io::Result<Finished> {
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the output writer thread stopped")),
        }
    }
}

impl Write for OutputSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = self.tx.as_ref().map(|tx| tx.send(buf.to_vec()));
        match sent {
            Some(Ok(())) => Ok(buf.len()),
            // The writer thread ended early: report its error (a full disk, say).
            _ => {
                self.tx = None;
                Err(self
                    .join()
                    .err()
                    .unwrap_or_else(|| io::Error::other("output closed")))
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tar_header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

impl BundlePlan {
    /// The index this plan produces (content sorted by path, duplicates folded).
    pub fn index(&mut self, tool: &str) -> Result<Index> {
        self.contents.sort_by(|a, b| a.path.cmp(&b.path));
        let mut folded: Vec<ContentEntry> = Vec::with_capacity(self.contents.len());
        for c in self.contents.drain(..) {
            match folded.last_mut() {
                Some(prev) if prev.path == c.path => {
                    if prev.sha256 != c.sha256 {
                        return Err(Error::Usage(format!(
                            "`{}` and `{}` both map to `{}` with different content",
                            prev.origin, c.origin, c.path
                        )));
                    }
                    prev.artifacts.extend(c.artifacts);
                    prev.artifacts.sort_unstable();
                    prev.artifacts.dedup();
                }
                _ => folded.push(c),
            }
        }
        self.contents = folded;
        let mut entries = vec![IndexEntry {
            path: MANIFEST_PATH.to_string(),
            size: self.locked_manifest.len() as u64,
            sha256: Sha256Digest::of_bytes(&self.locked_manifest),
            kind: EntryKind::Manifest,
            artifacts: Vec::new(),
            in_place: false,
        }];
        entries.extend(self.contents.iter().map(|c| IndexEntry {
            path: c.path.clone(),
            size: c.size,
            sha256: c.sha256,
            kind: c.kind,
            artifacts: c.artifacts.clone(),
            in_place: matches!(c.source, ContentSource::InPlace),
        }));
        Ok(Index {
            format: FORMAT_VERSION,
            name: self.name.clone(),
            version: self.version.clone(),
            created: crate::timefmt::rfc3339(self.created_epoch),
            tool: tool.to_string(),
            manifest_sha256: Sha256Digest::of_bytes(&self.locked_manifest),
            base: self.base.clone(),
            artifacts: self.artifacts.clone(),
            entries,
        })
    }
}

/// Packs, signs and writes the bundle to `out` (atomically), and `out.minisig` beside it;
/// with `split`, as volumes `out.000`, `out.001`, … of at most that many bytes, with the
/// signed volume list `out.volumes` and `out.volumes.minisig`, and with `split.parity`,
/// the parity volumes `out.p00`, … written once the data volumes are (their count is
/// known only then).
pub fn write_bundle(
    mut plan: BundlePlan,
    key: &SecretKey,
    out: &Path,
    split: Option<Split>,
    threads: usize,
    progress: &ProgressBar,
) -> Result<WrittenBundle> {
    let tool = format!("airgap-bundle {}", env!("CARGO_PKG_VERSION"));
    let index = plan.index(&tool)?;
    let index_json = index.to_canonical_json();
    let trusted = format!(
        "timestamp:{}\tfile:{INDEX_PATH}\tbundle:{} {}",
        plan.created_epoch, plan.name, plan.version
    );
    let index_sig = key
        .sign(&index_json, &trusted)
        .to_file_string("signature from airgap-bundle secret key")
        .into_bytes();

    let dir = parent_dir(out);
    let file_name = file_name_of(out)?;
    let sink = OutputSink::new(VolumeOutput::new(dir, &file_name, split.map(|s| s.size)));
    let write_err = |e: io::Error| Error::io("cannot write", out, e);
    let mut tar = tar::Builder::new(FrameWriter::new(sink, threads));
    let mtime = plan.created_epoch;
    for (path, bytes) in [
        (INDEX_PATH, index_json.as_slice()),
        (INDEX_SIG_PATH, index_sig.as_slice()),
        (MANIFEST_PATH, plan.locked_manifest.as_slice()),
    ] {
        tar.get_mut().cut().map_err(write_err)?;
        tar.append_data(&mut tar_header(bytes.len() as u64, mtime), path, bytes)
            .map_err(write_err)?;
    }
    for c in plan
        .contents
        .iter()
        .filter(|c| !matches!(c.source, ContentSource::InPlace))
    {
        tar.get_mut().cut().map_err(write_err)?;
        let file = c.source.open()?;
        let mut hashing = HashingReader::new(ProgressReader {
            inner: file.take(c.size),
            bar: Some(progress),
        });
        tar.append_data(&mut tar_header(c.size, mtime), &c.path, &mut hashing)
            .map_err(|e| match e.raw_os_error() {
                Some(_) => write_err(e),
                None => Error::Runtime(format!("cannot read {}: {e}", c.source.describe())),
            })?;
        let (digest, n) = hashing.finish();
        if n != c.size || digest != c.sha256 {
            return Err(Error::Verify(format!(
                "{}: {} changed: sha256 {digest} ({n} bytes), expected {} ({} bytes)",
                c.origin,
                c.source.describe(),
                c.sha256,
                c.size
            ))
            .with_hint("delete it from the cache and run create again"));
        }
    }
    let frames_out = tar.into_inner().map_err(write_err)?;
    let (sink, frames) = frames_out.finish().map_err(write_err)?;
    let (output, prehash, bytes) = sink.finish().map_err(write_err)?;
    let volumes: Vec<WrittenVolume> = output
        .finish()
        .map_err(|e| Error::io("cannot sync", out, e))?;
    let (parity, shard) = match split {
        Some(s) if s.parity > 0 => {
            let data: Vec<(PathBuf, u64)> = volumes
                .iter()
                .map(|v| (v.tmp.path().to_path_buf(), v.size))
                .collect();
            super::parity::write_parity(&data, s.parity, dir, &format!(".{file_name}."))?
        }
        _ => (Vec::new(), 0),
    };

    let whole = key.sign_prehashed(
        &prehash.finish(),
        &format!(
            "timestamp:{}\tfile:{file_name}\tprehashed",
            plan.created_epoch
        ),
    );
    let signature_path = PathBuf::from(format!("{}.minisig", out.display()));
    let signature = write_temporary(
        dir,
        &format!(".{file_name}.minisig."),
        whole
            .to_file_string("signature from airgap-bundle secret key")
            .as_bytes(),
    )?;
    // The signed volume list, when split.
    let list = match split {
        Some(s) => {
            let listed: Vec<(String, Sha256Digest, u64)> = volumes
                .iter()
                .enumerate()
                .map(|(n, v)| (format!("{file_name}.{n:03}"), v.sha256, v.size))
                .collect();
            let parity_listed: Vec<(String, Sha256Digest)> = parity
                .iter()
                .enumerate()
                .map(|(j, v)| (format!("{file_name}{}", split::parity_suffix(j)), v.sha256))
                .collect();
            let text = split::volume_list(
                s.size,
                &listed,
                &parity_listed,
                shard,
                Some(&Sha256Digest::of_bytes(&index_json)),
            );
            let list_name = format!("{file_name}.volumes");
            let sig = key
                .sign(
                    text.as_bytes(),
                    &format!(
                        "timestamp:{}\tfile:{list_name}\tbundle:{} {}",
                        plan.created_epoch, plan.name, plan.version
                    ),
                )
                .to_file_string("signature from airgap-bundle secret key");
            Some((
                write_temporary(dir, &format!(".{list_name}."), text.as_bytes())?,
                write_temporary(dir, &format!(".{list_name}.minisig."), sig.as_bytes())?,
            ))
        }
        None => None,
    };
    for v in volumes.iter().chain(&parity) {
        use std::os::unix::fs::PermissionsExt;
        v.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .at("cannot set permissions on", v.tmp.path())?;
    }
    // A signature never sits beside bytes it does not describe: the old ones and any
    // earlier bundle or volumes of this name go (durably) before the new bytes take their
    // names, and the signatures arrive after them.
    remove_earlier(out, &signature_path)?;
    sync_dir(dir)?;
    let mut placed = Vec::with_capacity(volumes.len());
    let single = split.is_none();
    for (n, v) in volumes.into_iter().enumerate() {
        let path = if single {
            out.to_path_buf()
        } else {
            split::volume_path(out, n)
        };
        v.tmp
            .persist(&path)
            .map_err(|e| Error::io("cannot rename into place", &path, e.error))?;
        placed.push((path, v.size));
    }
    let mut parity_placed = Vec::with_capacity(parity.len());
    for (j, v) in parity.into_iter().enumerate() {
        let path = split::parity_path(out, j);
        v.tmp
            .persist(&path)
            .map_err(|e| Error::io("cannot rename into place", &path, e.error))?;
        parity_placed.push((path, v.size));
    }
    // The new bundle's names are durable before its signatures' are.
    sync_dir(dir)?;
    let mut volume_list = None;
    if let Some((text, sig)) = list {
        let path = split::list_path(out);
        text.persist(&path)
            .map_err(|e| Error::io("cannot rename into place", &path, e.error))?;
        let sig_path = PathBuf::from(format!("{}.minisig", path.display()));
        sig.persist(&sig_path)
            .map_err(|e| Error::io("cannot rename into place", &sig_path, e.error))?;
        volume_list = Some(path);
    }
    signature
        .persist(&signature_path)
        .map_err(|e| Error::io("cannot rename into place", &signature_path, e.error))?;
    sync_dir(dir)?;
    Ok(WrittenBundle {
        path: out.to_path_buf(),
        signature_path,
        bytes,
        frames,
        index,
        volumes: if single { Vec::new() } else { placed },
        parity_volumes: parity_placed,
        volume_list,
        tool: None,
    })
}

/// Removes what an earlier `create` to the same name left: the bundle, its signature, its
/// volumes (data `NAME.NNN` and parity `NAME.pNN`) and their list.
fn remove_earlier(out: &Path, signature_path: &Path) -> Result<()> {
    let list = split::list_path(out);
    let list_sig = PathBuf::from(format!("{}.minisig", list.display()));
    let mut doomed = vec![
        signature_path.to_path_buf(),
        list_sig,
        list,
        out.to_path_buf(),
    ];
    // Every `NAME.NNN` and `NAME.pNN` beside it, gaps or not.
    let dir = parent_dir(out);
    let prefix = format!("{}.", file_name_of(out)?);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_volume = |digits: &str, len: std::ops::RangeInclusive<usize>| {
                len.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            };
            if let Some(rest) = name.strip_prefix(&prefix)
                && (is_volume(rest, 3..=3)
                    || rest.strip_prefix('p').is_some_and(|d| is_volume(d, 2..=3)))
            {
                doomed.push(dir.join(name));
            }
        }
    }
    for path in doomed {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot replace", &path, e)),
        }
    }
    Ok(())
}

/// A small file written and synced under a temporary name in `dir`, to be renamed into
/// place by the caller (0644 whatever the umask).
fn write_temporary(dir: &Path, prefix: &str, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".partial")
        .tempfile_in(dir)
        .at("cannot create a temporary file in", dir)?;
    tmp.write_all(bytes).at("cannot write", tmp.path())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .at("cannot set permissions on", tmp.path())?;
    tmp.as_file().sync_all().at("cannot sync", tmp.path())?;
    Ok(tmp)
}

/// The tool that travels with its bundle (`create --include-tool`): the running binary,
/// copied to `dir/bundle` with a detached signature `dir/bundle.minisig`, so the offline
/// side checks it with stock `minisign -Vm bundle -p site.pub` before running it. Both are
/// synced and renamed into place, the signature last. Returns the two paths.
pub fn include_tool(dir: &Path, key: &SecretKey, created_epoch: u64) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()
        .map_err(|e| Error::Runtime(format!("cannot find the running binary: {e}")))?;
    let mut source = File::open(&exe).at("cannot read", &exe)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".bundle.")
        .suffix(".partial")
        .tempfile_in(dir)
        .at("cannot create a temporary file in", dir)?;
    let mut prehash = Prehasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buf).at("cannot read", &exe)?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n]).at("cannot write", tmp.path())?;
        prehash.update(&buf[..n]);
    }
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .at("cannot set permissions on", tmp.path())?;
    tmp.as_file().sync_all().at("cannot sync", tmp.path())?;
    let signature = key.sign_prehashed(
        &prehash.finish(),
        &format!(
            "timestamp:{created_epoch}\tfile:bundle\ttool:airgap-bundle {}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    let tool = dir.join("bundle");
    let sig_path = dir.join("bundle.minisig");
    let sig = write_temporary(
        dir,
        ".bundle.minisig.",
        signature
            .to_file_string("signature from airgap-bundle secret key")
            .as_bytes(),
    )?;
    match std::fs::remove_file(&sig_path) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot replace", &sig_path, e)),
    }
    tmp.persist(&tool)
        .map_err(|e| Error::io("cannot rename into place", &tool, e.error))?;
    sync_dir(dir)?;
    sig.persist(&sig_path)
        .map_err(|e| Error::io("cannot rename into place", &sig_path, e.error))?;
    sync_dir(dir)?;
    Ok((tool, sig_path))
}
