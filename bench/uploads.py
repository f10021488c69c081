#!/usr/bin/env python3
"""Measurement driver of bench/uploads.sh (python3 standard library only; drives curl and
the `filestore` command-line client). Reuses the helpers of core.py.

uploads.sh starts one filestore server (embedded default: SQLite + local disk), creates two
users (`bench`, the owner of everything uploaded here, and `other`), signs the CLI in as
`bench`, and hands this script the details. Then:

  large    each round, four fresh 1 GiB random files (no dedup hit possible), one per way
           of uploading, in an order rotating from round to round, `sync` before each:
             put   curl -T to PUT /api/v1/files/... (one streamed request)
             cli   `filestore upload FILE REMOTE --parallel 4`, wall time of the process:
                   a session without SHA-1, 4 chunks in flight while the file is hashed,
                   the instant-upload attempt once it is (refused: new content), the rest
                   of the chunks, then complete with the SHA-1
             raw   the same chunked protocol from python, 4 threads with keep-alive
                   connections, no hashing on the client (the file's SHA-1 is known from
                   its generation, and no X-Chunk-Sha1 is sent): init, PUT parts, complete
             rawsha  the same with an X-Chunk-Sha1 header on each part (python hashes each
                   chunk, the server verifies it): a diagnostic of per-chunk hashing
           MB/s = 1 GiB / wall time; ratios are per round against the single PUT.
  instant  POST /api/v1/instant by the owner, to new paths, for a 1 MiB and a 1 GiB content,
           requests interleaved on one keep-alive connection, in pairs whose order is random
           (seeded: --seed).
  proof    the same contents claimed by `other`: challenge request, answer computed from the
           local file (SHA-1 of nonce || range), proof request -> 201. The entry is deleted
           (untimed) after each round trip, so that `other` never owns the content.
  hashing  the owned 1 GiB file, warm in tmpfs: `sha1sum`, `openssl sha1` (reference) and
           `filestore upload` (an instant link: hashing + one round trip), alternating;
           client hashing time = wall(1 GiB) - wall(1 MiB instant upload by the same CLI),
           which removes process start-up and the round trips; the CLI's own progress line
           for the hashing phase is reported next to it.
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core  # noqa: E402  (gen_random, curl_transfer, RssSampler, cpu_seconds, med, fmt, spread, pct)
from core import MB, MIB, fmt, med, pct, spread  # noqa: E402

PROBLEMS = []
QUIET_ROUND_CPU_S = 0.5  # a round counts as quiet if other processes used less during each upload


def log(msg):
    print("[uploads] %s" % msg, file=sys.stderr, flush=True)


def problem(what):
    log("PROBLEM: " + what)
    PROBLEMS.append(what)


# ---------------------------------------------------------------- HTTP

class Api:
    def __init__(self, host, port, token):
        self.host, self.port = host, port
        self.auth = "Bearer " + token
        self.c = None

    def call(self, method, path, body=None, headers=None, timeout=600):
        """One request on this object's keep-alive connection; (status, bytes)."""
        h = {"Authorization": self.auth}
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
                self.c.request(method, path, body=body, headers=h)
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

    def json(self, method, path, body=None, want=(200, 201)):
        st, data = self.call(method, path, body)
        if st not in want:
            raise RuntimeError("%s %s -> %d %r" % (method, path, st, data[:300]))
        return st, json.loads(data) if data else None

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def fs_target(a, token):
    return dict(name="filestore-sqlite", kind="filestore", host="127.0.0.1", port=a.port, pid=a.server_pid,
                files_prefix="/api/v1/files/", auth="Bearer " + token, data_dir=a.data_dir)


def staging_counts(data_dir):
    """Files left in staging/parts and staging/incoming (both must be empty between uploads)."""
    out = {}
    for sub in ("parts", "incoming"):
        d = os.path.join(data_dir, "staging", sub)
        out[sub] = len(os.listdir(d)) if os.path.isdir(d) else 0
    return out


# ---------------------------------------------------------------- chunked upload, raw protocol

def raw_chunked(a, src, sha1, remote, chunk_sha1=False):
    """init, `parallel` threads PUTting parts (each its own keep-alive connection), complete; with
    `chunk_sha1`, each part carries the X-Chunk-Sha1 header (computed here, as the CLI does), which the
    server verifies. Returns timings of each phase and the completed entry."""
    size = os.path.getsize(src)
    api = Api("127.0.0.1", a.port, a.token)
    t0 = time.perf_counter()
    st, s = api.json("POST", "/api/v1/uploads", dict(path=remote, size=size, sha1=sha1))
    t1 = time.perf_counter()
    if st != 201 or s.get("received"):
        problem("raw chunked init of a fresh file -> %d, received %r (expected 201, none)" % (st, s.get("received")))
    cs, n, uid = s["chunk_size"], s["chunk_count"], s["id"]
    lock = threading.Lock()
    nxt = [1]
    lat, errors = [], []

    def worker():
        w = Api("127.0.0.1", a.port, a.token)
        fd = os.open(src, os.O_RDONLY)
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i > n or errors:
                    break
                data = os.pread(fd, cs, (i - 1) * cs)
                hdr = {"Content-Type": "application/octet-stream"}
                if chunk_sha1:
                    hdr["X-Chunk-Sha1"] = hashlib.sha1(data).hexdigest()
                q0 = time.perf_counter()
                st2, body = w.call("PUT", "/api/v1/uploads/%s/parts/%d" % (uid, i), body=data, headers=hdr)
                lat.append(time.perf_counter() - q0)
                if st2 != 200:
                    errors.append("part %d -> %d %r" % (i, st2, body[:200]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("part worker: %r" % e)
        finally:
            os.close(fd)
            w.close()

    ts = [threading.Thread(target=worker) for _ in range(a.parallel)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t2 = time.perf_counter()
    if errors:
        raise RuntimeError("raw chunked upload: " + errors[0])
    st, e = api.json("POST", "/api/v1/uploads/%s/complete" % uid)
    t3 = time.perf_counter()
    api.close()
    lat.sort()
    return dict(code=st, entry=e, chunk_size=cs, chunk_count=n, init_s=t1 - t0, parts_s=t2 - t1,
                complete_s=t3 - t2, secs=t3 - t0, MBps=size / (t3 - t0) / MB,
                parts_MBps=size / (t2 - t1) / MB, part_p50_ms=pct(lat, 50) * 1e3, part_p99_ms=pct(lat, 99) * 1e3)


# ---------------------------------------------------------------- the command-line client

HASH_LINE = re.compile(r"\(hashing\): 100% of (\d+) bytes, ([0-9.]+) MiB/s")


def cli_upload(a, src, remote, parallel, *extra):
    """Runs `filestore upload` and times it (wall clock, process start to exit)."""
    env = dict(os.environ, FILESTORE_CONFIG_DIR=a.cli_config)
    cmd = [a.cli, "upload", src, remote, "--parallel", str(parallel)] + list(extra)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), out.returncode, out.stderr.strip()[-800:]))
    m = HASH_LINE.search(out.stderr)
    words = out.stdout.split()
    return dict(secs=secs, MBps=os.path.getsize(src) / secs / MB,
                hash_MBps=float(m.group(2)) * MIB / MB if m else None,
                instant="already on the server" in out.stderr,
                sha1=words[-1] if words else None, stdout=out.stdout, stderr=out.stderr)


def timed(cmd):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), out.stderr.strip()))
    return secs, out.stdout.split()[-1] if "openssl" in cmd[0] else out.stdout.split()[0]


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--token", required=True, help="bearer token of the owner (bench)")
    ap.add_argument("--other-token", required=True, help="bearer token of a second user")
    ap.add_argument("--cli", required=True, help="the filestore binary (command-line client)")
    ap.add_argument("--cli-config", required=True, help="FILESTORE_CONFIG_DIR where `filestore login` saved the token")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--src-dir", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--instant-n", type=int, default=200)
    ap.add_argument("--hash-reps", type=int, default=5)
    ap.add_argument("--info", default="")
    ap.add_argument("--seed", type=int, default=1, help="seed of the instant part's request order")
    ap.add_argument("--parts", default="large,instant,hashing",
                    help="comma-separated parts to run (large, instant, hashing); without `large`, the "
                         "large content for the other parts is generated and PUT untimed")
    a = ap.parse_args()
    a.parts = set(a.parts.split(","))
    if not a.parts or a.parts - {"large", "instant", "hashing"}:
        ap.error("--parts takes large, instant and/or hashing")
    started = time.time()
    nbytes = a.large_mib * MIB
    fs = fs_target(a, a.token)
    owner = Api("127.0.0.1", a.port, a.token)
    other = Api("127.0.0.1", a.port, a.other_token)
    for d in ("up", "inst", "hash"):
        owner.json("POST", "/api/v1/dirs/%s?parents=true" % d)
    R = {}  # metric -> [per-round values]
    checks = []

    def rec(metric, v):
        R.setdefault(metric, []).append(v)

    def after_upload(what):
        c = staging_counts(a.data_dir)
        if c["parts"] or c["incoming"]:
            problem("%s left %d files in staging/parts and %d in staging/incoming" % (what, c["parts"], c["incoming"]))

    # ------------------------------------------------------------ 1 GiB: PUT vs chunked
    owned_src, owned_sha1 = None, None
    ways = ["put", "cli", "raw", "rawsha"]
    for r in range(a.rounds if "large" in a.parts else 0):
        log("round %d/%d" % (r + 1, a.rounds))
        rec("quiet_wait_s", core.wait_quiet([a.server_pid], "round %d" % (r + 1), log)[0])
        k = r % len(ways)
        for way in ways[k:] + ways[:k]:
            src = os.path.join(a.src_dir, "r%d-%s.bin" % (r, way))
            sha1 = core.gen_random(src, nbytes)
            remote = "/up/r%d-%s.bin" % (r, way)
            os.sync()
            pids = [a.server_pid]
            cpu0 = core.cpu_seconds(pids)
            rss0 = core.status_kib(a.server_pid, "VmRSS") / 1024
            busy0, own0 = core.busy_cpu_s(), core.own_cpu_s()
            w0 = core.disk_written(a.data_dir)
            sampler = core.RssSampler(pids)
            sampler.start()
            try:
                if way == "put":
                    resp = os.path.join(a.work_dir, "resp.json")
                    m = core.curl_transfer(fs, remote.lstrip("/"), put_src=src, resp_file=resp)
                    try:
                        got = json.load(open(resp)).get("sha1")
                    except ValueError:
                        got = None
                    ok = m["code"] == 201 and got == sha1 and m["bytes"] == nbytes
                    detail = "HTTP %d" % m["code"]
                elif way == "cli":
                    m = cli_upload(a, src, remote, a.parallel)
                    ok = m["sha1"] == sha1 and not m["instant"]
                    detail = "instant=%s" % m["instant"]
                    if m["hash_MBps"]:
                        rec("cli_upload_hash_MBps", m["hash_MBps"])
                        rec("cli_hash_s", nbytes / (m["hash_MBps"] * MB))
                else:
                    m = raw_chunked(a, src, sha1, remote, chunk_sha1=(way == "rawsha"))
                    ok = m["code"] == 201 and (m["entry"] or {}).get("sha1") == sha1
                    detail = "HTTP %d, %d chunks of %d B" % (m["code"], m["chunk_count"], m["chunk_size"])
                    for key in ("init_s", "parts_s", "complete_s", "parts_MBps", "part_p50_ms", "part_p99_ms"):
                        rec(way + "_" + key, m[key])
                    rec("raw_chunks", m["chunk_count"])
                    rec("raw_chunk_mib", m["chunk_size"] / MIB)
            finally:
                sampler.stop()
            cpu = core.cpu_seconds(pids) - cpu0
            others = core.busy_cpu_s() - busy0 - (core.own_cpu_s() - own0) - cpu
            if not ok:
                problem("%s upload round %d did not store the file as expected (%s; sha1 %s)" % (way, r + 1, detail, sha1))
            after_upload("%s upload round %d" % (way, r + 1))
            rec(way + "_MBps", m["MBps"])
            rec(way + "_s", m["secs"])
            rec(way + "_server_cpu_s", cpu)
            rec(way + "_others_cpu_s", max(0.0, others))
            rec(way + "_disk_mib", core.mib_delta(w0, core.disk_written(a.data_dir)))
            rec(way + "_rss_peak_mib", sampler.peak_kib / 1024)
            rec(way + "_rss_before_mib", rss0)
            extra = ""
            if way in ("raw", "rawsha"):
                extra = "  (init %.3fs, parts %.2fs = %.0f MB/s, complete %.2fs)" % (
                    m["init_s"], m["parts_s"], m["parts_MBps"], m["complete_s"])
            elif way == "cli" and m["hash_MBps"]:
                extra = "  (hashing phase %.0f MB/s by its progress line)" % m["hash_MBps"]
            log("  %-6s %7.1f MB/s  %.2fs  %s  server cpu %.2fs  rss peak %.1f MiB  disk written %s MiB  "
                "cpu of others %.2fs%s" % (way, m["MBps"], m["secs"], detail, cpu, sampler.peak_kib / 1024,
                                            fmt(R[way + "_disk_mib"][-1], 0), max(0.0, others), extra))
            if r == 0 and way == "raw":
                v = core.verify_get(fs, remote.lstrip("/"), sha1)
                checks.append("Full GET of the round-1 raw chunked upload hashes to the source SHA-1: %s."
                              % ("yes" if v else "NO"))
                if not v:
                    problem("GET of the chunked upload %s returned different bytes" % remote)
            if way == "put" and r == a.rounds - 1:
                owned_src, owned_sha1 = src, sha1  # kept for the instant and hashing parts
            else:
                os.unlink(src)
        for way in ways:
            rec(way + "_ratio", R[way + "_MBps"][-1] / R["put_MBps"][-1])

    if owned_src is None:  # the large part did not run: the owned content is PUT untimed
        owned_src = os.path.join(a.src_dir, "owned.bin")
        owned_sha1 = core.gen_random(owned_src, nbytes)
        m = core.curl_transfer(fs, "up/owned.bin", put_src=owned_src)
        if m["code"] != 201:
            problem("PUT of the large source -> %d" % m["code"])

    # ------------------------------------------------------------ instant upload
    small_src = os.path.join(a.src_dir, "small.bin")
    small_sha1 = core.gen_random(small_src, MIB)
    st, _ = owner.call("PUT", "/api/v1/files/inst/small-src.bin", body=open(small_src, "rb").read(),
                       headers={"Content-Type": "application/octet-stream"})
    if st != 201:
        problem("PUT of the 1 MiB source -> %d" % st)
    big_key = "1GiB" if a.large_mib == 1024 else "%dMiB" % a.large_mib
    sizes = [("1MiB", small_src, small_sha1, MIB), (big_key, owned_src, owned_sha1, nbytes)]

    inst, proof = {}, {}
    if "instant" in a.parts:
        inst, proof = instant_part(a, owner, other, sizes, nbytes, owned_sha1, checks)

    # ------------------------------------------------------------ client hashing vs sha1sum
    H = {}
    if "hashing" in a.parts:
        H = hashing_part(a, owned_src, owned_sha1, small_src, nbytes)
    os.unlink(owned_src)
    os.unlink(small_src)

    hwm = core.status_kib(a.server_pid, "VmHWM") / 1024
    report = render(a, R, inst, proof, H, checks, hwm, time.time() - started, big_key)
    print(report)
    with open(a.out, "w") as f:
        f.write(report)
    log("report written to %s" % a.out)
    return 1 if PROBLEMS else 0


def instant_part(a, owner, other, sizes, nbytes, owned_sha1, checks):
    """Instant upload by the owner (interleaved sizes) and by another user with a proof."""
    core.wait_quiet([a.server_pid], "instant", log)
    log("instant upload by the owner: %d requests per size, interleaved" % a.instant_n)
    lat = {k: [] for k, *_ in sizes}
    bad = []
    # Which size goes first in each pair is random (seeded). With a fixed pattern, a server
    # cost that recurs every k requests lands on the same size whenever k is a multiple of
    # the pattern's period: SQLite's WAL checkpoint, every ~100 commits, did that.
    rng = random.Random(a.seed)
    for i in range(-5, a.instant_n):  # 5 warm-up requests per size, not counted
        for key, _src, sha1, size in rng.sample(sizes, 2):
            body = dict(path="/inst/%s-%d.bin" % (key, i), size=size, sha1=sha1)
            t0 = time.perf_counter()
            st, data = owner.call("POST", "/api/v1/instant", body)
            dt = time.perf_counter() - t0
            if st != 201 or not json.loads(data).get("linked"):
                bad.append("%s -> %d %r" % (key, st, data[:200]))
            elif i >= 0:
                lat[key].append(dt)
    if bad:
        problem("instant upload by the owner: %d of %d requests not linked (first: %s)"
                % (len(bad), 2 * (a.instant_n + 5), bad[0]))
    inst = {}
    for key in lat:
        xs = sorted(lat[key])
        inst[key] = dict(p50=pct(xs, 50) * 1e3, p99=pct(xs, 99) * 1e3, max=xs[-1] * 1e3 if xs else None, n=len(xs))
        log("  owner %-5s p50 %.2f ms  p99 %.2f ms  max %.2f ms" % (key, inst[key]["p50"], inst[key]["p99"], inst[key]["max"]))

    log("instant upload by another user (challenge, proof): %d per size, interleaved" % a.instant_n)
    plat = {k: dict(total=[], challenge=[], proof=[]) for k, *_ in sizes}
    bad = []
    fds = {key: os.open(src, os.O_RDONLY) for key, src, *_ in sizes}
    lengths = set()
    for i in range(-5, a.instant_n):
        for key, _src, sha1, size in rng.sample(sizes, 2):
            path = "/proof-%s-%d.bin" % (key, i)
            t0 = time.perf_counter()
            st, data = other.call("POST", "/api/v1/instant", dict(path=path, size=size, sha1=sha1))
            t1 = time.perf_counter()
            ch = json.loads(data).get("challenge") if st == 200 else None
            if not ch:
                bad.append("%s challenge request -> %d %r" % (key, st, data[:200]))
                continue
            lengths.add(ch["length"])
            h = hashlib.sha1(ch["nonce"].encode("ascii"))
            h.update(os.pread(fds[key], ch["length"], ch["offset"]))
            t2 = time.perf_counter()
            st, data = other.call("POST", "/api/v1/instant",
                                  dict(path=path, size=size, sha1=sha1, nonce=ch["nonce"], proof=h.hexdigest()))
            t3 = time.perf_counter()
            if st != 201 or not json.loads(data).get("linked"):
                bad.append("%s proof -> %d %r" % (key, st, data[:200]))
                continue
            if i >= 0:
                plat[key]["total"].append(t3 - t0)
                plat[key]["challenge"].append(t1 - t0)
                plat[key]["proof"].append(t3 - t2)
            st, data = other.call("DELETE", "/api/v1/files" + path)  # untimed: `other` must not own it
            if st not in (200, 204):
                bad.append("delete %s -> %d" % (path, st))
    if bad:
        problem("instant upload with proof: %d failures (first: %s)" % (len(bad), bad[0]))
    # a wrong proof must be refused, and leave nothing
    st, data = other.call("POST", "/api/v1/instant", dict(path="/wrong.bin", size=nbytes, sha1=owned_sha1))
    ch = json.loads(data).get("challenge") or {}
    st, data = other.call("POST", "/api/v1/instant", dict(path="/wrong.bin", size=nbytes, sha1=owned_sha1,
                                                          nonce=ch.get("nonce", ""), proof="0" * 40))
    refused = st == 200 and json.loads(data).get("linked") is False
    st2, _ = other.call("GET", "/api/v1/stat/wrong.bin")
    checks.append("A wrong proof for the large content is refused (HTTP %d, linked=false) and creates no entry "
                  "(stat -> %d): %s." % (st, st2, "yes" if refused and st2 == 404 else "NO"))
    if not (refused and st2 == 404):
        problem("a wrong proof was not refused cleanly (HTTP %d %r, stat %d)" % (st, data[:200], st2))
    checks.append("Challenge range lengths seen: %s bytes." % ", ".join(str(x) for x in sorted(lengths)))
    proof = {}
    for key in plat:
        proof[key] = {}
        for part, xs in plat[key].items():
            xs = sorted(xs)
            proof[key][part] = dict(p50=pct(xs, 50) * 1e3, p99=pct(xs, 99) * 1e3, n=len(xs))
        log("  other %-5s round trip p50 %.2f ms p99 %.2f ms (challenge p50 %.2f, proof p50 %.2f)"
            % (key, proof[key]["total"]["p50"], proof[key]["total"]["p99"], proof[key]["challenge"]["p50"],
               proof[key]["proof"]["p50"]))
    for fd in fds.values():
        os.close(fd)
    return inst, proof


def hashing_part(a, owned_src, owned_sha1, small_src, nbytes):
    """`filestore upload` (instant) of the owned large file vs sha1sum and openssl."""
    core.wait_quiet([a.server_pid], "hashing", log)
    log("hashing: sha1sum, openssl sha1, filestore upload (instant) of the owned 1 GiB file, %d reps" % a.hash_reps)
    H = {}

    def hrec(k, v):
        H.setdefault(k, []).append(v)

    open(owned_src, "rb").read(1)  # tmpfs: always in memory
    for rep in range(a.hash_reps):
        steps = ["sha1sum", "openssl", "cli"]
        k = rep % 3
        for step in steps[k:] + steps[:k]:
            if step == "sha1sum":
                secs, got = timed(["sha1sum", owned_src])
                hrec("sha1sum_MBps", nbytes / secs / MB)
            elif step == "openssl":
                secs, got = timed(["openssl", "sha1", owned_src])
                hrec("openssl_MBps", nbytes / secs / MB)
            else:
                # --hash-first: the whole file is hashed before anything is sent (by default
                # a large file's chunks go out while it is hashed), so the wall clock of
                # an instant upload is the hashing plus a few round trips.
                small = cli_upload(a, small_src, "/hash/small-%d.bin" % rep, a.parallel, "--hash-first")
                big = cli_upload(a, owned_src, "/hash/big-%d.bin" % rep, a.parallel, "--hash-first")
                if not (small["instant"] and big["instant"]):
                    problem("hashing rep %d: the CLI upload of owned content was not instant" % (rep + 1))
                got = big["sha1"]
                hash_s = big["secs"] - small["secs"]
                hrec("cli_wall_1g_s", big["secs"])
                hrec("cli_wall_1m_s", small["secs"])
                hrec("cli_MBps", (nbytes - MIB) / hash_s / MB)
                if big["hash_MBps"]:
                    hrec("cli_progress_MBps", big["hash_MBps"])
            if got != owned_sha1:
                problem("%s gave SHA-1 %s, expected %s" % (step, got, owned_sha1))
        hrec("ratio", H["cli_MBps"][-1] / H["sha1sum_MBps"][-1])
        log("  rep %d: sha1sum %.0f MB/s, openssl %.0f MB/s, filestore client %.0f MB/s (wall %.3fs - %.3fs; "
            "progress line %s MB/s)" % (rep + 1, H["sha1sum_MBps"][-1], H["openssl_MBps"][-1], H["cli_MBps"][-1],
                                        H["cli_wall_1g_s"][-1], H["cli_wall_1m_s"][-1],
                                        fmt(H.get("cli_progress_MBps", [None])[-1], 0)))
    return H


def verdict(ok):
    return "**met**" if ok else "**not met**"


def render(a, R, inst, proof, H, checks, hwm, elapsed, big_key):
    info = json.loads(a.info) if a.info else {}
    big = "1 GiB" if a.large_mib == 1024 else "%d MiB" % a.large_mib
    L = []
    L.append("# filestore upload benchmark — %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    L.append("")
    if R:
        L.append("One filestore server, embedded default (SQLite + local disk), release build, loopback. "
                 "%d rounds, order of the four uploads rotating; medians, (min–max) in brackets; ratios are the "
                 "median of per-round ratios to the single PUT of the same round. MB = 10^6 bytes." % a.rounds)
    else:
        L.append("One filestore server, embedded default (SQLite + local disk), release build, loopback.")
    if a.parts != {"large", "instant", "hashing"}:
        L.append("")
        L.append("Parts run: %s (`--only`)%s." % (", ".join(sorted(a.parts)), "" if "large" in a.parts else
                                                  "; the large content the other parts use was PUT untimed"))
    L.append("")
    if R:
        L.append("## %s upload: single streamed PUT vs chunked (%d chunks in flight)" % (big, a.parallel))
        L.append("")
        L.append("| upload of a fresh %s file | MB/s | seconds | / single PUT | server CPU s | server peak RSS MiB "
                 "| disk written MiB |" % big)
        L.append("|---|---|---|---|---|---|---|")
        rows = [("put", "single PUT, `curl -T` (server hashes while receiving)"),
                ("cli", "`filestore upload --parallel %d` (end to end, incl. local SHA-1)" % a.parallel),
                ("raw", "chunked protocol from python, %d parallel PUTs, no client hashing" % a.parallel),
                ("rawsha", "same, each part with X-Chunk-Sha1 (python hashes each chunk, the server verifies it)")]
        for way, label in rows:
            L.append("| %s | %s%s | %s%s | %s%s | %s | %s | %s |" % (
                label, fmt(med(R[way + "_MBps"])), spread(R[way + "_MBps"]), fmt(med(R[way + "_s"]), 2),
                spread(R[way + "_s"], 2), fmt(med(R[way + "_ratio"]), 2), spread(R[way + "_ratio"], 2),
                fmt(med(R[way + "_server_cpu_s"]), 2), "%s (%s before)" % (fmt(med(R[way + "_rss_peak_mib"])),
                                                                        fmt(med(R[way + "_rss_before_mib"]))),
                fmt(med(R[way + "_disk_mib"]), 0)))
        L.append("")
        for way, label in (("raw", "Raw chunked flow"), ("rawsha", "Raw flow with X-Chunk-Sha1")):
            L.append("%s, phases (medians): init %s s; %s chunks of %s MiB sent in %s s%s (%s MB/s; per-part "
                     "p50 %s ms, p99 %s ms); complete (server hashes what its running hash has not reached yet, then commits) "
                     "%s s%s." % (label, fmt(med(R[way + "_init_s"]), 3), fmt(med(R["raw_chunks"]), 0),
                                  fmt(med(R["raw_chunk_mib"]), 1), fmt(med(R[way + "_parts_s"]), 2),
                                  spread(R[way + "_parts_s"], 2), fmt(med(R[way + "_parts_MBps"])),
                                  fmt(med(R[way + "_part_p50_ms"])), fmt(med(R[way + "_part_p99_ms"])),
                                  fmt(med(R[way + "_complete_s"]), 2), spread(R[way + "_complete_s"], 2)))
            L.append("")
        if R.get("cli_upload_hash_MBps"):
            L.append("CLI: its whole-file SHA-1 before the first byte is sent ran at %s MB/s (its progress line), "
                     "i.e. %s s of its %s s; the remaining %s s (instant attempt, %d chunks, "
                     "complete) compare with the raw flow's %s s, %s s with X-Chunk-Sha1." % (
                         fmt(med(R["cli_upload_hash_MBps"]), 0), fmt(med(R["cli_hash_s"]), 2), fmt(med(R["cli_s"]), 2),
                         fmt(med([x - y for x, y in zip(R["cli_s"], R["cli_hash_s"])]), 2), med(R["raw_chunks"]),
                         fmt(med(R["raw_s"]), 2), fmt(med(R["rawsha_s"]), 2)))
        quiet = [i for i in range(len(R["put_MBps"]))
                 if all(R[w + "_others_cpu_s"][i] < QUIET_ROUND_CPU_S for w in ("put", "cli", "raw", "rawsha"))]
        if quiet:
            def qm(k):
                return med([R[k][i] for i in quiet])
            L.append("Rounds in which other processes used < %.1f CPU-s during each of the uploads: %s. Medians "
                     "over those: single PUT %s MB/s, CLI %s MB/s (%s×), raw %s MB/s (%s×), raw with X-Chunk-Sha1 "
                     "%s MB/s (%s×)." % (
                         QUIET_ROUND_CPU_S, ", ".join("r%d" % (i + 1) for i in quiet), fmt(qm("put_MBps")),
                         fmt(qm("cli_MBps")), fmt(qm("cli_ratio"), 2), fmt(qm("raw_MBps")), fmt(qm("raw_ratio"), 2),
                         fmt(qm("rawsha_MBps")), fmt(qm("rawsha_ratio"), 2)))
        else:
            L.append("No round had fewer than %.1f CPU-s used by other processes during each of its uploads: "
                     "the machine was busy with other work throughout (see the per-round table)." % QUIET_ROUND_CPU_S)
        cli_r, raw_r, rs_r = med(R["cli_ratio"]), med(R["raw_ratio"]), med(R["rawsha_ratio"])
        L.append("")
        L.append("Target chunked ≥ 0.8× single PUT: CLI %s (%s), raw protocol %s (%s), raw with X-Chunk-Sha1 %s (%s)."
                 % (fmt(cli_r, 2), verdict(cli_r >= 0.8), fmt(raw_r, 2), verdict(raw_r >= 0.8), fmt(rs_r, 2),
                    verdict(rs_r >= 0.8)))
        L.append("")

    if inst:
        L.append("## Instant upload (`POST /api/v1/instant`), %d requests per size to new paths" % a.instant_n)
        L.append("")
        L.append("| who | content | p50 ms | p99 ms | max ms |")
        L.append("|---|---|---|---|---|")
        for key in ("1MiB", big_key):
            L.append("| owner (linked at once) | %s | %s | %s | %s |" % (
                key, fmt(inst[key]["p50"], 2), fmt(inst[key]["p99"], 2), fmt(inst[key]["max"], 2)))
        for key in ("1MiB", big_key):
            p = proof[key]
            L.append("| other user: challenge + answer + proof, whole round trip | %s | %s | %s | |" % (
                key, fmt(p["total"]["p50"], 2), fmt(p["total"]["p99"], 2)))
            L.append("| · of which the challenge request / the proof request | %s | %s / %s | %s / %s | |" % (
                key, fmt(p["challenge"]["p50"], 2), fmt(p["proof"]["p50"], 2), fmt(p["challenge"]["p99"], 2),
                fmt(p["proof"]["p99"], 2)))
        r50 = inst[big_key]["p50"] / inst["1MiB"]["p50"]
        r99 = inst[big_key]["p99"] / inst["1MiB"]["p99"]
        q50 = proof[big_key]["total"]["p50"] / proof["1MiB"]["total"]["p50"]
        q99 = proof[big_key]["total"]["p99"] / proof["1MiB"]["total"]["p99"]
        within = all(0.5 <= x <= 2 for x in (r50, r99))  # "within 2x of each other", either way
        L.append("")
        L.append(big + " / 1 MiB: owner p50 %.2f×, p99 %.2f×; other user round trip p50 %.2f×, p99 %.2f×. "
                 "Target (owner, p50 and p99 within 2× of each other, either way): %s." % (
                     r50, r99, q50, q99, verdict(within)))
        L.append("")

    if H:
        L.append("## Client-side hashing of a %s file (warm: the file is in tmpfs)" % big)
        L.append("")
        L.append("| hasher | MB/s | / sha1sum |")
        L.append("|---|---|---|")
        sm = med(H["sha1sum_MBps"])
        L.append("| `sha1sum` (GNU coreutils) | %s%s | 1 |" % (fmt(sm, 0), spread(H["sha1sum_MBps"], 0)))
        L.append("| `filestore upload` hashing: wall(%s instant upload) − wall(1 MiB instant upload) | %s%s | %s%s |"
                 % (big, fmt(med(H["cli_MBps"]), 0), spread(H["cli_MBps"], 0), fmt(med(H["ratio"]), 2),
                    spread(H["ratio"], 2)))
        if H.get("cli_progress_MBps"):
            pr = [x / y for x, y in zip(H["cli_progress_MBps"], H["sha1sum_MBps"])]
            L.append("| `filestore upload` hashing, its own progress line | %s%s | %s |" % (
                fmt(med(H["cli_progress_MBps"]), 0), spread(H["cli_progress_MBps"], 0), fmt(med(pr), 2)))
        orr = [x / y for x, y in zip(H["openssl_MBps"], H["sha1sum_MBps"])]
        L.append("| `openssl sha1` (reference) | %s%s | %s |" % (fmt(med(H["openssl_MBps"]), 0),
                                                              spread(H["openssl_MBps"], 0), fmt(med(orr), 2)))
        L.append("")
        L.append("CLI wall times: %s s for the %s instant upload, %s s for the 1 MiB one (medians over %d reps). "
                 "Target client ≥ 0.8× sha1sum: %s." % (
                     fmt(med(H["cli_wall_1g_s"]), 3), big, fmt(med(H["cli_wall_1m_s"]), 3), a.hash_reps,
                     verdict(med(H["ratio"]) >= 0.8)))
        L.append("")

    L.append("## Checks")
    L.append("")
    L.append("- Every fresh upload returned the source SHA-1 and left staging/parts and staging/incoming empty "
             "(checked after each): %s." % ("yes" if not any("staging" in p or "did not store" in p
                                                              for p in PROBLEMS) else "NO"))
    for c in checks:
        L.append("- " + c)
    L.append("- filestore VmHWM (lifetime peak RSS) at the end: %.1f MiB." % hwm)
    L.append("- Problems: %s" % ("none" if not PROBLEMS else ""))
    for p in PROBLEMS:
        L.append("  - %s" % p)
    L.append("")

    if R:
        L.append("## Per round")
        L.append("")
        L.append("| metric | " + " | ".join("r%d" % (i + 1) for i in range(a.rounds)) + " |")
        L.append("|---|" + "---|" * a.rounds)
        for k in ("quiet_wait_s", "put_MBps", "cli_MBps", "raw_MBps", "rawsha_MBps", "cli_ratio", "raw_ratio",
                  "rawsha_ratio", "cli_hash_s", "raw_parts_s", "raw_complete_s", "rawsha_parts_s", "rawsha_complete_s",
                  "put_server_cpu_s", "cli_server_cpu_s", "raw_server_cpu_s", "rawsha_server_cpu_s", "put_others_cpu_s",
                  "cli_others_cpu_s", "raw_others_cpu_s", "rawsha_others_cpu_s", "put_disk_mib", "cli_disk_mib",
                  "raw_disk_mib", "rawsha_disk_mib"):
            L.append("| %s | %s |" % (k, " | ".join(fmt(x, 2 if x is not None and x < 100 else 0) for x in R.get(k, []))))
        L.append("")
    if H:
        L.append("| hashing rep | " + " | ".join(str(i + 1) for i in range(a.hash_reps)) + " |")
        L.append("|---|" + "---|" * a.hash_reps)
        for k in ("sha1sum_MBps", "openssl_MBps", "cli_MBps", "cli_progress_MBps", "cli_wall_1g_s", "cli_wall_1m_s"):
            if k in H:
                L.append("| %s | %s |" % (k, " | ".join(fmt(x, 3 if x < 10 else 0) for x in H[k])))
        L.append("")

    L.append("## How it was measured")
    L.append("")
    L.append("- Server: `filestore serve` with no configuration (SQLite, content under the data dir on %s; "
             "chunk size %s), users `bench` and `other` created with `filestore user add`; the CLI signed in "
             "with `filestore login --password-stdin` into its own FILESTORE_CONFIG_DIR." % (
                 info.get("work_fs", "?"), info.get("chunk_size", "server default")))
    L.append("- Sources: fresh AES-CTR random files in %s (tmpfs), so no upload is a dedup hit; `sync` before "
             "each timed upload; server CPU from /proc, RSS sampled every 10 ms. `*_others_cpu_s` in the "
             "per-round table is the CPU time the machine spent on processes other than the server, this "
             "script and its children (kernel writeback threads included) during that upload (from /proc/stat): a noise indicator on a shared "
             "machine. Disk written: sectors-written counter of the data dir's device over the upload." % a.src_dir)
    L.append("- The single PUT writes the bytes once while hashing them (SHA-1; the SHA-256 only on a dedup hit) on one writer thread, "
             "then fsyncs. A chunked upload writes each chunk at its offset in a sparse file and fsyncs it "
             "before recording it; recorded chunks are hashed in order while later ones arrive, and `complete` "
             "hashes what is left (SHA-1) before committing. The CLI sends the chunks of a file of 16 MiB or more "
             "while it hashes it (a session whose SHA-1 is declared at `complete`), tries the instant upload "
             "once the hash is known, and sends no X-Chunk-Sha1; the hashing part runs it with `--hash-first`.")
    L.append("- Before each round, and before the instant and hashing parts, the script waits (up to %.0f s, "
             "`BENCH_QUIET_WAIT`) for a 1 s window in which other processes use < %.2f CPU." % (
                 core.QUIET_WAIT_S, core.QUIET_CPU))
    L.append("- Instant: one keep-alive connection, 5 warm-up requests per size not counted, 1 MiB and 1 GiB "
             "requests interleaved, which of the two goes first in each pair random (seed %d), so that a cost "
             "recurring every k requests on the server cannot land on one size only. The proof round trip "
             "includes the client's work (pread of the challenged range from tmpfs and SHA-1 of nonce || "
             "range); the DELETE after each is not timed." % a.seed)
    L.append("- Hashing: each rep runs `sha1sum`, `openssl sha1` and the two CLI uploads in rotating order on "
             "the same file; the CLI's ratio is per rep against that rep's sha1sum.")
    L.append("")
    L.append("## Run")
    L.append("")
    for k in ("command", "commit", "binary", "cpu", "cpus", "mem", "kernel", "work_fs", "load"):
        if k in info:
            L.append("- %s: `%s`" % (k, info[k]))
    L.append("- python: `%s`, total measuring time %.0f s" % (platform.python_version(), elapsed))
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
