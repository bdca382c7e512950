"""The scheduler: placing tasks, following attempts, releasing what ended, in one object.

:class:`Scheduler` is the three jobs over their shared state, each in its own
module:

- :mod:`controlplane.scheduler.placing` (``place_batch``): claim, plan with
  the pure ``plan()``, launch;
- :mod:`controlplane.scheduler.following` (``follow``): ask the backends,
  act on :func:`~controlplane.domain.verdict.verdict`, fail over;
- :mod:`controlplane.scheduler.releasing` (``release_finished``): delete
  the resources of ended attempts;
- :mod:`controlplane.scheduler.base`: the state they share, the signal
  snapshot, stopping a resource and failing an attempt over.

This module only puts them together and keeps the names callers import.
"""

from __future__ import annotations

from controlplane.domain.backend import unschedulable_seconds
from controlplane.scheduler.base import LAUNCH_GRACE_S, SEND_GRACE_S, Planner
from controlplane.scheduler.following import Following
from controlplane.scheduler.placing import Placing
from controlplane.scheduler.releasing import Releasing

__all__ = [
    "LAUNCH_GRACE_S",
    "SEND_GRACE_S",
    "Planner",
    "Scheduler",
    "unschedulable_seconds",
]


class Scheduler(Placing, Following, Releasing):
    """Places queued tasks, follows their attempts and releases what ended (see the module docstring).

    Built with keyword arguments (:class:`~controlplane.scheduler.base.SchedulerBase`):
    the store, the policy (a callable: the current one each round), the
    providers by name, the callback base URL and checkpoint root, this
    scheduler's id, and optionally metrics, a clock, the planner, the
    signal hub's latest values, tenant storage and grants.
    """
