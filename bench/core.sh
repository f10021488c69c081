#!/usr/bin/env bash
# Core throughput benchmark: filestore next to nginx's WebDAV module (plain-file PUT/GET,
# the near-physical reference), in one run:
#   1. streamed upload of a fresh 1 GiB random file: MB/s, ratio, filestore peak RSS
#   2. download of it: MB/s, ratio
#   3. 4 KiB uploads, 16 concurrent clients: files/s on filestore+SQLite, filestore+MariaDB, nginx
#   4. re-upload of stored content under a new name (dedup hit): time, and no second copy on disk
# Several rounds (server order rotating), medians; Markdown to stdout and bench/results/core-<date>.md.
#
# usage: bench/core.sh [--rounds N] [--quick] [--no-build] [--no-mariadb] [--no-wrk]
#   --quick       64 MiB instead of 1 GiB, 500 small files, 1 round, 2 s wrk (a smoke test)
#   --no-build    use the existing binary (default: `cargo build --release -p filestore` first, a no-op when fresh)
# env: FILESTORE_BIN         binary to measure (implies --no-build)
#      CARGO_TARGET_DIR      where cargo builds (default <repo>/target)
#      BENCH_PORT_BASE       first of the 3 loopback ports used (default 38110: 38110-38112)
#      BENCH_MYSQL           MariaDB server URL without database (default mysql://root@127.0.0.1:3306)
#      BENCH_TMPDIR          where the data dirs go (default $TMPDIR or /tmp; must be a real disk)
#      BENCH_LARGE_MIB, BENCH_SMALL_COUNT, BENCH_CONCURRENCY, BENCH_WRK_SECONDS, BENCH_ROUNDS
#      BENCH_CORE_OUT        report file (default bench/results/core-<date>.md)
#      BENCH_BINARY_NOTE     how the report describes the binary (bench/run-all.sh sets it)
#      BENCH_COMMIT_NOTE     what the report says was built (bench/run-all.sh --commit sets it)
# Needs root only to install missing Debian packages (nginx-extras, wrk, curl, openssl,
# mariadb-client); nginx runs from its own prefix and pid file in a temp dir, never the system service.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
ROUNDS=${BENCH_ROUNDS:-3}
LARGE_MIB=${BENCH_LARGE_MIB:-1024}
SMALL_COUNT=${BENCH_SMALL_COUNT:-2000}
CONC=${BENCH_CONCURRENCY:-16}
WRK_SECS=${BENCH_WRK_SECONDS:-5}
PORT_BASE=${BENCH_PORT_BASE:-38110}
MYSQL_BASE=${BENCH_MYSQL:-mysql://root@127.0.0.1:3306}
BUILD=1
MARIADB=1
[ -n "${FILESTORE_BIN:-}" ] && BUILD=0
COMMAND="bench/core.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --quick) LARGE_MIB=64; SMALL_COUNT=500; ROUNDS=1; WRK_SECS=2 ;;
    --no-build) BUILD=0 ;;
    --no-mariadb) MARIADB=0 ;;
    --no-wrk) WRK_SECS=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PORT_FS=$PORT_BASE
PORT_FSM=$((PORT_BASE + 1))
PORT_NGX=$((PORT_BASE + 2))
USER_NAME=bench
USER_PASS=benchpass1

log() { echo "[core.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ dependencies (idempotent)
need=()
{ command -v nginx >/dev/null && nginx -V 2>&1 | grep -q -- --with-http_dav_module; } || need+=(nginx-extras)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
[ "$WRK_SECS" = 0 ] || command -v wrk >/dev/null || need+=(wrk)
if [ $MARIADB = 1 ]; then command -v mariadb >/dev/null || command -v mysql >/dev/null || need+=(mariadb-client); fi
[ ${#need[@]} = 0 ] || apt_install "${need[@]}"
command -v python3 >/dev/null || die "python3 is required"
NGINX=$(command -v nginx)
MYSQL_CLI=$(command -v mariadb || command -v mysql || true)

# ------------------------------------------------------------------ binary
bench_binary

for p in $PORT_FS $PORT_FSM $PORT_NGX; do
  port_busy "$p" && die "port $p is in use (set BENCH_PORT_BASE)"
done

# ------------------------------------------------------------------ temp space and cleanup
TMPROOT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$TMPROOT/fsbench.XXXXXX")
chmod 755 "$WORK"
need_kib=$(( (LARGE_MIB * 1024) * 2 + 65536 ))
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt "$need_kib" ]; then
  SRC=$(mktemp -d /dev/shm/fsbench-src.XXXXXX)
else
  SRC=$WORK/src; mkdir -p "$SRC"
fi
PIDS=()
NGX=$WORK/nginx
DBNAME=
DB_CREATED=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ -s "$NGX/nginx.pid" ]; then
    "$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" -s quit 2>/dev/null
    npid=$(cat "$NGX/nginx.pid" 2>/dev/null)
    [ -n "$npid" ] && stop_pid "$npid"
  fi
  if [ "$DB_CREATED" = 1 ] && [ -n "$DBNAME" ]; then
    "$MYSQL_CLI" "${MYSQL_ARGS[@]}" -e "DROP DATABASE IF EXISTS \`$DBNAME\`" || log "could not drop database $DBNAME"
  fi
  if [ $rc != 0 ] && [ -d "$WORK" ]; then
    for f in "$WORK"/*.log "$NGX/error.log"; do
      [ -s "$f" ] && { log "--- last lines of $f"; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK" "$SRC"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# ------------------------------------------------------------------ filestore instances
signin() {  # signin PORT -> token
  curl -sS --fail -XPOST "http://127.0.0.1:$1/api/v1/auth/signin" -H 'content-type: application/json' \
    -d "{\"username\":\"$USER_NAME\",\"password\":\"$USER_PASS\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
start_filestore() {  # start_filestore NAME PORT [VAR=VALUE ...] ; sets FS_PID FS_TOKEN FS_DIR
  local name=$1 port=$2; shift 2
  FS_DIR=$WORK/$name
  mkdir -p "$FS_DIR"
  echo "$USER_PASS" | env "$@" "$FILESTORE_BIN" user add "$USER_NAME" --password-stdin --data-dir "$FS_DIR" \
    >/dev/null 2>>"$WORK/$name.log" || die "filestore user add failed for $name (see $WORK/$name.log)"
  env "$@" "$FILESTORE_BIN" serve --listen "127.0.0.1:$port" --data-dir "$FS_DIR" >>"$WORK/$name.log" 2>&1 &
  FS_PID=$!
  PIDS+=("$FS_PID")
  wait_port "$port" "$FS_PID" "filestore ($name)"
  FS_TOKEN=$(signin "$port") || die "sign-in failed on $name"
}

start_filestore filestore-sqlite "$PORT_FS"
PID_FS=$FS_PID; TOKEN_FS=$FS_TOKEN; DIR_FS=$FS_DIR
log "filestore (SQLite) pid $PID_FS on 127.0.0.1:$PORT_FS"

MARIADB_NOTE=""
if [ $MARIADB = 1 ]; then
  # mysql://user[:pass]@host[:port] -> client arguments
  read -r M_USER M_PASS M_HOST M_PORT < <(python3 -c 'import sys,urllib.parse as u
p=u.urlsplit(sys.argv[1]); print(p.username or "root", p.password or "-", p.hostname or "127.0.0.1", p.port or 3306)' "$MYSQL_BASE")
  MYSQL_ARGS=(-h "$M_HOST" -P "$M_PORT" -u "$M_USER")
  [ "$M_PASS" != "-" ] && MYSQL_ARGS+=("-p$M_PASS")
  if [ -z "$MYSQL_CLI" ]; then
    MARIADB_NOTE="no mariadb/mysql client"
  elif ! "$MYSQL_CLI" "${MYSQL_ARGS[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
    MARIADB_NOTE="MariaDB not reachable at $M_HOST:$M_PORT"
  else
    DBNAME=fsbench_$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
    DB_CREATED=1  # filestore creates it; drop it in any case
    start_filestore filestore-mariadb "$PORT_FSM" "FILESTORE_DATABASE__URL=$MYSQL_BASE/$DBNAME"
    PID_FSM=$FS_PID; TOKEN_FSM=$FS_TOKEN; DIR_FSM=$FS_DIR
    log "filestore (MariaDB, database $DBNAME) pid $PID_FSM on 127.0.0.1:$PORT_FSM"
  fi
  [ -z "$MARIADB_NOTE" ] || log "skipping MariaDB: $MARIADB_NOTE"
else
  MARIADB_NOTE="--no-mariadb"
fi

# ------------------------------------------------------------------ nginx (own prefix, pid, temp paths)
mkdir -p "$NGX/root" "$NGX/tmp/body" "$NGX/tmp/proxy" "$NGX/tmp/fastcgi" "$NGX/tmp/uwsgi" "$NGX/tmp/scgi"
NGX_USER=""
if [ "$(id -u)" = 0 ]; then
  # workers must not run as root; they need to write the root and the body temp dir
  NGX_USER=$(id -u www-data >/dev/null 2>&1 && echo www-data || echo nobody)
  chown -R "$NGX_USER" "$NGX/root" "$NGX/tmp"
fi
cat > "$NGX/nginx.conf" <<CONF
${NGX_USER:+user $NGX_USER;}
worker_processes auto;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  server {
    listen 127.0.0.1:$PORT_NGX;
    root $NGX/root;
    client_max_body_size 0;
    location / {
      dav_methods PUT DELETE MKCOL COPY MOVE;
      create_full_put_path on;
      dav_access user:rw group:rw all:r;
    }
  }
}
CONF
"$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" -t -q || die "nginx config test failed"
"$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log"
for i in $(seq 100); do [ -s "$NGX/nginx.pid" ] && break; sleep 0.1; done
PID_NGX=$(cat "$NGX/nginx.pid")
wait_port "$PORT_NGX" "$PID_NGX" nginx
log "nginx pid $PID_NGX on 127.0.0.1:$PORT_NGX (root $NGX/root)"

# ------------------------------------------------------------------ measure
python3 - "$WORK/targets.json" <<PY
import json, sys
t = [dict(name="filestore-sqlite", kind="filestore", host="127.0.0.1", port=$PORT_FS, pid=$PID_FS,
          files_prefix="/api/v1/files/", auth="Bearer $TOKEN_FS", data_dir="$DIR_FS")]
if "${PID_FSM:-}":
    t.append(dict(name="filestore-mariadb", kind="filestore", host="127.0.0.1", port=$PORT_FSM,
                  pid=int("${PID_FSM:-0}"), files_prefix="/api/v1/files/", auth="Bearer ${TOKEN_FSM:-}",
                  data_dir="${DIR_FSM:-}"))
t.append(dict(name="nginx", kind="nginx", host="127.0.0.1", port=$PORT_NGX, pid=$PID_NGX, files_prefix="/",
              auth=None, root="$NGX/root"))
json.dump(t, open(sys.argv[1], "w"), indent=1)
PY

INFO=$(bench_info \
  nginx_version "$("$NGINX" -v 2>&1 | sed 's/.*version: //')" \
  mariadb_version "$([ -n "${PID_FSM:-}" ] && "$MYSQL_CLI" "${MYSQL_ARGS[@]}" -N -e 'SELECT VERSION()' 2>/dev/null || echo '-')" \
  mariadb_skipped "$MARIADB_NOTE" \
  load "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the start)")

mkdir -p "$HERE/results"
OUT=${BENCH_CORE_OUT:-$HERE/results/core-$(date +%Y-%m-%d-%H%M).md}
rc=0
python3 "$HERE/core.py" --targets "$WORK/targets.json" --src-dir "$SRC" --work-dir "$WORK" --out "$OUT" \
  --rounds "$ROUNDS" --large-mib "$LARGE_MIB" --small-count "$SMALL_COUNT" --concurrency "$CONC" \
  --wrk-seconds "$WRK_SECS" --info "$INFO" || rc=$?

# the servers must have survived the whole run
for pid in $PID_FS ${PID_FSM:-} $PID_NGX; do
  kill -0 "$pid" 2>/dev/null || { log "server pid $pid is gone after the run"; rc=1; }
done
WARNINGS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/filestore-*.log 2>/dev/null | grep -E ' (ERROR|WARN) |panicked' || true)
if [ -n "$WARNINGS" ]; then
  log "filestore logged $(echo "$WARNINGS" | wc -l) warning/error lines, first ones:"
  echo "$WARNINGS" | head -n 20 >&2
fi
[ $rc = 0 ] || log "finished with problems (exit $rc); see the report's Problems line"
exit $rc
