#!/usr/bin/env python3
"""Clients for spec/http/http_spec.lua: each scenario talks to moonfcgi --http on 127.0.0.1
PORT with http.client or a raw socket and prints what it saw, one fact a line.

    python3 spec/http/client.py SCENARIO PORT
"""
import http.client
import socket
import sys
import time

scenario, port = sys.argv[1], int(sys.argv[2])


def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=20)


def raw(data, want_close=True, limit=20):
    """Sends data on one socket and returns all it reads until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=limit)
    s.sendall(data)
    out = b""
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        out += b
        if not want_close and out.count(b"\r\n\r\n") >= 1:
            break
    s.close()
    return out


if scenario == "keepalive":
    import json
    c = conn()
    ports = set()
    for i in range(5):
        c.request("GET", "/params?i=%d" % i)
        r = c.getresponse()
        params = json.loads(r.read())
        ports.add(params["REMOTE_PORT"])
        print("status", r.status, "query", params["QUERY_STRING"])
    # One client port for all five: the connection was kept.
    print("connections", len(ports))
    c.close()

elif scenario == "pipeline":
    reqs = b"".join(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b"one", b"two", b"three")
    ) + b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(reqs)
    print(out.count(b"HTTP/1.1 200 OK"), out.count(b"HTTP/1.1 201 Made"))
    i1, i2, i3 = out.find(b"\r\n\r\none"), out.find(b"\r\n\r\ntwo"), out.find(b"\r\n\r\nthree")
    print("ordered", 0 < i1 < i2 < i3)

elif scenario == "chunked":
    c = conn()
    body = bytes(range(256)) * 4096  # 1 MiB

    def gen():
        for i in range(0, len(body), 10000):
            yield body[i : i + 10000]

    c.request("POST", "/echo", body=gen(), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    got = r.read()
    print("status", r.status, "same", got == body, "len", len(got))

elif scenario == "continue":
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(100)
    print("interim", first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
    s.sendall(b"hello")
    out = first
    while b"hello" not in out:
        b = s.recv(65536)
        if not b:
            break
        out += b
    print("final", b"HTTP/1.1 200 OK" in out and out.endswith(b"hello"))
    s.close()

elif scenario == "head":
    c = conn()
    c.request("HEAD", "/big?n=5000")
    r = c.getresponse()
    print("status", r.status, "length", r.getheader("Content-Length"), "body", len(r.read()))
    c.request("GET", "/big?n=5000")
    r = c.getresponse()
    print("status", r.status, "length", r.getheader("Content-Length"), "body", len(r.read()))

elif scenario == "big":
    c = conn()
    n = 1 << 20
    c.request("GET", "/big?n=%d" % n)
    r = c.getresponse()
    got = r.read()
    print("status", r.status, "len", len(got), "chunked", r.getheader("Transfer-Encoding") == "chunked",
          "pattern", got == (b"0123456789abcdef" * 65536)[:n])
    body = b"z" * n
    c.request("POST", "/echo", body=body)
    r = c.getresponse()
    got = r.read()
    print("status", r.status, "echo", got == body)

elif scenario == "slow":
    # Asks for 64 MiB and reads nothing: the handler must stop well before the end.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big?n=67108864 HTTP/1.1\r\nHost: x\r\n\r\n")
    last, same = -1, 0
    for _ in range(100):
        time.sleep(0.1)
        c = conn()
        c.request("GET", "/written")
        w = int(c.getresponse().read())
        c.close()
        same = same + 1 if w == last else 0
        last = w
        if same >= 5:
            break
    print("stalled", same >= 5, "written", last)
    # Now read it all: the handler resumes and the answer is complete.
    total = 0
    s.settimeout(30)
    buf = b""
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        total += len(b)
        if b.endswith(b"0\r\n\r\n"):
            break
    print("received_all", total > 67108864)
    s.close()

elif scenario == "abort":
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
    got = s.recv(4096)
    print("started", got.startswith(b"HTTP/1.1 200 OK"))
    s.close()
    status = ""
    for _ in range(100):
        c = conn()
        c.request("GET", "/abort-status")
        status = c.getresponse().read().decode()
        c.close()
        if status == "aborted":
            break
        time.sleep(0.05)
    print("handler", status)

elif scenario == "malformed":
    for req in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /../etc/passwd HTTP/1.1\r\n\r\n"):
        out = raw(req)
        print(out.split(b"\r\n")[0].decode(), "closed")

else:
    sys.exit("unknown scenario " + scenario)
