"""Driving a test node through its control plane: the project's client, and test data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest

from azimds.admin.client import AdminClient, AdminError


class Node(Protocol):
    """A node under test (``ServerThread``, ``ServerProcess``, ``LocalIMDS``): its control plane."""

    admin_url: str
    token: str


def admin(node: Node) -> AdminClient:
    """The node's control plane, as the CLI reaches it."""
    return AdminClient(node.admin_url, node.token, timeout=10)


def refused(work: Callable[..., object], *args: Any) -> AdminError:
    """How the control plane refuses ``work(*args)`` (one client call); the test fails if it
    does not."""
    with pytest.raises(AdminError) as caught:
        work(*args)
    return caught.value


def new_vm(name: str, *addresses: str, **compute: Any) -> dict[str, Any]:
    ips = [{"privateIpAddress": a} for a in addresses]
    return {
        "compute": {"name": name, **compute},
        "network": {"interface": [{"ipv4": {"ipAddress": ips}}]} if ips else None,
    }
