#!/usr/bin/env python3
"""A real browser over TLS and HTTP/2: headless Chromium loads the Vite
starter app (sandboxd/base:latest with the vite-react seed) from a real
sandbox's preview URL on a tls_listen, trusting the test certificate by its
SPKI hash (--ignore-certificate-errors-spki-list), driven over its DevTools
protocol with python3-websockets. It shows: the document came over h2
(nextHopProtocol), Vite's HMR WebSocket connected ("[vite] connected.")
and went over the h2 connection as an RFC 8441 extended CONNECT (the
daemon's "h2 websocket ... https=1" debug line, and DevTools' handshake
status 200 rather than 101), and an edit to src/App.jsx through the files
API updates the page without a reload. Skips (77) without chromium,
Docker, the base image or the seed. Prints "N passed, N failed"."""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, docker, ensure_docker, free_port, wait_for  # noqa: E402

try:
    import websockets
except ImportError:     # Debian's python3-websockets, under another python3
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None

BASE_IMAGE = "sandboxd/base:latest"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def find_seed():
    for p in (os.environ.get("SANDBOXD_SEED_DIR", ""),
              os.path.join(os.environ.get("top_srcdir", "."), "base-image", "out", "templates", "vite-react"),
              "/usr/share/sandboxd/templates/vite-react"):
        if p and os.path.isdir(os.path.join(p, "node_modules")):
            return os.path.abspath(p)
    return None


def spki_hash(crt):
    """base64(sha256(SubjectPublicKeyInfo)) of a PEM certificate, as
    Chromium's --ignore-certificate-errors-spki-list wants it."""
    pub = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout
    dgst = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der,
                          capture_output=True, check=True).stdout
    return base64.b64encode(dgst).decode()


class Browser:
    """One headless Chromium with its own profile and a DevTools port."""

    def __init__(self, tmp, spki):
        self.profile = os.path.join(tmp, "profile")
        os.makedirs(self.profile)
        self.log = open(os.path.join(tmp, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-extensions", "--no-first-run", "--user-data-dir=" + self.profile,
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             "--ignore-certificate-errors-spki-list=" + spki] +
            # BROWSER_NETLOG=file: Chromium's own log of its sessions.
            (["--log-net-log=" + os.environ["BROWSER_NETLOG"]] if os.environ.get("BROWSER_NETLOG") else []) +
            ["about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def page_ws(self, timeout=30):
        """The DevTools WebSocket URL of its first page."""
        path = os.path.join(self.profile, "DevToolsActivePort")
        if not wait_for(lambda: os.path.exists(path) and open(path).read().count("\n") >= 1, timeout, 0.1):
            return None
        port = int(open(path).read().split("\n")[0])

        def page():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5) as r:
                    pages = [p for p in json.load(r) if p.get("type") == "page"]
            except OSError:
                return None
            return pages[0]["webSocketDebuggerUrl"] if pages else None
        return wait_for(page, timeout, 0.1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class CDP:
    """The DevTools protocol over one WebSocket: calls, and the events kept."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    async def call(self, method, timeout=20, **params):
        self.next_id += 1
        mid = self.next_id
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.time())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError("%s: %r" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    async def pump(self, seconds):
        """Take events for up to seconds."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.05, deadline - time.time())))
            except asyncio.TimeoutError:
                return
            if "method" in msg:
                self.events.append(msg)

    async def until(self, cond, timeout):
        deadline = time.time() + timeout
        while not cond() and time.time() < deadline:
            await self.pump(min(0.5, max(0.05, deadline - time.time())))
        return cond()

    async def eval(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def console(self):
        out = []
        for e in self.events:
            if e["method"] == "Runtime.consoleAPICalled":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"]))
        return out

    def of(self, method):
        return [e["params"] for e in self.events if e["method"] == method]

    def unfinished(self):
        """Requests the page made that have neither finished nor failed,
        and those that failed: what to look at when the app did not run."""
        sent = {r["requestId"]: r["request"]["url"] for r in self.of("Network.requestWillBeSent")}
        done = {r["requestId"] for r in self.of("Network.loadingFinished")}
        failed = {r["requestId"]: r.get("errorText") for r in self.of("Network.loadingFailed")}
        return ([u for i, u in sent.items() if i not in done and i not in failed],
                [(sent.get(i), e) for i, e in failed.items()])


async def drive(t, d, sid, url, ws_url):
    async with websockets.connect(ws_url, max_size=None, ping_interval=None) as ws:
        cdp = CDP(ws)
        for m in ("Page.enable", "Runtime.enable", "Network.enable"):
            await cdp.call(m)
        await cdp.call("Page.navigate", url=url)
        loaded = await cdp.until(lambda: cdp.of("Page.loadEventFired"), 60)
        t.check(loaded, "the page loads in Chromium: %r" % cdp.of("Page.frameNavigated")[-1:])
        proto = await cdp.eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        t.check(proto == "h2", "the document came over h2 (nextHopProtocol): %r" % proto)
        resp = [r["response"] for r in cdp.of("Network.responseReceived") if r["response"]["url"] == url]
        t.check(resp and resp[0].get("protocol") == "h2" and resp[0].get("securityState") == "secure",
                "DevTools: protocol h2, secure: %r" % [(r.get("protocol"), r.get("securityState")) for r in resp])
        connected = await cdp.until(lambda: any("[vite] connected." in m for m in cdp.console()), 30)
        if not t.check(connected, "Vite's HMR client connected: %r" % cdp.console()[-5:]):
            pending, failed = cdp.unfinished()
            print("  requests still open: %r\n  failed: %r" % (pending[:20], failed[:20]))
        created = cdp.of("Network.webSocketCreated")
        hs = cdp.of("Network.webSocketHandshakeResponseReceived")
        print("  websockets: %r; handshake statuses %r" %
              ([c["url"] for c in created], [h["response"].get("status") for h in hs]))
        t.check(created and created[0]["url"].startswith("wss://%s" % url.split("://")[1].split("/")[0]),
                "the HMR WebSocket goes to the page's own wss:// host: %r" % [c["url"] for c in created])
        # RFC 8441: the browser's handshake is a CONNECT stream answered 200.
        t.check(hs and hs[0]["response"].get("status") == 200,
                "its handshake is answered 200 (h2 extended CONNECT), not 101: %r" %
                [h["response"].get("status") for h in hs])
        tunnel = wait_for(lambda: [ln for ln in d.logs().splitlines()
                                   if 'msg="h2 websocket"' in ln and "https=1" in ln], 10)
        t.check(tunnel, "the daemon saw an h2 WebSocket tunnel over TLS (debug log)")
        h1_upgrade = [h for h in hs if h["response"].get("status") == 101]
        t.check(not h1_upgrade, "no HTTP/1.1 Upgrade for the HMR socket: %r" % h1_upgrade)

        # Hot reload: a marker on the window survives; the heading changes.
        await cdp.eval("window.__sandboxd_marker = 4711")
        before = await cdp.eval("document.querySelector('h1') && document.querySelector('h1').textContent")
        app = d.request("GET", "/v1/sandboxes/%s/files/src/App.jsx" % sid)
        if not t.check(app.status == 200 and b"</h1>" in app.body, "read src/App.jsx: %r" % app):
            return
        edited = app.body.replace(b"</h1>", b" (edited over h2)</h1>", 1)
        r = d.request("PUT", "/v1/sandboxes/%s/files/src/App.jsx" % sid, edited)
        t.check(r.status == 204, "edit src/App.jsx through the files API: %r" % r)
        js = ("(() => { const h = document.querySelector('h1');"
              " return [h ? h.textContent : null, window.__sandboxd_marker || null]; })()")
        deadline = time.time() + 20
        got = None
        while time.time() < deadline:
            got = await cdp.eval(js)
            if got and got[0] and "(edited over h2)" in got[0]:
                break
            await cdp.pump(0.3)
        t.check(got and got[0] and "(edited over h2)" in got[0],
                "the edit reaches the page (%r -> %r)" % (before, got and got[0]))
        t.check(got and got[1] == 4711, "without a reload (the window's marker survives): %r" % got)
        navs = cdp.of("Page.frameNavigated")
        print("  console: %r" % cdp.console()[:20])
        print("  navigations: %r" % [(n["frame"]["url"], n.get("type")) for n in navs][:10])
        t.check(len([n for n in navs if not n["frame"].get("parentId")]) == 1,
                "one navigation only: %d" % len(navs))
        t.check(any("hot updated" in m for m in cdp.console()),
                "Vite logged the hot update: %r" % [m for m in cdp.console() if "vite" in m][-3:])
        frames = cdp.of("Network.webSocketFrameReceived")
        t.check(any('"update"' in f["response"].get("payloadData", "") for f in frames),
                "the update came over the WebSocket: %d frames" % len(frames))


def test_vite_over_h2(t, d, tport, spki, tmp):
    r = d.request("POST", "/v1/sandboxes", {})
    if not t.check(r.status == 201, "create on the base image: %r" % r):
        return
    sid = r.json()["id"]

    def ready():
        try:
            p = d.preview(sid, "/")
            return p.status == 200 and b"Sandbox ready" in p.body
        except OSError:
            return False
    if not t.check(wait_for(ready, timeout=90, interval=0.2), "the starter app answers (HTTP/1.1, plain)"):
        return
    url = "https://%s.preview.localhost:%d/" % (sid, tport)
    b = Browser(tmp, spki)
    try:
        ws_url = b.page_ws()
        if not t.check(ws_url is not None, "Chromium's DevTools endpoint is up"):
            print(open(b.log.name).read()[-2000:])
            return
        asyncio.run(asyncio.wait_for(drive(t, d, sid, url, ws_url), 180))
    finally:
        b.close()
        if t.failed:
            print("---- chromium log (tail) ----\n%s" % open(b.log.name).read()[-1500:])


def main():
    if CHROMIUM is None:
        print("SKIP: chromium is not installed")
        return 77
    if websockets is None:
        print("SKIP: python3-websockets is not installed")
        return 77
    if shutil.which("openssl") is None:
        print("SKIP: openssl is not installed")
        return 77
    if not ensure_docker():
        print("SKIP: docker is not available")
        return 77
    seed = find_seed()
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0 or seed is None:
        print("SKIP: no %s image or vite-react seed (base-image/build.sh makes both)" % BASE_IMAGE)
        return 77
    from test_tls import PKI
    t = Runner()
    tmp = tempfile.mkdtemp(prefix="sbxbrowser-")
    d = None
    try:
        pki = PKI(tmp)
        pem, key, crt = pki.leaf("preview", int.from_bytes(os.urandom(16), "big") >> 2 | 1 << 125,
                                 ["*.preview.localhost"])
        tport = free_port()
        d = Daemon(extra="tls_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n" % (tport, pem, key),
                   templates={"default": {
                       "image": BASE_IMAGE, "port": "3000", "seed_dir": seed, "memory": "1g",
                       "dev_command": "npm run dev -- --host 0.0.0.0 --port 3000"}})
        d.start()
        t.run(test_vite_over_h2, d, tport, spki_hash(crt), tmp)
        if os.environ.get("BROWSER_LOG"):
            shutil.copy(d.log_path, os.environ["BROWSER_LOG"])
        if t.failed:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-3000:])
    finally:
        if d is not None:
            d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
