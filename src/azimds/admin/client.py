"""A small client of the control plane, over TCP or a Unix socket, for the CLI."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit


class AdminError(Exception):
    """The control plane refused a request, or could not be reached."""


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class AdminClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.url.startswith("unix:"):
            return UnixConnection(self.url.removeprefix("unix:"), self.timeout)
        parts = urlsplit(self.url)
        return http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout
        )

    def send(
        self, method: str, path: str, payload: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        """One request with the bearer token; the status and the raw answer."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        connection = self._connection()
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except OSError as exc:
            raise AdminError(f"cannot reach the control plane at {self.url}: {exc}") from exc
        finally:
            connection.close()

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """Send one request; the decoded JSON answer, or None for an empty one."""
        payload = None if body is None else json.dumps(body).encode()
        status, data = self.send(method, path, payload, content_type if payload else "")
        answer = json.loads(data) if data else None
        if status >= 400:
            error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
            field = f" ({error['field']})" if error.get("field") else ""
            message = error.get("message", data.decode())
            raise AdminError(f"{status} {error.get('code', '')}: {message}{field}")
        return answer
