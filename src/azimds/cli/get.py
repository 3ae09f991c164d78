"""``azimds get PATH``: ask IMDS (the real one or azimds) as curl would, but correctly."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import click

from azimds.cli.common import local_guest_url, main, state_dir_of
from azimds.client.protocol import SDK_ENDPOINT_ENV

if TYPE_CHECKING:
    from azimds.client import Reply

# Exit codes besides 0 (a 2xx answer) and click's 2 (usage).
EXIT_ERROR_ANSWER = 1  # the service answered with another status
EXIT_NO_ANSWER = 3  # nothing answered: refused, reset or timed out, retries spent
# The whole call's default: an interactive command gives up well before the library's 90 s
# (which rides out 70 s of 410s), and says why.
DEFAULT_DEADLINE = 30.0


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise click.BadParameter(f"'{text}' is not a header; write 'Name: value'")
    return name.strip(), value.strip()


def _head(reply: Reply) -> str:
    lines = [f"HTTP {reply.status}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    return "\n".join(lines) + "\n\n"


def _shown(reply: Reply, raw: bool) -> bytes:
    """The body as printed: JSON indented (unless ``raw``), text with a final newline."""
    if raw or not reply.body:
        return reply.body
    if reply.content_type == "application/json":
        try:
            document: Any = json.loads(reply.body)
        except ValueError:
            pass
        else:
            return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    return reply.body if reply.body.endswith(b"\n") else reply.body + b"\n"


@contextlib.contextmanager
def _retries_shown() -> Iterator[None]:
    """Print the client's retries (``azimds.client``'s log) on stderr while the call runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("azimds get: %(message)s"))
    log = logging.getLogger("azimds.client")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _leaf_refused(reply: Reply, verb: str, path: str, params: list[tuple[str, str]]) -> bool:
    """A GET below /metadata/instance, with no format asked for, refused with a 400 that is
    not about the api-version: the leaf-needs-text answer (its wording is UNCONFIRMED)."""
    from azimds.client.errors import newest_versions
    from azimds.client.protocol import metadata_path

    below = [s for s in metadata_path(path).split("/") if s][1:]
    return (
        reply.status == 400
        and verb == "GET"
        and len(below) > 1
        and below[0].lower() == "instance"
        and not any(k == "format" for k, _ in params)
        and not newest_versions(reply.body)
    )


@main.command()
@click.argument("path")
@click.option(
    "--format",
    "-f",
    "output_format",
    type=click.Choice(["json", "text"]),
    help="Ask for format=json or format=text (leaves of /metadata/instance need text).",
)
@click.option(
    "--api-version",
    metavar="V",
    help="Send this api-version as it is (default: a recent one per endpoint, negotiated "
    "down if the service refuses it).",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help=f"The IMDS base URL. [env: {SDK_ENDPOINT_ENV}; default: the node in --state-dir "
    "if one runs there, else http://169.254.169.254]",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Where to look for a local node (where `azimds serve` wrote admin.json), used when "
    "no endpoint is given. [env: AZIMDS_STATE_DIR]",
)
@click.option(
    "--header", "-H", "headers", multiple=True, metavar="'NAME: VALUE'", help="Add a header."
)
@click.option("--method", "-X", type=click.Choice(["GET", "POST"], case_sensitive=False))
@click.option(
    "--data", "-d", metavar="BODY", help="Send BODY (POST), e.g. a scheduled-events approval."
)
@click.option("--raw", is_flag=True, help="Print the body exactly as it came.")
@click.option("--include", "-i", is_flag=True, help="Print the status line and headers too.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds for one try (see --deadline for the whole call).",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_DEADLINE,
    show_default=True,
    help="Seconds for the whole call, retries and waits included.",
)
@click.option("--no-retry", is_flag=True, help="Try once: no retries, no waiting.")
@click.pass_context
def get(
    ctx: click.Context,
    path: str,
    output_format: str | None,
    api_version: str | None,
    endpoint: str | None,
    state_dir: Path | None,
    headers: tuple[str, ...],
    method: str | None,
    data: str | None,
    raw: bool,
    include: bool,
    timeout: float,
    deadline: float,
    no_retry: bool,
) -> None:
    """Ask IMDS for PATH and print the answer, as curl would, but correctly: with the
    Metadata header, bypassing proxies, with an api-version (negotiated), retrying 410, 429,
    5xx and connection errors as Microsoft advises.

    \b
      azimds get instance                          # /metadata/instance, JSON indented
      azimds get instance/compute/vmId             # a leaf: asked again with format=text
      azimds get instance/compute -f text          # a listing
      azimds get 'identity/oauth2/token?resource=https://vault.azure.net'
      azimds get scheduledevents
      azimds get scheduledevents -d '{"StartRequests":[{"EventId":"..."}]}'
      azimds get versions --endpoint http://127.0.0.1:16925

    PATH may start with /metadata or leave it out, and may carry a query. IMDS is the one
    given (--endpoint or $AZURE_POD_IDENTITY_AUTHORITY_HOST), else the node running in the
    state directory (said on stderr), else 169.254.169.254. Each retry is said on stderr.
    Exit status: 0 on a 2xx answer (printed on stdout), 1 on any other answer (its body on
    stderr), 3 when nothing answered (the reason and the fix on stderr).
    """
    from azimds.client import IMDSClient, IMDSConnectionError, RetryPolicy
    from azimds.client.protocol import given_endpoint

    chosen = given_endpoint(endpoint)
    if chosen is None:
        chosen = local_guest_url(ctx)
        if chosen is not None:
            click.echo(f"azimds get: asking the node in {state_dir_of(ctx)}: {chosen}", err=True)

    parts = urlsplit(path)
    params = parse_qsl(parts.query, keep_blank_values=True)
    if output_format is not None:
        params = [(k, v) for k, v in params if k != "format"] + [("format", output_format)]
    verb = (method or ("POST" if data is not None else "GET")).upper()
    policy = (
        RetryPolicy.never(timeout=timeout)
        if no_retry
        else RetryPolicy(timeout=min(timeout, deadline), deadline=deadline)
    )
    body = data.encode("utf-8") if data is not None else None
    extra = [_header(h) for h in headers]
    try:
        imds = IMDSClient(chosen, retry=policy)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--endpoint") from exc
    with imds, _retries_shown():
        try:
            reply = imds.request(
                verb, parts.path, params=params, body=body, api_version=api_version, headers=extra
            )
            if _leaf_refused(reply, verb, parts.path, params):
                # A leaf of /metadata/instance answers only format=text: ask for that.
                text = imds.request(
                    verb,
                    parts.path,
                    params=[*params, ("format", "text")],
                    api_version=api_version,
                    headers=extra,
                )
                reply = text if text.ok else reply
        except IMDSConnectionError as exc:
            click.echo(f"azimds get: {exc}", err=True)
            click.echo(
                f"azimds get: nothing answers at {imds.endpoint}. Fix: start a node "
                f"(`azimds serve`; found through --state-dir), or give --endpoint URL or set "
                f"{SDK_ENDPOINT_ENV}",
                err=True,
            )
            sys.exit(EXIT_NO_ANSWER)
    stream = sys.stdout.buffer if reply.ok else sys.stderr.buffer
    if include:
        stream.write(_head(reply).encode("utf-8"))
    stream.write(_shown(reply, raw))
    stream.flush()
    if not reply.ok:
        sys.exit(EXIT_ERROR_ANSWER)
