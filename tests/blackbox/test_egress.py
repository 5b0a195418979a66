#!/usr/bin/env python3
"""Black-box scenarios for network isolation (issue 10, part 1): the rules
sandboxd installs for its bridge, proven from inside real sandbox
containers (busybox nc against listeners this test made, each answering
a token of its own, so a probe cannot pass vacuously).

What the test builds, and removes again even on failure:
  - a listener in this process on 0.0.0.0 (reached at the bridge's gateway
    IP, the host's primary IP and a dummy interface's IP);
  - an extra host interface (an empty bridge: this kernel has no dummy
    module) with 10.251.N.1/32, where the daemon also listens
    with its API;
  - a network namespace behind a veth pair, 10.250.N.0/24 routed from the
    host, with a listener on 10.250.N.2 standing in for a private-range
    host and one on 169.254.169.254 (routed there) for cloud metadata.

Each "denied" probe is paired with the same probe succeeding where the
rules allow it (egress_allow, egress = open, or no rules at all once the
daemon stopped and removed them), and with the counter of the rule that
dropped it. Needs root, nft, ip and Docker; exits 77 otherwise.

Not tested here: a dockerd restart. Other work shares this dockerd, so the
test does not restart it; the rules live in a table of their own that
Docker never touches (docs/network.md), and the daemon loads them again
at every sync, which a dockerd restart triggers.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, SANDBOXD, docker, ensure_docker,  # noqa: E402
                     ensure_test_image, free_port, wait_for)

TOKEN = secrets.token_hex(6)
N = 1 + secrets.randbelow(250)
TAG = secrets.token_hex(2)
NS = "sbxeg-" + TAG
VETH_H = "vegh" + TAG
VETH_N = "vegn" + TAG
DUMMY = "sbxegd" + TAG
PRIV_HOST = "10.250.%d.1" % N
PRIV = "10.250.%d.2" % N
DUMMY_IP = "10.251.%d.1" % N
META = "169.254.169.254"
HOST_PORT = free_port()
PRIV_PORT = 8080

# One listener per (address, port): answers any request with its token.
SERVER = r"""
import socket, sys, threading
def serve(s, word):
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(2)
            try:
                c.recv(4096)
            except OSError:
                pass
            body = (word + "\n").encode()
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        finally:
            c.close()
for spec in sys.argv[1:]:
    addr, port, word = spec.split(",")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(16)
    threading.Thread(target=serve, args=(s, word), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


class Env:
    """The test's own interfaces, namespace and listeners."""

    def __init__(self):
        self.procs = []
        self.made = []          # undo commands, run in reverse
        self.gateway = None
        self.primary = None

    def setup(self):
        sh("ip", "netns", "add", NS)
        self.made.append(["ip", "netns", "del", NS])
        sh("ip", "link", "add", VETH_H, "type", "veth", "peer", "name", VETH_N)
        self.made.append(["ip", "link", "del", VETH_H])
        sh("ip", "link", "set", VETH_N, "netns", NS)
        sh("ip", "addr", "add", PRIV_HOST + "/24", "dev", VETH_H)
        sh("ip", "link", "set", VETH_H, "up")
        nsx = ["ip", "netns", "exec", NS]
        sh(*nsx, "ip", "addr", "add", PRIV + "/24", "dev", VETH_N)
        sh(*nsx, "ip", "addr", "add", META + "/32", "dev", "lo")
        sh(*nsx, "ip", "link", "set", VETH_N, "up")
        sh(*nsx, "ip", "link", "set", "lo", "up")
        sh(*nsx, "ip", "route", "add", "default", "via", PRIV_HOST)
        # replace, not add: the one fixed name here. A run killed before
        # its cleanup leaves the route behind, pointing at its namespace.
        sh("ip", "route", "replace", META + "/32", "via", PRIV)
        self.made.append(["ip", "route", "del", META + "/32", "via", PRIV])
        sh("ip", "link", "add", DUMMY, "type", "bridge")  # no dummy module here
        self.made.append(["ip", "link", "del", DUMMY])
        sh("ip", "addr", "add", DUMMY_IP + "/32", "dev", DUMMY)
        sh("ip", "link", "set", DUMMY, "up")
        self.listen(nsx, ["%s,%d,private-%s" % (PRIV, PRIV_PORT, TOKEN),
                          "%s,80,metadata-%s" % (META, TOKEN)])
        self.listen([], ["0.0.0.0,%d,host-%s" % (HOST_PORT, TOKEN)])
        route = sh("ip", "-o", "route", "get", "1.1.1.1", check=False).stdout
        m = re.search(r"\bsrc (\S+)", route)
        self.primary = m.group(1) if m else None

    def listen(self, prefix, specs):
        p = subprocess.Popen(prefix + [sys.executable, "-c", SERVER] + specs,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("listener did not start: %s" % p.stderr.read())

    def cleanup(self):
        for p in self.procs:
            p.kill()
            p.wait()
        for cmd in reversed(self.made):
            sh(*cmd, check=False)


def table(d):
    return "sandboxd_" + d.instance


def nft_table(d):
    r = sh("nft", "list", "table", "inet", table(d), check=False)
    return r.stdout if r.returncode == 0 else None


def counter(d, comment, chain="forward"):
    """Packets counted by the rule with this comment in this chain."""
    text = nft_table(d) or ""
    m = re.search(r"chain %s \{(.*?)\n\t\}" % chain, text, re.S)
    total = 0
    for line in (m.group(1) if m else "").splitlines():
        if 'comment "%s"' % comment in line:
            c = re.search(r"counter packets (\d+)", line)
            total += int(c.group(1)) if c else 0
    return total


def cname(d, sid):
    return "%s-%s" % (d.instance, sid)


def cip(d, sid):
    out = docker("inspect", cname(d, sid)).stdout
    return json.loads(out)[0]["NetworkSettings"]["Networks"][d.network]["IPAddress"]


def probe(d, sid, host, port, word, path="/"):
    """1 if an HTTP request from inside the sandbox (busybox nc: its wget
    crashes in this static build) gets the answer holding word. stdin
    stays open a moment: the daemon takes a half-closed request as a client
    gone and does not answer it."""
    r = docker("exec", cname(d, sid), "sh", "-c",
               "(printf 'GET %s HTTP/1.0\\r\\nHost: %s:%d\\r\\n\\r\\n'; sleep 1) | nc -w 3 %s %d" % (path, host, port, host, port),
               check=False)
    return word in r.stdout


def nslookup(d, sid):
    r = docker("exec", cname(d, sid), "nslookup", "-timeout=2", "-retry=1",
               "sandboxd-egress-test.invalid", check=False)
    return r.stdout + r.stderr


def resolver_answers():
    """1 if the host's own resolver answers a query (NXDOMAIN counts)."""
    try:
        with open("/etc/resolv.conf") as f:
            servers = re.findall(r"^\s*nameserver\s+(\S+)", f.read(), re.M)
    except OSError:
        return False
    q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
         b"\x0fsandboxd-egress\x04test\x07invalid\x00\x00\x01\x00\x01")
    for srv in servers:
        if srv.startswith("127.") or srv == "::1":
            continue
        fam = socket.AF_INET6 if ":" in srv else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(2)
        try:
            s.sendto(q, (srv, 53))
            data, _ = s.recvfrom(512)
            if data[:2] == b"\x12\x34":
                return True
        except OSError:
            pass
        finally:
            s.close()
    return False


def make_daemon():
    d = Daemon()
    d.api_port = free_port()
    return d


def configure(d, extra):
    d.extra = "listen = %s:%d\n%s" % (DUMMY_IP, d.api_port, extra)
    d.write_config()


def start(t, d, extra, env=None):
    configure(d, extra)
    r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
    if not t.check(r.returncode == 0, "config %r accepted: %s" % (extra, r.stderr.strip())):
        raise RuntimeError("config refused")
    if env is not None:
        old = os.environ.copy()
        os.environ.update(env)
        try:
            d.start()
        finally:
            os.environ.clear()
            os.environ.update(old)
    else:
        d.start()


def health(d):
    return d.request("GET", "/healthz", key=None).json()


# --- scenarios --------------------------------------------------------------

class State:
    d = None
    s1 = None
    s2 = None
    env = None


def test_public_only(t, st):
    """The default: the host, another sandbox, link-local and private
    ranges are dropped by our rules (their counters move)."""
    d = st.d
    start(t, d, "")
    h = health(d)
    t.check(h.get("egress", {}).get("enforced") is True and h["egress"]["mode"] == "public-only",
            "healthz says the rules are in force: %r" % h.get("egress"))
    text = nft_table(d)
    t.check(text is not None and "sandbox to sandbox" in text, "table inet %s is loaded" % table(d))
    t.check(b"sandboxd_egress_enforced 1" in d.request("GET", "/metrics", key="root").body,
            "/metrics says the rules are in force")
    for name in ("s1", "s2"):
        r = d.request("POST", "/v1/sandboxes", {})
        if not t.check(r.status == 201, "create answers 201: %r" % r):
            return
        setattr(st, name, r.json()["id"])
    for sid in (st.s1, st.s2):
        t.check(wait_for(lambda: d.request("GET", "/v1/sandboxes/" + sid).json()["state"] == "running",
                         timeout=30, interval=0.2), "sandbox %s runs" % sid)
    r = d.request("PUT", "/v1/sandboxes/%s/files/index.html" % st.s2, "sandbox2-%s\n" % TOKEN)
    t.check(r.status in (201, 204), "index.html written in sandbox 2: %r" % r)
    st.env.gateway = json.loads(docker("network", "inspect", d.network).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    s2ip = cip(d, st.s2)
    # The listeners answer when asked from where nothing filters.
    t.check(wait_for(lambda: sh("curl", "-s", "-m", "3", "http://%s:3000/" % s2ip,
                                check=False).stdout.startswith("sandbox2-"), timeout=15),
            "sandbox 2's port answers the host")
    t.check(("private-" + TOKEN) in sh("curl", "-s", "-m", "3", "http://%s:%d/" % (PRIV, PRIV_PORT),
                                         check=False).stdout,
            "the private listener answers the host")

    before = counter(d, "the host", "input")
    t.check(not probe(d, st.s1, st.env.gateway, HOST_PORT, "host-" + TOKEN),
            "the host's listener is unreachable at the bridge gateway %s" % st.env.gateway)
    if st.env.primary:
        t.check(not probe(d, st.s1, st.env.primary, HOST_PORT, "host-" + TOKEN),
                "the host's listener is unreachable at its primary IP %s" % st.env.primary)
    t.check(not probe(d, st.s1, DUMMY_IP, HOST_PORT, "host-" + TOKEN),
            "the host's listener is unreachable at a dummy interface's IP")
    t.check(not probe(d, st.s1, DUMMY_IP, d.api_port, '"status"', "/healthz"),
            "the daemon's own API port is unreachable")
    t.check(counter(d, "the host", "input") > before, "the \"the host\" rule dropped them")
    before = counter(d, "sandbox to sandbox")
    t.check(not probe(d, st.s1, s2ip, 3000, "sandbox2-" + TOKEN), "another sandbox's port is unreachable")
    t.check(counter(d, "sandbox to sandbox") > before, "our \"sandbox to sandbox\" rule dropped it")
    before = counter(d, "private")
    t.check(not probe(d, st.s1, PRIV, PRIV_PORT, "private-" + TOKEN), "a private-range host is unreachable")
    t.check(counter(d, "private") > before, "the \"private\" rule dropped it")
    before = counter(d, "link-local")
    t.check(not probe(d, st.s1, META, 80, "metadata-" + TOKEN), "169.254.169.254 is unreachable")
    t.check(counter(d, "link-local") > before, "the \"link-local\" rule dropped it")


def test_dns_public_only(t, st):
    """Queries reach the host's resolver through Docker's embedded DNS
    (they leave from the container's address, to a private address here)."""
    d = st.d
    if not resolver_answers():
        print("  skip test_dns_public_only: the host's resolver does not answer from the host either; "
              "only the rule's presence is checked")
        t.check(re.search(r'th dport 53 .*comment "dns"', nft_table(d) or "") is not None
                or "dns4" not in (nft_table(d) or ""), "a dns rule exists for the resolvers")
        return
    before = counter(d, "dns")
    out = nslookup(d, st.s1)
    # NXDOMAIN (or an address) is the resolver's answer; a timeout or
    # SERVFAIL is what Docker says when it cannot reach it.
    t.check("NXDOMAIN" in out or "Address" in out.split("Server:")[-1].split("\n", 2)[-1],
            "a name lookup in the sandbox gets the resolver's answer: %r" % out[-300:])
    t.check(counter(d, "dns") > before, "the dns rule let the queries through")


def test_reinstalled_when_gone(t, st):
    """Someone deletes our table: probes to the host work (so they can
    succeed), and the daemon's periodic check puts the table back."""
    d = st.d
    sh("nft", "delete", "table", "inet", table(d))
    t.check(probe(d, st.s1, DUMMY_IP, HOST_PORT, "host-" + TOKEN),
            "without our table the host's listener answers the sandbox (the probe can succeed)")
    t.check(probe(d, st.s1, DUMMY_IP, d.api_port, '"status"', "/healthz"),
            "without our table the daemon's API answers the sandbox")
    t.check(wait_for(lambda: nft_table(d) is not None, timeout=45, interval=0.5),
            "the daemon loads the table again within its 30 s check")
    t.check(not probe(d, st.s1, DUMMY_IP, d.api_port, '"status"', "/healthz"),
            "the daemon's API is unreachable again")


def test_removed_at_stop(t, st):
    """SIGTERM removes the table; with no rules the probes succeed."""
    d = st.d
    rc = d.stop()
    t.check(rc == 0, "the daemon exits 0 at SIGTERM: %r" % rc)
    t.check(nft_table(d) is None, "no table of ours after the stop")
    t.check(table(d) not in sh("nft", "list", "tables").stdout, "nft list tables shows nothing of ours")
    t.check(probe(d, st.s1, st.env.gateway, HOST_PORT, "host-" + TOKEN),
            "unfiltered, the host's listener answers at the gateway (the probe can succeed)")
    t.check(probe(d, st.s1, PRIV, PRIV_PORT, "private-" + TOKEN),
            "unfiltered, the private-range host answers (the probe can succeed)")


def test_egress_allow(t, st):
    """egress_allow opens its networks under public-only, never the host."""
    d = st.d
    start(t, d, "egress_allow = %s/32, %s/32\negress_allow = %s/32" % (PRIV, META, DUMMY_IP))
    t.check(probe(d, st.s1, PRIV, PRIV_PORT, "private-" + TOKEN), "an allowed private /32 is reachable")
    t.check(probe(d, st.s1, META, 80, "metadata-" + TOKEN), "an allowed 169.254.169.254/32 is reachable")
    t.check(not probe(d, st.s1, DUMMY_IP, HOST_PORT, "host-" + TOKEN),
            "a host address stays unreachable even when egress_allow lists it")
    t.check(not probe(d, st.s1, cip(d, st.s2), 3000, "sandbox2-" + TOKEN),
            "another sandbox stays unreachable")
    t.check(d.stop() == 0, "stops cleanly")


def test_open(t, st):
    """open: private ranges reachable; link-local, the host and other
    sandboxes not. Ends with a kill -9 that leaves the table behind."""
    d = st.d
    start(t, d, "egress = open")
    t.check(probe(d, st.s1, PRIV, PRIV_PORT, "private-" + TOKEN), "a private-range host is reachable")
    t.check(not probe(d, st.s1, META, 80, "metadata-" + TOKEN), "169.254.169.254 stays unreachable")
    t.check(not probe(d, st.s1, st.env.gateway, HOST_PORT, "host-" + TOKEN), "the host stays unreachable")
    t.check(not probe(d, st.s1, cip(d, st.s2), 3000, "sandbox2-" + TOKEN), "another sandbox stays unreachable")
    d.stop(signal.SIGKILL)
    t.check(nft_table(d) is not None, "after kill -9 the table stays (and keeps protecting)")


def test_none_replaces(t, st):
    """The next start replaces a crashed daemon's table, never adds to it;
    none refuses everything, DNS included."""
    d = st.d
    start(t, d, "egress = none")
    text = nft_table(d) or ""
    tables = sh("nft", "list", "tables").stdout.split("\n")
    t.check(tables.count("table inet " + table(d)) == 1, "one table of ours")
    t.check(text.count('comment "sandbox to sandbox"') == 1 and text.count('comment "egress none"') == 1
            and "egress = open" not in text, "its rules once, for the new mode only")
    t.check(not probe(d, st.s1, PRIV, PRIV_PORT, "private-" + TOKEN), "a private-range host is unreachable")
    before = counter(d, "egress none")
    out = nslookup(d, st.s1)
    t.check("NXDOMAIN" not in out, "no DNS answer under none: %r" % out[-200:])
    t.check(counter(d, "egress none") > before, "the \"egress none\" rule dropped the queries")
    t.check(d.stop() == 0, "stops cleanly")


def test_nft_fails(t, st):
    """nft fails: the daemon runs, says so loudly, and starts no sandbox."""
    d = st.d
    fake = tempfile.mkdtemp(prefix="sbxeg-nft-")
    try:
        path = os.path.join(fake, "nft")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho 'fake nft: refusing' >&2\nexit 1\n")
        os.chmod(path, stat.S_IRWXU)
        start(t, d, "", env={"PATH": fake + ":" + os.environ.get("PATH", "")})
        h = health(d)
        eg = h.get("egress", {})
        t.check(eg.get("enforced") is False and "exited 1" in (eg.get("error") or ""),
                "healthz says the rules are not enforced, and why: %r" % eg)
        t.check("EGRESS RULES ARE NOT ENFORCED" in d.logs(), "the log says so loudly")
        t.check(b"sandboxd_egress_enforced 0" in d.request("GET", "/metrics", key="root").body,
                "/metrics says they are not")
        r = d.request("POST", "/v1/sandboxes", {})
        t.check(r.status == 503 and r.error_code() == "unavailable", "a create is refused with 503: %r" % r)
        r = d.request("POST", "/v1/sandboxes/%s/stop" % st.s2, {})
        t.check(r.status in (200, 202), "a stop still works: %r" % r)
        wait_for(lambda: d.request("GET", "/v1/sandboxes/" + st.s2).json()["state"] == "stopped", timeout=30)
        r = d.request("POST", "/v1/sandboxes/%s/start" % st.s2, {})
        t.check(r.status == 503 or (r.status in (200, 202) and wait_for(
            lambda: d.request("GET", "/v1/sandboxes/" + st.s2).json()["state"] == "stopped", timeout=20)),
            "a start is refused and the sandbox stays stopped: %r" % r)
        t.check(nft_table(d) is None, "no table was loaded")
        t.check(d.stop() == 0, "stops cleanly")
    finally:
        shutil.rmtree(fake, ignore_errors=True)


def test_bad_config(t, st):
    """Bad values are refused with file, line and key."""
    d = st.d
    for extra, want in (("egress = closed", "egress: \"closed\" is not open, public-only or none"),
                        ("egress_allow = 10.0.0.1/8", "host bits are set"),
                        ("egress_allow = 10.0.0.0/33", "0-32"),
                        ("egress_allow = fd00::/129", "0-128"),
                        ("egress_allow = example.com", "not an IPv4 or IPv6 address"),
                        ("egress_allow = 10.0.0.0/8, 10.0.0.0/8", "listed twice")):
        configure(d, extra)
        r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
        t.check(r.returncode != 0 and want in r.stderr and re.search(r"sandboxd.conf:\d+: egress", r.stderr),
                "%r is refused naming the line and key: %r" % (extra, r.stderr.strip()))


def main():
    if os.geteuid() != 0:
        print("skip: the egress tests need root (network namespaces, nft)")
        return 77
    for tool in ("nft", "ip"):
        if shutil.which(tool) is None:
            print("skip: %s is not installed (apt-get install nftables iproute2)" % tool)
            return 77
    if not ensure_docker():
        print("skip: docker is not available")
        return 77
    ensure_test_image()
    print("skip test_dockerd_restart: not restarting the shared dockerd; our table is not Docker's, "
          "and the daemon reloads it at every sync (docs/network.md)")
    t = Runner()
    st = State()
    st.env = Env()
    st.d = make_daemon()
    try:
        st.env.setup()
        for fn in (test_public_only, test_dns_public_only, test_reinstalled_when_gone, test_removed_at_stop,
                   test_egress_allow, test_open, test_none_replaces, test_nft_fails, test_bad_config):
            t.run(fn, st)
            if fn is test_public_only and st.s2 is None:
                break
    finally:
        st.d.cleanup()
        sh("nft", "delete", "table", "inet", table(st.d), check=False)
        st.env.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
