"""The pytest plugin (entry point ``pytest11``): the ``imds`` fixture.

    def test_reads_its_vm_name(imds):
        imds.vm.patch({"compute": {"name": "web-1"}})
        assert my_code.vm_name() == "web-1"       # asks http://169.254.169.254... via the env

Each test gets its own node, in this process, on ephemeral ports (a few ms to start after the
first); ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` points at it for the test's duration. Settings
are ``azimds serve``'s, by name, through a marker::

    @pytest.mark.imds(caller_mode="source-ip", clock="manual", rate_limit="on")

Importing this module costs nothing: azimds is loaded when a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from azimds.kit.local import LocalIMDS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "imds(**settings): settings for the imds fixture's node, as azimds serve's "
        "(caller_mode, clock, rate_limit, fleet, token_lifetime, ...)",
    )


@pytest.fixture
def imds(request: pytest.FixtureRequest) -> Iterator[LocalIMDS]:
    """An azimds node for this test (docs/testing.md)."""
    from azimds.kit.local import LocalIMDS

    marker = request.node.get_closest_marker("imds")
    with LocalIMDS(**(marker.kwargs if marker else {})) as node:
        yield node
