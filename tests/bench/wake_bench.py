#!/usr/bin/env python3
"""Wake benchmark (issue 6): how long a request to a stopped (or paused)
sandbox takes to get the app's first byte through the preview proxy, beside
what Docker itself needs for the same container in the same run.

Run it by hand (as root, dockerd up, after a build), from the source tree:

    top_builddir=build tests/bench/wake_bench.py [-n 20]
    top_builddir=build tests/bench/wake_bench.py --image sandboxd/base:latest [-n 5]

It starts a daemon of its own (free loopback port, own data_dir, labels and
network, like the black-box tests) and removes everything it made at the end.

Busybox mode (the default, image sandboxd-test-busybox:1, httpd dev server):
  1. proxy wake: N times, POST /stop through the API, then time a GET to
     <id>.preview.localhost from before connect() to the first byte of the
     answer (which must be the app's 200);
  2. docker start: with the daemon down (so that nothing reacts to events
     behind its back), N times: Engine API POST /containers/{name}/start on
     /var/run/docker.sock, then connect() to the container's IP:port until it
     accepts, then a GET and its first byte; then POST /stop?t=0. The time of
     the inspect that finds the IP is subtracted, which favours Docker;
  3. unpause: a second daemon with pause_timeout = 1s: N times, wait until
     the daemon has paused the sandbox, then time a GET to its first byte;
     beside it, Engine API pause/unpause of a plain (unlabelled, not the
     daemon's) busybox httpd container on the same network + first byte.
  The overhead line is proxy wake - (docker start + first byte), medians.

--image IMAGE (e.g. sandboxd/base:latest, the default image with the Vite
starter; the seed comes from SANDBOXD_SEED_DIR, base-image/out/templates/
vite-react or /usr/share/sandboxd/templates/vite-react): stopped -> first
200 through the proxy, beside docker start -> first 200 straight from the
container. Skips with a message if the image or the seed is missing.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blackbox"))
from harness import SANDBOXD, TEST_IMAGE, Daemon, docker, ensure_docker, ensure_test_image  # noqa: E402

DOCKER_SOCK = os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")
INDEX = b"<h1>awake</h1>\n"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over the Docker socket."""

    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Engine:
    """A few Engine API calls, one kept-alive connection."""

    def __init__(self, path=DOCKER_SOCK):
        self.conn = UnixHTTPConnection(path)
        self.conn.connect()

    def call(self, method, path, body=None):
        h = {"Host": "docker"}
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        self.conn.request(method, "/v1.41" + path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, data

    def ip(self, name, network):
        st, data = self.call("GET", "/containers/%s/json" % name)
        if st != 200:
            return None
        nets = json.loads(data)["NetworkSettings"]["Networks"]
        n = nets.get(network) or next(iter(nets.values()), {})
        return n.get("IPAddress") or None

    def close(self):
        self.conn.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def read_head(s, first):
    buf = first
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    line = buf.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def timed_get(addr, host, path="/", timeout=120):
    """(ms from before connect to the first byte, status) of one GET."""
    t0 = time.perf_counter()
    s = socket.create_connection(addr, timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                   % (path, host)).encode())
        first = s.recv(1)
        ms = (time.perf_counter() - t0) * 1000
        return ms, (read_head(s, first) if first else 0)
    finally:
        s.close()


def connect_until(ip, port, deadline_s=30):
    """Spin on connect() until the port accepts; returns the open socket."""
    deadline = time.perf_counter() + deadline_s
    while time.perf_counter() < deadline:
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect((ip, port))
            return s
        except OSError:
            s.close()
            time.sleep(0.0005)
    return None


def get_on(s, host, path="/"):
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\nConnection: close\r\n\r\n" % (path, host)).encode())
    first = s.recv(1)
    return read_head(s, first) if first else 0


def raw_start(eng, name, network, port, path, want_200):
    """Engine API start, then the first byte of a GET straight to the
    container: (start call ms, start+connect ms, start+first byte ms)."""
    t0 = time.perf_counter()
    st, data = eng.call("POST", "/containers/%s/start" % name)
    t_start = time.perf_counter()
    if st not in (204, 304):
        raise RuntimeError("docker start %s: %d %r" % (name, st, data))
    ip = eng.ip(name, network)
    excluded = time.perf_counter() - t_start
    if ip is None:
        raise RuntimeError("no IP for %s" % name)
    deadline = time.perf_counter() + 120
    while True:
        s = connect_until(ip, port)
        if s is None:
            raise RuntimeError("%s:%d never accepted" % (ip, port))
        t_conn = time.perf_counter()
        try:
            status = get_on(s, ip, path)
        except OSError:
            status = 0
        finally:
            s.close()
        t_fb = time.perf_counter()
        if status == 200 or not want_200 and status != 0:
            break
        if time.perf_counter() > deadline:
            raise RuntimeError("%s never answered 200" % name)
        time.sleep(0.005)
    ms = lambda t: (t - t0 - excluded) * 1000  # noqa: E731
    return (t_start - t0) * 1000, ms(t_conn), ms(t_fb)


def api(d, method, path, body=None):
    r = d.request(method, path, body, timeout=120)
    if r.status not in (200, 201, 204):
        raise RuntimeError("%s %s: %r" % (method, path, r))
    return r


def stop(d, sid):
    """POST /stop, again while an operation is still in flight (409)."""
    deadline = time.time() + 60
    while True:
        r = d.request("POST", "/v1/sandboxes/%s/stop" % sid, timeout=120)
        if r.status == 200 or r.status != 409 or time.time() > deadline:
            break
        time.sleep(0.05)
    if r.status != 200:
        raise RuntimeError("stop %s: %r" % (sid, r))


def wait_state(d, sid, want, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if d.request("GET", "/v1/sandboxes/%s" % sid).json()["state"] == want:
            return True
        time.sleep(0.02)
    return False


def row(label, xs, n):
    if not xs:
        print("%-44s %3d/%-3d %8s" % (label, 0, n, "-"))
        return None
    print("%-44s %3d/%-3d %8.1f %8.1f %8.1f %8.1f"
          % (label, len(xs), n, pct(xs, 50), pct(xs, 95), min(xs), max(xs)))
    return pct(xs, 50)


def header(title):
    print("\n" + title)
    print("%-44s %7s %8s %8s %8s %8s" % ("ms", "ok/n", "median", "p95", "min", "max"))


def accepted(d):
    r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def bench_wake(args, d, template_port, path, want_body):
    """Proxy wakes, then raw Docker starts of the same container."""
    sid = api(d, "POST", "/v1/sandboxes", {}).json()["id"]
    if want_body is not None:
        api(d, "PUT", "/v1/sandboxes/%s/files/index.html" % sid, want_body)
    host = "%s.preview.localhost:%d" % (sid, d.port)
    # Let the app come up once (a Vite starter's first start is the slowest).
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if timed_get(("127.0.0.1", d.port), host, path, timeout=30)[1] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError("the app never answered 200 at its preview URL")
    proxy, bad = [], []
    for _ in range(args.n):
        stop(d, sid)
        time.sleep(args.gap)
        ms, status = timed_get(("127.0.0.1", d.port), host, path, timeout=args.wake_timeout + 10)
        (proxy if status == 200 else bad).append(ms if status == 200 else status)
    stop(d, sid)
    # The same container under Docker alone, with the daemon down.
    name = "%s-%s" % (d.instance, sid)
    d.stop()
    call, conn, fb = [], [], []
    eng = Engine()
    try:
        for _ in range(args.n):
            c, cn, f = raw_start(eng, name, d.network, template_port, path, True)
            call.append(c)
            conn.append(cn)
            fb.append(f)
            st, data = eng.call("POST", "/containers/%s/stop?t=0" % name)
            if st not in (204, 304):
                raise RuntimeError("docker stop: %d %r" % (st, data))
            time.sleep(args.gap)
    finally:
        eng.close()
    d.start()
    return proxy, bad, call, conn, fb


def bench_unpause(args):
    """Daemon-paused sandbox -> first byte, and a plain container's unpause."""
    d = Daemon(extra="pause_timeout = 1s\nidle_timeout = 10m\nwake_timeout = 60s")
    ok, err = accepted(d)
    if not ok:
        d.cleanup()
        print("\nunpause: skipped, the daemon does not take pause_timeout (%s)" % err)
        return
    plain = None
    eng = Engine()
    try:
        d.start()
        sid = api(d, "POST", "/v1/sandboxes", {}).json()["id"]
        api(d, "PUT", "/v1/sandboxes/%s/files/index.html" % sid, INDEX)
        host = "%s.preview.localhost:%d" % (sid, d.port)
        proxy, bad = [], []
        for _ in range(args.n):
            if not wait_state(d, sid, "paused", 15):
                raise RuntimeError("the daemon did not pause the sandbox within 15 s")
            ms, status = timed_get(("127.0.0.1", d.port), host, "/index.html", timeout=60)
            (proxy if status == 200 else bad).append(ms if status == 200 else status)
        # A plain container, not the daemon's, on its network.
        plain = "%s-plain" % d.instance
        docker("run", "-d", "--name", plain, "--network", d.network, "--user", "1000:1000",
               TEST_IMAGE, "httpd", "-f", "-p", "3000", "-h", "/etc")
        ip = eng.ip(plain, d.network)
        s = connect_until(ip, 3000)
        if s is None:
            raise RuntimeError("the plain container never accepted")
        s.close()
        raw = []
        for _ in range(args.n):
            st, _ = eng.call("POST", "/containers/%s/pause" % plain)
            time.sleep(args.gap)
            t0 = time.perf_counter()
            st, data = eng.call("POST", "/containers/%s/unpause" % plain)
            if st != 204:
                raise RuntimeError("unpause: %d %r" % (st, data))
            s = connect_until(ip, 3000)
            get_on(s, ip, "/passwd")
            s.close()
            raw.append((time.perf_counter() - t0) * 1000)
        header("unpause, busybox httpd (%d times)" % args.n)
        row("proxy: paused by the daemon -> first byte", proxy, args.n)
        row("docker: unpause + connect + first byte", raw, args.n)
        if bad:
            print("  not 200: %r" % bad)
    finally:
        eng.close()
        if plain:
            docker("rm", "-f", plain, check=False)
        d.cleanup()


def find_seed():
    top = os.environ.get("top_srcdir", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    for p in (os.environ.get("SANDBOXD_SEED_DIR", ""),
              os.path.join(top, "base-image", "out", "templates", "vite-react"),
              "/usr/share/sandboxd/templates/vite-react"):
        if p and os.path.isdir(os.path.join(p, "node_modules")):
            return os.path.abspath(p)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="wakes to measure (default 20)")
    ap.add_argument("--image", default=TEST_IMAGE, help="sandbox image (sandboxd/base:latest: the Vite starter)")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds to let things settle between runs")
    ap.add_argument("--wake-timeout", type=int, default=120)
    args = ap.parse_args()
    if not ensure_docker():
        sys.exit("docker is not available")
    vite = args.image != TEST_IMAGE
    if vite:
        seed = find_seed()
        if docker("image", "inspect", args.image, check=False).returncode != 0 or seed is None:
            print("skip: no %s image or starter seed (base-image/build.sh makes both)" % args.image)
            return 0
        tmpl = {"image": args.image, "port": "3000", "seed_dir": seed, "memory": "1g", "cpus": "1",
                "dev_command": "npm run dev -- --host 0.0.0.0 --port 3000"}
        path, body = "/", None
    else:
        ensure_test_image()
        tmpl = {"image": TEST_IMAGE, "port": "3000", "dev_command": "httpd -f -p 3000 -h /workspace",
                "memory": "64m", "cpus": "0.5", "pids_limit": "64"}
        path, body = "/index.html", INDEX
    d = Daemon(extra="wake_timeout = %ds" % args.wake_timeout, templates={"default": tmpl})
    try:
        d.start()
        proxy, bad, call, conn, fb = bench_wake(args, d, 3000, path, body)
        if bad:
            # Why the app did not answer: the daemon's own account.
            for line in open(d.log_path, errors="replace"):
                if "proxy error" in line or "upstream" in line or "woke" in line:
                    print("  log: " + line.rstrip()[:300])
    finally:
        d.cleanup()
    what = "Vite starter (%s), stopped -> first 200" % args.image if vite else \
        "busybox httpd (%s), stopped -> first byte" % TEST_IMAGE
    header("wake, %s (%d times)" % (what, args.n))
    m_proxy = row("proxy: request -> app's first byte", proxy, args.n)
    row("docker: start call (Engine API)", call, args.n)
    row("docker: start + first successful connect", conn, args.n)
    m_fb = row("docker: start + connect + first byte", fb, args.n)
    if bad:
        print("  requests not answered 200: %r" % bad)
    if m_proxy is not None and m_fb is not None:
        print("overhead of the wake (median, proxy - docker start+first byte): %+.1f ms" % (m_proxy - m_fb))
    if not vite:
        bench_unpause(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
