"""Black-box harness: start real sandboxd daemons on free loopback ports with
a config and data_dir of their own, talk to them over real sockets, and
clean up every container and network they made, even when a test fails.

Only loopback and the test's own containers are contacted.
"""
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

TOP_SRC = os.path.abspath(os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), "..", "..")))
TOP_BUILD = os.path.abspath(os.environ.get("top_builddir", TOP_SRC))
SANDBOXD = os.environ.get("SANDBOXD", os.path.join(TOP_BUILD, "sandboxd"))
# Under ASan the agentd in the build tree is dynamic; AGENTD points at a
# static one then.
AGENTD = os.environ.get("AGENTD", os.path.join(TOP_BUILD, "agentd", "agentd"))
# e.g. "valgrind --error-exitcode=99 --leak-check=full": runs every daemon
# under it; a non-zero exit at SIGTERM then fails test_restart.
WRAPPER = os.environ.get("SANDBOXD_WRAPPER", "").split()
TEST_IMAGE = "sandboxd-test-busybox:1"
LABEL_INSTANCE = "io.sandboxd.instance"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def ensure_docker():
    """Start dockerd if it is not answering (we run as root in CI)."""
    if docker("info", check=False).returncode == 0:
        return True
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return False
    subprocess.Popen(["dockerd"], stdout=open("/tmp/sandboxd-test-dockerd.log", "a"),
                     stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(60):
        if docker("info", check=False).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def ensure_test_image():
    subprocess.run([os.path.join(TOP_SRC, "tests", "mkimage.sh"), TEST_IMAGE],
                   check=True, capture_output=True)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error_code(self):
        try:
            return self.json()["error"]["code"]
        except Exception:
            return None

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class Daemon:
    """One sandboxd serve process with its own config, data_dir and labels."""

    def __init__(self, extra="", templates=None, keys=None, data_dir=None, name="t"):
        self.port = free_port()
        self.tmp = data_dir or tempfile.mkdtemp(prefix="sbxtest-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.instance = "sbxtest-" + secrets.token_hex(4)
        self.network = self.instance + "-net"
        self.keys = keys or {"acme": ("a" * 8 + secrets.token_hex(16), False),
                             "globex": ("g" * 8 + secrets.token_hex(16), False),
                             "root": ("r" * 8 + secrets.token_hex(16), True)}
        self.templates = templates if templates is not None else {
            "default": {"image": TEST_IMAGE, "port": "3000",
                        "dev_command": "httpd -f -p 3000 -h /workspace",
                        "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
        }
        self.extra = extra
        self.proc = None
        self.log = None
        self.log_path = os.path.join(self.tmp, "sandboxd.log")
        self.write_config()

    def write_config(self):
        lines = [
            "listen = 127.0.0.1:%d" % self.port,
            "data_dir = %s" % self.data_dir,
            "preview_domain = preview.localhost",
            "public_url = http://localhost:%d" % self.port,
            "network = %s" % self.network,
            "instance = %s" % self.instance,
            "agentd_path = %s" % AGENTD,
            "shutdown_grace = 2s",
            "log_level = debug",
            self.extra,
        ]
        # A key is (secret, admin) or (secret, admin, "more = lines").
        for name, key in self.keys.items():
            lines += ["[api_key %s]" % name, "secret = %s" % key[0],
                      "admin = %s" % ("true" if key[1] else "false")]
            if len(key) > 2:
                lines.append(key[2])
        for name, t in self.templates.items():
            lines.append("[template %s]" % name)
            lines += ["%s = %s" % (k, v) for k, v in t.items()]
        self.config = os.path.join(self.tmp, "sandboxd.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, wait=True):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(WRAPPER + [SANDBOXD, "serve", "-c", self.config],
                                     stdout=self.log, stderr=self.log)
        if wait:
            deadline = time.time() + (120 if WRAPPER else 20)
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("sandboxd exited %d:\n%s" % (self.proc.returncode, self.logs()))
                try:
                    r = self.request("GET", "/healthz", key=None)
                    if r.status == 200 and r.json().get("reconciled"):
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            raise RuntimeError("sandboxd did not become healthy:\n" + self.logs())
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.log.close()
        return rc

    def logs(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def key(self, tenant="acme"):
        return self.keys[tenant][0]

    def request(self, method, path, body=None, key="acme", host=None, headers=None,
                timeout=90, raw_key=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Host": host or "127.0.0.1:%d" % self.port}
        if raw_key is not None:
            h["Authorization"] = "Bearer " + raw_key
        elif key is not None:
            h["Authorization"] = "Bearer " + self.key(key)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        h.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def preview(self, sid, path="/", port=None, method="GET", body=None, headers=None):
        host = ("%d-%s" % (port, sid) if port else sid) + ".preview.localhost:%d" % self.port
        return self.request(method, path, body=body, key=None, host=host, headers=headers)

    def raw(self, data, timeout=2, half_close=False):
        """Send raw bytes, return whatever comes back before close/timeout.
        half_close: shut our side after sending, as a client that is done."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def containers(self, all=True):
        args = ["ps", "-q", "--no-trunc", "--filter", "label=%s=%s" % (LABEL_INSTANCE, self.instance)]
        if all:
            args.insert(1, "-a")
        return [c for c in docker(*args).stdout.split() if c]

    def cleanup(self):
        # SIGTERM first: a daemon must shut down cleanly; a crash or a
        # sanitizer error at shutdown fails the run. Memory still held by
        # Docker requests in flight when the daemon stops (their callbacks
        # are cancelled, so nothing frees their state) is only reported:
        # LeakSanitizer's report is printed, not counted.
        if self.proc is not None:
            rc = self.stop(signal.SIGTERM, timeout=30)
            try:
                with open(self.log_path, errors="replace") as f:
                    log = f.read()
            except OSError:
                log = ""
            if rc not in (0, None):
                what = "daemon %s exited %r at cleanup:\n%s" % (self.instance, rc, log[-3000:])
                if "LeakSanitizer: detected memory leaks" in log and \
                        "ERROR: AddressSanitizer" not in log and "runtime error" not in log:
                    print("  note  leaks at shutdown (not counted): " + what, flush=True)
                else:
                    EXIT_PROBLEMS.append(what)
        self.stop(signal.SIGKILL)
        ids = self.containers()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", self.network, check=False)
        # A daemon killed before its SIGTERM leaves its egress table.
        if shutil.which("nft"):
            subprocess.run(["nft", "delete", "table", "inet", "sandboxd_" + self.instance],
                           capture_output=True, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


# Daemons that did not exit cleanly at cleanup; Runner.finish fails on them.
EXIT_PROBLEMS = []


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = []
        self.current = None

    def skip(self, why):
        """What the current test could not check here, said out loud: it is
        listed again at the end and counted in the summary line."""
        self.skipped.append("%s: %s" % (self.current, why))
        print("  SKIP %s: %s" % (self.current, why), flush=True)

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("  FAIL %s: %s" % (self.current, what), flush=True)
        return cond

    def run(self, fn, *args):
        self.current = fn.__name__
        before = self.failed
        t0 = time.time()
        try:
            fn(self, *args)
        except Exception:
            self.failed += 1
            print("  FAIL %s: exception\n%s" % (fn.__name__, traceback.format_exc()), flush=True)
        status = "ok  " if self.failed == before else "FAIL"
        print("%s %s (%.1fs)" % (status, fn.__name__, time.time() - t0), flush=True)

    def finish(self):
        for what in EXIT_PROBLEMS:
            self.failed += 1
            print("  FAIL cleanup: %s" % what, flush=True)
        del EXIT_PROBLEMS[:]
        for what in self.skipped:
            print("  skipped %s" % what)
        print("%d passed, %d failed%s" % (self.passed, self.failed,
                                          ", %d skipped" % len(self.skipped) if self.skipped else ""))
        return 0 if self.failed == 0 else 1


def wait_for(fn, timeout=10, interval=0.05):
    """Poll fn until it returns a truthy value (bounded in time)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last
