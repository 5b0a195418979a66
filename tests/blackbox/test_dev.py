#!/usr/bin/env python3
"""Black-box scenarios for the dev server's routes (issue 8 item 7,
docs/api.md): a real daemon, real dockerd, real busybox containers running
the real agentd. agentd is given --dev-port (the template's port); the
sandbox object's dev_server; GET .../logs (the ring, as text), ?follow=1
(SSE `log` events, a client leaving, the stream ending when the sandbox
stops); POST .../restart-dev; 409s on a stopped sandbox.

Prints "N passed, N failed"; exits 77 without Docker.
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, TEST_IMAGE, ensure_docker, ensure_test_image, wait_for  # noqa: E402

# A dev server that says something: a first line, a tick twice a second,
# and busybox httpd on the template's port (so agentd's probe sees ready).
DEV = ("echo dev-started; (i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.5; done) & "
       "exec httpd -f -p 3000 -h /workspace")
TEMPLATES = {
    "default": {"image": TEST_IMAGE, "port": "3000", "dev_command": DEV,
                "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
}


class SSE:
    """A minimal event-stream client on a raw socket (chunked), bounded reads."""

    def __init__(self, d, path, timeout=30, body=None):
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
        method = "GET" if body is None else "POST"
        data = b"" if body is None else json.dumps(body).encode()
        h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n" \
            "Accept: text/event-stream\r\n" % (method, path, d.port, d.key())
        if body is not None:
            h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
        self.sock.sendall(h.encode() + b"\r\n" + data)
        self.t0 = time.time()
        self.raw = b""
        self.body = b""
        self.ended = False
        self.closed = False
        self.events = []
        self.comments = 0
        while b"\r\n\r\n" not in self.raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise IOError("closed before the head")
            self.raw += chunk
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        self._decode()
        self._parse()

    def _decode(self):
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                self.ended = True
                self.raw = b""
                break
            if len(rest) < size + 2:
                break
            self.body += rest[:size]
            self.raw = rest[size + 2:]

    def _parse(self):
        while b"\n\n" in self.body:
            block, self.body = self.body.split(b"\n\n", 1)
            ev = {}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                k, _, v = line.partition(": ")
                ev[k] = v
            if ev:
                ev["data"] = json.loads(ev["data"])
                ev["at"] = time.time() - self.t0
                self.events.append(ev)

    def read_until(self, fn, timeout):
        deadline = time.time() + timeout
        while not fn(self) and not self.ended and not self.closed and time.time() < deadline:
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.time())))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                self.closed = True
                break
            self.raw += chunk
            self._decode()
            self._parse()
        return fn(self)

    def texts(self):
        return [e["data"]["text"] for e in self.events if e.get("event") == "log"]

    def close(self):
        self.sock.close()


def create(t, d):
    r = d.request("POST", "/v1/sandboxes", {})
    t.check(r.status == 201, "create answers 201: %r" % r)
    return r.json()["id"] if r.status == 201 else None


def get(d, sid):
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    return r.json() if r.status == 200 else {}


def dev_server(d, sid):
    return get(d, sid).get("dev_server")


def logs(d, sid):
    return d.request("GET", "/v1/sandboxes/%s/logs" % sid)


# --- tests ----------------------------------------------------------------

def test_dev_port_passed(t, d, ctx):
    ids = d.containers()
    t.check(len(ids) == 1, "one container: %r" % ids)
    out = subprocess.run(["docker", "inspect", "-f", "{{json .Args}}", ids[0]],
                         capture_output=True, text=True).stdout
    args = json.loads(out or "[]")
    t.check("--dev-port" in args and args[args.index("--dev-port") + 1] == "3000",
            "agentd gets --dev-port 3000: %r" % args)


def test_dev_server_field(t, d, ctx):
    sid = ctx["sid"]
    ds = wait_for(lambda: (dev_server(d, sid) or {}).get("state") == "ready" and dev_server(d, sid),
                  timeout=20, interval=0.2)
    t.check(ds == {"state": "ready", "restarts": 0}, "dev_server is ready, 0 restarts: %r" % ds)
    r = d.request("GET", "/v1/sandboxes")
    rows = r.json().get("sandboxes", r.json()) if r.status == 200 else []
    row = [s for s in rows if isinstance(s, dict) and s.get("id") == sid]
    t.check(row and row[0].get("dev_server", {}).get("state") == "ready",
            "the list shows dev_server too: %r" % row)


def test_logs_ring(t, d, ctx):
    sid = ctx["sid"]
    r = wait_for(lambda: (lambda r: r.status == 200 and b"tick 2" in r.body and r)(logs(d, sid)),
                 timeout=20, interval=0.3)
    t.check(bool(r), "GET logs holds the dev server's output: %r" % (r or logs(d, sid)))
    if r:
        t.check(r.headers.get("content-type", "").startswith("text/plain"), "text/plain: %r" % r.headers)
        t.check(r.body.startswith(b"dev-started\n"), "the ring starts with the first line: %r" % r.body[:80])
    r = d.request("GET", "/v1/sandboxes/%s/logs?follow=2" % sid)
    t.check(r.status == 400, "follow=2 is a 400: %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/logs" % sid, key="globex")
    t.check(r.status == 404, "another tenant's sandbox: 404 %r" % r)


def test_logs_follow(t, d, ctx):
    sid = ctx["sid"]
    s = SSE(d, "/v1/sandboxes/%s/logs?follow=1" % sid)
    try:
        t.check(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream"),
                "follow is an event stream: %d %r" % (s.status, s.headers))
        ok = s.read_until(lambda s: len([x for x in s.texts() if x.startswith("tick ")]) >= 3, 15)
        t.check(ok, "three tick lines arrive as log events: %r" % s.events[:5])
        t.check(all("\n" not in x for x in s.texts()), "one line per event, no newline: %r" % s.texts()[:3])
        t.check(not any(x == "dev-started" for x in s.texts()), "follow gives new lines only")
    finally:
        s.close()
    # Clients that leave: their agentd streams go; the daemon stays usable.
    for _ in range(10):
        s = SSE(d, "/v1/sandboxes/%s/logs?follow=1" % sid)
        s.read_until(lambda s: len(s.events) >= 1, 5)
        s.close()
    time.sleep(0.5)
    r = logs(d, sid)
    t.check(r.status == 200, "after 10 clients left, GET logs still answers: %r" % r)
    t.check("dev.c" not in d.logs() or "ERROR" not in d.logs(), "no errors in the log")


def test_restart_dev(t, d, ctx):
    sid = ctx["sid"]
    r = d.request("POST", "/v1/sandboxes/%s/restart-dev" % sid, {"x": 1})
    t.check(r.status == 400, "restart-dev with a field: 400 %r" % r)
    s = SSE(d, "/v1/sandboxes/%s/logs?follow=1" % sid)
    try:
        r = d.request("POST", "/v1/sandboxes/%s/restart-dev" % sid)
        # agentd counts the restart when the new run starts.
        t.check(r.status == 200 and r.json().get("dev_server", {}).get("state") == "restarting",
                "restart-dev answers 200 with state restarting: %r" % r)
        ok = s.read_until(lambda s: "dev-started" in s.texts(), 15)
        t.check(ok, "the restarted dev server's first line is followed: %r" % s.texts()[-5:])
    finally:
        s.close()
    ds = wait_for(lambda: (dev_server(d, sid) or {}).get("state") == "ready" and dev_server(d, sid),
                  timeout=20, interval=0.3)
    t.check(ds == {"state": "ready", "restarts": 1}, "ready again, restarts 1: %r" % ds)
    r = logs(d, sid)
    t.check(r.body.count(b"dev-started\n") == 2, "the ring holds both runs: %r" % r.body[:200])


def exec_path(sid):
    return "/v1/sandboxes/%s/exec" % sid


def test_exec_stream(t, d, ctx):
    sid = ctx["sid"]
    s = SSE(d, exec_path(sid), body={"cmd": ["sh", "-c", "echo one; echo two >&2; sleep 2; echo three; exit 3"]})
    try:
        t.check(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream"),
                "streaming exec is an event stream: %d %r" % (s.status, s.headers))
        s.read_until(lambda s: s.ended, 30)
        t.check(s.ended, "the stream ends after exit")
        outs = [(e["data"]["stream"], e["data"]["text"]) for e in s.events if e["event"] == "output"]
        t.check(sorted(outs) == sorted([("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "three\n")]),
                "output events: %r" % outs)
        first = [e for e in s.events if e["event"] == "output"][:1]
        t.check(first and first[0]["at"] < 1.8, "the first line came before the command ended: %r" % first)
        ex = [e["data"] for e in s.events if e["event"] == "exit"]
        t.check(ex and ex[0].get("exit_code") == 3 and ex[0].get("timed_out") is False,
                "exit event with exit_code 3: %r" % ex)
        t.check(s.events[-1]["event"] == "exit", "exit is the last event: %r" % s.events[-1:])
    finally:
        s.close()
    # The JSON form is unchanged.
    r = d.request("POST", exec_path(sid), {"cmd": ["sh", "-c", "echo json"]})
    t.check(r.status == 200 and r.json().get("stdout") == "json\n" and r.json().get("exit_code") == 0,
            "the JSON exec is unchanged: %r" % r)
    # A bad request is a JSON error, streamed or not.
    r = d.request("POST", exec_path(sid), {"cmd": ["true"], "cwd": "/nonexistent"},
                  headers={"Accept": "text/event-stream"})
    t.check(400 <= r.status < 500 and r.headers.get("content-type", "").startswith("application/json"),
            "a bad cwd is a JSON 4xx: %r" % r)
    r = d.request("POST", exec_path(sid), {"cmd": "nope"}, headers={"Accept": "text/event-stream"})
    t.check(r.status == 400, "a bad cmd is a 400: %r" % r)
    # A timeout ends with timed_out.
    s = SSE(d, exec_path(sid), body={"cmd": ["sleep", "30"], "timeout_s": 1})
    try:
        s.read_until(lambda s: any(e["event"] == "exit" for e in s.events), 30)
        ex = [e["data"] for e in s.events if e["event"] == "exit"]
        t.check(ex and ex[0].get("timed_out") is True, "timeout_s: exit with timed_out: %r" % ex)
    finally:
        s.close()


def test_exec_stream_client_leaves(t, d, ctx):
    sid = ctx["sid"]
    s = SSE(d, exec_path(sid), body={"cmd": ["sh", "-c", "echo started; exec sleep 313"]})
    ok = s.read_until(lambda s: any(e["event"] == "output" for e in s.events), 15)
    t.check(ok, "the command started: %r" % s.events)
    r = d.request("POST", exec_path(sid), {"cmd": ["ps"]})
    t.check(r.status == 200 and "sleep 313" in r.json().get("stdout", ""),
            "ps shows the command while the stream is open: %r" % r)
    s.close()

    def gone():
        r = d.request("POST", exec_path(sid), {"cmd": ["ps"]})
        return r.status == 200 and "sleep 313" not in r.json().get("stdout", "x")
    t.check(wait_for(gone, timeout=15, interval=0.3), "the client leaving killed the command")


def test_follow_ends_on_stop(t, d, ctx):
    sid = ctx["sid"]
    s = SSE(d, "/v1/sandboxes/%s/logs?follow=1" % sid)
    try:
        s.read_until(lambda s: len(s.events) >= 1, 10)
        r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
        t.check(r.status == 200, "stop answers 200: %r" % r)
        s.read_until(lambda s: False, 20)
        t.check(s.ended or s.closed, "the follow stream ends when the sandbox stops")
    finally:
        s.close()


def test_stopped(t, d, ctx):
    sid = ctx["sid"]
    wait_for(lambda: get(d, sid).get("state") == "stopped", timeout=30, interval=0.3)
    sb = get(d, sid)
    t.check(sb.get("state") == "stopped" and "dev_server" not in sb,
            "a stopped sandbox has no dev_server: %r" % sb)
    r = logs(d, sid)
    t.check(r.status == 409 and "stopped" in r.error_code() + r.body.decode(),
            "logs of a stopped sandbox: 409 %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/logs?follow=1" % sid)
    t.check(r.status == 409, "follow of a stopped sandbox: 409 %r" % r)
    r = d.request("POST", "/v1/sandboxes/%s/restart-dev" % sid)
    t.check(r.status == 409, "restart-dev of a stopped sandbox: 409 %r" % r)
    t.check(get(d, sid).get("state") == "stopped", "neither woke it")
    # A streamed exec wakes it, as the JSON form does.
    s = SSE(d, exec_path(sid), timeout=60, body={"cmd": ["echo", "awake"]})
    try:
        s.read_until(lambda s: s.ended, 60)
        outs = [e["data"]["text"] for e in s.events if e["event"] == "output"]
        t.check(s.status == 200 and outs == ["awake\n"], "a streamed exec wakes the sandbox: %r" % s.events)
    finally:
        s.close()
    t.check(get(d, sid).get("state") == "running", "it runs")
    # A new run has a new dev server: the old run's restarts are gone.
    ds = wait_for(lambda: (dev_server(d, sid) or {}).get("state") == "ready" and dev_server(d, sid),
                  timeout=20, interval=0.3)
    t.check(ds == {"state": "ready", "restarts": 0}, "after a wake: ready, restarts 0: %r" % ds)


def test_no_dev_command(t, d, ctx):
    r = d.request("POST", "/v1/sandboxes", {"template": "bare"})
    t.check(r.status == 201, "create a sandbox without a dev command: %r" % r)
    if r.status != 201:
        return
    sid = r.json()["id"]
    ds = wait_for(lambda: dev_server(d, sid), timeout=20, interval=0.2)
    t.check(ds and ds["state"] == "none", "dev_server state none: %r" % ds)
    r = d.request("POST", "/v1/sandboxes/%s/restart-dev" % sid)
    t.check(r.status == 409, "restart-dev without a dev command: 409 %r" % r)
    r = logs(d, sid)
    t.check(r.status == 200 and r.body == b"", "logs without a dev command: 200 empty %r" % r)
    d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=60)


def main():
    if not ensure_docker():
        print("docker is not available: skipping the dev server tests")
        return 77
    ensure_test_image()
    t = Runner()
    ctx = {}
    templates = dict(TEMPLATES)
    templates["bare"] = {"image": TEST_IMAGE, "port": "3000", "memory": "64m", "cpus": "0.5",
                         "pids_limit": "64"}
    d = Daemon(extra="wake_timeout = 30s", templates=templates)
    try:
        d.start()
        ctx["sid"] = create(t, d)
        if ctx["sid"]:
            for fn in (test_dev_port_passed, test_dev_server_field, test_logs_ring, test_logs_follow,
                       test_restart_dev, test_exec_stream, test_exec_stream_client_leaves,
                       test_follow_ends_on_stop, test_stopped, test_no_dev_command):
                t.run(fn, d, ctx)
    finally:
        if t.failed:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
