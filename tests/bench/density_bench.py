#!/usr/bin/env python3
"""Density figures: the daemon's memory and idle cost with many sandboxes,
and how many sandboxes of an image this host runs with their apps up.

    tests/bench/density_bench.py [--running 40] [--store 1000]
    tests/bench/density_bench.py --image sandboxd/base:latest --running 40
        [--seed /usr/share/sandboxd/templates/vite-react]
    tests/bench/density_bench.py --image sandboxd/base:latest --running 200 \
        --until-refused --store 0      # fill the host until min_free_memory refuses

Starts a daemon of its own (free loopback port, own data_dir and labels,
like the black-box tests). Creates --running sandboxes through the API and
waits until each one's app answers 200 through the preview proxy. Then
stops the daemon, adds stopped rows straight into its SQLite store up to
--store sandboxes (a thousand API creates would make a thousand containers
first), starts it again and prints:
  - the daemon's RSS with --store sandboxes in the store and --running up;
  - the daemon's CPU time over --idle seconds with nothing happening (the
    idle reaper's cost: timers, no sweeps);
  - GET /v1/sandboxes with all of them;
  - the host memory the running sandboxes use (sum of their cgroups'
    memory, and MemAvailable before and after), per sandbox, and how many
    would fit in what is left above min_free_memory (10 %).
Everything it made is removed at the end. Not a test: a measurement, run
by hand; the figures go in docs/operations.md.
"""
import argparse
import os
import secrets
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blackbox"))
from harness import Daemon, ensure_docker, ensure_test_image, docker  # noqa: E402

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return -1


def mem_total_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return -1


def container_memory_bytes(cid):
    """The container's cgroup memory use (v2 or v1), minus page cache."""
    pid = docker("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
    with open("/proc/%s/cgroup" % pid) as f:
        lines = f.read().splitlines()
    for line in lines:
        _, ctrl, path = line.split(":", 2)
        if ctrl == "":
            base = "/sys/fs/cgroup" + path
            cur = int(open(base + "/memory.current").read())
            stat = dict(l.split() for l in open(base + "/memory.stat"))
            return cur - int(stat.get("inactive_file", 0))
        if "memory" in ctrl.split(","):
            base = "/sys/fs/cgroup/memory" + path
            cur = int(open(base + "/memory.usage_in_bytes").read())
            stat = dict(l.split() for l in open(base + "/memory.stat"))
            return cur - int(stat.get("total_inactive_file", 0))
    return -1


def new_id():
    return "".join(secrets.choice(CROCKFORD) for _ in range(26))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--running", type=int, default=40)
    ap.add_argument("--store", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=30)
    ap.add_argument("--image", default=None, help="e.g. sandboxd/base:latest (default: busybox test image)")
    ap.add_argument("--seed", default="/usr/share/sandboxd/templates/vite-react")
    ap.add_argument("--ready-timeout", type=int, default=600)
    ap.add_argument("--until-refused", action="store_true",
                    help="create up to --running, stopping at the first 429 (min_free_memory)")
    args = ap.parse_args()
    if not ensure_docker():
        sys.exit("docker is not available")
    ensure_test_image()
    d = Daemon(extra="max_running = %d\nmax_sandboxes = %d\nidle_timeout = 1h\nwake_timeout = 300s"
               % (args.running + 10, max(args.store, args.running) + 10))
    if args.image:
        if docker("image", "inspect", args.image, check=False).returncode != 0:
            print("SKIP: image %s is not present (base-image/build.sh builds it)" % args.image)
            return 0
        d.templates["default"] = {"image": args.image, "port": "3000",
                                  "dev_command": "npm run dev -- --host 0.0.0.0 --port 3000",
                                  "seed_dir": args.seed, "memory": "1g", "cpus": "1",
                                  "pids_limit": "512"}
    d.write_config()
    try:
        avail_before = mem_available_kb()
        d.start()
        print("daemon RSS at start: %d kB" % proc_status(d.proc.pid, "VmRSS"))
        ids = []
        t0 = time.time()
        refused = 0
        while len(ids) < args.running:
            r = d.request("POST", "/v1/sandboxes", {})
            if r.status == 429 and args.until_refused:
                # Booting sandboxes reserve memory until they settle: try
                # again a little later; three refusals in a row end it.
                refused += 1
                print("create %d refused (%d in a row): %s" % (len(ids) + 1, refused,
                                                               r.json()["error"]["message"]))
                if refused == 3:
                    break
                time.sleep(8)
                continue
            refused = 0
            if r.status != 201:
                sys.exit("create failed: %r" % r)
            ids.append(r.json()["id"])
            if not args.image:
                d.request("PUT", "/v1/sandboxes/%s/files/index.html" % ids[-1], b"up")
        print("created %d sandboxes in %.1f s" % (len(ids), time.time() - t0))
        # Every app answering through the proxy (held until its port accepts).
        up = 0
        deadline = time.time() + args.ready_timeout
        for sid in ids:
            while time.time() < deadline:
                r = d.preview(sid, "/")
                if r.status == 200:
                    up += 1
                    break
                time.sleep(0.5)
        print("apps answering 200 through the proxy: %d of %d (%.1f s after the first create)"
              % (up, len(ids), time.time() - t0))
        time.sleep(5)   # let the dev servers settle
        used = [container_memory_bytes(c) for c in d.containers(all=False)]
        avail_after = mem_available_kb()

        # The store grows to --store rows while the daemon is down.
        d.stop()
        db = sqlite3.connect(os.path.join(d.data_dir, "sandboxd.db"))
        now = int(time.time() * 1000)
        rows = [(new_id(), "acme", "default", "stopped", 3000, "public", 64, 0.5, 3600, 0,
                 "{}", "{}", now, now) for _ in range(max(0, args.store - len(ids)))]
        db.executemany("INSERT INTO sandboxes (id, tenant, template, state, port, visibility, "
                       "memory_mb, cpus, idle_timeout_s, pause_timeout_s, env_json, labels_json, "
                       "created_at, last_active_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.commit()
        db.close()
        d.start()
        for sid in ids[:5]:
            d.preview(sid, "/")
        time.sleep(2)
        pid = d.proc.pid
        print("daemon with %d sandboxes in the store, %d running: RSS %d kB (peak %d kB)"
              % (args.store, len(ids), proc_status(pid, "VmRSS"), proc_status(pid, "VmHWM")))
        c0 = cpu_seconds(pid)
        time.sleep(args.idle)
        c1 = cpu_seconds(pid)
        print("daemon CPU over %d s idle: %.3f s (%.3f%% of a core)"
              % (args.idle, c1 - c0, 100 * (c1 - c0) / args.idle))
        t1 = time.perf_counter()
        r = d.request("GET", "/v1/sandboxes", key="root")
        print("GET /v1/sandboxes listing %d: %.1f ms" % (len(r.json()["sandboxes"]),
                                                        (time.perf_counter() - t1) * 1000))
        if used and min(used) >= 0:
            per = sum(used) / len(used)
            print("sandbox memory (cgroup, minus page cache): mean %.1f MB, max %.1f MB, "
                  "total %.0f MB for %d" % (per / 2**20, max(used) / 2**20, sum(used) / 2**20,
                                            len(used)))
            print("host MemAvailable: %.0f MB before, %.0f MB with them up (%.1f MB each)"
                  % (avail_before / 1024, avail_after / 1024,
                     (avail_before - avail_after) / 1024 / max(1, len(used))))
            floor = mem_total_kb() * 0.10
            room = (avail_before - floor) * 1024 / per
            print("at that size, this host runs about %d of them above min_free_memory = 10%%"
                  % room)
    finally:
        d.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
