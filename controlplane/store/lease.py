"""The scheduler's leader lease and the fencing token every scheduler write checks.

Several ``fusionctl serve`` replicas share one database. All of them serve
the API; one, the holder of the ``scheduler`` lease, claims, launches and
follows attempts. The lease is one row: ``holder`` (the replica's name),
``expires_at`` (renewed while the holder lives) and ``token``, which grows
by one every time the lease changes hands.

The holder hands its scheduler a **fenced** store (:meth:`Store.fenced`):
every write transaction of that store first reads the lease row (``FOR
SHARE`` on PostgreSQL, so a takeover waits for writes in flight, and SQLite
has one writer at a time anyway) and refuses to go on with :class:`Fenced`
unless holder and token are still its own. A leader that stalled (GC pause,
network partition, SIGSTOP) past its lease and was replaced therefore
cannot claim, create or change an attempt any more: its first write after
the takeover fails, and the replica steps down.

Expiry compares the replicas' clocks with the stored times, like a
Kubernetes ``Lease``: keep the replicas' clocks in sync (NTP); a skew
shorter than the renew margin (a third of the lease) is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.store.core import StoreCore
from controlplane.store.fence import Fence, Fenced
from controlplane.store.tables import leader_lease

__all__ = ["SCHEDULER_LEASE", "Fence", "Fenced", "LeaseState", "LeaderLease"]

#: the one lease FusionPlane uses: who runs the scheduler
SCHEDULER_LEASE = "scheduler"

#: the store a lease is kept on (a :class:`~controlplane.store.Store`; its fenced copies keep the type)
StoreT = TypeVar("StoreT", bound=StoreCore)


@dataclass(frozen=True, kw_only=True)
class LeaseState:
    """The lease row as one replica saw it."""

    name: str
    holder: str
    token: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    #: whether the replica that asked holds it
    mine: bool

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holder": self.holder,
            "token": self.token,
            "acquired_at": self.acquired_at.isoformat(),
            "renewed_at": self.renewed_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "mine": self.mine,
        }


class LeaderLease(Generic[StoreT]):
    """Acquire, renew and give back one lease row on ``store`` (an unfenced store)."""

    def __init__(self, store: StoreT, *, holder: str, seconds: float, name: str = SCHEDULER_LEASE) -> None:
        if not holder or len(holder) > 256:
            raise ValueError("the lease holder must be 1 to 256 characters")
        if not 0 < seconds <= 86_400:
            raise ValueError(f"the lease must last more than 0 and at most 86400 seconds, not {seconds}")
        self.store, self.holder, self.seconds, self.name = store, holder, seconds, name

    def acquire(self) -> LeaseState:
        """Take the lease if it is free or expired, renew it if it is ours; the row as it is afterwards.

        The token grows only when the holder changes: a holder renewing (or
        coming back to its own expired lease nobody took) keeps it, since no
        other replica wrote in between.
        """
        for _ in range(2):  # two replicas creating the first row at once: the loser reads the winner's
            try:
                return self._acquire_once()
            except IntegrityError:
                continue
        return self._acquire_once()

    def _acquire_once(self) -> LeaseState:
        store = self.store
        now = store.now()
        until = now + timedelta(seconds=self.seconds)
        with store.write() as conn:
            row = conn.execute(store.locked(select(leader_lease).where(leader_lease.c.name == self.name))).one_or_none()
            if row is None:
                conn.execute(
                    insert(leader_lease).values(
                        name=self.name, holder=self.holder, token=1, acquired_at=now, renewed_at=now, expires_at=until
                    )
                )
            elif row.holder == self.holder:
                conn.execute(
                    update(leader_lease)
                    .where(leader_lease.c.name == self.name)
                    .values(renewed_at=now, expires_at=until)
                )
            elif row.expires_at <= now:
                conn.execute(
                    update(leader_lease)
                    .where(leader_lease.c.name == self.name)
                    .values(
                        holder=self.holder,
                        token=int(row.token) + 1,
                        acquired_at=now,
                        renewed_at=now,
                        expires_at=until,
                    )
                )
            current = conn.execute(select(leader_lease).where(leader_lease.c.name == self.name)).one()
        return self._state(current)

    def resign(self) -> bool:
        """Let the lease expire now if it is ours (a clean shutdown): another replica takes over at once."""
        store = self.store
        now = store.now()
        with store.write() as conn:
            done = conn.execute(
                update(leader_lease)
                .where(leader_lease.c.name == self.name, leader_lease.c.holder == self.holder)
                .values(expires_at=now, renewed_at=now)
            )
        return bool(done.rowcount)

    def read(self) -> LeaseState | None:
        """The lease row now, or None when nobody ever held it."""
        with self.store.read() as conn:
            row = conn.execute(select(leader_lease).where(leader_lease.c.name == self.name)).one_or_none()
        return None if row is None else self._state(row)

    def _state(self, row: Any) -> LeaseState:
        return LeaseState(
            name=row.name,
            holder=row.holder,
            token=int(row.token),
            acquired_at=row.acquired_at,
            renewed_at=row.renewed_at,
            expires_at=row.expires_at,
            mine=row.holder == self.holder,
        )
