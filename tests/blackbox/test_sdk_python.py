#!/usr/bin/env python3
"""The Python SDK (clients/python, issue 11) against a real daemon with
real containers: starts a daemon (busybox template "default" with a dev
server that logs and serves /workspace; a "base" template on
sandboxd/base:latest when it is built, for revert, which needs git), runs
the SDK's unittest suite (clients/python/tests: the API end to end, task
events resumed after a cut connection, the OpenAPI mapping, the example
app builder) with SANDBOXD_URL and the keys in the environment, and
counts each unittest test as one check; then a task's events iterator
kept across a daemon restart (SIGTERM, start again) mid-task.

Before that, without a daemon: every module parses as Python 3.9
(ast feature_version), carries `from __future__ import annotations` (so
annotations such as `X | None` are never evaluated on 3.9), the package
has py.typed, pyproject.toml names the package, `pip install` of the
directory works offline, and mypy passes with --python-version 3.9
(--strict for the package).

Prints "N passed, N failed"; exits 77 without Docker.
"""
import ast
import io
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import TOP_SRC, Daemon, Runner, TEST_IMAGE, ensure_docker, ensure_test_image  # noqa: E402

SDK = os.path.join(TOP_SRC, "clients", "python")
BASE_IMAGE = "sandboxd/base:latest"
DEV = ("echo dev-started; (i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.5; done) & "
       "exec httpd -f -p 3000 -h /workspace")


def py_files():
    out = []
    for root, dirs, files in os.walk(SDK):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out += [os.path.join(root, f) for f in sorted(files) if f.endswith(".py")]
    return sorted(out)


def test_static(t):
    files = py_files()
    t.check(len(files) >= 8, "the SDK's files are found: %r" % files)
    for path in files:
        rel = os.path.relpath(path, SDK)
        with open(path, encoding="utf-8") as f:
            src = f.read()
        try:
            tree = ast.parse(src, rel, feature_version=(3, 9))
            ok = True
        except SyntaxError as e:
            ok = False
            t.check(False, "%s does not parse as Python 3.9: %s" % (rel, e))
        if not ok:
            continue
        t.check(True, rel)
        if rel.startswith("sandboxd" + os.sep) or rel.startswith("tests" + os.sep):
            futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"
                       and any(a.name == "annotations" for a in n.names)]
            t.check(futures, "%s has `from __future__ import annotations`" % rel)
        # A `X | None` outside annotations is evaluated at run time and
        # fails on 3.9; annotations themselves stay strings (the import).
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and \
                    any(_is_type(x) for x in (node.left, node.right)) and not _in_annotation(tree, node):
                t.check(False, "%s:%d: a `X | Y` type outside an annotation (3.10+ only)" % (rel, node.lineno))
    t.check(os.path.exists(os.path.join(SDK, "sandboxd", "py.typed")), "py.typed is there")
    with open(os.path.join(SDK, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    try:
        import tomllib
        meta = tomllib.loads(pyproject)
        t.check(meta["project"]["name"] == "sandboxd" and meta["project"]["requires-python"] == ">=3.9"
                and meta["project"].get("dependencies") == [], "pyproject.toml: %r" % meta["project"])
    except ImportError:
        t.check('name = "sandboxd"' in pyproject, "pyproject.toml names the package")


TYPE_NAMES = {"str", "int", "float", "bool", "bytes", "dict", "list", "tuple", "set", "Any",
              "Optional", "Dict", "List", "Tuple", "Mapping", "Sequence", "Iterator"}


def _is_type(node):
    return (isinstance(node, ast.Constant) and node.value is None) or \
        (isinstance(node, ast.Name) and node.id in TYPE_NAMES) or \
        (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in TYPE_NAMES)


def _in_annotation(tree, target):
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            anns = [a.annotation for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs
                    if a.annotation is not None] + ([node.returns] if node.returns else [])
        elif isinstance(node, ast.AnnAssign):
            anns = [node.annotation]
        for a in anns:
            if any(n is target for n in ast.walk(a)):
                return True
    return False


def test_pip_install(t):
    """`pip install clients/python` builds and installs the package (with
    the installed setuptools: no index is reachable here). Any python3 on
    the machine that can build offline will do: setuptools before 70.1
    needs the wheel package for that."""
    import tempfile
    probe = ("import setuptools, pip, sys\ntry:\n import wheel\nexcept ImportError:\n "
             "sys.exit(0 if tuple(int(x) for x in setuptools.__version__.split('.')[:2]) >= (70, 1) else 1)")
    pythons = [p for p in (sys.executable, "/usr/bin/python3") if os.path.exists(p)]
    python = next((p for p in pythons if subprocess.run([p, "-c", probe], capture_output=True).returncode == 0), None)
    if python is None:
        t.skip("no python3 here has pip and setuptools that build offline (>= 70.1, or the wheel package)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.join(tmp, "src")
        # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
        subprocess.run(["cp", "-r", SDK, work], check=True)
        r = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                            "--no-index", "--target", os.path.join(tmp, "site"), work],
                           capture_output=True, text=True, timeout=120)
        if not t.check(r.returncode == 0, "pip install (%s): %s" % (python, (r.stdout + r.stderr)[-1500:])):
            return
        site = os.path.join(tmp, "site")
        t.check(os.path.exists(os.path.join(site, "sandboxd", "py.typed")), "py.typed is installed")
        r = subprocess.run([python, "-c", "import sandboxd; print(sandboxd.__version__, sandboxd.__file__)"],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=site), cwd=tmp)
        t.check(r.returncode == 0 and r.stdout.startswith("0.1.0 " + site), "the installed package imports: %r" % r)


def test_types(t):
    """mypy as Python 3.9: the package strictly, the tests and the example
    as they are (typeshed knows which standard-library names 3.9 has)."""
    import shutil
    mypy = shutil.which("mypy")
    if mypy is None:
        t.skip("mypy is not installed (scripts/install-deps.sh): the types are not checked")
        return
    for args in (["--strict", "sandboxd"], ["examples/app_builder.py", "tests"]):
        r = subprocess.run([mypy, "--python-version", "3.9", "--no-incremental", "--cache-dir", "/dev/null"] + args,
                           capture_output=True, text=True, cwd=SDK, timeout=300)
        t.check(r.returncode == 0, "mypy %s: %s" % (" ".join(args), (r.stdout + r.stderr)[-2000:]))


def run_suite(t, d, base):
    env = {"SANDBOXD_URL": "http://127.0.0.1:%d" % d.port, "SANDBOXD_API_KEY": d.key("acme"),
           "SANDBOXD_OTHER_KEY": d.key("globex"), "SANDBOXD_ADMIN_KEY": d.key("root"),
           "SANDBOXD_BASE_TEMPLATE": "base" if base else "",
           "SANDBOXD_OPENAPI": os.path.join(TOP_SRC, "docs", "openapi.yaml")}
    os.environ.update(env)
    sys.path.insert(0, os.path.join(SDK, "tests"))
    sys.path.insert(0, SDK)
    suite = unittest.defaultTestLoader.discover(os.path.join(SDK, "tests"), top_level_dir=os.path.join(SDK, "tests"))
    out = io.StringIO()
    t0 = time.time()
    result = unittest.TextTestRunner(stream=out, verbosity=2).run(suite)
    print(out.getvalue(), flush=True)
    print("unittest: %d run in %.1fs" % (result.testsRun, time.time() - t0), flush=True)
    bad = {id(x[0]) for x in result.failures + result.errors}
    t.check(result.testsRun >= 20, "the suite ran its tests: %d" % result.testsRun)
    for test, why in result.skipped:
        t.skip("%s: %s" % (test.id(), why))
    for test, tb in result.failures + result.errors:
        t.check(False, "%s\n%s" % (test.id(), tb))
    t.passed += result.testsRun - len(bad) - len(result.skipped)


def test_resume_across_restart(t, d):
    """A task's events iterator outlives a daemon restart: the daemon goes
    (SIGTERM closes the stream), comes back, the task goes on in agentd,
    and the iterator reconnects with Last-Event-ID on its own."""
    import threading
    sys.path.insert(0, SDK)
    from sandboxd import Sandboxd
    c = Sandboxd("http://127.0.0.1:%d" % d.port, d.key("acme"), timeout=20)
    sbx = c.sandboxes.create()
    try:
        task = sbx.tasks.run("for i in $(seq 1 40); do echo n $i; sleep 0.15; done")
        got, errs = [], []
        first = threading.Event()

        def consume():
            try:
                for ev in task.events(timeout=90):
                    got.append(ev)
                    if ev.event == "output":
                        first.set()
            except Exception as e:  # reported below
                errs.append(e)
            first.set()
        th = threading.Thread(target=consume)
        th.start()
        first.wait(30)
        t.check(d.stop() == 0, "the daemon stopped cleanly")
        at_stop = len(got)
        d.start()
        th.join(90)
        t.check(not th.is_alive() and not errs, "the iterator ended without an error: %r" % errs)
        ids = [e.id for e in got]
        t.check(0 < at_stop < len(ids) - 5, "the restart came mid-task: %d of %d events before it" % (at_stop, len(ids)))
        t.check(ids == list(range(1, len(ids) + 1)), "every event once, in order, across the restart: %r" % ids)
        t.check([e.text for e in got if e.event == "output"] == ["n %d\n" % i for i in range(1, 41)],
                "every line: %r" % [e.text for e in got if e.event == "output"])
        t.check(got and got[-1].event == "exit" and got[-1].data.get("state") == "succeeded",
                "the exit event last: %r" % (got[-1:],))
    finally:
        sbx.delete()


def main():
    t = Runner()
    t.run(test_static)
    t.run(test_pip_install)
    t.run(test_types)
    if not ensure_docker():
        print("docker is not available: skipping the SDK's daemon tests")
        t.finish()
        return 77
    ensure_test_image()
    templates = {"default": {"image": TEST_IMAGE, "port": "3000", "dev_command": DEV,
                             "memory": "64m", "cpus": "0.5", "pids_limit": "64"}}
    base = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0
    if base:
        templates["base"] = {"image": BASE_IMAGE, "port": "3000", "memory": "512m", "cpus": "1",
                             "pids_limit": "256"}
    # A TLS listener too, with a self-signed certificate for localhost
    # (the SDK's https:// path, with its own CA through ssl_context).
    import shutil
    import tempfile
    from harness import free_port
    certs = tempfile.mkdtemp(prefix="sbx-sdk-tls-")
    tls = None
    extra = "wake_timeout = 30s"
    if shutil.which("openssl"):
        crt, key = os.path.join(certs, "localhost.pem"), os.path.join(certs, "localhost.key")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], capture_output=True)
        if r.returncode == 0:
            tls = (free_port(), crt)
            extra += "\ntls_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s" % (tls[0], crt, key)
    d = Daemon(extra=extra, templates=templates)
    before = t.failed
    try:
        d.start()
        t.current = "unittest"
        if tls:
            os.environ.update({"SANDBOXD_TLS_URL": "https://localhost:%d" % tls[0], "SANDBOXD_TLS_CA": tls[1]})
        run_suite(t, d, base)
        t.run(test_resume_across_restart, d)
    finally:
        if t.failed != before:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
        d.cleanup()
        shutil.rmtree(certs, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
