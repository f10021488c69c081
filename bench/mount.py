#!/usr/bin/env python3
"""Measurement driver of bench/mount.sh (python3 standard library only; reuses bench/core.py's helpers).

mount.sh mounts the targets and hands this script a JSON description of them (--targets):
filestore (`filestore mount --server` against `filestore serve` on its embedded default),
rclone (`rclone mount --vfs-cache-mode writes` over a local directory) and the local disk.
Each round, every phase runs on every target, the target order rotating from round to round:

  write   a fresh random 1 GiB file (tmpfs) copied into the target in 1 MiB writes; timed
          open..close (filestore's close returns when the server has committed the content;
          rclone's when its cache file is written, the upload to the backend follows:
          also reported, untimed for the figure, as "until the backend has it").
  cold    the file read back in 1 MiB reads after dropping the kernel's pages of it
          (posix_fadvise DONTNEED on the file in the mount; on the local disk that means a
          real disk read). Both mounts keep the file they just wrote in a local disk cache
          (rclone's VFS cache; filestore's --disk-cache, unless BENCH_MOUNT_DISK_CACHE=0),
          whose pages the kernel may still hold.
  warm    read again at once (kernel page cache, filestore's block or disk cache).
  small   N files of 4 KiB (distinct content) created one by one in a new directory
          (open, write, close), then stat'ed, then unlinked; files/s for each step.
  cp      `cp -r` of a source tree into the target, then `cp -r` of that copy out to the
          local disk; also checked with `diff -r` in round 1.

Between phases rclone's background uploads are waited for (rc vfs/stats) so that they do not
run into the next measurement. The mount processes' RSS is sampled every 20 ms for the whole
run. Medians over rounds, per-round ratios, and the raw rounds are written as Markdown to
stdout and to --out.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import (MIB, MB, Others, RssSampler, cpu_seconds, fmt, gen_random, med, spread,  # noqa: E402
                  status_kib, wait_quiet)

BUF = 1 * MIB
SMALL_SIZE = 4096
WARM_CLOSE = 0.75  # "close to the local disk's warm read": at least this ratio


def log(msg):
    print("[mount] %s" % msg, file=sys.stderr, flush=True)


PROBLEMS = []


def problem(what):
    log("PROBLEM: " + what)
    PROBLEMS.append(what)


# ---------------------------------------------------------------- rclone's background uploads

def rclone_pending(t):
    req = urllib.request.Request(t["rc_url"] + "vfs/stats", data=b"{}", method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        d = json.load(r).get("diskCache", {})
    return d.get("uploadsInProgress", 0) + d.get("uploadsQueued", 0)


def settle(t, deadline_s=600):
    """Waits until rclone has uploaded everything to its backend; seconds waited (0 for the others)."""
    if t["kind"] != "rclone":
        return 0.0
    t0 = time.perf_counter()
    while rclone_pending(t):
        if time.perf_counter() - t0 > deadline_s:
            problem("rclone still uploading after %d s" % deadline_s)
            break
        time.sleep(0.05)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- measurements

class Measure:
    """Wall time, CPU of the target's processes, CPU of others, RSS peak of the mount process."""

    def __init__(self, t):
        self.t = t

    def __enter__(self):
        self.pids = self.t.get("pids", [])
        self.rss = RssSampler(self.t.get("mount_pids", []), every=0.02)
        self.rss.start()
        self.others = Others(self.pids)
        self.c0 = cpu_seconds(self.pids)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.secs = time.perf_counter() - self.t0
        self.cpu_s = cpu_seconds(self.pids) - self.c0
        self.others_cpu_s = self.others.cpu_s()
        self.rss.stop()
        self.rss_peak_mib = self.rss.peak_kib / 1024
        return False


def write_file(src, dst):
    buf = bytearray(BUF)
    mv = memoryview(buf)
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            n = os.readv(fi, [buf])
            if not n:
                break
            off = 0
            while off < n:
                off += os.write(fo, mv[off:n])
    finally:
        os.close(fi)
        os.close(fo)  # filestore: returns once the server committed


def read_file(path, drop=False):
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        buf = bytearray(BUF)
        total = 0
        while True:
            n = os.readv(fd, [buf])
            if not n:
                return total
            total += n
    finally:
        os.close(fd)


def sha1_of(path):
    import hashlib
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


def drop_local(path):
    """Drops a local file's pages (and writes it back first) so that the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def small_files(t, d, count, payload):
    os.mkdir(d)
    names = [os.path.join(d, "f%05d" % i) for i in range(count)]
    res = {}
    with Measure(t) as m:
        for i, p in enumerate(names):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"%08d" % i + payload[8:])  # distinct content: no dedup shortcut
            os.close(fd)
    res["create"] = m
    res["create_settle_s"] = settle(t)
    with Measure(t) as m:
        for p in names:
            os.stat(p)
    res["stat"] = m
    listed = len(os.listdir(d))
    if listed != count:
        problem("%s: %d of %d small files listed" % (t["name"], listed, count))
    with Measure(t) as m:
        for p in names:
            os.unlink(p)
    res["unlink"] = m
    os.rmdir(d)
    res["unlink_settle_s"] = settle(t)
    return res


def tree_stat(path):
    files = size = 0
    for root, _dirs, fs in os.walk(path):
        for f in fs:
            files += 1
            size += os.lstat(os.path.join(root, f)).st_size
    return files, size


def cp_r(src, dst):
    subprocess.run(["cp", "-r", src, dst], check=True)


def rm_rf(path):
    subprocess.run(["rm", "-rf", path], check=True)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", required=True, help="JSON file written by mount.sh")
    ap.add_argument("--src-dir", required=True, help="where the random source files go (tmpfs preferred)")
    ap.add_argument("--tree", required=True, help="source tree for cp -r")
    ap.add_argument("--work-dir", required=True, help="local-disk scratch (cp -r out goes here)")
    ap.add_argument("--out", required=True, help="Markdown report file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--small-count", type=int, default=10000)
    ap.add_argument("--cache-mib", type=int, required=True, help="filestore mount's --cache-bytes")
    ap.add_argument("--disk-cache", default="0", help="filestore mount's --disk-cache")
    ap.add_argument("--info", default="", help="JSON object of run facts shown in the report")
    a = ap.parse_args()

    with open(a.targets) as f:
        targets = json.load(f)
    by = {t["name"]: t for t in targets}
    nbytes = a.large_mib * MIB
    tree_files, tree_bytes = tree_stat(a.tree)
    log("cp -r source: %s: %d files, %.1f MB" % (a.tree, tree_files, tree_bytes / MB))
    started = time.time()
    R = {}

    def rec(metric, tname, value):
        R.setdefault(metric, {}).setdefault(tname, []).append(value)

    # whole-run RSS of the mount processes
    run_rss = {t["name"]: RssSampler(t["mount_pids"], every=0.02) for t in targets if t.get("mount_pids")}
    for s in run_rss.values():
        s.start()
    all_pids = [p for t in targets for p in t.get("pids", [])]
    verified = {}
    settle_s = float(os.environ.get("BENCH_INODE_SETTLE", "61"))
    if settle_s > 0:
        # This machine's ext4 has no journal, and then it does not reuse an inode freed less
        # than 60 s ago: every new file's allocation scans past all such inodes of its block
        # group. Files deleted just before the run (a previous run's cleanup, a test suite)
        # would make whichever mount creates files first pay for them.
        log("sync, then %.0f s for inodes freed before the run to become reusable" % settle_s)
        os.sync()
        time.sleep(settle_s)
    payload = os.urandom(SMALL_SIZE)
    for r in range(a.rounds):
        log("round %d/%d" % (r + 1, a.rounds))
        waited, _share = wait_quiet(all_pids, "round %d" % (r + 1), log)
        rec("quiet_wait_s", "all", waited)
        k = r % len(targets)
        order = targets[k:] + targets[:k]
        src = os.path.join(a.src_dir, "large-r%d.bin" % r)
        sha1 = gen_random(src, nbytes)

        # 1. sequential write
        for t in order:
            dst = os.path.join(t["dir"], "big-r%d.bin" % r)
            os.sync()
            with Measure(t) as m:
                write_file(src, dst)
            backend_s = m.secs + settle(t)
            rec("write_MBps", t["name"], nbytes / m.secs / MB)
            rec("write_backend_MBps", t["name"], nbytes / backend_s / MB)
            rec("write_cpu_s", t["name"], m.cpu_s)
            rec("write_rss_mib", t["name"], m.rss_peak_mib)
            rec("write_others_cpu_s", t["name"], m.others_cpu_s)
            log("  WRITE %-9s %7.1f MB/s  %.2fs (backend has it after %.2fs)  cpu %.2fs  rss %.0f MiB  others %.2fs"
                % (t["name"], nbytes / m.secs / MB, m.secs, backend_s, m.cpu_s, m.rss_peak_mib, m.others_cpu_s))

        # 2. cold then warm sequential read
        for t in order:
            dst = os.path.join(t["dir"], "big-r%d.bin" % r)
            if t["kind"] == "local":
                drop_local(dst)
            for phase, drop in (("cold", True), ("warm", False)):
                with Measure(t) as m:
                    got = read_file(dst, drop=drop)
                if got != nbytes:
                    problem("%s %s read round %d: %d of %d bytes" % (t["name"], phase, r + 1, got, nbytes))
                rec("read_%s_MBps" % phase, t["name"], nbytes / m.secs / MB)
                rec("read_%s_cpu_s" % phase, t["name"], m.cpu_s)
                rec("read_%s_rss_mib" % phase, t["name"], m.rss_peak_mib)
                rec("read_%s_others_cpu_s" % phase, t["name"], m.others_cpu_s)
                log("  READ  %-9s %s %7.1f MB/s  %.2fs  cpu %.2fs  rss %.0f MiB  others %.2fs"
                    % (t["name"], phase, nbytes / m.secs / MB, m.secs, m.cpu_s, m.rss_peak_mib, m.others_cpu_s))
            if r == 0:
                verified[t["name"]] = sha1_of(dst) == sha1
                if not verified[t["name"]]:
                    problem("%s: the 1 GiB file read back with another SHA-1" % t["name"])
        for t in order:
            os.unlink(os.path.join(t["dir"], "big-r%d.bin" % r))
            settle(t)
        os.unlink(src)

        # 3. small files
        for t in order:
            res = small_files(t, os.path.join(t["dir"], "small-r%d" % r), a.small_count, payload)
            for step in ("create", "stat", "unlink"):
                m = res[step]
                rec("small_%s_fps" % step, t["name"], a.small_count / m.secs)
                rec("small_%s_cpu_ms" % step, t["name"], m.cpu_s / a.small_count * 1e3)
                rec("small_%s_others_cpu_s" % step, t["name"], m.others_cpu_s)
                rec("small_%s_rss_mib" % step, t["name"], m.rss_peak_mib)
            rec("small_create_backend_fps", t["name"],
                a.small_count / (res["create"].secs + res["create_settle_s"]))
            log("  SMALL %-9s create %6.0f/s (backend %6.0f/s)  stat %7.0f/s  unlink %6.0f/s  others %.2f/%.2f/%.2fs"
                % (t["name"], a.small_count / res["create"].secs,
                   a.small_count / (res["create"].secs + res["create_settle_s"]),
                   a.small_count / res["stat"].secs, a.small_count / res["unlink"].secs,
                   res["create"].others_cpu_s, res["stat"].others_cpu_s, res["unlink"].others_cpu_s))

        # 4. cp -r in and out
        for t in order:
            into = os.path.join(t["dir"], "cp-r%d" % r)
            out = os.path.join(a.work_dir, "cpout-%s-r%d" % (t["name"], r))
            os.sync()
            with Measure(t) as m_in:
                cp_r(a.tree, into)
            in_backend = m_in.secs + settle(t)
            with Measure(t) as m_out:
                cp_r(into, out)
            if r == 0:
                ok = subprocess.run(["diff", "-r", "-q", a.tree, out], capture_output=True).returncode == 0
                verified["cp " + t["name"]] = ok
                if not ok:
                    problem("%s: cp -r in and out changed the tree" % t["name"])
            rm_rf(into)
            rm_rf(out)
            settle(t)
            rec("cp_in_s", t["name"], m_in.secs)
            rec("cp_in_fps", t["name"], tree_files / m_in.secs)
            rec("cp_in_backend_fps", t["name"], tree_files / in_backend)
            rec("cp_out_s", t["name"], m_out.secs)
            rec("cp_out_fps", t["name"], tree_files / m_out.secs)
            rec("cp_in_others_cpu_s", t["name"], m_in.others_cpu_s)
            rec("cp_out_others_cpu_s", t["name"], m_out.others_cpu_s)
            rec("cp_rss_mib", t["name"], max(m_in.rss_peak_mib, m_out.rss_peak_mib))
            log("  CP    %-9s in %.2fs (%.0f files/s; backend after %.2fs)  out %.2fs (%.0f files/s)"
                % (t["name"], m_in.secs, tree_files / m_in.secs, in_backend, m_out.secs, tree_files / m_out.secs))

    for s in run_rss.values():
        s.stop()
    rss = {n: s.peak_kib / 1024 for n, s in run_rss.items()}
    hwm = {t["name"]: sum(status_kib(p, "VmHWM") for p in t["mount_pids"]) / 1024
           for t in targets if t.get("mount_pids")}
    elapsed = time.time() - started
    if rss.get("filestore", 0) > a.cache_mib + RSS_OVER_CACHE_MIB:
        problem("filestore mount RSS peaked at %.0f MiB with a %d MiB cache (more than cache + %d MiB)"
                % (rss["filestore"], a.cache_mib, RSS_OVER_CACHE_MIB))
    report = render(a, targets, by, R, rss, hwm, verified, tree_files, tree_bytes, elapsed)
    print(report)
    with open(a.out, "w") as f:
        f.write(report)
    log("report written to %s" % a.out)
    return 1 if PROBLEMS else 0


RSS_OVER_CACHE_MIB = 128  # what the mount may use besides its block cache


def render(a, targets, by, R, rss, hwm, verified, tree_files, tree_bytes, elapsed):
    info = json.loads(a.info) if a.info else {}
    fs, rc, lo = "filestore", "rclone", "local"

    def vals(metric, tname):
        return R.get(metric, {}).get(tname, [])

    def m(metric, tname):
        return med(vals(metric, tname))

    def ratio(metric, tname, base):
        rs = [x / y for x, y in zip(vals(metric, tname), vals(metric, base)) if x and y]
        return med(rs), rs

    def cell(metric, tname, nd=0):
        return fmt(m(metric, tname), nd) + spread(vals(metric, tname), nd)

    def rcell(metric, tname, base, nd=2):
        v, rs = ratio(metric, tname, base)
        return fmt(v, nd) + spread(rs, nd)

    def met(metric, base, want):
        v, _ = ratio(metric, fs, base)
        if v is None:
            return "–"
        return "yes" if v >= want else "**no**"

    big = "1 GiB" if a.large_mib == 1024 else "%d MiB" % a.large_mib
    L = []
    L.append("# filestore FUSE mount benchmark — %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    L.append("")
    L.append("%d rounds, target order rotating each round; figures are medians over rounds, (min–max) in "
             "brackets; ratios are medians of per-round ratios. MB = 10^6 bytes. filestore: `filestore mount "
             "--server` (block cache %d MiB, disk cache %s) against `filestore serve` on its embedded default; "
             "rclone: `rclone mount --vfs-cache-mode writes` over a local directory; local: the disk under the "
             "work dir (%s)." % (a.rounds, a.cache_mib, a.disk_cache, info.get("work_fs", "?")))
    L.append("")
    L.append("| measurement | filestore | rclone | local disk | filestore / rclone | filestore / local | target | met? |")
    L.append("|---|---|---|---|---|---|---|---|")

    def row(label, metric, target, base, want, nd=0):
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, cell(metric, fs, nd), cell(metric, rc, nd), cell(metric, lo, nd),
            rcell(metric, fs, rc), rcell(metric, fs, lo), target, met(metric, base, want) if target != "–" else "–"))

    row("%s sequential write, open..close, MB/s" % big, "write_MBps", "≥ 1× rclone", rc, 1.0)
    row("… until the backend has it, MB/s", "write_backend_MBps", "–", rc, 1.0)
    row("%s sequential read, cold, MB/s" % big, "read_cold_MBps", "≥ 1.5× rclone", rc, 1.5)
    row("%s sequential read, warm (again at once), MB/s" % big, "read_warm_MBps",
        "≥ %.2f× local (\"close to\")" % WARM_CLOSE, lo, WARM_CLOSE)
    n = a.small_count
    row("create %d × 4 KiB files, files/s" % n, "small_create_fps", "≥ 1× rclone", rc, 1.0)
    row("… until the backend has them, files/s", "small_create_backend_fps", "–", rc, 1.0)
    row("stat %d files, files/s" % n, "small_stat_fps", "≥ 1× rclone", rc, 1.0)
    row("unlink %d files, files/s" % n, "small_unlink_fps", "≥ 1× rclone", rc, 1.0)
    row("`cp -r` tree in (%d files, %.1f MB), files/s" % (tree_files, tree_bytes / MB), "cp_in_fps",
        "≥ 1× rclone", rc, 1.0)
    row("… until the backend has it, files/s", "cp_in_backend_fps", "–", rc, 1.0)
    row("`cp -r` tree out to the local disk, files/s", "cp_out_fps", "≥ 1× rclone", rc, 1.0)
    L.append("| mount process peak RSS over the whole run, MiB (sampled every 20 ms) | %s | %s | – | | | "
             "≤ cache %d + %d MiB | %s |" % (
                 fmt(rss.get(fs)), fmt(rss.get(rc)), a.cache_mib, RSS_OVER_CACHE_MIB,
                 "yes" if rss.get(fs, 0) <= a.cache_mib + RSS_OVER_CACHE_MIB else "**no**"))
    L.append("| mount process VmHWM at the end, MiB | %s | %s | – | | | | |" % (fmt(hwm.get(fs)), fmt(hwm.get(rc))))
    L.append("")
    L.append("## Checks")
    L.append("")
    L.append("- 1 GiB file read back with the source SHA-1 (round 1): %s." % ", ".join(
        "%s %s" % (k, "yes" if v else "NO") for k, v in verified.items() if not k.startswith("cp ")))
    L.append("- `cp -r` in and out gave an identical tree (`diff -r`, round 1): %s." % ", ".join(
        "%s %s" % (k[3:], "yes" if v else "NO") for k, v in verified.items() if k.startswith("cp ")))
    L.append("- Problems: %s" % ("none" if not PROBLEMS else ""))
    for p in PROBLEMS:
        L.append("  - %s" % p)
    L.append("")
    L.append("## Per phase: CPU and memory (medians)")
    L.append("")
    L.append("| phase | filestore CPU s (mount + server) | rclone CPU s | filestore mount RSS peak MiB | rclone RSS peak MiB |")
    L.append("|---|---|---|---|---|")
    for label, cpu, mem in (("write", "write_cpu_s", "write_rss_mib"), ("read cold", "read_cold_cpu_s", "read_cold_rss_mib"),
                            ("read warm", "read_warm_cpu_s", "read_warm_rss_mib"),
                            ("create (ms per file)", "small_create_cpu_ms", "small_create_rss_mib"),
                            ("stat (ms per file)", "small_stat_cpu_ms", "small_stat_rss_mib"),
                            ("unlink (ms per file)", "small_unlink_cpu_ms", "small_unlink_rss_mib"),
                            ("cp -r in + out", None, "cp_rss_mib")):
        L.append("| %s | %s | %s | %s | %s |" % (
            label, fmt(m(cpu, fs), 3) if cpu else "–", fmt(m(cpu, rc), 3) if cpu else "–",
            fmt(m(mem, fs)), fmt(m(mem, rc))))
    L.append("")
    L.append("## Per round")
    L.append("")
    metrics = ["quiet_wait_s", "write_MBps", "write_backend_MBps", "write_others_cpu_s", "read_cold_MBps",
               "read_cold_others_cpu_s", "read_warm_MBps", "small_create_fps", "small_create_others_cpu_s",
               "small_stat_fps", "small_unlink_fps", "cp_in_s", "cp_out_s", "cp_in_others_cpu_s"]
    L.append("| metric | target | " + " | ".join("r%d" % (i + 1) for i in range(a.rounds)) + " |")
    L.append("|---|---|" + "---|" * a.rounds)
    for metric in metrics:
        for tname in [t["name"] for t in targets] + ["all"]:
            xs = vals(metric, tname)
            if xs:
                L.append("| %s | %s | %s |" % (metric, tname, " | ".join(
                    fmt(x, 2 if x is not None and x < 100 else 0) for x in xs)))
    L.append("")
    L.append("## How it was measured")
    L.append("")
    L.append("- filestore: `filestore serve` (SQLite and content under its data dir on %s) and `filestore mount "
             "--server http://127.0.0.1:PORT --user bench --password-file F --cache-bytes %dMiB --disk-cache %s "
             "--spool-dir DIR MNT` (spool and disk cache on the same disk), as deployed; every close of a "
             "written file returns once the server has committed it. With a disk cache, a committed file of "
             "1 MiB or more stays there, and the kernel reads it from there (FUSE passthrough, as root), as "
             "rclone reads its written files from its VFS cache."
             % (info.get("work_fs", "?"), a.cache_mib, a.disk_cache))
    L.append("- rclone %s: `rclone mount --vfs-cache-mode writes --cache-dir DIR --rc BACKING MNT` (defaults "
             "otherwise: uploads 5 s after close, in the background); backing dir and cache on the same disk. "
             "Its \"until the backend has it\" figures add the wait for `vfs/stats` to show no queued or "
             "running uploads." % info.get("rclone_version", "?"))
    L.append("- Files are written and read in 1 MiB system calls (python `os.readv`/`os.write`), single "
             "threaded. Cold read: `posix_fadvise(DONTNEED)` on the file first (drops the kernel's pages of "
             "the FUSE file; for the local disk, after an fsync, so the read goes to the disk). The servers' "
             "backing files may still be in the page cache (both mounts alike). Warm: the same read again.")
    L.append("- Small files: %d files of 4 KiB, distinct content, in one new directory; create = open(O_CREAT|"
             "O_EXCL), write, close, one after the other; then stat each, then unlink each." % a.small_count)
    L.append("- `cp -r`: GNU cp of %s (%d files, %.1f MB) into the mount, then of that copy to the local disk."
             % (info.get("tree_note", a.tree), tree_files, tree_bytes / MB))
    L.append("- `*_others_cpu_s`: CPU seconds used during the measurement by everything except the target's "
             "processes, this script and its children (the noise indicator). Before each round the script "
             "waits (up to `BENCH_QUIET_WAIT` s) for a quiet second.")
    L.append("")
    L.append("## Run")
    L.append("")
    for key in ("command", "commit", "binary", "cpu", "cpus", "mem", "kernel", "work_fs", "rclone_version", "load"):
        if key in info:
            L.append("- %s: `%s`" % (key, info[key]))
    L.append("- python: `%s`, total measuring time %.0f s" % (platform.python_version(), elapsed))
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
