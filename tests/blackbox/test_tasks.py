#!/usr/bin/env python3
"""Black-box scenarios for agent tasks (issue 8, docs/tasks.md): a real
daemon, real dockerd, real busybox containers running the real agentd
(bind-mounted, as everywhere in the black-box tests), command tasks run by
busybox sh. Output streamed before the task ends, Last-Event-ID replay,
two tasks queued in order, a task outliving its SSE client, cancel,
timeout, a task waking a stopped sandbox, a sandbox kept awake past its
idle timeout by a task, events replayed after a daemon restart, the
strict body checks, and env kept out of the store and the logs.

Prints "N passed, N failed"; exits 77 without Docker, or when the agentd
in use does not run tasks yet (probed once: its answer to POST /tasks).
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, TEST_IMAGE, ensure_docker, ensure_test_image, wait_for  # noqa: E402

TEMPLATES = {
    "default": {"image": TEST_IMAGE, "port": "3000", "dev_command": "httpd -f -p 3000 -h /workspace",
                "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
    # A dev server that never listens.
    "never": {"image": TEST_IMAGE, "port": "3000", "dev_command": "sleep 3600",
              "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
}
SECRET = "sk-test-" + "7" * 24
BASE_IMAGE = "sandboxd/base:latest"
BASE_TEMPLATES = {
    "default": {"image": BASE_IMAGE, "port": "3000", "memory": "512m", "cpus": "1", "pids_limit": "256"},
}
# Stand-ins for the agent CLIs (tests only), printing lines in the real
# CLIs' formats: Claude Code's stream-json (system, assistant, result),
# OpenCode's --format json (text, step_finish). Both echo their argv and
# write the prompt to $STANDIN_WRITE, as an agent editing a file would.
CLAUDE_STANDIN = r"""#!/bin/sh
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t' '  '; }
prompt= args="$*"
while [ $# -gt 0 ]; do
	case "$1" in
	--output-format|--model|--permission-mode) shift ;;
	-*) ;;
	*) prompt=$1 ;;
	esac
	shift
done
printf '{"type":"system","subtype":"init","session_id":"s1","model":"standin"}\n'
printf '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"prompt=%s argv=%s"}]},"session_id":"s1"}\n' "$(esc "$prompt")" "$(esc "$args")"
[ -n "$STANDIN_WRITE" ] && printf '%s\n' "$prompt" > "$STANDIN_WRITE"
echo "not json: a plain line"
echo "claude stand-in: on stderr" >&2
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"Done","session_id":"s1","total_cost_usd":0.0123}\n'
"""
OPENCODE_STANDIN = r"""#!/bin/sh
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t' '  '; }
args="$*"
printf '{"type":"text","sessionID":"s2","part":{"type":"text","text":"argv=%s"}}\n' "$(esc "$args")"
printf '{"type":"step_finish","sessionID":"s2","part":{"type":"step-finish","reason":"stop","cost":0.002}}\n'
"""


class SSE:
    """A minimal event-stream client on a raw socket: the head, chunked
    decoding, events parsed as they arrive. Every read is bounded."""

    def __init__(self, d, path, last_event_id=None, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
        h = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n" \
            "Accept: text/event-stream\r\n" % (path, d.port, d.key())
        if last_event_id is not None:
            h += "Last-Event-ID: %s\r\n" % last_event_id
        self.sock.sendall((h + "\r\n").encode())
        self.raw = b""
        self.body = b""
        self.ended = False
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
        """Move whole chunks from raw to body (events are parsed after)."""
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
                ev["id"] = int(ev["id"])
                ev["data"] = json.loads(ev["data"])
                self.events.append(ev)

    def read_until(self, fn, timeout):
        """Read until fn(self) holds, the stream ends, or timeout."""
        deadline = time.time() + timeout
        while not fn(self) and not self.ended and time.time() < deadline:
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.time())))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            self.raw += chunk
            self._decode()
            self._parse()
        return fn(self)

    def read_all(self, timeout):
        self.read_until(lambda s: s.ended, timeout)
        return self.events

    def close(self):
        self.sock.close()


def create(t, d):
    r = d.request("POST", "/v1/sandboxes", {})
    t.check(r.status == 201, "create answers 201: %r" % r)
    return r.json()["id"] if r.status == 201 else None


def post_task(d, sid, body):
    return d.request("POST", "/v1/sandboxes/%s/tasks" % sid, body, timeout=60)


def command(t, d, sid, script, **extra):
    body = dict({"agent": "command", "cmd": ["sh", "-c", script]}, **extra)
    r = post_task(d, sid, body)
    t.check(r.status == 202, "POST tasks answers 202: %r" % r)
    return r.json() if r.status == 202 else None


def get_task(d, sid, tid):
    r = d.request("GET", "/v1/sandboxes/%s/tasks/%s" % (sid, tid))
    return r.json() if r.status == 200 else None


def wait_task(d, sid, tid, states, timeout):
    return wait_for(lambda: (get_task(d, sid, tid) or {}).get("state") in states and get_task(d, sid, tid),
                    timeout=timeout, interval=0.1)


def sandbox_state(d, sid):
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    return r.json()["state"] if r.status == 200 else None


def texts(events):
    return "".join(e["data"].get("text", "") for e in events if e["event"] == "output")


def events_path(sid, tid, after=None):
    return "/v1/sandboxes/%s/tasks/%s/events%s" % (sid, tid, "" if after is None else "?after=%d" % after)


# --- the probe ---------------------------------------------------------------

def probe(d, sid):
    """None if agentd runs tasks, else why not."""
    r = post_task(d, sid, {"agent": "command", "cmd": ["true"]})
    if r.status != 202:
        return "POST tasks answered %r" % r
    tid = r.json()["id"]
    task = wait_task(d, sid, tid, ("succeeded", "failed", "cancelled"), 60)
    if not task:
        return "the probe task did not finish"
    if task["state"] != "succeeded":
        return "the probe task %s: %s" % (task["state"], task.get("error"))
    return None


# --- tests ----------------------------------------------------------------

def test_streamed_before_end(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, "echo one; sleep 3; echo two >&2")
    if not task:
        return
    tid = task["id"]
    t.check(task["state"] in ("queued", "running") and task["agent"] == "command", "202 body is the task: %r" % task)
    s = SSE(d, events_path(sid, tid))
    t.check(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream"),
            "events: 200 text/event-stream %r" % s.headers)
    t.check(s.read_until(lambda s: "one" in texts(s.events), 20), "the first line arrives: %r" % s.events)
    st = get_task(d, sid, tid)
    t.check(st["state"] == "running", "... while the task still runs: %r" % st)
    evs = s.read_all(20)
    s.close()
    t.check(s.ended, "the stream ends after the exit event")
    t.check(evs and evs[-1]["event"] == "exit" and evs[-1]["data"]["exit_code"] == 0
            and evs[-1]["data"]["state"] == "succeeded", "last event is exit 0: %r" % evs[-1:])
    ids = [e["id"] for e in evs]
    t.check(ids == sorted(ids) and len(set(ids)) == len(ids), "ids increase: %r" % ids)
    t.check(any(e["event"] == "output" and e["data"].get("stream") == "stderr" and "two" in e["data"]["text"]
                for e in evs), "stderr is an output event with stream stderr: %r" % evs)
    st = wait_task(d, sid, tid, ("succeeded",), 10)
    t.check(st and st["exit_code"] == 0 and st["started_at"] and st["finished_at"], "stored succeeded: %r" % st)
    ctx["done"] = (tid, evs)


def test_last_event_id(t, d, ctx):
    sid = ctx["sid"]
    if "done" not in ctx:
        t.check(False, "needs test_streamed_before_end")
        return
    tid, evs = ctx["done"]
    first = evs[0]["id"]
    s = SSE(d, events_path(sid, tid), last_event_id=first)
    got = s.read_all(10)
    s.close()
    t.check([e["id"] for e in got] == [e["id"] for e in evs[1:]], "Last-Event-ID replays the rest: %r" % got)
    s = SSE(d, events_path(sid, tid, after=evs[-2]["id"]))
    got = s.read_all(10)
    s.close()
    t.check([e["event"] for e in got] == ["exit"], "?after= the one before exit gives just exit: %r" % got)
    r = d.request("GET", events_path(sid, tid), headers={"Last-Event-ID": str(evs[-1]["id"])})
    t.check(r.status == 204, "Last-Event-ID of the exit event: 204, EventSource stops: %r" % r)
    r = d.request("GET", events_path(sid, tid) + "?after=x1")
    t.check(r.status == 400, "a bad after is 400: %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/tasks/%s/events" % (sid, "0" * 26))
    t.check(r.status == 404, "unknown task: 404 %r" % r)


def test_queued_in_order(t, d, ctx):
    sid = ctx["sid"]
    a = command(t, d, sid, "sleep 2; echo A")
    b = command(t, d, sid, "echo B")
    if not a or not b:
        return
    t.check(b["state"] == "queued", "the second task is queued: %r" % b)
    wait_task(d, sid, a["id"], ("running",), 20)
    t.check(get_task(d, sid, b["id"])["state"] == "queued", "still queued while the first runs")
    ta = wait_task(d, sid, a["id"], ("succeeded",), 30)
    tb = wait_task(d, sid, b["id"], ("succeeded",), 30)
    t.check(ta and tb, "both succeed: %r %r" % (ta, tb))
    if ta and tb:
        t.check(tb["started_at"] >= ta["finished_at"], "B started after A finished: %r %r" % (ta, tb))
    r = d.request("GET", "/v1/sandboxes/%s/tasks" % sid)
    ids = [x["id"] for x in r.json()["tasks"]]
    t.check(r.status == 200 and ids.index(a["id"]) < ids.index(b["id"]), "listed oldest first: %r" % ids)


def test_outlives_client(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, "echo start; sleep 2; echo finished")
    if not task:
        return
    s = SSE(d, events_path(sid, task["id"]))
    s.read_until(lambda s: "start" in texts(s.events), 20)
    s.close()           # the client leaves mid-task
    st = wait_task(d, sid, task["id"], ("succeeded", "failed", "cancelled"), 30)
    t.check(st and st["state"] == "succeeded", "the task went on and succeeded: %r" % st)
    s = SSE(d, events_path(sid, task["id"]))
    evs = s.read_all(10)
    s.close()
    t.check("finished" in texts(evs), "its later output is in the log: %r" % evs)


def test_cancel(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, "echo ready; sleep 60")
    if not task:
        return
    wait_task(d, sid, task["id"], ("running",), 20)
    r = d.request("POST", "/v1/sandboxes/%s/tasks/%s/cancel" % (sid, task["id"]))
    t.check(r.status == 200 and r.json()["id"] == task["id"], "cancel: 200 the task %r" % r)
    st = wait_task(d, sid, task["id"], ("cancelled", "failed", "succeeded"), 15)
    t.check(st and st["state"] == "cancelled", "cancelled: %r" % st)
    r = d.request("POST", "/v1/sandboxes/%s/tasks/%s/cancel" % (sid, task["id"]))
    t.check(r.status == 409, "cancel of a finished task: 409 %r" % r)
    # A queued task is cancelled directly.
    a = command(t, d, sid, "sleep 3")
    b = command(t, d, sid, "echo never")
    if a and b:
        r = d.request("POST", "/v1/sandboxes/%s/tasks/%s/cancel" % (sid, b["id"]))
        t.check(r.status == 200 and r.json()["state"] == "cancelled", "queued: cancelled at once %r" % r)
        s = SSE(d, events_path(sid, b["id"]))
        evs = s.read_all(10)
        s.close()
        t.check([e["event"] for e in evs] == ["exit"] and evs[0]["data"]["state"] == "cancelled",
                "its stream is one exit event: %r" % evs)
        wait_task(d, sid, a["id"], ("succeeded",), 20)


def test_timeout(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, "sleep 60", timeout_s=1)
    if not task:
        return
    t.check(task.get("timeout_s") == 1, "timeout_s is on the task: %r" % task)
    st = wait_task(d, sid, task["id"], ("failed", "succeeded", "cancelled"), 20)
    t.check(st and st["state"] == "failed" and st["timed_out"] is True, "failed, timed_out: %r" % st)


def rss_kb(d):
    try:
        with open("/proc/%d/status" % d.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def asan(d):
    try:
        with open("/proc/%d/maps" % d.proc.pid) as f:
            return "asan" in f.read()
    except OSError:
        return False


def test_many_lines(t, d, ctx):
    """20,000 lines: all arrive, in order, to a client that starts late
    (it reads from the host log at its own pace) and to one that follows
    live; the daemon's memory stays flat."""
    sid = ctx["sid"]
    n = 20000
    before = rss_kb(d)
    task = command(t, d, sid, "seq 1 %d" % n)
    if not task:
        return
    live = SSE(d, events_path(sid, task["id"]))
    time.sleep(1)           # the late one's socket fills, then it waits
    late = SSE(d, events_path(sid, task["id"]))
    evs_live = live.read_all(60)
    evs_late = late.read_all(60)
    live.close()
    late.close()
    for name, evs in (("live", evs_live), ("late", evs_late)):
        lines = [e["data"]["text"] for e in evs if e["event"] == "output"]
        t.check(lines == ["%d\n" % i for i in range(1, n + 1)], "%s: all %d lines in order (got %d)"
                % (name, n, len(lines)))
        t.check(evs and evs[-1]["event"] == "exit", "%s: ends with exit" % name)
    after = rss_kb(d)
    print("  daemon RSS %s kB before, %s kB after" % (before, after), flush=True)
    if asan(d):
        # ASan's quarantine holds freed memory back: RSS says nothing.
        return
    if before is not None and after is not None:
        t.check(after - before < 32 * 1024, "daemon RSS flat: %d kB -> %d kB" % (before, after))


def test_long_log_replay(t, d, ctx):
    """A reconnect that saw all but the exit event of a task whose host log
    is over the 1 MiB a follower reads per loop turn: the log is skipped in
    slices (the loop answers others meanwhile) and the stream gives just
    the exit event; a plain replay gives every line."""
    sid = ctx["sid"]
    n = 300000              # about 2 MB of output, more in the log
    task = command(t, d, sid, "seq 1 %d" % n)
    if not task:
        return
    s = SSE(d, events_path(sid, task["id"]))
    evs = s.read_all(90)
    s.close()
    text = "".join(e["data"].get("text", "") for e in evs if e["event"] == "output")
    t.check(text == "".join("%d\n" % i for i in range(1, n + 1)), "all %d lines (got %d bytes)" % (n, len(text)))
    if not t.check(len(evs) > 1 and evs[-1]["event"] == "exit", "ends with exit"):
        return
    s = SSE(d, events_path(sid, task["id"]), last_event_id=evs[-2]["id"])
    got = s.read_all(30)
    s.close()
    t.check([e["event"] for e in got] == ["exit"] and s.ended,
            "Last-Event-ID before exit over a long log: just exit, then the end: %r" % got[:3])
    r = d.request("GET", events_path(sid, task["id"]), headers={"Last-Event-ID": str(evs[-1]["id"])})
    t.check(r.status == 204, "Last-Event-ID of the exit over a long log: 204: %r" % r)


def test_validation(t, d, ctx):
    sid = ctx["sid"]
    bad = [
        ({"agent": "command", "cmd": ["true"], "extra": 1}, "unknown field"),
        ({"agent": "bash", "cmd": ["true"]}, "agent must be"),
        ({"agent": "command"}, "cmd"),
        ({"agent": "command", "cmd": []}, "cmd"),
        ({"agent": "command", "cmd": ["true", 3]}, "cmd[1]"),
        ({"agent": "command", "cmd": ["true"], "prompt": "x"}, "prompt"),
        ({"agent": "claude-code"}, "prompt"),
        ({"agent": "opencode", "prompt": "x", "cmd": ["true"]}, "cmd"),
        ({"agent": "opencode", "prompt": "x", "model": "--evil"}, "model"),
        ({"agent": "command", "cmd": ["true"], "timeout_s": 0}, "timeout_s"),
        ({"agent": "command", "cmd": ["true"], "timeout_s": 86401}, "timeout_s"),
        ({"agent": "command", "cmd": ["tr\u0000ue"]}, "NUL"),
        ({"agent": "claude-code", "prompt": "a\u0000b"}, "NUL"),
        ({"agent": "command", "cmd": ["true"], "timeout_s": "5"}, "timeout_s"),
        ({"agent": "command", "cmd": ["true"], "env": {"1BAD": "x"}}, "env"),
        ({"agent": "command", "cmd": ["true"], "env": {"A": 1}}, "env"),
    ]
    for body, word in bad:
        r = post_task(d, sid, body)
        t.check(r.status == 400 and r.error_code() == "bad_request" and word in r.json()["error"]["message"],
                "%r: 400 naming %r, got %r" % (body, word, r))
    r = d.request("POST", "/v1/sandboxes/%s/tasks" % sid, "{not json")
    t.check(r.status == 400, "malformed JSON: 400 %r" % r)
    r = d.request("POST", "/v1/sandboxes/%s/tasks" % ("0" * 26), {"agent": "command", "cmd": ["true"]})
    t.check(r.status == 404, "unknown sandbox: 404 %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/tasks" % sid, key="globex")
    t.check(r.status == 404, "another tenant's sandbox: 404 %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/tasks/NOT-AN-ID" % sid)
    t.check(r.status == 400, "a malformed task id: 400 %r" % r)
    task = command(t, d, sid, "true")
    if task:
        for verb in ("cancel", "revert"):
            path = "/v1/sandboxes/%s/tasks/%s/%s" % (sid, task["id"], verb)
            r = d.request("POST", path, {"grace_ms": 1})
            t.check(r.status == 400 and "unknown field" in r.json()["error"]["message"],
                    "%s takes no fields: 400 %r" % (verb, r))
            r = d.request("POST", path, "{not json")
            t.check(r.status == 400, "%s with malformed JSON: 400 %r" % (verb, r))


def test_env_never_stored(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, 'echo "len=${#API_KEY}"', env={"API_KEY": SECRET})
    if not task:
        return
    st = wait_task(d, sid, task["id"], ("succeeded", "failed"), 30)
    s = SSE(d, events_path(sid, task["id"]))
    evs = s.read_all(10)
    s.close()
    t.check("len=%d" % len(SECRET) in texts(evs), "the task saw its env: %r" % evs)
    t.check("env" not in (st or {}) and SECRET not in json.dumps(st), "the task object holds no env: %r" % st)
    found = []
    for root, _, files in os.walk(d.data_dir):
        for f in files:
            p = os.path.join(root, f)
            try:
                with open(p, "rb") as fh:
                    if SECRET.encode() in fh.read():
                        found.append(p)
            except OSError:
                pass
    with open(d.log_path, "rb") as fh:
        if SECRET.encode() in fh.read():
            found.append(d.log_path)
    t.check(found == [], "the secret is in no file of the daemon (store, task logs, its log): %r" % found)


def test_stop_fails_task(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, "sleep 60")
    if not task:
        return
    wait_task(d, sid, task["id"], ("running",), 20)
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
    t.check(r.status == 200, "stop: 200 %r" % r)
    st = wait_task(d, sid, task["id"], ("failed", "succeeded", "cancelled"), 20)
    t.check(st and st["state"] == "failed" and st["error"] == "sandbox stopped", "failed, sandbox stopped: %r" % st)
    # Its events replay while the sandbox is stopped.
    s = SSE(d, events_path(sid, task["id"]))
    evs = s.read_all(10)
    s.close()
    t.check(evs and evs[-1]["event"] == "exit" and evs[-1]["data"].get("error") == "sandbox stopped",
            "replayed while stopped, ends with the reason: %r" % evs[-1:])
    t.check(sandbox_state(d, sid) == "stopped", "the sandbox stays stopped")


def test_wakes_stopped(t, d, ctx):
    sid = ctx["sid"]
    if sandbox_state(d, sid) != "stopped":
        d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
    t.check(sandbox_state(d, sid) == "stopped", "stopped first")
    task = command(t, d, sid, "echo woke")
    if not task:
        return
    st = wait_task(d, sid, task["id"], ("succeeded", "failed"), 60)
    t.check(st and st["state"] == "succeeded", "a task on a stopped sandbox runs: %r" % st)
    t.check(sandbox_state(d, sid) == "running", "the sandbox was woken")


def test_broken_dev_server(t, d, ctx):
    """A task needs agentd, not the app: on a stopped sandbox whose dev
    server never listens it runs at once, not after wake_timeout (30 s)."""
    r = d.request("POST", "/v1/sandboxes", {"template": "never"})
    t.check(r.status == 201, "create: %r" % r)
    if r.status != 201:
        return
    sid = r.json()["id"]
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
    t.check(r.status == 200, "stop: %r" % r)
    t0 = time.time()
    task = command(t, d, sid, "echo fixing")
    if not task:
        return
    st = wait_task(d, sid, task["id"], ("succeeded", "failed"), 40)
    t.check(st and st["state"] == "succeeded" and time.time() - t0 < 15,
            "ran within 15 s though the port never accepts: %r after %.1f s" % (st, time.time() - t0))
    d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=60)


def test_delete_removes_logs(t, d, ctx):
    sid = create(t, d)
    if not sid:
        return
    task = command(t, d, sid, "echo x")
    if task:
        wait_task(d, sid, task["id"], ("succeeded", "failed"), 30)
    logdir = os.path.join(d.data_dir, "tasks", sid)
    t.check(os.path.isfile(os.path.join(logdir, task["id"] + ".ndjson")), "the host log exists")
    r = d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=60)
    t.check(r.status == 204, "delete: 204 %r" % r)
    t.check(wait_for(lambda: not os.path.exists(logdir), timeout=10), "the task logs are removed")


def test_restart_replay(t, d, ctx):
    sid = ctx["sid"]
    task = command(t, d, sid, "echo before; sleep 5; echo after")
    if not task:
        return
    s = SSE(d, events_path(sid, task["id"]))
    t.check(s.read_until(lambda s: "before" in texts(s.events), 20), "the first line came")
    rc = d.stop()
    t.check(rc == 0, "the daemon stops cleanly with a stream open: %r" % rc)
    s.close()
    d.start()
    st = wait_task(d, sid, task["id"], ("succeeded", "failed", "cancelled"), 30)
    t.check(st and st["state"] == "succeeded", "picked up after the restart and finished: %r" % st)
    s = SSE(d, events_path(sid, task["id"]))
    evs = s.read_all(10)
    s.close()
    t.check("before" in texts(evs) and "after" in texts(evs) and evs[-1]["event"] == "exit",
            "the whole run replays after the restart: %r" % evs)
    ids = [e["id"] for e in evs]
    t.check(ids == sorted(set(ids)), "no id twice: %r" % ids)


def test_kept_awake(t, d, ctx):
    sid = create(t, d)
    if not sid:
        return
    task = command(t, d, sid, "sleep 17; echo awake")
    if not task:
        return
    wait_task(d, sid, task["id"], ("running",), 20)
    s = SSE(d, events_path(sid, task["id"]))
    # idle_timeout is 3 s: past it the task still holds the sandbox.
    s.read_until(lambda s: False, 6)
    t.check(sandbox_state(d, sid) == "running", "running past idle_timeout while the task runs")
    # A quiet stream gets a heartbeat comment about every 15 s.
    evs = s.read_all(30)
    s.close()
    t.check(s.comments >= 1, "a heartbeat comment on a quiet stream: %d" % s.comments)
    t.check("awake" in texts(evs), "the output after the quiet spell: %r" % evs)
    st = wait_task(d, sid, task["id"], ("succeeded", "failed"), 20)
    t.check(st and st["state"] == "succeeded", "the task succeeded: %r" % st)
    t.check(wait_for(lambda: sandbox_state(d, sid) == "stopped", timeout=15, interval=0.2),
            "stopped for idleness after the task ended")


def test_agents_and_revert(t, d, ctx):
    """Claude Code and OpenCode stand-ins on the real base image: agent
    events carry the CLI's objects, prompt and model reach the CLI, the
    checkpoint is taken, and revert puts the changed file back."""
    sid = ctx["sid"]
    for path, data in (("src/App.jsx", "original\n"), ("bin/claude", CLAUDE_STANDIN),
                       ("bin/opencode", OPENCODE_STANDIN)):
        r = d.request("PUT", "/v1/sandboxes/%s/files/%s" % (sid, path), data)
        t.check(r.status in (201, 204), "PUT %s: %r" % (path, r))
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                  {"cmd": ["chmod", "+x", "/workspace/bin/claude", "/workspace/bin/opencode"]})
    t.check(r.status == 200 and r.json()["exit_code"] == 0, "chmod the stand-ins: %r" % r)
    path_env = "/workspace/bin:/usr/local/bin:/usr/bin:/bin"
    r = post_task(d, sid, {"agent": "claude-code", "prompt": "make the header red",
                           "env": {"PATH": path_env, "STANDIN_WRITE": "src/App.jsx", "ANTHROPIC_API_KEY": SECRET}})
    t.check(r.status == 202, "claude-code task: 202 %r" % r)
    if r.status != 202:
        return
    tid = r.json()["id"]
    ctx["claude_tid"] = tid
    s = SSE(d, events_path(sid, tid))
    evs = s.read_all(60)
    s.close()
    agent = [e["data"] for e in evs if e["event"] == "agent"]
    t.check([a.get("type") for a in agent] == ["system", "assistant", "result"],
            "each JSON line is an agent event, unchanged: %r" % agent)
    text = json.dumps(agent)
    t.check("prompt=make the header red" in text and "--output-format stream-json" in text
            and "--verbose" in text, "the prompt and the flags reach the CLI: %r" % text[:600])
    t.check("not json: a plain line" in texts(evs), "other lines are output events: %r" % evs)
    t.check(any(e["event"] == "output" and e["data"].get("stream") == "stderr" for e in evs), "stderr too")
    st = wait_task(d, sid, tid, ("succeeded", "failed"), 30)
    t.check(st and st["state"] == "succeeded", "succeeded: %r" % st)
    if not st:
        return
    t.check(isinstance(st.get("checkpoint"), str) and len(st["checkpoint"]) == 40,
            "a checkpoint sha on the task: %r" % st)
    t.check("src/App.jsx" in (st.get("changed_files") or []), "changed_files names the file: %r" % st)
    t.check((st.get("summary") or {}).get("cost_usd") == 0.0123, "the summary is kept: %r" % st)
    r = d.request("GET", "/v1/sandboxes/%s/files/src/App.jsx" % sid)
    t.check(r.status == 200 and r.body == b"make the header red\n", "the agent changed the file: %r" % r)
    r = d.request("POST", "/v1/sandboxes/%s/tasks/%s/revert" % (sid, tid), timeout=60)
    t.check(r.status == 200 and r.json()["id"] == tid, "revert: 200 the task %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/files/src/App.jsx" % sid)
    t.check(r.status == 200 and r.body == b"original\n", "revert put the file back: %r" % r)

    r = post_task(d, sid, {"agent": "opencode", "prompt": "add a footer", "model": "anthropic/claude-sonnet-4",
                           "env": {"PATH": path_env}})
    t.check(r.status == 202, "opencode task: 202 %r" % r)
    if r.status != 202:
        return
    tid = r.json()["id"]
    s = SSE(d, events_path(sid, tid))
    evs = s.read_all(60)
    s.close()
    agent = [e["data"] for e in evs if e["event"] == "agent"]
    t.check(agent and agent[0].get("type") == "text", "opencode's JSON lines are agent events: %r" % agent)
    text = json.dumps(agent)
    t.check("run --format json" in text and "anthropic/claude-sonnet-4" in text and "add a footer" in text,
            "the model and the prompt reach opencode: %r" % text[:600])
    st = wait_task(d, sid, tid, ("succeeded", "failed"), 30)
    t.check(st and st["state"] == "succeeded", "succeeded: %r" % st)
    # Revert on a stopped sandbox wakes it (the checkpoint is the task's).
    d.request("PUT", "/v1/sandboxes/%s/files/src/App.jsx" % sid, "edited again\n")
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
    t.check(r.status == 200 and sandbox_state(d, sid) == "stopped", "stopped: %r" % r)
    r = d.request("POST", "/v1/sandboxes/%s/tasks/%s/revert" % (sid, ctx["claude_tid"]), timeout=90)
    t.check(r.status == 200, "revert on a stopped sandbox: 200 %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s/files/src/App.jsx" % sid)
    t.check(r.status == 200 and r.body == b"original\n", "... and the file is back: %r" % r)
    r = d.request("GET", "/metrics", key="root")
    t.check(r.status == 200 and b"sandboxd_tasks_active 0" in r.body and b"sandboxd_task_streams 0" in r.body,
            "/metrics: no task or stream left: %r" % r)
    c = command(t, d, sid, "true")
    if c:
        wait_task(d, sid, c["id"], ("succeeded", "failed"), 30)
        r = d.request("POST", "/v1/sandboxes/%s/tasks/%s/revert" % (sid, c["id"]))
        t.check(r.status == 409 and "checkpoint" in r.json()["error"]["message"],
                "a command task has no checkpoint: 409 %r" % r)


# --- main -------------------------------------------------------------------

def run_daemon(t, extra, what, tests, ctx, templates=TEMPLATES):
    d = Daemon(extra=extra, templates=dict(templates))
    before = t.failed
    try:
        d.start()
        sid = create(t, d)
        why = probe(d, sid) if sid else "no sandbox"
        if why and "does not run tasks" in why:
            ctx["skip"] = why
            return
        if not t.check(why is None, "a probe task succeeds: %s" % why):
            return
        ctx["sid"] = sid
        for fn in tests:
            t.run(fn, d, ctx)
    finally:
        if t.failed != before:
            print("---- daemon log [%s] (tail) ----\n%s" % (what, d.logs()[-4000:]))
        d.cleanup()


def main():
    if not ensure_docker():
        print("docker is not available: skipping the task tests")
        return 77
    ensure_test_image()
    t = Runner()
    ctx = {}
    run_daemon(t, "wake_timeout = 30s", "tasks", [
        test_streamed_before_end, test_last_event_id, test_queued_in_order, test_outlives_client,
        test_cancel, test_timeout, test_many_lines, test_long_log_replay, test_validation, test_env_never_stored, test_stop_fails_task,
        test_wakes_stopped, test_broken_dev_server, test_delete_removes_logs, test_restart_replay], ctx)
    if ctx.get("skip"):
        print("SKIP: the agentd in use does not run tasks yet (%s); these tests run once it does" % ctx["skip"])
        return 77
    run_daemon(t, "idle_timeout = 3s\nwake_timeout = 30s", "idle_timeout = 3s", [test_kept_awake], ctx)
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0:
        run_daemon(t, "wake_timeout = 60s", "base image", [test_agents_and_revert], ctx, BASE_TEMPLATES)
    else:
        print("SKIP test_agents_and_revert: %s is not built (base-image/build.sh)" % BASE_IMAGE)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
