"""The scheduler: acting on what the pure ``plan()`` decides.

``Scheduler`` (``executor``) is three jobs over their shared ``base``:
``placing`` claims queued tasks, plans them on one signal snapshot per batch,
stores each receipt before acting and launches with failover across the
plan's candidates (a hedge group at once); ``following`` asks the providers
about live attempts, acts on the domain's ``verdict()`` and fails them over
after launch (preempted, lost, a crash, silent, unschedulable); ``releasing``
stops the resources of attempts that ended. ``outcomes`` applies an outcome
once, whoever reports it first, with the tenant's failover rules. Beside
them: ``queueing`` (whether a task with nothing to launch now waits or
fails, and why; pure), ``deadlines`` (task deadlines on every provider),
``workerspec`` (the worker spec rendered and checked in one place),
``reconcile`` (the store and what each backend really runs made to agree),
and ``leader`` (which ``serve`` replica schedules: the lease holder).
docs/reliability.md explains each.
"""

from controlplane.scheduler.executor import Scheduler
from controlplane.scheduler.outcomes import advance
from controlplane.scheduler.workerspec import render_worker_spec

__all__ = ["Scheduler", "advance", "render_worker_spec"]
