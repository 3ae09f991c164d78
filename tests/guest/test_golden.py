"""Golden answers for the example VM: exact status, content type and bytes, per api-version.

The files in tests/golden/ were written by this test with AZIMDS_REGEN_GOLDEN=1 and reviewed by
hand; a change in any byte fails here and shows in review as a diff of the golden file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.http import get

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
VERSIONS = [
    "2017-04-02",
    "2017-08-01",
    "2018-10-01",
    "2019-06-01",
    "2021-02-01",
    "2021-12-13",
    "2023-11-15",
    "2025-04-07",
]
# (name, path below /metadata/instance, extra query)
VIEWS = [
    ("document", "", ""),
    ("document-extended", "", "&extended=true"),
    ("compute", "/compute", ""),
    ("network", "/network", ""),
    ("interface-0", "/network/interface/0", ""),
    ("ip-0", "/network/interface/0/ipv4/ipAddress/0", ""),
    ("listing-root", "", "&format=text"),
    ("listing-root-extended", "", "&extended=true&format=text"),
    ("listing-compute", "/compute", "&format=text"),
    ("listing-network", "/network", "&format=text"),
    ("listing-interfaces", "/network/interface", "&format=text"),
    ("listing-interface-0", "/network/interface/0", "&format=text"),
    ("leaf-vmId", "/compute/vmId", "&format=text"),
    ("leaf-mac", "/network/interface/0/macAddress", "&format=text"),
    ("leaf-json", "/compute/vmId", "&format=json"),
    ("storage", "/compute/storageProfile", ""),
    ("listing-storage", "/compute/storageProfile", "&format=text"),
    ("public-keys", "/compute/publicKeys", ""),
]
CASES = [(v, *view) for v in VERSIONS for view in VIEWS]


def render(status: int, content_type: str, body: bytes) -> bytes:
    return f"{status} {content_type}\n".encode() + body


@pytest.mark.parametrize(("version", "name", "path", "extra"), CASES)
def test_golden(port: int, version: str, name: str, path: str, extra: str) -> None:
    reply = get(port, f"/metadata/instance{path}?api-version={version}{extra}")
    actual = render(reply.status, reply.headers["content-type"], reply.body)
    assert reply.headers["content-length"] == str(len(reply.body))
    golden = GOLDEN / version / f"{name}.txt"
    if os.environ.get("AZIMDS_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(actual)
    assert actual == golden.read_bytes()
