"""The webhook deliverer: every replica claims due outbox rows, signs them, POSTs them and records each try.

It runs on every replica, leader or not: the store's claim gives each row to
one replica at a time, so more replicas deliver faster and never twice at
once. A try that fails is tried again after ``base * 2**(n-1)`` seconds
(at most ``retry_max_s``), each wait drawn within +-20% so that receivers
coming back from an outage are not hit by every retry at the same second;
after ``max_attempts`` tries, or an answer that says never (410, a URL the
address rules refuse), the row is failed, which ``fusionctl webhooks list``
shows and ``fusionctl webhooks retry`` undoes.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

from controlplane.config import WebhookDeliverySettings
from controlplane.domain.webhooks import ALWAYS_TOLD, WebhookSecret, signature_header
from controlplane.metrics import Metrics
from controlplane.scheduler.webhook_sender import SendResult, WebhookSender
from controlplane.store import Delivery, Store, claim_deliveries, finish_delivery, outbox_depth, task_costs
from controlplane.store.webhooks import Result
from faceswap.netguard import UrlRefused, parse_web_url

__all__ = ["JITTER", "WebhookDeliverer", "retry_delay_s"]

log = logging.getLogger("fusionplane.webhooks")
#: each wait is drawn from [1 - JITTER, 1 + JITTER] times its nominal length
JITTER = 0.2
USER_AGENT = "FusionPlane-Webhooks/1"


def retry_delay_s(tries: int, *, base_s: float, max_s: float, draw: float) -> float:
    """The wait after the ``tries``-th failed try; ``draw`` in [0, 1) places it in the jitter band."""
    nominal = min(max_s, base_s * 2.0 ** (tries - 1))
    return nominal * (1 - JITTER + 2 * JITTER * draw)


def _host(url: str) -> str:
    """The host alone, for logs: a URL's path or query may carry the receiver's own token."""
    try:
        return parse_web_url(url).host_port
    except UrlRefused:
        return "<bad url>"


class WebhookDeliverer:
    """One replica's delivery loop over the store's outbox."""

    def __init__(
        self,
        store: Store,
        *,
        settings: WebhookDeliverySettings,
        secrets_of: Callable[[str], tuple[WebhookSecret, ...]],
        sender: WebhookSender,
        metrics: Metrics,
        owner: str,
        draw: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.settings, self.owner = store, settings, owner
        self._secrets_of, self._sender, self._metrics = secrets_of, sender, metrics
        self._draw, self._wall_clock = draw, wall_clock
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="webhook")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._sender.close()

    def deliver_due(self, *, max_seconds: float = 5.0) -> int:
        """Claim and send what is due, batch after batch, until nothing is or ``max_seconds`` passed; tries made."""
        deadline = time.monotonic() + max_seconds
        made = 0
        while time.monotonic() < deadline:
            claimed = claim_deliveries(
                self.store,
                owner=self.owner,
                limit=self.settings.concurrency * 4,
                # a claim outlives every try of its batch, so no other replica sends the row meanwhile
                claim_seconds=self.settings.timeout_s * 4 + 30,
            )
            if not claimed:
                break
            made += sum(1 for _ in self._pool.map(self._deliver, self._with_costs(claimed)))
        return made

    def _with_costs(self, claimed: list[Delivery]) -> list[Delivery]:
        """The outcomes with the task's estimated cloud cost (``store.task_costs``), as ``GET /v1/tasks`` shows it.

        Added when sent rather than when the outbox row is written: that write
        is part of the outcome's own transaction, which should not read every
        attempt and receipt of the task. Once a task has ended its attempts
        have too, so every retry sends the same figure.
        """
        ended = [d.task_id for d in claimed if d.kind.removeprefix("task.") in ALWAYS_TOLD]
        if not ended:
            return claimed
        costs = task_costs(self.store.engine, ended, now=self.store.now())
        return [
            replace(d, payload={**d.payload, "data": {**d.payload.get("data", {}), "cost": costs[d.task_id].as_json()}})
            if d.task_id in costs
            else d
            for d in claimed
        ]

    def observe_depth(self) -> None:
        """The outbox gauges: how many events wait, and how long the oldest has."""
        depth = outbox_depth(self.store)
        self._metrics.webhook_outbox_waiting.set(depth.waiting)
        self._metrics.webhook_outbox_oldest_seconds.set(depth.oldest_age_s)

    def _deliver(self, delivery: Delivery) -> None:
        secrets = self._secrets_of(delivery.tenant)
        if not secrets:
            result = SendResult(False, error=f"no signing secret for tenant {delivery.tenant} (the webhooks file)")
        else:
            result = self._send(delivery, secrets)
        self._record(delivery, result)

    def _send(self, delivery: Delivery, secrets: tuple[WebhookSecret, ...]) -> SendResult:
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(self._wall_clock())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, delivery.id, timestamp, body),
        }
        return self._sender.send(delivery.url, headers, body)

    def _record(self, delivery: Delivery, result: SendResult) -> None:
        next_at: datetime | None = None
        outcome: Result
        if result.delivered:
            outcome = "delivered"
        elif result.final or delivery.attempts >= self.settings.max_attempts:
            outcome = "failed"
        else:
            outcome = "retry"
            wait = retry_delay_s(
                delivery.attempts, base_s=self.settings.retry_base_s, max_s=self.settings.retry_max_s, draw=self._draw()
            )
            next_at = self.store.now() + timedelta(seconds=wait)
        kept = finish_delivery(
            self.store,
            delivery,
            owner=self.owner,
            result=outcome,
            status=result.status,
            error=result.error,
            next_attempt_at=next_at,
        )
        # another replica took the row over (this try outlived its claim): its record stands
        label = outcome if kept else "claim_lost"
        self._metrics.webhook_deliveries.labels(outcome=label).inc()
        log.log(
            logging.INFO if label == "delivered" else logging.WARNING,
            "",
            extra={
                "event": f"webhook.{label}",
                "delivery_id": delivery.id,
                "task_id": delivery.task_id,
                "tenant": delivery.tenant,
                "host": _host(delivery.url),
                "try": delivery.attempts,
                "status": result.status,
                "error": result.error,
            },
        )
