// Stock atproto clients, unchanged, against a `com.atproto.sync.*` server:
// barn's gateway in real use, any PDS to validate this script. Everything
// goes through the reference packages Bluesky publishes (@atproto/api's
// AtpAgent, @atproto/repo's verifyRepoCar, @atproto/identity's DID
// resolver); nothing here knows barn. Prints one JSON line:
//   {"repos":[{did, ok, rev, commit, records, error}],
//    "blobs":[{did, cid, ok, bytes, contentType, contentLength, error}],
//    "restore": {...} | null}
//
//   node_modules/.bin/node stock-clients.mjs --source URL [--source-token T] [--plc URL] \
//     [--dids did1,did2,...] [--blobs did:cid,did:cid,...] \
//     [--restore-did DID --restore-password PW --restore-handle H --restore-email E \
//      --restore-from URL --restore-to URL]
//
// --dids: sync.getRepo from --source, then verifyRepoCar against the DID and
// the signing key of its DID document (from --plc; legacy
// EcdsaSecp256k1VerificationKey2019 and Multikey forms both work): every
// block's CID, the MST, every leaf, the commit signature.
// --blobs: `did:cid` pairs, split on the last colon (a DID has colons);
// sync.getBlob from --source, the CID recomputed from the bytes (CIDv1, raw,
// sha2-256) and compared with the one asked for.
// --restore-*: an account restored from the backup onto another PDS, the
// documented migration except that the repo and the blobs come from
// --source instead of the old PDS: login at --restore-from, getServiceAuth
// for --restore-to's createAccount, createAccount with the DID there,
// importRepo of --source's CAR, listMissingBlobs → --source's getBlob →
// uploadBlob, then checkAccountStatus. The account is not activated and PLC
// is not touched. `ok` when the new PDS's repoCommit is the imported commit,
// it indexed every record and holds every blob, and no blob is missing.
// repoRev is NOT the imported rev: importRepo stores the imported commit
// under a fresh local rev (revMatches says so; it is false on PDS 0.5.35).
//
// Exit 0 whenever the checks ran, passed or not (each item carries `ok`
// or `error`; the caller asserts); 1 on usage errors and crashes.
import { AtpAgent } from '@atproto/api'
import { DidResolver } from '@atproto/identity'
import { verifyRepoCar } from '@atproto/repo'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { fail, parseArgs, required } from './lib.mjs'

/**
 * `Name (HTTP status): message` for XRPC errors, `Name: message` otherwise,
 * plus the innermost cause of a failed fetch (ECONNREFUSED, …): the XRPC
 * client reports those as `Unknown` with status 1.
 */
function describe(err) {
  let out
  if (err && typeof err.error === 'string' && err.status !== undefined) {
    const msg = err.message && err.message !== err.error ? `: ${err.message}` : ''
    out = err.status >= 100 ? `${err.error} (HTTP ${err.status})${msg}` : `no response${msg}`
  } else {
    const name = err?.name && err.name !== 'Error' ? `${err.name}: ` : ''
    out = `${name}${err?.message ?? String(err)}`
  }
  let cause = err?.cause
  while (cause?.cause) cause = cause.cause
  if (cause?.message && !out.includes(cause.message)) out += ` (${cause.code ? `${cause.code}: ` : ''}${cause.message})`
  return out
}

const list = (v, name) => {
  if (v === undefined) return []
  if (v === true) throw new Error(`--${name} needs a value`)
  return v.split(',').map((s) => s.trim()).filter(Boolean)
}

/** `did:plc:abc:bafkrei…` → { did: 'did:plc:abc', cid: 'bafkrei…' } */
function parseBlobSpec(spec) {
  const at = spec.lastIndexOf(':')
  const did = spec.slice(0, at)
  const cid = spec.slice(at + 1)
  if (at < 0 || !did.startsWith('did:') || did.split(':').length < 3 || !cid) {
    throw new Error(`--blobs: expected did:cid, got ${spec}`)
  }
  return { did, cid }
}

/** CIDv1, raw codec, sha2-256: what a PDS names a blob by. */
async function blobCid(bytes) {
  return CID.createV1(raw.code, await sha256.digest(bytes)).toString()
}

/**
 * The body of a getBlob response as bytes. The XRPC client decodes bodies by
 * content type: `text/*` comes back as a string (re-encoded here as UTF-8,
 * which is exact for valid UTF-8 without a BOM; a CID mismatch shows
 * otherwise) and `application/json` as parsed JSON (the bytes are gone).
 */
function bodyBytes(res) {
  const data = res.data
  if (data instanceof Uint8Array) return data
  if (typeof data === 'string') return new TextEncoder().encode(data)
  throw new Error(
    `the client decoded the body as ${typeof data} (content-type ${res.headers['content-type']}); raw bytes unavailable`,
  )
}

const header = (res, name) => res.headers?.[name] ?? null
const numberOrNull = (v) => (v === null || v === undefined || v === '' ? null : Number(v))

class Checker {
  constructor(args) {
    this.source = required(args, 'source')
    this.plc = args.plc === true ? undefined : args.plc
    this.agent = new AtpAgent({ service: this.source })
    // --source-token: a bearer token sent to --source with every request
    // (barn's operator token, to read accounts that are not active).
    const token = args['source-token']
    if (typeof token === 'string' && token !== '') {
      this.agent.setHeader('authorization', `Bearer ${token}`)
    }
    // globalThis.fetch: the default one refuses http:// and loopback hosts.
    this.resolver = this.plc
      ? new DidResolver({ plcUrl: this.plc, timeout: 10_000, fetch: globalThis.fetch })
      : null
  }

  /** The DID's atproto signing key, as a did:key, from its DID document. */
  async signingKey(did) {
    if (!this.resolver) throw new Error('--plc is required to verify repos')
    return this.resolver.resolveAtprotoKey(did, true)
  }

  /** getRepo from the source, verified; throws with a description of the failing step. */
  async fetchVerified(did) {
    // The server first: its answer for an unknown DID is part of what is tested.
    let car
    try {
      car = (await this.agent.com.atproto.sync.getRepo({ did })).data
    } catch (err) {
      throw new Error(`sync.getRepo: ${describe(err)}`)
    }
    if (!(car instanceof Uint8Array)) {
      throw new Error(`sync.getRepo: body decoded as ${typeof car}, not a CAR`)
    }
    let key
    try {
      key = await this.signingKey(did)
    } catch (err) {
      throw new Error(`resolving signing key: ${describe(err)}`)
    }
    let verified
    try {
      verified = await verifyRepoCar(car, did, key)
    } catch (err) {
      throw new Error(`verifyRepoCar: ${describe(err)}`)
    }
    return {
      car,
      rev: verified.commit.rev,
      commit: verified.commit.cid.toString(),
      records: verified.creates.length,
    }
  }

  async repo(did) {
    try {
      const { rev, commit, records } = await this.fetchVerified(did)
      return { did, ok: true, rev, commit, records, error: null }
    } catch (err) {
      return { did, ok: false, rev: null, commit: null, records: null, error: describe(err) }
    }
  }

  async blob({ did, cid }) {
    const out = { did, cid, ok: false, bytes: null, contentType: null, contentLength: null, error: null }
    try {
      let res
      try {
        res = await this.agent.com.atproto.sync.getBlob({ did, cid })
      } catch (err) {
        throw new Error(`sync.getBlob: ${describe(err)}`)
      }
      out.contentType = header(res, 'content-type')
      out.contentLength = numberOrNull(header(res, 'content-length'))
      const bytes = bodyBytes(res)
      out.bytes = bytes.byteLength
      const got = await blobCid(bytes)
      out.ok = got === cid
      if (!out.ok) out.error = `CID mismatch: the bytes hash to ${got}`
    } catch (err) {
      out.error = describe(err)
    }
    return out
  }

  /**
   * The documented migration onto `to`, with the repo and the blobs from the
   * source under test instead of the old PDS. `step` names the step that
   * failed, if one did.
   */
  async restore(opts) {
    const { did, password, handle, email } = opts
    const out = {
      did,
      from: opts.from,
      to: opts.to,
      ok: false,
      step: null,
      importedRev: null,
      importedCommit: null,
      importedRecords: null,
      status: null,
      commitMatches: null,
      revMatches: null,
      blobsMoved: 0,
      missingBlobsAfter: null,
      error: null,
    }
    const step = async (name, fn) => {
      out.step = name
      try {
        return await fn()
      } catch (err) {
        throw new Error(`${name}: ${describe(err)}`)
      }
    }
    try {
      const oldAgent = new AtpAgent({ service: opts.from })
      const newAgent = new AtpAgent({ service: opts.to })
      await step('login (from)', () => oldAgent.login({ identifier: did, password }))
      const desc = await step('describeServer (to)', () => newAgent.com.atproto.server.describeServer())
      const auth = await step('getServiceAuth', () =>
        oldAgent.com.atproto.server.getServiceAuth({
          aud: desc.data.did,
          lxm: 'com.atproto.server.createAccount',
        }),
      )
      await step('createAccount (to)', () =>
        newAgent.com.atproto.server.createAccount(
          { did, handle, email, password },
          { headers: { authorization: `Bearer ${auth.data.token}` }, encoding: 'application/json' },
        ),
      )
      await step('login (to)', () => newAgent.login({ identifier: did, password }))

      out.step = 'sync.getRepo (source) + verifyRepoCar'
      const repo = await this.fetchVerified(did)
      out.importedRev = repo.rev
      out.importedCommit = repo.commit
      out.importedRecords = repo.records
      await step('importRepo (to)', () =>
        newAgent.com.atproto.repo.importRepo(repo.car, { encoding: 'application/vnd.ipld.car' }),
      )

      const missing = async () => {
        const cids = []
        let cursor
        do {
          const res = await newAgent.com.atproto.repo.listMissingBlobs({ cursor, limit: 500 })
          cids.push(...res.data.blobs.map((b) => b.cid))
          cursor = res.data.cursor
        } while (cursor)
        return cids
      }
      // Listed in full before uploading: uploads shrink the list the cursor pages.
      const toMove = await step('listMissingBlobs (to)', missing)
      for (const cid of toMove) {
        const res = await step(`sync.getBlob ${cid} (source)`, () =>
          this.agent.com.atproto.sync.getBlob({ did, cid }),
        )
        const bytes = bodyBytes(res)
        const got = await blobCid(bytes)
        if (got !== cid) throw new Error(`sync.getBlob ${cid} (source): the bytes hash to ${got}`)
        const up = await step(`uploadBlob ${cid} (to)`, () =>
          newAgent.uploadBlob(bytes, {
            encoding: header(res, 'content-type') ?? 'application/octet-stream',
          }),
        )
        const stored = up.data.blob.ref.toString()
        if (stored !== cid) throw new Error(`uploadBlob ${cid} (to): stored as ${stored}`)
        out.blobsMoved++
      }
      out.missingBlobsAfter = (await step('listMissingBlobs after (to)', missing)).length

      const status = await step('checkAccountStatus (to)', () =>
        newAgent.com.atproto.server.checkAccountStatus(),
      )
      out.status = status.data
      out.commitMatches = status.data.repoCommit === out.importedCommit
      out.revMatches = status.data.repoRev === out.importedRev
      out.step = null
      out.ok =
        out.commitMatches &&
        status.data.indexedRecords === out.importedRecords &&
        status.data.importedBlobs === status.data.expectedBlobs &&
        out.missingBlobsAfter === 0
    } catch (err) {
      out.error = err.message
    }
    return out
  }
}

async function main() {
  const args = parseArgs()
  const dids = list(args.dids, 'dids')
  const blobs = list(args.blobs, 'blobs').map(parseBlobSpec)
  let restore = null
  if (args['restore-did'] !== undefined) {
    restore = {
      did: required(args, 'restore-did'),
      password: required(args, 'restore-password'),
      handle: required(args, 'restore-handle'),
      email: required(args, 'restore-email'),
      from: required(args, 'restore-from'),
      to: required(args, 'restore-to'),
    }
  } else {
    const stray = Object.keys(args).filter((k) => k.startsWith('restore-'))
    if (stray.length) throw new Error(`--${stray[0]} needs --restore-did`)
  }
  if (!dids.length && !blobs.length && !restore) {
    throw new Error('nothing to check: give --dids, --blobs and/or --restore-did')
  }
  if ((dids.length || restore) && (args.plc === undefined || args.plc === true)) {
    throw new Error('--plc is required with --dids and --restore-did (for signing keys)')
  }
  const c = new Checker(args)

  const out = { repos: [], blobs: [], restore: null }
  for (const did of dids) out.repos.push(await c.repo(did))
  for (const b of blobs) out.blobs.push(await c.blob(b))
  if (restore) out.restore = await c.restore(restore)
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch(fail)
