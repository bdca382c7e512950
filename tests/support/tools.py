"""Command-line tools the dev extras install next to the interpreter (hadolint, kubectl, ...)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

__all__ = ["dev_tool"]


def dev_tool(name: str, *, package: str) -> str:
    """The path of ``name`` from this virtual environment (``make test`` does not activate it), else the PATH.

    A missing tool fails the test naming the package that brings it: a skipped
    check would pass CI without having run.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: it comes with the dev extras ({package} in setup.cfg)")
    return found
