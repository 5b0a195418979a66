#!/usr/bin/env python3
"""Black-box scenarios for the terminal (issue 8 item 8, docs/terminal.md):
a real daemon, real dockerd, a real busybox container running the real
agentd, and python3-websockets as the client. GET .../terminal upgraded to
a WebSocket: `echo hi` read back; a resize seen by `stty size`; `exit 3` in
the shell closes the WebSocket with 1000 "exit 3"; the client closing ends
the shell; the key offered as the subprotocol bearer.<key>; 401, 426 and
409 refusals; a sandbox with idle_timeout = 3s kept running past it while
the terminal is open, stopped after it closes.

Prints "N passed, N failed"; exits 77 without Docker or websockets.
"""
import asyncio
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, TEST_IMAGE, ensure_docker, ensure_test_image, wait_for  # noqa: E402

try:
    import websockets
except ImportError:
    # Debian's python3-websockets, when python3 is another interpreter.
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None

TEMPLATES = {
    "default": {"image": TEST_IMAGE, "port": "3000", "memory": "64m", "cpus": "0.5",
                "pids_limit": "64"},
}


def url(d, sid, query=""):
    return "ws://127.0.0.1:%d/v1/sandboxes/%s/terminal%s" % (d.port, sid, query)


async def connect(d, sid, query="", auth=True, subprotocols=None):
    headers = {"Authorization": "Bearer %s" % d.key()} if auth else {}
    return await asyncio.wait_for(websockets.connect(
        url(d, sid, query), extra_headers=headers, subprotocols=subprotocols,
        open_timeout=20, max_size=2 ** 20), 25)


async def read_until(ws, needle, timeout=15):
    """Screen bytes until needle appears (bounded in time)."""
    out = b""
    deadline = time.time() + timeout
    while needle not in out and time.time() < deadline:
        try:
            m = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.time()))
        except asyncio.TimeoutError:
            break
        out += m if isinstance(m, bytes) else m.encode()
    return out


async def wait_closed(ws, timeout=15):
    """Drain until the server closes; (code, reason) or None on timeout."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.time()))
    except websockets.ConnectionClosed as e:
        return (e.code, e.reason)
    except asyncio.TimeoutError:
        return None
    return None


def create(t, d, body=None):
    r = d.request("POST", "/v1/sandboxes", body or {})
    t.check(r.status == 201, "create answers 201: %r" % r)
    return r.json()["id"] if r.status == 201 else None


def state(d, sid):
    r = d.request("GET", "/v1/sandboxes/%s" % sid)
    return r.json().get("state") if r.status == 200 else None


def raw_get(d, path, headers, version="1.1"):
    """A plain HTTP/1.x GET on a socket: the status code."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
    try:
        h = "GET %s HTTP/%s\r\nHost: 127.0.0.1:%d\r\n" % (path, version, d.port)
        for k, v in headers.items():
            h += "%s: %s\r\n" % (k, v)
        s.sendall(h.encode() + b"\r\n")
        data = b""
        while b"\r\n" not in data:
            c = s.recv(4096)
            if not c:
                break
            data += c
        return int(data.split()[1]) if data else 0
    finally:
        s.close()


# --- tests ----------------------------------------------------------------

def test_echo(t, d, ctx):
    async def go():
        ws = await connect(d, ctx["sid"], "?cols=100&rows=30")
        await ws.send(b"echo h\"\"i\n")
        out = await read_until(ws, b"hi\r\n")
        t.check(b"hi\r\n" in out, "echo hi comes back: %r" % out[-200:])
        await ws.send("pwd\n")      # a text frame that is no resize: data
        out = await read_until(ws, b"/workspace\r\n")
        t.check(b"/workspace\r\n" in out, "the shell runs in /workspace: %r" % out[-200:])
        await ws.send("stty size\n")
        out = await read_until(ws, b"30 100")
        t.check(b"30 100" in out, "cols/rows from the query: %r" % out[-200:])
        await ws.close()
    asyncio.run(go())


def test_resize(t, d, ctx):
    async def go():
        ws = await connect(d, ctx["sid"])
        await ws.send('{"resize":[132,43]}')
        await ws.send(b"stty size\n")
        out = await read_until(ws, b"43 132")
        t.check(b"43 132" in out, "stty size shows the resize: %r" % out[-200:])
        await ws.send('{"resize":[0,43]}')     # out of range: typed as data
        await ws.send(b"\x03stty size\n")
        out = await read_until(ws, b"43 132")
        t.check(b"43 132" in out, "a bad resize changes nothing: %r" % out[-200:])
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)
        t.check(True, "ping answered by a pong")
        await ws.close()
    asyncio.run(go())


def test_bulk_output(t, d, ctx):
    """4 MB of screen output to a client that reads slowly at first: all of
    it arrives, in order (backpressure, not loss); then a message over
    1 MiB closes with 1009."""
    async def go():
        ws = await connect(d, ctx["sid"])
        await ws.send(b"stty -echo; head -c 4000000 /dev/zero | tr '\\0' x; echo; echo E''ND\n")
        await asyncio.sleep(3)      # let the buffers fill up
        out = await read_until(ws, b"END", timeout=60)
        run = max((len(m) for m in re.findall(b"x{1000,}", out)), default=0)
        t.check(run == 4000000, "all 4 MB arrive, unbroken: %d" % run)
        t.check(b"\r\nEND" in out, "then the next command's output: %r" % out[-50:])
        await ws.send(b"y" * (1024 * 1024 + 1))
        got = await wait_closed(ws)
        t.check(got is not None and got[0] == 1009, "a message over 1 MiB: 1009 %r" % (got,))
    asyncio.run(go())


def test_exit_closes(t, d, ctx):
    async def go():
        ws = await connect(d, ctx["sid"])
        await ws.send(b"exit 3\n")
        got = await wait_closed(ws)
        t.check(got == (1000, "exit 3"), "exit 3 closes with 1000 'exit 3': %r" % (got,))
    asyncio.run(go())


def test_last_output_then_close(t, d, ctx):
    """A shell that prints and exits at once (both in one read of agentd's):
    its last output arrives before the close, and the connection ends.
    Used to lose both: wslay sent the close ahead of the queued output and
    the connection then stayed open until the client gave up."""
    async def go():
        for i in range(5):
            ws = await connect(d, ctx["sid"])
            t0 = time.time()
            await ws.send(b"echo last-wo''rds-%d; exit 4\n" % i)
            out = b""
            got = None
            try:
                while time.time() - t0 < 10:
                    m = await asyncio.wait_for(ws.recv(), max(0.05, 10 - (time.time() - t0)))
                    out += m if isinstance(m, bytes) else m.encode()
            except websockets.ConnectionClosed as e:
                got = (e.code, e.reason)
            except asyncio.TimeoutError:
                pass
            await ws.wait_closed()
            took = time.time() - t0
            if not t.check(b"last-words-%d" % i in out and got == (1000, "exit 4") and took < 5,
                           "try %d: the output, then 1000 'exit 4', then the end, in %.1f s: %r %r"
                           % (i, took, got, out[-120:])):
                break
    asyncio.run(go())


def test_client_close_ends_shell(t, d, ctx):
    sid = ctx["sid"]

    async def go():
        ws = await connect(d, sid)
        await ws.send(b"echo $$ > /tmp/term.pid; echo sa''ved\n")
        out = await read_until(ws, b"saved")
        t.check(b"saved" in out, "pid saved: %r" % out[-200:])
        await ws.close()
        t.check(ws.close_code == 1000, "client close answered: %r" % ws.close_code)
    asyncio.run(go())
    cmd = {"cmd": ["sh", "-c", "kill -0 $(cat /tmp/term.pid) 2>/dev/null && echo alive || echo gone"]}
    ok = wait_for(lambda: d.request("POST", "/v1/sandboxes/%s/exec" % sid, cmd).json()
                  .get("stdout", "").strip() == "gone", timeout=10, interval=0.3)
    t.check(ok, "the shell ended after the client closed")


def test_subprotocol_auth(t, d, ctx):
    async def go():
        ws = await connect(d, ctx["sid"], auth=False,
                           subprotocols=["sandboxd.terminal", "bearer." + d.key()])
        t.check(ws.subprotocol == "sandboxd.terminal",
                "the server picks sandboxd.terminal, never the key: %r" % ws.subprotocol)
        await ws.send(b"echo s''ub\n")
        out = await read_until(ws, b"sub\r\n")
        t.check(b"sub\r\n" in out, "a key as subprotocol opens the terminal: %r" % out[-200:])
        await ws.close()
    asyncio.run(go())


def test_refusals(t, d, ctx):
    sid = ctx["sid"]
    path = "/v1/sandboxes/%s/terminal" % sid
    ws_h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    st = raw_get(d, path, ws_h)
    t.check(st == 401, "no key: 401 (%r)" % st)
    st = raw_get(d, path, dict(ws_h, **{"Sec-WebSocket-Protocol": "bearer.nope"}))
    t.check(st == 401, "a bad key as subprotocol: 401 (%r)" % st)
    auth = {"Authorization": "Bearer %s" % d.key()}
    st = raw_get(d, path, auth)
    t.check(st == 426, "no Upgrade: 426 (%r)" % st)
    st = raw_get(d, path + "?cols=5000", dict(ws_h, **auth))
    t.check(st == 400, "cols out of range: 400 (%r)" % st)
    st = raw_get(d, "/v1/sandboxes/00000000000000000000000000/terminal", dict(ws_h, **auth))
    t.check(st == 404, "unknown sandbox: 404 (%r)" % st)
    st = raw_get(d, path, dict(ws_h, **auth), version="1.0")
    t.check(st == 505, "HTTP/1.0 cannot upgrade: 505 (%r)" % st)


def test_h2_extended_connect(t, d, ctx):
    try:
        import h2.settings
        from test_h2 import H2, Transport, ws_frame, ws_parse
    except ImportError as e:
        t.check(True, "skip h2: %s" % e)
        return
    c = H2(Transport("h2c", d.port))
    try:
        c.wait(lambda: h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in c.remote_settings, 5)
        sid = c.request("127.0.0.1:%d" % d.port, "/v1/sandboxes/%s/terminal" % ctx["sid"],
                        method="CONNECT", end=False, extra=[(":protocol", "websocket")],
                        headers={"sec-websocket-version": "13",
                                 "authorization": "Bearer %s" % d.key()})
        c.wait(lambda: c.streams[sid]["headers"] is not None or c.done(sid), 20)
        st = c.streams[sid]
        hd = st["headers"] or {}
        t.check(hd.get(":status") == "200", "extended CONNECT to the terminal: 200 %r" % hd)
        c.send_body(sid, ws_frame(b"echo h''2c\n", opcode=2), end=False)
        screen = bytearray()

        def seen():
            while True:
                p = ws_parse(st["data"])
                if p is None:
                    break
                st["data"] = bytearray(p[2])
                screen.extend(p[1])
            return b"h2c\r\n" in screen
        c.wait(seen, 15)
        t.check(b"h2c\r\n" in screen, "a shell over an h2 stream: %r" % bytes(screen[-200:]))
        c.send_body(sid, ws_frame(b"exit 4\n", opcode=2), end=False)
        c.wait(lambda: c.done(sid), 15)
        frames = []
        while True:
            p = ws_parse(st["data"])
            if p is None:
                break
            st["data"] = bytearray(p[2])
            frames.append(p)
        close = [f for f in frames if f[0] == 8]
        t.check(c.done(sid) and close and close[0][1] == b"\x03\xe8exit 4",
                "exit 4 closes the stream with 1000 'exit 4': %r" % close)
    finally:
        c.close()


def test_kept_awake(t, d, ctx):
    sid = create(t, d)
    if sid is None:
        return
    ok = wait_for(lambda: state(d, sid) == "running", timeout=30, interval=0.3)
    t.check(ok, "the sandbox runs")

    async def go():
        ws = await connect(d, sid)
        await ws.send(b"echo u''p\n")
        out = await read_until(ws, b"up\r\n")
        t.check(b"up\r\n" in out, "terminal open: %r" % out[-200:])
        await asyncio.sleep(7)      # idle_timeout is 3 s
        t.check(state(d, sid) == "running", "running past idle_timeout while the terminal is open")
        await ws.send(b"echo s''till\n")
        out = await read_until(ws, b"still\r\n")
        t.check(b"still\r\n" in out, "the terminal still answers: %r" % out[-200:])
        await ws.close()
    asyncio.run(go())
    ok = wait_for(lambda: state(d, sid) in ("stopped", "paused"), timeout=20, interval=0.3)
    t.check(ok, "stopped for idleness after the terminal closed: %r" % state(d, sid))
    st = raw_get(d, "/v1/sandboxes/%s/terminal" % sid,
                 {"Authorization": "Bearer %s" % d.key(), "Upgrade": "websocket",
                  "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    t.check(st == 409, "a stopped sandbox: 409 (%r)" % st)


def main():
    if websockets is None:
        print("python3-websockets is not installed: skipping the terminal tests")
        return 77
    if not ensure_docker():
        print("docker is not available: skipping the terminal tests")
        return 77
    ensure_test_image()
    t = Runner()
    ctx = {}
    d = Daemon(extra="idle_timeout = 3s\nwake_timeout = 30s", templates=dict(TEMPLATES))
    try:
        d.start()
        # The idle reaper must not stop the shared sandbox between tests.
        ctx["sid"] = create(t, d, {"idle_timeout_s": 600})
        if ctx["sid"]:
            wait_for(lambda: state(d, ctx["sid"]) == "running", timeout=30, interval=0.3)
            for fn in (test_echo, test_resize, test_bulk_output, test_exit_closes, test_last_output_then_close,
                       test_client_close_ends_shell,
                       test_subprotocol_auth, test_refusals, test_h2_extended_connect,
                       test_kept_awake):
                t.run(fn, d, ctx)
    finally:
        if t.failed:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
