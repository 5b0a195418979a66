#!/usr/bin/env python3
"""The files API off the event loop, against a real daemon over real sockets:

- a 120 MiB GET streams to a client that reads slowly while /healthz and
  other requests are answered promptly, and the daemon's RSS does not grow
  by the file's size (the loop reads the worker's pipe only as fast as the
  client takes the answer);
- a directory of 100,000 entries is listed, truncated to 10,000 with
  "truncated": true, while other requests are served;
- a 100 MiB PUT does not raise the daemon's RSS by ~100 MiB (the body goes
  into the temporary file as it comes); a PUT cut off mid-body, one whose
  worker is killed and one over the limit leave no file and no temporary;
- a PUT whose worker is stopped pauses its client instead of buffering;
  a GET of a file that shrinks midway is cut off, never ended as whole;
  PUT and GET stream over HTTP/2 as well;
- file jobs are capped: 8 per sandbox (429), 32 in all (503), both with
  Retry-After;
- a GET in flight at SIGTERM gets shutdown_grace to finish.

RSS is read from /proc/PID/status (VmRSS), sampled while the transfer runs.
"""
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import WRAPPER, Daemon, Runner, ensure_docker, ensure_test_image, wait_for  # noqa: E402

MIB = 1 << 20


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """The highest VmRSS of pid seen while the with-block runs."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop = False

    def _run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.02)

    def __enter__(self):
        self.base = rss_kib(self.pid)
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.th.join(5)

    def grew_mib(self):
        return (self.peak - self.base) / 1024.0


def children(pid):
    """The daemon's child processes (file jobs among them)."""
    kids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(p))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def pipes(pid):
    """How many pipes the process holds open."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("pipe:")
        except OSError:
            pass
    return n


def timed(d, method, path, key="acme"):
    t0 = time.time()
    r = d.request(method, path, key=key, timeout=10)
    return r, time.time() - t0


def open_get(d, path, key="acme"):
    """Send a GET on a raw socket and read nothing yet; the socket."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
               % (path, d.key(key))).encode())
    return s


def ws_path(d, sid, rel=""):
    return os.path.join(d.data_dir, "workspaces", sid, rel)


def tmp_left(d, sid):
    left = []
    for root, dirs, files in os.walk(ws_path(d, sid)):
        left += [os.path.join(root, f) for f in files if f.startswith(".sbx-put-")]
    return left


def no_jobs(d):
    """Every file job has exited (bounded wait)."""
    return wait_for(lambda: not children(d.proc.pid), timeout=20)


def test_slow_get(t, d, sid):
    big = ws_path(d, sid, "big.bin")
    size = 120 * MIB
    h = hashlib.sha256()
    with open(big, "wb") as f:
        block = os.urandom(MIB)
        for _ in range(size // MIB):
            f.write(block)
            h.update(block)
    want = h.hexdigest()
    path = "/v1/sandboxes/%s/files/big.bin" % sid

    # A client reading 64 KiB every 20 ms for 4 s: about 13 MiB of 120.
    s = open_get(d, path)
    try:
        with RssSampler(d.proc.pid) as rss:
            head = s.recv(4096)
            t.check(head.startswith(b"HTTP/1.1 200"), "the slow GET is answered: %r" % head[:60])
            slow = []
            deadline = time.time() + 4
            got = len(head)
            while time.time() < deadline:
                got += len(s.recv(65536))
                if len(slow) < 10:
                    slow.append(timed(d, "GET", "/healthz")[1])
                    r, took = timed(d, "GET", "/v1/sandboxes/%s" % sid)
                    slow.append(took)
                    t.check(r.status == 200, "another request meanwhile: %r" % r)
                time.sleep(0.02)
        t.check(got < size // 2, "the client really was slow (%d MiB read)" % (got // MIB))
        t.check(max(slow) < 1.0, "/healthz and a sandbox GET answered promptly while the "
                "file streams: slowest %.3f s" % max(slow))
        if WRAPPER:
            t.skip("RSS under %s is not the daemon's own" % WRAPPER[0])
        else:
            t.check(rss.grew_mib() < 32, "the daemon's RSS grew by %.1f MiB, not the file's 120"
                    % rss.grew_mib())
    finally:
        s.close()
    # The client left mid-file: the job ends too.
    t.check(no_jobs(d), "the file job exits once its client is gone")

    # A fast client gets every byte.
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + d.key()})
        r = conn.getresponse()
        h = hashlib.sha256()
        n = 0
        while True:
            chunk = r.read(MIB)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        t.check(r.status == 200 and n == size and h.hexdigest() == want,
                "the whole file arrives intact (%d bytes, status %d)" % (n, r.status))
        t.check(r.getheader("content-type") == "application/octet-stream", "its content type")
        t.check(r.getheader("content-length") == str(size), "its length: %r" % r.getheader("content-length"))
    finally:
        conn.close()
    os.unlink(big)


def test_big_listing(t, d, sid):
    many = ws_path(d, sid, "many")
    os.mkdir(many)
    os.chown(many, 1000, 1000)
    for i in range(100000):
        os.close(os.open(os.path.join(many, "f%06d" % ((i * 7919) % 100000)),
                         os.O_WRONLY | os.O_CREAT, 0o644))
    path = "/v1/sandboxes/%s/files/many" % sid
    result = {}

    def listing():
        result["r"] = d.request("GET", path, timeout=60)

    th = threading.Thread(target=listing)
    th.start()
    slow = []
    while th.is_alive() and len(slow) < 20:
        slow.append(timed(d, "GET", "/healthz")[1])
    th.join(60)
    r = result.get("r")
    j = r.json() if r is not None and r.status == 200 else {}
    entries = j.get("entries", [])
    t.check(len(entries) == 10000 and j.get("truncated") is True,
            "100,000 entries listed as 10,000 with truncated: %d, %r" % (len(entries), j.get("truncated")))
    t.check(entries and entries[0]["name"] == "f000000" and entries[-1]["name"] == "f009999",
            "the first 10,000 by name")
    t.check(not slow or max(slow) < 1.0, "/healthz answered while it was listed: slowest %.3f s"
            % (max(slow) if slow else 0))
    r = d.request("GET", "/v1/sandboxes/%s/files/" % sid)
    t.check(r.status == 200 and r.json().get("truncated") is False, "a small listing is whole: %r" % r)


def test_big_put(t, d, sid):
    body = os.urandom(MIB) * 100
    path = "/v1/sandboxes/%s/files/up/big.bin" % sid
    with RssSampler(d.proc.pid) as rss:
        r = d.request("PUT", path, body, timeout=120)
    t.check(r.status == 201, "a 100 MiB PUT lands: %r" % r)
    with open(ws_path(d, sid, "up/big.bin"), "rb") as f:
        t.check(hashlib.sha256(f.read()).digest() == hashlib.sha256(body).digest(), "byte for byte")
    if WRAPPER:
        t.skip("RSS under %s is not the daemon's own" % WRAPPER[0])
    else:
        t.check(rss.grew_mib() < 40, "the daemon's RSS grew by %.1f MiB for a 100 MiB PUT"
                % rss.grew_mib())
    t.check(not tmp_left(d, sid), "no temporary left: %r" % tmp_left(d, sid))
    os.unlink(ws_path(d, sid, "up/big.bin"))


def test_put_cut_off(t, d, sid):
    # Content-Length says 10 MiB; 3 MiB come, then the client leaves.
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(("PUT /v1/sandboxes/%s/files/cut/half.bin HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
               % (sid, d.key(), 10 * MIB)).encode())
    s.sendall(b"y" * (3 * MIB))
    # The job is running (its worker exists) before we leave.
    wait_for(lambda: children(d.proc.pid), timeout=10)
    s.close()
    t.check(no_jobs(d), "the job ends when its client leaves")
    t.check(not os.path.exists(ws_path(d, sid, "cut/half.bin")), "no partial file")
    t.check(not tmp_left(d, sid), "no temporary: %r" % tmp_left(d, sid))
    # A file it would have replaced stays as it was.
    with open(ws_path(d, sid, "keep.txt"), "w") as f:
        f.write("old")
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(("PUT /v1/sandboxes/%s/files/keep.txt HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
               % (sid, d.key())).encode())
    s.sendall(b"100000\r\n" + b"z" * 0x100000 + b"\r\n")
    time.sleep(0.3)
    s.close()
    t.check(no_jobs(d), "the chunked job ends when its client leaves")
    with open(ws_path(d, sid, "keep.txt")) as f:
        t.check(f.read() == "old", "the old file is untouched")
    t.check(not tmp_left(d, sid), "no temporary after a cut chunked body")


def test_put_worker_killed(t, d, sid):
    """A PUT's worker killed mid-body (SIGKILL: the OOM killer, say) cleans
    nothing up: the file it was writing has no name yet, so nothing is left
    in the workspace, and the client gets a 500."""
    before = set(os.listdir(ws_path(d, sid)))
    s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
    s.sendall(("PUT /v1/sandboxes/%s/files/killed.bin HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
               % (sid, d.key(), 10 * MIB)).encode())
    s.sendall(b"k" * (2 * MIB))
    if not t.check(wait_for(lambda: children(d.proc.pid), timeout=10), "the PUT's worker started"):
        s.close()
        return
    time.sleep(0.3)
    for kid in children(d.proc.pid):
        os.kill(kid, signal.SIGKILL)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            c = s.recv(4096)
            if not c:
                break
            answer += c
    except OSError:
        pass
    s.close()
    t.check(answer.startswith(b"HTTP/1.1 500"), "a killed worker: 500: %r" % answer[:40])
    t.check(no_jobs(d), "the job ends")
    t.check(not tmp_left(d, sid), "no temporary left by the killed worker: %r" % tmp_left(d, sid))
    t.check(set(os.listdir(ws_path(d, sid))) == before,
            "nothing new in the workspace: %r" % (set(os.listdir(ws_path(d, sid))) - before))


def test_put_over_limit(t, d, sid):
    # Declared too large: 413 from the head.
    out = d.raw(("PUT /v1/sandboxes/%s/files/over.bin HTTP/1.1\r\nHost: x\r\n"
                 "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
                 % (sid, d.key(), 100 * MIB + 1)).encode())
    t.check(out.startswith(b"HTTP/1.1 413"), "a declared 100 MiB + 1 PUT: 413: %r" % out[:40])
    # Chunked past the limit: 413 midway, and nothing left.
    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    s.sendall(("PUT /v1/sandboxes/%s/files/over.bin HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
               % (sid, d.key())).encode())
    chunk = b"100000\r\n" + b"o" * 0x100000 + b"\r\n"
    answer = b""
    try:
        for _ in range(110):
            s.sendall(chunk)
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    try:
        s.settimeout(10)
        while True:
            c = s.recv(65536)
            if not c:
                break
            answer += c
    except OSError:
        pass
    s.close()
    t.check(answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer,
            "a chunked body over 100 MiB: 413: %r" % answer[:80])
    t.check(no_jobs(d), "the job ends")
    t.check(not os.path.exists(ws_path(d, sid, "over.bin")), "no file over the limit")
    t.check(not tmp_left(d, sid), "no temporary over the limit")


def test_put_backpressure(t, d, sid):
    """The worker stops (SIGSTOP) in the middle of a 100 MiB PUT: its pipe
    fills, the daemon stops reading the client, and memory stays flat;
    once it goes on, the file lands whole."""
    body = os.urandom(MIB) * 100
    path = "/v1/sandboxes/%s/files/bp/big.bin" % sid
    s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\n\r\n" % (path, d.key(), len(body))).encode())
    sent = {"n": 0, "err": None}

    def send():
        try:
            view = memoryview(body)
            while sent["n"] < len(body):
                sent["n"] += s.send(view[sent["n"]:sent["n"] + MIB])
        except OSError as e:
            sent["err"] = e

    th = threading.Thread(target=send)
    th.start()
    stopped = []
    try:
        if not t.check(wait_for(lambda: children(d.proc.pid), timeout=20), "the PUT's worker started"):
            return
        stopped = children(d.proc.pid)
        for kid in stopped:
            os.kill(kid, signal.SIGSTOP)
        time.sleep(0.5)
        with RssSampler(d.proc.pid) as rss:
            at = sent["n"]
            time.sleep(2)
            moved = sent["n"] - at
        t.check(moved < 16 * MIB, "the client is paused while the worker is stopped (%.1f MiB moved)"
                % (moved / MIB))
        if not WRAPPER:
            t.check(rss.grew_mib() < 16, "the daemon's RSS grew by %.1f MiB meanwhile" % rss.grew_mib())
        r, took = timed(d, "GET", "/healthz")
        t.check(r.status == 200 and took < 1.0, "healthy meanwhile (%.3f s)" % took)
    finally:
        for kid in stopped:
            try:
                os.kill(kid, signal.SIGCONT)
            except OSError:
                pass
    th.join(120)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            c = s.recv(4096)
            if not c:
                break
            answer += c
    except OSError:
        pass
    s.close()
    t.check(sent["err"] is None and answer.startswith(b"HTTP/1.1 201"),
            "the PUT lands once the worker goes on: %r %r" % (sent["err"], answer[:40]))
    with open(ws_path(d, sid, "bp/big.bin"), "rb") as f:
        t.check(hashlib.sha256(f.read()).digest() == hashlib.sha256(body).digest(), "byte for byte")
    os.unlink(ws_path(d, sid, "bp/big.bin"))


def test_get_cut_short(t, d, sid):
    """The file shrinks while it streams: the answer is cut off (no last
    chunk), never ended like a whole file."""
    p = ws_path(d, sid, "shrink.bin")
    with open(p, "wb") as f:
        f.write(b"s" * (64 * MIB))
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    try:
        conn.request("GET", "/v1/sandboxes/%s/files/shrink.bin" % sid,
                     headers={"Authorization": "Bearer " + d.key()})
        r = conn.getresponse()
        first = r.read(MIB)
        os.truncate(p, MIB)
        got, cut = len(first), False
        try:
            while True:
                c = r.read(MIB)
                if not c:
                    break
                got += len(c)
        except (http.client.IncompleteRead, OSError):
            cut = True
        said = int(r.getheader("content-length") or 0)
        t.check(r.status == 200 and len(first) == MIB and said == 64 * MIB and
                (cut or got < said),
                "a file that shrank midway: the answer is cut off short of its length "
                "(%d of %d bytes)" % (got, said))
    finally:
        conn.close()
    t.check(no_jobs(d), "its job ends")
    r = d.request("GET", "/v1/sandboxes/%s/files/shrink.bin" % sid)
    t.check(r.status == 200 and len(r.body) == MIB, "the next read is whole: %d" % len(r.body))
    os.unlink(p)


def test_h2_files(t, d, sid):
    """PUT and GET stream over HTTP/2 too (curl, h2c)."""
    data = os.urandom(MIB) * 20
    src = os.path.join(d.tmp, "h2.bin")
    with open(src, "wb") as f:
        f.write(data)
    url = "http://127.0.0.1:%d/v1/sandboxes/%s/files/h2/x.bin" % (d.port, sid)
    auth = ["-H", "Authorization: Bearer " + d.key()]
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                          *auth, "-T", src, url], capture_output=True, text=True, timeout=60)
    t.check(out.stdout == "201", "a 20 MiB PUT over h2c: %r %r" % (out.stdout, out.stderr))
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", *auth, url], capture_output=True, timeout=60)
    t.check(out.returncode == 0 and out.stdout == data, "and its GET, byte for byte (%d bytes)" % len(out.stdout))
    out = subprocess.run(["curl", "-sS", "--http1.0", *auth, url], capture_output=True, timeout=60)
    t.check(out.returncode == 0 and out.stdout == data, "and over HTTP/1.0 (%d bytes)" % len(out.stdout))
    os.unlink(src)


def test_job_caps(t, d, sids):
    sid = sids[0]
    with open(ws_path(d, sid, "cap.bin"), "wb") as f:
        f.write(b"c" * (32 * MIB))
    for other in sids[1:]:
        os.link(ws_path(d, sid, "cap.bin"), ws_path(d, other, "cap.bin"))
    held = []
    try:
        # Eight GETs nobody reads: their jobs block on full pipes.
        for _ in range(8):
            held.append(open_get(d, "/v1/sandboxes/%s/files/cap.bin" % sid))
        t.check(wait_for(lambda: len(children(d.proc.pid)) >= 8, timeout=20),
                "8 file jobs run: %d" % len(children(d.proc.pid)))
        r = d.request("GET", "/v1/sandboxes/%s/files/cap.bin" % sid)
        t.check(r.status == 429 and r.error_code() == "quota_exceeded" and
                r.headers.get("retry-after") == "1",
                "a ninth file operation on one sandbox: 429 with Retry-After: %r" % r)
        r = d.request("PUT", "/v1/sandboxes/%s/files/x.txt" % sid, b"x")
        t.check(r.status == 429, "a PUT counts too: %r" % r)
        r = d.request("GET", "/v1/sandboxes/%s/files/cap.bin" % sids[1], timeout=10)
        t.check(r.status == 200, "another sandbox is not held back by it: %r" % r.status)
        # Its job counts until its exit is seen: wait, so the next eight fit.
        wait_for(lambda: len(children(d.proc.pid)) == 8, timeout=20)
        if len(sids) >= 4:
            for other in sids[1:4]:
                for _ in range(8):
                    held.append(open_get(d, "/v1/sandboxes/%s/files/cap.bin" % other))
            t.check(wait_for(lambda: len(children(d.proc.pid)) >= 32, timeout=20),
                    "32 file jobs run: %d" % len(children(d.proc.pid)))
            r = d.request("GET", "/v1/sandboxes/%s/files/" % sids[4])
            t.check(r.status == 503 and r.error_code() == "unavailable" and
                    r.headers.get("retry-after") == "1",
                    "a 33rd file operation: 503 with Retry-After: %r" % r)
        else:
            t.skip("fewer than five sandboxes were made: the overall cap is not checked")
        r, took = timed(d, "GET", "/healthz")
        t.check(r.status == 200 and took < 1.0, "healthy meanwhile (%.3f s)" % took)
    finally:
        for s in held:
            s.close()
    t.check(no_jobs(d), "the held jobs end with their clients")
    r = d.request("GET", "/v1/sandboxes/%s/files/" % sid)
    t.check(r.status == 200, "room again once they ended: %r" % r)


def test_get_at_shutdown(t, d, sid):
    """SIGTERM while a file GET streams: like any request in flight it has
    shutdown_grace (2 s here) to finish, not cut at once as an endless
    event stream is. Restarts the daemon."""
    data = os.urandom(8 * MIB)
    with open(ws_path(d, sid, "shut.bin"), "wb") as f:
        f.write(data)
    s = open_get(d, "/v1/sandboxes/%s/files/shut.bin" % sid)
    got = b""
    try:
        while len(got) < MIB:
            c = s.recv(65536)
            if not c:
                break
            got += c
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
    except OSError:
        pass
    s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    t.check(head.startswith(b"HTTP/1.1 200") and body == data,
            "a GET in flight at SIGTERM finishes: %d of %d bytes" % (len(body), len(data)))
    t.check(d.stop() == 0, "the daemon exits 0 after")
    d.start()


def main():
    if os.geteuid() != 0:
        print("test_files: needs root (the workspaces belong to uid 1000): skipped")
        return 77
    if not ensure_docker():
        print("docker is not available: skipping the black-box tests")
        return 77
    ensure_test_image()
    # Under ASan, freed memory waits in a quarantine (256 MiB) and counts
    # in VmRSS: a small one, so RSS is what the daemon really holds.
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in opts:
        os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=4"
    t = Runner()
    d = Daemon()
    try:
        d.start()
        sids = []
        for _ in range(5):
            r = d.request("POST", "/v1/sandboxes", {})
            if not t.check(r.status == 201, "create: %r" % r):
                break
            sids.append(r.json()["id"])
        # Files work while stopped; stopped sandboxes cost the machine nothing.
        for sid in sids:
            d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=60)
        if sids:
            sid = sids[0]
            pipes_before = pipes(d.proc.pid)
            t.run(test_slow_get, d, sid)
            t.run(test_big_listing, d, sid)
            t.run(test_big_put, d, sid)
            t.run(test_put_cut_off, d, sid)
            t.run(test_put_worker_killed, d, sid)
            t.run(test_put_over_limit, d, sid)
            t.run(test_put_backpressure, d, sid)
            t.run(test_get_cut_short, d, sid)
            t.run(test_h2_files, d, sid)
            t.run(test_job_caps, d, sids)
            t.check(d.proc.poll() is None, "the daemon survived")
            t.check(no_jobs(d) and pipes(d.proc.pid) == pipes_before,
                    "no file job's pipe is left open: %d, %d before" % (pipes(d.proc.pid), pipes_before))
            t.run(test_get_at_shutdown, d, sid)
        for sid in sids:
            d.request("DELETE", "/v1/sandboxes/%s" % sid, timeout=60)
    finally:
        if t.failed:
            print("---- daemon log (tail) ----\n" + d.logs())
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
