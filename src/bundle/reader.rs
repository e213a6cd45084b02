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

use super::frames;
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

/// Opens the decompressed tar stream of a bundle: decoded on every core with the seek
/// table read first, or, from volumes read strictly in order (`--wait`), serially with the
/// table checked when it arrives at the end.
fn open_archive(source: &BundleSource) -> Result<MeteredArchive> {
    let decoded: Box<dyn Read + Send> = if source.in_order_only() {
        Box::new(frames::in_order_decoder(source.reader()?)?)
    } else {
        frames::decode(source.reader()?, source.total_len())?
    };
    Ok(MeteredArchive::new(decoded))
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
    source.check_unread_volumes()?;
    Ok(verified)
}

fn read_verified_stream(
    source: &BundleSource,
    options: ReadOptions<'_>,
    on_index: &mut dyn FnMut(&VerifiedIndex) -> Result<()>,
    sink: &mut dyn EntrySink,
) -> Result<VerifiedIndex> {
    let mut metered = open_archive(source)?;
    let budget = metered.budget.clone();
    let verified = {
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
        stream_entries(&mut entries, &budget, &verified.index, &options, sink)?;
        verified
    };
    budget.set(MAX_TRAILING_ZEROS);
    expect_only_padding(metered.archive.into_inner(), &budget)?;
    Ok(verified)
}

fn stream_entries(
    entries: &mut TarEntries<'_>,
    budget: &Budget,
    index: &Index,
    options: &ReadOptions<'_>,
    sink: &mut dyn EntrySink,
) -> Result<()> {
    let by_path: HashMap<&str, usize> = index
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_str(), i))
        .collect();
    let mut seen = vec![false; index.entries.len()];
    let mut previous = String::from("the signed head");
    // Large reads: each one passes through the tar layer, the decoder channel and SHA-256.
    let mut buf = vec![0u8; 256 * 1024];
    // The budget left by the signature entry covers its padding and the next headers.
    for entry in entries {
        let mut entry = entry
            .map_err(|e| read_err_in(budget, &format!("the archive after `{previous}`"), e))?;
        let path = entry_path(&entry)?;
        let kind = entry.header().entry_type();
        let reject = |why: &str| Error::Verify(format!("entry `{path}`: {why}"));
        super::check_entry_path(path.trim_end_matches('/')).map_err(|why| reject(&why))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            // Re-tarred bundles may carry directories and global PAX headers: harmless,
            // and metered by the header budget.
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader => continue,
            tar::EntryType::Symlink => {
                return Err(reject("symbolic links are not allowed in a bundle"));
            }
            tar::EntryType::Link => return Err(reject("hard links are not allowed in a bundle")),
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
        let Some(&i) = by_path.get(path.as_str()) else {
            return Err(reject("not in the signed index (extra or renamed entry)"));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(reject("appears twice"));
        }
        let expected = &index.entries[i];
        let from = expected
            .artifacts
            .first()
            .and_then(|&a| index.artifacts.get(a))
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
            bar: options.progress,
        };
        let mut reader = EntryReader::new(&mut progress, expected, label);
        if let Err(e) = sink.accept(expected, &mut reader) {
            return Err(reader.verification_failure().unwrap_or(e));
        }
        reader.finish(&mut buf)?;
        previous = path;
    }
    let missing: Vec<&str> = index
        .entries
        .iter()
        .zip(&seen)
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
