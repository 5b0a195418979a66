#!/usr/bin/env python3
"""TLS termination, black-box: a test CA and two certificates made with the
openssl command (a wildcard *.preview.localhost, the default, and one for
api.sandboxd.test and ws.sandboxd.test), a real daemon with a tls_listen and
redirect_https, real clients (curl, openssl s_client, Python's ssl,
python3-websockets, testssl) on loopback, a real sandbox from the busybox
image. Prints "N passed, N failed".
"""
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, SANDBOXD, TEST_IMAGE, ensure_docker,  # noqa: E402
                     ensure_test_image, free_port, wait_for)

try:
    import websockets
except ImportError:     # Debian's python3-websockets, under another python3
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None

API_HOST = "api.sandboxd.test"
WS_HOST = "ws.sandboxd.test"
# Serials of 16 random bytes (as a real CA's), told apart by the test.
SERIAL_A, SERIAL_B, SERIAL_A2 = (int.from_bytes(os.urandom(16), "big") >> 2 | 1 << 125 for _ in range(3))

# The preview app: echoes the request head it got, as its body.
ECHO_SH = rb"""head=''
while read -r line; do
  line=${line%$(printf '\r')}
  [ -z "$line" ] && break
  head="$head$line
"
done
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' ${#head}
printf '%s' "$head"
"""
TEMPLATES = {"default": {"image": TEST_IMAGE, "port": "3000", "memory": "64m", "cpus": "0.5",
                         "pids_limit": "64", "dev_command": "nc -ll -p 3000 -e sh /workspace/echo.sh"}}


def sh(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)


# --- certificates -----------------------------------------------------------

class PKI:
    """A test CA in dir, and leaf certificates signed by it."""

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        self.index = os.path.join(d, "index.txt")
        open(self.index, "w").close()
        with open(self.index + ".attr", "w") as f:     # a renewal repeats a subject
            f.write("unique_subject = no\n")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", self.ca_key, "-out", self.ca, "-days", "400", "-subj", "/CN=sandboxd test CA",
           "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign", check=True)

    def leaf(self, name, serial, dns):
        """name.pem (leaf then CA) and name.key for the DNS names (and
        "IP:a.b.c.d" ones)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".crt")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n"
                    "keyUsage=critical,digitalSignature\n"
                    "authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/\n" %
                    ",".join(n if n.startswith("IP:") else "DNS:" + n for n in dns))
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", key, "-out", csr, "-subj", "/CN=" + dns[0], check=True)
        sh("openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
           "-set_serial", str(serial), "-days", "200", "-extfile", ext, "-out", crt, check=True)
        os.chmod(key, 0o600)
        pem = os.path.join(self.dir, name + ".pem")
        with open(pem, "w") as f:
            f.write(open(crt).read() + open(self.ca).read())
        # The OCSP responder's database: this one is valid.
        end = sh("openssl", "x509", "-in", crt, "-noout", "-enddate").stdout.strip().split("=", 1)[1]
        endt = time.strftime("%y%m%d%H%M%SZ", time.strptime(end, "%b %d %H:%M:%S %Y %Z"))
        subj = sh("openssl", "x509", "-in", crt, "-noout", "-subject", "-nameopt", "compat").stdout
        with open(self.index, "a") as f:
            f.write("V\t%s\t\t%X\tunknown\t%s\n" % (endt, serial, subj.strip().split("=", 1)[1].strip()))
        return pem, key, crt

    def ocsp(self, crt, out):
        """A signed "good" OCSP response for crt, DER, in out."""
        req = out + ".req"
        sh("openssl", "ocsp", "-issuer", self.ca, "-cert", crt, "-reqout", req, "-no_nonce", check=True)
        sh("openssl", "ocsp", "-index", self.index, "-rsigner", self.ca, "-rkey", self.ca_key,
           "-CA", self.ca, "-reqin", req, "-respout", out, "-ndays", "7", check=True)
        os.unlink(req)


# --- clients ----------------------------------------------------------------

class TLS:
    """Clients of the daemon's TLS listener."""

    def __init__(self, d, port, ca):
        self.d = d
        self.port = port
        self.ca = ca

    def ctx(self, verify_host=True):
        c = ssl.create_default_context(cafile=self.ca)
        c.check_hostname = verify_host
        return c

    def conn(self, host=API_HOST, timeout=30):
        """A keep-alive HTTPS connection to 127.0.0.1 with SNI host."""
        c = http.client.HTTPSConnection(host, self.port, timeout=timeout, context=self.ctx())
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        c.sock = c._context.wrap_socket(sock, server_hostname=host)
        return c

    def request(self, method, path, body=None, host=API_HOST, key="acme", conn=None, headers=None):
        own = conn is None
        c = conn or self.conn(host.split(":")[0])
        h = {"Host": "%s:%d" % (host, self.port)}
        if key is not None:
            h["Authorization"] = "Bearer " + self.d.key(key)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            if own:
                c.close()

    def cert(self, sni):
        """The serial and SAN names of the certificate served for sni."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        with self.ctx(verify_host=False).wrap_socket(sock, server_hostname=sni) as s:
            pc = s.getpeercert()
        return int(pc["serialNumber"], 16), sorted(v for k, v in pc.get("subjectAltName", ()) if k == "DNS")

    def curl(self, url_host, path, *extra):
        return sh("curl", "-sS", "--http1.1", "--max-time", "20", "--cacert", self.ca,
                  "--resolve", "%s:%d:127.0.0.1" % (url_host, self.port),
                  "-w", "\n%{http_code} %{http_version} %{scheme}",
                  *extra, "https://%s:%d%s" % (url_host, self.port, path))

    def s_client(self, *args, sni=API_HOST, stdin=""):
        return subprocess.run(["timeout", "20", "openssl", "s_client", "-connect", "127.0.0.1:%d" % self.port,
                               "-servername", sni, *args], input=stdin, capture_output=True, text=True)


def cpu_seconds(pid):
    """User and system CPU time of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the tests --------------------------------------------------------------

def test_api_over_tls(t, tls, ctx):
    r = tls.curl(API_HOST, "/healthz")
    t.check(r.returncode == 0 and r.stdout.endswith("200 1.1 HTTPS"), "curl --http1.1 /healthz over TLS: %r %r"
            % (r.stdout[-200:], r.stderr[-300:]))
    r = tls.curl(API_HOST, "/v1/sandboxes", "-H", "Authorization: Bearer " + tls.d.key())
    t.check(r.returncode == 0 and r.stdout.endswith("200 1.1 HTTPS") and '"sandboxes"' in r.stdout,
            "authenticated API call over TLS: %r" % r.stdout[-200:])
    # ALPN: a client asking for h2 gets it; one asking for http/1.1 gets that.
    r = sh("curl", "-sS", "--http2", "--max-time", "20", "--cacert", tls.ca, "--resolve",
           "%s:%d:127.0.0.1" % (API_HOST, tls.port), "-o", "/dev/null", "-w", "%{http_version}",
           "https://%s:%d/healthz" % (API_HOST, tls.port))
    t.check(r.stdout == "2", "ALPN: h2 chosen when the client offers it: %r" % r.stdout)
    # Keep-alive: several requests on one TLS connection.
    c = tls.conn()
    try:
        codes = [tls.request("GET", "/healthz", key=None, conn=c)[0] for _ in range(5)]
        # Idle TLS keep-alive connections cost no CPU (no event spinning).
        c2 = tls.conn()
        c2.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")     # a head, unfinished
        cpu0 = cpu_seconds(tls.d.proc.pid)
        time.sleep(2)
        cpu = cpu_seconds(tls.d.proc.pid) - cpu0
        c2.close()
    finally:
        c.close()
    t.check(codes == [200] * 5, "5 requests on one TLS connection: %r" % codes)
    t.check(cpu < 0.3, "idle and half-sent TLS connections: %.2f CPU seconds in 2 s" % cpu)


def test_sni(t, tls, ctx):
    want = {"abc.preview.localhost": (SERIAL_A, ["*.preview.localhost"]),
            API_HOST: (SERIAL_B, [API_HOST, WS_HOST]),
            WS_HOST: (SERIAL_B, [API_HOST, WS_HOST]),
            "unknown.example": (SERIAL_A, ["*.preview.localhost"]),
            # one label only: a.b.preview.localhost is not under the wildcard
            "a.b.preview.localhost": (SERIAL_A, ["*.preview.localhost"])}
    for sni, (serial, names) in want.items():
        got = tls.cert(sni)
        t.check(got == (serial, names), "SNI %s -> serial %x %r, got %r" % (sni, serial, names, got))
    r = tls.s_client("-noservername", sni=API_HOST)
    r = subprocess.run(["timeout", "20", "openssl", "s_client", "-connect", "127.0.0.1:%d" % tls.port,
                        "-noservername"], input="", capture_output=True, text=True)
    t.check("CN = *.preview.localhost" in r.stdout, "no SNI: the first pair: %r" % r.stdout[:300])


def test_protocols(t, tls, ctx):
    for flag in ("-tls1_1", "-tls1"):
        r = tls.s_client(flag, "-cipher", "DEFAULT@SECLEVEL=0")
        t.check(r.returncode != 0 and "Cipher is (NONE)" in r.stdout + r.stderr or r.returncode != 0,
                "%s refused (rc %d): %r" % (flag, r.returncode, (r.stdout + r.stderr)[-300:]))
        t.check("New, TLSv1.1" not in r.stdout and "New, TLSv1," not in r.stdout,
                "%s: no session negotiated" % flag)
    r = tls.s_client("-tls1_2")
    t.check(r.returncode == 0 and "Protocol  : TLSv1.2" in r.stdout, "TLS 1.2 accepted")
    m = [ln for ln in r.stdout.splitlines() if "Cipher    :" in ln]
    t.check(m and "ECDHE" in m[0] and ("GCM" in m[0] or "CHACHA20" in m[0]), "TLS 1.2 cipher is ECDHE+AEAD: %r" % m)
    r = tls.s_client("-tls1_3")
    t.check(r.returncode == 0 and "New, TLSv1.3" in r.stdout, "TLS 1.3 accepted: rc %d %r" % (
        r.returncode, (r.stdout + r.stderr)[-600:]))
    r = tls.s_client("-tls1_2", "-cipher", "AES128-SHA:DHE-RSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
    t.check(r.returncode != 0, "TLS 1.2 CBC/non-ECDHE ciphers refused")
    t.check("Compression: NONE" in tls.s_client("-tls1_2").stdout, "no compression")
    # Cipher order: the server's for TLS 1.2 (ChaCha20 if the client puts
    # it first), the client's for TLS 1.3.
    for args, want in ((("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"),
                        "ECDHE-ECDSA-AES128-GCM-SHA256"),
                       (("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"),
                        "ECDHE-ECDSA-CHACHA20-POLY1305"),
                       (("-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"),
                        "TLS_AES_256_GCM_SHA384"),
                       (("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
                        "TLS_CHACHA20_POLY1305_SHA256")):
        r = tls.s_client(*args)
        got = [ln.split("Cipher is ", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("New, TLS")]
        t.check(got == [want], "%s: %s chosen, got %r" % (" ".join(args), want, got))
    # Renegotiation: "R" asks for it; the server refuses.
    r = tls.s_client("-tls1_2", stdin="R\n")
    t.check("Secure Renegotiation IS supported" in r.stdout or "Secure Renegotiation IS NOT" in r.stdout,
            "renegotiation reported")
    # Resumption by ticket, TLS 1.2 and 1.3.
    for ver in ("-tls1_2", "-tls1_3"):
        sess = os.path.join(ctx["tmp"], "sess" + ver)
        # A request that ends the connection: the TLS 1.3 ticket, sent
        # after the handshake, arrives before the close.
        req = "GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % API_HOST
        tls.s_client(ver, "-ign_eof", "-sess_out", sess, stdin=req)
        # A TLS 1.3 client uses a ticket only once: each resumption must
        # hand out the next one, or every other connection is a full
        # handshake. A TLS 1.2 ticket is used again (no new one comes).
        for hop in range(3):
            r = tls.s_client(ver, "-ign_eof", "-sess_in", sess, "-sess_out", sess + ".next", stdin=req)
            t.check("Reused, TLSv1." in r.stdout, "%s resumption %d from the last ticket: %r" % (
                ver, hop + 1, [ln for ln in r.stdout.splitlines() if "Reused" in ln or "New," in ln]))
            if ver == "-tls1_3":
                t.check(os.path.exists(sess + ".next"), "TLS 1.3 resumption %d issued a new ticket" % (hop + 1))
            if os.path.exists(sess + ".next"):
                os.replace(sess + ".next", sess)


def test_ocsp(t, tls, ctx):
    r = tls.s_client("-status", sni="x.preview.localhost")
    out = r.stdout
    t.check("OCSP Response Status: successful" in out and "Cert Status: good" in out,
            "OCSP response stapled for the wildcard: %r" % out[:800])
    r = tls.s_client("-status", sni=API_HOST)
    t.check("OCSP response: no response sent" in r.stdout, "no OCSP file: nothing stapled")


def test_preview_over_tls(t, tls, ctx):
    st, _, body = tls.request("POST", "/v1/sandboxes", {})
    if not t.check(st == 201, "create over TLS: %r %r" % (st, body)):
        return
    sid = json.loads(body)["id"]
    ctx["sid"] = sid
    st, _, _ = tls.request("PUT", "/v1/sandboxes/%s/files/echo.sh" % sid, body=ECHO_SH)
    t.check(st == 201, "PUT echo.sh over TLS")
    # A large body each way through the TLS bufferevent.
    blob = os.urandom(3 * 1024 * 1024 + 17)
    st, _, _ = tls.request("PUT", "/v1/sandboxes/%s/files/blob.bin" % sid, body=blob)
    t.check(st == 201, "PUT 3 MiB over TLS: %r" % st)
    st, _, back = tls.request("GET", "/v1/sandboxes/%s/files/blob.bin" % sid)
    t.check(st == 200 and back == blob, "GET 3 MiB back over TLS, intact (%d bytes)" % len(back))
    host = "%s.preview.localhost" % sid

    def probe():
        r = tls.curl(host, "/hello?q=1", "-H", "X-Forwarded-Proto: forged")
        return r if r.returncode == 0 and r.stdout.endswith("200 1.1 HTTPS") else None
    r = wait_for(probe, timeout=20, interval=0.3)
    if not t.check(r is not None, "preview over TLS (curl --http1.1) answers 200"):
        return
    t.check("GET /hello?q=1 HTTP/1.1" in r.stdout, "the app got the request: %r" % r.stdout[:300])
    t.check("X-Forwarded-Proto: https" in r.stdout, "X-Forwarded-Proto: https seen by the app: %r" % r.stdout)
    t.check("forged" not in r.stdout, "the client's X-Forwarded-Proto is replaced")
    t.check("X-Forwarded-For: 127.0.0.1" in r.stdout, "X-Forwarded-For set over TLS")
    # Hold-and-wake over TLS: the stopped sandbox is woken by the request,
    # which is held (not read) meanwhile and then answered.
    st, _, _ = tls.request("POST", "/v1/sandboxes/%s/stop" % sid)
    t.check(st == 200, "stop over TLS: %r" % st)
    r = tls.curl(host, "/woken", "--max-time", "40")
    t.check(r.stdout.endswith("200 1.1 HTTPS") and "GET /woken HTTP/1.1" in r.stdout,
            "a held request over TLS wakes the sandbox and is answered: %r %r" % (r.stdout[-200:], r.stderr[-200:]))
    # The same app over plain HTTP says http (redirect_https spares nothing
    # here: use a [route]-free check through the plain listener's /healthz
    # only; previews on plain are redirected, tested below).


def test_private_over_tls(t, tls, ctx):
    """A private preview's token cookie is Secure over TLS (and host-only)."""
    st, _, body = tls.request("POST", "/v1/sandboxes", {"visibility": "private"})
    if not t.check(st == 201, "create a private sandbox over TLS: %r %r" % (st, body[:200])):
        return
    sid = json.loads(body)["id"]
    tls.request("PUT", "/v1/sandboxes/%s/files/echo.sh" % sid, body=ECHO_SH)
    st, _, body = tls.request("POST", "/v1/sandboxes/%s/preview-token" % sid, {})
    if not t.check(st == 200, "preview-token over TLS: %r %r" % (st, body[:200])):
        return
    tok = json.loads(body)["token"]
    host = "%s.preview.localhost" % sid
    st, h, _ = tls.request("GET", "/x?sandboxd_token=%s" % tok, host=host, key=None)
    sc = h.get("set-cookie", "")
    attrs = [a.strip().lower() for a in sc.split(";")[1:]]
    t.check(st == 302 and h.get("location") == "/x", "the token redirects over TLS: %r %r" % (st, h.get("location")))
    t.check("secure" in attrs and "httponly" in attrs, "the cookie is Secure over TLS: %r" % sc)
    t.check(not any(a.startswith("domain") for a in attrs), "host-only: %r" % sc)
    cookie = sc.split(";", 1)[0]

    def probe():
        st, _, b = tls.request("GET", "/y", host=host, key=None, headers={"Cookie": cookie})
        return (st, b) if st == 200 else None
    got = wait_for(probe, timeout=20, interval=0.3)
    t.check(got is not None and b"X-Forwarded-Proto: https" in got[1] and tok.encode() not in got[1],
            "the cookie lets the request through over TLS; the app never sees the token: %r" % (got,))


def test_redirect_https(t, tls, ctx):
    d = tls.d
    r = d.request("GET", "/v1/sandboxes?x=1&y=2", host="%s:%d" % (API_HOST, d.port))
    t.check(r.status == 308 and r.headers.get("location") == "https://%s:%d/v1/sandboxes?x=1&y=2"
            % (API_HOST, tls.port), "plain API request -> 308 to https: %r %r" % (r, r.headers.get("location")))
    r = d.request("POST", "/v1/sandboxes", {}, host="127.0.0.1:%d" % d.port)
    t.check(r.status == 308 and r.headers.get("location") == "https://127.0.0.1:%d/v1/sandboxes" % tls.port,
            "plain POST -> 308 (method kept by 308): %r" % r.headers.get("location"))
    sid = ctx.get("sid", "0" * 26)
    r = d.request("GET", "/a/b?c", key=None, host="%s.preview.localhost:%d" % (sid, d.port))
    t.check(r.status == 308 and r.headers.get("location") == "https://%s.preview.localhost:%d/a/b?c"
            % (sid, tls.port), "plain preview -> 308: %r" % r.headers.get("location"))
    r = d.request("GET", "/x", key=None, host="[::1]:%d" % d.port)
    t.check(r.status == 308 and r.headers.get("location") == "https://[::1]:%d/x" % tls.port,
            "an IPv6 Host keeps its brackets: %r" % r.headers.get("location"))
    r = d.request("HEAD", "/x", key=None, host="%s:%d" % (API_HOST, d.port))
    t.check(r.status == 308 and r.body == b"", "HEAD: 308 without a body")
    r = d.request("GET", "/healthz", key=None)
    t.check(r.status == 200 and "reconciled" in r.json(), "/healthz stays served on plain")
    r = d.request("GET", "/healthz", key=None, host="%s:%d" % (API_HOST, d.port))
    t.check(r.status == 200, "/healthz on any API host stays plain")
    out = d.raw(b"GET /x HTTP/1.0\r\n\r\n")
    t.check(out.startswith(b"HTTP/1.1 400"), "no Host to redirect to: 400: %r" % out[:40])
    # curl follows the redirect to the TLS listener and gets the answer.
    r = sh("curl", "-sS", "-L", "--location-trusted", "--max-time", "20", "--cacert", tls.ca,
           "--resolve", "%s:%d:127.0.0.1" % (API_HOST, d.port),
           "--resolve", "%s:%d:127.0.0.1" % (API_HOST, tls.port),
           "-H", "Authorization: Bearer " + d.key(), "-w", "\n%{http_code} %{scheme}",
           "http://%s:%d/v1/sandboxes" % (API_HOST, d.port))
    t.check(r.stdout.endswith("200 HTTPS") and '"sandboxes"' in r.stdout,
            "curl -L from plain ends on TLS: %r" % r.stdout[-100:])


def ws_echo(tls, ctx, use_tls):
    """20 small messages and one of 300 KiB through the edge to an echo
    server behind a [route]: what came back."""
    got = {}

    async def echo(ws, path=None):
        async for m in ws:
            await ws.send(m)

    async def main():
        async with websockets.serve(echo, "127.0.0.1", ctx["ws_port"], max_size=None):
            port = tls.port if use_tls else tls.d.port
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            kw = {"ssl": tls.ctx(), "server_hostname": WS_HOST} if use_tls else {}
            async with websockets.connect("%s://%s:%d/echo" % ("wss" if use_tls else "ws", WS_HOST, port),
                                          sock=sock, open_timeout=10, max_size=None, **kw) as ws:
                out = []
                for i in range(20):
                    await ws.send("msg-%d" % i)
                    out.append(await asyncio.wait_for(ws.recv(), 10))
                got["msgs"] = out
                big = os.urandom(300 * 1024)
                await ws.send(big)
                got["big"] = (await asyncio.wait_for(ws.recv(), 20)) == big
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    except Exception as e:
        got["error"] = repr(e)
    return got


def test_websocket(t, tls, ctx):
    if websockets is None:
        print("  skip test_websocket: python3-websockets is not installed")
        return
    for use_tls in (True, False):
        what = "over TLS" if use_tls else "over plain HTTP ([route] hosts are not redirected)"
        got = ws_echo(tls, ctx, use_tls)
        t.check(got.get("msgs") == ["msg-%d" % i for i in range(20)], "20 WebSocket echoes %s: %r"
                % (what, got))
        t.check(got.get("big") is True, "a 300 KiB WebSocket message both ways %s: %r" % (what, got.get("error")))


def test_handshake_failures(t, tls, ctx):
    # Garbage instead of a ClientHello, and a client that stalls: both
    # are closed; the daemon keeps serving.
    s = socket.create_connection(("127.0.0.1", tls.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = s.recv(100)
    except OSError:
        data = b""
    s.close()
    t.check(not data.startswith(b"HTTP/"), "plain HTTP on the TLS port gets no HTTP answer: %r" % data[:30])
    r = tls.curl(API_HOST, "/healthz")
    t.check(r.stdout.endswith("200 1.1 HTTPS"), "still serving after a bad handshake")
    log = tls.d.logs()
    t.check("TLS handshake failed" in log, "a failed handshake is logged (debug)")
    # A client that connects and says nothing is cut at the handshake
    # timeout (10 s), while another is served meanwhile.
    s = socket.create_connection(("127.0.0.1", tls.port), timeout=20)
    t0 = time.time()
    r = tls.curl(API_HOST, "/healthz")
    t.check(r.stdout.endswith("200 1.1 HTTPS"), "served while another client stalls its handshake")
    try:
        data = s.recv(100)
    except OSError:
        data = b""
    took = time.time() - t0
    s.close()
    t.check(data == b"" and 8 < took < 15, "a silent client is closed after ~10 s: %r after %.1f s"
            % (data[:20], took))
    t.check("TLS handshake timeout" in tls.d.logs(), "the timeout is logged (debug)")


def swap_cert(pem_src, key_src, pem_dst, key_dst):
    """Replace a pair's files atomically, as certbot's renewal does."""
    for src, dst in ((pem_src, pem_dst), (key_src, key_dst)):
        tmp = dst + ".new"
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, dst)


def test_reload(t, tls, ctx):
    d = tls.d
    c = tls.conn("x.preview.localhost")
    try:
        st = tls.request("GET", "/healthz", key=None, conn=c)[0]
        t.check(st == 200, "request before the reload")
        t.check(int(c.sock.getpeercert()["serialNumber"], 16) == SERIAL_A, "the old cert at first")
        os.unlink(ctx["a_pem"] + ".ocsp")
        swap_cert(ctx["a2_pem"], ctx["a2_key"], ctx["a_pem"], ctx["a_key"])
        n = d.logs().count("TLS certificates reloaded")
        d.proc.send_signal(signal.SIGHUP)
        t.check(wait_for(lambda: d.logs().count("TLS certificates reloaded") > n, timeout=10),
                "SIGHUP: reloaded (logged)")
        for _ in range(3):
            st = tls.request("GET", "/healthz", key=None, conn=c)[0]
            t.check(st == 200, "the open connection keeps working after the reload")
        t.check(tls.cert("x.preview.localhost")[0] == SERIAL_A2, "a new connection sees the new cert")
        t.check(tls.cert(API_HOST)[0] == SERIAL_B, "the other pair is still served by SNI")
        r = tls.s_client("-status", sni="x.preview.localhost")
        t.check("OCSP response: no response sent" in r.stdout, "the removed OCSP file is no longer stapled")

        # A broken file: logged, the old certificates stay.
        with open(ctx["a_pem"] + ".tmp", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        os.rename(ctx["a_pem"] + ".tmp", ctx["a_pem"])
        n = d.logs().count("TLS reload failed")
        d.proc.send_signal(signal.SIGHUP)
        t.check(wait_for(lambda: d.logs().count("TLS reload failed") > n, timeout=10),
                "SIGHUP with a bad cert: the failure is logged")
        line = [ln for ln in d.logs().splitlines() if "TLS reload failed" in ln][-1:]
        t.check(line and ctx["a_pem"] in line[0] and "tls_cert" in line[0], "the log names the file and key: %r"
                % line)
        t.check(tls.cert("x.preview.localhost")[0] == SERIAL_A2, "the previous cert is kept")
        # A key that does not match its certificate.
        swap_cert(ctx["a2_pem"], ctx["b_key"], ctx["a_pem"], ctx["a_key"])
        n = d.logs().count("TLS reload failed")
        d.proc.send_signal(signal.SIGHUP)
        t.check(wait_for(lambda: d.logs().count("TLS reload failed") > n, timeout=10),
                "SIGHUP with a mismatched key: logged")
        line = [ln for ln in d.logs().splitlines() if "TLS reload failed" in ln][-1:]
        t.check(line and "does not match" in line[0], "the mismatch is named: %r" % line)
        st = tls.request("GET", "/healthz", key=None, conn=c)[0]
        t.check(st == 200, "the open connection still works")
        t.check(tls.cert("x.preview.localhost")[0] == SERIAL_A2, "still the previous cert")
        t.check(d.proc.poll() is None, "the daemon is running")
    finally:
        c.close()
        # Leave a sound pair, stapled again, for the tests after this one.
        swap_cert(ctx["a2_pem"], ctx["a2_key"], ctx["a_pem"], ctx["a_key"])
        ctx["pki"].ocsp(ctx["a2_crt"], ctx["a_pem"] + ".ocsp")
        n = d.logs().count("TLS certificates reloaded")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.logs().count("TLS certificates reloaded") > n, timeout=10)


def test_check_config(t, tls, ctx):
    d = tls.d
    bad = os.path.join(ctx["tmp"], "bad.conf")
    with open(d.config) as f:
        text = f.read()
    with open(bad, "w") as f:
        f.write(text.replace("tls_key = %s\n" % ctx["b_key"], "tls_key = %s\n" % ctx["a_key"]))
    r = sh(SANDBOXD, "check-config", "-c", bad)
    t.check(r.returncode == 2 and "tls_key" in r.stderr and "does not match" in r.stderr
            and bad in r.stderr, "check-config names a key that does not match: %r" % r.stderr)
    with open(bad, "w") as f:
        f.write(text.replace("tls_key = %s\n" % ctx["b_key"], ""))
    r = sh(SANDBOXD, "check-config", "-c", bad)
    t.check(r.returncode == 2 and "has no tls_key to pair with" in r.stderr, "an unpaired tls_cert: %r" % r.stderr)


def test_testssl(t, tls, ctx):
    """testssl.sh on the wildcard host (the pair with a stapled OCSP
    response): protocols, cipher lists, server preferences, server
    defaults (the certificate, checked against the test CA) and the
    vulnerabilities. Nothing LOW or worse may be flagged, except the CAA
    DNS record, which a test host under .localhost cannot have."""
    if shutil.which("testssl") is None:
        print("  skip test_testssl: testssl (Debian testssl.sh) is not installed")
        return
    js = os.path.join(ctx["tmp"], "testssl.json")
    t0 = time.time()
    r = subprocess.run(["timeout", "600", "testssl", "--quiet", "--color", "0", "--warnings", "off",
                        "--fast", "-p", "-s", "-P", "-S", "-U", "--add-ca", tls.ca, "--ip", "127.0.0.1",
                        "--jsonfile", js, "https://x.preview.localhost:%d" % tls.port],
                       capture_output=True, text=True)
    took = time.time() - t0
    if not t.check(os.path.exists(js), "testssl ran (rc %d, %.0f s): %r" % (r.returncode, took, r.stdout[-500:])):
        return
    findings = json.load(open(js))
    bad = [f for f in findings if f.get("severity") in ("LOW", "MEDIUM", "HIGH", "CRITICAL")
           and f["id"] != "DNS_CAArecord"]
    print("  testssl %s (%.0f s) summary:" % (" ".join(r.args[3:-1]), took))
    for f in findings:
        if f["id"] in ("scanTime", "engine_problem"):
            continue
        print("    %-28s %-8s %s" % (f["id"], f.get("severity"), f.get("finding")))
    t.check(not bad, "testssl flags no weakness: %r" % [(f["id"], f["severity"], f["finding"]) for f in bad])


def main():
    if not ensure_docker():
        print("docker is not available: skipping the TLS tests")
        return 77
    for tool in ("openssl", "curl"):
        if shutil.which(tool) is None:
            print("%s is not installed: skipping the TLS tests" % tool)
            return 77
    ensure_test_image()
    t = Runner()
    tmp = tempfile.mkdtemp(prefix="sbxtls-")
    ctx = {"tmp": tmp, "ws_port": free_port()}
    only = os.environ.get("TLS_TESTS", "").split()     # a subset, by name
    d = None
    try:
        pki = PKI(tmp)
        ctx["a_pem"], ctx["a_key"], a_crt = pki.leaf("a", SERIAL_A, ["*.preview.localhost"])
        ctx["b_pem"], ctx["b_key"], _ = pki.leaf("b", SERIAL_B, [API_HOST, WS_HOST])
        ctx["a2_pem"], ctx["a2_key"], ctx["a2_crt"] = pki.leaf("a2", SERIAL_A2, ["*.preview.localhost"])
        ctx["pki"] = pki
        pki.ocsp(a_crt, ctx["a_pem"] + ".ocsp")
        tport = free_port()
        extra = "\n".join([
            "tls_listen = 127.0.0.1:%d" % tport,
            "tls_cert = %s" % ctx["a_pem"], "tls_key = %s" % ctx["a_key"],
            "tls_cert = %s" % ctx["b_pem"], "tls_key = %s" % ctx["b_key"],
            "redirect_https = true",
            "[route ws]", "host = %s" % WS_HOST, "upstream = 127.0.0.1:%d" % ctx["ws_port"]])
        d = Daemon(extra=extra, templates=dict(TEMPLATES))
        r = sh(SANDBOXD, "check-config", "-c", d.config)
        if not t.check(r.returncode == 0, "the TLS config is accepted: %s" % r.stderr.strip()):
            return t.finish()
        d.start()
        tls = TLS(d, tport, pki.ca)
        for fn in (test_api_over_tls, test_sni, test_protocols, test_ocsp, test_preview_over_tls,
                   test_private_over_tls, test_redirect_https, test_websocket, test_handshake_failures, test_check_config,
                   test_reload, test_testssl):
            if only and fn.__name__ not in only:
                continue
            if d.proc.poll() is not None:
                t.current = fn.__name__
                t.check(False, "the daemon exited (%d) before this test" % d.proc.returncode)
                continue
            t.run(fn, tls, ctx)
        if t.failed:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-3000:])
    finally:
        if d is not None:
            d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
