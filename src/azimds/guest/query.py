"""Query-string parsing with the IMDS rules: duplicate names are an error, and so is a query
over the limits (``defaults.MAX_QUERY_LENGTH`` bytes, ``defaults.MAX_QUERY_PARAMETERS``)."""

from __future__ import annotations

from urllib.parse import parse_qsl

# A query string: bytes as sent, and parameters. Beyond either: the family's query 400. Real
# clients send at most six parameters and well under 1 KB (a token request naming an identity
# by its resource id is the longest).
MAX_QUERY_LENGTH = 4096
MAX_QUERY_PARAMETERS = 64


class QueryRefused(ValueError):
    """A query the service refuses with the family's query 400 ("Unexpected request. Please
    check the query parameters and retry.")."""


class DuplicateParameter(QueryRefused):
    """A name given twice (in any case)."""


class QueryTooLong(QueryRefused):
    """More than ``MAX_QUERY_LENGTH`` bytes, as sent."""


class TooManyParameters(QueryRefused):
    """More than ``MAX_QUERY_PARAMETERS`` parameters."""


def parse_query(raw: bytes) -> dict[str, str]:
    """Parameters by lower-cased name, values percent-decoded (raw and encoded forms alike).

    Names compare case-insensitively, as on the service's ASP.NET front end, so
    ``api-version=a&API-VERSION=b`` is a duplicate.
    """
    params: dict[str, str] = {}
    if not raw:
        return params
    if len(raw) > MAX_QUERY_LENGTH:
        raise QueryTooLong(len(raw))
    text = raw.decode("utf-8", "replace")
    pairs = parse_qsl(text, keep_blank_values=True, errors="replace")
    if len(pairs) > MAX_QUERY_PARAMETERS:
        raise TooManyParameters(len(pairs))
    for name, value in pairs:
        key = name.lower()
        if key in params:
            raise DuplicateParameter(key)
        params[key] = value
    return params
