"""Errors the state store raises on purpose.

::

    StoreError
    ├── NotFound               no task, attempt or policy version with that id
    ├── IdempotencyConflict    an Idempotency-Key reused with another request body
    └── StateMismatch          the row was not in the state the caller expected (a lost race)

A transition the state machine refuses raises the domain's
:class:`~controlplane.domain.InvalidTransition` instead; in every case the
transaction is rolled back and nothing is written.
"""

from __future__ import annotations

__all__ = ["IdempotencyConflict", "NotFound", "StateMismatch", "StoreError"]


class StoreError(Exception):
    """Base of the store's own errors."""


class NotFound(StoreError):
    """No row with that id (``kind`` is ``task``, ``attempt`` or ``policy_version``)."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"no {kind} with id {ident!r}")
        self.kind, self.ident = kind, ident


class IdempotencyConflict(StoreError):
    """The tenant already used this Idempotency-Key for a different request body."""

    def __init__(self, *, tenant: str, idempotency_key: str, task_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {idempotency_key!r} was already used by tenant {tenant!r} "
            f"for another request (task {task_id}); send a new key for a new request"
        )
        self.tenant, self.idempotency_key, self.task_id = tenant, idempotency_key, task_id


class StateMismatch(StoreError):
    """A conditional transition found the row in another state than ``expected``."""

    def __init__(self, kind: str, ident: str, *, expected: str, actual: str) -> None:
        super().__init__(f"{kind} {ident} is {actual!r}, not {expected!r} as expected")
        self.kind, self.ident, self.expected, self.actual = kind, ident, expected, actual
