// A seeded, realistic workload against the loopback network (plc.mjs + two
// pds.mjs), through the reference client (@atproto/api) — what real users
// and a real migration do to a PDS. Prints one JSON line: the summary of
// what the PDSes should now hold (see README.md).
//
//   node_modules/.bin/node workload.mjs --seed 1 --plc URL \
//     --pds-a URL --pds-a-data DIR --pds-b URL --pds-b-data DIR \
//     [--admin-password PW] [--posts N] [--no-lifecycle] [--pause-at PHASE]
//
// --pause-at deletes|lifecycle: stop just before that section, print
// {"paused":"<phase>"} on its own stdout line, and wait for one line on
// stdin (or its end) before going on, so a test can act on the network
// mid-workload. `lifecycle` pauses before the summary when --no-lifecycle.
// The summary is still the last stdout line.
//
// The same seed gives the same operations in the same order (content,
// choices, blob bytes); TIDs and revs come from the wall clock and differ.
import zlib from 'node:zlib'
import path from 'node:path'
import readline from 'node:readline'
import Database from 'better-sqlite3'
import { AtpAgent } from '@atproto/api'
import { fail, parseArgs, required } from './lib.mjs'

// ---------------------------------------------------------------------------
// determinism

function prng(seed) {
  // mulberry32
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

let rand = prng(1)
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1))
const pick = (xs) => xs[Math.floor(rand() * xs.length)]
const chance = (p) => rand() < p
const WORDS = (
  'backup mirror firehose commit repo record blob tree merkle search ' +
  'rev cid signature host account bluesky atproto sync durable history ' +
  'ünïcödé 日本語 emoji 🐄 barn hay tractor field'
).split(' ')
const sentence = (n) => Array.from({ length: n }, () => pick(WORDS)).join(' ')

/** A valid PNG of w×h random RGB pixels: incompressible, like a photo. */
function png(w, h) {
  const raw = Buffer.alloc((w * 3 + 1) * h)
  for (let y = 0; y < h; y++) {
    const row = y * (w * 3 + 1)
    raw[row] = 0 // filter: none
    for (let i = 1; i <= w * 3; i++) raw[row + i] = int(0, 255)
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4)
    len.writeUInt32BE(data.length)
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data])
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(zlib.crc32(body))
    return Buffer.concat([len, body, crc])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(w, 0)
  ihdr.writeUInt32BE(h, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level: 1 })),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

// ---------------------------------------------------------------------------
// the model: what each account should hold afterwards

class Account {
  constructor(name, host) {
    this.name = name
    this.handle = `${name}.test`
    this.password = `pw-${name}`
    this.email = `${name}@example.test`
    this.host = host // 'a' | 'b'
    this.status = 'active'
    this.records = new Map() // "collection/rkey" -> { uri, cid, blobs: [cid] }
    this.uploaded = new Set() // every blob CID ever uploaded for this account
    this.posts = [] // { uri, cid } of live posts, for replies/likes/reposts
    this.likes = new Set() // subject uris liked
    this.reposts = new Set()
    this.follows = new Set() // subject dids
    this.blocks = new Set()
  }
}

const blobsOf = (record) => {
  const out = []
  const walk = (v) => {
    if (v === null || typeof v !== 'object') return
    if (v.$type === 'blob' || (v.ref && v.mimeType)) {
      const cid = v.ref?.toString?.() ?? v.ref?.$link
      if (cid) out.push(cid)
      return
    }
    for (const x of Array.isArray(v) ? v : Object.values(v)) walk(x)
  }
  walk(record)
  return out
}

// ---------------------------------------------------------------------------
// operations

class Workload {
  constructor(args) {
    this.plc = required(args, 'plc')
    this.hosts = {
      a: { url: required(args, 'pds-a'), dataDir: required(args, 'pds-a-data') },
      b: { url: required(args, 'pds-b'), dataDir: required(args, 'pds-b-data') },
    }
    this.adminPassword = args['admin-password'] ?? 'barn-admin'
    this.postsPer = Number(args.posts ?? 6)
    this.accounts = []
    this.agents = new Map() // name -> AtpAgent logged in at its current host
    this.migrations = []
    this.counts = { commits: 0, blobs: 0 }
  }

  agent(acct) {
    return this.agents.get(acct.name)
  }

  adminHeaders() {
    const basic = Buffer.from(`admin:${this.adminPassword}`).toString('base64')
    return { authorization: `Basic ${basic}` }
  }

  async createAccount(name, host, extra = {}) {
    const acct = new Account(name, host)
    const agent = new AtpAgent({ service: this.hosts[host].url })
    const res = await agent.createAccount({
      handle: acct.handle,
      email: acct.email,
      password: acct.password,
      ...extra,
    })
    acct.did = res.data.did
    this.accounts.push(acct)
    this.agents.set(name, agent)
    return acct
  }

  async uploadImage(acct, maxSide = 160) {
    const bytes = png(int(16, maxSide), int(16, maxSide))
    const res = await this.agent(acct).uploadBlob(bytes, { encoding: 'image/png' })
    const blob = res.data.blob
    acct.uploaded.add(blob.ref.toString())
    this.counts.blobs++
    return blob
  }

  note(acct, collection, rkey, uri, cid, record) {
    acct.records.set(`${collection}/${rkey}`, { uri, cid, blobs: blobsOf(record) })
    this.counts.commits++
  }

  forget(acct, collection, rkey) {
    const key = `${collection}/${rkey}`
    if (!acct.records.delete(key)) throw new Error(`model: ${acct.name} has no ${key}`)
    this.counts.commits++
  }

  async create(acct, collection, record, rkey) {
    const res = await this.agent(acct).com.atproto.repo.createRecord({
      repo: acct.did,
      collection,
      record,
      ...(rkey ? { rkey } : {}),
    })
    const rk = res.data.uri.split('/').pop()
    this.note(acct, collection, rk, res.data.uri, res.data.cid, record)
    return { uri: res.data.uri, cid: res.data.cid, rkey: rk }
  }

  async put(acct, collection, rkey, record) {
    const res = await this.agent(acct).com.atproto.repo.putRecord({
      repo: acct.did,
      collection,
      rkey,
      record,
    })
    this.note(acct, collection, rkey, res.data.uri, res.data.cid, record)
    return res.data
  }

  async del(acct, collection, rkey) {
    await this.agent(acct).com.atproto.repo.deleteRecord({ repo: acct.did, collection, rkey })
    this.forget(acct, collection, rkey)
  }

  now() {
    return new Date().toISOString()
  }

  async profile(acct) {
    const avatar = await this.uploadImage(acct, 96)
    await this.put(acct, 'app.bsky.actor.profile', 'self', {
      $type: 'app.bsky.actor.profile',
      displayName: `${acct.name} ${sentence(1)}`,
      description: sentence(int(3, 12)),
      avatar,
    })
  }

  async post(acct, { reply } = {}) {
    const record = {
      $type: 'app.bsky.feed.post',
      text: sentence(int(2, 20)),
      createdAt: this.now(),
      langs: ['en'],
    }
    if (reply) record.reply = reply
    if (!reply && chance(0.4)) {
      const n = int(1, 4)
      const images = []
      for (let i = 0; i < n; i++) {
        images.push({ image: await this.uploadImage(acct), alt: sentence(2) })
      }
      record.embed = { $type: 'app.bsky.embed.images', images }
    }
    const ref = await this.create(acct, 'app.bsky.feed.post', record)
    acct.posts.push({ uri: ref.uri, cid: ref.cid, rkey: ref.rkey })
    return ref
  }

  othersPosts(acct) {
    return this.accounts
      .filter((o) => o !== acct && o.status === 'active')
      .flatMap((o) => o.posts)
  }

  async reply(acct) {
    const parent = pick(this.othersPosts(acct))
    if (!parent) return
    const ref = { uri: parent.uri, cid: parent.cid }
    await this.post(acct, { reply: { root: ref, parent: ref } })
  }

  // Likes, reposts, follows and blocks go to subjects not used before: the
  // PDS may delete an older record with the same subject in the same commit,
  // which the model would otherwise have to mirror.
  async like(acct) {
    const subject = pick(this.othersPosts(acct).filter((p) => !acct.likes.has(p.uri)))
    if (!subject) return
    acct.likes.add(subject.uri)
    await this.create(acct, 'app.bsky.feed.like', {
      $type: 'app.bsky.feed.like',
      subject: { uri: subject.uri, cid: subject.cid },
      createdAt: this.now(),
    })
  }

  async repost(acct) {
    const subject = pick(this.othersPosts(acct).filter((p) => !acct.reposts.has(p.uri)))
    if (!subject) return
    acct.reposts.add(subject.uri)
    await this.create(acct, 'app.bsky.feed.repost', {
      $type: 'app.bsky.feed.repost',
      subject: { uri: subject.uri, cid: subject.cid },
      createdAt: this.now(),
    })
  }

  async graph(acct, collection, set) {
    const other = pick(this.accounts.filter((o) => o !== acct && !set.has(o.did)))
    if (!other) return
    set.add(other.did)
    await this.create(acct, collection, {
      $type: collection,
      subject: other.did,
      createdAt: this.now(),
    })
  }

  async edit(acct) {
    const target = pick(acct.posts)
    if (!target) return
    const res = await this.put(acct, 'app.bsky.feed.post', target.rkey, {
      $type: 'app.bsky.feed.post',
      text: `(edited) ${sentence(int(2, 10))}`,
      createdAt: this.now(),
    })
    target.cid = res.cid
  }

  async deletePost(acct, { withImages = false } = {}) {
    const candidates = acct.posts.filter(
      (p) => acct.records.get(`app.bsky.feed.post/${p.rkey}`).blobs.length > 0 === withImages,
    )
    const target = pick(candidates)
    if (!target) return
    acct.posts = acct.posts.filter((p) => p !== target)
    await this.del(acct, 'app.bsky.feed.post', target.rkey)
  }

  /** Records in a non-Bluesky collection, with record keys that are not TIDs. */
  async things(acct) {
    const rkeys = ['a:b', 'x.y~z', '_', 'self', `thing-${int(100, 999)}`, 'z'.repeat(int(20, 200))]
    for (const rkey of rkeys) {
      await this.put(acct, 'com.example.thing', rkey, {
        $type: 'com.example.thing',
        name: sentence(3),
        n: int(-1000, 1000),
        nested: { list: [1, 2, { deep: [true, false, null] }], empty: {} },
      })
    }
  }

  /** One applyWrites commit mixing create, update and delete. */
  async batch(acct) {
    const things = [...acct.records.keys()].filter((k) => k.startsWith('com.example.thing/'))
    const [upd, del] = [things[0], things[1]].map((k) => k.split('/')[1])
    const newKey = `batch-${int(1000, 9999)}`
    const record = (name) => ({ $type: 'com.example.thing', name, n: int(0, 9) })
    const writes = [
      { $type: 'com.atproto.repo.applyWrites#create', collection: 'com.example.thing', rkey: newKey, value: record('created') },
      { $type: 'com.atproto.repo.applyWrites#create', collection: 'app.bsky.feed.post', value: { $type: 'app.bsky.feed.post', text: sentence(5), createdAt: this.now() } },
      { $type: 'com.atproto.repo.applyWrites#update', collection: 'com.example.thing', rkey: upd, value: record('updated') },
      { $type: 'com.atproto.repo.applyWrites#delete', collection: 'com.example.thing', rkey: del },
    ]
    const res = await this.agent(acct).com.atproto.repo.applyWrites({ repo: acct.did, writes })
    this.counts.commits++
    for (const [i, r] of res.data.results.entries()) {
      const w = writes[i]
      if (w.$type.endsWith('#delete')) {
        acct.records.delete(`${w.collection}/${w.rkey}`)
        continue
      }
      const rkey = r.uri.split('/').pop()
      acct.records.set(`${w.collection}/${rkey}`, { uri: r.uri, cid: r.cid, blobs: [] })
      if (w.collection === 'app.bsky.feed.post') acct.posts.push({ uri: r.uri, cid: r.cid, rkey })
    }
  }

  // ------------------------------------------------------------------ lifecycle

  /** The newest email token of `purpose` for `did`, from the PDS's account db. */
  emailToken(host, did, purpose) {
    const db = new Database(path.join(this.hosts[host].dataDir, 'account.sqlite'), {
      readonly: true,
      fileMustExist: true,
    })
    try {
      const row = db
        .prepare('SELECT token FROM email_token WHERE did = ? AND purpose = ?')
        .get(did, purpose)
      if (!row) throw new Error(`no ${purpose} email token for ${did} on PDS ${host}`)
      return row.token
    } finally {
      db.close()
    }
  }

  async changeHandle(acct) {
    acct.handle = `${acct.name}-renamed.test`
    await this.agent(acct).com.atproto.identity.updateHandle({ handle: acct.handle })
  }

  async deactivateReactivate(acct) {
    const s = this.agent(acct).com.atproto.server
    await s.deactivateAccount({})
    await s.activateAccount()
  }

  async takedownReversal(acct) {
    const admin = new AtpAgent({ service: this.hosts[acct.host].url }).com.atproto.admin
    const subject = { $type: 'com.atproto.admin.defs#repoRef', did: acct.did }
    const opts = { headers: this.adminHeaders(), encoding: 'application/json' }
    await admin.updateSubjectStatus({ subject, takedown: { applied: true, ref: 'barn-test' } }, opts)
    await admin.updateSubjectStatus({ subject, takedown: { applied: false } }, opts)
  }

  async deleteAccount(acct) {
    const agent = this.agent(acct)
    await agent.com.atproto.server.requestAccountDelete()
    const token = this.emailToken(acct.host, acct.did, 'delete_account')
    await agent.com.atproto.server.deleteAccount({ did: acct.did, password: acct.password, token })
    acct.status = 'deleted'
  }

  /** Full account migration, the documented way: PDS `from` → PDS `to`. */
  async migrate(acct, to) {
    const from = acct.host
    const oldAgent = this.agent(acct)
    const newAgent = new AtpAgent({ service: this.hosts[to].url })

    const desc = await newAgent.com.atproto.server.describeServer()
    const serviceAuth = await oldAgent.com.atproto.server.getServiceAuth({
      aud: desc.data.did,
      lxm: 'com.atproto.server.createAccount',
    })
    await newAgent.com.atproto.server.createAccount(
      { did: acct.did, handle: acct.handle, email: acct.email, password: acct.password },
      { headers: { authorization: `Bearer ${serviceAuth.data.token}` }, encoding: 'application/json' },
    )
    await newAgent.login({ identifier: acct.did, password: acct.password })

    const car = await oldAgent.com.atproto.sync.getRepo({ did: acct.did })
    await newAgent.com.atproto.repo.importRepo(car.data, { encoding: 'application/vnd.ipld.car' })

    let cursor
    let moved = 0
    do {
      const missing = await newAgent.com.atproto.repo.listMissingBlobs({ cursor, limit: 100 })
      for (const { cid } of missing.data.blobs) {
        const blob = await oldAgent.com.atproto.sync.getBlob({ did: acct.did, cid })
        await newAgent.uploadBlob(blob.data, { encoding: blob.headers['content-type'] })
        moved++
      }
      cursor = missing.data.cursor
    } while (cursor)

    const prefs = await oldAgent.app.bsky.actor.getPreferences().catch(() => null)
    if (prefs) await newAgent.app.bsky.actor.putPreferences(prefs.data).catch(() => {})

    const creds = await newAgent.com.atproto.identity.getRecommendedDidCredentials()
    await oldAgent.com.atproto.identity.requestPlcOperationSignature()
    const token = this.emailToken(from, acct.did, 'plc_operation')
    const signed = await oldAgent.com.atproto.identity.signPlcOperation({ token, ...creds.data })
    await newAgent.com.atproto.identity.submitPlcOperation({ operation: signed.data.operation })
    await newAgent.com.atproto.server.activateAccount()
    await oldAgent.com.atproto.server.deactivateAccount({})

    acct.host = to
    this.agents.set(acct.name, newAgent)
    this.migrations.push({ did: acct.did, from, to, blobsMoved: moved })
  }

  // ------------------------------------------------------------------ summary

  async summary(seed) {
    const accounts = []
    for (const acct of this.accounts) {
      const collections = {}
      const blobs = new Set()
      const records = []
      for (const [key, r] of [...acct.records.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
        const coll = key.split('/')[0]
        collections[coll] = (collections[coll] ?? 0) + 1
        for (const b of r.blobs) blobs.add(b)
        records.push({ path: key, cid: r.cid })
      }
      let head = null
      if (acct.status !== 'deleted') {
        const res = await new AtpAgent({ service: this.hosts[acct.host].url }).com.atproto.sync.getLatestCommit({ did: acct.did })
        head = res.data
      }
      accounts.push({
        name: acct.name,
        did: acct.did,
        handle: acct.handle,
        host: acct.host,
        pds: this.hosts[acct.host].url,
        status: acct.status,
        rev: head?.rev ?? null,
        commit: head?.cid ?? null,
        collections,
        records: acct.status === 'deleted' ? [] : records,
        blobs: [...blobs].sort(),
        uploadedBlobs: [...acct.uploaded].sort(),
      })
    }
    return { seed, commits: this.counts.commits, blobsUploaded: this.counts.blobs, migrations: this.migrations, accounts }
  }
}

// ---------------------------------------------------------------------------

const PHASES = ['deletes', 'lifecycle']

/**
 * Announces the pause on stdout and waits for one line on stdin. The end of
 * stdin counts as that line: a harness that goes away does not leave the
 * workload hanging.
 */
async function pause(phase) {
  process.stdout.write(JSON.stringify({ paused: phase }) + '\n')
  const rl = readline.createInterface({ input: process.stdin })
  await new Promise((resolve) => {
    rl.once('line', resolve)
    rl.once('close', resolve)
  })
  // Closing the interface pauses stdin, so it no longer keeps node alive.
  rl.close()
}

async function main() {
  const args = parseArgs()
  const seed = Number(args.seed ?? 1)
  rand = prng(seed)
  const w = new Workload(args)
  const lifecycle = !args['no-lifecycle']
  const pauseAt = args['pause-at']
  if (pauseAt !== undefined && !PHASES.includes(pauseAt)) {
    throw new Error(`--pause-at: unknown phase ${pauseAt} (one of ${PHASES.join(', ')})`)
  }

  // Six accounts on PDS a, one native to PDS b.
  const names = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']
  for (const name of names) await w.createAccount(name, 'a')
  await w.createAccount('gwen', 'b')
  const all = () => w.accounts.filter((a) => a.status === 'active')

  for (const acct of all()) await w.profile(acct)
  for (let round = 0; round < w.postsPer; round++) {
    for (const acct of all()) {
      await w.post(acct)
      if (round > 0 && chance(0.5)) await w.reply(acct)
      if (chance(0.7)) await w.like(acct)
      if (chance(0.3)) await w.repost(acct)
    }
  }
  for (const acct of all()) {
    await w.graph(acct, 'app.bsky.graph.follow', acct.follows)
    await w.graph(acct, 'app.bsky.graph.follow', acct.follows)
    if (chance(0.5)) await w.graph(acct, 'app.bsky.graph.block', acct.blocks)
    await w.things(acct)
    await w.batch(acct)
    await w.edit(acct)
  }
  // Avatars replaced: the old blob is no longer referenced (the PDS frees it).
  for (const acct of w.accounts.slice(0, 2)) await w.profile(acct)
  if (pauseAt === 'deletes') await pause('deletes')
  // Deletes: a post with images (its blobs lose their last reference), a plain one.
  for (const acct of all()) {
    await w.deletePost(acct, { withImages: true })
    await w.deletePost(acct)
  }

  if (pauseAt === 'lifecycle') await pause('lifecycle')
  if (lifecycle) {
    const by = (n) => w.accounts.find((a) => a.name === n)
    await w.changeHandle(by('bob'))
    await w.deactivateReactivate(by('carol'))
    await w.takedownReversal(by('dave'))
    await w.deleteAccount(by('erin'))
    await w.migrate(by('frank'), 'b')
    // A migrated repo is only consistent again after its first new commit on
    // the new host (the imported commit keeps its old rev and signature).
    await w.post(by('frank'))
    await w.post(by('carol'))
    await w.like(by('dave'))
  }

  const summary = await w.summary(seed)
  process.stdout.write(JSON.stringify(summary) + '\n')
}

main().catch(fail)
