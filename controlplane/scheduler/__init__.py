"""The scheduler: claim loop, executor (walks plans, fails over), following attempts.

Reconciliation, leader election and full failover arrive with the
reliability issue; this package already keeps deciding (``plan()``) and
acting (providers) apart.
"""

from controlplane.scheduler.executor import Scheduler
from controlplane.scheduler.outcomes import advance
from controlplane.scheduler.workerspec import render_worker_spec

__all__ = ["Scheduler", "advance", "render_worker_spec"]
