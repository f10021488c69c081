#!/usr/bin/env bash
# A/B of two filestore binaries on the mount's small-file path: for each binary in turn
# (ROUNDS times, alternating), a fresh `filestore serve` (embedded default) and `filestore
# mount --server`, N creates of 4 KiB files (open O_CREAT|O_EXCL, write, close) then N
# unlinks; prints files/s and the CPU ticks (1/100 s) of the server and the mount for each.
# Before each pass: `sync` and BENCH_INODE_SETTLE seconds (default 61; see bench/mount.sh).
#
# usage: bench/mount_create_ab.sh BIN_A BIN_B [N=3000] [ROUNDS=3]
# env:   MOUNT_ARGS_A, MOUNT_ARGS_B  extra `filestore mount` arguments per binary (e.g.
#                                    "--disk-cache 4GiB")
#        BENCH_PORT                   loopback port of the server (default 39377)
#        BENCH_TMPDIR                 where data dirs go (default /var/tmp; a real disk)
#        BENCH_REQUESTS=1             also print the server's request counters of each pass
#                                     (filestore_http_requests_total from /metrics)
# Needs root, /dev/fuse and fusermount3. Run it under `flock -x /tmp/filestore-bench.lock`.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
A=$1; B=$2; N=${3:-3000}; ROUNDS=${4:-3}
PORT=${BENCH_PORT:-39377}
SETTLE=${BENCH_INODE_SETTLE:-61}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

pass() {  # pass BIN EXTRA_ARGS
  local bin=$1 extra=$2
  # shellcheck disable=SC2086
  ab_start "$bin" "$PORT" $extra
  python3 - "$AB_DIR/mnt" "$N" "$AB_SERVER" "$AB_MOUNT" <<'PY'
import os, sys, time
mnt, n, sp, mp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def ticks(p):
    f = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
d = os.path.join(mnt, "d")
os.mkdir(d)
s0, m0, t0 = ticks(sp), ticks(mp), time.time()
for i in range(n):
    fd = os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, os.urandom(4096))
    os.close(fd)
t1, s1, m1 = time.time(), ticks(sp), ticks(mp)
for i in range(n):
    os.unlink(os.path.join(d, "f%d" % i))
t2, s2, m2 = time.time(), ticks(sp), ticks(mp)
print("create %6.0f/s server %4d mount %4d ticks | unlink %6.0f/s server %4d mount %4d ticks"
      % (n / (t1 - t0), s1 - s0, m1 - m0, n / (t2 - t1), s2 - s1, m2 - m1))
PY
  if [ -n "${BENCH_REQUESTS:-}" ]; then
    curl -sS "http://127.0.0.1:$PORT/metrics" | grep '^filestore_http_requests_total' | sed 's/^/    /'
  fi
  ab_stop
}

for r in $(seq "$ROUNDS"); do
  for side in A B; do
    if [ $side = A ]; then bin=$A; extra=${MOUNT_ARGS_A:-}; else bin=$B; extra=${MOUNT_ARGS_B:-}; fi
    sync
    sleep "$SETTLE"
    printf 'round %d %s %-24s ' "$r" "$side" "$(basename "$bin")"
    pass "$bin" "$extra"
  done
done
