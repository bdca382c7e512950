"""Placing tasks and following attempts: the scheduler's two jobs.

``place_batch`` claims queued tasks (atomically: two schedulers never take
the same task), plans each with the pure ``plan()``, stores the receipt,
then walks the plan: one attempt per candidate until a provider accepts the
launch. A launch error moves on to the next candidate and is recorded on
the attempt; a terminal one (``InvalidSpec``) stops there.

``follow`` asks each provider about the attempts still launching or running
and applies what it says; it also stops the backend work of cancelled tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from controlplane.domain import (
    AttemptState,
    DataSensitivity,
    InvalidTransition,
    PlacementPlan,
    ProviderError,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskState,
    Unavailable,
)
from controlplane.metrics import Metrics
from controlplane.policy import CAPACITY_SOURCE, Policy, plan
from controlplane.scheduler.outcomes import advance
from controlplane.scheduler.workerspec import render_worker_spec
from controlplane.store import StateMismatch, Store, utcnow
from providers.base import BackendState, LaunchRequest, Provider

__all__ = ["Scheduler"]

log = logging.getLogger("fusionplane.scheduler")

CAPACITY_TTL_S = 30.0
_OUTCOMES = {
    BackendState.SUCCEEDED: (AttemptState.SUCCEEDED, TaskState.SUCCEEDED),
    BackendState.FAILED: (AttemptState.FAILED, TaskState.FAILED),
    # failover after preemption and lost workers arrives with the reliability work;
    # until then the task fails with the reason, and nothing is retried twice
    BackendState.PREEMPTED: (AttemptState.PREEMPTED, TaskState.FAILED),
    BackendState.LOST: (AttemptState.LOST, TaskState.FAILED),
}


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        policy: Callable[[], Policy],
        providers: Mapping[str, Provider],
        callback_base: str,
        checkpoint_root: Path | str | None,
        scheduler_id: str,
        metrics: Metrics | None = None,
        batch_size: int = 64,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store, self.policy, self.providers = store, policy, providers
        self.callback_base, self.checkpoint_root = callback_base, checkpoint_root
        self.scheduler_id, self.metrics, self.batch_size, self.clock = scheduler_id, metrics, batch_size, clock

    # -- signals ---------------------------------------------------------------
    def snapshot(self, policy: Policy) -> SignalSnapshot:
        """Free capacity of every target whose provider is configured here."""
        now = self.clock()
        samples: dict[str, SignalSample] = {}
        for target in policy.targets:
            provider = self.providers.get(target.provider)
            if provider is None:
                continue
            try:
                free = provider.capacity(target).free
            except ProviderError:
                continue  # no sample: the planner treats it as missing, never as a reason
            if free is not None:
                key = f"{CAPACITY_SOURCE}/{target.name}"
                samples[key] = SignalSample(
                    source=CAPACITY_SOURCE,
                    key=target.name,
                    value=float(free),
                    observed_at=now,
                    ttl_seconds=CAPACITY_TTL_S,
                )
        return SignalSnapshot(taken_at=now, samples=samples)

    # -- placing ---------------------------------------------------------------
    def place_batch(self) -> int:
        """Claim, plan and launch up to ``batch_size`` queued tasks; returns how many were claimed."""
        tasks = self.store.claim_queued(batch_size=self.batch_size, scheduler_id=self.scheduler_id)
        if not tasks:
            return 0
        policy = self.policy()
        snapshot = self.snapshot(policy)
        for task in tasks:
            started = time.perf_counter()
            decision = plan(task, snapshot, policy, self.clock())
            if self.metrics:
                self.metrics.plan_seconds.observe(time.perf_counter() - started)
            self.store.record_decision(plan=decision)
            self._launch(task, decision)
        return len(tasks)

    def _launch(self, task: Task, decision: PlacementPlan) -> None:
        if not decision.candidates:
            reasons = "; ".join(f"{r.target}: {r.code}" for r in decision.rejections) or "no targets"
            self._fail_task(task.id, f"no placement: {reasons}")
            return
        history: list[str] = []
        for candidate in decision.candidates:
            if task.spec.data_sensitivity == DataSensitivity.PRIVATE and not candidate.private:
                # plan() never offers this; refusing here too means a planner bug cannot leak private data
                history.append(f"{candidate.target}: refused, private data on a non-private target")
                log.error("", extra={"event": "private_data_refused", "task_id": task.id, "target": candidate.target})
                continue
            provider = self.providers.get(candidate.provider)
            if provider is None:
                history.append(f"{candidate.target}: provider {candidate.provider} is not configured")
                continue
            token = "att_" + secrets.token_urlsafe(32)
            attempt = self.store.create_attempt(
                task_id=task.id,
                target=candidate.target,
                provider=candidate.provider,
                token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                region=candidate.region,
                instance_type=candidate.instance_type,
                actor=self.scheduler_id,
            )
            current = self.store.get_task(task.id)
            if current.state == TaskState.CANCELLED:
                self.store.transition_attempt(
                    attempt.id,
                    wanted=AttemptState.CANCELLED,
                    actor=self.scheduler_id,
                    reason="task cancelled before launch",
                )
                return
            if current.state == TaskState.PLANNED:
                self.store.transition_task(
                    task.id, wanted=TaskState.LAUNCHING, actor=self.scheduler_id, target=candidate.target
                )
            started = time.perf_counter()
            try:
                spec = render_worker_spec(
                    task=task,
                    attempt_id=attempt.id,
                    token=token,
                    callback_base=self.callback_base,
                    checkpoint_root=self.checkpoint_root,
                )
                result = provider.launch(
                    LaunchRequest(
                        attempt_id=attempt.id,
                        task_id=task.id,
                        candidate=candidate,
                        worker_spec=spec,
                        deadline_seconds=task.spec.deadline_seconds,
                    )
                )
            except ProviderError as exc:
                history.append(f"{candidate.target}: {exc.code}: {exc.message}")
                self.store.transition_attempt(
                    attempt.id, wanted=AttemptState.FAILED, actor=self.scheduler_id, reason=f"{exc.code}: {exc.message}"
                )
                log.warning(
                    "",
                    extra={
                        "event": "launch_failed",
                        "task_id": task.id,
                        "attempt_id": attempt.id,
                        "target": candidate.target,
                        "code": exc.code,
                    },
                )
                if not exc.retryable:
                    break
                continue
            if self.metrics:
                self.metrics.launch_seconds.labels(provider=candidate.provider).observe(time.perf_counter() - started)
            self.store.set_backend_ref(attempt.id, backend_ref=result.backend_ref)
            log.info(
                "",
                extra={
                    "event": "launched",
                    "task_id": task.id,
                    "attempt_id": attempt.id,
                    "target": candidate.target,
                    "adopted": result.adopted,
                },
            )
            return
        self._fail_task(task.id, "every candidate failed to launch: " + "; ".join(history))

    def _fail_task(self, task_id: str, reason: str) -> None:
        with contextlib.suppress(InvalidTransition, StateMismatch):  # cancelled meanwhile
            self.store.transition_task(task_id, wanted=TaskState.FAILED, actor=self.scheduler_id, reason=reason)

    # -- following -------------------------------------------------------------
    def follow(self) -> int:
        """Apply what providers say about live attempts; returns how many outcomes were applied."""
        applied = 0
        for attempt in self.store.live_attempts():
            provider = self.providers.get(attempt.provider)
            if provider is None:
                continue
            task = self.store.get_task(attempt.task_id)
            if task.state == TaskState.CANCELLED:
                try:
                    provider.cancel(attempt.id)
                except ProviderError:
                    continue  # try again next round
                applied += advance(
                    self.store,
                    attempt.id,
                    AttemptState.CANCELLED,
                    TaskState.CANCELLED,
                    actor=self.scheduler_id,
                    reason="task cancelled",
                )
                continue
            try:
                status = provider.status(attempt.id)
            except (ProviderError, Unavailable):
                continue
            if status.state == BackendState.RUNNING and attempt.state == AttemptState.LAUNCHING:
                advance(self.store, attempt.id, AttemptState.RUNNING, TaskState.RUNNING, actor=self.scheduler_id)
            elif status.state in _OUTCOMES:
                attempt_state, task_state = _OUTCOMES[status.state]
                done = advance(
                    self.store,
                    attempt.id,
                    attempt_state,
                    task_state,
                    actor=self.scheduler_id,
                    reason=status.reason,
                    exit_code=status.exit_code,
                )
                if done and self.metrics:
                    self.metrics.attempts.labels(provider=attempt.provider, outcome=attempt_state.value).inc()
                applied += done
        return applied
