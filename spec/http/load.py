#!/usr/bin/env python3
"""Load for spec/http/reload_spec.lua: THREADS keep-alive clients (http.client) ask
127.0.0.1:PORT for / until the file STOP exists (at most 120 s), and print
"requests N failed M versions V1,V2,..." with what the answers said.

    python3 spec/http/load.py PORT STOP [THREADS]
"""
import http.client
import os
import sys
import threading
import time

port, stop = int(sys.argv[1]), sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
lock = threading.Lock()
counts = {"requests": 0, "failed": 0}
versions = set()
errors = []


def client():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    deadline = time.time() + 120
    while not os.path.exists(stop) and time.time() < deadline:
        try:
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read().decode()
            ok = r.status == 200 and body.startswith("version ")
            with lock:
                counts["requests"] += 1
                if ok:
                    versions.add(body.split()[1])
                else:
                    counts["failed"] += 1
                    errors.append("%d %r" % (r.status, body[:80]))
        except Exception as e:  # a dropped connection or a reset is a failed request
            with lock:
                counts["requests"] += 1
                counts["failed"] += 1
                errors.append(repr(e))
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.close()


ts = [threading.Thread(target=client) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("requests %d failed %d versions %s" % (counts["requests"], counts["failed"],
                                             ",".join(sorted(versions, key=int))))
for e in errors[:5]:
    print("error", e)
