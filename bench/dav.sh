#!/usr/bin/env bash
# WebDAV benchmark: filestore's /dav/ endpoint (embedded default: SQLite, local disk, HTTP Basic
# auth on every request) next to nginx (+dav_ext), Apache mod_dav and `rclone serve webdav`,
# all from Debian, all with Basic auth, in one run:
#   1. PUT of a fresh 1 GiB random file (curl -T), then GET of it: MB/s, ratio to nginx
#   2. 2,000 x 4 KiB files into a new collection (16 python clients), then
#      PROPFIND Depth: 1 of that collection (2,001 entries): ms, ratio to nginx
#      GET of those files, 16 connections (wrk): requests/s
#      PUT of new 4 KiB files, 16 connections (wrk): files/s
#   3. servers' RSS (peak per phase), server CPU per request, and filestore's credential cache
#      (/metrics hit ratio; a first request of a new user, which runs argon2, next to cached ones)
# Several rounds (server order rotating), medians and per-round ratios; Markdown to stdout and
# bench/results/dav-<date>.md.
#
# usage: bench/dav.sh [--rounds N] [--quick] [--no-build] [--peers LIST]
#   --quick       64 MiB instead of 1 GiB, 500 small files, 1 round, 2 s wrk (a smoke test)
#   --no-build    use the existing binary (default: `cargo build --release -p filestore` first)
#   --peers LIST  comma list from nginx,apache,rclone (default all three; nginx is the baseline
#                 and always runs)
# env: FILESTORE_BIN         binary to measure (implies --no-build)
#      CARGO_TARGET_DIR      where cargo builds (default <repo>/target)
#      BENCH_DAV_PORT_BASE   first of the 4 loopback ports used (default 38300: 38300-38303)
#      BENCH_TMPDIR          where the servers' data dirs go (default $TMPDIR or /tmp; a real disk)
#      BENCH_LARGE_MIB, BENCH_SMALL_COUNT, BENCH_CONCURRENCY, BENCH_WRK_SECONDS, BENCH_ROUNDS
#      BENCH_QUIET_WAIT      seconds to wait for a quiet machine before each round (default 30)
#      BENCH_INODE_SETTLE    seconds to wait after a sync before the first round, so that inodes
#                            freed just before (an earlier run's cleanup) no longer slow file
#                            creation on ext4 without a journal (default 61; see dav.py)
#      BENCH_DAV_OUT         report file (default bench/results/dav-<date>.md)
#      BENCH_BINARY_NOTE     how the report describes the binary (bench/run-all.sh sets it)
#      BENCH_COMMIT_NOTE     what the report says was built (bench/run-all.sh --commit sets it)
# Needs root only to install missing Debian packages (nginx-extras, libnginx-mod-http-dav-ext,
# apache2, rclone, wrk, curl, openssl). Every peer runs from its own config, pid file and data dir
# in a temp dir, never as the system service.
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
PORT_BASE=${BENCH_DAV_PORT_BASE:-38300}
PEERS=nginx,apache,rclone
BUILD=1
[ -n "${FILESTORE_BIN:-}" ] && BUILD=0
COMMAND="bench/dav.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --quick) LARGE_MIB=64; SMALL_COUNT=500; ROUNDS=1; WRK_SECS=2 ;;
    --no-build) BUILD=0 ;;
    --peers) PEERS=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case ",$PEERS," in *,nginx,*) ;; *) PEERS="nginx,$PEERS" ;; esac
has_peer() { case ",$PEERS," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }

PORT_FS=$PORT_BASE
PORT_NGX=$((PORT_BASE + 1))
PORT_APA=$((PORT_BASE + 2))
PORT_RCL=$((PORT_BASE + 3))
USER_NAME=bench
USER_PASS=benchpass1
USER2_NAME=bench2  # only for the argon2-vs-cache timing

log() { echo "[dav.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ dependencies (idempotent)
NGX_DAV_EXT=/usr/lib/nginx/modules/ngx_http_dav_ext_module.so
need=()
{ command -v nginx >/dev/null && nginx -V 2>&1 | grep -q -- --with-http_dav_module; } || need+=(nginx-extras)
[ -f "$NGX_DAV_EXT" ] || need+=(libnginx-mod-http-dav-ext)
if has_peer apache; then { command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ]; } || need+=(apache2); fi
if has_peer rclone; then command -v rclone >/dev/null || need+=(rclone); fi
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} = 0 ] || apt_install "${need[@]}"
command -v python3 >/dev/null || die "python3 is required"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
APACHE=$(command -v apache2 || echo /usr/sbin/apache2)
RCLONE=$(command -v rclone || true)

# ------------------------------------------------------------------ binary
bench_binary

for p in $PORT_FS $PORT_NGX $PORT_APA $PORT_RCL; do
  port_busy "$p" && die "port $p is in use (set BENCH_DAV_PORT_BASE)"
done

# ------------------------------------------------------------------ temp space and cleanup
TMPROOT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$TMPROOT/fsbench-dav.XXXXXX")
chmod 755 "$WORK"  # the peers' workers (www-data) must reach their data dirs
need_kib=$(( LARGE_MIB * 1024 + 65536 ))
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt "$need_kib" ]; then
  SRC=$(mktemp -d /dev/shm/fsbench-dav-src.XXXXXX)
else
  SRC=$WORK/src; mkdir -p "$SRC"
fi
PIDS=()
NGX=$WORK/nginx
APA=$WORK/apache
RCL=$WORK/rclone

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
  if [ -s "$APA/httpd.pid" ]; then
    stop_pid "$(cat "$APA/httpd.pid")"  # TERM to the parent: it stops its children
  fi
  if [ $rc != 0 ] && [ -d "$WORK" ]; then
    for f in "$WORK"/*.log "$NGX/error.log" "$APA/error.log"; do
      [ -s "$f" ] && { log "--- last lines of $f"; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK" "$SRC"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_pidfile() {  # wait_pidfile FILE NAME -> pid
  local i
  for i in $(seq 100); do [ -s "$1" ] && { cat "$1"; return 0; }; sleep 0.1; done
  die "$2 wrote no pid file $1"
}
# the peers' workers must not run as root; they need to write their data and temp dirs
RUN_USER=""
if [ "$(id -u)" = 0 ]; then RUN_USER=$(id -u www-data >/dev/null 2>&1 && echo www-data || echo nobody); fi
RUN_GROUP=${RUN_USER:+$(id -gn "$RUN_USER")}
give() { [ -z "$RUN_USER" ] || chown -R "$RUN_USER:$RUN_GROUP" "$@"; }
# htpasswd line with a {SHA} hash: one SHA-1 per request for nginx and Apache (apr1 would cost
# ~1000 MD5 rounds per request and make them look slower than they are)
sha_htpasswd() {
  python3 -c 'import base64,hashlib,sys; print("%s:{SHA}%s" % (sys.argv[1], base64.b64encode(hashlib.sha1(sys.argv[2].encode()).digest()).decode()))' "$1" "$2"
}

# ------------------------------------------------------------------ filestore (embedded default)
FS_DIR=$WORK/filestore
mkdir -p "$FS_DIR"
for u in "$USER_NAME" "$USER2_NAME"; do
  echo "$USER_PASS" | "$FILESTORE_BIN" user add "$u" --password-stdin --data-dir "$FS_DIR" \
    >/dev/null 2>>"$WORK/filestore.log" || die "filestore user add $u failed (see $WORK/filestore.log)"
done
"$FILESTORE_BIN" serve --listen "127.0.0.1:$PORT_FS" --data-dir "$FS_DIR" >>"$WORK/filestore.log" 2>&1 &
PID_FS=$!
PIDS+=("$PID_FS")
wait_port "$PORT_FS" "$PID_FS" filestore
log "filestore pid $PID_FS on 127.0.0.1:$PORT_FS/dav/ (data $FS_DIR)"

# ------------------------------------------------------------------ nginx + dav_ext
mkdir -p "$NGX/root" "$NGX/tmp/body" "$NGX/tmp/proxy" "$NGX/tmp/fastcgi" "$NGX/tmp/uwsgi" "$NGX/tmp/scgi"
sha_htpasswd "$USER_NAME" "$USER_PASS" > "$NGX/htpasswd"
give "$NGX/root" "$NGX/tmp"
cat > "$NGX/nginx.conf" <<CONF
load_module $NGX_DAV_EXT;
${RUN_USER:+user $RUN_USER;}
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
  dav_ext_lock_zone zone=davlock:10m;
  server {
    listen 127.0.0.1:$PORT_NGX;
    root $NGX/root;
    client_max_body_size 0;
    auth_basic "bench";
    auth_basic_user_file $NGX/htpasswd;
    location / {
      dav_methods PUT DELETE MKCOL COPY MOVE;
      dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
      dav_ext_lock zone=davlock;
      dav_access user:rw group:rw all:r;
      create_full_put_path on;
    }
  }
}
CONF
"$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" -t -q || die "nginx config test failed"
"$NGINX" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log"
PID_NGX=$(wait_pidfile "$NGX/nginx.pid" nginx)
wait_port "$PORT_NGX" "$PID_NGX" nginx
log "nginx pid $PID_NGX on 127.0.0.1:$PORT_NGX (root $NGX/root)"

# ------------------------------------------------------------------ Apache mod_dav (mpm_event)
PID_APA=
if has_peer apache; then
  M=/usr/lib/apache2/modules
  mkdir -p "$APA/root" "$APA/run"
  sha_htpasswd "$USER_NAME" "$USER_PASS" > "$APA/htpasswd"
  give "$APA/root" "$APA/run"
  cat > "$APA/httpd.conf" <<CONF
ServerRoot /etc/apache2
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT_APA
PidFile $APA/httpd.pid
DefaultRuntimeDir $APA/run
ErrorLog $APA/error.log
LogLevel warn
${RUN_USER:+User $RUN_USER}
${RUN_USER:+Group $RUN_GROUP}
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule authz_user_module $M/mod_authz_user.so
LoadModule authn_core_module $M/mod_authn_core.so
LoadModule authn_file_module $M/mod_authn_file.so
LoadModule auth_basic_module $M/mod_auth_basic.so
LoadModule dav_module $M/mod_dav.so
LoadModule dav_fs_module $M/mod_dav_fs.so
KeepAlive On
MaxKeepAliveRequests 0
LimitRequestBody 0
DAVLockDB $APA/run/DAVLock
DocumentRoot $APA/root
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory $APA/root>
  Dav On
  Options None
  AllowOverride None
  AuthType Basic
  AuthName bench
  AuthBasicProvider file
  AuthUserFile $APA/htpasswd
  Require valid-user
</Directory>
CONF
  "$APACHE" -t -f "$APA/httpd.conf" >/dev/null 2>"$WORK/apache-configtest.log" \
    || { cat "$WORK/apache-configtest.log" >&2; die "apache config test failed"; }
  "$APACHE" -f "$APA/httpd.conf" -k start
  PID_APA=$(wait_pidfile "$APA/httpd.pid" apache)
  wait_port "$PORT_APA" "$PID_APA" apache
  log "apache pid $PID_APA on 127.0.0.1:$PORT_APA (root $APA/root)"
fi

# ------------------------------------------------------------------ rclone serve webdav (local backend)
PID_RCL=
if has_peer rclone; then
  mkdir -p "$RCL/root"
  : > "$RCL/rclone.conf"
  RCLONE_CONFIG=$RCL/rclone.conf "$RCLONE" serve webdav "$RCL/root" --addr "127.0.0.1:$PORT_RCL" \
    --user "$USER_NAME" --pass "$USER_PASS" --log-level NOTICE >"$WORK/rclone.log" 2>&1 </dev/null &
  PID_RCL=$!
  PIDS+=("$PID_RCL")
  wait_port "$PORT_RCL" "$PID_RCL" rclone
  log "rclone pid $PID_RCL on 127.0.0.1:$PORT_RCL (root $RCL/root)"
fi

# ------------------------------------------------------------------ measure
python3 - "$WORK/targets.json" <<PY
import base64, json, sys
auth = "Basic " + base64.b64encode(b"$USER_NAME:$USER_PASS").decode()
t = [dict(name="filestore", kind="filestore", host="127.0.0.1", port=$PORT_FS, pid=$PID_FS,
          files_prefix="/dav/", auth=auth, data_dir="$FS_DIR",
          auth2="Basic " + base64.b64encode(b"$USER2_NAME:$USER_PASS").decode()),
     dict(name="nginx", kind="nginx", host="127.0.0.1", port=$PORT_NGX, pid=$PID_NGX, files_prefix="/",
          auth=auth, data_dir="$NGX/root")]
if "$PID_APA":
    t.append(dict(name="apache", kind="apache", host="127.0.0.1", port=$PORT_APA, pid=int("${PID_APA:-0}"),
                  files_prefix="/", auth=auth, data_dir="$APA/root"))
if "$PID_RCL":
    t.append(dict(name="rclone", kind="rclone", host="127.0.0.1", port=$PORT_RCL, pid=int("${PID_RCL:-0}"),
                  files_prefix="/", auth=auth, data_dir="$RCL/root"))
json.dump(t, open(sys.argv[1], "w"), indent=1)
PY

INFO=$(bench_info \
  nginx_version "$("$NGINX" -v 2>&1 | sed 's/.*version: //') + dav_ext $(dpkg-query -W -f '${Version}' libnginx-mod-http-dav-ext 2>/dev/null || echo '?')" \
  apache_version "$([ -n "$PID_APA" ] && "$APACHE" -v 2>/dev/null | sed -n 's/^Server version: //p' || echo '-')" \
  rclone_version "$([ -n "$PID_RCL" ] && "$RCLONE" version 2>/dev/null | head -n1 || echo '-')" \
  wrk_version "$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)" \
  load "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the start)")

mkdir -p "$HERE/results"
OUT=${BENCH_DAV_OUT:-$HERE/results/dav-$(date +%Y-%m-%d-%H%M).md}
rc=0
python3 "$HERE/dav.py" --targets "$WORK/targets.json" --src-dir "$SRC" --out "$OUT" \
  --rounds "$ROUNDS" --large-mib "$LARGE_MIB" --small-count "$SMALL_COUNT" --concurrency "$CONC" \
  --wrk-seconds "$WRK_SECS" --info "$INFO" || rc=$?

# the servers must have survived the whole run
for pid in $PID_FS $PID_NGX $PID_APA $PID_RCL; do
  kill -0 "$pid" 2>/dev/null || { log "server pid $pid is gone after the run"; rc=1; }
done
WARNINGS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/filestore.log 2>/dev/null | grep -E ' (ERROR|WARN) |panicked' || true)
if [ -n "$WARNINGS" ]; then
  log "filestore logged $(echo "$WARNINGS" | wc -l) warning/error lines, first ones:"
  echo "$WARNINGS" | head -n 20 >&2
fi
[ $rc = 0 ] || log "finished with problems (exit $rc); see the report's Problems line"
exit $rc
