"""The SDK's surface: Sandboxd, its sandboxes, their files, exec, tasks,
previews and the dev server. Each method is one API call (task events and
Task.wait may make several); docs/openapi.yaml lists them all."""
from __future__ import annotations

import os
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Generator, List, Literal, Mapping, Optional, Sequence, Union, overload

from ._http import Event, Transport, quote_path
from .errors import BadGateway, NetworkError, SandboxdError, Timeout, Unavailable
from .terminal import Terminal

Cmd = Union[str, Sequence[str]]

# Task states after which nothing more happens.
FINISHED = ("succeeded", "failed", "cancelled")


def _argv(cmd: Cmd) -> List[str]:
    """A command as an argv: a string runs under `sh -c`."""
    if isinstance(cmd, str):
        return ["sh", "-c", cmd]
    argv = list(cmd)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("cmd must be a string or a non-empty list of strings")
    return argv


def _id(x: Union[str, "Sandbox"]) -> str:
    return x.id if isinstance(x, Sandbox) else str(x)


def _sid(sandbox_id: str) -> str:
    return urllib.parse.quote(sandbox_id, safe="")


@dataclass
class ExecResult:
    """What a buffered exec gives back."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass
class FileEntry:
    """One entry of a directory listing."""

    name: str
    type: str  # file | dir | symlink | other
    size: int
    mtime: str


@dataclass
class PreviewToken:
    token: str
    url: str
    expires_at: str


class Sandboxd:
    """A client of one sandboxd.

        client = Sandboxd("http://localhost:8080", "the API key")

    url and api_key default to $SANDBOXD_URL and $SANDBOXD_API_KEY.
    timeout (seconds) bounds every call: a whole answer for plain calls,
    the head and then each silence for streams (they carry a heartbeat
    every 15 s, so keep it above that). Every method takes its own
    timeout= too. Errors are SandboxdError subclasses (see errors.py).
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = 60.0, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        url = url or os.environ.get("SANDBOXD_URL") or "http://localhost:8080"
        if api_key is None:
            api_key = os.environ.get("SANDBOXD_API_KEY")
        self.url = url.rstrip("/")
        self._t = Transport(self.url, api_key, timeout, ssl_context)
        self.sandboxes = Sandboxes(self)

    @property
    def timeout(self) -> float:
        return self._t.timeout

    def healthz(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """GET /healthz (no key): {"status": "ok", ...}; 503 raises Unavailable."""
        return dict(self._t.request("GET", "/healthz", timeout=timeout, auth=False).json())

    def metrics(self, timeout: Optional[float] = None) -> str:
        """GET /metrics (an admin key): the Prometheus text."""
        return self._t.request("GET", "/metrics", timeout=timeout).body.decode("utf-8")

    def sandbox(self, sandbox_id: str) -> "Sandbox":
        """A handle on a sandbox by id, without asking the server (use
        sandboxes.get to fetch it)."""
        return Sandbox(self, {"id": sandbox_id})


class Sandboxes:
    """client.sandboxes: create, get, list, delete."""

    def __init__(self, client: Sandboxd) -> None:
        self._c = client

    def create(self, template: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
               labels: Optional[Mapping[str, str]] = None, memory_mb: Optional[int] = None,
               cpus: Optional[float] = None, idle_timeout_s: Optional[int] = None,
               pause_timeout_s: Optional[int] = None, port: Optional[int] = None,
               visibility: Optional[str] = None, timeout: Optional[float] = None) -> "Sandbox":
        """POST /v1/sandboxes: a new running sandbox (its dev server may
        still be booting). Every field is optional."""
        body: Dict[str, Any] = {}
        for k, v in (("template", template), ("env", env), ("labels", labels),
                     ("memory_mb", memory_mb), ("cpus", cpus), ("idle_timeout_s", idle_timeout_s),
                     ("pause_timeout_s", pause_timeout_s), ("port", port), ("visibility", visibility)):
            if v is not None:
                body[k] = dict(v) if isinstance(v, Mapping) else v
        r = self._c._t.request("POST", "/v1/sandboxes", body=body, timeout=timeout, ok=(201,))
        return Sandbox(self._c, r.json())

    def get(self, sandbox_id: str, timeout: Optional[float] = None) -> "Sandbox":
        """GET /v1/sandboxes/{id}; NotFound if it does not exist (or is another tenant's)."""
        r = self._c._t.request("GET", "/v1/sandboxes/" + _sid(sandbox_id), timeout=timeout)
        return Sandbox(self._c, r.json())

    def list(self, state: Optional[str] = None, label: Optional[Union[str, Mapping[str, str]]] = None,
             timeout: Optional[float] = None) -> List["Sandbox"]:
        """GET /v1/sandboxes, oldest first. state= filters by state; label=
        takes "key:value" or a one-entry {"key": "value"}."""
        if isinstance(label, Mapping):
            if len(label) != 1:
                raise ValueError("label= filters by one label")
            (k, v), = label.items()
            label = "%s:%s" % (k, v)
        r = self._c._t.request("GET", "/v1/sandboxes", query={"state": state, "label": label},
                               timeout=timeout)
        return [Sandbox(self._c, s) for s in r.json()["sandboxes"]]

    def delete(self, sandbox: Union[str, "Sandbox"], timeout: Optional[float] = None) -> None:
        """DELETE /v1/sandboxes/{id}: container, workspace and task logs go."""
        self._c._t.request("DELETE", "/v1/sandboxes/" + _sid(_id(sandbox)), timeout=timeout, ok=(204,))


class Sandbox:
    """One sandbox. Its fields (as the server last showed them) are
    attributes (id, state, preview_url, ...) and `data` holds them all;
    refresh() fetches them again."""

    def __init__(self, client: Sandboxd, data: Mapping[str, Any]) -> None:
        self._c = client
        self.data: Dict[str, Any] = dict(data)
        self.files = Files(self)
        self.tasks = Tasks(self)

    # --- fields ------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> Optional[str]:
        return self.data.get("state")

    @property
    def tenant(self) -> Optional[str]:
        return self.data.get("tenant")

    @property
    def template(self) -> Optional[str]:
        return self.data.get("template")

    @property
    def port(self) -> Optional[int]:
        return self.data.get("port")

    @property
    def visibility(self) -> Optional[str]:
        return self.data.get("visibility")

    @property
    def env(self) -> Dict[str, str]:
        return dict(self.data.get("env") or {})

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.data.get("labels") or {})

    @property
    def error(self) -> Optional[str]:
        return self.data.get("error")

    @property
    def dev_server(self) -> Optional[Dict[str, Any]]:
        return self.data.get("dev_server")

    def __repr__(self) -> str:
        return "<Sandbox %s %s>" % (self.id, self.state)

    @property
    def _path(self) -> str:
        return "/v1/sandboxes/" + _sid(self.id)

    def _update(self, data: Mapping[str, Any]) -> "Sandbox":
        self.data = dict(data)
        return self

    # --- lifecycle ---------------------------------------------------------

    def refresh(self, timeout: Optional[float] = None) -> "Sandbox":
        """Fetch the sandbox again (GET); returns self."""
        return self._update(self._c._t.request("GET", self._path, timeout=timeout).json())

    def stop(self, timeout: Optional[float] = None) -> "Sandbox":
        """POST .../stop: state `stopped`, files kept; returns self."""
        return self._update(self._c._t.request("POST", self._path + "/stop", timeout=timeout).json())

    def start(self, timeout: Optional[float] = None) -> "Sandbox":
        """POST .../start: state `running`; returns self."""
        return self._update(self._c._t.request("POST", self._path + "/start", timeout=timeout).json())

    def delete(self, timeout: Optional[float] = None) -> None:
        """DELETE the sandbox."""
        self._c.sandboxes.delete(self.id, timeout=timeout)

    # --- exec --------------------------------------------------------------

    @staticmethod
    def _exec_body(cmd: Cmd, cwd: Optional[str], env: Optional[Mapping[str, str]],
                   timeout_s: Optional[int]) -> Dict[str, Any]:
        body: Dict[str, Any] = {"cmd": _argv(cmd)}
        if cwd is not None:
            body["cwd"] = cwd
        if env is not None:
            body["env"] = dict(env)
        if timeout_s is not None:
            body["timeout_s"] = int(timeout_s)
        return body

    def _exec_timeout(self, timeout: Optional[float], timeout_s: Optional[int]) -> float:
        # The call must outlast the command's own limit (default 60 s).
        if timeout is not None:
            return timeout
        return max(self._c.timeout, float(timeout_s or 60) + 15.0)

    def exec(self, cmd: Cmd, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
             timeout_s: Optional[int] = None, timeout: Optional[float] = None) -> ExecResult:
        """Run a command and wait for it (POST .../exec). cmd is an argv
        list, or a string run with `sh -c`. timeout_s is the command's
        limit in the sandbox (default 60); timeout the call's (default:
        the longer of the client's and timeout_s + 15 s)."""
        r = self._c._t.request("POST", self._path + "/exec", body=self._exec_body(cmd, cwd, env, timeout_s),
                               timeout=self._exec_timeout(timeout, timeout_s))
        j = r.json()
        return ExecResult(int(j["exit_code"]), j.get("stdout", ""), j.get("stderr", ""),
                          bool(j.get("timed_out")), bool(j.get("truncated")))

    def exec_stream(self, cmd: Cmd, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                    timeout_s: Optional[int] = None, timeout: Optional[float] = None
                    ) -> Generator[Event, None, None]:
        """Run a command and yield its events as it runs: `output` events
        (ev.stream, ev.text: one line each), then one `exit` event
        (ev.data: exit_code, signal, timed_out, truncated). If the
        sandbox's agent goes away first, raises Unavailable; if the
        connection breaks, NetworkError. Leaving the loop early closes the
        connection, which kills the command."""
        stream = self._c._t.stream("POST", self._path + "/exec", body=self._exec_body(cmd, cwd, env, timeout_s),
                                   headers={"Accept": "text/event-stream"},
                                   timeout=timeout if timeout is not None else max(self._c.timeout, 30.0))
        with stream:
            for ev in stream.events():
                if ev.event == "error":
                    msg = ev.data.get("message") if isinstance(ev.data, dict) else str(ev.data)
                    raise Unavailable(msg or "the sandbox's agent went away", None, "unavailable")
                yield ev
                if ev.event == "exit":
                    return
        raise NetworkError("exec stream ended before its exit event")

    # --- previews ----------------------------------------------------------

    def preview_url(self, port: Optional[int] = None) -> str:
        """The preview URL (<id>.<preview_domain>), or another port's
        (<port>-<id>.<preview_domain>) with port=."""
        url = self.data.get("preview_url")
        if not url:
            url = self.refresh().data["preview_url"]
        if port is None:
            return str(url)
        u = urllib.parse.urlsplit(str(url))
        netloc = u.netloc
        if not netloc.startswith(self.id + "."):
            raise SandboxdError("preview_url %r does not start with the id" % url)
        return urllib.parse.urlunsplit((u.scheme, "%d-%s" % (int(port), netloc), u.path or "/", "", ""))

    def preview_token(self, ttl_s: Optional[int] = None, timeout: Optional[float] = None) -> PreviewToken:
        """POST .../preview-token: a signed token (ttl_s 60..2592000,
        default 3600) and the URL that carries it (for a public sandbox,
        the plain preview URL)."""
        body = {} if ttl_s is None else {"ttl_s": int(ttl_s)}
        j = self._c._t.request("POST", self._path + "/preview-token", body=body, timeout=timeout).json()
        return PreviewToken(j["token"], j["url"], j["expires_at"])

    # --- the dev server ----------------------------------------------------

    @overload
    def logs(self, follow: Literal[False] = False, timeout: Optional[float] = None) -> str: ...

    @overload
    def logs(self, follow: Literal[True], timeout: Optional[float] = None) -> Generator[str, None, None]: ...

    def logs(self, follow: bool = False, timeout: Optional[float] = None
             ) -> Union[str, Generator[str, None, None]]:
        """The dev server's recent output as text; with follow=True an
        iterator of new lines (without newlines) until the sandbox stops or
        you leave the loop (or close() it)."""
        if follow:
            return self.logs_follow(timeout=timeout)
        return self.logs_text(timeout=timeout)

    def logs_text(self, timeout: Optional[float] = None) -> str:
        """The dev server's recent output (agentd's 256 KiB ring)."""
        return self._c._t.request("GET", self._path + "/logs", timeout=timeout).body.decode("utf-8", "replace")

    def logs_follow(self, timeout: Optional[float] = None) -> Generator[str, None, None]:
        """New dev-server lines as they come. timeout is the idle limit
        (heartbeats every 15 s keep a quiet stream alive; but the answer's
        head waits for the first line, so a quiet dev server may time out
        before anything: Timeout is raised)."""
        stream = self._c._t.stream("GET", self._path + "/logs", query={"follow": "1"},
                                   headers={"Accept": "text/event-stream"}, timeout=timeout)
        with stream:
            for ev in stream.events():
                if ev.event == "log":
                    yield ev.text

    def restart_dev(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """POST .../restart-dev: the dev server's {"state", "restarts"}."""
        return dict(self._c._t.request("POST", self._path + "/restart-dev", timeout=timeout).json()["dev_server"])

    def terminal(self, cols: int = 80, rows: int = 24, timeout: Optional[float] = None) -> Terminal:
        """Open the terminal WebSocket (GET .../terminal): a shell on a PTY."""
        t = self._c._t
        path = t.prefix + self._path + "/terminal?" + urllib.parse.urlencode({"cols": cols, "rows": rows})
        return Terminal.open(t.scheme, t.host, t.port, path, t.api_key,
                             t.timeout if timeout is None else timeout, t.ssl_context)


class Files:
    """sandbox.files: paths are relative to /workspace; each segment is
    %-encoded, so spaces, '#', '?' and any Unicode are fine."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._s = sandbox

    def _p(self, path: str) -> str:
        return self._s._path + "/files/" + quote_path(path)

    def read(self, path: str, timeout: Optional[float] = None) -> bytes:
        """A file's bytes. A directory raises SandboxdError (use list)."""
        r = self._s._c._t.request("GET", self._p(path), timeout=timeout)
        if r.headers.get("content-type", "").startswith("application/json"):
            raise SandboxdError("%s is a directory (use files.list)" % path, 200, "is_a_directory")
        return r.body

    def read_text(self, path: str, encoding: str = "utf-8", timeout: Optional[float] = None) -> str:
        return self.read(path, timeout=timeout).decode(encoding)

    def write(self, path: str, data: Union[bytes, bytearray, str], encoding: str = "utf-8",
              timeout: Optional[float] = None) -> bool:
        """Write a file atomically (parents made; works while stopped; up to
        100 MiB). A str is encoded. Returns True if the file is new."""
        body = data.encode(encoding) if isinstance(data, str) else bytes(data)
        r = self._s._c._t.request("PUT", self._p(path), body=body, timeout=timeout,
                                  headers={"Content-Type": "application/octet-stream"}, ok=(201, 204))
        return r.status == 201

    def list(self, path: str = "", timeout: Optional[float] = None) -> List[FileEntry]:
        """A directory's entries, sorted by name ("" is /workspace)."""
        r = self._s._c._t.request("GET", self._p(path) if path.strip("/") else self._s._path + "/files/",
                                  timeout=timeout)
        if not r.headers.get("content-type", "").startswith("application/json"):
            raise SandboxdError("%s is a file (use files.read)" % path, 200, "not_a_directory")
        return [FileEntry(e["name"], e["type"], int(e["size"]), e["mtime"]) for e in r.json()["entries"]]

    def remove(self, path: str, timeout: Optional[float] = None) -> None:
        """Remove a file, or a directory with everything in it."""
        self._s._c._t.request("DELETE", self._p(path), timeout=timeout, ok=(204,))


class Tasks:
    """sandbox.tasks: run, get, list."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._s = sandbox

    def run(self, cmd: Optional[Cmd] = None, agent: Optional[str] = None, prompt: Optional[str] = None,
            model: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
            timeout_s: Optional[int] = None, timeout: Optional[float] = None) -> "Task":
        """Queue a task (POST .../tasks; wakes a stopped sandbox). Either a
        command (cmd=, agent "command", the default when cmd is given) or a
        prompt for agent "claude-code" or "opencode" (model= optional).
        Returns at once with the task `queued` or `running`."""
        if agent is None:
            agent = "command" if cmd is not None else "claude-code"
        body: Dict[str, Any] = {"agent": agent}
        if cmd is not None:
            body["cmd"] = _argv(cmd)
        if prompt is not None:
            body["prompt"] = prompt
        if model is not None:
            body["model"] = model
        if env is not None:
            body["env"] = dict(env)
        if timeout_s is not None:
            body["timeout_s"] = int(timeout_s)
        r = self._s._c._t.request("POST", self._s._path + "/tasks", body=body, timeout=timeout, ok=(202,))
        return Task(self._s, r.json())

    def get(self, task_id: str, timeout: Optional[float] = None) -> "Task":
        r = self._s._c._t.request("GET", self._s._path + "/tasks/" + _sid(task_id), timeout=timeout)
        return Task(self._s, r.json())

    def list(self, timeout: Optional[float] = None) -> List["Task"]:
        """The sandbox's tasks, oldest first."""
        r = self._s._c._t.request("GET", self._s._path + "/tasks", timeout=timeout)
        return [Task(self._s, t) for t in r.json()["tasks"]]


class Task:
    """One task. Fields are attributes (id, state, exit_code, ...) and
    `data` holds them all; refresh() fetches them again."""

    def __init__(self, sandbox: Sandbox, data: Mapping[str, Any]) -> None:
        self.sandbox = sandbox
        self.data: Dict[str, Any] = dict(data)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> Optional[str]:
        return self.data.get("state")

    @property
    def exit_code(self) -> Optional[int]:
        return self.data.get("exit_code")

    @property
    def error(self) -> Optional[str]:
        return self.data.get("error")

    @property
    def changed_files(self) -> Optional[List[str]]:
        return self.data.get("changed_files")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def __repr__(self) -> str:
        return "<Task %s %s>" % (self.id, self.state)

    @property
    def _path(self) -> str:
        return self.sandbox._path + "/tasks/" + _sid(self.id)

    def refresh(self, timeout: Optional[float] = None) -> "Task":
        self.data = dict(self.sandbox._c._t.request("GET", self._path, timeout=timeout).json())
        return self

    def cancel(self, timeout: Optional[float] = None) -> "Task":
        """POST .../cancel (Conflict once it finished); the `exit` event
        with state `cancelled` follows on the stream. Returns self."""
        self.data = dict(self.sandbox._c._t.request("POST", self._path + "/cancel", timeout=timeout).json())
        return self

    def revert(self, timeout: Optional[float] = None) -> "Task":
        """POST .../revert: the workspace back to the checkpoint taken
        before this (agent) task; Conflict while it runs or for a command
        task, which takes none. Returns self."""
        t = timeout if timeout is not None else max(self.sandbox._c.timeout, 90.0)
        self.data = dict(self.sandbox._c._t.request("POST", self._path + "/revert", timeout=t).json())
        return self

    def events(self, after: Optional[int] = None, timeout: Optional[float] = None,
               max_retries: int = 8) -> Generator[Event, None, None]:
        """The task's events (output, agent, status, ..., exit last) from
        the start, or after event id `after`, live as they come; ends after
        `exit`. A dropped connection is resumed with Last-Event-ID: every
        event comes once, in order. max_retries consecutive failed
        reconnects (backing off from 0.1 s to 2 s; a refused connection,
        a silent stream, a 502 or 503 count) raise the last error; timeout
        bounds the whole iteration (default: none, the task's own
        timeout_s bounds it) and raises Timeout."""
        t = self.sandbox._c._t
        deadline = None if timeout is None else time.monotonic() + timeout
        last = after
        failures = 0
        while True:
            idle = t.timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("task %s: events not over within %.3gs" % (self.id, timeout or 0))
                idle = min(idle, left)
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            err: Optional[SandboxdError] = None
            try:
                stream = t.stream("GET", self._path + "/events", headers=headers, timeout=idle, ok=(200, 204))
            except (NetworkError, Timeout, BadGateway, Unavailable) as e:
                # Transient: a restarting daemon, or a proxy in front of it
                # answering 502/503 meanwhile. Anything else is final.
                err = e
            else:
                with stream:
                    if stream.status == 204:
                        return
                    try:
                        for ev in stream.events():
                            if ev.id is not None:
                                if last is not None and ev.id <= last:
                                    continue
                                last = ev.id
                            failures = 0
                            yield ev
                            if ev.event == "exit":
                                return
                            if deadline is not None and time.monotonic() > deadline:
                                raise Timeout("task %s: events not over within %.3gs" % (self.id, timeout or 0))
                    except (NetworkError, Timeout) as e:
                        if isinstance(e, Timeout) and deadline is not None and time.monotonic() >= deadline:
                            raise
                        err = e
            failures += 1
            if failures > max_retries:
                raise err or NetworkError("task %s: the event stream keeps ending before exit" % self.id)
            time.sleep(min(0.1 * (2 ** (failures - 1)), 2.0))

    def wait(self, timeout: Optional[float] = None, poll: float = 0.25) -> "Task":
        """Until the task has finished (succeeded, failed or cancelled);
        returns self, refreshed. Timeout after timeout seconds (None: no
        limit but the task's own timeout_s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            self.refresh(timeout=None if left is None else max(0.5, min(left, self.sandbox._c.timeout)))
            if self.finished:
                return self
            if deadline is not None and time.monotonic() + delay > deadline:
                raise Timeout("task %s still %s after %.3gs" % (self.id, self.state, timeout or 0))
            time.sleep(delay)
            delay = min(delay * 2, poll)
