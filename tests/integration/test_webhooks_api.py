"""``/v1/webhooks/deliveries`` and ``fusionctl webhooks list|retry``: tenant-scoped, operators see all."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controlplane.cli.main import cli
from controlplane.config import WebhookDeliverySettings
from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.domain.webhooks import parse_secret
from controlplane.metrics import Metrics
from controlplane.scheduler.webhook_sender import WebhookSender
from controlplane.scheduler.webhooks import WebhookDeliverer
from controlplane.store import Store, list_deliveries, make_engine, upgrade
from faceswap.netguard import AllowedHosts
from tests.support.api_fixtures import ACME, GLOBEX, OPERATOR, ApiServer
from tests.support.webhook_receiver import WebhookReceiver, loopback_resolver, receiving

SECRET = parse_secret("whsec_" + base64.b64encode(b"a" * 32).decode())


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    with ApiServer.start(Store(engine), tmp_path) as server:
        yield server
    engine.dispose()


def _finished(store: Store, tenant: str, url: str) -> str:
    spec = TaskSpec(
        tenant=tenant,
        kind=TaskKind.IMAGE,
        source_uri="s3://in/a.png",
        target_uri="s3://in/b.png",
        output_uri="s3://out/c.png",
        notify_url=url,
    )
    task, _ = store.create_task(spec=spec, request_hash=tenant)
    store.transition_task(task.id, wanted=TaskState.CANCELLED, actor="test")
    return task.id


def _deliver(store: Store, receiver: WebhookReceiver) -> None:
    sender = WebhookSender(
        allowed=AllowedHosts.parse([receiver.allow_entry]),
        timeout_s=2.0,
        max_response_bytes=1024,
        resolver=loopback_resolver,
    )
    hooks = WebhookDeliverer(
        store,
        settings=WebhookDeliverySettings(),
        secrets_of=lambda _tenant: (SECRET,),
        sender=sender,
        metrics=Metrics.create(),
        owner="replica",
    )
    try:
        hooks.deliver_due()
    finally:
        hooks.close()


@pytest.fixture
def failed(api: ApiServer) -> Iterator[dict[str, str]]:
    """One failed delivery of acme's and one of globex's (their receiver answered 410 Gone)."""
    with receiving([410, 410]) as receiver:
        ids = {tenant: _finished(api.store, tenant, receiver.url) for tenant in ("acme", "globex")}
        _deliver(api.store, receiver)
    return {tenant: list_deliveries(api.store, task_id=task_id)[0].id for tenant, task_id in ids.items()}


def test_a_submitter_sees_only_its_own_tenants_deliveries(api: ApiServer, failed: dict[str, str]) -> None:
    mine = api.client(ACME).get("/v1/webhooks/deliveries").json()["deliveries"]
    assert [d["id"] for d in mine] == [failed["acme"]]
    assert mine[0]["state"] == "failed"
    assert mine[0]["last_status"] == 410
    assert api.client(ACME).get("/v1/webhooks/deliveries", params={"tenant": "globex"}).status_code == 403
    everyone = api.client(OPERATOR).get("/v1/webhooks/deliveries", params={"state": "failed"}).json()
    assert {d["id"] for d in everyone["deliveries"]} == set(failed.values())


def test_a_retry_is_the_tenants_own_and_only_of_a_failed_delivery(api: ApiServer, failed: dict[str, str]) -> None:
    path = f"/v1/webhooks/deliveries/{failed['acme']}/retry"
    assert api.client(GLOBEX).post(path).status_code == 404
    retried = api.client(ACME).post(path)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "pending"
    assert retried.json()["attempts"] == 0
    again = api.client(ACME).post(path)
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "state"
    assert api.client(OPERATOR).post(f"/v1/webhooks/deliveries/{failed['globex']}/retry").status_code == 200


def _fusionctl(api: ApiServer, token: str, *args: str) -> Result:
    env = {"FUSIONPLANE_URL": api.url, "FUSIONPLANE_TOKEN": token}
    return CliRunner().invoke(cli, ["webhooks", *args], env=env, catch_exceptions=False)


def test_fusionctl_lists_and_retries(api: ApiServer, failed: dict[str, str]) -> None:
    listed = _fusionctl(api, OPERATOR, "list", "--state", "failed")
    assert listed.exit_code == 0, listed.output
    assert failed["acme"] in listed.output
    assert failed["globex"] in listed.output
    assert "answered 410" in listed.output
    as_json = _fusionctl(api, ACME, "list", "-o", "json")
    assert [d["id"] for d in json.loads(as_json.stdout)["deliveries"]] == [failed["acme"]]
    retried = _fusionctl(api, ACME, "retry", failed["acme"])
    assert retried.exit_code == 0, retried.output
    assert "pending" in retried.output
    refused = _fusionctl(api, ACME, "retry", failed["acme"])
    assert refused.exit_code == 1
