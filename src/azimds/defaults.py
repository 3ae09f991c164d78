"""Defaults that more than one room needs, in one place."""

from __future__ import annotations

# Where `azimds serve` listens when not told otherwise: loopback, and a port that reads as
# the link-local address it stands in for (169.25[4]).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 16925

# The real service's Server header (build seen in 2026 captures, reference section 1).
IMDS_SERVER_HEADER = "IMDS/150.870.65.1854"
# The IIS front end that answers unknown verbs and paths outside /metadata.
IIS_SERVER_HEADER = "Microsoft-IIS/10.0"

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

# --- HTTP limits (docs/behaviour.md, "Malformed requests and limits") ---------------------
# The HTTP servers enforce the first four (http1.py for the guest plane, granian for the
# control plane, both set up in server.py); the guest plane's query parser the last two
# (guest/query.py). Scheduled events' body limit (64 KB, IMDS's documented
# "MaxBodyLength") is the endpoint's: guest/events.py MAX_BODY.

# Bytes of a request's head (request line and headers). Beyond: 431 and the connection closes.
# What http.sys, the real service's front end, allows by default (MaxRequestBytes, 16 KB).
MAX_REQUEST_HEAD = 16 * 1024
# Seconds a client has to send a request's head (from connecting, or from the previous answer
# on a kept-alive connection: idle connections close after it), and again to send its body.
# The `request_timeout` setting; local clients send a request in well under a second.
REQUEST_TIMEOUT = 10.0
# Connections each listener serves at once (more wait in the listen backlog). granian's
# default, 128, let 128 idle or slow connections stall every other client.
MAX_CONNECTIONS = 4096
# Connections one client address may have open on the guest plane at once (all listeners of a
# node together); more are closed as they come. The `connections_per_client` setting. Real
# clients use a handful (azure-identity and msal one or two; cloud-init and the agent one).
MAX_CONNECTIONS_PER_CLIENT = 64
LISTEN_BACKLOG = 1024
# A query string: bytes as sent, and parameters. Beyond either: the family's query 400. Real
# clients send at most six parameters and well under 1 KB (a token request naming an identity
# by its resource id is the longest).
MAX_QUERY_LENGTH = 4096
MAX_QUERY_PARAMETERS = 64
