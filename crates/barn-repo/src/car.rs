//! CAR v1: reading with every block's hash checked, and writing.
//!
//! Two readers share one set of rules ([`CarLimits`], CID checks, hash
//! checks):
//! - [`CarStream`]: streaming over any `AsyncRead`, on iroh-car. Memory is
//!   one block at a time, whatever the CAR's size; used for `getRepo`
//!   bodies coming off the network.
//! - [`read_car`]: a whole CAR already in memory (a firehose commit's
//!   `blocks` field, a test fixture). Zero-copy slices of the input; each
//!   section is parsed and hashed in one pass, and the input is split over
//!   the available cores, because SHA-256 is the cost that dominates (see
//!   `benches/README.md`).
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
//! - Sections can only be found by walking from the header, so the
//!   in-memory reader's split points are guesses, each trusted only once
//!   the walk before it lands on it exactly (see `read_car_fast`).

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use cid::Cid;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

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
    // Asking for the core count reads cgroup files (tens of µs): only
    // when the CAR is big enough to split, and only once.
    let threads = if bytes.len() >= PARALLEL_MIN_BYTES {
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    } else {
        1
    };
    if let Some(car) = read_car_fast(&bytes, limits, threads) {
        return Ok(car);
    }
    // The fast path only ever accepts; anything it could not prove good
    // (a malformed section, a bad hash, a limit) is decided here, one
    // section after another: every section parsed, then every block hashed
    // in order, so the error reported is the same whatever the fast path
    // saw, and parse errors win over hash errors.
    let (roots, entries) = parse_sections(&bytes, limits)?;
    for (cid, data) in &entries {
        verify_block(cid, data)?;
    }
    Ok(CarFile {
        roots,
        blocks: BlockMap::from_entries(entries),
    })
}

/// Below this size one thread does it all: starting threads costs more.
const PARALLEL_MIN_BYTES: usize = 1 << 20;
/// How far past a split point to look for a section start before giving up
/// on that split (a block larger than this just means one thread less).
const SPLIT_SCAN_BYTES: usize = 1 << 16;
/// Consecutive plausible sections required before a split point is used.
const SPLIT_CHAIN: usize = 4;

/// The happy path: every section parsed and hashed in one pass (the hash
/// streams through each block right after its header was read, so the
/// parser never waits for memory), split over the available cores.
///
/// Sections can only be found by walking from the start, so the split is
/// speculative: each extra thread starts at a guessed section boundary in
/// its share of the input. A thread that reaches the next thread's start
/// exactly has proved that guess right (parsing from a true boundary is
/// deterministic), and stops there; one that steps over it (a wrong guess)
/// carries on. Following the proved links from the header gives exactly the
/// sections a single walk would give, so a wrong guess costs time, never
/// correctness. Returns `None` when any section on the way fails a check.
fn read_car_fast(bytes: &Bytes, limits: &CarLimits, threads: usize) -> Option<CarFile> {
    let buf: &[u8] = bytes;
    let mut pos = 0usize;
    let header_len = read_varint(buf, &mut pos).ok()??;
    let header_end = end_of(buf, pos, header_len, "header").ok()?;
    let roots = decode_header(&buf[pos..header_end]).ok()?;

    let mut starts = vec![header_end];
    if threads > 1 && buf.len() >= PARALLEL_MIN_BYTES {
        for k in 1..threads {
            let last = starts.last().copied().unwrap_or(header_end);
            let from = (buf.len() / threads * k).max(last + 1);
            if let Some(p) = find_section_start(buf, from, limits) {
                starts.push(p);
            }
        }
    }
    let mut runs: Vec<Option<Run>> = if starts.len() == 1 {
        vec![scan_run(bytes, &starts, 0, limits)]
    } else {
        let starts = &starts;
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..starts.len())
                .map(|k| scope.spawn(move || scan_run(bytes, starts, k, limits)))
                .collect();
            let mut runs = vec![scan_run(bytes, starts, 0, limits)];
            // A panicked helper is a failed run: the slow path decides.
            runs.extend(helpers.into_iter().map(|h| h.join().ok().flatten()));
            runs
        })
    };

    let mut entries: Vec<(Cid, Bytes)> = Vec::new();
    let mut k = 0;
    loop {
        let run = runs.get_mut(k)?.take()?;
        if entries.is_empty() {
            entries = run.entries;
        } else {
            entries.extend(run.entries);
        }
        match run.linked_to {
            Some(next) => k = next,
            None => break,
        }
    }
    if entries.len() as u64 > limits.max_blocks {
        return None;
    }
    Some(CarFile {
        roots,
        blocks: BlockMap::from_entries(entries),
    })
}

/// The verified sections one thread walked.
struct Run {
    entries: Vec<(Cid, Bytes)>,
    /// The run whose start this one reached exactly; `None`: it reached the
    /// end of the input.
    linked_to: Option<usize>,
}

/// Walks sections from `starts[k]`, hashing each block as it goes, until
/// the end of the input or another run's start; `None` at the first
/// section that fails any check of [`parse_sections`] or its hash.
fn scan_run(bytes: &Bytes, starts: &[usize], k: usize, limits: &CarLimits) -> Option<Run> {
    let buf: &[u8] = bytes;
    let mut pos = *starts.get(k)?;
    let mut next = k + 1;
    let mut entries = Vec::new();
    loop {
        // Starts passed over were wrong guesses; keep walking.
        while starts.get(next).is_some_and(|&s| s < pos) {
            next += 1;
        }
        if starts.get(next) == Some(&pos) {
            return Some(Run {
                entries,
                linked_to: Some(next),
            });
        }
        let Some(len) = read_varint(buf, &mut pos).ok()? else {
            return Some(Run {
                entries,
                linked_to: None,
            });
        };
        if entries.len() as u64 >= limits.max_blocks {
            return None;
        }
        let end = end_of(buf, pos, len, "block").ok()?;
        let (cid, cid_len) = crate::read_cid_prefix(&buf[pos..end]).ok()?;
        let data = pos + cid_len..end;
        if data.len() as u64 > limits.max_block_bytes {
            return None;
        }
        verify_block(&cid, &buf[data.clone()]).ok()?;
        entries.push((cid, bytes.slice(data)));
        pos = end;
    }
}

/// The first position at or after `from` (within [`SPLIT_SCAN_BYTES`]) where
/// [`SPLIT_CHAIN`] plausible atproto sections follow one another (or end
/// the input exactly). Only a guess: [`read_car_fast`] proves or drops it.
fn find_section_start(buf: &[u8], from: usize, limits: &CarLimits) -> Option<usize> {
    let until = from.saturating_add(SPLIT_SCAN_BYTES).min(buf.len());
    (from..until).find(|&p| {
        let mut at = p;
        for _ in 0..SPLIT_CHAIN {
            if at == buf.len() {
                return true;
            }
            match plausible_section_end(buf, at, limits) {
                Some(end) => at = end,
                None => return false,
            }
        }
        true
    })
}

/// Where a section starting at `pos` would end, if it looks like an atproto
/// section: a minimal length varint, a v1 DAG-CBOR or raw SHA-256 CID, the
/// block within the input and the size limit. Never allocates: it runs at
/// every byte of a scan.
fn plausible_section_end(buf: &[u8], pos: usize, limits: &CarLimits) -> Option<usize> {
    let mut len = 0u64;
    let mut at = pos;
    for i in 0..4 {
        let b = *buf.get(at)?;
        at += 1;
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return None;
            }
            break;
        }
        if i == 3 {
            return None;
        }
    }
    if len < 36 || len - 36 > limits.max_block_bytes {
        return None;
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    if end > buf.len() {
        return None;
    }
    match buf.get(at..at + 4)? {
        [0x01, 0x71 | 0x55, 0x12, 0x20] => Some(end),
        _ => None,
    }
}

/// `(cid, block)` pairs in input order.
type Sections = Vec<(Cid, Bytes)>;

/// Splits the CAR into its roots and `(cid, block)` sections, in order.
/// Blocks are slices of `bytes`; nothing is hashed yet.
fn parse_sections(bytes: &Bytes, limits: &CarLimits) -> Result<(Vec<Cid>, Sections)> {
    let buf: &[u8] = bytes;
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
        sections.push((cid, bytes.slice(data_start..end)));
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

// ---------------------------------------------------------------------------
// Streaming reader

/// Size of the streaming reader's buffer: large reads from the source, so
/// that a network body is not read a few bytes at a time.
const STREAM_BUFFER: usize = 256 * 1024;

/// The source as iroh-car sees it: a buffered reader that also counts the
/// bytes it hands out and remembers EOF and the first I/O error (iroh-car
/// would otherwise flatten both into strings).
///
/// One layer instead of three (`BufReader`, a `Chain` replaying the header,
/// a counting wrapper): iroh-car reads every length varint one byte per
/// call, so each layer was paid about four times per block. The header is
/// replayed by simply not consuming it: it is decoded in place in the
/// buffer, then iroh-car reads it again from there.
struct CarInput<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[pos..filled]`.
    pos: usize,
    filled: usize,
    state: Arc<ReadState>,
}

#[derive(Default)]
struct ReadState {
    /// Bytes handed to iroh-car. Only the reader writes it (a load and a
    /// store, not a read-modify-write, as there is no other writer).
    bytes: AtomicU64,
    eof: AtomicBool,
    error: std::sync::Mutex<Option<std::io::Error>>,
}

impl<R: AsyncRead + Unpin> CarInput<R> {
    /// Reads from the source until at least `n` unread bytes are buffered
    /// (`n` at most the buffer size); fewer only at the end of the input.
    async fn fill_to(&mut self, n: usize) -> std::io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        while self.filled < n {
            let got = self.inner.read(&mut self.buf[self.filled..]).await?;
            if got == 0 {
                break;
            }
            self.filled += got;
        }
        Ok(())
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    fn count(&self, n: usize) {
        let bytes = &self.state.bytes;
        bytes.store(bytes.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
    }

    fn record(&self, e: &std::io::Error) {
        if let Ok(mut slot) = self.state.error.lock() {
            slot.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CarInput<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.filled {
            // Empty buffer: a read at least as large as the buffer goes
            // straight to `out`, saving a copy; otherwise refill.
            this.pos = 0;
            this.filled = 0;
            let before = out.filled().len();
            let r = if out.remaining() >= this.buf.len() {
                Pin::new(&mut this.inner).poll_read(cx, out)
            } else {
                let mut rb = ReadBuf::new(&mut this.buf);
                let r = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
                this.filled = rb.filled().len();
                r
            };
            match r {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    this.record(&e);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
            let direct = out.filled().len() - before;
            if direct > 0 {
                this.count(direct);
                return Poll::Ready(Ok(()));
            }
            if this.filled == 0 {
                if out.remaining() > 0 {
                    this.state.eof.store(true, Ordering::Relaxed);
                }
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.filled - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        this.count(n);
        Poll::Ready(Ok(()))
    }
}

/// A streaming CAR reader: one verified block at a time.
pub struct CarStream<R: AsyncRead + Unpin> {
    inner: iroh_car::CarReader<CarInput<R>>,
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
        let state = Arc::new(ReadState::default());
        let mut input = CarInput {
            inner: reader,
            buf: vec![0u8; STREAM_BUFFER].into_boxed_slice(),
            pos: 0,
            filled: 0,
            state: state.clone(),
        };
        // The header is decoded strictly here (iroh-car's own header
        // decoding is lenient), without consuming it, so that iroh-car then
        // reads the same bytes and both readers accept exactly the same
        // CARs.
        check_header_section(&mut input).await?;
        let inner = match iroh_car::CarReader::new(input).await {
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
        // Indexed once at the end, at its final size: cheaper than growing
        // (and rehashing) the map block by block.
        let mut entries = Vec::new();
        while let Some(block) = self.next_block().await? {
            entries.push(block);
        }
        Ok(CarFile {
            roots: self.roots,
            blocks: BlockMap::from_entries(entries),
        })
    }
}

/// Largest CAR header accepted (a header is a handful of root CIDs).
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// Buffers the header section (varint length + body) and decodes it
/// strictly, leaving it unread in `input`.
async fn check_header_section<R: AsyncRead + Unpin>(input: &mut CarInput<R>) -> Result<()> {
    // The length varint is at most 10 bytes; whatever is missing after
    // that is a cut, reported like the in-memory reader does.
    input.fill_to(10).await.map_err(Error::Io)?;
    let head = input.unread();
    let varint_end = match head.iter().position(|b| b & 0x80 == 0) {
        Some(i) => i + 1,
        None if head.len() >= 10 => 10,
        None if head.is_empty() => return Err(Error::CarTruncated("empty input".into())),
        None => return Err(Error::CarTruncated("header length cut".into())),
    };
    let mut pos = 0;
    let len = read_varint(&head[..varint_end], &mut pos)?.unwrap_or_default();
    if len == 0 || len > MAX_HEADER_BYTES {
        return Err(Error::CarHeader(format!("header of {len} bytes")));
    }
    let section = pos + len as usize;
    input.fill_to(section).await.map_err(Error::Io)?;
    let Some(body) = input.unread().get(pos..section) else {
        return Err(Error::CarTruncated("header cut".into()));
    };
    decode_header(body)?;
    Ok(())
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

    /// A CAR of about `target` bytes: records of varied sizes, each block
    /// once, plus the blocks in order.
    fn big_car(target: usize, seed: u32) -> (Vec<u8>, Vec<(Cid, Vec<u8>)>) {
        let mut blocks = Vec::new();
        let mut total = 0;
        let mut i = 0u32;
        while total < target {
            let n = 40 + (i.wrapping_mul(2654435761).wrapping_add(seed) % 1500) as usize;
            let data = vec![(i % 251) as u8; n];
            let mut cbor = Vec::with_capacity(n + 8);
            cbor.push(0x5a);
            cbor.extend_from_slice(&(n as u32).to_be_bytes());
            cbor.extend_from_slice(&data);
            cbor.extend_from_slice(&i.to_be_bytes());
            total += cbor.len() + 40;
            blocks.push((cid_for_cbor(&cbor), cbor));
            i += 1;
        }
        let car = write_car(
            &[blocks[0].0],
            blocks.iter().map(|(c, d)| (c, d.as_slice())),
        );
        (car, blocks)
    }

    fn same_blocks(a: &BlockMap, b: &BlockMap) {
        assert_eq!(a.len(), b.len());
        assert_eq!(a.byte_len(), b.byte_len());
        for ((ca, da), (cb, db)) in a.iter().zip(b.iter()) {
            assert_eq!((ca, da), (cb, db));
        }
    }

    /// The single-threaded reference: what the fast path must agree with.
    fn reference(car: &[u8], limits: &CarLimits) -> Result<CarFile> {
        let bytes = Bytes::copy_from_slice(car);
        let (roots, entries) = parse_sections(&bytes, limits)?;
        for (cid, data) in &entries {
            verify_block(cid, data)?;
        }
        Ok(CarFile {
            roots,
            blocks: BlockMap::from_entries(entries),
        })
    }

    #[test]
    fn split_reading_matches_a_single_walk_for_any_thread_count() {
        let (car, blocks) = big_car(3 << 20, 1);
        let want = reference(&car, &CarLimits::default()).unwrap();
        assert_eq!(want.blocks.len(), blocks.len());
        let bytes = Bytes::from(car);
        for threads in 1..=7 {
            let got = read_car_fast(&bytes, &CarLimits::default(), threads).unwrap();
            assert_eq!(got.roots, want.roots);
            same_blocks(&got.blocks, &want.blocks);
        }
        same_blocks(
            &read_car(bytes, &CarLimits::default()).unwrap().blocks,
            &want.blocks,
        );
    }

    #[test]
    fn a_bad_hash_anywhere_in_a_split_read_is_the_reference_error() {
        let (car, _) = big_car(3 << 20, 2);
        let starts = {
            let bytes = Bytes::from(car.clone());
            let (_, entries) = parse_sections(&bytes, &CarLimits::default()).unwrap();
            entries
                .iter()
                .map(|(_, d)| d.as_ptr() as usize - bytes.as_ptr() as usize)
                .collect::<Vec<_>>()
        };
        // Corrupt one block near the start, middle and end, then two at
        // once: the error must name the earliest, as one walk would.
        for picks in [
            vec![3],
            vec![starts.len() / 2],
            vec![starts.len() - 1],
            vec![starts.len() / 3, starts.len() * 2 / 3],
        ] {
            let mut bad = car.clone();
            for &p in &picks {
                bad[starts[p] + 7] ^= 0x40;
            }
            let want = reference(&bad, &CarLimits::default()).unwrap_err();
            assert!(matches!(want, Error::HashMismatch(_)));
            let bytes = Bytes::from(bad);
            for threads in 1..=4 {
                assert!(read_car_fast(&bytes, &CarLimits::default(), threads).is_none());
            }
            let got = read_car(bytes, &CarLimits::default()).unwrap_err();
            assert_eq!(got.to_string(), want.to_string(), "{picks:?}");
        }
    }

    #[test]
    fn a_block_that_looks_like_sections_cannot_mislead_the_split() {
        // A raw block whose bytes are themselves well-formed CAR sections,
        // placed over the middle of the input, where the second thread
        // starts looking: the guess lands inside it, is never reached by
        // the first thread, and the result is still exactly one walk's.
        let (inner_car, _) = big_car(600 << 10, 3);
        let header_len = {
            let mut pos = 0;
            let n = read_varint(&inner_car, &mut pos).unwrap().unwrap();
            pos + n as usize
        };
        let decoy = inner_car[header_len..].to_vec();
        let (front, _) = big_car(1 << 20, 4);
        let (back, _) = big_car(1 << 20, 5);
        let mut blocks = Vec::new();
        for car in [&front, &back] {
            let bytes = Bytes::copy_from_slice(car);
            let (_, entries) = parse_sections(&bytes, &CarLimits::default()).unwrap();
            blocks.push(entries);
        }
        let decoy_cid = crate::cid_for_raw(&decoy);
        let mut all: Vec<(Cid, Bytes)> = blocks[0].clone();
        all.push((decoy_cid, Bytes::from(decoy)));
        all.extend(blocks[1].clone());
        let car = write_car(&[all[0].0], all.iter().map(|(c, d)| (c, d.as_ref())));
        let want = reference(&car, &CarLimits::default()).unwrap();
        assert_eq!(want.blocks.len(), all.len());
        // The two-thread guess really is a false boundary inside the decoy.
        let boundaries: Vec<usize> = {
            let (mut pos, mut out) = (0, Vec::new());
            while let Some(n) = read_varint(&car, &mut pos).unwrap() {
                out.push(pos);
                pos += n as usize;
            }
            out
        };
        let guess = find_section_start(&car, car.len() / 2, &CarLimits::default()).unwrap();
        let decoy_start = boundaries[blocks[0].len() + 1];
        // Strictly inside the decoy's bytes, clear of the next length varint.
        assert!(guess > decoy_start && guess + 3 < boundaries[blocks[0].len() + 2]);
        let bytes = Bytes::from(car);
        for threads in 1..=6 {
            let got = read_car_fast(&bytes, &CarLimits::default(), threads).unwrap();
            same_blocks(&got.blocks, &want.blocks);
        }
    }

    #[test]
    fn limits_and_duplicates_hold_on_the_split_path() {
        let (car, blocks) = big_car(3 << 20, 6);
        let tight = CarLimits {
            max_blocks: blocks.len() as u64 - 1,
            ..CarLimits::default()
        };
        let bytes = Bytes::from(car.clone());
        assert!(read_car_fast(&bytes, &tight, 2).is_none());
        assert_eq!(
            read_car(bytes, &tight).unwrap_err().reason(),
            "too_many_blocks"
        );
        let exact = CarLimits {
            max_blocks: blocks.len() as u64,
            ..CarLimits::default()
        };
        assert_eq!(
            read_car(Bytes::from(car), &exact).unwrap().blocks.len(),
            blocks.len()
        );
        // Every block twice, the copies in the second half: collapsed.
        let twice = write_car(
            &[blocks[0].0],
            blocks
                .iter()
                .chain(blocks.iter())
                .map(|(c, d)| (c, d.as_slice())),
        );
        let got = read_car(Bytes::from(twice), &CarLimits::default()).unwrap();
        assert_eq!(got.blocks.len(), blocks.len());
        for (cid, data) in &blocks {
            assert_eq!(got.blocks.get(cid).unwrap().as_ref(), data.as_slice());
        }
    }

    /// Hands out at most `step` bytes per read, then optionally fails.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
        pos: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.fail_at.is_some_and(|f| self.pos >= f) {
                return Poll::Ready(Err(std::io::Error::other("connection reset")));
            }
            let end = (self.pos + self.step.min(buf.remaining())).min(self.data.len());
            buf.put_slice(&self.data[self.pos..end]);
            self.pos = end;
            Poll::Ready(Ok(()))
        }
    }

    fn stream_collect(r: impl AsyncRead + Unpin) -> Result<CarFile> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            CarStream::new(r, CarLimits::default())
                .await?
                .collect()
                .await
        })
    }

    #[test]
    fn streaming_input_survives_small_reads_large_blocks_and_errors() {
        // A block larger than the stream buffer takes the direct read.
        let big = vec![7u8; STREAM_BUFFER + 12345];
        let big_cid = crate::cid_for_raw(&big);
        let (car, blocks) = big_car(1 << 20, 7);
        let bytes = Bytes::from(car);
        let (roots, mut entries) = parse_sections(&bytes, &CarLimits::default()).unwrap();
        entries.insert(entries.len() / 2, (big_cid, Bytes::from(big.clone())));
        let car = write_car(&roots, entries.iter().map(|(c, d)| (c, d.as_ref())));
        for step in [1, 7, 4096, usize::MAX] {
            let got = stream_collect(Trickle {
                data: &car,
                step,
                fail_at: None,
                pos: 0,
            })
            .unwrap();
            assert_eq!(got.roots, roots);
            assert_eq!(got.blocks.len(), blocks.len() + 1);
            assert_eq!(got.blocks.get(&big_cid).unwrap().as_ref(), big.as_slice());
        }
        for fail_at in [0, 5, 1000, car.len() / 2] {
            let e = stream_collect(Trickle {
                data: &car,
                step: 999,
                fail_at: Some(fail_at),
                pos: 0,
            })
            .unwrap_err();
            assert!(matches!(e, Error::Io(_)), "{fail_at}: {e}");
        }
    }

    #[test]
    fn varint_len_matches_writer() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64] {
            let mut b = Vec::new();
            assert_eq!(write_varint(&mut b, v).unwrap(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn streamed_duplicates_collapse_like_in_memory_ones() {
        let (_, root, blocks) = sample();
        let twice = write_car(
            &[root],
            blocks
                .iter()
                .chain(blocks.iter().rev())
                .map(|(c, d)| (c, d.as_slice())),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let streamed = rt
            .block_on(async {
                CarStream::new(twice.as_slice(), CarLimits::default())
                    .await?
                    .collect()
                    .await
            })
            .unwrap();
        let mem = read_car(Bytes::from(twice), &CarLimits::default()).unwrap();
        assert_eq!(streamed.blocks.len(), blocks.len());
        assert_eq!(streamed.blocks.byte_len(), mem.blocks.byte_len());
        assert!(streamed.blocks.iter().eq(mem.blocks.iter()));
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
