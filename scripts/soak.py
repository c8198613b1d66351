#!/usr/bin/env python3
"""Soak and chaos test of the real cgihost binary (issue 15, "Standing checks").

Run by scripts/soak.sh (which builds the binary); standard library only.

Phases, all against one cgihost on 127.0.0.1 with a config covering static
files, CGI, chunked uploads to a CGI that hashes stdin, multipart uploads to
an [[upload]] offload route, FastCGI to a php-fpm started here, a [[spawn]]
pool (cgi-bin/app.fcgi) and client aborts:

1. warm-up: mixed concurrent load; then, with no client connected, the
   baseline of cgihost's open fds and VmRSS;
2. soak: the same load; every answer is checked (status, exact body or
   hash). Then, quiet again: fds and RSS must be back within the baseline
   plus a small margin, cgihost's only children must be the pool's workers,
   no descendant of it may have been orphaned (this script is a subreaper,
   so orphans come to it), the upload and spool dirs must be empty;
3. chaos: the same load while php-fpm's master is SIGKILLed and php-fpm
   restarted, spawned workers are SIGKILLed at random and cgihost gets
   SIGHUP every second. Only requests in flight at a kill, or (for PHP)
   sent while php-fpm is down and until cgihost tries it again (its
   back-off after a refused connect: 1 s, or the next reload), may fail,
   and only with 502/504 or a cut connection; service must return within
   2 s of each restart/kill; nothing may hang (every request has a
   timeout); every reload must switch pools without waiting out the probe.
   Then the same quiet-state checks;
4. shutdown: SIGTERM, and no process started here may remain.

Exits 0 when every check holds; the last line is a one-line summary.
Environment: SOAK_SECS (default 100) is the total time under load, split
15% warm-up, 45% soak, 40% chaos; SOAK_CLIENTS (default 6) client threads;
SOAK_BIN the binary (default target/debug/cgihost); SOAK_KEEP=1 keeps the
temp dir (logs) for inspection.
"""

import ctypes
import gzip
import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")

TOTAL = float(os.environ.get("SOAK_SECS", "100"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "6"))
BIN = os.environ.get("SOAK_BIN", os.path.join(REPO, "target", "debug", "cgihost"))
KEEP = os.environ.get("SOAK_KEEP") == "1"

WARMUP_SECS = max(3.0, TOTAL * 0.15)
SOAK_SECS = max(5.0, TOTAL * 0.45)
CHAOS_SECS = max(8.0, TOTAL * 0.40)

REQUEST_TIMEOUT = 30.0  # any single socket operation of a client
PHP_CHILDREN = 4
WORKERS = 3
FD_MARGIN = 10  # open fds above the baseline tolerated after the load
RSS_MARGIN_KB = 16 * 1024  # VmRSS above the baseline tolerated after the load
RECOVERY_LIMIT = 2.0  # seconds, after each kill / restart
KILL_SLACK = 0.25  # a request sent this soon after a kill may still meet it


def log(msg):
    print(f"soak: {msg}", flush=True)


# ---------------------------------------------------------------------------
# processes


def proc_children(pid):
    """Pids whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parens
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2 :].split()[0] == b"Z"
    except OSError:
        return True


def procs_mentioning(text):
    """Live processes (but this one) whose command line contains text."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            c = cmdline(int(d))
            if text in c and not is_zombie(int(d)):
                found.append((int(d), c))
    return found


def become_subreaper():
    """Orphans of cgihost's descendants (a CGI's grandchild whose parent
    died, a daemon that escaped) are reparented to us, not to init, so
    they cannot go unnoticed."""
    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        log("warning: cannot become a subreaper; orphans go unseen")


def adopted(known):
    """Our children but the known ones (cgihost, php-fpm's master): reaps
    the dead, returns the live as (pid, command line)."""
    live = []
    for pid in proc_children(os.getpid()):
        if pid in known:
            continue
        if is_zombie(pid):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        else:
            live.append((pid, cmdline(pid)))
    return live


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_connect(path_or_addr, limit):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            if isinstance(path_or_addr, str):
                s = socket.socket(socket.AF_UNIX)
            else:
                s = socket.socket()
            s.settimeout(1)
            s.connect(path_or_addr)
            s.close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def php_fpm_binary():
    for name in ["php-fpm8.2", "php-fpm8.3", "php-fpm8.1", "php-fpm"]:
        for d in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"]:
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
    raise SystemExit("soak: php-fpm is not installed (scripts/test.sh installs it)")


class PhpFpm:
    """php-fpm in its own session (so the master and its children can be
    killed as one group), a static pool on a unix socket in dir."""

    def __init__(self, d):
        self.dir = d
        self.sock = os.path.join(d, "php.sock")
        self.conf = os.path.join(d, "fpm.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"[global]\nerror_log = {d}/fpm.log\ndaemonize = no\n"
                f"[soak]\nuser = root\ngroup = root\nlisten = {self.sock}\n"
                f"listen.mode = 0600\npm = static\npm.max_children = {PHP_CHILDREN}\n"
                "catch_workers_output = yes\ndecorate_workers_output = no\nclear_env = yes\n"
                "php_admin_value[post_max_size] = 1G\n"
                "php_admin_value[output_buffering] = 0\n"
                "php_admin_flag[display_errors] = off\n"
            )
        self.proc = None

    def start(self):
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass
        cmd = [php_fpm_binary(), "-F", "-n", "-y", self.conf]
        if os.geteuid() == 0:
            cmd.insert(2, "-R")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_connect(self.sock, 15):
            raise RuntimeError("php-fpm did not start; see " + os.path.join(self.dir, "fpm.log"))

    def kill_master_and_pool(self):
        """The crash: SIGKILL the master; its orphaned children would keep
        the socket, so (as systemd's control-group kill) they go too."""
        pgid = self.proc.pid
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self):
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------------------
# the site

SMALL = b"hello soak\n"


def build_site(tmp):
    rnd = random.Random(15)
    root = os.path.join(tmp, "root")
    cgi = os.path.join(tmp, "cgi-bin")
    for d in (root, cgi, "uploads", "spool", "fpm", "run"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    files = {
        "/hello.txt": SMALL,
        "/big.bin": rnd.randbytes(1 << 20),
        # text of 1 KiB or more is gzipped on the fly
        "/page.html": b"".join(
            b"<p>line %d of a page that compresses well</p>\n" % i for i in range(600)
        ),
    }
    for path, data in files.items():
        with open(root + path, "wb") as f:
            f.write(data)
    for php in ("hello.php", "input.php", "usleep.php"):
        shutil.copy(os.path.join(FIXTURES, "php", php), root)
    for script in ("hello.sh", "sha256.sh", "offload.sh", "zeros.sh"):
        shutil.copy2(os.path.join(FIXTURES, "cgi-bin", script), cgi)
    # Spawned workers run from the temp dir, so anything left of them is
    # recognisable by its command line.
    shutil.copy2(os.path.join(REPO, "cgi-bin", "app.fcgi"), tmp)
    return files


def write_config(tmp, port):
    conf = os.path.join(tmp, "cgihost.toml")
    with open(conf, "w") as f:
        f.write(
            f"""port = {port}
bind = "127.0.0.1"
root = "{tmp}/root"
cgi_dir = "{tmp}/cgi-bin"
cgi_prefix = "/cgi-bin"
cgi_timeout = 30
shutdown_grace = 10
keepalive_timeout = 30
spool_dir = "{tmp}/spool"
fastcgi_max_conns = {PHP_CHILDREN}
fastcgi_connect_timeout = 5
status_path = "/server-status"

[[fastcgi]]
match = "*.php"
addr = "unix:{tmp}/fpm/php.sock"

[[upload]]
prefix = "/cgi-bin/offload.sh"
dir = "{tmp}/uploads"

[[spawn]]
match = "/app"
cmd = "perl {tmp}/app.fcgi"
workers = {WORKERS}
"""
        )
    return conf


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# requests

ROUTE_STATIC, ROUTE_CGI, ROUTE_UPLOAD, ROUTE_PHP, ROUTE_APP = (
    "static",
    "cgi",
    "multipart",
    "php",
    "app",
)


class Result:
    __slots__ = ("op", "route", "kind", "status", "detail", "start", "end")

    def __init__(self, op, route, kind, status, detail, start, end):
        self.op, self.route, self.kind, self.status = op, route, kind, status
        self.detail, self.start, self.end = detail, start, end

    def __str__(self):
        return (
            f"{self.op} [{self.route}] {self.kind} status={self.status} "
            f"t={self.start - T0:.2f}..{self.end - T0:.2f}s: {self.detail}"
        )


T0 = time.monotonic()


class Bad(Exception):
    """A wrong answer: kind is 'status' or 'body'."""

    def __init__(self, kind, status, detail):
        super().__init__(detail)
        self.kind, self.status = kind, status


def expect(status, want_status, body, want_body, what):
    if status != want_status:
        raise Bad("status", status, f"{what}: status {status}, body {body[:200]!r}")
    if want_body is not None and body != want_body:
        raise Bad("body", status, f"{what}: body {body[:200]!r}, want {want_body[:200]!r}")


def chunks_of(data):
    """Random chunk sizes, for a chunked request body."""
    i = 0
    while i < len(data):
        n = random.randint(1, 64 * 1024)
        yield data[i : i + n]
        i += n


def token():
    return "%016x" % random.getrandbits(64)


APP_RE = re.compile(
    rb"hello from app\.fcgi \(Perl\), pid \d+, request \d+ in this process\n"
    rb"(GET|POST) (\S+) PATH_INFO='(\S*)' body=(\d+) bytes\n"
)


class Client:
    """One load thread's keep-alive connection (http.client) and its ops."""

    def __init__(self, port, files):
        self.port = port
        self.files = files
        self.conn = None
        self.history = []
        self.big_sha = hashlib.sha256(files["/big.bin"]).hexdigest()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, url, body=None, headers=None, chunked=False):
        if self.conn is None or random.random() < 0.05:
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.history = []
        headers = dict(headers or {})
        self.history.append(f"{method} {url[:40]} ({len(body or b'')} bytes{', chunked' if chunked else ''})")
        if chunked:
            self.conn.request(method, url, body=chunks_of(body), headers=headers, encode_chunked=True)
        else:
            self.conn.request(method, url, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        self.history[-1] += f" -> {resp.status}"
        if resp.will_close:
            self.close()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data

    def story(self):
        """This connection's last requests, for a failure report."""
        return f"at {time.strftime('%H:%M:%S', time.gmtime())}Z, connection's requests: {self.history[-3:]}"

    # -- ops: each raises Bad on a wrong answer (route: route_of(op name))

    def static_small(self):
        st, _, body = self.request("GET", "/hello.txt")
        expect(st, 200, body, SMALL, "GET /hello.txt")

    def static_big(self):
        data = self.files["/big.bin"]
        if random.random() < 0.3:
            a = random.randrange(len(data))
            b = random.randrange(a, len(data))
            st, _, body = self.request("GET", "/big.bin", headers={"Range": f"bytes={a}-{b}"})
            expect(st, 206, body, data[a : b + 1], f"GET /big.bin range {a}-{b}")
        else:
            st, _, body = self.request("GET", "/big.bin")
            expect(st, 200, body, None, "GET /big.bin")
            got = hashlib.sha256(body).hexdigest()
            if got != self.big_sha:
                raise Bad("body", st, f"GET /big.bin: {len(body)} bytes, sha256 {got}")

    def static_gzip(self):
        st, h, body = self.request("GET", "/page.html", headers={"Accept-Encoding": "gzip"})
        expect(st, 200, body, None, "GET /page.html gzip")
        if h.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        expect(st, 200, body, self.files["/page.html"], "GET /page.html gzip")

    def static_missing(self):
        st, _, body = self.request("GET", f"/missing-{token()}.txt")
        expect(st, 404, body, None, "GET missing file")

    def cgi_hello(self):
        t = token()
        st, _, body = self.request("GET", f"/cgi-bin/hello.sh?{t}")
        expect(st, 200, body, f"hello {t}\n".encode(), "GET hello.sh")

    def cgi_zeros(self):
        st, _, body = self.request("GET", "/cgi-bin/zeros.sh?1")
        expect(st, 200, body, bytes(1 << 20), "GET zeros.sh?1")

    def cgi_upload(self):
        data = random.randbytes(random.choice([0, 1, 1000, 65536, random.randrange(1 << 19)]))
        chunked = random.random() < 0.7
        st, _, body = self.request(
            "POST", "/cgi-bin/sha256.sh", body=data, chunked=chunked,
            headers={"Content-Type": "application/octet-stream"},
        )
        want = (hashlib.sha256(data).hexdigest() + "\n").encode()
        expect(st, 200, body, want, f"POST sha256.sh {len(data)} bytes chunked={chunked}")

    def multipart(self):
        data = random.randbytes(random.choice([0, 10, random.randrange(1 << 18)]))
        t = token()
        boundary = "soak" + token()
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{t}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f-{t}.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        st, _, out = self.request(
            "POST", "/cgi-bin/offload.sh", body=body, chunked=random.random() < 0.3,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        expect(st, 200, out, None, "multipart to offload.sh")
        fields = dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)
        sha = hashlib.sha256(data).hexdigest()
        want = {
            "note": t,
            "file.name": f"f-{t}.bin",
            "file.size": str(len(data)),
            "file.sha256": sha,
            "file.disk_sha256": sha,
            "file.mode": "600",
        }
        wrong = {k: (fields.get(k), v) for k, v in want.items() if fields.get(k) != v}
        if wrong:
            raise Bad("body", st, f"multipart: (got, want) {wrong}; answer {out[:400]!r}")

    def php_hello(self):
        st, _, body = self.request("GET", "/hello.php")
        expect(st, 200, body, b"hello from php\n", "GET hello.php")

    def php_sleep(self):
        st, _, body = self.request("GET", f"/usleep.php?us={random.choice([5000, 50000, 200000])}")
        expect(st, 200, body, b"slept\n", "GET usleep.php")

    def php_input(self):
        data = random.randbytes(random.choice([0, 100, random.randrange(1 << 19)]))
        chunked = random.random() < 0.5
        st, _, body = self.request("POST", "/input.php", body=data, chunked=chunked)
        n = len(data)
        want = f"length={n}\ncontent_length={n}\nsha256={hashlib.sha256(data).hexdigest()}\n"
        expect(st, 200, body, want.encode(), f"POST input.php {n} bytes chunked={chunked}")

    def app_get(self):
        t = token()
        st, _, body = self.request("GET", f"/app/{t}?q={t}")
        expect(st, 200, body, None, "GET /app")
        m = APP_RE.fullmatch(body)
        if not m or m.groups() != (b"GET", f"/app/{t}?q={t}".encode(), f"/{t}".encode(), b"0"):
            raise Bad("body", st, f"GET /app/{t}: {body[:300]!r}")

    def app_post(self):
        data = random.randbytes(random.randrange(1 << 19))
        st, _, body = self.request("POST", "/app/post", body=data, chunked=random.random() < 0.3)
        expect(st, 200, body, None, "POST /app")
        m = APP_RE.fullmatch(body)
        if not m or m.groups() != (b"POST", b"/app/post", b"/post", str(len(data)).encode()):
            raise Bad("body", st, f"POST /app/post {len(data)} bytes: {body[:300]!r}")


# -- client aborts: raw sockets, dropped mid-upload or mid-download


def raw_abort(port, files):
    kind = random.choice(
        ["cgi-upload", "php-upload", "app-upload", "multipart", "static-dl", "cgi-dl", "head"]
    )
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return "refused"
    try:
        if random.random() < 0.5:  # close with a reset rather than a FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        total = 1 << 20
        part = random.randbytes(random.randrange(total // 2))
        if kind == "cgi-upload":
            s.sendall(
                b"POST /cgi-bin/sha256.sh HTTP/1.1\r\nHost: soak\r\n"
                b"Content-Length: %d\r\n\r\n" % total + part
            )
        elif kind == "app-upload":
            s.sendall(b"POST /app/abort HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % total + part)
        elif kind == "php-upload":
            s.sendall(b"POST /input.php HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n")
            s.sendall(b"%x\r\n" % len(part) + part + b"\r\n" if part else b"")
            s.sendall(b"10000\r\n" + bytes(1000))  # a chunk cut short
        elif kind == "multipart":
            b = "soakabort"
            s.sendall(
                b"POST /cgi-bin/offload.sh HTTP/1.1\r\nHost: soak\r\n"
                b"Content-Type: multipart/form-data; boundary=" + b.encode() + b"\r\n"
                b"Content-Length: %d\r\n\r\n" % total
                + f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".encode()
                + part
            )
        elif kind == "static-dl":
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: soak\r\n\r\n")
            s.recv(random.randrange(1, 65536))
        elif kind == "cgi-dl":
            s.sendall(b"GET /cgi-bin/zeros.sh?16 HTTP/1.1\r\nHost: soak\r\n\r\n")
            s.recv(random.randrange(1, 65536))
        else:  # a request head cut short
            s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: so")
        time.sleep(random.random() * 0.05)
    except OSError:
        pass  # the server may refuse or reset first; what matters is after
    finally:
        s.close()
    return kind


OPS = [
    # (weight, name)
    (8, "static_small"),
    (3, "static_big"),
    (3, "static_gzip"),
    (2, "static_missing"),
    (8, "cgi_hello"),
    (2, "cgi_zeros"),
    (5, "cgi_upload"),
    (5, "multipart"),
    (8, "php_hello"),
    (5, "php_sleep"),
    (5, "php_input"),
    (8, "app_get"),
    (5, "app_post"),
    (4, "abort"),
]


class Load:
    """CLIENTS threads running random ops until stopped; results recorded."""

    def __init__(self, port, files):
        self.port, self.files = port, files
        self.lock = threading.Lock()
        self.results = []
        self.aborts = {}
        self.threads = []
        self.names = [n for w, n in OPS for _ in range(w)]

    def run(self, secs):
        self.results, self.aborts = [], {}
        deadline = time.monotonic() + secs
        self.threads = [
            threading.Thread(target=self.worker, args=(deadline,), daemon=True)
            for _ in range(CLIENTS)
        ]
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            # REQUEST_TIMEOUT bounds every socket operation; a request needs a few.
            t.join(REQUEST_TIMEOUT * 4)
        stuck = [t for t in self.threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"{len(stuck)} client threads still running: a client hung")

    def worker(self, deadline):
        client = Client(self.port, self.files)
        while time.monotonic() < deadline:
            name = random.choice(self.names)
            if name == "abort":
                kind = raw_abort(self.port, self.files)
                with self.lock:
                    self.aborts[kind] = self.aborts.get(kind, 0) + 1
                continue
            start = time.monotonic()
            route = route_of(name)
            try:
                getattr(client, name)()
                res = Result(name, route, "ok", 200, "", start, time.monotonic())
            except Bad as e:
                res = Result(name, route, e.kind, e.status, str(e), start, time.monotonic())
            except socket.timeout as e:  # a hang: never excused
                res = Result(name, route, "timeout", None, repr(e), start, time.monotonic())
            except (OSError, http.client.HTTPException) as e:
                res = Result(name, route, "conn", None, f"{e!r} {client.story()}", start, time.monotonic())
            except Exception as e:  # noqa: BLE001 - a bug here must not look like a pass
                res = Result(name, route, "client-error", None, repr(e), start, time.monotonic())
            if res.kind != "ok":
                client.close()
            with self.lock:
                self.results.append(res)
        client.close()


def route_of(op):
    return {
        "static": ROUTE_STATIC,
        "cgi": ROUTE_CGI,
        "multipart": ROUTE_UPLOAD,
        "php": ROUTE_PHP,
        "app": ROUTE_APP,
    }[op.split("_")[0]]


def probe(port, url, want, limit):
    """GET url on a fresh connection every 50 ms until it answers 200 with
    want: when it did (time.monotonic()), or None after limit seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", url)
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status == 200 and want in body:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    return None


# ---------------------------------------------------------------------------
# the run


class Soak:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="cgihost-soak-")
        self.files = build_site(self.tmp)
        self.fpm = PhpFpm(os.path.join(self.tmp, "fpm"))
        self.server = None
        self.port = None
        self.failures = []  # check failures (strings)
        self.summary = {}

    # -- cgihost

    def start_server(self):
        with open(os.path.join(self.tmp, "cgihost.log"), "ab") as server_log:
            for _ in range(3):
                self.port = free_port()
                conf = write_config(self.tmp, self.port)
                # The pool's runtime dir (sockets) goes in the temp dir too.
                env = dict(os.environ, XDG_RUNTIME_DIR=os.path.join(self.tmp, "run"))
                self.server = subprocess.Popen(
                    [BIN, "--config", conf],
                    cwd=self.tmp,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=server_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                start = time.monotonic()
                while time.monotonic() - start < 20 and self.server.poll() is None:
                    if wait_connect(("127.0.0.1", self.port), 0.2):
                        break
                if self.server.poll() is None:
                    break
                self.server.wait()  # the port was taken meanwhile: another one
            else:
                raise RuntimeError("cgihost did not start; see the log")
        for url, want in (("/hello.php", b"hello from php"), ("/app/x", b"app.fcgi")):
            if probe(self.port, url, want, 20) is None:
                raise RuntimeError(f"{url} does not answer after start")
        log(f"cgihost pid {self.server.pid} on 127.0.0.1:{self.port}, temp dir {self.tmp}")

    def known(self):
        return {p.pid for p in (self.server, self.fpm.proc) if p is not None}

    def pool_workers(self):
        return [p for p in proc_children(self.server.pid) if "app.fcgi" in cmdline(p)]

    def others(self):
        """Children of cgihost that are not pool workers (zombies included:
        an unreaped child is a leak too)."""
        return [
            (p, cmdline(p) or "(zombie)")
            for p in proc_children(self.server.pid)
            if "app.fcgi" not in cmdline(p)
        ]

    def quiet_state(self):
        return {
            "fds": fd_count(self.server.pid),
            "rss_kb": rss_kb(self.server.pid),
            "workers": len(self.pool_workers()),
            "others": self.others(),
            "uploads": os.listdir(os.path.join(self.tmp, "uploads")),
            "spool": os.listdir(os.path.join(self.tmp, "spool")),
            "adopted": adopted(self.known()),
        }

    def settle(self, ok, limit=20.0):
        """Poll the quiet state until ok(state) or limit seconds."""
        start = time.monotonic()
        state = self.quiet_state()
        while not ok(state) and time.monotonic() - start < limit:
            time.sleep(0.5)
            state = self.quiet_state()
        return state

    def check_quiet(self, phase, base):
        def ok(s):
            return (
                s["fds"] <= base["fds"] + FD_MARGIN
                and s["rss_kb"] <= base["rss_kb"] + RSS_MARGIN_KB
                and s["workers"] == WORKERS
                and not s["others"]
                and not s["adopted"]
                and not s["uploads"]
                and not s["spool"]
            )

        s = self.settle(ok)
        log(
            f"{phase}: after the load fds {s['fds']} (baseline {base['fds']}), "
            f"VmRSS {s['rss_kb'] // 1024} MiB (baseline {base['rss_kb'] // 1024} MiB), "
            f"{s['workers']} pool workers, other children {len(s['others'])}, "
            f"orphans {len(s['adopted'])}"
        )
        if s["fds"] > base["fds"] + FD_MARGIN:
            self.failures.append(f"{phase}: open fds {s['fds']} > baseline {base['fds']} + {FD_MARGIN}")
        if s["rss_kb"] > base["rss_kb"] + RSS_MARGIN_KB:
            self.failures.append(
                f"{phase}: VmRSS {s['rss_kb']} kB > baseline {base['rss_kb']} kB + {RSS_MARGIN_KB} kB"
            )
        if s["workers"] != WORKERS:
            self.failures.append(f"{phase}: {s['workers']} pool workers, want {WORKERS}")
        if s["others"]:
            self.failures.append(f"{phase}: children of cgihost left: {s['others'][:5]}")
        if s["adopted"]:
            self.failures.append(f"{phase}: orphaned descendants left: {s['adopted'][:5]}")
        if s["uploads"] or s["spool"]:
            self.failures.append(
                f"{phase}: files left: uploads {s['uploads'][:5]}, spool {s['spool'][:5]}"
            )
        return s

    def baseline(self):
        # Wait for the warm-up's connections and scripts to be gone.
        s = self.settle(lambda s: not s["others"] and s["workers"] == WORKERS, 10)
        last = None
        for _ in range(10):  # then until the fd count holds still
            time.sleep(0.5)
            n = fd_count(self.server.pid)
            if n == last:
                break
            last = n
        s = self.quiet_state()
        log(f"baseline after warm-up: fds {s['fds']}, VmRSS {s['rss_kb'] // 1024} MiB")
        return s

    # -- phases

    def load_phase(self, name, secs):
        load = Load(self.port, self.files)
        load.run(secs)
        load.join()
        res = load.results
        bad = [r for r in res if r.kind != "ok"]
        by_route = {}
        for r in res:
            by_route[r.route] = by_route.get(r.route, 0) + 1
        log(
            f"{name}: {len(res)} requests in {secs:.0f}s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(by_route.items()))}), "
            f"{sum(load.aborts.values())} aborted connections, {len(bad)} wrong"
        )
        for r in bad[:10]:
            log(f"  WRONG {r}")
        return res, bad, load.aborts

    def chaos_phase(self, secs):
        events = {"php": [], "worker": [], "hup": 0}
        stop = threading.Event()
        errors = []

        def guarded(fn):
            def run():
                try:
                    fn()
                except Exception:  # noqa: BLE001 - reported as a failure
                    errors.append(traceback.format_exc())

            return run

        def hup():
            n = 1
            while not stop.wait(t_start + n - time.monotonic()):
                os.kill(self.server.pid, signal.SIGHUP)
                events["hup"] += 1
                n += 1

        def php_killer():
            # Half-way between two SIGHUPs: a reload makes new backends,
            # which would hide cgihost's back-off after the failed connects.
            kills = max(1, int(secs // 10))
            for i in range(kills):
                at = int(secs * (i + 0.5) / kills) + 0.5
                if stop.wait(t_start + at - time.monotonic()):
                    return
                t_kill = time.monotonic()
                self.fpm.kill_master_and_pool()
                self.fpm.start()
                t_ready = time.monotonic()
                t_ok = probe(self.port, "/hello.php", b"hello from php", 10)
                events["php"].append((t_kill, t_ready, t_ok))
                log(
                    f"chaos: php-fpm killed at {t_kill - T0:.1f}s, listening again after "
                    f"{t_ready - t_kill:.2f}s, PHP answered {(t_ok or t_ready) - t_ready:.2f}s later"
                    + ("" if t_ok else " (NOT within 10 s)")
                )

        def worker_killer():
            while not stop.wait(random.uniform(1.0, 3.0)):
                workers = self.pool_workers()
                if not workers:
                    continue
                pid = random.choice(workers)
                t_kill = time.monotonic()
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                t_ok = probe(self.port, "/app/probe", b"app.fcgi", 10)
                events["worker"].append((t_kill, pid, t_ok))

        load = Load(self.port, self.files)
        t_start = time.monotonic()
        load.run(secs)
        threads = [threading.Thread(target=guarded(f), daemon=True) for f in (hup, php_killer, worker_killer)]
        for t in threads:
            t.start()
        load.join()
        stop.set()
        for t in threads:
            t.join(30)
        if any(t.is_alive() for t in threads) or errors:
            self.failures.append("chaos: a controller thread failed: " + " | ".join(errors))

        # Classify every failure.
        res = load.results
        php_ev, worker_ev = events["php"], events["worker"]
        cats = {"in_flight": 0, "php_down": 0, "backoff": 0, "unexcused": 0}
        unexcused = []
        for r in res:
            if r.kind == "ok":
                continue
            cat = None
            allowed = r.kind == "conn" or (r.kind == "status" and r.status in (502, 504))
            if allowed and r.route == ROUTE_PHP:
                for t_kill, t_ready, t_ok in php_ev:
                    if r.start <= t_kill <= r.end:
                        cat = "in_flight"
                    elif t_kill < r.start <= t_ready:
                        cat = cat or "php_down"
                    elif t_ready < r.start <= (t_ok or float("inf")):
                        cat = cat or "backoff"
            if allowed and r.route == ROUTE_APP:
                for t_kill, _, _ in worker_ev:
                    if r.start <= t_kill + KILL_SLACK and r.end >= t_kill:
                        cat = "in_flight"
            cats[cat or "unexcused"] += 1
            if cat is None:
                unexcused.append(r)
        rec_php = [t_ok - t_ready for _, t_ready, t_ok in php_ev if t_ok]
        rec_php_kill = [t_ok - t_kill for t_kill, _, t_ok in php_ev if t_ok]
        rec_worker = [t_ok - t_kill for t_kill, _, t_ok in worker_ev if t_ok]
        outage = [t_ready - t_kill for t_kill, t_ready, _ in php_ev]
        failed = sum(1 for r in res if r.kind != "ok")
        by_kind = {}
        for r in res:
            if r.kind != "ok":
                key = f"{r.route}:{r.kind}{'' if r.status is None else '/' + str(r.status)}"
                by_kind[key] = by_kind.get(key, 0) + 1
        fig = {
            "requests": len(res),
            "failed": failed,
            "in_flight": cats["in_flight"],
            "php_down": cats["php_down"],
            "backoff": cats["backoff"],
            "unexcused": cats["unexcused"],
            "php_kills": len(php_ev),
            "worker_kills": len(worker_ev),
            "hups": events["hup"],
            "aborts": sum(load.aborts.values()),
            "max_rec_php": max(rec_php, default=0.0),
            "max_rec_php_from_kill": max(rec_php_kill, default=0.0),
            "max_rec_worker": max(rec_worker, default=0.0),
            "max_php_outage": max(outage, default=0.0),
        }
        log(
            f"chaos: {fig['requests']} requests in {secs:.0f}s, {failed} failed "
            f"({fig['in_flight']} in flight at a kill, {fig['php_down']} sent while php-fpm "
            f"was down, {fig['backoff']} sent after it was back but before cgihost's "
            f"back-off let it be tried again, {fig['unexcused']} unexcused) {by_kind}; "
            f"{fig['php_kills']} php-fpm kills (down {fig['max_php_outage']:.2f}s at most), "
            f"{fig['worker_kills']} worker kills, {fig['hups']} SIGHUPs, {fig['aborts']} aborted connections"
        )
        log(
            f"chaos: max recovery: php-fpm {fig['max_rec_php']:.2f}s after restart "
            f"({fig['max_rec_php_from_kill']:.2f}s after the kill), "
            f"spawned pool {fig['max_rec_worker']:.2f}s after a worker kill"
        )
        for r in unexcused[:10]:
            log(f"  UNEXCUSED {r}")
        if fig["unexcused"]:
            self.failures.append(f"chaos: {fig['unexcused']} requests failed that no kill explains")
        if any(t_ok is None for *_, t_ok in php_ev) or any(t_ok is None for *_, t_ok in worker_ev):
            self.failures.append("chaos: service did not return within 10 s of a kill")
        if fig["max_rec_php"] >= RECOVERY_LIMIT or fig["max_rec_worker"] >= RECOVERY_LIMIT:
            self.failures.append(
                f"chaos: recovery took {max(fig['max_rec_php'], fig['max_rec_worker']):.2f}s "
                f"(limit {RECOVERY_LIMIT}s)"
            )
        if not php_ev or not worker_ev:
            self.failures.append("chaos: no kill happened (too short a SOAK_SECS?)")
        return fig

    def stop_server(self):
        """SIGTERM, wait for the exit; nothing it started may survive it."""
        if self.server is None:
            return
        if self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.failures.append("shutdown: cgihost did not exit within 30 s of SIGTERM")
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
        if self.server.returncode != 0:
            self.failures.append(f"shutdown: cgihost exited with {self.server.returncode}")
        self.server = None
        time.sleep(0.3)
        left = procs_mentioning(self.tmp + "/")
        left = [(p, c) for p, c in left if "php-fpm" not in c]
        left += adopted(self.known())
        if left:
            self.failures.append(f"shutdown: processes left behind: {left[:5]}")
        run = os.listdir(os.path.join(self.tmp, "run"))
        if run:
            self.failures.append(f"shutdown: runtime dir not removed: {run}")

    def cleanup(self):
        if self.server is not None:
            try:
                os.killpg(self.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.server.wait()
            self.server = None
        self.fpm.stop()
        for pid, _ in procs_mentioning(self.tmp + "/") + adopted(set()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        adopted(set())  # reap them
        if KEEP:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self):
        path = os.path.join(self.tmp, "cgihost.log")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        panics = [line for line in data.splitlines() if b"panicked" in line]
        if panics:
            self.failures.append(f"cgihost panicked: {panics[0][:300]!r}")
        # A reload must switch as soon as the new workers answer.
        # (A worker killed while it holds the probe's connection is chaos:
        # "did not answer a probe (Connection reset by peer)".)
        unprobed = [line for line in data.splitlines() if b"no answer to FCGI_GET_VALUES" in line]
        if unprobed:
            self.failures.append(
                f"{len(unprobed)} pool generations did not answer the probe in time: "
                f"{unprobed[0][-200:].decode(errors='replace')}"
            )
        errors = [line for line in data.splitlines() if b" ERROR " in line or b"WARN" in line]
        log(f"cgihost log: {len(data.splitlines())} lines, {len(errors)} WARN/ERROR; last of them:")
        for line in errors[-8:]:
            print("    " + line.decode(errors="replace")[:300], flush=True)

    def alive(self, phase):
        if self.server.poll() is not None:
            raise RuntimeError(f"cgihost exited with {self.server.returncode} during the {phase}")

    def run(self):
        self.fpm.start()
        self.start_server()
        res, bad, _ = self.load_phase("warm-up", WARMUP_SECS)
        self.alive("warm-up")
        if bad:
            self.failures.append(f"warm-up: {len(bad)} wrong answers")
        base = self.baseline()
        res, bad, aborts = self.load_phase("soak", SOAK_SECS)
        self.alive("soak")
        if bad:
            self.failures.append(f"soak: {len(bad)} wrong answers")
        end = self.check_quiet("soak", base)
        self.summary["soak"] = (len(res), len(bad), sum(aborts.values()), base, end)
        fig = self.chaos_phase(CHAOS_SECS)
        self.alive("chaos")
        self.summary["chaos"] = fig
        self.check_quiet("chaos", base)
        self.stop_server()
        self.log_tail()


def main():
    def interrupted(signum, _frame):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # one is enough: clean up
        raise SystemExit(f"interrupted by signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, interrupted)
    started = time.monotonic()
    become_subreaper()
    soak = Soak()
    crash = None
    try:
        soak.run()
    except BaseException as e:  # noqa: BLE001 - always clean up and summarise
        crash = e
        if not isinstance(e, SystemExit):
            traceback.print_exc()
        soak.failures.append(f"aborted: {e!r}")
        soak.log_tail()
    finally:
        soak.cleanup()
    secs = time.monotonic() - started
    parts = []
    if "soak" in soak.summary:
        n, bad, aborts, base, end = soak.summary["soak"]
        parts.append(
            f"soak {n} requests, {bad} wrong, {aborts} aborts, fds {base['fds']}->{end['fds']}, "
            f"rss {base['rss_kb'] // 1024}->{end['rss_kb'] // 1024} MiB"
        )
    if "chaos" in soak.summary:
        f = soak.summary["chaos"]
        parts.append(
            f"chaos {f['requests']} requests, {f['failed']} failed ({f['in_flight']} in flight at a kill, "
            f"{f['php_down']} while php-fpm down, {f['backoff']} in back-off, {f['unexcused']} unexcused), "
            f"{f['php_kills']} php-fpm + "
            f"{f['worker_kills']} worker kills, {f['hups']} SIGHUPs, max recovery "
            f"{max(f['max_rec_php'], f['max_rec_worker']):.2f}s"
        )
    verdict = "PASS" if not soak.failures and crash is None else "FAIL"
    for f in soak.failures:
        log(f"FAILED: {f}")
    checks = f"{len(soak.failures)} checks failed; " if soak.failures else ""
    print(f"soak: {verdict} in {secs:.0f}s: {checks}" + "; ".join(parts), flush=True)
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
