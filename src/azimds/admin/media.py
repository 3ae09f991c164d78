"""A VM's provisioning media: the CD-ROM image Azure attaches at first boot, and its
ovf-env.xml alone (fleet/ovf.py renders both; docs/provisioning-media.md).

The only routes that show a VM's admin password (in ``UserPassword``): the control plane's
description of a VM masks it, and IMDS never serves it.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from azimds.admin.core import Control, Returns, Routes
from azimds.admin.vms import VM_PARAMETER
from azimds.fleet.ovf import ISO_MEDIA, XML_MEDIA, iso_image, ovf_env

BINARY = {"type": "string", "format": "binary"}
ROUTES = Routes(VM_PARAMETER)


@ROUTES.add(
    "GET",
    "/v1/vms/{vm}/media",
    Returns(200, "ISO 9660 + UDF image", BINARY, ISO_MEDIA),
    errors=(404,),
)
async def media(control: Control, request: Request) -> Response:
    """The VM's provisioning media, a CD-ROM image holding its ovf-env.xml."""
    vm = await control.resolve(request)
    # Half a megabyte written by pure Python: off the event loop, which also serves guests.
    image = await asyncio.to_thread(iso_image, vm)
    return Response(image, media_type=ISO_MEDIA)


@ROUTES.add(
    "GET",
    "/v1/vms/{vm}/media/ovf-env.xml",
    Returns(200, "ovf-env.xml", {"type": "string"}, XML_MEDIA),
    errors=(404,),
)
async def media_ovf_env(control: Control, request: Request) -> Response:
    """The ovf-env.xml the VM's provisioning media holds."""
    vm = await control.resolve(request)
    return Response(ovf_env(vm), media_type=XML_MEDIA)
