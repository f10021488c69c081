#!/bin/bash
# Runs Debian's litmus (all suites, -k) against the in-memory example server and fails
# unless every test passes. The same check runs in `cargo test` (tests/litmus.rs);
# this script is for looking at litmus's own output.
#   webdav/tests/litmus.sh [PORT]
set -euo pipefail
PORT=${1:-18090}
command -v litmus >/dev/null || { echo "litmus is not installed: apt-get install -y litmus" >&2; exit 2; }
cd "$(dirname "$0")/../.."
cargo build -q -p filestore-webdav --features memory --example memdav
BIN=${CARGO_TARGET_DIR:-target}/debug/examples/memdav
"$BIN" "127.0.0.1:$PORT" litmus:litmus &
PID=$!
trap 'kill $PID' EXIT
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.1   # waiting for the server to listen, not synchronising a test
done
WORK=$(mktemp -d)
(cd "$WORK" && litmus -k "http://127.0.0.1:$PORT/dav/" litmus litmus) | tee "$WORK/out.txt"
grep -q ' 0 failed' "$WORK/out.txt"
! grep -E 'summary.* [1-9][0-9]* failed' "$WORK/out.txt"
