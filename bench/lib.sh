# Shared by the benchmark scripts (sourced, not run).

# The facts every report's "Setup" section starts with (command, commit, binary, machine),
# followed by the caller's own KEY VALUE pairs, as one JSON object on stdout. Reads the
# caller's COMMAND, REPO, FILESTORE_BIN, BUILD (1 when this run built the binary) and WORK
# (the work dir, whose file system is reported), and BENCH_COMMIT_NOTE / BENCH_BINARY_NOTE
# when bench/run-all.sh sets them.
bench_info() {
  local commit rebuilt=""
  if [ -n "${BENCH_COMMIT_NOTE:-}" ]; then
    commit=$BENCH_COMMIT_NOTE
  else
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
    [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (+uncommitted changes)"
  fi
  [ "${BUILD:-0}" = 1 ] || rebuilt="; not rebuilt by this run, may predate the commit above"
  python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
    command "$COMMAND" \
    commit "$commit" \
    binary "${BENCH_BINARY_NOTE:-$FILESTORE_BIN (built $(date -r "$FILESTORE_BIN" '+%Y-%m-%d %H:%M'), sha256 $(sha256sum "$FILESTORE_BIN" | cut -c1-16)$rebuilt)}" \
    cpu "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" \
    cpus "$(nproc)" \
    mem "$(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
    kernel "$(uname -r)" \
    work_fs "$(df -PT "$WORK" | awk 'NR==2{print $2" on "$1}')" \
    "$@"
}

# ---- helpers every benchmark script uses; they call the script's own `log` and `die`.

# Installs Debian packages (root only), waiting for another apt run to finish.
apt_install() {
  [ "$(id -u)" = 0 ] || die "missing $* and not root: install them (apt-get install $*)"
  command -v apt-get >/dev/null || die "missing $* and no apt-get"
  log "apt-get install $*"
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  # policy-rc.d (where the image has one) keeps the packages' services from starting
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# Sets FILESTORE_BIN to the binary under test: the caller's, else the release build in the
# target dir (built first when BUILD=1). filestore refuses unknown FILESTORE_* variables,
# FILESTORE_BIN included, and nothing from the caller's environment may reconfigure the
# servers under test: all of them are kept out of the processes started later.
bench_binary() {
  if [ -z "${FILESTORE_BIN:-}" ]; then
    FILESTORE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/filestore
    if [ "${BUILD:-0}" = 1 ]; then
      log "cargo build --release -p filestore"
      (cd "$REPO" && cargo build --release --quiet -p filestore) || die "build failed"
    fi
  fi
  [ -x "$FILESTORE_BIN" ] || die "no binary at $FILESTORE_BIN (build with cargo build --release -p filestore)"
  export -n FILESTORE_BIN
  local v
  for v in $(compgen -e | grep '^FILESTORE_' | grep -v '^FILESTORE_BIN$' || true); do unset "$v"; done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# await_port PORT PID NAME: 0 once something listens on PORT, 1 if PID exited first (a
# caller may then retry, e.g. on another port); dies after 30 s.
await_port() {
  local i
  for i in $(seq 300); do
    port_busy "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  die "$3 did not listen on port $1 within 30 s"
}

# wait_port PORT PID NAME: as await_port, but PID exiting is fatal too.
wait_port() { await_port "$@" || die "$3 exited during start-up"; }

# SIGTERM, up to 15 s, then SIGKILL; only for the script's own children.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM for 15 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# For the A/B scripts: a fresh `filestore serve` of BIN on its embedded default (user
# bench, password benchpass1) on 127.0.0.1:PORT, and a `filestore mount --server` of it
# with the extra mount arguments given, all in a new directory under BENCH_TMPDIR (default
# /var/tmp). Sets AB_DIR (the mountpoint is $AB_DIR/mnt), AB_SERVER and AB_MOUNT (pids).
ab_start() {  # ab_start BIN PORT [MOUNT_ARGS...]
  local bin=$1 port=$2
  shift 2
  AB_DIR=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/fs-ab.XXXXXX")
  mkdir -p "$AB_DIR/data" "$AB_DIR/mnt" "$AB_DIR/spool"
  echo benchpass1 | "$bin" user add bench --password-stdin --data-dir "$AB_DIR/data" >/dev/null 2>&1
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$AB_DIR/data" >"$AB_DIR/server.log" 2>&1 &
  AB_SERVER=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo benchpass1 >"$AB_DIR/pw"
  HOME=$AB_DIR "$bin" mount --server "http://127.0.0.1:$port" --user bench --password-file "$AB_DIR/pw" \
    --spool-dir "$AB_DIR/spool" "$@" "$AB_DIR/mnt" >"$AB_DIR/mount.log" 2>&1 &
  AB_MOUNT=$!
  for _ in $(seq 100); do grep -q " $AB_DIR/mnt " /proc/self/mountinfo && break; sleep 0.1; done
}

# Stops what `ab_start` started and removes its directory.
ab_stop() {
  kill "$AB_MOUNT"; wait "$AB_MOUNT" 2>/dev/null || true
  kill "$AB_SERVER"; wait "$AB_SERVER" 2>/dev/null || true
  if grep -q " $AB_DIR/mnt " /proc/self/mountinfo; then fusermount3 -u -z "$AB_DIR/mnt"; fi
  rm -rf "$AB_DIR"
}
