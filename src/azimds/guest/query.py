"""Query-string parsing with the IMDS rules: duplicate names are an error."""

from __future__ import annotations

from urllib.parse import parse_qsl


class DuplicateParameter(ValueError):
    pass


def parse_query(raw: bytes) -> dict[str, str]:
    """Parameters by lower-cased name, values percent-decoded (raw and encoded forms alike).

    Names compare case-insensitively, as on the service's ASP.NET front end, so
    ``api-version=a&API-VERSION=b`` is a duplicate.
    """
    params: dict[str, str] = {}
    if not raw:
        return params
    text = raw.decode("utf-8", "replace")
    for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        key = name.lower()
        if key in params:
            raise DuplicateParameter(key)
        params[key] = value
    return params
