"""``/metadata/loadbalancer``: the VM's Standard Load Balancer data (reference section 7)."""

from __future__ import annotations

from azimds.guest import errors
from azimds.guest.endpoint import ValidRequest
from azimds.guest.responses import Response, json_response


def get_load_balancer(request: ValidRequest) -> Response:
    """The VM's load balancer data (ports as integers); a 404 behind none."""
    if request.vm.load_balancer is None:
        return errors.NO_LOAD_BALANCER
    return json_response({"loadbalancer": request.vm.load_balancer})
