#!/usr/bin/env python3
"""No secret is ever logged (issue 9, item 3).

A daemon runs with log_level = debug (and an access log, when this build
has `access_log`) while every kind of secret is used, right and wrong:
config keys (`secret` and `secret_hash`), store keys from `sandboxd key
create`, the key made at first start when no [api_key] is configured,
preview tokens (in ?sandboxd_token= and in the cookie), the terminal's
`bearer.<key>` subprotocol, env values given to exec and tasks (where model
API keys travel), and the preview secret file. Then the daemon's stderr and
every file in data_dir (but the two files whose job is to hold a secret)
are searched for each value in the forms it could be written in: none may
appear. The store must not hold a key's secret either.

Config errors about a key do not echo it either (check-config, serve).

Prints "N passed, N failed"; exits 77 without Docker.
"""
import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, SANDBOXD, TEST_IMAGE, ensure_docker, ensure_test_image, wait_for  # noqa: E402

try:
    import websockets
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None

TEMPLATES = {
    "default": {"image": TEST_IMAGE, "port": "3000", "dev_command": "httpd -f -p 3000 -h /workspace",
                "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
}
# Files whose purpose is to hold a secret (mode 0600): not logs.
SECRET_FILES = ("preview-secret", "api-key", "agentd-secret")


def sbx(*args):
    return subprocess.run([SANDBOXD, *args], capture_output=True, text=True, timeout=60)


def forms(value):
    """The ways a secret could end up in a log: as is, %-encoded, and for
    a store key its random part alone; bytes as hex and base64 too."""
    if isinstance(value, bytes):
        out = {value, value.hex().encode(), value.hex().upper().encode(),
               base64.b64encode(value), base64.urlsafe_b64encode(value).rstrip(b"=")}
        return {f for f in out if len(f) >= 16}
    out = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    m = re.match(r"sbx_[0-9a-z]{26}_(.+)$", value)
    if m:
        out.add(m.group(1))
    if value.startswith("v1."):
        out.add(value.rsplit(".", 1)[-1])   # a token's signature
    return {f.encode() for f in out if len(f) >= 16}


def access_log_supported(d):
    """Does this build know access_log? (check-config on a copy)"""
    path = d.config + ".probe"
    with open(d.config) as f:
        conf = f.read()
    with open(path, "w") as f:
        f.write(conf.replace("log_level = debug", "log_level = debug\naccess_log = %s" %
                             os.path.join(d.data_dir, "access.log"), 1))
    r = sbx("check-config", "-c", path)
    os.unlink(path)
    return r.returncode == 0


def raw(d, data, timeout=3):
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            out += c
        return out
    finally:
        s.close()


def read_logs(d):
    """{name: bytes}: the daemon's stderr and every regular file in data_dir
    but the secret files themselves."""
    out = {}
    with open(d.log_path, "rb") as f:
        out["stderr"] = f.read()
    for root, _, files in os.walk(d.data_dir):
        for fn in files:
            p = os.path.join(root, fn)
            if fn in SECRET_FILES or not os.path.isfile(p) or os.path.islink(p):
                continue
            try:
                with open(p, "rb") as f:
                    out[os.path.relpath(p, d.data_dir)] = f.read()
            except OSError:
                pass
    return out


def check_no_leak(t, d, used):
    logs = read_logs(d)
    t.check(len(logs["stderr"]) > 2000 and b"level=debug" in logs["stderr"],
            "the debug log was written (%d bytes)" % len(logs["stderr"]))
    for what, value in used:
        for f in forms(value):
            hits = [name for name, data in logs.items() if f in data]
            t.check(not hits, "%s appears in %s" % (what, hits))
    return logs


async def terminal(d, sid, protos):
    ws = await asyncio.wait_for(websockets.connect(
        "ws://127.0.0.1:%d/v1/sandboxes/%s/terminal" % (d.port, sid), subprotocols=protos,
        open_timeout=20), 25)
    await ws.send(b"echo t''erm\n")
    out = b""
    deadline = time.time() + 15
    while b"term" not in out and time.time() < deadline:
        try:
            m = await asyncio.wait_for(ws.recv(), 1)
        except asyncio.TimeoutError:
            continue
        out += m if isinstance(m, bytes) else m.encode()
    await ws.close()
    return out


def test_secrets_not_logged(t):
    hashed_secret = "h" * 8 + secrets.token_hex(16)
    d = Daemon(templates=dict(TEMPLATES))
    with open(d.config) as f:
        conf = f.read()
    conf += "[api_key hashed]\nsecret_hash = sha256:%s\nadmin = false\n" % \
        hashlib.sha256(hashed_secret.encode()).hexdigest()
    with open(d.config, "w") as f:
        f.write(conf)
    access = access_log_supported(d)
    if access:
        with open(d.config) as f:
            conf = f.read()
        with open(d.config, "w") as f:
            f.write(conf.replace("log_level = debug", "log_level = debug\naccess_log = %s" %
                                 os.path.join(d.tmp, "access.log"), 1))
    else:
        print("  note  this build has no access_log: only stderr and data_dir are searched")
    used = [("config secret (acme)", d.key("acme")), ("config secret (globex)", d.key("globex")),
            ("config secret (root, admin)", d.key("root")), ("secret_hash key's secret", hashed_secret)]
    try:
        d.start()
        # Config keys, right and wrong (a wrong one is a secret someone typed).
        for name in ("acme", "globex", "root"):
            t.check(d.request("GET", "/v1/sandboxes", key=name).status == 200, "%s's key works" % name)
        t.check(d.request("GET", "/v1/sandboxes", raw_key=hashed_secret).status == 200, "secret_hash key works")
        wrong = "wrong-" + secrets.token_hex(20)
        used.append(("a wrong key", wrong))
        t.check(d.request("GET", "/v1/sandboxes", raw_key=wrong).status == 401, "a wrong key: 401")
        t.check(d.request("GET", "/metrics", key="acme").status == 401, "non-admin on /metrics: 401")
        t.check(d.request("POST", "/v1/sandboxes", b"{", raw_key=wrong).status == 401, "a wrong key, a body")

        # Store keys.
        # (for acme, so that it opens acme's terminal below)
        r = sbx("key", "create", "-c", d.config, "acme")
        store_key = next((w for w in r.stdout.split() if w.startswith("sbx_")), None)
        if t.check(r.returncode == 0 and store_key, "key create: %r" % (r.stdout + r.stderr)):
            used.append(("store key (acme)", store_key))
            t.check(d.request("GET", "/v1/sandboxes", raw_key=store_key).status == 200, "the store key works")
            revoked = sbx("key", "create", "-c", d.config, "gone")
            rk = next((w for w in revoked.stdout.split() if w.startswith("sbx_")), None)
            if rk:
                used.append(("revoked store key", rk))
                sbx("key", "revoke", "-c", d.config, "gone", rk[4:30])
                t.check(d.request("GET", "/v1/sandboxes", raw_key=rk).status == 401, "a revoked key: 401")
            forged = store_key[:31] + secrets.token_urlsafe(32)[:len(store_key) - 31]
            used.append(("a forged store key", forged))
            t.check(d.request("GET", "/v1/sandboxes", raw_key=forged).status == 401, "a forged store key: 401")

        # A private sandbox, its tokens in the query and the cookie.
        r = d.request("POST", "/v1/sandboxes", {"visibility": "private"})
        if not t.check(r.status == 201, "create a private sandbox: %r" % r):
            return
        sid = r.json()["id"]
        with open(os.path.join(d.data_dir, "preview-secret"), "rb") as f:
            used.append(("the preview secret", f.read()))
        with open(os.path.join(d.data_dir, "agentd-secret"), "rb") as f:
            used.append(("the agentd secret", f.read()))
        # The sandbox's agentd token, as its container's env carries it.
        cid = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter",
                              "label=io.sandboxd.sandbox=%s" % sid], capture_output=True, text=True).stdout.split()
        env = json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .Config.Env}}", cid[0]],
                                        capture_output=True, text=True).stdout) if cid else []
        tok_env = [e.split("=", 1)[1] for e in env if e.startswith("SANDBOXD_AGENTD_TOKEN=")]
        t.check(len(tok_env) == 1, "the container's env carries an agentd token")
        used += [("the agentd token", v) for v in tok_env]
        d.request("PUT", "/v1/sandboxes/%s/files/index.html" % sid, b"<p>hi</p>\n")
        r = d.request("POST", "/v1/sandboxes/%s/preview-token" % sid, {"ttl_s": 600})
        tok = r.json()["token"] if r.status == 200 else ""
        used.append(("a preview token", tok))
        wait_for(lambda: d.preview(sid, "/index.html?sandboxd_token=" + tok).status == 302, timeout=20)
        r = d.preview(sid, "/index.html?x=1&sandboxd_token=" + tok)
        t.check(r.status == 302 and "sandboxd_token=" in r.headers.get("set-cookie", ""),
                "?sandboxd_token=: 302 and the cookie: %r" % r)
        r = d.preview(sid, "/index.html", headers={"Cookie": "sandboxd_token=" + tok})
        t.check(r.status == 200, "the cookie opens it: %r" % r)
        r = d.preview(sid, "/index.html", headers={"Cookie": "sandboxd_token=" + tok, "Accept": "application/json"})
        r = d.preview(sid, "/index.html", method="POST", body=b"x", headers={"Cookie": "a=b"})
        bad = tok[:-8] + ("A" * 8 if not tok.endswith("A" * 8) else "B" * 8)
        used.append(("a tampered preview token", bad))
        t.check(d.preview(sid, "/?sandboxd_token=" + bad).status == 401, "a tampered token: 401")
        t.check(d.preview(sid, "/", headers={"Cookie": "sandboxd_token=" + bad}).status == 401,
                "a tampered cookie: 401")
        # Over HTTP/2 (prior knowledge) too, if nghttp is there.
        if subprocess.run(["which", "nghttp"], capture_output=True).returncode == 0:
            subprocess.run(["nghttp", "-n", "-H", ":authority: %s.preview.localhost:%d" % (sid, d.port),
                            "http://127.0.0.1:%d/?sandboxd_token=%s" % (d.port, tok)],
                           capture_output=True, timeout=30)
            subprocess.run(["nghttp", "-n", "-H", "authorization: Bearer " + d.key("acme"),
                            "http://127.0.0.1:%d/v1/sandboxes" % d.port], capture_output=True, timeout=30)

        # Malformed requests carrying secrets: what the parser logs of them.
        raw(d, ("GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Bad\x01Header: y\r\n\r\n" % d.key("acme")).encode())
        raw(d, ("GET /?sandboxd_token=%s HTTP/1.1\r\nHost: %s.preview.localhost\r\nCookie: sandboxd_token=%s\r\n"
                "Content-Length: nope\r\n\r\n" % (tok, sid, tok)).encode())
        raw(d, ("GET /?sandboxd_token=%s\x7f HTTP/1.1\r\nHost: %s.preview.localhost\r\n\r\n" % (tok, sid)).encode())

        # exec and task env: where model API keys travel.
        env_secret = "sk-ant-" + secrets.token_hex(24)
        used.append(("an exec env value", env_secret))
        r = d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                      {"cmd": ["sh", "-c", "test -n \"$MY_KEY\" && echo set"], "env": {"MY_KEY": env_secret}})
        t.check(r.status == 200 and "set" in r.json().get("stdout", ""), "exec with a secret env: %r" % r)
        r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["true"], "env": {"MY_KEY": env_secret}},
                      headers={"Accept": "text/event-stream"})
        task_secret = "sk-" + secrets.token_hex(24)
        used.append(("a task env value", task_secret))
        r = d.request("POST", "/v1/sandboxes/%s/tasks" % sid,
                      {"agent": "command", "cmd": ["sh", "-c", "test -n \"$OPENAI_API_KEY\" && echo ok"],
                       "env": {"OPENAI_API_KEY": task_secret}})
        tid = "none"
        if t.check(r.status == 202, "a task with a secret env: %r" % r):
            tid = r.json()["id"]
            wait_for(lambda: d.request("GET", "/v1/sandboxes/%s/tasks/%s" % (sid, tid)).json().get("finished_at"),
                     timeout=30, interval=0.2)
            d.request("GET", "/v1/sandboxes/%s/tasks/%s/events" % (sid, tid))

        # The terminal's subprotocol key, right and wrong.
        if websockets is None:
            print("  note  python3-websockets missing: the subprotocol key is not tried")
        else:
            out = asyncio.run(terminal(d, sid, ["sandboxd.terminal", "bearer." + d.key("acme")]))
            t.check(b"term" in out, "a terminal by subprotocol key: %r" % out[-100:])
            if store_key:
                out = asyncio.run(terminal(d, sid, ["sandboxd.terminal", "bearer." + store_key]))
                t.check(b"term" in out, "a terminal by a store key: %r" % out[-100:])
            wrong_ws = "wrongws-" + secrets.token_hex(20)
            used.append(("a wrong subprotocol key", wrong_ws))
            r = raw(d, ("GET /v1/sandboxes/%s/terminal HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Protocol: sandboxd.terminal, bearer.%s\r\n\r\n" % (sid, wrong_ws)).encode())
            t.check(r.startswith(b"HTTP/1.1 401"), "a wrong subprotocol key: 401 %r" % r[:40])

        # The sandbox stays (its task log, workspace and home are searched
        # too); shut down, and so flush, before reading.
        t.check(d.stop() == 0, "the daemon exits 0")
        logs = check_no_leak(t, d, used)
        # The search finds what is there: the sandbox id in the log, the
        # task's output in its event log.
        t.check(sid.encode() in logs["stderr"] and any(b'"ok' in v for k, v in logs.items()
                                                        if k.startswith("tasks/") and tid in k),
                "the search finds what is written (%s)" % sorted(logs)[:8])
        if access:
            with open(os.path.join(d.tmp, "access.log"), "rb") as f:
                data = f.read()
            t.check(data, "the access log has lines")
            for what, value in used:
                for f in forms(value):
                    t.check(f not in data, "%s appears in the access log" % what)
        db = logs.get("sandboxd.db", b"") + logs.get("sandboxd.db-wal", b"")
        t.check(db, "the store was searched too")
        print("  searched %d bytes of stderr and %d files in data_dir for %d secrets" %
              (len(logs["stderr"]), len(logs) - 1, len(used)))
    finally:
        d.cleanup()


def test_generated_key_not_logged(t):
    """With no [api_key], the daemon makes one; it goes in <data_dir>/api-key
    and nowhere else."""
    d = Daemon(templates=dict(TEMPLATES))
    d.keys = {}     # (the harness takes an empty keys= as "the defaults")
    d.write_config()
    try:
        d.start()
        with open(os.path.join(d.data_dir, "api-key")) as f:
            key = f.read().strip()
        t.check(len(key) >= 32, "the generated key: %d chars" % len(key))
        t.check(d.request("GET", "/v1/sandboxes", raw_key=key).status == 200, "the generated key works")
        t.check(d.request("GET", "/metrics", raw_key=key).status == 200, "and is admin")
        t.check(d.stop() == 0, "the daemon exits 0")
        check_no_leak(t, d, [("the generated key", key)])
    finally:
        d.cleanup()


def test_config_errors_quiet(t):
    """A config error names the file, the line and the key, never the
    secret that is wrong (check-config and serve both)."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="sbxsecret-")
    short = "S" + secrets.token_hex(8)
    badhash = "sha256:" + secrets.token_hex(20) + "zz"
    dup = "D" * 8 + secrets.token_hex(16)
    path = os.path.join(tmp, "c.conf")
    with open(path, "w") as f:
        f.write("listen = 127.0.0.1:1\ndata_dir = %s\n[api_key a]\nsecret = %s\n"
                "[api_key b]\nsecret_hash = %s\n[api_key c]\nsecret = %s\n[api_key d]\nsecret = %s\n"
                % (os.path.join(tmp, "data"), short, badhash, dup, dup))
    try:
        for args in (["check-config", "-c", path], ["serve", "-c", path]):
            r = sbx(*args)
            out = r.stdout + r.stderr
            t.check(r.returncode == 2 and "c.conf:4" in out and "c.conf:6" in out,
                    "%s: exit 2, each error with its line: %r" % (args[0], out))
            for what, v in (("a short secret", short), ("a bad secret_hash", badhash[7:]), ("a duplicate", dup)):
                t.check(v not in out, "%s: %s is not echoed: %r" % (args[0], what, out))
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if not ensure_docker():
        print("docker is not available: skipping the secrets test")
        return 77
    ensure_test_image()
    t = Runner()
    t.run(test_config_errors_quiet)
    t.run(test_secrets_not_logged)
    t.run(test_generated_key_not_logged)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
