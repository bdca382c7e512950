"""The control plane's periodic work: placing, following, releasing, reconciling, the lease, the pollers.

Every scheduler job runs only while this replica holds the leader lease
(:meth:`Leadership.guard`); the lease renewal, the signal pollers and the
retention jobs run on every replica.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from controlplane.api.uploads import prune_uploads
from controlplane.config import Settings
from controlplane.dataplane.objects import ObjectStore
from controlplane.dataplane.retention import StagedRetention
from controlplane.domain.target_storage import TargetStorage
from controlplane.metrics import Metrics
from controlplane.runtime.signals import prune_history
from controlplane.scheduler import Scheduler
from controlplane.scheduler.leader import Leadership
from controlplane.scheduler.reconcile import Reconciler
from controlplane.scheduler.webhooks import WebhookDeliverer
from controlplane.signals.hub import SignalHub
from controlplane.store import Store, utcnow
from controlplane.store.uploads import finished_between, inputs_in_use

__all__ = ["leadership_and_jobs", "passed"]

T = TypeVar("T")


def passed(metrics: Metrics, name: str, job: Callable[..., T]) -> Callable[..., T]:
    """``job``, stamping ``fusionplane_scheduler_last_pass_timestamp_seconds{loop=name}`` each time it returns.

    Stamped only on a normal return: a job that raises every time is as
    stuck, to the queue, as one that never comes back, and the alert on
    the stamp's age should catch both.
    """

    def run(*args: Any, **kwargs: Any) -> T:
        result = job(*args, **kwargs)
        metrics.scheduler_pass_timestamp.labels(loop=name).set_to_current_time()
        return result

    run.__name__ = getattr(job, "__name__", name)
    return run


def leadership_and_jobs(
    *,
    settings: Settings,
    store: Store,
    scheduler: Scheduler,
    hub: SignalHub,
    metrics: Metrics,
    stores: Callable[[TargetStorage], ObjectStore] | None = None,
    storage_of: Callable[[str, str], TargetStorage | None] | None = None,
    deliverer: WebhookDeliverer | None = None,
) -> tuple[Leadership, BackgroundScheduler]:
    """The leader lease of ``scheduler`` and every job, scheduled but not started.

    With ``stores`` and ``storage_of`` (a target's store, as the policy in
    force names it), the inputs staged for finished tasks are deleted once
    their retention has passed. With ``deliverer``, webhook events are sent
    from this replica whether it leads or not (the outbox's claim keeps
    replicas apart).
    """
    # before the first add_job: apscheduler says "Adding job tentatively" (INFO) for every job added
    # before start, and "executed successfully" after every run; a job's exception stays an ERROR
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    jobs = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 5})
    reconciler = Reconciler(scheduler)
    elected = threading.Event()

    def on_elected(fenced: Store) -> None:
        # from now on every scheduler write checks this replica's token; reconcile at once
        scheduler.store = fenced
        scheduler.start_leading()  # what ended while nobody led is reconciliation's
        elected.set()
        with contextlib.suppress(JobLookupError):
            jobs.modify_job("reconcile", next_run_time=datetime.now(UTC))

    def reconcile() -> None:
        just_elected = elected.is_set()
        elected.clear()
        reconciler.run(elected=just_elected)

    leadership = Leadership(
        store=store,
        holder=scheduler.scheduler_id,
        lease_seconds=settings.leader_lease_seconds,
        on_elected=on_elected,
        metrics=metrics,
    )

    def guard(job: Callable[..., T], *, default: T, name: str) -> Callable[..., T]:
        return leadership.guard(passed(metrics, name, job), default=default)

    jobs.add_job(
        guard(scheduler.place_until_idle, default=0, name="place"),
        "interval",
        seconds=0.5,
        kwargs={"max_seconds": 0.4},
        id="place",
    )
    jobs.add_job(guard(scheduler.follow, default=0, name="follow"), "interval", seconds=1.0, id="follow")
    jobs.add_job(guard(scheduler.release_finished, default=0, name="release"), "interval", seconds=5.0, id="release")
    jobs.add_job(
        guard(reconcile, default=None, name="reconcile"), "interval", seconds=settings.reconcile_seconds, id="reconcile"
    )
    jobs.add_job(leadership.renew, "interval", seconds=leadership.renew_every_seconds, id="leader-lease")
    hub.schedule(jobs)
    if deliverer is not None:
        jobs.add_job(
            passed(metrics, "webhooks", deliverer.deliver_due),
            "interval",
            seconds=settings.webhooks.poll_s,
            kwargs={"max_seconds": 5.0},
            id="webhooks",
        )
        jobs.add_job(deliverer.observe_depth, "interval", seconds=10.0, id="webhook-outbox-depth")
    jobs.add_job(prune_history, "interval", hours=1, args=(store, settings.signals), id="signals-retention")
    if settings.input_roots:
        jobs.add_job(
            prune_uploads,
            "interval",
            seconds=min(3600.0, settings.upload_retention_seconds),
            kwargs={
                "root": settings.input_roots[0],
                "retention_seconds": settings.upload_retention_seconds,
                "in_use": lambda: inputs_in_use(store),
            },
            id="uploads-retention",
        )
    if stores is not None and storage_of is not None:
        staged = StagedRetention(
            finished_between=lambda after, until: finished_between(store, after=after, until=until),
            attempts_of=store.attempts_for,
            storage_of=storage_of,
            stores=stores,
            retention_seconds=settings.staged_retention_seconds,
            clock=utcnow,
        )
        jobs.add_job(
            staged.run, "interval", seconds=min(3600.0, settings.staged_retention_seconds), id="staged-retention"
        )
    return leadership, jobs
