"""What both clients need from httpx: its clients, made to bypass proxies, and its answers
turned into ``Reply``. The only module of the package besides the two clients that imports
httpx."""

from __future__ import annotations

import httpx

from azimds.client.protocol import Reply, Send

# Connection refused or reset, timeouts, malformed answers: no answer to retry.
NO_ANSWER = (httpx.TransportError,)


def sync_client(external: bool, *, transport: httpx.BaseTransport | None) -> httpx.Client:
    """``trust_env=False`` for IMDS: no HTTP(S)_PROXY, ALL_PROXY or .netrc, ever (the
    documentation says to bypass proxies; a proxy cannot reach 169.254.169.254 anyway).
    ``external`` (an issuer certificate on the internet) keeps the environment's proxies."""
    return httpx.Client(trust_env=external, follow_redirects=external, transport=transport)


def async_client(
    external: bool, *, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """As ``sync_client``."""
    return httpx.AsyncClient(trust_env=external, follow_redirects=external, transport=transport)


def build(client: httpx.Client | httpx.AsyncClient, step: Send) -> httpx.Request:
    request = step.request
    return client.build_request(
        request.method,
        request.url,
        headers=list(request.headers),
        content=request.body,
        timeout=httpx.Timeout(step.timeout),
    )


def reply_of(response: httpx.Response, step: Send) -> Reply:
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Reply(response.status_code, headers, response.content, step.request.url)
