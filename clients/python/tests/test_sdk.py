"""The Python SDK against a real sandboxd with real containers.

Run by tests/blackbox/test_sdk_python.py, which starts the daemon and sets:
  SANDBOXD_URL, SANDBOXD_API_KEY      a tenant's key (busybox template "default")
  SANDBOXD_OTHER_KEY                  another tenant's key
  SANDBOXD_ADMIN_KEY                  an admin key (metrics)
  SANDBOXD_BASE_TEMPLATE              a template on sandboxd/base (git: revert), or empty
  SANDBOXD_TLS_URL, SANDBOXD_TLS_CA   the same daemon over TLS and its CA file, or empty
Without SANDBOXD_URL every test here skips, saying why.
"""
from __future__ import annotations

import http.client
import os
import socket
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sandboxd  # noqa: E402
from sandboxd import (BadRequest, NotFound, Sandboxd, SandboxdError, Timeout,  # noqa: E402
                      Unauthorized)

URL = os.environ.get("SANDBOXD_URL", "")
KEY = os.environ.get("SANDBOXD_API_KEY", "")
OTHER_KEY = os.environ.get("SANDBOXD_OTHER_KEY", "")
ADMIN_KEY = os.environ.get("SANDBOXD_ADMIN_KEY", "")
BASE_TEMPLATE = os.environ.get("SANDBOXD_BASE_TEMPLATE", "")
TLS_URL = os.environ.get("SANDBOXD_TLS_URL", "")
TLS_CA = os.environ.get("SANDBOXD_TLS_CA", "")

client: Sandboxd
shared: sandboxd.Sandbox


def setUpModule() -> None:
    global client, shared
    if not URL or not KEY:
        raise unittest.SkipTest("SANDBOXD_URL and SANDBOXD_API_KEY are not set "
                                "(tests/blackbox/test_sdk_python.py sets them)")
    client = Sandboxd(URL, KEY, timeout=30)
    shared = client.sandboxes.create(labels={"suite": "py-sdk"})


def tearDownModule() -> None:
    for s in client.sandboxes.list(label="suite:py-sdk"):
        try:
            s.delete()
        except SandboxdError:
            pass


def fetch_preview(url: str, headers: dict | None = None, timeout: float = 10.0):
    """GET a preview URL through the daemon's own address: *.localhost
    names need no resolver here, only the Host header."""
    u = urllib.parse.urlsplit(url)
    api = urllib.parse.urlsplit(URL)
    conn = http.client.HTTPConnection(api.hostname or "127.0.0.1", api.port, timeout=timeout)
    try:
        conn.request("GET", (u.path or "/") + ("?" + u.query if u.query else ""),
                     headers=dict({"Host": u.netloc}, **(headers or {})))
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wait_until(fn, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


class Relay:
    """A loopback TCP relay to the daemon that cuts the first task-events
    connection after `cut_after` whole events and a few bytes of the next
    (mid-event), so the SDK must resume with Last-Event-ID."""

    def __init__(self, cut_after: int = 3) -> None:
        api = urllib.parse.urlsplit(URL)
        self.target = (api.hostname or "127.0.0.1", api.port or 80)
        self.cut_after = cut_after
        self.heads: list[bytes] = []
        self.cuts = 0
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.done:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket) -> None:
        u = socket.create_connection(self.target, timeout=30)
        c.settimeout(30)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(65536)
                if not chunk:
                    return
                head += chunk
            with self.lock:
                self.heads.append(head)
                cut = b"/events" in head.split(b"\r\n", 1)[0] and self.cuts == 0
                if cut:
                    self.cuts += 1
            u.sendall(head)
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            sent = b""
            while True:
                data = u.recv(65536)
                if not data:
                    return
                if cut:
                    start = len(sent)
                    sent += data
                    pos, n = -2, 0
                    while n < self.cut_after:
                        pos = sent.find(b"\n\n", pos + 2)
                        if pos < 0:
                            break
                        n += 1
                    if pos >= 0:
                        # The nth event whole, then 12 bytes of the next one.
                        c.sendall(sent[start:min(len(sent), pos + 2 + 12)])
                        return
                c.sendall(data)
        except OSError:
            return
        finally:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    @staticmethod
    def _pump(c: socket.socket, u: socket.socket) -> None:
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                u.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.done = True
        self.srv.close()


class TestService(unittest.TestCase):
    def test_healthz(self) -> None:
        h = client.healthz()
        self.assertEqual(h["status"], "ok")
        self.assertIn("version", h)

    def test_metrics_admin_only(self) -> None:
        if not ADMIN_KEY:
            self.skipTest("no SANDBOXD_ADMIN_KEY")
        text = Sandboxd(URL, ADMIN_KEY).metrics()
        self.assertIn("sandboxd_sandboxes", text)
        with self.assertRaises(Unauthorized) as cm:
            client.metrics()
        self.assertEqual(cm.exception.status, 401)


class TestSandboxes(unittest.TestCase):
    def test_create_get_list_stop_start_delete(self) -> None:
        s = client.sandboxes.create(labels={"suite": "py-sdk", "case": "lifecycle"}, idle_timeout_s=600)
        self.assertEqual(s.state, "running")
        self.assertEqual(len(s.id), 26)
        self.assertEqual(s.labels["case"], "lifecycle")
        self.assertEqual(s.data["idle_timeout_s"], 600)
        g = client.sandboxes.get(s.id)
        self.assertEqual((g.id, g.tenant, g.template), (s.id, s.tenant, s.template))
        ids = [x.id for x in client.sandboxes.list(label={"case": "lifecycle"})]
        self.assertEqual(ids, [s.id])
        self.assertIn(s.id, [x.id for x in client.sandboxes.list(state="running")])
        self.assertNotIn(s.id, [x.id for x in client.sandboxes.list(state="stopped")])
        s.files.write("kept.txt", "kept\n")
        self.assertIs(s.stop(), s)
        self.assertEqual(s.state, "stopped")
        self.assertEqual(s.refresh().state, "stopped")
        self.assertEqual(s.files.read_text("kept.txt"), "kept\n", "files are kept while stopped")
        self.assertEqual(s.start().state, "running")
        self.assertEqual(s.files.read_text("kept.txt"), "kept\n")
        s.delete()
        with self.assertRaises(NotFound):
            client.sandboxes.get(s.id)
        with self.assertRaises(NotFound):
            client.sandboxes.delete(s.id)

    def test_typed_errors(self) -> None:
        with self.assertRaises(NotFound) as cm:
            client.sandboxes.get("0" * 26)
        e = cm.exception
        self.assertEqual((e.status, e.code), (404, "not_found"))
        self.assertTrue(e.message)
        self.assertIsInstance(e, SandboxdError)
        with self.assertRaises(BadRequest) as cm2:
            client.sandboxes.get("not-a-ulid")
        self.assertEqual((cm2.exception.status, cm2.exception.code), (400, "bad_request"))
        with self.assertRaises(BadRequest) as cm3:
            client.sandboxes.create(memory_mb=1)
        self.assertIn("memory_mb", cm3.exception.message)
        with self.assertRaises(BadRequest):
            shared.files.read("../etc/passwd")
        with self.assertRaises(Unauthorized) as cm4:
            Sandboxd(URL, "wrong-" + "x" * 40).sandboxes.list()
        self.assertEqual((cm4.exception.status, cm4.exception.code), (401, "unauthorized"))
        with self.assertRaises(Unauthorized):
            Sandboxd(URL, "").sandboxes.list()
        if OTHER_KEY:
            with self.assertRaises(NotFound):
                Sandboxd(URL, OTHER_KEY).sandboxes.get(shared.id)
        with self.assertRaises(NotFound):
            shared.tasks.get("0" * 26)


class TestFiles(unittest.TestCase):
    def test_bytes_text_list_remove(self) -> None:
        f = shared.files
        blob = bytes(range(256)) * 40
        self.assertTrue(f.write("data/blob.bin", blob), "a new file")
        self.assertFalse(f.write("data/blob.bin", blob), "replaced")
        self.assertEqual(f.read("data/blob.bin"), blob)
        f.write("data/note.txt", "héllo wörld ✓\n")
        self.assertEqual(f.read_text("data/note.txt"), "héllo wörld ✓\n")
        self.assertEqual(f.read("data/note.txt"), "héllo wörld ✓\n".encode())
        entries = f.list("data")
        self.assertEqual([e.name for e in entries], ["blob.bin", "note.txt"])
        self.assertEqual(entries[0].type, "file")
        self.assertEqual(entries[0].size, len(blob))
        self.assertIn("data", [e.name for e in f.list()])
        self.assertEqual([e.type for e in f.list() if e.name == "data"], ["dir"])
        f.remove("data/note.txt")
        with self.assertRaises(NotFound):
            f.read("data/note.txt")
        f.remove("data")
        self.assertNotIn("data", [e.name for e in f.list()])

    def test_awkward_paths(self) -> None:
        f = shared.files
        for path in ("my notes/a file #1?.txt", "ünïcødé/日本語 ファイル.txt", "100%/a+b&c=d;e.txt"):
            with self.subTest(path=path):
                f.write(path, path)
                self.assertEqual(f.read_text(path), path)
                top, name = path.split("/")
                self.assertEqual([e.name for e in f.list(top)], [name])
                # The shell sees the same name.
                r = shared.exec(["cat", "/workspace/" + path])
                self.assertEqual(r.stdout, path)
                f.remove(top)
                with self.assertRaises(NotFound):
                    f.read(path)


class TestExec(unittest.TestCase):
    def test_buffered(self) -> None:
        r = shared.exec("echo out; echo err >&2; exit 3")
        self.assertEqual((r.exit_code, r.stdout, r.stderr, r.timed_out, r.truncated),
                         (3, "out\n", "err\n", False, False))
        self.assertFalse(r.ok)
        r = shared.exec(["sh", "-c", "echo $FOO; pwd"], cwd="/tmp", env={"FOO": "bar"})
        self.assertEqual(r.stdout, "bar\n/tmp\n")
        self.assertTrue(r.ok)
        r = shared.exec(["sleep", "5"], timeout_s=1)
        self.assertTrue(r.timed_out)

    def test_stream(self) -> None:
        t0 = time.monotonic()
        seen = []
        first_at = None
        for ev in shared.exec_stream("for i in 1 2 3; do echo line $i; sleep 0.3; done; echo oops >&2; exit 2"):
            if first_at is None:
                first_at = time.monotonic() - t0
            seen.append(ev)
        outs = [(e.stream, e.text) for e in seen if e.event == "output"]
        self.assertEqual(outs, [("stdout", "line 1\n"), ("stdout", "line 2\n"), ("stdout", "line 3\n"),
                                ("stderr", "oops\n")])
        self.assertEqual(seen[-1].event, "exit")
        self.assertEqual(seen[-1].data["exit_code"], 2)
        self.assertLess(first_at or 99.0, 0.8, "the first line came while the command ran")

    def test_stream_bad_request(self) -> None:
        with self.assertRaises(BadRequest):
            list(shared.exec_stream(["true"], cwd="relative"))


class TestTasks(unittest.TestCase):
    def test_events_resume_after_a_dropped_connection(self) -> None:
        relay = Relay(cut_after=3)
        try:
            via = Sandboxd(relay.url, KEY, timeout=30).sandbox(shared.id)
            task = via.tasks.run("for i in $(seq 1 20); do echo line $i; sleep 0.05; done")
            self.assertIn(task.state, ("queued", "running"))
            evs = list(task.events(timeout=60))
        finally:
            relay.close()
        ids = [e.id or 0 for e in evs]
        self.assertEqual(ids, sorted(set(ids)), "every event once, in order: %r" % ids)
        self.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))), "no event lost: %r" % ids)
        self.assertEqual([e.text for e in evs if e.event == "output"], ["line %d\n" % i for i in range(1, 21)])
        self.assertEqual(evs[-1].event, "exit")
        self.assertEqual(evs[-1].data["state"], "succeeded")
        self.assertEqual(relay.cuts, 1)
        ev_heads = [h for h in relay.heads if b"/events" in h.split(b"\r\n", 1)[0]]
        self.assertGreaterEqual(len(ev_heads), 2, "it reconnected")
        self.assertIn(b"last-event-id: 3\r\n", ev_heads[1].lower(), "resumed after the 3rd event")
        # Nothing is left after the exit: the server answers 204.
        self.assertEqual(list(task.events(after=evs[-1].id)), [])
        # The whole log replays on a fresh iterator.
        self.assertEqual([e.id for e in shared.tasks.get(task.id).events()], ids)
        task = shared.tasks.get(task.id)  # the relay is gone: straight to the daemon
        self.assertEqual(task.wait(10).state, "succeeded")
        self.assertEqual(task.exit_code, 0)
        self.assertIn(task.id, [t.id for t in shared.tasks.list()])

    def test_cancel(self) -> None:
        task = shared.tasks.run(["sh", "-c", "echo started; sleep 60"])
        it = task.events(timeout=30)
        for ev in it:
            if ev.event == "output":
                break
        self.assertIs(task.cancel(), task)
        rest = list(it)
        self.assertEqual(rest[-1].event, "exit")
        self.assertEqual(rest[-1].data["state"], "cancelled")
        self.assertEqual(task.wait(15).state, "cancelled")
        with self.assertRaises(sandboxd.Conflict):
            task.cancel()
        with self.assertRaises(sandboxd.Conflict):
            task.revert()  # a command task takes no checkpoint

    def test_wait_timeout(self) -> None:
        task = shared.tasks.run("sleep 30")
        t0 = time.monotonic()
        with self.assertRaises(Timeout):
            task.wait(0.5)
        self.assertLess(time.monotonic() - t0, 5)
        task.cancel()
        task.wait(15)

    def test_revert(self) -> None:
        if not BASE_TEMPLATE:
            self.skipTest("no base-image template (sandboxd/base:latest is not built): revert needs git")
        s = client.sandboxes.create(template=BASE_TEMPLATE, labels={"suite": "py-sdk"})
        try:
            s.files.write("src/App.jsx", "original\n")
            # A stand-in for the Claude Code CLI that edits the file it is told to.
            s.files.write("bin/claude", "#!/bin/sh\n"
                          "printf '{\"type\":\"result\",\"result\":\"ok\"}\\n'\n"
                          "echo 'changed by the agent' > \"$STANDIN_WRITE\"\n")
            self.assertEqual(s.exec(["chmod", "+x", "/workspace/bin/claude"]).exit_code, 0)
            task = s.tasks.run(agent="claude-code", prompt="make the header red",
                               env={"PATH": "/workspace/bin:/usr/local/bin:/usr/bin:/bin",
                                    "STANDIN_WRITE": "src/App.jsx"})
            evs = list(task.events(timeout=90))
            self.assertEqual(evs[-1].event, "exit")
            self.assertIn("agent", [e.event for e in evs])
            self.assertEqual(task.wait(30).state, "succeeded", task.data)
            self.assertEqual(s.files.read_text("src/App.jsx"), "changed by the agent\n")
            self.assertIn("src/App.jsx", task.changed_files or [])
            self.assertIs(task.revert(), task)
            self.assertEqual(s.files.read_text("src/App.jsx"), "original\n")
        finally:
            s.delete()


class TestPreviews(unittest.TestCase):
    def test_preview_url_serves_the_app(self) -> None:
        shared.files.write("index.html", "<h1>hello from the sandbox</h1>\n")
        url = shared.preview_url()
        self.assertTrue(url.startswith("http://%s." % shared.id), url)
        got = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(fetch_preview(url)), 20)
        self.assertTrue(got, "the preview answered 200")
        self.assertIn(b"hello from the sandbox", got[2])
        other = shared.preview_url(port=3001)
        self.assertTrue(other.startswith("http://3001-%s." % shared.id), other)

    def test_preview_token_on_a_private_sandbox(self) -> None:
        s = client.sandboxes.create(visibility="private", labels={"suite": "py-sdk"})
        try:
            s.files.write("index.html", "private app\n")
            status, _, _ = fetch_preview(s.preview_url())
            self.assertEqual(status, 401, "no token, no preview")
            tok = s.preview_token(ttl_s=120)
            self.assertTrue(tok.token.startswith("v1."))
            self.assertIn("sandboxd_token=" + tok.token, tok.url)
            self.assertTrue(tok.expires_at.endswith("Z"))

            def through() -> bytes | None:
                st, h, _ = fetch_preview(tok.url)
                if st != 302:
                    return None
                cookie = h["set-cookie"].split(";", 1)[0]
                st2, _, body = fetch_preview(s.preview_url(), {"Cookie": cookie})
                return body if st2 == 200 else None
            body = wait_until(through, 20)
            self.assertEqual(body, b"private app\n")
            with self.assertRaises(BadRequest):
                s.preview_token(ttl_s=1)
        finally:
            s.delete()


class TestDevServer(unittest.TestCase):
    def test_logs_text_and_follow(self) -> None:
        text = wait_until(lambda: (lambda t: t if "dev-started" in t else None)(shared.logs()), 15)
        self.assertIn("dev-started", text or "")
        lines = shared.logs(follow=True, timeout=20)
        got = []
        for line in lines:
            got.append(line)
            if line.startswith("tick") or len(got) > 50:
                break
        lines.close()
        self.assertTrue(any(x.startswith("tick") for x in got), got)
        self.assertFalse(any(x.endswith("\n") for x in got))

    def test_restart_dev(self) -> None:
        ds = shared.restart_dev()
        self.assertIn("state", ds)
        self.assertIn("restarts", ds)

    def test_terminal(self) -> None:
        with shared.terminal(cols=100, rows=30, timeout=20) as term:
            term.send("echo hi-$((40+2))\n")
            self.assertIn(b"hi-42", term.read_until("hi-42", 15))
            term.resize(120, 40)
            term.send("exit 3\n")
            while term.recv(15) is not None:
                pass
            self.assertEqual(term.exit_code, 3, (term.close_code, term.close_reason))


class TestTLS(unittest.TestCase):
    def test_over_tls(self) -> None:
        if not TLS_URL:
            self.skipTest("no SANDBOXD_TLS_URL (openssl is missing)")
        import ssl
        ctx = ssl.create_default_context(cafile=TLS_CA)
        c = Sandboxd(TLS_URL, KEY, timeout=30, ssl_context=ctx)
        self.assertEqual(c.healthz()["status"], "ok")
        s = c.sandboxes.get(shared.id)
        s.files.write("tls/é x.txt", b"over tls")
        self.assertEqual(s.files.read("tls/é x.txt"), b"over tls")
        self.assertEqual([e.text for e in s.exec_stream("echo a; echo b") if e.event == "output"], ["a\n", "b\n"])
        task = s.tasks.run("echo via-tls")
        self.assertEqual([e.text for e in task.events(timeout=30) if e.event == "output"], ["via-tls\n"])
        with s.terminal(timeout=20) as term:
            term.send("echo tls-$((6*7))\n")
            self.assertIn(b"tls-42", term.read_until("tls-42", 15))
        s.files.remove("tls")
        with self.assertRaises(sandboxd.NetworkError):
            Sandboxd(TLS_URL, KEY, timeout=10).healthz()  # the system's CAs do not know this one


class TestTimeouts(unittest.TestCase):
    def test_call_timeout(self) -> None:
        t0 = time.monotonic()
        with self.assertRaises(Timeout) as cm:
            shared.exec(["sleep", "5"], timeout=0.5)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertIsInstance(cm.exception, SandboxdError)
        self.assertEqual(cm.exception.code, "timeout")

    def test_silent_server(self) -> None:
        # A listener that accepts and never answers.
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        try:
            c = Sandboxd("http://127.0.0.1:%d" % srv.getsockname()[1], KEY, timeout=0.4)
            t0 = time.monotonic()
            with self.assertRaises(Timeout):
                c.healthz()
            with self.assertRaises(Timeout):
                list(sandboxd.Task(c.sandbox(shared.id), {"id": "0" * 26}).events(timeout=1))
            self.assertLess(time.monotonic() - t0, 4)
        finally:
            srv.close()

    def test_refused(self) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(sandboxd.NetworkError):
            Sandboxd("http://127.0.0.1:%d" % port, KEY, timeout=2).healthz()


if __name__ == "__main__":
    unittest.main()
