"""The report document read and checked: runs, their summaries' numbers and their series.

The document is untrusted input. A value of the wrong type is an error naming its field (as
``runs[1].series.queue_depth``) rather than a page that quietly shows something else; a missing or
null summary number is shown as a dash, and so is a non-finite one (nothing completed: no $ per task).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.svg_charts import Floats

KINDS = ("policy", "baseline", "bound")
SERIES_LINES = ("queue_depth", "spend_usd_per_h", "sla_misses")


@dataclass(frozen=True)
class Series:
    t_s: Floats
    lines: dict[str, Floats]
    """``SERIES_LINES`` the run has, by name."""
    gpus_in_use: dict[str, Floats]
    """Per target, in the document's order."""


@dataclass(frozen=True)
class Run:
    index: int
    name: str
    kind: str
    summary: Mapping[str, Any]
    series: Series | None

    @property
    def where(self) -> str:
        return f"runs[{self.index}]"


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object or null, not {type(value).__name__}")
    return value


def number_at(run: Run, path: Sequence[str]) -> float | None:
    """The summary number at ``path`` (as ``("sla", "urgent")``); None where it is missing, null or not finite."""
    node: Any = run.summary
    for depth, key in enumerate(path):
        node = _mapping(node, ".".join([f"{run.where}.summary", *path[:depth]])).get(key)
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, numbers.Real):
        raise ValueError(f"{run.where}.summary.{'.'.join(path)} must be a number or null, not {type(node).__name__}")
    value = float(node)
    return value if math.isfinite(value) else None


def keys_at(run: Run, field: str) -> list[str]:
    """The keys of the summary's object ``field`` (the SLA's priorities, the spend's targets), in its order."""
    keys = list(_mapping(run.summary.get(field), f"{run.where}.summary.{field}"))
    for key in keys:
        if not isinstance(key, str):
            raise ValueError(f"{run.where}.summary.{field} has a key that is not a string: {key!r}")
    return keys


def _floats(value: Any, where: str) -> Floats:
    # np.asarray without a dtype first: a string, a null or a nested list among the numbers shows in the
    # dtype it infers, where asking for float64 straight away would parse "1.5" as a number
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in "biuf":
        raise ValueError(f"{where} must be an array of numbers")
    floats = array.astype(np.float64)
    if not np.isfinite(floats).all():
        raise ValueError(
            f"{where} has a value that is not a finite number at index {int(np.argmin(np.isfinite(floats)))}"
        )
    return floats


def _same_length(values: Floats, t_s: Floats, where: str, t_where: str) -> Floats:
    if len(values) != len(t_s):
        raise ValueError(f"{where} has {len(values)} values but {t_where} has {len(t_s)}: they must be the same length")
    return values


def _series(raw: Any, where: str) -> Series | None:
    if raw is None:
        return None
    series = _mapping(raw, where)
    t_s = _floats(series.get("t_s"), f"{where}.t_s")
    if len(t_s) and (t_s[0] < 0 or bool((np.diff(t_s) < 0).any())):
        raise ValueError(f"{where}.t_s must be seconds from the start, never negative and never going back")
    lines = {
        name: _same_length(_floats(series[name], f"{where}.{name}"), t_s, f"{where}.{name}", f"{where}.t_s")
        for name in SERIES_LINES
        if series.get(name) is not None
    }
    gpus = {}
    for target, values in _mapping(series.get("gpus_in_use"), f"{where}.gpus_in_use").items():
        field = f"{where}.gpus_in_use.{target}"
        gpus[str(target)] = _same_length(_floats(values, field), t_s, field, f"{where}.t_s")
    return Series(t_s, lines, gpus)


def _run(index: int, raw: Any) -> Run:
    where = f"runs[{index}]"
    run = _mapping(raw, where)
    kind = run.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}.kind must be one of {', '.join(KINDS)}")
    name = run.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string")
    summary = _mapping(run.get("summary"), f"{where}.summary")
    return Run(index, name, str(kind), summary, _series(run.get("series"), f"{where}.series"))


def read_runs(report: Mapping[str, Any]) -> list[Run]:
    runs = report.get("runs")
    if runs is None:
        return []
    if isinstance(runs, str | bytes | Mapping) or not isinstance(runs, Sequence):
        raise ValueError("runs must be an array")
    return [_run(index, raw) for index, raw in enumerate(runs)]


def scenario_of(report: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(report.get("scenario"), "scenario")


def finite(value: Any) -> float | None:
    """A document value as a finite float, or None when it is anything else (for facts shown as given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
