#!/usr/bin/env bash
# Every benchmark in one command: bench/core.sh (1 GiB PUT/GET vs nginx, 4 KiB PUTs on SQLite,
# MariaDB and nginx, dedup re-PUT), then bench/uploads.sh (1 GiB single PUT vs chunked via the
# CLI and via the raw protocol, instant upload latency, client hashing vs sha1sum), then
# bench/transfer.sh (transfer to Ceph RGW through RabbitMQ vs `aws s3 cp`, ranged reads), then
# bench/dav.sh (WebDAV vs nginx, Apache mod_dav, rclone: 1 GiB PUT/GET, 4 KiB GET/PUT, PROPFIND),
# then bench/mount.sh (FUSE mount vs rclone mount and the local disk: 1 GiB write/read,
# 10,000 small files, cp -r, mount RSS; report bench/results/mount-<stamp>.md).
# The binary is built once and copied, so that a rebuild by someone else in the shared target
# dir cannot swap it in the middle of the run. Reports: bench/results/core-<stamp>.md,
# bench/results/uploads-<stamp>.md, bench/results/transfer-<stamp>.md, bench/results/dav-<stamp>.md,
# and the progress log
# bench/results/run-<stamp>.txt.
#
# usage: bench/run-all.sh [--commit REV] [--quick] [--no-build] [--rounds N] [--no-mariadb] [--no-wrk]
#   --commit REV  measure a commit instead of the working tree: `git archive REV` is unpacked in a
#                 BENCH_TARGET_DIR/src and built with `cargo build --release -p filestore` into BENCH_TARGET_DIR
#                 (default ~/.cache/filestore/bench-target, seeded from the shared target dir's
#                 release/ on first use), so that concurrent edits in the tree cannot break or
#                 change the build, and the shared target dir is left alone
#   --no-build    use the existing binary of the working tree (ignored with --commit)
# env: as for core.sh and uploads.sh (FILESTORE_BIN, CARGO_TARGET_DIR, BENCH_TMPDIR, ...)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BUILD=1
COMMIT=
CORE_ARGS=()
UP_ARGS=()
TR_ARGS=()
DAV_ARGS=()
MNT_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) CORE_ARGS+=(--quick); UP_ARGS+=(--quick); TR_ARGS+=(--quick); DAV_ARGS+=(--quick); MNT_ARGS+=(--quick) ;;
    --commit) COMMIT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --rounds) CORE_ARGS+=(--rounds "$2"); UP_ARGS+=(--rounds "$2"); TR_ARGS+=(--rounds "$2"); DAV_ARGS+=(--rounds "$2"); MNT_ARGS+=(--rounds "$2"); shift ;;
    --no-mariadb|--no-wrk) CORE_ARGS+=("$1") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[run-all.sh] $*" >&2; }

PIN=$(mktemp -d "${TMPDIR:-/tmp}/fsbench-bin.XXXXXX")
trap 'rm -rf "$PIN"' EXIT
if [ -n "$COMMIT" ]; then
  rev=$(git -C "$REPO" rev-parse --verify "$COMMIT^{commit}") || { log "unknown commit $COMMIT"; exit 1; }
  export BENCH_COMMIT_NOTE="$(git -C "$REPO" rev-parse --short "$rev") (git archive of that commit, built by bench/run-all.sh --commit)"
  BT=${BENCH_TARGET_DIR:-$HOME/.cache/filestore/bench-target}
  SHARED=${CARGO_TARGET_DIR:-$REPO/target}
  if [ ! -d "$BT/release" ] && [ -d "$SHARED/release" ]; then
    log "seeding $BT from $SHARED/release (dependencies already built)"
    mkdir -p "$BT" && cp -a "$SHARED/release" "$BT/"
  fi
  # a fixed source path (files dated by the commit), so that re-measuring a commit rebuilds nothing
  rm -rf "$BT/src" && mkdir -p "$BT/src"
  git -C "$REPO" archive "$rev" | tar -x -C "$BT/src"
  log "cargo build --release -p filestore of $BENCH_COMMIT_NOTE into $BT"
  (cd "$BT/src" && CARGO_TARGET_DIR=$BT cargo build --release --quiet -p filestore) || { log "build failed"; exit 1; }
  FILESTORE_BIN=$BT/release/filestore
elif [ -z "${FILESTORE_BIN:-}" ]; then
  FILESTORE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/filestore
  if [ $BUILD = 1 ]; then
    log "cargo build --release -p filestore"
    (cd "$REPO" && cargo build --release --quiet -p filestore) || { log "build failed"; exit 1; }
  fi
fi
[ -x "$FILESTORE_BIN" ] || { log "no binary at $FILESTORE_BIN"; exit 1; }

cp "$FILESTORE_BIN" "$PIN/filestore"
NOTE="$FILESTORE_BIN (built $(date -r "$FILESTORE_BIN" '+%Y-%m-%d %H:%M'), sha256 $(sha256sum "$PIN/filestore" | cut -c1-16); copied for the run)"

STAMP=$(date +%Y-%m-%d-%H%M)
mkdir -p "$HERE/results"
LOG=$HERE/results/run-$STAMP.txt  # .txt: *.log is gitignored
export BENCH_BINARY_NOTE=$NOTE
export BENCH_CORE_OUT=$HERE/results/core-$STAMP.md
export BENCH_UPLOADS_OUT=$HERE/results/uploads-$STAMP.md
export BENCH_TRANSFER_OUT=$HERE/results/transfer-$STAMP.md
started=$(date +%s)
{
  echo "# bench/run-all.sh${COMMIT:+ --commit $COMMIT} ${CORE_ARGS[*]:-} — $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "# built: ${BENCH_COMMIT_NOTE:-working tree}"
  echo "# binary: $NOTE"
  echo "# load average at the start: $(cat /proc/loadavg)"
} >"$LOG"
log "binary: $NOTE; progress also in $LOG"

rc=0
log "bench/core.sh ${CORE_ARGS[*]:-}"
FILESTORE_BIN=$PIN/filestore "$HERE/core.sh" "${CORE_ARGS[@]}" 2> >(tee -a "$LOG" >&2) >/dev/null || rc=$?
log "core.sh exit $rc after $(( $(date +%s) - started )) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# core.sh exit $rc; load average $(cat /proc/loadavg)" >>"$LOG"

rc2=0
log "bench/uploads.sh ${UP_ARGS[*]:-}"
FILESTORE_BIN=$PIN/filestore "$HERE/uploads.sh" "${UP_ARGS[@]}" 2> >(tee -a "$LOG" >&2) >/dev/null || rc2=$?
echo "# uploads.sh exit $rc2; load average $(cat /proc/loadavg); total $(( $(date +%s) - started )) s" >>"$LOG"
log "uploads.sh exit $rc2; total $(( $(date +%s) - started )) s"

rc3=0
log "bench/transfer.sh ${TR_ARGS[*]:-}"
FILESTORE_BIN=$PIN/filestore "$HERE/transfer.sh" "${TR_ARGS[@]}" 2> >(tee -a "$LOG" >&2) >/dev/null || rc3=$?
echo "# transfer.sh exit $rc3; load average $(cat /proc/loadavg); total $(( $(date +%s) - started )) s" >>"$LOG"
log "transfer.sh exit $rc3; total $(( $(date +%s) - started )) s"

rc4=0
log "bench/dav.sh ${DAV_ARGS[*]:-}"
BENCH_DAV_OUT=$HERE/results/dav-$STAMP.md FILESTORE_BIN=$PIN/filestore "$HERE/dav.sh" "${DAV_ARGS[@]}" \
  2> >(tee -a "$LOG" >&2) >/dev/null || rc4=$?
echo "# dav.sh exit $rc4; load average $(cat /proc/loadavg); total $(( $(date +%s) - started )) s" >>"$LOG"
log "dav.sh exit $rc4; total $(( $(date +%s) - started )) s"

rc5=0
log "bench/mount.sh ${MNT_ARGS[*]:-}"
BENCH_MOUNT_OUT=$HERE/results/mount-$STAMP.md FILESTORE_BIN=$PIN/filestore "$HERE/mount.sh" "${MNT_ARGS[@]}" \
  2> >(tee -a "$LOG" >&2) >/dev/null || rc5=$?
echo "# mount.sh exit $rc5; load average $(cat /proc/loadavg); total $(( $(date +%s) - started )) s" >>"$LOG"
log "mount.sh exit $rc5; total $(( $(date +%s) - started )) s"
log "reports: $BENCH_CORE_OUT $BENCH_UPLOADS_OUT $BENCH_TRANSFER_OUT $HERE/results/dav-$STAMP.md $HERE/results/mount-$STAMP.md"
[ $rc = 0 ] && [ $rc2 = 0 ] && [ $rc3 = 0 ] && [ $rc4 = 0 ] && [ $rc5 = 0 ]
