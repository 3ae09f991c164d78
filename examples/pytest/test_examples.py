"""The examples of docs/testing.md, runnable: `pytest examples/pytest` (azimds installed)."""

import jwt
import pytest
from azure.identity import ManagedIdentityCredential

VAULT = "https://vault.azure.net"


def test_gets_a_token_as_the_vm_would(imds):
    token = ManagedIdentityCredential().get_token(f"{VAULT}/.default")
    assert token.token


def test_token_verifies(imds):
    token = ManagedIdentityCredential().get_token(f"{VAULT}/.default").token
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in imds.jwks()["keys"] if k["kid"] == kid]
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=VAULT,
        options={"verify_iss": False},
    )
    assert claims["xms_mirid"].endswith("/virtualMachines/examplevmname")


def test_retries_through_updates(imds):
    imds.faults.add(410, 410, path="/metadata/identity")
    assert ManagedIdentityCredential().get_token(f"{VAULT}/.default").token
    assert [r["status"] for r in imds.requests()] == [410, 410, 200]


@pytest.mark.imds(clock="manual")
def test_a_reboot_on_a_clock_you_drive(imds):
    event = imds.events.schedule("Reboot", duration=30)
    imds.events.approve(event["eventId"])  # what a drained agent would do through IMDS
    assert imds.events.list()[0]["status"] == "Started"
    imds.events.advance(31)
    assert imds.events.list() == []
