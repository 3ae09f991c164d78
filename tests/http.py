"""A raw HTTP/1.1 client for tests: sends the bytes given, returns exactly what came back."""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def send_raw(
    port: int, raw: bytes, host: str = "127.0.0.1", method: str = "GET", source: str | None = None
) -> Reply:
    """``source``: the local address to send from (a VM's address on loopback)."""
    bind = (source, 0) if source else None
    with socket.create_connection((host, port), timeout=5, source_address=bind) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, headers, body)


def get(
    port: int,
    target: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    metadata: str | None = "true",
    source: str | None = None,
) -> Reply:
    """One request; ``metadata=None`` leaves the Metadata header out."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 169.254.169.254", "Connection: close"]
    if metadata is not None:
        lines.append(f"Metadata: {metadata}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return send_raw(port, raw, method=method, source=source)
