#!/usr/bin/env python3
"""Latency of the JSON API requests a remote mount sends for each small-file operation, one
client on one keep-alive connection (TCP_NODELAY): negative lookup, create of an empty file,
PUT of 4 KiB replacing it, positive lookup, delete by name. Prints a Markdown table.

usage: api_ops.py URL USER PASSWORD COUNT
"""
import http.client
import json
import os
import socket
import statistics
import sys
import time
import urllib.parse


def main():
    url, user, password, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.connect()
    # Headers and a 4 KiB body go out in two writes; without this Nagle holds the second.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    token = None

    def call(method, path, body=None, want=200):
        headers = {"Authorization": "Bearer " + token} if token else {}
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, "/api/v1" + path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != want:
            sys.exit("%s %s: %d %s (wanted %d)" % (method, path, r.status, data[:200], want))
        return json.loads(data) if data else None

    call("POST", "/auth/signup", {"username": user, "password": password}, want=201)
    token = call("POST", "/auth/signin", {"username": user, "password": password})["token"]
    root = call("GET", "/stat")["id"]
    d = call("POST", "/entries/%d/children" % root, {"name": "ops", "kind": "dir"}, want=201)["id"]
    payload = os.urandom(4096)
    ids = {}

    def neg(i):
        call("GET", "/entries/%d/children/f%05d" % (d, i), want=404)

    def create(i):
        e = call("POST", "/entries/%d/children" % d, {"name": "f%05d" % i, "kind": "file"}, want=201)
        ids[i] = e["id"]

    def put(i):
        # Distinct content each time: new content, never a dedup hit.
        call("PUT", "/entries/%d/content" % ids[i], b"%08d" % i + payload[8:])

    def pos(i):
        call("GET", "/entries/%d/children/f%05d" % (d, i))

    def delete(i):
        call("DELETE", "/entries/%d/children/f%05d?kind=file" % (d, i), want=204)

    print("| request | requests/s | median ms | p90 ms |")
    print("|---|---|---|---|")
    for label, op in [
        ("negative lookup `GET /entries/{dir}/children/{name}`", neg),
        ("create empty file `POST /entries/{dir}/children`", create),
        ("4 KiB PUT replacing it `PUT /entries/{id}/content`", put),
        ("positive lookup", pos),
        ("delete by name `DELETE /entries/{dir}/children/{name}`", delete),
    ]:
        times = []
        for i in range(count):
            t = time.perf_counter()
            op(i)
            times.append(time.perf_counter() - t)
        times.sort()
        print("| %s | %.0f | %.3f | %.3f |" % (
            label, count / sum(times), statistics.median(times) * 1000, times[int(len(times) * 0.9)] * 1000))


if __name__ == "__main__":
    main()
