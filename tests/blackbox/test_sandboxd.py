#!/usr/bin/env python3
"""Black-box scenarios for sandboxd: a real daemon, real dockerd, real
containers from a busybox image, real sockets. Prints "N passed, N failed".
"""
import os
import signal
import socket
import secrets
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Response, Runner, SANDBOXD, docker, ensure_docker,  # noqa: E402
                     ensure_test_image, wait_for)

INDEX = b"<h1>hello from the sandbox</h1>\n"


def create(t, d, body=None, tenant="acme"):
    r = d.request("POST", "/v1/sandboxes", body if body is not None else {}, key=tenant)
    t.check(r.status == 201, "create answers 201, got %r" % r)
    return r.json() if r.status == 201 else None


def served(d, sid, path="/index.html", want=INDEX):
    def probe():
        try:
            r = d.preview(sid, path)
            return r if r.status == 200 and r.body == want else None
        except OSError:
            return None
    return wait_for(probe, timeout=10)


# --- the command line -------------------------------------------------------

def test_cli(t, d):
    r = subprocess.run([SANDBOXD, "version"], capture_output=True, text=True)
    t.check(r.returncode == 0 and r.stdout.startswith("sandboxd "), "version: %r" % r.stdout)
    r = subprocess.run([SANDBOXD, "--help"], capture_output=True, text=True)
    t.check(r.returncode == 0 and "check-config" in r.stdout, "--help lists commands")
    for cmd in ("serve", "check-config", "backup", "version"):
        r = subprocess.run([SANDBOXD, cmd, "--help"], capture_output=True, text=True)
        t.check(r.returncode == 0 and "usage" in r.stdout, "%s --help" % cmd)
    r = subprocess.run([SANDBOXD, "frobnicate"], capture_output=True, text=True)
    t.check(r.returncode == 2, "unknown command exits 2")
    r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
    t.check(r.returncode == 0, "the test config is valid: %s" % r.stderr)
    bad = os.path.join(d.tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("listen = 127.0.0.1:99999\nidle_timeout = soon\nbogus = 1\n")
    r = subprocess.run([SANDBOXD, "check-config", "-c", bad], capture_output=True, text=True)
    t.check(r.returncode == 2, "bad config exits 2")
    t.check("bad.conf:1:" in r.stderr and "listen" in r.stderr, "error names file, line, key: %r" % r.stderr)
    t.check("bad.conf:2:" in r.stderr and "bad.conf:3:" in r.stderr, "every error is printed")
    r = subprocess.run([SANDBOXD, "serve", "-c", os.path.join(d.tmp, "missing.conf")],
                       capture_output=True, text=True, timeout=10)
    t.check(r.returncode == 2, "serve with a missing config exits 2")


def test_healthz_and_auth(t, d):
    r = d.request("GET", "/healthz", key=None)
    t.check(r.status == 200 and r.json()["status"] == "ok", "healthz ok: %r" % r)
    # Polled hard, /healthz pings Docker about once a second, not per call.
    def pings():
        with open(d.log_path, errors="replace") as f:
            return sum(1 for ln in f if 'path="/_ping"' in ln)
    before, t0 = pings(), time.time()
    codes = [d.request("GET", "/healthz", key=None).status for _ in range(40)]
    spent = time.time() - t0
    time.sleep(0.2)
    extra = pings() - before
    t.check(codes == [200] * 40, "40 healthz calls answered: %r" % sorted(set(codes)))
    t.check(extra <= int(spent) + 2, "Docker pinged %d times for 40 calls in %.1f s" % (extra, spent))
    r = d.request("GET", "/v1/sandboxes", key=None)
    t.check(r.status == 401 and r.error_code() == "unauthorized", "no key: 401 %r" % r)
    r = d.request("GET", "/v1/sandboxes", raw_key="x" * 40)
    t.check(r.status == 401 and r.error_code() == "unauthorized", "wrong key: 401")
    r = d.request("GET", "/metrics", key="acme")
    t.check(r.status == 401, "metrics need an admin key")
    r = d.request("GET", "/metrics", key="root")
    t.check(r.status == 200 and b"sandboxd_sandboxes" in r.body, "metrics for admin")
    r = d.request("GET", "/v1/nothing")
    t.check(r.status == 404 and r.error_code() == "not_found", "unknown route 404")


def test_create_files_preview(t, d):
    s = create(t, d, {"labels": {"app": "demo"}, "env": {"GREETING": "hi"}})
    if s is None:
        return
    sid = s["id"]
    t.check(s["state"] == "running", "created running")
    t.check(len(sid) == 26 and sid == sid.lower(), "id is a lowercase ULID")
    t.check(s["preview_url"] == "http://%s.preview.localhost:%d/" % (sid, d.port),
            "preview_url: %s" % s["preview_url"])
    t.check(s["labels"] == {"app": "demo"} and s["env"] == {"GREETING": "hi"}, "labels/env kept")
    t.check(s["tenant"] == "acme" and s["template"] == "default", "tenant/template")

    r = d.request("PUT", "/v1/sandboxes/%s/files/index.html" % sid, INDEX)
    t.check(r.status == 201, "PUT new file 201 %r" % r)
    r = d.request("PUT", "/v1/sandboxes/%s/files/index.html" % sid, INDEX)
    t.check(r.status == 204, "PUT replace 204 %r" % r)
    r = d.request("PUT", "/v1/sandboxes/%s/files/src/deep/a.txt" % sid, b"deep")
    t.check(r.status == 201, "PUT makes parents")
    r = d.request("GET", "/v1/sandboxes/%s/files/index.html" % sid)
    t.check(r.status == 200 and r.body == INDEX, "GET file")
    r = d.request("GET", "/v1/sandboxes/%s/files/" % sid)
    names = sorted(e["name"] for e in r.json().get("entries", [])) if r.status == 200 else []
    t.check(names == ["index.html", "src"], "listing: %r" % names)
    r = d.request("GET", "/v1/sandboxes/%s/files/src/" % sid)
    t.check(r.status == 200 and [e["name"] for e in r.json()["entries"]] == ["deep"],
            "a trailing slash lists the directory: %r" % r)
    r = d.request("DELETE", "/v1/sandboxes/%s/files/" % sid)
    t.check(r.status == 400, "the workspace itself cannot be deleted: %r" % r)
    st = os.stat(os.path.join(d.data_dir, "workspaces", sid, "index.html"))
    t.check(st.st_uid == 1000, "files belong to the sandbox user")

    r = served(d, sid)
    t.check(r is not None, "the app serves the file at the preview URL")
    if r is not None:
        t.check("x-forwarded-for" not in r.headers, "response is the app's")
    r = d.preview(sid, "/index.html", port=3000)
    t.check(r.status == 200 and r.body == INDEX, "<port>-<id> preview host")
    r = d.request("GET", "/index.html", key=None,
                  host="%s.PREVIEW.localhost.:%d" % (sid.upper(), d.port))
    t.check(r.status == 200, "Host is case-insensitive with a trailing dot")

    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    t.check(r.status == 200 and r.json()["id"] == sid, "GET sandbox")
    r = d.request("GET", "/v1/sandboxes?label=app:demo")
    t.check(r.status == 200 and [x["id"] for x in r.json()["sandboxes"]] == [sid], "label filter")
    r = d.request("GET", "/v1/sandboxes?label=app:other")
    t.check(r.status == 200 and r.json()["sandboxes"] == [], "label filter excludes")
    r = d.request("GET", "/v1/sandboxes?state=running")
    t.check(r.status == 200 and sid in [x["id"] for x in r.json()["sandboxes"]], "state filter")
    r = d.request("GET", "/v1/sandboxes?state=bogus")
    t.check(r.status == 400, "bad state filter 400")

    r = d.request("DELETE", "/v1/sandboxes/%s/files/src" % sid)
    t.check(r.status == 204, "DELETE dir tree")
    r = d.request("GET", "/v1/sandboxes/%s/files/src/deep/a.txt" % sid)
    t.check(r.status == 404 and r.error_code() == "not_found", "deleted file 404")
    return sid


def create_files_preview(t, d, made):
    made.append(test_create_files_preview(t, d))


def test_container_hardening(t, d, sid):
    cid = d.containers()[0] if d.containers() else None
    if not t.check(cid is not None, "container exists"):
        return
    import json as _json
    info = _json.loads(docker("inspect", cid).stdout)[0]
    hc = info["HostConfig"]
    t.check(hc["ReadonlyRootfs"] is True, "read-only root")
    t.check(hc["CapDrop"] == ["ALL"], "all caps dropped")
    t.check("no-new-privileges" in (hc["SecurityOpt"] or []), "no-new-privileges")
    t.check(hc["PidsLimit"] == 64 and hc["Memory"] == 64 * 1024 * 1024, "pids and memory limits")
    t.check(any(u["Name"] == "nofile" for u in hc["Ulimits"] or []), "nofile ulimit")
    t.check("/tmp" in (hc["Tmpfs"] or {}), "tmpfs /tmp")
    t.check(not hc.get("PortBindings"), "no published ports")
    t.check(info["Config"]["User"] == "1000:1000", "non-root user")
    t.check(hc["NetworkMode"] == d.network, "on the sandbox network")
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["sh", "-c", "id -u; touch /x 2>&1; echo rc=$?"]})
    out = r.json().get("stdout", "") if r.status == 200 else ""
    t.check(out.startswith("1000\n") and "rc=1" in out, "runs as uid 1000 on a read-only root: %r" % out)


def daemon_children(pid):
    """Forked children of pid that did not exec (same command line)."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        cmd = f.read()
    kids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open("/proc/%s/cmdline" % p, "rb") as f:
                if f.read() == cmd:
                    kids.append(int(p))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def test_file_job_fds(t, d, sid):
    """A workspace file job is a forked child: caught in the middle of a
    64 MiB write (stopped while its descriptors are read), it holds the
    workspace and the file it writes, never one of the daemon's sockets
    (a listener or a client's), which a slow job would keep open past the
    daemon's exit."""
    body = b"x" * (64 << 20)
    seen = None
    for attempt in range(8):
        path = "/v1/sandboxes/%s/files/fdcheck-%d.bin" % (sid, attempt)
        th = threading.Thread(target=d.request, args=("PUT", path, body), kwargs={"timeout": 120})
        th.start()
        deadline = time.time() + 60
        while th.is_alive() and seen is None and time.time() < deadline:
            for kid in daemon_children(d.proc.pid):
                try:
                    os.kill(kid, signal.SIGSTOP)
                    fds = os.listdir("/proc/%d/fd" % kid)
                    links = []
                    for fd in fds:
                        try:
                            links.append(os.readlink("/proc/%d/fd/%s" % (kid, fd)))
                        except OSError:
                            pass
                    # Past its start: the file it writes is open (an
                    # O_TMPFILE, "#inode (deleted)", or a named temporary).
                    if any(".sbx-put-" in l or l.endswith(" (deleted)") for l in links):
                        seen = links
                except OSError:
                    pass
                finally:
                    try:
                        os.kill(kid, signal.SIGCONT)
                    except OSError:
                        pass
            time.sleep(0.001)
        th.join(120)
        d.request("DELETE", path)
        if seen is not None:
            break
    if not t.check(seen is not None, "a file job caught in the middle of its write"):
        return
    socks = [l for l in seen if l.startswith("socket:")]
    t.check(not socks, "the file job holds none of the daemon's sockets: %r" % seen)


def test_exec(t, d, sid):
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    j = r.json() if r.status == 200 else {}
    t.check(j.get("exit_code") == 3 and j.get("stdout") == "out\n" and j.get("stderr") == "err\n",
            "exec result: %r" % r)
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                  {"cmd": ["sh", "-c", "pwd; echo $GREETING $X"], "cwd": "/tmp", "env": {"X": "y"}})
    t.check(r.status == 200 and r.json()["stdout"] == "/tmp\nhi y\n", "cwd and env: %r" % r)
    t0 = time.time()
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["sleep", "30"], "timeout_s": 1})
    t.check(r.status == 200 and r.json()["timed_out"] is True and time.time() - t0 < 10, "exec timeout")
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["/no/such/thing"]})
    t.check(r.status == 200 and r.json()["exit_code"] == 127, "missing command 127: %r" % r)
    for bad in ({}, {"cmd": []}, {"cmd": "ls"}, {"cmd": [1]}, {"cmd": ["ls"], "bogus": 1},
                {"cmd": ["ls"], "timeout_s": "5"}, {"cmd": ["ls"], "timeout_s": 0},
                {"cmd": ["ls"], "cwd": "relative"}, {"cmd": ["ls"], "env": {"A": 1}}):
        r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, bad)
        t.check(r.status == 400 and r.error_code() == "bad_request", "bad exec %r -> %r" % (bad, r))


def test_traversal(t, d, sid):
    outside = os.path.join(d.tmp, "outside-secret")
    with open(outside, "w") as f:
        f.write("TOPSECRET-CONTENT")
    base = "/v1/sandboxes/%s/files/" % sid
    for p in ("../outside-secret", "..%2F..%2Foutside-secret", "%2e%2e/%2e%2e/x", "a/../../x",
              "%2Fetc%2Fpasswd", "/etc/passwd", "a%00b", "./x", "%ZZ"):
        r = d.request("GET", base + p)
        t.check(r.status == 400 and r.error_code() == "bad_request", "GET %s -> %r" % (p, r))
        r = d.request("PUT", base + p, b"x")
        t.check(r.status in (400, 404) and r.error_code() in ("bad_request", "not_found"),
                "PUT %s -> %r" % (p, r))
    # Symlinks planted by the sandbox's own processes lead nowhere.
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["sh", "-c",
                  "ln -s / /workspace/root; ln -s /etc/passwd /workspace/pw; ln -s %s /workspace/out" % d.tmp]})
    t.check(r.status == 200 and r.json()["exit_code"] == 0, "planted symlinks")
    for p in ("root/etc/passwd", "pw", "out/outside-secret"):
        r = d.request("GET", base + p)
        t.check(r.status == 400 and b"root:" not in r.body and b"TOPSECRET" not in r.body,
                "GET through symlink %s -> %r" % (p, r))
    r = d.request("PUT", base + "out/outside-secret", b"pwned")
    t.check(r.status in (201, 204, 400), "PUT onto a symlink: %r" % r)
    with open(outside) as f:
        t.check(f.read() == "TOPSECRET-CONTENT", "nothing outside the workspace was written")
    r = d.request("PUT", base + "root/tmp/sbx-escape", b"pwned")
    t.check(r.status == 400 and not os.path.exists("/tmp/sbx-escape"), "PUT through a symlinked parent")
    r = d.request("DELETE", base + "out/outside-secret")
    t.check(r.status == 400 and os.path.exists(outside), "DELETE through a symlinked parent")
    r = d.request("DELETE", base + "pw")
    t.check(r.status == 204 and os.path.exists("/etc/passwd"), "DELETE removes the link, not its target")


def test_bad_input(t, d, sid):
    cases = [
        (b"{", "malformed JSON"), (b"[]", "array"), (b'{"template": 5}', "wrong type"),
        (b'{"bogus": 1}', "unknown field"), (b'{"memory_mb": -1}', "negative"),
        (b'{"memory_mb": 1.5}', "float for int"), (b'{"cpus": "1"}', "string for number"),
        (b'{"visibility": "secret"}', "bad enum"),
        (b'{"visibility": 1}', "visibility not a string"), (b'{"template": "nope"}', "unknown template"),
        (b'{"env": {"1BAD": "x"}}', "bad env key"), (b'{"labels": {"a": 1}}', "label not string"),
        (b'{} trailing', "trailing data"), (b'{"a":' * 100 + b'1' + b'}' * 100, "deep nesting"),
        (b'\xff\xfe', "not UTF-8"), (b'{"port": 70000}', "port out of range"),
    ]
    for body, what in cases:
        r = d.request("POST", "/v1/sandboxes", body, headers={"Content-Type": "application/json"})
        t.check(r.status == 400 and r.error_code() == "bad_request", "%s -> %r" % (what, r))
    r = d.request("POST", "/v1/sandboxes", b"{" + b" " * (200 * 1024) + b"}")
    t.check(r.status == 413 and r.error_code() == "payload_too_large", "huge JSON body 413: %r" % r)
    for bad_id in ("nope", "01JD3K5X8Q2W7E9R4T6Y1U3I5O", "0" * 27, "%2e%2e"):
        r = d.request("GET", "/v1/sandboxes/%s" % bad_id)
        t.check(r.status == 400 and r.error_code() == "bad_request", "bad id %s -> %r" % (bad_id, r))
    r = d.request("GET", "/v1/sandboxes/00000000000000000000000000")
    t.check(r.status == 404 and r.error_code() == "not_found", "unknown id 404")
    r = d.request("PATCH", "/v1/sandboxes/%s" % sid, {})
    t.check(r.status == 405, "wrong method 405: %r" % r)
    # A request line longer than a head may be: 414, with the API's code.
    out = d.raw(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n")
    t.check(out.startswith(b"HTTP/1.1 414") and b'"code":"bad_request"' in out,
            "request line too long: 414 bad_request: %r" % out[:200])
    # Raw protocol abuse: the daemon answers 4xx and keeps serving.
    # Each broken head gets its own 4xx, never silence; only empty lines
    # get no answer (a server ignores them before a request line, RFC 9112
    # 2.2, and waits for the request: the header timeout ends it later).
    for raw, want in ((b"GARBAGE\r\n\r\n", b"HTTP/1.1 400"), (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
                      (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", b"HTTP/1.1 400"),
                      (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                       b"HTTP/1.1 400"),
                      (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n", b"HTTP/1.1 431"),
                      (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400"), (b"\r\n\r\n\r\n", b"")):
        out = d.raw(raw)
        t.check(out[:12] == want, "raw %r -> %r, want %r" % (raw[:30], out[:40], want))
    out = d.raw(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b"Content-Length: 999999999999\r\n\r\n" % d.key().encode())
    t.check(out.startswith(b"HTTP/1.1 413"), "huge Content-Length 413: %r" % out[:40])
    # Without a valid key nothing is buffered: the answer comes from the head.
    for key in (b"", b"Authorization: Bearer wrong-key-of-some-length-00000000\r\n"):
        out = d.raw(b"PUT /v1/sandboxes/%s/files/big HTTP/1.1\r\nHost: x\r\n%s"
                    b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n" % (sid.encode(), key))
        t.check(out.startswith(b"HTTP/1.1 401"), "unauthenticated 100 MB PUT: 401 at once: %r" % out[:40])
    out = d.raw(b"PUT /v1/sandboxes/%s/files/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b"Content-Length: 100000000\r\n\r\n" % (sid.encode(), d.key("globex").encode()))
    t.check(out.startswith(b"HTTP/1.1 404"), "another tenant's 100 MB PUT: 404 at once: %r" % out[:40])
    r = d.preview("00000000000000000000000000")
    t.check(r.status == 404, "preview of an unknown id 404")
    r = d.request("GET", "/", key=None, host="not-an-id.preview.localhost")
    t.check(r.status == 404, "bad preview host 404")
    t.check(d.proc.poll() is None, "the daemon survived")
    r = d.request("GET", "/healthz", key=None)
    t.check(r.status == 200, "still healthy")


def incomplete(req):
    """True if req is not a whole request: no end of head, or less body
    than its Content-Length says, or a chunked body without its end."""
    head, sep, body = req.partition(b"\r\n\r\n")
    if not sep:
        return True
    lines = head.lower().split(b"\r\n")[1:]
    for ln in lines:
        name, _, value = ln.partition(b":")
        if name.strip() == b"content-length":
            try:
                if len(body) < int(value.strip()):
                    return True
            except ValueError:
                pass
        if name.strip() == b"transfer-encoding" and not chunked_complete(body):
            return True
    return False


def chunked_complete(body):
    """False while a chunked body still lacks bytes (a malformed one is
    whole: the server must refuse it at once)."""
    i = 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            return False
        try:
            size = int(body[i:j].split(b";")[0], 16)
        except ValueError:
            return True
        i = j + 2
        if size == 0:
            return body.startswith(b"\r\n", i) or body.find(b"\r\n\r\n", i) >= 0
        if len(body) < i + size + 2:
            return False
        i += size + 2


def answer_head(port, data, half_close=False, timeout=1.0):
    """Send data; what comes back up to the end of the first response head
    (or the close, or timeout seconds): b"" if nothing."""
    out = b""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return out
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        end = time.time() + timeout
        while b"\r\n\r\n" not in out and time.time() < end:
            s.settimeout(max(0.01, end - time.time()))
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    finally:
        s.close()
    return out


def test_random_requests(t, d, sid):
    """Mutated requests, API and preview, thrown at the live daemon: each
    whole request gets an answer (a status line, never a 500) on an open
    connection; a request left incomplete (no end of head, a body shorter
    than it says) is sent with a half-close and may be closed unanswered;
    the daemon stays healthy. Bounded: 400 requests, a fixed seed, 1 s each
    at most."""
    import random
    rng = random.Random(1234)
    seeds = [
        b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: 15\r\n\r\n{\"labels\": {}}" % d.key().encode(),
        b"GET /index.html HTTP/1.1\r\nHost: %s.preview.localhost\r\n\r\n" % sid.encode(),
        b"PUT /v1/sandboxes/%s/files/a%%20b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % (sid.encode(), d.key().encode()),
        b"GET /v1/sandboxes?label=a:b&state=running HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer %s\r\n\r\n" % d.key().encode(),
    ]
    answered, silent, bad = 0, [], []
    for i in range(400):
        m = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op, pos = rng.randrange(4), rng.randrange(len(m))
            if op == 0:
                m[pos] = rng.randrange(256)
            elif op == 1:
                del m[pos:pos + rng.randint(1, 8)]
            elif op == 2:
                m[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                m[pos:pos] = rng.choice([b"\r\n", b":", b" ", b"\x00", b"%", b"../", b"9" * 20])
        # An incomplete one says it is done (half-close): no second wait.
        whole = not incomplete(bytes(m))
        out = answer_head(d.port, bytes(m), half_close=not whole)
        if out:
            answered += 1
            if not (out[:9] == b"HTTP/1.1 " and out[9:10] in b"12345") or out[9:12] == b"500":
                bad.append((bytes(m[:60]), out[:40]))
        elif whole:
            silent.append(bytes(m[:200]))
    t.check(not bad, "every answer is a status line, none a 500: %r" % bad[:3])
    t.check(not silent, "every whole request was answered: %d not, e.g. %r" % (len(silent), silent[:2]))
    t.check(answered >= 300, "most of the 400 were whole and answered: %d" % answered)
    t.check(d.proc.poll() is None, "the daemon survived 400 mutated requests")
    r = d.request("GET", "/healthz", key=None)
    t.check(r.status == 200, "and is healthy")
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    t.check(r.status == 200 and r.json()["state"] == "running", "and the sandbox is untouched")


def test_tenants(t, d, sid):
    r = d.request("GET", "/v1/sandboxes/%s" % sid, key="globex")
    t.check(r.status == 404, "another tenant's sandbox is 404")
    for method, path in (("DELETE", ""), ("POST", "/stop"), ("GET", "/files/index.html"),
                         ("PUT", "/files/x"), ("POST", "/exec")):
        r = d.request(method, "/v1/sandboxes/%s%s" % (sid, path), {"cmd": ["true"]} if "exec" in path else b"x",
                      key="globex")
        t.check(r.status == 404, "globex %s %s -> %r" % (method, path, r))
    r = d.request("GET", "/v1/sandboxes", key="globex")
    t.check(r.status == 200 and r.json()["sandboxes"] == [], "globex lists nothing")
    r = d.request("GET", "/v1/sandboxes/%s" % sid, key="root")
    t.check(r.status == 200, "an admin key sees every tenant")


def test_stop_start(t, d, sid):
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid)
    t.check(r.status == 200 and r.json()["state"] == "stopped", "stop: %r" % r)
    t.check(d.containers(all=False) == [], "no running container")
    r = d.request("PUT", "/v1/sandboxes/%s/files/stopped.txt" % sid, b"written while stopped")
    t.check(r.status == 201, "files work while stopped")
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid)
    t.check(r.status == 200 and r.json()["state"] == "stopped", "stop is idempotent")
    r = d.preview(sid, "/stopped.txt")
    t.check(r.status == 200 and r.body == b"written while stopped",
            "a preview request wakes a stopped sandbox and is answered by the app: %r" % r)
    t.check(d.request("GET", "/v1/sandboxes/%s" % sid).json()["state"] == "running", "running after the wake")
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid)
    t.check(r.status == 200 and r.json()["state"] == "stopped", "stopped again")
    r = d.request("POST", "/v1/sandboxes/%s/start" % sid)
    t.check(r.status == 200 and r.json()["state"] == "running", "start: %r" % r)
    t.check(served(d, sid) is not None, "files kept across stop/start")
    t.check(served(d, sid, "/stopped.txt", b"written while stopped") is not None, "file written while stopped")
    r = d.request("POST", "/v1/sandboxes/%s/stop" % sid)
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["cat", "/workspace/stopped.txt"]})
    t.check(r.status == 200 and r.json()["stdout"] == "written while stopped", "exec wakes a stopped sandbox: %r" % r)
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    t.check(r.json()["state"] == "running", "running after exec")


def test_removed_behind_back(t, d, sid):
    docker("rm", "-f", *d.containers())
    r = wait_for(lambda: d.request("GET", "/v1/sandboxes/%s" % sid).json()["state"] == "stopped", timeout=10)
    t.check(r, "a container removed while the daemon runs: the sandbox is marked stopped")
    r = d.request("POST", "/v1/sandboxes/%s/start" % sid)
    t.check(r.status == 200 and r.json()["state"] == "running", "start recreates it: %r" % r)
    t.check(served(d, sid) is not None, "workspace kept")


def test_restart(t, d, sid):
    before = d.containers(all=False)
    rc = d.stop()
    t.check(rc == 0, "SIGTERM exits 0 (got %r)" % rc)
    t.check(d.containers(all=False) == before, "sandboxes keep running while the daemon is down")
    # Behind its back: remove our container, and plant a stray one of ours.
    docker("rm", "-f", *d.containers())
    stray = docker("create", "--label", "io.sandboxd.instance=%s" % d.instance,
                   "--label", "io.sandboxd.sandbox=01aaaaaaaaaaaaaaaaaaaaaaaa",
                   "sandboxd-test-busybox:1", "true").stdout.strip()
    d.start()
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    t.check(r.status == 200 and r.json()["state"] == "running", "recreated at boot: %r" % r)
    t.check(served(d, sid) is not None, "and serves its kept workspace")
    t.check(stray not in d.containers(), "an unknown container of ours is removed")
    t.check("reconcile" in d.logs(), "the reconciler logs what it did")
    before = d.containers(all=False)
    d.stop()
    d.start()
    t.check(served(d, sid) is not None, "a running sandbox is found again after a plain restart")
    t.check(d.containers(all=False) == before, "and keeps its container (its spec did not change)")


def test_stale_container(t, d, sid):
    """A container made by an older sandboxd (here: without the spec label,
    so without an agentd token either) is made again at boot, files kept."""
    d.stop()
    docker("rm", "-f", *d.containers())
    name = "%s-%s" % (d.instance, sid)
    # No network: Docker's default bridge need not exist here.
    old = docker("run", "-d", "--network", "none", "--name", name,
                 "--label", "io.sandboxd.instance=%s" % d.instance,
                 "--label", "io.sandboxd.sandbox=%s" % sid, "sandboxd-test-busybox:1",
                 "sleep", "600").stdout.strip()
    d.start()
    t.check(wait_for(lambda: served(d, sid) is not None, timeout=15),
            "the sandbox serves its workspace from a new container")
    now = d.containers(all=False)
    t.check(old not in now and len(now) == 1, "the stale container is gone, one new one runs: %r" % now)
    spec = docker("inspect", "-f", '{{index .Config.Labels "io.sandboxd.spec"}}', now[0]).stdout.strip() if now else ""
    t.check(len(spec) == 16, "the new container carries its spec hash: %r" % spec)
    t.check("older spec" in d.logs(), "the reconciler says why it made the container again")
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["echo", "ok"]})
    t.check(r.status == 200 and r.json().get("stdout") == "ok\n", "its agentd answers: %r" % r)


def test_delete(t, d, sid):
    r = d.request("DELETE", "/v1/sandboxes/%s" % sid)
    t.check(r.status == 204, "delete 204: %r" % r)
    t.check(d.containers() == [], "container removed")
    t.check(not os.path.exists(os.path.join(d.data_dir, "workspaces", sid)), "workspace removed")
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    t.check(r.status == 404, "deleted sandbox 404")
    r = d.preview(sid)
    t.check(r.status == 404, "deleted sandbox preview 404")


def test_bad_image(t, d):
    d2 = Daemon(templates={"default": {"image": "sandboxd-test-no-such-image:0", "port": "3000"}})
    try:
        d2.start()
        r = d2.request("POST", "/v1/sandboxes", {})
        t.check(r.status == 500 and "image" in r.json()["error"]["message"].lower(),
                "a missing image is a clear error: %r" % r)
        r = d2.request("GET", "/v1/sandboxes")
        t.check(r.json()["sandboxes"] == [], "and leaves nothing behind")
        t.check(os.listdir(os.path.join(d2.data_dir, "workspaces")) == [], "no workspace left")
    finally:
        d2.cleanup()


def test_docker_down_at_start(t, d):
    """The daemon starts while Docker is away, and catches up when it is
    back: the running sandbox is found again and serves."""
    d3 = Daemon()
    sock = os.path.join(d3.tmp, "docker.sock")
    os.symlink("/var/run/docker.sock", sock)
    d3.extra = "docker_socket = %s" % sock
    d3.write_config()
    try:
        d3.start()
        s = create(t, d3)
        if s is None:
            return
        d3.request("PUT", "/v1/sandboxes/%s/files/index.html" % s["id"], INDEX)
        t.check(served(d3, s["id"]) is not None, "serves before the restart")
        d3.stop()
        os.unlink(sock)                     # Docker "goes away"
        d3.start(wait=False)
        def health():
            try:
                return d3.request("GET", "/healthz", key=None)
            except OSError:
                return None
        r = wait_for(lambda: (health() or Response(0, {}, b"")).status == 503, timeout=10)
        t.check(r, "healthz is 503 while Docker does not answer")
        os.symlink("/var/run/docker.sock", sock)   # and comes back
        r = wait_for(lambda: (health() or Response(0, {}, b"{}")).status == 200 and
                     health().json().get("reconciled"), timeout=30)
        t.check(r, "the daemon reconciles once Docker is back")
        t.check(served(d3, s["id"]) is not None, "and the running sandbox serves again")
    finally:
        d3.cleanup()


def test_quota(t, d):
    mine = d.containers()
    d2 = Daemon(extra="max_sandboxes = 1")
    try:
        d2.start()
        t.check(mine and d.containers() == mine,
                "a second daemon on the same Docker leaves our containers alone")
        s = create(t, d2)
        r = d2.request("POST", "/v1/sandboxes", {})
        t.check(r.status == 429 and r.error_code() == "quota_exceeded", "max_sandboxes 429: %r" % r)
        if s:
            d2.request("DELETE", "/v1/sandboxes/%s" % s["id"])
    finally:
        d2.cleanup()


def test_tenant_ceilings(t):
    """[api_key] ceilings: memory and CPUs asked for, max_sandboxes, and
    max_running (the tenant's own idle-longest sandbox is stopped)."""
    keys = {"acme": ("a" * 8 + secrets.token_hex(16), False, "max_sandboxes = 1"),
            "globex": ("g" * 8 + secrets.token_hex(16), False,
                       "max_running = 1\nmax_memory_mb = 96\nmax_cpus = 0.75"),
            "root": ("r" * 8 + secrets.token_hex(16), True)}
    d3 = Daemon(keys=keys)
    made = []
    try:
        d3.start()
        # No ceilings of its own: up to 4 times the template (64m, 0.5).
        r = d3.request("POST", "/v1/sandboxes", {"memory_mb": 257})
        t.check(r.status == 400 and "memory_mb 257" in r.json()["error"]["message"],
                "a key without ceilings may not ask for 4x+ the template's memory: %r" % r)
        r = d3.request("POST", "/v1/sandboxes", {"cpus": 2.5})
        t.check(r.status == 400 and "cpus" in r.json()["error"]["message"], "nor 4x+ its CPUs: %r" % r)
        r = d3.request("POST", "/v1/sandboxes", {"memory_mb": 97}, key="globex")
        t.check(r.status == 400 and "(96)" in r.json()["error"]["message"], "max_memory_mb 96: %r" % r)
        r = d3.request("POST", "/v1/sandboxes", {"cpus": 1}, key="globex")
        t.check(r.status == 400 and "(0.75)" in r.json()["error"]["message"], "max_cpus 0.75: %r" % r)
        r = d3.request("POST", "/v1/sandboxes", {"cpus": os.cpu_count() + 1}, key="root")
        t.check(r.status == 400 and "more than this server has" in r.json()["error"]["message"],
                "more CPUs than the host has: 400, not Docker's 500: %r" % r)
        r = d3.request("POST", "/v1/sandboxes", {"memory_mb": 1024, "cpus": min(2, os.cpu_count())},
                       key="root")
        t.check(r.status == 201, "an admin key is not held to the factor: %r" % r)
        if r.status == 201:
            made.append(r.json()["id"])
        a = create(t, d3)
        if a:
            made.append(a["id"])
        r = d3.request("POST", "/v1/sandboxes", {})
        t.check(r.status == 429 and r.error_code() == "quota_exceeded" and
                "API key" in r.json()["error"]["message"], "the key's max_sandboxes = 1: 429 %r" % r)
        g1 = create(t, d3, {"memory_mb": 96}, tenant="globex")
        g2 = create(t, d3, {}, tenant="globex")
        for g in (g1, g2):
            if g:
                made.append(g["id"])
        if g1 and g2:
            st = d3.request("GET", "/v1/sandboxes/%s" % g1["id"], key="globex").json()["state"]
            t.check(st in ("stopping", "stopped"),
                    "the key's max_running = 1: its idle sandbox is stopped for the new one (%s)" % st)
            st = d3.request("GET", "/v1/sandboxes/%s" % a["id"]).json()["state"] if a else "running"
            t.check(st == "running", "another tenant's sandbox is left alone (%s)" % st)
    finally:
        for sid in made:
            d3.request("DELETE", "/v1/sandboxes/%s" % sid, key="root")
        d3.cleanup()


BASE_IMAGE = "sandboxd/base:latest"


def find_seed():
    for p in (os.environ.get("SANDBOXD_SEED_DIR", ""),
              os.path.join(os.environ.get("top_srcdir", "."), "base-image", "out", "templates", "vite-react"),
              "/usr/share/sandboxd/templates/vite-react"):
        if p and os.path.isdir(os.path.join(p, "node_modules")):
            return os.path.abspath(p)
    return None


def test_base_image_starter_app(t):
    """The default template under the daemon: the starter app answers at its
    preview URL and its hot-reload WebSocket passes the proxy."""
    seed = find_seed()
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0 or seed is None:
        t.skip("no %s image or starter seed (base-image/build.sh makes both)" % BASE_IMAGE)
        return
    d = Daemon(templates={"default": {
        "image": BASE_IMAGE, "port": "3000", "seed_dir": seed, "memory": "1g",
        "dev_command": "npm run dev -- --host 0.0.0.0 --port 3000"}})
    try:
        d.start()
        t0 = time.time()
        r = d.request("POST", "/v1/sandboxes", {})
        if not t.check(r.status == 201, "create on the base image: %r" % r):
            return
        sid = r.json()["id"]
        create_ms = (time.time() - t0) * 1000

        def page():
            try:
                p = d.preview(sid, "/")
                return p if p.status == 200 and b"Sandbox ready" in p.body else None
            except OSError:
                return None
        p = wait_for(page, timeout=60, interval=0.1)
        first_ms = (time.time() - t0) * 1000
        t.check(p is not None, "the starter app answers at its preview URL")
        print("  create %.0f ms; starter app's first answer %.0f ms after POST" % (create_ms, first_ms))
        # Hot reload: Vite's WebSocket through the proxy gets the update
        # that an edit through the files API causes.
        ws = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        try:
            ws.sendall(("GET /?token=x HTTP/1.1\r\nHost: %s.preview.localhost:%d\r\n"
                        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Protocol: vite-hmr\r\n\r\n" % (sid, d.port)).encode())
            got = ws.recv(4096)
            t.check(got.startswith(b"HTTP/1.1 101"), "the HMR WebSocket upgrade passes the proxy: %r" % got[:60])
            # As a browser would: load the module, so Vite watches it.
            t.check(d.preview(sid, "/src/App.jsx").status == 200, "the app's module loads")
            app = d.request("GET", "/v1/sandboxes/%s/files/src/App.jsx" % sid)
            t.check(app.status == 200, "the starter app was seeded into the workspace")
            edited = app.body.replace(b"</h1>", b" (edited)</h1>", 1)
            r = d.request("PUT", "/v1/sandboxes/%s/files/src/App.jsx" % sid, edited)
            t.check(r.status == 204, "edit src/App.jsx: %r" % r)
            deadline = time.time() + 15
            while time.time() < deadline and b'"update"' not in got:
                try:
                    got += ws.recv(65536)
                except socket.timeout:
                    break
            t.check(b'"update"' in got and b"App.jsx" in got, "hot reload sends the update through the proxy")
        finally:
            ws.close()
        r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["sh", "-c",
                      "node --version && npm --version && pnpm --version && bun --version && "
                      "python3 --version && git --version && opencode --version && claude --version"],
                      "timeout_s": 120})
        t.check(r.status == 200 and r.json()["exit_code"] == 0,
                "every tool answers --version in the sandbox: %r" % r)
    finally:
        d.cleanup()


def main():
    if not ensure_docker():
        print("docker is not available: skipping the black-box tests")
        return 77
    ensure_test_image()
    t = Runner()
    d = Daemon()
    try:
        d.start()
        t.run(test_cli, d)
        t.run(test_healthz_and_auth, d)
        made = []
        t.run(create_files_preview, d, made)
        sid = made[0] if made else None
        if sid:
            for fn in (test_container_hardening, test_file_job_fds, test_exec, test_traversal, test_bad_input,
                       test_random_requests, test_tenants, test_stop_start, test_removed_behind_back, test_restart,
                       test_stale_container,
                       test_delete):
                t.run(fn, d, sid)
        t.run(test_bad_image, d)
        t.run(test_docker_down_at_start, d)
        # A running sandbox of ours while another daemon starts beside it.
        keep = create(t, d)
        t.run(test_quota, d)
        t.run(test_tenant_ceilings)
        if keep:
            t.check(d.request("GET", "/v1/sandboxes/%s" % keep["id"]).json()["state"] == "running",
                    "our sandbox still runs after the other daemon's reconcile")
            d.request("DELETE", "/v1/sandboxes/%s" % keep["id"])
        t.run(test_base_image_starter_app)
    finally:
        if t.failed:
            print("---- daemon log (tail) ----\n" + d.logs())
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
