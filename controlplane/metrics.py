"""Prometheus metrics an operator alerts on; one registry per app so tests stay isolated."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Metrics:
    registry: CollectorRegistry
    tasks_by_state: Gauge
    tasks_waiting: Gauge
    oldest_wait_seconds: Gauge
    submissions: Counter
    plan_seconds: Histogram
    launch_seconds: Histogram
    attempts: Counter
    callbacks_rejected: Counter
    submit_batch_size: Histogram
    policy_reloads: Counter
    policy_source_up: Gauge
    policy_applied_timestamp: Gauge
    signal_polls: Counter
    signal_poll_errors: Counter
    signal_poll_seconds: Histogram
    leader: Gauge
    leader_changes: Counter
    reconciled: Counter
    tokens_reloads: Counter
    tokens_loaded: Gauge
    staging: Counter
    staged_bytes: Counter
    placements: Counter
    failovers: Counter
    scheduler_pass_timestamp: Gauge
    http_request_seconds: Histogram
    webhook_deliveries: Counter
    webhook_outbox_waiting: Gauge
    webhook_outbox_oldest_seconds: Gauge

    def attempt_ended(self, *, provider: str, target: str, outcome: str) -> None:
        """One finished attempt: every place an attempt ends calls this, so the labels stay one set."""
        self.attempts.labels(provider=provider, target=target, outcome=outcome).inc()

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            tasks_by_state=Gauge("fusionplane_tasks", "Tasks by state", ["state"], registry=registry),
            tasks_waiting=Gauge(
                "fusionplane_tasks_waiting",
                "Queued tasks waiting for a placement (no candidate now: no capacity, stale signals, ...)",
                registry=registry,
            ),
            oldest_wait_seconds=Gauge(
                "fusionplane_tasks_oldest_wait_seconds",
                "How long the longest-waiting task has waited for a placement (0: none waits)",
                registry=registry,
            ),
            submissions=Counter(
                "fusionplane_submissions", "Task submissions by outcome", ["outcome"], registry=registry
            ),
            plan_seconds=Histogram(
                "fusionplane_plan_seconds", "Time to plan one task", buckets=_LATENCY_BUCKETS, registry=registry
            ),
            launch_seconds=Histogram(
                "fusionplane_launch_seconds",
                "Time for a provider to accept a launch",
                ["provider"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            attempts=Counter(
                "fusionplane_attempts",
                "Finished attempts by provider, target and outcome (preempted, lost, failed, succeeded, cancelled)",
                ["provider", "target", "outcome"],
                registry=registry,
            ),
            callbacks_rejected=Counter(
                "fusionplane_callbacks_rejected",
                "Worker callbacks refused (bad token, unknown attempt)",
                ["reason"],
                registry=registry,
            ),
            submit_batch_size=Histogram(
                "fusionplane_submit_batch_size",
                "Submissions stored per database transaction (group commit)",
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                registry=registry,
            ),
            policy_reloads=Counter(
                "fusionplane_policy_reloads",
                "Policy versions seen by the watcher, by outcome (applied, unchanged, invalid, unreachable, "
                "record_failed); anything but applied/unchanged means the last good policy stayed in force",
                ["outcome"],
                registry=registry,
            ),
            policy_source_up=Gauge(
                "fusionplane_policy_source_up", "1 when the policy source (Consul or file) answers", registry=registry
            ),
            policy_applied_timestamp=Gauge(
                "fusionplane_policy_applied_timestamp_seconds",
                "When the policy in force was applied (Unix time)",
                registry=registry,
            ),
            signal_polls=Counter(
                "fusionplane_signal_polls",
                "Signal polls by source and outcome",
                ["source", "outcome"],
                registry=registry,
            ),
            signal_poll_errors=Counter(
                "fusionplane_signal_poll_errors",
                "Signal poll errors by source (a whole poll failing, or one part of it)",
                ["source"],
                registry=registry,
            ),
            signal_poll_seconds=Histogram(
                "fusionplane_signal_poll_seconds",
                "Time one signal poll took",
                ["source"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            leader=Gauge(
                "fusionplane_leader",
                "1 while this replica holds the scheduler lease and schedules; alert when no replica reports 1",
                registry=registry,
            ),
            leader_changes=Counter(
                "fusionplane_leader_changes",
                "Times this replica became the scheduling leader (often: lease too short, or replicas flapping)",
                registry=registry,
            ),
            reconciled=Counter(
                "fusionplane_reconciled",
                "Reconciliation actions by provider and action (adopted, orphan_cancelled, released, vanished, "
                "requeued, finished); orphans and vanished attempts are what to alert on",
                ["provider", "action"],
                registry=registry,
            ),
            tokens_reloads=Counter(
                "fusionplane_tokens_reloads",
                "Tokens file changes seen by this process, by outcome (applied, invalid); invalid means the "
                "last good set of tokens stayed in force",
                ["outcome"],
                registry=registry,
            ),
            tokens_loaded=Gauge(
                "fusionplane_tokens_loaded", "API tokens in force in this process (hashes)", registry=registry
            ),
            staging=Counter(
                "fusionplane_staging",
                "Inputs staged into a target's store before a launch, by outcome (copied, already_there, "
                "unavailable, checksum_mismatch, failed, private_refused); private_refused is always a bug to alert on",
                ["outcome"],
                registry=registry,
            ),
            staged_bytes=Counter(
                "fusionplane_staged_bytes", "Bytes copied into targets' stores by the stager", registry=registry
            ),
            placements=Counter(
                "fusionplane_placements",
                "Launches a target's provider accepted (one per attempt; a hedged launch counts each attempt)",
                ["provider", "target"],
                registry=registry,
            ),
            failovers=Counter(
                "fusionplane_failovers",
                "Tasks sent on from an attempt on this target, by trigger (preempted, lost, heartbeat, "
                "launch_refused, ...) and outcome (requeued: planned again; waiting: a launch refused for want of "
                "room, waits without spending an attempt; failed: max attempts or the queue limit used up)",
                ["target", "trigger", "outcome"],
                registry=registry,
            ),
            scheduler_pass_timestamp=Gauge(
                "fusionplane_scheduler_last_pass_timestamp_seconds",
                "When this replica, as leader, last finished a pass of a scheduler loop (place, follow, release, "
                "reconcile), Unix time; a leader whose value stops moving is stalled or failing",
                ["loop"],
                registry=registry,
            ),
            http_request_seconds=Histogram(
                "fusionplane_http_request_duration_seconds",
                "API requests by method, route template and status code, until the response ended",
                ["method", "route", "status"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            webhook_deliveries=Counter(
                "fusionplane_webhook_deliveries",
                "Webhook tries by outcome (delivered; retry: refused or unanswered, tried again later; "
                "failed: the retry window used up or the URL refused)",
                ["outcome"],
                registry=registry,
            ),
            webhook_outbox_waiting=Gauge(
                "fusionplane_webhook_outbox_waiting",
                "Webhook events not delivered yet (pending or being delivered)",
                registry=registry,
            ),
            webhook_outbox_oldest_seconds=Gauge(
                "fusionplane_webhook_outbox_oldest_seconds",
                "How long the oldest undelivered webhook event has waited (0: none waits)",
                registry=registry,
            ),
        )
