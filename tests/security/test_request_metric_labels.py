"""Hostile requests cannot grow the API latency histogram's series: labels come from the routes, not the client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.metrics import Metrics
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, ApiServer

HISTOGRAM = "fusionplane_http_request_duration_seconds"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ApiServer, Metrics]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    metrics = Metrics.create()
    with ApiServer.start(Store(engine), tmp_path, metrics=metrics) as api:
        yield api, metrics
    engine.dispose()


def _label_sets(metrics: Metrics) -> set[tuple[str, str, str]]:
    text = generate_latest(metrics.registry).decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == HISTOGRAM]
    counts = [sample for sample in family.samples if sample.name.endswith("_count")]
    return {(s.labels["method"], s.labels["route"], s.labels["status"]) for s in counts}


def test_a_scan_of_random_paths_and_methods_adds_a_handful_of_series(served: tuple[ApiServer, Metrics]) -> None:
    api, metrics = served
    client = api.client(ACME)
    for number in range(60):
        client.get(f"/wp-admin/{number}/../../etc/passwd")
        client.get(f"/v1/tasks/{'x' * (number + 1)}")  # ids of every length: one route
        client.request(f"BREW{number}", "/v1/tasks")  # methods no route serves
    client.get("/v1/tasks/%00%ff%fe")
    client.get('/v1/tasks/"}{le="+Inf')  # an attempt at label injection
    seen = _label_sets(metrics)
    assert len(seen) <= 6, seen
    assert {route for _method, route, _status in seen} <= {"unmatched", "/v1/tasks/{task_id}", "/v1/tasks"}
    assert {method for method, _route, _status in seen} <= {"GET", "other"}


def test_a_client_that_hangs_up_is_still_counted(served: tuple[ApiServer, Metrics]) -> None:
    api, metrics = served
    with httpx.Client(base_url=api.url, timeout=5.0) as client, client.stream("GET", "/healthz") as response:
        assert response.status_code == 200  # closed before the body is read
    assert ("GET", "/healthz", "200") in _label_sets(metrics)
