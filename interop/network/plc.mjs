// A did:plc directory on 127.0.0.1, everything in memory (@did-plc/server
// 0.0.1 has no other storage without Postgres). Prints one JSON line,
// {"url": "http://localhost:<port>"} (bound to 127.0.0.1 only; the PDS refuses
// IP-literal URLs, so everything names it `localhost`), once it accepts connections.
//
//   node_modules/.bin/node plc.mjs --port 2582
import { fail, parseArgs, required, bindLoopback, stopOn } from './lib.mjs'
import plc from '@did-plc/server'

const { PlcServer, Database } = plc

try {
  const args = parseArgs()
  const port = Number(required(args, 'port'))
  const server = PlcServer.create({ db: Database.mock(), port })
  bindLoopback(server.app)
  await server.start()
  stopOn(() => server.destroy())
  process.stdout.write(JSON.stringify({ url: `http://localhost:${port}` }) + '\n')
} catch (err) {
  fail(err)
}
