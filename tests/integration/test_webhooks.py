"""Webhooks end to end in one process: the outbox row written with the outcome, signed POSTs to a real loopback
receiver, retries with the same event id, giving up, re-queueing, rotation, and two deliverers on one database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.config import WebhookDeliverySettings
from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.domain.webhooks import parse_secret
from controlplane.metrics import Metrics
from controlplane.scheduler.webhook_sender import WebhookSender
from controlplane.scheduler.webhooks import WebhookDeliverer
from controlplane.store import Store, list_deliveries, retry_delivery
from faceswap.netguard import AllowedHosts
from tests.support.webhook_receiver import Received, WebhookReceiver, loopback_resolver, receiving

pytest_plugins = ["tests.integration.store_fixtures"]

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
FAST = WebhookDeliverySettings(timeout_s=5.0, max_attempts=4, retry_base_s=0.01, retry_max_s=0.05, concurrency=4)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with receiving() as running:
        yield running


def deliverer(
    store: Store,
    receiver: WebhookReceiver,
    *,
    owner: str = "replica-a",
    secrets: tuple[str, ...] = (SECRET,),
    settings: WebhookDeliverySettings = FAST,
) -> WebhookDeliverer:
    sender = WebhookSender(
        allowed=AllowedHosts.parse([receiver.allow_entry]),
        timeout_s=settings.timeout_s,
        max_response_bytes=settings.max_response_bytes,
        resolver=loopback_resolver,
    )
    parsed = tuple(parse_secret(s) for s in secrets)
    return WebhookDeliverer(
        store,
        settings=settings,
        secrets_of=lambda _tenant: parsed,
        sender=sender,
        metrics=Metrics.create(),
        owner=owner,
    )


def finished_task(store: Store, url: str | None, *, events: tuple[str, ...] = ()) -> str:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://in/face.png",
        target_uri="s3://in/target.png",
        output_uri="s3://out/acme.png",
        notify_url=url,
        notify_events=events,
    )
    task, _ = store.create_task(spec=spec, request_hash="h")
    store.transition_task(task.id, wanted=TaskState.CANCELLED, actor="test", reason="the submitter cancelled it")
    return task.id


def documented_verify(secret: str, received: Received) -> bool:
    """docs/api.md's verification, written out again: HMAC-SHA256 of id.timestamp.body, base64, v1 prefix."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in received.headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


def deliver_until(hooks: WebhookDeliverer, receiver: WebhookReceiver, count: int) -> list[Received]:
    for _ in range(200):
        hooks.deliver_due(max_seconds=1.0)
        if len(receiver.received) >= count:
            break
        threading.Event().wait(0.02)  # the retry's due time is in the store's clock: nothing to await on
    return receiver.wait_for(count, timeout_s=1.0)


def test_an_outcome_is_posted_once_signed_as_documented(store: Store, receiver: WebhookReceiver) -> None:
    task_id = finished_task(store, receiver.url)
    hooks = deliverer(store, receiver)
    try:
        assert hooks.deliver_due() == 1
        assert hooks.deliver_due() == 0
    finally:
        hooks.close()
    (got,) = receiver.received
    assert documented_verify(SECRET, got)
    assert not documented_verify(OLD_SECRET, got)
    body = json.loads(got.body)
    assert body["type"] == "task.cancelled"
    assert body["id"] == got.headers["webhook-id"]
    assert body["data"]["task_id"] == task_id
    assert body["data"]["reason"] == "the submitter cancelled it"
    # the task's estimated cloud cost, as GET /v1/tasks shows it (no attempt here: nothing spent)
    assert body["data"]["cost"] == {"estimated_usd": 0.0, "unpriced_attempts": 0}
    (row,) = list_deliveries(store, task_id=task_id)
    assert row.state == "delivered"
    assert row.attempts == 1
    assert [e.kind for e in store.list_events(task_id)][-1] == "webhook.delivered"


def test_a_tampered_body_does_not_verify(store: Store, receiver: WebhookReceiver) -> None:
    finished_task(store, receiver.url)
    hooks = deliverer(store, receiver)
    try:
        hooks.deliver_due()
    finally:
        hooks.close()
    (got,) = receiver.received
    forged = Received(got.path, got.headers, got.body.replace(b"cancelled", b"succeeded"))
    assert not documented_verify(SECRET, forged)


def test_both_secrets_of_a_rotation_verify(store: Store, receiver: WebhookReceiver) -> None:
    finished_task(store, receiver.url)
    hooks = deliverer(store, receiver, secrets=(SECRET, OLD_SECRET))
    try:
        hooks.deliver_due()
    finally:
        hooks.close()
    (got,) = receiver.received
    assert documented_verify(SECRET, got)
    assert documented_verify(OLD_SECRET, got)
    assert len(got.headers["webhook-signature"].split()) == 2


def test_a_receiver_failing_twice_gets_the_same_event_id_then_no_more(store: Store) -> None:
    with receiving([500, 503]) as receiver:
        task_id = finished_task(store, receiver.url)
        hooks = deliverer(store, receiver)
        try:
            got = deliver_until(hooks, receiver, 3)
            for _ in range(5):
                hooks.deliver_due()
        finally:
            hooks.close()
        assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1
    kinds = [e.kind for e in store.list_events(task_id) if e.kind.startswith("webhook.")]
    assert kinds == ["webhook.retrying", "webhook.retrying", "webhook.delivered"]


def test_a_receiver_that_never_accepts_is_failed_then_retried_by_the_operator(store: Store) -> None:
    with receiving([500] * FAST.max_attempts) as receiver:
        task_id = finished_task(store, receiver.url)
        hooks = deliverer(store, receiver)
        try:
            deliver_until(hooks, receiver, FAST.max_attempts)
            (row,) = list_deliveries(store, task_id=task_id)
            assert row.state == "failed"
            assert row.last_status == 500
            assert row.attempts == FAST.max_attempts
            retry_delivery(store, row.id, actor="operator")
            deliver_until(hooks, receiver, FAST.max_attempts + 1)
        finally:
            hooks.close()
    (row,) = list_deliveries(store, task_id=task_id)
    assert row.state == "delivered"


def test_410_gone_stops_at_once(store: Store) -> None:
    with receiving([410]) as receiver:
        task_id = finished_task(store, receiver.url)
        hooks = deliverer(store, receiver)
        try:
            hooks.deliver_due()
            hooks.deliver_due()
        finally:
            hooks.close()
        assert len(receiver.received) == 1
    (row,) = list_deliveries(store, task_id=task_id)
    assert row.state == "failed"


def test_no_notify_url_writes_no_event_and_running_only_when_asked(store: Store, receiver: WebhookReceiver) -> None:
    quiet = finished_task(store, None)
    assert list_deliveries(store, task_id=quiet) == []
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://in/a.png",
        target_uri="s3://in/b.png",
        output_uri="s3://out/c.png",
        notify_url=receiver.url,
        notify_events=("running",),
    )
    task, _ = store.create_task(spec=spec, request_hash="h2")
    for state in (TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED):
        store.transition_task(
            task.id, wanted=state, actor="test", target="local" if state is TaskState.PLANNED else None
        )
    kinds = sorted(d.kind for d in list_deliveries(store, task_id=task.id))
    assert kinds == ["task.running", "task.succeeded"]


def test_two_deliverers_on_one_database_post_each_event_once(store: Store, receiver: WebhookReceiver) -> None:
    task_ids = [finished_task(store, receiver.url) for _ in range(40)]
    replicas = [deliverer(store, receiver, owner=name) for name in ("replica-a", "replica-b")]
    start = threading.Barrier(len(replicas))

    def run(hooks: WebhookDeliverer) -> None:
        start.wait()
        for _ in range(5):
            hooks.deliver_due()

    threads = [threading.Thread(target=run, args=(hooks,)) for hooks in replicas]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for hooks in replicas:
            hooks.close()
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(task_ids) == len(set(ids))
    assert {d.state for t in task_ids for d in list_deliveries(store, task_id=t)} == {"delivered"}


def test_the_api_docs_verification_example_accepts_a_real_delivery(store: Store, receiver: WebhookReceiver) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", page, re.DOTALL) if "def verify" in block]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/api.md", "exec"), namespace)
    finished_task(store, receiver.url)
    hooks = deliverer(store, receiver, secrets=(SECRET, OLD_SECRET))
    try:
        hooks.deliver_due()
    finally:
        hooks.close()
    (got,) = receiver.received
    verify = namespace["verify"]
    assert verify(SECRET, got.headers, got.body)
    assert verify(OLD_SECRET, got.headers, got.body)
    assert not verify(SECRET, got.headers, got.body + b" ")
    stale = {**got.headers, "webhook-timestamp": str(int(got.headers["webhook-timestamp"]) - 3600)}
    assert not verify(SECRET, stale, got.body)
