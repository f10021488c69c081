#!/usr/bin/env python3
"""Measurement driver of bench/core.sh (python3 standard library only; drives curl and wrk).

core.sh starts the servers and hands this script a JSON description of them (--targets).
Each round, with the server order rotating from round to round:

  large   a fresh 1 GiB random file is generated (so filestore's dedup gets no free hit),
          then PUT once to filestore (/api/v1/files/...) and once to nginx (plain PUT), each
          to a new name, with curl -T (streamed). filestore's RSS is sampled every 10 ms.
  dedup   the same file PUT again to filestore under a new name: a dedup hit. The object
          store (files and bytes under <data>/staging/objects) is counted before and after.
  get     both copies downloaded with curl -o /dev/null.
  small   N x 4 KiB PUTs (fresh random content each), 16 keep-alive clients (python,
          processes x threads), to filestore/SQLite, filestore/MariaDB and nginx.
  wrk     (optional) the same 4 KiB PUT load from wrk for a fixed time: a C client that
          costs the 2-core machine far less CPU than the python one.

Medians over rounds, per-round ratios to nginx, and the raw rounds are written as Markdown
to stdout and to --out.
"""
import argparse
import datetime
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

MB = 1e6
MIB = 1 << 20
RSS_LIMIT_MIB = 100  # a streamed upload should not need more than this


def log(msg):
    print("[core] %s" % msg, file=sys.stderr, flush=True)


PROBLEMS = []  # (what, evidence): anything that looks broken, listed in the report


def problem(what):
    log("PROBLEM: " + what)
    PROBLEMS.append(what)


# ---------------------------------------------------------------- processes (/proc)

def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def server_pids(t):
    """filestore: its one process; nginx: master plus workers."""
    pid = t["pid"]
    return [pid] + (children(pid) if t["kind"] == "nginx" else [])


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def busy_cpu_s():
    """CPU seconds the whole machine has spent busy so far (/proc/stat, all CPUs, idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def own_cpu_s():
    """CPU seconds of this process and its waited-for children (curl, wrk, client processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Others:
    """CPU time spent during a measurement by everything but the servers under test, this script and its
    children (other users' jobs, kernel writeback threads): how noisy the shared machine was."""

    def __init__(self, pids):
        self.pids = pids
        self.b0, self.o0, self.s0 = busy_cpu_s(), own_cpu_s(), cpu_seconds(pids)

    def cpu_s(self):
        return max(0.0, busy_cpu_s() - self.b0 - (own_cpu_s() - self.o0) - (cpu_seconds(self.pids) - self.s0))


QUIET_WAIT_S = float(os.environ.get("BENCH_QUIET_WAIT", "30"))  # 0 disables the gate
QUIET_CPU = 0.15  # CPU-seconds per second that other processes may use for the machine to count as quiet


def wait_quiet(pids, what, log=None):
    """Before a round: waits (up to BENCH_QUIET_WAIT s) for a 1 s window in which processes other than
    the servers under test and this script used < QUIET_CPU of a CPU. Returns the seconds waited and the
    other processes' CPU share in the last window. It cannot keep the machine quiet during the round;
    the per-measurement others_cpu_s figures say whether it stayed so."""
    t0 = time.perf_counter()
    share = 0.0
    while True:
        o = Others(pids)
        time.sleep(1.0)
        share = o.cpu_s()
        waited = time.perf_counter() - t0
        if share < QUIET_CPU or waited >= QUIET_WAIT_S:
            break
    if log and waited > 1.5:
        log("%s: waited %.0f s for a quiet machine (other processes at %.2f CPU%s)"
            % (what, waited, share, "" if share < QUIET_CPU else ", gave up"))
    return waited, share


class RssSampler(threading.Thread):
    """Polls VmRSS (sum over pids) every `every` seconds; .peak_kib is the highest seen."""

    def __init__(self, pids, every=0.01):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.peak_kib = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            v = sum(status_kib(p, "VmRSS") for p in self.pids)
            self.peak_kib = max(self.peak_kib, v)
            self.samples += 1
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join()
        v = sum(status_kib(p, "VmRSS") for p in self.pids)
        self.peak_kib = max(self.peak_kib, v)


# ---------------------------------------------------------------- data

def gen_random(path, nbytes):
    """Incompressible random bytes (AES-128-CTR keystream under a random key: ~1 GB/s,
    where os.urandom is several times slower). Returns the SHA-1 of what was written."""
    h = hashlib.sha1()
    left = nbytes
    with open(path, "wb") as out:
        if shutil.which("openssl"):
            key = os.urandom(16).hex()
            p = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-K", key, "-iv", "0" * 32, "-nosalt"],
                                 stdin=open("/dev/zero", "rb"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            while left:
                b = p.stdout.read(min(left, 4 * MIB))
                if not b:
                    break
                out.write(b)
                h.update(b)
                left -= len(b)
            p.kill()
            p.wait()
        while left:  # no openssl (or it stopped early)
            b = os.urandom(min(left, 4 * MIB))
            out.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def disk_reference(src, dst):
    """Plain write of src to dst on the data filesystem: (MB/s to page cache, MB/s incl. fdatasync)."""
    size = os.path.getsize(src)
    buf = bytearray(4 * MIB)
    os.sync()
    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        while True:
            n = fi.readinto(buf)
            if not n:
                break
            fo.write(memoryview(buf)[:n])
        t1 = time.perf_counter()
        os.fdatasync(fo.fileno())
        t2 = time.perf_counter()
    os.unlink(dst)
    return size / (t1 - t0) / MB, size / (t2 - t0) / MB


def store_stat(data_dir):
    """Files and bytes under staging/objects (distinct inodes) and staging/incoming."""
    res = {}
    for sub in ("objects", "incoming"):
        files, nbytes, inodes = 0, 0, set()
        for root, _dirs, names in os.walk(os.path.join(data_dir, "staging", sub)):
            for n in names:
                try:
                    st = os.lstat(os.path.join(root, n))
                except OSError:
                    continue
                files += 1
                if st.st_ino not in inodes:
                    inodes.add(st.st_ino)
                    nbytes += st.st_size
        res[sub + "_files"], res[sub + "_bytes"] = files, nbytes
    return res


def disk_written(path):
    """Bytes written so far to the block device holding `path` (/proc/diskstats), or None."""
    st = os.stat(path)
    maj, mnr = os.major(st.st_dev), os.minor(st.st_dev)
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                v = line.split()
                if int(v[0]) == maj and int(v[1]) == mnr:
                    return int(v[9]) * 512
    except (OSError, IndexError, ValueError):
        pass
    return None


def mib_delta(b0, b1):
    return (b1 - b0) / MIB if b0 is not None and b1 is not None else None


def dir_stat(path):
    files, nbytes = 0, 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            files += 1
            nbytes += os.lstat(os.path.join(root, n)).st_size
    return files, nbytes


# ---------------------------------------------------------------- HTTP helpers

def url(t, rel):
    return "http://%s:%d%s%s" % (t["host"], t["port"], t["files_prefix"], rel)


def auth_args(t):
    return ["-H", "Authorization: " + t["auth"]] if t.get("auth") else []


def make_dir(t, rel):
    """filestore: POST /api/v1/dirs/<rel>?parents=true; nginx: MKCOL (parents must exist)."""
    c = http.client.HTTPConnection(t["host"], t["port"], timeout=60)
    h = {"Authorization": t["auth"]} if t.get("auth") else {}
    if t["kind"] == "filestore":
        c.request("POST", "/api/v1/dirs/%s?parents=true" % rel, headers=h)
    else:
        c.request("MKCOL", "/%s/" % rel, headers=h)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status not in (200, 201):
        raise RuntimeError("mkdir %s on %s -> %d %r" % (rel, t["name"], r.status, body[:200]))


def curl_transfer(t, rel, put_src=None, resp_file=os.devnull):
    """One timed curl transfer. PUT streams put_src with -T (curl sends Expect: 100-continue);
    GET writes to /dev/null. Samples the server's RSS and CPU meanwhile."""
    pids = server_pids(t)
    cmd = ["curl", "-sS", "-o", resp_file, "-w", "%{http_code} %{time_total} %{size_upload} %{size_download}"]
    cmd += auth_args(t)
    if put_src:
        cmd += ["-T", put_src, "-H", "Content-Type: application/octet-stream"]
    cmd.append(url(t, rel))
    rss0 = sum(status_kib(p, "VmRSS") for p in pids)
    cpu0 = cpu_seconds(pids)
    others = Others(pids)
    s = RssSampler(pids)
    s.start()
    out = subprocess.run(cmd, capture_output=True, text=True)
    s.stop()
    cpu = cpu_seconds(pids) - cpu0
    others_cpu = others.cpu_s()
    if out.returncode != 0:
        raise RuntimeError("curl %s failed (%d): %s" % (" ".join(cmd), out.returncode, out.stderr.strip()))
    code, secs, up, down = out.stdout.split()
    secs = float(secs)
    nbytes = int(float(up if put_src else down))
    return dict(code=int(code), secs=secs, bytes=nbytes, MBps=nbytes / secs / MB if secs else 0,
                rss_before_mib=rss0 / 1024, rss_peak_mib=s.peak_kib / 1024, rss_samples=s.samples,
                cpu_s=cpu, others_cpu_s=others_cpu)


def verify_get(t, rel, sha1):
    """Untimed full GET, hashed on the fly: the stored bytes must be the uploaded ones."""
    cmd = ["curl", "-sS", "--fail", "-o", "-"] + auth_args(t) + [url(t, rel)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    h = hashlib.sha1()
    while True:
        b = p.stdout.read(4 * MIB)
        if not b:
            break
        h.update(b)
    rc = p.wait()
    return rc == 0 and h.hexdigest() == sha1


# ---------------------------------------------------------------- many small PUTs (python client)

class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects once if the server dropped it."""

    def __init__(self, host, port):
        self.host, self.port, self.c = host, port, None

    def request(self, method, path, body, headers):
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection(self.host, self.port, timeout=120)
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                data = r.read()
                if r.will_close:
                    self.c.close()
                    self.c = None
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.BadStatusLine):
                if self.c is not None:
                    self.c.close()
                self.c = None
                if attempt:
                    raise

    def close(self):
        if self.c is not None:
            self.c.close()


def _small_proc(idx, threads, cfg, payloads, barrier, outq):
    lock = threading.Lock()
    cursor = [0]
    res = []

    def take():
        with lock:
            if cursor[0] >= len(idx):
                return None
            cursor[0] += 1
            return idx[cursor[0] - 1]

    def run():
        c = Conn(cfg["host"], cfg["port"])
        hdr = {"Content-Type": "application/octet-stream"}
        if cfg["auth"]:
            hdr["Authorization"] = cfg["auth"]
        lat, errors, first = [], 0, None
        try:  # connect before the barrier, so that the timed part is requests only
            c.c = http.client.HTTPConnection(cfg["host"], cfg["port"], timeout=120)
            c.c.connect()
        except OSError as e:
            errors, first = 1, "connect: %r" % e
        barrier.wait()
        t_start = time.perf_counter()
        while True:
            i = take()
            if i is None:
                break
            path = "%sf%05d.bin" % (cfg["prefix"], i)
            t0 = time.perf_counter()
            try:
                st, data = c.request("PUT", path, payloads[i], hdr)
            except Exception as e:  # noqa: BLE001 - any failure counts as an error
                st, data = "exception %r" % e, b""
            lat.append(time.perf_counter() - t0)
            if st not in (200, 201, 204):
                errors += 1
                if first is None:
                    first = "PUT %s -> %s %r" % (path, st, data[:200])
        t_end = time.perf_counter()
        c.close()
        res.append((t_start, t_end, lat, errors, first))

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    outq.put(res)


def small_put(t, rel, count, size, conc, procs):
    payloads = [os.urandom(size) for _ in range(count)]  # fresh content: no dedup hits
    procs = max(1, min(procs, conc))
    threads = conc // procs
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs * threads)
    outq = ctx.Queue()
    cfg = dict(host=t["host"], port=t["port"], auth=t.get("auth"),
               prefix="%s%s/" % (t["files_prefix"], rel))
    pids = server_pids(t)
    cpu0 = cpu_seconds(pids)
    others = Others(pids)
    ps = [ctx.Process(target=_small_proc, args=(list(range(k, count, procs)), threads, cfg, payloads, barrier, outq))
          for k in range(procs)]
    for p in ps:
        p.start()
    allres = []
    for _ in ps:
        allres.extend(outq.get())
    for p in ps:
        p.join()
    cpu = cpu_seconds(pids) - cpu0
    others_cpu = others.cpu_s()
    wall = max(r[1] for r in allres) - min(r[0] for r in allres)
    lat = sorted(x for r in allres for x in r[2])
    errors = sum(r[3] for r in allres)
    first = next((r[4] for r in allres if r[4]), None)
    return dict(files_per_s=count / wall, wall_s=wall, p50_ms=pct(lat, 50) * 1e3, p99_ms=pct(lat, 99) * 1e3,
                errors=errors, first_error=first, server_cpu_s=cpu, others_cpu_s=others_cpu)


def pct(vals, p):
    if not vals:
        return float("nan")
    k = max(0, min(len(vals) - 1, int(round(p / 100.0 * len(vals) + 0.5)) - 1))
    return vals[k]


def wrk_put(t, rel, seconds, conc, size, lua):
    env = dict(os.environ, WRK_PREFIX="%s%s/" % (t["files_prefix"], rel), WRK_AUTH=t.get("auth") or "",
               WRK_SIZE=str(size))
    cmd = ["wrk", "-t2", "-c%d" % conc, "-d%ds" % seconds, "--timeout", "10s", "-s", lua,
           "http://%s:%d/" % (t["host"], t["port"])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
    v = {k: int(x) for k, x in re.findall(r"^(WRK_[A-Z0-9_]+) (-?\d+)$", out, re.M)}
    if "WRK_REQS" not in v:
        raise RuntimeError("wrk output unparsable:\n" + out)
    return dict(files_per_s=v["WRK_REQS"] / (v["WRK_DURATION_US"] / 1e6), reqs=v["WRK_REQS"],
                p50_ms=v["WRK_P50_US"] / 1e3, p99_ms=v["WRK_P99_US"] / 1e3,
                errors=v["WRK_BAD"] + v["WRK_SOCKERR"], first_bad=v["WRK_FIRST_BAD"])


# ---------------------------------------------------------------- report helpers

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, int):
        return str(v)
    return "%.*f" % (nd, v)


def spread(xs, nd=1):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return " (%s–%s)" % (fmt(min(xs), nd), fmt(max(xs), nd))


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return "?"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", required=True, help="JSON file written by core.sh")
    ap.add_argument("--src-dir", required=True, help="where the random source files go (tmpfs preferred)")
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--out", required=True, help="Markdown report file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--small-count", type=int, default=2000)
    ap.add_argument("--small-size", type=int, default=4096)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--procs", type=int, default=2, help="python client processes for the small PUTs")
    ap.add_argument("--wrk-seconds", type=int, default=5, help="0 disables the wrk cross-check")
    ap.add_argument("--info", default="", help="JSON object of run facts shown in the report")
    a = ap.parse_args()

    with open(a.targets) as f:
        targets = json.load(f)
    by = {t["name"]: t for t in targets}
    fs, ng = by["filestore-sqlite"], by["nginx"]
    small_targets = [t for t in targets]  # sqlite, (mariadb), nginx
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_put.lua")
    use_wrk = a.wrk_seconds > 0 and shutil.which("wrk")
    nbytes = a.large_mib * MIB
    started = time.time()

    R = {}  # metric -> target -> [per-round values]

    def rec(metric, tname, value):
        R.setdefault(metric, {}).setdefault(tname, []).append(value)

    # physical reference for the disk the servers write to
    ref_src = os.path.join(a.src_dir, "ref.bin")
    gen_random(ref_src, nbytes)
    pc_mbps, sync_mbps = disk_reference(ref_src, os.path.join(a.work_dir, "ddref.bin"))
    os.unlink(ref_src)
    log("disk reference: %.0f MB/s to page cache, %.0f MB/s with fdatasync" % (pc_mbps, sync_mbps))

    make_dir(fs, "big")
    make_dir(ng, "big")
    dedup_checks = []
    verified = None
    for r in range(a.rounds):
        log("round %d/%d" % (r + 1, a.rounds))
        all_pids = [p for t in targets for p in server_pids(t)]
        waited, share = wait_quiet(all_pids, "round %d" % (r + 1), log)
        rec("quiet_wait_s", "all", waited)
        src = os.path.join(a.src_dir, "large-r%d.bin" % r)
        t0 = time.perf_counter()
        sha1 = gen_random(src, nbytes)
        log("  generated %d MiB fresh random (%.1fs) sha1=%s" % (a.large_mib, time.perf_counter() - t0, sha1[:12]))
        order = [fs, ng] if r % 2 == 0 else [ng, fs]

        # 1. large PUT, fresh content, new names
        for t in order:
            os.sync()
            resp = os.path.join(a.work_dir, "resp.json")
            w0 = disk_written(a.work_dir)
            m = curl_transfer(t, "big/r%d-%s.bin" % (r, t["name"]), put_src=src, resp_file=resp)
            rec("large_put_disk_mib", t["name"], mib_delta(w0, disk_written(a.work_dir)))
            if m["code"] not in (200, 201, 204) or m["bytes"] != nbytes:
                problem("%s large PUT round %d -> HTTP %d, %d of %d bytes sent; response %s"
                        % (t["name"], r + 1, m["code"], m["bytes"], nbytes, open(resp).read()[:300]))
            if t is fs:
                try:
                    got = json.load(open(resp)).get("sha1")
                except ValueError:
                    got = None
                if got != sha1:
                    problem("filestore large PUT round %d: response sha1 %s, expected %s" % (r + 1, got, sha1))
                if m["code"] != 201:
                    problem("filestore large PUT to a new name round %d -> %d, expected 201" % (r + 1, m["code"]))
                rec("large_put_rss_peak_mib", t["name"], m["rss_peak_mib"])
                rec("large_put_rss_before_mib", t["name"], m["rss_before_mib"])
                if m["rss_peak_mib"] > RSS_LIMIT_MIB:
                    problem("filestore peak RSS %.1f MiB during the 1 GiB PUT of round %d (> %d MiB)"
                            % (m["rss_peak_mib"], r + 1, RSS_LIMIT_MIB))
            else:
                rec("large_put_rss_peak_mib", t["name"], m["rss_peak_mib"])
            rec("large_put_MBps", t["name"], m["MBps"])
            rec("large_put_others_cpu_s", t["name"], m["others_cpu_s"])
            rec("large_put_s", t["name"], m["secs"])
            rec("large_put_cpu_s", t["name"], m["cpu_s"])
            log("  PUT  %-16s %7.1f MB/s  %.2fs  HTTP %d  rss peak %.1f MiB  server cpu %.2fs  cpu of others %.2fs"
                % (t["name"], m["MBps"], m["secs"], m["code"], m["rss_peak_mib"], m["cpu_s"], m["others_cpu_s"]))

        # 4. re-upload of the same bytes to a new name: dedup hit
        os.sync()
        before = store_stat(fs["data_dir"])
        resp = os.path.join(a.work_dir, "resp.json")
        w0 = disk_written(a.work_dir)
        m = curl_transfer(fs, "big/r%d-dup.bin" % r, put_src=src, resp_file=resp)
        rec("dedup_put_disk_mib", fs["name"], mib_delta(w0, disk_written(a.work_dir)))
        after = store_stat(fs["data_dir"])
        try:
            got = json.load(open(resp)).get("sha1")
        except ValueError:
            got = None
        ok = (m["code"] in (200, 201) and got == sha1 and after["objects_files"] == before["objects_files"]
              and after["objects_bytes"] == before["objects_bytes"] and after["incoming_files"] == 0)
        dedup_checks.append((before, after, m["code"], ok))
        if not ok:
            problem("dedup re-PUT round %d: HTTP %d, sha1 ok=%s, objects %d files/%d B -> %d files/%d B, "
                    "incoming after: %d files" % (r + 1, m["code"], got == sha1, before["objects_files"],
                                                   before["objects_bytes"], after["objects_files"],
                                                   after["objects_bytes"], after["incoming_files"]))
        rec("dedup_put_s", fs["name"], m["secs"])
        rec("dedup_put_MBps", fs["name"], m["MBps"])
        rec("dedup_put_rss_peak_mib", fs["name"], m["rss_peak_mib"])
        rec("dedup_put_cpu_s", fs["name"], m["cpu_s"])
        log("  DEDUP %-15s %7.1f MB/s  %.2fs  HTTP %d  objects %d files %d B -> %d files %d B  disk written %s MiB"
            % (fs["name"], m["MBps"], m["secs"], m["code"], before["objects_files"], before["objects_bytes"],
               after["objects_files"], after["objects_bytes"], fmt(R["dedup_put_disk_mib"][fs["name"]][-1], 0)))

        # 2. large GET
        for t in order:
            m = curl_transfer(t, "big/r%d-%s.bin" % (r, t["name"]))
            if m["code"] != 200 or m["bytes"] != nbytes:
                problem("%s large GET round %d -> HTTP %d, %d of %d bytes" % (t["name"], r + 1, m["code"],
                                                                             m["bytes"], nbytes))
            rec("large_get_MBps", t["name"], m["MBps"])
            rec("large_get_others_cpu_s", t["name"], m["others_cpu_s"])
            rec("large_get_rss_peak_mib", t["name"], m["rss_peak_mib"])
            rec("large_get_cpu_s", t["name"], m["cpu_s"])
            log("  GET  %-16s %7.1f MB/s  %.2fs  HTTP %d  rss peak %.1f MiB  server cpu %.2fs  cpu of others %.2fs"
                % (t["name"], m["MBps"], m["secs"], m["code"], m["rss_peak_mib"], m["cpu_s"], m["others_cpu_s"]))
        if r == 0:
            verified = verify_get(fs, "big/r0-dup.bin", sha1) and verify_get(fs, "big/r0-%s.bin" % fs["name"], sha1)
            if not verified:
                problem("filestore GET of the 1 GiB file returned different bytes (sha1 mismatch)")
        os.unlink(src)

        # 3. small PUTs, python client, fixed count
        k = r % len(small_targets)
        for t in small_targets[k:] + small_targets[:k]:
            rel = "small-r%d" % r
            make_dir(t, rel)
            st0 = store_stat(t["data_dir"]) if t["kind"] == "filestore" else None
            m = small_put(t, rel, a.small_count, a.small_size, a.concurrency, a.procs)
            if t["kind"] == "filestore":
                st1 = store_stat(t["data_dir"])
                stored = st1["objects_files"] - st0["objects_files"]
            else:
                stored = dir_stat(os.path.join(t["root"], rel))[0]
            if m["errors"] or stored != a.small_count:
                problem("%s small PUT round %d: %d errors (first: %s); %d of %d new files stored"
                        % (t["name"], r + 1, m["errors"], m["first_error"], stored, a.small_count))
            rec("small_put_fps", t["name"], m["files_per_s"])
            rec("small_put_others_cpu_s", t["name"], m["others_cpu_s"])
            rec("small_put_p50_ms", t["name"], m["p50_ms"])
            rec("small_put_p99_ms", t["name"], m["p99_ms"])
            rec("small_put_cpu_ms_per_file", t["name"], m["server_cpu_s"] / a.small_count * 1e3)
            log("  SMALL %-15s %7.0f files/s  p50 %.1f ms  p99 %.1f ms  errors %d  server cpu %.2fs  cpu of others %.2fs"
                % (t["name"], m["files_per_s"], m["p50_ms"], m["p99_ms"], m["errors"], m["server_cpu_s"],
                   m["others_cpu_s"]))
            if use_wrk:
                wrel = "wrk-r%d" % r
                make_dir(t, wrel)
                w = wrk_put(t, wrel, a.wrk_seconds, a.concurrency, a.small_size, lua)
                if w["errors"]:
                    problem("%s wrk PUT round %d: %d bad responses/socket errors of %d (first status %d)"
                            % (t["name"], r + 1, w["errors"], w["reqs"], w["first_bad"]))
                rec("wrk_put_fps", t["name"], w["files_per_s"])
                rec("wrk_put_p99_ms", t["name"], w["p99_ms"])
                log("  WRK   %-15s %7.0f files/s  p50 %.1f ms  p99 %.1f ms  errors %d"
                    % (t["name"], w["files_per_s"], w["p50_ms"], w["p99_ms"], w["errors"]))

    hwm = {t["name"]: status_kib(t["pid"], "VmHWM") / 1024 for t in targets if t["kind"] == "filestore"}
    elapsed = time.time() - started
    report = render(a, targets, R, pc_mbps, sync_mbps, dedup_checks, verified, hwm, elapsed, use_wrk)
    print(report)
    with open(a.out, "w") as f:
        f.write(report)
    log("report written to %s" % a.out)
    return 1 if PROBLEMS else 0


def render(a, targets, R, pc_mbps, sync_mbps, dedup_checks, verified, hwm, elapsed, use_wrk):
    names = [t["name"] for t in targets]
    fs, ng = "filestore-sqlite", "nginx"
    has_maria = "filestore-mariadb" in names
    info = json.loads(a.info) if a.info else {}

    def m(metric, tname):
        return med(R.get(metric, {}).get(tname, []))

    def vals(metric, tname):
        return R.get(metric, {}).get(tname, [])

    def ratio(metric, tname, base=ng):
        """Median of the per-round ratios tname/base (round-wide noise cancels)."""
        xs, ys = vals(metric, tname), vals(metric, base)
        rs = [x / y for x, y in zip(xs, ys) if x and y]
        return med(rs)

    big = "1 GiB" if a.large_mib == 1024 else "%d MiB" % a.large_mib
    L = []
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    L.append("# filestore core benchmark — %s" % date)
    L.append("")
    L.append("%d rounds, server order rotating each round; figures are medians over rounds, (min–max) in "
             "brackets; ratios are the median of per-round ratios filestore/nginx. MB = 10^6 bytes." % a.rounds)
    L.append("")
    L.append("| measurement | filestore (SQLite) | filestore (MariaDB) | nginx WebDAV | filestore / nginx |")
    L.append("|---|---|---|---|---|")
    L.append("| %s PUT, fresh content, MB/s | %s%s | | %s%s | %s |" % (
        big, fmt(m("large_put_MBps", fs)), spread(vals("large_put_MBps", fs)), fmt(m("large_put_MBps", ng)),
        spread(vals("large_put_MBps", ng)), fmt(ratio("large_put_MBps", fs), 2)))
    L.append("| %s GET, MB/s | %s%s | | %s%s | %s |" % (
        big, fmt(m("large_get_MBps", fs)), spread(vals("large_get_MBps", fs)), fmt(m("large_get_MBps", ng)),
        spread(vals("large_get_MBps", ng)), fmt(ratio("large_get_MBps", fs), 2)))
    L.append("| server peak RSS during %s PUT, MiB (sampled every 10 ms; nginx = master+workers) | %s "
             "(max %s; %s before) | | %s | |" % (
                 big, fmt(m("large_put_rss_peak_mib", fs)), fmt(max(vals("large_put_rss_peak_mib", fs) or [0])),
                 fmt(m("large_put_rss_before_mib", fs)), fmt(m("large_put_rss_peak_mib", ng))))
    L.append("| server peak RSS during %s GET, MiB | %s | | %s | |" % (
        big, fmt(m("large_get_rss_peak_mib", fs)), fmt(m("large_get_rss_peak_mib", ng))))
    L.append("| server CPU seconds per %s PUT / GET | %s / %s | | %s / %s | |" % (
        big, fmt(m("large_put_cpu_s", fs), 2), fmt(m("large_get_cpu_s", fs), 2),
        fmt(m("large_put_cpu_s", ng), 2), fmt(m("large_get_cpu_s", ng), 2)))
    L.append("| %s re-PUT of stored content (dedup hit), s | %s%s (%s MB/s) | | | |" % (
        big, fmt(m("dedup_put_s", fs), 2), spread(vals("dedup_put_s", fs), 2), fmt(m("dedup_put_MBps", fs))))
    L.append("| bytes written to the data disk during the %s PUT / the dedup re-PUT, MiB (/proc/diskstats) | "
             "%s / %s | | %s | |" % (big, fmt(m("large_put_disk_mib", fs), 0), fmt(m("dedup_put_disk_mib", fs), 0),
                                     fmt(m("large_put_disk_mib", ng), 0)))
    L.append("| 4 KiB PUT, %d clients, %d files, python client, files/s | %s%s | %s%s | %s%s | %s / %s |" % (
        a.concurrency, a.small_count,
        fmt(m("small_put_fps", fs), 0), spread(vals("small_put_fps", fs), 0),
        fmt(m("small_put_fps", "filestore-mariadb"), 0), spread(vals("small_put_fps", "filestore-mariadb"), 0),
        fmt(m("small_put_fps", ng), 0), spread(vals("small_put_fps", ng), 0),
        fmt(ratio("small_put_fps", fs), 2), fmt(ratio("small_put_fps", "filestore-mariadb"), 2)))
    L.append("| 4 KiB PUT p50 / p99 latency, ms | %s / %s | %s / %s | %s / %s | |" % (
        fmt(m("small_put_p50_ms", fs)), fmt(m("small_put_p99_ms", fs)),
        fmt(m("small_put_p50_ms", "filestore-mariadb")), fmt(m("small_put_p99_ms", "filestore-mariadb")),
        fmt(m("small_put_p50_ms", ng)), fmt(m("small_put_p99_ms", ng))))
    L.append("| 4 KiB PUT server CPU ms per file | %s | %s | %s | |" % (
        fmt(m("small_put_cpu_ms_per_file", fs), 3), fmt(m("small_put_cpu_ms_per_file", "filestore-mariadb"), 3),
        fmt(m("small_put_cpu_ms_per_file", ng), 3)))
    if use_wrk:
        L.append("| 4 KiB PUT, %d conns, wrk %d s, files/s | %s%s | %s%s | %s%s | %s / %s |" % (
            a.concurrency, a.wrk_seconds,
            fmt(m("wrk_put_fps", fs), 0), spread(vals("wrk_put_fps", fs), 0),
            fmt(m("wrk_put_fps", "filestore-mariadb"), 0), spread(vals("wrk_put_fps", "filestore-mariadb"), 0),
            fmt(m("wrk_put_fps", ng), 0), spread(vals("wrk_put_fps", ng), 0),
            fmt(ratio("wrk_put_fps", fs), 2), fmt(ratio("wrk_put_fps", "filestore-mariadb"), 2)))
        L.append("| 4 KiB PUT p99 latency under wrk, ms | %s | %s | %s | |" % (
            fmt(m("wrk_put_p99_ms", fs)), fmt(m("wrk_put_p99_ms", "filestore-mariadb")),
            fmt(m("wrk_put_p99_ms", ng))))
    if not has_maria:
        L.append("")
        L.append("MariaDB column empty: %s" % info.get("mariadb_skipped", "not run"))
    L.append("")

    L.append("## Checks")
    L.append("")
    L.append("- Disk reference (same filesystem as the data dirs, plain 1 GiB write): %.0f MB/s into the page "
             "cache, %.0f MB/s including fdatasync." % (pc_mbps, sync_mbps))
    L.append("- filestore returned the source SHA-1 for every fresh 1 GiB PUT; full GETs of the stored file "
             "hash-verified in round 1: %s." % ("yes" if verified else "NO"))
    for i, (b, af, code, ok) in enumerate(dedup_checks):
        L.append("- Dedup re-PUT round %d: HTTP %d; objects %d files / %d bytes before, %d files / %d bytes "
                 "after; staging/incoming after: %d files → %s." % (
                     i + 1, code, b["objects_files"], b["objects_bytes"], af["objects_files"],
                     af["objects_bytes"], af["incoming_files"], "no second copy" if ok else "UNEXPECTED"))
    L.append("- filestore VmHWM (lifetime peak RSS) at the end: %s." % ", ".join(
        "%s %.1f MiB" % (k, v) for k, v in hwm.items()))
    L.append("- Problems: %s" % ("none" if not PROBLEMS else ""))
    for p in PROBLEMS:
        L.append("  - %s" % p)
    L.append("")

    L.append("## Per round")
    L.append("")
    metrics = ["quiet_wait_s", "large_put_MBps", "large_put_others_cpu_s", "large_get_MBps", "large_put_rss_peak_mib", "dedup_put_s",
               "large_put_disk_mib", "dedup_put_disk_mib", "small_put_fps", "small_put_others_cpu_s"]
    if use_wrk:
        metrics.append("wrk_put_fps")
    L.append("| metric | server | " + " | ".join("r%d" % (i + 1) for i in range(a.rounds)) + " |")
    L.append("|---|---|" + "---|" * a.rounds)
    for metric in metrics:
        for tname in names + ["all"]:
            xs = vals(metric, tname)
            if xs:
                L.append("| %s | %s | %s |" % (metric, tname, " | ".join(
                    fmt(x, 2 if x is not None and x < 100 else 0) for x in xs)))
    L.append("")

    L.append("## How it was measured")
    L.append("")
    L.append("- Servers: filestore `serve` (embedded default: SQLite + local content under the data dir; "
             "second instance with `FILESTORE_DATABASE__URL=mysql://…`), and nginx %s with the "
             "built-in WebDAV module (`dav_methods PUT DELETE MKCOL COPY MOVE; create_full_put_path on;`, "
             "no auth, `sendfile on`), all on 127.0.0.1, data dirs on the same filesystem (%s)."
             % (info.get("nginx_version", "?"), info.get("work_fs", "?")))
    L.append("- 1 GiB: a fresh AES-CTR random file per round in %s (tmpfs when available), `curl -T` (streamed, "
             "with curl's `Expect: 100-continue`), to a new name each time; both servers get the same file in a "
             "round, so filestore never gets a dedup hit on the measured PUT. GET with `curl -o /dev/null`, "
             "the file still in the page cache on both sides. `sync` before each timed PUT." % a.src_dir)
    L.append("- filestore hashes (SHA-1; SHA-256 too on a dedup hit) and fsyncs every upload before answering; nginx only "
             "writes into the page cache (no fsync), so the PUT ratio includes the cost of durability; "
             "compare with the disk reference above.")
    L.append("- Dedup re-PUT: the same file again, new name, right after the fresh PUT (and a `sync`): the "
             "server still receives and hashes all bytes, then drops its temp copy; objects counted by distinct "
             "inode under staging/objects. Disk bytes written are the device's sectors-written counter over the "
             "request (anything else writing to that disk at the time counts too).")
    L.append("- 4 KiB PUTs: %d files per server per round, fresh os.urandom content each, %d keep-alive "
             "clients (%d processes × %d threads, python http.client) started on a barrier; files/s = "
             "count / wall time. The python client shares the %s CPUs with the server, so at high rates it "
             "is the bottleneck (nginx especially)%s. Each stored file was counted afterwards (objects "
             "for filestore, files for nginx)." % (
                 a.small_count, a.concurrency, a.procs, a.concurrency // max(1, a.procs), info.get("cpus", "?"),
                 "; wrk (C, 2 threads, Lua-generated random bodies to unique names, %d s) is the lighter "
                 "cross-check" % a.wrk_seconds if use_wrk else ""))
    L.append("- Before each round the script waits (up to %.0f s, `BENCH_QUIET_WAIT`) for a 1 s window in which "
             "other processes use < %.2f CPU (`quiet_wait_s` in the per-round table)." % (QUIET_WAIT_S, QUIET_CPU))
    L.append("- `*_others_cpu_s` (per-round table): CPU seconds spent during that measurement by everything "
             "except the servers under test, this script and its children (other jobs on the shared machine, "
             "kernel writeback threads), from /proc/stat: the noise indicator of a round.")
    L.append("")
    L.append("## Run")
    L.append("")
    for k in ("command", "commit", "binary", "cpu", "cpus", "mem", "kernel", "work_fs", "nginx_version",
              "mariadb_version", "load"):
        if k in info:
            L.append("- %s: `%s`" % (k, info[k]))
    L.append("- python: `%s`, total measuring time %.0f s" % (platform.python_version(), elapsed))
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
