#!/usr/bin/env python3
"""Idle-connection memory: cgihost beside nginx and lighttpd, in one run.

Started by scripts/bench-idle.sh (which installs the peers and builds the
release binary). For each server and each kind of connection, opens N
connections, waits for the server to settle, reads the RSS of the server's
processes from /proc, closes them all and reads the RSS again after 10 s:

- silent: TCP connections that never send a byte;
- keep-alive: one GET of a 1 KiB file each, then idle;
- tls: a TLS handshake and one GET each, then idle;
- h2c: HTTP/2 with prior knowledge, one GET each, then idle.

Prints a markdown table: RSS before, with N open, per connection, and
10 s after they all closed.
"""

import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

N = int(os.environ.get("CONNS", "10000"))
KINDS = os.environ.get("KINDS", "silent keep-alive tls h2c").split()
SERVERS = os.environ.get("SERVERS", "cgihost nginx lighttpd").split()
BIN = os.environ["CGIHOST_BIN"]
PORTS = {"plain": 18770, "tls": 18771, "h2c": 18772}


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def write_configs(work):
    www = os.path.join(work, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(work, 0o755)
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "1k.bin"), 0o644)
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    os.chmod(key, 0o644)
    p = PORTS
    with open(os.path.join(work, "cgihost.toml"), "w") as f:
        f.write(f"""access_log = false
tls_cert = "{cert}"
tls_key = "{key}"
header_read_timeout = 120
keepalive_timeout = 120
max_connections = {N + 100}
[[listen]]
addr = "127.0.0.1:{p['plain']}"
tls = false
[[listen]]
addr = "127.0.0.1:{p['tls']}"
tls = true
[[listen]]
addr = "127.0.0.1:{p['h2c']}"
tls = false
""")
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1;
worker_rlimit_nofile {4 * N};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections {N + 100}; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 120s;
    client_header_timeout 120s;
    server {{ listen 127.0.0.1:{p['plain']}; root {www}; }}
    server {{ listen 127.0.0.1:{p['tls']} ssl; ssl_certificate {cert};
             ssl_certificate_key {key}; root {www}; }}
    server {{ listen 127.0.0.1:{p['h2c']} http2; root {www}; }}
}}
""")
    with open(os.path.join(work, "lighttpd.conf"), "w") as f:
        f.write(f"""server.document-root = "{www}"
server.bind = "127.0.0.1"
server.port = {p['plain']}
server.modules += ("mod_openssl")
server.max-fds = {4 * N}
server.max-connections = {N + 100}
server.max-keep-alive-idle = 120
server.max-read-idle = 120
server.max-keep-alive-requests = 1000
server.errorlog = "{work}/lighttpd-error.log"
$SERVER["socket"] == "127.0.0.1:{p['tls']}" {{
    ssl.engine = "enable"
    ssl.pemfile = "{cert}"
    ssl.privkey = "{key}"
}}
$SERVER["socket"] == "127.0.0.1:{p['h2c']}" {{ }}
""")
    return cert, key


def start(server, work, cert, key):
    """Start a server; the pids whose RSS counts."""
    if server == "cgihost":
        proc = subprocess.Popen(
            [BIN, "--root", os.path.join(work, "www"), "--cgi-dir", os.path.join(work, "none"),
             "-q", "--config", os.path.join(work, "cgihost.toml")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "cgihost.log"), "w"))
        wait_up(PORTS["plain"])
        return proc, [proc.pid]
    if server == "nginx":
        subprocess.run(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work], check=True)
        wait_up(PORTS["plain"])
        with open(os.path.join(work, "nginx.pid")) as f:
            master = int(f.read())
        return None, [master] + children(master)
    proc = subprocess.Popen(["lighttpd", "-D", "-f", os.path.join(work, "lighttpd.conf")])
    wait_up(PORTS["plain"])
    return proc, [proc.pid]


def stop(server, work, proc):
    if server == "nginx":
        with open(os.path.join(work, "nginx.pid")) as f:
            os.kill(int(f.read()), signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", PORTS["plain"]), timeout=0.2).close()
            time.sleep(0.1)
        except OSError:
            return


def wait_up(port):
    for _ in range(100):
        try:
            get(socket.create_connection(("127.0.0.1", port)))
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench-idle: nothing answers on port {port}")


REQUEST = b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"


def get(sock):
    """One keep-alive GET of the 1 KiB file; the socket stays open."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed before the head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"unexpected answer {head[:40]!r}")
    while len(body) < 1024:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed mid-body")
        body += chunk
    return sock


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_get(sock):
    """HTTP/2 prior knowledge: preface, SETTINGS, one GET; read to its end."""
    authority = b"localhost"
    # HPACK: :method GET (2), :scheme http (6), :path / literal, :authority literal.
    block = bytes([0x82, 0x86, 0x04, len(b"/1k.bin")]) + b"/1k.bin" + bytes([0x01, len(authority)]) + authority
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, block))
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("h2: closed")
            buf += chunk
        length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        buf = buf[9 + length:]
        if kind == 4 and not flags & 1:
            sock.sendall(h2_frame(4, 1, 0))
        if stream == 1 and kind in (0, 1) and flags & 1:
            return sock


def open_conns(kind, ctx):
    conns = []
    for _ in range(N):
        if kind == "silent":
            conns.append(socket.create_connection(("127.0.0.1", PORTS["plain"])))
        elif kind == "keep-alive":
            conns.append(get(socket.create_connection(("127.0.0.1", PORTS["plain"]))))
        elif kind == "tls":
            raw = socket.create_connection(("127.0.0.1", PORTS["tls"]))
            conns.append(get(ctx.wrap_socket(raw, server_hostname="localhost")))
        else:
            conns.append(h2_get(socket.create_connection(("127.0.0.1", PORTS["h2c"]))))
    return conns


def main():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    rows = []
    with tempfile.TemporaryDirectory(prefix="cgihost-bench-idle.") as work:
        cert, key = write_configs(work)
        for server in SERVERS:
            for kind in KINDS:
                proc, pids = start(server, work, cert, key)
                time.sleep(1)
                base = rss_kib(pids)
                conns = open_conns(kind, ctx)
                time.sleep(2)
                loaded = rss_kib(pids)
                for c in conns:
                    c.close()
                conns = None
                time.sleep(10)
                after = rss_kib(pids)
                stop(server, work, proc)
                per = (loaded - base) * 1024 / N
                rows.append((server, kind, base, loaded, per, after))
                print(f"{server} {kind}: {base} -> {loaded} KiB ({per:.0f} B each), "
                      f"{after} KiB 10 s after closing", file=sys.stderr)
    print(f"Idle connections: {N} per kind, RSS of the server's processes (nginx: master + 1 worker)")
    print()
    print("| server | connections | RSS before, KiB | RSS with them open, KiB | per connection, bytes | RSS 10 s after closing, KiB |")
    print("|---|---|---:|---:|---:|---:|")
    for server, kind, base, loaded, per, after in rows:
        print(f"| {server} | {N} {kind} | {base} | {loaded} | {per:.0f} | {after} |")


if __name__ == "__main__":
    main()
