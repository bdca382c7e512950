"""Bearer-token authentication against a tokens file that holds only hashes.

Tokens file (``--tokens-file``, default ``var/tokens.json``), mode 0600::

    {"tokens": [{"name": "ci", "tenant": "acme", "role": "submitter",
                 "sha256": "<hex of sha256(token)>", "created_at": "2026-11-24T16:00:00Z"}]}

A token is ``fp_`` + 43 url-safe characters (256 bits); it is printed once by
``fusionctl tokens create`` and never stored. Roles: ``submitter`` (own
tenant's tasks), ``operator`` (all tenants, decisions, policies), ``admin``
(operator + token and policy administration), ``metrics`` (``/metrics`` and
the ``/readyz`` detail only: what a Prometheus scrape needs).

The running server re-reads the file when it changes (``TokenRegistry``),
so ``fusionctl tokens revoke`` and ``create`` take effect within about a
second, without a restart.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.api.tokens_file import ROLES, TokenError, create_token, hash_token, read_tokens
from controlplane.metrics import Metrics

__all__ = [
    "ROLES",
    "RELOAD_EVERY_SECONDS",
    "Principal",
    "TokenError",
    "TokenRegistry",
    "create_token",
    "hash_token",
]

log = logging.getLogger("fusionplane.auth")

#: how often, at most, a request makes the registry look at the tokens file (one ``stat``)
RELOAD_EVERY_SECONDS = 1.0
#: roles that may read the operational endpoints (``/metrics``, the ``/readyz`` detail)
_OBSERVERS = frozenset({"metrics", "operator", "admin"})

FileSignature = tuple[int, int, int, int]


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant and role."""

    name: str
    tenant: str
    role: str

    @property
    def sees_all_tenants(self) -> bool:
        return self.role in ("operator", "admin")

    @property
    def observes(self) -> bool:
        """May read ``/metrics`` and the ``/readyz`` detail (replica, lease, policy)."""
        return self.role in _OBSERVERS

    @property
    def uses_task_routes(self) -> bool:
        """False for the ``metrics`` role: it reads the operational endpoints and nothing else."""
        return self.role != "metrics"


def _signature(path: Path) -> FileSignature | None:
    """What tells a changed file apart: device, inode, size, mtime (follows symlinks); None when absent.

    A Kubernetes Secret volume swaps a symlink to a new folder: the file the
    path reaches is a new inode, so the change is seen even with the same
    size and mtime.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _principals(entries: list[dict[str, Any]]) -> dict[str, Principal]:
    return {e["sha256"]: Principal(name=str(e.get("name", "")), tenant=e["tenant"], role=e["role"]) for e in entries}


class TokenRegistry:
    """Hashes from the tokens file; looks a bearer token up in constant time.

    Built with :meth:`load`, it follows the file: at most once every
    ``check_every_s`` a request ``stat``s it, and when device, inode, size or
    mtime changed it is read again. A file that cannot be read or has a bad
    entry is not applied: the last good set stays in force, the rejection is
    logged once (``tokens.rejected``) and counted
    (``fusionplane_tokens_reloads_total{outcome="invalid"}``). A file that is
    gone is an empty set (no token works), as it is at start.
    """

    def __init__(
        self,
        entries: list[dict[str, Any]],
        *,
        source: Path | None = None,
        metrics: Metrics | None = None,
        check_every_s: float = RELOAD_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_hash = _principals(entries)
        self._source = source
        self._metrics = metrics
        self._every = check_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: FileSignature | None = None
        self._rejected: FileSignature | None = None
        self._next_check = clock() + check_every_s
        if metrics is not None:
            metrics.tokens_loaded.set(len(self._by_hash))

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        metrics: Metrics | None = None,
        check_every_s: float = RELOAD_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> TokenRegistry:
        """The registry of ``path`` as it is now (:class:`TokenError` when bad), following later changes."""
        seen = _signature(path)  # before reading: a change during the read is seen at the next check
        registry = cls(read_tokens(path), source=path, metrics=metrics, check_every_s=check_every_s, clock=clock)
        registry._seen = seen
        return registry

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, token: str) -> Principal | None:
        self._maybe_reload()
        digest = hash_token(token)
        found = self._lookup(digest)
        if found is None and self._changed_since_seen():
            # a token created a moment ago works on its first use, not a second later
            found = self._lookup(digest)
        return found

    def _lookup(self, digest: str) -> Principal | None:
        by_hash = self._by_hash  # one read: a reload swapping the dict meanwhile is harmless
        found = None
        for known, principal in by_hash.items():
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def _changed_since_seen(self) -> bool:
        """On an unknown token: one ``stat`` now, a read only for a version not yet seen; True when applied.

        A flood of wrong tokens costs a ``stat`` each: the file is read again
        only when it changed, and a version already rejected is not read twice.
        """
        if self._source is None or not self._lock.acquire(blocking=False):
            return False
        try:
            signature = _signature(self._source)
            if signature in (self._seen, self._rejected):
                return False
            applied = self.reload_if_changed()
            self._next_check = self._clock() + self._every
            return applied
        finally:
            self._lock.release()

    def _maybe_reload(self) -> None:
        """Cheap on the hot path: a clock read, and a ``stat`` at most once per interval per process."""
        if self._source is None or self._clock() < self._next_check:
            return
        if not self._lock.acquire(blocking=False):
            return  # another request is looking right now; this one uses the set in force
        try:
            if self._clock() >= self._next_check:
                self.reload_if_changed()
                self._next_check = self._clock() + self._every
        finally:
            self._lock.release()

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed since last seen; True when a new set was applied."""
        if self._source is None:
            return False
        signature = _signature(self._source)
        if signature == self._seen:
            return False
        try:
            entries = read_tokens(self._source)
        except TokenError as exc:
            if signature != self._rejected:  # once per bad version, not once a second
                self._rejected = signature
                log.error(
                    "",
                    extra={
                        "event": "tokens.rejected",
                        "tokens_file": str(self._source),
                        "error": str(exc),
                        "in_force": len(self._by_hash),
                    },
                )
                if self._metrics is not None:
                    self._metrics.tokens_reloads.labels(outcome="invalid").inc()
            return False
        self._by_hash = _principals(entries)
        self._seen, self._rejected = signature, None
        log.info(
            "",
            extra={"event": "tokens.reloaded", "tokens_file": str(self._source), "tokens": len(self._by_hash)},
        )
        if self._metrics is not None:
            self._metrics.tokens_reloads.labels(outcome="applied").inc()
            self._metrics.tokens_loaded.set(len(self._by_hash))
        return True
