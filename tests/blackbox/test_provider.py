#!/usr/bin/env python3
"""Black-box scenarios for the credential proxy (issue 10, part 2).

A fake provider runs in this process on loopback over TLS, with a CA this
test makes with the openssl CLI (never a real provider). The daemon gets
[provider anthropic] and [provider openai] sections pointing at it; every
request is made from INSIDE a real sandbox container (busybox nc) with the
env the daemon gave the sandbox. Proven:

  - the fake provider sees the operator's key, never a sandbox token, and
    the request it gets has its own Host and path (/NAME stripped);
  - a streamed answer (SSE, chunked and until-close) reaches the sandbox
    in pieces: the first event before the fake sent the last;
  - a wrong token, another sandbox's token and a deleted sandbox's token
    are refused with 401 in the provider's own error shape;
  - the sandbox still reaches no other port of the host (a listener this
    test made on 0.0.0.0, at the bridge gateway), only the proxy's;
  - usage (requests, input and output tokens, from the providers' usage
    fields) appears in the sandbox object and in /metrics (promtool);
  - an upstream whose certificate does not verify (another CA, or the
    right CA but another name) gives a clear 502 and the upstream
    receives no byte of a request (no key leaves the host); an upstream
    given by host name is resolved, gets SNI and is checked by name;
  - agent tasks (stand-in CLIs on the base image) see the proxy: Claude
    Code's env, OpenCode's inline config; SIGHUP rotates the key.

Needs root (the egress rules), nft, openssl and Docker; exits 77 otherwise.
"""
import json
import os
import re
import secrets
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
from harness import (Daemon, Runner, TEST_IMAGE, docker, ensure_docker,  # noqa: E402
                     ensure_test_image, free_port, wait_for)

OP_KEY_A = "sk-ant-operator-" + secrets.token_hex(12)
OP_KEY_O = "sk-openai-operator-" + secrets.token_hex(12)
PAUSE = 1.5     # seconds between the streamed events


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kw)


def make_pki(tmp):
    """A test CA and a server certificate for 127.0.0.1 signed by it, and a
    second CA (not trusted by the daemon) with its own certificate."""
    def run(*a):
        sh("openssl", *a, cwd=tmp)
    for ca, san in (("ca", "IP:127.0.0.1,DNS:localhost"), ("rogue", "IP:127.0.0.1,DNS:localhost"),
                    ("other", "DNS:other.example")):
        signer = "ca" if ca == "other" else ca
        if signer == ca:
            run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2", "-subj", "/CN=sandboxd test " + ca)
        with open(os.path.join(tmp, ca + "-ext.cnf"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n" % san)
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", ca + "-srv.key", "-out", ca + "-srv.csr", "-subj", "/CN=127.0.0.1")
        run("x509", "-req", "-in", ca + "-srv.csr", "-CA", signer + ".pem", "-CAkey", signer + ".key",
            "-CAcreateserial", "-out", ca + "-srv.pem", "-days", "2", "-extfile", ca + "-ext.cnf")


class FakeProvider:
    """An HTTPS server on 127.0.0.1 that answers like Anthropic or OpenAI
    and keeps every request it got (raw bytes) and when it sent what."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sni = []           # server names asked for, one per handshake
        self.ctx.sni_callback = lambda sock, name, ctx: self.sni.append(name) and None
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.requests = []      # raw bytes of each request received
        self.handshakes = 0     # TLS handshakes that completed
        self.attempts = 0       # TCP connections accepted
        self.sent = {}          # stream name -> [time each event was sent]
        self.lock = threading.Lock()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, raw):
        with self.lock:
            self.attempts += 1
        raw.settimeout(10)
        try:
            c = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            # A failed handshake: record whatever came after it (nothing can).
            raw.close()
            return
        with self.lock:
            self.handshakes += 1
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            want = int(m.group(1)) if m else 0
            while len(body) < want:
                chunk = c.recv(65536)
                if not chunk:
                    break
                body += chunk
            with self.lock:
                self.requests.append(head + b"\r\n\r\n" + body)
            self.answer(c, head, body)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def answer(self, c, head, body):
        line = head.split(b"\r\n")[0].decode()
        path = line.split(" ")[1]
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        stream = req.get("stream")
        name = req.get("name", "")
        if path == "/v1/messages" and not stream:
            out = json.dumps({"id": "msg_1", "type": "message", "role": "assistant",
                              "content": [{"type": "text", "text": "hello \"input_tokens\": 999"}],
                              "usage": {"input_tokens": 11, "output_tokens": 7,
                                        "cache_read_input_tokens": 1000}}).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      b"Connection: keep-alive\r\n\r\n" % len(out) + out)
        elif path == "/v1/messages":
            # Anthropic streams server-sent events, chunked.
            events = [
                ("message_start", {"type": "message_start", "message": {"id": "msg_2", "usage":
                                   {"input_tokens": 25, "output_tokens": 1}}}),
                ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "Hi"}}),
                ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 42}}),
                ("message_stop", {"type": "message_stop"}),
            ]
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            times = []
            for i, (ev, data) in enumerate(events):
                if i:
                    time.sleep(PAUSE)
                text = ("event: %s\ndata: %s\n\n" % (ev, json.dumps(data))).encode()
                # One event split over two chunks: the scanner must not care.
                half = len(text) // 2
                c.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n" % (half, text[:half], len(text) - half, text[half:]))
                times.append(time.time())
            c.sendall(b"0\r\n\r\n")
            with self.lock:
                self.sent[name or "anthropic"] = times
        elif path == "/v1/chat/completions" and not stream:
            out = json.dumps({"id": "c1", "object": "chat.completion", "choices": [],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                      % len(out) + out)
        elif path == "/v1/chat/completions":
            # OpenAI streams data: lines, the usage in the last chunk; no
            # length and no chunking: the answer ends when we close.
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            times = []
            chunks = [{"choices": [{"delta": {"content": "a"}}]},
                      {"choices": [{"delta": {"content": "b"}}]},
                      {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}}]
            for i, ch in enumerate(chunks):
                if i:
                    time.sleep(PAUSE)
                c.sendall(("data: %s\n\n" % json.dumps(ch)).encode())
                times.append(time.time())
            c.sendall(b"data: [DONE]\n\n")
            with self.lock:
                self.sent[name or "openai"] = times
        else:
            out = b'{"error": "no such path"}'
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(out) + out)

    def close(self):
        self.sock.close()


def cname(d, sid):
    return "%s-%s" % (d.instance, sid)


def cenv(d, sid, name):
    return docker("exec", cname(d, sid), "sh", "-c", 'printf %s "$' + name + '"').stdout


# The request is built by sh inside the sandbox from its own env. stdin
# stays open (sleep): a half-closed request is a client gone.
REQ = r"""
url=${%(base)s#http://}; hostport=${url%%%%/*}; prefix=/${url#*/}
host=${hostport%%:*}; port=${hostport#*:}
body='%(body)s'
{ printf '%(method)s %%s%(path)s HTTP/1.1\r\nHost: %%s\r\n%(auth)s\r\nContent-Type: application/json\r\nContent-Length: %%d\r\n\r\n%%s' \
    "$prefix" "$hostport" "%(token)s" ${#body} "$body"; sleep %(sleep)d; } | nc -w %(wait)d "$host" "$port"
"""


def sandbox_request(d, sid, kind, path, body, token=None, sleep=8, wait=10, popen=False):
    base = "ANTHROPIC_BASE_URL" if kind == "anthropic" else "OPENAI_BASE_URL"
    tok = "$ANTHROPIC_API_KEY" if kind == "anthropic" else "$OPENAI_API_KEY"
    if token is not None:
        tok = token
    auth = "x-api-key: %s" if kind == "anthropic" else "Authorization: Bearer %s"
    script = REQ % {"base": base, "body": json.dumps(body), "method": "POST", "path": path,
                    "auth": auth, "token": tok, "sleep": sleep, "wait": wait}
    args = ["docker", "exec", cname(d, sid), "sh", "-c", script]
    if popen:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    r = subprocess.run(args, capture_output=True, timeout=sleep + wait + 20)
    return r.stdout


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return (int(m.group(1)) if m else 0), head.decode(errors="replace"), body


def dechunk(body):
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out


def probe(d, sid, host, port, word):
    r = docker("exec", cname(d, sid), "sh", "-c",
               "(printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1) | nc -w 3 %s %d" % (host, port), check=False)
    return word in r.stdout


class State:
    d = None
    fake = None
    rogue = None
    other = None
    s1 = None
    s2 = None
    gateway = None
    pport = None
    tmp = None
    listener = None


def config(st, anthropic_port, openai_port, openai_host="127.0.0.1"):
    return "\n".join([
        "provider_port = %d" % st.pport,
        "[provider anthropic]", "kind = anthropic",
        "upstream = https://127.0.0.1:%d" % anthropic_port,
        "key_file = %s/anthropic.key" % st.tmp, "provider_ca = %s/ca.pem" % st.tmp,
        "[provider openai]", "kind = openai",
        "upstream = https://%s:%d/v1" % (openai_host, openai_port),
        "key_file = %s/openai.key" % st.tmp, "provider_ca = %s/ca.pem" % st.tmp,
    ])


def set_config(d, text):
    # Global keys before the harness's sections: split ours in two.
    glob, _, sections = text.partition("\n[")
    d.extra = glob
    d.write_config()
    with open(d.config, "a") as f:
        f.write("[" + sections + "\n")


def test_env_and_forward(t, st):
    """Each sandbox has its env; the fake sees the operator's key only."""
    d = st.d
    set_config(d, config(st, st.fake.port, st.fake.port))
    d.start()
    for name in ("s1", "s2"):
        r = d.request("POST", "/v1/sandboxes", {})
        if not t.check(r.status == 201, "create answers 201: %r" % r):
            raise RuntimeError("no sandbox")
        setattr(st, name, r.json()["id"])
    for sid in (st.s1, st.s2):
        t.check(wait_for(lambda: d.request("GET", "/v1/sandboxes/" + sid).json()["state"] == "running",
                         timeout=30, interval=0.2), "sandbox %s runs" % sid)
    st.gateway = json.loads(docker("network", "inspect", d.network).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    h = d.request("GET", "/healthz", key=None).json()
    t.check(h.get("credential_proxy") == {"listen": "%s:%d" % (st.gateway, st.pport),
                                          "providers": ["anthropic", "openai"]},
            "/healthz shows where the proxy listens: %r" % h.get("credential_proxy"))
    base = cenv(d, st.s1, "ANTHROPIC_BASE_URL")
    t.check(base == "http://%s:%d/anthropic" % (st.gateway, st.pport), "ANTHROPIC_BASE_URL: %r" % base)
    t.check(cenv(d, st.s1, "OPENAI_BASE_URL") == "http://%s:%d/openai" % (st.gateway, st.pport),
            "OPENAI_BASE_URL points at the proxy")
    k1, k2 = cenv(d, st.s1, "ANTHROPIC_API_KEY"), cenv(d, st.s2, "ANTHROPIC_API_KEY")
    t.check(k1.startswith("sbx-" + st.s1 + "-") and k2.startswith("sbx-" + st.s2 + "-") and k1 != k2,
            "each sandbox has a token of its own: %r %r" % (k1[:32], k2[:32]))
    t.check(OP_KEY_A not in docker("inspect", cname(d, st.s1)).stdout,
            "the operator's key is not in the container's config")
    st.tokens = {st.s1: k1, st.s2: k2}

    status, head, body = parse(sandbox_request(d, st.s1, "anthropic", "/v1/messages",
                                               {"model": "m", "max_tokens": 5}, sleep=3, wait=5))
    t.check(status == 200 and json.loads(body or b"{}").get("id") == "msg_1",
            "an Anthropic request is answered through the proxy: %d %r" % (status, body[:200]))
    t.check("connection: close" in head.lower() and "keep-alive" not in head.lower(),
            "the answer says Connection: close")
    req = st.fake.requests[-1] if st.fake.requests else b""
    t.check(("x-api-key: %s" % OP_KEY_A).encode() in req, "the fake provider got the operator's key")
    t.check(req.startswith(b"POST /v1/messages HTTP/1.1") and
            (b"Host: 127.0.0.1:%d" % st.fake.port) in req,
            "with the upstream's path and Host: %r" % req[:80])
    status, head, body = parse(sandbox_request(d, st.s1, "openai", "/chat/completions",
                                               {"model": "m"}, sleep=3, wait=5))
    t.check(status == 200 and b"chat.completion" in body, "an OpenAI request is answered: %d %r" % (status, body[:200]))
    req = st.fake.requests[-1] if st.fake.requests else b""
    t.check(("Authorization: Bearer %s" % OP_KEY_O).encode() in req and
            req.startswith(b"POST /v1/chat/completions HTTP/1.1"),
            "the fake got the OpenAI operator key at /v1/chat/completions: %r" % req[:60])


def read_stream(p, marker, timeout):
    """Read p's stdout until EOF; the time marker first appeared."""
    seen = None
    out = b""
    deadline = time.time() + timeout
    os.set_blocking(p.stdout.fileno(), False)
    while time.time() < deadline:
        try:
            chunk = p.stdout.read(65536)
        except BlockingIOError:
            chunk = None
        if chunk:
            out += chunk
            if seen is None and marker in out:
                seen = time.time()
        elif chunk == b"":
            break
        else:
            time.sleep(0.02)
    p.kill()
    p.wait()
    return out, seen


def test_streaming(t, st):
    """SSE arrives in pieces: the first event before the last is sent."""
    d = st.d
    p = sandbox_request(d, st.s1, "anthropic", "/v1/messages",
                        {"model": "m", "stream": True, "name": "a-stream"}, sleep=10, wait=10, popen=True)
    out, seen = read_stream(p, b"message_start", 30)
    sent = st.fake.sent.get("a-stream", [])
    t.check(len(sent) == 4 and seen is not None and seen < sent[-1] - PAUSE / 2,
            "the first Anthropic event reached the sandbox before the last was sent "
            "(seen %.2fs before)" % ((sent[-1] - seen) if sent and seen else -1))
    status, head, body = parse(out)
    text = dechunk(body) if "chunked" in head.lower() else body
    t.check(status == 200 and b"message_stop" in text and text.count(b"event: ") == 4,
            "the whole stream arrived, chunked as sent: %r" % text[-80:])
    p = sandbox_request(d, st.s1, "openai", "/chat/completions",
                        {"model": "m", "stream": True, "name": "o-stream"}, sleep=10, wait=10, popen=True)
    out, seen = read_stream(p, b'"content": "a"', 30)
    sent = st.fake.sent.get("o-stream", [])
    t.check(len(sent) == 3 and seen is not None and seen < sent[-1] - PAUSE / 2,
            "the first OpenAI chunk reached the sandbox before the last was sent")
    t.check(b"[DONE]" in out, "the OpenAI stream ended with [DONE]")


def test_refused(t, st):
    """Wrong, foreign and deleted tokens get 401 in the provider's shape."""
    d = st.d
    before = len(st.fake.requests)
    wrong = "sbx-%s-%s" % (st.s1, "A" * 43)
    status, _, body = parse(sandbox_request(d, st.s1, "anthropic", "/v1/messages", {}, token=wrong,
                                            sleep=2, wait=4))
    j = json.loads(body or b"{}")
    t.check(status == 401 and j.get("type") == "error" and
            j.get("error", {}).get("type") == "authentication_error",
            "a wrong token: 401 in Anthropic's error shape: %d %r" % (status, body[:200]))
    status, _, body = parse(sandbox_request(d, st.s1, "openai", "/chat/completions", {}, token="garbage",
                                            sleep=2, wait=4))
    j = json.loads(body or b"{}")
    t.check(status == 401 and j.get("error", {}).get("code") == "invalid_api_key",
            "a malformed token: 401 in OpenAI's error shape: %d %r" % (status, body[:200]))
    status, _, body = parse(sandbox_request(d, st.s1, "anthropic", "/v1/messages", {},
                                            token=st.tokens[st.s2], sleep=2, wait=4))
    t.check(status == 401 and b"another sandbox" in body,
            "sandbox 2's token used from sandbox 1: 401: %d %r" % (status, body[:200]))
    r = d.request("DELETE", "/v1/sandboxes/" + st.s2)
    t.check(r.status == 204, "sandbox 2 deleted")
    status, _, body = parse(sandbox_request(d, st.s1, "anthropic", "/v1/messages", {},
                                            token=st.tokens[st.s2], sleep=2, wait=4))
    t.check(status == 401 and b"deleted" in body, "a deleted sandbox's token: 401: %d %r" % (status, body[:200]))
    t.check(len(st.fake.requests) == before, "no refused request reached the provider")
    everything = b"".join(st.fake.requests)
    t.check(all(tok.encode() not in everything for tok in st.tokens.values()) and b"sbx-" not in everything,
            "the provider never saw a sandbox token")


def test_host_closed(t, st):
    """Only the proxy's ip:port of the host is open to the sandbox."""
    d = st.d
    t.check(probe(d, st.s1, st.gateway, st.pport, "HTTP/1.1 404"),
            "the proxy's port answers at the gateway")
    t.check(not probe(d, st.s1, st.gateway, st.listener_port, "host-listener"),
            "another host port (a listener on 0.0.0.0) stays unreachable at the gateway")
    t.check(not probe(d, st.s1, st.gateway, d.port, "status"),
            "the daemon's API port stays unreachable")


def test_head_deadline(t, st):
    """A head trickled in a byte at a time gets 408 when its 30 s are up:
    the bytes do not extend the deadline (slowloris)."""
    c = socket.create_connection((st.gateway, st.pport), timeout=5)
    t0 = time.time()
    got = b""
    try:
        c.sendall(b"POST /anthropic/v1/messages HTTP/1.1\r\nX-Slow: ")
        c.settimeout(2)
        # Bounded: 45 s at most, one byte every 2 s.
        while time.time() - t0 < 45:
            try:
                c.sendall(b"a")
            except OSError:
                break
            try:
                chunk = c.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        c.close()
    took = time.time() - t0
    t.check(got.startswith(b"HTTP/1.1 408") and took < 36,
            "a trickled head: 408 within its deadline (%.1f s): %r" % (took, got[:80]))


def test_refused_log(t, st):
    """Connections over the 64 of one peer are refused at once, and the
    log says so once in a while, not once per connection."""
    d = st.d

    def refusals():
        with open(d.log_path, errors="replace") as f:
            return f.read().count("provider: connection refused")
    before = refusals()
    held, refused = [], 0
    try:
        for _ in range(64):
            held.append(socket.create_connection((st.gateway, st.pport), timeout=5))
        time.sleep(0.5)
        for _ in range(40):
            c = socket.create_connection((st.gateway, st.pport), timeout=5)
            c.settimeout(5)
            try:
                if c.recv(16) == b"":
                    refused += 1
            except socket.timeout:
                pass            # accepted and waiting: not refused
            except OSError:
                refused += 1    # reset
            finally:
                c.close()
    finally:
        for c in held:
            c.close()
    t.check(refused == 40, "the 40 over the cap are closed at once: %d" % refused)
    time.sleep(0.5)
    n = refusals() - before
    t.check(1 <= n <= 2, "refusals logged once in a while, not once each: %d lines" % n)


def test_usage(t, st):
    """Counts in the sandbox object, in the store (after a restart) and /metrics."""
    d = st.d
    want = {"anthropic": {"requests": 2, "input_tokens": 11 + 25, "output_tokens": 7 + 42},
            "openai": {"requests": 2, "input_tokens": 3 + 5, "output_tokens": 4 + 6}}
    u = d.request("GET", "/v1/sandboxes/" + st.s1).json().get("usage", {})
    t.check(u.get("providers") == want, "usage per provider: %r" % u)
    t.check(u.get("requests") == 4 and u.get("input_tokens") == 44 and u.get("output_tokens") == 59,
            "usage totals: %r" % u)
    m = d.request("GET", "/metrics", key="root").body.decode()
    t.check('sandboxd_provider_requests_total{provider="anthropic"} 2' in m and
            'sandboxd_provider_tokens_total{provider="anthropic",direction="output"} 49' in m and
            'sandboxd_provider_tokens_total{provider="openai",direction="input"} 8' in m,
            "usage in /metrics")
    t.check(re.search(r'sandboxd_provider_refused_total\{provider="anthropic"\} [1-9]', m) is not None,
            "refusals counted in /metrics")
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=m, capture_output=True, text=True)
        bad = [ln for ln in (r.stdout + r.stderr).splitlines() if "provider" in ln]
        t.check(not bad, "promtool finds nothing wrong with the provider families: %r" % bad)


BASE_IMAGE = "sandboxd/base:latest"
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "agents")


def run_task(d, sid, body):
    """Post a task, wait for it to end, return its events' raw text."""
    r = d.request("POST", "/v1/sandboxes/%s/tasks" % sid, body, timeout=60)
    if r.status != 202:
        return "POST tasks answered %r" % r
    tid = r.json()["id"]
    wait_for(lambda: d.request("GET", "/v1/sandboxes/%s/tasks/%s" % (sid, tid)).json().get("state")
             in ("succeeded", "failed", "cancelled"), timeout=60, interval=0.2)
    return d.request("GET", "/v1/sandboxes/%s/tasks/%s/events" % (sid, tid), timeout=30).body.decode()


def test_agent_env(t, st):
    """Claude Code and OpenCode tasks are pointed at the proxy (stand-in
    CLIs on the real base image report what reached them)."""
    d = st.d
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        t.skip("test_agent_env: %s is not built (base-image/build.sh)" % BASE_IMAGE)
        return
    r = d.request("POST", "/v1/sandboxes", {"template": "base"})
    if not t.check(r.status == 201, "a sandbox on the base image: %r" % r):
        return
    sid = r.json()["id"]
    if not t.check(wait_for(lambda: d.request("GET", "/v1/sandboxes/" + sid).json()["state"] == "running",
                            timeout=60, interval=0.2), "it runs"):
        return
    for name in ("claude", "opencode"):
        with open(os.path.join(FIXTURES, name)) as f:
            r = d.request("PUT", "/v1/sandboxes/%s/files/bin/%s" % (sid, name), f.read())
        t.check(r.status in (201, 204), "stand-in %s written" % name)
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                  {"cmd": ["chmod", "+x", "/workspace/bin/claude", "/workspace/bin/opencode"]})
    t.check(r.status == 200 and r.json()["exit_code"] == 0, "chmod the stand-ins: %r" % r)
    path = "/workspace/bin:/usr/local/bin:/usr/bin:/bin"
    base = "http://%s:%d" % (st.gateway, st.pport)
    ev = run_task(d, sid, {"agent": "claude-code", "prompt": "hi",
                           "env": {"PATH": path, "STANDIN_ENV": "ANTHROPIC_BASE_URL"}})
    t.check("env=%s/anthropic" % base in ev, "claude-code sees ANTHROPIC_BASE_URL at the proxy: %r" % ev[-300:])
    ev = run_task(d, sid, {"agent": "claude-code", "prompt": "hi",
                           "env": {"PATH": path, "STANDIN_ENV": "ANTHROPIC_API_KEY"}})
    t.check(("env=sbx-%s-" % sid) in ev and OP_KEY_A not in ev,
            "claude-code gets the sandbox's token, not the operator's key")
    ev = run_task(d, sid, {"agent": "opencode", "prompt": "hi",
                           "env": {"PATH": path, "STANDIN_ENV": "OPENCODE_CONFIG_CONTENT"}})
    t.check(("%s/anthropic/v1" % base) in ev and ("%s/openai" % base) in ev and ("sbx-%s-" % sid) in ev,
            "opencode gets an inline config aimed at the proxy: %r" % ev[-400:])
    ev = run_task(d, sid, {"agent": "claude-code", "prompt": "hi",
                           "env": {"PATH": path, "STANDIN_ENV": "ANTHROPIC_BASE_URL",
                                   "ANTHROPIC_API_KEY": "sk-users-own"}})
    t.check("env=https://127.0.0.1:%d" % st.fake.port in ev,
            "a user's own key goes with the provider's real URL: %r" % ev[-300:])
    d.request("DELETE", "/v1/sandboxes/" + sid, timeout=60)


def test_reload(t, st):
    """SIGHUP reads the key_files again; an unreadable one keeps the old key."""
    global OP_KEY_A
    d = st.d
    new = "sk-ant-rotated-" + secrets.token_hex(12)
    path = os.path.join(st.tmp, "anthropic.key")
    with open(path, "w") as f:
        f.write(new + "\n")
    d.proc.send_signal(signal.SIGHUP)
    t.check(wait_for(lambda: "provider: keys read again" in d.logs(), timeout=10), "SIGHUP read the keys again")
    sandbox_request(d, st.s1, "anthropic", "/v1/messages", {"model": "m"}, sleep=3, wait=5)
    req = st.fake.requests[-1] if st.fake.requests else b""
    t.check(("x-api-key: %s" % new).encode() in req, "the provider gets the new key after SIGHUP")
    os.chmod(path, 0)
    os.rename(path, path + ".gone")
    d.proc.send_signal(signal.SIGHUP)
    t.check(wait_for(lambda: "keeping the old key" in d.logs(), timeout=10), "a missing key_file keeps the old key")
    sandbox_request(d, st.s1, "anthropic", "/v1/messages", {"model": "m"}, sleep=3, wait=5)
    req = st.fake.requests[-1] if st.fake.requests else b""
    t.check(("x-api-key: %s" % new).encode() in req, "and the old key is still used")
    os.rename(path + ".gone", path)
    os.chmod(path, 0o600)
    t.check(OP_KEY_A not in d.logs() and new not in d.logs(), "no key in the log")
    OP_KEY_A = new


def test_bad_certificate(t, st):
    """An upstream whose certificate does not verify: 502, nothing sent."""
    d = st.d
    before = d.request("GET", "/v1/sandboxes/" + st.s1).json().get("usage", {})
    d.stop()
    # openai by name now: resolved, SNI sent, the name checked.
    set_config(d, config(st, st.rogue.port, st.fake.port, "localhost"))
    d.start()
    t.check(wait_for(lambda: d.request("GET", "/v1/sandboxes/" + st.s1).json()["state"] == "running",
                     timeout=30, interval=0.2), "sandbox 1 runs after the restart")
    u = d.request("GET", "/v1/sandboxes/" + st.s1).json().get("usage", {})
    t.check(u == before and u.get("requests", 0) >= 4, "usage survived the restart (it is in the store): %r" % u)
    status, _, body = parse(sandbox_request(d, st.s1, "anthropic", "/v1/messages", {"model": "m"},
                                            sleep=3, wait=5))
    t.check(status == 502 and b"certificate did not verify" in body,
            "a certificate from another CA: a clear 502: %d %r" % (status, body[:300]))
    t.check(st.rogue.attempts >= 1 and st.rogue.handshakes == 0 and not st.rogue.requests,
            "the rogue upstream got a connection but no handshake and no request (%d, %d, %d)"
            % (st.rogue.attempts, st.rogue.handshakes, len(st.rogue.requests)))
    with open(d.log_path, errors="replace") as f:
        log = f.read()
    n = len(st.fake.requests)
    status, _, body = parse(sandbox_request(d, st.s1, "openai", "/chat/completions", {"model": "m"},
                                            sleep=3, wait=5))
    t.check(status == 200 and len(st.fake.requests) == n + 1 and
            b"Host: localhost:%d" % st.fake.port in st.fake.requests[-1],
            "an upstream by host name (localhost) is resolved and verified by name: %d %r" % (status, body[:200]))
    t.check(st.fake.sni and st.fake.sni[-1] == "localhost", "SNI names it: %r" % st.fake.sni[-1:])
    d.stop()
    # The good CA, but a certificate for another name: refused as well.
    set_config(d, config(st, st.fake.port, st.other.port))
    d.start()
    status, _, body = parse(sandbox_request(d, st.s1, "openai", "/chat/completions", {"model": "m"},
                                            sleep=3, wait=5))
    t.check(status == 502 and b"did not verify" in body and not st.other.requests,
            "a certificate for another name: 502, nothing sent: %d %r" % (status, body[:300]))
    with open(d.log_path, errors="replace") as f:
        log = f.read()
    t.check(OP_KEY_A not in log and OP_KEY_O not in log, "no operator key in the daemon's log (debug level)")
    t.check(all(tok not in log for tok in st.tokens.values()), "no sandbox token in the daemon's log either")
    t.check(OP_KEY_A not in open(os.path.join(d.data_dir, "sandboxd.db"), "rb").read().decode("latin-1"),
            "nor in the store")


def test_bad_config(t, st):
    """check-config refuses bad provider values, naming the key."""
    path = os.path.join(st.tmp, "bad.conf")
    cases = [
        ("kind = gemini\nupstream = https://x.example\nkey_file = %s/anthropic.key" % st.tmp, "kind"),
        ("kind = openai\nupstream = http://x.example\nkey_file = %s/anthropic.key" % st.tmp, "https://"),
        ("kind = openai\nupstream = https://x.example\nkey_file = %s/none.key" % st.tmp, "key_file"),
    ]
    for body, word in cases:
        with open(path, "w") as f:
            f.write("data_dir = %s/bad\n[provider p]\n%s\n" % (st.tmp, body))
        r = sh(os.environ.get("SANDBOXD", d_bin()), "check-config", "-c", path, check=False)
        t.check(r.returncode == 2 and word in r.stderr, "check-config refuses %r: %r" % (body.split("\n")[0], r.stderr))
        t.check(OP_KEY_A not in r.stderr, "and prints no key")


def d_bin():
    from harness import SANDBOXD
    return SANDBOXD


LISTENER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost-listener\n"); c.close()
"""


def main():
    if os.geteuid() != 0:
        print("skip: the provider tests need root (the egress rules)")
        return 77
    for tool in ("nft", "openssl"):
        if shutil.which(tool) is None:
            print("skip: %s is not installed" % tool)
            return 77
    if not ensure_docker():
        print("skip: docker is not available")
        return 77
    ensure_test_image()
    t = Runner()
    st = State()
    st.tmp = tempfile.mkdtemp(prefix="sbxprov-")
    listener = None
    try:
        make_pki(st.tmp)
        for name, key in (("anthropic", OP_KEY_A), ("openai", OP_KEY_O)):
            p = os.path.join(st.tmp, name + ".key")
            with open(p, "w") as f:
                f.write(key + "\n")
            os.chmod(p, 0o600)
        st.fake = FakeProvider(os.path.join(st.tmp, "ca-srv.pem"), os.path.join(st.tmp, "ca-srv.key"))
        st.rogue = FakeProvider(os.path.join(st.tmp, "rogue-srv.pem"), os.path.join(st.tmp, "rogue-srv.key"))
        st.other = FakeProvider(os.path.join(st.tmp, "other-srv.pem"), os.path.join(st.tmp, "other-srv.key"))
        st.pport = free_port()
        st.listener_port = free_port()
        listener = subprocess.Popen([sys.executable, "-c", LISTENER, str(st.listener_port)],
                                    stdout=subprocess.PIPE, text=True)
        listener.stdout.readline()
        st.d = Daemon(templates={
            "default": {"image": TEST_IMAGE, "port": "3000", "dev_command": "httpd -f -p 3000 -h /workspace",
                        "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
            "base": {"image": BASE_IMAGE, "port": "3000", "memory": "512m", "cpus": "1", "pids_limit": "256"},
        })
        t.run(test_bad_config, st)
        t.run(test_env_and_forward, st)
        if st.s1 is not None:
            for fn in (test_streaming, test_refused, test_host_closed, test_head_deadline, test_refused_log,
                       test_usage, test_agent_env,
                       test_reload, test_bad_certificate):
                t.run(fn, st)
    finally:
        if st.d is not None:
            st.d.cleanup()
        if listener is not None:
            listener.kill()
            listener.wait()
        for f in (st.fake, st.rogue, st.other):
            if f is not None:
                f.close()
        shutil.rmtree(st.tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
