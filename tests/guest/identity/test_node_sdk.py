"""@azure/identity (Node.js) gets azimds's tokens: examples/node/token.js, as docs/identity.md says.

The npm packages are installed once per lock file into a cache outside the repository
(``AZIMDS_TEST_CACHE``, default ``~/.cache/azimds-tests``), from the registry npm is configured
with. Without ``node`` and ``npm`` the test cannot run and says so; .ci/run installs both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerThread
from tests.guest.identity.support import token_json

EXAMPLE = REPO / "examples" / "node"
CACHE = Path(os.environ.get("AZIMDS_TEST_CACHE", Path.home() / ".cache" / "azimds-tests"))


def installed_example() -> Path:
    """A copy of examples/node with its locked packages installed (``npm ci``), reused while the
    lock file is unchanged."""
    lock = (EXAMPLE / "package-lock.json").read_bytes()
    where = CACHE / f"node-example-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (where / "node_modules" / "@azure" / "identity").is_dir():
        where.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(EXAMPLE / name, where / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=where,
            check=True,
            timeout=300,
        )
    shutil.copy(EXAMPLE / "token.js", where / "token.js")
    return where


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not installed (Debian: apt-get install nodejs npm; .ci/run does)",
)
def test_node_sdk_example_gets_the_token_azimds_serves(server: ServerThread) -> None:
    example = installed_example()
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(example),
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{server.port}",
    }
    run = subprocess.run(
        ["node", "token.js", "https://vault.azure.net/.default"],
        cwd=example,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    managed, chained = run.stdout.splitlines()
    # azimds caches a token per identity and resource: the one it serves now is the one the
    # SDK got, so the SDK's prefix is the served token's.
    served = token_json(server.port, "api-version=2018-02-01&resource=https://vault.azure.net")
    assert managed.startswith(f"ManagedIdentityCredential: {served['access_token'][:20]}... until ")
    assert chained == "DefaultAzureCredential: the same token"
