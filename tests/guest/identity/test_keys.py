"""Signing keys and token settings: lifetime, rotation, persistence, secrecy, issuer."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from cryptography import x509

from azimds.admin.client import AdminClient
from tests.admin.support import admin, refused
from tests.conftest import ServerThread, node_fixture
from tests.guest.identity.support import (
    MANAGEMENT,
    VAULT,
    add_user_identity,
    check_token,
    fetch,
    jwks_kids,
    jwks_url_from_discovery,
    local_issuer,
    system_identity,
    token_json,
)

API = "api-version=2018-02-01"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


node = node_fixture("--store", "memory:")


def jwks_url(server: ServerThread, tenant: str) -> str:
    return f"{server.admin_url}/{tenant}/discovery/keys"


def admin_raw(server: ServerThread, method: str, path: str, body: object = None) -> bytes:
    """The control plane's answer exactly as sent (status checked: 2xx)."""
    parts = urlsplit(server.admin_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Authorization": f"Bearer {server.token}"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        assert 200 <= response.status < 300, (method, path, response.status, data)
        return data
    finally:
        connection.close()


# --- lifetime -----------------------------------------------------------------------


def test_token_lifetime_setting() -> None:
    server = ServerThread("--store", "memory:", "--token-lifetime", "3600")
    try:
        system = system_identity(server)
        started = int(time.time())
        answer = token_json(server.port, f"{API}&resource={MANAGEMENT}")
        assert answer["ext_expires_in"] == "3599"
        assert int(answer["expires_on"]) - int(answer["not_before"]) == 3900
        assert 3590 <= int(answer["expires_in"]) <= 3600
        assert int(answer["expires_on"]) - started in range(3599, 3602)
        _, claims = check_token(answer["access_token"], MANAGEMENT, system, lifetime=3600)
        assert claims["exp"] - claims["nbf"] == 3900
        assert claims["exp"] == int(answer["expires_on"])
    finally:
        server.stop()


# --- rotation -----------------------------------------------------------------------


def test_rotation_publishes_both_keys_and_signs_with_the_new_one(node: ServerThread) -> None:
    system = system_identity(node)
    keys_url = jwks_url_from_discovery(local_issuer(node, system.tenant_id))
    old = token_json(node.port, f"{API}&resource={MANAGEMENT}")
    kid_a = check_token(old["access_token"], MANAGEMENT, system)[0]["kid"]
    assert jwks_kids(keys_url) == [kid_a]

    # Rotation is an admin act: no token, no rotation.
    assert refused(AdminClient(node.admin_url, "").rotate_keys).status == 401
    assert jwks_kids(keys_url) == [kid_a]

    kid_b = admin(node).rotate_keys()["kid"]
    assert kid_b != kid_a
    assert sorted(jwks_kids(keys_url)) == sorted([kid_a, kid_b])

    new = token_json(node.port, f"{API}&resource={MANAGEMENT}&bypass_cache=true")
    assert new["access_token"] != old["access_token"]
    assert check_token(new["access_token"], MANAGEMENT, system)[0]["kid"] == kid_b
    # A token for a resource not asked for before is signed with the new key too.
    fresh = token_json(node.port, f"{API}&resource={VAULT}")
    assert check_token(fresh["access_token"], VAULT, system)[0]["kid"] == kid_b
    # The old token still verifies: a service that cached it keeps accepting it.
    old_claims = check_token(old["access_token"], MANAGEMENT, system)[1]

    by_kid = {key["kid"]: key for key in admin(node).signing_keys()}
    assert set(by_kid) == {kid_a, kid_b}
    assert by_kid[kid_b]["active"] is True
    assert by_kid[kid_b]["retires"] is None
    assert by_kid[kid_a]["active"] is False
    assert isinstance(by_kid[kid_a]["retires"], int)
    # The old key stays published at least as long as its tokens are valid.
    assert by_kid[kid_a]["retires"] >= old_claims["exp"]


def test_rotation_reaches_user_assigned_identities(node: ServerThread) -> None:
    app = add_user_identity(node, "app")
    before = token_json(node.port, f"{API}&resource={VAULT}&client_id={app.client_id}")
    rotated = admin(node).rotate_keys()
    after = token_json(
        node.port, f"{API}&resource={VAULT}&client_id={app.client_id}&bypass_cache=true"
    )
    assert check_token(after["access_token"], VAULT, app)[0]["kid"] == rotated["kid"]
    assert check_token(before["access_token"], VAULT, app)[0]["kid"] != rotated["kid"]


def test_jwks_certificates_match_the_keys(node: ServerThread) -> None:
    # Verifiers that use x5c (or match x5t to a certificate) must find the same key.
    tenant = system_identity(node).tenant_id
    admin(node).rotate_keys()
    answer = token_json(node.port, f"{API}&resource={MANAGEMENT}")
    keys = json.loads(fetch(jwks_url(node, tenant))[1])["keys"]
    assert len(keys) == 2
    for key in keys:
        assert key["use"] == "sig"
        assert key["alg"] == "RS256"
        der = base64.b64decode(key["x5c"][0])
        certificate = x509.load_der_x509_certificate(der)
        assert (
            base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
            == (key["x5t"])
        )
        numbers = certificate.public_key().public_numbers()
        from_jwk = jwt.PyJWK(key).key.public_numbers()
        assert (numbers.n, numbers.e) == (from_jwk.n, from_jwk.e)
        assert certificate.not_valid_after_utc.timestamp() > time.time() + 86400
    signer = next(
        k for k in keys if k["kid"] == jwt.get_unverified_header(answer["access_token"])["kid"]
    )
    certificate = x509.load_der_x509_certificate(base64.b64decode(signer["x5c"][0]))
    claims = jwt.decode(
        answer["access_token"], certificate.public_key(), algorithms=["RS256"], audience=MANAGEMENT
    )
    assert claims["aud"] == MANAGEMENT


# --- persistence and secrecy --------------------------------------------------------


def test_signing_key_survives_a_restart() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="azimds-keys-"))
    first = ServerThread(state_dir=state_dir)
    try:
        system = system_identity(first)
        answer = token_json(first.port, f"{API}&resource={MANAGEMENT}")
        kids = jwks_kids(jwks_url(first, system.tenant_id))
        kid = check_token(answer["access_token"], MANAGEMENT, system)[0]["kid"]
        assert kids == [kid]
    finally:
        first.stop()

    second = ServerThread(state_dir=state_dir)
    try:
        assert jwks_kids(jwks_url(second, system.tenant_id)) == [kid]
        # Same identity, same key: a token from before the restart still verifies.
        assert system_identity(second) == system
        check_token(
            answer["access_token"], MANAGEMENT, system, jwks_url=jwks_url(second, system.tenant_id)
        )
        again = token_json(second.port, f"{API}&resource={MANAGEMENT}&bypass_cache=true")
        assert check_token(again["access_token"], MANAGEMENT, system)[0]["kid"] == kid
    finally:
        second.stop()


def test_rotation_survives_a_restart() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="azimds-keys-"))
    first = ServerThread(state_dir=state_dir)
    try:
        tenant = system_identity(first).tenant_id
        kid_a = jwks_kids(jwks_url(first, tenant))[0]
        rotated = admin(first).rotate_keys()
    finally:
        first.stop()
    second = ServerThread(state_dir=state_dir)
    try:
        assert sorted(jwks_kids(jwks_url(second, tenant))) == sorted([kid_a, rotated["kid"]])
        answer = token_json(second.port, f"{API}&resource={MANAGEMENT}")
        assert jwt.get_unverified_header(answer["access_token"])["kid"] == rotated["kid"]
    finally:
        second.stop()


def test_private_key_never_leaves_the_node() -> None:
    server = ServerThread()  # sqlite: the key is on disk
    try:
        tenant = system_identity(server).tenant_id
        answers = [
            admin_raw(server, "GET", "/v1/keys"),
            admin_raw(server, "POST", "/v1/keys/rotate"),
            admin_raw(server, "GET", "/v1/keys"),
            admin_raw(server, "GET", "/v1/status"),
            admin_raw(server, "GET", "/v1/vms"),
            admin_raw(server, "GET", "/v1/vms/examplevmname"),
            admin_raw(server, "GET", "/v1/vms/examplevmname/identities"),
            admin_raw(server, "POST", "/v1/vms/examplevmname/identities", {"name": "app"}),
            admin_raw(server, "GET", "/openapi.json"),
            admin_raw(server, "GET", "/discovery/keys"),
            admin_raw(server, "GET", f"/{tenant}/discovery/keys"),
            admin_raw(server, "GET", f"/{tenant}/.well-known/openid-configuration"),
        ]
        for body in answers:
            assert b"PRIVATE KEY" not in body
            assert b"privateKey" not in body
        for url in (f"{server.admin_url}/discovery/keys", jwks_url(server, tenant)):
            status, body = fetch(url)
            assert status == 200
            keys = json.loads(body)["keys"]
            assert len(keys) == 2
            for key in keys:
                assert not PRIVATE_JWK_MEMBERS & set(key), key
                assert key["kty"] == "RSA"
                assert key["kid"] == key["x5t"]

        database = server.state_dir / "azimds.db"
        assert database.exists()
        assert database.stat().st_mode & 0o777 == 0o600
        # SQLite's WAL and shared-memory files hold the same data.
        for companion in server.state_dir.glob("azimds.db-*"):
            assert companion.stat().st_mode & 0o777 == 0o600, companion
        assert server.state_dir.stat().st_mode & 0o777 == 0o700
    finally:
        server.stop()


# --- issuer -------------------------------------------------------------------------


def test_issuer_azure() -> None:
    server = ServerThread("--store", "memory:", "--issuer", "azure")
    try:
        system = system_identity(server)
        answer = token_json(server.port, f"{API}&resource={MANAGEMENT}")
        issuer = f"https://sts.windows.net/{system.tenant_id}/"
        # sts.windows.net is not reachable here: verify against the node's own JWKS.
        _, claims = check_token(
            answer["access_token"],
            MANAGEMENT,
            system,
            issuer=issuer,
            jwks_url=jwks_url(server, system.tenant_id),
        )
        assert claims["idp"] == issuer
        status, body = fetch(
            f"{server.admin_url}/{system.tenant_id}/.well-known/openid-configuration"
        )
        assert status == 200
        assert json.loads(body)["issuer"] == issuer
    finally:
        server.stop()


def test_issuer_local_is_the_control_plane(node: ServerThread) -> None:
    system = system_identity(node)
    answer = token_json(node.port, f"{API}&resource={MANAGEMENT}")
    issuer = local_issuer(node, system.tenant_id)
    _, claims = check_token(answer["access_token"], MANAGEMENT, system, issuer=issuer)
    assert claims["idp"] == issuer
    assert jwks_url_from_discovery(issuer) == jwks_url(node, system.tenant_id)
