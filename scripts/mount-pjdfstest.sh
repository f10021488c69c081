#!/bin/sh
# pjdfstest (Rust port) against the REAL mount: `filestore serve` on a fresh data dir, a
# user, and `filestore mount --server URL` (remote port, over HTTP) or, with --local,
# `filestore mount --user NAME` on the same data dir (local port, over the drive). Prints a
# per-group table and "N passed, N failed"; failures are counted against the in-memory
# mount's list of expected failures (mount/scripts/pjdfstest.toml), so "failed" here is
# what the core does differently from the in-memory tree.
#   scripts/mount-pjdfstest.sh [--local] [pjdfstest args, e.g. a group name]
# Needs root, /dev/fuse, fusermount3 and `cargo install --locked pjdfstest@0.2.2`.
# Env: PJDFSTEST (binary), PJDFSTEST_CONFIG (toml), PJDFSTEST_LOG (raw log path).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
mode=remote
if [ "${1:-}" = "--local" ]; then mode=local; shift; fi
BIN="${PJDFSTEST:-pjdfstest}"
CONF="${PJDFSTEST_CONFIG:-$root/mount/scripts/pjdfstest.toml}"
command -v "$BIN" >/dev/null || { echo "pjdfstest missing: cargo install --locked pjdfstest@0.2.2" >&2; exit 2; }
[ -e /dev/fuse ] || { echo "/dev/fuse missing" >&2; exit 2; }
command -v fusermount3 >/dev/null || { echo "fusermount3 missing: apt-get install fuse3" >&2; exit 2; }
(cd "$root" && cargo build --quiet -p filestore) || exit 2
fs="${CARGO_TARGET_DIR:-$root/target}/debug/filestore"
work=$(mktemp -d /tmp/fs-pjd-real.XXXXXX)
chmod 0755 "$work"   # the test users must reach the mountpoint
LOG="${PJDFSTEST_LOG:-$work/raw.log}"
mnt="$work/mnt"
mkdir -p "$mnt"
export FILESTORE_DATA_DIR="$work/data" FILESTORE_LOG="${FILESTORE_LOG:-warn}"
spid= mpid=
cleanup() {
	[ -n "$mpid" ] && kill -TERM "$mpid" 2>/dev/null
	i=0; while [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	grep -q " $mnt " /proc/mounts && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
	[ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$work/data" "$work/spool" "$mnt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

"$fs" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
spid=$!
i=0
until url=$(sed -n 's|^filestore: serving \(http://[^/]*\)/$|\1|p' "$work/serve.out") && [ -n "$url" ]; do
	kill -0 "$spid" 2>/dev/null || { echo "server exited:" >&2; cat "$work/serve.log" >&2; exit 1; }
	i=$((i + 1)); [ $i -gt 300 ] && { echo "server start timeout" >&2; exit 1; }
	sleep 0.1
done
echo "pjdfs-password" >"$work/pw"
echo "pjdfs-password" | "$fs" user add pjd --password-stdin >/dev/null || exit 1
if [ "$mode" = remote ]; then
	"$fs" mount --server "$url" --user pjd --password-file "$work/pw" --allow-other --spool-dir "$work/spool" "$mnt" >"$work/mount.log" 2>&1 &
else
	"$fs" mount --user pjd --allow-other --spool-dir "$work/spool" "$mnt" >"$work/mount.log" 2>&1 &
fi
mpid=$!
i=0
until grep -q "^filestore: mounted at" "$work/mount.log"; do
	kill -0 "$mpid" 2>/dev/null || { echo "mount exited:" >&2; cat "$work/mount.log" >&2; exit 1; }
	i=$((i + 1)); [ $i -gt 300 ] && { echo "mount timeout" >&2; exit 1; }
	sleep 0.1
done
grep -q " $mnt fuse" /proc/mounts || { echo "$mnt is not a FUSE mount" >&2; exit 1; }
mkdir "$mnt/t" && chmod 0755 "$mnt/t"
echo "# $mode mount of $url at $mnt, config $CONF"
(cd "$mnt/t" && "$BIN" -c "$CONF" -p "$mnt/t" "$@") >"$LOG" 2>&1
rc=$?
awk '
	/^[a-z_0-9]+::/ {
		split($1, a, "::"); g = a[1]
		if (!(g in seen)) { seen[g] = 1; order[++n] = g }
		r = $0; sub(/^[^ ]+ +/, "", r)
		if (r == "ok") pass[g]++
		else if (r == "skipped") skip[g]++
		else if (r ~ /expected/ || r ~ /^XFAIL/) xf[g]++
		else { fail[g]++; bad = bad "  " $1 " " r "\n" }
	}
	END {
		printf "%-16s %6s %6s %6s %6s\n", "group", "pass", "fail", "skip", "xfail"
		for (i = 1; i <= n; i++) { g = order[i]
			printf "%-16s %6d %6d %6d %6d\n", g, pass[g], fail[g], skip[g], xf[g]
			P += pass[g]; F += fail[g]; S += skip[g]; X += xf[g] }
		printf "%-16s %6d %6d %6d %6d\n", "TOTAL", P, F, S, X
		if (bad != "") printf "failures not expected of the in-memory mount:\n%s", bad
		printf "%d passed, %d failed, %d skipped\n", P, F, S
	}' "$LOG"
echo "# raw log: $LOG (runner exit $rc); server log $work/serve.log, mount log $work/mount.log"
exit $rc
