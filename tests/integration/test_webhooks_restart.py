"""kill -9 of a real ``fusionctl serve`` between the outcome's commit and its webhook: the restart delivers it.

The first life delivers nothing (its deliverer would first look after a
minute); the task's outcome commits with its outbox row; SIGKILL; the second
life, now with a signing secret, POSTs the very event (same id) to a real
receiver on loopback, which the operator's allow-list lets it reach.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from controlplane.store import Store, list_deliveries, make_engine
from tests.support.api_fixtures import PNG_START
from tests.support.serve_process import served
from tests.support.webhook_receiver import receiving

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()
#: the insecure development principal's tenant
TENANT = "dev"


def _inputs(workdir: Path) -> dict[str, str]:
    folder = workdir / "var" / "inputs" / TENANT
    folder.mkdir(parents=True)
    for name in ("face.png", "target.png"):
        (folder / name).write_bytes(PNG_START)
    return {"source": str(folder / "face.png"), "target": str(folder / "target.png")}


def _final_task(url: str, body: dict[str, object]) -> str:
    submitted = httpx.post(f"{url}/v1/tasks", json=body, timeout=10)
    assert submitted.status_code == 202, submitted.text
    task_id = str(submitted.json()["id"])
    # cancelled now, or (if the scheduler was quicker) whatever outcome it reached: one outcome either way
    cancelled = httpx.post(f"{url}/v1/tasks/{task_id}/cancel", timeout=10)
    assert cancelled.status_code in (200, 409), cancelled.text
    return task_id


def test_an_outcome_committed_before_a_kill_9_is_delivered_after_the_restart(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'plane.db'}"
    body: dict[str, object] = _inputs(tmp_path)
    with receiving() as receiver:
        # the operator's allow-list names the receiver's host and port, as it would an internal receiver
        allow = f"localhost:{receiver.server_address[1]}"
        body["notify_url"] = f"http://{allow}/hook"
        env = {"FUSIONPLANE_DATABASE_URL": database, "FUSIONPLANE_WEBHOOK_ALLOW_HOSTS": allow}
        with served(tmp_path, insecure_dev=True, FUSIONPLANE_WEBHOOK_POLL_S="60", **env) as first:
            task_id = _final_task(first.url, body)
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
        engine = make_engine(database)
        try:
            (waiting,) = list_deliveries(Store(engine), task_id=task_id)
        finally:
            engine.dispose()
        assert waiting.state == "pending"
        assert receiver.received == []

        hooks = tmp_path / "var" / "webhooks.json"
        hooks.write_text(json.dumps({"version": 1, "tenants": {TENANT: {"secrets": [SECRET]}}}))
        hooks.chmod(0o600)
        with served(tmp_path, insecure_dev=True, FUSIONPLANE_WEBHOOK_POLL_S="0.1", **env):
            (got,) = receiver.wait_for(1, timeout_s=30)
        assert got.headers["webhook-id"] == waiting.id
        assert json.loads(got.body)["data"]["task_id"] == task_id
    engine = make_engine(database)
    try:
        (delivered,) = list_deliveries(Store(engine), task_id=task_id)
    finally:
        engine.dispose()
    assert delivered.state == "delivered"
