#!/usr/bin/env bash
# Upload benchmark: chunked and instant uploads and the command-line client, on one filestore
# server with the embedded default (SQLite + local disk), in one run:
#   1. fresh 1 GiB file: single streamed PUT (curl -T) vs `filestore upload --parallel 4`
#      (end to end, hashing while it sends) vs the raw chunked protocol from python (4 parallel
#      part PUTs, no client hashing; and again with X-Chunk-Sha1 on each part): MB/s and ratios
#      to the PUT, rounds rotating the order
#   2. instant upload by the owner: p50/p99 of POST /api/v1/instant, 1 MiB vs 1 GiB content
#      (2000 requests each, interleaved, which goes first random, to new paths);
#      and by another user proving possession (challenge, answer, proof)
#   3. client-side SHA-1 throughput of `filestore upload` vs sha1sum (and openssl) on 1 GiB
# Markdown to stdout and bench/results/uploads-<date>.md (BENCH_UPLOADS_OUT overrides).
#
# usage: bench/uploads.sh [--rounds N] [--quick] [--no-build] [--only PARTS]     (default 5 rounds)
#   --quick       64 MiB instead of 1 GiB, 1 round, 50 instant requests, 2 hashing reps
#   --only PARTS  comma-separated subset of large,instant,hashing (parts 1, 2, 3 above), e.g.
#                 `--only instant`; the large content the others need is then PUT untimed
#   --no-build    use the existing binary (default: `cargo build --release -p filestore` first)
# env: FILESTORE_BIN         binary to measure (implies --no-build); also used as the client
#      CARGO_TARGET_DIR      where cargo builds (default <repo>/target)
#      BENCH_UPLOADS_PORT    loopback port (default 38120)
#      BENCH_TMPDIR          where the data dir goes (default $TMPDIR or /tmp; must be a real disk)
#      BENCH_CHUNK_SIZE      server chunk size in bytes (default: the server's, 5 MiB)
#      BENCH_LARGE_MIB, BENCH_ROUNDS, BENCH_PARALLEL, BENCH_INSTANT_N, BENCH_HASH_REPS
#      BENCH_COMMIT_NOTE     what the report says was built (bench/run-all.sh --commit sets it)
#      BENCH_UPLOADS_OUT, BENCH_BINARY_NOTE  report file, and how it describes the binary
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
ROUNDS=${BENCH_ROUNDS:-5}
LARGE_MIB=${BENCH_LARGE_MIB:-1024}
PARALLEL=${BENCH_PARALLEL:-4}
INSTANT_N=${BENCH_INSTANT_N:-2000}
HASH_REPS=${BENCH_HASH_REPS:-5}
PORT=${BENCH_UPLOADS_PORT:-38120}
CHUNK_SIZE=${BENCH_CHUNK_SIZE:-}
BUILD=1
PARTS=large,instant,hashing
[ -n "${FILESTORE_BIN:-}" ] && BUILD=0
COMMAND="bench/uploads.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --quick) LARGE_MIB=64; ROUNDS=1; INSTANT_N=50; HASH_REPS=2 ;;
    --no-build) BUILD=0 ;;
    --only) PARTS=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[uploads.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v sha1sum >/dev/null || need+=(coreutils)
[ ${#need[@]} = 0 ] || apt_install "${need[@]}"
command -v python3 >/dev/null || die "python3 is required"

bench_binary
unset XDG_CONFIG_HOME XDG_DATA_HOME

port_busy "$PORT" && die "port $PORT is in use (set BENCH_UPLOADS_PORT)"

TMPROOT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$TMPROOT/fsbench-up.XXXXXX")
chmod 755 "$WORK"
# at most 2 large sources at once (one being uploaded, one kept for the instant/hashing parts), 1 spare
need_kib=$(( LARGE_MIB * 1024 * 3 + 65536 ))
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt "$need_kib" ]; then
  SRC=$(mktemp -d /dev/shm/fsbench-up-src.XXXXXX)
else
  SRC=$WORK/src; mkdir -p "$SRC"
fi
SERVER_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && { log "server ignored SIGTERM for 15 s: SIGKILL"; kill -KILL "$SERVER_PID"; }
  fi
  if [ $rc != 0 ] && [ -s "$WORK/server.log" ]; then
    log "--- last lines of the server log"; tail -n 20 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK" "$SRC"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DATA=$WORK/data
CLI_CONFIG=$WORK/cli-config
mkdir -p "$DATA" "$CLI_CONFIG"
SERVER_ENV=()
[ -n "$CHUNK_SIZE" ] && SERVER_ENV+=("FILESTORE_SESSIONS__CHUNK_SIZE=$CHUNK_SIZE")
for u in bench other; do
  echo benchpass1 | env "${SERVER_ENV[@]}" "$FILESTORE_BIN" user add "$u" --password-stdin --data-dir "$DATA" \
    >/dev/null 2>>"$WORK/server.log" || die "filestore user add $u failed"
done
env "${SERVER_ENV[@]}" "$FILESTORE_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 300); do
  port_busy "$PORT" && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "filestore exited during start-up"
  sleep 0.1
done
port_busy "$PORT" || die "filestore did not listen on $PORT within 30 s"
log "filestore pid $SERVER_PID on 127.0.0.1:$PORT, data $DATA"

signin() {
  curl -sS --fail -XPOST "http://127.0.0.1:$PORT/api/v1/auth/signin" -H 'content-type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"benchpass1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
TOKEN=$(signin bench) || die "sign-in of bench failed"
TOKEN_OTHER=$(signin other) || die "sign-in of other failed"
echo benchpass1 | FILESTORE_CONFIG_DIR=$CLI_CONFIG "$FILESTORE_BIN" login --server "http://127.0.0.1:$PORT" \
  --user bench --password-stdin >/dev/null || die "filestore login failed"

INFO=$(bench_info \
  load "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the start)" \
  chunk_size "${CHUNK_SIZE:-5242880 (default)}")

mkdir -p "$HERE/results"
OUT=${BENCH_UPLOADS_OUT:-$HERE/results/uploads-$(date +%Y-%m-%d-%H%M).md}
rc=0
python3 "$HERE/uploads.py" --port "$PORT" --server-pid "$SERVER_PID" --token "$TOKEN" --other-token "$TOKEN_OTHER" \
  --cli "$FILESTORE_BIN" --cli-config "$CLI_CONFIG" --data-dir "$DATA" --src-dir "$SRC" --work-dir "$WORK" \
  --out "$OUT" --rounds "$ROUNDS" --large-mib "$LARGE_MIB" --parallel "$PARALLEL" --instant-n "$INSTANT_N" \
  --hash-reps "$HASH_REPS" --parts "$PARTS" --info "$INFO" || rc=$?

kill -0 "$SERVER_PID" 2>/dev/null || { log "the server is gone after the run"; rc=1; }
WARNINGS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log" 2>/dev/null | grep -E ' (ERROR|WARN) |panicked' || true)
if [ -n "$WARNINGS" ]; then
  log "filestore logged $(echo "$WARNINGS" | wc -l) warning/error lines, first ones:"
  echo "$WARNINGS" | head -n 20 >&2
fi
[ $rc = 0 ] || log "finished with problems (exit $rc); see the report's Problems line"
exit $rc
