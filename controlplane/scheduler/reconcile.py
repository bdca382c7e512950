"""Reconciliation: make the store and what each backend really runs agree again.

Run by the leader when it is elected and then periodically
(``FUSIONPLANE_RECONCILE_S``, default 60 s). Per provider it lists what this
control plane owns (``list_owned``: tags, labels, the local attempt
folders) and compares it with the attempts the store says are live:

==========================================  =====================================================
found                                       action
==========================================  =====================================================
a resource of a live attempt                adopted: its backend ref is recorded if it was missing
                                            (the launch went out, the scheduler died before
                                            recording it)
a running resource of an ended or unknown   **orphan**: cancelled (deleted) now
attempt
an ended resource of an ended attempt       released (deleted), as ``release_finished`` would have
                                            done had a control plane been running; local attempt
                                            folders are kept (they hold the logs)
a live attempt with no resource             asked again with ``status``; if the provider confirms
                                            it is gone (LOST) or ended, that ending is applied, a
                                            lost one by failover. A launch younger than the launch
                                            grace with no backend ref is left alone (not sent yet)
==========================================  =====================================================

Then the store's own half-done work (controlplane.store.stranded): tasks a
dead scheduler claimed but never launched go back to the queue, and tasks
left launching or running with no live attempt are finished or re-queued
from their newest attempt.

A provider that cannot list (API down) is skipped this round and named in
the report; nothing is concluded from silence.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from controlplane.domain import AttemptState, InvalidTransition, ProviderError, TaskState, Unavailable
from controlplane.domain.verdict import Next, Verdict, verdict
from controlplane.scheduler.executor import Scheduler
from controlplane.scheduler.outcomes import FailoverRules
from controlplane.store import NotFound, StateMismatch
from controlplane.store.stranded import requeue_claimed, requeue_stranded, stranded_tasks
from providers.base import BackendState, OwnedResource, Provider

if TYPE_CHECKING:
    from controlplane.domain import Attempt

__all__ = ["ReconcileReport", "Reconciler"]

log = logging.getLogger("fusionplane.reconcile")

#: a claim older than this was surely abandoned: a batch plans and launches in seconds
CLAIM_TIMEOUT_S = 300.0
#: a task left launching/running with no live attempt is only touched after this long untouched
QUIET_S = 60.0


@dataclass
class ReconcileReport:
    #: per provider: action -> count (adopted, orphan_cancelled, released, vanished)
    providers: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    #: providers that could not list what they own this round, with the error
    skipped: dict[str, str] = field(default_factory=dict)
    requeued_claims: int = 0
    #: stranded tasks by what was done: requeued, succeeded, failed
    stranded: dict[str, int] = field(default_factory=dict)

    def count(self, provider: str, action: str) -> None:
        actions = self.providers[provider]
        actions[action] = actions.get(action, 0) + 1

    def json(self) -> dict[str, Any]:
        return {
            "providers": {name: dict(actions) for name, actions in self.providers.items()},
            "skipped": dict(self.skipped),
            "requeued_claims": self.requeued_claims,
            "stranded": dict(self.stranded),
        }


class Reconciler:
    def __init__(
        self, scheduler: Scheduler, *, claim_timeout_s: float = CLAIM_TIMEOUT_S, quiet_s: float = QUIET_S
    ) -> None:
        self.scheduler = scheduler
        self.claim_timeout_s, self.quiet_s = claim_timeout_s, quiet_s

    def run(self, *, elected: bool = False) -> ReconcileReport:
        """One full pass; ``elected``: this replica just became leader (every other replica's claim is void)."""
        report = ReconcileReport()
        scheduler = self.scheduler
        now = scheduler.clock()
        requeued = requeue_claimed(
            scheduler.store,
            actor=scheduler.scheduler_id,
            claimed_before=None if elected else now - timedelta(seconds=self.claim_timeout_s),
            not_claimed_by=scheduler.scheduler_id,
        )
        report.requeued_claims = len(requeued)
        live = scheduler.store.live_attempts(limit=1_000_000)
        for name, provider in scheduler.providers.items():
            try:
                owned = provider.list_owned()
            except (ProviderError, Unavailable) as exc:
                report.skipped[name] = str(exc)
                log.warning("", extra={"event": "reconcile.list_failed", "provider": name, "error": str(exc)})
                continue
            self._provider(name, provider, owned, [a for a in live if a.provider == name], report)
        self._stranded(report)
        metrics = scheduler.metrics
        if metrics:
            for name, actions in report.providers.items():
                for action, count in actions.items():
                    metrics.reconciled.labels(provider=name, action=action).inc(count)
            for action, count in report.stranded.items():
                metrics.reconciled.labels(provider="", action=action).inc(count)
        log.info("", extra={"event": "reconcile.done", "elected": elected, **report.json()})
        return report

    def _provider(
        self,
        name: str,
        provider: Provider,
        owned: list[OwnedResource],
        live: list[Attempt],
        report: ReconcileReport,
    ) -> None:
        scheduler = self.scheduler
        store = scheduler.store
        by_attempt: dict[str, list[OwnedResource]] = defaultdict(list)
        for resource in owned:
            by_attempt[resource.attempt_id].append(resource)
        live_ids = {a.id for a in live}
        for attempt_id, resources in by_attempt.items():
            if attempt_id in live_ids:
                continue
            running = any(not r.state.is_final for r in resources)
            if not running and name == "local":
                continue  # an ended local worker costs nothing; its folder keeps the logs
            try:
                state: AttemptState | None = store.get_attempt(attempt_id).state
            except NotFound:
                state = None  # started by this owner with a database that no longer has it
            if state is not None and not state.is_final:
                continue  # launched after the live attempts were read: not ours to judge this round
            try:
                provider.cancel(attempt_id)
            except (ProviderError, Unavailable) as exc:
                log.warning(
                    "",
                    extra={
                        "event": "reconcile.cancel_failed",
                        "provider": name,
                        "attempt_id": attempt_id,
                        "error": str(exc),
                    },
                )
                continue
            action = "orphan_cancelled" if running else "released"
            report.count(name, action)
            if running:
                log.warning(
                    "",
                    extra={
                        "event": "reconcile.orphan_cancelled",
                        "provider": name,
                        "attempt_id": attempt_id,
                        "attempt_state": state.value if state is not None else None,
                        "backend_refs": [r.backend_ref for r in resources],
                    },
                )
        policies = scheduler.policy()
        for attempt in live:
            # a LOST resource is a leftover (a Secret whose Job never came), not the attempt's workload
            found = [r for r in by_attempt.get(attempt.id, []) if r.state != BackendState.LOST]
            if found:
                if attempt.backend_ref is None:
                    store.set_backend_ref(attempt.id, backend_ref=found[0].backend_ref)
                    report.count(name, "adopted")
                continue
            if scheduler.may_still_be_sending(attempt):
                continue  # its launch may not have gone out yet
            try:
                status = provider.status(attempt.id)
            except (ProviderError, Unavailable):
                continue  # cannot confirm: never conclude "gone" from silence
            if not status.state.is_final:
                continue  # the list was behind the backend; it is there
            task = store.get_task(attempt.task_id)
            rules = FailoverRules.of(policies.for_tenant(task.spec.tenant))
            if scheduler.apply_final_status(attempt, status, rules):
                report.count(name, "vanished" if status.state == BackendState.LOST else "ended")

    def _stranded(self, report: ReconcileReport) -> None:
        scheduler = self.scheduler
        store = scheduler.store
        quiet_since = scheduler.clock() - timedelta(seconds=self.quiet_s)
        for stranded in stranded_tasks(store, quiet_since=quiet_since):
            task, newest = stranded.task, stranded.newest
            action: str | None
            if newest is None:
                action = (
                    "requeued"
                    if requeue_stranded(store, task.id, reason="no attempt", actor=scheduler.scheduler_id)
                    else None
                )
            else:
                decided = verdict(attempt=newest, status=None, last_heartbeat=None, rules=None, now=scheduler.clock())
                if decided.next is Next.FAIL_OVER:
                    continue  # follow's failover of ended attempts takes these
                action = self._settle_stranded(task.id, decided)
            if action is not None:
                report.stranded[action] = report.stranded.get(action, 0) + 1
                log.warning(
                    "",
                    extra={
                        "event": "reconcile.stranded",
                        "task_id": task.id,
                        "action": action,
                        "attempt_id": newest.id if newest else None,
                    },
                )

    def _settle_stranded(self, task_id: str, decided: Verdict) -> str | None:
        """Act on the verdict on a stranded task's newest (ended) attempt: the action's name; None when the
        task moved meanwhile."""
        scheduler = self.scheduler
        if decided.next is Next.SUCCEED:
            return self._finish(task_id, TaskState.SUCCEEDED, None)
        if decided.next is Next.FAIL:
            return self._finish(task_id, TaskState.FAILED, decided.reason)
        if decided.next is Next.REQUEUE:
            # a launch refusal (or a cancelled launch) and the scheduler stopped before the next step
            requeued = requeue_stranded(
                scheduler.store, task_id, reason=decided.reason or "requeued", actor=scheduler.scheduler_id
            )
            return "requeued" if requeued else None
        return None

    def _finish(self, task_id: str, wanted: TaskState, reason: str | None) -> str | None:
        try:
            self.scheduler.store.transition_task(
                task_id, wanted=wanted, actor=self.scheduler.scheduler_id, reason=reason
            )
        except (InvalidTransition, StateMismatch):
            return None
        return wanted.value
