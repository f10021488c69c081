#!/usr/bin/env python3
"""Measurement driver of bench/dav.sh (python3 standard library, curl and wrk; helpers from core.py).

dav.sh starts the servers and hands this script a JSON description of them (--targets): filestore's
/dav/ endpoint and the peers (nginx + dav_ext, Apache mod_dav, rclone serve webdav), all with HTTP
Basic auth on every request. Each round, with the server order rotating from round to round:

  large     a fresh 1 GiB random file (so filestore's dedup gets no free hit) is PUT to each server
            with `curl -T` (streamed, `Expect:` suppressed), then downloaded with curl -o /dev/null
            (timed), then downloaded again untimed and its SHA-1 checked.
  small     per server, in a new collection: N x 4 KiB fresh random files PUT by 16 python clients
            (2 processes x 8 threads, keep-alive), which also populates the collection; then
  propfind  PROPFIND Depth: 1 of the collection (N + 1 responses; 1 warm-up, median of 5);
  wrkget    GET of those files round-robin by wrk (C client, 2 threads, 16 connections, fixed time);
  wrkput    PUT of new unique 4 KiB random files by wrk (bench/wrk_put.lua) into a new subcollection.

Everything is deleted after the last round (untimed), not in between: freeing thousands of files
slows the next server's file creations (see below; `discard` on this machine's ext4 adds to it).

Before the first round, everything is written back (`sync`) and the run waits BENCH_INODE_SETTLE
seconds (default 61). This machine's / is ext4 without a journal, and there ext4 does not reuse an
inode freed less than 60 s ago (5 minutes while its inode table block is dirty): each new file's
allocation scans past every such inode of its block group from the start, looking up each one's
inode table block (recently_deleted() in fs/ext4/ialloc.c). After a mass delete (the previous
run's cleanup, another benchmark's, a test suite's temp dirs), creating a file cost about five
times the kernel CPU for that minute (0.20 against 0.04 ms per file, 16 threads creating 4 KiB
files; `perf` had 22-40 % of filestore's samples in find_inode_bit/recently_deleted), and the
server measured first paid it: in round 1 that is always filestore. A server's own run deletes
nothing, so once is enough. Deletes by other processes during the run (a test suite) still count.

`sync` runs before each server's 1 GiB PUT and before each of its 4 KiB PUT loads, so that no
server starts while the previous one's dirty pages are still being written back.
The servers' RSS (process tree, sampled every 10 ms) and CPU are recorded for every measurement.
Once, before the rounds: filestore's credential cache, as the time of a first Basic-auth request
of a second user (one argon2 verification) next to the median of cached requests; and over the
whole run the hit/miss counters of /metrics.

Medians over rounds, per-round ratios to nginx (both measured back to back in the same round), the
targets of issue 5, and the raw rounds are written as Markdown to stdout and to --out.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core  # noqa: E402  (bench/core.py: /proc sampling, random data, python client, wrk driver)

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 1e6
MIB = 1 << 20
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                 b'<D:propfind xmlns:D="DAV:"><D:prop>'
                 b'<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>'
                 b'</D:prop></D:propfind>')
PROPFIND_REPS = 5
SHORT = dict(large_put="1 GiB PUT", large_get="1 GiB GET", small_get="4 KiB GET", small_put="4 KiB PUT",
             propfind="PROPFIND", small_put_py="4 KiB PUT (python)")

# figure -> (label, unit, higher is better, target ratio to nginx or None)
FIGURES = [
    ("large_put", "1 GiB PUT", "MB/s", True, 0.7),
    ("large_get", "1 GiB GET", "MB/s", True, 0.8),
    ("small_get", "4 KiB GET, wrk 16 conns", "req/s", True, 0.5),
    ("small_put", "4 KiB PUT of new files, wrk 16 conns", "files/s", True, 0.6),
    ("propfind", "PROPFIND depth 1, %d entries", "ms", False, 2.5),
    ("small_put_py", "4 KiB PUT of new files, 16 python clients", "files/s", True, None),
]


def log(msg):
    print("[dav] %s" % msg, file=sys.stderr, flush=True)


def tree_pids(t):
    """The server's process and all its descendants (nginx and Apache workers)."""
    out, todo = [], [t["pid"]]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(core.children(p))
    return out


class Measure:
    """RSS peak, server CPU and other processes' CPU around one measurement."""

    def __init__(self, t):
        self.pids = tree_pids(t)

    def __enter__(self):
        self.cpu0 = core.cpu_seconds(self.pids)
        self.others = core.Others(self.pids)
        self.rss = core.RssSampler(self.pids)
        self.rss.start()
        return self

    def __exit__(self, *exc):
        self.rss.stop()
        self.res = dict(rss_peak_mib=self.rss.peak_kib / 1024, server_cpu_s=core.cpu_seconds(self.pids) - self.cpu0,
                        others_cpu_s=self.others.cpu_s())
        return False


def request(t, method, rel, body=None, headers=None, auth=None):
    c = core.Conn(t["host"], t["port"])
    h = {"Authorization": auth or t["auth"]}
    h.update(headers or {})
    try:
        return c.request(method, t["files_prefix"] + rel, body, h)
    finally:
        c.close()


def must(status, ok, what):
    if status not in ok:
        raise RuntimeError("%s -> %s" % (what, status))


def curl(t, rel, put_src=None):
    cmd = ["curl", "-sS", "-o", os.devnull, "-w", "%{http_code} %{time_total} %{size_upload} %{size_download}",
           "-H", "Authorization: " + t["auth"]]
    if put_src:
        # no Expect: 100-continue handshake, so that no server is charged a wait for it
        cmd += ["-T", put_src, "-H", "Expect:", "-H", "Content-Type: application/octet-stream"]
    cmd.append(core.url(t, rel))
    with Measure(t) as m:
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("curl %s failed (%d): %s" % (" ".join(cmd), out.returncode, out.stderr.strip()))
    code, secs, up, down = out.stdout.split()
    nbytes = int(float(up if put_src else down))
    secs = float(secs)
    return dict(m.res, code=int(code), secs=secs, bytes=nbytes, MBps=nbytes / secs / MB if secs else 0)


def count_responses(xml):
    return len(re.findall(rb"<(?:[A-Za-z0-9]+:)?response[\s>]", xml))


def propfind(t, rel, expect):
    c = core.Conn(t["host"], t["port"])
    h = {"Authorization": t["auth"], "Depth": "1", "Content-Type": "application/xml"}
    times, n, size = [], 0, 0
    with Measure(t) as m:
        for i in range(PROPFIND_REPS + 1):
            t0 = time.perf_counter()
            st, data = c.request("PROPFIND", t["files_prefix"] + rel, PROPFIND_BODY, h)
            dt = time.perf_counter() - t0
            must(st, (207,), "PROPFIND %s on %s" % (rel, t["name"]))
            n, size = count_responses(data), len(data)
            if i:  # the first one warms up
                times.append(dt)
    c.close()
    if n != expect:
        core.problem("%s: PROPFIND Depth 1 returned %d responses, expected %d" % (t["name"], n, expect))
    return dict(m.res, ms=statistics.median(times) * 1e3, entries=n, bytes=size)


def wrk(t, rel, secs, conc, size, lua, count=None):
    if count is not None:
        os.environ["WRK_N"] = str(count)  # core.wrk_put passes os.environ on to wrk
    with Measure(t) as m:
        r = core.wrk_put(t, rel, secs, conc, size, lua)
    r["per_s"] = r.pop("files_per_s")
    r.update(m.res)
    r["cpu_ms_per_req"] = m.res["server_cpu_s"] / r["reqs"] * 1e3 if r["reqs"] else None
    if r["errors"]:
        core.problem("%s: wrk %s: %d errors (first status %s)" % (t["name"], os.path.basename(lua), r["errors"],
                                                                   r["first_bad"]))
    return r


def metrics(t):
    """filestore's /metrics as {name: value} (unlabelled series only)."""
    c = core.Conn(t["host"], t["port"])
    st, data = c.request("GET", "/metrics", None, {})
    c.close()
    if st != 200:
        return {}
    return {k: float(v) for k, v in re.findall(r"^([a-z_]+) ([0-9.eE+-]+)$", data.decode(), re.M)}


def auth_cost(t):
    """A second user's first Basic request (a cache miss: argon2) vs the median of 50 cached ones."""
    h = {"Depth": "0"}
    c = core.Conn(t["host"], t["port"])
    hdr = dict(h, Authorization=t["auth2"])
    t0 = time.perf_counter()
    st, _ = c.request("PROPFIND", "/dav/", None, hdr)
    first = time.perf_counter() - t0
    must(st, (207,), "first PROPFIND of the second user")
    lat = []
    for _ in range(50):
        t0 = time.perf_counter()
        st, _ = c.request("PROPFIND", "/dav/", None, hdr)
        lat.append(time.perf_counter() - t0)
        must(st, (207,), "cached PROPFIND of the second user")
    c.close()
    return dict(first_ms=first * 1e3, cached_p50_ms=statistics.median(lat) * 1e3, cached_max_ms=max(lat) * 1e3)


def ratio_stats(R, key, targets, name, base="nginx"):
    return [r[name][key] / r[base][key] for r in R if r.get(name, {}).get(key) and r.get(base, {}).get(key)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--src-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--small-count", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--info", default="{}")
    a = ap.parse_args()
    targets = json.load(open(a.targets))
    info = json.loads(a.info)
    fs = next(t for t in targets if t["kind"] == "filestore")
    all_pids = lambda: [p for t in targets for p in tree_pids(t)]  # noqa: E731
    started = time.time()

    settle = float(os.environ.get("BENCH_INODE_SETTLE", "61"))
    if settle > 0:
        # See the module doc: inodes freed before the run must be past ext4's "recently
        # deleted" window before any server creates files, whichever server comes first.
        log("sync, then %.0f s for inodes freed before the run to become reusable" % settle)
        os.sync()
        time.sleep(settle)

    idle0 = {t["name"]: sum(core.status_kib(p, "VmRSS") for p in tree_pids(t)) / 1024 for t in targets}
    m0 = metrics(fs)
    auth = auth_cost(fs)
    log("filestore Basic auth: first request %.1f ms (argon2), cached p50 %.2f ms"
        % (auth["first_ms"], auth["cached_p50_ms"]))

    src = os.path.join(a.src_dir, "large.bin")
    nbytes = a.large_mib * MIB
    R = []  # per round: {server: {figure: value, ...}}
    raw = []  # per round: {server: {phase: result dict}}
    for rnd in range(a.rounds):
        core.wait_quiet(all_pids(), "round %d" % (rnd + 1), log)
        order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
        log("round %d/%d, order %s" % (rnd + 1, a.rounds, " ".join(t["name"] for t in order)))
        sha1 = core.gen_random(src, nbytes)
        with open(src, "rb") as f:  # keep the source in the page cache
            while f.read(8 * MIB):
                pass
        row, rawrow = {}, {}
        for t in order:
            rel = "large-r%d.bin" % rnd
            os.sync()  # nobody starts with the previous server's dirty pages still being written back
            put = curl(t, rel, put_src=src)
            must(put["code"], (200, 201, 204), "PUT %s on %s" % (rel, t["name"]))
            get = curl(t, rel)
            must(get["code"], (200,), "GET %s on %s" % (rel, t["name"]))
            if put["bytes"] != nbytes or get["bytes"] != nbytes:
                core.problem("%s: PUT sent %d, GET got %d of %d bytes" % (t["name"], put["bytes"], get["bytes"], nbytes))
            if not core.verify_get(t, rel, sha1):
                core.problem("%s round %d: the 1 GiB file read back differs from what was PUT" % (t["name"], rnd + 1))
            row[t["name"]] = dict(large_put=put["MBps"], large_get=get["MBps"])
            rawrow[t["name"]] = dict(large_put=put, large_get=get)
            log("  %-9s PUT %7.1f MB/s  GET %7.1f MB/s  (RSS peak %.1f MiB)"
                % (t["name"], put["MBps"], get["MBps"], put["rss_peak_mib"]))
        os.unlink(src)
        for t in order:
            coll = "small-r%d" % rnd
            st, _ = request(t, "MKCOL", coll + "/")
            must(st, (201,), "MKCOL %s on %s" % (coll, t["name"]))
            os.sync()
            with Measure(t) as m:
                pp = core.small_put(t, coll, a.small_count, 4096, a.concurrency, 2)
            pp.update(m.res)
            if pp["errors"]:
                core.problem("%s: %d of %d python PUTs failed, first: %s"
                             % (t["name"], pp["errors"], a.small_count, pp["first_error"]))
            pf = propfind(t, coll + "/", a.small_count + 1)
            wg = wrk(t, coll, a.wrk_seconds, a.concurrency, 4096, os.path.join(HERE, "wrk_get.lua"),
                     count=a.small_count)
            st, _ = request(t, "MKCOL", coll + "/wput/")
            must(st, (201,), "MKCOL %s/wput on %s" % (coll, t["name"]))
            os.sync()
            wp = wrk(t, coll + "/wput", a.wrk_seconds, a.concurrency, 4096, os.path.join(HERE, "wrk_put.lua"))
            row[t["name"]].update(small_put_py=pp["files_per_s"], propfind=pf["ms"], small_get=wg["per_s"],
                                  small_put=wp["per_s"])
            rawrow[t["name"]].update(small_put_py=pp, propfind=pf, small_get=wg, small_put=wp)
            log("  %-9s PUT(py) %6.0f/s  PROPFIND %6.1f ms  GET(wrk) %6.0f/s  PUT(wrk) %6.0f/s"
                % (t["name"], pp["files_per_s"], pf["ms"], wg["per_s"], wp["per_s"]))
        R.append(row)
        raw.append(rawrow)

    # Deleted only now: on this machine's ext4 (mounted with `discard`) freeing a gigabyte or
    # thousands of files slows the journal, and with it whichever server is measured next.
    for rnd in range(a.rounds):
        for t in targets:
            for rel in ("large-r%d.bin" % rnd, "small-r%d/" % rnd):
                st, _ = request(t, "DELETE", rel)
                must(st, (200, 204), "DELETE %s on %s" % (rel, t["name"]))
    m1 = metrics(fs)
    hwm = {t["name"]: core.status_kib(t["pid"], "VmHWM") / 1024 for t in targets}
    idle1 = {t["name"]: sum(core.status_kib(p, "VmRSS") for p in tree_pids(t)) / 1024 for t in targets}
    cache = {k: m1.get("filestore_credential_cache_%s_total" % k, 0) - m0.get("filestore_credential_cache_%s_total" % k, 0)
             for k in ("hits", "misses")}
    md = render(a, targets, R, raw, info, auth, cache, m1, idle0, idle1, hwm, time.time() - started)
    print(md)
    with open(a.out, "w") as f:
        f.write(md)
    log("report: %s" % a.out)
    return 1 if core.PROBLEMS else 0


def render(a, targets, R, raw, info, auth, cache, m1, idle0, idle1, hwm, elapsed):
    names = [t["name"] for t in targets]
    peers = [n for n in names if n != "filestore"]
    fmt, spread, med = core.fmt, core.spread, core.med
    L = []
    w = L.append
    w("# WebDAV benchmark — %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M %Z").strip())
    w("")
    w("`%s`, commit %s, %d round(s), %s elapsed." % (info.get("command", "bench/dav.sh"), info.get("commit", "?"),
                                                   a.rounds, "%.0f s" % elapsed))
    w("")
    w("filestore on the embedded default (no config: SQLite, local disk) through `/dav/` with HTTP Basic auth "
      "on every request, next to %s, each with Basic auth, on 127.0.0.1." % ", ".join(peers))
    w("")
    w("## Summary")
    w("")
    w("Medians over rounds (min–max). Ratios are medians of per-round ratios to nginx measured in the same round; "
      "for PROPFIND the ratio is filestore's time over nginx's (lower is better).")
    w("")
    w("| figure | %s | filestore / nginx | target | met? |" % " | ".join(names))
    w("|---|%s---|---|---|" % ("---|" * len(names)))
    verdicts = []
    for key, label, unit, higher, target in FIGURES:
        label = label % (a.small_count + 1) if "%d" in label else label
        cells = []
        for n in names:
            vs = [r[n][key] for r in R if n in r]
            nd = 1 if unit in ("ms",) else 0
            if key.startswith("large"):
                nd = 0
            cells.append("%s%s" % (fmt(med(vs), nd), spread(vs, nd)))
        rs = ratio_stats(R, key, targets, "filestore")
        rtxt = "%.2f× (%s)" % (med(rs), "–".join("%.2f" % x for x in (min(rs), max(rs)))) if rs else "–"
        if target is None:
            ttxt, met = "–", "–"
        else:
            ok = med(rs) is not None and (med(rs) >= target if higher else med(rs) <= target)
            ttxt = ("≥ %.1f×" if higher else "≤ %.1f×") % target
            met = "yes" if ok else "**no**"
            verdicts.append((label, ok))
        w("| %s, %s | %s | %s | %s | %s |" % (label, unit, " | ".join(cells), rtxt, ttxt, met))
    w("")
    w("Peers' ratios to nginx (same rounds): " + "; ".join(
        "%s %s" % (p, ", ".join("%s %.2f×" % (SHORT[k], med(ratio_stats(R, k, targets, p)))
                                for k, *_ in FIGURES if ratio_stats(R, k, targets, p)))
        for p in peers if p != "nginx") + ".")
    w("")
    w("Targets met: %d of %d%s." % (sum(ok for _, ok in verdicts), len(verdicts),
                                    "" if all(ok for _, ok in verdicts) else
                                    " (not met: %s)" % "; ".join(l for l, ok in verdicts if not ok)))
    w("")
    w("## Memory (RSS of the server's process tree, MiB)")
    w("")
    w("| server | idle at start | peak during 1 GiB PUT | peak during GET | peak during 4 KiB phases | idle at end | VmHWM of the main process |")
    w("|---|---|---|---|---|---|---|")
    for n in names:
        lp = max(raw_r[n]["large_put"]["rss_peak_mib"] for raw_r in raw)
        lg = max(raw_r[n]["large_get"]["rss_peak_mib"] for raw_r in raw)
        sp = max(raw_r[n][k]["rss_peak_mib"] for raw_r in raw for k in ("small_put_py", "propfind", "small_get", "small_put"))
        w("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |" % (n, idle0[n], lp, lg, sp, idle1[n], hwm[n]))
    w("")
    w("## Server CPU per request (ms, medians)")
    w("")
    w("| server | 4 KiB GET (wrk) | 4 KiB PUT (wrk) | 1 GiB PUT, CPU-s | 1 GiB GET, CPU-s |")
    w("|---|---|---|---|---|")
    for n in names:
        w("| %s | %s | %s | %s | %s |" % (
            n, fmt(med([r[n]["small_get"]["cpu_ms_per_req"] for r in raw]), 3),
            fmt(med([r[n]["small_put"]["cpu_ms_per_req"] for r in raw]), 3),
            fmt(med([r[n]["large_put"]["server_cpu_s"] for r in raw]), 2),
            fmt(med([r[n]["large_get"]["server_cpu_s"] for r in raw]), 2)))
    w("")
    w("## Basic auth: the credential cache")
    w("")
    total = cache["hits"] + cache["misses"]
    w("- filestore's `/metrics` over the run: %d hits, %d misses (argon2 verifications): hit ratio %s."
      % (cache["hits"], cache["misses"], "%.5f" % (cache["hits"] / total) if total else "–"))
    w("- First Basic request of a second user (one argon2id verification): %.1f ms; the next 50 requests with the "
      "same header: median %.2f ms, max %.2f ms (PROPFIND Depth 0 of `/dav/`, one keep-alive connection)."
      % (auth["first_ms"], auth["cached_p50_ms"], auth["cached_max_ms"]))
    w("")
    w("## Rounds")
    w("")
    w("| round | server | 1 GiB PUT MB/s | GET MB/s | 4 KiB PUT py/s | PROPFIND ms | GET wrk/s | PUT wrk/s | p50/p99 ms GET | p50/p99 ms PUT | others' CPU-s (PUT, wrk PUT) |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(raw):
        for n in names:
            x = r[n]
            w("| %d | %s | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f | %.2f / %.2f | %.2f / %.2f | %.2f, %.2f |" % (
                i + 1, n, x["large_put"]["MBps"], x["large_get"]["MBps"], x["small_put_py"]["files_per_s"],
                x["propfind"]["ms"], x["small_get"]["per_s"], x["small_put"]["per_s"],
                x["small_get"]["p50_ms"], x["small_get"]["p99_ms"], x["small_put"]["p50_ms"],
                x["small_put"]["p99_ms"], x["large_put"]["others_cpu_s"], x["small_put"]["others_cpu_s"]))
    w("")
    w("## Problems")
    w("")
    w("\n".join("- " + p for p in core.PROBLEMS) if core.PROBLEMS else "None: every request succeeded, every "
      "1 GiB read-back matched its SHA-1, every PROPFIND listed all entries.")
    w("")
    w("## How it was measured")
    w("")
    w("```")
    w(__doc__.strip())
    w("```")
    w("")
    w("Sizes: large file %d MiB; %d small files of 4096 bytes; %d concurrent connections; wrk %d s per load."
      % (a.large_mib, a.small_count, a.concurrency, a.wrk_seconds))
    w("")
    w("| | |")
    w("|---|---|")
    for k in ("binary", "cpu", "cpus", "mem", "kernel", "work_fs", "nginx_version", "apache_version",
              "rclone_version", "wrk_version", "load"):
        if k in info:
            w("| %s | %s |" % (k, info[k]))
    w("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
