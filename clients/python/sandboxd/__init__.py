"""sandboxd: the Python SDK of sandboxd (standard library only, Python 3.9+).

    from sandboxd import Sandboxd
    client = Sandboxd("http://localhost:8080", api_key)
    sbx = client.sandboxes.create()
    sbx.files.write("hello.txt", "hi\\n")
    print(sbx.exec(["cat", "hello.txt"]).stdout)
    task = sbx.tasks.run(["sh", "-c", "npm test"])
    for ev in task.events():
        print(ev.event, ev.data)

The whole surface: clients/python/README.md.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._http import Event  # noqa: E402
from .client import (ExecResult, FileEntry, Files, PreviewToken, Sandbox, Sandboxd,  # noqa: E402
                     Sandboxes, Task, Tasks)
from .errors import (BadGateway, BadRequest, Conflict, Internal, MethodNotAllowed,  # noqa: E402
                     NetworkError, NotFound, PayloadTooLarge, QuotaExceeded, SandboxdError,
                     Timeout, Unauthorized, Unavailable)
from .terminal import Terminal  # noqa: E402

__all__ = [
    "Sandboxd", "Sandboxes", "Sandbox", "Files", "FileEntry", "Tasks", "Task", "Event",
    "ExecResult", "PreviewToken", "Terminal",
    "SandboxdError", "BadRequest", "Unauthorized", "NotFound", "MethodNotAllowed", "Conflict",
    "PayloadTooLarge", "QuotaExceeded", "Internal", "BadGateway", "Unavailable",
    "Timeout", "NetworkError",
]
