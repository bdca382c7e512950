"""Steering SQLite's query planner where it guesses wrong without statistics.

The store never runs ``ANALYZE``, so SQLite plans with its built-in guesses:
an equality on the first column of any index looks as selective as a
primary-key lookup. ``UPDATE tasks ... WHERE id IN (:ids) AND state =
'queued'`` then walks the state index over every queued task (thousands in
a burst) instead of looking up the few ids; at 100,000 launch-day tasks
that walk cost 1-3.5 ms a statement, each batch. :func:`unindexed` marks a
term that must only filter the rows another term found: on SQLite it is
written ``+column`` (the unary plus is a no-op on any value and, as SQLite
documents, disqualifies the term from driving an index); on PostgreSQL,
which plans from the statistics autovacuum keeps, it is the column itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["unindexed"]


class _Unindexed(ColumnElement[Any]):
    """A column that filters but never picks the index (see the module docstring)."""

    inherit_cache = True
    # SQLAlchemy reads this list to build the statement cache key (the wrapped column is part of it)
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012 (SQLAlchemy's protocol)

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


def unindexed(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` as a term no index serves on SQLite (``+column``); unchanged on other databases."""
    return _Unindexed(column)


@compiles(_Unindexed)
def _as_is(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_Unindexed, "sqlite")
def _plus(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)
