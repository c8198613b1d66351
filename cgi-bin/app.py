#!/usr/bin/env python3
"""A long-lived FastCGI handler in plain Python (standard library only).

Run it as a pool that cgihost starts, supervises and reloads:

    cgihost --spawn '/py=python3 cgi-bin/app.py' --workers 2

cgihost hands each worker the listening socket as fd 0 (as spawn-fcgi and
mod_fcgid do); the worker accepts one connection at a time and serves
requests on it for as long as cgihost keeps it open (FCGI_KEEP_CONN).
The process stays alive between requests, so module-level state persists:
`served` counts the requests this process has answered.

Started any other way (fd 0 is not a listening socket) it answers a single
request as a CGI program, so /cgi-bin/app.py works too.
"""
import os
import signal
import socket
import struct
import sys

GREETING = "hello"

served = 0
busy = False
stopping = False

BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT = 1, 2, 3, 4, 5, 6
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
KEEP_CONN = 1
MAX_BODY = 1 << 20  # bytes of request body kept; the rest is counted only


def respond(params, body, body_len):
    """The application: CGI-style header block, then the body."""
    global served
    served += 1
    text = (
        f"{GREETING} from app.py (Python), pid {os.getpid()}, "
        f"request {served} in this process\n"
        f"{params.get('REQUEST_METHOD', '?')} {params.get('REQUEST_URI', '?')} "
        f"PATH_INFO={params.get('PATH_INFO', '')!r} body={body_len} bytes\n"
    )
    data = text.encode()
    head = f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_record(conn):
    header = read_exact(conn, 8)
    if header is None:
        return None
    _version, kind, req_id, length, padding, _ = struct.unpack(">BBHHBB", header)
    content = read_exact(conn, length + padding) if length + padding else b""
    if content is None:
        return None
    return kind, req_id, content[:length]


def record(kind, req_id, content=b""):
    out = b""
    while True:
        part, content = content[:65535], content[65535:]
        out += struct.pack(">BBHHBB", 1, kind, req_id, len(part), 0, 0) + part
        if not content:
            return out


def decode_pairs(data):
    pairs, i = {}, 0
    while i < len(data):
        lengths = []
        for _ in range(2):
            n = data[i]
            if n & 0x80:
                n = struct.unpack(">I", data[i:i + 4])[0] & 0x7FFFFFFF
                i += 4
            else:
                i += 1
            lengths.append(n)
        name = data[i:i + lengths[0]].decode("latin-1")
        i += lengths[0]
        pairs[name] = data[i:i + lengths[1]].decode("latin-1")
        i += lengths[1]
    return pairs


def encode_pairs(pairs):
    out = b""
    for name, value in pairs.items():
        n, v = name.encode(), value.encode()
        out += bytes([len(n), len(v)]) + n + v  # all short here
    return out


def serve_connection(conn):
    """Requests on one connection until cgihost closes it."""
    global busy
    keep, params, body, body_len = False, b"", b"", 0
    while True:
        rec = read_record(conn)
        if rec is None:
            return
        kind, req_id, content = rec
        if kind == GET_VALUES:
            asked = decode_pairs(content)
            known = {"FCGI_MAX_CONNS": "1", "FCGI_MAX_REQS": "1", "FCGI_MPXS_CONNS": "0"}
            answer = {k: v for k, v in known.items() if k in asked}
            conn.sendall(record(GET_VALUES_RESULT, 0, encode_pairs(answer)))
        elif kind == BEGIN_REQUEST:
            busy, keep = True, bool(content[2] & KEEP_CONN)
            params, body, body_len = b"", b"", 0
        elif kind == PARAMS:
            params += content
        elif kind == STDIN and content:
            body_len += len(content)
            if len(body) < MAX_BODY:
                body += content[: MAX_BODY - len(body)]
        elif kind == STDIN or kind == ABORT_REQUEST:
            out = respond(decode_pairs(params), body, body_len) if kind == STDIN else b""
            end = struct.pack(">IB3x", 0, 0)
            conn.sendall(record(STDOUT, req_id, out) + record(STDOUT, req_id) + record(END_REQUEST, req_id, end))
            busy = False
            if stopping:
                sys.exit(0)
            if not keep:
                return
        elif req_id == 0:
            conn.sendall(record(UNKNOWN_TYPE, 0, bytes([kind]) + bytes(7)))


def on_sigterm(_signo, _frame):
    """Finish the request in progress, if any, then exit."""
    global stopping
    stopping = True
    if not busy:
        sys.exit(0)


def main():
    try:
        listener = socket.socket(fileno=0)
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise OSError("fd 0 is not listening")
    except OSError:
        return serve_cgi()
    signal.signal(signal.SIGTERM, on_sigterm)
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                serve_connection(conn)
            except (ConnectionError, IndexError, struct.error) as e:
                print(f"app.py: dropped a connection: {e!r}", file=sys.stderr)


def serve_cgi():
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    body = sys.stdin.buffer.read(min(length, MAX_BODY)) if length else b""
    sys.stdout.buffer.write(respond(dict(os.environ), body, length))


if __name__ == "__main__":
    main()
