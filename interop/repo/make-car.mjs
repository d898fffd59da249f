// make-car.mjs --seed <int> --records <n> --out <file.car>
//
// Builds a deterministic repository with the reference implementation
// (@atproto/repo: Repo.create + applyWrites on an in-memory blockstore, in
// several commits: batches of creates, then updates and deletes), writes the
// full repo CAR (root = head commit) to --out and prints
// {"did","signingKey","commit","data","rev","records":[{"path","cid"}]}.
//
// Determinism: the signing key is sha256("<seed>") as a secp256k1 private key,
// the DID is did:plc:<24 base32 chars of sha256("did:<seed>")>, record
// contents and record keys come from a PRNG seeded by the seed. The reference
// library stamps every commit with a wall-clock rev, so once all writes are in,
// the head is re-signed (Repo.resignCommit) with a rev computed from the seed.
// The CAR holds only the head commit, so equal arguments give identical bytes.
import { intOption, main, options, recordList } from './lib.mjs'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { Secp256k1Keypair } from '@atproto/crypto'
import { TID } from '@atproto/common-web'
import { cidForCbor, cidForRawBytes } from '@atproto/lex-data'
import { jsonToLex } from '@atproto/lex-json'
import {
  MemoryBlockstore,
  Repo,
  WriteOpAction,
  cidForRecord,
  concatBytesAsync,
  getFullRepo,
  verifyRepoCar,
} from '@atproto/repo'

const BATCH = 50
// Record keys (TIDs) start at 2024-01-01T00:00:00Z, in microseconds.
const EPOCH_US = Date.UTC(2024, 0, 1) * 1000
// Non-TID record keys for com.example.thing: every character class a record key allows.
const THING_RKEYS = ['thing-001', 'a:b', 'x.y~z', '_', 'A-Z_a.z:0~9', 'self', '..x', 'k'.repeat(300)]

const sha256 = (s) => createHash('sha256').update(s).digest()

function base32(bytes) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
  let bits = 0
  let value = 0
  let out = ''
  for (const byte of bytes) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
    value &= 0xff
  }
  return out
}

// mulberry32: a tiny deterministic PRNG, seeded from sha256("prng:<seed>").
function prng(seed) {
  let a = sha256(`prng:${seed}`).readUInt32BE(0)
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n) => Math.floor(next() * n) // 0 <= int(n) < n
  const bytes = (n) => Uint8Array.from({ length: n }, () => int(256))
  const pick = (list) => list[int(list.length)]
  return { next, int, bytes, pick }
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64').replace(/=+$/, '')

main('make-car', async () => {
  const opts = options({ seed: { type: 'string' }, records: { type: 'string' }, out: { type: 'string' } })
  const seed = intOption('seed', opts.seed, Number.MIN_SAFE_INTEGER)
  const count = intOption('records', opts.records, 0)

  const keypair = await Secp256k1Keypair.import(sha256(String(seed)))
  const did = `did:plc:${base32(sha256(`did:${seed}`)).slice(0, 24)}`
  const rand = prng(seed)
  const clockid = rand.int(32)
  let clock = EPOCH_US + rand.int(1e9)
  const nextTid = () => {
    clock += 1000 + rand.int(5e6)
    return TID.fromTime(clock, clockid).toString()
  }
  const createdAt = () => new Date(Math.floor(clock / 1000)).toISOString()

  const blob = async (mimeType) => {
    const size = 1 + rand.int(1 << 20)
    const ref = await cidForRawBytes(rand.bytes(32))
    return { $type: 'blob', ref: { $link: ref.toString() }, mimeType, size }
  }
  const posts = [] // {uri, cid} strong refs for likes and replies

  const makeProfile = async (edit) => ({
    $type: 'app.bsky.actor.profile',
    displayName: edit ? `Barn Tester ${seed} (edited)` : `Barn Tester ${seed}`,
    description: 'Interop fixture ✨ — ünïcødé, 日本語, emoji 🐄🌾\nsecond line',
    avatar: await blob('image/jpeg'),
    createdAt: createdAt(),
  })

  const makePost = async (i, label = 'post') => {
    const text = `${label} ${i} of seed ${seed}: ${rand.pick(['hello', 'héllo wörld', '日本語のテキスト', '🐄 moo', ''])} #barn`
    const record = { $type: 'app.bsky.feed.post', text, createdAt: createdAt(), langs: rand.pick([['en'], ['ja', 'en'], []]) }
    const tagStart = Buffer.byteLength(text) - 5
    record.facets = [
      { index: { byteStart: tagStart, byteEnd: tagStart + 5 }, features: [{ $type: 'app.bsky.richtext.facet#tag', tag: 'barn' }] },
    ]
    if (posts.length > 0 && rand.next() < 0.3) {
      const root = posts[0]
      const parent = rand.pick(posts)
      record.reply = { root, parent }
    }
    if (rand.next() < 0.4) {
      record.embed = {
        $type: 'app.bsky.embed.images',
        images: [
          { alt: `image ${i}`, image: await blob('image/png'), aspectRatio: { width: 1 + rand.int(4000), height: 1 + rand.int(4000) } },
        ],
      }
    }
    return record
  }

  const makeLike = async () => {
    const subject = posts.length > 0 ? rand.pick(posts) : {
      uri: `at://did:plc:${'a'.repeat(24)}/app.bsky.feed.post/${nextTid()}`,
      cid: (await cidForCbor(rand.bytes(16))).toString(),
    }
    return { $type: 'app.bsky.feed.like', subject, createdAt: createdAt() }
  }

  const makeThing = async (i, edit = 0) => ({
    $type: 'com.example.thing',
    name: `thing ${i}`,
    edit,
    count: rand.int(1000),
    negative: -1 - rand.int(1e9),
    zero: 0,
    big: rand.next() < 0.5 ? Number.MAX_SAFE_INTEGER : -Number.MAX_SAFE_INTEGER,
    flag: rand.next() < 0.5,
    nothing: null,
    empty: '',
    unicode: 'ü…😀\t"quoted" \\ back',
    list: [1, 'two', { three: 3 }, [], [false, null]],
    emptyList: [],
    emptyObject: {},
    nested: { a: { b: { c: { depth: 4, tags: ['x', 'y'] } } }, 'key with spaces': 'v', Z: 'upper', zz: 'len 2' },
    data: { $bytes: b64(rand.bytes(rand.int(48))) },
    noBytes: { $bytes: '' },
    link: { $link: (await cidForCbor(rand.bytes(24))).toString() },
    attachment: await blob('application/octet-stream'),
  })

  // Plan the creates: `count` records stay, `extra` more are created then deleted.
  const extra = count >= 4 ? Math.max(1, Math.floor(count / 10)) : 0
  const creates = []
  let things = 0
  for (let i = 0; i < count + extra; i++) {
    const kind = i === 0 ? 'profile' : i <= 3 ? ['post', 'like', 'thing'][i - 1] : rand.next() < 0.45 ? 'post' : rand.next() < 0.6 ? 'like' : 'thing'
    let collection, rkey, record
    if (kind === 'profile') {
      ;[collection, rkey, record] = ['app.bsky.actor.profile', 'self', await makeProfile(false)]
    } else if (kind === 'post') {
      ;[collection, rkey, record] = ['app.bsky.feed.post', nextTid(), await makePost(i)]
      posts.push({ uri: `at://${did}/${collection}/${rkey}`, cid: (await cidForRecord(jsonToLex(record))).toString() })
    } else if (kind === 'like') {
      ;[collection, rkey, record] = ['app.bsky.feed.like', nextTid(), await makeLike()]
    } else {
      things++
      rkey = THING_RKEYS[things - 1] ?? `thing-${String(things).padStart(3, '0')}`
      ;[collection, record] = ['com.example.thing', await makeThing(i)]
    }
    creates.push({ action: WriteOpAction.Create, collection, rkey, record: jsonToLex(record) })
  }

  // Commits: the first batch creates the repo, then one commit per further batch.
  const storage = new MemoryBlockstore()
  let repo = await Repo.create(storage, did, keypair, creates.slice(0, BATCH))
  for (let start = BATCH; start < creates.length; start += BATCH) {
    repo = await repo.applyWrites(creates.slice(start, start + BATCH), keypair)
  }

  // Then updates and deletes, spread over two commits.
  const candidates = creates.slice(1)
  const deletes = []
  for (let k = 0; k < extra; k++) deletes.push(candidates.splice(rand.int(candidates.length), 1)[0])
  const updates = count >= 2 ? [creates[0]] : []
  for (let k = 0; k < Math.floor(count / 8) && candidates.length > 0; k++) updates.push(candidates.splice(rand.int(candidates.length), 1)[0])
  const updateOps = []
  for (const [k, op] of updates.entries()) {
    let record
    if (op.collection === 'app.bsky.actor.profile') record = await makeProfile(true)
    else if (op.collection === 'com.example.thing') record = await makeThing(k, 1)
    else if (op.collection === 'app.bsky.feed.post') record = await makePost(k, 'edited post')
    else record = await makeLike()
    updateOps.push({ action: WriteOpAction.Update, collection: op.collection, rkey: op.rkey, record: jsonToLex(record) })
  }
  const deleteOps = deletes.map(({ collection, rkey }) => ({ action: WriteOpAction.Delete, collection, rkey }))
  const half = (list) => Math.ceil(list.length / 2)
  const second = [...updateOps.slice(half(updateOps)), ...deleteOps.slice(half(deleteOps))]
  const first = [...updateOps.slice(0, half(updateOps)), ...deleteOps.slice(0, half(deleteOps))]
  if (first.length > 0) repo = await repo.applyWrites(first, keypair)
  if (second.length > 0) repo = await repo.applyWrites(second, keypair)

  // Deterministic rev, later than every record key.
  const rev = TID.fromTime(clock + 1_000_000, clockid).toString()
  repo = await repo.resignCommit(rev, keypair)

  const car = await concatBytesAsync(getFullRepo(storage, repo.cid))
  await writeFile(opts.out, car)

  const records = await recordList(repo.walkRecords())
  if (records.length !== count) throw new Error(`internal: expected ${count} records, built ${records.length}`)
  // Self-check with the reference verifier before handing the CAR out.
  const verified = await verifyRepoCar(car, did, keypair.did())
  if (!verified.commit.cid.equals(repo.cid)) throw new Error('internal: verified commit differs from head')

  return {
    did,
    signingKey: keypair.did(),
    commit: repo.cid.toString(),
    data: repo.commit.data.toString(),
    rev: repo.commit.rev,
    records,
  }
})
