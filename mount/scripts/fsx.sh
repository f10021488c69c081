#!/bin/sh
# fsx (`cargo install --locked fsx@0.3.2`) against the in-memory mount, with fixed seeds
# so a failure replays exactly. Two configurations, as in the testbed's reference:
#   basic: reads, writes, mmap reads/writes, truncate, close/reopen
#   full : + fsync, fdatasync, posix_fallocate, copy_file_range, sendfile, fadvise,
#          msync(MS_INVALIDATE)
# Usage: fsx.sh [NUMOPS (default 20000)] [SEED (default 42)]
# Prints "fsx CONFIG: ok" per configuration and "N passed, N failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
N="${1:-20000}"; SEED="${2:-42}"
FSX="${FSX:-fsx}"
command -v "$FSX" >/dev/null || { echo "fsx missing: cargo install --locked fsx@0.3.2" >&2; exit 2; }
(cd "$here/.." && cargo build --quiet -p filestore-mount --example memmount) || exit 2
work=$(mktemp -d /tmp/fs-fsx.XXXXXX)
pid=$("$here/mountctl.sh" start "$work/mnt" "$work/spool" "$work/mount.log") || exit 1
cleanup() { "$here/mountctl.sh" stop "$work/mnt" "$pid"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
cat >"$work/basic.toml" <<'T'
flen = 262144
T
cat >"$work/full.toml" <<'T'
flen = 1048576
[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 2
fsync = 1
fdatasync = 1
posix_fallocate = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
T
pass=0; fail=0
for c in basic full; do
	mkdir -p "$work/art-$c"
	if "$FSX" -q -N "$N" -S "$SEED" -f "$work/$c.toml" -P "$work/art-$c" "$work/mnt/fsx-$c.dat" >"$work/art-$c/log" 2>&1; then
		echo "fsx $c: ok ($N ops, seed $SEED)"; pass=$((pass + 1))
	else
		echo "fsx $c: FAILED ($N ops, seed $SEED)"; tail -n 30 "$work/art-$c/log"; fail=$((fail + 1))
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
