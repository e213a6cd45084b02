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
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::from_bundle_read("the bundle", e))?;
    Ok(match table {
        Some(frames) => Box::new(parallel_decoder(source, frames)),
        None => Box::new(serial_decoder(source)?),
    })
}

/// Streams through stock zstd decoding: concatenated frames, skippable frames skipped,
/// truncation and trailing garbage reported as errors.
pub fn serial_decoder<R: Read + Send + 'static>(source: R) -> Result<impl Read + Send> {
    zstd::stream::read::Decoder::new(source).map_err(|e| Error::Runtime(format!("zstd: {e}")))
}

/// Reads frames in order on one thread, decompresses them on all cores, and hands the
/// bytes back in order through a bounded channel.
fn parallel_decoder<R: Read + Send + 'static>(
    mut source: R,
    frames: Vec<FrameSizes>,
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
        for (index, sizes) in frames.iter().copied().enumerate() {
            let mut bytes = vec![0u8; sizes.compressed as usize];
            if let Err(e) = source.read_exact(&mut bytes) {
                let _ = forward(Err(e));
                return;
            }
            pool.submit((index, bytes, sizes));
            while pool.in_flight() > threads {
                let Some(out) = pool.next_result() else {
                    return;
                };
                if !forward(out) {
                    return;
                }
            }
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
    let out = d
        .decompress(bytes, expect.decompressed as usize)
        .map_err(|e| {
            corrupt(format!(
                "frame {index} is corrupt or does not match the seek table: {e}"
            ))
        })?;
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
        let mut out = Vec::new();
        decode(Cursor::new(z.clone()), z.len() as u64)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let mut out = Vec::new();
        serial_decoder(Cursor::new(z))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
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
        let mut out = Vec::new();
        let err = decode(Cursor::new(z), n as u64)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
