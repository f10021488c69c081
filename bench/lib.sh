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
