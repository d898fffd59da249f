//! How block values are stored in the `blocks` keyspace.
//!
//! Every value starts with a 1-byte header naming its codec, so a store
//! can change codec (or dictionary) at any time and still read everything
//! it ever wrote:
//!
//! | header | rest of the value |
//! | --- | --- |
//! | `0` | the block as is |
//! | `1` | the block's length (LEB128), then a zstd frame |
//! | `2..=255` | the same, compressed with dictionary number `header` |
//!
//! The zstd frames are trimmed to what barn needs: no magic number, no
//! checksum (fjall checksums its blocks), no content size (the length is
//! ours, before the frame) and no dictionary id (the header names it).
//! That saves about 8 bytes on values of a few hundred bytes.
//!
//! Dictionaries live in the `meta` keyspace (`dict` ‖ id) and are never
//! removed: values written with them stay readable. With
//! [`DictionarySource::Train`] the store trains one, once, from the first
//! blocks it compresses (plain zstd until then), on a thread of its own so
//! no write waits for it; the dictionary is written in the same atomic
//! batch as the first values compressed with it.
//!
//! MST nodes and commits are stored raw unless
//! [`StoreOptions::compress_structure`](crate::StoreOptions) says
//! otherwise: they are mostly hashes and a signature, zstd saves ~16% of
//! them for ~2.5 µs each, and they are ~90% of the blocks of a firehose
//! commit. fjall's lz4 (at compaction, off the write path) gets about as
//! much out of them.
//!
//! # Tricky bits
//! - A value is stored raw (header `0`) whenever compression would not make
//!   it smaller.
//! - Which blocks count as MST nodes or commits is decided from their first
//!   bytes (the canonical encodings start `{"e":` and `{"did":`). A record
//!   that happens to start the same way is merely stored raw.
//! - zstd contexts are per thread (`thread_local!`): creating one costs far
//!   more than compressing a block.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use zstd::zstd_safe::{
    self, CCtx, CDict, CParameter, DCtx, DDict, DParameter, FrameFormat, ResetDirective,
};

use crate::error::{Error, Result};

/// Header of a value stored as is.
pub(crate) const RAW: u8 = 0;
/// Header of a value compressed with zstd, no dictionary.
pub(crate) const ZSTD: u8 = 1;
/// The first dictionary number; headers from here on name a dictionary.
pub(crate) const FIRST_DICT: u8 = 2;
/// Longest block a compressed value may declare. Blocks larger than this
/// are stored raw, so nothing barn writes is refused when read back.
pub(crate) const MAX_COMPRESSED_BLOCK: usize = 16 << 20;
/// At most this much of one block goes into the training samples.
const MAX_SAMPLE: usize = 16 << 10;

/// How the store encodes block values (the `blocks` keyspace). Changing it
/// affects new writes only; every value names its codec, so older values
/// stay readable under any option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockCodec {
    /// Blocks as they are.
    Raw,
    /// zstd at `level`, each block on its own.
    Zstd {
        /// zstd level (1–22; negative levels are the fast modes).
        level: i32,
    },
    /// zstd at `level` with a dictionary.
    ZstdDict {
        /// zstd level.
        level: i32,
        /// Where the dictionary comes from.
        dictionary: DictionarySource,
    },
}

/// Where a [`BlockCodec::ZstdDict`] dictionary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DictionarySource {
    /// The newest dictionary stored; when there is none, one trained from
    /// the first `sample_bytes` of blocks this store writes (plain zstd
    /// until then), at most `max_bytes` long.
    Train {
        /// Block bytes collected before training.
        sample_bytes: usize,
        /// Largest dictionary.
        max_bytes: usize,
    },
    /// This dictionary (a zstd dictionary or raw content), stored in the
    /// store the first time it is used.
    Given(Arc<[u8]>),
}

/// A dictionary the store has (or is about to persist).
pub(crate) struct Dict {
    pub(crate) id: u8,
    pub(crate) bytes: Arc<[u8]>,
    ddict: DDict<'static>,
    persisted: AtomicBool,
}

/// The dictionary new values are compressed with, as read for a batch
/// ([`Codec::current`]).
pub(crate) struct Current(Option<Arc<ActiveDict>>);

/// The dictionary new values are compressed with.
struct ActiveDict {
    dict: Arc<Dict>,
    cdict: CDict<'static>,
}

/// A training's outcome: the dictionary, the number of samples, the
/// milliseconds it took.
type Trained = (std::io::Result<Vec<u8>>, usize, u64);

/// A dictionary the store does not have yet: (number, bytes).
type NewDict = (u8, Arc<[u8]>);

struct Sampler {
    data: Vec<u8>,
    sizes: Vec<usize>,
    sample_bytes: usize,
    max_bytes: usize,
    /// Training, once enough was collected.
    training: Option<std::thread::JoinHandle<Trained>>,
}

/// The codec state of one store.
pub(crate) struct Codec {
    /// `None`: raw.
    level: Option<i32>,
    /// Compress MST nodes and commits too.
    structure: bool,
    /// Indexed by dictionary number.
    dicts: RwLock<Vec<Option<Arc<Dict>>>>,
    active: RwLock<Option<Arc<ActiveDict>>>,
    sampling: AtomicBool,
    sampler: Mutex<Option<Sampler>>,
}

thread_local! {
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "block value",
        detail: detail.into(),
    }
}

fn make_dict(id: u8, bytes: Arc<[u8]>, persisted: bool) -> Result<Dict> {
    let ddict = DDict::try_create(&bytes).ok_or_else(|| Error::Corrupt {
        what: "dictionary",
        detail: format!("zstd refused dictionary {id}"),
    })?;
    Ok(Dict {
        id,
        bytes,
        ddict,
        persisted: AtomicBool::new(persisted),
    })
}

fn activate(dict: Arc<Dict>, level: i32) -> Result<Arc<ActiveDict>> {
    let cdict = CDict::try_create(&dict.bytes, level).ok_or_else(|| Error::Corrupt {
        what: "dictionary",
        detail: format!("zstd refused dictionary {} for compression", dict.id),
    })?;
    Ok(Arc::new(ActiveDict { dict, cdict }))
}

/// Whether `block` looks like an MST node (`{"e": [...], "l": ...}`) or a
/// commit (`{"did": ..., ...}`, five or six fields), from its first bytes.
fn is_structure(block: &[u8]) -> bool {
    barn_repo::mst::looks_like_node(block)
        || (matches!(block.first(), Some(0xa5 | 0xa6))
            && block[1..].starts_with(&[0x63, b'd', b'i', b'd']))
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8]) -> Result<(usize, &[u8])> {
    let mut v: usize = 0;
    for (i, b) in bytes.iter().enumerate().take(4) {
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &bytes[i + 1..]));
        }
    }
    Err(corrupt("bad length"))
}

/// Compresses `raw` into `out` (cleared first): a trimmed zstd frame.
fn compress(level: i32, dict: Option<&CDict<'static>>, raw: &[u8], out: &mut Vec<u8>) -> bool {
    CCTX.with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return false;
        };
        if slot.is_none() {
            *slot = CCtx::try_create();
        }
        let Some(cctx) = slot.as_mut() else {
            return false;
        };
        let mut setup = || -> zstd_safe::SafeResult {
            cctx.reset(ResetDirective::SessionAndParameters)?;
            cctx.set_parameter(CParameter::Format(FrameFormat::Magicless))?;
            cctx.set_parameter(CParameter::ContentSizeFlag(false))?;
            cctx.set_parameter(CParameter::ChecksumFlag(false))?;
            cctx.set_parameter(CParameter::DictIdFlag(false))?;
            match dict {
                Some(d) => cctx.ref_cdict(d),
                None => cctx.set_parameter(CParameter::CompressionLevel(level)),
            }
        };
        if setup().is_err() {
            return false;
        }
        out.clear();
        out.reserve(zstd_safe::compress_bound(raw.len()));
        let ok = cctx.compress2(out, raw).is_ok();
        // Drop the reference to the dictionary: it may be freed before the
        // next call on this thread.
        let _ = cctx.reset(ResetDirective::SessionAndParameters);
        ok
    })
}

impl Codec {
    /// A codec for `opts`, with the dictionaries already stored (`(id,
    /// bytes)`). Returns the dictionary to persist now, if the options give
    /// one the store does not have yet.
    pub(crate) fn new(
        opts: &BlockCodec,
        structure: bool,
        stored: Vec<(u8, Vec<u8>)>,
    ) -> Result<(Codec, Option<NewDict>)> {
        let mut dicts: Vec<Option<Arc<Dict>>> = vec![None; 256];
        let mut newest = None;
        for (id, bytes) in stored {
            if id < FIRST_DICT {
                return Err(Error::Corrupt {
                    what: "dictionary",
                    detail: format!("number {id}"),
                });
            }
            let dict = Arc::new(make_dict(id, bytes.into(), true)?);
            newest = Some(dict.clone());
            dicts[usize::from(id)] = Some(dict);
        }
        let next_id = || -> Result<u8> {
            let used = dicts.iter().rposition(Option::is_some).unwrap_or(1);
            u8::try_from(used + 1)
                .ok()
                .filter(|&id| id >= FIRST_DICT)
                .ok_or_else(|| Error::Corrupt {
                    what: "dictionary",
                    detail: "all 254 dictionary numbers are used".into(),
                })
        };
        let mut persist = None;
        let mut active = None;
        let mut sampler = None;
        let level = match opts {
            BlockCodec::Raw => None,
            BlockCodec::Zstd { level } => Some(*level),
            BlockCodec::ZstdDict { level, dictionary } => {
                match dictionary {
                    DictionarySource::Given(bytes) => {
                        let known = dicts
                            .iter()
                            .flatten()
                            .find(|d| d.bytes[..] == bytes[..])
                            .cloned();
                        let dict = match known {
                            Some(d) => d,
                            None => {
                                let id = next_id()?;
                                let d = Arc::new(make_dict(id, bytes.clone(), false)?);
                                dicts[usize::from(id)] = Some(d.clone());
                                persist = Some((id, bytes.clone()));
                                d
                            }
                        };
                        active = Some(activate(dict, *level)?);
                    }
                    DictionarySource::Train {
                        sample_bytes,
                        max_bytes,
                    } => match newest {
                        Some(d) => active = Some(activate(d, *level)?),
                        None => {
                            sampler = Some(Sampler {
                                data: Vec::new(),
                                sizes: Vec::new(),
                                sample_bytes: *sample_bytes,
                                max_bytes: *max_bytes,
                                training: None,
                            })
                        }
                    },
                }
                Some(*level)
            }
        };
        Ok((
            Codec {
                level,
                structure,
                dicts: RwLock::new(dicts),
                active: RwLock::new(active),
                sampling: AtomicBool::new(sampler.is_some()),
                sampler: Mutex::new(sampler),
            },
            persist,
        ))
    }

    /// Feeds blocks about to be written to the dictionary trainer, while it
    /// is collecting; starts training on a thread once it has enough, and
    /// installs the dictionary when that is done.
    pub(crate) fn observe<'a>(&self, blocks: impl Iterator<Item = &'a [u8]>) {
        if !self.sampling.load(Ordering::Relaxed) {
            return;
        }
        let mut guard = self.sampler.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = guard.as_mut() else {
            return;
        };
        if let Some(handle) = &s.training {
            if !handle.is_finished() {
                return;
            }
            let outcome = s.training.take().map(std::thread::JoinHandle::join);
            *guard = None;
            self.sampling.store(false, Ordering::Relaxed);
            drop(guard);
            match outcome {
                Some(Ok((Ok(bytes), samples, ms))) => match self.install(bytes.into()) {
                    Ok(id) => tracing::info!(id, samples, ms, "trained a block dictionary"),
                    Err(e) => tracing::warn!(error = %e, "a trained dictionary was refused"),
                },
                // Plain zstd from now on; not worth retrying.
                Some(Ok((Err(e), samples, _))) => {
                    tracing::warn!(error = %e, samples, "training a block dictionary failed")
                }
                _ => tracing::warn!("training a block dictionary panicked"),
            }
            return;
        }
        for b in blocks.filter(|b| self.structure || !is_structure(b)) {
            let b = &b[..b.len().min(MAX_SAMPLE)];
            s.data.extend_from_slice(b);
            s.sizes.push(b.len());
        }
        if s.data.len() < s.sample_bytes {
            return;
        }
        let data = std::mem::take(&mut s.data);
        let sizes = std::mem::take(&mut s.sizes);
        let max = s.max_bytes;
        let spawned = std::thread::Builder::new()
            .name("barn-store-dict".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let r = zstd::dict::from_continuous(&data, &sizes, max);
                (r, sizes.len(), started.elapsed().as_millis() as u64)
            });
        match spawned {
            Ok(handle) => s.training = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "could not start training a block dictionary");
                *guard = None;
                self.sampling.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Waits for a dictionary being trained and installs it (tests and
    /// benchmarks; writes do not wait).
    pub(crate) fn finish_training(&self) {
        loop {
            let busy = {
                let guard = self.sampler.lock().unwrap_or_else(PoisonError::into_inner);
                guard
                    .as_ref()
                    .and_then(|s| s.training.as_ref())
                    .is_some_and(|h| !h.is_finished())
            };
            if !busy {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.observe(std::iter::empty());
    }

    fn install(&self, bytes: Arc<[u8]>) -> Result<u8> {
        let level = self.level.unwrap_or(zstd_safe::CLEVEL_DEFAULT);
        let mut dicts = self.dicts.write().unwrap_or_else(PoisonError::into_inner);
        let used = dicts.iter().rposition(Option::is_some).unwrap_or(1);
        let id = u8::try_from(used + 1).map_err(|_| Error::Corrupt {
            what: "dictionary",
            detail: "all 254 dictionary numbers are used".into(),
        })?;
        let dict = Arc::new(make_dict(id, bytes, false)?);
        let active = activate(dict.clone(), level)?;
        dicts[usize::from(id)] = Some(dict);
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = Some(active);
        Ok(id)
    }

    /// The active dictionary, when it still has to be written to `meta`
    /// (in the batch that first uses it).
    pub(crate) fn unpersisted(&self) -> Option<Arc<Dict>> {
        let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
        active
            .as_ref()
            .filter(|a| !a.dict.persisted.load(Ordering::Acquire))
            .map(|a| a.dict.clone())
    }

    /// The dictionaries numbered up to `max_id` that are not durable yet.
    /// A value naming dictionary `n` may only be written together with (or
    /// after) dictionary `n`: whoever writes values encoded elsewhere asks
    /// for the highest number they name, not for the active dictionary,
    /// which another thread may have changed since.
    pub(crate) fn unpersisted_upto(&self, max_id: u8) -> Vec<Arc<Dict>> {
        if max_id < FIRST_DICT {
            return Vec::new();
        }
        let dicts = self.dicts.read().unwrap_or_else(PoisonError::into_inner);
        dicts
            .iter()
            .take(usize::from(max_id) + 1)
            .flatten()
            .filter(|d| !d.persisted.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    /// Marks a dictionary as durable.
    pub(crate) fn persisted(&self, dict: &Dict) {
        dict.persisted.store(true, Ordering::Release);
    }

    /// The number of the dictionary new values use, if any.
    pub(crate) fn active_dictionary(&self) -> Option<u8> {
        let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
        active.as_ref().map(|a| a.dict.id)
    }

    /// The stored form of `raw`. Its first byte names the codec (and the
    /// dictionary, from [`FIRST_DICT`] on).
    pub(crate) fn encode(&self, raw: &[u8]) -> Vec<u8> {
        self.encode_with(&self.current(), raw)
    }

    /// The dictionary values are compressed with now, for
    /// [`Codec::encode_with`]: read once for a batch of values instead of
    /// once a value (a lock and a reference count each, ~1% of an import).
    pub(crate) fn current(&self) -> Current {
        Current(
            self.active
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// [`Codec::encode`] with the dictionary `current` gave. A dictionary
    /// installed meanwhile is used from the next batch on.
    pub(crate) fn encode_with(&self, current: &Current, raw: &[u8]) -> Vec<u8> {
        let raw_value = || {
            let mut v = Vec::with_capacity(raw.len() + 1);
            v.push(RAW);
            v.extend_from_slice(raw);
            v
        };
        let Some(level) = self.level else {
            return raw_value();
        };
        if raw.is_empty()
            || raw.len() > MAX_COMPRESSED_BLOCK
            || (!self.structure && is_structure(raw))
        {
            return raw_value();
        }
        let (tag, cdict) = match &current.0 {
            Some(a) => (a.dict.id, Some(&a.cdict)),
            None => (ZSTD, None),
        };
        SCRATCH.with(|scratch| {
            let Ok(mut frame) = scratch.try_borrow_mut() else {
                return raw_value();
            };
            if !compress(level, cdict, raw, &mut frame) {
                return raw_value();
            }
            let mut v = Vec::with_capacity(frame.len() + 4);
            v.push(tag);
            put_varint(&mut v, raw.len());
            // Not smaller than the raw value (header included): keep it raw.
            if v.len() + frame.len() > raw.len() {
                return raw_value();
            }
            v.extend_from_slice(&frame);
            v
        })
    }

    /// The block stored as `value`.
    pub(crate) fn decode(&self, value: &[u8]) -> Result<Bytes> {
        let (&tag, rest) = value.split_first().ok_or_else(|| corrupt("empty"))?;
        if tag == RAW {
            return Ok(Bytes::copy_from_slice(rest));
        }
        let (len, frame) = get_varint(rest)?;
        if len > MAX_COMPRESSED_BLOCK {
            return Err(corrupt(format!("declares {len} bytes")));
        }
        let dict =
            if tag == ZSTD {
                None
            } else {
                let dicts = self.dicts.read().unwrap_or_else(PoisonError::into_inner);
                Some(dicts[usize::from(tag)].clone().ok_or_else(|| {
                    corrupt(format!("names dictionary {tag}, which is not stored"))
                })?)
            };
        let mut out = Vec::with_capacity(len);
        let done = DCTX.with(|slot| -> Result<()> {
            let mut fresh = None;
            let mut borrowed = slot.try_borrow_mut().ok();
            let dctx = match borrowed.as_deref_mut() {
                Some(slot) => slot,
                None => &mut fresh,
            };
            if dctx.is_none() {
                let mut d = DCtx::try_create().ok_or_else(|| corrupt("no zstd context"))?;
                d.set_parameter(DParameter::Format(FrameFormat::Magicless))
                    .map_err(|c| corrupt(zstd_safe::get_error_name(c)))?;
                *dctx = Some(d);
            }
            let Some(dctx) = dctx.as_mut() else {
                return Err(corrupt("no zstd context"));
            };
            let r = match &dict {
                Some(d) => dctx.decompress_using_ddict(&mut out, frame, &d.ddict),
                None => dctx.decompress(&mut out, frame),
            };
            r.map(|_| ())
                .map_err(|c| corrupt(zstd_safe::get_error_name(c)))
        });
        done?;
        if out.len() != len {
            return Err(corrupt(format!(
                "declares {len} bytes, decompresses to {}",
                out.len()
            )));
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// DAG-CBOR-like records: repetitive structure, varying content.
    pub(crate) fn sample_blocks(n: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [
            "the", "bluesky", "post", "coffee", "rust", "protocol", "feed",
        ];
        (0..n)
            .map(|i| {
                let mut text = String::new();
                for _ in 0..(next() % 40) {
                    text.push_str(words[(next() % words.len() as u64) as usize]);
                    text.push(' ');
                }
                let v = serde_json::json!({
                    "$type": "app.bsky.feed.post",
                    "createdAt": format!("2024-0{}-1{}T12:00:00.000Z", 1 + i % 9, i % 10),
                    "text": text,
                    "subject": format!("did:plc:{:024x}", next()),
                });
                let mut b = serde_ipld_dagcbor::to_vec(&v).unwrap();
                if i % 7 == 0 {
                    // Incompressible, like an MST node full of CIDs.
                    b = (0..200).map(|_| next() as u8).collect();
                }
                b
            })
            .collect()
    }

    fn codec(opts: &BlockCodec) -> Codec {
        Codec::new(opts, false, Vec::new()).unwrap().0
    }

    fn given_dict() -> Arc<[u8]> {
        let train = sample_blocks(2000, 99);
        let sizes: Vec<usize> = train.iter().map(Vec::len).collect();
        zstd::dict::from_continuous(&train.concat(), &sizes, 4096)
            .unwrap()
            .into()
    }

    fn all_schemes() -> Vec<BlockCodec> {
        vec![
            BlockCodec::Raw,
            BlockCodec::Zstd { level: 1 },
            BlockCodec::Zstd { level: 3 },
            BlockCodec::Zstd { level: 19 },
            BlockCodec::ZstdDict {
                level: 3,
                dictionary: DictionarySource::Given(given_dict()),
            },
            BlockCodec::ZstdDict {
                level: 3,
                dictionary: DictionarySource::Train {
                    sample_bytes: 100_000,
                    max_bytes: 4096,
                },
            },
        ]
    }

    #[test]
    fn every_scheme_round_trips() {
        let mut blocks = sample_blocks(1500, 1);
        blocks.push(Vec::new());
        blocks.push(vec![0xa0]);
        blocks.push(vec![7u8; 3 << 20]);
        for opts in all_schemes() {
            let c = codec(&opts);
            // Train mode: the first third is sampled, the rest after training.
            for chunk in blocks.chunks(500) {
                c.observe(chunk.iter().map(Vec::as_slice));
                c.finish_training();
                for b in chunk {
                    let v = c.encode(b);
                    assert_eq!(c.decode(&v).unwrap(), b[..], "{opts:?}");
                }
            }
        }
    }

    #[test]
    fn headers_name_the_codec() {
        let blocks = sample_blocks(50, 2);
        let text = &blocks[1];
        let noise = &blocks[0];
        assert_eq!(codec(&BlockCodec::Raw).encode(text)[0], RAW);
        let z = codec(&BlockCodec::Zstd { level: 3 });
        assert_eq!(z.encode(text)[0], ZSTD);
        assert!(z.encode(text).len() < text.len());
        // Not worth compressing: stored raw, one byte longer.
        assert_eq!(z.encode(noise)[0], RAW);
        assert_eq!(z.encode(noise).len(), noise.len() + 1);
        let d = codec(&BlockCodec::ZstdDict {
            level: 3,
            dictionary: DictionarySource::Given(given_dict()),
        });
        assert_eq!(d.encode(text)[0], FIRST_DICT);
        assert!(d.encode(text).len() < z.encode(text).len());
        // The frame is trimmed: no magic number.
        assert_ne!(&z.encode(text)[3..7], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn mst_nodes_and_commits_are_raw_unless_asked() {
        // Compressible, but shaped like an MST node and a commit.
        let mut node = vec![0xa2, 0x61, b'e', 0x81];
        node.extend(std::iter::repeat_n(b'a', 300));
        let mut commit = vec![0xa6, 0x63, b'd', b'i', b'd'];
        commit.extend(std::iter::repeat_n(b'b', 300));
        let record = &sample_blocks(5, 6)[1];
        let opts = BlockCodec::Zstd { level: 3 };
        let plain = Codec::new(&opts, false, Vec::new()).unwrap().0;
        let all = Codec::new(&opts, true, Vec::new()).unwrap().0;
        for b in [&node, &commit] {
            assert_eq!(plain.encode(b)[0], RAW);
            assert_eq!(all.encode(b)[0], ZSTD);
            assert_eq!(all.decode(&all.encode(b)).unwrap(), b[..]);
            assert_eq!(plain.decode(&all.encode(b)).unwrap(), b[..]);
        }
        assert_eq!(plain.encode(record)[0], ZSTD);
        assert!(!is_structure(&[0xa5]));
        assert!(!is_structure(&[]));
    }

    #[test]
    fn training_switches_to_the_new_dictionary_once() {
        let c = codec(&BlockCodec::ZstdDict {
            level: 3,
            dictionary: DictionarySource::Train {
                sample_bytes: 100_000,
                max_bytes: 4096,
            },
        });
        let blocks = sample_blocks(2000, 3);
        assert_eq!(c.encode(&blocks[1])[0], ZSTD);
        assert!(c.unpersisted().is_none());
        c.observe(blocks.iter().map(Vec::as_slice));
        c.finish_training();
        assert_eq!(c.active_dictionary(), Some(FIRST_DICT));
        let d = c
            .unpersisted()
            .expect("the new dictionary waits to be written");
        assert_eq!(c.encode(&blocks[1])[0], FIRST_DICT);
        c.persisted(&d);
        assert!(c.unpersisted().is_none());
        // Stops sampling.
        c.observe(blocks.iter().map(Vec::as_slice));
        assert_eq!(c.active_dictionary(), Some(FIRST_DICT));
    }

    #[test]
    fn values_from_any_scheme_decode_under_any_other() {
        let dict = given_dict();
        let blocks = sample_blocks(300, 4);
        let with_dict = codec(&BlockCodec::ZstdDict {
            level: 3,
            dictionary: DictionarySource::Given(dict.clone()),
        });
        let values: Vec<Vec<u8>> = blocks.iter().map(|b| with_dict.encode(b)).collect();
        // A store opened later as raw or plain zstd, with the dictionary
        // loaded from `meta`.
        for opts in [BlockCodec::Raw, BlockCodec::Zstd { level: 1 }] {
            let c = Codec::new(&opts, false, vec![(FIRST_DICT, dict.to_vec())])
                .unwrap()
                .0;
            for (b, v) in blocks.iter().zip(&values) {
                assert_eq!(c.decode(v).unwrap(), b[..]);
            }
        }
        // The same dictionary given again is found, not stored twice.
        let (c, persist) = Codec::new(
            &BlockCodec::ZstdDict {
                level: 1,
                dictionary: DictionarySource::Given(dict.clone()),
            },
            false,
            vec![(FIRST_DICT, dict.to_vec())],
        )
        .unwrap();
        assert!(persist.is_none());
        assert_eq!(c.active_dictionary(), Some(FIRST_DICT));
        // A different one gets the next number.
        let (c, persist) = Codec::new(
            &BlockCodec::ZstdDict {
                level: 1,
                dictionary: DictionarySource::Given(dict[..dict.len() / 2].into()),
            },
            false,
            vec![(FIRST_DICT, dict.to_vec())],
        )
        .unwrap();
        assert_eq!(persist.map(|p| p.0), Some(FIRST_DICT + 1));
        assert_eq!(c.active_dictionary(), Some(FIRST_DICT + 1));
    }

    #[test]
    fn bad_values_are_corrupt_not_panics() {
        let z = codec(&BlockCodec::Zstd { level: 3 });
        let text = &sample_blocks(5, 5)[1];
        let good = z.encode(text);
        assert_eq!(good[0], ZSTD);
        let is_corrupt = |v: &[u8]| matches!(z.decode(v), Err(Error::Corrupt { .. }));
        // Empty value; unknown dictionary; length varint cut off or too long.
        assert!(is_corrupt(&[]));
        let mut other = good.clone();
        other[0] = 9;
        assert!(is_corrupt(&other));
        assert!(is_corrupt(&[ZSTD]));
        assert!(is_corrupt(&[ZSTD, 0x80, 0x80, 0x80, 0x80, 0x01]));
        assert!(is_corrupt(&[ZSTD, 0xff, 0xff, 0xff, 0x7f]));
        // Declared length wrong either way.
        let mut short = good.clone();
        short[1] -= 1;
        assert!(is_corrupt(&short));
        let mut long = good.clone();
        long[1] += 1;
        assert!(is_corrupt(&long));
        // Frame damaged or cut.
        assert!(is_corrupt(&good[..good.len() - 3]));
        let mut flipped = good.clone();
        let n = flipped.len();
        flipped[3..n].iter_mut().for_each(|b| *b ^= 0x5a);
        assert!(is_corrupt(&flipped));
        // A dictionary value read without the dictionary stored.
        let d = codec(&BlockCodec::ZstdDict {
            level: 3,
            dictionary: DictionarySource::Given(given_dict()),
        });
        assert!(is_corrupt(&d.encode(text)));
        // Every header byte on a short garbage value: never a panic.
        for tag in 0..=255u8 {
            let _ = z.decode(&[tag, 3, 1, 2, 3]);
        }
    }
}
