"""The signals snapshot JSON: samples named as plan() reads them, errors naming their field, a lossless round trip."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import DataSensitivity, SignalSample, SignalSnapshot, Task, TaskKind, TaskSpec, TaskState
from controlplane.policy import plan
from controlplane.policy_sources import load_policy_file
from controlplane.signals.snapshot_json import (
    SnapshotError,
    load_snapshot_file,
    loads_snapshot,
    parse_time,
    snapshot_from_json,
    snapshot_to_json,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "examples" / "snapshot.json"
SEED_TABLE = REPO / "policies" / "examples" / "seed-table.json"
TAKEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

#: the example of the brief and of docs/policies.md
DOCUMENT: dict[str, Any] = {
    "taken_at": "2026-11-24T12:00:00Z",
    "gpu_utilization": {"local": 0.93, "k8s": {"value": 0.4, "observed_at": "2026-11-24T11:59:50Z"}},
    "free_gpus": {"local": 0, "k8s": 3},
    "spot_prices": [
        {
            "provider": "aws",
            "region": "us-east-1",
            "instance_type": "g5.xlarge",
            "usd_per_hour": 0.41,
            "observed_at": "2026-11-24T11:58:00Z",
        }
    ],
    "queue_depth": 120,
    "budget_spent_today_usd": 12.5,
}


def _task() -> Task:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://faces/a.png",
        target_uri="s3://media/b.png",
        output_uri="s3://out/c.png",
        data_sensitivity=DataSensitivity.PUBLIC,
    )
    return Task(id="t-1", spec=spec, state=TaskState.QUEUED, created_at=TAKEN, updated_at=TAKEN)


def _sample(source: str, key: str, value: float, observed_at: datetime = TAKEN, ttl: float = math.inf) -> SignalSample:
    return SignalSample(source=source, key=key, value=value, observed_at=observed_at, ttl_seconds=ttl)


def test_the_documented_example_gives_the_samples_plan_reads() -> None:
    snapshot = snapshot_from_json(DOCUMENT)
    assert snapshot.taken_at == TAKEN
    assert dict(snapshot.samples) == {
        "gpu_utilization/local": _sample("gpu_utilization", "local", 0.93),
        "gpu_utilization/k8s": _sample("gpu_utilization", "k8s", 0.4, TAKEN - timedelta(seconds=10)),
        "free_gpus/local": _sample("free_gpus", "local", 0),
        "free_gpus/k8s": _sample("free_gpus", "k8s", 3),
        "spot_price/aws/us-east-1/g5.xlarge": _sample(
            "spot_price", "aws/us-east-1/g5.xlarge", 0.41, TAKEN - timedelta(minutes=2)
        ),
        "queue/depth": _sample("queue", "depth", 120),
        "budget/spent_today_usd": _sample("budget", "spent_today_usd", 12.5),
    }
    # a sample's own key is the part of its name after "source/"
    for name, sample in snapshot.samples.items():
        assert name == f"{sample.source}/{sample.key}"


def test_unknown_region_and_type_are_dashes_in_the_name_and_ttl_is_kept() -> None:
    snapshot = snapshot_from_json(
        {
            "taken_at": "2026-11-24T13:00:00+01:00",
            "spot_prices": [{"provider": "azure", "region": None, "usd_per_hour": 0.2, "ttl_seconds": 300}],
            "queue_depth": {"value": 7, "ttl_seconds": 30},
        }
    )
    assert snapshot.taken_at == TAKEN
    assert snapshot.taken_at.tzinfo is UTC
    assert snapshot.samples["spot_price/azure/-/-"] == _sample("spot_price", "azure/-/-", 0.2, TAKEN, 300)
    assert snapshot.samples["queue/depth"] == _sample("queue", "depth", 7, TAKEN, 30)


def test_the_example_file_drives_the_seed_table_policy() -> None:
    """policies/examples/snapshot.json is written for seed-table.json: the engine reads its samples."""
    snapshot = load_snapshot_file(EXAMPLE)
    policy = load_policy_file(SEED_TABLE)
    result = plan(_task(), snapshot, policy, snapshot.taken_at)
    # onprem is full (free_gpus 0), so at peak: ordinary work goes to AWS Spot, under its budget threshold
    assert [(c.target, c.expected_usd_h) for c in result.candidates] == [("aws-spot", 0.26)]
    assert {r.target: r.code for r in result.rejections}["onprem"] == "excluded_by_rule"
    assert any(line.startswith("rule peak-aws-spot: matched; conditions hold (peak: onprem") for line in result.trace)
    assert result.signals_used["gpu_utilization/onprem"]["value"] == 0.93


def test_to_json_writes_the_object_form_ttl_only_when_finite() -> None:
    snapshot = SignalSnapshot(
        taken_at=TAKEN,
        samples={
            "free_gpus/k8s": _sample("free_gpus", "k8s", 3.0),
            "gpu_utilization/k8s": _sample("gpu_utilization", "k8s", 0.5, TAKEN - timedelta(seconds=5), 60),
            "spot_price/aws/-/g5.xlarge": _sample("spot_price", "aws/-/g5.xlarge", 0.4),
        },
    )
    assert snapshot_to_json(snapshot) == {
        "taken_at": "2026-11-24T12:00:00Z",
        "gpu_utilization": {"k8s": {"value": 0.5, "observed_at": "2026-11-24T11:59:55Z", "ttl_seconds": 60}},
        "free_gpus": {"k8s": {"value": 3, "observed_at": "2026-11-24T12:00:00Z"}},
        "spot_prices": [
            {
                "provider": "aws",
                "region": None,
                "instance_type": "g5.xlarge",
                "usd_per_hour": 0.4,
                "observed_at": "2026-11-24T12:00:00Z",
            }
        ],
    }


def test_samples_of_other_sources_are_kept_under_other() -> None:
    snapshot = SignalSnapshot(
        taken_at=TAKEN,
        samples={
            "prometheus/dcgm_temp": _sample("prometheus", "dcgm_temp", 71.5, TAKEN - timedelta(seconds=3), 15),
            # a free_gpus name that is no target name, and a price of a provider the engine never asks about
            "free_gpus/Not A Target": _sample("free_gpus", "Not A Target", 1),
            "spot_price/gcp/us-central1/a2": _sample("spot_price", "gcp/us-central1/a2", 1.1),
        },
    )
    document = snapshot_to_json(snapshot)
    assert document["other"] == [
        {"source": "free_gpus", "key": "Not A Target", "value": 1, "observed_at": "2026-11-24T12:00:00Z"},
        {
            "source": "prometheus",
            "key": "dcgm_temp",
            "value": 71.5,
            "observed_at": "2026-11-24T11:59:57Z",
            "ttl_seconds": 15,
        },
        {"source": "spot_price", "key": "gcp/us-central1/a2", "value": 1.1, "observed_at": "2026-11-24T12:00:00Z"},
    ]
    assert set(document) == {"taken_at", "other"}
    assert snapshot_from_json(document) == snapshot
    assert loads_snapshot(json.dumps(document)) == snapshot


def test_the_mapping_name_is_what_is_kept() -> None:
    """plan() reads samples by their mapping name, so a sample filed under a name is written as that name."""
    snapshot = SignalSnapshot(
        taken_at=TAKEN, samples={"free_gpus/k8s": _sample("capacity", "k8s-pool", 2, TAKEN, math.inf)}
    )
    back = snapshot_from_json(snapshot_to_json(snapshot))
    assert back.samples["free_gpus/k8s"].value == 2
    assert (back.samples["free_gpus/k8s"].source, back.samples["free_gpus/k8s"].key) == ("free_gpus", "k8s")
    with pytest.raises(ValueError, match="not source/key"):
        snapshot_to_json(SignalSnapshot(taken_at=TAKEN, samples={"orphan": _sample("x", "y", 1)}))


# -- every error names its field ------------------------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(DOCUMENT))
    for key, value in changes.items():
        if value is _DROP:
            document.pop(key)
        else:
            document[key] = value
    return document


_DROP = object()
_PRICE = DOCUMENT["spot_prices"][0]


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ([], "", "must be an object, not array"),
        (_with(colour="blue"), "colour", "unknown field (allowed: budget_spent_today_usd, free_gpus, "),
        (_with(taken_at=_DROP), "taken_at", "is required"),
        (_with(taken_at=1764000000), "taken_at", "must be an ISO 8601 time string, not number"),
        (_with(taken_at="yesterday"), "taken_at", "is not an ISO 8601 time"),
        (_with(taken_at="2026-11-24T12:00:00"), "taken_at", "needs a time zone"),
        (_with(gpu_utilization=[0.5]), "gpu_utilization", "must be an object of target: value, not array"),
        (_with(gpu_utilization={"local": 1.5}), "gpu_utilization.local", "must be within 0..1"),
        (_with(gpu_utilization={"local": -0.1}), "gpu_utilization.local", "must be within 0..1"),
        (_with(gpu_utilization={"local": "high"}), "gpu_utilization.local", "must be a number, not string"),
        (_with(gpu_utilization={"local": True}), "gpu_utilization.local", "must be a number, not boolean"),
        (_with(gpu_utilization={"k8s": {"value": 2}}), "gpu_utilization.k8s.value", "must be within 0..1"),
        (
            _with(gpu_utilization={"k8s": {"observed_at": "2026-11-24T11:00:00Z"}}),
            "gpu_utilization.k8s.value",
            "is required",
        ),
        (_with(gpu_utilization={"k8s": {"value": 0.2, "age": 3}}), "gpu_utilization.k8s.age", "unknown field"),
        (_with(gpu_utilization={"Local Box": 0.2}), "gpu_utilization.Local Box", "is not a target name"),
        (_with(free_gpus={"local": -1}), "free_gpus.local", "must be a number >= 0"),
        (_with(free_gpus={"local": None}), "free_gpus.local", "must be a number, not null"),
        (
            _with(free_gpus={"k8s": {"value": 1, "observed_at": "2026-11-24T12:00:01Z"}}),
            "free_gpus.k8s.observed_at",
            "is after taken_at (2026-11-24T12:00:00Z)",
        ),
        (_with(free_gpus={"k8s": {"value": 1, "observed_at": "noon"}}), "free_gpus.k8s.observed_at", "is not an ISO"),
        (
            _with(free_gpus={"k8s": {"value": 1, "ttl_seconds": -5}}),
            "free_gpus.k8s.ttl_seconds",
            "must be a number >= 0",
        ),
        (_with(free_gpus={"k8s": {"value": 1, "ttl_seconds": "1m"}}), "free_gpus.k8s.ttl_seconds", "must be a number"),
        (_with(spot_prices={"aws": 0.4}), "spot_prices", "must be an array, not object"),
        (_with(spot_prices=[0.4]), "spot_prices[0]", "must be an object, not number"),
        (
            _with(spot_prices=[{**_PRICE, "usd_per_hour": 0}]),
            "spot_prices[0].usd_per_hour",
            "must be a positive number",
        ),
        (
            _with(spot_prices=[_PRICE, _PRICE, {**_PRICE, "region": "eu-west-1", "usd_per_hour": -1}]),
            "spot_prices[1]",
            "duplicates spot_prices[0] (both are spot_price/aws/us-east-1/g5.xlarge)",
        ),
        (
            _with(spot_prices=[_PRICE, {**_PRICE, "region": "eu-west-1"}, {**_PRICE, "usd_per_hour": -1}]),
            "spot_prices[2].usd_per_hour",
            "must be a positive number",
        ),
        (_with(spot_prices=[{**_PRICE, "usd_per_hour": "cheap"}]), "spot_prices[0].usd_per_hour", "must be a number"),
        (_with(spot_prices=[{"provider": "aws"}]), "spot_prices[0].usd_per_hour", "is required"),
        (_with(spot_prices=[{"usd_per_hour": 0.3}]), "spot_prices[0].provider", "is required"),
        (_with(spot_prices=[{**_PRICE, "provider": "gcp"}]), "spot_prices[0].provider", "must be one of aws, azure"),
        (
            _with(spot_prices=[{**_PRICE, "region": "us/east"}]),
            "spot_prices[0].region",
            "must be null or 1..128 characters without '/'",
        ),
        (_with(spot_prices=[{**_PRICE, "region": ""}]), "spot_prices[0].region", "must be null or 1..128"),
        (_with(spot_prices=[{**_PRICE, "instance_type": "-"}]), "spot_prices[0].instance_type", "use null"),
        (_with(spot_prices=[{**_PRICE, "instance_type": 5}]), "spot_prices[0].instance_type", "must be null or"),
        (_with(spot_prices=[{**_PRICE, "currency": "EUR"}]), "spot_prices[0].currency", "unknown field"),
        (
            _with(spot_prices=[{**_PRICE, "observed_at": "2026-11-24T13:00:00+00:00"}]),
            "spot_prices[0].observed_at",
            "is after taken_at",
        ),
        (_with(queue_depth=-3), "queue_depth", "must be a number >= 0"),
        (_with(queue_depth={"value": "deep"}), "queue_depth.value", "must be a number, not string"),
        (_with(queue_depth={"depth": 3}), "queue_depth.depth", "unknown field"),
        (_with(budget_spent_today_usd=-0.01), "budget_spent_today_usd", "must be a number >= 0"),
        (_with(budget_spent_today_usd=10**400), "budget_spent_today_usd", "is too large"),
        (_with(budget_spent_today_usd=math.nan), "budget_spent_today_usd", "must be a finite number"),
        (_with(other={}), "other", "must be an array, not object"),
        (_with(other=[{"source": "p", "key": "k"}]), "other[0].value", "is required"),
        (
            _with(other=[{"source": "a/b", "key": "k", "value": 1}]),
            "other[0].source",
            "must be a non-empty string without '/'",
        ),
        (_with(other=[{"source": "p", "key": "", "value": 1}]), "other[0].key", "must be a non-empty string"),
        (_with(other=[{"source": "p", "key": "k", "value": [1]}]), "other[0].value", "must be a number, not array"),
        (
            _with(other=[{"source": "free_gpus", "key": "k8s", "value": 9}]),
            "other[0]",
            "free_gpus/k8s belongs in free_gpus",
        ),
        (
            _with(other=[{"source": "spot_price", "key": "aws/us-east-1/g5.xlarge", "value": 0.1}]),
            "other[0]",
            "spot_price/aws/us-east-1/g5.xlarge belongs in spot_prices",
        ),
        (
            _with(other=[{"source": "queue", "key": "depth", "value": -4}]),
            "other[0]",
            "queue/depth belongs in queue_depth",
        ),
        (
            _with(other=[{"source": "p", "key": "k", "value": 1}, {"source": "p", "key": "k", "value": 2}]),
            "other[1]",
            "duplicates other[0] (both are p/k)",
        ),
    ],
)
def test_every_error_names_its_field(document: Any, path: str, message: str) -> None:
    with pytest.raises(SnapshotError) as info:
        snapshot_from_json(document)
    assert info.value.path == path
    assert info.value.message.startswith(message), info.value.message
    assert str(info.value) == (f"{path}: {info.value.message}" if path else info.value.message)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"taken_at": "2026-11-24T12:00:00Z", "queue_depth": NaN}', "is not valid JSON: NaN is not valid JSON"),
        (b"\xff\xfe{}", "is not valid JSON"),
    ],
)
def test_text_that_is_not_json_is_refused(text: str | bytes, message: str) -> None:
    with pytest.raises(SnapshotError) as info:
        loads_snapshot(text)
    assert info.value.path == ""
    assert info.value.message.startswith(message)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{nope", encoding="utf-8")
    with pytest.raises(SnapshotError, match=r"broken\.json is not valid JSON"):
        load_snapshot_file(broken)
    with pytest.raises(SnapshotError, match=r"cannot read .*missing\.json"):
        load_snapshot_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with(queue_depth=-1)), encoding="utf-8")
    with pytest.raises(SnapshotError) as info:
        load_snapshot_file(bad)
    assert str(info.value) == "queue_depth: must be a number >= 0"


def test_parse_time() -> None:
    assert parse_time("2026-11-24T07:00:00-05:00", "at") == TAKEN
    with pytest.raises(SnapshotError, match=r"^at: needs a time zone"):
        parse_time("2026-11-24", "at")
    with pytest.raises(SnapshotError, match=r"^at: is out of range"):
        parse_time("9999-12-31T23:59:59-05:00", "at")
    with pytest.raises(SnapshotError, match=r"^at: is out of range"):
        parse_time("0001-01-01T00:00:00+01:00", "at")


# -- round trip -----------------------------------------------------------------------------------------

_targets = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True)
_parts = st.none() | st.from_regex(r"[A-Za-z0-9_.:][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
_zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
_ttl = st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(min_value=0, max_value=10**6)


def _when(moment: datetime, zone: timezone, z_suffix: bool) -> str:
    text = moment.astimezone(zone).isoformat()
    return text.replace("+00:00", "Z") if z_suffix else text


@st.composite
def _time_before(draw: st.DrawFn, taken_at: datetime) -> str:
    age = draw(st.integers(min_value=0, max_value=10**7)) + draw(st.integers(0, 999_999)) / 1e6
    return _when(taken_at - timedelta(seconds=age), draw(_zones), draw(st.booleans()))


@st.composite
def _reading(draw: st.DrawFn, taken_at: datetime, values: st.SearchStrategy[float]) -> Any:
    value = draw(values)
    if draw(st.booleans()):
        return value
    reading: dict[str, Any] = {"value": value}
    if draw(st.booleans()):
        reading["observed_at"] = draw(_time_before(taken_at))
    if draw(st.booleans()):
        reading["ttl_seconds"] = draw(_ttl)
    return reading


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Valid snapshot documents, every optional part present or not, numbers in both forms."""
    taken_at = draw(
        st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC))
    )
    document: dict[str, Any] = {"taken_at": _when(taken_at, draw(_zones), draw(st.booleans()))}
    fractions = st.floats(min_value=0, max_value=1, allow_nan=False) | st.sampled_from([0, 1])
    counts = st.integers(min_value=0, max_value=10**6) | st.floats(min_value=0, max_value=1e12, allow_nan=False)
    if draw(st.booleans()):
        names = draw(st.lists(_targets, max_size=4, unique=True))
        document["gpu_utilization"] = {n: draw(_reading(taken_at, fractions)) for n in names}
    if draw(st.booleans()):
        names = draw(st.lists(_targets, max_size=4, unique=True))
        document["free_gpus"] = {n: draw(_reading(taken_at, counts)) for n in names}
    if draw(st.booleans()):
        offers = draw(
            st.lists(
                st.tuples(st.sampled_from(["aws", "azure"]), _parts, _parts),
                max_size=5,
                unique=True,
            )
        )
        prices = []
        for provider, region, instance_type in offers:
            price: dict[str, Any] = {
                "provider": provider,
                "usd_per_hour": draw(st.floats(min_value=1e-6, max_value=1e4, allow_nan=False)),
            }
            if region is not None or draw(st.booleans()):
                price["region"] = region
            if instance_type is not None or draw(st.booleans()):
                price["instance_type"] = instance_type
            if draw(st.booleans()):
                price["observed_at"] = draw(_time_before(taken_at))
            if draw(st.booleans()):
                price["ttl_seconds"] = draw(_ttl)
            prices.append(price)
        document["spot_prices"] = prices
    if draw(st.booleans()):
        document["queue_depth"] = draw(_reading(taken_at, counts))
    if draw(st.booleans()):
        document["budget_spent_today_usd"] = draw(_reading(taken_at, counts))
    if draw(st.booleans()):
        keys = draw(st.lists(st.text(min_size=1, max_size=12), max_size=4, unique=True))
        entries = []
        for key in keys:
            entry: dict[str, Any] = {
                "source": draw(st.sampled_from(["prometheus", "capacity", "custom"])),
                "key": key,
                "value": draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**40), 2**40)),
            }
            if draw(st.booleans()):
                entry["observed_at"] = draw(_time_before(taken_at))
            if draw(st.booleans()):
                entry["ttl_seconds"] = draw(_ttl)
            entries.append(entry)
        document["other"] = entries
    return document


@settings(max_examples=400, deadline=None)
@given(documents())
def test_round_trip(document: dict[str, Any]) -> None:
    snapshot = snapshot_from_json(document)
    written = snapshot_to_json(snapshot)
    assert snapshot_from_json(written) == snapshot
    # and through JSON text, as files and API bodies carry it (strict JSON: no NaN/Infinity)
    assert loads_snapshot(json.dumps(written, allow_nan=False)) == snapshot
    # writing is stable: a written document writes itself again
    assert snapshot_to_json(snapshot_from_json(written)) == written
    # every sample of the document is there, under the name plan() reads
    count = sum(len(document.get(section, {})) for section in ("gpu_utilization", "free_gpus", "spot_prices", "other"))
    count += ("queue_depth" in document) + ("budget_spent_today_usd" in document)
    assert len(snapshot.samples) == count


def _doc_example(section: str) -> Any:
    """The first JSON block under a heading of docs/policies.md."""
    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1]
    return json.loads(body.split("```json\n", 1)[1].split("```", 1)[0])


def test_the_documented_full_example_is_valid() -> None:
    snapshot = snapshot_from_json(_doc_example("Signals snapshot JSON"))
    assert sorted(snapshot.samples) == [
        "budget/spent_today_usd",
        "free_gpus/k8s",
        "free_gpus/local",
        "gpu_utilization/k8s",
        "gpu_utilization/local",
        "prometheus/dcgm_temp",
        "queue/depth",
        "spot_price/aws/us-east-1/g5.xlarge",
        "spot_price/azure/eastus/-",
    ]
    assert snapshot.samples["free_gpus/k8s"].ttl_seconds == 60
    assert snapshot.samples["budget/spent_today_usd"].observed_at == TAKEN - timedelta(hours=1)
    assert snapshot_from_json(snapshot_to_json(snapshot)) == snapshot
