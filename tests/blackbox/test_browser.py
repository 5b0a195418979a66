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
API updates the page without a reload. Chromium drops its connections
when the host's network changes (Docker adding an interface does): a load
or an edit caught by that is tried again, at most 3 times. Skips (77) without chromium,
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
from test_sandboxd import BASE_IMAGE, find_seed  # noqa: E402

try:
    import websockets
except ImportError:     # Debian's python3-websockets, under another python3
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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

    def console(self, mark=0):
        out = []
        for e in self.events[mark:]:
            if e["method"] == "Runtime.consoleAPICalled":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"]))
        return out

    def of(self, method, mark=0):
        return [e["params"] for e in self.events[mark:] if e["method"] == method]

    def navigated(self, mark):
        """The top frame navigated (a reload) since mark."""
        return any(not n["frame"].get("parentId") for n in self.of("Page.frameNavigated", mark))

    def unfinished(self, mark=0):
        """Requests the page made that have neither finished nor failed,
        and those that failed: what to look at when the app did not run."""
        sent = {r["requestId"]: r["request"]["url"] for r in self.of("Network.requestWillBeSent", mark)}
        done = {r["requestId"] for r in self.of("Network.loadingFinished", mark)}
        failed = {r["requestId"]: r.get("errorText") for r in self.of("Network.loadingFailed", mark)}
        return ([u for i, u in sent.items() if i not in done and i not in failed],
                [(sent.get(i), e) for i, e in failed.items()])


# Chromium closes all its connections when the host's network changes
# (ERR_NETWORK_CHANGED), and Docker adding a bridge or veth for any
# container on this machine is such a change: a page load or a hot update
# caught by one is tried again (bounded), and said so.
TRIES = 3


async def load(t, cdp, url):
    """Navigate until Vite's client says it connected; the event index
    where the good try began, or None."""
    for n in range(TRIES):
        mark = len(cdp.events)
        await cdp.call("Page.navigate", url=url)
        if not await cdp.until(lambda: cdp.of("Page.loadEventFired", mark), 60):
            print("  try %d: no load event" % n)
            continue
        if await cdp.until(lambda: any("[vite] connected." in m for m in cdp.console(mark)), 30):
            return mark
        pending, failed = cdp.unfinished(mark)
        print("  try %d: Vite did not connect; requests still open: %r; failed: %r" %
              (n, pending[:10], failed[:10]))
    return None


async def hot_update(t, d, sid, cdp):
    """Edit src/App.jsx through the files API until the page shows it
    without a reload: (the try's event index, its text, its marker)."""
    js = ("(() => { const h = document.querySelector('h1');"
          " return [h ? h.textContent : null, window.__sandboxd_marker || null]; })()")
    app = d.request("GET", "/v1/sandboxes/%s/files/src/App.jsx" % sid)
    if not t.check(app.status == 200 and b"</h1>" in app.body, "read src/App.jsx: %r" % app):
        return None, None, None
    got = None
    for n in range(TRIES):
        mark = len(cdp.events)
        marker = 4711 + n
        await cdp.eval("window.__sandboxd_marker = %d" % marker)
        text = " (edited over h2, %d)" % n
        r = d.request("PUT", "/v1/sandboxes/%s/files/src/App.jsx" % sid,
                      app.body.replace(b"</h1>", text.encode() + b"</h1>", 1))
        t.check(r.status == 204, "edit src/App.jsx through the files API: %r" % r)
        deadline = time.time() + 20
        while time.time() < deadline:
            got = await cdp.eval(js)
            if got and got[0] and text in got[0]:
                break
            await cdp.pump(0.3)
        if got and got[0] and text in got[0] and got[1] == marker and not cdp.navigated(mark):
            return mark, got, marker
        print("  try %d: the page reloaded or missed the edit (%r); console %r" %
              (n, got, cdp.console(mark)[-4:]))
        # After a reload, wait for Vite's client before the next try.
        await cdp.until(lambda: any("[vite] connected." in m for m in cdp.console(mark)), 30)
    return None, got, None


async def drive(t, d, sid, url, ws_url):
    async with websockets.connect(ws_url, max_size=None, ping_interval=None) as ws:
        cdp = CDP(ws)
        for m in ("Page.enable", "Runtime.enable", "Network.enable"):
            await cdp.call(m)
        mark = await load(t, cdp, url)
        if not t.check(mark is not None, "the page loads in Chromium and Vite's HMR client connects: %r" %
                       cdp.console()[-5:]):
            return
        proto = await cdp.eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        t.check(proto == "h2", "the document came over h2 (nextHopProtocol): %r" % proto)
        resp = [r["response"] for r in cdp.of("Network.responseReceived", mark) if r["response"]["url"] == url]
        t.check(resp and resp[0].get("protocol") == "h2" and resp[0].get("securityState") == "secure",
                "DevTools: protocol h2, secure: %r" % [(r.get("protocol"), r.get("securityState")) for r in resp])
        created = cdp.of("Network.webSocketCreated", mark)
        hs = cdp.of("Network.webSocketHandshakeResponseReceived", mark)
        print("  websockets: %r; handshake statuses %r" %
              ([c["url"] for c in created], [h["response"].get("status") for h in hs]))
        t.check(created and created[0]["url"].startswith("wss://%s" % url.split("://")[1].split("/")[0]),
                "the HMR WebSocket goes to the page's own wss:// host: %r" % [c["url"] for c in created])
        # RFC 8441: the browser's handshake is a CONNECT stream answered 200.
        t.check(hs and all(h["response"].get("status") == 200 for h in hs),
                "its handshake is answered 200 (h2 extended CONNECT), not 101: %r" %
                [h["response"].get("status") for h in hs])
        tunnel = wait_for(lambda: [ln for ln in d.logs().splitlines()
                                   if 'msg="h2 websocket"' in ln and "https=1" in ln], 10)
        t.check(tunnel, "the daemon saw an h2 WebSocket tunnel over TLS (debug log)")

        # Hot reload: a marker on the window survives; the heading changes.
        mark, got, marker = await hot_update(t, d, sid, cdp)
        t.check(mark is not None, "the edit reaches the page without a reload (the window's marker "
                "survives): %r" % (got,))
        if mark is None:
            return
        print("  console: %r" % cdp.console(mark))
        t.check(any("hot updated" in m for m in cdp.console(mark)),
                "Vite logged the hot update: %r" % cdp.console(mark)[-3:])
        frames = cdp.of("Network.webSocketFrameReceived", mark)
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
