"""API latency by route template: ``fusionplane_http_request_duration_seconds`` on a real server (127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.metrics import Metrics
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, METRICS, ApiServer

HISTOGRAM = "fusionplane_http_request_duration_seconds"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ApiServer, Metrics]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    metrics = Metrics.create()
    with ApiServer.start(Store(engine), tmp_path, metrics=metrics) as api:
        yield api, metrics
    engine.dispose()


def _count(metrics: Metrics, method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return metrics.registry.get_sample_value(f"{HISTOGRAM}_count", labels) or 0.0


def test_requests_are_counted_by_route_template_and_status(served: tuple[ApiServer, Metrics]) -> None:
    api, metrics = served
    client = api.client(ACME)
    assert client.get("/healthz").status_code == 200
    for task_id in ("t-1", "t-2", "t-3"):
        assert client.get(f"/v1/tasks/{task_id}").status_code == 404
    assert api.client().get("/v1/tasks").status_code == 401
    assert _count(metrics, "GET", "/healthz", "200") == 1
    # three task ids, one series: the template, not the path
    assert _count(metrics, "GET", "/v1/tasks/{task_id}", "404") == 3
    assert _count(metrics, "GET", "/v1/tasks", "401") == 1
    text = api.client(METRICS).get("/metrics").text
    assert "t-1" not in text
    assert f'{HISTOGRAM}_bucket{{le="0.001",method="GET",route="/healthz",status="200"}}' in text


def test_a_path_no_route_serves_is_unmatched(served: tuple[ApiServer, Metrics]) -> None:
    api, metrics = served
    assert api.client(ACME).get("/v2/everything").status_code == 404
    assert _count(metrics, "GET", "unmatched", "404") == 1
