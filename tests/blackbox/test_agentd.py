#!/usr/bin/env python3
"""Black-box scenarios for the daemon's side of agentd (docs/agentd.md,
SECURITY.md): a real daemon, real dockerd, real busybox containers running
the real agentd.

- Nothing else in a sandbox can pose as its agentd: a process of the
  sandbox user cannot read agentd's token (/proc/1/environ, its own env),
  cannot replace or add a socket in the read-only rendezvous directory, and
  a second agentd started by the sandbox user (no token, or a made-up one)
  is refused by the daemon and never sent a request, while every exec is
  still answered by the real agentd (PID 1), before and after a daemon
  restart.
- The JSON form of exec keeps at most 1 MiB of each stream (truncated),
  valid UTF-8, whatever the command writes.
- Requests to a sandbox's agent at once are capped: one over the cap is
  answered 503 with the API's error body, at once; the others run.

Prints "N passed, N failed"; exits 77 without Docker.
"""
import json
import os
import stat
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, ensure_docker, ensure_test_image, wait_for  # noqa: E402

CAP = 32            # AGENT_MAX_REQUESTS in control/control.h
KEEP = 1024 * 1024  # EXEC_KEEP_MAX in control/execstream.c


def exec_(d, sid, script, timeout_s=30, timeout=90):
    return d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                     {"cmd": ["sh", "-c", script], "timeout_s": timeout_s}, timeout=timeout)


def create(t, d):
    r = d.request("POST", "/v1/sandboxes", {})
    t.check(r.status == 201, "create answers 201: %r" % r)
    if r.status != 201:
        return None
    sid = r.json()["id"]
    ok = wait_for(lambda: exec_(d, sid, "true").status == 200, timeout=30, interval=0.2)
    t.check(ok, "the sandbox answers an exec")
    return sid


def ppids(t, d, sid, n):
    """n execs, each printing its parent's pid: 1 only if the real agentd
    (PID 1) ran it."""
    out = []
    for _ in range(n):
        r = exec_(d, sid, "echo $PPID")
        out.append(r.json()["stdout"].strip() if r.status == 200 else "status %d" % r.status)
    return out


def test_token_unreadable(t, d, sid):
    r = exec_(d, sid, "id -u; cat /proc/1/environ; echo rc=$?")
    t.check(r.status == 200, "exec: %r" % r)
    out = r.json()
    t.check(out["stdout"].startswith("1000\n"), "the exec runs as the sandbox user: %r" % out)
    t.check("rc=0" not in out["stdout"] and "SANDBOXD_AGENTD_TOKEN" not in out["stdout"],
            "the sandbox user cannot read agentd's environment: %r" % out)
    t.check("denied" in out["stderr"], "refused by the kernel (agentd is not dumpable): %r" % out)
    r = exec_(d, sid, "env; ls /proc/1/fd 2>&1; cat /proc/1/mem 2>&1 | head -c 100")
    out = r.json()
    t.check(r.status == 200 and "SANDBOXD_AGENTD_TOKEN" not in out["stdout"] and "HOME=" in out["stdout"],
            "the token is not in the env agentd gives its children: %r" % out)
    t.check(out["stdout"].count("denied") >= 2, "nor are agentd's descriptors or memory readable: %r" % out)
    # It is in the container's config (the host's, root's); never in a log.
    cid = d.containers()[0]
    env = json.loads(__import__("subprocess").run(["docker", "inspect", "-f", "{{json .Config.Env}}", cid],
                                                 capture_output=True, text=True).stdout)
    tok = [e.split("=", 1)[1] for e in env if e.startswith("SANDBOXD_AGENTD_TOKEN=")]
    t.check(len(tok) == 1 and len(tok[0]) == 64, "the container's env carries a 64-hex token: %r" % tok)
    if tok:
        t.check(tok[0] not in d.logs(), "the token is not in the daemon's log")
        r = d.request("GET", "/v1/sandboxes/%s/logs" % sid)
        t.check(tok[0].encode() not in r.body, "nor in the dev server's output")
    path = os.path.join(d.data_dir, "agentd-secret")
    st = os.stat(path)
    t.check(stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32, "data_dir/agentd-secret: 32 bytes, 0600")


def test_socket_not_replaceable(t, d, sid):
    r = exec_(d, sid, "rm -f /run/sandboxd/agentd.sock; echo rm=$?; "
                      "ln -sf /workspace/x /run/sandboxd/agentd.sock; echo ln=$?; "
                      "touch /run/sandboxd/other.sock; echo touch=$?; "
                      "ls -ln /run/sandboxd")
    out = r.json()["stdout"] if r.status == 200 else ""
    t.check("rm=0" not in out and "ln=0" not in out and "touch=0" not in out,
            "the rendezvous directory is read-only to the sandbox: %r" % out)
    t.check("agentd.sock" in out and "other.sock" not in out and " 0 " in out,
            "the socket is still the daemon's (root's): %r" % out)


def test_impostor_refused(t, d, sid):
    # Three impostors run by the sandbox user, as a dev server or an
    # agent's shell could start them: the agentd binary itself (it speaks
    # the whole protocol) with no token, with a made-up one, and with a
    # token the sandbox can see (an env var of its own of that name).
    script = ("mkdir -p /tmp/f1 /tmp/f2 /tmp/f3; "
              "env -u SANDBOXD_AGENTD_TOKEN /.sandboxd/agentd --socket /run/sandboxd/agentd.sock "
              "--workdir /tmp/f1 --state-dir /tmp/f1 > /tmp/f1/log 2>&1 & "
              "SANDBOXD_AGENTD_TOKEN=%s /.sandboxd/agentd --socket /run/sandboxd/agentd.sock "
              "--workdir /tmp/f2 --state-dir /tmp/f2 > /tmp/f2/log 2>&1 & "
              "SANDBOXD_AGENTD_TOKEN=%s /.sandboxd/agentd --socket /run/sandboxd/agentd.sock "
              "--workdir /tmp/f3 --state-dir /tmp/f3 > /tmp/f3/log 2>&1 & "
              "sleep 0.1" % ("0" * 64, "f" * 64))
    r = exec_(d, sid, "setsid sh -c '%s' > /dev/null 2>&1 < /dev/null & sleep 1.5; "
                      "ps -o pid,ppid,args | grep -c '[a]gentd --socket'" % script.replace("'", "'\\''"))
    n = r.json()["stdout"].strip() if r.status == 200 else "?"
    t.check(n.isdigit() and int(n) >= 3, "impostor agentds are running: %r" % r)
    got = ppids(t, d, sid, 30)
    t.check(all(p == "1" for p in got), "every exec ran under the real agentd (PID 1): %r" % got)
    # The impostors dialled and were refused: never a request.
    r = exec_(d, sid, "cat /tmp/f1/log /tmp/f2/log /tmp/f3/log")
    logs = r.json()["stdout"] if r.status == 200 else ""
    t.check("no valid SANDBOXD_AGENTD_TOKEN" in logs, "the tokenless impostor knows it has none: %r" % logs[:500])
    t.check("exec started" not in logs and "terminal started" not in logs,
            "no impostor was sent a request: %r" % logs[:800])
    t.check(wait_for(lambda: "refused a connection that is not agentd's" in d.logs(), timeout=10),
            "the daemon logs the refusals")
    # Tasks and the dev server's state still come from the real agentd.
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    t.check(r.status == 200 and r.json()["state"] == "running", "still running: %r" % r)


def test_after_restart(t, d, sid):
    # The token is made from data_dir/agentd-secret: a restarted daemon
    # accepts the running agentd again, and still refuses the impostors.
    rc = d.stop()
    t.check(rc == 0, "daemon stops cleanly: %r" % rc)
    d.start()
    ok = wait_for(lambda: exec_(d, sid, "true").status == 200, timeout=30, interval=0.2)
    t.check(ok, "exec works after the restart")
    got = ppids(t, d, sid, 10)
    t.check(all(p == "1" for p in got), "answered by the real agentd after the restart: %r" % got)


def test_exec_output_capped(t, d, sid):
    r = exec_(d, sid, "head -c 3000000 /dev/zero | tr '\\0' a; echo err >&2")
    t.check(r.status == 200, "exec: %r" % r)
    out = r.json()
    t.check(len(out["stdout"]) == KEEP and set(out["stdout"]) == {"a"}, "stdout cut at 1 MiB: %d" % len(out["stdout"]))
    t.check(out["stderr"] == "err\n" and out["truncated"] is True and out["exit_code"] == 0,
            "stderr whole, truncated true: %r" % {k: v for k, v in out.items() if k != "stdout"})
    # Multi-byte text is cut on a character boundary: valid JSON, valid UTF-8.
    r = exec_(d, sid, "i=0; while [ $i -lt 2000 ]; do printf '%0700d\\xc3\\xa9\\n' 0; i=$((i+1)); done")
    t.check(r.status == 200, "exec: %r" % r)
    body = r.body.decode("utf-8")  # raises on invalid UTF-8
    out = json.loads(body)
    t.check(len(out["stdout"].encode()) <= KEEP and out["truncated"] is True,
            "multi-byte output capped: %d bytes" % len(out["stdout"].encode()))
    t.check("\ufffd" not in out["stdout"][-5:], "not cut inside a character: %r" % out["stdout"][-5:])
    # agentd counts raw bytes, its text has each bad byte as U+FFFD (3
    # bytes), so more than 1 MiB of text reaches the daemon's cap: a cut
    # there that leaves a byte of room keeps nothing after it (the "x").
    r = exec_(d, sid, "head -c %d /dev/zero | tr '\\0' a; echo; i=0; while [ $i -lt 500 ]; do "
              "printf '\\377'; i=$((i+1)); done; printf '\\nx'" % (KEEP - 1001))
    t.check(r.status == 200, "exec: %r" % r)
    out = r.json()
    want = "a" * (KEEP - 1001) + "\n" + "\ufffd" * 333
    t.check(out["stdout"] == want and out["truncated"] is True,
            "nothing kept after a cut: %d chars, ends %r" % (len(out["stdout"]), out["stdout"][-3:]))
    # Small output: whole, not truncated.
    r = exec_(d, sid, "printf 'x%.0s' $(seq 1000)")
    t.check(r.status == 200 and r.json()["stdout"] == "x" * 1000 and r.json()["truncated"] is False,
            "small output whole: %r" % r)


def test_cap_at_once(t, d, sid):
    results = []
    lock = threading.Lock()

    def one():
        r = exec_(d, sid, "sleep 4", timeout=60)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(CAP)]
    for th in threads:
        th.start()
    # Let the daemon take all of them.
    time.sleep(1.5)
    t0 = time.time()
    over = exec_(d, sid, "echo over")
    dt = time.time() - t0
    for th in threads:
        th.join(60)
    ok = [r for r in results if r.status == 200]
    t.check(len(ok) >= CAP - 1, "the execs under the cap run: %d of %d" % (len(ok), CAP))
    t.check(over.status == 503 and over.error_code() == "unavailable" and
            "too many requests" in over.json()["error"]["message"],
            "one over the cap: 503 with the API error body: %r" % over)
    t.check(dt < 2, "answered at once, not queued: %.2fs" % dt)
    r = exec_(d, sid, "echo again")
    t.check(r.status == 200 and r.json()["stdout"] == "again\n", "room again once they finish: %r" % r)


def main():
    if not ensure_docker():
        print("docker is not available: skipping the agentd tests")
        return 77
    ensure_test_image()
    t = Runner()
    d = Daemon(extra="wake_timeout = 30s")
    try:
        d.start()
        t.current = "setup"
        sid = create(t, d)
        if sid is None:
            return t.finish()
        for fn in (test_token_unreadable, test_socket_not_replaceable, test_impostor_refused,
                   test_after_restart, test_exec_output_capped, test_cap_at_once):
            t.run(fn, d, sid)
    finally:
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
