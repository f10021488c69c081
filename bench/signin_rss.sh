#!/usr/bin/env bash
# Reproduces the server's RSS growth under concurrent sign-ins (see docs/BENCHMARKS.md,
# "Problems found"): each sign-in runs argon2id, which allocates a 19 MiB block with malloc;
# glibc's dynamic mmap threshold then serves those blocks from its arenas and never returns
# them, so bursts of concurrent sign-ins leave the server with a lasting RSS of ~1.5-2 GiB.
#
# usage: bench/signin_rss.sh [BURSTS [CONCURRENCY]]   (default 5 bursts of 24)
# env:   FILESTORE_BIN (default $CARGO_TARGET_DIR/release/filestore), BENCH_SIGNIN_PORT (38130),
#        SERVER_ENV, e.g. SERVER_ENV=MALLOC_MMAP_THRESHOLD_=1048576 to show the allocator's part
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${FILESTORE_BIN:-${CARGO_TARGET_DIR:-$(dirname "$HERE")/target}/release/filestore}
export -n FILESTORE_BIN
BURSTS=${1:-5}
CONC=${2:-24}
PORT=${BENCH_SIGNIN_PORT:-38130}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fsbench-signin.XXXXXX")
P=
cleanup() { [ -n "$P" ] && kill "$P" 2>/dev/null && wait "$P" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
for u in alice bob; do
  echo benchpass1 | "$BIN" user add "$u" --password-stdin --data-dir "$WORK" >/dev/null 2>&1
done
env ${SERVER_ENV:-} "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK" >"$WORK/server.log" 2>&1 &
P=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/{printf "%.0f MiB", $2/1024}' "/proc/$P/status"; }
echo "server ${SERVER_ENV:+($SERVER_ENV) }idle: $(rss)"
for b in $(seq "$BURSTS"); do
  pids=()
  : >"$WORK/codes"
  for i in $(seq "$CONC"); do
    u=$([ $((i % 2)) = 0 ] && echo alice || echo bob)
    curl -s -o /dev/null -w '%{http_code}\n' -XPOST "127.0.0.1:$PORT/api/v1/auth/signin" \
      -H 'content-type: application/json' -d "{\"username\":\"$u\",\"password\":\"benchpass1\"}" >>"$WORK/codes" &
    pids+=($!)
  done
  wait "${pids[@]}"
  sleep 1
  echo "after burst $b of $CONC concurrent sign-ins: RSS $(rss) (HTTP: $(sort "$WORK/codes" | uniq -c | awk '{printf "%s×%s ", $1, $2}'))"
done
