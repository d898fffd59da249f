// Small helpers shared by the interop scripts (not a script itself). Every
// script imports it first, so the Node version check runs before any library loads.
import { parseArgs } from 'node:util'

// @atproto/repo needs Node >= 22; the `node` npm dependency provides it.
if (Number(process.versions.node.split('.')[0]) < 22) {
  process.stderr.write(
    `interop/repo: Node ${process.versions.node} is too old (need >= 22); ` +
      'run the scripts with node_modules/.bin/node after `npm ci`\n',
  )
  process.exit(1)
}

// Runs `fn` and prints its result as ONE JSON object on stdout. Any error
// goes to stderr with the script name, and the process exits with status 1.
export function main(name, fn) {
  fn().then(
    (result) => {
      process.stdout.write(JSON.stringify(result) + '\n')
    },
    (err) => {
      // The message alone; set INTEROP_DEBUG=1 for the stack.
      const detail = err instanceof Error ? (process.env.INTEROP_DEBUG ? err.stack : err.message) : String(err)
      process.stderr.write(`${name}: error: ${detail}\n`)
      process.exit(1)
    },
  )
}

// Parses `--name value` options; every option listed in `required` must be given.
export function options(spec, required = Object.keys(spec)) {
  const { values } = parseArgs({ options: spec, strict: true, allowPositionals: false })
  for (const key of required) {
    if (values[key] === undefined) throw new Error(`missing required option --${key}`)
  }
  return values
}

// Parses a decimal integer option, failing clearly on anything else.
export function intOption(name, value, min = 0) {
  if (!/^-?\d+$/.test(value)) throw new Error(`--${name} must be an integer, got ${JSON.stringify(value)}`)
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${value}`)
  return n
}

// Byte-wise (code unit) string order, the order of keys in an MST. Keys are ASCII.
export function byPath(a, b) {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0
}

// [{path, cid}] sorted by path from an async iterable of {collection, rkey, cid}.
export async function recordList(iterable) {
  const out = []
  for await (const { collection, rkey, cid } of iterable) {
    out.push({ path: `${collection}/${rkey}`, cid: cid.toString() })
  }
  return out.sort(byPath)
}

export async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}
