#!/usr/bin/env python3
"""The socket specs' own peer: a TCP server (and a unix one, and a UDP echo) that does on
each connection what the first line the client sends tells it, so a spec can make the edge
cases happen on purpose. Usage: peer.py PORTFILE UNIXPATH. It writes "TCP UDP TARPIT\n" to PORTFILE
once it listens, and runs until killed (the spec stops it by pid).

Commands (one line, then the behaviour):
  echo             echo every byte back until EOF
  send TEXT        send TEXT (\\n, \\r and \\xNN escapes) and keep the connection open
  close TEXT       send TEXT, then close
  bytes TEXT       send TEXT one byte at a time, 20 ms apart, then keep it open
  later MS TEXT    wait MS milliseconds, send TEXT, keep it open
  silent           read and send nothing more (timeouts)
  sink             read nothing more (the client's sends block); small receive buffer
  endless          send "x" without end, until the client goes
  count            answer with the number of connections accepted so far and keep it open
  reply            for each line received answer "got LINE\\r\\n" (a pooled conversation)
"""
import os
import socket
import sys
import threading
import time

accepted = 0
lock = threading.Lock()


def unescape(text):
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


def read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        c = conn.recv(1)
        if not c:
            return None
        data += c
    return data[:-1].decode("latin-1")


def hold(conn):
    """Keeps the connection until the client closes it (reading and dropping what comes)."""
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def serve(conn):
    try:
        line = read_line(conn)
        if line is None:
            return
        cmd, _, arg = line.partition(" ")
        if cmd == "echo":
            while True:
                d = conn.recv(65536)
                if not d:
                    break
                conn.sendall(d)
        elif cmd == "send":
            conn.sendall(unescape(arg))
            hold(conn)
        elif cmd == "close":
            conn.sendall(unescape(arg))
            conn.shutdown(socket.SHUT_WR)
            time.sleep(0.05)
        elif cmd == "bytes":
            for b in unescape(arg):
                conn.sendall(bytes([b]))
                time.sleep(0.02)
            hold(conn)
        elif cmd == "later":
            ms, _, text = arg.partition(" ")
            time.sleep(int(ms) / 1000.0)
            conn.sendall(unescape(text))
            hold(conn)
        elif cmd == "silent":
            hold(conn)
        elif cmd == "sink":
            while True:
                time.sleep(0.2)
                try:
                    # Ends once the client has gone (a peek sees EOF).
                    conn.setblocking(False)
                    d = conn.recv(1, socket.MSG_PEEK)
                    conn.setblocking(True)
                    if d == b"":
                        break
                except BlockingIOError:
                    conn.setblocking(True)
                except OSError:
                    break
        elif cmd == "endless":
            chunk = b"x" * 65536
            try:
                while True:
                    conn.sendall(chunk)
            except OSError:
                pass
        elif cmd == "count":
            with lock:
                n = accepted
            conn.sendall(("%d\n" % n).encode())
            hold(conn)
        elif cmd == "reply":
            while True:
                line = read_line(conn)
                if line is None:
                    break
                conn.sendall(("got " + line + "\r\n").encode("latin-1"))
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def accept_loop(srv, small_rcvbuf):
    global accepted
    while True:
        conn, _ = srv.accept()
        with lock:
            accepted += 1
        if small_rcvbuf:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def udp_loop(u):
    while True:
        data, addr = u.recvfrom(65536)
        if data == b"silent":
            continue
        u.sendto(b"echo:" + data, addr)


def main():
    portfile, unix_path = sys.argv[1], sys.argv[2]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Small buffers on accepted sockets make "sink" block the client's sends soon.
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(2048)
    tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp6.bind(("::1", tcp.getsockname()[1]))
    tcp6.listen(128)
    un = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(unix_path):
        os.unlink(unix_path)
    un.bind(unix_path)
    un.listen(128)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    # A listener that never accepts, its queue filled: a connect to it gets no SYN-ACK.
    tarpit = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(0)
    fillers = []
    for _ in range(8):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(tarpit.getsockname())
        except OSError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    for s in (tcp, tcp6, un):
        threading.Thread(target=accept_loop, args=(s, True), daemon=True).start()
    threading.Thread(target=udp_loop, args=(u,), daemon=True).start()
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d %d\n" % (tcp.getsockname()[1], u.getsockname()[1],
                                 tarpit.getsockname()[1]))
    os.rename(tmp, portfile)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
