#!/usr/bin/env python3
"""Black-box defenses: a real daemon in front of a [route] origin this test
runs on loopback, attacked with slowhttptest (slowloris -H, slow read -X)
and raw sockets, while a normal client on the same listener is measured;
then the connection caps (per address and in all). Short timeouts come from
the test's config: they are config keys for that. Prints "N passed, N
failed"; exit 77 if slowhttptest or docker is missing.
"""
import csv
import http.server
import os
import shutil
import socket
import subprocess
import ssl
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, ensure_docker, ensure_test_image, free_port  # noqa: E402

BIG = bytes((33 + (i * 7) % 89) for i in range(4 << 20))


class Origin(http.server.BaseHTTPRequestHandler):
    """The [route] upstream: a small page, a 4 MiB body, an echo."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.reply(BIG if self.path.startswith("/big") else b"hello\n")

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(self.rfile.read(n))


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass    # clients cut mid-response (the attacks) are expected


def start_origin():
    srv = OriginServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def route(origin_port):
    return "\n[route origin]\nhost = localhost\nupstream = 127.0.0.1:%d\n" % origin_port


def get(port, path="/", source="127.0.0.2", timeout=5):
    """One GET to the route from source; (status, body, seconds) or (None, err, s)."""
    t0 = time.time()
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n\r\n"
                   % (path, port)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None
        return status, body, time.time() - t0
    except OSError as e:
        return None, str(e), time.time() - t0
    finally:
        s.close()


class Prober(threading.Thread):
    """A normal client during an attack: one request every 200 ms."""

    def __init__(self, port, path="/"):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.results = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and len(self.results) < 200:
            self.results.append(get(self.port, self.path))
            self.stop.wait(0.2)

    def summary(self):
        ok = [r for r in self.results if r[0] == 200]
        worst = max((r[2] for r in ok), default=0.0)
        return len(ok), len(self.results), worst


def established(port):
    """Client connections our daemon holds on port (server side), via ss."""
    r = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :%d )" % port],
                       capture_output=True, text=True)
    return len([line for line in r.stdout.splitlines() if line.strip()])


def slowhttptest(t, d, args, seconds):
    """Run slowhttptest (bounded), sampling the daemon's side once a second:
    (its CSV rows as dicts, [(second, connections we hold)])."""
    prefix = os.path.join(d.tmp, "sht-%d" % time.time_ns())
    cmd = ["slowhttptest", *args, "-l", str(seconds), "-g", "-o", prefix,
           "-u", "http://localhost:%d/%s" % (d.port, "big" if "-X" in args else "")]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, samples = time.time(), []
    while p.poll() is None and time.time() - t0 < seconds + 30:
        time.sleep(1)
        samples.append((round(time.time() - t0), established(d.port)))
    if p.poll() is None:
        p.kill()
        t.check(False, "slowhttptest ran over its time")
    p.wait()
    try:
        with open(prefix + ".csv") as f:
            return list(csv.DictReader(f)), samples
    except OSError:
        t.check(False, "slowhttptest wrote no report")
        return [], samples


def attack_report(rows):
    """slowhttptest's view: (most connected at once, closed at the end)."""
    if not rows:
        return 0, 0
    return max(int(r["Connected"]) for r in rows), int(rows[-1]["Closed"])


def test_slowloris(t, d):
    """-H: 200 connections trickling header lines every second; the
    header_timeout (2 s) must cut them all while a normal client is served."""
    probe = Prober(d.port)
    probe.start()
    rows, samples = slowhttptest(t, d, ["-H", "-c", "200", "-r", "100", "-i", "1", "-x", "8",
                                        "-p", "3"], 12)
    probe.stop.set()
    probe.join(10)
    peak, closed = attack_report(rows)
    held = max(n for _, n in samples) if samples else 0
    # Opened over 2 s, each cut 2 s after its start: all gone by about
    # 5 s, when slowhttptest stops by itself (it has none left).
    t.check(peak >= 100 and closed >= 150 and closed >= peak - 5,
            "slowhttptest saw its connections opened and closed: peak=%d closed=%d" % (peak, closed))
    t.check(samples and samples[-1][0] <= 8,
            "slowhttptest ran out of connections early: %r" % samples[-1:])
    t.check(held >= 50 and samples and samples[-1][1] <= 5,
            "the daemon held them, then none: %r" % samples)
    ok, n, worst = probe.summary()
    t.check(n >= 10 and ok == n, "normal client served during slowloris: %d/%d" % (ok, n))
    t.check(worst < 1.0, "normal client latency during slowloris: worst %.3f s" % worst)


def raw_slowloris(t, d):
    """Our own check: trickling a byte every 0.5 s never extends the
    2 s header_timeout; each connection gets its 408 by about 2 s."""
    socks = []
    t0 = time.time()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.setblocking(False)
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        socks.append(s)
    ends = {}
    while len(ends) < len(socks) and time.time() - t0 < 6:
        time.sleep(0.5)
        for i, s in enumerate(socks):
            if i in ends:
                continue
            try:
                s.send(b"X")
            except OSError:
                pass
            try:
                data = s.recv(4096)
                ends[i] = (time.time() - t0, data[:12])
            except BlockingIOError:
                pass
            except OSError as e:
                ends[i] = (time.time() - t0, str(e))
    for s in socks:
        s.close()
    t.check(len(ends) == 20, "every trickling head was ended: %d/20" % len(ends))
    late = [e for e in ends.values() if e[0] > 3.2]
    t.check(not late, "ended by about header_timeout (2 s): late %r" % late[:3])
    t.check(all(e[1] == b"HTTP/1.1 408" for e in ends.values()),
            "with a 408: %r" % list(ends.values())[:3])


def test_slow_read(t, d):
    """-X: 100 connections with a tiny window (1-64 bytes) reading 32
    bytes a second of a 4 MiB response; send_min_rate (20 KiB/s over 2 s)
    cuts them with a reset. slowhttptest reads too little to notice the
    reset, so the check is the daemon's side: what ss shows it holding,
    and its log."""
    before = count_log(d, "client reads too slowly")
    probe = Prober(d.port)
    probe.start()
    rows, samples = slowhttptest(t, d, ["-X", "-c", "100", "-r", "50", "-w", "1", "-y", "64",
                                        "-n", "1", "-z", "32", "-k", "2", "-p", "3"], 12)
    probe.stop.set()
    probe.join(10)
    peak, _ = attack_report(rows)
    late = [n for sec, n in samples if sec >= 8]
    cut = count_log(d, "client reads too slowly") - before
    t.check(peak >= 90, "slowhttptest connected its slow readers: %d" % peak)
    t.check(late and all(n <= 5 for n in late), "the daemon holds none after 8 s: %r" % samples)
    t.check(cut >= 90, "slow readers cut by the send rate rule: %d" % cut)
    ok, n, worst = probe.summary()
    t.check(n >= 10 and ok == n, "normal client served during slow read: %d/%d" % (ok, n))
    t.check(worst < 1.0, "normal client latency during slow read: worst %.3f s" % worst)


def count_log(d, what):
    with open(d.log_path, errors="replace") as f:
        return sum(1 for line in f if what in line)


def read_slowly(t, s, who):
    """Ask for /big on s and take 1000 bytes every half second: the send
    rate rule must cut s within a few send windows, long before the end."""
    s.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got, t0, cut = 0, time.time(), None
    while time.time() - t0 < 15:
        time.sleep(0.5)
        try:
            chunk = s.recv(1000)
        except OSError as e:
            cut = str(e) or type(e).__name__
            break
        if not chunk:
            cut = "EOF"
            break
        got += len(chunk)
    s.close()
    t.check(cut is not None and got < len(BIG),
            "%s cut after %.1f s, %d bytes: %s" % (who, time.time() - t0, got, cut))
    t.check(time.time() - t0 < 10, "%s cut within a few send windows" % who)


def raw_slow_read(t, d):
    """Our own check: a 4 KiB receive buffer, 2 KB taken a second: cut
    (reset) within a few send windows, long before the body is read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", d.port))
    read_slowly(t, s, "slow reader")
    status, body, _ = get(d.port, "/big")
    t.check(status == 200 and body == BIG, "a normal reader gets the whole 4 MiB")


def tls_slow_read(t, d):
    """The same over TLS, where the connection writes its records itself:
    a reader that takes 2 KB a second is cut by the send rate rule, and a
    normal one gets the whole body, record by record."""
    raw = socket.create_connection(("127.0.0.1", d.tls_port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(raw, server_hostname="x.preview.localhost")
    read_slowly(t, s, "TLS slow reader")
    raw = socket.create_connection(("127.0.0.1", d.tls_port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="x.preview.localhost")
    s.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    t.check(head.startswith(b"HTTP/1.1 200") and body == BIG,
            "a normal TLS reader gets the whole 4 MiB: %r, %d bytes" % (head[:20], len(body)))


def test_body_rates(t, d):
    """A body below body_min_rate gets 408; a slow-but-moving one is kept."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
    t0, data = time.time(), b""
    try:
        while time.time() - t0 < 10 and not data:
            s.sendall(b"x" * 50)
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
            except socket.timeout:
                pass
    except OSError:
        pass
    s.close()
    t.check(data.startswith(b"HTTP/1.1 408"), "a trickled body gets 408: %r" % data[:40])
    # 4 KiB every 0.25 s for 4 s, past response_timeout (3 s): served.
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    body = b"y" * (16 * 4096)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 4096):
        s.sendall(body[i:i + 4096])
        time.sleep(0.25)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    t.check(data.startswith(b"HTTP/1.1 200") and data.endswith(body),
            "a moving 4 s upload is answered: %r" % data[:40])


def refused(port, source, wait=1.0):
    """Open a connection from source; True if closed at once without a byte."""
    s = socket.socket()
    s.settimeout(wait)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


def test_caps(t, d):
    """max_connections_per_ip = 10, max_connections = 15."""
    held = []
    time.sleep(0.5)     # the harness's health checks have closed

    def keep(source):
        s = socket.socket()
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(("127.0.0.1", d.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ok = s.recv(4096).startswith(b"HTTP/1.1 200")
        held.append(s)
        return ok
    t.check(all([keep("127.0.0.1") for _ in range(10)]), "10 kept connections from 127.0.0.1")
    t.check(refused(d.port, "127.0.0.1"), "the 11th connection from 127.0.0.1 is refused")
    status, _, _ = get(d.port, "/", source="127.0.0.2")
    t.check(status == 200, "127.0.0.2 is still served: %r" % status)
    time.sleep(0.3)
    t.check(all([keep("127.0.0.2") for _ in range(5)]), "5 kept connections from 127.0.0.2")
    t.check(refused(d.port, "127.0.0.3"), "over max_connections: 127.0.0.3 is refused too")
    for s in held[:3]:
        s.close()
    time.sleep(0.3)
    status, _, _ = get(d.port, "/", source="127.0.0.1")
    t.check(status == 200, "closed connections give their places back: %r" % status)
    for s in held[3:]:
        s.close()
    with open(d.log_path, errors="replace") as f:
        log = f.read()
    t.check("connections refused over a cap" in log, "refusals are logged (rate-limited warning)")


def main():
    if shutil.which("slowhttptest") is None:
        print("slowhttptest is not installed: skipping the defenses test")
        return 77
    if not ensure_docker():
        print("docker is not available: skipping the defenses test")
        return 77
    ensure_test_image()
    origin = start_origin()
    oport = origin.server_address[1]
    t = Runner()
    tmp = tempfile.mkdtemp(prefix="sbxdef-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=x.preview.localhost", "-keyout", key,
                    "-out", cert, "-addext", "subjectAltName=DNS:*.preview.localhost"],
                   check=True, capture_output=True)
    tls_port = free_port()
    attacks = Daemon(extra="\n".join([
        "tls_listen = 127.0.0.1:%d" % tls_port,
        "tls_cert = %s" % cert,
        "tls_key = %s" % key,
        "max_connections_per_ip = 1000",
        "header_timeout = 2s",
        "keepalive_timeout = 5s",
        "body_timeout = 2s",
        "body_min_rate = 1k",
        "send_timeout = 2s",
        "send_min_rate = 20k",
        "response_timeout = 3s",
        "response_idle_timeout = 10s",
        "tunnel_idle_timeout = 10s",
    ]) + route(oport))
    caps = Daemon(extra="\n".join([
        "max_connections = 15",
        "max_connections_per_ip = 10",
        "header_timeout = 20s",
        "keepalive_timeout = 30s",
    ]) + route(oport))
    try:
        attacks.start()
        attacks.tls_port = tls_port
        t.run(test_slowloris, attacks)
        t.run(raw_slowloris, attacks)
        t.run(test_slow_read, attacks)
        t.run(raw_slow_read, attacks)
        t.run(tls_slow_read, attacks)
        t.run(test_body_rates, attacks)
        if t.failed:
            print("---- daemon log (tail) ----\n" + attacks.logs())
        attacks.cleanup()
        caps.start()
        t.run(test_caps, caps)
    finally:
        if t.failed:
            print("---- daemon log (tail) ----\n" + caps.logs())
        attacks.cleanup()
        caps.cleanup()
        origin.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
