"""Hostile scenario documents: refused whole, naming the field (trace and price files: test_sim_*_files.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulator.scenario import ScenarioError, load_scenario, parse_scenario


def _scenario(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "s",
        "start": "2023-02-20T00:00:00Z",
        "duration_hours": 1,
        "world": {"private": {"gpus": 1}},
        "workload": {"rate": [{"hours": 1, "per_hour": 1}]},
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"start": "2023-02-20T00:00:00"}, "start"),
        ({"duration_hours": 0}, "duration_hours"),
        ({"surprise": 1}, "surprise"),
        ({"name": "../etc"}, "name"),
        ({"world": {"private": {"gpus": 0}}}, "world.private.gpus"),
        (
            {"world": {"private": {"gpus": 1}, "clouds": [{"provider": "gcp", "region": "r", "zones": {"a": "x"}}]}},
            "world.clouds[0].provider",
        ),
        (
            {"world": {"private": {"gpus": 1}, "clouds": [{"provider": "aws", "region": "r", "zones": {}}]}},
            "world.clouds[0].zones",
        ),
        (
            {"world": {"private": {"gpus": 1}, "on_demand": {"aws": {"p3.2xlarge": -1}}}},
            "world.on_demand.aws.p3.2xlarge",
        ),
        ({"workload": {"rate": []}}, "workload.rate"),
        ({"workload": {"rate": [{"hours": 1, "per_hour": 1}], "mix": {"priority": {"urgent": 0}}}}, "workload.mix"),
        (
            {"workload": {"rate": [{"hours": 1, "per_hour": 1}], "work": {"image": {"min_s": 5, "max_s": 1}}}},
            "workload.work.image",
        ),
    ],
)
def test_a_bad_scenario_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(_scenario(**changes))
    assert str(caught.value).startswith(field), str(caught.value)


def test_a_scenario_file_that_is_not_json_or_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"name": NaN}')
    with pytest.raises(ScenarioError, match=r"s\.json: not JSON"):
        load_scenario(path)
    with path.open("wb") as handle:
        handle.truncate(2 << 20)
    with pytest.raises(ScenarioError, match="larger than"):
        load_scenario(path)
