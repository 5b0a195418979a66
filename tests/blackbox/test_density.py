#!/usr/bin/env python3
"""Black-box scenarios for density (issue 6): hold-and-wake, idleness from
live traffic, the pause tier, LRU eviction at max_running, min_free_memory.
Real daemons (one per config), real dockerd, real busybox containers, real
sockets. Prints "N passed, N failed"; exits 77 without Docker.

Timeouts are short (idle_timeout = 3s, pause_timeout = 2s, ...) so the
whole file runs in a couple of minutes; every wait is bounded.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, SANDBOXD, TEST_IMAGE, docker, ensure_docker,  # noqa: E402
                     ensure_test_image, wait_for)

INDEX = b"<h1>awake</h1>\n"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="      # RFC 6455's example pair
GREETING = b"hello-from-upstream\n"
STREAM_LINES = 8

# A tiny upstream behind busybox `nc -ll -e` (one shell per connection):
#   GET /ws      101 + Upgrade headers, a greeting line, then echoes;
#   GET /stream  a chunked text/event-stream, one event a second for 8 s;
#   anything    200 "ok".
SRV_SH = (r"""read -r req
while read -r line; do
  [ "${#line}" -le 1 ] && break
done
case "$req" in
"GET /stream"*)
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n'
  i=0
  while [ $i -lt %d ]; do
    s="data: $i

"
    printf '%%x\r\n%%s\r\n' ${#s} "$s"
    i=$((i+1))
    sleep 1
  done
  printf '0\r\n\r\n'
  ;;
"GET /ws"*)
  printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n'
  printf '%s'
  exec cat
  ;;
*)
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n'
  ;;
esac
""" % (STREAM_LINES, WS_ACCEPT, GREETING.decode().replace("\n", r"\n"))).encode()

BASE = {"image": TEST_IMAGE, "port": "3000", "memory": "64m", "cpus": "0.5", "pids_limit": "64"}
TEMPLATES = {
    "default": dict(BASE, dev_command="httpd -f -p 3000 -h /workspace"),
    # Ready only ~4 s after its container starts.
    "slow": dict(BASE, dev_command="sleep 4; exec httpd -f -p 3000 -h /workspace"),
    # A dev server that never listens.
    "never": dict(BASE, dev_command="sleep 3600"),
    "nc": dict(BASE, dev_command="nc -ll -p 3000 -e sh /workspace/srv.sh"),
}


# --- helpers ----------------------------------------------------------------

def daemon(extra=""):
    return Daemon(extra=extra, templates=dict(TEMPLATES))


def start_daemon(t, d, what):
    """Start d after check-config accepts its config; a key the daemon does
    not know yet (a feature not landed) fails here, loudly."""
    r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
    if not t.check(r.returncode == 0, "%s: the config is accepted: %s" % (what, r.stderr.strip())):
        return False
    d.start()
    return True


def create(t, d, body=None):
    r = d.request("POST", "/v1/sandboxes", body if body is not None else {})
    t.check(r.status == 201, "create %r answers 201, got %r" % (body, r))
    return r.json()["id"] if r.status == 201 else None


def put(d, sid, path, data):
    r = d.request("PUT", "/v1/sandboxes/%s/files/%s" % (sid, path), data)
    return r.status in (201, 204)


def get_sbx(d, sid):
    r = d.request("GET", "/v1/sandboxes/%s" % sid, timeout=10)
    return r.json() if r.status == 200 else None


def state(d, sid):
    s = get_sbx(d, sid)
    return s["state"] if s else None


def wait_state(d, sid, want, timeout):
    """Poll the API until the sandbox is in state want (bounded)."""
    return wait_for(lambda: state(d, sid) == want, timeout=timeout, interval=0.1)


def cname(d, sid):
    return "%s-%s" % (d.instance, sid)


def dstate(d, sid):
    """Docker's own view: "running", "paused", "exited", ... or None."""
    r = docker("inspect", "-f", "{{.State.Status}}", cname(d, sid), check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def dpaused(d, sid):
    r = docker("inspect", "-f", "{{.State.Paused}}", cname(d, sid), check=False)
    return r.stdout.strip() == "true"


def phost(d, sid):
    return "%s.preview.localhost:%d" % (sid, d.port)


def preview(d, sid, path="/index.html", accept="*/*", timeout=30, headers=None):
    """A preview GET with a bounded wait: (Response or None, seconds)."""
    h = {"Accept": accept}
    h.update(headers or {})
    t0 = time.time()
    try:
        r = d.request("GET", path, key=None, host=phost(d, sid), headers=h, timeout=timeout)
    except OSError:
        r = None
    return r, time.time() - t0


def served(d, sid, path="/index.html", want=INDEX, timeout=15):
    def probe():
        r, _ = preview(d, sid, path, timeout=5)
        return r if r is not None and r.status == 200 and r.body == want else None
    return wait_for(probe, timeout=timeout, interval=0.1)


def api_stop(t, d, sid):
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=30)
    return t.check(r.status == 200 and r.json()["state"] == "stopped", "stop %s: %r" % (sid[-6:], r))


def new_app(t, d, template="default", body=None):
    """A running sandbox whose app answers: returns its id or None."""
    b = dict(body or {})
    b["template"] = template
    sid = create(t, d, b)
    if sid is None:
        return None
    if template == "nc":
        ok = put(d, sid, "srv.sh", SRV_SH) and served(d, sid, "/", b"ok\n") is not None
    else:
        ok = put(d, sid, "index.html", INDEX) and (template != "default" or served(d, sid) is not None)
    return sid if t.check(ok, "a new %s sandbox serves" % template) else None


def recv_head(s, timeout):
    """Read up to the end of a response head: (head, rest) or (partial, None)."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.time() + timeout
    while b"\r\n\r\n" not in buf and time.time() < deadline:
        try:
            c = s.recv(65536)
        except socket.timeout:
            break
        if not c:
            break
        buf += c
    if b"\r\n\r\n" not in buf:
        return buf, None
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def recv_until(s, buf, want, timeout):
    deadline = time.time() + timeout
    while want not in buf and time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            c = s.recv(65536)
        except socket.timeout:
            break
        if not c:
            break
        buf += c
    return buf


def ws_open(d, sid, timeout=20):
    """A WebSocket upgrade through the preview proxy: (socket, head, rest)."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % (phost(d, sid), WS_KEY)).encode())
    head, rest = recv_head(s, timeout)
    return s, head, rest


def docker_starts(name, since, until):
    """How many Docker start events container name had in [since, until]."""
    r = docker("events", "--since", "%.3f" % since, "--until", "%.3f" % until,
               "--filter", "container=%s" % name, "--filter", "event=start",
               "--format", "{{.Status}} {{.ID}}", check=False)
    return len([ln for ln in r.stdout.splitlines() if ln.strip()])


def running_ids(d, ids):
    return [sid for sid in ids if state(d, sid) == "running"]


# --- hold-and-wake ----------------------------------------------------------

def test_wake_held(t, d, ctx):
    sid = new_app(t, d)
    if sid is None:
        return
    ctx["app"] = sid
    if not api_stop(t, d, sid):
        return
    t.check(dstate(d, sid) != "running", "the container is not running after stop")
    # A browser navigation to a quick app: the app itself, no page, no redirect.
    r, dt = preview(d, sid, accept=BROWSER_ACCEPT, timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX,
            "a request for a stopped sandbox is held and answered by the app: %r" % r)
    if r is not None:
        t.check("location" not in r.headers and "x-sandboxd-waking" not in r.headers,
                "no redirect, no warming page: %r" % r.headers)
    print("  wake -> %r in %.0f ms" % (r and r.status, dt * 1000))
    t.check(state(d, sid) == "running", "the sandbox is running after the wake")
    t.check(dstate(d, sid) == "running", "and so is its container")
    # curl-like, the same.
    api_stop(t, d, sid)
    r, dt = preview(d, sid, accept="*/*", timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX, "Accept: */* is woken too: %r" % r)


def test_concurrent_start_once(t, d, ctx):
    sid = ctx.get("app")
    if sid is None:
        t.skip("no sandbox from test_wake_held")
        return
    if not api_stop(t, d, sid):
        return
    time.sleep(0.3)
    since = time.time()
    n = 20
    results = [None] * n
    go = threading.Barrier(n)

    def one(i):
        try:
            go.wait(5)
        except threading.BrokenBarrierError:
            pass
        results[i], _ = preview(d, sid, timeout=30)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(40)
    time.sleep(0.5)
    until = time.time()
    ok = [r for r in results if r is not None and r.status == 200 and r.body == INDEX]
    t.check(len(ok) == n, "all %d concurrent requests answered 200 by the app: %r"
            % (n, [r.status if r else None for r in results]))
    starts = docker_starts(cname(d, sid), since, until)
    t.check(starts == 1, "%d requests started the container once (docker start events: %d)" % (n, starts))


def test_warming_page(t, d, ctx):
    sid = new_app(t, d, "slow")
    if sid is None:
        return
    ctx["slow"] = sid
    if not t.check(served(d, sid, timeout=20) is not None, "the slow app answers once it is up"):
        return
    api_stop(t, d, sid)
    r, dt = preview(d, sid, accept=BROWSER_ACCEPT, timeout=15)
    print("  browser navigation to a slow wake: %r after %.1f s" % (r and r.status, dt))
    t.check(r is not None and r.status == 503, "a browser still waiting gets a 503 page: %r" % r)
    if r is not None and r.status == 503:
        t.check(r.headers.get("x-sandboxd-waking") == "1", "X-Sandboxd-Waking: 1: %r" % r.headers)
        t.check(r.headers.get("retry-after", "").strip().isdigit(), "with Retry-After: %r" % r.headers)
        t.check(r.headers.get("content-type", "").startswith("text/html"), "an HTML page")
        low = r.body.lower()
        t.check(b"<script" in low or b"http-equiv=\"refresh\"" in low,
                "the page can reload itself (script or meta refresh)")
        t.check(1.5 <= dt <= 3.5, "after about 2 s (%.1f s), before the app was ready" % dt)
    # The wake goes on without the browser: the app answers soon after.
    t.check(served(d, sid, timeout=15) is not None, "the sandbox finished waking after the page")
    # curl: waits for the app.
    api_stop(t, d, sid)
    r, dt = preview(d, sid, accept="*/*", timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX,
            "a curl-like request waits for the slow app and gets its 200: %r" % r)
    t.check(dt >= 3.0, "it was really held until the app was up (%.1f s)" % dt)
    if r is not None:
        t.check("x-sandboxd-waking" not in r.headers, "no warming header on the app's answer")


def test_api_start_during_wake(t, d, ctx):
    """An API start while a preview request is waking the sandbox joins that
    wake (200, running) rather than failing because a start is in flight."""
    sid = ctx.get("slow")
    if sid is None:
        t.skip("no slow sandbox from test_warming_page")
        return
    api_stop(t, d, sid)
    got = []
    th = threading.Thread(target=lambda: got.append(preview(d, sid, timeout=20)[0]))
    th.start()
    if not t.check(wait_for(lambda: state(d, sid) == "starting", timeout=3, interval=0.02),
                   "the preview request is waking it: %r" % state(d, sid)):
        th.join(25)
        return
    r = d.request("POST", "/v1/sandboxes/%s/start" % sid, timeout=30)
    t.check(r.status == 200 and r.json()["state"] == "running",
            "POST /start during a wake answers 200 running: %r" % r)
    th.join(25)
    t.check(got and got[0] is not None and got[0].status == 200, "and the held request is answered: %r" % got)


def test_wake_timeout(t):
    d = daemon("wake_timeout = 3s")
    try:
        if not start_daemon(t, d, "wake_timeout = 3s"):
            return
        sid = create(t, d, {"template": "never"})
        if sid is None:
            return
        api_stop(t, d, sid)
        r, dt = preview(d, sid, "/", accept="*/*", timeout=15)
        t.check(r is not None and r.status == 503, "a dev server that never listens: 503 at wake_timeout: %r" % r)
        if r is not None:
            t.check(r.headers.get("retry-after", "").strip().isdigit(), "with Retry-After: %r" % r.headers)
        t.check(2.5 <= dt <= 6, "after about wake_timeout = 3 s (%.1f s)" % dt)
        t.check(d.proc.poll() is None, "the daemon is fine")
    finally:
        if t.failed:
            print("---- daemon log (tail) ----\n" + d.logs()[-2500:])
        d.cleanup()


def test_held_websocket(t, d, ctx):
    sid = new_app(t, d, "nc")
    if sid is None:
        return
    ctx["nc"] = sid
    api_stop(t, d, sid)
    s, head, rest = ws_open(d, sid)
    try:
        if not t.check(head.startswith(b"HTTP/1.1 101") and rest is not None,
                       "a held WebSocket upgrade gets its 101 after the wake: %r" % head[:80]):
            return
        t.check(b"sec-websocket-accept: " + WS_ACCEPT.encode().lower() in head.lower(),
                "the upstream's own 101")
        buf = recv_until(s, rest, GREETING, 5)
        t.check(GREETING in buf, "upstream -> client bytes flow: %r" % buf)
        s.sendall(b"ping-42\n")
        buf = recv_until(s, buf, b"ping-42\n", 5)
        t.check(b"ping-42\n" in buf, "client -> upstream -> client bytes flow (echo): %r" % buf)
    finally:
        s.close()
    t.check(state(d, sid) == "running", "running after the WebSocket wake")


def test_client_disconnects_while_held(t, d, ctx):
    sid = ctx.get("slow")
    if sid is None:
        t.skip("no slow sandbox from test_warming_page")
        return
    api_stop(t, d, sid)
    socks = []
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        if i == 4:              # one goes away with a reset, not a FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(("GET /index.html HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % phost(d, sid)).encode())
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.close()
    time.sleep(0.2)
    t.check(d.proc.poll() is None, "the daemon is still running")
    r = d.request("GET", "/healthz", key=None, timeout=5)
    t.check(r.status == 200, "and healthy: %r" % r)
    other = ctx.get("app")
    if other:
        r, _ = preview(d, other, timeout=20)
        t.check(r is not None and r.status == 200, "another sandbox is still served: %r" % r)
    r, dt = preview(d, sid, accept="*/*", timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX,
            "a later request to the same sandbox is answered: %r" % r)


def test_keepalive_after_delete(t, d, ctx):
    sid = new_app(t, d)
    if sid is None:
        return
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=20)
    hdr = {"Host": phost(d, sid), "Accept": "*/*"}
    try:
        conn.request("GET", "/index.html", headers=hdr)
        r = conn.getresponse()
        body = r.read()
        t.check(r.status == 200 and body == INDEX and not r.will_close,
                "a keep-alive connection is served: %d %r" % (r.status, body))
        # Stopped: the next request on this connection wakes it, never the old address.
        api_stop(t, d, sid)
        conn.request("GET", "/index.html", headers=hdr)
        r = conn.getresponse()
        body = r.read()
        t.check(r.status == 200 and body == INDEX, "after a stop, the same connection wakes it: %d" % r.status)
        t.check(state(d, sid) == "running", "running again")
        dr = d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=30)
        t.check(dr.status == 204, "delete: %r" % dr)
        try:
            conn.request("GET", "/index.html", headers=hdr)
            r = conn.getresponse()
            body = r.read()
            t.check(r.status == 404 and body != INDEX,
                    "a deleted sandbox is not served on a connection opened before: %d %r" % (r.status, body[:80]))
        except (http.client.HTTPException, OSError) as e:
            # Closing the connection also keeps the old address unused; a
            # fresh one must then say 404.
            r2, _ = preview(d, sid, timeout=10)
            t.check(r2 is not None and r2.status == 404,
                    "the connection was closed (%r); a fresh one gets 404: %r" % (e, r2))
    finally:
        conn.close()


def test_docker_kill(t, d, ctx):
    sid = ctx.get("app")
    if sid is None:
        t.skip("no sandbox from test_wake_held")
        return
    if state(d, sid) != "running":
        preview(d, sid, timeout=20)
    docker("kill", cname(d, sid), check=False)
    t.check(wait_for(lambda: state(d, sid) != "running", timeout=10, interval=0.1),
            "the daemon notices the kill: %r" % state(d, sid))
    r, dt = preview(d, sid, timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX,
            "docker kill behind its back, then a request wakes it: %r" % r)
    t.check(dstate(d, sid) == "running", "the container runs again")


def test_wake_removed_container(t, d, ctx):
    sid = ctx.get("app")
    if sid is None:
        t.skip("no sandbox from test_wake_held")
        return
    if state(d, sid) != "stopped" and not api_stop(t, d, sid):
        return
    docker("rm", "-f", cname(d, sid), check=False)
    t.check(dstate(d, sid) is None, "the container is gone")
    r, dt = preview(d, sid, timeout=30)
    t.check(r is not None and r.status == 200 and r.body == INDEX,
            "a request recreates a removed container, workspace kept: %r" % r)
    t.check(dstate(d, sid) == "running" and state(d, sid) == "running", "running again")


def test_api_idle_timeout_field(t, d, ctx):
    sid = new_app(t, d, body={"idle_timeout_s": 2})
    if sid is None:
        return
    t.check(get_sbx(d, sid)["idle_timeout_s"] == 2, "idle_timeout_s is kept")
    preview(d, sid, timeout=10)
    t0 = time.time()
    ok = wait_state(d, sid, "stopped", 12)
    t.check(ok, "idle_timeout_s = 2 stops the sandbox by itself (daemon default 15m): %r" % state(d, sid))
    if ok:
        t.check(time.time() - t0 >= 1.5, "not before its timeout (%.1f s)" % (time.time() - t0))
    d.request("DELETE", "/v1/sandboxes/%s" % sid)


def test_api_pause_timeout_field(t, d, ctx):
    r = d.request("POST", "/v1/sandboxes", {"pause_timeout_s": 30, "idle_timeout_s": 10})
    t.check(r.status == 400 and r.error_code() == "bad_request",
            "pause_timeout_s not below idle_timeout_s: 400 %r" % r)
    sid = new_app(t, d, body={"pause_timeout_s": 1})
    if sid is None:
        return
    t.check(get_sbx(d, sid).get("pause_timeout_s") == 1, "pause_timeout_s is kept")
    preview(d, sid, timeout=10)
    ok = wait_state(d, sid, "paused", 8)
    t.check(ok and dpaused(d, sid), "pause_timeout_s = 1 pauses it (daemon default: no pause): %r"
            % state(d, sid))
    d.request("DELETE", "/v1/sandboxes/%s" % sid)


def test_conflict_states(t, d, ctx):
    """Start/stop on a deleting or error sandbox: 409."""
    sid = new_app(t, d)
    if sid is not None:
        done = []
        th = threading.Thread(target=lambda: done.append(d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=30)))
        th.start()
        seen = wait_for(lambda: state(d, sid) in ("deleting", None), timeout=5, interval=0.005)
        if seen and state(d, sid) == "deleting":
            a = d.request("POST", "/v1/sandboxes/%s/start" % sid)
            b = d.request("POST", "/v1/sandboxes/%s/stop" % sid)
            if a.status == 404 or b.status == 404:
                t.skip("the delete finished before start/stop got there")
            else:
                t.check(a.status == 409 and a.error_code() == "conflict", "start while deleting: 409 %r" % a)
                t.check(b.status == 409 and b.error_code() == "conflict", "stop while deleting: 409 %r" % b)
        else:
            t.skip("could not catch the sandbox in state deleting")
        th.join(30)
        t.check(done and done[0].status == 204, "the delete finished: %r" % done)
    # error: its template's image disappears while it is stopped and its
    # container is gone, so it cannot be recreated.
    tag = "sandboxd-test-busybox:gone-%s" % d.instance
    docker("tag", TEST_IMAGE, tag)
    try:
        d2 = Daemon(extra="", templates={"default": dict(TEMPLATES["default"], image=tag)})
        try:
            d2.start()
            sid = create(t, d2)
            if sid is None:
                return
            api_stop(t, d2, sid)
            docker("rm", "-f", cname(d2, sid), check=False)
            docker("rmi", tag, check=False)
            d2.request("POST", "/v1/sandboxes/%s/start" % sid, timeout=30)
            if state(d2, sid) != "error":
                t.skip("a sandbox whose image vanished is %r, not error" % state(d2, sid))
                return
            r, _ = preview(d2, sid, timeout=15)
            t.check(r is not None and r.status == 502, "the preview of a sandbox in error: 502 page %r" % r)
            a = d2.request("POST", "/v1/sandboxes/%s/start" % sid)
            b = d2.request("POST", "/v1/sandboxes/%s/stop" % sid)
            t.check(a.status == 409 and a.error_code() == "conflict", "start in error: 409 %r" % a)
            t.check(b.status == 409 and b.error_code() == "conflict", "stop in error: 409 %r" % b)
            t.check(state(d2, sid) == "error", "and it stays in error: %r" % state(d2, sid))
        finally:
            d2.cleanup()
    finally:
        docker("rmi", tag, check=False)


# --- idleness ---------------------------------------------------------------

def test_idle_stop(t, d, ctx):
    sid = new_app(t, d)
    if sid is None:
        return
    before = get_sbx(d, sid)["last_active_at"]
    time.sleep(1.2)                     # last_active_at has 1 s resolution
    r, _ = preview(d, sid, timeout=10)
    after = get_sbx(d, sid)["last_active_at"]
    t.check(r is not None and r.status == 200 and after > before,
            "last_active_at moves with traffic: %s -> %s" % (before, after))
    # A forgotten tab: an idle keep-alive connection keeps nothing awake.
    tab = http.client.HTTPConnection("127.0.0.1", d.port, timeout=20)
    try:
        tab.request("GET", "/index.html", headers={"Host": phost(d, sid), "Accept": "*/*"})
        r = tab.getresponse()
        r.read()
        t0 = time.time()
        t.check(r.status == 200, "the tab loaded")
        time.sleep(1.5)
        t.check(state(d, sid) == "running", "still running 1.5 s after the last request (idle_timeout 3 s)")
        ok = wait_state(d, sid, "stopped", 12)
        t.check(ok, "idle_timeout = 3s stops the sandbox by itself: %r" % state(d, sid))
        if ok:
            print("  stopped %.1f s after the last request" % (time.time() - t0))
            t.check(dstate(d, sid) != "running", "and its container")
    finally:
        tab.close()
    ctx["idle"] = sid


def test_websocket_keeps_awake(t, d, ctx):
    sid = new_app(t, d, "nc")
    if sid is None:
        return
    s, head, rest = ws_open(d, sid)
    try:
        if not t.check(head.startswith(b"HTTP/1.1 101"), "the WebSocket is up: %r" % head[:80]):
            return
        time.sleep(6)                   # twice idle_timeout, not a byte sent
        t.check(state(d, sid) == "running", "an open WebSocket keeps it awake past idle_timeout: %r"
                % state(d, sid))
        s.sendall(b"still-there\n")
        buf = recv_until(s, rest or b"", b"still-there\n", 5)
        t.check(b"still-there\n" in buf, "and the tunnel still works")
    finally:
        s.close()
    t0 = time.time()
    ok = wait_state(d, sid, "stopped", 12)
    t.check(ok, "once it closes, the sandbox stops: %r" % state(d, sid))
    if ok:
        t.check(time.time() - t0 >= 2, "after idle_timeout, not at once (%.1f s)" % (time.time() - t0))


def test_stream_keeps_awake(t, d, ctx):
    sid = new_app(t, d, "nc")
    if sid is None:
        return
    s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
    try:
        s.sendall(("GET /stream HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n" % phost(d, sid)).encode())
        t0 = time.time()
        head, buf = recv_head(s, 10)
        if not t.check(head.startswith(b"HTTP/1.1 200"), "the stream starts: %r" % head[:80]):
            return
        buf = recv_until(s, buf, b"data: 1\n", 5)
        t.check(b"data: 1\n" in buf and time.time() - t0 < 4, "events arrive as they are sent, not buffered")
        checked = False
        while b"\r\n0\r\n\r\n" not in buf and time.time() - t0 < STREAM_LINES + 6:
            buf = recv_until(s, buf, b"\r\n0\r\n\r\n", 0.5)
            if not checked and time.time() - t0 > 5.5:
                checked = True
                t.check(state(d, sid) == "running", "an open SSE stream keeps it awake past idle_timeout")
        t.check(checked and b"data: %d\n" % (STREAM_LINES - 1) in buf, "the whole stream came through")
    finally:
        s.close()
    t0 = time.time()
    ok = wait_state(d, sid, "stopped", 12)
    t.check(ok, "after the stream ends, the sandbox stops: %r" % state(d, sid))


# --- the pause tier ---------------------------------------------------------

def test_idle_pause(t, d, ctx):
    sid = new_app(t, d)
    if sid is None:
        return
    ctx["paused"] = sid
    t0 = time.time()
    ok = wait_state(d, sid, "paused", 8)
    t.check(ok, "pause_timeout = 2s pauses an idle sandbox: %r" % state(d, sid))
    if not ok:
        return
    print("  paused %.1f s after its last request" % (time.time() - t0))
    t.check(dpaused(d, sid), "docker says the container is paused")
    r = d.request("GET", "/v1/sandboxes?state=paused")
    t.check(r.status == 200 and sid in [x["id"] for x in r.json()["sandboxes"]], "state=paused lists it: %r" % r)
    r = d.request("GET", "/v1/sandboxes?state=running")
    t.check(r.status == 200 and sid not in [x["id"] for x in r.json()["sandboxes"]], "state=running does not")
    r, dt = preview(d, sid, timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX, "a request unfreezes it and is answered: %r" % r)
    print("  unpause -> %r in %.0f ms" % (r and r.status, dt * 1000))
    t.check(state(d, sid) == "running" and not dpaused(d, sid), "running again, not paused in Docker")


def test_restart_paused_stopped(t, d, ctx):
    a = ctx.get("paused") or new_app(t, d)
    b = new_app(t, d)
    if a is None or b is None:
        return
    api_stop(t, d, b)
    if not t.check(wait_state(d, a, "paused", 8), "one paused before the restart: %r" % state(d, a)):
        return
    rc = d.stop()
    t.check(rc == 0, "SIGTERM exits 0: %r" % rc)
    t.check(dpaused(d, a), "the paused container stays paused while the daemon is down")
    d.start()
    sa = state(d, a)
    t.check(sa in ("paused", "running"), "after restart the paused one is paused or running: %r" % sa)
    if sa == "paused":
        t.check(dpaused(d, a), "and Docker agrees it is paused")
    elif sa == "running":
        t.check(not dpaused(d, a), "and Docker agrees it runs")
    t.check(state(d, b) == "stopped" and dstate(d, b) != "running", "the stopped one stays stopped")
    r, _ = preview(d, a, timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX, "the paused one answers: %r" % r)
    r, _ = preview(d, b, timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX, "the stopped one wakes: %r" % r)


# --- density ----------------------------------------------------------------

def touch(t, d, *ids):
    """Preview requests in this order, spaced, so the last is the freshest."""
    for sid in ids:
        r, _ = preview(d, sid, timeout=20)
        t.check(r is not None and r.status == 200, "touch %s: %r" % (sid[-6:], r))
        time.sleep(0.6)


def test_lru(t, d, ctx):
    s1, s2 = new_app(t, d), new_app(t, d)
    if s1 is None or s2 is None:
        return
    api_stop(t, d, s2)
    s3 = new_app(t, d)
    if s3 is None:
        return
    ids = [s1, s2, s3]
    # Running: s1, s3. s3 is idle the longest; waking s2 evicts it.
    touch(t, d, s3, s1)
    r, _ = preview(d, s2, timeout=20)
    t.check(r is not None and r.status == 200 and r.body == INDEX, "a wake at max_running = 2 is answered: %r" % r)
    # The eviction's stop runs beside the wake's start: it may still be
    # under way (docker kill is slower on a loaded machine).
    t.check(wait_state(d, s3, "stopped", 15), "the preview wake stopped the one idle the longest: %r"
            % [state(d, x) for x in ids])
    t.check(state(d, s1) == "running" and state(d, s2) == "running", "the other two run")
    # Running: s1, s2. s2 idle the longest; the API start of s3 evicts it.
    touch(t, d, s2, s1)
    r = d.request("POST", "/v1/sandboxes/%s/start" % s3, timeout=30)
    t.check(r.status == 200 and r.json()["state"] == "running", "API start at max_running = 2: %r" % r)
    t.check(wait_state(d, s2, "stopped", 15) and state(d, s1) == "running",
            "the API start stopped the one idle the longest: %r" % [state(d, x) for x in ids])
    t.check(len(running_ids(d, ids)) == 2 and len(d.containers(all=False)) == 2, "never more than 2 run")
    # A create is a start too.
    touch(t, d, s1, s3)
    s4 = create(t, d)
    if s4:
        ids.append(s4)
        t.check(wait_state(d, s1, "stopped", 15) and state(d, s3) == "running",
                "a create at max_running stops the one idle the longest: %r" % [state(d, x) for x in ids])
        t.check(len(d.containers(all=False)) == 2, "still 2 running")


def test_refusal_when_busy(t, d, ctx):
    s2 = new_app(t, d)
    if s2 is None:
        return
    api_stop(t, d, s2)
    s1 = new_app(t, d, "nc")
    if s1 is None:
        return
    ws, head, rest = ws_open(d, s1)
    try:
        if not t.check(head.startswith(b"HTTP/1.1 101"), "s1 kept busy by a WebSocket: %r" % head[:80]):
            return
        time.sleep(0.5)
        r = d.request("POST", "/v1/sandboxes/%s/start" % s2, timeout=30)
        t.check(r.status == 429 and r.error_code() == "quota_exceeded",
                "API start with nothing idle at max_running = 1: 429 quota_exceeded %r" % r)
        if r.status == 429:
            msg = r.json()["error"]["message"].lower()
            t.check("max_running" in msg or "running" in msg, "the message says why: %r" % msg)
        r, dt = preview(d, s2, accept=BROWSER_ACCEPT, timeout=20)
        t.check(r is not None and r.status == 503, "a preview wake with nothing idle: 503 page %r" % r)
        if r is not None and r.status == 503:
            low = r.body.lower()
            t.check(any(w in low for w in (b"max_running", b"running at once", b"too many", b"capacity", b"limit")),
                    "whose text says why: %r" % r.body[:300])
            t.check("x-sandboxd-waking" not in r.headers, "not the warming page")
            t.check(dt < 5, "refused at once, not after a wait (%.1f s)" % dt)
        t.check(state(d, s1) == "running" and state(d, s2) == "stopped", "nothing was evicted")
        ws.sendall(b"ping\n")
        t.check(b"ping\n" in recv_until(ws, rest or b"", b"ping\n", 5), "the busy tunnel still works")
    finally:
        ws.close()
    time.sleep(0.5)
    r = d.request("POST", "/v1/sandboxes/%s/start" % s2, timeout=30)
    t.check(r.status == 200 and state(d, s1) == "stopped",
            "once its tunnel closes, s1 is idle and is evicted for s2: %r" % r)
    ctx["refuse"] = (s1, s2)


def free_memory_value():
    """A min_free_memory no host can meet, in a form check-config accepts."""
    for v in ("100%", "1000g"):
        d = Daemon(extra="min_free_memory = %s" % v)
        try:
            r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
            if r.returncode == 0:
                return v, ""
            err = r.stderr.strip()
        finally:
            d.cleanup()
    return None, err


def test_min_free_memory(t, d, ctx):
    v, err = free_memory_value()
    if not t.check(v is not None, "min_free_memory = 100%% (or 1000g) is accepted: %s" % err):
        return
    pair = ctx.get("refuse")
    if pair is None:
        t.skip("no sandboxes from test_refusal_when_busy")
        return
    s1, s2 = pair
    api_stop(t, d, s2)
    d.stop()
    d.extra = "max_running = 10\nmin_free_memory = %s" % v
    d.write_config()
    d.start()
    r = d.request("POST", "/v1/sandboxes/%s/start" % s1, timeout=30)
    t.check(r.status == 429 and r.error_code() == "quota_exceeded", "start below min_free_memory: 429 %r" % r)
    if r.status == 429:
        t.check("memory" in r.json()["error"]["message"].lower(), "the message says memory: %r" % r)
    r, _ = preview(d, s2, accept=BROWSER_ACCEPT, timeout=20)
    t.check(r is not None and r.status == 503 and b"memory" in r.body.lower(),
            "a preview wake below min_free_memory: a 503 page about memory %r" % r)
    r = d.request("POST", "/v1/sandboxes", {}, timeout=30)
    t.check(r.status == 429 and r.error_code() == "quota_exceeded", "a create below min_free_memory: 429 %r" % r)
    t.check(d.containers(all=False) == [], "nothing was started")


# --- main -------------------------------------------------------------------

def with_daemon(t, extra, what, tests):
    d = daemon(extra)
    ctx = {}
    before = t.failed
    t.current = "daemon[%s]" % what
    try:
        if not start_daemon(t, d, what):
            print("FAIL %s: the daemon did not start, skipped %s" % (what, ", ".join(f.__name__ for f in tests)))
            return
        for fn in tests:
            if d.proc is not None and d.proc.poll() is not None:
                t.current = fn.__name__
                t.check(False, "the daemon [%s] exited (%d) before this test; not run" % (what, d.proc.returncode))
                continue
            t.run(fn, d, ctx)
        if d.proc is not None and d.proc.poll() is not None:
            t.check(False, "the daemon [%s] exited with %d (a negative number is a signal)"
                    % (what, d.proc.returncode))
    except Exception as e:
        t.check(False, "%s: %r" % (what, e))
    finally:
        if t.failed != before:
            print("---- daemon log [%s] (tail) ----\n%s" % (what, d.logs()[-3000:]))
        d.cleanup()


def main():
    if not ensure_docker():
        print("docker is not available: skipping the density tests")
        return 77
    ensure_test_image()
    t = Runner()
    t0 = time.time()
    with_daemon(t, "wake_timeout = 20s", "wake", [
        test_wake_held, test_concurrent_start_once, test_warming_page, test_api_start_during_wake, test_held_websocket,
        test_client_disconnects_while_held, test_keepalive_after_delete, test_docker_kill,
        test_wake_removed_container, test_api_idle_timeout_field, test_api_pause_timeout_field,
        test_conflict_states])
    t.run(test_wake_timeout)
    with_daemon(t, "idle_timeout = 3s\nwake_timeout = 20s", "idle_timeout = 3s", [
        test_idle_stop, test_websocket_keeps_awake, test_stream_keeps_awake])
    with_daemon(t, "pause_timeout = 2s\nidle_timeout = 30s\nwake_timeout = 20s", "pause_timeout = 2s", [
        test_idle_pause, test_restart_paused_stopped])
    with_daemon(t, "max_running = 2\nwake_timeout = 20s", "max_running = 2", [test_lru])
    with_daemon(t, "max_running = 1\nwake_timeout = 20s", "max_running = 1", [
        test_refusal_when_busy, test_min_free_memory])
    print("density tests took %.0f s" % (time.time() - t0))
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
