"""A scenario: the simulated world (private cluster, spot markets from traces, prices) and the workload.

A scenario is one JSON document (``policies/scenarios/*.json``); paths in it
(traces, price history, the default policy) are relative to the document.
It is parsed here, strictly: an unknown key or a bad value is refused with
``ScenarioError`` naming its JSON path (``world.clouds[0].zones.us-east-1a``),
and nothing of a bad scenario is used. docs/simulator.md describes each field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CloudMarket",
    "LatencyRange",
    "Outage",
    "PrivateCluster",
    "RateStep",
    "Scenario",
    "ScenarioError",
    "TaskMix",
    "Workload",
    "World",
    "load_scenario",
    "parse_scenario",
]

#: the largest scenario document read (it names traces; it does not hold them)
MAX_SCENARIO_BYTES = 1 << 20

_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
_Seconds = Annotated[float, Field(strict=False, ge=0.0, allow_inf_nan=False)]
_Share = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Price = Annotated[float, Field(ge=0.0, le=10_000.0, allow_inf_nan=False)]
_Priority = Literal["urgent", "high", "normal", "low"]
_Sensitivity = Literal["public", "internal", "private"]
_Kind = Literal["image", "video"]


def _one(key: Any) -> dict[Any, float]:
    return {key: 1.0}


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message starts with the JSON path of the bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyRange(_Strict):
    """Seconds from a launch request to a running worker, drawn uniformly in [min_s, max_s]."""

    min_s: _Seconds = 0.0
    max_s: _Seconds = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> LatencyRange:
        if self.max_s < self.min_s:
            raise ValueError("max_s must be at least min_s")
        return self


class Outage(_Strict):
    """Part of the private cluster gone for a while (a node or a rack down): its work is lost."""

    at_hours: _Seconds
    gpus: int = Field(ge=1)
    for_hours: _Seconds


class PrivateCluster(_Strict):
    """The operator's own GPUs: every private-provider target (kubernetes, local) draws from them."""

    gpus: int = Field(ge=1, le=1_000_000)
    launch_latency: LatencyRange = LatencyRange(min_s=5.0, max_s=20.0)
    #: what an owned GPU-hour costs (amortised); 0 counts it as free
    usd_per_gpu_hour: _Price = 0.0
    outages: tuple[Outage, ...] = ()
    #: the cluster's PriorityClasses preempt (``preemptionPolicy: PreemptLowerPriority``, Kubernetes' default): a pod
    #: whose task priority a target's ``priority_classes`` maps to a class takes a full cluster's GPU from a pod of a
    #: lower class, which ends preempted. False: a full cluster only queues pods, by class
    preemption: bool = False


class CloudMarket(_Strict):
    """One cloud region's spot market: a trace per zone says how many instances can be had when."""

    provider: Literal["aws", "azure"]
    region: _Name
    #: zone -> trace file (Can't Be Late format), relative to the scenario
    zones: dict[_Name, str] = Field(min_length=1, max_length=64)
    #: how a trace value is read: "available" (instances obtainable) or "preempted" (1 = none)
    trace_reading: Literal["available", "preempted"] = "available"
    #: instances obtainable per unit of a trace value (the public traces probed one instance)
    instances_per_unit: int = Field(default=1, ge=1, le=100_000)
    #: where the scenario starts in the traces
    trace_offset_hours: _Seconds = 0.0
    launch_latency: LatencyRange = LatencyRange(min_s=60.0, max_s=180.0)
    #: instance type -> speed relative to the workload's reference GPU (1.0 when absent)
    speed: dict[str, Annotated[float, Field(gt=0.0, le=100.0)]] = Field(default_factory=dict)


class World(_Strict):
    private: PrivateCluster
    clouds: tuple[CloudMarket, ...] = ()
    #: spot price history (CSV: timestamp,provider,region,instance_type,usd_per_hour), relative to the scenario
    prices: str | None = None
    #: the price history is replayed from this instant (default: the scenario's start)
    prices_start: AwareDatetime | None = None
    #: provider -> instance type -> on-demand $/h
    on_demand: dict[Literal["aws", "azure"], dict[str, _Price]] = Field(default_factory=dict)
    #: provider -> instance type -> a fixed catalog spot $/h (the static-cheapest baseline; and any key the
    #: price history lacks)
    catalog_spot: dict[Literal["aws", "azure"], dict[str, _Price]] = Field(default_factory=dict)


class RateStep(_Strict):
    """``per_hour`` arrivals (Poisson) for ``hours``; steps follow each other."""

    hours: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    per_hour: Annotated[float, Field(ge=0.0, le=100_000_000.0, allow_inf_nan=False)]


class WorkRange(_Strict):
    """GPU-seconds of one task on the reference GPU, drawn log-uniformly in [min_s, max_s]."""

    min_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    max_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _ordered(self) -> WorkRange:
        if self.max_s < self.min_s:
            raise ValueError("max_s must be at least min_s")
        return self


class TaskMix(_Strict):
    """Shares (any positive weights) of each kind of task."""

    priority: dict[_Priority, _Share] = Field(default_factory=lambda: _one("normal"))
    data_sensitivity: dict[_Sensitivity, _Share] = Field(default_factory=lambda: _one("public"))
    kind: dict[_Kind, _Share] = Field(default_factory=lambda: _one("image"))
    tenant: dict[_Name, _Share] = Field(default_factory=lambda: {"acme": 1.0})

    @model_validator(mode="after")
    def _weighted(self) -> TaskMix:
        for name in ("priority", "data_sensitivity", "kind", "tenant"):
            weights: Mapping[str, float] = getattr(self, name)
            if not weights or sum(weights.values()) <= 0:
                raise ValueError(f"{name}: needs at least one positive share")
        return self


def _default_work() -> dict[Any, WorkRange]:
    return {"image": WorkRange(min_s=2.0, max_s=10.0), "video": WorkRange(min_s=120.0, max_s=1800.0)}


class Workload(_Strict):
    rate: tuple[RateStep, ...] = Field(min_length=1, max_length=10_000)
    #: stop after this many arrivals (None: as many as the rate gives)
    max_tasks: int | None = Field(default=None, ge=1, le=100_000_000)
    mix: TaskMix = TaskMix()
    work: dict[_Kind, WorkRange] = Field(default_factory=lambda: _default_work())
    #: a video commits a checkpoint every this many GPU-seconds; a preemption loses at most one segment
    segment_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 30.0
    #: deadline per priority in seconds from submission (absent: none); a task past it fails (the SLA missed)
    deadline_s: dict[_Priority, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    #: URI templates; {tenant} and {n} (the arrival's number) are filled in
    source_uri: str = "https://media.example/{tenant}/{n}/face.png"
    target_uri: str = "https://media.example/{tenant}/{n}/target.png"
    output_uri: str = "s3://fp-out/{tenant}/{n}.png"


class Scheduling(_Strict):
    """How often the simulated control plane runs its jobs (as ``serve`` does on its timers)."""

    #: the follow/placement round: every this many simulated seconds while work is in flight
    tick_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 5.0
    batch_size: int = Field(default=64, ge=1, le=10_000)
    #: with nothing new since the last round, the next one waits up to this long (time-only checks: deadlines,
    #: backoffs, heartbeat and unschedulable limits are seen this late at most)
    idle_tick_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    #: the series in the report are sampled every this many simulated seconds
    sample_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 300.0


class Scenario(_Strict):
    name: _Name
    description: str = Field(default="", max_length=4000)
    start: AwareDatetime
    duration_hours: Annotated[float, Field(gt=0.0, le=24 * 366)]
    #: after the arrivals stop, the simulation runs on until every task ended or this many hours passed
    drain_hours: Annotated[float, Field(ge=0.0, le=24 * 366)] = 24.0
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    #: the policy run when none is given on the command line, relative to the scenario
    policy: str | None = None
    #: the seed's task_rules table (the seed baseline), relative to the scenario
    seed_policy: str | None = None
    #: the seed's budget threshold per built-in cloud ($/h; default: the highest catalog spot price)
    seed_budget_usd_h: dict[Literal["aws", "azure"], _Price] = Field(default_factory=dict)
    scheduling: Scheduling = Scheduling()
    world: World
    workload: Workload
    #: the folder relative paths are read from (set by :func:`load_scenario`, not part of the document)
    base_dir: Path = Field(default=Path("."), exclude=True)

    def path(self, relative: str) -> Path:
        """A path named in the scenario: absolute, or relative to the scenario's document."""
        path = Path(relative)
        return path if path.is_absolute() else self.base_dir / path

    @property
    def end_s(self) -> float:
        return self.duration_hours * 3600.0

    def scaled(self, factor: float) -> Scenario:
        """The same launch day in miniature: arrival rates, private GPUs and spot capacity times ``factor``.

        Counts are rounded (at least 1), so a small factor changes the shape a
        little; the seed and everything else stay as they are.
        """
        if not 0 < factor <= 1000:
            raise ScenarioError("--scale: must be a number in (0, 1000]")

        def times(count: int) -> int:
            return max(round(count * factor), 1)

        world = self.world
        private = world.private.model_copy(
            update={
                "gpus": times(world.private.gpus),
                "outages": tuple(o.model_copy(update={"gpus": times(o.gpus)}) for o in world.private.outages),
            }
        )
        clouds = tuple(c.model_copy(update={"instances_per_unit": times(c.instances_per_unit)}) for c in world.clouds)
        workload = self.workload.model_copy(
            update={"rate": tuple(r.model_copy(update={"per_hour": r.per_hour * factor}) for r in self.workload.rate)}
        )
        return self.model_copy(
            update={"world": world.model_copy(update={"private": private, "clouds": clouds}), "workload": workload}
        )


def parse_scenario(document: Any, *, base_dir: Path = Path(".")) -> Scenario:
    """``document`` as a :class:`Scenario`; ``ScenarioError`` naming the first bad field."""
    if not isinstance(document, Mapping):
        raise ScenarioError("scenario: must be a JSON object")
    try:
        scenario = Scenario.model_validate({**document, "base_dir": base_dir})
    except ValidationError as exc:
        first = exc.errors()[0]
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        raise ScenarioError(f"{path or 'scenario'}: {first['msg']}") from None
    markets = [(cloud.provider, cloud.region) for cloud in scenario.world.clouds]
    for index, market in enumerate(markets):
        if markets.index(market) != index:
            raise ScenarioError(f"world.clouds[{index}]: a second market for {market[0]} {market[1]}")
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file."""
    try:
        size = path.stat().st_size
        if size > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{path.name}: larger than {MAX_SCENARIO_BYTES} bytes")
        document = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot be read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ScenarioError):
            raise
        raise ScenarioError(f"{path.name}: not JSON ({exc})") from None
    return parse_scenario(document, base_dir=path.resolve().parent)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number here")
