#!/usr/bin/env bash
# FUSE mount benchmark: `filestore mount` next to `rclone mount --vfs-cache-mode writes` (over a
# local directory) and the local disk, in one run:
#   1. sequential write of a fresh 1 GiB file (open..close), and until the backend has it
#   2. sequential read of it, cold (kernel pages dropped) and warm (again at once)
#   3. create, stat and unlink of 10,000 files of 4 KiB
#   4. `cp -r` of a source tree into the mount and back out to the local disk
#   5. the mount processes' RSS over the whole run, against the configured block cache
# filestore is mounted as deployed: `filestore serve` on its embedded default (SQLite, local
# content) and `filestore mount --server URL` over its HTTP API. Several rounds (target order
# rotating), medians; Markdown to stdout and bench/results/mount-<date>.md.
#
# usage: bench/mount.sh [--rounds N] [--quick] [--no-build]
#   --quick       64 MiB instead of 1 GiB, 1,000 small files, 1 round (a smoke test)
#   --no-build    use the existing binary (default: `cargo build --release -p filestore` first)
# env: FILESTORE_BIN         binary to measure (implies --no-build)
#      CARGO_TARGET_DIR      where cargo builds (default <repo>/target)
#      BENCH_PORT_BASE       first of the 2 loopback ports used (default 38500: server, rclone rc;
#                            the next pair, up to +9, if the server's port is held by a connection)
#      BENCH_TMPDIR          where data dirs, spools and mountpoints go (default $TMPDIR or /tmp;
#                            a real disk: it is also the "local disk" measured)
#      BENCH_MOUNT_CACHE_MIB filestore mount's block cache (--cache-bytes, default 256)
#      BENCH_MOUNT_DISK_CACHE filestore mount's disk cache (--disk-cache, default 4GiB; 0 for none).
#                            rclone's --vfs-cache-mode writes keeps written files on disk too.
#      BENCH_TREE            directory copied with cp -r (default: this repo's tracked files at
#                            HEAD plus the tokio crate's source from the cargo registry, if present)
#      BENCH_LARGE_MIB, BENCH_SMALL_COUNT, BENCH_ROUNDS, BENCH_QUIET_WAIT
#      BENCH_INODE_SETTLE    seconds to wait after a sync before the first round (default 61): ext4
#                            without a journal does not reuse inodes freed in the last minute, and
#                            scans past each one on every file creation
#      BENCH_MOUNT_OUT       report file (default bench/results/mount-<date>.md)
#      BENCH_BINARY_NOTE     how the report describes the binary (bench/run-all.sh sets it)
#      BENCH_COMMIT_NOTE     what the report says was built (bench/run-all.sh --commit sets it)
# Needs /dev/fuse, fusermount3 and rclone (installs fuse3 and rclone with apt-get when root).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
ROUNDS=${BENCH_ROUNDS:-3}
LARGE_MIB=${BENCH_LARGE_MIB:-1024}
SMALL_COUNT=${BENCH_SMALL_COUNT:-10000}
CACHE_MIB=${BENCH_MOUNT_CACHE_MIB:-256}
DISK_CACHE=${BENCH_MOUNT_DISK_CACHE:-4GiB}
PORT_BASE=${BENCH_PORT_BASE:-38500}
BUILD=1
[ -n "${FILESTORE_BIN:-}" ] && BUILD=0
COMMAND="bench/mount.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --quick) LARGE_MIB=64; SMALL_COUNT=1000; ROUNDS=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PORT_FS=$PORT_BASE
PORT_RC=$((PORT_BASE + 1))
USER_NAME=bench
USER_PASS=benchpass1

log() { echo "[mount.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ dependencies (idempotent)
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v rclone >/dev/null || need+=(rclone)
command -v curl >/dev/null || need+=(curl)
[ ${#need[@]} = 0 ] || apt_install "${need[@]}"
[ -c /dev/fuse ] || die "no /dev/fuse"
command -v python3 >/dev/null || die "python3 is required"

# ------------------------------------------------------------------ binary
bench_binary

for p in $PORT_FS $PORT_RC; do
  port_busy "$p" && die "port $p is in use (set BENCH_PORT_BASE)"
done

# ------------------------------------------------------------------ temp space and cleanup
TMPROOT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$TMPROOT/fsmount-bench.XXXXXX")
chmod 755 "$WORK"
need_kib=$(( LARGE_MIB * 1024 + 262144 ))
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt "$need_kib" ]; then
  SRC=$(mktemp -d /dev/shm/fsmount-src.XXXXXX)
else
  SRC=$WORK/src; mkdir -p "$SRC"
fi
MNT_FS=$WORK/mnt-filestore
MNT_RC=$WORK/mnt-rclone
mkdir -p "$MNT_FS" "$MNT_RC" "$WORK/rclone-backing" "$WORK/rclone-cache" "$WORK/local" "$WORK/spool" "$WORK/out"
PIDS=()

is_mounted() { awk -v m="$1" '$5 == m {f=1} END {exit !f}' /proc/self/mountinfo; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  # mounts first (they talk to the server), then the server
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do stop_pid "${PIDS[$i]}"; done
  for m in "$MNT_FS" "$MNT_RC"; do
    is_mounted "$m" && { log "still mounted: $m; fusermount3 -u -z"; fusermount3 -u -z "$m"; }
  done
  if [ $rc != 0 ] && [ -d "$WORK" ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] && { log "--- last lines of $f"; tail -n 20 "$f" >&2; }
    done
  fi
  is_mounted "$MNT_FS" || is_mounted "$MNT_RC" || rm -rf "$WORK"
  rm -rf "$SRC"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {  # wait_for PID NAME COMMAND...: polls COMMAND for 30 s while PID lives
  local pid=$1 name=$2 i; shift 2
  for i in $(seq 300); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
    sleep 0.1
  done
  die "$name was not ready within 30 s"
}

# ------------------------------------------------------------------ filestore server + mount
FS_DIR=$WORK/filestore-data
mkdir -p "$FS_DIR"
echo "$USER_PASS" | "$FILESTORE_BIN" user add "$USER_NAME" --password-stdin --data-dir "$FS_DIR" \
  >/dev/null 2>>"$WORK/filestore.log" || die "filestore user add failed (see $WORK/filestore.log)"
start_server() {  # 0 once listening, 1 if it exited
  "$FILESTORE_BIN" serve --listen "127.0.0.1:$PORT_FS" --data-dir "$FS_DIR" >>"$WORK/filestore.log" 2>&1 &
  PID_SERVER=$!
  await_port "$PORT_FS" "$PID_SERVER" "filestore serve"
}
# The ports lie in the kernel's ephemeral range (32768-60999): an outgoing connection
# elsewhere on the machine can hold one for a while. Then move on to the next pair.
for try in 1 2 3 4 5; do
  start_server && break
  grep -q 'Address already in use' "$WORK/filestore.log" || die "filestore serve exited during start-up"
  [ "$try" = 5 ] && die "ports $PORT_BASE-$((PORT_FS + 1)) all taken (set BENCH_PORT_BASE)"
  log "port $PORT_FS is held by a connection: trying $((PORT_FS + 2))"
  PORT_FS=$((PORT_FS + 2))
  PORT_RC=$((PORT_FS + 1))
done
PIDS+=("$PID_SERVER")
log "filestore serve pid $PID_SERVER on 127.0.0.1:$PORT_FS (data $FS_DIR)"

echo "$USER_PASS" >"$WORK/password"
chmod 600 "$WORK/password"
HOME=$WORK "$FILESTORE_BIN" mount --server "http://127.0.0.1:$PORT_FS" --user "$USER_NAME" \
  --password-file "$WORK/password" --cache-bytes "${CACHE_MIB}MiB" --disk-cache "$DISK_CACHE" \
  --spool-dir "$WORK/spool" "$MNT_FS" \
  >>"$WORK/filestore-mount.log" 2>&1 &
PID_FSM=$!
PIDS+=("$PID_FSM")
wait_for "$PID_FSM" "filestore mount" is_mounted "$MNT_FS"
log "filestore mount pid $PID_FSM at $MNT_FS (cache ${CACHE_MIB} MiB, disk cache $DISK_CACHE)"

# ------------------------------------------------------------------ rclone mount over a local dir
RCLONE_CONFIG=/dev/null rclone mount --vfs-cache-mode writes --cache-dir "$WORK/rclone-cache" \
  --rc --rc-addr "127.0.0.1:$PORT_RC" --rc-no-auth \
  "$WORK/rclone-backing" "$MNT_RC" >>"$WORK/rclone.log" 2>&1 &
PID_RC=$!
PIDS+=("$PID_RC")
wait_for "$PID_RC" "rclone mount" is_mounted "$MNT_RC"
log "rclone mount pid $PID_RC at $MNT_RC"

# ------------------------------------------------------------------ cp -r source tree (tmpfs)
TREE=$SRC/tree
if [ -n "${BENCH_TREE:-}" ]; then
  cp -r "$BENCH_TREE" "$TREE"
  TREE_NOTE="a copy of $BENCH_TREE"
else
  mkdir -p "$TREE/filestore"
  git -C "$REPO" archive HEAD | tar -x -C "$TREE/filestore" --exclude 'bench/results'
  TREE_NOTE="this repo's tracked files at HEAD (bench/results excluded)"
  tokio=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tokio-1.* 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$tokio" ]; then
    cp -r "$tokio" "$TREE/"
    TREE_NOTE="$TREE_NOTE plus the source of $(basename "$tokio") from the cargo registry"
  fi
fi

# ------------------------------------------------------------------ measure
python3 - "$WORK/targets.json" <<PY
import json, sys
json.dump([
  dict(name="filestore", kind="filestore", dir="$MNT_FS", pids=[$PID_FSM, $PID_SERVER], mount_pids=[$PID_FSM]),
  dict(name="rclone", kind="rclone", dir="$MNT_RC", pids=[$PID_RC], mount_pids=[$PID_RC],
       rc_url="http://127.0.0.1:$PORT_RC/"),
  dict(name="local", kind="local", dir="$WORK/local", pids=[], mount_pids=[]),
], open(sys.argv[1], "w"), indent=1)
PY

INFO=$(bench_info \
  rclone_version "$(rclone version 2>/dev/null | head -n 1)" \
  tree_note "$TREE_NOTE" \
  load "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the start)")

mkdir -p "$HERE/results"
OUT=${BENCH_MOUNT_OUT:-$HERE/results/mount-$(date +%Y-%m-%d-%H%M).md}
rc=0
python3 "$HERE/mount.py" --targets "$WORK/targets.json" --src-dir "$SRC" --tree "$TREE" --work-dir "$WORK/out" \
  --out "$OUT" --rounds "$ROUNDS" --large-mib "$LARGE_MIB" --small-count "$SMALL_COUNT" --cache-mib "$CACHE_MIB" \
  --disk-cache "$DISK_CACHE" --info "$INFO" || rc=$?

for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { log "pid $pid is gone after the run"; rc=1; }
done
is_mounted "$MNT_FS" || { log "the filestore mount is gone after the run"; rc=1; }
WARNINGS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/filestore*.log 2>/dev/null | grep -E ' (ERROR|WARN) |panicked' || true)
if [ -n "$WARNINGS" ]; then
  log "filestore logged $(echo "$WARNINGS" | wc -l) warning/error lines, first ones:"
  echo "$WARNINGS" | head -n 20 >&2
fi
[ $rc = 0 ] || log "finished with problems (exit $rc); see the report's Problems line"
exit $rc
