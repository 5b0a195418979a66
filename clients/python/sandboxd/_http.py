"""The transport: one HTTP/1.1 connection per call (http.client), JSON
bodies, typed errors, a deadline on every call, and Server-Sent Events
read a piece at a time as they arrive (never the whole body)."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import __version__
from .errors import NetworkError, SandboxdError, Timeout, error_for

Body = Union[bytes, str, Mapping[str, Any], None]
Query = Optional[Mapping[str, Optional[str]]]


@dataclass
class Event:
    """One Server-Sent Event: its id (an int for task events, None when the
    stream gives none), its name (output, agent, status, exit, log, ...)
    and its data, parsed as JSON (the raw string if it is not JSON)."""

    event: str
    data: Any
    id: Optional[int] = None

    @property
    def text(self) -> str:
        """An output or log event's text ("" for others)."""
        if isinstance(self.data, dict):
            t = self.data.get("text")
            return t if isinstance(t, str) else ""
        return ""

    @property
    def stream(self) -> Optional[str]:
        """An output event's stream: "stdout" or "stderr"."""
        if isinstance(self.data, dict):
            s = self.data.get("stream")
            return s if isinstance(s, str) else None
        return None


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


def quote_path(path: str) -> str:
    """A workspace path as URL path segments, each %-encoded on its own
    (spaces, '#', '?', '%' and non-ASCII as UTF-8); '/' separates them.
    Leading slashes are dropped: paths are relative to /workspace."""
    return "/".join(urllib.parse.quote(seg, safe="") for seg in path.lstrip("/").split("/"))


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, (socket.timeout, TimeoutError))


class Transport:
    """Everything that touches the network. base_url may carry a path
    prefix (a sandboxd behind a reverse proxy at /sandboxd, say)."""

    def __init__(self, base_url: str, api_key: Optional[str], timeout: float,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("url must be http:// or https:// with a host: %r" % base_url)
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.api_key = api_key
        self.timeout = float(timeout)
        self.ssl_context = ssl_context

    # --- connections -------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            ctx = self.ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _url(self, path: str, query: Query) -> str:
        url = self.prefix + path
        if query:
            q = [(k, v) for k, v in query.items() if v is not None]
            if q:
                url += "?" + urllib.parse.urlencode(q)
        return url

    def _send(self, method: str, path: str, query: Query, body: Body,
              headers: Optional[Mapping[str, str]], timeout: float, auth: bool
              ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect, send, and read the answer's head, all within timeout."""
        h = {"User-Agent": "sandboxd-python/" + __version__, "Accept-Encoding": "identity"}
        if auth and self.api_key:
            h["Authorization"] = "Bearer " + self.api_key
        data: Optional[bytes]
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(dict(body)).encode("utf-8")
            h["Content-Type"] = "application/json"
        if data is None and method in ("POST", "PUT"):
            data = b""
        if headers:
            h.update(headers)
        conn = self._connection(timeout)
        url = self._url(path, query)
        try:
            conn.request(method, url, body=data, headers=h)
            resp = conn.getresponse()
        except BaseException as e:
            conn.close()
            raise self._wrap(e, method, url, timeout) from e
        return conn, resp

    def _wrap(self, e: BaseException, method: str, url: str, timeout: float) -> BaseException:
        if isinstance(e, SandboxdError):
            return e
        if _is_timeout(e):
            return Timeout("%s %s: no answer within %.3gs" % (method, url, timeout))
        if isinstance(e, (OSError, http.client.HTTPException)):
            return NetworkError("%s %s: %s" % (method, url, e or type(e).__name__))
        return e

    @staticmethod
    def _read_all(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                  deadline: float) -> bytes:
        parts: List[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline")
            if conn.sock is not None:
                conn.sock.settimeout(left)
            chunk = resp.read1(65536)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    @staticmethod
    def _raise_for(status: int, body: bytes) -> None:
        code = message = None
        try:
            err = json.loads(body.decode("utf-8"))["error"]
            code, message = err.get("code"), err.get("message")
        except Exception:
            text = body.decode("utf-8", "replace").strip()
            message = text[:300] if text else None
        raise error_for(status, code, message)

    # --- calls -------------------------------------------------------------

    def request(self, method: str, path: str, query: Query = None, body: Body = None,
                headers: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                auth: bool = True, ok: Sequence[int] = (200,)) -> Response:
        """One whole request and answer within timeout (seconds, overall).
        A status outside ok raises its typed error."""
        t = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + t
        conn, resp = self._send(method, path, query, body, headers, t, auth)
        try:
            data = self._read_all(conn, resp, deadline)
        except BaseException as e:
            raise self._wrap(e, method, self._url(path, query), t) from e
        finally:
            conn.close()
        if resp.status not in ok:
            self._raise_for(resp.status, data)
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def stream(self, method: str, path: str, query: Query = None, body: Body = None,
               headers: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
               ok: Sequence[int] = (200,)) -> "Stream":
        """Open a streamed answer. timeout bounds the head and then each
        wait for more bytes (an idle timeout: streams send a heartbeat
        every 15 s). A status outside ok raises its typed error."""
        t = self.timeout if timeout is None else float(timeout)
        conn, resp = self._send(method, path, query, body, headers, t, True)
        if resp.status not in ok:
            try:
                data = self._read_all(conn, resp, time.monotonic() + t)
            except BaseException as e:
                raise self._wrap(e, method, path, t) from e
            finally:
                conn.close()
            self._raise_for(resp.status, data)
        return Stream(conn, resp, t, "%s %s" % (method, path))


class Stream:
    """An open streamed answer: raw pieces, lines, or Server-Sent Events.
    Reads raise Timeout after `idle` seconds without a byte and
    NetworkError when the connection breaks; close() ends it early."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 idle: float, what: str) -> None:
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.idle = idle
        self.what = what
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def pieces(self) -> Iterator[bytes]:
        """Bytes as they arrive; ends when the answer does."""
        try:
            while not self.closed:
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(self.idle)
                try:
                    chunk = self.resp.read1(65536)
                except BaseException as e:
                    if self.closed:
                        return
                    if _is_timeout(e):
                        raise Timeout("%s: nothing for %.3gs" % (self.what, self.idle)) from e
                    if isinstance(e, (OSError, http.client.HTTPException, ValueError)):
                        raise NetworkError("%s: the stream broke: %s" % (self.what, e or type(e).__name__)) from e
                    raise
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def lines(self) -> Iterator[str]:
        """Text lines without their line ends, as they arrive. A last line
        without a newline is dropped (a stream cut there is incomplete)."""
        buf = b""
        for chunk in self.pieces():
            buf += chunk
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                line, buf = buf[:i], buf[i + 1:]
                if line.endswith(b"\r"):
                    line = line[:-1]
                yield line.decode("utf-8", "replace")

    def events(self) -> Iterator[Event]:
        """Server-Sent Events (the WHATWG rules: `field: value` lines, data
        lines joined with newlines, comments skipped, a blank line ends an
        event). An event cut off by the end of the stream is not given."""
        name = ""
        data: List[str] = []
        ev_id: Optional[str] = None
        for line in self.lines():
            if line == "":
                if data or name:
                    text = "\n".join(data)
                    try:
                        value: Any = json.loads(text)
                    except ValueError:
                        value = text
                    yield Event(name or "message", value,
                                int(ev_id) if ev_id is not None and ev_id.isdigit() else None)
                name, data, ev_id = "", [], None
                continue
            if line.startswith(":"):
                continue
            key, _, val = line.partition(":")
            if val.startswith(" "):
                val = val[1:]
            if key == "event":
                name = val
            elif key == "data":
                data.append(val)
            elif key == "id":
                ev_id = val
