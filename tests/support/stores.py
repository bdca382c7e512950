"""A migrated store on a new SQLite file, for the tests that need SQLite itself (its plans, one process's files)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from controlplane.store import Store, make_engine, upgrade

__all__ = ["sqlite_store"]


@contextmanager
def sqlite_store(path: Path) -> Iterator[Store]:
    """The store on a new SQLite database at ``path``, migrated to head; its engine disposed on the way out."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine=engine)
    try:
        yield Store(engine)
    finally:
        engine.dispose()
