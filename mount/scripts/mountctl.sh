#!/bin/sh
# Start the in-memory mount (examples/memmount) in the background and wait until it is
# live, or stop it and clear a stale mount. Used by pjdfstest.sh and fsx.sh.
#   mountctl.sh start MNT SPOOL LOG [memmount args...]   prints the pid
#   mountctl.sh stop MNT [PID]
set -eu
bin="${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/debug/examples/memmount"
fstype() { awk -v m="$1" '$5 == m { for (i = 7; i <= NF; i++) if ($i == "-") { t = $(i + 1); break } } END { print t }' /proc/self/mountinfo; }
is_fuse() { case "$(fstype "$1")" in fuse*) return 0 ;; esac; return 1; }
case "${1:-}" in
start)
	mnt=$(realpath -m "$2"); spool=$3; log=$4; shift 4
	is_fuse "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
	mkdir -p "$mnt"
	setsid "$bin" "$mnt" --spool "$spool" "$@" >"$log" 2>&1 </dev/null &
	pid=$!
	i=0
	until is_fuse "$mnt" && stat "$mnt" >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || { echo "memmount exited; log:" >&2; cat "$log" >&2; exit 1; }
		i=$((i + 1)); [ "$i" -gt 300 ] && { echo "mount timeout" >&2; kill -KILL "$pid"; exit 1; }
		sleep 0.1
	done
	echo "$pid"
	;;
stop)
	mnt=$(realpath -m "$2"); pid=${3:-}
	if is_fuse "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; fi
	if [ -n "$pid" ]; then
		i=0
		while kill -0 "$pid" 2>/dev/null; do
			i=$((i + 1)); [ "$i" -gt 100 ] && { kill -KILL "$pid" 2>/dev/null; break; }
			sleep 0.1
		done
	fi
	! is_fuse "$mnt"
	;;
*) echo "usage: $0 start MNT SPOOL LOG [args] | stop MNT [PID]" >&2; exit 2 ;;
esac
