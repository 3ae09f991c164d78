"""Talking to a test server's control plane."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import ServerProcess


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = "",
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; ``token=""`` uses the server's token, ``None`` sends none."""
    parts = urlsplit(server.admin_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or server.token}"
    payload = raw
    if body is not None:
        payload = json.dumps(body).encode()
    if payload is not None:
        headers["Content-Type"] = content_type
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        answer = json.loads(data) if data else None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
    finally:
        connection.close()


def new_vm(name: str, *addresses: str, **compute: Any) -> dict[str, Any]:
    ips = [{"privateIpAddress": a} for a in addresses]
    return {
        "compute": {"name": name, **compute},
        "network": {"interface": [{"ipv4": {"ipAddress": ips}}]} if ips else None,
    }
