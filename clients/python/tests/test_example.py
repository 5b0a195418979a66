"""examples/app_builder.py run once against the real daemon: the page with
the preview iframe, a prompt run as a task (agent `command`), its events
streamed back as SSE, and the preview showing what the task built."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

from sandboxd import Sandboxd  # noqa: E402
from test_sdk import fetch_preview, wait_until  # noqa: E402

URL = os.environ.get("SANDBOXD_URL", "")
KEY = os.environ.get("SANDBOXD_API_KEY", "")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TestAppBuilder(unittest.TestCase):
    def setUp(self) -> None:
        if not URL or not KEY:
            self.skipTest("SANDBOXD_URL and SANDBOXD_API_KEY are not set")
        self.port = free_port()
        env = dict(os.environ, APP_BUILDER_AGENT="command", APP_BUILDER_PORT=str(self.port),
                   PYTHONPATH=os.path.abspath(ROOT))
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "app_builder.py")],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.user = "py-example-%d" % os.getpid()

    def tearDown(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        for s in Sandboxd(URL, KEY).sandboxes.list(label={"app-builder-user": self.user}):
            s.delete()

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 30,
                headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {})
        return conn, conn.getresponse()

    def read_events(self, r: http.client.HTTPResponse) -> list:
        """(id, {"event", "data"}) pairs of the example's SSE, to its exit."""
        events: list = []
        ev_id = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = r.fp.readline()
            if not line:
                break
            if line.startswith(b"id: "):
                ev_id = int(line[4:])
            elif line.startswith(b"data: "):
                events.append((ev_id, json.loads(line[6:])))
                if events[-1][1]["event"] == "exit":
                    break
        return events

    def test_prompt_to_preview(self) -> None:
        def up():
            try:
                conn, r = self.request("GET", "/?user=" + self.user)
            except OSError:
                return None
            try:
                return (r.status, r.read().decode())
            finally:
                conn.close()
        got = wait_until(up, 20)
        self.assertTrue(got, "the example answered")
        status, page = got
        self.assertEqual(status, 200, page)
        sbxs = Sandboxd(URL, KEY).sandboxes.list(label={"app-builder-user": self.user})
        self.assertEqual(len(sbxs), 1, "one sandbox for the user")
        sbx = sbxs[0]
        self.assertIn('<iframe id=app src="%s"' % sbx.preview_url(), page)
        self.assertIn("EventSource", page)
        # The same user gets the same sandbox.
        conn, r = self.request("GET", "/?user=" + self.user)
        r.read()
        conn.close()
        self.assertEqual(len(Sandboxd(URL, KEY).sandboxes.list(label={"app-builder-user": self.user})), 1)

        prompt = b"echo '<h1>built by a prompt</h1>' > index.html; echo building; echo done"
        conn, r = self.request("POST", "/run?user=" + self.user, prompt)
        self.assertEqual(r.status, 202)
        tid = json.loads(r.read())["task"]
        conn.close()
        conn, r = self.request("GET", "/events?user=%s&task=%s" % (self.user, tid))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "text/event-stream")
        pairs = self.read_events(r)
        conn.close()
        events = [e for _, e in pairs]
        self.assertTrue(events and events[-1]["event"] == "exit", events)
        self.assertEqual(events[-1]["data"]["state"], "succeeded")
        texts = [e["data"]["text"] for e in events if e["event"] == "output"]
        self.assertEqual(texts, ["building\n", "done\n"])
        # A browser's EventSource resumes with Last-Event-ID: only what follows.
        conn, r = self.request("GET", "/events?user=%s&task=%s" % (self.user, tid),
                               headers={"Last-Event-ID": str(pairs[0][0])})
        self.assertEqual(self.read_events(r), pairs[1:])
        conn.close()
        # Other paths (a browser's /favicon.ico) make no sandbox.
        conn, r = self.request("GET", "/favicon.ico")
        self.assertEqual(r.status, 404)
        r.read()
        conn.close()
        self.assertEqual(Sandboxd(URL, KEY).sandboxes.list(label={"app-builder-user": "demo"}), [])
        body = wait_until(lambda: (lambda s: s[2] if s[0] == 200 else None)(fetch_preview(sbx.preview_url())), 20)
        self.assertEqual(body, b"<h1>built by a prompt</h1>\n")


if __name__ == "__main__":
    unittest.main()
