//! Reads a bundle in one streaming pass: the signature of `index.json` is checked before
//! anything else is parsed, then every entry is hashed as it streams past and handed to an
//! [`EntrySink`] (verify discards, install stages). Nothing is trusted that the signed index
//! does not name with its size and sha256.

use std::collections::HashMap;
use std::io::{self, Read};

use indicatif::ProgressBar;

use super::frames;
use super::index::{
    INDEX_PATH, INDEX_SIG_PATH, Index, IndexEntry, MAX_INDEX_BYTES, MAX_SIGNATURE_BYTES,
};
use super::signing::{PublicKey, Signature};
use super::volumes::BundleSource;
use crate::digest::{HashingReader, Sha256Digest};
use crate::error::{Error, Result};
use crate::progress::ProgressReader;

/// Receives each entry's bytes while they are being verified. An entry is only known good
/// when the whole read returns `Ok`: sinks must not commit anything before that.
pub trait EntrySink {
    fn accept(&mut self, entry: &IndexEntry, data: &mut dyn Read) -> Result<()>;
}

/// A sink that only lets the bytes be hashed (`bundle verify`).
pub struct DiscardSink;

impl EntrySink for DiscardSink {
    fn accept(&mut self, _entry: &IndexEntry, _data: &mut dyn Read) -> Result<()> {
        Ok(())
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

type TarEntries<'a> = tar::Entries<'a, Box<dyn Read + Send>>;

fn read_err(e: io::Error) -> Error {
    Error::from_bundle_read("the bundle", e)
}

/// Reads the two leading entries (index and its signature) from the tar stream.
fn read_head(entries: &mut TarEntries<'_>) -> Result<UnverifiedHead> {
    let index_bytes = read_small_entry(entries, INDEX_PATH, MAX_INDEX_BYTES)?;
    let sig_bytes = read_small_entry(entries, INDEX_SIG_PATH, MAX_SIGNATURE_BYTES)?;
    let text = std::str::from_utf8(&sig_bytes)
        .map_err(|_| Error::Verify(format!("{INDEX_SIG_PATH} is not text")))?;
    Ok(UnverifiedHead {
        index_bytes,
        signature: Signature::parse(text, INDEX_SIG_PATH)?,
    })
}

fn read_small_entry(entries: &mut TarEntries<'_>, expected: &str, limit: u64) -> Result<Vec<u8>> {
    let not_bundle = |found: &str| {
        Error::Verify(format!(
            "expected `{expected}` next, found {found}: this is not an airgap bundle, or its signed head was removed"
        ))
    };
    // A re-tar may put a global PAX header first: it carries no content.
    let mut entry = loop {
        match entries.next() {
            None => return Err(not_bundle("the end of the archive")),
            Some(e) => {
                let e = e.map_err(read_err)?;
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
    let size = entry.header().size().map_err(read_err)?;
    if size > limit {
        return Err(Error::Verify(format!(
            "`{expected}` is {size} bytes, over the {limit}-byte limit"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 != size {
        return Err(Error::Verify(format!("`{expected}` is truncated")));
    }
    Ok(bytes)
}

fn entry_path(entry: &tar::Entry<'_, Box<dyn Read + Send>>) -> Result<String> {
    let path = entry.path_bytes();
    String::from_utf8(path.into_owned())
        .map_err(|_| Error::Verify("an entry's path is not UTF-8".into()))
}

/// Opens the decompressed tar stream of a bundle.
fn open_archive(source: &BundleSource) -> Result<tar::Archive<Box<dyn Read + Send>>> {
    let decoded = frames::decode(source.reader()?, source.total_len())?;
    Ok(tar::Archive::new(decoded))
}

/// The index and signature at the front of the bundle, without verifying (for `inspect`:
/// it decodes only the first frames, so it is instant on any size). `data_len` is the
/// length of the compressed frames, before any seek table.
pub fn read_unverified_head(source: &BundleSource, data_len: u64) -> Result<UnverifiedHead> {
    let reader: Box<dyn Read + Send> =
        Box::new(frames::serial_decoder(source.reader()?.take(data_len))?);
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(read_err)?;
    read_head(&mut entries)
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
    let mut archive = open_archive(source)?;
    let verified = {
        let mut entries = archive.entries().map_err(read_err)?;
        let head = read_head(&mut entries)?;
        head.signature
            .verify(options.pubkey, &head.index_bytes, INDEX_PATH)?;
        let index = Index::from_signed_bytes(&head.index_bytes)?;
        let verified = VerifiedIndex {
            index_sha256: Sha256Digest::of_bytes(&head.index_bytes),
            index,
            signature: head.signature,
        };
        on_index(&verified)?;
        stream_entries(&mut entries, &verified.index, &options, sink)?;
        verified
    };
    expect_only_padding(archive.into_inner())?;
    Ok(verified)
}

fn stream_entries(
    entries: &mut TarEntries<'_>,
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
    for entry in entries {
        let mut entry = entry
            .map_err(|e| Error::from_bundle_read(&format!("the archive after `{previous}`"), e))?;
        let path = entry_path(&entry)?;
        let kind = entry.header().entry_type();
        let reject = |why: &str| Error::Verify(format!("entry `{path}`: {why}"));
        super::check_entry_path(path.trim_end_matches('/')).map_err(|why| reject(&why))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            // Re-tarred bundles may carry directories and global PAX headers: harmless.
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
        let reject = |why: &str| {
            let from = expected
                .artifacts
                .first()
                .and_then(|&a| index.artifacts.get(a))
                .map(|a| format!(" (artifact {})", a.source))
                .unwrap_or_default();
            Error::Verify(format!("entry `{path}`{from}: {why}"))
        };
        let size = entry.header().size().map_err(read_err)?;
        if size != expected.size {
            return Err(reject(&format!(
                "{size} bytes in the archive, but the signed index says {} (oversize or truncated entry)",
                expected.size
            )));
        }
        let mut hashing = HashingReader::new(ProgressReader {
            inner: &mut entry,
            bar: options.progress,
        });
        sink.accept(expected, &mut hashing)?;
        drain(&mut hashing, &mut buf)
            .map_err(|e| Error::from_bundle_read(&format!("entry `{path}`"), e))?;
        let (digest, n) = hashing.finish();
        if n != expected.size {
            return Err(reject(&format!(
                "only {n} of {} bytes present (truncated bundle)",
                expected.size
            )));
        }
        if digest != expected.sha256 {
            return Err(reject(&format!(
                "sha256 {digest} does not match the signed index ({}): the content was changed",
                expected.sha256
            )));
        }
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

/// Reads what the sink left unread, so that every byte is hashed.
fn drain(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    while reader.read(buf)? > 0 {}
    Ok(())
}

/// After the tar end-of-archive marker only zero padding may follow, and the compressed
/// stream must end cleanly (no truncation, no trailing garbage).
fn expect_only_padding(mut rest: Box<dyn Read + Send>) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::Verify("data after the end of the archive".into()));
        }
    }
}
