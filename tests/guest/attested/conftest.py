"""Fixtures the attested-document tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerThread


@pytest.fixture(scope="module")
def sha256(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A node writing the standard sha256 identifier (``--attested-digest sha256``) rather
    than Azure's sha256WithRSAEncryption, the default."""
    process = ServerThread(
        "--attested-digest", "sha256", state_dir=tmp_path_factory.mktemp("sha256-digest")
    )
    yield process
    process.stop()
