"""Hostile webhook targets: a notify_url inside the operator's network is refused at submission (422 naming
``notify_url``) and again at send time; the operator's allow-list is the only way in; secrets stay secret.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.config import WebhookDeliverySettings
from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.domain.webhooks import parse_secret
from controlplane.metrics import Metrics
from controlplane.policy.webhooks import WebhooksFile, WebhooksFileError
from controlplane.scheduler.webhook_sender import WebhookSender
from controlplane.scheduler.webhooks import WebhookDeliverer
from controlplane.store import Store, list_deliveries, make_engine, upgrade
from faceswap.netguard import AllowedHosts
from tests.support.api_fixtures import ACME, ApiServer, stored_rows
from tests.support.storage import fixed_host_resolver
from tests.support.webhook_receiver import HOST, receiving

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[ApiServer]:
    resolver = fixed_host_resolver({"inside.example.com": ["10.0.0.7"], HOST: ["127.0.0.1"]})
    settings = WebhookDeliverySettings(allow_hosts=(f"{HOST}:9999",))
    with ApiServer.start(store, tmp_path, resolve_host=resolver, webhooks=settings) as server:
        yield server


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.1.2.3/hook",
        "http://192.168.0.1:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://[fd00::1]/hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://017700000001/hook",
        "http://db/hook",
        "http://user:pw@example.com/hook",
        "http://inside.example.com/hook",
        f"http://{HOST}:9998/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://exa mple.com/",
    ],
)
def test_an_internal_or_malformed_notify_url_is_422_naming_the_field(api: ApiServer, url: str) -> None:
    before = stored_rows(api.store)
    response = api.client(ACME).post("/v1/tasks", json=api.body(notify_url=url))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "notify_url"
    assert stored_rows(api.store) == before


def test_a_host_the_operator_allows_is_accepted_and_stored(api: ApiServer) -> None:
    url = f"http://{HOST}:9999/hook?token=abc"
    response = api.client(ACME).post("/v1/tasks", json=api.body(notify_url=url, notify_events=["running"]))
    assert response.status_code == 202, response.text
    task = api.store.get_task(response.json()["id"])
    assert task.spec.notify_url == url
    assert task.spec.notify_events == ("running",)


def test_only_running_may_be_asked_for(api: ApiServer) -> None:
    body = api.body(notify_url=f"http://{HOST}:9999/hook", notify_events=["queued"])
    assert api.client(ACME).post("/v1/tasks", json=body).status_code == 422


def test_a_name_that_turns_internal_after_submission_is_never_posted_to(store: Store) -> None:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://in/a.png",
        target_uri="s3://in/b.png",
        output_uri="s3://out/c.png",
        notify_url="http://rebinding.example.com/hook",
    )
    task, _ = store.create_task(spec=spec, request_hash="h")
    store.transition_task(task.id, wanted=TaskState.CANCELLED, actor="test")
    with receiving() as receiver:
        rebound = WebhookSender(
            allowed=AllowedHosts.parse([receiver.allow_entry]),  # the receiver's name, not this one
            timeout_s=2.0,
            max_response_bytes=1024,
            resolver=lambda _host, _port: [ipaddress.ip_address("127.0.0.1")],  # DNS now answers loopback
        )
        secret = parse_secret(SECRET)
        hooks = WebhookDeliverer(
            store,
            settings=WebhookDeliverySettings(),
            secrets_of=lambda _tenant: (secret,),
            sender=rebound,
            metrics=Metrics.create(),
            owner="replica",
        )
        try:
            hooks.deliver_due()
        finally:
            hooks.close()
        assert receiver.received == []
    (row,) = list_deliveries(store, task_id=task.id)
    assert row.state == "failed"
    assert "internal address" in (row.last_error or "")


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_the_webhooks_file_must_not_be_readable_by_others(tmp_path: Path) -> None:
    path = _write(tmp_path / "webhooks.json", '{"version": 1, "tenants": {}}', 0o644)
    with pytest.raises(WebhooksFileError, match="chmod 600"):
        WebhooksFile(path)


@pytest.mark.parametrize(
    "secret",
    ["whsec_short", "notwhsec_" + "A" * 40, "whsec_" + "!" * 40, "whsec_" + base64.b64encode(b"x" * 100).decode()],
)
def test_a_bad_secret_is_refused_without_echoing_it(tmp_path: Path, secret: str) -> None:
    document = f'{{"version": 1, "tenants": {{"acme": {{"secrets": ["{secret}"]}}}}}}'
    path = _write(tmp_path / "webhooks.json", document)
    with pytest.raises(WebhooksFileError) as refused:
        WebhooksFile(path)
    assert secret not in str(refused.value)
    assert secret.split("_", 1)[1] not in str(refused.value)


def test_more_than_two_secrets_or_a_bad_tenant_is_refused(tmp_path: Path) -> None:
    three = f'{{"version": 1, "tenants": {{"acme": {{"secrets": ["{SECRET}", "{SECRET}", "{SECRET}"]}}}}}}'
    with pytest.raises(WebhooksFileError, match="at most 2"):
        WebhooksFile(_write(tmp_path / "a.json", three))
    with pytest.raises(WebhooksFileError, match="not a tenant name"):
        WebhooksFile(_write(tmp_path / "b.json", '{"version": 1, "tenants": {"../x": {}}}'))


def test_a_secret_never_shows_in_a_repr() -> None:
    secret = parse_secret(SECRET)
    assert SECRET.removeprefix("whsec_") not in repr(secret)
    assert "s" * 8 not in repr(secret)
