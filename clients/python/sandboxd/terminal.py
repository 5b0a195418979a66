"""The sandbox terminal: an RFC 6455 WebSocket client on a plain socket
(the standard library has none), just what the terminal needs: binary
frames both ways, the resize text frame, ping/pong, close."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import time
from typing import Any, Optional, Tuple, Union

from .errors import NetworkError, Timeout, error_for

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Terminal:
    """An interactive shell on a PTY in /workspace. send() types bytes,
    recv() returns screen output (bytes) or None once the shell has exited
    (then exit_code and close_reason are set), resize() resizes."""

    close_code: Optional[int]
    close_reason: str

    def __init__(self, sock: Union[socket.socket, ssl.SSLSocket], rest: bytes, timeout: float) -> None:
        self._sock = sock
        self._buf = rest
        self._timeout = timeout
        self.close_code = None
        self.close_reason = ""
        self.closed = False

    @classmethod
    def open(cls, scheme: str, host: str, port: int, path: str, api_key: Optional[str],
             timeout: float, ssl_context: Optional[ssl.SSLContext] = None) -> "Terminal":
        deadline = time.monotonic() + timeout
        try:
            raw = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            if isinstance(e, socket.timeout):
                raise Timeout("terminal: no connection within %.3gs" % timeout) from e
            raise NetworkError("terminal: %s" % e) from e
        sock: Union[socket.socket, ssl.SSLSocket] = raw
        try:
            if scheme == "https":
                sock = (ssl_context or ssl.create_default_context()).wrap_socket(raw, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode()
            name = "[%s]" % host if ":" in host else host
            hostport = name if port == (443 if scheme == "https" else 80) else "%s:%d" % (name, port)
            head = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n" % (path, hostport, key))
            if api_key:
                head += "Authorization: Bearer %s\r\n" % api_key
            sock.sendall((head + "\r\n").encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    raise NetworkError("terminal: the connection closed before the answer")
                buf += chunk
                if len(buf) > 65536:
                    raise NetworkError("terminal: an answer head over 64 KiB")
            head_b, rest = buf.split(b"\r\n\r\n", 1)
            lines = head_b.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers[k.strip().lower()] = v.strip()
            if status != 101:
                body = rest
                n = int(headers.get("content-length", "0") or 0)
                while len(body) < n:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                code = message = None
                try:
                    err = json.loads(body.decode())["error"]
                    code, message = err.get("code"), err.get("message")
                except Exception:
                    pass
                raise error_for(status, code, message)
            want = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != want:
                raise NetworkError("terminal: a wrong Sec-WebSocket-Accept")
            return cls(sock, rest, timeout)
        except socket.timeout as e:
            sock.close()
            raise Timeout("terminal: no answer within %.3gs" % timeout) from e
        except BaseException:
            sock.close()
            raise

    # --- frames ------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self._sock.settimeout(self._timeout)
            self._sock.sendall(head + mask + masked)
        except socket.timeout as e:
            raise Timeout("terminal: send blocked for %.3gs" % self._timeout) from e
        except OSError as e:
            raise NetworkError("terminal: %s" % e) from e

    def _need(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise NetworkError("terminal: the connection closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_frame(self, deadline: float) -> Tuple[int, bytes]:
        b0, b1 = self._need(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8, deadline))[0]
        mask = self._need(4, deadline) if b1 & 0x80 else b""
        payload = self._need(n, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return b0 & 0x0F, payload

    # --- the surface -------------------------------------------------------

    def send(self, data: Union[bytes, str]) -> None:
        """Type into the PTY (a str is sent as its UTF-8 bytes)."""
        self._send_frame(0x2, data.encode("utf-8") if isinstance(data, str) else bytes(data))

    def resize(self, cols: int, rows: int) -> None:
        self._send_frame(0x1, json.dumps({"resize": [int(cols), int(rows)]}).encode())

    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next piece of screen output, or None once the terminal has
        closed. Raises Timeout after timeout seconds (default: the client's)."""
        if self.closed:
            return None
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        try:
            while True:
                op, payload = self._read_frame(deadline)
                if op in (0x0, 0x1, 0x2):
                    return payload
                if op == 0x9:
                    self._send_frame(0xA, payload)
                elif op == 0x8:
                    if len(payload) >= 2:
                        self.close_code = struct.unpack("!H", payload[:2])[0]
                        self.close_reason = payload[2:].decode("utf-8", "replace")
                    try:
                        self._send_frame(0x8, payload[:2])
                    except Exception:
                        pass
                    self._shut()
                    return None
        except socket.timeout as e:
            raise Timeout("terminal: no output within the timeout") from e
        except NetworkError:
            self._shut()
            return None

    def read_until(self, marker: Union[bytes, str], timeout: Optional[float] = None) -> bytes:
        """Output until it contains marker (or the terminal closes)."""
        m = marker.encode() if isinstance(marker, str) else marker
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        out = b""
        while m not in out:
            piece = self.recv(max(0.001, deadline - time.monotonic()))
            if piece is None:
                break
            out += piece
        return out

    @property
    def exit_code(self) -> Optional[int]:
        """The shell's exit status once it exited (close 1000 "exit N")."""
        if self.close_code == 1000 and self.close_reason.startswith("exit "):
            try:
                return int(self.close_reason[5:])
            except ValueError:
                return None
        return None

    def _shut(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    def close(self) -> None:
        """Close the terminal (the shell gets SIGHUP)."""
        if not self.closed:
            try:
                self._send_frame(0x8, struct.pack("!H", 1000))
            except Exception:
                pass
            self._shut()

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
