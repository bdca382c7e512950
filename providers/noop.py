"""A provider that runs nothing: for the placement benchmark and for tests.

It records every call, keeps one in-memory resource per attempt (``launch``
is idempotent on the attempt id), reports whatever state a test sets
(RUNNING by default) and, like Karpenter's fake cloud provider, accepts the
next error to raise (``fail_next``). Thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from controlplane.domain import Candidate, InsufficientCapacity, ProviderError, Target
from providers.base import (
    BackendState,
    BackendStatus,
    Capacity,
    LaunchRequest,
    LaunchResult,
    OwnedResource,
    Quote,
)

__all__ = ["NoopProvider"]

_OPERATIONS = frozenset({"capacity", "quote", "launch", "status", "cancel", "list_owned"})


@dataclass
class _Resource:
    task_id: str
    status: BackendStatus


class NoopProvider:
    """Launches nothing and remembers everything.

    ``slots=None`` means unlimited; with a number, ``launch`` raises
    ``InsufficientCapacity`` once that many attempts are live (not final).
    """

    def __init__(self, *, name: str = "noop", slots: int | None = None, record_calls: bool = True) -> None:
        self.name = name
        self.slots = slots
        self.record_calls = record_calls
        #: (operation, attempt id or target name) in call order
        self.calls: list[tuple[str, str]] = []
        self._resources: dict[str, _Resource] = {}
        self._errors: dict[str, deque[ProviderError]] = {op: deque() for op in _OPERATIONS}
        self._lock = threading.Lock()

    # -- test controls --------------------------------------------------------------------------

    def fail_next(self, error: ProviderError, *, operation: str = "launch") -> None:
        """Make the next call of ``operation`` raise ``error`` (queued: several calls queue several errors)."""
        if operation not in _OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(sorted(_OPERATIONS))}")
        with self._lock:
            self._errors[operation].append(error)

    def set_status(self, attempt_id: str, status: BackendStatus | BackendState) -> None:
        """What ``status(attempt_id)`` reports from now on (the attempt must have been launched)."""
        if isinstance(status, BackendState):
            status = BackendStatus(state=status)
        with self._lock:
            self._resources[attempt_id].status = status

    def forget(self, attempt_id: str) -> None:
        """The resource vanishes without an outcome (node died, VM deleted by hand): gone from status and list."""
        with self._lock:
            del self._resources[attempt_id]

    def launched(self) -> list[str]:
        """Attempt ids launched so far, in launch order."""
        with self._lock:
            return list(self._resources)

    def _enter(self, operation: str, key: str) -> None:
        # called with the lock held
        if self.record_calls:
            self.calls.append((operation, key))
        errors = self._errors[operation]
        if errors:
            raise errors.popleft()

    def _live(self) -> int:
        return sum(1 for r in self._resources.values() if not r.status.state.is_final)

    # -- the contract ---------------------------------------------------------------------------

    def capacity(self, target: Target) -> Capacity:
        """Free and total slots; ``None`` for both when unlimited."""
        with self._lock:
            self._enter("capacity", target.name)
            if self.slots is None:
                return Capacity(free=None, total=None)
            return Capacity(free=max(self.slots - self._live(), 0), total=self.slots)

    def quote(self, candidate: Candidate) -> Quote:
        """No price: nothing runs."""
        with self._lock:
            self._enter("quote", candidate.target)
        return Quote(usd_per_hour=None)

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Record the attempt (adopting it if already recorded)."""
        with self._lock:
            self._enter("launch", request.attempt_id)
            ref = f"noop:{request.attempt_id}"
            if request.attempt_id in self._resources:
                return LaunchResult(backend_ref=ref, adopted=True)
            if self.slots is not None and self._live() >= self.slots:
                raise InsufficientCapacity(f"all {self.slots} noop slots are busy", target=self.name)
            self._resources[request.attempt_id] = _Resource(
                task_id=request.task_id, status=BackendStatus(state=BackendState.RUNNING)
            )
            return LaunchResult(backend_ref=ref)

    def status(self, attempt_id: str) -> BackendStatus:
        """The state last set (RUNNING after launch); LOST "unknown attempt" for an id never launched."""
        with self._lock:
            self._enter("status", attempt_id)
            resource = self._resources.get(attempt_id)
            if resource is None:
                return BackendStatus(state=BackendState.LOST, reason="unknown attempt: never launched here")
            return resource.status

    def cancel(self, attempt_id: str) -> None:
        """A live attempt becomes FAILED "cancelled"; unknown or final ones are left alone."""
        with self._lock:
            self._enter("cancel", attempt_id)
            resource = self._resources.get(attempt_id)
            if resource is not None and not resource.status.state.is_final:
                resource.status = BackendStatus(state=BackendState.FAILED, reason="cancelled")

    def list_owned(self) -> list[OwnedResource]:
        """Every attempt launched, in launch order."""
        with self._lock:
            self._enter("list_owned", "")
            return [
                OwnedResource(
                    attempt_id=attempt_id, task_id=r.task_id, backend_ref=f"noop:{attempt_id}", state=r.status.state
                )
                for attempt_id, r in self._resources.items()
            ]
