#!/bin/bash
# The container's HEALTHCHECK (installed as /usr/local/bin/barn-healthcheck):
# exits 0 when barn's gateway answers GET /xrpc/_health with 200.
#
# It speaks HTTP through bash's /dev/tcp so that the runtime image needs no
# curl. The address is BARN_LISTEN's (the image sets 0.0.0.0:2480), asked
# on loopback when barn listens on every interface. With the gateway
# turned off ([gateway] enabled = false) there is nothing to ask: run the
# container with --no-healthcheck then.
set -euo pipefail

listen="${BARN_LISTEN:-127.0.0.1:2480}"
port="${listen##*:}"
host="${listen%:*}"
host="${host#[}"
host="${host%]}"
case "$host" in
  "" | 0.0.0.0 | "::") host=127.0.0.1 ;;
esac

exec 3<>"/dev/tcp/${host}/${port}"
printf 'GET /xrpc/_health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
# The status line: HTTP/1.1 200 OK
read -r -t 5 _version status _reason <&3
exec 3<&-
if [[ "$status" != 200 ]]; then
  echo "barn-healthcheck: GET /xrpc/_health on ${host}:${port} answered ${status:-nothing}" >&2
  exit 1
fi
