"""Defaults that more than one room needs, in one place."""

from __future__ import annotations

# Where `azimds serve` listens when not told otherwise: loopback, and a port that reads as
# the link-local address it stands in for (169.25[4]).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 16925

# The real service's Server header (build seen in 2026 captures, reference section 1).
IMDS_SERVER_HEADER = b"IMDS/150.870.65.1854"
# The IIS front end that answers unknown verbs and paths outside /metadata.
IIS_SERVER_HEADER = b"Microsoft-IIS/10.0"

# Environment variable azure-identity, msal and @azure/identity read for the IMDS address.
SDK_ENDPOINT_ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"

# The control plane's default address: the next port up, on loopback only.
DEFAULT_ADMIN_PORT = 16926

# The tenant of identities that do not name one: a fixed, made-up directory id, the same on
# every node, so tokens and `/metadata/identity/info` agree across a fleet.
DEFAULT_TENANT_ID = "7f5c1b7e-2f41-4c9b-9d52-1a3e6b0c8d24"

# Managed-identity tokens: lifetime, and how long before expiry a cached token is replaced.
DEFAULT_TOKEN_LIFETIME = 86400  # seconds; real tokens live about 24 h
TOKEN_REFRESH_MARGIN = 300  # seconds
# Real tokens' not_before lies this far before issue (expires_on - not_before = 86700).
TOKEN_NOT_BEFORE_SKEW = 300
