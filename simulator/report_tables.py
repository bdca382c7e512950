"""The report's tables: runs compared column by column, and their spend by target.

A column's best value is highlighted among the runs that could be deployed (policies and baselines):
a bound, such as the offline optimum, is a yardstick no scheduler can reach and would otherwise win
every cost column. A column whose candidates all agree highlights nothing, as there is no best to see.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simulator.html_text import esc
from simulator.report_doc import Run, keys_at, number_at
from simulator.svg_charts import LineStyle, swatch_svg

DASH = "\u2014"
# the priorities' order from most to least pressing; a priority not listed follows in the document's order
PRIORITIES = ("urgent", "high", "normal", "low")


def fmt_count(value: float) -> str:
    return f"{int(value):,}" if value.is_integer() else f"{value:,.1f}"


def fmt_usd(value: float) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def fmt_usd_small(value: float) -> str:
    """Four significant digits, never in exponent form: a cost per task is often a fraction of a cent."""
    if value == 0:
        return "$0.00"
    decimals = min(8, max(2, 3 - math.floor(math.log10(abs(value)))))
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{decimals}f}"


def fmt_share(value: float) -> str:
    """A share as a percentage, rounded down to 0.1 %: 99.96 % met must not read as 100 % met."""
    # rounded to 6 places first so 0.991 * 1000 = 990.9999999 still reads 99.1 %
    return f"{math.floor(round(value * 1000, 6)) / 10:.1f}%"


def fmt_seconds(value: float) -> str:
    """Seconds, minutes or hours, with a decimal only where it matters to the value (keeps the columns narrow)."""
    size = abs(value)
    if size < 10:
        return f"{value:.1f} s"
    if size < 120:
        return f"{value:.0f} s"
    if size < 600:
        return f"{value / 60:.1f} min"
    if size < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def fmt_hours(value: float) -> str:
    return f"{value:,.1f}"


@dataclass(frozen=True)
class Column:
    header: str
    path: tuple[str, ...]
    higher_is_better: bool
    fmt: Callable[[float], str]
    must_be_zero: bool = False
    group: str = ""
    """A heading over this and its neighbours of the same group (their own headers then name only the part)."""


def _priorities(runs: Sequence[Run]) -> list[str]:
    seen = [key for run in runs for key in keys_at(run, "sla")]
    return [p for p in PRIORITIES if p in seen] + list(dict.fromkeys(p for p in seen if p not in PRIORITIES))


def columns_for(runs: Sequence[Run]) -> list[Column]:
    """The comparison's numeric columns; an SLA column for each priority that any run reports."""
    percentiles = ("p50", "p95", "p99")
    return [
        Column("Completed", ("completed",), True, fmt_count),
        Column("Failed", ("failed",), False, fmt_count),
        Column("Lost", ("lost",), False, fmt_count, must_be_zero=True),
        Column("$ total", ("usd_total",), False, fmt_usd),
        Column("$ / completed", ("usd_per_completed",), False, fmt_usd_small),
        *(Column(p, ("sla", p), True, fmt_share, group="SLA met") for p in _priorities(runs)),
        *(Column(p, ("queue_wait_s", p), False, fmt_seconds, group="Queue wait") for p in percentiles),
        *(Column(p, ("completion_s", p), False, fmt_seconds, group="Completion") for p in percentiles),
        Column("Preemptions", ("preemptions",), False, fmt_count),
        Column("Failovers", ("failovers",), False, fmt_count),
        Column("GPU-h lost", ("gpu_hours_lost",), False, fmt_hours),
        Column("Private off private", ("private_off_private",), False, fmt_count, must_be_zero=True),
    ]


def best_value(column: Column, runs: Sequence[Run]) -> float | None:
    """The best of the column among policies and baselines; None where they do not differ."""
    values = [v for run in runs if run.kind != "bound" and (v := number_at(run, column.path)) is not None]
    if len(set(values)) < 2:
        return None
    return max(values) if column.higher_is_better else min(values)


def _cell(column: Column, value: float | None, best: float | None, candidate: bool) -> str:
    if value is None:
        return f'<td class="num missing">{DASH}</td>'
    classes = ["num"]
    notes = []
    if candidate and best is not None and value == best:
        classes.append("best")
        notes.append("best of the column")
    if column.must_be_zero and value != 0:
        classes.append("bad")
        notes.append("must be 0")
    title = f' title="{"; ".join(notes)}"' if notes else ""
    return f'<td class="{" ".join(classes)}"{title}>{esc(column.fmt(value))}</td>'


def _run_cells(run: Run, style: LineStyle | None) -> str:
    swatch = swatch_svg(style) if style else ""
    return f'<th scope="row" class="run">{swatch}{esc(run.name)}</th><td class="kind kind-{run.kind}">{run.kind}</td>'


def comparison_table(runs: Sequence[Run], styles: dict[int, LineStyle]) -> str:
    """One row per run, in the document's order; ``styles`` (by run index) puts each charted run's line beside it."""
    columns = columns_for(runs)
    best = [best_value(column, runs) for column in columns]
    rows = []
    for run in runs:
        cells = "".join(
            _cell(column, number_at(run, column.path), best[i], run.kind != "bound") for i, column in enumerate(columns)
        )
        rows.append(f'<tr id="run-{run.index}">{_run_cells(run, styles.get(run.index))}{cells}</tr>')
    return f'<table id="comparison"><thead>{_grouped_head(columns)}</thead><tbody>{"".join(rows)}</tbody></table>'


def _grouped_head(columns: Sequence[Column]) -> str:
    """Two header rows: a grouped column's group spans its parts above them; any other column spans both rows.

    Grouping keeps the table narrow enough for a laptop screen: "p95" under "Completion" rather than
    "Completion p95" in every header.
    """
    top = ['<th scope="col" rowspan="2">Run</th>', '<th scope="col" rowspan="2">Kind</th>']
    parts: list[str] = []
    for group, members in itertools.groupby(columns, key=lambda column: column.group):
        span = list(members)
        if group:
            top.append(f'<th scope="colgroup" colspan="{len(span)}">{esc(group)}</th>')
            parts.extend(f'<th scope="col">{esc(column.header)}</th>' for column in span)
        else:
            top.extend(f'<th scope="col" rowspan="2">{esc(column.header)}</th>' for column in span)
    return f"<tr>{''.join(top)}</tr><tr>{''.join(parts)}</tr>"


def spend_table(runs: Sequence[Run]) -> str:
    """Spend per target (columns in order of first appearance) for each run, with each target's share."""
    targets = list(dict.fromkeys(target for run in runs for target in keys_at(run, "spend_by_target")))
    head = "".join(f'<th scope="col">{esc(target)}</th>' for target in targets)
    rows = []
    for run in runs:
        values = [number_at(run, ("spend_by_target", target)) for target in targets]
        total = sum(v for v in values if v is not None)
        cells = "".join(_spend_cell(value, total) for value in values)
        rows.append(f'<tr><th scope="row" class="run">{esc(run.name)}</th>{cells}</tr>')
    body = "".join(rows)
    return f'<table id="spend"><thead><tr><th scope="col">Run</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _spend_cell(value: float | None, total: float) -> str:
    if value is None:
        return f'<td class="num missing">{DASH}</td>'
    share = f' <span class="share">({value / total * 100:.0f}%)</span>' if total > 0 else ""
    return f'<td class="num">{esc(fmt_usd(value))}{share}</td>'
