//! A generator of validly signed `#commit` streams on realistic repos, for
//! the ingest benchmark.
//!
//! Every account starts from the same base repo (realistic records and
//! MST, `base_records` of them) under its own DID, key and genesis commit.
//! Then commits are drawn one at a time for a random account, as a busy
//! PDS interleaves them: mostly single creates (likes, posts, reposts,
//! follows in the usual shares), some deletes and updates of the account's
//! own records, and now and then a multi-record commit. Each commit
//! carries what sync 1.1 asks for: the new MST nodes, the new records, the
//! signed commit, and any other node the inversion of its ops reads
//! (found by running the inversion through a recording block source); the
//! generator checks that the ops invert to the previous MST root.
//!
//! Everything is deterministic in the seed. The base repo and the genesis
//! commits are cheap to rebuild, so the benchmark rebuilds them; the frames
//! are written to a file once per spec and reused.

use std::io::{self, Read, Write};
use std::sync::Arc;

use barn_firehose::{CommitEvent, Event, Frame, OpAction, RepoOp, encode_frame};
use barn_repo::Cid;
use barn_repo::blocks::{BlockMap, BlockSource, Recording};
use barn_repo::car::write_car;
use barn_repo::commit::Commit;
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_repo::mst::{Mst, RecordOp, invert_ops};
use bytes::Bytes;

use crate::{PathGen, Rng, datetime, pick_collection, record, tid};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    /// Accounts on the host.
    pub accounts: usize,
    /// Records in every account's starting repo.
    pub base_records: usize,
    /// `#commit` events in the stream (seq 1 to `commits`).
    pub commits: usize,
    /// Seed of everything.
    pub seed: u64,
}

impl StreamSpec {
    /// A file name that identifies the spec (and the generator version).
    pub fn file_name(&self) -> String {
        format!(
            "firehose-v1-a{}-r{}-c{}-s{}.frames",
            self.accounts, self.base_records, self.commits, self.seed
        )
    }
}

/// 2024-01-01: the genesis commits are made then, the stream after.
const GENESIS_MICROS: u64 = 1_704_067_200_000_000;

/// One account at its genesis commit.
#[derive(Debug, Clone)]
pub struct Genesis {
    /// The DID.
    pub did: String,
    /// The signing key.
    pub key: PrivateKey,
    /// The genesis commit's CID.
    pub cid: Cid,
    /// Its bytes.
    pub bytes: Bytes,
    /// Its rev.
    pub rev: String,
}

/// The shared starting repo and every account's genesis commit.
#[derive(Debug, Clone)]
pub struct Start {
    /// Every block of the base repo (MST nodes and records).
    pub blocks: Arc<BlockMap>,
    /// The base MST root.
    pub data: Cid,
    /// The accounts.
    pub accounts: Vec<Genesis>,
}

/// A `did:plc` for account `n` of a spec.
pub fn did(seed: u64, n: usize) -> String {
    let mut rng = Rng::new(seed ^ (n as u64).wrapping_mul(0x9e37_79b9));
    format!("did:plc:{}", rng.base32(24))
}

/// Builds the base repo and the genesis commits.
pub fn start(spec: &StreamSpec) -> Start {
    let mut rng = Rng::new(spec.seed ^ 0xba5e);
    let mut paths = PathGen::new(spec.seed ^ 0xba5e);
    let mut blocks = BlockMap::new();
    let mut entries = Vec::with_capacity(spec.base_records);
    for _ in 0..spec.base_records {
        let (collection, rkey, micros) = paths.next_path();
        let bytes = record(&mut rng, collection, micros);
        let cid = blocks.put_cbor(bytes);
        entries.push((format!("{collection}/{rkey}").into_bytes(), cid));
    }
    entries.sort();
    let mut tree = match Mst::from_sorted(&blocks, entries) {
        Ok(t) => t,
        Err(e) => panic!("building the base MST: {e}"),
    };
    let data = tree.root_cid();
    let nodes = tree.take_new_blocks();
    drop(tree);
    blocks.extend(nodes);
    let rev = tid(GENESIS_MICROS, 0);
    let accounts = (0..spec.accounts)
        .map(|n| {
            let did = did(spec.seed, n);
            let key = PrivateKey::from_seed(KeyType::K256, spec.seed.wrapping_add(n as u64 + 1));
            let (_, bytes, cid) = match Commit::create(&did, data, &rev, &key) {
                Ok(c) => c,
                Err(e) => panic!("signing a genesis commit: {e}"),
            };
            Genesis {
                did,
                key,
                cid,
                bytes: Bytes::from(bytes),
                rev: rev.clone(),
            }
        })
        .collect();
    Start {
        blocks: Arc::new(blocks),
        data,
        accounts,
    }
}

/// Block maps searched in order (a commit's blocks, the account's own,
/// the shared base).
struct Layered<'a>(&'a [&'a BlockMap]);

impl BlockSource for Layered<'_> {
    fn get_block(&self, cid: &Cid) -> barn_repo::Result<Option<Bytes>> {
        Ok(self.0.iter().find_map(|m| m.get(cid)).cloned())
    }
}

struct Live {
    did: String,
    key: PrivateKey,
    rev: String,
    head: Cid,
    data: Cid,
    /// Every block this account made since genesis (old ones included:
    /// simpler than collecting garbage, and bounded by the stream).
    own: BlockMap,
    /// Paths of records this account created in the stream.
    created: Vec<String>,
    profile: bool,
}

/// The head of an account after the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalHead {
    /// The DID.
    pub did: String,
    /// The last commit's CID.
    pub cid: Cid,
    /// Its rev.
    pub rev: String,
}

/// Writes the stream of `spec` to `out` as length-prefixed frames (`u32`
/// little-endian length, then the `subscribeRepos` message). Returns every
/// account's final head.
pub fn generate(
    spec: &StreamSpec,
    start: &Start,
    out: &mut impl Write,
) -> io::Result<Vec<FinalHead>> {
    let mut rng = Rng::new(spec.seed ^ 0xf12e);
    let mut live: Vec<Live> = start
        .accounts
        .iter()
        .map(|g| Live {
            did: g.did.clone(),
            key: g.key.clone(),
            rev: g.rev.clone(),
            head: g.cid,
            data: start.data,
            own: BlockMap::new(),
            created: Vec::new(),
            profile: false,
        })
        .collect();
    // One commit every 10 ms on average, from an hour after genesis: the
    // revs stay in the past whatever the stream length.
    let mut micros = GENESIS_MICROS + 3_600_000_000;
    for seq in 1..=spec.commits as i64 {
        micros += rng.range(1, 20_000);
        let n = (rng.next_u64() % live.len() as u64) as usize;
        let frame = next_commit(&mut live[n], &mut rng, seq, micros, start);
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&frame)?;
    }
    Ok(live
        .into_iter()
        .map(|l| FinalHead {
            did: l.did,
            cid: l.head,
            rev: l.rev,
        })
        .collect())
}

/// A create of a random record at a fresh TID path.
fn create(
    tree: &mut Mst<Layered<'_>>,
    rng: &mut Rng,
    created: &mut Vec<String>,
    records: &mut BlockMap,
    ops: &mut Vec<RepoOp>,
    micros: u64,
) {
    let collection = pick_collection(rng);
    let path = format!("{collection}/{}", tid(micros, rng.range(0, 1023)));
    let bytes = record(rng, collection, micros);
    let cid = records.put_cbor(bytes);
    if let Err(e) = tree.insert(&path, cid) {
        panic!("insert: {e}");
    }
    created.push(path.clone());
    ops.push(RepoOp {
        action: OpAction::Create,
        path,
        cid: Some(cid),
        prev: None,
    });
}

fn next_commit(acct: &mut Live, rng: &mut Rng, seq: i64, micros: u64, start: &Start) -> Vec<u8> {
    let layers = [&acct.own, &*start.blocks];
    let mut tree = match Mst::load(Layered(&layers), acct.data) {
        Ok(t) => t,
        Err(e) => panic!("loading {}'s tree: {e}", acct.did),
    };
    // What this commit does.
    let roll = rng.range(1, 100);
    let mut ops: Vec<RepoOp> = Vec::new();
    let mut records = BlockMap::new();
    if roll <= 8 && !acct.created.is_empty() {
        // Delete one of the account's records (an unlike, an unfollow).
        let i = (rng.next_u64() % acct.created.len() as u64) as usize;
        let path = acct.created.swap_remove(i);
        let prev = match tree.delete(&path) {
            Ok(p) => p,
            Err(e) => panic!("delete: {e}"),
        };
        ops.push(RepoOp {
            action: OpAction::Delete,
            path,
            cid: None,
            prev,
        });
    } else if roll <= 11 {
        // Create or update the profile.
        let path = "app.bsky.actor.profile/self".to_owned();
        let bytes = record(rng, "app.bsky.feed.post", micros);
        let cid = records.put_cbor(bytes);
        let prev = match tree.insert(&path, cid) {
            Ok(p) => p,
            Err(e) => panic!("profile: {e}"),
        };
        ops.push(RepoOp {
            action: if acct.profile {
                OpAction::Update
            } else {
                OpAction::Create
            },
            path,
            cid: Some(cid),
            prev,
        });
        acct.profile = true;
    } else {
        // Mostly one record; now and then a thread or a batch of follows.
        let count = if roll <= 14 { rng.range(2, 5) } else { 1 };
        for i in 0..count {
            create(
                &mut tree,
                rng,
                &mut acct.created,
                &mut records,
                &mut ops,
                micros + i,
            );
        }
    }
    let data = tree.root_cid();
    let nodes = tree.take_new_blocks();
    drop(tree);

    let rev = tid(micros, 0);
    let (_, commit_bytes, commit) = match Commit::create(&acct.did, data, &rev, &acct.key) {
        Ok(c) => c,
        Err(e) => panic!("signing: {e}"),
    };
    let mut carried = nodes;
    for (cid, bytes) in records.iter() {
        carried.insert(*cid, bytes.clone());
    }
    carried.insert(commit, Bytes::from(commit_bytes));

    // Add what the inversion reads beyond the new blocks, then check it.
    let record_ops: Vec<RecordOp> = ops.iter().map(RecordOp::from).collect();
    let seen = {
        let layers = [&carried, &acct.own, &*start.blocks];
        let rec = Recording::new(Layered(&layers));
        if let Err(e) = invert_ops(&rec, &data, &record_ops) {
            panic!("inverting a generated commit: {e}");
        }
        rec.seen()
    };
    for cid in seen {
        if !carried.contains(&cid) {
            let layers = [&acct.own, &*start.blocks];
            if let Ok(Some(bytes)) = Layered(&layers).get_block(&cid) {
                carried.insert(cid, bytes);
            }
        }
    }
    match invert_ops(&carried, &data, &record_ops) {
        Ok(root) if root == acct.data => {}
        Ok(root) => panic!("generated commit inverts to {root}, not {}", acct.data),
        Err(e) => panic!("generated commit does not invert on its own blocks: {e}"),
    }

    let car = write_car(&[commit], carried.iter().map(|(c, d)| (c, &d[..])));
    let event = CommitEvent {
        seq,
        repo: acct.did.clone(),
        rev: rev.clone(),
        since: Some(acct.rev.clone()),
        commit,
        blocks: Bytes::from(car),
        ops,
        prev_data: Some(acct.data),
        time: datetime(micros),
        too_big: false,
        rebase: false,
        blobs: Vec::new(),
    };
    for (cid, bytes) in carried.iter() {
        acct.own.insert(*cid, bytes.clone());
    }
    acct.rev = rev;
    acct.head = commit;
    acct.data = data;
    encode_frame(&Frame {
        seq: Some(seq),
        event: Event::Commit(event),
    })
}

/// Reads the next length-prefixed frame; `None` at the end.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut frame)?;
    Ok(Some(frame))
}
