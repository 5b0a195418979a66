#!/usr/bin/env python3
"""The TypeScript SDK (clients/typescript, issue 11) against a real daemon:
`npm ci` and `npm run build` once (tsc), then its `node --test` suite
(clients/typescript/test/) with a real sandboxd, real dockerd and real
busybox containers (and sandboxd/base for revert, when it is built): every
route through the SDK, typed errors, timeouts and aborts, task events
resumed after a cut connection, previews fetched, the terminal, the
app-builder example run once, and every operation of docs/openapi.yaml
mapped to an SDK method.

Prints "N passed, N failed" (this file's checks plus node's tests); exits
77 without Docker, without Node.js 20+, or when npm cannot reach the
registry. `--serve` starts the daemon only and prints the environment for
running `npm test` in clients/typescript by hand.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TOP_SRC, Daemon, Runner, TEST_IMAGE, ensure_docker, ensure_test_image  # noqa: E402

SDK = os.path.join(TOP_SRC, "clients", "typescript")
BASE_IMAGE = "sandboxd/base:latest"
# The dev server of the default template: a line at start, a tick twice a
# second (for logs), and busybox httpd serving /workspace on the port.
DEV = ("echo dev-started; (i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.5; done) & "
       "exec httpd -f -p 3000 -h /workspace")
TEMPLATES = {
    "default": {"image": TEST_IMAGE, "port": "3000", "dev_command": DEV,
                "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
}
BASE_TEMPLATE = {"image": BASE_IMAGE, "port": "3000", "memory": "512m", "cpus": "1", "pids_limit": "256"}
NODE_RUN_LIMIT = 150   # s: the whole node suite
NET_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH",
              "network request", "getaddrinfo", "socket hang up")


def node_major():
    if shutil.which("node") is None:
        return None
    out = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"v(\d+)\.", out)
    return int(m.group(1)) if m else None


def npm(t, *args, limit=300):
    """Runs npm in the SDK's directory; (ok, output). A registry that
    cannot be reached is a skip, not a failure."""
    try:
        p = subprocess.run(["npm", *args, "--no-audit", "--no-fund"], cwd=SDK, capture_output=True,
                           text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        return None, "npm %s: no end after %d s\n%s" % (" ".join(args), limit, e.stdout or "")
    out = p.stdout + p.stderr
    if p.returncode != 0 and any(w in out for w in NET_ERRORS):
        return None, out
    return p.returncode == 0, out


def environment(d, base):
    env = dict(os.environ)
    env.update({
        "SANDBOXD_URL": "http://127.0.0.1:%d" % d.port,
        "SANDBOXD_API_KEY": d.key("acme"),
        "SANDBOXD_API_KEY_OTHER": d.key("globex"),
        "SANDBOXD_ADMIN_KEY": d.key("root"),
        "SANDBOXD_PREVIEW_ADDR": "127.0.0.1:%d" % d.port,
        "SANDBOXD_BASE_TEMPLATE": "base" if base else "",
        "SANDBOXD_OPENAPI": os.path.join(TOP_SRC, "docs", "openapi.yaml"),
    })
    return env


def node_args(major):
    # Node 20 and 21 have the WHATWG WebSocket behind a flag (the terminal test).
    args = ["node"]
    if major is not None and major < 22:
        args.append("--experimental-websocket")
    # The files by name: Node 20 takes every file under test/ for a test,
    # helpers.mjs too.
    files = sorted("test/" + f for f in os.listdir(os.path.join(SDK, "test")) if f.endswith(".test.mjs"))
    return args + ["--test", "--test-reporter=tap", "--test-concurrency=2"] + files


def tap_summary(out):
    """(pass, fail, skipped names, failed names) of node's TAP output."""
    nums = {}
    for k in ("pass", "fail", "skipped", "cancelled", "todo"):
        m = re.findall(r"^# %s (\d+)$" % k, out, re.M)
        nums[k] = int(m[-1]) if m else None
    skipped = re.findall(r"^\s*ok \d+ - (.*?) # SKIP(.*)$", out, re.M)
    failed = re.findall(r"^\s*not ok \d+ - (.*)$", out, re.M)
    return nums, skipped, failed


def test_build(t, ctx):
    """npm ci, then tsc through npm run build: dist/ with declarations,
    which a strict TypeScript file compiles against."""
    ok, out = npm(t, "ci")
    if ok is None:
        ctx["skip"] = "npm cannot reach the registry (npm ci):\n" + out[-1500:]
        return
    if not t.check(ok, "npm ci:\n%s" % out[-3000:]):
        return
    ok, out = npm(t, "run", "build")
    t.check(ok, "npm run build (tsc):\n%s" % out[-3000:])
    # The declarations, used by a strict TypeScript project (test/types.ts).
    ok2, out = npm(t, "run", "typecheck")
    t.check(ok2, "npm run typecheck (test/types.ts against dist/*.d.ts):\n%s" % out[-3000:])
    for f in ("index.js", "index.d.ts", "task.d.ts", "sandbox.js"):
        t.check(os.path.exists(os.path.join(SDK, "dist", f)), "dist/%s was built" % f)
    # No runtime dependency, and nothing node-only in the library.
    import json
    with open(os.path.join(SDK, "package.json")) as f:
        pkg = json.load(f)
    t.check(not pkg.get("dependencies"), "no runtime dependencies: %r" % pkg.get("dependencies"))
    t.check(pkg.get("type") == "module" and pkg["exports"]["."]["types"].endswith(".d.ts"),
            "ESM with type declarations: %r" % pkg.get("exports"))
    srcdir = os.path.join(SDK, "src")
    for name in sorted(os.listdir(srcdir)):
        with open(os.path.join(srcdir, name)) as f:
            src = f.read()
        t.check(not re.search(r"""from\s+["']node:|require\(|\bprocess\.|\bBuffer\b""", src),
                "src/%s uses only web platform APIs (no node: imports, process, Buffer)" % name)
    ctx["built"] = ok


def test_node_suite(t, ctx, d, base, major):
    """node --test test/ against the daemon, its counts added to ours."""
    env = environment(d, base)
    t0 = time.time()
    try:
        p = subprocess.run(node_args(major), cwd=SDK, env=env, capture_output=True, text=True,
                           timeout=NODE_RUN_LIMIT)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = None
    print(out)
    nums, skipped, failed = tap_summary(out)
    if not t.check(rc is not None, "node --test ended within %d s" % NODE_RUN_LIMIT):
        return
    if not t.check(nums["pass"] is not None and nums["fail"] is not None,
                   "node --test printed its summary (rc %r)" % rc):
        return
    t.passed += nums["pass"]
    t.failed += nums["fail"] + (nums["cancelled"] or 0)
    for name in failed:
        print("  FAIL node: %s" % name, flush=True)
    for name, why in skipped:
        t.skip("node test %s:%s" % (name, why))
    t.check(rc == 0 or nums["fail"] > 0, "node --test exited %r with no failure counted" % rc)
    t.check(nums["pass"] >= 20, "the node suite ran its tests: %r" % nums)
    print("  node suite: %r in %.1f s" % (nums, time.time() - t0), flush=True)


def main():
    serve = "--serve" in sys.argv
    if not os.path.exists(os.path.join(SDK, "package.json")):
        print("SKIP: %s is not here (a tree without clients/)" % SDK)
        return 77
    major = node_major()
    if major is None or major < 20:
        print("SKIP: the TypeScript SDK needs Node.js 20 or later (node: %s)" % (major or "not found"))
        return 77
    if not ensure_docker():
        print("docker is not available: skipping the TypeScript SDK tests")
        return 77
    ensure_test_image()
    t = Runner()
    ctx = {}
    if not serve:
        t.run(test_build, ctx)
        if ctx.get("skip"):
            print("SKIP: %s" % ctx["skip"])
            return 77
        if not ctx.get("built"):
            return t.finish()
    base = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0
    templates = dict(TEMPLATES)
    if base:
        templates["base"] = dict(BASE_TEMPLATE)
    else:
        print("note: %s is not built (base-image/build.sh): the revert test skips" % BASE_IMAGE)
    d = Daemon(extra="wake_timeout = 30s", templates=templates)
    before = t.failed
    try:
        d.start()
        if serve:
            env = environment(d, base)
            for k in sorted(env):
                if k.startswith("SANDBOXD_"):
                    print("export %s='%s'" % (k, env[k]))
            print("# then: cd %s && npm test   (Ctrl-C here stops the daemon)" % SDK, flush=True)
            # A shell's background job ignores SIGINT: SIGTERM ends it too.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        t.run(test_node_suite, ctx, d, base, major)
    finally:
        if t.failed != before:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
