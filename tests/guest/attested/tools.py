"""Helpers for the attested-document tests: servers with a config file, the CA export, openssl."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

from tests.conftest import Server, ServerThread
from tests.http import get

DEFAULT_VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
DOCUMENT = "/metadata/attested/document"
# The documentation's sample answer (Linux "Get Attested data" section), signed by Azure.
DOCS_SAMPLE_SIGNATURE = (
    "MIIEEgYJKoZIhvcNAQcCoIIEAzCCA/8CAQExDzANBgkqhkiG9w0BAQsFADCBugYJKoZIhvcNAQcBoIGsBIGpeyJub25jZ"
    "SI6IjEyMzQ1NjY3NjYiLCJwbGFuIjp7Im5hbWUiOiIiLCJwcm9kdWN0IjoiIiwicHVibGlzaGVyIjoiIn0sInRpbWVTdG"
    "FtcCI6eyJjcmVhdGVkT24iOiIxMS8yMC8xOCAyMjowNzozOSAtMDAwMCIsImV4cGlyZXNPbiI6IjExLzIwLzE4IDIyOjA"
    "4OjI0IC0wMDAwIn0sInZtSWQiOiIifaCCAj8wggI7MIIBpKADAgECAhBnxW5Kh8dslEBA0E2mIBJ0MA0GCSqGSIb3DQEB"
    "BAUAMCsxKTAnBgNVBAMTIHRlc3RzdWJkb21haW4ubWV0YWRhdGEuYXp1cmUuY29tMB4XDTE4MTEyMDIxNTc1N1oXDTE4M"
    "TIyMDIxNTc1NlowKzEpMCcGA1UEAxMgdGVzdHN1YmRvbWFpbi5tZXRhZGF0YS5henVyZS5jb20wgZ8wDQYJKoZIhvcNAQ"
    "EBBQADgY0AMIGJAoGBAML/tBo86ENWPzmXZ0kPkX5dY5QZ150mA8lommszE71x2sCLonzv4/UWk4H+jMMWRRwIea2CuQ5"
    "RhdWAHvKq6if4okKNt66fxm+YTVz9z0CTfCLmLT+nsdfOAsG1xZppEapC0Cd9vD6NCKyE8aYI1pliaeOnFjG0WvMY04uW"
    "z2MdAgMBAAGjYDBeMFwGA1UdAQRVMFOAENnYkHLa04Ut4Mpt7TkJFfyhLTArMSkwJwYDVQQDEyB0ZXN0c3ViZG9tYWluL"
    "m1ldGFkYXRhLmF6dXJlLmNvbYIQZ8VuSofHbJRAQNBNpiASdDANBgkqhkiG9w0BAQQFAAOBgQCLSM6aX5Bs1KHCJp4VQt"
    "xZPzXF71rVKCocHy3N9PTJQ9Fpnd+bYw2vSpQHg/AiG82WuDFpPReJvr7Pa938mZqW9HUOGjQKK2FYDTg6fXD8pkPdygh"
    "lX5boGWAMMrf7bFkup+lsT+n2tRw2wbNknO1tQ0wICtqy2VqzWwLi45RBwTGB6DCB5QIBATA/MCsxKTAnBgNVBAMTIHRl"
    "c3RzdWJkb21haW4ubWV0YWRhdGEuYXp1cmUuY29tAhBnxW5Kh8dslEBA0E2mIBJ0MA0GCSqGSIb3DQEBCwUAMA0GCSqGS"
    "Ib3DQEBAQUABIGAld1BM/yYIqqv8SDE4kjQo3Ul/IKAVR8ETKcve5BAdGSNkTUooUGVniTXeuvDj5NkmazOaKZp9fEtBy"
    "qqPOyw/nlXaZgOO44HDGiPUJ90xVYmfeK6p9RpJBu6kiKhnnYTelUk5u75phe5ZbMZfBhuPhXmYAdjc7Nmw97nx8NnprQ="
)


def config_server(tmp: Path, config_yaml: str, *args: str) -> Server:
    """``azimds serve --config FILE`` with ``config_yaml`` written to FILE."""
    path = tmp / "azimds.yaml"
    path.write_text(config_yaml)
    return ServerThread("--config", str(path), *args)


def signature_der(port: int, query: str = "api-version=2020-09-01") -> bytes:
    """The attested document's PKCS#7 (DER), as a guest fetches it."""
    reply = get(port, f"{DOCUMENT}?{query}")
    assert reply.status == 200, reply.body
    return base64.b64decode(json.loads(reply.body)["signature"], validate=True)


def ca_export(state_dir: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """``azimds ca --state-dir DIR export OUTDIR``, as a relying party's operator runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "azimds",
            "ca",
            "--state-dir",
            str(state_dir),
            "export",
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def admin_get(server: Server, path: str) -> bytes:
    """A public route of the control plane, fetched without a token."""
    with urlopen(server.admin_url + path, timeout=10) as response:
        assert response.status == 200
        return bytes(response.read())


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A shell script as a user pastes it (stopping at the first failing command)."""
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
