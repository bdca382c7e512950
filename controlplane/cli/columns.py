"""Plain aligned columns for the CLI's tables: no colours, no wrapping; readable, greppable, stable in a pipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["cell", "table"]


def cell(value: Any) -> str:
    """One value as a table shows it: ``-`` for nothing, ``yes``/``no``, floats without trailing zeros."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "") -> None:
    """``headers`` and ``rows`` in columns as wide as their widest cell, each line after ``indent``."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
