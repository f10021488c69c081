#!/usr/bin/env bash
# Transfer benchmark: filestore's asynchronous transfer to S3 (Ceph RGW) through RabbitMQ,
# next to `aws s3 cp` (Debian's awscli) of the same bytes to the same server, in one run:
#   1. one fresh 1 GiB file: filestore's transfer time vs `aws s3 cp FILE` wall time, MB/s, ratio
#   2. 1,000 fresh files of 64 KiB: filestore's transfer time vs `aws s3 cp --recursive DIR`
#   3. ranged reads of 1 MiB from the middle of the transferred 1 GiB file: p50/p99 latency
#      through the JSON API (GET /api/v1/files/... with Range), the seed route (/file/download
#      with Range), and directly from the S3 server (presigned GET, same range)
# The deployment shape is the real one: `filestore serve` (SQLite, staging on disk, the outbox
# relay publishing to RabbitMQ) and a separate `filestore transfer` worker process. Each
# filestore measurement uploads the data into staging first with no worker running (the relay
# publishes the jobs), then times from the worker's start to every job done in the database,
# staging empty, and the queue drained (messages and unacked both 0); the objects are then
# checked in S3 (size, and the MD5 ETag for the single PUTs). The peer's figure is the wall
# time of the aws command. Rounds alternate which goes first. Markdown to stdout and
# bench/results/transfer-<date>.md.
#
# usage: bench/transfer.sh [--rounds N] [--quick] [--no-build] [--keep-ceph]   (default 3 rounds)
#   --quick       64 MiB instead of 1 GiB, 200 small files, 1 round, 50 ranged reads (a smoke test)
#   --no-build    use the existing binary (default: `cargo build --release -p filestore` first)
#   --keep-ceph   leave a Ceph cluster this script started running at the end
# env: FILESTORE_BIN         binary to measure (implies --no-build)
#      CARGO_TARGET_DIR      where cargo builds (default <repo>/target)
#      BENCH_TRANSFER_PORT   loopback port of the filestore server (default 38400; the next 9
#                            are tried in turn when it is taken)
#      BENCH_CEPH_DIR        Ceph state dir for scripts/ceph-rgw.sh (default /tmp/fsbench-ceph; an
#                            already running cluster there is reused and left running)
#      CEPH_RGW_PORT, CEPH_MON_PORT, CEPH_MEMSTORE_BYTES  for a cluster this script starts
#                            (defaults 38480, 38490-38491, 8 GiB)
#      BENCH_AMQP_URL        RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/%2f)
#      BENCH_TMPDIR          where the data dirs and source files go (default $TMPDIR or /tmp;
#                            a real disk: the staging copy and the aws source live there)
#      BENCH_LARGE_MIB, BENCH_SMALL_COUNT, BENCH_SMALL_KIB, BENCH_RANGE_N, BENCH_ROUNDS
#      BENCH_TRANSFER_OUT    report file (default bench/results/transfer-<date>.md)
#      BENCH_BINARY_NOTE, BENCH_COMMIT_NOTE  how the report describes the binary (run-all.sh sets them)
# Needs root only to install missing Debian packages (awscli, curl, openssl, rabbitmq-server's
# rabbitmqctl); Ceph must be installed (scripts/ceph-rgw.sh install).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
ROUNDS=${BENCH_ROUNDS:-3}
LARGE_MIB=${BENCH_LARGE_MIB:-1024}
SMALL_COUNT=${BENCH_SMALL_COUNT:-1000}
SMALL_KIB=${BENCH_SMALL_KIB:-64}
RANGE_N=${BENCH_RANGE_N:-200}
PORT=${BENCH_TRANSFER_PORT:-38400}
CEPH_DIR=${BENCH_CEPH_DIR:-/tmp/fsbench-ceph}
AMQP_URL=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
BUILD=1
KEEP_CEPH=0
[ -n "${FILESTORE_BIN:-}" ] && BUILD=0
COMMAND="bench/transfer.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --quick) LARGE_MIB=64; SMALL_COUNT=200; ROUNDS=1; RANGE_N=50 ;;
    --no-build) BUILD=0 ;;
    --keep-ceph) KEEP_CEPH=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[transfer.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ dependencies (idempotent)
# Debian's awscli is /usr/bin/aws; another `aws` earlier on PATH (pip, pyenv) is not the peer.
AWS=/usr/bin/aws
need=()
[ -x "$AWS" ] || need+=(awscli)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v rabbitmqctl >/dev/null || need+=(rabbitmq-server)
[ ${#need[@]} = 0 ] || apt_install "${need[@]}"
command -v python3 >/dev/null || die "python3 is required"
command -v radosgw >/dev/null || die "Ceph is not installed: run scripts/ceph-rgw.sh install"

# ------------------------------------------------------------------ binary
bench_binary

python3 - "$AMQP_URL" <<'PY' || die "RabbitMQ is not reachable at $AMQP_URL (start it: rabbitmq-server -detached)"
import socket, sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); socket.create_connection((p.hostname or "127.0.0.1", p.port or 5672), 3).close()
PY

# ------------------------------------------------------------------ temp space, Ceph, cleanup
TMPROOT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$TMPROOT/fsbench-transfer.XXXXXX")
chmod 755 "$WORK"
PIDS=()
CEPH_STARTED=0
RUN_ID=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
BUCKET=fsbench-$RUN_ID
# Queues and a routing key of the run's own (deleted at the end), so that nothing else consumes
# its jobs; the durable exchange is shared by every run.
Q_EXCHANGE=fsbench.transfer
Q_KEY=run-$RUN_ID
Q_QUEUE=fsbench.transfer.$RUN_ID.q
Q_DLQ=fsbench.transfer.$RUN_ID.dlq

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ -n "${S3_ENDPOINT:-}" ]; then
    "$AWS" --endpoint-url "$S3_ENDPOINT" s3 rb "s3://$BUCKET" --force >/dev/null 2>&1 \
      || log "could not remove bucket $BUCKET"
  fi
  for q in "$Q_QUEUE" "$Q_DLQ"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1; done
  if [ $CEPH_STARTED = 1 ] && [ $KEEP_CEPH = 0 ]; then
    log "stopping the Ceph cluster in $CEPH_DIR"
    ceph_rgw stop "$CEPH_DIR" || log "could not stop Ceph in $CEPH_DIR"
  fi
  if [ $rc != 0 ] && [ -d "$WORK" ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] && { log "--- last lines of $f"; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Ceph daemons must inherit no descriptor beyond stdio: the caller's lock
# (flock -x /tmp/filestore-bench.lock bench/transfer.sh --keep-ceph) would otherwise live as
# long as the cluster, and nobody could take it again.
ceph_rgw() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec "$REPO/scripts/ceph-rgw.sh" "$@"
  )
}
if ! ceph_rgw env "$CEPH_DIR" >/dev/null 2>&1; then
  CEPH_STARTED=1
  export CEPH_RGW_PORT=${CEPH_RGW_PORT:-38480} CEPH_MON_PORT=${CEPH_MON_PORT:-38490}
  export CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-$((8 << 30))}
  log "starting Ceph RGW in $CEPH_DIR (S3 on 127.0.0.1:$CEPH_RGW_PORT)"
fi
CEPH_ENV=$(ceph_rgw start "$CEPH_DIR") || die "Ceph RGW did not start (logs in $CEPH_DIR/log)"
eval "$CEPH_ENV"
log "S3 at $S3_ENDPOINT, bucket $BUCKET"
"$AWS" --endpoint-url "$S3_ENDPOINT" s3 mb "s3://$BUCKET" >/dev/null || die "could not create bucket $BUCKET"

# ------------------------------------------------------------------ filestore server and worker settings
DATA=$WORK/data
mkdir -p "$DATA"
FS_ENV=(
  "FILESTORE_S3__ENDPOINT=$S3_ENDPOINT" "FILESTORE_S3__REGION=$S3_REGION" "FILESTORE_S3__BUCKET=$BUCKET"
  "FILESTORE_S3__ACCESS_KEY=$AWS_ACCESS_KEY_ID" "FILESTORE_S3__SECRET_KEY=$AWS_SECRET_ACCESS_KEY"
  "FILESTORE_S3__PATH_STYLE=true" "FILESTORE_QUEUE__AMQP_URL=$AMQP_URL"
  "FILESTORE_QUEUE__EXCHANGE=$Q_EXCHANGE" "FILESTORE_QUEUE__ROUTING_KEY=$Q_KEY" "FILESTORE_QUEUE__QUEUE=$Q_QUEUE"
  "FILESTORE_QUEUE__DEAD_LETTER_QUEUE=$Q_DLQ"
)
# the AWS_* variables are for the aws command; filestore gets its credentials from FS_ENV
echo benchpass1 | env "${FS_ENV[@]}" "$FILESTORE_BIN" user add bench --password-stdin --data-dir "$DATA" \
  >/dev/null 2>>"$WORK/filestore.log" || die "filestore user add failed (see $WORK/filestore.log)"
start_server() {  # start_server PORT: 0 once it listens, 1 if it exited (PID_FS set either way)
  env "${FS_ENV[@]}" "$FILESTORE_BIN" serve --listen "127.0.0.1:$1" --data-dir "$DATA" >>"$WORK/filestore.log" 2>&1 &
  PID_FS=$!
  PIDS+=("$PID_FS")
  await_port "$1" "$PID_FS" filestore
}
# The ports lie in the kernel's ephemeral range (32768-60999): an outgoing connection elsewhere
# may hold one for a while, so a port that is taken, or taken meanwhile, passes to the next.
FIRST_PORT=$PORT
for PORT in $(seq "$FIRST_PORT" $((FIRST_PORT + 9))) none; do
  [ "$PORT" = none ] && die "ports $FIRST_PORT-$((FIRST_PORT + 9)) are all taken (set BENCH_TRANSFER_PORT)"
  port_busy "$PORT" && continue
  start_server "$PORT" && break
  grep -q "Address already in use" "$WORK/filestore.log" || die "filestore exited during start-up"
  log "port $PORT was taken meanwhile; trying the next"
  : >"$WORK/filestore.log"
done
log "filestore pid $PID_FS on 127.0.0.1:$PORT (data $DATA)"

# The worker command line, started and stopped by the driver for each measurement.
python3 - "$WORK/worker.json" "$FILESTORE_BIN" "$DATA" "${FS_ENV[@]}" <<'PY'
import json, sys
out, binary, data, env = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
json.dump(dict(argv=[binary, "transfer", "--data-dir", data], env=dict(e.split("=", 1) for e in env)),
          open(out, "w"))
PY

INFO=$(bench_info \
  aws_version "$("$AWS" --version 2>&1)" \
  ceph_version "$(ceph --version 2>/dev/null | sed 's/ (.*//')" \
  ceph_dir "$CEPH_DIR$([ $CEPH_STARTED = 1 ] && echo ' (started by this run)' || echo ' (already running)')" \
  rgw_frontends "$(sed -n 's/^rgw frontends = //p' "$CEPH_DIR/ceph.conf")" \
  rabbitmq_version "$(rabbitmqctl -q version 2>/dev/null || echo '?')" \
  load "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the start)")

mkdir -p "$HERE/results"
OUT=${BENCH_TRANSFER_OUT:-$HERE/results/transfer-$(date +%Y-%m-%d-%H%M).md}
rc=0
AWS_BIN=$AWS python3 "$HERE/transfer.py" --server "127.0.0.1:$PORT" --server-pid "$PID_FS" --data-dir "$DATA" \
  --worker "$WORK/worker.json" --work-dir "$WORK" --bucket "$BUCKET" --queue "$Q_QUEUE" --out "$OUT" \
  --rounds "$ROUNDS" --large-mib "$LARGE_MIB" --small-count "$SMALL_COUNT" --small-kib "$SMALL_KIB" \
  --range-n "$RANGE_N" --info "$INFO" || rc=$?

kill -0 "$PID_FS" 2>/dev/null || { log "the filestore server is gone after the run"; rc=1; }
WARNINGS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/*.log 2>/dev/null | grep -E ' (ERROR|WARN) |panicked' || true)
if [ -n "$WARNINGS" ]; then
  log "filestore logged $(echo "$WARNINGS" | wc -l) warning/error lines, first ones:"
  echo "$WARNINGS" | head -n 20 >&2
fi
[ $rc = 0 ] || log "finished with problems (exit $rc); see the report's Problems line"
exit $rc
