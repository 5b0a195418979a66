#!/usr/bin/env python3
"""Load and leaks through the edge: 1,000 HTTP connections for 60 s, then
10,000 concurrent WebSockets, with the proxy's RSS watched throughout.

    tests/bench/load_test.py [--sandboxd build-rel/sandboxd] [--seconds 60]
        [--conns 1000] [--ws 10000] [--ws-seconds 20] [--tls]

Starts the proxy bench's origin and WebSocket client (../shared/bench/origin.c
and wsbench.c, built here with cc) and a sandboxd with a [route] to the
origin, all on loopback ports of its own, then:

  1. wrk with --conns connections for --seconds through sandboxd (plain, or
     TLS with --tls), VmRSS sampled every second. Passes when wrk saw no
     socket error (connect, read, write, timeout) and no non-2xx answer, and
     RSS is flat: the last sample is within --rss-slack MiB of the sample
     taken after the first 10 s (connections and buffers are made in the
     first seconds; a leak of even a few bytes per request shows up over the
     million requests that follow).
  2. wsbench with --ws WebSocket connections at once through sandboxd, each
     echoing 100-byte messages in a closed loop for --ws-seconds, twice.
     Passes when every connection upgraded and no error happened, and the
     second wave's RSS peak is within --rss-slack MiB of the first's.
  3. After both, sandboxd still answers, and its RSS once the clients are
     gone is printed beside the figure before the load.

Every load run is bounded (wrk -d, wsbench -d, both under timeout), and
everything the script started is stopped at the end. Exits 0 when every
check passed, 1 otherwise. Not part of the suite (it needs a quiet machine
for a minute and a half); the figures of a run go in docs/limits.md.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
BENCH = os.path.abspath(os.path.join(TOP, "..", "shared", "bench"))
# The idle-connections bench's helpers: a port that answers, a throwaway cert.
sys.path.insert(0, HERE)
from idle_conns_bench import HOST, make_cert, wait_port  # noqa: E402
ORIGIN_PORT = 18491
SBX_PORT, SBX_TLS_PORT = 18492, 18493


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0



def get_ok(port):
    """One request through the route on a fresh connection: 200?"""
    try:
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.settimeout(5)
        s.sendall(("GET /100b HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                   % HOST).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False



class Sampler(threading.Thread):
    """VmRSS of pid every second until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.halt = pid, [], threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.halt.wait(1.0):
            self.samples.append((time.monotonic() - t0, rss_kb(self.pid)))


def wrk_phase(a, pid, url):
    """Returns (ok, lines to print)."""
    smp = Sampler(pid)
    smp.start()
    cmd = ["timeout", str(a.seconds + 30), "wrk", "-t", "2", "-c", str(a.conns),
           "-d", "%ds" % a.seconds, "--timeout", "5s", "--latency",
           "-H", "Host: " + HOST, url]
    out = subprocess.run(cmd, capture_output=True, text=True)
    smp.halt.set()
    smp.join()
    text = out.stdout + out.stderr
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    reqs = re.search(r"(\d+) requests in", text)
    nreq = int(reqs.group(1)) if reqs else 0
    bad = sum(int(x) for x in errs.groups()) if errs else 0
    bad += int(non2xx.group(1)) if non2xx else 0
    samples = smp.samples
    after10 = next((kb for t, kb in samples if t >= 10.0), samples[0][1] if samples else 0)
    last = samples[-1][1] if samples else 0
    peak = max((kb for _, kb in samples), default=0)
    growth_mib = (last - after10) / 1024.0
    flat = growth_mib <= a.rss_slack
    lines = [
        "wrk: %d connections, %d s: %d requests (%.0f/s), errors %s, non-2xx %s, exit %d" %
        (a.conns, a.seconds, nreq, nreq / max(a.seconds, 1),
         "/".join(errs.groups()) if errs else "none", non2xx.group(1) if non2xx else "0",
         out.returncode),
        "RSS during wrk: at 10 s %.1f MiB, peak %.1f MiB, at the end %.1f MiB "
        "(growth %.2f MiB, allowed %.1f) -> %s" %
        (after10 / 1024.0, peak / 1024.0, last / 1024.0, growth_mib, a.rss_slack,
         "flat" if flat else "GROWING"),
        "RSS samples (s:MiB): " + " ".join("%d:%.1f" % (t, kb / 1024.0)
                                           for t, kb in samples[::5]),
    ]
    lat = re.search(r"99%\s+(\S+)", text)
    if lat:
        lines.append("wrk p99 latency %s" % lat.group(1))
    ok = out.returncode == 0 and nreq > 0 and bad == 0 and flat
    if out.returncode != 0 or nreq == 0:
        lines.append("wrk output:\n" + text)
    return ok, lines


def ws_phase(a, pid, wsbench):
    smp = Sampler(pid)
    smp.start()
    cmd = ["timeout", str(a.ws_seconds + 60), wsbench, "-c", str(a.ws),
           "-d", str(a.ws_seconds), "-s", "100", "-H", HOST,
           "ws://127.0.0.1:%d/ws" % SBX_PORT]
    out = subprocess.run(cmd, capture_output=True, text=True)
    smp.halt.set()
    smp.join()
    m = re.search(r"WSRESULT (.*)", out.stdout)
    fields = dict(kv.split("=") for kv in m.group(1).split()) if m else {}
    peak = max((kb for _, kb in smp.samples), default=0)
    ok = (out.returncode == 0 and fields.get("conns_ok") == str(a.ws)
          and fields.get("handshake_fail") == "0" and fields.get("errors") == "0")
    lines = ["wsbench: %d WebSockets at once, %d s: %s, exit %d" %
             (a.ws, a.ws_seconds, m.group(1) if m else "no result", out.returncode),
             "RSS with the WebSockets open: peak %.1f MiB" % (peak / 1024.0)]
    if not m:
        lines.append("wsbench output:\n" + out.stdout + out.stderr)
    return ok, lines, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sandboxd", default=os.path.join(TOP, "build-rel", "sandboxd"))
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--ws", type=int, default=10000)
    ap.add_argument("--ws-seconds", type=int, default=20)
    ap.add_argument("--rss-slack", type=float, default=4.0,
                    help="MiB the RSS may grow from 10 s to the end of the wrk run, "
                    "and from one WebSocket wave to the next")
    ap.add_argument("--tls", action="store_true", help="wrk over TLS")
    a = ap.parse_args()

    for tool in ("wrk", "cc", "openssl"):
        if not shutil.which(tool):
            raise SystemExit("%s is missing (apt-get install wrk gcc openssl)" % tool)
    if not os.path.exists(os.path.join(BENCH, "origin.c")):
        raise SystemExit("the proxy bench is missing: %s" % BENCH)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each proxied connection holds two descriptors in sandboxd (client and
    # upstream); the phases run one after the other.
    want = 2 * max(a.ws, a.conns) + 64
    if hard < want:
        try:  # root may raise its hard limit (children inherit it)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
        except (ValueError, OSError):
            raise SystemExit("the file limit (%d) is below the %d descriptors "
                             "sandboxd needs for --ws %d; try --ws %d"
                             % (hard, want, a.ws, (hard - 64) // 2))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="load-test.")
    procs = []
    results = []
    try:
        origin = os.path.join(tmp, "origin")
        wsbench = os.path.join(tmp, "wsbench")
        subprocess.run(["cc", "-O2", "-o", origin, os.path.join(BENCH, "origin.c")],
                       check=True)
        subprocess.run(["cc", "-O2", "-o", wsbench, os.path.join(BENCH, "wsbench.c")],
                       check=True)
        procs.append(subprocess.Popen([origin, "-a", "127.0.0.1", "-p", str(ORIGIN_PORT),
                                       "-t", "1"], stdout=subprocess.DEVNULL))
        wait_port(ORIGIN_PORT)
        cert, key = make_cert(tmp)
        conf = os.path.join(tmp, "sandboxd.conf")
        os.makedirs(os.path.join(tmp, "sbx"))
        with open(conf, "w") as f:
            f.write("listen = 127.0.0.1:%d\n" % SBX_PORT)
            f.write("tls_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                    % (SBX_TLS_PORT, cert, key))
            # Every client is 127.0.0.1: no per-address cap; room for all.
            f.write("max_connections_per_ip = 0\nmax_connections = %d\n"
                    % (a.ws + a.conns + 100))
            f.write("egress = open\nlog_level = warn\n")
            f.write("data_dir = %s/sbx\npreview_domain = preview.localhost\n"
                    "docker_socket = %s/no-docker.sock\n"
                    "[route load]\nhost = %s\nupstream = 127.0.0.1:%d\n"
                    % (tmp, tmp, HOST, ORIGIN_PORT))
        log = open(os.path.join(tmp, "sandboxd.log"), "w")
        sbx = subprocess.Popen([a.sandboxd, "serve", "-c", conf], stderr=log)
        procs.append(sbx)
        wait_port(SBX_TLS_PORT if a.tls else SBX_PORT)
        if not get_ok(SBX_PORT):
            raise SystemExit("the route does not answer 200")
        before = rss_kb(sbx.pid)
        print("sandboxd %s, RSS before the load %.1f MiB" % (a.sandboxd, before / 1024.0))

        url = ("https://127.0.0.1:%d/100b" % SBX_TLS_PORT if a.tls
               else "http://127.0.0.1:%d/100b" % SBX_PORT)
        ok, lines = wrk_phase(a, sbx.pid, url)
        results.append(("wrk %d connections %d s" % (a.conns, a.seconds), ok))
        print("\n".join(lines))
        sys.stdout.flush()

        # Two waves: the second must reuse what the first freed.
        peaks = []
        for wave in (1, 2):
            ok, lines, peak = ws_phase(a, sbx.pid, wsbench)
            results.append(("%d WebSockets, wave %d" % (a.ws, wave), ok))
            print("\n".join(lines))
            peaks.append(peak)
            time.sleep(2.0)
        grew = (peaks[1] - peaks[0]) / 1024.0
        results.append(("second wave's RSS peak within %.1f MiB of the first's (%+.2f MiB)"
                        % (a.rss_slack, grew), grew <= a.rss_slack))

        time.sleep(2.0)
        alive = sbx.poll() is None and get_ok(SBX_PORT)
        results.append(("sandboxd answers after the load", alive))
        print("RSS after the load, clients gone: %.1f MiB (before %.1f MiB)" %
              (rss_kb(sbx.pid) / 1024.0, before / 1024.0))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    for what, ok in results:
        print("%s: %s" % ("PASS" if ok else "FAIL", what))
    return 0 if results and all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
