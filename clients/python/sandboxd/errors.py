"""Typed errors: one class per API error code, all under SandboxdError.

Every non-2xx answer of the API carries {"error": {"code", "message"}};
the SDK raises the class that matches the code (or, failing that, the
status), with .status, .code and .message set. Problems that never reached
an answer are Timeout (nothing came in time) and NetworkError (the
connection failed or broke).
"""
from __future__ import annotations

import builtins
from typing import Dict, Optional, Type


class SandboxdError(Exception):
    """Any error from sandboxd or from talking to it.

    status: the HTTP status (None when no answer came), code: the API's
    error code ("not_found", ...; "timeout" or "network" for the SDK's
    own), message: the sentence for a person.
    """

    status: Optional[int]
    code: str
    message: str

    def __init__(self, message: str, status: Optional[int] = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.status is not None:
            return "%s (%d %s)" % (self.message, self.status, self.code)
        return "%s (%s)" % (self.message, self.code)


class BadRequest(SandboxdError):
    """400 bad_request: malformed JSON, an unknown field, a refused path..."""


class Unauthorized(SandboxdError):
    """401 unauthorized: no key, a wrong key, a non-admin key on an admin route."""


class NotFound(SandboxdError):
    """404 not_found: no such sandbox (or another tenant's), task or file."""


class MethodNotAllowed(SandboxdError):
    """405 method_not_allowed."""


class Conflict(SandboxdError):
    """409 conflict: the sandbox is busy or in a state that does not allow it."""


class PayloadTooLarge(SandboxdError):
    """413 payload_too_large: the body is over the route's limit."""


class QuotaExceeded(SandboxdError):
    """429 quota_exceeded: max_sandboxes, max_running or min_free_memory."""


class Internal(SandboxdError):
    """500 internal: Docker or the store refused."""


class BadGateway(SandboxdError):
    """502 bad_gateway: the sandbox's agent gave an unexpected answer."""


class Unavailable(SandboxdError):
    """503 unavailable: Docker or the sandbox's agent does not answer."""


class Timeout(SandboxdError, builtins.TimeoutError):
    """No answer (or no more of a stream) within the timeout."""

    def __init__(self, message: str) -> None:
        SandboxdError.__init__(self, message, None, "timeout")


class NetworkError(SandboxdError, builtins.ConnectionError):
    """The connection could not be made, or broke before the answer was whole."""

    def __init__(self, message: str) -> None:
        SandboxdError.__init__(self, message, None, "network")


_BY_CODE: Dict[str, Type[SandboxdError]] = {
    "bad_request": BadRequest,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "quota_exceeded": QuotaExceeded,
    "internal": Internal,
    "bad_gateway": BadGateway,
    "unavailable": Unavailable,
}

_BY_STATUS: Dict[int, Type[SandboxdError]] = {
    400: BadRequest, 401: Unauthorized, 404: NotFound, 405: MethodNotAllowed,
    409: Conflict, 413: PayloadTooLarge, 429: QuotaExceeded, 500: Internal,
    502: BadGateway, 503: Unavailable,
}


def error_for(status: int, code: Optional[str], message: Optional[str]) -> SandboxdError:
    """The typed error for an answer: by its code, else by its status."""
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or SandboxdError
    return cls(message or "HTTP %d" % status, status, code or "http_%d" % status)
