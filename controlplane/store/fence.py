"""The fencing token every write of a leading scheduler's store checks (see :mod:`controlplane.store.lease`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from controlplane.store.errors import StoreError
from controlplane.store.tables import leader_lease

__all__ = ["Fence", "Fenced"]


class Fenced(StoreError):
    """A write of a replica that no longer holds the lease (its token is not the current one)."""

    def __init__(self, fence: Fence, *, holder: str | None, token: int | None) -> None:
        now_held = f"held by {holder} with token {token}" if holder is not None else "not held"
        super().__init__(
            f"lease {fence.name!r} was taken over: this replica ({fence.holder}, token {fence.token}) "
            f"may no longer schedule; it is {now_held}"
        )
        self.fence, self.holder, self.token = fence, holder, token


@dataclass(frozen=True)
class Fence:
    """What a fenced store checks before each write: this lease still has this holder and token."""

    name: str
    holder: str
    token: int

    def check(self, conn: Connection, *, postgres: bool) -> None:
        """Raise :class:`Fenced` unless the lease row still names this holder and token."""
        stmt = select(leader_lease.c.holder, leader_lease.c.token).where(leader_lease.c.name == self.name)
        if postgres:
            # a shared row lock: a takeover's UPDATE waits until this write commits or rolls back
            stmt = stmt.with_for_update(read=True)
        row = conn.execute(stmt).one_or_none()
        if row is None or row.holder != self.holder or int(row.token) != self.token:
            raise Fenced(
                self, holder=None if row is None else row.holder, token=None if row is None else int(row.token)
            )
