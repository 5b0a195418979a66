#!/usr/bin/env python3
"""Memory held by idle keep-alive client connections: sandboxd beside nginx.

    tests/bench/idle_conns_bench.py [--conns 10000] [--sandboxd build-rel/sandboxd]
        [--tls] [--no-nginx]

Starts the proxy bench's origin (../shared/bench/origin.c, built here with
cc), a sandboxd with a [route] to it, and nginx (one worker, the bench's
own proxy settings) on loopback ports of its own. For each proxy it opens
--conns client connections (plain, or TLS with --tls), sends one request on
each, reads the answer, and keeps every connection open and idle. It then
prints each proxy's RSS (VmRSS) before and with the connections held, and
the difference per connection. Every connection is checked (status 200).
Everything it started is stopped at the end. Not a test: a measurement;
the figures go in docs/proxy.md.
"""
import argparse
import os
import resource
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
BENCH = os.path.abspath(os.path.join(TOP, "..", "shared", "bench"))
HOST = "x.preview.localhost"
ORIGIN_PORT = 18481
SBX_PORT, SBX_TLS_PORT = 18482, 18483
NGX_PORT, NGX_TLS_PORT = 18484, 18485


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nothing listens on port %d" % port)


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=" + HOST,
                    "-addext", "subjectAltName=DNS:%s,DNS:*.preview.localhost" % HOST],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def hold(port, n, tls, deadline_s):
    """Open n connections, one request each; return the open sockets."""
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    req = ("GET /100b HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST).encode()
    sel = selectors.DefaultSelector()
    socks, done, ok = [], 0, 0
    end = time.monotonic() + deadline_s
    pending = list(range(n))
    state = {}

    def start(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        if ctx is not None:
            s = ctx.wrap_socket(s, do_handshake_on_connect=False,
                                server_hostname=HOST)
        state[s] = ["connect", b""]
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)

    inflight = 0
    while (pending or inflight) and time.monotonic() < end:
        while pending and inflight < 500:
            start(pending.pop())
            inflight += 1
        for key, _ in sel.select(0.5):
            s = key.fileobj
            st = state[s]
            try:
                if st[0] == "connect":
                    if ctx is not None:
                        s.do_handshake()
                    s.send(req)
                    st[0] = "read"
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                sel.modify(s, selectors.EVENT_READ)
                continue
            except ssl.SSLWantWriteError:
                sel.modify(s, selectors.EVENT_WRITE)
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                inflight -= 1
                done += 1
                continue
            st[1] += data
            head, sep, body = st[1].partition(b"\r\n\r\n")
            if sep and len(body) >= 100:
                sel.unregister(s)
                inflight -= 1
                done += 1
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
    sel.close()
    return socks, ok


def measure(name, pid, port, n, tls):
    base = rss_kb(pid)
    t0 = time.monotonic()
    socks, ok = hold(port, n, tls, 120)
    took = time.monotonic() - t0
    time.sleep(1.0)
    held = rss_kb(pid)
    # Still open after a second of idleness? (a proxy may drop idle ones)
    for s in socks:
        s.close()
    print("%-9s %-5s conns=%d ok=%d  RSS before %.1f MB, held %.1f MB, "
          "%.2f KB per connection  (opened in %.1f s)" %
          (name, "tls" if tls else "plain", n, ok, base / 1024.0,
           held / 1024.0, (held - base) / max(ok, 1), took))
    return ok == n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--sandboxd", default=os.path.join(TOP, "build-rel", "sandboxd"))
    ap.add_argument("--tls", action="store_true", help="TLS client connections")
    ap.add_argument("--no-nginx", action="store_true")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 1000
    if hard < want:
        raise SystemExit("the file limit (%d) is below %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="idle-conns.")
    procs = []
    try:
        origin = os.path.join(tmp, "origin")
        subprocess.run(["cc", "-O2", "-o", origin, os.path.join(BENCH, "origin.c")],
                       check=True)
        procs.append(subprocess.Popen([origin, "-p", str(ORIGIN_PORT), "-t", "1"],
                                      stdout=subprocess.DEVNULL))
        wait_port(ORIGIN_PORT)
        cert, key = make_cert(tmp)
        conf = os.path.join(tmp, "sandboxd.conf")
        os.makedirs(os.path.join(tmp, "sbx"))
        with open(conf, "w") as f:
            f.write("listen = 127.0.0.1:%d\n" % SBX_PORT)
            if a.tls:
                f.write("tls_listen = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                        % (SBX_TLS_PORT, cert, key))
            # No per-address cap (every client is 127.0.0.1), room for all.
            f.write("max_connections_per_ip = 0\nmax_connections = %d\n" % (a.conns + 100))
            f.write("egress = open\n")
            f.write("data_dir = %s/sbx\npreview_domain = preview.localhost\n"
                    "docker_socket = %s/no-docker.sock\n"
                    "[route bench]\nhost = %s\nupstream = 127.0.0.1:%d\n"
                    % (tmp, tmp, HOST, ORIGIN_PORT))
        sbx = subprocess.Popen([a.sandboxd, "serve", "-c", conf],
                               stderr=open(os.path.join(tmp, "sandboxd.log"), "w"))
        procs.append(sbx)
        wait_port(SBX_TLS_PORT if a.tls else SBX_PORT)
        good = measure("sandboxd", sbx.pid, SBX_TLS_PORT if a.tls else SBX_PORT,
                       a.conns, a.tls)

        if not a.no_nginx and shutil.which("nginx"):
            ng = os.path.join(tmp, "nginx")
            os.makedirs(os.path.join(ng, "tmp"))
            with open(os.path.join(ng, "nginx.conf"), "w") as f:
                f.write("""worker_processes 1; daemon off; master_process off;
worker_rlimit_nofile %d;
pid %s/nginx.pid; error_log %s/error.log warn;
events { worker_connections %d; }
http { access_log off; keepalive_timeout 75s;
  client_body_temp_path %s/tmp; proxy_temp_path %s/tmp;
  upstream origin { server 127.0.0.1:%d; keepalive 1024; }
  server { listen 127.0.0.1:%d; listen 127.0.0.1:%d ssl http2;
    ssl_certificate %s; ssl_certificate_key %s; server_name _;
    location / { proxy_pass http://origin; proxy_http_version 1.1;
      proxy_set_header Host $host; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } } }
""" % (want, ng, ng, want, ng, ng, ORIGIN_PORT, NGX_PORT, NGX_TLS_PORT, cert, key))
            p = subprocess.Popen(["nginx", "-p", ng, "-c", os.path.join(ng, "nginx.conf")],
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(NGX_TLS_PORT if a.tls else NGX_PORT)
            good &= measure("nginx", p.pid, NGX_TLS_PORT if a.tls else NGX_PORT,
                            a.conns, a.tls)
        return 0 if good else 1
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
