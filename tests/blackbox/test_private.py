#!/usr/bin/env python3
"""Black-box scenarios for private previews, cookie and port hygiene and the
error pages (issue 7, parts 3, 4 and 6): real daemons, real dockerd, real
busybox containers whose app is a CGI script that echoes the request it got
(busybox httpd exports every header as HTTP_*), over real sockets. Prints
"N passed, N failed"; exits 77 without Docker.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, Runner, SANDBOXD, TEST_IMAGE, docker, ensure_docker,  # noqa: E402
                     ensure_test_image, wait_for)

# The app: /cgi-bin/echo prints what reached it and sets two cookies, one
# with a Domain attribute the proxy must strip.
ECHO_CGI = b"""#!/bin/sh
echo "Content-Type: text/plain"
echo "Set-Cookie: app=1; Domain=preview.localhost; Path=/; HttpOnly"
echo "Set-Cookie: plain=2; Path=/"
echo ""
echo "cookie=$HTTP_COOKIE"
echo "query=$QUERY_STRING"
echo "uri=$REQUEST_URI"
"""
INDEX = b"<h1>private app</h1>\n"
BASE = {"image": TEST_IMAGE, "port": "3000", "memory": "64m", "cpus": "0.5", "pids_limit": "64",
        "dev_command": "httpd -f -p 3000 -h /workspace", "ports": "3000, 5173, 8000-8100"}
JSON_ERROR = re.compile(rb'^\{"error":\{"code":"[a-z_]+","message":"[^"]+"\}\}\n?$')


# --- helpers ----------------------------------------------------------------

def daemon(extra=""):
    return Daemon(extra=extra, templates={"default": dict(BASE)})


def phost(d, sid, port=None):
    return ("%d-%s" % (port, sid) if port else sid) + ".preview.localhost:%d" % d.port


def get(d, sid, path="/", headers=None, port=None, method="GET", timeout=30):
    h = {"Accept": "*/*"}
    h.update(headers or {})
    return d.request(method, path, key=None, host=phost(d, sid, port), headers=h, timeout=timeout)


def create(t, d, body):
    r = d.request("POST", "/v1/sandboxes", body)
    t.check(r.status == 201, "create %r answers 201, got %r" % (body, r))
    return r.json() if r.status == 201 else None


def token(d, sid, body=None, key="acme"):
    return d.request("POST", "/v1/sandboxes/%s/preview-token" % sid, body if body is not None else {}, key=key)


def setup_app(t, d, sid):
    """Put the echo CGI and an index in the workspace; True once they answer."""
    ok = d.request("PUT", "/v1/sandboxes/%s/files/index.html" % sid, INDEX).status in (201, 204)
    ok = ok and d.request("PUT", "/v1/sandboxes/%s/files/cgi-bin/echo" % sid, ECHO_CGI).status in (201, 204)
    r = d.request("POST", "/v1/sandboxes/%s/exec" % sid,
                  {"cmd": ["chmod", "755", "/workspace/cgi-bin/echo"]}, timeout=60)
    ok = ok and r.status == 200 and r.json()["exit_code"] == 0
    return t.check(ok, "the app's files are in place: %r" % r)


def cookie_of(r):
    """The sandboxd_token=... pair of a response's Set-Cookie, or None."""
    sc = r.headers.get("set-cookie", "")
    m = re.match(r"sandboxd_token=([^;]+)", sc)
    return m.group(1) if m else None


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(d, sid, expires):
    """A token made as docs/previews.md says, with the daemon's own secret."""
    with open(os.path.join(d.data_dir, "preview-secret"), "rb") as f:
        key = f.read()
    body = "v1.%s.%d" % (sid, expires)
    return body + "." + b64url(hmac.new(key, body.encode(), hashlib.sha256).digest())


def no_leak(t, r, what):
    """An error page says nothing of the daemon's insides."""
    body = r.body.decode(errors="replace")
    bad = [w for w in ("172.", "10.0.", "errno", "docker", "Docker", "container", "ECONN", "refused",
                       "/var/", "/tmp/", "sandboxd_token=") if w in body]
    return t.check(not bad, "%s: the page leaks nothing (%r): %r" % (what, bad, body[:300]))


# --- tests ------------------------------------------------------------------

def test_secret_file(t, d, ctx):
    st = os.stat(os.path.join(d.data_dir, "preview-secret"))
    t.check(st.st_size == 32, "the secret holds 32 bytes (%d)" % st.st_size)
    t.check(st.st_mode & 0o777 == 0o600, "the secret is mode 0600 (%o)" % (st.st_mode & 0o777))


def test_create_private(t, d, ctx):
    s = create(t, d, {"visibility": "private"})
    if s is None:
        return
    t.check(s["visibility"] == "private", "the sandbox is private: %r" % s)
    ctx["a"] = s["id"]
    s2 = create(t, d, {"visibility": "private"})
    ctx["b"] = s2["id"] if s2 else None
    pub = create(t, d, {})
    t.check(pub is not None and pub["visibility"] == "public", "public is the default")
    ctx["pub"] = pub["id"] if pub else None
    r = d.request("POST", "/v1/sandboxes", {"visibility": "secret"})
    t.check(r.status == 400 and r.error_code() == "bad_request", "a bad visibility is a 400: %r" % r)
    for sid in (ctx["a"], ctx["b"], ctx["pub"]):
        if sid:
            setup_app(t, d, sid)


def test_token_api(t, d, ctx):
    sid = ctx["a"]
    r = token(d, sid)
    if not t.check(r.status == 200, "preview-token answers 200: %r" % r):
        return
    j = r.json()
    t.check(set(j) == {"token", "url", "expires_at"}, "token, url, expires_at: %r" % j)
    t.check(re.match(r"^v1\.%s\.\d+\.[A-Za-z0-9_-]{43}$" % sid, j["token"]) is not None,
            "the token's format: %r" % j["token"])
    t.check(j["url"] == "http://%s.preview.localhost:%d/?sandboxd_token=%s" % (sid, d.port, j["token"]),
            "the url carries the token: %r" % j["url"])
    exp = int(j["token"].split(".")[2])
    t.check(abs(exp - (time.time() + 3600)) < 30, "ttl_s defaults to 3600 (%d)" % (exp - time.time()))
    t.check(j["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp)),
            "expires_at matches: %r" % j["expires_at"])
    ctx["token"] = j["token"]
    r = token(d, sid, {"ttl_s": 60})
    t.check(r.status == 200 and abs(int(r.json()["token"].split(".")[2]) - time.time() - 60) < 30,
            "ttl_s 60 is taken: %r" % r)
    for bad in ({"ttl_s": 59}, {"ttl_s": 30 * 86400 + 1}, {"ttl_s": "3600"}, {"ttl_s": 1.5}, {"ttl": 5}):
        r = token(d, sid, bad)
        t.check(r.status == 400 and r.error_code() == "bad_request", "%r is a 400: %r" % (bad, r))
    r = d.request("POST", "/v1/sandboxes/%s/preview-token" % sid, "{nope")
    t.check(r.status == 400, "malformed JSON is a 400: %r" % r)
    r = token(d, sid, key="globex")
    t.check(r.status == 404 and r.error_code() == "not_found", "another tenant gets 404: %r" % r)
    r = d.request("POST", "/v1/sandboxes/%s/preview-token" % sid, {}, key=None)
    t.check(r.status == 401, "no key is a 401: %r" % r)
    r = token(d, "01jd3k5x8q2w7e9r4t6y1v3h5q")
    t.check(r.status == 404, "an unknown sandbox is a 404: %r" % r)
    r = token(d, "NOT-AN-ID")
    t.check(r.status == 400, "a malformed id is a 400: %r" % r)
    # A public sandbox needs no token: its url is the plain preview URL.
    if ctx["pub"]:
        r = token(d, ctx["pub"])
        t.check(r.status == 200 and "sandboxd_token" not in r.json()["url"],
                "a public sandbox's url has no token: %r" % r)


def test_no_token(t, d, ctx):
    sid = ctx["a"]
    r = get(d, sid, "/index.html", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    t.check(r.status == 401, "no token: 401, got %r" % r)
    t.check(r.headers.get("content-type", "").startswith("text/html"), "a page: %r" % r.headers)
    t.check(b"This preview is private" in r.body and b"<style>" in r.body, "the styled 401 page: %r" % r)
    t.check(b"private app" not in r.body, "the app's content is not shown")
    no_leak(t, r, "401")
    r = get(d, sid, "/index.html", headers={"Accept": "application/json"})
    t.check(r.status == 401 and r.headers.get("content-type") == "application/json" and
            JSON_ERROR.match(r.body) and r.error_code() == "unauthorized",
            "a JSON client gets the JSON error: %r" % r)
    # A cookie that is not a token, a token in a header: still 401.
    r = get(d, sid, "/index.html", headers={"Cookie": "sandboxd_token=garbage; x=1"})
    t.check(r.status == 401, "a garbage cookie: 401, got %r" % r)
    r = get(d, sid, "/index.html", headers={"Authorization": "Bearer " + ctx["token"]})
    t.check(r.status == 401, "a bearer header is no preview token: %r" % r)
    # The public one is open.
    if ctx["pub"]:
        r = get(d, ctx["pub"], "/index.html")
        t.check(r.status == 200 and r.body == INDEX, "a public sandbox needs no token: %r" % r)


def test_token_cookie(t, d, ctx):
    sid, tok = ctx["a"], ctx["token"]
    r = get(d, sid, "/cgi-bin/echo?a=1&sandboxd_token=%s&b=two" % tok)
    t.check(r.status == 302, "the token redirects: %r" % r)
    t.check(r.headers.get("location") == "/cgi-bin/echo?a=1&b=two",
            "to the same URL without the token, other params in order: %r" % r.headers.get("location"))
    sc = r.headers.get("set-cookie", "")
    t.check(cookie_of(r) == tok, "the cookie carries the token: %r" % sc)
    attrs = [a.strip().lower() for a in sc.split(";")[1:]]
    t.check("path=/" in attrs and "httponly" in attrs and "samesite=lax" in attrs,
            "Path=/, HttpOnly, SameSite=Lax: %r" % sc)
    t.check(not any(a.startswith("domain") for a in attrs), "no Domain: host-only: %r" % sc)
    t.check("secure" not in attrs, "no Secure over plain HTTP: %r" % sc)
    ages = [int(a[8:]) for a in attrs if a.startswith("max-age=")]
    t.check(len(ages) == 1 and 3500 < ages[0] <= 3600, "Max-Age until the token expires: %r" % sc)
    t.check(r.headers.get("referrer-policy") == "no-referrer", "no Referer carries the token on")
    ctx["cookie"] = cookie_of(r)
    # Then the cookie: the app answers, and never sees the token.
    r = get(d, sid, "/cgi-bin/echo?a=1&b=two", headers={"Cookie": "other=1; sandboxd_token=%s; more=2" % tok})
    t.check(r.status == 200, "the cookie opens the preview: %r" % r)
    t.check(b"cookie=other=1; more=2\n" in r.body, "the app gets the other cookies: %r" % r.body)
    t.check(b"query=a=1&b=two\n" in r.body, "and the query: %r" % r.body)
    t.check(tok.encode() not in r.body and b"sandboxd_token" not in r.body,
            "the app never sees the token: %r" % r.body)
    r = get(d, sid, "/cgi-bin/echo", headers={"Cookie": "sandboxd_token=%s" % tok})
    t.check(r.status == 200 and b"cookie=\n" in r.body, "a Cookie of only the token is dropped: %r" % r.body)
    r = get(d, sid, "/index.html", headers={"Cookie": "sandboxd_token=%s" % tok})
    t.check(r.status == 200 and r.body == INDEX, "static files too: %r" % r)
    # A HEAD and a POST with the token redirect too (a POST with 303).
    r = get(d, sid, "/cgi-bin/echo?sandboxd_token=%s" % tok, method="POST")
    t.check(r.status == 303 and r.headers.get("location") == "/cgi-bin/echo", "a POST gets a 303: %r" % r)
    # The token in the URL works on another host of the same sandbox; the
    # cookie is per host, so that host sets its own.
    r = get(d, sid, "/?sandboxd_token=%s" % tok, port=5173)
    t.check(r.status == 302 and cookie_of(r) == tok, "a <port>-<id> host takes the same token: %r" % r)


def test_set_cookie_domain(t, d, ctx):
    cookies = raw_set_cookies(d, ctx["a"], ctx["token"])
    t.check("app=1; Path=/; HttpOnly" in cookies, "Domain is stripped, the rest kept: %r" % cookies)
    t.check("plain=2; Path=/" in cookies, "a cookie without Domain passes as is: %r" % cookies)
    t.check(not any("domain" in c.lower() for c in cookies), "no Domain anywhere: %r" % cookies)
    if ctx["pub"]:
        cookies = raw_set_cookies(d, ctx["pub"], None)
        t.check("app=1; Path=/; HttpOnly" in cookies and len(cookies) == 2,
                "on public sandboxes too: %r" % cookies)


def raw_set_cookies(d, sid, tok):
    req = "GET /cgi-bin/echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" % (
        phost(d, sid), "Cookie: sandboxd_token=%s\r\n" % tok if tok else "")
    out = d.raw(req.encode(), timeout=10)
    head = out.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]
            if line.lower().startswith("set-cookie:")]


def test_refusals(t, d, ctx):
    a, b, tok = ctx["a"], ctx["b"], ctx["token"]
    if b:
        r = get(d, b, "/index.html", headers={"Cookie": "sandboxd_token=%s" % tok})
        t.check(r.status == 401, "A's cookie on B: 401, got %r" % r)
        r = get(d, b, "/index.html?sandboxd_token=%s" % tok)
        t.check(r.status == 401 and "set-cookie" not in r.headers, "A's token on B: 401, got %r" % r)
    # Expired (made with the daemon's secret, so only the expiry is wrong).
    old = mint(d, a, int(time.time()) - 5)
    r = get(d, a, "/index.html", headers={"Cookie": "sandboxd_token=%s" % old})
    t.check(r.status == 401, "an expired cookie: 401, got %r" % r)
    r = get(d, a, "/index.html?sandboxd_token=%s" % old)
    t.check(r.status == 401 and b"expired" in r.body, "an expired token: 401 that says so, got %r" % r)
    fresh = mint(d, a, int(time.time()) + 600)
    r = get(d, a, "/index.html", headers={"Cookie": "sandboxd_token=%s" % fresh})
    t.check(r.status == 200, "the documented format verifies: %r" % r)
    # Altered: the MAC, the expiry, the id.
    parts = tok.split(".")
    altered = [".".join(parts[:3] + [parts[3][:-1] + ("A" if parts[3][-1] != "A" else "B")]),
               ".".join(parts[:2] + [str(int(parts[2]) + 1000), parts[3]]),
               ".".join([parts[0], b or parts[1], parts[2], parts[3]]),
               tok + "x", tok[:-1]]
    for bad in altered:
        r = get(d, a, "/index.html", headers={"Cookie": "sandboxd_token=%s" % bad})
        t.check(r.status == 401, "an altered token %r: 401, got %r" % (bad[-12:], r))
    # With a good cookie, a bad token in the URL still strips and redirects.
    r = get(d, a, "/x?sandboxd_token=bad&k=v", headers={"Cookie": "sandboxd_token=%s" % tok})
    t.check(r.status == 302 and r.headers.get("location") == "/x?k=v" and "set-cookie" not in r.headers,
            "a stale link with a good cookie: redirect, no new cookie: %r" % r)


def test_ports(t, d, ctx):
    pub = ctx["pub"]
    if not pub:
        return
    for port in (8101, 22, 1024, 65535):
        r = get(d, pub, "/", port=port, headers={"Accept": "text/html"})
        t.check(r.status == 404 and b"not open for previews" in r.body, "port %d is not listed: 404, got %r"
                % (port, r))
    r = get(d, pub, "/", port=9999, headers={"Accept": "application/json"})
    t.check(r.status == 404 and r.error_code() == "not_found" and JSON_ERROR.match(r.body),
            "JSON 404 for a JSON client: %r" % r)
    r = get(d, pub, "/index.html", port=3000)
    t.check(r.status == 200 and r.body == INDEX, "the template's port is always open: %r" % r)
    r = get(d, pub, "/", port=8050)
    t.check(r.status == 502, "a listed port nothing listens on: 502, got %r" % r)
    no_leak(t, r, "502")
    # A private sandbox: 401 first (the port is not even told).
    r = get(d, ctx["a"], "/", port=8101)
    t.check(r.status == 401, "an unlisted port of a private sandbox without a token: 401, got %r" % r)


def test_no_wake(t, d, ctx):
    a, tok = ctx["a"], ctx["token"]
    r = d.request("POST", "/v1/sandboxes/%s/stop" % a, timeout=60)
    if not t.check(r.status == 200 and r.json()["state"] == "stopped", "stop: %r" % r):
        return
    for headers in ({}, {"Cookie": "sandboxd_token=" + mint(d, a, int(time.time()) - 1)},
                    {"Accept": "text/html"}):
        r = get(d, a, "/index.html", headers=headers, timeout=10)
        t.check(r.status == 401, "a stopped private sandbox without a valid token: 401, got %r" % r)
    time.sleep(1.5)
    s = d.request("GET", "/v1/sandboxes/%s" % a).json()
    t.check(s["state"] == "stopped", "it was not woken: %r" % s["state"])
    wakes = d.logs().count("waking sandbox for a request\" id=%s" % a)
    t.check(wakes == 0, "no wake was logged (%d)" % wakes)
    # An unlisted port of a stopped public sandbox: 404, and no wake.
    pub = ctx["pub"]
    if pub and d.request("POST", "/v1/sandboxes/%s/stop" % pub, timeout=60).status == 200:
        r = get(d, pub, "/", port=8101, timeout=10)
        t.check(r.status == 404, "an unlisted port of a stopped sandbox: 404, got %r" % r)
        time.sleep(1)
        s = d.request("GET", "/v1/sandboxes/%s" % pub).json()
        t.check(s["state"] == "stopped", "an unlisted port woke nothing: %r" % s["state"])
    # With the cookie it wakes, and the request is held until it answers.
    r = get(d, a, "/index.html", headers={"Cookie": "sandboxd_token=%s" % tok}, timeout=60)
    t.check(r.status == 200 and r.body == INDEX, "the cookie wakes it and is answered: %r" % r)


def test_pages(t, d, ctx):
    unknown = "01jd3k5x8q2w7e9r4t6y1v3h5q"
    r = get(d, unknown, "/", headers={"Accept": "text/html"})
    t.check(r.status == 404 and b"<style>" in r.body and b"No sandbox here" in r.body, "404 page: %r" % r)
    no_leak(t, r, "404")
    r = get(d, unknown, "/", headers={"Accept": "application/json"})
    t.check(r.status == 404 and r.error_code() == "not_found" and JSON_ERROR.match(r.body),
            "404 JSON: %r" % r)
    r = d.request("GET", "/", key=None, host="nope.preview.localhost:%d" % d.port,
                  headers={"Accept": "application/json, text/plain"})
    t.check(r.status == 404 and r.error_code() == "not_found", "a bad preview host: JSON 404: %r" % r)
    # A browser's Accept names html: the page, even if json is listed too.
    r = get(d, unknown, "/", headers={"Accept": "text/html,application/json;q=0.9"})
    t.check(r.status == 404 and r.headers.get("content-type", "").startswith("text/html"), "html wins: %r" % r)


def test_restart_keeps_tokens(t, d, ctx):
    """The secret survives a restart; a secret file others can read stops it."""
    tok, a = ctx["token"], ctx["a"]
    d.stop()
    d.start()
    r = get(d, a, "/index.html", headers={"Cookie": "sandboxd_token=%s" % tok}, timeout=60)
    t.check(r.status == 200, "a token from before the restart still works: %r" % r)
    d.stop()
    path = os.path.join(d.data_dir, "preview-secret")
    os.chmod(path, 0o644)
    proc = subprocess.run([SANDBOXD, "serve", "-c", d.config], capture_output=True, text=True, timeout=30)
    t.check(proc.returncode != 0 and "preview_secret_file" in proc.stderr and "chmod 600" in proc.stderr,
            "a group/other-readable secret is refused: %d %r" % (proc.returncode, proc.stderr[-400:]))
    os.chmod(path, 0o600)
    with open(path, "ab") as f:
        f.write(b"x")
    proc = subprocess.run([SANDBOXD, "serve", "-c", d.config], capture_output=True, text=True, timeout=30)
    t.check(proc.returncode != 0 and "not 32" in proc.stderr, "a secret of the wrong size is refused: %r"
            % proc.stderr[-400:])
    with open(path, "r+b") as f:
        f.truncate(32)
    d.start()


def test_check_config(t):
    d = Daemon(templates={"default": dict(BASE, ports="9000-8000, 3000")})
    try:
        r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
        t.check(r.returncode == 2 and re.search(r"sandboxd\.conf:\d+: ports: range 9000-8000 is backwards",
                                                r.stdout + r.stderr),
                "a bad ports list names file, line and key: %r" % (r.stdout + r.stderr))
    finally:
        d.cleanup()


def main():
    if not ensure_docker():
        print("docker is not available: skipping the private preview tests")
        return 77
    ensure_test_image()
    t = Runner()
    t.run(test_check_config)
    d = daemon("wake_timeout = 30s")
    ctx = {}
    before = t.failed
    try:
        r = subprocess.run([SANDBOXD, "check-config", "-c", d.config], capture_output=True, text=True)
        if t.check(r.returncode == 0, "the config is accepted: %s" % r.stderr.strip()):
            d.start()
            t.run(test_secret_file, d, ctx)
            t.run(test_create_private, d, ctx)
            if ctx.get("a"):
                for fn in (test_token_api, test_no_token, test_token_cookie, test_set_cookie_domain,
                           test_refusals, test_ports, test_no_wake, test_pages, test_restart_keeps_tokens):
                    if d.proc is None or d.proc.poll() is not None:
                        t.current = fn.__name__
                        t.check(False, "the daemon is not running; %s not run" % fn.__name__)
                        continue
                    t.run(fn, d, ctx)
    finally:
        if t.failed != before:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-3000:])
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
