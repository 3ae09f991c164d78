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
