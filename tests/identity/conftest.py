"""Fixtures for the identity tests."""

from __future__ import annotations

import os

import pytest

# Helpers' asserts explain themselves too.
pytest.register_assert_rewrite("tests.identity.support")


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment: no other managed-identity source, no proxy."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("AZURE_", "IDENTITY_", "MSI_", "MSAL_", "IMDS_")) or upper in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return monkeypatch
