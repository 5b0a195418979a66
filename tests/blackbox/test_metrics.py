#!/usr/bin/env python3
"""Black-box scenarios for watching sandboxd (issue 9, items 3 and 4): real
traffic through a [route] to an origin of our own, over plain HTTP/1.1, h2c
and TLS (HTTP/1.1 and h2, with curl), and a sandbox woken by a preview
request; then GET /metrics with the admin key must pass `promtool check
metrics` and its counters must have moved by exactly what was sent. The
access log must hold one line per request with every field, never a query
string (a preview token travels there), and must go to a new file after a
rename and SIGHUP, as logrotate does it. docs/grafana-dashboard.json must
load and use only metrics the daemon serves; docs/operations.md must list
every one. Prints "N passed, N failed"; exit 77 without Docker or curl.
"""
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, TOP_SRC, ensure_docker,  # noqa: E402
                     ensure_test_image, free_port, wait_for)

SECRET = "tok3n-s3cr3t-" + os.urandom(6).hex()
ROUTE_HOST = "metrics.localhost"


class Origin(http.server.BaseHTTPRequestHandler):
    """The [route] upstream: 200 with a fixed body, 404 under /missing."""
    protocol_version = "HTTP/1.1"
    BODY = b"hello from the origin\n"

    def log_message(self, *args):
        pass

    def do_GET(self):
        missing = self.path.startswith("/missing")
        body = b"no\n" if missing else self.BODY
        self.send_response(404 if missing else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if not m:
            raise ValueError("bad sample line: %r" % line)
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def sample(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


def families(text):
    return [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]


def curl(*args, timeout=20):
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                           "--max-time", "10", *args], capture_output=True, text=True,
                          timeout=timeout)


class Ctx:
    pass


def metrics(c):
    r = c.d.request("GET", "/metrics", key="root")
    if r.status != 200:
        raise RuntimeError("GET /metrics: %d %r" % (r.status, r.body[:200]))
    return r.body.decode()


def route_url(c, path, tls=False):
    if tls:
        return "https://%s:%d%s" % (ROUTE_HOST, c.tport, path)
    return "http://%s:%d%s" % (ROUTE_HOST, c.d.port, path)


def resolve(c, tls=False):
    return ["--resolve", "%s:%d:127.0.0.1" % (ROUTE_HOST, c.tport if tls else c.d.port)]


def drive_route_traffic(t, c):
    """Plain h1 x5 (one a 404), h2c x3, TLS h1 x2, TLS h2 x2: counted by
    protocol and class, and logged."""
    path = "/hello?sandboxd_token=%s&x=1" % SECRET
    want = {("h1", "2xx"): 0, ("h1", "4xx"): 0, ("h2", "2xx"): 0}
    for i in range(4):
        r = curl(*resolve(c), "--http1.1", route_url(c, path))
        t.check(r.stdout == "200 1.1", "plain h1 GET: %r %r" % (r.stdout, r.stderr))
        want[("h1", "2xx")] += 1
    r = curl(*resolve(c), "--http1.1", route_url(c, "/missing?sandboxd_token=" + SECRET))
    t.check(r.stdout == "404 1.1", "plain h1 404: %r" % r.stdout)
    want[("h1", "4xx")] += 1
    for i in range(3):
        r = curl(*resolve(c), "--http2-prior-knowledge", route_url(c, path))
        t.check(r.stdout == "200 2", "h2c GET: %r %r" % (r.stdout, r.stderr))
        want[("h2", "2xx")] += 1
    if c.tport:
        for i in range(2):
            r = curl(*resolve(c, True), "--cacert", c.ca, "--http1.1", route_url(c, path, True))
            t.check(r.stdout == "200 1.1", "TLS h1 GET: %r %r" % (r.stdout, r.stderr))
            want[("h1", "2xx")] += 1
            r = curl(*resolve(c, True), "--cacert", c.ca, "--http2", route_url(c, path, True))
            t.check(r.stdout == "200 2", "TLS h2 GET: %r %r" % (r.stdout, r.stderr))
            want[("h2", "2xx")] += 1
    return want


def test_metrics_after_traffic(t, c):
    before_text = metrics(c)
    before = parse_metrics(before_text)
    want = drive_route_traffic(t, c)
    time.sleep(0.5)     # the daemon notices curl's closes
    after_text = metrics(c)
    after = parse_metrics(after_text)
    for (proto, code), n in want.items():
        got = (sample(after, "sandboxd_http_requests_total", kind="route", proto=proto, code=code) -
               sample(before, "sandboxd_http_requests_total", kind="route", proto=proto, code=code))
        t.check(got == n, "route %s %s requests moved by %r, want %d" % (proto, code, got, n))
    # The first GET /metrics was an API request on HTTP/1.1 that got a 200.
    got = (sample(after, "sandboxd_http_requests_total", kind="api", proto="h1", code="2xx") -
           sample(before, "sandboxd_http_requests_total", kind="api", proto="h1", code="2xx"))
    t.check(got == 1, "api h1 2xx moved by %r, want 1 (the first /metrics)" % got)
    nbody = len(Origin.BODY)
    for proto, n in (("h1", want[("h1", "2xx")]), ("h2", want[("h2", "2xx")])):
        sent = (sample(after, "sandboxd_http_sent_bytes_total", proto=proto) -
                sample(before, "sandboxd_http_sent_bytes_total", proto=proto))
        # Bodies at least; heads on top (HTTP/2 heads are HPACK-sized).
        t.check(sent >= n * nbody, "%s sent bytes moved by %r, want >= %d" % (proto, sent, n * nbody))
        recv = (sample(after, "sandboxd_http_received_bytes_total", proto=proto) -
                sample(before, "sandboxd_http_received_bytes_total", proto=proto))
        t.check(recv >= n * 20, "%s received bytes moved by %r" % (proto, recv))
    closed = (sample(after, "sandboxd_http_connections_closed_total", proto="h2") -
              sample(before, "sandboxd_http_connections_closed_total", proto="h2"))
    t.check(closed == want[("h2", "2xx")], "h2 connections closed moved by %r" % closed)
    # Our own keep-alive-less /metrics requests: every curl connection is gone.
    for proto in ("h1", "h2"):
        for tls in ("0", "1"):
            v = sample(after, "sandboxd_http_connections", proto=proto, tls=tls)
            t.check(v >= 0 and (proto == "h1" and tls == "0" or v == 0),
                    "open connections %s tls=%s: %r" % (proto, tls, v))
    t.check(sample(after, "sandboxd_http_connections", proto="h1", tls="0") == 1,
            "exactly our /metrics connection is open on plain h1")
    t.check(sample(after, "sandboxd_process_resident_memory_bytes") > 1 << 20, "RSS is sensible")
    t.check(sample(after, "sandboxd_process_open_fds") >= 5, "fds are counted")
    t.check(sample(after, "sandboxd_uptime_seconds") > 0, "uptime")
    t.check(abs(sample(after, "sandboxd_process_start_time_seconds") - time.time()) < 600,
            "start time is near now")
    t.check(any(k[0] == "sandboxd_build_info" and v == 1 for k, v in after.items()), "build_info")
    t.check(sample(after, "sandboxd_docker_requests_total") > 0, "Docker calls counted")
    t.check(sample(after, "sandboxd_store_write_duration_seconds_count") >= 0, "store histogram")
    c.metrics_text = after_text
    promtool(t, after_text)


def promtool(t, text):
    if shutil.which("promtool") is None:
        print("  skip promtool check: promtool is not installed (Debian package prometheus)")
        return
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    t.check(r.returncode == 0, "promtool check metrics: %s%s" % (r.stdout, r.stderr))


def read_log_lines(path):
    try:
        with open(path) as f:
            return [l for l in f.read().splitlines() if "msg=access" in l]
    except FileNotFoundError:
        return []


def test_access_log(t, c):
    lines = read_log_lines(c.alog)
    t.check(len(lines) >= 12, "access log lines: %d" % len(lines))
    st = os.stat(c.alog)
    t.check(st.st_mode & 0o777 == 0o640, "access log mode %o" % (st.st_mode & 0o777))
    with open(c.alog) as f:
        whole = f.read()
    t.check(SECRET not in whole and "sandboxd_token" not in whole,
            "no query string (nor its token) in the access log")
    t.check(SECRET not in c.d.logs(), "the token is not in the daemon log either")
    fields = ("ts", "level", "msg", "client", "host", "sandbox", "method", "path", "status",
              "bytes", "duration_ms", "upstream_ms", "proto", "tls", "end")
    route = [l for l in lines if 'host="%s' % ROUTE_HOST in l]
    t.check(len(route) >= 10, "route lines: %d" % len(route))
    for l in route:
        kv = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', l))
        missing = [f for f in fields if f not in kv]
        if not t.check(not missing, "fields %s missing in %r" % (missing, l)):
            break
        t.check(kv["client"] == "127.0.0.1" and kv["method"] == '"GET"' and kv["sandbox"] == "-",
                "client, method, sandbox: %r" % l)
        t.check(kv["path"] in ('"/hello"', '"/missing"'), "path without query: %r" % kv["path"])
        t.check(kv["status"] in ("200", "404") and int(kv["bytes"]) > 0 and kv["end"] == "ok",
                "status, bytes, end: %r" % l)
        t.check(kv["upstream_ms"].isdigit() and kv["duration_ms"].isdigit(), "timings: %r" % l)
    protos = {(re.search(r"proto=(\S+)", l).group(1), re.search(r"tls=(\d)", l).group(1)) for l in route}
    want = {("h1", "0"), ("h2", "0")} | ({("h1", "1"), ("h2", "1")} if c.tport else set())
    t.check(want <= protos, "protocols logged: %r" % sorted(protos))
    api = [l for l in lines if "/metrics" in l]
    t.check(api and 'upstream_ms=-' in api[0] and "status=200" in api[0], "API request logged: %r" % api[:1])


def test_access_log_reopen(t, c):
    rotated = c.alog + ".1"
    os.rename(c.alog, rotated)
    before_old = len(read_log_lines(rotated))
    c.d.proc.send_signal(signal.SIGHUP)
    t.check(wait_for(lambda: "access log reopened" in c.d.logs(), timeout=10), "reopen logged")
    for i in range(3):
        r = curl(*resolve(c), "--http1.1", route_url(c, "/after-hup"))
        t.check(r.stdout == "200 1.1", "GET after HUP: %r" % r.stdout)
    ok = wait_for(lambda: len([l for l in read_log_lines(c.alog) if "/after-hup" in l]) == 3, timeout=5)
    t.check(ok, "the new file has the 3 new lines: %r" % read_log_lines(c.alog))
    t.check(len(read_log_lines(rotated)) == before_old, "the rotated file got no more lines")
    t.check(os.stat(c.alog).st_mode & 0o777 == 0o640, "new file mode 0640")


def test_wake_histogram(t, c):
    before = parse_metrics(metrics(c))
    r = c.d.request("POST", "/v1/sandboxes", {}, timeout=60)
    if not t.check(r.status == 201, "create: %d %r" % (r.status, r.body[:200])):
        return
    sid = r.json()["id"]
    r = c.d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
    if not t.check(r.status == 200, "stop: %d %r" % (r.status, r.body[:200])):
        return
    r = c.d.preview(sid, "/?sandboxd_token=" + SECRET)
    t.check(r.status in (200, 404), "preview after a wake: %d" % r.status)
    after = parse_metrics(metrics(c))
    woke = (sample(after, "sandboxd_wake_duration_seconds_count") -
            sample(before, "sandboxd_wake_duration_seconds_count"))
    t.check(woke == 1, "one wake observed, got %r" % woke)
    for name in ("sandboxd_sandbox_creates_total", "sandboxd_sandbox_starts_total",
                 "sandboxd_wakes_total"):
        moved = sample(after, name) - sample(before, name)
        t.check(moved == 1, "%s moved by %r, want 1" % (name, moved))
    inf = sample(after, "sandboxd_wake_duration_seconds_bucket", le="+Inf")
    t.check(inf == sample(after, "sandboxd_wake_duration_seconds_count"), "+Inf bucket is the count")
    got = (sample(after, "sandboxd_http_requests_total", kind="preview", proto="h1", code="2xx") +
           sample(after, "sandboxd_http_requests_total", kind="preview", proto="h1", code="4xx") -
           sample(before, "sandboxd_http_requests_total", kind="preview", proto="h1", code="2xx") -
           sample(before, "sandboxd_http_requests_total", kind="preview", proto="h1", code="4xx"))
    t.check(got == 1, "the preview request counted once: %r" % got)
    t.check(sample(after, "sandboxd_store_write_duration_seconds_count") >
            sample(before, "sandboxd_store_write_duration_seconds_count"), "store writes timed")
    t.check(sample(after, "sandboxd_docker_request_duration_seconds_count") >
            sample(before, "sandboxd_docker_request_duration_seconds_count"), "Docker calls timed")
    lines = [l for l in read_log_lines(c.alog) if "sandbox=" + sid in l]
    t.check(len(lines) == 1 and 'path="/"' in lines[0] and "upstream_ms=" in lines[0],
            "the preview's access line: %r" % lines)
    # A command task: finished once, succeeded, its events counted.
    before = after
    r = c.d.request("POST", "/v1/sandboxes/%s/tasks" % sid,
                    {"agent": "command", "cmd": ["sh", "-c", "echo one; echo two"]}, timeout=60)
    if t.check(r.status == 202, "task: %d %r" % (r.status, r.body[:200])):
        tid = r.json()["id"]
        done = wait_for(lambda: c.d.request("GET", "/v1/sandboxes/%s/tasks/%s" % (sid, tid))
                        .json().get("state") in ("succeeded", "failed", "cancelled"), timeout=30)
        t.check(done, "the task finished")
        after = parse_metrics(metrics(c))
        fin = (sample(after, "sandboxd_tasks_finished_total", state="succeeded") -
               sample(before, "sandboxd_tasks_finished_total", state="succeeded"))
        t.check(fin == 1, "one task succeeded: %r" % fin)
        ev = sample(after, "sandboxd_task_events_total") - sample(before, "sandboxd_task_events_total")
        t.check(ev >= 3, "its events counted (two lines, exit): %r" % ev)
        live = sum(v for k, v in after.items() if k[0] == "sandboxd_tasks")
        t.check(live == 0, "no task left live: %r" % live)
    promtool(t, metrics(c))
    c.d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=60)


def test_docs(t, c):
    text = c.metrics_text or metrics(c)
    names = set(families(text))
    with open(os.path.join(TOP_SRC, "docs", "operations.md")) as f:
        ops = f.read()
    missing = sorted(n for n in names if n not in ops)
    t.check(not missing, "docs/operations.md lacks %s" % missing)
    with open(os.path.join(TOP_SRC, "docs", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    t.check(len(exprs) >= 8, "dashboard has panels with queries: %d" % len(exprs))
    served = names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}
    for e in exprs:
        used = set(re.findall(r"\bsandboxd_[a-z_]+", e))
        unknown = used - served
        t.check(not unknown, "dashboard query uses unknown metrics %s: %s" % (sorted(unknown), e))


def main():
    if shutil.which("curl") is None:
        print("skip: curl is not installed")
        return 77
    if not ensure_docker():
        print("skip: Docker is not reachable")
        return 77
    ensure_test_image()
    t = Runner()
    tmp = tempfile.mkdtemp(prefix="sbxmetrics-")
    origin = OriginServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    c = Ctx()
    c.metrics_text = None
    c.alog = os.path.join(tmp, "access.log")
    c.tport = 0
    tls = ""
    if shutil.which("openssl"):
        from test_tls import PKI
        pki = PKI(tmp)
        pem, key, _ = pki.leaf("m", int.from_bytes(os.urandom(16), "big") >> 2 | 1 << 125,
                               [ROUTE_HOST, "localhost", "IP:127.0.0.1"])
        c.ca = pki.ca
        c.tport = free_port()
        tls = "tls_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n" % (c.tport, pem, key)
    else:
        print("  skip the TLS part: openssl is not installed")
    c.d = Daemon(extra="access_log = %s\n%s[route origin]\nhost = %s\nupstream = 127.0.0.1:%d\n" %
                 (c.alog, tls, ROUTE_HOST, origin.server_address[1]))
    try:
        c.d.start()
        t.run(test_metrics_after_traffic, c)
        t.run(test_access_log, c)
        t.run(test_access_log_reopen, c)
        t.run(test_wake_histogram, c)
        t.run(test_docs, c)
        if t.failed:
            print("---- daemon log (tail) ----\n" + c.d.logs())
    finally:
        c.d.cleanup()
        origin.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
