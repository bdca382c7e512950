"""The policy routes (/v1/policy, history, versions), /readyz's policy detail, and `policy history|rollback`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from controlplane.api.app import create_app
from controlplane.cli.policy import policy as policy_cli
from controlplane.config import Settings
from controlplane.policy import policy_version
from controlplane.runtime.policies import PolicyRuntime, start_policy_runtime
from controlplane.store import Store, upgrade
from tests.support.api_fixtures import ACME, OPERATOR, registry
from tests.support.asgi_server import serving

pytestmark = pytest.mark.timeout(60)

TARGETS = [
    {"name": "local", "provider": "local", "private": True},
    # a cloud target must be able to launch to be put in force (an AMI is enough for EC2)
    {"name": "aws", "provider": "aws", "private": False, "settings": {"image_id": "ami-0123456789abcdef0"}},
]


def doc(first: str) -> dict[str, Any]:
    return {"targets": TARGETS, "rules": [{"name": "order", "targets": [first]}]}


@dataclass
class Plane:
    url: str
    runtime: PolicyRuntime
    policy_file: Path
    store: Store

    def get(self, path: str, token: str | None = OPERATOR) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=10)


def wait_for(condition: Any, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(doc("local")), encoding="utf-8")
    monkeypatch.setenv("FUSIONPLANE_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    runtime = start_policy_runtime(store=store, policy_file=policy_file, applied_by="test")
    settings = Settings(var_dir=tmp_path / "var", input_roots=(tmp_path,), output_root=tmp_path / "out")
    asgi, _app = create_app(settings=settings, store=store, tokens=registry(), active_policy=runtime.active)
    with serving(asgi) as url:
        yield Plane(url=url, runtime=runtime, policy_file=policy_file, store=store)
    runtime.stop()
    engine.dispose()


def test_policy_in_force_is_for_operators(plane: Plane) -> None:
    assert plane.get("/v1/policy", token=None).status_code == 401
    assert plane.get("/v1/policy", token=ACME).status_code == 403
    body = plane.get("/v1/policy").json()
    assert body["version"] == policy_version(doc("local"))
    assert body["document"] == doc("local")
    assert body["source"] == f"file:{plane.policy_file}"
    assert body["up_to_date"] is True


def test_readyz_says_when_the_last_good_policy_is_kept(plane: Plane) -> None:
    ready = plane.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["policy"]["up_to_date"] is True
    plane.policy_file.write_text('{"targets": []}', encoding="utf-8")
    wait_for(lambda: plane.get("/readyz").json()["policy"]["last_error"] is not None)
    ready = plane.get("/readyz")
    assert ready.status_code == 200  # still ready: the last good policy is in force
    detail = ready.json()["policy"]
    assert detail["up_to_date"] is False
    assert "targets: must name at least one target" in detail["last_error"]
    assert detail["version"] == policy_version(doc("local"))


def test_history_versions_and_rollback(plane: Plane, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = policy_version(doc("local"))
    plane.policy_file.write_text(json.dumps(doc("aws")), encoding="utf-8")
    wait_for(lambda: plane.runtime.current().version == policy_version(doc("aws")))

    items = plane.get("/v1/policy/history").json()["items"]
    assert [item["version"] for item in items] == [policy_version(doc("aws")), first]
    assert plane.get("/v1/policy/history", token=ACME).status_code == 403
    found = plane.get(f"/v1/policy/versions/{first[:10]}").json()
    assert found["version"] == first
    assert found["document"] == doc("local")
    assert plane.get("/v1/policy/versions/xyz").status_code == 422
    assert plane.get("/v1/policy/versions/" + "0" * 64).status_code == 404

    monkeypatch.setenv("FUSIONPLANE_URL", plane.url)
    monkeypatch.setenv("FUSIONPLANE_TOKEN", OPERATOR)
    runner = CliRunner()
    listed = runner.invoke(policy_cli, ["history"])
    assert listed.exit_code == 0, listed.output
    assert first[:12] in listed.output
    result = runner.invoke(policy_cli, ["rollback", first[:12]])
    assert result.exit_code == 0, result.output
    assert json.loads(plane.policy_file.read_text(encoding="utf-8")) == doc("local")
    wait_for(lambda: plane.runtime.current().version == first)
    assert plane.get("/v1/policy/history").json()["items"][0]["version"] == first
