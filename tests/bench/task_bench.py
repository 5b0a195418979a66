#!/usr/bin/env python3
"""Agent task figures: time to the first event, and one stream's throughput.

    tests/bench/task_bench.py [--runs 20] [--lines 100000]

Starts a daemon of its own (free loopback port, own data_dir and labels,
like the black-box tests) with the busybox test image, creates one
sandbox and, once it runs:
  - --runs times: POST a command task (`echo hi`) and open its event
    stream at once; the time from sending the POST to the first event
    (the `started` status, then the first output line) — median and p95;
  - one task printing --lines lines (`seq`): every line arrives, in order,
    on one SSE stream; lines per second, and the daemon's RSS before,
    during (sampled) and after.
Everything it made is removed at the end. Not a test: a measurement, run
by hand; the figures go in docs/tasks.md.
"""
import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blackbox"))
from harness import Daemon, ensure_docker, ensure_test_image  # noqa: E402
from test_tasks import SSE, TEMPLATES, events_path, post_task, rss_kb, wait_task  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--lines", type=int, default=100000)
    a = ap.parse_args()
    if not ensure_docker():
        raise SystemExit("docker is not available")
    ensure_test_image()
    d = Daemon(extra="wake_timeout = 30s", templates=dict(TEMPLATES))
    try:
        d.start()
        r = d.request("POST", "/v1/sandboxes", {})
        if r.status != 201:
            raise SystemExit("create: %r" % r)
        sid = r.json()["id"]
        # Warm: the first task also waits for agentd to connect.
        r = post_task(d, sid, {"agent": "command", "cmd": ["true"]})
        if r.status != 202:
            raise SystemExit("POST tasks: %r" % r)
        wait_task(d, sid, r.json()["id"], ("succeeded",), 60)

        first, first_out = [], []
        for _ in range(a.runs):
            t0 = time.monotonic()
            r = post_task(d, sid, {"agent": "command", "cmd": ["echo", "hi"]})
            if r.status != 202:
                raise SystemExit("POST tasks: %r" % r)
            s = SSE(d, events_path(sid, r.json()["id"]))
            s.read_until(lambda s: len(s.events) >= 1, 30)
            first.append((time.monotonic() - t0) * 1000)
            s.read_until(lambda s: any(e["event"] == "output" for e in s.events), 30)
            first_out.append((time.monotonic() - t0) * 1000)
            s.read_all(30)
            s.close()
        print("POST tasks -> first event: median %.1f ms, p95 %.1f ms (%d runs)"
              % (statistics.median(first), pct(first, 95), a.runs))
        print("POST tasks -> first output line: median %.1f ms, p95 %.1f ms"
              % (statistics.median(first_out), pct(first_out, 95)))

        before = rss_kb(d)
        peak = [before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                v = rss_kb(d)
                if v:
                    peak[0] = max(peak[0], v)
                time.sleep(0.1)

        th = threading.Thread(target=sample)
        th.start()
        t0 = time.monotonic()
        r = post_task(d, sid, {"agent": "command", "cmd": ["seq", "1", str(a.lines)]})
        s = SSE(d, events_path(sid, r.json()["id"]), timeout=120)
        evs = s.read_all(300)
        took = time.monotonic() - t0
        s.close()
        stop.set()
        th.join()
        after = rss_kb(d)
        lines = [e["data"]["text"] for e in evs if e["event"] == "output"]
        ok = lines == ["%d\n" % i for i in range(1, a.lines + 1)] and evs[-1]["event"] == "exit"
        print("%d lines on one stream: %s, %.2f s, %.0f lines/s; daemon RSS %d kB before, "
              "%d kB peak, %d kB after" % (a.lines, "all in order" if ok else "NOT all in order",
                                           took, a.lines / took, before, peak[0], after))
        d.request("DELETE", "/v1/sandboxes/%s" % sid)
        return 0 if ok else 1
    finally:
        d.cleanup()


if __name__ == "__main__":
    sys.exit(main())
