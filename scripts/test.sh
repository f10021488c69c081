#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs and starts what the tests
# need (MariaDB, Redis, RabbitMQ, Ceph RGW, fuse3, curl, litmus, davfs2, rclone), then runs formatting, lint and every test tier against the real
# services. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# A shared target dir outside the clone: CI and developers reuse one build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/filestore/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null; then
    echo "cargo is not installed. Install Rust 1.94 or newer with rustup (https://rustup.rs), then rerun." >&2
    exit 1
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v litmus >/dev/null || need_pkgs+=(litmus)
command -v mount.davfs >/dev/null || need_pkgs+=(davfs2)
command -v rclone >/dev/null || need_pkgs+=(rclone)
command -v rabbitmq-server >/dev/null || need_pkgs+=(rabbitmq-server)
command -v fusermount3 >/dev/null || need_pkgs+=(fuse3)
[ -e /usr/include/sys/acl.h ] || need_pkgs+=(libacl1-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# MariaDB on 127.0.0.1:3306, root without a password (the machine's test database server).
MYSQL_URL="${FILESTORE_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
if ! mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    log "starting MariaDB"
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 60); do
        mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.5
    done
fi
mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null || { echo "MariaDB is not reachable on 127.0.0.1:3306" >&2; exit 1; }
# Databases left by killed test runs.
for db in $(mariadb -h127.0.0.1 -uroot -N -e "SHOW DATABASES LIKE 'fstest\\_%'"); do
    mariadb -h127.0.0.1 -uroot -e "DROP DATABASE \`$db\`"
done
export FILESTORE_TEST_MYSQL_URL="$MYSQL_URL"

# Redis on 127.0.0.1:6379 (upload sessions). Tests use their own key prefixes.
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 40); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.25; done
fi
redis-cli -h 127.0.0.1 ping >/dev/null || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
redis-cli -h 127.0.0.1 --scan --pattern 'fstest:*' | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null
export FILESTORE_TEST_REDIS_URL="${FILESTORE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

# RabbitMQ on 127.0.0.1:5672 (guest/guest). Tests declare exchanges and queues of their own.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
    for _ in $(seq 1 120); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 0.5; done
fi
(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || { echo "RabbitMQ is not reachable on 127.0.0.1:5672" >&2; exit 1; }
export FILESTORE_TEST_AMQP_URL="${FILESTORE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

# A real S3 server: a single-node Ceph RGW on loopback (tests start it on first use).
scripts/ceph-rgw.sh install

# FUSE conformance tools (built once into ~/.cargo/bin).
command -v pjdfstest >/dev/null || cargo install --locked pjdfstest@0.2.2
command -v fsx >/dev/null || cargo install --locked fsx@0.3.2

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test: the adapter crates (in-memory ports, real FUSE, litmus)"
# The kill test runs the memmount example as its own process; `--all-targets` builds
# examples only as test harnesses, so build the real one first.
cargo build -p filestore-mount --example memmount
cargo test -p filestore-webdav -p filestore-mount --all-targets --no-fail-fast

log "cargo test: the server (SQLite and MariaDB, Redis, RabbitMQ, Ceph RGW, davfs2, rclone, Chromium)"
tests=()
for t in tests/*.rs; do
    name=$(basename "$t" .rs)
    [ "$name" = mount ] || tests+=(--test "$name")
done
cargo test -p filestore --lib --bins "${tests[@]}" --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"

# The mount scenarios kill and restart servers under live FUSE mounts; run in parallel
# they stall each other, so one at a time.
log "cargo test: FUSE mounts of the real server"
cargo test -p filestore --test mount --no-fail-fast -- --test-threads=1

log "pjdfstest and fsx against the FUSE adapter (in-memory tree)"
mount/scripts/pjdfstest.sh
mount/scripts/fsx.sh 5000

log "systemd units"
scripts/check-units.sh

log "all tests passed"
