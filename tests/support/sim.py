"""Small building blocks for the simulator's tests: a trace given as steps, a fixed price-history clock, and
small scenarios (one made in place, one the launch day cut down to an hour, for the CLI).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "LAUNCH_DAY",
    "SMALL_FLEET",
    "T0",
    "StepTrace",
    "at",
    "launch_day_miniature",
    "small_scenario",
    "write_input",
]

T0 = datetime(2023, 2, 20, tzinfo=UTC)
LAUNCH_DAY = Path(__file__).resolve().parents[2] / "policies" / "scenarios" / "launch-day.json"

#: one private cluster and one spot target in one region (the fleet of :func:`small_scenario`)
SMALL_FLEET: dict[str, Any] = {
    "targets": [
        {"name": "onprem", "provider": "kubernetes", "private": True, "storage": {"uri": "s3://fp-work/onprem/"}},
        {
            "name": "spot",
            "provider": "aws",
            "private": False,
            "regions": ["r1"],
            "instance_types": ["gpu.x"],
            "max_price_usd_h": 2.0,
            "storage": {"uri": "s3://fp-work/aws/"},
        },
    ],
    "rules": [
        {"name": "private", "match": {"data_sensitivity": "private"}, "targets": ["onprem"]},
        {"name": "rest", "targets": ["onprem", "spot"]},
    ],
}


def small_scenario(**workload: Any) -> dict[str, Any]:
    """An hour of 240 tasks on 3 private GPUs and one spot zone (give the zone's trace in the run); ``workload``
    replaces fields of the workload."""
    return {
        "name": "small",
        "start": "2023-02-20T00:00:00Z",
        "duration_hours": 1,
        "drain_hours": 3,
        "seed": 11,
        "scheduling": {"tick_s": 5, "sample_s": 600},
        "world": {
            "private": {"gpus": 3},
            "clouds": [
                {
                    "provider": "aws",
                    "region": "r1",
                    "zones": {"r1a": "unused.json"},
                    "instances_per_unit": 4,
                    "launch_latency": {"min_s": 30, "max_s": 60},
                }
            ],
            "catalog_spot": {"aws": {"gpu.x": 0.5}},
            "on_demand": {"aws": {"gpu.x": 1.5}},
        },
        "workload": {
            "rate": [{"hours": 1, "per_hour": 240}],
            "mix": {
                "data_sensitivity": {"private": 1, "public": 3},
                "kind": {"image": 3, "video": 1},
                "priority": {"urgent": 1, "normal": 3},
            },
            "work": {"image": {"min_s": 20, "max_s": 60}, "video": {"min_s": 300, "max_s": 900}},
            "deadline_s": {"urgent": 3600},
            "output_uri": "/srv/out/{tenant}/{n}.png",
            **workload,
        },
    }


def launch_day_miniature(folder: Path, *, per_hour: float = 30.0, **changes: Any) -> Path:
    """The launch day cut to one hour of ``per_hour`` arrivals (an hour of drain, 4 private GPUs), written to
    ``folder`` with absolute paths to the shipped traces, prices and policies; ``changes`` replace top-level
    fields. Its path."""
    document = json.loads(LAUNCH_DAY.read_text(encoding="utf-8"))
    base = LAUNCH_DAY.parent

    def absolute(relative: str) -> str:
        return str((base / relative).resolve())

    for key in ("policy", "seed_policy"):
        document[key] = absolute(document[key])
    world = document["world"]
    world["prices"] = absolute(world["prices"])
    for cloud in world["clouds"]:
        cloud["zones"] = {zone: absolute(path) for zone, path in cloud["zones"].items()}
    world["private"].update(gpus=4, outages=[])
    document.update(name="launch-hour", duration_hours=1, drain_hours=1)
    document["workload"]["rate"] = [{"hours": 1, "per_hour": per_hour}]
    document.update(changes)
    path = folder / "launch-hour.json"
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def at(offset_s: float) -> datetime:
    return T0 + timedelta(seconds=offset_s)


class StepTrace:
    """Instances obtainable from each step's offset (seconds) until the next step; the last step holds."""

    def __init__(self, steps: Sequence[tuple[float, int]]) -> None:
        self.offsets = [offset for offset, _ in steps]
        self.values = [value for _, value in steps]

    def available_at(self, offset_s: float) -> int:
        index = bisect.bisect_right(self.offsets, offset_s) - 1
        return self.values[max(index, 0)]

    def next_change_after(self, offset_s: float) -> float | None:
        index = bisect.bisect_right(self.offsets, offset_s)
        return self.offsets[index] if index < len(self.offsets) else None


def write_input(folder: Path, name: str, content: str | bytes) -> Path:
    """A trace or price file with ``content`` (text as UTF-8, bytes as they are) in ``folder``."""
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
