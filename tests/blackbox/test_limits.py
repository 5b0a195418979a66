#!/usr/bin/env python3
"""Black-box scenarios for limits that hold (issue 10, item 4): a fork bomb,
a memory hog and a disk filler in one sandbox leave the daemon and the
other sandboxes working; the template's `disk` ceiling stops a sandbox that
goes over it, with a clear error, and keeps it from waking until its files
fit; a full data disk never corrupts the store.

Real daemons, real dockerd, real busybox containers, real sockets; the full
disk is a 16 MiB ext4 image loop-mounted as data_dir (skipped with a
message where loop devices or mount are not available). Every load is
bounded in count and time. Prints "N passed, N failed"; exits 77 without
Docker.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, SANDBOXD, TEST_IMAGE, docker, ensure_docker,  # noqa: E402
                     ensure_test_image, wait_for)

BASE = {"image": TEST_IMAGE, "port": "3000", "dev_command": "httpd -f -p 3000 -h /workspace",
        "memory": "64m", "cpus": "0.5", "pids_limit": "64"}
TEMPLATES = {
    "default": dict(BASE),
    # A disk ceiling small enough to fill in a moment.
    "small": dict(BASE, disk="8m"),
}
# The most a request to a healthy sandbox or the API may take while another
# sandbox misbehaves: generous for a shared 2-core machine, far below a hang.
BOUND_S = 3.0
RSS_MAX_KB = 96 * 1024


# --- helpers ----------------------------------------------------------------

def create(t, d, body=None):
    r = d.request("POST", "/v1/sandboxes", body if body is not None else {})
    t.check(r.status == 201, "create %r answers 201, got %r" % (body, r))
    return r.json()["id"] if r.status == 201 else None


def put(d, sid, path, data):
    r = d.request("PUT", "/v1/sandboxes/%s/files/%s" % (sid, path), data)
    return r.status in (201, 204)


def get_sbx(d, sid):
    r = d.request("GET", "/v1/sandboxes/%s" % sid, timeout=10)
    return r.json() if r.status == 200 else None


def exec_(d, sid, script, timeout_s=30):
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                  {"cmd": ["sh", "-c", script], "timeout_s": timeout_s}, timeout=timeout_s + 30)
    return r.json() if r.status == 200 else r


def served(d, sid, want, timeout=15):
    def probe():
        try:
            r = d.request("GET", "/index.html", key=None,
                          host="%s.preview.localhost:%d" % (sid, d.port), timeout=5)
        except OSError:
            return None
        return r if r.status == 200 and r.body == want else None
    return wait_for(probe, timeout=timeout, interval=0.1)


def rss_kb(d):
    try:
        with open("/proc/%d/status" % d.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Probe(threading.Thread):
    """While something misbehaves: B's preview and the API, over and over,
    each answer timed. Bounded by stop() and by a count."""

    def __init__(self, d, sid, want):
        super().__init__(daemon=True)
        self.d, self.sid, self.want = d, sid, want
        self.halt = threading.Event()
        self.worst = 0.0
        self.bad = []
        self.n = 0

    def run(self):
        host = "%s.preview.localhost:%d" % (self.sid, self.d.port)
        while not self.halt.is_set() and self.n < 2000:
            for what, fn in (
                    ("preview", lambda: self.d.request("GET", "/index.html", key=None, host=host,
                                                       timeout=10)),
                    ("healthz", lambda: self.d.request("GET", "/healthz", key=None, timeout=10)),
                    ("list", lambda: self.d.request("GET", "/v1/sandboxes", timeout=10))):
                t0 = time.time()
                try:
                    r = fn()
                    ok = r.status == 200 and (what != "preview" or r.body == self.want)
                except OSError as e:
                    r, ok = e, False
                dt = time.time() - t0
                self.worst = max(self.worst, dt)
                self.n += 1
                if not ok:
                    self.bad.append("%s: %r" % (what, r))
            time.sleep(0.05)

    def stop(self):
        self.halt.set()
        self.join(30)


def check_neighbours(t, d, probe, what):
    probe.stop()
    t.check(probe.n >= 6, "%s: the probe ran (%d requests)" % (what, probe.n))
    t.check(not probe.bad, "%s: sandbox B and the API kept answering: %r" % (what, probe.bad[:5]))
    t.check(probe.worst < BOUND_S, "%s: every answer within %.0f s (worst %.2f s)"
            % (what, BOUND_S, probe.worst))
    t.check(d.proc.poll() is None, "%s: the daemon is alive" % what)
    rss = rss_kb(d)
    t.check(rss is not None and rss < RSS_MAX_KB, "%s: the daemon's RSS is sane (%r kB)" % (what, rss))


# --- the scenarios ----------------------------------------------------------

def cgroup_file(d, sid, controller, name):
    """The container's cgroup file from the host (cgroup v1 with the cgroupfs
    or systemd driver, or v2), or None."""
    r = docker("inspect", "-f", "{{.Id}}", "%s-%s" % (d.instance, sid), check=False)
    cid = r.stdout.strip()
    if not cid:
        return None
    for p in ("/sys/fs/cgroup/%s/docker/%s/%s" % (controller, cid, name),
              "/sys/fs/cgroup/%s/system.slice/docker-%s.scope/%s" % (controller, cid, name),
              "/sys/fs/cgroup/system.slice/docker-%s.scope/%s" % (cid, name),
              "/sys/fs/cgroup/docker/%s/%s" % (cid, name)):
        if os.path.exists(p):
            return p
    return None


def read_counter(path, key):
    """"key N" from a cgroup file such as pids.events or memory.oom_control."""
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) == 2 and w[0] == key:
                    return int(w[1])
    except OSError:
        pass
    return None


def test_fork_bomb(t, d, ctx):
    """A forks until its pids_limit (64) stops it; B and the API go on."""
    a, b = ctx["a"], ctx["b"]
    events = cgroup_file(d, a, "pids", "pids.events")
    current = cgroup_file(d, a, "pids", "pids.current")
    before = read_counter(events, "max") if events else None
    probe = Probe(d, b, ctx["b_index"])
    probe.start()
    # A real fork bomb, bounded: every shell forks two more, ten levels
    # deep (at most 2^11 forks in all), the leaves become an 8 s sleep. The
    # pids limit cuts it long before; whatever it made is gone in 8 s.
    script = ('b() { [ "$1" -ge 10 ] && exec sleep 8; b $(($1+1)) & b $(($1+1)) & }; '
              'b 0 </dev/null >/dev/null 2>&1; echo started')
    r = exec_(d, a, script, timeout_s=20)
    # The top shell itself may meet the limit before its echo (exit 2,
    # "can't fork" to /dev/null): either way the exec is answered.
    t.check(isinstance(r, dict) and ("started" in r.get("stdout", "") or r.get("exit_code") == 2),
            "fork bomb: it ran and the exec was answered (%r)" % r)
    peak = 0
    t_end = time.time() + 4
    while time.time() < t_end:
        if current:
            try:
                peak = max(peak, int(open(current).read()))
            except (OSError, ValueError):
                pass
        time.sleep(0.1)
    check_neighbours(t, d, probe, "fork bomb")
    if events and current:
        after = read_counter(events, "max")
        t.check(after is not None and before is not None and after > before,
                "fork bomb: forks were refused at the pids limit (pids.events max %r -> %r)" % (before, after))
        t.check(0 < peak <= 64, "fork bomb: never more than 64 processes (peak %d)" % peak)
    else:
        print("  note  fork bomb: the container's pids cgroup is not visible; "
              "the limit is checked from the neighbours only", flush=True)
    # A itself recovers once its sleeps end.
    ok = wait_for(lambda: (lambda x: isinstance(x, dict) and x.get("stdout") == "alive\n")(
        exec_(d, a, "echo alive", timeout_s=10)), timeout=40, interval=1)
    t.check(ok, "fork bomb: A answers exec again afterwards")
    if current:
        n = wait_for(lambda: (lambda v: v if v < 8 else None)(int(open(current).read())),
                     timeout=20, interval=0.5)
        t.check(n is not None, "fork bomb: all its processes are gone (%s)" % open(current).read().strip())


def test_memory_hog(t, d, ctx):
    """A allocates past its 64 MiB: the kernel kills the hog inside A only."""
    a, b = ctx["a"], ctx["b"]
    probe = Probe(d, b, ctx["b_index"])
    probe.start()
    # dd's 256 MiB buffer is filled from /dev/zero: resident, four times
    # the ceiling, no swap (MemorySwap = Memory).
    # cgroup v1 counts in memory.oom_control, v2 in memory.events.
    oom = cgroup_file(d, a, "memory", "memory.oom_control") or cgroup_file(d, a, "memory", "memory.events")
    before = read_counter(oom, "oom_kill") if oom else None
    r = exec_(d, a, "dd if=/dev/zero of=/dev/null bs=256M count=4; echo rc=$?", timeout_s=30)
    time.sleep(1)
    check_neighbours(t, d, probe, "memory hog")
    if oom and before is not None:
        after = read_counter(oom, "oom_kill")
        t.check(after is not None and after > before,
                "memory hog: the OOM killer acted inside A's cgroup (%r -> %r)" % (before, after))
    out = (r.get("stdout", "") + r.get("stderr", "")) if isinstance(r, dict) else repr(r)
    t.check(isinstance(r, dict) and ("rc=137" in out or "Killed" in out or r.get("exit_code") == 137),
            "memory hog: the hog was killed inside A (%r)" % r)
    # A is still the same running sandbox and answers.
    s = get_sbx(d, a)
    t.check(s is not None and s["state"] == "running" and s["error"] is None,
            "memory hog: A is still running (%r)" % s)
    r = exec_(d, a, "echo alive", timeout_s=10)
    t.check(isinstance(r, dict) and r.get("stdout") == "alive\n", "memory hog: A answers exec (%r)" % r)


def test_tmp_hog(t, d, ctx):
    """/tmp is a tmpfs of half A's memory: filling it is ENOSPC for the
    writer, and A's dev server is not the OOM killer's victim."""
    a, b = ctx["a"], ctx["b"]
    r = docker("inspect", "-f", "{{json .HostConfig.Tmpfs}}", "%s-%s" % (d.instance, a), check=False)
    t.check("size=32m" in r.stdout, "tmp hog: /tmp is half of the 64 MiB (%r)" % r.stdout.strip())
    before = (get_sbx(d, a) or {}).get("dev_server", {}).get("restarts")
    probe = Probe(d, b, ctx["b_index"])
    probe.start()
    r = exec_(d, a, "dd if=/dev/zero of=/tmp/hog bs=1M count=200 2>&1; echo rc=$?; rm -f /tmp/hog",
              timeout_s=30)
    time.sleep(1)
    check_neighbours(t, d, probe, "tmp hog")
    out = (r.get("stdout", "") + r.get("stderr", "")) if isinstance(r, dict) else repr(r)
    t.check("No space left" in out and "rc=1" in out,
            "tmp hog: 200 MiB of /tmp is ENOSPC for dd (%r)" % out[-300:])
    t.check(served(d, a, ctx["a_index"], timeout=5) is not None, "tmp hog: A serves at once")
    after = (get_sbx(d, a) or {}).get("dev_server", {}).get("restarts")
    t.check(before is not None and after == before,
            "tmp hog: A's dev server was not killed (restarts %r -> %r)" % (before, after))


def test_disk_filler(t, d, ctx):
    """C writes past its 8 MiB disk ceiling: stopped with the error, within
    bounded time; B unaffected; not woken until its files fit."""
    b, c = ctx["b"], ctx["c"]
    probe = Probe(d, b, ctx["b_index"])
    probe.start()
    t0 = time.time()
    # Bounded: at most 64 MiB, a MiB every 0.1 s; the stop ends it.
    r = exec_(d, c, "i=0; while [ $i -lt 64 ]; do dd if=/dev/zero of=/workspace/fill.$i bs=1M count=1 "
              "2>/dev/null; i=$((i+1)); sleep 0.1; done; echo wrote=$i", timeout_s=30)
    s = wait_for(lambda: (lambda x: x if x and x["state"] == "stopped" and x["error"] else None)(
        get_sbx(d, c)), timeout=20, interval=0.2)
    took = time.time() - t0
    check_neighbours(t, d, probe, "disk filler")
    t.check(s is not None, "disk filler: C is stopped with an error (%r, %r)" % (get_sbx(d, c), r))
    if s is None:
        return
    t.check("disk ceiling exceeded" in s["error"] and "8.0 MiB" in s["error"],
            "disk filler: the error says why (%r)" % s["error"])
    t.check(took < 25, "disk filler: stopped within bounded time (%.1f s)" % took)
    t.check("sandbox over its disk ceiling; stopping it" in open(d.log_path).read(),
            "disk filler: a log line says so")
    r = d.request("GET", "/metrics", key="root")
    t.check(r.status == 200 and "sandboxd_disk_stops_total 1" in r.body.decode(),
            "disk filler: counted in /metrics")
    # A preview request does not wake it; the page says why.
    r = d.request("GET", "/", key=None, host="%s.preview.localhost:%d" % (c, d.port),
                  headers={"Accept": "*/*"}, timeout=20)
    t.check(r.status == 503 and b"disk" in r.body, "disk filler: a preview does not wake it (%r)" % r)
    t.check(get_sbx(d, c)["state"] == "stopped", "disk filler: still stopped after a preview request")
    # Nor does an exec (a wake of its own).
    r = d.request("POST", "/v1/sandboxes/%s/exec" % c, {"cmd": ["true"]}, timeout=30)
    t.check(r.status == 429 and r.error_code() == "quota_exceeded" and
            "disk" in r.json()["error"]["message"], "disk filler: an exec does not wake it (%r)" % r)
    r = d.request("POST", "/v1/sandboxes/%s/tasks" % c, {"agent": "command", "cmd": ["true"]}, timeout=30)
    if r.status == 202:
        tid = r.json()["id"]
        tk = wait_for(lambda: (lambda x: x if x.get("state") not in ("queued", "running") else None)(
            d.request("GET", "/v1/sandboxes/%s/tasks/%s" % (c, tid)).json()), timeout=30, interval=0.3)
        t.check(tk is not None and tk["state"] == "failed" and "disk" in (tk.get("error") or ""),
                "disk filler: its task fails with the reason, not runs (%r)" % tk)
    else:
        t.check(r.status in (409, 429, 503), "disk filler: a task is refused (%r)" % r)
    t.check(get_sbx(d, c)["state"] == "stopped", "disk filler: still stopped after an exec and a task")
    # An explicit start measures again: still over, 429 with the numbers.
    r = d.request("POST", "/v1/sandboxes/%s/start" % c)
    t.check(r.status == 429 and r.error_code() == "quota_exceeded" and "disk ceiling" in
            r.json()["error"]["message"], "disk filler: start while over answers 429 (%r)" % r)
    # Files API works while stopped: free the space, then start.
    r = d.request("GET", "/v1/sandboxes/%s/files/" % c)
    names = [e["name"] for e in r.json()["entries"]] if r.status == 200 else []
    t.check(any(n.startswith("fill.") for n in names), "disk filler: the files are listed while stopped")
    for n in names:
        if n.startswith("fill."):
            d.request("DELETE", "/v1/sandboxes/%s/files/%s" % (c, n))
    r = d.request("POST", "/v1/sandboxes/%s/start" % c)
    t.check(r.status == 200 and r.json()["state"] == "running" and r.json()["error"] is None,
            "disk filler: start after freeing space runs it, error cleared (%r)" % r)
    t.check(served(d, c, ctx["c_index"]) is not None, "disk filler: C serves again")


def test_disk_freed_by_tick(t, d, ctx):
    """Over, stopped; the files shrink while it is stopped: the next check
    clears the error and a preview request wakes it again."""
    c = ctx["c"]
    exec_(d, c, "dd if=/dev/zero of=/workspace/big bs=1M count=12 2>/dev/null", timeout_s=30)
    s = wait_for(lambda: (lambda x: x if x and x["state"] == "stopped" and x["error"] else None)(
        get_sbx(d, c)), timeout=20, interval=0.2)
    if not t.check(s is not None, "disk tick: stopped again (%r)" % get_sbx(d, c)):
        return
    t.check(d.request("DELETE", "/v1/sandboxes/%s/files/big" % c).status == 204, "disk tick: delete the file")
    s = wait_for(lambda: (lambda x: x if x and x["error"] is None else None)(get_sbx(d, c)),
                 timeout=10, interval=0.2)
    t.check(s is not None and s["state"] == "stopped", "disk tick: the error clears by itself (%r)" % s)
    t.check(served(d, c, ctx["c_index"], timeout=30) is not None, "disk tick: a preview request wakes it")


def test_disk_held_across_restart(t, d, ctx):
    """A daemon restart does not forget that a sandbox is over its disk."""
    c = ctx["c"]
    exec_(d, c, "dd if=/dev/zero of=/workspace/big bs=1M count=12 2>/dev/null", timeout_s=30)
    s = wait_for(lambda: (lambda x: x if x and x["state"] == "stopped" and x["error"] else None)(
        get_sbx(d, c)), timeout=20, interval=0.2)
    if not t.check(s is not None, "disk restart: stopped (%r)" % get_sbx(d, c)):
        return
    d.stop()
    d.start()
    r = d.request("GET", "/", key=None, host="%s.preview.localhost:%d" % (c, d.port), timeout=20)
    t.check(r.status == 503, "disk restart: a preview still does not wake it (%r)" % r)
    s = get_sbx(d, c)
    t.check(s["state"] == "stopped" and "disk ceiling" in (s["error"] or ""),
            "disk restart: stopped with its error (%r)" % s)
    d.request("DELETE", "/v1/sandboxes/%s/files/big" % c)
    r = d.request("POST", "/v1/sandboxes/%s/start" % c)
    t.check(r.status == 200, "disk restart: starts once freed (%r)" % r)


def with_limits_daemon(t):
    d = Daemon(extra="disk_check_interval = 1s\nwake_timeout = 20s", templates=dict(TEMPLATES))
    before = t.failed
    try:
        r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
        if not t.check(r.returncode == 0, "the config is accepted: %s" % r.stderr.strip()):
            return
        d.start()
        ctx = {"a_index": b"<h1>A</h1>\n", "b_index": b"<h1>B alive</h1>\n", "c_index": b"<h1>C</h1>\n"}
        ctx["a"], ctx["b"] = create(t, d), create(t, d)
        ctx["c"] = create(t, d, {"template": "small"})
        if None in (ctx["a"], ctx["b"], ctx["c"]):
            return
        for k in "abc":
            t.check(put(d, ctx[k], "index.html", ctx[k + "_index"]), "put index.html in " + k)
            t.check(served(d, ctx[k], ctx[k + "_index"]) is not None, "%s serves" % k)
        for fn in (test_fork_bomb, test_memory_hog, test_tmp_hog, test_disk_filler,
                   test_disk_freed_by_tick, test_disk_held_across_restart):
            if d.proc is None or d.proc.poll() is not None:
                t.check(False, "the daemon exited before %s" % fn.__name__)
                break
            t.run(fn, d, ctx)
    except Exception as e:
        t.check(False, "limits daemon: %r" % e)
    finally:
        if t.failed != before:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
        d.cleanup()


# --- a full data disk -------------------------------------------------------

def loop_mount(t):
    """A 16 MiB ext4 image mounted on a fresh directory, or None + why."""
    if os.geteuid() != 0:
        return None, "not root"
    for tool in ("mkfs.ext4", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            return None, "%s not installed" % tool
    work = tempfile.mkdtemp(prefix="sbxtest-fs-")
    img, mnt = os.path.join(work, "fs.img"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    with open(img, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", "2048", img], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return None, "mkfs.ext4 failed: " + r.stderr.strip()
    r = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return None, "mount -o loop failed (no loop devices?): " + r.stderr.strip()
    return (work, mnt), None


def loop_unmount(work, mnt):
    for _ in range(20):
        if subprocess.run(["umount", mnt], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    else:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def fill(path):
    """Write until ENOSPC (bounded by the filesystem's size)."""
    n = 0
    with open(path, "wb") as f:
        try:
            while n < 64:
                f.write(b"\0" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
                n += 1
        except OSError:
            pass
    # The last blocks: small writes until nothing goes.
    with open(path + ".tail", "wb") as f:
        try:
            for _ in range(4096):
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass
    return n


def test_full_disk(t):
    m, why = loop_mount(t)
    if m is None:
        print("  skip  full data disk: %s" % why, flush=True)
        return "skip"
    work, mnt = m
    d = None
    before = t.failed
    try:
        d = Daemon(templates=dict(TEMPLATES))
        d.data_dir = os.path.join(mnt, "data")
        d.write_config()
        d.start()
        a = create(t, d)
        if a is None:
            return
        gone = create(t, d)
        t.check(put(d, a, "keep.txt", b"kept\n"), "full disk: a file before")
        filler = os.path.join(mnt, "filler")
        fill(filler)
        # Each call that writes the store or the disk fails cleanly: a 5xx
        # (or 4xx) JSON error, never a crash, a hang or a 201 that lies.
        results = []
        for i in range(5):
            r = d.request("POST", "/v1/sandboxes", {}, timeout=30)
            results.append(("create", r))
            if r.status == 201:
                break
        r = d.request("PUT", "/v1/sandboxes/%s/files/big.bin" % a, b"x" * (2 << 20), timeout=30)
        results.append(("put", r))
        r = d.request("POST", "/v1/sandboxes/%s/stop" % a, timeout=30)
        results.append(("stop", r))
        print("  full disk answers: %r" % [(w, r.status, r.body[:160]) for w, r in results], flush=True)
        for what, r in results:
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status >= 400:
                t.check(r.status in (500, 503, 507, 413, 429) and isinstance(body, dict) and
                        body.get("error", {}).get("message"),
                        "full disk: %s fails with a JSON error (%r)" % (what, r))
        t.check(any(w == "create" and r.status >= 500 for w, r in results),
                "full disk: a create fails with 5xx (%r)" % [(w, r.status) for w, r in results])
        # A store that cannot be written is the server's failure, not a
        # conflict with the sandbox's state (it was a 409 once).
        t.check(all(r.status != 409 for w, r in results),
                "full disk: no 409 for a full disk (%r)" % [(w, r.status) for w, r in results])
        t.check(d.proc.poll() is None, "full disk: the daemon is alive")
        r = d.request("GET", "/keep.txt", key=None, host="%s.preview.localhost:%d" % (a, d.port), timeout=10)
        t.check(r.status == 200 and r.body == b"kept\n", "full disk: a running sandbox's preview answers (%r)" % r)
        r = d.request("GET", "/healthz", key=None, timeout=10)
        t.check(r.status in (200, 503), "full disk: /healthz answers (%r)" % r)
        r = d.request("GET", "/v1/sandboxes", timeout=10)
        t.check(r.status == 200, "full disk: listing works (%r)" % r)
        r = d.request("DELETE", "/v1/sandboxes/%s" % gone, timeout=60)
        print("  full disk: delete answered %r" % r, flush=True)
        t.check(r.status in (204, 500, 503) and (r.status == 204 or r.json().get("error")),
                "full disk: a delete succeeds or fails cleanly (%r)" % r)
        # Space again: everything works.
        os.unlink(filler)
        if os.path.exists(filler + ".tail"):
            os.unlink(filler + ".tail")
        b = create(t, d)
        t.check(b is not None, "full disk: create works after freeing space")
        r = d.request("DELETE", "/v1/sandboxes/%s" % b, timeout=60)
        t.check(r.status == 204, "full disk: delete works after freeing space (%r)" % r)
        r = d.request("GET", "/v1/sandboxes/%s/files/keep.txt" % a)
        t.check(r.status == 200 and r.body == b"kept\n", "full disk: the earlier file is intact (%r)" % r)
        s = get_sbx(d, a)
        if s and s["state"] != "running":
            d.request("POST", "/v1/sandboxes/%s/start" % a, timeout=60)
        r = d.request("PUT", "/v1/sandboxes/%s/files/after.txt" % a, b"after\n")
        t.check(r.status == 201, "full disk: a file write works again (%r)" % r)
        # Every row the API shows is a whole row.
        r = d.request("GET", "/v1/sandboxes", key="acme")
        ids = [s["id"] for s in r.json()["sandboxes"]] if r.status == 200 else []
        t.check(set(ids) - {gone} == {a}, "full disk: the store holds what was answered, no more (%r)" % ids)
        rc = d.stop()
        t.check(rc == 0, "full disk: the daemon exits 0 (%r)" % rc)
        db = os.path.join(d.data_dir, "sandboxd.db")
        r = subprocess.run(["sqlite3", db, "PRAGMA integrity_check;"], capture_output=True, text=True)
        t.check(r.returncode == 0 and r.stdout.strip() == "ok",
                "full disk: PRAGMA integrity_check says ok (%r %r)" % (r.stdout, r.stderr))
        d.start()
        t.check(get_sbx(d, a) is not None, "full disk: the sandbox is there after a restart")
    except Exception as e:
        t.check(False, "full disk: %r" % e)
    finally:
        if d is not None:
            if t.failed != before:
                print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
            d.cleanup()
        loop_unmount(work, mnt)


def main():
    if not ensure_docker():
        print("docker is not available: skipping the limits tests")
        return 77
    ensure_test_image()
    t = Runner()
    t0 = time.time()
    with_limits_daemon(t)
    t.run(test_full_disk)
    print("limits tests took %.0f s" % (time.time() - t0))
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
