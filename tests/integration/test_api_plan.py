"""``POST /v1/plan`` on a real uvicorn (127.0.0.1) over SQLite: operators only, errors naming the JSON path,
the policy and signals in force unless the body gives its own, and nothing stored.

The live side is the example files: the policy in force is
policies/examples/seed-table.json and the live snapshot is
policies/examples/snapshot.json (onprem full, Azure eastus at 0.21 $/h, the
westeurope price stale), so the plans asserted here are the ones
``fusionctl plan`` prints for the same files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.api.app import create_app
from controlplane.cli.main import cli
from controlplane.config import Settings
from controlplane.domain import SignalSnapshot
from controlplane.policy import Policy
from controlplane.policy_sources import load_policy_file
from controlplane.signals.snapshot_json import load_snapshot_file
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, OPERATOR, registry, stored_rows
from tests.support.asgi_server import serving

REPO = Path(__file__).resolve().parents[2]
SEED_TABLE = REPO / "policies" / "examples" / "seed-table.json"
DEFAULT_POLICY = REPO / "policies" / "default.json"
SNAPSHOT = REPO / "policies" / "examples" / "snapshot.json"
SNAPSHOT_DOC: dict[str, Any] = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
POLICY_DOC: dict[str, Any] = json.loads(SEED_TABLE.read_text(encoding="utf-8"))

PUBLIC = {"source": "/not/here/face.png", "target": "s3://media/group.png", "data_sensitivity": "public"}
PRIVATE = {"source": "/not/here/face.png", "target": "/film/reel1.mov", "data_sensitivity": "private"}
URGENT = {**PUBLIC, "target": "s3://media/clip.mp4", "priority": "urgent", "deadline_seconds": 120}


@dataclass
class Server:
    url: str
    store: Store
    #: the tenants policy_for was asked about, in order
    asked: list[str] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=10.0)
        self.clients.append(client)
        return client

    def plan(self, body: dict[str, Any], token: str = OPERATOR) -> httpx.Response:
        return self.client(token).post("/v1/plan", json=body)


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    root = tmp_path_factory.mktemp("plan-api")
    engine = make_engine(f"sqlite:///{root / 'store.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    servers: list[tuple[Server, Any]] = []

    def start_server(settings: Settings | None = None, **app_options: Any) -> Server:
        server = Server(url="", store=store)
        settings = settings or Settings(var_dir=root, output_root=root / "outputs", policy_file=SEED_TABLE)
        asgi, _ = create_app(settings=settings, store=store, tokens=registry(), **app_options)
        running = serving(asgi)
        server.url = running.__enter__()
        servers.append((server, running))
        return server

    yield start_server
    for server, running in servers:
        for client in server.clients:
            client.close()
        running.__exit__(None, None, None)


@pytest.fixture(scope="module")
def api(start: Callable[..., Server]) -> Server:
    """policy_for: the seed table for every tenant but ``solo`` (the default, local-only policy); live: the example."""
    seed, local_only = load_policy_file(SEED_TABLE), load_policy_file(DEFAULT_POLICY)
    live = load_snapshot_file(SNAPSHOT)
    holder: dict[str, Server] = {}

    def policy_for(tenant: str) -> Policy:
        holder["server"].asked.append(tenant)
        return local_only if tenant == "solo" else seed

    server = start(policy_for=policy_for, live_signals=lambda: live)
    holder["server"] = server
    return server


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def rejected(view: dict[str, Any]) -> dict[str, str]:
    return {r["target"]: r["code"] for r in view["rejected"]}


# --------------------------------------------------------------------------- who may ask


@pytest.mark.parametrize("token", [None, "fp_not-a-known-token"], ids=["none", "unknown"])
def test_without_a_valid_token_is_401(api: Server, token: str | None) -> None:
    error = error_of(api.client(token).post("/v1/plan", json={"task": PUBLIC}), 401)
    assert (error["code"], error["field"]) == ("unauthenticated", "authorization")


def test_submitters_are_403_even_with_a_bad_body(api: Server) -> None:
    asked = len(api.asked)
    for body in ({"task": PUBLIC}, {"task": {**PUBLIC, "priority": "asap"}}, {"nonsense": True}):
        error = error_of(api.plan(body, token=ACME), 403)
        assert (error["code"], error["field"], error["message"]) == ("forbidden", "authorization", "operators only")
    assert len(api.asked) == asked  # refused before any policy was looked up


# --------------------------------------------------------------------------- plans


def test_the_policy_and_signals_in_force(api: Server) -> None:
    before = stored_rows(api.store)
    response = api.plan({"task": PUBLIC})
    assert response.status_code == 200, response.text
    view = response.json()
    assert set(view) == {"policy_version", "decided_at", "candidates", "rejected", "trace", "signals_used", "replan_by"}
    assert view["policy_version"] == load_policy_file(SEED_TABLE).version
    assert view["decided_at"] == "2026-11-24T12:00:00Z"  # the live snapshot's taken_at
    # onprem at peak and AWS under its budget threshold: the seed's "peak -> AWS Spot" row
    assert [(c["target"], c["region"], c["expected_usd_h"], c["hedge"]) for c in view["candidates"]] == [
        ("aws-spot", "us-east-1", 0.26, None)
    ]
    assert view["rejected"][0] == {
        "target": "onprem",
        "code": "excluded_by_rule",
        "reasons": ["rule peak-aws-spot does not list it"],
    }
    assert api.asked[-1] == "default"  # no tenant given: the "default" tenant's policy
    assert stored_rows(api.store) == before  # a dry run stores nothing


def test_the_same_answer_as_fusionctl_plan(api: Server, tmp_path: Path) -> None:
    task = tmp_path / "task.json"
    task.write_text(json.dumps(URGENT), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["plan", "--policy", str(SEED_TABLE), "--signals", str(SNAPSHOT), "--task", str(task), "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    response = api.plan({"task": URGENT})
    assert response.json() == json.loads(result.stdout)
    assert rejected(response.json())["azure-lowlatency"] == "stale_price"


def test_a_private_task_never_gets_a_cloud_candidate(api: Server) -> None:
    # even under a policy that asks for clouds only
    clouds_only = {**POLICY_DOC, "rules": [{"name": "all-cloud", "use_cloud": True}]}
    for body in ({"task": PRIVATE}, {"task": PRIVATE, "policy": clouds_only}):
        view = api.plan(body).json()
        assert all(c["private"] and c["provider"] not in ("aws", "azure") for c in view["candidates"])
        assert {t for t, code in rejected(view).items() if code == "private_data"} == {
            "aws-spot",
            "azure-lowlatency",
            "azure-spot",
        }
    assert [c["target"] for c in api.plan({"task": PRIVATE}).json()["candidates"]] == ["isolated"]


def test_signals_policy_tenant_and_time_from_the_body(api: Server) -> None:
    signals = copy.deepcopy(SNAPSHOT_DOC)
    signals["free_gpus"]["onprem"] = 4
    signals["gpu_utilization"]["onprem"] = 0.4  # not at peak (load and queue): the cluster first
    signals["queue_depth"] = 10
    view = api.plan({"task": PUBLIC, "signals": signals}).json()
    assert [c["target"] for c in view["candidates"]] == ["onprem", "azure-spot"]
    assert view["signals_used"]["free_gpus/onprem"]["value"] == 4

    # five minutes later the live load signals are stale: a stale "0 free" never rejects onprem
    view = api.plan({"task": PUBLIC, "at": "2026-11-24T12:05:00Z"}).json()
    assert view["decided_at"] == "2026-11-24T12:05:00Z"
    assert [c["target"] for c in view["candidates"]] == ["onprem", "azure-spot"]
    assert view["signals_used"]["free_gpus/onprem"]["stale"] is True

    view = api.plan({"task": PUBLIC, "tenant": "solo"}).json()
    assert api.asked[-1] == "solo"
    assert [c["target"] for c in view["candidates"]] == ["local"]

    local = {"provider": "local", "private": True}
    tenant_rule = {
        "targets": [{"name": "shared", **local}, {"name": "box", **local}],
        "rules": [{"name": "studio", "match": {"tenant": "studio"}, "targets": ["box"]}],
    }
    asked = len(api.asked)
    view = api.plan({"task": PUBLIC, "tenant": "studio", "policy": tenant_rule}).json()
    assert [c["target"] for c in view["candidates"]] == ["box"]
    assert view["trace"][0] == "rule studio: matched"
    assert len(api.asked) == asked  # a policy in the body: the one in force is not consulted


# --------------------------------------------------------------------------- 422 naming the field


def _bad_price() -> dict[str, Any]:
    signals = copy.deepcopy(SNAPSHOT_DOC)
    signals["spot_prices"][0]["usd_per_hour"] = 0
    return signals


def _bad_rule_target() -> dict[str, Any]:
    policy = copy.deepcopy(POLICY_DOC)
    policy["rules"][2]["targets"] = ["aws-spto"]
    return policy


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"task": PUBLIC, "signals": _bad_price()}, "signals.spot_prices[0].usd_per_hour", "must be a positive number"),
        ({"task": PUBLIC, "signals": {"free_gpus": {}}}, "signals.taken_at", "is required"),
        ({"task": PUBLIC, "signals": {**SNAPSHOT_DOC, "colour": 1}}, "signals.colour", "unknown field"),
        (
            {"task": PUBLIC, "signals": {**SNAPSHOT_DOC, "gpu_utilization": {"onprem": 93}}},
            "signals.gpu_utilization.onprem",
            "must be within 0..1",
        ),
        ({"task": PUBLIC, "signals": [1]}, "signals", "Input should be a valid dictionary"),
        ({"task": PUBLIC, "policy": _bad_rule_target()}, "policy.rules[2].targets[0]", "unknown target 'aws-spto'"),
        ({"task": PUBLIC, "policy": {"rules": []}}, "policy.targets", "is required"),
        ({"task": {**PUBLIC, "priority": "asap"}}, "task.priority", "Input should be 'low', 'normal', 'high' or"),
        ({"task": {"source": "a", "target": "b.gif"}}, "task.kind", "cannot tell image from video by .gif"),
        ({"task": {"target": "b.png"}}, "task.source", "Field required"),
        ({}, "task", "Field required"),
        ({"task": PUBLIC, "tenant": "two words"}, "tenant", "String should match pattern"),
        ({"task": PUBLIC, "at": "2026-11-24T12:05:00"}, "at", "needs a time zone"),
        ({"task": PUBLIC, "at": "later"}, "at", "is not an ISO 8601 time"),
        ({"task": PUBLIC, "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_bodies_are_422_naming_the_json_path(api: Server, body: dict[str, Any], field: str, message: str) -> None:
    before = stored_rows(api.store)
    error = error_of(api.plan(body), 422)
    assert (error["code"], error["field"]) == ("invalid", field)
    assert error["message"].startswith(message), error["message"]
    assert stored_rows(api.store) == before


# --------------------------------------------------------------------------- the defaults of create_app


def test_defaults_policy_file_and_an_empty_snapshot_taken_now(start: Callable[..., Server], tmp_path: Path) -> None:
    server = start(Settings(var_dir=tmp_path, output_root=tmp_path / "out", policy_file=SEED_TABLE))
    before = datetime.now(UTC)
    view = server.plan({"task": PUBLIC}).json()
    decided = datetime.fromisoformat(view["decided_at"])
    assert before - timedelta(seconds=1) <= decided <= datetime.now(UTC)
    assert view["policy_version"] == load_policy_file(SEED_TABLE).version
    # nothing is known: no signal rejects onprem, and no price puts a capped cloud in the plan
    assert [c["target"] for c in view["candidates"]] == ["onprem"]
    assert rejected(view)["azure-spot"] == "stale_price"
    assert all(used["missing"] for used in view["signals_used"].values())


def test_unreadable_policy_or_signals_are_503(start: Callable[..., Server], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"targets": []}', encoding="utf-8")
    server = start(Settings(var_dir=tmp_path, output_root=tmp_path / "out", policy_file=broken))
    error = error_of(server.plan({"task": PUBLIC}), 503)
    assert error["code"] == "policy_unavailable"
    assert "targets: must name at least one target" in error["message"]
    # a policy in the body needs no policy in force
    assert server.plan({"task": PUBLIC, "policy": POLICY_DOC, "signals": SNAPSHOT_DOC}).status_code == 200

    def collector_down() -> SignalSnapshot:
        raise ConnectionError("prometheus: connection refused")

    server = start(live_signals=collector_down)
    error = error_of(server.plan({"task": PUBLIC}), 503)
    assert error["code"] == "signals_unavailable"
    assert "connection refused" in error["message"]
    assert server.plan({"task": PUBLIC, "signals": SNAPSHOT_DOC}).status_code == 200


# --------------------------------------------------------------------------- never a 5xx

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one value somewhere replaced by any JSON (NaN and Infinity included)."""
    body: dict[str, Any] = copy.deepcopy(
        {
            "task": CAMPAIGN_LIKE,
            "tenant": "acme",
            "signals": SNAPSHOT_DOC,
            "policy": POLICY_DOC,
            "at": "2026-11-24T12:01:00Z",
        }
    )
    node: Any = body
    while True:
        keys: list[Any] = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            node = child
            continue
        node[key] = draw(_json)
        return body


CAMPAIGN_LIKE = {**PUBLIC, "labels": {"campaign": "x"}, "options": {"quality": 20}}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=_mutated())
def test_any_body_is_a_plan_or_a_422_naming_a_field(api: Server, body: dict[str, Any]) -> None:
    # raw text: httpx's json= refuses NaN and Infinity, and a client may well send them
    raw = json.dumps(body)
    response = api.client(OPERATOR).post("/v1/plan", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["field"]
    else:
        assert set(response.json()) == {
            "policy_version",
            "decided_at",
            "candidates",
            "rejected",
            "trace",
            "signals_used",
            "replan_by",
        }
