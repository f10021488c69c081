#!/usr/bin/env bash
# Browser test of the web page at `/`: headless Debian chromium, driven by playwright-core
# (no browser download), against the real `filestore serve` on a free loopback port with a
# temporary data dir and a 64 KiB upload chunk size. Installs chromium (apt) and the npm
# dependency when they are missing. Exits non-zero on any failure, including a chromium
# that cannot start.
#
#   tests/web/run.sh                      # binary: $FILESTORE_BIN, else $CARGO_TARGET_DIR/debug/filestore
#   SCREENSHOT=/tmp/page.png tests/web/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export SCREENSHOT="${SCREENSHOT:-$here/screenshot.png}"

say() { printf '== web: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
[ -x "$CHROMIUM" ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x "$CHROMIUM" ] || { echo "web: no chromium at $CHROMIUM" >&2; exit 1; }

# playwright-core at the locked version (it downloads no browser).
want="$(node -p 'require(process.argv[1]).packages["node_modules/playwright-core"].version' "$here/package-lock.json")"
have="$(node -p 'try { require(process.argv[1]).version } catch { "" }' "$here/node_modules/playwright-core/package.json")"
if [ "$want" != "$have" ]; then
    say "npm ci (playwright-core $want)"
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

bin="${FILESTORE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/filestore}"
[ -x "$bin" ] || { echo "web: no filestore binary at $bin (cargo build -p filestore, or set FILESTORE_BIN)" >&2; exit 1; }

say "sha1.js unit tests"
node --test --test-reporter=spec "$here/sha1.test.mjs"

data="$(mktemp -d "${TMPDIR:-/tmp}/filestore-web.XXXXXX")"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

# The server prints "filestore: serving http://ADDR/" once it listens; port 0 picks a free one.
# Every other FILESTORE_* variable (FILESTORE_BIN, the test suite's FILESTORE_TEST_*) would be
# taken for a configuration key: the server gets only its own.
mkfifo "$data/stdout"
unset_vars=()
for v in $(compgen -e); do
    case "$v" in FILESTORE_*) unset_vars+=(-u "$v") ;; esac
done
env "${unset_vars[@]}" FILESTORE_DATA_DIR="$data/store" FILESTORE_SESSIONS__CHUNK_SIZE=65536 \
    FILESTORE_LOG="${FILESTORE_LOG:-warn}" \
    "$bin" serve --listen 127.0.0.1:0 >"$data/stdout" 2>"$data/server.log" &
server=$!
exec 3<"$data/stdout"
url=""
while IFS= read -r -t 60 line <&3; do
    case "$line" in
        *"serving http://"*) url="${line#*serving }"; url="${url%/}"; break ;;
    esac
done
if [ -z "$url" ]; then
    echo "web: the server did not start; its log:" >&2
    cat "$data/server.log" >&2
    exit 1
fi
cat <&3 >/dev/null &   # keep draining its standard output
say "server $url (pid $server)"

status=0
FILESTORE_URL="$url" node "$here/browser.mjs" || status=$?
if [ "$status" != 0 ]; then
    echo "web: the browser test failed; server log:" >&2
    tail -n 50 "$data/server.log" >&2
    exit "$status"
fi
say "screenshot: $SCREENSHOT"
