"""The simulated submitters: arrivals from a rate profile, each with a kind, a tenant and an amount of work.

Arrivals are a Poisson process whose rate steps as the scenario says (a
steady rate, then 10x for six hours, ...). Every draw comes from one seeded
generator in arrival order, so a seed gives the same tasks every time.
Arrivals are at least a millisecond apart: the store orders tasks created in
the same millisecond by their random id, which would make a run depend on luck.

A :class:`RecordedWorkload` carries its arrivals instead of a rate to draw
them from (``fusionctl sim run --from-db``, :mod:`simulator.replay`): the
same ``arrivals()`` gives them back, so the runner and the report read a
replay exactly as they read a drawn day.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import PrivateAttr

from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskSpec
from simulator.scenario import Workload

__all__ = ["Arrival", "RecordedWorkload", "arrivals"]

_MIN_GAP_S = 0.001


@dataclass(frozen=True, slots=True)
class Arrival:
    """One task as submitted, and what the world needs to know to run it."""

    number: int
    at_s: float
    spec: TaskSpec
    #: GPU-seconds on the reference GPU
    work_s: float
    #: checkpoint segment in GPU-seconds (videos), or None (an image starts over)
    segment_s: float | None


class RecordedWorkload(Workload):
    """A workload whose arrivals were recorded, not drawn: the scenario's ``rate`` and ``max_tasks`` are not used.

    The rest of the workload (work ranges, segment, URI templates) stays the
    scenario's; the arrivals are held privately, never part of a document.
    """

    _recorded: tuple[Arrival, ...] = PrivateAttr(default=())

    @classmethod
    def of(cls, workload: Workload, recorded: Sequence[Arrival]) -> RecordedWorkload:
        """``workload`` with ``recorded`` (in time order) as its arrivals."""
        made = cls.model_construct(**{name: getattr(workload, name) for name in Workload.model_fields})
        made._recorded = tuple(recorded)
        return made

    @property
    def recorded(self) -> tuple[Arrival, ...]:
        return self._recorded


class _Choice:
    """Weighted choice of one key, by an inverse-CDF lookup of one uniform draw."""

    def __init__(self, weights: Mapping[Any, float]) -> None:
        keys: list[str] = [str(key) for key, weight in weights.items() if weight > 0]
        total = sum(weights[key] for key in keys)
        self.keys = keys
        self.bounds = np.cumsum([weights[key] / total for key in keys])

    def pick(self, u: float) -> str:
        index = int(np.searchsorted(self.bounds, u, side="right"))
        return self.keys[min(index, len(self.keys) - 1)]


def arrivals(workload: Workload, *, seed: int, until_s: float) -> Iterator[Arrival]:
    """Every arrival before ``until_s`` (and at most ``max_tasks``), in time order.

    A :class:`RecordedWorkload` gives its recorded arrivals up to ``until_s``
    (inclusive: a replay's window ends with its newest task), nothing drawn.
    """
    if isinstance(workload, RecordedWorkload):
        yield from (arrival for arrival in workload.recorded if arrival.at_s <= until_s)
        return
    rng = np.random.Generator(np.random.PCG64(seed))
    mix = workload.mix
    priority, sensitivity = _Choice(mix.priority), _Choice(mix.data_sensitivity)
    kind, tenant = _Choice(mix.kind), _Choice(mix.tenant)
    number, t, step_start = 0, 0.0, 0.0
    for step in workload.rate:
        step_end = min(step_start + step.hours * 3600.0, until_s)
        rate_s = step.per_hour / 3600.0
        t = max(t, step_start)
        while rate_s > 0:
            t_next = t + float(rng.exponential(1.0 / rate_s))
            if t_next >= step_end:
                break
            t = max(t_next, t + _MIN_GAP_S) if number else t_next
            if t >= step_end:
                break
            u = rng.random(5)
            yield _arrival(workload, number, t, u, (priority, sensitivity, kind, tenant))
            number += 1
            if workload.max_tasks is not None and number >= workload.max_tasks:
                return
        step_start = step_start + step.hours * 3600.0
        if step_start >= until_s:
            return


def _arrival(
    workload: Workload,
    number: int,
    at_s: float,
    u: np.ndarray[Any, np.dtype[np.float64]],
    choices: tuple[_Choice, _Choice, _Choice, _Choice],
) -> Arrival:
    priority, sensitivity, kind, tenant = (choice.pick(float(x)) for choice, x in zip(choices, u[:4], strict=True))
    work = workload.work.get(kind)  # type: ignore[call-overload]

    if work is None:
        raise ValueError(f"workload.work: no work range for kind {kind!r}")
    # log-uniform: short jobs are common and long ones rare, over the whole range
    work_s = math.exp(math.log(work.min_s) + float(u[4]) * (math.log(work.max_s) - math.log(work.min_s)))
    fill = {"tenant": tenant, "n": str(number)}
    spec = TaskSpec(
        tenant=tenant,
        kind=TaskKind(kind),
        source_uri=workload.source_uri.format_map(fill),
        target_uri=workload.target_uri.format_map(fill),
        output_uri=workload.output_uri.format_map(fill),
        priority=Priority(priority),
        data_sensitivity=DataSensitivity(sensitivity),
        deadline_seconds=workload.deadline_s.get(priority),  # type: ignore[call-overload]
        labels={"sim": "1"},
    )
    return Arrival(
        number=number,
        at_s=at_s,
        spec=spec,
        work_s=work_s,
        segment_s=workload.segment_s if kind == "video" else None,
    )
