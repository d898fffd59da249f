// One reference PDS (@atproto/pds) on 127.0.0.1 in dev mode: invite codes
// off, rate limits off, its own data directory and its own service DID
// (did:web:localhost%3A<port>; two PDSes sharing one DID break migration's
// service auth). Prints one JSON line once it accepts connections:
//   {"url": "http://localhost:<port>", "did": "did:web:…", "adminPassword": "…", "dataDir": "…"}
//
//   node_modules/.bin/node pds.mjs --port 2583 --plc http://127.0.0.1:2582 --data-dir /tmp/pds-a \
//     [--admin-password PW] [--rotation-key HEX] [--repo-backfill-limit-ms N]
//
// --repo-backfill-limit-ms: how old (by sequencing time) the next event after
// a subscriber's cursor may be before subscribeRepos answers `#info
// OutdatedCursor` and skips to the first event inside the window. Default:
// the PDS's own (one day). The PDS_REPO_BACKFILL_LIMIT_MS variable has no
// effect here, because this script builds envToCfg's input itself instead
// of reading the environment.
import fs from 'node:fs'
import path from 'node:path'
import { fail, parseArgs, required, bindLoopback, stopOn } from './lib.mjs'
import { PDS, envToCfg, envToSecrets } from '@atproto/pds'

try {
  const args = parseArgs()
  const port = Number(required(args, 'port'))
  const plcUrl = required(args, 'plc')
  const dataDir = path.resolve(required(args, 'data-dir'))
  const adminPassword = args['admin-password'] ?? 'barn-admin'
  fs.mkdirSync(path.join(dataDir, 'blobs'), { recursive: true })
  const did = `did:web:localhost%3A${port}`
  const backfillLimit = args['repo-backfill-limit-ms']
  let repoBackfillLimitMs
  if (backfillLimit !== undefined) {
    repoBackfillLimitMs = Number(backfillLimit)
    if (!Number.isSafeInteger(repoBackfillLimitMs) || repoBackfillLimitMs < 0) {
      throw new Error(`--repo-backfill-limit-ms: not a number of milliseconds: ${backfillLimit}`)
    }
  }
  const env = {
    port,
    hostname: 'localhost',
    serviceDid: did,
    devMode: true,
    version: '0.0.0-barn-test',
    dataDirectory: dataDir,
    blobstoreDiskLocation: path.join(dataDir, 'blobs'),
    didPlcUrl: plcUrl,
    serviceHandleDomains: ['.test'],
    inviteRequired: false,
    rateLimitsEnabled: false,
    acceptingImports: true,
    crawlers: [],
    // The PLC directory and the other PDS are on 127.0.0.1, which the
    // PDS's SSRF guard refuses by default.
    disableSsrfProtection: true,
    bskyAppViewUrl: undefined,
    jwtSecret: 'barn-test-jwt-secret',
    dpopSecret: '6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8',
    adminPassword,
    // A fixed secp256k1 key: tests are reproducible, and nothing here is secret.
    plcRotationKeyK256PrivateKeyHex:
      args['rotation-key'] ?? 'e2b7c1f0a43d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7',
    // The workload reads email tokens straight from the account database;
    // the mailer prints to nowhere (no SMTP server on loopback).
    emailSmtpUrl: undefined,
    // The key envToCfg reads for cfg.subscription.repoBackfillLimitMs
    // (config/config.js falls back to one day when it is undefined).
    repoBackfillLimitMs,
  }
  const cfg = envToCfg(env)
  const secrets = envToSecrets(env)
  const pds = await PDS.create(cfg, secrets)
  bindLoopback(pds.app)
  await pds.start()
  stopOn(() => pds.destroy())
  process.stdout.write(
    JSON.stringify({ url: `http://localhost:${port}`, did, adminPassword, dataDir }) + '\n',
  )
} catch (err) {
  fail(err)
}
