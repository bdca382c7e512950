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
    Candidate,
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
from controlplane.policy import CAPACITY_SOURCE, Policy, PolicySet, plan
from controlplane.scheduler.outcomes import advance
from controlplane.scheduler.workerspec import render_worker_spec
from controlplane.signals.snapshot_json import snapshot_to_json
from controlplane.store import PlannedLaunch, StateMismatch, Store, utcnow
from providers.base import BackendState, LaunchRequest, Provider

__all__ = ["Planner", "Scheduler"]

Planner = Callable[[Task, SignalSnapshot, Policy, datetime], PlacementPlan]

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


def _attempt_token() -> tuple[str, str]:
    """A new attempt's callback token and its sha256 (only the hash is stored)."""
    token = "att_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        policy: Callable[[], Policy | PolicySet],
        providers: Mapping[str, Provider],
        callback_base: str,
        checkpoint_root: Path | str | None,
        scheduler_id: str,
        metrics: Metrics | None = None,
        batch_size: int = 64,
        clock: Callable[[], datetime] = utcnow,
        planner: Planner = plan,
        signals: Callable[[], Mapping[str, SignalSample]] | None = None,
    ) -> None:
        self.store, self.policy, self.providers = store, policy, providers
        self.callback_base, self.checkpoint_root = callback_base, checkpoint_root
        self.scheduler_id, self.metrics, self.batch_size, self.clock = scheduler_id, metrics, batch_size, clock
        #: the pure ``plan()``; tests hand in a faulty one to prove the executor's own checks
        self.planner = planner
        #: the poll hub's latest values (Prometheus, spot prices, cluster capacity, queue depth)
        self.signals = signals
        #: the last event whose finished attempt had its backend resource released
        self._release_cursor: int | None = None

    # -- signals ---------------------------------------------------------------
    def snapshot(self, policy: Policy | PolicySet) -> SignalSnapshot:
        """The hub's latest values, with the free capacity of providers configured here asked for now.

        A provider's own answer is newer than any poll, so it wins over the
        hub's value for the same target.
        """
        now = self.clock()
        samples: dict[str, SignalSample] = dict(self.signals()) if self.signals is not None else {}
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
        """Claim, plan and launch up to ``batch_size`` queued tasks; returns how many were claimed.

        The hot path writes twice per batch, not per task: one transaction
        stores every receipt with its first attempt (or the task's failure),
        then the launches go out, then one transaction records the backend
        handles. Each attempt row exists before its launch is sent, and
        providers key launches by attempt id, so a crash in between is
        adopted, never launched twice. A launch error falls back to the
        per-task path for the remaining candidates.
        """
        tasks = self.store.claim_queued(batch_size=self.batch_size, scheduler_id=self.scheduler_id)
        if not tasks:
            return 0
        # one policy set and one snapshot per batch: every receipt of the batch saw the same world
        policies = self.policy()
        snapshot = self.snapshot(policies)
        launches: list[PlannedLaunch] = []
        tokens: list[str | None] = []
        rests: list[tuple[list[Candidate], list[str]]] = []
        for task in tasks:
            started = time.perf_counter()
            decision = self.planner(task, snapshot, policies.for_tenant(task.spec.tenant), self.clock())
            if self.metrics:
                self.metrics.plan_seconds.observe(time.perf_counter() - started)
            history: list[str] = []
            usable = self._usable(task, decision.candidates, history)
            first = usable[0] if usable else None
            token, token_sha256 = _attempt_token() if first is not None else (None, None)
            launches.append(
                PlannedLaunch(
                    plan=decision,
                    candidate=first,
                    token_sha256=token_sha256,
                    failure=None if first is not None else self._no_launch_reason(decision, history),
                )
            )
            tokens.append(token)
            rests.append((usable[1:], history))
        # the batch's snapshot is stored with its receipts: `policy simulate` replays them on it
        attempts = self.store.start_launches(
            launches, actor=self.scheduler_id, snapshot=(snapshot.taken_at, snapshot_to_json(snapshot))
        )
        launched: dict[str, str] = {}
        for task, launch, token, attempt, (rest, history) in zip(tasks, launches, tokens, attempts, rests, strict=True):
            if attempt is None or launch.candidate is None or token is None:
                continue  # failed with its reason, or cancelled meanwhile
            sent = self._send(task, launch.candidate, attempt.id, token, history)
            if isinstance(sent, str):
                launched[attempt.id] = sent
            elif sent.retryable:
                self._launch(task, rest, history)
            else:
                self._fail_task(task.id, "launch refused: " + "; ".join(history))
        self.store.record_backend_refs(launched)
        return len(tasks)

    def place_until_idle(self, *, max_seconds: float) -> int:
        """Place batch after batch while full batches come back, for at most about ``max_seconds``.

        The serve loop calls this on an interval, so a burst of submissions
        drains at the store's pace instead of one batch per tick.
        """
        deadline = time.monotonic() + max_seconds
        placed = 0
        while True:
            claimed = self.place_batch()
            placed += claimed
            if claimed < self.batch_size or time.monotonic() >= deadline:
                return placed

    def _usable(self, task: Task, candidates: tuple[Candidate, ...], history: list[str]) -> list[Candidate]:
        """The candidates this scheduler may launch, in plan order; refusals go to ``history``."""
        usable = []
        for candidate in candidates:
            if task.spec.data_sensitivity == DataSensitivity.PRIVATE and not candidate.private:
                # plan() never offers this; refusing here too means a planner bug cannot leak private data
                history.append(f"{candidate.target}: refused, private data on a non-private target")
                log.error("", extra={"event": "private_data_refused", "task_id": task.id, "target": candidate.target})
            elif candidate.provider not in self.providers:
                history.append(f"{candidate.target}: provider {candidate.provider} is not configured")
            else:
                usable.append(candidate)
        return usable

    @staticmethod
    def _no_launch_reason(decision: PlacementPlan, history: list[str]) -> str:
        if not decision.candidates:
            reasons = "; ".join(f"{r.target}: {r.code}" for r in decision.rejections) or "no targets"
            return f"no placement: {reasons}"
        return "every candidate failed to launch: " + "; ".join(history)

    def _send(
        self, task: Task, candidate: Candidate, attempt_id: str, token: str, history: list[str]
    ) -> str | ProviderError:
        """Launch one attempt: its backend ref, or the provider's refusal (recorded on the attempt)."""
        provider = self.providers[candidate.provider]
        started = time.perf_counter()
        try:
            spec = render_worker_spec(
                task=task,
                attempt_id=attempt_id,
                token=token,
                callback_base=self.callback_base,
                checkpoint_root=self.checkpoint_root,
            )
            result = provider.launch(
                LaunchRequest(
                    attempt_id=attempt_id,
                    task_id=task.id,
                    candidate=candidate,
                    worker_spec=spec,
                    deadline_seconds=task.spec.deadline_seconds,
                )
            )
        except ProviderError as exc:
            history.append(f"{candidate.target}: {exc.code}: {exc.message}")
            self.store.transition_attempt(
                attempt_id, wanted=AttemptState.FAILED, actor=self.scheduler_id, reason=f"{exc.code}: {exc.message}"
            )
            log.warning(
                "",
                extra={
                    "event": "launch_failed",
                    "task_id": task.id,
                    "attempt_id": attempt_id,
                    "target": candidate.target,
                    "code": exc.code,
                },
            )
            return exc
        if self.metrics:
            self.metrics.launch_seconds.labels(provider=candidate.provider).observe(time.perf_counter() - started)
        log.info(
            "",
            extra={
                "event": "launched",
                "task_id": task.id,
                "attempt_id": attempt_id,
                "target": candidate.target,
                "adopted": result.adopted,
            },
        )
        return result.backend_ref

    def _launch(self, task: Task, candidates: list[Candidate], history: list[str]) -> None:
        """The per-task path after a launch error: one attempt per remaining candidate."""
        for candidate in candidates:
            token, token_sha256 = _attempt_token()
            attempt = self.store.create_attempt(
                task_id=task.id,
                target=candidate.target,
                provider=candidate.provider,
                token_sha256=token_sha256,
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
            if current.state == TaskState.LAUNCHING:
                # failover: the task stays launching, but now on this candidate's target
                self.store.retarget_task(task.id, target=candidate.target, actor=self.scheduler_id)
            else:
                with contextlib.suppress(InvalidTransition, StateMismatch):
                    self.store.transition_task(
                        task.id, wanted=TaskState.LAUNCHING, actor=self.scheduler_id, target=candidate.target
                    )
            sent = self._send(task, candidate, attempt.id, token, history)
            if isinstance(sent, str):
                self.store.set_backend_ref(attempt.id, backend_ref=sent)
                return
            if not sent.retryable:
                break
        self._fail_task(task.id, "every candidate failed to launch: " + "; ".join(history))

    def _fail_task(self, task_id: str, reason: str) -> None:
        with contextlib.suppress(InvalidTransition, StateMismatch):  # cancelled meanwhile
            self.store.transition_task(task_id, wanted=TaskState.FAILED, actor=self.scheduler_id, reason=reason)

    # -- following -------------------------------------------------------------
    def release_finished(self) -> int:
        """Delete the backend resources of attempts that ended since the last call; returns how many.

        An attempt usually ends by its worker's callback, which the API
        records without touching the backend. Left alone, the resource may
        go on costing money: an Azure VM that powered itself off stays
        allocated and billed, a Kubernetes pod stuck pulling its image holds
        its GPU. ``cancel`` of something already gone is success, so this is
        safe to repeat. The cursor starts at the newest event when the
        scheduler starts; resources of attempts that ended before are
        reconciliation's job (``list_owned``). The local provider keeps its
        attempt directories (logs), so it is skipped.
        """
        if self._release_cursor is None:
            self._release_cursor = self.store.last_event_id()
            return 0
        released = 0
        for event_id, attempt_id, provider_name in self.store.finished_attempts_after(self._release_cursor):
            provider = self.providers.get(provider_name)
            if provider is not None and provider_name != "local":
                try:
                    provider.cancel(attempt_id)
                except (ProviderError, Unavailable) as exc:
                    log.warning(
                        "",
                        extra={"event": "attempt.release_failed", "attempt_id": attempt_id, "error": str(exc)},
                    )
                    return released  # the same attempt is tried again next round
                released += 1
            self._release_cursor = event_id
        return released

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
