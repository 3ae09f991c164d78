"""Settings for the identity tests (sdk_env, the clean SDK environment, is tests/conftest.py's)."""

from __future__ import annotations

import pytest

# Helpers' asserts explain themselves too.
pytest.register_assert_rewrite("tests.guest.identity.support")
