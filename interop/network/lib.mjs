// Helpers shared by the network's scripts.

const [major] = process.versions.node.split('.').map(Number)
if (major < 22) {
  process.stderr.write(
    `${process.argv[1]}: error: Node >= 22 required (this is ${process.version}); ` +
      'run node_modules/.bin/node from interop/network\n',
  )
  process.exit(1)
}

/** Parses `--key value` / `--key=value` flags into an object. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`)
    const eq = arg.indexOf('=')
    if (eq > 0) {
      out[arg.slice(2, eq)] = arg.slice(eq + 1)
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      out[arg.slice(2)] = argv[++i]
    } else {
      out[arg.slice(2)] = true
    }
  }
  return out
}

export function required(args, name) {
  const v = args[name]
  if (v === undefined || v === true) throw new Error(`--${name} is required`)
  return v
}

/** Prints an error the way every script does, then exits 1. */
export function fail(err) {
  const name = process.argv[1].split('/').pop()
  const msg = process.env.INTEROP_DEBUG ? err?.stack ?? String(err) : err?.message ?? String(err)
  process.stderr.write(`${name}: error: ${msg}\n`)
  process.exit(1)
}

/**
 * Makes an express app's `listen(port)` bind 127.0.0.1 only: the servers
 * listen on every interface by default, and tests must stay on loopback.
 */
export function bindLoopback(app) {
  const listen = app.listen.bind(app)
  app.listen = (port, ...rest) => listen(port, '127.0.0.1', ...rest)
}

/**
 * Runs `stop` once on SIGTERM, SIGINT, or when stdin closes. The Rust test
 * harness holds our stdin open; if it dies without stopping us (a panic
 * that aborts, SIGKILL), the pipe closes and we exit instead of lingering.
 */
export function stopOn(stop) {
  let stopping = false
  const once = async (why) => {
    if (stopping) return
    stopping = true
    const timer = setTimeout(() => process.exit(0), 5000)
    timer.unref()
    try {
      await stop(why)
    } catch (err) {
      process.stderr.write(`stop (${why}) failed: ${err?.message ?? err}\n`)
    }
    process.exit(0)
  }
  process.on('SIGTERM', () => once('SIGTERM'))
  process.on('SIGINT', () => once('SIGINT'))
  process.stdin.on('end', () => once('stdin closed'))
  process.stdin.on('error', () => once('stdin error'))
  process.stdin.resume()
}
