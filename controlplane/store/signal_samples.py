"""Signal samples: the history of polled signal values, appended, read newest first, and pruned."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select

from controlplane.domain import SignalSample
from controlplane.store.core import StoreCore
from controlplane.store.tables import signal_samples

__all__ = ["prune_signal_samples", "record_signal_samples", "signal_history"]


def record_signal_samples(core: StoreCore, samples: Sequence[SignalSample]) -> int:
    """Append polled values to the history; returns how many."""
    if not samples:
        return 0
    rows = [
        {"source": s.source, "key": s.key[:256], "value": s.value, "observed_at": s.observed_at}
        for s in samples
        if s.value == s.value  # NaN never reaches the history (sources drop it; this is the last guard)
    ]
    if rows:
        with core.write() as conn:
            conn.execute(insert(signal_samples), rows)
    return len(rows)


def signal_history(
    core: StoreCore,
    *,
    source: str | None = None,
    key: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[tuple[str, str, float, datetime]]:
    """(source, key, value, observed_at), newest first."""
    stmt = select(signal_samples.c.source, signal_samples.c.key, signal_samples.c.value, signal_samples.c.observed_at)
    if source is not None:
        stmt = stmt.where(signal_samples.c.source == source)
    if key is not None:
        stmt = stmt.where(signal_samples.c.key == key)
    if since is not None:
        stmt = stmt.where(signal_samples.c.observed_at >= since)
    stmt = stmt.order_by(signal_samples.c.observed_at.desc(), signal_samples.c.id.desc()).limit(limit)
    with core.read() as conn:
        return [(r.source, r.key, float(r.value), r.observed_at) for r in conn.execute(stmt)]


def prune_signal_samples(core: StoreCore, *, older_than: datetime, batch: int = 10_000) -> int:
    """Delete history older than the retention, in bounded batches so no transaction grows large."""
    deleted = 0
    while True:
        with core.write() as conn:
            ids = (
                conn.execute(select(signal_samples.c.id).where(signal_samples.c.observed_at < older_than).limit(batch))
                .scalars()
                .all()
            )
            if ids:
                conn.execute(signal_samples.delete().where(signal_samples.c.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted
