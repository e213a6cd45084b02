//! The seekable zstd stream of SPEC §3: independent frames (a new one at every tar entry
//! header and at most every [`FRAME_TAR_BYTES`]), compressed on every core at once, closed by
//! a seek table in the zstd seekable format (a skippable frame that stock `zstd -dc` ignores).
//!
//! Reading uses the seek table, when one is present, to decompress frames in parallel; the
//! table is checked against the frames (a mismatch is a verification failure) but never
//! trusted for content: the tar layer above hashes every entry against the signed index.
//! Without a table (a bundle recompressed by stock zstd) the stream is decoded serially.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{Receiver, sync_channel};

use super::pool::{OrderedPool, default_threads};
use crate::error::{Error, Result};

/// Tar bytes per frame written by this tool.
pub const FRAME_TAR_BYTES: usize = 4 << 20;
/// The largest frame a seek table may declare (SPEC §3: a frame at least every 8 MiB).
pub const MAX_FRAME_BYTES: u32 = 8 << 20;
/// The largest zstd window a stream without a seek table may ask for (32 MiB): stock
/// `zstd` up to `-19` uses at most 8 MiB; `--long` and `--ultra` levels are refused.
pub const MAX_WINDOW_LOG: u32 = 25;
/// Decompressed bytes the parallel decoder may hold ahead of the reader.
const MAX_READ_AHEAD: u64 = 32 << 20;
/// zstd level: level 3 is zstd's default and the benchmark's reference pipeline.
pub const ZSTD_LEVEL: i32 = 3;

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const FOOTER_LEN: u64 = 9;

/// One frame's sizes, as recorded in the seek table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSizes {
    pub compressed: u32,
    pub decompressed: u32,
}

type CompressedFrame = io::Result<(Vec<u8>, u32)>;

/// A `Write` that cuts what it is given into independently compressed frames.
pub struct FrameWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    pool: OrderedPool<Vec<u8>, CompressedFrame>,
    max_in_flight: usize,
    table: Vec<FrameSizes>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W, threads: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let pool = OrderedPool::new(
            threads,
            || {
                let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context");
                let _ = c.include_checksum(true);
                c
            },
            |c: &mut zstd::bulk::Compressor<'static>, data: Vec<u8>| {
                let len = data.len() as u32;
                c.compress(&data).map(|z| (z, len))
            },
        );
        FrameWriter {
            out,
            buf: Vec::with_capacity(FRAME_TAR_BYTES),
            pool,
            max_in_flight: threads + 1,
            table: Vec::new(),
        }
    }

    /// Ends the current frame, so that what is written next starts a new one.
    pub fn cut(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME_TAR_BYTES));
        self.pool.submit(data);
        while let Some(done) = self.pool.try_next() {
            self.emit(done)?;
        }
        while self.pool.in_flight() > self.max_in_flight {
            let done = self.pool.next_result().expect("in flight");
            self.emit(done)?;
        }
        Ok(())
    }

    fn emit(&mut self, frame: CompressedFrame) -> io::Result<()> {
        let (bytes, decompressed) = frame?;
        self.out.write_all(&bytes)?;
        self.table.push(FrameSizes {
            compressed: bytes.len() as u32,
            decompressed,
        });
        Ok(())
    }

    /// Flushes every frame, appends the seek table and returns the inner writer.
    pub fn finish(mut self) -> io::Result<(W, Vec<FrameSizes>)> {
        self.cut()?;
        while let Some(done) = self.pool.next_result() {
            self.emit(done)?;
        }
        self.out.write_all(&encode_seek_table(&self.table))?;
        self.out.flush()?;
        let table = std::mem::take(&mut self.table);
        Ok((self.out, table))
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = FRAME_TAR_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == FRAME_TAR_BYTES {
            self.cut()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The seek table as a skippable frame (no per-frame checksums; content is covered by the
/// signed index).
pub fn encode_seek_table(frames: &[FrameSizes]) -> Vec<u8> {
    let payload = frames.len() * 8 + FOOTER_LEN as usize;
    let mut out = Vec::with_capacity(8 + payload);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&f.compressed.to_le_bytes());
        out.extend_from_slice(&f.decompressed.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn table_mismatch(why: impl std::fmt::Display) -> Error {
    Error::Verify(format!("the seek table does not match the frames: {why}"))
}

/// Reads and checks the seek table at the end of a stream of `total` bytes. `Ok(None)` when
/// the stream has no seek table (recompressed by stock zstd).
pub fn read_seek_table<R: Read + Seek>(
    source: &mut R,
    total: u64,
) -> Result<Option<Vec<FrameSizes>>> {
    let io_err = |e| Error::from_bundle_read("the bundle", e);
    if total < FOOTER_LEN + 8 {
        return Ok(None);
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    source
        .seek(SeekFrom::Start(total - FOOTER_LEN))
        .map_err(io_err)?;
    source.read_exact(&mut footer).map_err(io_err)?;
    if u32_at(&footer, 5) != SEEKABLE_MAGIC {
        return Ok(None);
    }
    let count = u64::from(u32_at(&footer, 0));
    let descriptor = footer[4];
    if descriptor & 0x7c != 0 {
        return Err(table_mismatch("reserved descriptor bits are set"));
    }
    let entry_len = if descriptor & 0x80 != 0 { 12 } else { 8 };
    let table_len = 8 + count * entry_len + FOOTER_LEN;
    if table_len > total || count > total / 9 {
        return Err(table_mismatch(format!(
            "it declares {count} frames, more than the stream can hold"
        )));
    }
    let mut table = vec![0u8; table_len as usize];
    source
        .seek(SeekFrom::Start(total - table_len))
        .map_err(io_err)?;
    source.read_exact(&mut table).map_err(io_err)?;
    if u32_at(&table, 0) != SKIPPABLE_MAGIC || u64::from(u32_at(&table, 4)) != table_len - 8 {
        return Err(table_mismatch("its skippable-frame header is wrong"));
    }
    let mut frames = Vec::with_capacity(count as usize);
    let mut sum = 0u64;
    for i in 0..count as usize {
        let at = 8 + i * entry_len as usize;
        let f = FrameSizes {
            compressed: u32_at(&table, at),
            decompressed: u32_at(&table, at + 4),
        };
        if f.decompressed > MAX_FRAME_BYTES || f.compressed == 0 {
            return Err(table_mismatch(format!(
                "frame {i} declares {} bytes (limit {MAX_FRAME_BYTES})",
                f.decompressed
            )));
        }
        // A frame is read whole into memory before it is decoded: no larger than zstd's
        // worst case for the largest frame allowed.
        if f.compressed as usize > zstd_safe::compress_bound(MAX_FRAME_BYTES as usize) {
            return Err(table_mismatch(format!(
                "frame {i} declares {} compressed bytes, more than a frame of {MAX_FRAME_BYTES} bytes can take",
                f.compressed
            )));
        }
        sum += u64::from(f.compressed);
        frames.push(f);
    }
    if sum != total - table_len {
        return Err(table_mismatch(format!(
            "frames add up to {sum} bytes but the stream has {} before the table",
            total - table_len
        )));
    }
    Ok(Some(frames))
}

/// An error in the compressed stream itself (not the operating system's).
fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Decompressed bytes of a bundle, decoded on every core when a seek table is present.
pub fn decode<R: Read + Seek + Send + 'static>(
    mut source: R,
    total: u64,
) -> Result<Box<dyn Read + Send>> {
    let table = read_seek_table(&mut source, total)?;
    decode_from(source, table.as_deref(), 0)
}

/// Decompressed bytes from frame `first` on (0 for the whole stream): with a seek table,
/// decoded on every core; without one, only from the start, serially.
pub fn decode_from<R: Read + Seek + Send + 'static>(
    mut source: R,
    table: Option<&[FrameSizes]>,
    first: usize,
) -> Result<Box<dyn Read + Send>> {
    let start: u64 = table.map_or(0, |frames| {
        frames[..first.min(frames.len())]
            .iter()
            .map(|f| u64::from(f.compressed))
            .sum()
    });
    source
        .seek(SeekFrom::Start(start))
        .map_err(|e| Error::from_bundle_read("the bundle", e))?;
    Ok(match table {
        Some(frames) => Box::new(parallel_decoder(
            source,
            frames.get(first..).unwrap_or_default().to_vec(),
            first,
        )),
        None => Box::new(serial_decoder(source)?),
    })
}

/// Where each frame of a seek table starts in the decompressed stream, and the frame that
/// starts exactly at `offset`, if one does (the writer starts a frame at every entry).
pub fn frame_starting_at(frames: &[FrameSizes], offset: u64) -> Option<usize> {
    let mut at = 0u64;
    for (i, f) in frames.iter().enumerate() {
        if at == offset {
            return Some(i);
        }
        if at > offset {
            return None;
        }
        at += u64::from(f.decompressed);
    }
    None
}

/// Streams through stock zstd decoding (concatenated frames; truncation reported as an
/// error), with the compressed framing checked on the way in by [`FrameWalker`]: a stream
/// without a valid seek table may hold nothing but zstd frames, so unsigned data cannot
/// ride along in a skippable frame or after the end.
pub fn serial_decoder<R: Read + Send + 'static>(source: R) -> Result<impl Read + Send> {
    let mut decoder = zstd::stream::read::Decoder::new(FrameWalker::new(source))
        .map_err(|e| Error::Runtime(format!("zstd: {e}")))?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| Error::Runtime(format!("zstd: {e}")))?;
    Ok(decoder)
}

/// Where the walker is in the zstd framing.
#[derive(Clone, Copy, Debug)]
enum Walk {
    /// Expecting a frame's magic number (or the end of the stream).
    Magic,
    /// Inside the fixed part of a frame header: `left` bytes still to read.
    Header {
        left: usize,
        checksum: bool,
        /// The first header byte is a window descriptor (not a single-segment frame).
        window: bool,
    },
    /// Expecting a 3-byte block header.
    BlockHeader { checksum: bool },
    /// Inside a block's payload.
    Block {
        left: u64,
        last: bool,
        checksum: bool,
    },
    /// Inside the 4-byte content checksum.
    Checksum { left: usize },
}

/// A pass-through reader that parses zstd frame and block headers as the bytes flow by
/// (without buffering a frame) and fails on anything that is not a plain zstd frame.
pub struct FrameWalker<R> {
    inner: R,
    state: Walk,
    /// Bytes of a header being collected.
    pending: Vec<u8>,
    offset: u64,
    /// Where the frame being parsed started: bytes before it are known good.
    frame_start: u64,
    /// A problem found ahead of what the decoder has consumed, reported once the good
    /// bytes before it are used up (so the error is not blamed on an earlier entry).
    deferred: Option<(io::ErrorKind, String)>,
}

impl<R: Read> FrameWalker<R> {
    pub fn new(inner: R) -> Self {
        FrameWalker {
            inner,
            state: Walk::Magic,
            pending: Vec::with_capacity(16),
            offset: 0,
            frame_start: 0,
            deferred: None,
        }
    }

    fn fail(&self, why: &str) -> io::Error {
        corrupt(format!("at compressed byte {}: {why}", self.offset))
    }

    /// Advances the parser over `bytes`.
    fn walk(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.state {
                Walk::Magic | Walk::Header { .. } | Walk::BlockHeader { .. } => {
                    let want = match self.state {
                        Walk::Magic => 5, // magic + frame header descriptor
                        Walk::Header { left, .. } => left,
                        _ => 3,
                    };
                    if matches!(self.state, Walk::Magic) && self.pending.is_empty() {
                        self.frame_start = self.offset;
                    }
                    let take = (want - self.pending.len()).min(bytes.len());
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.offset += take as u64;
                    if self.pending.len() == want {
                        self.parse_pending()?;
                    }
                }
                Walk::Block {
                    left,
                    last,
                    checksum,
                } => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.offset += take;
                    self.state = if take < left {
                        Walk::Block {
                            left: left - take,
                            last,
                            checksum,
                        }
                    } else if !last {
                        Walk::BlockHeader { checksum }
                    } else if checksum {
                        Walk::Checksum { left: 4 }
                    } else {
                        Walk::Magic
                    };
                }
                Walk::Checksum { left } => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    self.offset += take as u64;
                    self.state = if take < left {
                        Walk::Checksum { left: left - take }
                    } else {
                        Walk::Magic
                    };
                }
            }
        }
        Ok(())
    }

    fn parse_pending(&mut self) -> io::Result<()> {
        let p = std::mem::take(&mut self.pending);
        self.state = match self.state {
            Walk::Magic => {
                let magic = u32_at(&p, 0);
                if magic & 0xFFFF_FFF0 == SKIPPABLE_MAGIC & 0xFFFF_FFF0 {
                    return Err(self.fail(
                        "a skippable frame (data that is not part of the bundle, or a seek table that does not match)",
                    ));
                }
                if magic != ZSTD_MAGIC {
                    return Err(
                        self.fail("not a zstd frame (garbage after the end of the bundle?)")
                    );
                }
                let fhd = p[4];
                if fhd & 0x08 != 0 {
                    return Err(self.fail("reserved bit set in a zstd frame header"));
                }
                let single_segment = fhd & 0x20 != 0;
                let window = usize::from(!single_segment);
                let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
                let fcs = match fhd >> 6 {
                    0 => usize::from(single_segment),
                    1 => 2,
                    2 => 4,
                    _ => 8,
                };
                let checksum = fhd & 0x04 != 0;
                match window + dict + fcs {
                    0 => Walk::BlockHeader { checksum },
                    left => Walk::Header {
                        left,
                        checksum,
                        window: window == 1,
                    },
                }
            }
            Walk::Header {
                checksum, window, ..
            } => {
                // A frame that needs a large window makes the decoder allocate it before
                // anything is checked: refuse it by its header (RFC 8878 §3.1.1.1.2).
                if window {
                    let log = 10 + u32::from(p[0] >> 3);
                    if log > MAX_WINDOW_LOG {
                        return Err(self.fail(&format!(
                            "a zstd frame asks for a {} MiB window, over the {} MiB this reader allows \
                             (recompressed with --long or --ultra? recompress with `zstd -19` or lower)",
                            1u64 << (log - 20),
                            1u64 << (MAX_WINDOW_LOG - 20)
                        )));
                    }
                }
                Walk::BlockHeader { checksum }
            }
            Walk::BlockHeader { checksum } => {
                let h = u32::from(p[0]) | u32::from(p[1]) << 8 | u32::from(p[2]) << 16;
                let last = h & 1 != 0;
                let size = u64::from(h >> 3);
                let left = match (h >> 1) & 3 {
                    0 | 2 => size,
                    1 => 1,
                    _ => return Err(self.fail("reserved zstd block type")),
                };
                if left == 0 {
                    if !last {
                        Walk::BlockHeader { checksum }
                    } else if checksum {
                        Walk::Checksum { left: 4 }
                    } else {
                        Walk::Magic
                    }
                } else {
                    Walk::Block {
                        left,
                        last,
                        checksum,
                    }
                }
            }
            other => other,
        };
        Ok(())
    }
}

impl<R: Read> Read for FrameWalker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.deferred {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        let start = self.offset;
        let n = self.inner.read(buf)?;
        if n == 0 {
            let clean = matches!(self.state, Walk::Magic) && self.pending.is_empty();
            if !clean {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the compressed stream ends inside a frame (at byte {})",
                        self.offset
                    ),
                ));
            }
            return Ok(0);
        }
        match self.walk(&buf[..n]) {
            Ok(()) => Ok(n),
            Err(e) => {
                let good = self.frame_start.saturating_sub(start).min(n as u64) as usize;
                self.deferred = Some((e.kind(), e.to_string()));
                if good > 0 { Ok(good) } else { Err(e) }
            }
        }
    }
}

/// Reads frames in order on one thread, decompresses them on all cores, and hands the
/// bytes back in order through a bounded channel.
fn parallel_decoder<R: Read + Send + 'static>(
    mut source: R,
    frames: Vec<FrameSizes>,
    first: usize,
) -> ChannelReader {
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(2);
    std::thread::spawn(move || {
        let threads = default_threads();
        let mut pool = OrderedPool::new(
            threads,
            || zstd::bulk::Decompressor::new().expect("zstd context"),
            |d: &mut zstd::bulk::Decompressor<'static>,
             (index, bytes, expect): (usize, Vec<u8>, FrameSizes)| {
                decompress_frame(d, index, &bytes, expect)
            },
        );
        let forward = |out: io::Result<Vec<u8>>| tx.send(out).is_ok();
        // Decompressed sizes of the frames in flight, oldest first: read-ahead is bounded
        // in bytes (not per core), whatever the machine.
        let mut ahead = std::collections::VecDeque::new();
        for (index, sizes) in frames.iter().copied().enumerate() {
            let index = first + index;
            while !ahead.is_empty()
                && (pool.in_flight() >= threads
                    || ahead.iter().sum::<u64>() + u64::from(sizes.decompressed) > MAX_READ_AHEAD)
            {
                ahead.pop_front();
                let Some(out) = pool.next_result() else {
                    return;
                };
                if !forward(out) {
                    return;
                }
            }
            let mut bytes = vec![0u8; sizes.compressed as usize];
            if let Err(e) = source.read_exact(&mut bytes) {
                let _ = forward(Err(e));
                return;
            }
            pool.submit((index, bytes, sizes));
            ahead.push_back(u64::from(sizes.decompressed));
        }
        while let Some(out) = pool.next_result() {
            if !forward(out) {
                return;
            }
        }
    });
    ChannelReader {
        rx,
        current: Vec::new(),
        pos: 0,
        failed: None,
    }
}

fn decompress_frame(
    d: &mut zstd::bulk::Decompressor<'static>,
    index: usize,
    bytes: &[u8],
    expect: FrameSizes,
) -> io::Result<Vec<u8>> {
    if bytes.len() < 4 || u32_at(bytes, 0) != ZSTD_MAGIC {
        return Err(corrupt(format!(
            "seek table frame {index} does not start a zstd frame"
        )));
    }
    match zstd_safe::find_frame_compressed_size(bytes) {
        Ok(n) if n == bytes.len() => {}
        _ => {
            return Err(corrupt(format!(
                "the seek table does not match the frames: frame {index} is not {} bytes long",
                bytes.len()
            )));
        }
    }
    if let Ok(Some(declared)) = zstd_safe::get_frame_content_size(bytes)
        && declared != u64::from(expect.decompressed)
    {
        return Err(corrupt(format!(
            "the seek table does not match the frames: frame {index} holds {declared} bytes, the table says {}",
            expect.decompressed
        )));
    }
    let out = d
        .decompress(bytes, expect.decompressed as usize)
        .map_err(|e| corrupt(format!("zstd frame {index} is damaged: {e}")))?;
    if out.len() != expect.decompressed as usize {
        return Err(corrupt(format!(
            "the seek table does not match the frames: frame {index} holds {} bytes, the table says {}",
            out.len(),
            expect.decompressed
        )));
    }
    Ok(out)
}

/// The consuming end of the parallel decoder.
struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    failed: Option<(io::ErrorKind, String)>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    self.current = next;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn compress(data: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new(), 2);
        let mut last = 0;
        for &c in cuts {
            w.write_all(&data[last..c]).unwrap();
            w.cut().unwrap();
            last = c;
        }
        w.write_all(&data[last..]).unwrap();
        w.finish().unwrap().0
    }

    /// Everything `decode` yields for a whole compressed stream.
    fn decode_all(z: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decode(Cursor::new(z.to_vec()), z.len() as u64)
            .map_err(|e| io::Error::other(e.to_string()))?
            .read_to_end(&mut out)?;
        Ok(out)
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_u64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 { b'a' } else { x as u8 }
            })
            .collect()
    }

    #[test]
    fn frames_roundtrip_through_both_decoders_and_table_matches() {
        let data = pseudo_random(FRAME_TAR_BYTES * 2 + 1000);
        let z = compress(&data, &[10, 5000]);
        let frames = read_seek_table(&mut Cursor::new(&z), z.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames
                .iter()
                .map(|f| f.decompressed as usize)
                .sum::<usize>(),
            data.len()
        );
        assert_eq!(decode_all(&z).unwrap(), data);
        // Without its table the same frames decode serially.
        let body = z[..z.len() - (8 + frames.len() * 8 + 9)].to_vec();
        let mut out = Vec::new();
        serial_decoder(Cursor::new(body))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn the_walker_rejects_skippable_frames_and_garbage_without_a_table() {
        let data = pseudo_random(300_000);
        let z = compress(&data, &[1000]);
        let table_len = 8 + 2 * 8 + 9;
        let body = z[..z.len() - table_len].to_vec();
        // Without the table: plain frames decode.
        assert_eq!(decode_all(&body).unwrap(), data);
        // Stock zstd output (one frame, checksum) passes the walker too.
        let stock = zstd::stream::encode_all(&data[..], 19).unwrap();
        assert_eq!(decode_all(&stock).unwrap(), data);
        // A skippable frame after the table (so the table is not at the end) is rejected.
        let mut extra = z.clone();
        extra.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 2, 0, 0, 0, 1, 2]);
        let err = decode_all(&extra).unwrap_err();
        assert!(err.to_string().contains("skippable"), "{err}");
        // Garbage after the last frame, and a stream cut inside a frame.
        let mut junk = body.clone();
        junk.extend_from_slice(b"junk!");
        assert!(decode_all(&junk).is_err());
        let cut = body[..body.len() - 3].to_vec();
        assert!(decode_all(&cut).is_err());
    }

    #[test]
    fn a_table_that_lies_is_rejected() {
        let data = pseudo_random(100_000);
        let mut z = compress(&data, &[50_000]);
        // Swap the two frames' decompressed sizes in the table: sums still match.
        let n = z.len();
        let entries = n - 9 - 16;
        z[entries + 4..entries + 8].copy_from_slice(&49_999u32.to_le_bytes());
        z[entries + 12..entries + 16].copy_from_slice(&50_001u32.to_le_bytes());
        let err = decode_all(&z).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
