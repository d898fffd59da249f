//! CAR v1: reading with every block's hash checked, and writing.
//!
//! Two readers share one set of rules ([`CarLimits`], CID checks, hash
//! checks):
//! - [`CarStream`]: streaming over any `AsyncRead`, on iroh-car. Memory is
//!   one block at a time, whatever the CAR's size; used for `getRepo`
//!   bodies coming off the network.
//! - [`read_car`]: a whole CAR already in memory (a firehose commit's
//!   `blocks` field, a test fixture). Zero-copy slices of the input, and the
//!   hashing is spread over the available cores, because SHA-256 is the cost
//!   that dominates (see `benches/README.md`).
//!
//! Block order, duplicate blocks and blocks nothing links to are all
//! accepted, as the sync spec asks of consumers; what is *required* (the
//! commit, the MST, records) is checked by whoever walks the blocks.
//!
//! # Tricky bits
//! - iroh-car reports EOF inside a length varint as a clean end of file. The
//!   stream counts the bytes it hands to iroh-car and compares them with the
//!   sections it got back, so a CAR cut anywhere is reported as truncated.
//! - iroh-car does not verify hashes; this module does, for every block.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use cid::Cid;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, Chain, ReadBuf};

use crate::blocks::BlockMap;
use crate::cbor::{Encoder, MAJOR_ARRAY, MAJOR_MAP};
use crate::{Error, Result, verify_block};

/// Bounds on what a CAR may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarLimits {
    /// Largest block accepted. Default 2 MiB (records are at most 1 MiB; the
    /// rest is headroom). iroh-car itself refuses sections over 4 MiB.
    pub max_block_bytes: u64,
    /// Largest CAR accepted. Default 16 GiB.
    pub max_total_bytes: u64,
    /// Most blocks accepted. Default 100 million.
    pub max_blocks: u64,
}

impl Default for CarLimits {
    fn default() -> Self {
        CarLimits {
            max_block_bytes: 2 * 1024 * 1024,
            max_total_bytes: 16 * 1024 * 1024 * 1024,
            max_blocks: 100_000_000,
        }
    }
}

/// A CAR read fully into memory.
#[derive(Debug, Clone, Default)]
pub struct CarFile {
    /// The header's roots (at least one).
    pub roots: Vec<Cid>,
    /// Every block, hash-verified; duplicates collapsed.
    pub blocks: BlockMap,
}

impl CarFile {
    /// The first root: the commit CID in every atproto CAR.
    pub fn root(&self) -> Option<&Cid> {
        self.roots.first()
    }
}

// ---------------------------------------------------------------------------
// In-memory reader

/// Reads and verifies a whole CAR held in memory. Blocks are zero-copy
/// slices of `bytes`.
pub fn read_car(bytes: Bytes, limits: &CarLimits) -> Result<CarFile> {
    if bytes.len() as u64 > limits.max_total_bytes {
        return Err(Error::CarTooLarge {
            limit: limits.max_total_bytes,
        });
    }
    let (roots, sections) = parse_sections(&bytes, limits)?;
    verify_parallel(&bytes, &sections)?;
    let mut blocks = BlockMap::with_capacity(sections.len());
    for s in &sections {
        blocks.insert(s.cid, bytes.slice(s.data.clone()));
    }
    Ok(CarFile { roots, blocks })
}

/// One block's position in the input.
struct Section {
    cid: Cid,
    data: std::ops::Range<usize>,
}

fn parse_sections(buf: &[u8], limits: &CarLimits) -> Result<(Vec<Cid>, Vec<Section>)> {
    let mut pos = 0usize;
    let header_len =
        read_varint(buf, &mut pos)?.ok_or_else(|| Error::CarTruncated("empty input".into()))?;
    let header_end = end_of(buf, pos, header_len, "header")?;
    let roots = decode_header(&buf[pos..header_end])?;
    pos = header_end;

    let mut sections = Vec::new();
    while let Some(len) = read_varint(buf, &mut pos)? {
        if sections.len() as u64 >= limits.max_blocks {
            return Err(Error::TooManyBlocks {
                limit: limits.max_blocks,
            });
        }
        let end = end_of(buf, pos, len, "block")?;
        let (cid, cid_len) = crate::read_cid_prefix(&buf[pos..end])
            .map_err(|e| Error::CarMalformed(format!("bad cid at byte {pos}: {e}")))?;
        let data_start = pos + cid_len;
        let size = (end - data_start) as u64;
        if size > limits.max_block_bytes {
            return Err(Error::BlockTooLarge {
                size,
                limit: limits.max_block_bytes,
            });
        }
        sections.push(Section {
            cid,
            data: data_start..end,
        });
        pos = end;
    }
    Ok((roots, sections))
}

fn end_of(buf: &[u8], pos: usize, len: u64, what: &str) -> Result<usize> {
    let remaining = (buf.len() - pos) as u64;
    if len > remaining {
        return Err(Error::CarTruncated(format!(
            "{what} of {len} bytes at byte {pos} but only {remaining} remain"
        )));
    }
    if len == 0 {
        return Err(Error::CarMalformed(format!(
            "empty {what} section at byte {pos}"
        )));
    }
    Ok(pos + len as usize)
}

/// Unsigned LEB128, at most 9 bytes (63 bits), minimal. `Ok(None)` only at
/// a clean end of input.
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<Option<u64>> {
    if *pos == buf.len() {
        return Ok(None);
    }
    let start = *pos;
    let mut value = 0u64;
    for i in 0..9 {
        let Some(&b) = buf.get(start + i) else {
            return Err(Error::CarTruncated(format!("varint cut at byte {start}")));
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(Error::CarMalformed(format!(
                    "non-minimal varint at byte {start}"
                )));
            }
            *pos = start + i + 1;
            return Ok(Some(value));
        }
    }
    Err(Error::CarMalformed(format!(
        "varint longer than 9 bytes at byte {start}"
    )))
}

fn decode_header(bytes: &[u8]) -> Result<Vec<Cid>> {
    let bad = |e: crate::cbor::CborError| Error::CarHeader(e.to_string());
    let mut d = crate::cbor::Decoder::new(bytes);
    let n = d.map_len().map_err(bad)?;
    let mut roots = None;
    let mut version = None;
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let key = d.key(prev).map_err(bad)?;
        prev = Some(key);
        match key {
            b"roots" => {
                let count = d.array_len().map_err(bad)?;
                let mut r = Vec::new();
                for _ in 0..count {
                    r.push(d.link().map_err(bad)?);
                }
                roots = Some(r);
            }
            b"version" => version = Some(d.int().map_err(bad)?),
            _ => d.skip_value(8).map_err(bad)?,
        }
    }
    d.finish().map_err(bad)?;
    if version != Some(1) {
        return Err(Error::CarHeader(format!("version {version:?}, want 1")));
    }
    match roots {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(Error::CarHeader("no roots".into())),
    }
}

/// Hash-checks every section, on all cores when there is enough work.
fn verify_parallel(buf: &[u8], sections: &[Section]) -> Result<()> {
    let check = |chunk: &[Section]| -> Result<()> {
        for s in chunk {
            verify_block(&s.cid, &buf[s.data.clone()])?;
        }
        Ok(())
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below ~1 MiB thread start-up costs more than it saves.
    if threads < 2 || buf.len() < (1 << 20) {
        return check(sections);
    }
    let chunk = sections.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = sections
            .chunks(chunk)
            .map(|c| scope.spawn(move || check(c)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::CarMalformed("verifier thread panicked".into())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

// ---------------------------------------------------------------------------
// Streaming reader

/// Counts bytes handed to iroh-car, and remembers EOF and the first I/O
/// error, which iroh-car would otherwise flatten into strings.
struct CountingReader<R> {
    inner: R,
    state: Arc<ReadState>,
}

#[derive(Default)]
struct ReadState {
    bytes: AtomicU64,
    eof: AtomicBool,
    error: std::sync::Mutex<Option<std::io::Error>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n == 0 && buf.remaining() > 0 {
                    self.state.eof.store(true, Ordering::Relaxed);
                }
                self.state.bytes.fetch_add(n, Ordering::Relaxed);
            }
            Poll::Ready(Err(e)) => {
                if let Ok(mut slot) = self.state.error.lock() {
                    slot.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
                }
            }
            Poll::Pending => {}
        }
        r
    }
}

/// The header bytes barn already read, followed by the rest of the input.
type Replayed<R> = Chain<std::io::Cursor<Vec<u8>>, BufReader<R>>;

/// A streaming CAR reader: one verified block at a time.
pub struct CarStream<R: AsyncRead + Unpin> {
    inner: iroh_car::CarReader<CountingReader<Replayed<R>>>,
    state: Arc<ReadState>,
    roots: Vec<Cid>,
    limits: CarLimits,
    /// Where the next section starts, by our own accounting.
    pos: u64,
    blocks: u64,
}

impl<R: AsyncRead + Unpin> CarStream<R> {
    /// Reads the header. Fails on a malformed or truncated header.
    pub async fn new(reader: R, limits: CarLimits) -> Result<Self> {
        let mut buffered = BufReader::with_capacity(256 * 1024, reader);
        // The header is read and decoded strictly here (iroh-car's own
        // header decoding is lenient), then replayed to iroh-car so both
        // readers accept exactly the same CARs.
        let header = read_header_section(&mut buffered).await?;
        let state = Arc::new(ReadState::default());
        let counting = CountingReader {
            inner: std::io::Cursor::new(header).chain(buffered),
            state: state.clone(),
        };
        let inner = match iroh_car::CarReader::new(counting).await {
            Ok(r) => r,
            Err(e) => return Err(stream_error(&state, e, "header")),
        };
        let roots = inner.header().roots().to_vec();
        let header_bytes = state.bytes.load(Ordering::Relaxed);
        Ok(CarStream {
            inner,
            state,
            roots,
            limits,
            pos: header_bytes,
            blocks: 0,
        })
    }

    /// The header's roots.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.pos
    }

    /// The next block, hash-verified; `None` at a clean end.
    pub async fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>> {
        let next = match self.inner.next_block().await {
            Ok(n) => n,
            Err(e) => return Err(stream_error(&self.state, e, "block")),
        };
        let Some((cid, data)) = next else {
            if let Some(e) = take_io_error(&self.state) {
                return Err(Error::Io(e));
            }
            if self.state.bytes.load(Ordering::Relaxed) != self.pos {
                return Err(Error::CarTruncated(format!(
                    "length varint cut at byte {}",
                    self.pos
                )));
            }
            return Ok(None);
        };
        let size = data.len() as u64;
        let section = size + cid.encoded_len() as u64;
        self.pos += section + varint_len(section);
        self.blocks += 1;
        if size > self.limits.max_block_bytes {
            return Err(Error::BlockTooLarge {
                size,
                limit: self.limits.max_block_bytes,
            });
        }
        if self.pos > self.limits.max_total_bytes {
            return Err(Error::CarTooLarge {
                limit: self.limits.max_total_bytes,
            });
        }
        if self.blocks > self.limits.max_blocks {
            return Err(Error::TooManyBlocks {
                limit: self.limits.max_blocks,
            });
        }
        verify_block(&cid, &data)?;
        Ok(Some((cid, Bytes::from(data))))
    }

    /// Reads every remaining block into a map.
    pub async fn collect(mut self) -> Result<CarFile> {
        let mut blocks = BlockMap::new();
        while let Some((cid, data)) = self.next_block().await? {
            blocks.insert(cid, data);
        }
        Ok(CarFile {
            roots: self.roots,
            blocks,
        })
    }
}

/// Largest CAR header accepted (a header is a handful of root CIDs).
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// Reads the header section (varint length + body) and decodes it strictly;
/// returns the section's bytes for replay.
async fn read_header_section<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>> {
    // Gather the length varint's bytes (the last one has no continuation
    // bit), then decode them with the same rules as the in-memory reader.
    let mut section = Vec::with_capacity(64);
    while section.last().is_none_or(|b| b & 0x80 != 0) && section.len() < 10 {
        match r.read_u8().await {
            Ok(b) => section.push(b),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Error::CarTruncated(if section.is_empty() {
                    "empty input".into()
                } else {
                    "header length cut".into()
                }));
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
    let mut pos = 0;
    let len = read_varint(&section, &mut pos)?.unwrap_or_default();
    if len == 0 || len > MAX_HEADER_BYTES {
        return Err(Error::CarHeader(format!("header of {len} bytes")));
    }
    let start = section.len();
    section.resize(start + len as usize, 0);
    if let Err(e) = r.read_exact(&mut section[start..]).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::CarTruncated("header cut".into())
        } else {
            Error::Io(e)
        });
    }
    decode_header(&section[start..])?;
    Ok(section)
}

fn take_io_error(state: &ReadState) -> Option<std::io::Error> {
    state.error.lock().ok().and_then(|mut e| e.take())
}

fn stream_error(state: &ReadState, e: iroh_car::Error, what: &str) -> Error {
    if let Some(io) = take_io_error(state) {
        return Error::Io(io);
    }
    match e {
        iroh_car::Error::LdReadTooLarge(size) => Error::BlockTooLarge {
            size: size as u64,
            limit: 4 * 1024 * 1024,
        },
        _ if state.eof.load(Ordering::Relaxed) => Error::CarTruncated(format!("{what}: {e}")),
        iroh_car::Error::InvalidFile(m) => Error::CarHeader(m),
        _ if what == "header" => Error::CarHeader(e.to_string()),
        _ => Error::CarMalformed(e.to_string()),
    }
}

fn varint_len(v: u64) -> u64 {
    let bits = 64 - v.max(1).leading_zeros() as u64;
    bits.div_ceil(7)
}

// ---------------------------------------------------------------------------
// Writing

/// Writes a CAR v1 to any `Write`: header first, then blocks as given.
pub struct CarWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header with `roots`.
    pub fn new(mut out: W, roots: &[Cid]) -> std::io::Result<Self> {
        let mut e = Encoder::with_capacity(64);
        e.head(MAJOR_MAP, 2);
        e.text("roots");
        e.head(MAJOR_ARRAY, roots.len() as u64);
        for r in roots {
            e.link(r);
        }
        e.text("version");
        e.int(1);
        let mut written = write_varint(&mut out, e.out.len() as u64)?;
        out.write_all(&e.out)?;
        written += e.out.len() as u64;
        Ok(CarWriter { out, written })
    }

    /// Appends one block.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        let cid_bytes = cid.to_bytes();
        let len = (cid_bytes.len() + data.len()) as u64;
        self.written += write_varint(&mut self.out, len)?;
        self.out.write_all(&cid_bytes)?;
        self.out.write_all(data)?;
        self.written += len;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_varint(out: &mut impl Write, mut v: u64) -> std::io::Result<u64> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = b;
            n += 1;
            break;
        }
        buf[n] = b | 0x80;
        n += 1;
    }
    out.write_all(&buf[..n])?;
    Ok(n as u64)
}

/// Writes a CAR into a `Vec` from `(cid, bytes)` pairs.
pub fn write_car<'a>(
    roots: &[Cid],
    blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    if let Ok(mut w) = CarWriter::new(&mut buf, roots) {
        for (cid, data) in blocks {
            let _ = w.write_block(cid, data);
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid_for_cbor;

    type Sample = (Vec<u8>, Cid, Vec<(Cid, Vec<u8>)>);

    fn sample() -> Sample {
        let blocks: Vec<(Cid, Vec<u8>)> = (0..50u32)
            .map(|i| {
                let data = serde_ipld_dagcbor::to_vec(&format!("block number {i}")).unwrap();
                (cid_for_cbor(&data), data)
            })
            .collect();
        let root = blocks[0].0;
        let car = write_car(&[root], blocks.iter().map(|(c, d)| (c, d.as_slice())));
        (car, root, blocks)
    }

    #[test]
    fn fast_cid_prefix_matches_general_parser() {
        for cid in [cid_for_cbor(b"x"), crate::cid_for_raw(b"y")] {
            let mut section = cid.to_bytes();
            section.extend_from_slice(b"data");
            assert_eq!(
                crate::read_cid_prefix(&section).unwrap(),
                (cid, cid.encoded_len())
            );
        }
        // A CIDv0 (bare multihash) takes the general path.
        let v0 = Cid::new_v0(*cid_for_cbor(b"z").hash()).unwrap();
        assert_eq!(crate::read_cid_prefix(&v0.to_bytes()).unwrap(), (v0, 34));
    }

    #[test]
    fn varint_len_matches_writer() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64] {
            let mut b = Vec::new();
            assert_eq!(write_varint(&mut b, v).unwrap(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn in_memory_and_streaming_readers_agree() {
        let (car, root, blocks) = sample();
        let mem = read_car(Bytes::from(car.clone()), &CarLimits::default()).unwrap();
        assert_eq!(mem.roots, vec![root]);
        assert_eq!(mem.blocks.len(), blocks.len());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let streamed = rt
            .block_on(async {
                CarStream::new(car.as_slice(), CarLimits::default())
                    .await?
                    .collect()
                    .await
            })
            .unwrap();
        assert_eq!(streamed.roots, vec![root]);
        for (cid, data) in &blocks {
            assert_eq!(mem.blocks.get(cid).unwrap().as_ref(), data.as_slice());
            assert_eq!(streamed.blocks.get(cid).unwrap().as_ref(), data.as_slice());
        }
    }
}
