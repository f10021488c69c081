#!/usr/bin/env bash
# Latency of the JSON API requests behind a mount's small-file operations (bench/api_ops.py):
# `filestore serve` on its embedded default (SQLite, local disk), one client, COUNT requests of
# each kind. A figure for following the server's per-request cost, with no peer: the mount
# benchmark (bench/mount.sh) compares the whole operations with rclone.
#
# usage: bench/api_ops.sh [--count N] [--no-build]
# env: FILESTORE_BIN    binary to measure (implies --no-build)
#      BENCH_PORT_BASE  the loopback port used (default 38700)
#      BENCH_TMPDIR     where the data dir goes (default $TMPDIR or /tmp; a real disk)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
COUNT=2000
PORT=${BENCH_PORT_BASE:-38700}
BUILD=1
[ -n "${FILESTORE_BIN:-}" ] && BUILD=0

while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[api_ops.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_binary
port_busy "$PORT" && die "port $PORT is in use (set BENCH_PORT_BASE)"
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/api-ops.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && stop_pid "$PID"; rm -rf "$WORK"; }
trap cleanup EXIT

"$FILESTORE_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
wait_port "$PORT" "$PID" "filestore"
log "$FILESTORE_BIN, $COUNT requests of each kind"
python3 "$HERE/api_ops.py" "http://127.0.0.1:$PORT" bench benchpass1 "$COUNT"
