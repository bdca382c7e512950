"""Spot traces (simulator.traces): readings, beyond-end behaviour, change points, and the real NSDI '24 files.

The core behaviour runs on the small synthetic files in tests/data/traces; the
checks against the published traces read the copy the repository keeps under
policies/scenarios/traces (``FUSIONPLANE_TRACES_DIR`` points elsewhere).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.traces import BeyondEnd, SpotTrace, TraceError, load_trace

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "tests" / "data" / "traces"
SYNTHETIC_FILES = sorted(SYNTHETIC.glob("*.json"))
AVAILABILITY = "aws-v100-availability-2023-02-15"
PREEMPTION = "aws-v100-preemption-2023-04-22"


def _real_traces_dir() -> Path | None:
    configured = os.environ.get("FUSIONPLANE_TRACES_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO / "policies" / "scenarios" / "traces")
    return next((path for path in candidates if (path / AVAILABILITY).is_dir()), None)


REAL = _real_traces_dir()
needs_real = pytest.mark.skipif(
    REAL is None,
    reason="the published traces are not on disk: "
    f"set FUSIONPLANE_TRACES_DIR or restore {REPO}/policies/scenarios/traces",
)


def _raw(path: Path) -> tuple[float, list[int]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return document["metadata"]["gap_seconds"], [int(value) for value in document["data"]]


def _direct(values: list[int], tick: int, beyond_end: str) -> int:
    """The value of ``tick`` straight from the list: the definition the trace is checked against."""
    if tick < len(values):
        return values[tick]
    return values[-1] if beyond_end == "hold" else values[tick % len(values)]


def _brute_next_change(values: list[int], tick: int, beyond_end: str) -> int | None:
    """The first tick after ``tick`` with another value, by scanning every tick (one cycle past the end)."""
    here = _direct(values, tick, beyond_end)
    for later in range(tick + 1, max(tick, len(values)) + len(values) + 2):
        if _direct(values, later, beyond_end) != here:
            return later
    return None


def _check_against_brute_force(trace: SpotTrace, values: list[int], ticks: range) -> None:
    gap = trace.gap_seconds
    for tick in ticks:
        expected = _brute_next_change(values, tick, trace.beyond_end)
        # the start of the tick, its middle, and the last float before the next tick's start
        for offset in (tick * gap, (tick + 0.5) * gap, math.nextafter((tick + 1) * gap, -math.inf)):
            assert trace.available_at(offset) == _direct(values, tick, trace.beyond_end), (tick, offset)
            found = trace.next_change_after(offset)
            if expected is None:
                assert found is None, (tick, offset, found)
            else:
                assert found == expected * gap, (tick, offset, found, expected)
                assert found > offset
                assert trace.available_at(found) == _direct(values, expected, trace.beyond_end)


@pytest.mark.parametrize("path", SYNTHETIC_FILES, ids=lambda path: path.stem)
@pytest.mark.parametrize("beyond_end", ["repeat", "hold"])
def test_synthetic_files_agree_with_a_scan_of_every_tick(path: Path, beyond_end: BeyondEnd) -> None:
    gap, values = _raw(path)
    trace = load_trace(path, beyond_end=beyond_end)
    assert trace.values == tuple(values)
    assert trace.gap_seconds == gap
    assert trace.name == path.stem
    assert trace.duration_s == len(values) * gap
    _check_against_brute_force(trace, values, range(3 * len(values) + 2))


def test_other_metadata_keys_and_whole_floats_are_accepted() -> None:
    trace = load_trace(SYNTHETIC / "wrap-equal-half-second.json", name="east")
    assert trace.name == "east"
    assert trace.values == (1, 0, 0, 2, 2, 1)
    assert all(type(value) is int for value in trace.values)
    assert load_trace(SYNTHETIC / "steps-60s.json").ticks == 11


def test_the_preempted_reading_turns_a_positive_value_into_none_obtainable() -> None:
    path = SYNTHETIC / "preempted-32s.json"
    _, raw = _raw(path)
    preempted = load_trace(path, reading="preempted")
    assert preempted.values == tuple(0 if value > 0 else 1 for value in raw)
    assert load_trace(path).values == tuple(raw)
    assert load_trace(path, reading="available").share_available() + preempted.share_available() == pytest.approx(1)


def test_beyond_the_end_repeat_starts_over_and_hold_keeps_the_last_value() -> None:
    path = SYNTHETIC / "steps-60s.json"
    _, values = _raw(path)
    repeat, hold = load_trace(path), load_trace(path, beyond_end="hold")
    end = repeat.duration_s
    for tick, value in enumerate(values):
        assert repeat.available_at(end + tick * 60 + 1) == value
        assert repeat.available_at(5 * end + tick * 60) == value
        assert hold.available_at(end + tick * 60 + 1) == values[-1]
    assert hold.next_change_after(end) is None
    assert hold.next_change_after(end - 1) is None
    # the wrap from the last value (3) to the first (0) is a change
    assert repeat.next_change_after(end - 1) == end


def test_a_constant_trace_never_changes() -> None:
    for beyond_end in ("repeat", "hold"):
        trace = load_trace(SYNTHETIC / "constant.json", beyond_end=beyond_end)
        assert trace.next_change_after(0) is None
        assert trace.next_change_after(10 * trace.duration_s) is None
        assert trace.share_available() == 1


def test_share_available_counts_ticks_with_an_instance() -> None:
    trace = SpotTrace(name="t", gap_seconds=1, values=(0, 3, 0, 1, 0))
    assert trace.share_available() == pytest.approx(2 / 5)


@pytest.mark.parametrize("offset", [-1.0, float("nan"), float("inf")])
def test_offsets_before_the_start_or_not_finite_are_refused(offset: float) -> None:
    trace = load_trace(SYNTHETIC / "steps-60s.json")
    with pytest.raises(ValueError, match="offset"):
        trace.available_at(offset)
    with pytest.raises(ValueError, match="offset"):
        trace.next_change_after(offset)


@pytest.mark.parametrize(
    ("gap", "values", "beyond_end", "problem"),
    [
        (0, (1,), "repeat", "gap_seconds"),
        (float("inf"), (1,), "repeat", "gap_seconds"),
        (True, (1,), "repeat", "gap_seconds"),
        (1, (), "repeat", "at least one value"),
        (1, (1, -1), "repeat", "non-negative"),
        (1, (1, True), "repeat", "non-negative"),
        (1, (1,), "wrap", "beyond_end"),
    ],
)
def test_a_trace_built_in_code_is_checked_too(
    gap: float, values: tuple[int, ...], beyond_end: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        SpotTrace(name="t", gap_seconds=gap, values=values, beyond_end=beyond_end)  # type: ignore[arg-type]


def test_a_reading_that_is_neither_is_refused_naming_the_setting() -> None:
    with pytest.raises(TraceError, match=r"steps-60s\.json: reading: must be one of available, preempted"):
        load_trace(SYNTHETIC / "steps-60s.json", reading="inverted")


@pytest.mark.parametrize("gap", [0.1, 0.3, 0.7, 7.77])
def test_tick_boundaries_hold_where_floating_division_lands_off_by_one(gap: float) -> None:
    # k * gap / gap floors to k - 1 for some k with these gaps (k = 5 for 7.77, 43 for 0.1)
    values = [tick % 3 for tick in range(130)]
    for beyond_end in ("repeat", "hold"):
        trace = SpotTrace(name="uneven", gap_seconds=gap, values=tuple(values), beyond_end=beyond_end)
        _check_against_brute_force(trace, values, range(2 * len(values)))


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=25),
    gap=st.sampled_from([0.1, 0.3, 1.0, 32.0, 195.0, 1e-3, 7.77]),
    beyond_end=st.sampled_from(["repeat", "hold"]),
)
def test_next_change_agrees_with_brute_force_for_any_trace(
    values: list[int], gap: float, beyond_end: BeyondEnd
) -> None:
    trace = SpotTrace(name="generated", gap_seconds=gap, values=tuple(values), beyond_end=beyond_end)
    _check_against_brute_force(trace, values, range(3 * len(values) + 1))


@needs_real
@pytest.mark.parametrize("beyond_end", ["repeat", "hold"])
def test_a_slice_of_a_real_trace_agrees_with_brute_force(beyond_end: BeyondEnd) -> None:
    assert REAL is not None
    gap, values = _raw(REAL / AVAILABILITY / "us-east-1c_v100_1.json")
    part = values[5000:5600]
    trace = SpotTrace(name="slice", gap_seconds=gap, values=tuple(part), beyond_end=beyond_end)
    _check_against_brute_force(trace, part, range(0, 2 * len(part), 3))


@needs_real
def test_walking_a_whole_real_trace_meets_every_change_once() -> None:
    assert REAL is not None
    path = REAL / PREEMPTION / "us-west-2c_v100_1.json"
    gap, values = _raw(path)
    trace = load_trace(path, beyond_end="hold")
    changes = [tick for tick in range(1, len(values)) if values[tick] != values[tick - 1]]
    walked: list[float] = []
    found = trace.next_change_after(0.0)
    while found is not None:
        walked.append(found)
        found = trace.next_change_after(found)
    assert walked == [tick * gap for tick in changes]
    assert changes, "a real trace has changes"


def _readme_shares(readme: Path) -> dict[tuple[str, str], float]:
    """(folder, zone) -> share of ticks with value 1, from the publishers' README table."""
    shares: dict[tuple[str, str], float] = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"us-[a-z]+-\d[a-z]", cells[0]):
            for folder, cell in zip((AVAILABILITY, PREEMPTION), cells[1:], strict=True):
                if cell:
                    shares[(folder, cells[0])] = float(cell.rstrip("%")) / 100
    return shares


@needs_real
def test_share_available_matches_the_publishers_table() -> None:
    assert REAL is not None
    shares = _readme_shares(REAL / "README.md")
    assert shares[(AVAILABILITY, "us-east-1a")] == pytest.approx(0.167)
    assert shares[(AVAILABILITY, "us-west-2a")] == pytest.approx(0.883)
    assert len(shares) == 13
    for (folder, zone), share in shares.items():
        path = REAL / folder / f"{zone}_v100_1.json"
        assert load_trace(path).share_available() == pytest.approx(share, abs=0.0005), (folder, zone)
        assert load_trace(path, reading="preempted").share_available() == pytest.approx(1 - share, abs=0.0005)


@needs_real
@pytest.mark.parametrize(("folder", "ticks", "gap"), [(AVAILABILITY, 20158, 195), (PREEMPTION, 19961, 32)])
def test_real_files_have_the_published_ticks_and_gap(folder: str, ticks: int, gap: float) -> None:
    assert REAL is not None
    for path in sorted((REAL / folder).glob("*.json")):
        trace = load_trace(path)
        assert (trace.ticks, trace.gap_seconds) == (ticks, gap), path.name
        assert trace.duration_s == ticks * gap
