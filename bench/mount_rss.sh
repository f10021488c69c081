#!/usr/bin/env bash
# Memory of `filestore mount` per phase: `filestore serve` and `filestore mount --server` on
# loopback, then a file of SIZE_MIB written through the mount (dd, 1 MiB writes), read cold
# (kernel pages dropped with fadvise), warm, cold again, and cold by 4 readers at once.
# Prints each phase's peak VmRSS (sampled every 20 ms) and the mount's CPU time, and at the
# end its VmHWM. With RSS_INSPECT=1, after the first cold read: glibc's malloc_stats (via
# gdb) and the RSS after a malloc_trim. Not timed against anything: a memory probe.
#
# usage: bench/mount_rss.sh BIN CACHE_MIB SIZE_MIB [more mount args...]
# env:   RSS_PORT (default 39300), RSS_INSPECT, TMPDIR (work dir, default /var/tmp)
# Run it under `flock -x /tmp/filestore-bench.lock` on a shared machine. Needs root,
# /dev/fuse, fusermount3, python3 (and gdb for RSS_INSPECT).
set -euo pipefail
BIN=$1; CACHE=$2; SIZE=$3; shift 3
PORT=${RSS_PORT:-39300}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/mount-rss.XXXXXX")
mkdir -p $W/data $W/mnt $W/spool
cleanup() { set +e; [ -n "${SAMP:-}" ] && kill $SAMP; [ -n "${MP:-}" ] && kill $MP && wait $MP; [ -n "${SP:-}" ] && kill $SP && wait $SP; fusermount3 -u -z $W/mnt 2>/dev/null; rm -rf $W; }
trap cleanup EXIT
echo benchpass1 | $BIN user add bench --password-stdin --data-dir $W/data >/dev/null 2>&1
$BIN serve --listen 127.0.0.1:$PORT --data-dir $W/data >$W/serve.log 2>&1 & SP=$!
for i in $(seq 100); do curl -s -o /dev/null 127.0.0.1:$PORT/ && break; sleep 0.1; done
echo benchpass1 > $W/pw
HOME=$W ${MOUNT_ENV:-} $BIN mount --server http://127.0.0.1:$PORT --user bench --password-file $W/pw \
  --cache-bytes ${CACHE}MiB --spool-dir $W/spool "$@" $W/mnt >$W/mount.log 2>&1 & MP=$!
for i in $(seq 100); do awk -v m="$W/mnt" '$5==m{f=1}END{exit !f}' /proc/self/mountinfo && break; sleep 0.1; done
python3 - $MP $W/phase $W/samples <<'PY' & SAMP=$!
import sys, time
pid, phasef, out = sys.argv[1:]
ph = "start"
o = open(out, "w")
while True:
    try:
        st = open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        break
    rss = int(st.split("VmRSS:")[1].split()[0])
    try:
        sf = open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
        cpu = int(sf[11]) + int(sf[12])
    except Exception: cpu = 0
    try: ph = open(phasef).read().strip() or ph
    except FileNotFoundError: ph = "start"
    o.write(f"{ph} {rss} {cpu}\n"); o.flush()
    time.sleep(0.02)
PY
phase() { echo $1 > $W/phase; sleep 0.1; }
phase start
phase write
dd if=/dev/urandom of=$W/mnt/big bs=1M count=$SIZE status=none
phase idle1; sleep 1
drop() { python3 -c "import os,sys; f=os.open(sys.argv[1],os.O_RDONLY); os.posix_fadvise(f,0,0,os.POSIX_FADV_DONTNEED)" $W/mnt/big; }
drop
phase cold
t0=$(date +%s.%N)
dd if=$W/mnt/big of=/dev/null bs=1M status=none
echo cold $(python3 -c "print(round($SIZE/($(date +%s.%N)-$t0)))") MiB/s
phase inspect
if [ -n "${RSS_INSPECT:-}" ]; then
  grep VmRSS /proc/$MP/status
  gdb -p $MP -batch -ex 'call (void)malloc_stats()' -ex 'call (int)malloc_trim(0)' >/dev/null 2>&1
  echo "after malloc_trim:"; grep VmRSS /proc/$MP/status
  sed -n '/Arena 0/,$p' $W/mount.log | tail -20
fi
phase warm
dd if=$W/mnt/big of=/dev/null bs=1M status=none
drop
phase cold2
dd if=$W/mnt/big of=/dev/null bs=1M status=none
drop
phase par4
DDS=(); for k in 0 1 2 3; do dd if=$W/mnt/big of=/dev/null bs=1M skip=$((k*SIZE/4)) count=$((SIZE/4)) status=none & DDS+=($!); done; wait "${DDS[@]}"
phase end; sleep 0.5
kill $SAMP; SAMP=
awk '{if($2>p[$1])p[$1]=$2; if(!($1 in o)){o[$1]=++n; nm[n]=$1; c0[$1]=$3}; c1[$1]=$3} END{for(i=1;i<=n;i++) printf "%s peak %.1f MiB cpu %.2f s\n", nm[i], p[nm[i]]/1024, (c1[nm[i]]-c0[nm[i]])/100}' $W/samples
grep VmHWM /proc/$MP/status
grep -E "WARN|ERROR" $W/mount.log | head -5 || true
