#!/usr/bin/env bash
# Checks every unit under systemd/ with systemd-analyze verify. The units name
# /usr/bin/filestore; copies pointing at the built binary stand in for them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/debug/filestore"
[ -x "$bin" ] || cargo build --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$(realpath "$bin")
status=0
for unit in systemd/*.service; do
    name=$(basename "$unit")
    # Template units are verified as one instance.
    case "$name" in *@.service) inst="${name%@.service}@1.service" ;; *) inst="$name" ;; esac
    sed "s|/usr/bin/filestore|$bin|g" "$unit" > "$tmp/$inst"
    if out=$(systemd-analyze verify "$tmp/$inst" 2>&1) && [ -z "$out" ]; then
        echo "ok   $name"
    else
        echo "FAIL $name"; echo "$out"; status=1
    fi
done
exit $status
