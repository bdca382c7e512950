"""The Grafana dashboard: importable as Grafana 10 expects it, every panel with a query on the chosen Prometheus."""

from __future__ import annotations

from typing import Any

from tests.support.monitoring import dashboard

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_the_datasource_is_an_import_input() -> None:
    board = dashboard()
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    assert {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"} in board["__requires"]
    assert board["id"] is None, "an exported id would overwrite whichever dashboard has it"
    assert board["uid"]
    assert board["schemaVersion"] >= 36


def test_panel_ids_are_unique_and_every_panel_queries_the_input() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == DATASOURCE, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_follows_the_job_variable() -> None:
    (job,) = dashboard()["templating"]["list"]
    assert (job["name"], job["datasource"]) == ("job", DATASOURCE)
    for panel in _panels():
        for target in panel["targets"]:
            assert target["expr"].count("fusionplane_") == target["expr"].count('job=~"$job"'), panel["title"]


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        place = panel["gridPos"]
        assert 0 <= place["x"] < place["x"] + place["w"] <= 24, panel["title"]
        columns, rows = range(place["x"], place["x"] + place["w"]), range(place["y"], place["y"] + place["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_the_operator_finds_each_view_the_issue_asks_for() -> None:
    expressions = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in _panels()}
    wanted = {
        "Queue depth": "fusionplane_tasks_waiting",
        "Queue age (oldest waiting task)": "fusionplane_tasks_oldest_wait_seconds",
        "Placements per second by target": "fusionplane_placements_total",
        "Failovers by target": "fusionplane_failovers_total",
        "Preemptions by target": 'outcome="preempted"',
        "Spend per tenant against budget (today, UTC)": "fusionplane_tenant_daily_budget_usd",
        "Signal age by source": "fusionplane_signal_age_seconds",
        "Current leader": "fusionplane_leader",
        "API latency": "fusionplane_http_request_duration_seconds_bucket",
        "Tasks by state": "fusionplane_tasks{",
        "API 5xx rate": 'status=~"5.."',
    }
    for title, needle in wanted.items():
        assert needle in expressions.get(title, ""), title
    latency = expressions["API latency"]
    assert all(f"histogram_quantile({q}," in latency for q in ("0.5", "0.95", "0.99"))
