#!/usr/bin/env python3
"""Measurement driver of bench/transfer.sh (python3 standard library only; drives curl, the
aws command and `filestore transfer`).

transfer.sh starts Ceph RGW, the filestore server (jobs relayed to RabbitMQ) and hands this
script the worker's command line (--worker). Each round, the order alternating:

  large   a fresh random file (1 GiB) is PUT into filestore's staging with no worker running;
          once the relay has published its job, the clock starts with a `filestore transfer`
          worker process and stops when the job is done in the database, staging is empty and
          the queue is drained. The same file is copied with `aws s3 cp` (wall time).
  range   ranged GETs of 1 MiB at random offsets in the middle half of that file, now in S3,
          interleaved: JSON API, seed /file/download, and a presigned GET straight to the S3
          server, each on a keep-alive connection; every body is compared with the source.
  small   N fresh random files of 64 KiB, the same way (PUT with 8 keep-alive clients, then the
          worker timed), next to `aws s3 cp --recursive` of the directory holding them.

Medians over rounds, per-round ratios filestore/aws, and the raw rounds as Markdown to stdout
and --out.
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import Others, cpu_seconds, fmt, gen_random, med, pct, sh, spread, wait_quiet  # noqa: E402

MB = 1e6
MIB = 1 << 20
AWS = os.environ.get("AWS_BIN", "/usr/bin/aws")
PROBLEMS = []


def log(msg):
    print("[transfer] %s" % msg, file=sys.stderr, flush=True)


def problem(what):
    log("PROBLEM: " + what)
    PROBLEMS.append(what)


def wait_for(what, check, timeout, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(every)


# ---------------------------------------------------------------- filestore over HTTP

class Conn:
    """A keep-alive HTTP/1.1 connection that reconnects when the server closed it."""

    def __init__(self, host, port):
        self.host, self.port, self.c = host, port, None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Filestore:
    def __init__(self, server, data_dir):
        self.host, port = server.rsplit(":", 1)
        self.port = int(port)
        self.data = data_dir
        c = Conn(self.host, self.port)
        st, body = c.request("POST", "/api/v1/auth/signin",
                             json.dumps(dict(username="bench", password="benchpass1")),
                             {"content-type": "application/json"})
        if st != 200:
            raise RuntimeError("sign-in: HTTP %d %s" % (st, body[:200]))
        self.token = json.loads(body)["token"]
        self.auth = {"authorization": "Bearer " + self.token}

    def put_large(self, src, name):
        """Streamed PUT with curl -T; returns (seconds, sha1 answered)."""
        t0 = time.perf_counter()
        out = subprocess.run(["curl", "-sS", "--fail-with-body", "-T", src, "-H", "authorization: Bearer " + self.token,
                              "http://%s:%d/api/v1/files/%s" % (self.host, self.port, name)],
                             capture_output=True, text=True, timeout=600)
        dt = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError("PUT %s: %s %s" % (name, out.stdout[:300], out.stderr[:300]))
        return dt, json.loads(out.stdout).get("sha1")

    def put_many(self, files, prefix, clients=8):
        """PUT every (name, bytes) into a new directory with `clients` keep-alive connections; returns
        seconds."""
        st, body = Conn(self.host, self.port).request("POST", "/api/v1/dirs/%s?parents=true" % prefix, None,
                                                      self.auth)
        if st not in (200, 201):
            raise RuntimeError("mkdir %s: HTTP %d %s" % (prefix, st, body[:200]))
        todo = list(files)
        lock = threading.Lock()
        errors = []

        def run():
            c = Conn(self.host, self.port)
            while True:
                with lock:
                    if not todo:
                        return
                    name, body = todo.pop()
                try:
                    st, resp = c.request("PUT", "/api/v1/files/%s/%s" % (prefix, name), body, self.auth)
                    if st not in (200, 201):
                        errors.append("PUT %s: HTTP %d %s" % (name, st, resp[:200]))
                except OSError as e:
                    errors.append("PUT %s: %s" % (name, e))

        t0 = time.perf_counter()
        th = [threading.Thread(target=run) for _ in range(clients)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        if errors:
            raise RuntimeError("%d uploads failed, first: %s" % (len(errors), errors[0]))
        return time.perf_counter() - t0

    # --- the database and the staging dir, read directly (read-only)
    def db(self, sql, args=()):
        c = sqlite3.connect("file:%s/meta.db?mode=ro" % self.data, uri=True, timeout=30)
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.close()

    def max_job_id(self):
        return self.db("SELECT COALESCE(MAX(id), 0) FROM transfer_jobs")[0][0]

    def job_states(self, after):
        return dict(self.db("SELECT state, COUNT(*) FROM transfer_jobs WHERE id > ? GROUP BY state", (after,)))

    def staged_files(self):
        n = 0
        for _, _, files in os.walk(os.path.join(self.data, "staging", "objects")):
            n += len(files)
        return n

    def stores_of(self, sha1s):
        rows = []
        sha1s = list(sha1s)
        for i in range(0, len(sha1s), 500):
            part = sha1s[i:i + 500]
            rows += self.db("SELECT store, COUNT(*) FROM files WHERE sha1 IN (%s) GROUP BY store"
                            % ",".join("?" * len(part)), part)
        out = {}
        for store, n in rows:
            out[store] = out.get(store, 0) + n
        return out


def queue_depth(queue):
    """(ready, unacked) of the queue, from rabbitmqctl."""
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages_ready", "messages_unacknowledged"],
                         capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3 and f[0] == queue:
            return int(f[1]), int(f[2])
    return None


class Worker:
    def __init__(self, spec, logfile):
        self.spec = json.load(open(spec))
        self.logfile = logfile
        self.p = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILESTORE_")}
        env.update(self.spec["env"])
        self.p = subprocess.Popen(self.spec["argv"], env=env, stdout=open(self.logfile, "a"),
                                  stderr=subprocess.STDOUT)
        return self.p.pid

    def stop(self):
        """SIGTERM and wait; returns the worker's CPU seconds (user+sys)."""
        cpu = cpu_seconds([self.p.pid])
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            problem("the transfer worker ignored SIGTERM for 30 s")
            self.p.kill()
            self.p.wait()
        if self.p.returncode not in (0, -signal.SIGTERM):
            problem("the transfer worker exited with %s" % self.p.returncode)
        return cpu


def fs_transfer(fs, worker, queue, n_jobs, base, timeout):
    """Waits until the relay published the n_jobs new jobs, then times a worker from its start to: every
    job done, staging empty, queue drained. Returns (seconds, worker CPU s, S3-server CPU s, others CPU s)."""
    wait_for("the relay to publish %d jobs" % n_jobs,
             lambda: fs.job_states(base).get("published", 0) + fs.job_states(base).get("done", 0) >= n_jobs,
             120, 0.1)
    wait_for("%d messages in %s" % (n_jobs, queue), lambda: queue_depth(queue) == (n_jobs, 0), 120, 0.5)
    others = Others(SERVER_PIDS())
    s3cpu0 = cpu_seconds(S3_PIDS())
    t0 = time.perf_counter()
    worker.start()
    wait_for("every job done", lambda: set(fs.job_states(base)) <= {"done"} and
             fs.job_states(base).get("done", 0) == n_jobs, timeout, 0.01)
    wait_for("staging empty", lambda: fs.staged_files() == 0, 60, 0.01)
    dt = time.perf_counter() - t0
    s3cpu = cpu_seconds(S3_PIDS()) - s3cpu0
    # acked right after the staging copy is removed: the queue drains within the poll
    wait_for("queue %s drained" % queue, lambda: queue_depth(queue) == (0, 0), 60, 0.2)
    cpu = worker.stop()
    # after the worker was waited for, its CPU time counts as this script's (not as others')
    return dt, cpu, s3cpu, others.cpu_s()


def aws(*args, timeout=1200):
    cmd = [AWS, "--endpoint-url", os.environ["S3_ENDPOINT"]] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args[:3]), r.returncode, (r.stderr or r.stdout)[-500:]))
    return r.stdout


def aws_timed(*args):
    """Wall time and CPU seconds of one aws command."""
    others = Others(SERVER_PIDS())
    s3cpu0 = cpu_seconds(S3_PIDS())
    c0 = os.times()
    t0 = time.perf_counter()
    aws(*args)
    dt = time.perf_counter() - t0
    c1 = os.times()
    return dt, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system), \
        cpu_seconds(S3_PIDS()) - s3cpu0, others.cpu_s()


def head(bucket, key):
    return json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", key))


def count_objects(bucket, prefix):
    out = aws("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", prefix, "--query",
              "[length(Contents || `[]`), sum(Contents[].Size || `[0]`)]", "--output", "json")
    n, size = json.loads(out)
    return n, size


def md5_of(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


# ---------------------------------------------------------------- ranged reads

def ranged_reads(fs, name, sha1, bucket, src, size, n, rnd):
    """n rounds of one 1 MiB ranged GET per path, interleaved, at the same random offsets in the middle
    half. Returns {path: [seconds]} and the number of bodies compared with the source."""
    url = aws("s3", "presign", "s3://%s/objects/%s" % (bucket, sha1), "--expires-in", "3600").strip()
    u = urllib.parse.urlsplit(url)
    direct = Conn(u.hostname, u.port or 80)
    direct_path = u.path + ("?" + u.query if u.query else "")
    api = Conn(fs.host, fs.port)
    paths = {
        "JSON API (GET /api/v1/files/…)": (api, "/api/v1/files/" + urllib.parse.quote(name), fs.auth),
        "seed route (/file/download)": (api, "/file/download?" + urllib.parse.urlencode(
            dict(filehash=sha1, username="bench", token=fs.token)), {}),
        "S3 direct (presigned GET)": (direct, direct_path, {}),
    }
    lat = {k: [] for k in paths}
    checked = 0
    with open(src, "rb") as f:
        for i in range(n):
            off = rnd.randrange(size // 4, 3 * size // 4 - MIB)
            f.seek(off)
            want = f.read(MIB)
            order = list(paths.items())
            rnd.shuffle(order)
            for label, (conn, path, hdr) in order:
                h = dict(hdr, range="bytes=%d-%d" % (off, off + MIB - 1))
                t0 = time.perf_counter()
                st, body = conn.request("GET", path, None, h)
                lat[label].append(time.perf_counter() - t0)
                if st != 206 or body != want:
                    problem("ranged GET via %s at %d: HTTP %d, %d bytes, %s" % (
                        label, off, st, len(body), "same bytes" if body == want else "WRONG bytes"))
                else:
                    checked += 1
    return lat, checked


# ---------------------------------------------------------------- main

S3_PIDS = lambda: []  # noqa: E731 - replaced in main
SERVER_PIDS = lambda: []  # noqa: E731


def pids_from(run_dir):
    out = []
    for f in ("rgw.pid", "osd.0.pid", "mon.a.pid"):
        try:
            out.append(int(open(os.path.join(run_dir, f)).read().strip()))
        except (OSError, ValueError):
            pass
    return out


def beam_pids():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if open("/proc/%s/comm" % d).read().strip() == "beam.smp":
                    out.append(int(d))
            except OSError:
                pass
    return out


def main():
    global S3_PIDS, SERVER_PIDS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--ceph-run-dir", default=os.path.join(os.path.dirname(os.environ.get("CEPH_CONF", "/x/y")), "run"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--small-count", type=int, default=1000)
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--range-n", type=int, default=200)
    ap.add_argument("--info", default="{}")
    a = ap.parse_args()

    s3p = pids_from(a.ceph_run_dir)
    S3_PIDS = lambda: s3p  # noqa: E731
    SERVER_PIDS = lambda: [a.server_pid] + s3p + beam_pids()  # noqa: E731
    fs = Filestore(a.server, a.data_dir)
    worker = Worker(a.worker, os.path.join(a.work_dir, "worker.log"))
    size = a.large_mib * MIB
    small_size = a.small_kib * 1024
    rnd = random.Random(20261127)
    R = {}  # metric -> who -> [per round]
    rounds = []
    lat_all = {}
    checks = dict(large_s3=0, small_s3=0, ranged_bodies=0, aws_large=0, aws_small=0)
    started = time.perf_counter()

    def rec(metric, who, v):
        R.setdefault(metric, {}).setdefault(who, []).append(v)

    for r in range(1, a.rounds + 1):
        order = ["filestore", "aws"] if r % 2 else ["aws", "filestore"]
        log("round %d/%d, order %s" % (r, a.rounds, " then ".join(order)))
        row = dict(round=r, order=order)
        src = os.path.join(a.work_dir, "large-%d.bin" % r)
        sha1 = gen_random(src, size)
        md5 = md5_of(src)
        name = "large-%d.bin" % r
        for who in order:
            wait_quiet(SERVER_PIDS(), "round %d large %s" % (r, who), log)
            if who == "filestore":
                base = fs.max_job_id()
                up_s, answered = fs.put_large(src, name)
                if answered != sha1:
                    problem("round %d: PUT answered sha1 %s, expected %s" % (r, answered, sha1))
                dt, cpu, s3cpu, oth = fs_transfer(fs, worker, a.queue, 1, base, 1200)
                h = head(a.bucket, "objects/" + sha1)
                row["etag"] = h.get("ETag", "")
                ok = h.get("ContentLength") == size and fs.stores_of([sha1]) == {"s3": 1}
                checks["large_s3"] += ok
                if not ok:
                    problem("round %d: the 1 GiB object or row is wrong: %s" % (r, h))
                rec("large_upload_s", who, up_s)
                rec("large_e2e_s", who, up_s + dt)
            else:
                key = "aws/r%d/%s" % (r, name)
                dt, cpu, s3cpu, oth = aws_timed("s3", "cp", src, "s3://%s/%s" % (a.bucket, key), "--no-progress",
                                                "--only-show-errors")
                h = head(a.bucket, key)
                ok = h.get("ContentLength") == size
                checks["aws_large"] += ok
                if not ok:
                    problem("round %d: aws s3 cp left %s" % (r, h))
            rec("large_s", who, dt)
            rec("large_MBps", who, size / dt / MB)
            rec("large_cpu_s", who, cpu)
            rec("large_s3cpu_s", who, s3cpu)
            rec("large_others_cpu_s", who, oth)
            log("  large %-9s %.2f s  %.0f MB/s  cpu %.2f s  s3 server cpu %.2f s" % (who, dt, size / dt / MB, cpu,
                                                                                     s3cpu))
        # ranged reads from the transferred file (its ETag says single or multipart upload)
        log("  ranged reads: %d per path" % a.range_n)
        lat, n_ok = ranged_reads(fs, name, sha1, a.bucket, src, size, a.range_n, rnd)
        checks["ranged_bodies"] += n_ok
        for k, v in lat.items():
            lat_all.setdefault(k, []).extend(v)
            rec("range_p50_ms", k, pct(sorted(v), 50) * 1e3)
        aws("s3", "rm", "--recursive", "--only-show-errors", "s3://%s/" % a.bucket)
        os.unlink(src)

        # small files
        sdir = os.path.join(a.work_dir, "small-%d" % r)
        os.makedirs(sdir)
        files, sha1s = [], []
        for i in range(a.small_count):
            b = os.urandom(small_size)
            n = "f%05d.bin" % i
            with open(os.path.join(sdir, n), "wb") as f:
                f.write(b)
            files.append((n, b))
            sha1s.append(hashlib.sha1(b).hexdigest())
        total = a.small_count * small_size
        for who in order:
            wait_quiet(SERVER_PIDS(), "round %d small %s" % (r, who), log)
            if who == "filestore":
                base = fs.max_job_id()
                up_s = fs.put_many(files, "small-%d" % r)
                dt, cpu, s3cpu, oth = fs_transfer(fs, worker, a.queue, a.small_count, base, 1200)
                n, nbytes = count_objects(a.bucket, "objects/")
                stores = fs.stores_of(sha1s)
                ok = n == a.small_count and nbytes == total and stores == {"s3": a.small_count}
                checks["small_s3"] += ok
                if not ok:
                    problem("round %d: %d objects, %d bytes in S3; rows by store %s" % (r, n, nbytes, stores))
                rec("small_upload_s", who, up_s)
                rec("small_e2e_s", who, up_s + dt)
            else:
                prefix = "aws/r%d/small/" % r
                dt, cpu, s3cpu, oth = aws_timed("s3", "cp", "--recursive", sdir, "s3://%s/%s" % (a.bucket, prefix),
                                                "--no-progress", "--only-show-errors")
                n, nbytes = count_objects(a.bucket, prefix)
                ok = n == a.small_count and nbytes == total
                checks["aws_small"] += ok
                if not ok:
                    problem("round %d: aws s3 cp --recursive left %d objects, %d bytes" % (r, n, nbytes))
            rec("small_s", who, dt)
            rec("small_fps", who, a.small_count / dt)
            rec("small_MBps", who, total / dt / MB)
            rec("small_cpu_s", who, cpu)
            rec("small_s3cpu_s", who, s3cpu)
            rec("small_others_cpu_s", who, oth)
            log("  small %-9s %.2f s  %.0f files/s  cpu %.2f s  s3 server cpu %.2f s" % (
                who, dt, a.small_count / dt, cpu, s3cpu))
        aws("s3", "rm", "--recursive", "--only-show-errors", "s3://%s/" % a.bucket)
        for n, _ in files:
            os.unlink(os.path.join(sdir, n))
        os.rmdir(sdir)
        rounds.append(row)

    elapsed = time.perf_counter() - started
    text = render(a, R, lat_all, checks, rounds, elapsed, json.loads(a.info))
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print(text)
    log("report: %s" % a.out)
    return 1 if PROBLEMS else 0


def render(a, R, lat_all, checks, rounds, elapsed, info):
    def v(metric, who):
        return R.get(metric, {}).get(who, [])

    def m(metric, who):
        return med(v(metric, who))

    def ratio(metric):
        rs = [x / y for x, y in zip(v(metric, "filestore"), v(metric, "aws")) if x and y]
        return med(rs), rs

    def verdict(rt):
        return "–" if rt is None else ("met" if rt >= 0.8 else "**not met**")

    big = "1 GiB" if a.large_mib == 1024 else "%d MiB" % a.large_mib
    small = "%s × %d KiB" % ("{:,}".format(a.small_count), a.small_kib)
    L = []
    L.append("# filestore transfer-to-S3 benchmark — %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    L.append("")
    L.append("%d rounds, the order (filestore, aws) alternating each round; figures are medians over rounds, "
             "(min–max) in brackets; ratios are the median of per-round throughput ratios filestore/aws. "
             "MB = 10^6 bytes. Target: ratio ≥ 0.8." % a.rounds)
    L.append("")
    L.append("What is timed. **filestore**: the content is already committed in staging (uploaded through the "
             "JSON API, outbox row written, job published to RabbitMQ by the server's relay, message waiting in "
             "the queue); the clock runs from starting a `filestore transfer` worker process to every job done "
             "in the database (object uploaded and verified against the MD5s computed from the file: the ETag "
             "in the server's answer, a HEAD only when the answer has none; row pointing at it), the staging "
             "copy removed, and the queue drained (the ack follows the removal; polled every 10 ms). Worker "
             "start-up (database, AMQP and S3 connections) is inside the time, as the aws command's start-up "
             "is inside its. **aws**: wall time of `aws s3 cp FILE s3://…` and `aws s3 cp --recursive DIR "
             "s3://…` (Debian's awscli, default settings: 8 MiB parts, 10 concurrent requests). Same source "
             "bytes, same server, same bucket.")
    L.append("")
    L.append("| measurement | filestore transfer | aws s3 cp | filestore / aws | ≥ 0.8 |")
    L.append("|---|---|---|---|---|")
    rl, _ = ratio("large_MBps")
    L.append("| %s file, MB/s | %s%s | %s%s | %s | %s |" % (
        big, fmt(m("large_MBps", "filestore")), spread(v("large_MBps", "filestore")),
        fmt(m("large_MBps", "aws")), spread(v("large_MBps", "aws")), fmt(rl, 2), verdict(rl)))
    L.append("| %s file, seconds | %s | %s | | |" % (
        big, fmt(m("large_s", "filestore"), 2), fmt(m("large_s", "aws"), 2)))
    rs, _ = ratio("small_fps")
    L.append("| %s files, files/s (MB/s) | %s%s (%s) | %s%s (%s) | %s | %s |" % (
        small, fmt(m("small_fps", "filestore"), 0), spread(v("small_fps", "filestore"), 0),
        fmt(m("small_MBps", "filestore")), fmt(m("small_fps", "aws"), 0), spread(v("small_fps", "aws"), 0),
        fmt(m("small_MBps", "aws")), fmt(rs, 2), verdict(rs)))
    L.append("| %s files, seconds | %s | %s | | |" % (
        small, fmt(m("small_s", "filestore"), 2), fmt(m("small_s", "aws"), 2)))
    L.append("| CPU seconds of the transferring process (worker / aws), %s ; %s | %s ; %s | %s ; %s | | |" % (
        big, small, fmt(m("large_cpu_s", "filestore"), 2), fmt(m("small_cpu_s", "filestore"), 2),
        fmt(m("large_cpu_s", "aws"), 2), fmt(m("small_cpu_s", "aws"), 2)))
    L.append("| CPU seconds of the S3 server (radosgw+osd+mon) meanwhile, %s ; %s | %s ; %s | %s ; %s | | |" % (
        big, small, fmt(m("large_s3cpu_s", "filestore"), 2), fmt(m("small_s3cpu_s", "filestore"), 2),
        fmt(m("large_s3cpu_s", "aws"), 2), fmt(m("small_s3cpu_s", "aws"), 2)))
    L.append("| CPU seconds of other processes meanwhile (noise), %s ; %s | %s ; %s | %s ; %s | | |" % (
        big, small, fmt(m("large_others_cpu_s", "filestore"), 2), fmt(m("small_others_cpu_s", "filestore"), 2),
        fmt(m("large_others_cpu_s", "aws"), 2), fmt(m("small_others_cpu_s", "aws"), 2)))
    L.append("")
    L.append("For context, filestore end to end (upload into staging through the JSON API, then the transfer; "
             "the wait for the relay in between not counted): %s %s s (upload %s s), %s %s s (upload %s s, "
             "8 clients)." % (
                 big, fmt(m("large_e2e_s", "filestore"), 2), fmt(m("large_upload_s", "filestore"), 2),
                 small, fmt(m("small_e2e_s", "filestore"), 2), fmt(m("small_upload_s", "filestore"), 2)))
    L.append("")
    L.append("## Ranged reads of 1 MiB from the middle of the transferred %s file" % big)
    L.append("")
    L.append("%d GETs per path per round (%d in all), at random offsets in the middle half of the object, "
             "the three paths interleaved in random order at the same offsets, each on a keep-alive connection; "
             "time from sending the request to the last body byte. filestore reads the object with a ranged "
             "GetObject per request. Every body was compared with the source." % (a.range_n, a.range_n * a.rounds))
    L.append("")
    L.append("| path | p50 ms | p99 ms | mean ms | p50 per round, ms |")
    L.append("|---|---|---|---|---|")
    for k, xs in lat_all.items():
        s = sorted(xs)
        L.append("| %s | %s | %s | %s | %s |" % (
            k, fmt(pct(s, 50) * 1e3, 2), fmt(pct(s, 99) * 1e3, 2), fmt(statistics.mean(s) * 1e3, 2),
            ", ".join(fmt(x, 2) for x in v("range_p50_ms", k))))
    L.append("")
    L.append("## Checks")
    L.append("")
    L.append("- filestore: the %s object had the right size and its row said `s3` in %d of %d rounds; all %s "
             "objects with the right total size and every row `s3` in %d of %d rounds; staging empty and the "
             "queue drained after each (waited for before the clock stopped)." % (
                 big, checks["large_s3"], a.rounds, small, checks["small_s3"], a.rounds))
    L.append("- aws: right size in %d of %d rounds (%s), all objects in %d of %d rounds (%s)." % (
        checks["aws_large"], a.rounds, big, checks["aws_small"], a.rounds, small))
    L.append("- Ranged bodies equal to the source: %d of %d." % (
        checks["ranged_bodies"], a.range_n * a.rounds * len(lat_all)))
    L.append("- ETag of filestore's %s object in the last round: %s." % (big, rounds[-1].get("etag", "?")
                                                                        if rounds else "?"))
    L.append("- Problems: %s" % ("; ".join(PROBLEMS) if PROBLEMS else "none"))
    L.append("")
    L.append("## Setup")
    L.append("")
    for k in ("command", "commit", "binary", "cpu", "cpus", "mem", "kernel", "work_fs", "aws_version",
              "ceph_version", "ceph_dir", "rgw_frontends", "rabbitmq_version", "load"):
        if k in info:
            L.append("- %s: %s" % (k, info[k]))
    L.append("- filestore: `serve` (SQLite, staging in the work dir) and `transfer` workers with default "
             "[s3] and [queue] settings apart from endpoint, bucket, credentials and queue names")
    L.append("- elapsed: %.0f s" % elapsed)
    L.append("")
    L.append("## Rounds")
    L.append("")
    L.append("| round | order | %s filestore s | %s aws s | ratio | %s filestore s | %s aws s | ratio |" % (
        big, big, small, small))
    L.append("|---|---|---|---|---|---|---|---|")
    _, rls = ratio("large_MBps")
    _, rss = ratio("small_fps")
    for i, row in enumerate(rounds):
        def at(metric, who):
            xs = v(metric, who)
            return xs[i] if i < len(xs) else None
        L.append("| %d | %s | %s | %s | %s | %s | %s | %s |" % (
            row["round"], " → ".join(row["order"]), fmt(at("large_s", "filestore"), 2), fmt(at("large_s", "aws"), 2),
            fmt(rls[i] if i < len(rls) else None, 2), fmt(at("small_s", "filestore"), 2),
            fmt(at("small_s", "aws"), 2), fmt(rss[i] if i < len(rss) else None, 2)))
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
