#!/usr/bin/env python3
"""docs/openapi.yaml against the server, both ways.

1. The route table in the source (every `{ "METHOD", "/path", AUTH_... }`
   entry in control/*.c) and the file's operations are the same set, with
   the same auth level: a route added to the server and not to the file
   fails here, and so does one documented but gone.
2. A live daemon (real dockerd, a real sandbox) is walked: every operation
   in the file is requested, its answers must have a documented status, and
   a JSON answer must match the documented schema (a small JSON Schema
   validator below: the subset the file uses). Every operation must be seen
   to succeed (a 2xx, 101 for the terminal), and its documented refusals
   (no key 401, malformed id 400, unknown id 404) are tried too.
3. The daemon is probed for routes the file does not have: every method the
   file does not list on a documented path answers 405, and paths next to
   the documented ones answer 404.
4. Over HTTP/2 (h2c, curl) the same: safe operations succeed, refusals
   are the documented ones, an undocumented method is 405.

Prints "N passed, N failed"; exits 77 without Docker or python3-yaml.
"""
import asyncio
import glob
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, Runner, TEST_IMAGE, TOP_SRC, ensure_docker, ensure_test_image, wait_for  # noqa: E402

try:
    import yaml
except ImportError:
    # Debian's python3-yaml, when python3 is another interpreter.
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import yaml
    except ImportError:
        yaml = None
try:
    import websockets
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import websockets
    except ImportError:
        websockets = None

SPEC_PATH = os.path.join(TOP_SRC, "docs", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
UNKNOWN_ID = "0" * 26
BAD_ID = "NOT-AN-ID"

TEMPLATES = {
    # A line a second, so that a logs follower gets its stream's head (the
    # head goes out with the first line).
    "default": {"image": TEST_IMAGE, "port": "3000",
                "dev_command": "while :; do echo tick; sleep 1; done & exec httpd -f -p 3000 -h /workspace",
                "memory": "64m", "cpus": "0.5", "pids_limit": "64"},
}


# --- the file ---------------------------------------------------------------

def load_spec():
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


def resolve(spec, o):
    """Follow $ref (local ones) until a non-reference."""
    seen = 0
    while isinstance(o, dict) and "$ref" in o:
        ref = o["$ref"]
        if not ref.startswith("#/"):
            raise ValueError("non-local $ref %r" % ref)
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
        # Siblings of $ref (a description) add nothing to validation.
        o = node
        seen += 1
        if seen > 50:
            raise ValueError("$ref loop at %r" % ref)
    return o


def operations(spec):
    """{(METHOD, path template): operation object}"""
    ops = {}
    for path, item in spec["paths"].items():
        for m in METHODS:
            if m in item:
                ops[(m.upper(), path)] = item[m]
    return ops


def op_auth(spec, op):
    """none, key or admin, as the file says."""
    sec = op.get("security", spec.get("security", []))
    if sec == []:
        return "none"
    return "admin" if op.get("x-sandboxd-auth") == "admin" else "key"


def template_regex(path):
    """The path template as a regex over concrete paths."""
    out = ""
    for piece in re.split(r"(\{[a-z]+\})", path):
        if piece == "{path}":
            out += ".*"
        elif piece.startswith("{"):
            out += "[^/]+"
        else:
            out += re.escape(piece)
    return re.compile("^" + out + "/?$")


# --- a small JSON Schema validator (the keywords the file uses) -------------

TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
KNOWN = {"$ref", "type", "required", "properties", "additionalProperties", "items", "enum", "const",
         "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "maxProperties",
         "pattern", "propertyNames", "oneOf", "anyOf", "format", "description", "default",
         "contentMediaType"}


def validate(spec, schema, v, where="$"):
    """A list of problems (empty: v matches)."""
    schema = resolve(spec, schema)
    errs = []
    unknown = set(schema) - KNOWN
    if unknown:
        return ["%s: the validator does not know %s" % (where, sorted(unknown))]
    if "type" in schema:
        ts = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(TYPES[t](v) for t in ts):
            return ["%s: %r is not of type %s" % (where, v, ts)]
    if "const" in schema and v != schema["const"]:
        errs.append("%s: %r is not %r" % (where, v, schema["const"]))
    if "enum" in schema and v not in schema["enum"]:
        errs.append("%s: %r not in %r" % (where, v, schema["enum"]))
    if TYPES["number"](v):
        if "minimum" in schema and v < schema["minimum"]:
            errs.append("%s: %r < %r" % (where, v, schema["minimum"]))
        if "maximum" in schema and v > schema["maximum"]:
            errs.append("%s: %r > %r" % (where, v, schema["maximum"]))
    if isinstance(v, str):
        if "minLength" in schema and len(v) < schema["minLength"]:
            errs.append("%s: shorter than %d" % (where, schema["minLength"]))
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            errs.append("%s: longer than %d" % (where, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], v):
            errs.append("%s: %r does not match %r" % (where, v, schema["pattern"]))
    if isinstance(v, list):
        if "minItems" in schema and len(v) < schema["minItems"]:
            errs.append("%s: fewer than %d items" % (where, schema["minItems"]))
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            errs.append("%s: more than %d items" % (where, schema["maxItems"]))
        if "items" in schema:
            for i, x in enumerate(v):
                errs += validate(spec, schema["items"], x, "%s[%d]" % (where, i))
    if isinstance(v, dict):
        for k in schema.get("required", []):
            if k not in v:
                errs.append("%s: required %r missing" % (where, k))
        if "maxProperties" in schema and len(v) > schema["maxProperties"]:
            errs.append("%s: more than %d properties" % (where, schema["maxProperties"]))
        props = schema.get("properties", {})
        for k, x in v.items():
            if "propertyNames" in schema:
                errs += validate(spec, schema["propertyNames"], k, "%s.<%s>" % (where, k))
            if k in props:
                errs += validate(spec, props[k], x, "%s.%s" % (where, k))
            elif schema.get("additionalProperties") is False:
                errs.append("%s: undocumented property %r" % (where, k))
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += validate(spec, schema["additionalProperties"], x, "%s.%s" % (where, k))
    for kw in ("oneOf", "anyOf"):
        if kw in schema:
            ok = [s for s in schema[kw] if not validate(spec, s, v, where)]
            if (kw == "oneOf" and len(ok) != 1) or (kw == "anyOf" and not ok):
                errs.append("%s: %r matches %d of the %s schemas" % (where, v, len(ok), kw))
    return errs


# --- talking to the daemon --------------------------------------------------

class Raw:
    """An answer read off a raw socket (for what http.client cannot send)."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def raw_request(d, method, path, headers, version="1.1", body=b""):
    s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
    try:
        h = "%s %s HTTP/%s\r\nHost: 127.0.0.1:%d\r\n" % (method, path, version, d.port)
        if "Connection" not in headers:
            h += "Connection: close\r\n"
        for k, v in headers.items():
            h += "%s: %s\r\n" % (k, v)
        if body:
            h += "Content-Length: %d\r\n" % len(body)
        s.sendall(h.encode() + b"\r\n" + body)
        data = b""
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            data += c
            # A 101 is all there is to read: the connection is a
            # WebSocket from here.
            if data.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in data:
                break
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return Raw(status, hdrs, rest)
    finally:
        s.close()


def stream_request(d, method, path, body=None, headers=None, key="acme", max_bytes=1 << 20, timeout=30):
    """A streamed answer: status, headers, and the body read until the end
    (or max_bytes, or timeout seconds in all: a follower never ends by
    itself)."""
    deadline = time.time() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    h = {"Host": "127.0.0.1:%d" % d.port}
    if key is not None:
        h["Authorization"] = "Bearer " + d.key(key)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        data = b""
        try:
            while len(data) < max_bytes and time.time() < deadline:
                c = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
                if not c:
                    break
                data += c
        except socket.timeout:
            pass
        return Raw(r.status, hdrs, data)
    finally:
        conn.close()


def sse_events(body):
    """[(event, data text, id)] of an event stream's body."""
    out = []
    for block in body.decode("utf-8", "replace").split("\n\n"):
        ev, data, eid = "message", [], None
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "event":
                ev = v
            elif k == "data":
                data.append(v)
            elif k == "id":
                eid = v
        if data:
            out.append((ev, "\n".join(data), eid))
    return out


class Walk:
    """Requests made against the file: each one names its operation."""

    def __init__(self, t, d, spec):
        self.t, self.d, self.spec = t, d, spec
        self.ops = operations(spec)
        self.by_id = {op["operationId"]: (m, p, op) for (m, p), op in self.ops.items()}
        self.seen = {}          # operationId -> set of statuses

    def check_answer(self, op_id, path, r):
        t = self.t
        method, template, op = self.by_id[op_id]
        self.seen.setdefault(op_id, set()).add(r.status)
        t.check(template_regex(template).match(path.split("?")[0]) is not None,
                "%s: %s is an instance of %s" % (op_id, path, template))
        responses = op["responses"]
        code = str(r.status)
        if not t.check(code in responses, "%s %s answered %d, not documented (%s): %r" %
                       (method, path, r.status, sorted(responses), r.body[:200])):
            return
        resp = resolve(self.spec, responses[code])
        content = resp.get("content", {})
        ctype = r.headers.get("content-type", "").split(";")[0].strip()
        if r.status in (101, 204, 304) or (not content and not r.body):
            return
        if not t.check(ctype in content, "%s %s %d: Content-Type %r not documented (%s)" %
                       (method, path, r.status, ctype, sorted(content))):
            return
        if ctype == "application/json":
            try:
                body = json.loads(r.body)
            except ValueError:
                t.check(False, "%s %s %d: the body is not JSON: %r" % (method, path, r.status, r.body[:200]))
                return
            errs = validate(self.spec, content[ctype]["schema"], body)
            t.check(not errs, "%s %s %d: the body does not match the schema: %s; %r" %
                    (method, path, r.status, errs[:5], r.body[:300]))
        elif ctype == "text/event-stream":
            events = content[ctype].get("x-sandboxd-events", {})
            for ev, data, _ in sse_events(r.body):
                if not t.check(ev in events, "%s %s: event %r not documented (%s)" %
                               (method, path, ev, sorted(events))):
                    continue
                try:
                    obj = json.loads(data)
                except ValueError:
                    t.check(False, "%s %s: event %s data is not JSON: %r" % (method, path, ev, data[:200]))
                    continue
                errs = validate(self.spec, events[ev], obj)
                t.check(not errs, "%s %s: event %s: %s" % (method, path, ev, errs[:5]))

    def call(self, op_id, path, body=None, key="acme", headers=None, raw_key=None, timeout=90):
        method = self.by_id[op_id][0]
        r = self.d.request(method, path, body=body, key=key, headers=headers, raw_key=raw_key,
                           timeout=timeout)
        self.check_answer(op_id, path, r)
        return r

    def stream(self, op_id, path, **kw):
        r = stream_request(self.d, self.by_id[op_id][0], path, **kw)
        self.check_answer(op_id, path, r)
        return r

    def raw(self, op_id, path, headers, **kw):
        r = raw_request(self.d, self.by_id[op_id][0], path, headers, **kw)
        self.check_answer(op_id, path, r)
        return r


# --- 1. the source's route table and the file -------------------------------

ROUTE_RE = re.compile(r'\{\s*"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS)",\s*"(/[^"]*)",\s*(AUTH_[A-Z]+)')


def source_routes():
    """{(METHOD, path template): auth} from every route table in control/."""
    routes = {}
    for fn in sorted(glob.glob(os.path.join(TOP_SRC, "control", "*.c"))):
        with open(fn) as f:
            text = f.read()
        for m in ROUTE_RE.finditer(text):
            path = m.group(2)
            if path.endswith("/*"):
                path = path[:-1] + "{path}"
            routes[(m.group(1), path)] = {"AUTH_NONE": "none", "AUTH_KEY": "key",
                                          "AUTH_ADMIN": "admin"}[m.group(3)]
    return routes


def test_source_matches_file(t, spec):
    routes = source_routes()
    # The table in control/api.c: if the grep finds too few, it is broken.
    with open(os.path.join(TOP_SRC, "control", "api.c")) as f:
        text = f.read()
    table = text[text.index("api_routes[] = {"):]
    table = table[:table.index("};")]
    t.check(len(routes) >= 20 and len(routes) == table.count('{ "'),
            "every entry of api_routes[] is read (%d read, %d entries)" % (len(routes), table.count('{ "')))
    ops = operations(spec)
    for key in sorted(set(routes) - set(ops)):
        t.check(False, "the server answers %s %s but docs/openapi.yaml does not list it" % key)
    for key in sorted(set(ops) - set(routes)):
        t.check(False, "docs/openapi.yaml lists %s %s but the server has no such route" % key)
    for key in sorted(set(routes) & set(ops)):
        t.check(op_auth(spec, ops[key]) == routes[key], "%s %s: auth %s in the file, %s in the server" %
                (key[0], key[1], op_auth(spec, ops[key]), routes[key]))
    t.check(len(set(routes) & set(ops)) == len(routes), "%d routes, all documented" % len(routes))


def test_error_codes(t, spec):
    """Every error code the source can answer with is in the file's enum."""
    codes = set()
    for fn in glob.glob(os.path.join(TOP_SRC, "*", "*.c")):
        with open(fn) as f:
            text = f.read()
        codes |= set(re.findall(r'reply_error\([^,;]+,\s*[^,;]+,\s*"([a-z_]+)"', text))
        if fn.endswith(os.path.join("edge", "page.c")):
            body = text[text.index("edge_error_code(int status)"):]
            codes |= set(re.findall(r'return "([a-z_]+)";', body[:body.index("\n}")]))
    enum = set(resolve(spec, {"$ref": "#/components/schemas/Error"})["properties"]["error"]
               ["properties"]["code"]["enum"])
    t.check(len(codes) >= 10, "the error codes are read from the source (%d)" % len(codes))
    for c in sorted(codes - enum):
        t.check(False, "the server answers error code %r, the file's Error schema does not list it" % c)
    for c in sorted(enum - codes):
        t.check(False, "the file lists error code %r, the server never answers it" % c)


def test_file_wellformed(t, spec):
    """Every $ref resolves, every operation has an id and answers, every
    non-2xx answer is the error body, every path parameter is declared."""
    t.check(spec.get("openapi", "").startswith("3.1"), "OpenAPI 3.1: %r" % spec.get("openapi"))
    # The OpenAPI 3.1 meta-schema too, where openapi-spec-validator is
    # installed (Debian 12 does not package it).
    try:
        from openapi_spec_validator import validate as spec_validate
    except ImportError:
        spec_validate = None
        print("  note  openapi-spec-validator is not installed: the file is not checked against "
              "the OpenAPI meta-schema")
    if spec_validate is not None:
        try:
            spec_validate(spec)
            t.check(True, "a valid OpenAPI document")
        except Exception as e:
            t.check(False, "not a valid OpenAPI document: %s" % str(e)[:500])
    ids = set()
    for (m, p), op in operations(spec).items():
        oid = op.get("operationId")
        t.check(oid and oid not in ids, "%s %s: a unique operationId (%r)" % (m, p, oid))
        ids.add(oid)
        t.check(op.get("x-sandboxd-auth") in ("none", "key", "admin"), "%s %s: x-sandboxd-auth" % (m, p))
        params = [resolve(spec, x) for x in spec["paths"][p].get("parameters", []) + op.get("parameters", [])]
        for name in re.findall(r"\{([a-z]+)\}", p):
            t.check(any(x["in"] == "path" and x["name"] == name for x in params),
                    "%s %s: path parameter %s is declared" % (m, p, name))
        for code, resp in op["responses"].items():
            resp = resolve(spec, resp)
            if int(code) >= 400:
                sch = resp.get("content", {}).get("application/json", {}).get("schema")
                t.check(sch is not None and resolve(spec, sch) is resolve(spec, {"$ref": "#/components/schemas/Error"}),
                        "%s %s %s: the error body" % (m, p, code))
        # Every schema in it is one this test's validator fully understands.
        t.check(not validate(spec, {"type": "object"}, {}), "validator sanity")

    def walk(o):
        if isinstance(o, dict):
            if "$ref" in o:
                try:
                    resolve(spec, o)
                except (KeyError, ValueError) as e:
                    t.check(False, "a $ref does not resolve: %r (%s)" % (o["$ref"], e))
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(spec)
    for name, sch in spec["components"]["schemas"].items():
        errs = [e for e in validate(spec, sch, None) if "does not know" in e]
        t.check(not errs, "schema %s uses only keywords the validator knows: %s" % (name, errs))


def test_validator(t, spec):
    """The validator refuses what it should (so a pass means something)."""
    err = {"$ref": "#/components/schemas/Error"}
    t.check(not validate(spec, err, {"error": {"code": "not_found", "message": "x"}}), "a good error body")
    t.check(validate(spec, err, {"error": {"code": "not_found"}}), "a missing field is caught")
    t.check(validate(spec, err, {"error": {"code": "nope", "message": "x"}}), "an undocumented code is caught")
    t.check(validate(spec, err, {"error": "x"}), "a wrong type is caught")
    sb = {"$ref": "#/components/schemas/Sandbox"}
    t.check(validate(spec, sb, {"id": "x"}), "a partial sandbox is caught")
    t.check(validate(spec, {"$ref": "#/components/schemas/SandboxCreate"}, {"bogus": 1}),
            "an unknown create field is caught")
    t.check(validate(spec, {"$ref": "#/components/schemas/Ulid"}, "01ABC"), "a bad ULID is caught")
    t.check(validate(spec, {"$ref": "#/components/schemas/Task"}, {"started_at": 5}), "oneOf is checked")


# --- 2. the walk ------------------------------------------------------------

def test_walk(t, d, spec, ctx):
    w = Walk(t, d, spec)
    ctx["walk"] = w

    w.call("getHealthz", "/healthz", key=None)
    r = w.call("getMetrics", "/metrics", key="root")
    t.check(r.status == 200 and b"sandboxd_sandboxes" in r.body, "metrics with an admin key: %r" % r)
    t.check(w.call("getMetrics", "/metrics", key="acme").status == 401, "metrics, a non-admin key: 401")

    r = w.call("createSandbox", "/v1/sandboxes", {"labels": {"suite": "openapi"}})
    if not t.check(r.status == 201, "create: 201 %r" % r):
        return
    sid = r.json()["id"]
    ctx["sid"] = sid
    t.check(w.call("createSandbox", "/v1/sandboxes", {"bogus": 1}).status == 400, "unknown field: 400")
    t.check(w.call("createSandbox", "/v1/sandboxes", {"memory_mb": "x"}).status == 400, "wrong type: 400")
    t.check(w.call("createSandbox", "/v1/sandboxes", {"port": 0}).status == 400, "out of range: 400")
    w.call("createSandbox", "/v1/sandboxes", b"{", headers={"Content-Type": "application/json"})
    w.call("createSandbox", "/v1/sandboxes", b"x" * (65 * 1024),
           headers={"Content-Type": "application/json"})

    r = w.call("listSandboxes", "/v1/sandboxes")
    t.check(r.status == 200 and any(s["id"] == sid for s in r.json()["sandboxes"]), "list has it")
    w.call("listSandboxes", "/v1/sandboxes?state=running&label=suite:openapi")
    t.check(w.call("listSandboxes", "/v1/sandboxes?state=bogus").status == 400, "bad state: 400")
    t.check(w.call("listSandboxes", "/v1/sandboxes?label=nocolon").status == 400, "bad label: 400")

    base = "/v1/sandboxes/" + sid
    t.check(w.call("getSandbox", base).status == 200, "get: 200")
    t.check(w.call("getSandbox", base, key="globex").status == 404, "another tenant's: 404")

    # Files.
    t.check(w.call("putFile", base + "/files/d/a.txt", b"hello\n").status == 201, "put new: 201")
    t.check(w.call("putFile", base + "/files/d/a.txt", b"hello again\n").status == 204, "put again: 204")
    t.check(w.call("putFile", base + "/files/..%2fx", b"x").status == 400, "a refused path: 400")
    t.check(w.call("putFile", base + "/files/d", b"x").status == 409, "a directory: 409")
    r = w.call("getFile", base + "/files/d/a.txt")
    t.check(r.status == 200 and r.body == b"hello again\n", "get a file: %r" % r)
    r = w.call("getFile", base + "/files/d")
    t.check(r.status == 200 and [e["name"] for e in r.json()["entries"]] == ["a.txt"], "list a dir: %r" % r)
    w.call("getFile", base + "/files/")
    t.check(w.call("getFile", base + "/files/nope").status == 404, "no file: 404")
    r = w.call("listWorkspace", base + "/files")
    t.check(r.status == 200 and any(e["name"] == "d" for e in r.json()["entries"]), "the workspace: %r" % r)
    t.check(w.call("deleteFile", base + "/files/d/a.txt").status == 204, "delete: 204")
    t.check(w.call("deleteFile", base + "/files/d/a.txt").status == 404, "delete again: 404")

    # Exec, plain and streamed.
    r = w.call("execCommand", base + "/exec", {"cmd": ["sh", "-c", "echo hi; echo oops >&2; exit 3"]})
    t.check(r.status == 200 and r.json().get("exit_code") == 3, "exec: %r" % r)
    r = w.stream("execCommand", base + "/exec", body={"cmd": ["sh", "-c", "echo one; echo two"]},
                 headers={"Accept": "text/event-stream"})
    evs = [e for e, _, _ in sse_events(r.body)]
    t.check(r.status == 200 and evs[-1:] == ["exit"] and "output" in evs, "exec stream: %r %r" % (r.status, evs))
    t.check(w.call("execCommand", base + "/exec", {"cmd": []}).status == 400, "exec, empty cmd: 400")
    t.check(w.call("execCommand", base + "/exec", {"cmd": ["true"], "timeout_s": 0}).status == 400,
            "exec, timeout out of range: 400")

    # Tasks.
    r = w.call("createTask", base + "/tasks", {"agent": "command", "cmd": ["sh", "-c", "echo task-out"]})
    if t.check(r.status == 202, "task: 202 %r" % r):
        tid = r.json()["id"]
        ctx["tid"] = tid
        tbase = base + "/tasks/" + tid
        t.check(w.call("listTasks", base + "/tasks").status == 200, "task list: 200")
        done = wait_for(lambda: d.request("GET", tbase).json().get("finished_at"), timeout=30, interval=0.2)
        t.check(done, "the task finished")
        t.check(w.call("getTask", tbase).status == 200, "task get: 200")
        r = w.stream("getTaskEvents", tbase + "/events")
        evs = sse_events(r.body)
        t.check(r.status == 200 and evs and evs[-1][0] == "exit", "task events: %r" % evs[-3:])
        last = evs[-1][2] if evs else "0"
        t.check(w.stream("getTaskEvents", tbase + "/events", headers={"Last-Event-ID": last}).status == 204,
                "events after the exit: 204")
        t.check(w.call("getTaskEvents", tbase + "/events?after=x").status == 400, "after=x: 400")
        t.check(w.call("cancelTask", tbase + "/cancel").status == 409, "cancel a finished task: 409")
        t.check(w.call("cancelTask", tbase + "/cancel", {"x": 1}).status == 400, "cancel with a field: 400")
        t.check(w.call("revertTask", tbase + "/revert").status == 409, "revert, no checkpoint: 409")
        t.check(w.call("getTask", base + "/tasks/" + UNKNOWN_ID).status == 404, "an unknown task: 404")
        t.check(w.call("getTask", base + "/tasks/" + BAD_ID).status == 400, "a malformed task id: 400")
    r = w.call("createTask", base + "/tasks", {"agent": "command", "cmd": ["sleep", "60"]})
    if t.check(r.status == 202, "a long task: 202 %r" % r):
        r = w.call("cancelTask", base + "/tasks/%s/cancel" % r.json()["id"])
        t.check(r.status == 200, "cancel a running task: 200 %r" % r)
    t.check(w.call("createTask", base + "/tasks", {"agent": "command", "prompt": "x"}).status == 400,
            "a command with a prompt: 400")
    t.check(w.call("createTask", base + "/tasks", {"agent": "robot"}).status == 400, "a bad agent: 400")

    # The dev server.
    wait_for(lambda: (d.request("GET", base).json().get("dev_server") or {}).get("state") == "ready", timeout=20)
    r = w.call("getDevLogs", base + "/logs")
    t.check(r.status == 200, "logs: %r" % r)
    r = w.stream("getDevLogs", base + "/logs?follow=1", timeout=3)
    t.check(r.status == 200 and r.headers.get("content-type", "").startswith("text/event-stream"),
            "logs follow: %r %r" % (r.status, r.headers))
    t.check(w.call("getDevLogs", base + "/logs?follow=maybe").status == 400, "follow=maybe: 400")
    r = w.call("restartDevServer", base + "/restart-dev")
    t.check(r.status == 200, "restart-dev: %r" % r)
    t.check(w.call("restartDevServer", base + "/restart-dev", {"x": 1}).status == 400, "restart-dev, a field: 400")

    # The terminal: a real WebSocket, then the refusals.
    if websockets is None:
        print("  note  python3-websockets is not installed: the terminal is only opened, not used")
    else:
        async def go():
            ws = await asyncio.wait_for(websockets.connect(
                "ws://127.0.0.1:%d%s/terminal?cols=90&rows=20" % (d.port, base),
                extra_headers={"Authorization": "Bearer " + d.key()}, open_timeout=20), 25)
            await ws.send(b"echo o''k\n")
            out = b""
            deadline = time.time() + 15
            while b"ok" not in out and time.time() < deadline:
                try:
                    m = await asyncio.wait_for(ws.recv(), 1)
                except asyncio.TimeoutError:
                    continue
                out += m if isinstance(m, bytes) else m.encode()
            await ws.close()
            return out
        out = asyncio.run(go())
        t.check(b"ok" in out, "the terminal runs a shell: %r" % out[-200:])
        w.seen.setdefault("openTerminal", set()).add(101)
    ws_h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": "Bearer " + d.key()}
    r = w.raw("openTerminal", base + "/terminal?cols=90&rows=20", ws_h)
    t.check(r.status == 101, "a raw upgrade: 101 (%r)" % r.status)
    t.check(w.raw("openTerminal", base + "/terminal", {"Authorization": "Bearer " + d.key()}).status == 426,
            "no Upgrade: 426")
    t.check(w.raw("openTerminal", base + "/terminal?cols=5000", ws_h).status == 400, "cols=5000: 400")
    t.check(w.raw("openTerminal", base + "/terminal", ws_h, version="1.0").status == 505, "HTTP/1.0: 505")

    # Preview tokens.
    r = w.call("createPreviewToken", base + "/preview-token", {"ttl_s": 600})
    t.check(r.status == 200, "preview-token: %r" % r)
    w.call("createPreviewToken", base + "/preview-token")
    t.check(w.call("createPreviewToken", base + "/preview-token", {"ttl_s": 5}).status == 400, "ttl_s=5: 400")

    # Every limit in the request schemas, against the server's.
    test_request_limits(t, w, base, ctx.get("tid", UNKNOWN_ID))

    # Stop and start; what refuses a stopped sandbox.
    r = w.call("stopSandbox", base + "/stop", timeout=60)
    t.check(r.status == 200 and r.json()["state"] == "stopped", "stop: %r" % r)
    t.check(w.call("getDevLogs", base + "/logs").status == 409, "logs of a stopped sandbox: 409")
    t.check(w.call("restartDevServer", base + "/restart-dev").status == 409, "restart-dev, stopped: 409")
    t.check(w.raw("openTerminal", base + "/terminal", ws_h).status == 409, "terminal, stopped: 409")
    r = w.call("startSandbox", base + "/start", timeout=60)
    t.check(r.status == 200 and r.json()["state"] == "running", "start: %r" % r)

    # The refusals every operation documents: no key, malformed and unknown ids.
    for (method, template), op in sorted(w.ops.items()):
        oid = op["operationId"]
        concrete = template.replace("{id}", sid).replace("{tid}", UNKNOWN_ID).replace("{path}", "x.txt")
        body = b"x" if method == "PUT" else None
        if op_auth(spec, op) != "none":
            r = w.call(oid, concrete, body=body, key=None)
            t.check(r.status == 401 and r.headers.get("www-authenticate") == "Bearer",
                    "%s without a key: 401 with WWW-Authenticate (%r)" % (oid, r))
            r = w.call(oid, concrete, body=body, key=None, raw_key="not-a-key-" + "x" * 30)
            t.check(r.status == 401, "%s with a wrong key: 401 (%r)" % (oid, r))
        if "{id}" in template:
            r = w.call(oid, template.replace("{id}", BAD_ID).replace("{tid}", UNKNOWN_ID).replace("{path}", "x"),
                       body=body)
            t.check(r.status == 400, "%s, a malformed id: 400 (%r)" % (oid, r))
            r = w.call(oid, template.replace("{id}", UNKNOWN_ID).replace("{tid}", UNKNOWN_ID)
                       .replace("{path}", "x"), body=body)
            t.check(r.status == 404, "%s, an unknown id: 404 (%r)" % (oid, r))

    t.check(w.call("deleteSandbox", base, timeout=60).status == 204, "delete: 204")
    t.check(w.call("getSandbox", base).status == 404, "gone: 404")

    # Every operation was walked and seen to succeed.
    for (method, template), op in sorted(w.ops.items()):
        oid = op["operationId"]
        got = w.seen.get(oid, set())
        ok = {s for s in got if 200 <= s < 300 or s == 101}
        if oid == "revertTask":
            # A checkpoint needs an agent task on the base image:
            # test_tasks.py's test_agents_and_revert sees the 200.
            t.check(409 in got, "%s walked (%s)" % (oid, sorted(got)))
            continue
        t.check(ok, "%s %s was walked and succeeded (answers seen: %s)" % (method, template, sorted(got)))


# --- 2b. the request schemas' limits are the server's ----------------------

# A valid body for each operation that takes a JSON body with required
# fields or whose acceptance has side effects; the file's schema is varied
# from it. An operation whose body schema is not here (and not Empty) fails:
# a new body must be added here.
BODY_BASE = {
    "createSandbox": {},
    "execCommand": {"cmd": ["true"]},
    "createTask": {"agent": "command", "cmd": ["true"]},
    "createPreviewToken": {},
}
# Where a valid boundary value is also sent (and must not be refused):
# not createSandbox, whose acceptance makes sandboxes and meets the key's
# ceilings first.
ACCEPT_BOUNDS = {"execCommand", "createTask", "createPreviewToken"}


def wrong_values(spec, sch):
    """(what, value) pairs the schema refuses."""
    sch = resolve(spec, sch)
    out = []
    t = sch.get("type")
    if t == "integer":
        out += [("a string", "1"), ("a fraction", 1.5)]
    elif t == "number":
        out.append(("a string", "1"))
    elif t == "string":
        out.append(("a number", 1))
    elif t == "array":
        out.append(("an object", {}))
    elif t == "object":
        out.append(("an array", []))
    if "minimum" in sch:
        out.append(("below the minimum", sch["minimum"] - (1 if t == "integer" else sch["minimum"] / 2 or 1)))
    if "maximum" in sch:
        out.append(("above the maximum", sch["maximum"] + 1))
    if "enum" in sch:
        out.append(("not in the enum", "no-such-value"))
    if "minItems" in sch:
        out.append(("too few items", []))
    if "maxItems" in sch:
        out.append(("too many items", ["x"] * (sch["maxItems"] + 1)))
    if t == "array" and "items" in sch and resolve(spec, sch["items"]).get("type") == "string":
        out.append(("an item of the wrong type", [1]))
    if "maxLength" in sch and sch["maxLength"] < 1 << 20:
        out.append(("too long", "x" * (sch["maxLength"] + 1)))
    if sch.get("pattern") == "^/":
        out.append(("not matching the pattern", "relative"))
    if t == "object":
        if "maxProperties" in sch:
            out.append(("too many entries", {"K%d" % i: "v" for i in range(sch["maxProperties"] + 1)}))
        names = resolve(spec, sch.get("propertyNames", {}))
        if "pattern" in names:
            out.append(("a key not matching the pattern", {"bad key!": "v"}))
        vals = sch.get("additionalProperties")
        if isinstance(vals, dict):
            vals = resolve(spec, vals)
            out.append(("a value of the wrong type", {"K": 1}))
            if "maxLength" in vals:
                out.append(("a value too long", {"K": "x" * (vals["maxLength"] + 1)}))
    return out


def bound_values(spec, sch):
    """(what, value) pairs at the edges of what the schema takes."""
    sch = resolve(spec, sch)
    out = []
    for k in ("minimum", "maximum"):
        if k in sch and sch.get("type") == "integer":
            out.append((k, sch[k]))
    return out


def test_request_limits(t, w, base_path, tid):
    spec = w.spec
    for (method, template), op in sorted(w.ops.items()):
        oid = op["operationId"]
        rb = op.get("requestBody", {}).get("content", {}).get("application/json")
        if rb is None:
            continue
        sch = resolve(spec, rb["schema"])
        path = template.replace("{id}", base_path.rsplit("/", 1)[-1]).replace("{tid}", tid)
        if sch is resolve(spec, {"$ref": "#/components/schemas/Empty"}):
            r = w.call(oid, path, {"any": 1})
            t.check(r.status == 400, "%s: a field where none is taken: 400 (%r)" % (oid, r))
            continue
        if not t.check(oid in BODY_BASE, "%s: a base body in BODY_BASE for its schema" % oid):
            continue
        base = BODY_BASE[oid]
        t.check(not validate(spec, sch, base), "%s: the base body is valid by the file" % oid)
        if sch.get("additionalProperties") is False:
            r = w.call(oid, path, dict(base, zz_unknown=1))
            t.check(r.status == 400, "%s: an unknown field: 400 (%r)" % (oid, r))
        for k in sch.get("required", []):
            body = {x: y for x, y in base.items() if x != k}
            r = w.call(oid, path, body)
            t.check(r.status == 400, "%s: without required %s: 400 (%r)" % (oid, k, r))
        for name, prop in sch.get("properties", {}).items():
            for what, v in wrong_values(spec, prop):
                body = dict(base)
                body[name] = v
                if not validate(spec, sch, body):
                    continue        # (not wrong after all, e.g. a nested default)
                r = w.call(oid, path, body)
                t.check(r.status == 400 and r.json()["error"]["code"] == "bad_request",
                        "%s: %s %s is refused with 400, as the file says (%r)" % (oid, name, what, r))
            if oid not in ACCEPT_BOUNDS:
                continue
            for what, v in bound_values(spec, prop):
                body = dict(base)
                body[name] = v
                r = w.call(oid, path, body)
                t.check(r.status != 400 and r.status < 500, "%s: %s at its %s (%r) is taken, as the file says (%r)" %
                        (oid, name, what, v, r))


# --- 3. what the file does not list -----------------------------------------

def test_undocumented(t, d, spec, ctx):
    """Methods the file does not list answer 405; neighbouring paths 404."""
    sid = ctx.get("sid2")
    ops = operations(spec)
    paths = sorted({p for _, p in ops})
    for p in paths:
        concrete = p.replace("{id}", sid).replace("{tid}", UNKNOWN_ID).replace("{path}", "x.txt")
        documented = {m for m, q in ops if q == p}
        for m in METHODS:
            if m.upper() in documented:
                continue
            r = raw_request(d, m.upper(), concrete, {"Authorization": "Bearer " + d.key("root")})
            t.check(r.status == 405, "%s %s (undocumented) answers 405, not %d: %r" %
                    (m.upper(), concrete, r.status, r.body[:200]))
            if m != "head" and r.status == 405:
                t.check(r.json()["error"]["code"] == "method_not_allowed", "405 has its code")
    odd = ["/", "/v1", "/v1/", "/v2/sandboxes", "/v1/sandbox", "/v1/keys", "/v1/status", "/status",
           "/v1/tasks", "/v1/metrics", "/v1/healthz", "/healthz/x", "/metricsx", "/api/v1/sandboxes",
           "/v1/sandboxes/%s/nope" % sid, "/v1/sandboxes/%s/tasks/%s/nope" % (sid, UNKNOWN_ID),
           "/v1/sandboxes/%s/preview-tokens" % sid, "/v1/sandboxes/%s/exec/stream" % sid,
           "/v1/sandboxes/%s/terminal-ticket" % sid, "/v1/sandboxes/%s/file" % sid]
    # One more segment after each documented path, unless that is an
    # instance of another documented path (/v1/sandboxes/x is {id}).
    regexes = [template_regex(p) for p in paths]
    for p in paths:
        q = p.replace("{id}", sid).replace("{tid}", UNKNOWN_ID) + "/x"
        if not any(rx.match(q) for rx in regexes):
            odd.append(q)
    for p in odd:
        for m in ("GET", "POST", "PUT", "DELETE"):
            r = raw_request(d, m, p, {"Authorization": "Bearer " + d.key("root")})
            t.check(r.status == 404, "%s %s (undocumented) answers 404, not %d: %r" % (m, p, r.status, r.body[:200]))


# --- 4. the same over HTTP/2 -----------------------------------------------

def h2_request(d, method, path, body=None, key="acme"):
    """One request by curl over h2c (prior knowledge): a Raw answer."""
    fd, out = tempfile.mkstemp(prefix="sbx-h2-")
    os.close(fd)
    args = ["curl", "-s", "--http2-prior-knowledge", "-X", method, "-D", "-", "-o", out, "--max-time", "60"]
    if key is not None:
        args += ["-H", "Authorization: Bearer " + d.key(key)]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    args.append("http://127.0.0.1:%d%s" % (d.port, path))
    try:
        head = subprocess.run(args, capture_output=True, timeout=70).stdout.decode("latin-1")
        with open(out, "rb") as f:
            data = f.read()
    finally:
        os.unlink(out)
    lines = [x for x in head.split("\r\n") if x]
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/2") else 0
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return Raw(status, hdrs, data)


def test_h2(t, d, spec, ctx):
    """Over HTTP/2 the file holds as well: the safe operations succeed, every
    operation's refusals are the documented ones, undocumented methods 405."""
    if subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.find("HTTP2") < 0:
        print("  note  this curl has no HTTP/2: the h2 pass is skipped")
        return
    w = Walk(t, d, spec)
    sid = ctx["sid2"]
    base = "/v1/sandboxes/" + sid

    def call(oid, path, body=None, key="acme"):
        r = h2_request(d, w.by_id[oid][0], path, body, key)
        t.check(r.status != 0, "%s over h2: an answer" % oid)
        w.check_answer(oid, path, r)
        return r

    for oid, path, body, key, want in [
            ("getHealthz", "/healthz", None, None, 200),
            ("getMetrics", "/metrics", None, "root", 200),
            ("listSandboxes", "/v1/sandboxes", None, "acme", 200),
            ("getSandbox", base, None, "acme", 200),
            ("listWorkspace", base + "/files", None, "acme", 200),
            ("listTasks", base + "/tasks", None, "acme", 200),
            ("execCommand", base + "/exec", {"cmd": ["echo", "h2"]}, "acme", 200),
            ("createPreviewToken", base + "/preview-token", {}, "acme", 200),
            ("createSandbox", "/v1/sandboxes", {"bogus": 1}, "acme", 400)]:
        r = call(oid, path, body, key)
        t.check(r.status == want, "%s over h2: %d (%r)" % (oid, want, r.status))
    for (method, template), op in sorted(w.ops.items()):
        oid = op["operationId"]
        if op_auth(spec, op) != "none":
            r = call(oid, template.replace("{id}", sid).replace("{tid}", UNKNOWN_ID).replace("{path}", "x"),
                     key=None)
            t.check(r.status == 401, "%s over h2 without a key: 401 (%r)" % (oid, r.status))
        if "{id}" in template:
            r = call(oid, template.replace("{id}", UNKNOWN_ID).replace("{tid}", UNKNOWN_ID).replace("{path}", "x"))
            t.check(r.status == 404, "%s over h2, an unknown id: 404 (%r)" % (oid, r.status))
    for p in sorted({p for _, p in w.ops}):
        documented = {m for m, q in w.ops if q == p}
        m = next(x for x in ("PATCH", "PUT", "DELETE", "POST", "GET") if x not in documented)
        r = h2_request(d, m, p.replace("{id}", sid).replace("{tid}", UNKNOWN_ID).replace("{path}", "x"), key="root")
        t.check(r.status == 405, "%s %s over h2: 405 (%r)" % (m, p, r.status))


# --- main -------------------------------------------------------------------

def main():
    if yaml is None:
        print("SKIP: python3-yaml is not installed (scripts/install-deps.sh)")
        return 77
    t = Runner()
    spec = load_spec()
    t.run(test_file_wellformed, spec)
    t.run(test_validator, spec)
    t.run(test_source_matches_file, spec)
    t.run(test_error_codes, spec)
    if not ensure_docker():
        print("docker is not available: skipping the live walk")
        t.finish()
        return 77 if t.failed == 0 else 1
    ensure_test_image()
    d = Daemon(templates=dict(TEMPLATES))
    ctx = {}
    before = t.failed
    try:
        d.start()
        t.run(test_walk, d, spec, ctx)
        r = d.request("POST", "/v1/sandboxes", {})
        if t.check(r.status == 201, "a sandbox for the probes: %r" % r):
            ctx["sid2"] = r.json()["id"]
            t.run(test_undocumented, d, spec, ctx)
            t.run(test_h2, d, spec, ctx)
    finally:
        if t.failed != before:
            print("---- daemon log (tail) ----\n%s" % d.logs()[-4000:])
        d.cleanup()
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
