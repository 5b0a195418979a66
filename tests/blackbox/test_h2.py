#!/usr/bin/env python3
"""Black-box scenarios for HTTP/2 on the client side (issue 7, part 2):
h2c with prior knowledge to the API, to a [route] and to a real sandbox;
20 streams on one connection; 8 MB both ways; a slow stream beside a fast
one; WebSocket over h2 (RFC 8441); a held request woken by h2; 431; rapid
reset and CONTINUATION floods; GOAWAY at SIGTERM. Every scenario but the
last runs twice, by transport: h2c with prior knowledge on the plain
listener, then TLS with h2 chosen by ALPN on a tls_listen (a test CA from
test_tls.py's PKI; curl --http2, not prior knowledge). H2_TRANSPORTS=h2c or
=tls runs one; H2_TESTS=name,... a subset. Real clients (curl, h2load,
python3-h2, raw frames over a socket or an ssl socket), a real origin on
loopback started here, real busybox containers for the sandbox cases
(skipped without Docker). Prints "N passed, N failed"; exits 77 if
python3-h2 is missing."""
import asyncio
import hashlib
import http.server
import os
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
except ImportError:
    # pyenv's python3 may come first in PATH; Debian's has python3-h2.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("SKIP: python3-h2 is not installed")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, SANDBOXD, ensure_docker,  # noqa: E402
                     ensure_test_image, free_port, wait_for)

MIB = 1024 * 1024
ROUTE_HOST = "echo.localhost"
WS_HOST = "ws.localhost"


# --- the origin: HTTP/1.1 on loopback ---------------------------------------

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def read_body(self):
        """The request body, chunked or by length, and its trailers."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            body, trailers = b"", {}
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
            while True:
                ln = self.rfile.readline()
                if ln in (b"\r\n", b"\n", b""):
                    break
                k, v = ln.decode().split(":", 1)
                trailers[k.strip().lower()] = v.strip()
            return body, trailers, "chunked"
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n), {}, "length"

    def send_body(self, status, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, q = self.path.partition("?")
        args = dict(a.split("=", 1) for a in q.split("&") if "=" in a)
        if path == "/hello":
            self.send_body(200, b"hello\n", {"Set-Cookie": "a=b", "X-Host": self.headers.get("Host", "")})
        elif path == "/headers":
            self.send_body(200, str(self.headers).encode())
        elif path == "/delay":
            time.sleep(int(args.get("ms", "100")) / 1000.0)
            self.send_body(200, b"late\n")
        elif path == "/big":
            # Chunked, so edge dechunks it into DATA frames.
            n = int(args.get("n", str(MIB)))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * 65536
            left = n
            try:
                while left > 0:
                    c = block[:min(left, len(block))]
                    self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
                    left -= len(c)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True
        elif path == "/many-trailers":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            tr = "".join("X-T%d: v%d\r\n" % (i, i) for i in range(100))
            self.wfile.write(b"2\r\nok\r\n0\r\n" + tr.encode() + b"\r\n")
        elif path == "/trailers":
            # Chunked with trailers (gRPC-style), one cut across writes.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "grpc-status, X-Checksum")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nX-Chec")
            self.wfile.flush()
            time.sleep(0.05)
            self.wfile.write(b"ksum:  abc123 \r\n\r\n")
        else:
            self.send_body(404, b"no\n")

    def do_POST(self):
        body, trailers, kind = self.read_body()
        h = {"X-Framing": kind, "X-Sha": hashlib.sha256(body).hexdigest()}
        for k, v in trailers.items():
            h["X-Trailer-" + k] = v
        self.send_body(200, body, h)


class ThreadedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass    # a client edge cut off (a reset stream) is no news here


def start_origin():
    srv = ThreadedServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def start_ws_origin():
    """A python3-websockets echo server on loopback (HTTP/1.1 Upgrade): it
    checks the key and version edge sends, as any real server does."""
    import websockets
    port = free_port()
    ready = threading.Event()
    state = {}

    async def echo(ws, path=None):
        async for msg in ws:
            await ws.send(msg)

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        state["loop"] = loop
        server = loop.run_until_complete(websockets.serve(echo, "127.0.0.1", port))
        state["server"] = server
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return port


# --- an h2 client on a raw socket -------------------------------------------

class H2:
    """python3-h2 over one blocking socket, with a bounded event pump."""

    def __init__(self, tx, window=None, settings=None):
        self.s = tx.connect()
        self.scheme = tx.scheme
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.c = h2.connection.H2Connection(config=cfg)
        self.c.initiate_connection()
        if settings:
            self.c.update_settings(settings)
        if window:
            self.c.increment_flow_control_window(window)
        self.send()
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.remote_settings = {}
        self.auto_ack = True
        self.no_ack = set()

    def send(self):
        data = self.c.data_to_send()
        if data:
            self.s.sendall(data)

    def request(self, host, path, method="GET", headers=None, body=None, end=True, extra=None):
        sid = self.c.get_next_available_stream_id()
        h = [(":method", method), (":path", path), (":scheme", self.scheme), (":authority", host)]
        h += list(extra or [])
        h += list((headers or {}).items())
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False,
                             "reset": None, "trailers": None, "informational": []}
        self.c.send_headers(sid, h, end_stream=end and body is None)
        self.send()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid, body, end=True, deadline=60):
        """Send body respecting flow control, pumping events meanwhile."""
        view = memoryview(body)
        t_end = time.time() + deadline
        while len(view) > 0 and time.time() < t_end:
            w = min(self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size)
            if w <= 0:
                self.pump(0.5)
                continue
            self.c.send_data(sid, bytes(view[:w]))
            view = view[w:]
            self.send()
        if end and len(view) == 0:
            self.c.end_stream(sid)
            self.send()
        return len(view) == 0

    def pump(self, timeout):
        """Read once (up to timeout) and handle the events; False at EOF."""
        self.s.settimeout(timeout)
        try:
            data = self.s.recv(1 << 20)
        except socket.timeout:
            return True
        except OSError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        try:
            events = self.c.receive_data(data)
        except Exception:
            self.closed = True
            return False
        for ev in events:
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                st["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.InformationalResponseReceived):
                st["informational"].append(dict(ev.headers))
            elif isinstance(ev, h2.events.TrailersReceived):
                st["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                if st is not None:
                    st["data"] += ev.data
                if ev.stream_id not in self.no_ack:
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif ev.flow_controlled_length > 0:
                    # The connection's window only: this stream stays shut.
                    self.c.increment_flow_control_window(ev.flow_controlled_length)
            elif isinstance(ev, h2.events.StreamEnded):
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                if st is not None:
                    st["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                for k, v in ev.changed_settings.items():
                    self.remote_settings[k] = v.new_value
        try:
            self.send()
        except OSError:
            self.closed = True
            return False
        return True

    def wait(self, cond, timeout=20):
        deadline = time.time() + timeout
        while not cond() and time.time() < deadline:
            if not self.pump(min(0.5, max(0.01, deadline - time.time()))):
                break
        return cond()

    def done(self, sid):
        st = self.streams[sid]
        return st["ended"] or st["reset"] is not None

    def get(self, host, path, timeout=20, **kw):
        sid = self.request(host, path, **kw)
        self.wait(lambda: self.done(sid), timeout)
        return self.streams[sid]

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def status(st):
    return int(st["headers"][":status"]) if st and st.get("headers") else None


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def asan_build():
    """Under ASan freed memory sits in quarantine: RSS says nothing then."""
    r = subprocess.run(["ldd", SANDBOXD], capture_output=True, text=True)
    return "libasan" in r.stdout


ASAN = None


def rss_bounded(t, before, after, limit_kb, what):
    global ASAN
    if ASAN is None:
        ASAN = asan_build()
    if ASAN:
        print("  note  %s: RSS %d -> %d KiB (ASan build: not checked)" % (what, before, after))
        return
    t.check(after - before < limit_kb, "%s: RSS bounded (%d -> %d KiB)" % (what, before, after))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def healthy(d):
    r = d.request("GET", "/healthz", key=None, timeout=10)
    return r.status == 200


def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout)] + list(args),
                          capture_output=True, timeout=timeout + 10)


class Transport:
    """How a scenario reaches the daemon: h2c with prior knowledge on the
    plain listener ("h2c"), or TLS on the tls_listen with HTTP/2 chosen by
    ALPN, as a browser does ("tls", ca set). Every scenario runs on both."""

    def __init__(self, name, port, ca=None):
        self.name = name
        self.port = port
        self.ca = ca
        self.scheme = "https" if ca else "http"
        self.api_host = "127.0.0.1:%d" % port

    def connect(self, timeout=10, sni=ROUTE_HOST):
        """A socket that speaks h2 from its first byte."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if not self.ca:
            return s
        c = ssl.create_default_context(cafile=self.ca)
        c.set_alpn_protocols(["h2", "http/1.1"])
        s = c.wrap_socket(s, server_hostname=sni)
        if s.selected_alpn_protocol() != "h2":
            s.close()
            raise OSError("ALPN chose %r, not h2" % s.selected_alpn_protocol())
        return s

    def curl(self, host, path, *args, timeout=60):
        """curl to host (an authority) and path: with prior knowledge, or
        --http2 over TLS (curl offers h2 and http/1.1 by ALPN)."""
        if not self.ca:
            return curl("--http2-prior-knowledge", "-H", "Host: " + host, *args,
                        "http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout)
        name = host.rsplit(":", 1)[0]
        extra = [] if name == "127.0.0.1" else ["--resolve", "%s:%d:127.0.0.1" % (name, self.port)]
        return curl("--http2", "--cacert", self.ca, *extra, *args,
                    "https://%s:%d%s" % (name, self.port, path), timeout=timeout)


# --- scenarios: API and [route] ---------------------------------------------

def test_api_curl(t, d, ctx):
    tx = ctx["tx"]
    r = tx.curl(tx.api_host, "/healthz", "-w", "\n%{http_version} %{http_code}")
    out = r.stdout.decode(errors="replace")
    t.check(out.endswith("\n2 200") and '"status"' in out, "curl h2c /healthz: %r %r" % (out, r.stderr))
    # The API with a key and a JSON error: same as HTTP/1.1.
    r = tx.curl(tx.api_host, "/v1/sandboxes", "-w", "\n%{http_code}", "-H", "Authorization: Bearer " + d.key())
    out = r.stdout.decode(errors="replace")
    t.check(out.endswith("\n200"), "curl h2c GET /v1/sandboxes: %r" % out)
    r = tx.curl(tx.api_host, "/v1/sandboxes", "-w", "\n%{http_code}")
    out = r.stdout.decode(errors="replace")
    t.check(out.endswith("\n401") and '"error"' in out, "no key: 401 JSON over h2: %r" % out)
    # A POST body to the API over h2 (Content-Length and without).
    for extra in ([], ["-H", "Content-Length:"]):
        r = tx.curl(tx.api_host, "/v1/sandboxes", "-w", "\n%{http_code}", "-H", "Authorization: Bearer " + d.key(),
                    "-H", "Content-Type: application/json", "-d", '{"template":"nope"}', *extra)
        out = r.stdout.decode(errors="replace")
        t.check(out.endswith("\n400") or out.endswith("\n404") or out.endswith("\n422"),
                "POST with a body over h2 %s reaches the API: %r" % (extra, out))
    # Plain HTTP/1.1 on the same listener is unchanged.
    r = d.request("GET", "/healthz", key=None)
    t.check(r.status == 200, "HTTP/1.1 still served: %r" % r)


def test_route_basic(t, d, ctx):
    c = H2(ctx["tx"])
    try:
        st = c.get(ROUTE_HOST, "/hello", headers={"cookie": "x=1", "accept": "*/*"},
                   extra=[("cookie", "y=2")])
        t.check(status(st) == 200 and bytes(st["data"]) == b"hello\n", "GET /hello over h2: %r" % st)
        hd = st["headers"] or {}
        t.check("connection" not in hd and "transfer-encoding" not in hd and "keep-alive" not in hd,
                "no HTTP/1.1-only headers in the h2 response: %r" % hd)
        t.check(hd.get("x-host") == ROUTE_HOST, ":authority reaches the upstream as Host: %r" % hd)
        st = c.get(ROUTE_HOST, "/headers", headers={"cookie": "x=1"}, extra=[("cookie", "y=2")])
        body = bytes(st["data"]).decode(errors="replace").lower()
        t.check("cookie: y=2; x=1" in body, "cookie crumbs joined for HTTP/1.1: %r" % body)
        t.check("x-forwarded-for: 127.0.0.1" in body, "X-Forwarded-For set: %r" % body)
        t.check("x-forwarded-proto: %s" % ctx["tx"].scheme in body, "X-Forwarded-Proto %s: %r" %
                (ctx["tx"].scheme, body))
        st = c.get("nope.localhost", "/")
        t.check(status(st) == 404, "unknown host 404 over h2: %r" % status(st))
        # Two hosts on one connection (a browser coalescing them).
        st = c.get(ctx["tx"].api_host, "/healthz")
        t.check(status(st) == 200, "the API on the same h2 connection: %r" % status(st))
    finally:
        c.close()
    r = ctx["tx"].curl(ROUTE_HOST, "/big?n=100000", "-w", "\n%{http_version}")
    t.check(len(r.stdout) == 100000 + 2 and r.stdout.endswith(b"\n2"),
            "curl h2c: a chunked upstream body dechunked into DATA (%d bytes)" % len(r.stdout))


def test_concurrent_streams(t, d, ctx):
    c = H2(ctx["tx"])
    try:
        t0 = time.time()
        sids = [c.request(ROUTE_HOST, "/delay?ms=500") for _ in range(20)]
        c.wait(lambda: all(c.done(s) for s in sids), 30)
        took = time.time() - t0
        ok = [s for s in sids if status(c.streams[s]) == 200 and bytes(c.streams[s]["data"]) == b"late\n"]
        t.check(len(ok) == 20, "20 concurrent streams all answered: %d" % len(ok))
        t.check(took < 5, "they ran concurrently (%.1fs for 20 x 0.5s)" % took)
        t.check(c.remote_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS) == 128,
                "SETTINGS_MAX_CONCURRENT_STREAMS 128: %r" % c.remote_settings)
        t.check(c.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1,
                "SETTINGS_ENABLE_CONNECT_PROTOCOL 1")
    finally:
        c.close()
    if shutil.which("h2load"):
        tx = ctx["tx"]
        r = subprocess.run(["h2load", "-n", "200", "-c", "2", "-m", "20", "-H", ":authority: " + ROUTE_HOST,
                            "%s://127.0.0.1:%d/hello" % (tx.scheme, tx.port)],
                           capture_output=True, text=True, timeout=60)
        t.check("200 succeeded" in r.stdout and "0 failed" in r.stdout,
                "h2load 200 requests, 20 streams per connection: %s" %
                [ln for ln in r.stdout.splitlines() if "requests:" in ln])


def test_big_bodies(t, d, ctx):
    body = os.urandom(8 * MIB)
    sha = hashlib.sha256(body).hexdigest()
    c = H2(ctx["tx"], window=16 * MIB)
    try:
        # Without Content-Length: chunked to the upstream.
        sid = c.request(ROUTE_HOST, "/echo", method="POST", body=body)
        c.wait(lambda: c.done(sid), 90)
        st = c.streams[sid]
        hd = st["headers"] or {}
        t.check(status(st) == 200 and hd.get("x-framing") == "chunked" and hd.get("x-sha") == sha,
                "8 MB up without Content-Length, chunked upstream: %r" % {k: hd.get(k) for k in ("x-framing", "x-sha")})
        t.check(hashlib.sha256(bytes(st["data"])).hexdigest() == sha, "8 MB back down intact (%d)" % len(st["data"]))
        # With Content-Length: as is.
        sid = c.request(ROUTE_HOST, "/echo", method="POST", body=body,
                        headers={"content-length": str(len(body))})
        c.wait(lambda: c.done(sid), 90)
        st = c.streams[sid]
        hd = st["headers"] or {}
        t.check(status(st) == 200 and hd.get("x-framing") == "length" and hd.get("x-sha") == sha,
                "8 MB up with Content-Length: %r" % {k: hd.get(k) for k in ("x-framing", "x-sha")})
        t.check(hashlib.sha256(bytes(st["data"])).hexdigest() == sha, "8 MB back intact (%d)" % len(st["data"]))
        # Request trailers travel as chunked trailers.
        sid = c.request(ROUTE_HOST, "/echo", method="POST", body=b"abc", end=False)
        c.c.send_headers(sid, [("x-check", "42")], end_stream=True)
        c.send()
        c.wait(lambda: c.done(sid), 20)
        hd = c.streams[sid]["headers"] or {}
        t.check(hd.get("x-trailer-x-check") == "42", "request trailers reach the upstream: %r" % hd)
        # Response trailers from a chunked upstream body: an HTTP/2
        # trailer HEADERS frame (names lowercased, blanks trimmed).
        st = c.get(ROUTE_HOST, "/trailers")
        t.check(status(st) == 200 and bytes(st["data"]) == b"hello" and st["ended"],
                "chunked response with trailers: %r %r" % (status(st), bytes(st["data"])))
        tr = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
              for k, v in (st["trailers"] or {}).items()}
        t.check(tr == {"grpc-status": "0", "x-checksum": "abc123"},
                "upstream trailers reach the h2 client: %r" % tr)
        st = c.get(ROUTE_HOST, "/many-trailers")
        n = len(st["trailers"] or {})
        t.check(status(st) == 200 and n == 100, "100 upstream trailers, all of them: %d" % n)
        # 8 MB chunked download.
        st = c.get(ROUTE_HOST, "/big?n=%d" % (8 * MIB), timeout=60)
        t.check(status(st) == 200 and len(st["data"]) == 8 * MIB and st["ended"],
                "8 MB chunked download over h2: %d" % len(st["data"]))
    finally:
        c.close()


def test_slow_stream(t, d, ctx):
    """A stream whose client never opens its window stalls alone."""
    c = H2(ctx["tx"])
    pid = d.proc.pid
    try:
        slow = c.request(ROUTE_HOST, "/big?n=%d" % (64 * MIB))
        c.no_ack.add(slow)
        c.wait(lambda: len(c.streams[slow]["data"]) >= 60000, 10)
        before = rss_kb(pid)
        t0 = time.time()
        fast = [c.get(ROUTE_HOST, "/big?n=%d" % (2 * MIB), timeout=20) for _ in range(3)]
        took = time.time() - t0
        t.check(all(status(f) == 200 and len(f["data"]) == 2 * MIB for f in fast),
                "fast streams complete beside a stalled one: %r" % [len(f["data"]) for f in fast])
        t.check(took < 10, "and quickly (%.1fs)" % took)
        t.check(not c.done(slow) and len(c.streams[slow]["data"]) < 1 * MIB,
                "the stalled stream got only its window: %d" % len(c.streams[slow]["data"]))
        after = rss_kb(pid)
        rss_bounded(t, before, after, 16 * 1024, "a stalled stream")
    finally:
        c.close()
    t.check(wait_for(lambda: healthy(d), 5), "healthy after")


def ws_frame(payload, opcode=1):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_parse(buf):
    """(opcode, payload, rest) of an unmasked server frame, or None."""
    if len(buf) < 2:
        return None
    n = buf[1] & 0x7f
    off = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack(">H", buf[2:4])[0]
        off = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack(">Q", buf[2:10])[0]
        off = 10
    if len(buf) < off + n:
        return None
    return buf[0] & 0x0f, bytes(buf[off:off + n]), bytes(buf[off + n:])


def test_websocket(t, d, ctx):
    c = H2(ctx["tx"])
    try:
        c.wait(lambda: h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in c.remote_settings, 5)
        sid = c.request(WS_HOST, "/", method="CONNECT", end=False,
                        extra=[(":protocol", "websocket")],
                        headers={"sec-websocket-version": "13", "origin": "%s://%s" % (c.scheme, WS_HOST)})
        c.wait(lambda: c.streams[sid]["headers"] is not None or c.done(sid), 10)
        st = c.streams[sid]
        hd = st["headers"] or {}
        t.check(status(st) == 200, "extended CONNECT answered 200: %r" % hd)
        t.check("sec-websocket-accept" not in hd and "upgrade" not in hd and "connection" not in hd,
                "no HTTP/1.1 handshake headers on h2: %r" % hd)
        got = []
        for msg in (b"hello over h2", b"x" * 70000):
            c.send_body(sid, ws_frame(msg), end=False)

            def echoed():
                p = ws_parse(st["data"])
                return p is not None
            c.wait(echoed, 10)
            p = ws_parse(st["data"])
            if p:
                st["data"] = bytearray(p[2])
                got.append(p[1] == msg and p[0] == 1)
            else:
                got.append(False)
        t.check(got == [True, True], "WebSocket frames echoed over the stream: %r" % got)
        # Other streams go on beside the tunnel.
        st2 = c.get(ROUTE_HOST, "/hello")
        t.check(status(st2) == 200, "a stream beside the tunnel: %r" % status(st2))
        # Close the WebSocket: the tunnel ends with the stream.
        c.c.send_data(sid, ws_frame(struct.pack(">H", 1000), opcode=8))
        c.send()
        c.wait(lambda: c.done(sid), 10)
        t.check(c.done(sid), "the tunnel's stream ends after the close handshake")
    finally:
        c.close()
    c = H2(ctx["tx"])
    try:
        sid = c.request(ROUTE_HOST, "/", method="CONNECT", end=False, extra=[(":protocol", "h2c-nope")])
        c.wait(lambda: c.done(sid) or c.streams[sid]["headers"] is not None, 10)
        t.check(status(c.streams[sid]) == 400 or c.streams[sid]["reset"] is not None,
                "CONNECT for another protocol refused: %r" % c.streams[sid])
    finally:
        c.close()


def test_header_limit(t, d, ctx):
    c = H2(ctx["tx"])
    try:
        big = [("x-big-%d" % i, "v" * 4000) for i in range(20)]
        st = c.get(ROUTE_HOST, "/hello", extra=big)
        t.check(status(st) == 431 or st["reset"] is not None, "an 80 KB header list: 431: %r" % status(st))
        st = c.get(ROUTE_HOST, "/hello")
        t.check(status(st) == 200, "the connection goes on after: %r" % status(st))
    finally:
        c.close()


def test_rapid_reset(t, d, ctx):
    pid = d.proc.pid
    before = rss_kb(pid)
    s = ctx["tx"].connect()
    enc = __import__("hpack").Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/delay?ms=2000"), (":scheme", ctx["tx"].scheme),
                        (":authority", ROUTE_HOST)])
    goaway = None
    sent = 0
    try:
        s.sendall(PREFACE + frame(4, 0, 0, b""))
        buf = b""
        t0 = time.time()
        sid = 1
        while sent < 5000 and time.time() - t0 < 20:
            batch = b""
            for _ in range(50):
                batch += frame(1, 0x4 | 0x1, sid, block) + frame(3, 0, sid, struct.pack(">I", 8))
                sid += 2
                sent += 1
            try:
                s.sendall(batch)
            except OSError:
                break
            s.settimeout(0.01)
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            except socket.timeout:
                pass
            except OSError:
                break
            if b"\x07\x00\x00\x00\x00\x00" in buf:
                break
        s.settimeout(2)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        # Find a GOAWAY frame (type 7) and its error code.
        i = 0
        while i + 9 <= len(buf):
            ln = int.from_bytes(buf[i:i + 3], "big")
            if buf[i + 3] == 7 and i + 9 + 8 <= len(buf):
                goaway = int.from_bytes(buf[i + 9 + 4:i + 9 + 8], "big")
            i += 9 + ln
    finally:
        s.close()
    t.check(goaway == 0xb, "rapid reset: GOAWAY(ENHANCE_YOUR_CALM) after %d streams: %r" % (sent, goaway))
    t.check(wait_for(lambda: healthy(d), 10), "healthy after the rapid reset flood")
    c = H2(ctx["tx"])
    try:
        st = c.get(ROUTE_HOST, "/hello")
        t.check(status(st) == 200, "a normal h2 request after: %r" % status(st))
    finally:
        c.close()
    after = rss_kb(pid)
    rss_bounded(t, before, after, 32 * 1024, "the flood")


def flood(tx, first, unit, max_units, seconds=10, read=True):
    """Send first, then unit over and over (bounded), reading as we go
    (read), then read until EOF (bounded): (units sent, bytes read, EOF).
    What the socket does not take stays pending and goes first next time,
    so frames stay whole (and a TLS write is retried with the same bytes,
    as OpenSSL wants)."""
    s = tx.connect(timeout=5)
    buf, sent, eof = b"", 0, False
    again = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
    try:
        s.sendall(PREFACE + frame(4, 0, 0, b"") + first)
        s.setblocking(False)
        t0 = time.time()
        batch = unit * 100
        pending = b""
        while sent < max_units and time.time() - t0 < seconds and not eof:
            if not pending:
                pending = batch
                sent += 100
            try:
                n = s.send(pending)
                pending = pending[n:]
            except again:
                time.sleep(0.001)
            except OSError:
                break
            if not read:
                continue
            try:
                chunk = s.recv(65536)
                if not chunk:
                    eof = True
                buf += chunk
            except again:
                pass
            except OSError:
                eof = True
        s.settimeout(5)
        while not eof:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
            buf += chunk
    finally:
        s.close()
    return sent, buf, eof


def goaway_code(buf):
    codes = [int.from_bytes(f[3][4:8], "big") for f in frames_of(buf) if f[0] == 7]
    return codes[0] if codes else None


def test_continuation_flood(t, d, ctx):
    pid = d.proc.pid
    before = rss_kb(pid)
    enc = __import__("hpack").Encoder()
    block = enc.encode([(":method", "GET"), (":path", "/hello"), (":scheme", ctx["tx"].scheme),
                        (":authority", ROUTE_HOST)])
    pad = enc.encode([("x-a", "b" * 1000)])
    # HEADERS without END_HEADERS, then CONTINUATION frames without end.
    sent, buf, eof = flood(ctx["tx"], frame(1, 0x1, 1, block), frame(9, 0, 1, pad), 100000)
    code = goaway_code(buf)
    t.check(code == 0xb, "CONTINUATION flood: GOAWAY(ENHANCE_YOUR_CALM): %r" % code)
    t.check(eof, "and the connection is closed (%d frames sent)" % sent)
    # Many small CONTINUATIONs under the byte bound: the frame count cuts.
    sent, buf, eof = flood(ctx["tx"], frame(1, 0x1, 1, block), frame(9, 0, 1, b""), 100000)
    t.check(goaway_code(buf) == 0xb and eof, "empty CONTINUATION frames: cut too: %r" % goaway_code(buf))
    t.check(wait_for(lambda: healthy(d), 10), "healthy after the CONTINUATION flood")
    c = H2(ctx["tx"])
    try:
        st = c.get(ROUTE_HOST, "/hello")
        t.check(status(st) == 200, "a normal h2 request after: %r" % status(st))
    finally:
        c.close()
    after = rss_kb(pid)
    rss_bounded(t, before, after, 32 * 1024, "the flood")


def test_small_floods(t, d, ctx):
    """PING and SETTINGS floods from a client reading nothing, and a
    PRIORITY flood: nghttp2's own limits (or none needed) keep the daemon
    healthy and the connection's memory bounded."""
    pid = d.proc.pid
    before = rss_kb(pid)
    for name, f in (("PING", frame(6, 0, 0, b"12345678")), ("SETTINGS", frame(4, 0, 0, b""))):
        # The client reads none of the acks it asks for.
        sent, buf, eof = flood(ctx["tx"], b"", f, 2000000, read=False)
        t.check(eof, "%s flood: the session ends (%d frames sent)" % (name, sent))
        t.check(wait_for(lambda: healthy(d), 10), "healthy after the %s flood" % name)
    prio = frame(2, 0, 3, struct.pack(">IB", 1, 16))
    sent, buf, eof = flood(ctx["tx"], b"", prio, 100000, seconds=3)
    t.check(wait_for(lambda: healthy(d), 10), "healthy after a PRIORITY flood (%d sent)" % sent)
    after = rss_kb(pid)
    rss_bounded(t, before, after, 32 * 1024, "the flood")


def frames_of(buf):
    """[(type, flags, stream, payload)] of the whole frames in buf."""
    out, i = [], 0
    while i + 9 <= len(buf):
        ln = int.from_bytes(buf[i:i + 3], "big")
        if i + 9 + ln > len(buf):
            break
        out.append((buf[i + 3], buf[i + 4], int.from_bytes(buf[i + 5:i + 9], "big") & 0x7fffffff,
                    buf[i + 9:i + 9 + ln]))
        i += 9 + ln
    return out


def test_goaway_sigterm(t, ctx):
    """Raw frames: python3-h2 refuses frames after a GOAWAY, browsers do not."""
    d = Daemon(extra=ctx["routes"], templates={})
    try:
        d.start()
        enc = __import__("hpack").Encoder()
        block = enc.encode([(":method", "GET"), (":path", "/delay?ms=800"), (":scheme", "http"),
                            (":authority", ROUTE_HOST)])
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(PREFACE + frame(4, 0, 0, b"") + frame(1, 0x4 | 0x1, 1, block))
        time.sleep(0.2)
        d.proc.send_signal(signal.SIGTERM)
        buf = b""
        deadline = time.time() + 8
        eof = acked = False
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError as e:
                print("recv: %r\n%s" % (e, d.logs()[-2000:]))
                break
            if not chunk:
                eof = True
                break
            buf += chunk
            if not acked and any(f[0] == 4 and not f[1] & 1 for f in frames_of(buf)):
                s.sendall(frame(4, 1, 0, b""))      # ack their SETTINGS
                acked = True
        s.close()
        fr = frames_of(buf)
        kinds = [f[0] for f in fr]
        goaway = [f for f in fr if f[0] == 7]
        t.check(goaway and int.from_bytes(goaway[0][3][4:8], "big") == 0,
                "SIGTERM: GOAWAY(NO_ERROR): %r" % kinds)
        t.check(goaway and int.from_bytes(goaway[0][3][0:4], "big") == 1,
                "its last stream id is the one in flight")
        data = b"".join(f[3] for f in fr if f[0] == 0 and f[2] == 1)
        t.check(1 in kinds and data == b"late\n" and kinds.index(7) < kinds.index(0),
                "the stream in flight finishes after the GOAWAY: %r %r" % (kinds, data))
        t.check(eof, "then the connection closes")
        rc = d.proc.wait(15)
        t.check(rc == 0, "the daemon exits 0: %r" % rc)
        d.proc = None
        d.log.close()
    finally:
        d.cleanup()


# --- scenarios with real sandboxes ------------------------------------------

def create(t, d, body=None):
    r = d.request("POST", "/v1/sandboxes", body if body is not None else {})
    t.check(r.status == 201, "create answers 201, got %r" % r)
    return r.json()["id"] if r.status == 201 else None


def phost(ctx, sid):
    return "%s.preview.localhost:%d" % (sid, ctx["tx"].port)


def test_sandbox_preview(t, d, ctx):
    sid = create(t, d)
    if sid is None:
        return
    ctx["sid"] = sid
    r = d.request("PUT", "/v1/sandboxes/%s/files/index.html" % sid, b"<p>h2 preview</p>\n")
    t.check(r.status in (201, 204), "put index.html: %r" % r)

    def served():
        r = ctx["tx"].curl(phost(ctx, sid), "/index.html", "-w", "\n%{http_version} %{http_code}", timeout=10)
        return r.stdout if r.stdout.endswith(b"\n2 200") else None
    out = wait_for(served, timeout=30, interval=0.2)
    t.check(out is not None and b"h2 preview" in out, "curl h2c to a real sandbox preview: %r" % out)


def test_sandbox_held(t, d, ctx):
    sid = ctx.get("sid")
    if sid is None:
        return
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=30)
    t.check(r.status == 200, "stop: %r" % r)
    c = H2(ctx["tx"])
    try:
        t0 = time.time()
        st = c.get(phost(ctx, sid), "/index.html", timeout=40, headers={"accept": "*/*"})
        t.check(status(st) == 200 and b"h2 preview" in bytes(st["data"]),
                "a stopped sandbox is woken by an h2 request, which is held and answered (%.1fs): %r" %
                (time.time() - t0, status(st)))
        st = c.get(phost(ctx, sid), "/index.html")
        t.check(status(st) == 200, "and the next stream on the connection: %r" % status(st))
    finally:
        c.close()
    # A held browser navigation gets the warming page after 2 s.
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=30)
    c = H2(ctx["tx"])
    try:
        t0 = time.time()
        st = c.get(phost(ctx, sid), "/index.html", timeout=40, headers={"accept": "text/html"})
        took = time.time() - t0
        ok = (status(st) == 503 and b"Starting" in bytes(st["data"])) or status(st) == 200
        t.check(ok, "a held navigation over h2: warming page or the app (%.1fs): %r" % (took, status(st)))
    finally:
        c.close()


def test_private_cookie(t, d, ctx):
    """A private preview's token, used over h2: the cookie is host-only,
    HttpOnly, and Secure exactly when the stream came over TLS."""
    sid = create(t, d, {"visibility": "private"})
    if sid is None:
        return
    r = d.request("POST", "/v1/sandboxes/%s/preview-token" % sid, {})
    if not t.check(r.status == 200, "preview-token: %r" % r):
        return
    token = r.json()["token"]
    c = H2(ctx["tx"])
    try:
        st = c.get(phost(ctx, sid), "/?sandboxd_token=" + token, timeout=40, headers={"accept": "text/html"})
        hd = st["headers"] or {}
        cookie = hd.get("set-cookie", "")
        t.check(status(st) in (302, 303, 307) and cookie.startswith("sandboxd_token="),
                "the token sets its cookie over h2: %r %r" % (status(st), cookie))
        attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
        t.check("httponly" in attrs and not any(a.startswith("domain") for a in attrs),
                "HttpOnly and host-only: %r" % cookie)
        t.check(("secure" in attrs) == (ctx["tx"].scheme == "https"),
                "Secure exactly over TLS (%s): %r" % (ctx["tx"].name, cookie))
    finally:
        c.close()


def selected(fn):
    only = os.environ.get("H2_TESTS")
    return not only or fn.__name__ in only.split(",")


def make_pki(tmp):
    """A test CA (test_tls.py's) and one certificate for every name the
    scenarios use, so SNI and :authority may differ as with coalescing."""
    from test_tls import PKI
    pki = PKI(tmp)
    pem, key, _ = pki.leaf("h2", int.from_bytes(os.urandom(16), "big") >> 2 | 1 << 125,
                           ["*.preview.localhost", ROUTE_HOST, WS_HOST, "nope.localhost",
                            "localhost", "IP:127.0.0.1"])
    return pki.ca, pem, key


def as_transport(fn, tx):
    """fn under a name saying its transport, for the report."""
    def run(t, *args):
        return fn(t, *args)
    run.__name__ = "%s[%s]" % (fn.__name__, tx.name)
    return run


SCENARIOS = (test_api_curl, test_route_basic, test_concurrent_streams, test_big_bodies,
             test_slow_stream, test_websocket, test_header_limit, test_rapid_reset,
             test_continuation_flood, test_small_floods)
SANDBOX_SCENARIOS = (test_sandbox_preview, test_sandbox_held, test_private_cookie)


def main():
    t = Runner()
    origin = start_origin()
    ws_port = start_ws_origin()
    routes = ("[route echo]\nhost = %s\nupstream = 127.0.0.1:%d\n"
              "[route ws]\nhost = %s\nupstream = 127.0.0.1:%d\n" %
              (ROUTE_HOST, origin.server_address[1], WS_HOST, ws_port))
    tmp = tempfile.mkdtemp(prefix="sbxh2-")
    ctx = {"routes": routes}
    have_docker = ensure_docker()
    if have_docker:
        ensure_test_image()
    transports = os.environ.get("H2_TRANSPORTS", "h2c,tls").split(",")
    tport = free_port()
    extra = routes
    ca = None
    if "tls" in transports:
        if shutil.which("openssl") is None:
            print("skip the TLS transport: openssl is not installed")
            transports.remove("tls")
        else:
            ca, pem, key = make_pki(tmp)
            extra = "tls_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n%s" % (tport, pem, key, routes)
    d = Daemon(extra=extra)
    try:
        d.start()
        for name in transports:
            tx = Transport(name, tport, ca) if name == "tls" else Transport(name, d.port)
            tctx = dict(ctx, tx=tx)
            for fn in SCENARIOS + (SANDBOX_SCENARIOS if have_docker else ()):
                if selected(fn):
                    t.run(as_transport(fn, tx), d, tctx)
            if not have_docker:
                print("skip sandbox scenarios [%s]: no Docker" % name)
        t.check(d.proc.poll() is None, "the daemon is still running")
        if t.failed:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-3000:])
    finally:
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if selected(test_goaway_sigterm):
        t.run(test_goaway_sigterm, ctx)
    sys.exit(t.finish())


if __name__ == "__main__":
    main()
