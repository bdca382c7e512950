"""Stored values that have no domain dataclass of their own: events, policy versions, progress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["AttemptProgress", "Event", "PolicyApplication", "PolicyVersion"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """One thing that happened to a task: a state change, an attempt, a decision.

    ``kind`` is one of ``task.created``, ``task.transition``, ``task.claimed``,
    ``task.waiting`` (back to queued with a new queue reason), ``decision.recorded``,
    ``attempt.created``, ``attempt.transition``.
    """

    id: int
    task_id: str
    attempt_id: str | None
    at: datetime
    actor: str
    kind: str
    from_state: str | None = None
    to_state: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PolicyVersion:
    """A policy document as pushed, named by the sha256 of its canonical JSON."""

    version: str
    document: Mapping[str, Any]
    created_at: datetime
    created_by: str
    source: str


@dataclass(frozen=True, kw_only=True)
class PolicyApplication:
    """A policy taking effect: base version, Consul ModifyIndex, and each tenant overlay's effective version."""

    id: int
    applied_at: datetime
    applied_by: str
    source: str
    modify_index: int | None
    version: str
    overlays: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AttemptProgress:
    """The worker's last word on an attempt: when it last called in and what it said."""

    attempt_id: str
    last_heartbeat_at: datetime | None
    progress: Mapping[str, Any] = field(default_factory=dict)
