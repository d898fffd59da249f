// check-car.mjs --in <file.car> --did <did> --key <did:key>
//
// Verifies a full repository CAR with the reference implementation and prints
// {"commit","data","rev","version","records":[{"path","cid"}],"blocks","unreachableBlocks"}.
// Fails (exit 1) unless all of these hold:
//  - @atproto/repo's verifyRepoCar accepts it: one root, every block's CID
//    matches its bytes, the commit parses, its DID is --did, its signature
//    verifies against --key, the whole MST is present and every record block
//    is present;
//  - the commit is version 3 and every record decodes as a map;
//  - every reachable block (commit, MST nodes, records) is canonical DAG-CBOR:
//    re-encoding its decoded value gives back the same bytes;
//  - the MST is the canonical one: inserting the same (key, CID) pairs into an
//    empty reference MST gives the commit's data CID.
import { main, options, recordList } from './lib.mjs'
import { readFile } from 'node:fs/promises'
import { decode, encode } from '@atproto/lex-cbor'
import { MST, MemoryBlockstore, Repo, readCarWithRoot, verifyRepoCar } from '@atproto/repo'

const sameBytes = (a, b) => a.length === b.length && a.every((byte, i) => byte === b[i])

main('check-car', async () => {
  const opts = options({ in: { type: 'string' }, did: { type: 'string' }, key: { type: 'string' } })
  const bytes = await readFile(opts.in)

  const verified = await verifyRepoCar(bytes, opts.did, opts.key)

  const { root, blocks } = await readCarWithRoot(bytes)
  if (!root.equals(verified.commit.cid)) throw new Error('verified commit is not the CAR root')
  const repo = await Repo.load(new MemoryBlockstore(blocks), root)
  const version = decode(blocks.get(root)).version
  if (version !== 3) throw new Error(`commit version is ${version}, expected 3`)

  const records = await recordList(repo.walkRecords()) // reads and decodes every record
  const created = verified.creates.map((c) => `${c.collection}/${c.rkey} ${c.cid}`).sort()
  const listed = records.map((r) => `${r.path} ${r.cid}`).sort()
  if (created.join('\n') !== listed.join('\n')) throw new Error('verifyRepoCar and the MST walk disagree on the records')

  const reachable = await repo.data.allCids()
  reachable.add(root)
  for (const cid of reachable.toList()) {
    const block = blocks.get(cid)
    if (!block) throw new Error(`missing block ${cid}`)
    if (!sameBytes(encode(decode(block)), block)) throw new Error(`block ${cid} is not canonical DAG-CBOR`)
  }

  let canonical = await MST.create(new MemoryBlockstore())
  for await (const leaf of repo.data.walkLeavesFrom('')) canonical = await canonical.add(leaf.key, leaf.value)
  const canonicalRoot = await canonical.getPointer()
  if (!canonicalRoot.equals(repo.commit.data)) {
    throw new Error(`MST is not canonical: commit data is ${repo.commit.data}, the same entries give ${canonicalRoot}`)
  }

  return {
    commit: root.toString(),
    data: repo.commit.data.toString(),
    rev: repo.commit.rev,
    version,
    records,
    blocks: blocks.size,
    unreachableBlocks: blocks.size - reachable.size(),
  }
})
