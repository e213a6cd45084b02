//! Reads a bundle in one streaming pass: the signature of `index.json` is checked before
//! anything else is parsed, then every entry is hashed as it streams past and handed to an
//! [`EntrySink`] (verify discards, install stages). Nothing is trusted that the signed index
//! does not name with its size and sha256.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::rc::Rc;

use indicatif::ProgressBar;
use sha2::{Digest as _, Sha256};

use super::frames::{self, FrameSizes};
use super::index::{
    INDEX_PATH, INDEX_SIG_PATH, Index, IndexEntry, MAX_INDEX_BYTES, MAX_SIGNATURE_BYTES,
};
use super::signing::{PublicKey, Signature};
use super::volumes::BundleSource;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::progress::ProgressReader;

/// Tar bytes that may precede an entry's data (its header, PAX records, GNU long names,
/// global headers, directories of a re-tarred bundle, the previous entry's padding): what
/// the tar reader may consume, and hold, beyond the sizes the signed index allows.
pub const HEADER_BUDGET: u64 = 4 << 20;
/// Zero bytes allowed after the end-of-archive marker (tar pads to its record size).
const MAX_TRAILING_ZEROS: u64 = 1 << 20;

/// Receives each entry's bytes while they are being verified. An entry is only known good
/// when the whole read returns `Ok`: sinks must not commit anything before that.
pub trait EntrySink {
    fn accept(&mut self, entry: &IndexEntry, data: &mut EntryReader<'_>) -> Result<()>;

    /// Whether every destination of `entry` already holds its verified bytes (staged by
    /// an earlier run of this bundle that stopped early, or in place), so that the reader
    /// may jump over its bytes through the seek table. Asked once per entry, after the
    /// index checked out. An entry the reader does not jump over is still handed to
    /// [`EntrySink::accept`].
    fn holds(&self, _entry: &IndexEntry) -> bool {
        false
    }

    /// The reader jumped over `entry` (one [`EntrySink::holds`] said it holds).
    fn skipped(&mut self, _entry: &IndexEntry) -> Result<()> {
        Ok(())
    }

    /// `entry` is one a delta left out (marked `in_place` in the signed index): it is not
    /// in the archive, and the sink's pre-flight (`on_index`) checked that its destinations
    /// hold it. Called in signed order among the entries that stream past whenever the
    /// archive is in that order (the writer's), else at the end.
    fn expected(&mut self, _entry: &IndexEntry) -> Result<()> {
        Ok(())
    }
}

/// A sink that only lets the bytes be hashed (`bundle verify`).
pub struct DiscardSink;

impl EntrySink for DiscardSink {
    fn accept(&mut self, _entry: &IndexEntry, _data: &mut EntryReader<'_>) -> Result<()> {
        Ok(())
    }
}

/// The one way a destination receives an entry's bytes (SPEC §3): it delivers at most the
/// signed size, hashes as it goes, and ends with an error, never a clean end of data, when
/// the bytes fall short, run over, or do not hash to the signed sha256. A sink that
/// forwards bytes as they stream (a registry upload, a `serve` client) treats only `Ok(0)`
/// as "complete", and so can never take tampered data for complete data.
pub struct EntryReader<'a> {
    inner: &'a mut dyn Read,
    entry: &'a IndexEntry,
    /// Names the entry and its artifact in errors.
    label: String,
    hasher: Sha256,
    delivered: u64,
    verdict: Option<std::result::Result<(), String>>,
}

impl<'a> EntryReader<'a> {
    pub fn new(inner: &'a mut dyn Read, entry: &'a IndexEntry, label: String) -> Self {
        EntryReader {
            inner,
            entry,
            label,
            hasher: Sha256::new(),
            delivered: 0,
            verdict: None,
        }
    }

    /// The verification failure, once the bytes were found not to match.
    pub fn verification_failure(&self) -> Option<Error> {
        match &self.verdict {
            Some(Err(why)) => Some(Error::Verify(format!("{}: {why}", self.label))),
            _ => None,
        }
    }

    /// The library error for a failed read: the verification failure when there is one,
    /// else what the decoder or the operating system said.
    pub fn read_error(&self, e: io::Error) -> Error {
        self.verification_failure()
            .unwrap_or_else(|| Error::from_bundle_read(&self.label, e))
    }

    /// Copies the entry into `out` to its verified end; `write_err` names a failed write.
    pub fn copy_to(
        &mut self,
        out: &mut dyn Write,
        write_err: impl Fn(io::Error) -> Error,
    ) -> Result<()> {
        // No bigger than the entry: a bundle of many small files allocates little.
        let mut buf = vec![0u8; self.entry.size.clamp(1, 256 * 1024) as usize];
        loop {
            let n = self.read(&mut buf).map_err(|e| self.read_error(e))?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n]).map_err(&write_err)?;
        }
    }

    /// Reads what the sink left unread, so that every byte is hashed, and returns the
    /// verdict.
    fn finish(&mut self, buf: &mut [u8]) -> Result<()> {
        loop {
            match self.read(buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    fn judge_end(&mut self) -> io::Result<()> {
        let mut probe = [0u8; 1];
        let verdict = if self.inner.read(&mut probe)? > 0 {
            Err(format!(
                "more bytes than the {} the signed index says (oversize entry)",
                self.entry.size
            ))
        } else {
            let digest = Sha256Digest::from_hasher(std::mem::take(&mut self.hasher));
            if digest == self.entry.sha256 {
                Ok(())
            } else {
                Err(format!(
                    "sha256 {digest} does not match the signed index ({}): the content was changed",
                    self.entry.sha256
                ))
            }
        };
        self.verdict = Some(verdict);
        Ok(())
    }
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.verdict.is_none() && self.delivered == self.entry.size {
            self.judge_end()?;
        }
        match &self.verdict {
            Some(Ok(())) => return Ok(0),
            Some(Err(why)) => return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())),
            None => {}
        }
        let want = (self.entry.size - self.delivered).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            let why = format!(
                "only {} of {} bytes present (truncated bundle)",
                self.delivered, self.entry.size
            );
            self.verdict = Some(Err(why.clone()));
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
        self.hasher.update(&buf[..n]);
        self.delivered += n as u64;
        Ok(n)
    }
}

/// The index after its signature checked out.
#[derive(Debug, Clone)]
pub struct VerifiedIndex {
    pub index: Index,
    pub signature: Signature,
    pub index_sha256: Sha256Digest,
}

/// The index and signature as found at the front of a bundle, not yet verified.
pub struct UnverifiedHead {
    pub index_bytes: Vec<u8>,
    pub signature: Signature,
    /// The signature entry's size in the tar stream.
    pub signature_len: u64,
}

/// How many more tar bytes the tar reader may pull from the decoder. Before the signature
/// is checked this bounds memory and time by the index limit, whatever the tar headers
/// claim; after it, by the signed sizes plus [`HEADER_BUDGET`] per entry.
#[derive(Default)]
struct Budget {
    left: Cell<u64>,
    exhausted: Cell<bool>,
}

impl Budget {
    fn set(&self, bytes: u64) {
        self.left.set(bytes);
    }
}

/// The decoded tar stream, metered by a [`Budget`] shared with the code driving the tar
/// reader (which owns this stream).
struct Metered {
    inner: Box<dyn Read + Send>,
    budget: Rc<Budget>,
}

impl Read for Metered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.budget.left.get();
        if left == 0 {
            // The end of the stream is fine; one more byte is over the budget.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.budget.exhausted.set(true);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tar headers larger than any bundle writes",
            ));
        }
        let want = left.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

type TarEntries<'a> = tar::Entries<'a, Metered>;

/// A tar archive over a bundle's decoded bytes, with the budget that meters it.
struct MeteredArchive {
    archive: tar::Archive<Metered>,
    budget: Rc<Budget>,
}

impl MeteredArchive {
    fn new(decoded: Box<dyn Read + Send>) -> Self {
        let budget = Rc::new(Budget::default());
        // Before the signature: the headers of the index, then (see `read_small_entry`)
        // no more than its size allows.
        budget.set(HEADER_BUDGET);
        MeteredArchive {
            archive: tar::Archive::new(Metered {
                inner: decoded,
                budget: budget.clone(),
            }),
            budget,
        }
    }
}

/// Maps a read error, naming the budget when it was the budget that stopped the read.
fn read_err_in(budget: &Budget, what: &str, e: io::Error) -> Error {
    if budget.exhausted.get() {
        Error::Verify(format!(
            "{what}: more than {HEADER_BUDGET} bytes of tar headers (PAX records, long names, global headers) \
             around an entry, or more data than the signed index allows: a crafted bundle"
        ))
    } else {
        Error::from_bundle_read(what, e)
    }
}

fn read_err(e: io::Error) -> Error {
    Error::from_bundle_read("the bundle", e)
}

/// Reads the two leading entries (index and its signature) from the tar stream.
fn read_head(entries: &mut TarEntries<'_>, budget: &Budget) -> Result<UnverifiedHead> {
    let pre = |e: Error| match e.exit_code() {
        3 => e.map_message(|m| format!("before the signature was checked: {m}")),
        _ => e,
    };
    let index_bytes =
        read_small_entry(entries, budget, INDEX_PATH, MAX_INDEX_BYTES).map_err(pre)?;
    let sig_bytes =
        read_small_entry(entries, budget, INDEX_SIG_PATH, MAX_SIGNATURE_BYTES).map_err(pre)?;
    let text = std::str::from_utf8(&sig_bytes)
        .map_err(|_| Error::Verify(format!("{INDEX_SIG_PATH} is not text")))?;
    Ok(UnverifiedHead {
        index_bytes,
        signature: Signature::parse(text, INDEX_SIG_PATH)?,
        signature_len: sig_bytes.len() as u64,
    })
}

fn read_small_entry(
    entries: &mut TarEntries<'_>,
    budget: &Budget,
    expected: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let not_bundle = |found: &str| {
        Error::Verify(format!(
            "expected `{expected}` next, found {found}: this is not an airgap bundle, or its signed head was removed"
        ))
    };
    let err = |e| read_err_in(budget, &format!("the tar headers before `{expected}`"), e);
    // A re-tar may put a global PAX header first: it carries no content.
    let entry = loop {
        match entries.next() {
            None => return Err(not_bundle("the end of the archive")),
            Some(e) => {
                let e = e.map_err(err)?;
                if e.header().entry_type() != tar::EntryType::XGlobalHeader {
                    break e;
                }
            }
        }
    };
    let path = entry_path(&entry)?;
    if path != expected || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(not_bundle(&format!("`{path}`")));
    }
    // The size the tar reader will deliver (a PAX `size` record overrides the header's).
    let size = entry.size();
    if size > limit {
        return Err(Error::Verify(format!(
            "`{expected}` is {size} bytes, over the {limit}-byte limit"
        )));
    }
    // Its data and padding, then the next entry's headers.
    budget.set(size.div_ceil(512) * 512 + HEADER_BUDGET);
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err_in(budget, &format!("`{expected}`"), e))?;
    if bytes.len() as u64 != size {
        return Err(Error::Verify(format!("`{expected}` is truncated")));
    }
    Ok(bytes)
}

fn entry_path(entry: &tar::Entry<'_, Metered>) -> Result<String> {
    let path = entry.path_bytes();
    String::from_utf8(path.into_owned())
        .map_err(|_| Error::Verify("an entry's path is not UTF-8".into()))
}

/// The seek table, read first from the end of the stream, or `None` from volumes read
/// strictly in order (`--wait`: the table is in the last volume; nothing is jumped over).
fn seek_table(source: &BundleSource) -> Result<Option<Vec<FrameSizes>>> {
    match source.in_order_only() {
        true => Ok(None),
        false => frames::read_seek_table(&mut source.reader()?, source.total_len()),
    }
}

/// The decoded stream from its start: on every core with the seek table, serially without
/// one, or in order with the table checked when it arrives at the end (`--wait`).
fn decode_all(source: &BundleSource, table: Option<&[FrameSizes]>) -> Result<Box<dyn Read + Send>> {
    if source.in_order_only() {
        return Ok(Box::new(frames::in_order_decoder(source.reader()?)?));
    }
    frames::decode_from(source.reader()?, table, 0)
}

/// The index and signature at the front of the bundle, without verifying (for `inspect`:
/// it decodes only the first frames, so it is instant on any size). `data_len` is the
/// length of the compressed frames, before any seek table.
pub fn read_unverified_head(source: &BundleSource, data_len: u64) -> Result<UnverifiedHead> {
    let reader: Box<dyn Read + Send> =
        Box::new(frames::serial_decoder(source.reader()?.take(data_len))?);
    let mut metered = MeteredArchive::new(reader);
    let budget = metered.budget.clone();
    let mut entries = metered.archive.entries().map_err(read_err)?;
    read_head(&mut entries, &budget)
}

/// The head (index and signature, not verified) and the seek table of a bundle, without
/// reading its content: instant on any size (`inspect`, `create --base`). A seek table
/// that does not check out is ignored here (verify reports it).
pub fn read_unverified(source: &BundleSource) -> Result<(UnverifiedHead, Option<Vec<FrameSizes>>)> {
    // With --wait the seek table is on the last medium: the head is on the first.
    let table = match source.in_order_only() {
        true => None,
        false => match frames::read_seek_table(&mut source.reader()?, source.total_len()) {
            Ok(t) => t,
            Err(e) if e.exit_code() == 3 => None,
            Err(e) => return Err(e),
        },
    };
    // Decode only the frames, so the serial walker never meets the seek table.
    let data_len = table.as_ref().map_or(source.total_len(), |frames| {
        frames.iter().map(|f| u64::from(f.compressed)).sum()
    });
    let head = read_unverified_head(source, data_len)
        .map_err(|e| source.take_media_failure().unwrap_or(e))?;
    Ok((head, table))
}

/// Options for a full read.
pub struct ReadOptions<'a> {
    pub pubkey: &'a PublicKey,
    /// Advanced by the bytes of each entry as it streams.
    pub progress: Option<&'a ProgressBar>,
}

/// Verifies the whole bundle in one pass, handing every entry to `sink`. `on_index` runs
/// after the index signature checked out and before any content is read (install's
/// pre-flight). Returns the verified index once every byte matched.
pub fn read_verified(
    source: &BundleSource,
    options: ReadOptions<'_>,
    on_index: &mut dyn FnMut(&VerifiedIndex) -> Result<()>,
    sink: &mut dyn EntrySink,
) -> Result<VerifiedIndex> {
    source.check_volume_list(options.pubkey)?;
    if let Some(bar) = options.progress {
        source.attach_progress(bar);
    }
    let verified = read_verified_stream(source, options, on_index, sink).map_err(|e| {
        if let Some(stopped) = source.take_media_failure() {
            return stopped;
        }
        match (e.exit_code(), source.diagnose()) {
            (3, Some(bad)) => e.map_message(|m| format!("{bad}: {m}")),
            _ => e,
        }
    })?;
    source.check_listed_bundle(&verified.index_sha256)?;
    Ok(verified)
}

fn read_verified_stream(
    source: &BundleSource,
    options: ReadOptions<'_>,
    on_index: &mut dyn FnMut(&VerifiedIndex) -> Result<()>,
    sink: &mut dyn EntrySink,
) -> Result<VerifiedIndex> {
    let table = seek_table(source)?;
    let mut metered = MeteredArchive::new(decode_all(source, table.as_deref())?);
    let mut budget = metered.budget.clone();
    let mut entries = metered.archive.entries().map_err(read_err)?;
    let head = read_head(&mut entries, &budget)?;
    head.signature
        .verify(options.pubkey, &head.index_bytes, INDEX_PATH)?;
    let index = Index::from_signed_bytes(&head.index_bytes)?;
    let verified = VerifiedIndex {
        index_sha256: Sha256Digest::of_bytes(&head.index_bytes),
        index,
        signature: head.signature,
    };
    on_index(&verified)?;
    let index = &verified.index;
    // What a delta left out is not in the archive: held, at no tar bytes.
    let held: Vec<bool> = index
        .entries
        .iter()
        .map(|e| e.in_place || sink.holds(e))
        .collect();
    let head_bytes = tar_record_len(INDEX_PATH, head.index_bytes.len() as u64)
        + tar_record_len(INDEX_SIG_PATH, head.signature_len);
    let jumps = table
        .as_deref()
        .map(|frames| plan_jumps(frames, index, head_bytes, &held))
        .unwrap_or_default();
    let mut walk = EntryWalk::new(index, options.progress);
    let mut jumps = jumps.into_iter();
    loop {
        let next = jumps.next();
        let stop = next.as_ref().map(|j| j.from);
        let reached = walk.stream(&mut entries, &budget, stop, sink)?;
        let Some(jump) = next.filter(|_| reached) else {
            break;
        };
        // Every entry before the jump streamed in the signed order: the entries it jumps
        // over are those the sink holds, and the frame it lands on must start the next.
        let Some(frame) = jump.frame else {
            // The sink holds every entry left: nothing more is read (the end of the archive
            // included, which carries nothing to install).
            for i in jump.from..jump.to {
                walk.skip(i, sink)?;
            }
            walk.finish(sink)?;
            return Ok(verified);
        };
        let frames = table.as_deref().unwrap_or_default();
        if !probe_entry(source, frames, &jump, index)? {
            continue;
        }
        metered = MeteredArchive::new(frames::decode_from(
            source.reader()?,
            table.as_deref(),
            frame,
        )?);
        budget = metered.budget.clone();
        entries = metered.archive.entries().map_err(read_err)?;
        for i in jump.from..jump.to {
            walk.skip(i, sink)?;
        }
    }
    walk.finish(sink)?;
    budget.set(MAX_TRAILING_ZEROS);
    expect_only_padding(metered.archive.into_inner(), &budget)?;
    Ok(verified)
}
/// Least tar bytes worth jumping over (a jump starts a new decoder and probes a frame).
const MIN_JUMP_BYTES: u64 = 8 << 20;

/// A run of entries (`from..to`, signed-index positions) the sink holds, jumped over by
/// decoding on from `frame`, which must start entry `to`; `None` when the run reaches the
/// last entry (reading stops there).
#[derive(Debug, Clone, PartialEq)]
struct Jump {
    from: usize,
    to: usize,
    frame: Option<usize>,
}

/// The tar bytes this tool's writer spends on an entry: its GNU header, a GNU long-name
/// record before it when the path does not fit the header's 100 bytes, and the data
/// padded to 512-byte blocks.
fn tar_record_len(path: &str, size: u64) -> u64 {
    let long_name = if path.len() > 100 {
        512 + (path.len() as u64 + 1).div_ceil(512) * 512
    } else {
        0
    };
    long_name + 512 + size.div_ceil(512) * 512
}

/// The jumps over runs of held entries that are worth it and land on a frame boundary,
/// assuming the layout this tool's writer produces (every entry in signed order, a new
/// frame at each). Where that assumption fails, the landing frame's first header says
/// so ([`probe_entry`]) and the reader streams on instead.
fn plan_jumps(frames: &[FrameSizes], index: &Index, head_bytes: u64, held: &[bool]) -> Vec<Jump> {
    let mut offset = head_bytes;
    let starts: Vec<u64> = index
        .entries
        .iter()
        .map(|e| {
            let at = offset;
            if !e.in_place {
                offset = offset.saturating_add(tar_record_len(&e.path, e.size));
            }
            at
        })
        .collect();
    let mut jumps = Vec::new();
    let mut i = 0;
    while i < held.len() {
        if !held[i] {
            i += 1;
            continue;
        }
        let from = i;
        while i < held.len() && held[i] {
            i += 1;
        }
        if i == held.len() {
            jumps.push(Jump {
                from,
                to: i,
                frame: None,
            });
            continue;
        }
        if starts[i] - starts[from] < MIN_JUMP_BYTES {
            continue;
        }
        if let Some(frame) = frames::frame_starting_at(frames, starts[i]) {
            jumps.push(Jump {
                from,
                to: i,
                frame: Some(frame),
            });
        }
    }
    jumps
}

/// Whether `jump.frame` starts with the header of the entry the jump lands on (decoding
/// only that frame's first bytes).
fn probe_entry(
    source: &BundleSource,
    frames: &[FrameSizes],
    jump: &Jump,
    index: &Index,
) -> Result<bool> {
    let Some((n, frame)) = jump.frame.and_then(|n| Some((n, frames.get(n)?))) else {
        return Ok(false);
    };
    let mut reader = source.reader()?;
    let at: u64 = frames[..n].iter().map(|f| u64::from(f.compressed)).sum();
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(at)).map_err(read_err)?;
    let decoded = frames::serial_decoder(reader.take(u64::from(frame.compressed)))?;
    let mut archive = tar::Archive::new(decoded.take(HEADER_BUDGET));
    let mut entries = archive.entries().map_err(read_err)?;
    let Some(Ok(first)) = entries.next() else {
        return Ok(false);
    };
    Ok(first.path_bytes().as_ref() == index.entries[jump.to].path.as_bytes())
}

/// Checks the entries that stream past against the signed index (each once, each with
/// its signed size and sha256) and hands them to the sink; entries the reader jumps over
/// are marked as the sink's.
struct EntryWalk<'a> {
    index: &'a Index,
    progress: Option<&'a ProgressBar>,
    by_path: HashMap<&'a str, usize>,
    seen: Vec<bool>,
    /// Entries so far came in signed order: the next one is this position.
    next_in_order: Option<usize>,
    previous: String,
    buf: Vec<u8>,
}

impl<'a> EntryWalk<'a> {
    fn new(index: &'a Index, progress: Option<&'a ProgressBar>) -> Self {
        EntryWalk {
            index,
            progress,
            by_path: index
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.path.as_str(), i))
                .collect(),
            seen: vec![false; index.entries.len()],
            next_in_order: Some(0),
            previous: String::from("the signed head"),
            // Large reads: each one passes through the tar layer, the decoder channel and
            // SHA-256.
            buf: vec![0u8; 256 * 1024],
        }
    }

    /// Streams entries until the archive ends (`false`), or until every entry before
    /// `stop` streamed in signed order (`true`).
    fn stream(
        &mut self,
        entries: &mut TarEntries<'_>,
        budget: &Budget,
        stop: Option<usize>,
        sink: &mut dyn EntrySink,
    ) -> Result<bool> {
        if stop.is_some() && stop == self.next_in_order {
            return Ok(true);
        }
        // The budget left by the previous entry covers its padding and the next headers.
        for entry in entries.by_ref() {
            let mut entry = entry.map_err(|e| {
                read_err_in(budget, &format!("the archive after `{}`", self.previous), e)
            })?;
            let path = entry_path(&entry)?;
            let kind = entry.header().entry_type();
            let reject = |why: &str| Error::Verify(format!("entry `{path}`: {why}"));
            super::check_entry_path(path.trim_end_matches('/')).map_err(|why| reject(&why))?;
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                // Re-tarred bundles may carry directories and global PAX headers:
                // harmless, and metered by the header budget.
                tar::EntryType::Directory | tar::EntryType::XGlobalHeader => continue,
                tar::EntryType::Symlink => {
                    return Err(reject("symbolic links are not allowed in a bundle"));
                }
                tar::EntryType::Link => {
                    return Err(reject("hard links are not allowed in a bundle"));
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    return Err(reject("device files and FIFOs are not allowed in a bundle"));
                }
                other => {
                    return Err(reject(&format!(
                        "entry type {other:?} is not allowed in a bundle"
                    )));
                }
            }
            if path == INDEX_PATH || path == INDEX_SIG_PATH {
                return Err(reject("duplicate of the signed head"));
            }
            let Some(&i) = self.by_path.get(path.as_str()) else {
                return Err(reject("not in the signed index (extra or renamed entry)"));
            };
            if self.index.entries[i].in_place {
                return Err(reject(
                    "the signed index marks it as left out of this delta, yet it is in the archive",
                ));
            }
            if std::mem::replace(&mut self.seen[i], true) {
                return Err(reject("appears twice"));
            }
            // In signed order when the entries between the last one and this are all
            // left out of the delta (reported to the sink here, in that order).
            match self.next_in_order {
                Some(n) if n <= i && self.index.entries[n..i].iter().all(|e| e.in_place) => {
                    for k in n..i {
                        self.report_in_place(k, sink)?;
                    }
                    self.next_in_order = Some(i + 1);
                }
                _ => self.next_in_order = None,
            }
            let expected = &self.index.entries[i];
            let from = expected
                .artifacts
                .first()
                .and_then(|&a| self.index.artifacts.get(a))
                .map(|a| format!(" (artifact {})", a.source))
                .unwrap_or_default();
            let label = format!("entry `{path}`{from}");
            // The size the tar reader will deliver, a PAX `size` record included.
            let size = entry.size();
            if size != expected.size {
                return Err(Error::Verify(format!(
                    "{label}: {size} bytes in the archive, but the signed index says {} (oversize or truncated entry)",
                    expected.size
                )));
            }
            // The entry's data and padding, then the next entry's headers.
            budget.set(
                expected
                    .size
                    .div_ceil(512)
                    .saturating_mul(512)
                    .saturating_add(HEADER_BUDGET),
            );
            let mut progress = ProgressReader {
                inner: &mut entry,
                bar: self.progress,
            };
            let mut reader = EntryReader::new(&mut progress, expected, label);
            if let Err(e) = sink.accept(expected, &mut reader) {
                return Err(reader.verification_failure().unwrap_or(e));
            }
            reader.finish(&mut self.buf)?;
            self.previous = path;
            if stop.is_some() && stop == self.next_in_order {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Entry `i` was left out of the delta: the sink checked that it is in place.
    fn report_in_place(&mut self, i: usize, sink: &mut dyn EntrySink) -> Result<()> {
        let entry = &self.index.entries[i];
        if std::mem::replace(&mut self.seen[i], true) {
            return Ok(());
        }
        if let Some(bar) = self.progress {
            bar.inc(entry.size);
        }
        sink.expected(entry)
    }

    /// Entry `i` was jumped over: the sink holds it (or the delta left it out).
    fn skip(&mut self, i: usize, sink: &mut dyn EntrySink) -> Result<()> {
        let entry = &self.index.entries[i];
        if entry.in_place {
            self.next_in_order = Some(i + 1);
            return self.report_in_place(i, sink);
        }
        self.seen[i] = true;
        self.next_in_order = Some(i + 1);
        if let Some(bar) = self.progress {
            bar.inc(entry.size);
        }
        sink.skipped(entry)
    }

    /// Every signed entry must have been seen (or jumped over); what the delta left out
    /// and was not reported yet is reported now.
    fn finish(&mut self, sink: &mut dyn EntrySink) -> Result<()> {
        for i in 0..self.index.entries.len() {
            if self.index.entries[i].in_place {
                self.report_in_place(i, sink)?;
            }
        }
        let missing: Vec<&str> = self
            .index
            .entries
            .iter()
            .zip(&self.seen)
            .filter(|(_, s)| !**s)
            .map(|(e, _)| e.path.as_str())
            .collect();
        if let Some(first) = missing.first() {
            return Err(Error::Verify(format!(
                "the bundle is incomplete: {} signed {} missing, first `{first}` (truncated or half-written bundle?)",
                missing.len(),
                if missing.len() == 1 {
                    "entry"
                } else {
                    "entries"
                }
            )));
        }
        Ok(())
    }
}

/// After the tar end-of-archive marker only zero padding may follow (at most a tar
/// record's worth, metered), and the compressed stream must end cleanly (no truncation,
/// no trailing garbage).
fn expect_only_padding(mut rest: Metered, budget: &Budget) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest
            .read(&mut buf)
            .map_err(|e| match budget.exhausted.get() {
                true => Error::Verify(format!(
                    "more than {MAX_TRAILING_ZEROS} bytes of padding after the end of the archive"
                )),
                false => read_err(e),
            })?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::Verify("data after the end of the archive".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::index::{Artifact, EntryKind};
    use crate::bundle::signing::SecretKey;
    use crate::bundle::writer::{BundlePlan, ContentEntry, ContentSource, write_bundle};

    /// Every entry, with paths around the 100-byte GNU header limit and sizes around the
    /// 512-byte block and the frame size, starts exactly where [`tar_record_len`] says,
    /// at a frame boundary with its own header: the jump lands on the entry it aims at.
    #[test]
    fn entry_starts_match_the_writers_layout() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let lengths = [1usize, 99, 100, 101, 150, 511, 512, 513, 700];
        let sizes = [0u64, 1, 511, 512, 513, 5 << 20, 3, 9 << 20, 1024];
        let mut contents = Vec::new();
        for (i, (&len, &size)) in lengths.iter().zip(&sizes).enumerate() {
            let prefix = format!("files/h/{i}-");
            let path = format!("{prefix}{}", "x".repeat(len.saturating_sub(prefix.len())));
            let bytes: Vec<u8> = (0..size).map(|b| (b * 7 + i as u64) as u8).collect();
            contents.push(ContentEntry {
                path,
                kind: EntryKind::File,
                size,
                sha256: Sha256Digest::of_bytes(&bytes),
                source: ContentSource::Generated(bytes.into()),
                artifacts: vec![0],
                origin: "test".into(),
            });
        }
        let plan = BundlePlan {
            name: "layout".into(),
            version: "1".into(),
            locked_manifest: b"apiVersion: bundle/v1\n".to_vec(),
            artifacts: vec![Artifact {
                kind: EntryKind::File,
                source: "https://example.org/x".into(),
                dest: "files/h".into(),
                sha256: None,
                size: 0,
                external: Vec::new(),
            }],
            contents,
            created_epoch: 1_700_000_000,
            base: None,
        };
        let out = dir.path().join("layout.bundle.tar.zst");
        write_bundle(plan, &key, &out, None, 2, &ProgressBar::hidden()).unwrap();

        let source = BundleSource::open(&out).unwrap();
        let frames = frames::read_seek_table(&mut source.reader().unwrap(), source.total_len())
            .unwrap()
            .expect("a seek table");
        let head = read_unverified_head(&source, u64::MAX).unwrap();
        let index = Index::from_signed_bytes(&head.index_bytes).unwrap();
        let head_bytes = tar_record_len(INDEX_PATH, head.index_bytes.len() as u64)
            + tar_record_len(INDEX_SIG_PATH, head.signature_len);
        // Held: everything but the first and the last entry; every run is worth a jump
        // when each entry is its own run.
        for target in 1..index.entries.len() {
            let mut held = vec![false; index.entries.len()];
            held[target - 1] = true;
            let mut starts = head_bytes;
            for e in &index.entries[..target] {
                starts += tar_record_len(&e.path, e.size);
            }
            let frame = frames::frame_starting_at(&frames, starts)
                .unwrap_or_else(|| panic!("no frame starts entry {target}"));
            let jump = Jump {
                from: target - 1,
                to: target,
                frame: Some(frame),
            };
            assert!(
                probe_entry(&source, &frames, &jump, &index).unwrap(),
                "entry {target} ({} bytes of path) is not where the layout says",
                index.entries[target].path.len()
            );
            // Landing one frame off is noticed.
            let off = Jump {
                frame: Some(frame + 1),
                ..jump
            };
            assert!(!probe_entry(&source, &frames, &off, &index).unwrap_or(false));
        }
        // A run of held entries worth a jump (the 5 and 9 MiB ones) is planned, landing on
        // the entry after it; a held tail ends the read.
        let mut held = vec![false; index.entries.len()];
        for h in &mut held[2..9] {
            *h = true;
        }
        let jumps = plan_jumps(&frames, &index, head_bytes, &held);
        assert_eq!(jumps.len(), 1, "{jumps:?}");
        assert_eq!((jumps[0].from, jumps[0].to), (2, 9));
        assert!(probe_entry(&source, &frames, &jumps[0], &index).unwrap());
        let tail = plan_jumps(
            &frames,
            &index,
            head_bytes,
            &[false, true, true, true, true, true, true, true, true, true],
        );
        assert_eq!(
            tail,
            vec![Jump {
                from: 1,
                to: 10,
                frame: None
            }]
        );
    }
}
