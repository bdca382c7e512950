"""``fusionctl submit``'s inputs: a URI passes through, anything else is a file on this machine.

Resolving a relative path against the caller's folder, saying "no such file"
and refusing a text file called ``face.png`` are this side's job: the API
cannot see the caller's files, and its answer to a path it does not hold
(outside your input folder) would be true but of no help. A file on the API's
own machine is named with ``file://``, which is passed as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from faceswap.containers import check_content
from faceswap.errors import UnsupportedMedia
from faceswap.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = ["is_uri", "local_input", "target_kind"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: str) -> bool:
    return _URI.match(value) is not None


def target_kind(target: str, kind: str | None) -> str:
    """``image`` or ``video``: ``--kind``, else what the API infers from the suffix; ``media`` when unclear."""
    if kind is not None:
        return kind
    suffix = Path(target).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return "video" if suffix in VIDEO_SUFFIXES else "media"


def local_input(value: str, *, option: str, wanted: str) -> Path:
    """The file ``value`` names, resolved against the current folder and checked to hold ``wanted`` media.

    ``wanted`` is ``image`` or ``video``. A usage error naming ``option``
    when there is no such file, it is not a file, or its first bytes are not
    that kind of media.
    """
    path = Path(value).expanduser().absolute()
    if not path.exists():
        hint = " (a file on the API's machine is given as file://PATH)" if Path(value).is_absolute() else ""
        raise click.BadParameter(f"no such file: {value}{hint}", param_hint=option)
    if not path.is_file():
        raise click.BadParameter(f"{value} is not a file", param_hint=option)
    try:
        check_content(path, field=option, wanted=wanted)
    except UnsupportedMedia as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None
    except OSError as exc:
        raise click.BadParameter(f"{value} cannot be read: {exc.strerror or exc}", param_hint=option) from None
    return path
