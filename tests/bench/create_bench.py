#!/usr/bin/env python3
"""Measure POST /v1/sandboxes latency and the daemon's memory.

    tests/bench/create_bench.py [--creates 20] [--store 200]

Starts a daemon of its own (like the black-box tests: free loopback port,
own data_dir and labels, the busybox test image), times --creates creates
one after another and prints p50/p95/max, then fills the store to --store
sandboxes (created, then stopped, so they cost no container RAM) and prints
the daemon's RSS. Everything it made is removed at the end. Not a test: a
measurement, run by hand.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blackbox"))
from harness import Daemon, ensure_docker, ensure_test_image  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=20)
    ap.add_argument("--store", type=int, default=200)
    args = ap.parse_args()
    if not ensure_docker():
        sys.exit("docker is not available")
    ensure_test_image()
    d = Daemon(extra="max_running = %d\nmax_sandboxes = %d" % (args.store + 10, args.store + 10))
    d.templates["default"]["dev_command"] = "httpd -f -p 3000 -h /workspace"
    d.write_config()
    try:
        d.start()
        print("daemon RSS at start: %d kB" % rss_kb(d.proc.pid))
        lat, ids = [], []
        for _ in range(args.creates):
            t0 = time.perf_counter()
            r = d.request("POST", "/v1/sandboxes", {})
            lat.append((time.perf_counter() - t0) * 1000)
            if r.status != 201:
                sys.exit("create failed: %r" % r)
            ids.append(r.json()["id"])
        print("POST /v1/sandboxes over %d creates: p50 %.0f ms, p95 %.0f ms, max %.0f ms"
              % (len(lat), pct(lat, 50), pct(lat, 95), max(lat)))
        for sid in ids:
            d.request("POST", "/v1/sandboxes/%s/stop" % sid)
        while len(ids) < args.store:
            r = d.request("POST", "/v1/sandboxes", {})
            if r.status != 201:
                sys.exit("create failed: %r" % r)
            ids.append(r.json()["id"])
            d.request("POST", "/v1/sandboxes/%s/stop" % ids[-1])
        t0 = time.perf_counter()
        r = d.request("GET", "/v1/sandboxes")
        list_ms = (time.perf_counter() - t0) * 1000
        print("with %d sandboxes in the store (stopped): daemon RSS %d kB; GET /v1/sandboxes %.1f ms"
              % (len(r.json()["sandboxes"]), rss_kb(d.proc.pid), list_ms))
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
