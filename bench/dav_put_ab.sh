#!/usr/bin/env bash
# A/B of two filestore binaries on WebDAV's small-file path: for each binary in turn (ROUNDS
# times, alternating), a fresh `filestore serve` (embedded default), a 2 s wrk warm-up, then
# SECS seconds of PUTs of new 4 KiB files (bench/wrk_put.lua, 2 threads, 16 connections);
# prints PUTs/s and the server's CPU per PUT. Before each pass: `sync` and
# BENCH_INODE_SETTLE seconds (default 61; see bench/dav.sh), so that no pass pays for the
# inodes an earlier one freed.
#
# With BENCH_OP=get it measures 4 KiB GETs instead (bench/wrk_get.lua round-robin over 200
# files PUT first, 2 threads, 16 connections), printing GETs/s and CPU per GET.
#
# usage: bench/dav_put_ab.sh BIN_A BIN_B [ROUNDS=3] [SECS=5]
# env:   BENCH_OP       put (default) or get
#        BENCH_PORT     loopback port of the server (default 39477)
#        BENCH_TMPDIR   where data dirs go (default /var/tmp; a real disk)
# Needs wrk. Run it under `flock -x /tmp/filestore-bench.lock`.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
A=$1; B=$2; ROUNDS=${3:-3}; SECS=${4:-5}
PORT=${BENCH_PORT:-39477}
SETTLE=${BENCH_INODE_SETTLE:-61}
OP=${BENCH_OP:-put}
case $OP in put|get) ;; *) echo "BENCH_OP must be put or get" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LUA=$HERE/wrk_$OP.lua
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

pass() {  # pass BIN
  local bin=$1 w sp auth t0 t1 out rate
  w=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/fs-put-ab.XXXXXX")
  echo benchpass1 | "$bin" user add bench --password-stdin --data-dir "$w/data" >/dev/null 2>&1
  "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$w/data" >"$w/server.log" 2>&1 &
  sp=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  auth="Basic $(printf 'bench:benchpass1' | base64)"
  curl -sS -o /dev/null -X MKCOL -H "Authorization: $auth" "http://127.0.0.1:$PORT/dav/w"
  local warm=/dav/w/warm- run=/dav/w/run-
  if [ "$OP" = get ]; then
    head -c 4096 /dev/urandom >"$w/f"
    for i in $(seq -f %05g 0 199); do
      curl -sS -f -o /dev/null -T "$w/f" -H "Authorization: $auth" "http://127.0.0.1:$PORT/dav/w/f$i.bin"
      # Distinct content per file, as the WebDAV benchmark has.
      printf '%s' "$i" | dd of="$w/f" conv=notrunc status=none
    done
    warm=/dav/w/ run=/dav/w/
  fi
  WRK_N=200 WRK_PREFIX=$warm WRK_AUTH=$auth WRK_SIZE=4096 wrk -t2 -c16 -d2s -s "$LUA" \
    "http://127.0.0.1:$PORT" >/dev/null
  t0=$(ticks "$sp")
  out=$(WRK_N=200 WRK_PREFIX=$run WRK_AUTH=$auth WRK_SIZE=4096 wrk -t2 -c16 -d"${SECS}s" -s "$LUA" \
    "http://127.0.0.1:$PORT")
  t1=$(ticks "$sp")
  kill "$sp"; wait "$sp" 2>/dev/null || true
  grep -q '^WRK_BAD 0$' <<<"$out" || { echo "$bin: failed ${OP}s: $(grep WRK_BAD <<<"$out")" >&2; exit 1; }
  rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  awk -v r="$rate" -v t=$((t1 - t0)) -v s="$SECS" -v b="$bin" -v op="${OP^^}" \
    'BEGIN { printf "%-40s %8.0f %s/s  %.4f ms server CPU per %s\n", b, r, op, t * 10 / (r * s), op }'
  rm -rf "$w"
}

for _ in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    sync; sleep "$SETTLE"
    pass "$bin"
  done
done
