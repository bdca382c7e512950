"""Every series the dashboard and the alert rules query is one a running control plane exports, with those labels.

The control plane is built as ``fusionctl serve`` builds it (``build_runtime``)
and its ``/metrics`` is read over HTTP on 127.0.0.1, so a metric renamed in
the code, or a collector no longer registered, fails here rather than as an
empty panel or an alert that can never fire.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from controlplane.metrics import Metrics
from controlplane.runtime import Runtime
from tests.support.asgi_server import serving
from tests.support.monitoring import Query, built_runtime, queries

#: labels Prometheus adds to every series it scrapes (and the histogram's bucket bound)
SCRAPE_LABELS = frozenset({"job", "instance", "pod", "namespace"})
#: series of the guards' collector that a fresh control plane exports without samples (no cloud target has
#: a breaker, nobody spent), so their labels are not in the scrape; tests/unit/test_guard_metrics.py
#: checks these labels against the collector's own output
LABELS_WITHOUT_SAMPLES = {
    "fusionplane_breaker_state": frozenset({"provider", "region", "instance_type"}),
    "fusionplane_tenant_cloud_spend_today_usd": frozenset({"tenant"}),
    "fusionplane_tenant_daily_budget_usd": frozenset({"tenant"}),
}


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with built_runtime(tmp_path) as built:
        yield built


def _scrape(runtime: Runtime) -> str:
    assert runtime.dev_token is not None
    token = runtime.dev_token.path.read_text(encoding="utf-8").strip()
    runtime.hub.poll("queue", force=True)  # a signal sample, so that the age series has its labels
    with serving(runtime.asgi) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        assert client.get("/healthz").status_code == 200  # an API request, so its histogram has children
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return response.text


def _exported(text: str, metrics: Metrics) -> dict[str, frozenset[str]]:
    """Every sample name the scrape can hold -> the labels it carries (declared, or seen on its samples)."""
    declared = {
        wrapper._name: frozenset(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported: dict[str, frozenset[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = set(declared.get(family.name, LABELS_WITHOUT_SAMPLES.get(family.name, frozenset())))
        for sample in family.samples:
            labels.update(sample.labels)
        for suffix in suffixes.get(family.type, ("",)):
            exported[family.name + suffix] = frozenset(labels | ({"le"} if suffix == "_bucket" else set()))
    return exported


def test_every_series_queried_is_exported_with_the_labels_used(runtime: Runtime) -> None:
    exported = _exported(_scrape(runtime), runtime.metrics)
    problems = [problem for query in queries() for problem in _check(query, exported)]
    assert not problems, "\n".join(problems)


def _check(query: Query, exported: dict[str, frozenset[str]]) -> Iterator[str]:
    in_query: set[str] = set()
    for name, matched in query.series():
        if name not in exported:
            yield f"{query.where}: {name} is not exported by the control plane"
            continue
        in_query |= exported[name]
        unknown = matched - exported[name] - SCRAPE_LABELS
        if unknown:
            yield f"{query.where}: {name} has no label {sorted(unknown)}"
    ungrouped = query.grouping_labels() - in_query - SCRAPE_LABELS
    if ungrouped:
        yield f"{query.where}: grouped by {sorted(ungrouped)}, a label none of its series has"


def test_the_check_fails_on_a_wrong_name_or_label(runtime: Runtime) -> None:
    exported = _exported(_scrape(runtime), runtime.metrics)
    wrong = [
        Query("renamed", "max(fusionplane_task_oldest_wait_seconds)"),
        Query("counter without _total", "rate(fusionplane_placements[5m])"),
        Query("label", 'fusionplane_attempts_total{outcome="preempted",zone="a"}'),
        Query("grouping", "sum by (tenant) (rate(fusionplane_placements_total[5m]))"),
    ]
    assert [len(list(_check(query, exported))) for query in wrong] == [1, 1, 1, 1]
    right = Query("right", "sum by (target) (rate(fusionplane_placements_total[5m]))")
    assert not list(_check(right, exported))
