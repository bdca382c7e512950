"""The simulator's HTML report (issue 16): tables, highlights, charts, determinism, size, atomic writes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulator.html_report import render_html, write_html
from simulator.svg_charts import bucket_edges, downsample_minmax, hour_ticks, nice_ticks
from tests.support.html_tree import Element, header_and_body, parse
from tests.support.sim_reports import sample_report

REPO = Path(__file__).resolve().parents[2]
DASH = "\u2014"
PERCENTILES = ("p50", "p95", "p99")
# the comparison's columns as the brief states them: header -> (summary path, which way is better)
EXPECTED_COLUMNS: dict[str, tuple[tuple[str, ...], Callable[[list[float]], float]]] = {
    "Completed": (("completed",), max),
    "Failed": (("failed",), min),
    "Lost": (("lost",), min),
    "$ total": (("usd_total",), min),
    "$ / completed": (("usd_per_completed",), min),
    **{f"SLA met {p}": (("sla", p), max) for p in ("urgent", "high", "normal", "low")},
    **{f"Queue wait {p}": (("queue_wait_s", p), min) for p in PERCENTILES},
    **{f"Completion {p}": (("completion_s", p), min) for p in PERCENTILES},
    "Preemptions": (("preemptions",), min),
    "Failovers": (("failovers",), min),
    "GPU-h lost": (("gpu_hours_lost",), min),
    "Private off private": (("private_off_private",), min),
}


def _value(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = summary
    for key in path:
        node = (node or {}).get(key)
    return None if node is None else float(node)


def _table(page: str, table_id: str) -> tuple[list[str], list[list[Element]]]:
    return header_and_body(parse(page).find("table", id=table_id))


def test_every_row_has_as_many_cells_as_its_header_and_every_run_appears() -> None:
    report = sample_report(runs=5, points=400)
    page = render_html(report)
    names = [run["name"] for run in report["runs"]]
    for table_id in ("comparison", "spend"):
        header, body = _table(page, table_id)
        assert all(len(row) == len(header) for row in body), table_id
        assert [row[0].text() for row in body] == names
    comparison_header, _ = _table(page, "comparison")
    assert comparison_header == ["Run", "Kind", *EXPECTED_COLUMNS]
    tree = parse(page)
    charted = [run["name"] for run in report["runs"] if run["series"] is not None]
    for field in ("queue_depth", "spend_usd_per_h", "sla_misses"):
        legend = tree.find("figure", id=f"chart-{field}").find("ul", **{"class": "legend"})
        assert [li.text() for li in legend.iter("li")] == charted
        assert len(list(tree.find("figure", id=f"chart-{field}").iter("polyline"))) == len(charted)
    gpus = tree.find("section", id="chart-gpus_in_use")
    assert [fig.find("figcaption").text() for fig in gpus.iter("figure")] == charted


def test_best_value_of_each_column_is_highlighted_among_policies_and_baselines() -> None:
    report = sample_report(runs=6, points=50, seed=11)
    runs = report["runs"]
    # a tie for the best failover count, and a bound cheaper than every run: not a candidate
    runs[1]["summary"]["failovers"] = runs[4]["summary"]["failovers"] = 0
    header, body = _table(render_html(report), "comparison")
    for column, name in enumerate(header[2:], start=2):
        path, best_of = EXPECTED_COLUMNS[name]
        values = [_value(run["summary"], path) for run in runs]
        candidates = [v for run, v in zip(runs, values, strict=True) if run["kind"] != "bound" and v is not None]
        best = best_of(candidates) if len(set(candidates)) > 1 else None
        expected = {
            i for i, (run, v) in enumerate(zip(runs, values, strict=True)) if run["kind"] != "bound" and v == best
        }
        highlighted = {i for i, row in enumerate(body) if "best" in row[column].classes()}
        assert highlighted == expected, name
    failovers = header.index("Failovers")
    assert {i for i, row in enumerate(body) if "best" in row[failovers].classes()} == {1, 4}
    # lost and private-off-private are 0 everywhere: nothing to prefer, nothing highlighted
    assert not any("best" in row[header.index("Lost")].classes() for row in body)


def test_lost_or_private_off_private_above_zero_is_flagged() -> None:
    report = sample_report(runs=3, points=20)
    report["runs"][0]["summary"]["lost"] = 2
    report["runs"][2]["summary"]["private_off_private"] = 1
    header, body = _table(render_html(report), "comparison")
    lost, private = header.index("Lost"), header.index("Private off private")
    assert [("bad" in row[lost].classes()) for row in body] == [True, False, False, False]
    assert [("bad" in row[private].classes()) for row in body] == [False, False, True, False]
    assert body[0][lost].text() == "2"


def test_numbers_are_formatted_for_reading() -> None:
    summary = {
        "completed": 499000,
        "failed": 1000,
        "lost": 0,
        "usd_total": 1234.5,
        "usd_per_completed": 0.00247,
        "sla": {"urgent": 0.991, "high": 0.99996, "low": 1.0},
        "queue_wait_s": {"p50": 1.2, "p95": 30.0, "p99": 900.0},
        "completion_s": {"p50": 40.0, "p95": 300.0, "p99": 9000.0},
        "preemptions": 1200,
        "failovers": 150,
        "gpu_hours_lost": 3.4,
        "private_off_private": 0,
        "spend_by_target": {"aws-spot": 1000.0, "azure-spot": 234.5, "onprem": 0.0},
    }
    report = {"scenario": {"name": "f"}, "runs": [{"name": "p", "kind": "policy", "summary": summary, "series": None}]}
    page = render_html(report)
    header, body = _table(page, "comparison")
    shown = dict(zip(header, [cell.text() for cell in body[0]], strict=True))
    assert shown == {
        "Run": "p",
        "Kind": "policy",
        "Completed": "499,000",
        "Failed": "1,000",
        "Lost": "0",
        "$ total": "$1,234.50",
        "$ / completed": "$0.002470",
        "SLA met urgent": "99.1%",
        "SLA met high": "99.9%",  # rounded down: not every task met its deadline
        "SLA met low": "100.0%",
        "Queue wait p50": "1.2 s",
        "Queue wait p95": "30 s",
        "Queue wait p99": "15 min",
        "Completion p50": "40 s",
        "Completion p95": "5.0 min",
        "Completion p99": "2.5 h",
        "Preemptions": "1,200",
        "Failovers": "150",
        "GPU-h lost": "3.4",
        "Private off private": "0",
    }
    spend_header, spend_body = _table(page, "spend")
    assert spend_header == ["Run", "aws-spot", "azure-spot", "onprem"]
    assert [cell.text() for cell in spend_body[0][1:]] == ["$1,000.00 (81%)", "$234.50 (19%)", "$0.00 (0%)"]


def test_a_bound_with_nulls_and_missing_fields_shows_dashes() -> None:
    report = sample_report(runs=2, points=20)
    header, body = _table(render_html(report), "comparison")
    bound = body[-1]
    given = {"Completed", "$ total", "$ / completed"}
    assert {name for name, cell in zip(header[2:], bound[2:], strict=True) if cell.text() != DASH} == given


def test_the_same_document_gives_the_same_bytes_whatever_the_hash_seed() -> None:
    report = sample_report(runs=3, points=300)
    page = render_html(report)
    assert render_html(copy.deepcopy(report)) == page
    assert render_html(json.loads(json.dumps(report))) == page
    script = (
        "import hashlib, sys; from simulator.html_report import render_html; "
        "from tests.support.sim_reports import sample_report; "
        "sys.stdout.write(hashlib.sha256(render_html(sample_report(runs=3, points=300)).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert digests == {hashlib.sha256(page.encode()).hexdigest()}


@pytest.mark.parametrize(("n", "buckets"), [(10_007, 300), (5_000, 7), (601, 300)])
def test_downsampling_keeps_each_buckets_min_and_max(n: int, buckets: int) -> None:
    rng = np.random.default_rng(n)
    t_s = np.arange(n, dtype=np.float64) * 5.0
    # a random walk rounded to whole numbers: many ties, where the first of the tied samples is kept
    values = np.round(rng.normal(size=n).cumsum() * 3).astype(np.float64)
    kept_t, kept_v = downsample_minmax(t_s, values, buckets)
    kept = set(zip(kept_t.tolist(), kept_v.tolist(), strict=True))
    assert len(kept_t) <= 2 * buckets
    assert list(kept_t) == sorted(kept_t)
    assert kept <= set(zip(list(t_s), list(values), strict=True))
    # brute force: each bucket i covers indexes floor(i*n/buckets) .. floor((i+1)*n/buckets)-1
    for i in range(buckets):
        chunk = list(range(i * n // buckets, (i + 1) * n // buckets))
        low = min(chunk, key=lambda k: values[k])
        high = max(chunk, key=lambda k: values[k])
        assert (t_s[low], values[low]) in kept
        assert (t_s[high], values[high]) in kept
    assert bucket_edges(n, buckets)[-1] == n


def test_short_series_are_drawn_whole() -> None:
    t_s = np.arange(10, dtype=np.float64)
    values = t_s**2
    kept_t, kept_v = downsample_minmax(t_s, values, 5)
    assert kept_t.tolist() == t_s.tolist()
    assert kept_v.tolist() == values.tolist()


def test_a_single_spike_in_half_a_million_samples_reaches_the_top_of_its_chart() -> None:
    n = 500_000
    depth = [0] * n
    spike = random.Random(3).randrange(n)
    depth[spike] = 1000
    series = {"t_s": [i * 0.2 for i in range(n)], "queue_depth": depth}
    report = {"scenario": {"name": "s"}, "runs": [{"name": "p", "kind": "policy", "summary": {}, "series": series}]}
    page = render_html(report)
    assert len(page) < 200_000
    polyline = parse(page).find("figure", id="chart-queue_depth").find("polyline")
    ys = [float(point.split(",")[1]) for point in (polyline.attrs["points"] or "").split()]
    # 1000 is the top tick, so the spike touches the top of the plot area; everything else lies on the floor
    assert min(ys) < max(ys)
    assert sorted(set(ys)) == [min(ys), max(ys)]


def test_eight_runs_of_ten_thousand_points_stay_under_two_megabytes() -> None:
    page = render_html(sample_report(runs=8, points=10_000))
    assert len(page.encode("utf-8")) < 2_000_000
    assert len(list(parse(page).iter("polyline"))) == 8 * 3 + 8 * 3  # three time charts, three targets a run


def test_ticks_cover_their_range_at_readable_steps() -> None:
    assert hour_ticks(86_400) == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    assert hour_ticks(1800) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    for lo, hi in [(0, 7), (0, 0.37), (-3, 1234), (5, 5)]:
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo
        assert ticks[-1] >= hi
        assert 2 <= len(ticks) <= 12
    # counts (tasks, GPUs, misses) step by whole numbers, never by 2.5
    for hi in (3, 12, 13, 47, 1250):
        ticks = nice_ticks(0, hi, counts=True)
        assert ticks[-1] >= hi
        assert all(t == int(t) for t in ticks)
        assert ticks[1] - ticks[0] >= 1


def _mismatched() -> dict[str, Any]:
    report = sample_report(runs=2, points=30)
    report["runs"][1]["series"]["queue_depth"].pop()
    return report


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        (lambda r: r["runs"][1]["series"]["queue_depth"].pop(), "runs[1].series.queue_depth"),
        (lambda r: r["runs"][0]["series"]["gpus_in_use"]["aws-spot"].append(3), "runs[0].series.gpus_in_use.aws-spot"),
        (lambda r: r["runs"][0]["series"]["spend_usd_per_h"].__setitem__(4, "12"), "runs[0].series.spend_usd_per_h"),
        (lambda r: r["runs"][1]["series"]["sla_misses"].__setitem__(2, float("nan")), "runs[1].series.sla_misses"),
        (lambda r: r["runs"][1]["summary"].__setitem__("usd_total", "12.5"), "runs[1].summary.usd_total"),
        (lambda r: r["runs"][0]["summary"]["sla"].__setitem__("high", True), "runs[0].summary.sla.high"),
        (lambda r: r["runs"][2].__setitem__("kind", "oracle"), "runs[2].kind"),
        (lambda r: r["runs"][0]["series"]["t_s"].reverse(), "runs[0].series.t_s"),
    ],
)
def test_a_malformed_document_is_an_error_naming_the_field(
    spoil: Callable[[dict[str, Any]], object], field: str
) -> None:
    report = sample_report(runs=2, points=30)
    spoil(report)
    with pytest.raises(ValueError, match=re.escape(field)):
        render_html(report)


def test_write_is_the_rendered_page(tmp_path: Path) -> None:
    report = sample_report(runs=2, points=30)
    target = tmp_path / "report.html"
    write_html(report, target)
    assert target.read_bytes() == render_html(report).encode("utf-8")
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_failed_render_leaves_the_old_report_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("runs[1].series.queue_depth")):
        write_html(_mismatched(), target)
    assert os.listdir(tmp_path) == ["report.html"]
    assert target.read_text(encoding="utf-8") == "old"


def test_a_failed_rename_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: str, dst: str) -> None:
        assert Path(src).is_file()  # the whole page was written before the rename
        raise OSError("disk said no")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk said no"):
        write_html(sample_report(runs=1, points=10), tmp_path / "report.html")
    assert os.listdir(tmp_path) == []


def test_no_runs_and_empty_series_still_make_a_page() -> None:
    empty = render_html({"scenario": {"name": "nothing"}, "runs": []})
    assert "No run has series to chart." in parse(empty).text()
    series: dict[str, Any] = {"t_s": [], "queue_depth": [], "gpus_in_use": {}, "spend_usd_per_h": [], "sla_misses": []}
    one = {"scenario": {}, "runs": [{"name": "p", "kind": "policy", "summary": None, "series": series}]}
    tree = parse(render_html(one))
    assert "no samples" in tree.find("figure", id="chart-queue_depth").text()
    _, body = _table(render_html(one), "comparison")
    assert {cell.text() for cell in body[0][2:]} == {DASH}
