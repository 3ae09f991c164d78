"""The WireServer's documents for one VM, and the health reports agents send it.

Shapes follow WALinuxAgent's recorded answers (tests/data/wire/*.xml) and what cloud-init and
waagent read of them: the goal state's Incarnation, ContainerId, InstanceId, ConfigName and
the HostingEnvironmentConfig and SharedConfig URLs; of those two, ``Incarnation@instance``,
``Role@name`` and ``Deployment@name``. No Certificates and no ExtensionsConfig are listed:
both agents then carry on without them.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from azimds.fleet.vm import VM

PROTOCOL_VERSION = "2012-11-30"  # what cloud-init and waagent send as x-ms-version
# Derived ids are uuid5 names under this namespace, so a VM keeps them across nodes and restarts.
NAMESPACE = uuid.UUID("5f3c2b1e-9a4d-5e8f-b7c6-1d2e3f4a5b6c")

VERSIONS = f"""<?xml version="1.0" encoding="utf-8"?>
<Versions>
  <Preferred>
    <Version>{PROTOCOL_VERSION}</Version>
  </Preferred>
  <Supported>
    <Version>{PROTOCOL_VERSION}</Version>
    <Version>2010-12-15</Version>
    <Version>2010-28-10</Version>
  </Supported>
</Versions>
"""


@dataclass(frozen=True, slots=True)
class Ids:
    """What the fabric calls a VM: stable for its vmId, named after compute.name."""

    container_id: str
    instance_id: str  # "<guid>._<name>", as Azure's role instances are named
    role_name: str  # "_<name>"
    deployment: str  # the deployment's name: 32 hex digits
    incarnation: int

    @property
    def config_name(self) -> str:
        guid = self.instance_id.split(".", 1)[0]
        n = self.incarnation
        return f"{guid}.{n}.{guid}.{n}.{self.role_name}.1.xml"


def ids_of(vm: VM, incarnation: int) -> Ids:
    def derived(what: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"{what}:{vm.vm_id}")

    role_name = f"_{vm.name}"
    return Ids(
        str(derived("container")),
        f"{derived('role-instance')}.{role_name}",
        role_name,
        derived("deployment").hex,
        incarnation,
    )


def config_path(ids: Ids, kind: str) -> str:
    """Where a configuration document is fetched: kind hostingEnvironmentConfig or
    sharedConfig."""
    instance = quote(ids.instance_id, safe="")
    return (
        f"/machine/{ids.container_id}/{instance}"
        f"?comp=config&type={kind}&incarnation={ids.incarnation}"
    )


def goal_state(ids: Ids, base: str) -> str:
    """The goal state; ``base`` is where the agent reached the WireServer (http://HOST)."""
    hosting = escape(base + config_path(ids, "hostingEnvironmentConfig"))
    shared = escape(base + config_path(ids, "sharedConfig"))
    return f"""<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>{ids.incarnation}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts>
      <Port>16001</Port>
    </LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>{ids.container_id}</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>{escape(ids.instance_id)}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>{hosting}</HostingEnvironmentConfig>
          <SharedConfig>{shared}</SharedConfig>
          <ConfigName>{escape(ids.config_name)}</ConfigName>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"""


def _deployment(ids: Ids) -> str:
    return (
        f'  <Deployment name={quoteattr(ids.deployment)} guid="{{{ids.container_id}}}"'
        f' incarnation="{ids.incarnation}">\n'
        '    <Service name="" guid="{00000000-0000-0000-0000-000000000000}" />\n'
        f"    <ServiceInstance name={quoteattr(ids.deployment + '.0')}"
        ' guid="{00000000-0000-0000-0000-000000000000}" />\n'
        "  </Deployment>\n"
        f'  <Incarnation number="{ids.incarnation}" instance={quoteattr(ids.role_name)}'
        ' guid="{00000000-0000-0000-0000-000000000000}" />\n'
    )


def hosting_environment(ids: Ids) -> str:
    return (
        f'<HostingEnvironmentConfig version="1.0.0.0" goalStateIncarnation="{ids.incarnation}">\n'
        f"{_deployment(ids)}"
        f'  <Role guid="{{{ids.instance_id.split(".", 1)[0]}}}" name={quoteattr(ids.role_name)}'
        ' hostingEnvironmentVersion="1" software="" softwareType="ApplicationPackage"'
        ' entryPoint="" parameters="" settleTimeSeconds="10" />\n'
        '  <HostingEnvironmentSettings name="full" runtime="rd_fabric_stable.runtimePackage">\n'
        '    <CAS mode="full" />\n'
        '    <PrivilegeLevel mode="max" />\n'
        "  </HostingEnvironmentSettings>\n"
        "</HostingEnvironmentConfig>\n"
    )


def shared_config(ids: Ids, address: str) -> str:
    """``address``: the VM's primary private IP."""
    return (
        f'<SharedConfig version="1.0.0.0" goalStateIncarnation="{ids.incarnation}">\n'
        f"{_deployment(ids)}"
        f'  <Role guid="{{{ids.instance_id.split(".", 1)[0]}}}" name={quoteattr(ids.role_name)}'
        ' settleTimeSeconds="10" />\n'
        "  <Instances>\n"
        f"    <Instance id={quoteattr(ids.role_name)} address={quoteattr(address)}>\n"
        '      <FaultDomains randomId="0" updateId="0" updateCount="0" />\n'
        "    </Instance>\n"
        "  </Instances>\n"
        "</SharedConfig>\n"
    )


@dataclass(frozen=True, slots=True)
class Health:
    """A health report as cloud-init and waagent write it (``_build_health_report``)."""

    incarnation: int | None
    container_id: str
    instance_id: str
    state: str
    substatus: str
    description: str


def parse_health(body: bytes) -> Health | None:
    """The report in a ``POST /machine?comp=health`` body; None when it is not one."""
    try:
        root = ET.fromstring(body)  # expat: no external entities; the body is at most 64 KB
    except ET.ParseError:
        return None
    if root.tag != "Health":
        return None
    state = root.findtext("Container/RoleInstanceList/Role/Health/State")
    if state not in ("Ready", "NotReady"):
        return None
    incarnation = (root.findtext("GoalStateIncarnation") or "").strip()
    details = "Container/RoleInstanceList/Role/Health/Details/"
    return Health(
        int(incarnation) if incarnation.isdigit() else None,
        (root.findtext("Container/ContainerId") or "").strip(),
        (root.findtext("Container/RoleInstanceList/Role/InstanceId") or "").strip(),
        state,
        (root.findtext(details + "SubStatus") or "").strip(),
        (root.findtext(details + "Description") or "").strip(),
    )
