"""The shipped rules and dashboard on a real Prometheus scraping a running control plane (127.0.0.1).

The control plane runs as ``serve`` runs it (jobs started, this replica the
leader); Prometheus scrapes its ``/metrics`` every second with a ``metrics``
token and evaluates ``deploy/monitoring/fusionplane-alerts.yaml``. Every rule
must evaluate without error on the real series (a many-to-many match, a
label that is not there, would show here), the panels an idle control
plane fills must have data, and the alerts of a healthy one stay silent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.runtime import Runtime
from tests.support.asgi_server import serving
from tests.support.monitoring import ALERTS_FILE, alert_rules, built_runtime, dashboard_queries
from tests.support.prometheus import PrometheusServer, missing_binaries, running_prometheus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_binaries() is not None, reason=str(missing_binaries())),
]
JOB = "fusionplane"
#: the panels that have data on a control plane with nothing to do
FILLED_WHEN_IDLE = {
    "Queue depth",
    "Queue age (oldest waiting task)",
    "Tasks by state",
    "Current leader",
    "Scheduler loops: time since last pass",
    "Signal age by source",
    "API latency",
    "API requests by status",
}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    # one control plane and one Prometheus for the module: starting them is most of its time
    with built_runtime(tmp_path_factory.mktemp("plane")) as runtime:
        runtime.start()
        try:
            with (
                serving(runtime.asgi) as url,
                running_prometheus(
                    [url.removeprefix("http://")], job_name=JOB, bearer_token=_token(runtime), rule_files=[ALERTS_FILE]
                ) as server,
            ):
                server.wait_for(f'fusionplane_leader{{job="{JOB}"}} == 1', bool)
                yield server
        finally:
            runtime.stop()


def _token(runtime: Runtime) -> str:
    assert runtime.dev_token is not None
    return runtime.dev_token.path.read_text(encoding="utf-8").strip()


def _as_grafana_sends(expr: str) -> str:
    return expr.replace("$__rate_interval", "5s").replace("$job", JOB)


def test_rules_evaluate_cleanly_and_a_healthy_plane_raises_nothing(prometheus: PrometheusServer) -> None:
    names = {rule["alert"] for rule in alert_rules()}

    def evaluated(rules: list[dict[str, Any]]) -> bool:
        return {r["name"] for r in rules} == names and all(r["health"] != "unknown" for r in rules)

    # rate() needs two scrapes in its window: evaluate until every rule has run on a few
    prometheus.wait_for("count(count_over_time(fusionplane_leader[10s]) >= 3)", bool)
    rules = prometheus.wait_for_rules(evaluated)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken
    active = {r["name"]: r["state"] for r in rules if r["state"] != "inactive"}
    # a fresh plane has no stale signal yet, a leader, live loops, no queue and no budget
    assert not active


def test_the_panels_an_idle_plane_fills_have_data(prometheus: PrometheusServer) -> None:
    prometheus.wait_for(f'count(fusionplane_http_request_duration_seconds_count{{job="{JOB}"}}) > 0', bool)
    prometheus.wait_for("count(count_over_time(fusionplane_leader[10s]) >= 3)", bool)
    empty = []
    for query in dashboard_queries():
        title = query.where.removeprefix("panel ").strip("'")
        if title in FILLED_WHEN_IDLE and not prometheus.query(_as_grafana_sends(query.expr)):
            empty.append(f"{query.where}: {query.expr}")
    assert not empty, "\n".join(empty)
    (leader,) = prometheus.query(_as_grafana_sends('max by (instance) (fusionplane_leader{job=~"$job"}) == 1'))
    ages = prometheus.query(
        _as_grafana_sends('time() - max by (loop) (fusionplane_scheduler_last_pass_timestamp_seconds{job=~"$job"})')
    )
    assert {age["metric"]["loop"] for age in ages} >= {"place", "follow"}
    assert all(float(age["value"][1]) < 30 for age in ages if age["metric"]["loop"] in ("place", "follow"))
    assert leader["metric"]["instance"]
