"""Caller identification: which VM is asking. One class per mode, chosen per node.

A mode maps a request's peer address and the current fleet snapshot to a VM, or to the reason
none matched. Endpoints never see how the VM was found, so a new mode (a signed header from a
trusted per-host proxy, say) is one more class here.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest import errors


def peer_host(client: str) -> str:
    """The host of a TCP peer given as ``host:port`` (an IPv6 host in brackets)."""
    return client.rpartition(":")[0].removeprefix("[").removesuffix("]")


class CallerIdentifier(Protocol):
    name: str

    def identify(self, client: str, fleet: Fleet) -> VM | str:
        """The caller's VM, or why there is none (for the 403 answer and the log).
        ``client``: the TCP peer as ``host:port`` (an IPv6 host in brackets)."""
        ...


class SingleVM:
    """Every caller is the node's default VM: the local-development mode."""

    name = "single"

    def identify(self, client: str, fleet: Fleet) -> VM | str:
        return fleet.default_vm or errors.NO_DEFAULT_VM


class SourceAddress:
    """The TCP peer address is the primary private IP of exactly one VM's primary NIC.

    Any other address of a VM (a secondary IP, another NIC) is an unknown caller, as the real
    service does not answer those addresses."""

    name = "source-ip"

    def identify(self, client: str, fleet: Fleet) -> VM | str:
        host = peer_host(client)
        vm = fleet.by_address.get(host)
        if vm is not None:
            return vm
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return errors.not_an_address(host)
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.4 on dual-stack sockets
        canonical = str(mapped or address)
        vm = fleet.by_address.get(canonical)
        return vm or errors.no_vm_at(canonical)


MODES: dict[str, type[SingleVM] | type[SourceAddress]] = {
    SingleVM.name: SingleVM,
    SourceAddress.name: SourceAddress,
}
