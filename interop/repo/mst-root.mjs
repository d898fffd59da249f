// Reads {"entries": [["collection/rkey", "<cid>"], ...], "deletes": ["collection/rkey", ...]}
// from stdin, inserts every entry (in the given order) into an empty MST of the
// reference implementation, then deletes the listed keys, and prints {"root": "<cid>"}.
import { main, readStdin } from './lib.mjs'
import { MST, MemoryBlockstore } from '@atproto/repo'
import { parseCid } from '@atproto/lex-data'

main('mst-root', async () => {
  let input
  try {
    input = JSON.parse(await readStdin())
  } catch (err) {
    throw new Error(`stdin is not valid JSON: ${err.message}`)
  }
  const { entries, deletes = [] } = input ?? {}
  if (!Array.isArray(entries)) throw new Error('stdin JSON needs an "entries" array')
  if (!Array.isArray(deletes)) throw new Error('"deletes" must be an array of keys')

  let mst = await MST.create(new MemoryBlockstore())
  for (const [i, entry] of entries.entries()) {
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string' || typeof entry[1] !== 'string') {
      throw new Error(`entries[${i}] must be ["key", "cid"], got ${JSON.stringify(entry)}`)
    }
    const [key, cid] = entry
    mst = await mst.add(key, parseCid(cid))
  }
  for (const key of deletes) {
    if (typeof key !== 'string') throw new Error(`deletes must hold strings, got ${JSON.stringify(key)}`)
    if ((await mst.get(key)) === null) throw new Error(`cannot delete absent key ${key}`)
    mst = await mst.delete(key)
  }
  return { root: (await mst.getPointer()).toString() }
})
