"""``fusionctl tasks output TASK [-o FILE]``: download a succeeded task's output.

The API streams a local output itself and answers an ``s3://`` or ``az://``
one with a 307 to a short-lived presigned URL; this command follows that
redirect itself, *without* the API token (the store needs none, and a bearer
token must never travel to a third party). The file is written beside its
final name and renamed when complete, so an interrupted download leaves no
half file under the name asked for.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click
import httpx

from controlplane.cli.client import EXIT_API_ERROR, EXIT_UNREACHABLE, client_options
from controlplane.cli.tasks.listing import tasks
from controlplane.cli.tasks.session import api_session, task_path

__all__ = ["output"]

_CHUNK = 1 << 20
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _default_name(response: httpx.Response, task_id: str) -> str:
    """The server's file name (Content-Disposition) or the URL's last segment, made safe for this folder."""
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = unquote(found.group(1)) if found else unquote(urlsplit(str(response.url)).path.rpartition("/")[2])
    safe = _SAFE.sub("_", name.rpartition("/")[2]).lstrip(".")
    return safe or f"{_SAFE.sub('_', task_id)}.out"


def _save(chunks: Iterator[bytes], destination: str) -> int:
    """Write ``chunks`` to ``destination`` (``-``: stdout) all or nothing; the bytes written."""
    if destination == "-":
        written = 0
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
            written += len(chunk)
        sys.stdout.buffer.flush()
        return written
    final = Path(destination)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    try:
        written = 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return written


@tasks.command("output")
@click.argument("task_id")
@click.option(
    "-o",
    "--output",
    "destination",
    default=None,
    metavar="FILE",
    help="Where to write it ('-': stdout); default: the output's own name in this folder.",
)
@client_options
def output(task_id: str, destination: str | None, url: str, token: str | None) -> None:
    """Download a succeeded task's output (local outputs through the API, cloud ones from their store)."""
    link = None
    with api_session(url, token) as client, client.stream("GET", task_path(task_id, "/output")) as answer:
        if answer.is_redirect:
            link = answer.headers["location"]
        else:
            target = destination or _default_name(answer, task_id)
            size = _save(answer.iter_bytes(_CHUNK), target)
    if link is not None:
        target, size = _from_store(link, task_id, destination)
    if target != "-":
        click.echo(f"{target}: {size} bytes", err=True)


def _from_store(link: str, task_id: str, destination: str | None) -> tuple[str, int]:
    """Read a presigned URL with a client of its own (no API token, no base URL): where it went, its size."""
    try:
        with httpx.Client(timeout=60.0) as store, store.stream("GET", link) as answer:
            if answer.status_code >= 400:
                click.echo(f"error: output: the store answered HTTP {answer.status_code}", err=True)
                sys.exit(EXIT_API_ERROR)
            target = destination or _default_name(answer, task_id)
            return target, _save(answer.iter_bytes(_CHUNK), target)
    except httpx.HTTPError as exc:
        click.echo(f"error: output: cannot read it from its store: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
