#!/usr/bin/env bash
# A/B of two filestore binaries on the mount's 1 GiB sequential write: for each binary in
# turn (ROUNDS times, alternating), a fresh `filestore serve` (embedded default) and
# `filestore mount --server --disk-cache 4GiB`, then one 1 GiB file written in 1 MiB
# writes (from a file in /dev/shm) and closed. Prints the time of the writes (with the
# elapsed time at each quarter), of the close (the rest of the upload and the server's
# commit), the rate open..close and the CPU ticks (1/100 s) of the server and the mount.
#
# usage: bench/mount_write_ab.sh BIN_A BIN_B [ROUNDS=3]
# env:   BENCH_PORT     loopback port of the server (default 39380)
#        BENCH_TMPDIR   where data dirs go (default /var/tmp; a real disk)
#        BENCH_PERF     a path prefix: `perf record -g` of the mount process of each pass
#                       into PREFIX-<round>-<A|B>.data
#        BENCH_IDLE     seconds to wait before each write (default 0): on a VM that hands
#                       freed memory back to its host, memory freed by the previous pass is
#                       fast to reuse at once and slow once handed back (docs/BENCHMARKS.md)
# Needs root, /dev/fuse and fusermount3. Run it under `flock -x /tmp/filestore-bench.lock`.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
A=$1; B=$2; ROUNDS=${3:-3}
PORT=${BENCH_PORT:-39380}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
SRC=$(mktemp /dev/shm/fs-write-ab.XXXXXX)
trap 'rm -f "$SRC"' EXIT
head -c $((1 << 30)) /dev/urandom >"$SRC"

pass() {  # pass BIN PERF_OUT
  local bin=$1 perf_out=$2 pp=
  ab_start "$bin" "$PORT" --disk-cache 4GiB
  sleep "${BENCH_IDLE:-0}"
  if [ -n "$perf_out" ]; then
    perf record -F 2000 -g -o "$perf_out" -p "$AB_MOUNT" >/dev/null 2>&1 &
    pp=$!
  fi
  python3 - "$AB_DIR/mnt" "$SRC" "$AB_SERVER" "$AB_MOUNT" "$(basename "$bin")" <<'PY'
import os, sys, time
mnt, src, sp, mp, name = sys.argv[1:6]
def ticks(p):
    f = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
s = os.open(src, os.O_RDONLY)
buf = bytearray(1 << 20)
s0, m0, t0 = ticks(sp), ticks(mp), time.time()
fd = os.open(os.path.join(mnt, "big"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
marks = []
for i in range(1024):
    n = os.readv(s, [buf])
    os.write(fd, buf[:n])
    if i % 256 == 255:
        marks.append("%.2f" % (time.time() - t0))
t1 = time.time()
os.close(fd)
t2 = time.time()
print("%-24s writes %.2f s (quarters at %s s)  close %.2f s  %4.0f MB/s  server %d mount %d ticks"
      % (name, t1 - t0, "/".join(marks), t2 - t1, (1 << 30) / (t2 - t0) / 1e6, ticks(sp) - s0, ticks(mp) - m0))
PY
  if [ -n "$pp" ]; then kill -INT "$pp"; wait "$pp" 2>/dev/null || true; fi
  ab_stop
}

for r in $(seq "$ROUNDS"); do
  pass "$A" "${BENCH_PERF:+$BENCH_PERF-$r-A.data}"
  pass "$B" "${BENCH_PERF:+$BENCH_PERF-$r-B.data}"
done
