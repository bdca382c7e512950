"""Two ``fusionctl serve`` replicas on one PostgreSQL: every outbox event is POSTed exactly once.

Both replicas run their deliverers (every replica does, leader or not) and
poll the outbox every 0.1 s; the events are written while both run, so both
claim from the same rows at once. Once every row is delivered no replica
sends again, so the receiver's count is final.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path

import pytest

from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.store import NewTask, Store, list_deliveries, make_engine, upgrade
from tests.support.postgres import PostgresServer
from tests.support.serve_process import served
from tests.support.webhook_receiver import receiving

pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()
EVENTS = 120


def _outcomes(store: Store, url: str) -> None:
    """EVENTS cancelled tasks with a notify URL: one outbox row each."""
    created = store.create_tasks(
        [
            NewTask(
                spec=TaskSpec(
                    tenant="acme",
                    kind=TaskKind.IMAGE,
                    source_uri="s3://in/a.png",
                    target_uri=f"s3://in/{i}.png",
                    output_uri=f"s3://out/{i}.png",
                    notify_url=url,
                ),
                request_hash=str(i),
            )
            for i in range(EVENTS)
        ]
    )
    for outcome in created:
        assert not isinstance(outcome, Exception)
        store.transition_task(outcome[0].id, wanted=TaskState.CANCELLED, actor="test")


def _all_delivered(store: Store, *, within_s: float) -> list[str]:
    deadline = time.monotonic() + within_s
    while True:
        rows = list_deliveries(store, limit=EVENTS + 1)
        if len(rows) == EVENTS and all(d.state == "delivered" for d in rows):
            return [d.id for d in rows]
        assert time.monotonic() < deadline, f"{sum(d.state == 'delivered' for d in rows)} of {EVENTS} delivered"
        time.sleep(0.1)  # the rows' state is in another process's database: nothing to await on


def test_two_replicas_on_one_postgresql_post_each_event_once(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.url(postgres_server.create_database("replicas"))
    engine = make_engine(url)
    upgrade(engine=engine)
    store = Store(engine)
    hooks_file = tmp_path / "webhooks.json"
    hooks_file.write_text(json.dumps({"version": 1, "tenants": {"acme": {"secrets": [SECRET]}}}))
    hooks_file.chmod(0o600)
    try:
        with receiving() as receiver, contextlib.ExitStack() as replicas:
            allow = f"localhost:{receiver.server_address[1]}"
            env = {
                "FUSIONPLANE_DATABASE_URL": url,
                "FUSIONPLANE_WEBHOOKS_FILE": str(hooks_file),
                "FUSIONPLANE_WEBHOOK_ALLOW_HOSTS": allow,
                "FUSIONPLANE_WEBHOOK_POLL_S": "0.1",
            }
            for name in ("a", "b"):
                workdir = tmp_path / name
                workdir.mkdir()
                replicas.enter_context(served(workdir, insecure_dev=True, **env))
            _outcomes(store, f"http://{allow}/hook")
            delivered = _all_delivered(store, within_s=60)
            ids = [r.headers["webhook-id"] for r in receiver.received]
        assert sorted(ids) == sorted(delivered)
        # one recorded try per event, whichever replica made it
        recorded = [
            e.actor
            for d in list_deliveries(store, limit=EVENTS)
            for e in store.list_events(d.task_id)
            if e.kind == "webhook.delivered"
        ]
        assert len(recorded) == EVENTS
        print("deliveries per replica:", {actor: recorded.count(actor) for actor in set(recorded)})
    finally:
        engine.dispose()
