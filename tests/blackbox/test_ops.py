#!/usr/bin/env python3
"""Black-box scenarios for running sandboxd as a service (issue 9): the
sd_notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) against a
NOTIFY_SOCKET listener of our own, API keys in the store (create, use,
revoke: 401 at once, with the daemon running), secret_hash keys in the
config, `sandboxd status` with the daemon up and down, backups under write
load, the daemon under the unit's capability bounding set and
no-new-privileges, and `make install DESTDIR=...` with the unit checked by
systemd-analyze. Prints "N passed, N failed".
"""
import json
import hashlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (Daemon, Runner, SANDBOXD, TOP_BUILD, TOP_SRC, docker,  # noqa: E402
                     ensure_docker, ensure_test_image, wait_for)


def sbx(*args, check=False, timeout=60):
    return subprocess.run([SANDBOXD, *args], capture_output=True, text=True, timeout=timeout)


class NotifyListener:
    """A service manager's side of sd_notify: one datagram socket, every
    message kept with the time it came."""

    def __init__(self, abstract=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tmp = None
        if abstract:
            name = "sbxtest-notify-" + secrets.token_hex(6)
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.tmp = tempfile.mkdtemp(prefix="sbxnotify-")
            self.address = os.path.join(self.tmp, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages = []
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                for line in data.decode(errors="replace").split("\n"):
                    if line:
                        self.messages.append((time.time(), line))

    def lines(self, prefix=None):
        with self.lock:
            return [m for _, m in self.messages if prefix is None or m.startswith(prefix)]

    def times(self, line):
        with self.lock:
            return [t for t, m in self.messages if m == line]

    def close(self):
        self.done = True
        self.thread.join(2)
        self.sock.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_with_env(d, env, wait=True):
    """Start d with extra environment variables (Popen inherits ours)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return d.start(wait=wait)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the service: sd_notify -------------------------------------------------

def test_notify(t):
    """READY=1 once up, STATUS= lines, WATCHDOG=1 every half WATCHDOG_USEC
    from the loop (none while the process is stopped), RELOADING=1 and
    READY=1 around SIGHUP, STOPPING=1 at SIGTERM; abstract socket name."""
    n = NotifyListener(abstract=True)
    d = Daemon()
    try:
        start_with_env(d, {"NOTIFY_SOCKET": n.address, "WATCHDOG_USEC": "400000"})
        t.check(wait_for(lambda: "READY=1" in n.lines(), 5), "READY=1 arrives: %r" % n.lines()[:10])
        t.check(wait_for(lambda: any("reconciled" in s for s in n.lines("STATUS=")), 10),
                "a STATUS= line says Docker is reconciled: %r" % n.lines("STATUS="))
        # 200 ms between pings: over 1.5 s, several.
        time.sleep(1.5)
        pings = n.times("WATCHDOG=1")
        t.check(len(pings) >= 5, "watchdog pings every ~200 ms: %d in the run so far" % len(pings))
        gaps = [b - a for a, b in zip(pings[1:], pings[2:])]
        t.check(gaps and max(gaps) < 0.6, "no gap between pings over 0.6 s: %r" % gaps[-5:])
        # A process that does not run sends no pings: what lets the
        # manager kill a wedged loop.
        os.kill(d.proc.pid, signal.SIGSTOP)
        before = len(n.times("WATCHDOG=1"))
        time.sleep(1.0)
        during = len(n.times("WATCHDOG=1")) - before
        os.kill(d.proc.pid, signal.SIGCONT)
        t.check(during <= 1, "no pings while the loop does not turn: %d" % during)
        t.check(wait_for(lambda: len(n.times("WATCHDOG=1")) > before + 2, 3), "pings resume")
        ready_before = len(n.times("READY=1"))
        d.proc.send_signal(signal.SIGHUP)
        t.check(wait_for(lambda: "RELOADING=1" in n.lines() and
                         len(n.times("READY=1")) > ready_before, 5),
                "SIGHUP: RELOADING=1 then READY=1: %r" % n.lines()[-6:])
        t.check(d.request("GET", "/healthz", key=None).status == 200, "still serving after SIGHUP")
        rc = d.stop()
        t.check(rc == 0, "exit 0 at SIGTERM: %r" % rc)
        t.check("STOPPING=1" in n.lines(), "STOPPING=1 at SIGTERM")
        t.check(any(s.startswith("STATUS=stopping") for s in n.lines()), "STATUS=stopping...")
    finally:
        d.cleanup()
        n.close()


def test_notify_path_no_docker(t):
    """A path socket; Docker unreachable: READY=1 all the same (the API
    answers; healthz says 503) and STATUS= says why; WATCHDOG_PID naming
    another process: no pings."""
    n = NotifyListener(abstract=False)
    d = Daemon(extra="docker_socket = /nonexistent/docker.sock")
    try:
        start_with_env(d, {"NOTIFY_SOCKET": n.address, "WATCHDOG_USEC": "200000",
                           "WATCHDOG_PID": "1"}, wait=False)
        t.check(wait_for(lambda: "READY=1" in n.lines(), 10), "READY=1 without Docker: %r" % n.lines())
        t.check(wait_for(lambda: any("without Docker" in s for s in n.lines("STATUS=")), 10),
                "STATUS= says it serves without Docker: %r" % n.lines("STATUS="))
        r = d.request("GET", "/healthz", key=None)
        t.check(r.status == 503, "healthz 503 without Docker: %r" % r)
        time.sleep(0.5)
        t.check(n.times("WATCHDOG=1") == [], "WATCHDOG_PID of another process: no pings")
        # Children must not inherit the manager's socket.
        env = open("/proc/%d/environ" % d.proc.pid, "rb").read()
        t.check(b"NOTIFY_SOCKET" in env, "(the daemon was started with NOTIFY_SOCKET)")
        t.check(d.stop() == 0, "exit 0 at SIGTERM")
    finally:
        d.cleanup()
        n.close()


# --- keys -------------------------------------------------------------------

def test_keys(t):
    """key create -> use -> revoke -> 401 at the next request, with the daemon
    running; the tenant's policy; key list never shows a secret; the store
    never holds one; secret_hash keys in the config."""
    cfg_secret = "h" * 8 + secrets.token_hex(16)
    d = Daemon()
    # Tenant "hashed" is configured by the hash of its secret only.
    with open(d.config) as f:
        conf = f.read()
    conf += "[api_key hashed]\nsecret_hash = sha256:%s\nadmin = false\n" % \
        hashlib.sha256(cfg_secret.encode()).hexdigest().upper()
    with open(d.config, "w") as f:
        f.write(conf)
    made = []
    try:
        d.start()
        r = d.request("GET", "/v1/sandboxes", raw_key=cfg_secret)
        t.check(r.status == 200, "a secret_hash key works: %r" % r)
        r = d.request("GET", "/v1/sandboxes", raw_key=hashlib.sha256(cfg_secret.encode()).hexdigest())
        t.check(r.status == 401, "the hash itself is not a key: %r" % r)

        r = sbx("key", "create", "-c", d.config, "newco")
        t.check(r.returncode == 0, "key create exits 0: %r" % r.stderr)
        secret = next((w for w in r.stdout.split() if w.startswith("sbx_")), None)
        t.check(secret is not None and len(secret) == 74, "the secret is printed: %r" % r.stdout)
        hline = [l.strip() for l in r.stdout.splitlines() if "secret_hash = sha256:" in l]
        t.check(hline and hline[0] == "secret_hash = sha256:" + hashlib.sha256(secret.encode()).hexdigest(),
                "and the secret_hash line for the config: %r" % hline)
        kid = secret[4:30]

        # A tenant without an [api_key] section: non-admin, its own sandboxes.
        r = d.request("GET", "/v1/sandboxes", raw_key=secret)
        t.check(r.status == 200 and r.json()["sandboxes"] == [], "the new key works at once: %r" % r)
        t.check(d.request("GET", "/metrics", raw_key=secret).status == 401, "a store key of a new tenant is not admin")
        r = d.request("POST", "/v1/sandboxes", {}, raw_key=secret)
        t.check(r.status == 201 and r.json()["tenant"] == "newco", "creates as tenant newco: %r" % r)
        if r.status == 201:
            made.append(r.json()["id"])
            t.check(d.request("GET", "/v1/sandboxes/" + made[0], key="acme").status == 404,
                    "another tenant does not see it")
        # The default ceilings of a key without its own: 4x the template.
        r = d.request("POST", "/v1/sandboxes", {"memory_mb": 4096}, raw_key=secret)
        t.check(r.status == 400, "the default ceilings apply: %r" % r)

        # A store key of a tenant with a section gets its admin flag.
        r = sbx("key", "create", "-c", d.config, "--json", "root")
        rk = json.loads(r.stdout) if r.returncode == 0 else {}
        t.check(rk.get("stored") is True and rk.get("secret", "").startswith("sbx_"), "key create --json: %r" % r.stdout)
        t.check(d.request("GET", "/metrics", raw_key=rk.get("secret", "x")).status == 200,
                "a store key of an admin tenant is admin")

        r = sbx("key", "list", "-c", d.config)
        t.check(r.returncode == 0 and kid in r.stdout and "newco" in r.stdout and "live" in r.stdout,
                "key list shows id, tenant, state: %r" % r.stdout)
        t.check(secret not in r.stdout and secret[31:] not in r.stdout, "key list never shows a secret")
        r = sbx("key", "list", "-c", d.config, "--json", "newco")
        keys = json.loads(r.stdout)["keys"] if r.returncode == 0 else []
        t.check(len(keys) == 1 and keys[0]["id"] == kid and keys[0]["last_used_at"] and
                keys[0]["revoked_at"] is None, "key list --json TENANT, last use recorded: %r" % keys)

        db = open(os.path.join(d.data_dir, "sandboxd.db"), "rb").read()
        wal = os.path.join(d.data_dir, "sandboxd.db-wal")
        db += open(wal, "rb").read() if os.path.exists(wal) else b""
        t.check(secret.encode() not in db and secret[31:].encode() not in db and
                rk.get("secret", "x").encode() not in db, "the store holds no secret")
        t.check(hashlib.sha256(secret.encode()).hexdigest().encode() in db, "only its hash")
        t.check(stat.S_IMODE(os.stat(os.path.join(d.data_dir, "sandboxd.db")).st_mode) == 0o600,
                "the store is 0600")

        # Revoke: refused from the very next request, no restart.
        r = sbx("key", "revoke", "-c", d.config, "newco", kid)
        t.check(r.returncode == 0 and "revoked 1 key" in r.stdout, "key revoke: %r" % (r.stdout + r.stderr))
        r = d.request("GET", "/v1/sandboxes", raw_key=secret)
        t.check(r.status == 401 and r.error_code() == "unauthorized", "401 at once after revoke: %r" % r)
        r = d.request("PUT", "/v1/sandboxes/%s/files/x" % (made[0] if made else "0" * 26), b"x" * 1000,
                      raw_key=secret)
        t.check(r.status == 401, "a body is refused too: %r" % r)
        r = sbx("key", "revoke", "-c", d.config, "newco")
        t.check(r.returncode == 1 and "no live key" in r.stderr, "nothing left to revoke: exit 1: %r" % r.stderr)
        r = sbx("key", "list", "-c", d.config, "newco")
        t.check("revoked" in r.stdout, "key list shows it revoked: %r" % r.stdout)
        t.check(d.request("GET", "/v1/sandboxes", raw_key=secret[:-1] + ("A" if secret[-1] != "A" else "B")).status
                == 401, "a wrong secret with a real key id: 401")

        # Usage errors exit 2, with usage.
        for args in (["key"], ["key", "frob", "x"], ["key", "create"], ["key", "create", "bad/name"],
                     ["key", "revoke", "acme", "NOT-AN-ID"], ["key", "list", "--json", "a", "b"]):
            r = sbx(*args)
            t.check(r.returncode == 2 and "usage" in (r.stderr + r.stdout) or r.returncode == 2,
                    "%r exits 2: %r" % (args, r.returncode))
        for verb in ("create", "list", "revoke"):
            r = sbx("key", verb, "--help")
            t.check(r.returncode == 0 and "usage: sandboxd key" in r.stdout, "key %s --help" % verb)
        r = sbx("key", "create", "--no-store", "-c", d.config, "cfgonly")
        t.check(r.returncode == 0 and "secret_hash = sha256:" in r.stdout, "--no-store prints a key: %r" % r.stdout)
        t.check("cfgonly" not in sbx("key", "list", "-c", d.config).stdout, "--no-store stores nothing")
        t.check(secret not in d.logs() and cfg_secret not in d.logs(), "no secret in the daemon's log")
    finally:
        for sid in made:
            d.request("DELETE", "/v1/sandboxes/" + sid, key="root")
        d.cleanup()


def test_secret_hash_config(t):
    """check-config on secret_hash: bad values and both keys name the line."""
    tmp = tempfile.mkdtemp(prefix="sbxcfg-")
    try:
        def check(text):
            p = os.path.join(tmp, "c.conf")
            with open(p, "w") as f:
                f.write("data_dir = %s\n" % tmp + text)
            return sbx("check-config", "-c", p)
        good = "sha256:" + "ab" * 32
        r = check("[api_key a]\nsecret_hash = %s\n" % good)
        t.check(r.returncode == 0, "a secret_hash key is valid: %r" % r.stderr)
        r = check("[api_key a]\nsecret_hash = sha256:abc\n")
        t.check(r.returncode == 2 and ":3: secret_hash:" in r.stderr, "short hash: %r" % r.stderr)
        r = check("[api_key a]\nsecret_hash = md5:%s\n" % ("ab" * 32))
        t.check(r.returncode == 2 and "secret_hash" in r.stderr, "other digest: %r" % r.stderr)
        r = check("[api_key a]\nsecret = %s\nsecret_hash = %s\n" % ("x" * 40, good))
        t.check(r.returncode == 2 and "both secret and secret_hash" in r.stderr, "both: %r" % r.stderr)
        r = check("[api_key a]\nsecret_hash = %s\n[api_key b]\nsecret_hash = %s\n" % (good, good.upper().replace("SHA256", "sha256")))
        t.check(r.returncode == 2 and "same secret_hash" in r.stderr, "duplicate hash: %r" % r.stderr)
        r = check("[api_key a]\nadmin = true\n")
        t.check(r.returncode == 2 and "secret" in r.stderr, "neither: %r" % r.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- status -----------------------------------------------------------------

def test_status(t):
    """status with the daemon up (admin socket, 0600) and down (the store)."""
    d = Daemon()
    sid = None
    try:
        d.start()
        r = d.request("POST", "/v1/sandboxes", {})
        sid = r.json()["id"] if r.status == 201 else None
        t.check(sid is not None, "a sandbox to count: %r" % r)
        sock = os.path.join(d.data_dir, "admin.sock")
        st = os.stat(sock)
        t.check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, "admin.sock is a 0600 socket")
        r = sbx("status", "-c", d.config)
        t.check(r.returncode == 0, "status exits 0 with the daemon up: %r" % r.stderr)
        out = r.stdout
        t.check("running (pid %d)" % d.proc.pid in out, "says running, with the pid: %r" % out[:200])
        t.check("127.0.0.1:%d" % d.port in out, "the listener")
        t.check("docker:     reachable" in out and "version" in out, "Docker and its version: %r" % out)
        t.check("running 1" in out, "sandboxes by state: %r" % out)
        r = sbx("status", "-c", d.config, "--json")
        o = json.loads(r.stdout)
        t.check(o["running"] is True and o["pid"] == d.proc.pid and o["uptime_s"] >= 0 and
                o["listeners"][0]["address"] == "127.0.0.1:%d" % d.port and o["docker"]["reachable"] and
                o["docker"].get("version") and o["sandboxes"]["running"] == 1 and o["reconciled"] and
                "held_requests" in o and isinstance(o["recent_warnings"], list),
                "status --json: %r" % o)
        # curl speaks to it too.
        if shutil.which("curl"):
            c = subprocess.run(["curl", "-sf", "--unix-socket", sock, "http://x/status"],
                               capture_output=True, text=True, timeout=20)
            t.check(c.returncode == 0 and json.loads(c.stdout)["running"], "curl --unix-socket: %r" % c.stdout[:100])
            c = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
                                "http://x/nope"], capture_output=True, text=True, timeout=20)
            t.check(c.stdout == "404", "other paths 404: %r" % c.stdout)
        # Junk on the socket neither hangs nor hurts it.
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(sock)
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        t.check(b" 400 " in s.recv(4096), "junk gets a 400")
        s.close()
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.close()
        t.check(sbx("status", "-c", d.config).returncode == 0, "still answering")

        t.check(d.stop() == 0, "exit 0 at SIGTERM")
        t.check(not os.path.exists(sock), "admin.sock removed at exit")
        r = sbx("status", "-c", d.config)
        t.check(r.returncode == 1 and "NOT RUNNING" in r.stdout and "from the store" in r.stdout,
                "status with the daemon down says so, exit 1: %r" % r.stdout[:300])
        t.check("running 1" in r.stdout, "and counts from the store: %r" % r.stdout)
        o = json.loads(sbx("status", "-c", d.config, "--json").stdout)
        t.check(o["running"] is False and o["sandboxes"]["running"] == 1 and o["store"] == "ok" and
                o["docker"]["reachable"], "status --json down: %r" % o)
        r = sbx("status", "--help")
        t.check(r.returncode == 0 and "usage: sandboxd status" in r.stdout, "status --help")
        t.check(sbx("status", "extra").returncode == 2, "status with an operand exits 2")
        d.start()
    finally:
        if sid and d.proc is not None:
            d.request("DELETE", "/v1/sandboxes/" + sid)
        d.cleanup()


# --- backup under load --------------------------------------------------------

def test_backup_under_load(t):
    """Backups taken while the daemon creates sandboxes and another process
    commits rows one by one: each copy passes integrity_check, holds a
    prefix of the writer's rows (a consistent snapshot, no gap), and
    restores: the daemon started on it recreates the containers it misses."""
    d = Daemon()
    made, errors = [], []
    stop = threading.Event()
    try:
        d.start()
        db = os.path.join(d.data_dir, "sandboxd.db")

        def creator():
            for _ in range(3):
                if stop.is_set():
                    return
                try:
                    r = d.request("POST", "/v1/sandboxes", {}, timeout=60)
                    if r.status == 201:
                        made.append(r.json()["id"])
                    else:
                        errors.append(r)
                except OSError as e:
                    errors.append(e)

        written = [0]

        def writer():
            c = sqlite3.connect(db, timeout=10)
            deadline = time.time() + 30
            while not stop.is_set() and time.time() < deadline and written[0] < 20000:
                c.execute("INSERT INTO tenants (name, created_at) VALUES (?, 0)", ("load-%06d" % written[0],))
                c.commit()
                written[0] += 1
                # A breath between commits: a writer in a tight loop takes
                # the lock straight back and starves the daemon's own
                # writes past their busy timeout, which no real second
                # writer (sandboxd key) does.
                time.sleep(0.002)
            c.close()

        threads = [threading.Thread(target=creator) for _ in range(2)] + [threading.Thread(target=writer)]
        for th in threads:
            th.start()
        backups = []
        for i in range(6):
            dest = os.path.join(d.tmp, "backup-%d.db" % i)
            r = sbx("backup", "-c", d.config, dest)
            t.check(r.returncode == 0, "backup %d under load exits 0: %r" % (i, r.stderr))
            backups.append(dest)
            time.sleep(0.2)
        stop.set()
        for th in threads:
            th.join(90)
        t.check(not errors, "creates under backup: %r" % errors[:3])
        t.check(written[0] > 20, "the writer committed rows meanwhile: %d" % written[0])
        counts = []
        for dest in backups:
            c = sqlite3.connect(dest)
            ok = c.execute("PRAGMA integrity_check").fetchone()[0]
            fk = c.execute("PRAGMA foreign_key_check").fetchall()
            names = sorted(n for (n,) in c.execute("SELECT name FROM tenants WHERE name LIKE 'load-%'"))
            nsb = c.execute("SELECT count(*) FROM sandboxes").fetchone()[0]
            ver = c.execute("PRAGMA user_version").fetchone()[0]
            mode = stat.S_IMODE(os.stat(dest).st_mode)
            c.close()
            t.check(ok == "ok" and not fk, "integrity_check of %s: %s %r" % (dest, ok, fk))
            t.check(names == ["load-%06d" % k for k in range(len(names))],
                    "a consistent snapshot: rows 0..%d without a gap" % len(names))
            t.check(ver == harness_schema(), "the copy has the schema version: %r" % ver)
            t.check(mode == 0o600, "the copy is 0600")
            counts.append((len(names), nsb))
        t.check(counts == sorted(counts), "later copies hold at least as much: %r" % counts)
        t.check(sbx("backup", "-c", d.config, backups[0]).returncode == 1, "an existing DEST is refused (exit 1)")

        # Restore the last copy: stop, swap the file, remove one container
        # behind our back, start: the reconciler makes it again.
        last = backups[-1]
        c = sqlite3.connect(last)
        in_copy = [i for (i,) in c.execute("SELECT id FROM sandboxes WHERE state = 'running'")]
        c.close()
        t.check(d.stop() == 0, "stopped for the restore")
        for f in ("sandboxd.db", "sandboxd.db-wal", "sandboxd.db-shm"):
            try:
                os.unlink(os.path.join(d.data_dir, f))
            except FileNotFoundError:
                pass
        shutil.copy(last, db)
        os.chmod(db, 0o600)
        gone = None
        if in_copy:
            gone = in_copy[0]
            ids = docker("ps", "-aq", "--filter", "label=io.sandboxd.sandbox=%s" % gone).stdout.split()
            if ids:
                docker("rm", "-f", *ids)
        d.start()
        lst = d.request("GET", "/v1/sandboxes", key="root").json()["sandboxes"]
        t.check(sorted(s["id"] for s in lst) == sorted(set(in_copy) | {s["id"] for s in lst if s["id"] not in made}),
                "the restored store's sandboxes: %r" % [s["id"] for s in lst])
        if gone:
            r = wait_for(lambda: d.request("GET", "/v1/sandboxes/" + gone, key="root").json().get("state") == "running"
                         and docker("ps", "-q", "--filter", "label=io.sandboxd.sandbox=%s" % gone).stdout.strip(), 30)
            t.check(bool(r), "a sandbox whose container was gone runs again in a new container")
        # Sandboxes made after the copy: their containers are removed
        # (the store no longer knows them); their workspaces stay.
        after = [s for s in made if s not in in_copy]
        if after:
            wait_for(lambda: not docker("ps", "-aq", "--filter", "label=io.sandboxd.sandbox=%s" % after[0]).stdout.strip(), 20)
            t.check(not docker("ps", "-aq", "--filter", "label=io.sandboxd.sandbox=%s" % after[0]).stdout.strip(),
                    "a container the restored store does not know is removed")
    finally:
        stop.set()
        if d.proc is not None:
            for s in d.request("GET", "/v1/sandboxes", key="root").json().get("sandboxes", []):
                d.request("DELETE", "/v1/sandboxes/" + s["id"], key="root")
        d.cleanup()


def harness_schema():
    """The schema version the binary migrates to, from a fresh store."""
    tmp = tempfile.mkdtemp(prefix="sbxschema-")
    try:
        p = os.path.join(tmp, "c.conf")
        with open(p, "w") as f:
            f.write("data_dir = %s\n[api_key a]\nsecret = %s\n" % (tmp, "x" * 40))
        sbx("key", "create", "-c", p, "a")
        c = sqlite3.connect(os.path.join(tmp, "sandboxd.db"))
        v = c.execute("PRAGMA user_version").fetchone()[0]
        c.close()
        return v
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the unit's restrictions, tried --------------------------------------------

UNIT_CAPS = "+chown,+fowner,+dac_override,+net_bind_service,+net_admin"
SYSCALLS_FILTERED = ("setrlimit,setpriority,sched_setaffinity,sched_setscheduler,sched_setparam,"
                     "sched_setattr,ioprio_set,mbind,set_mempolicy,migrate_pages,move_pages,"
                     "setuid,setgid,setreuid,setregid,setresuid,setresgid,setgroups,"
                     "mount,umount2,unshare,setns,pivot_root,chroot,ptrace,init_module,"
                     "personality,socket")


def test_unit_restrictions(t):
    """The daemon under the unit's CapabilityBoundingSet and NoNewPrivileges
    (setpriv), with the file system read-only but its data_dir (the unit's
    ProtectSystem=strict and ReadWritePaths=, in a mount namespace), traced
    for the system calls the unit's filter refuses: a seeded create (cp -a,
    chown -R), files, a preview, exec, delete all work, and none of those
    calls is made; the only sockets are the address families the unit
    allows."""
    if not shutil.which("setpriv") or not shutil.which("strace"):
        print("  skip  test_unit_restrictions: setpriv or strace missing")
        return
    tmp = tempfile.mkdtemp(prefix="sbxunit-")
    seed = os.path.join(tmp, "seed")
    os.makedirs(os.path.join(seed, "sub"))
    with open(os.path.join(seed, "index.html"), "w") as f:
        f.write("<h1>seeded</h1>\n")
    with open(os.path.join(seed, "sub", "x"), "w") as f:
        f.write("x")
    tpl = {"default": {"image": harness.TEST_IMAGE, "port": "3000",
                       "dev_command": "httpd -f -p 3000 -h /workspace", "seed_dir": seed,
                       "memory": "64m", "cpus": "0.5", "pids_limit": "64"}}
    saved = harness.WRAPPER
    d = Daemon(templates=tpl)
    trace = os.path.join(d.tmp, "strace.out")	# where it may write
    ro = []
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
        ro = ["unshare", "-m", "--propagation", "private",
              os.path.join(TOP_SRC, "tests", "blackbox", "readonly-root.sh"), d.tmp]
    else:
        print("  skip  read-only root: cannot unshare a mount namespace here")
    harness.WRAPPER = ro + ["setpriv", "--bounding-set", "-all," + UNIT_CAPS, "--inh-caps", "-all",
                       "--no-new-privs", "strace", "-f", "-qq", "-o", trace,
                       "-e", "trace=" + SYSCALLS_FILTERED] + saved
    sid = None
    try:
        # LeakSanitizer cannot run under ptrace: leaks are checked by the
        # other scenarios, here only the exit status counts.
        asan = os.environ.get("ASAN_OPTIONS", "")
        start_with_env(d, {"ASAN_OPTIONS": (asan + ":" if asan else "") + "detect_leaks=0"})
        st = open("/proc/%d/status" % d.proc.pid).read()
        # strace is the direct child; the daemon is its child.
        pids = subprocess.run(["pgrep", "-P", str(d.proc.pid)], capture_output=True, text=True).stdout.split()
        if pids:
            st = open("/proc/%s/status" % pids[0]).read()
        bnd = int([l for l in st.splitlines() if l.startswith("CapBnd:")][0].split()[1], 16)
        t.check(bnd == (1 << 0) | (1 << 1) | (1 << 3) | (1 << 10) | (1 << 12),
                "bounding set is the unit's (chown, dac_override, fowner, net_bind_service, net_admin): %x" % bnd)
        t.check("NoNewPrivs:\t1" in st, "no_new_privs is set")
        if ro and pids:
            mounts = open("/proc/%s/mounts" % pids[0]).read().splitlines()
            root = [m for m in mounts if m.split()[1] == "/"]
            t.check(root and " ro," in root[-1] + ",", "the daemon's / is read-only: %r" % root[-1:])
            t.check(any(m.split()[1] == d.tmp and " rw," in m for m in mounts), "its data_dir is writable")
        r = d.request("POST", "/v1/sandboxes", {})
        t.check(r.status == 201, "create under the unit's capabilities: %r" % r)
        sid = r.json()["id"] if r.status == 201 else None
        if sid:
            ws = os.path.join(d.data_dir, "workspaces", sid)
            t.check(os.stat(os.path.join(ws, "sub", "x")).st_uid == 1000, "seeded files belong to uid 1000")
            r = d.request("PUT", "/v1/sandboxes/%s/files/sub/new.txt" % sid, b"hello")
            t.check(r.status == 201, "PUT a file into the sandbox's directory: %r" % r)
            r = d.request("POST", "/v1/sandboxes/%s/exec" % sid, {"cmd": ["cat", "/workspace/sub/new.txt"]})
            t.check(r.status == 200 and r.json()["stdout"] == "hello", "exec: %r" % r)
            p = wait_for(lambda: d.preview(sid, "/index.html").status == 200, 15)
            t.check(bool(p), "the preview answers")
            t.check(d.request("DELETE", "/v1/sandboxes/%s/files/sub" % sid).status == 204, "DELETE a directory")
            t.check(d.request("DELETE", "/v1/sandboxes/" + sid).status == 204, "delete the sandbox")
            sid = None
        # SIGTERM to the daemon, not to strace (which would kill it);
        # strace exits with the daemon's status.
        os.kill(int(pids[0]) if pids else d.proc.pid, signal.SIGTERM)
        rc = d.proc.wait(30)
        d.proc = None
        d.log.close()
        t.check(rc == 0, "exit 0 at SIGTERM: %r" % rc)
        calls = open(trace).read().splitlines()
        t.check(any(" socket(" in l for l in calls), "strace saw the daemon's sockets")
        bad = [l for l in calls if " socket(" in l and not any(
            f in l for f in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"))]
        t.check(not bad, "only AF_UNIX/INET/INET6/NETLINK sockets: %r" % bad[:3])
        refused = [l for l in calls if " socket(" not in l and "resumed>" not in l and "+++" not in l
                   and "---" not in l]
        t.check(not refused, "no call the unit's SystemCallFilter refuses: %r" % refused[:5])
    finally:
        harness.WRAPPER = saved
        if sid and d.proc is not None:
            d.request("DELETE", "/v1/sandboxes/" + sid)
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# --- make install ---------------------------------------------------------------

def test_make_install(t):
    """make install DESTDIR=...: binary, agentd, unit (with its bindir), man
    pages and example config where they belong; systemd-analyze verify and
    security on the installed unit; man -l renders the pages cleanly."""
    if not os.path.exists(os.path.join(TOP_BUILD, "Makefile")):
        print("  skip  test_make_install: no Makefile in %s" % TOP_BUILD)
        return
    dest = tempfile.mkdtemp(prefix="sbxinstall-")
    try:
        r = subprocess.run(["make", "-C", TOP_BUILD, "install", "DESTDIR=" + dest],
                           capture_output=True, text=True, timeout=600)
        t.check(r.returncode == 0, "make install DESTDIR exits 0: %s" % r.stderr[-800:])
        pre = subprocess.run(["make", "-s", "-C", TOP_BUILD, "-f", "Makefile", "-f", "-", "print-prefix"],
                             input="print-prefix:\n\t@echo $(prefix) $(bindir)\n",
                             capture_output=True, text=True).stdout.split()
        prefix, bindir = (pre + ["/usr/local", "/usr/local/bin"])[:2]
        want = [bindir + "/sandboxd", prefix + "/libexec/sandboxd/agentd",
                prefix + "/lib/systemd/system/sandboxd.service",
                prefix + "/share/man/man8/sandboxd.8", prefix + "/share/man/man5/sandboxd.conf.5",
                prefix + "/share/doc/sandboxd/examples/sandboxd.conf.example"]
        for w in want:
            t.check(os.path.isfile(dest + w), "installed: %s" % w)
        stray = [os.path.join(r_, f) for r_, _, fs in os.walk(dest) for f in fs
                 if not os.path.join(r_, f)[len(dest):].startswith(prefix)]
        t.check(not stray, "nothing outside the prefix (DESTDIR-safe): %r" % stray[:5])
        unit = dest + prefix + "/lib/systemd/system/sandboxd.service"
        text = open(unit).read() if os.path.exists(unit) else ""
        t.check("ExecStart=%s/sandboxd serve" % bindir in text and "@bindir@" not in text,
                "the unit names the installed binary")
        t.check("Type=notify" in text and "WatchdogSec=" in text, "Type=notify with a watchdog")
        if shutil.which("systemd-analyze"):
            env = dict(os.environ, MANPATH=dest + prefix + "/share/man")
            r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, env=env)
            # ExecStart names the path it will have once installed; the
            # copy under DESTDIR is what exists here.
            errs = [l for l in (r.stdout + r.stderr).splitlines()
                    if l and "is not executable" not in l and "Command %s" % bindir not in l
                    and "/sandboxd" not in l]
            t.check(not errs, "systemd-analyze verify: %r" % errs)
            r = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit],
                               capture_output=True, text=True)
            line = [l for l in r.stdout.splitlines() if "Overall exposure level" in l]
            score = float(line[0].split(":")[1].split()[0]) if line else 10.0
            print("  note  systemd-analyze security: %s" % (line[0].strip() if line else r.stderr[-300:]))
            t.check(score <= 3.0, "exposure score at most 3.0: %.1f" % score)
        else:
            print("  skip  systemd-analyze is not installed")
        if shutil.which("man"):
            for page in ("man8/sandboxd.8", "man5/sandboxd.conf.5"):
                r = subprocess.run(["man", "--warnings", "-l", dest + prefix + "/share/man/" + page],
                                   capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
                t.check(r.returncode == 0 and len(r.stdout) > 500 and not r.stderr.strip(),
                        "man -l %s renders cleanly: %r" % (page, r.stderr[:300]))
        else:
            print("  skip  man is not installed: the pages are not rendered")
        r = subprocess.run([dest + bindir + "/sandboxd", "version"], capture_output=True, text=True)
        t.check(r.returncode == 0, "the installed binary runs")
        r = subprocess.run([dest + bindir + "/sandboxd", "check-config", "-c",
                            dest + prefix + "/share/doc/sandboxd/examples/sandboxd.conf.example"],
                           capture_output=True, text=True)
        t.check(r.returncode == 0, "the installed example config is valid: %r" % r.stderr)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_config_doc_in_man(t):
    """Every key docs/config.md documents is in sandboxd.conf(5)."""
    import re
    doc = open(os.path.join(TOP_SRC, "docs", "config.md")).read()
    man = open(os.path.join(TOP_SRC, "man", "sandboxd.conf.5")).read().replace("\\_", "_").replace("\\-", "-")
    keys = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.M))
    t.check(len(keys) > 20, "keys found in docs/config.md: %d" % len(keys))
    missing = sorted(k for k in keys if not re.search(r"(?m)^\.It Ic %s\b" % k, man))
    t.check(not missing, "keys of docs/config.md missing from sandboxd.conf(5): %r" % missing)


def main():
    t = Runner()
    t.run(test_secret_hash_config)
    t.run(test_config_doc_in_man)
    t.run(test_make_install)
    if not ensure_docker():
        print("docker is not available: skipping the daemon scenarios")
        return t.finish()
    ensure_test_image()
    for fn in (test_notify, test_notify_path_no_docker, test_keys, test_status,
               test_backup_under_load, test_unit_restrictions):
        t.run(fn)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
