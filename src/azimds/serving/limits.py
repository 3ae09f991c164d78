"""The HTTP servers' limits (docs/behaviour.md, "Malformed requests and limits").

`protocol.py` and `parse.py` enforce them for the guest plane, granian for the control plane
(`asgi.py`). The guest plane's query limits are its query parser's (guest/query.py);
scheduled events' body limit (64 KB, IMDS's documented "MaxBodyLength") is the endpoint's.
"""

from __future__ import annotations

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
