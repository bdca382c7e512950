"""Reading a simulator input file (trace, price history) whole, with a size cap checked before reading.

Shared by :mod:`simulator.traces` and :mod:`simulator.prices`; each turns
:class:`InputFileRefused` into its own error that names the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["InputFileRefused", "read_capped"]


class InputFileRefused(ValueError):
    """The file could not be read, is not a regular file, or is over the cap; the text says which."""


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The whole of ``path``, refused (:class:`InputFileRefused`) when it holds more than ``max_bytes``.

    Symbolic links are followed: these are an operator's own scenario inputs,
    not a tenant's. The size is checked on the opened descriptor (so a file
    swapped after a path check is still measured), and the read stops one byte
    past the cap in case the file grows while it is read.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before the check below
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as stream:
            status = os.fstat(stream.fileno())
            # a FIFO or a device would block or never end: only regular files are inputs
            if not stat.S_ISREG(status.st_mode):
                raise InputFileRefused("not a regular file")
            if status.st_size > max_bytes:
                raise InputFileRefused(f"file is {status.st_size} bytes, over the cap of {max_bytes}")
            content = stream.read(max_bytes + 1)
    except OSError as error:
        raise InputFileRefused(f"cannot read: {error.strerror or error}") from error
    if len(content) > max_bytes:
        raise InputFileRefused(f"file grew past the cap of {max_bytes} bytes while being read")
    return content
