"""The simulator's report as one self-contained HTML page: scenario, comparison, spend, charts.

The page loads nothing and runs nothing: styles are inline, charts are inline SVG, and a
Content-Security-Policy forbids every other source, so a report that is mailed around or opened
from disk cannot reach the network even if a name in it were crafted to. Every value from the
document is escaped (names, targets and descriptions are untrusted) and none is placed in a script,
a URL or an unquoted attribute. The same document always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulator.html_text import esc
from simulator.report_doc import Run, Series, finite, read_runs, scenario_of
from simulator.report_tables import comparison_table, fmt_count, spend_table
from simulator.svg_charts import Line, LineStyle, legend_html, line_chart_svg, style_for

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
WIDE = (960, 300)
SMALL = (470, 220)
# (series field, chart title, y axis label, whether the values are counts)
TIME_CHARTS = (
    ("queue_depth", "Queue depth", "tasks waiting", True),
    ("spend_usd_per_h", "Spend rate", "$ per hour", False),
    ("sla_misses", "Cumulative SLA misses", "deadline misses", True),
)

STYLE = """
body{font-family:system-ui,"DejaVu Sans",Arial,sans-serif;margin:20px 24px;color:#1a1a1a;background:#fff}
h1{font-size:1.6em;margin:0 0 .4em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #ccc}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em;margin:0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:.25em .3em;white-space:nowrap}
thead th{background:#f0f0f0;white-space:normal;vertical-align:bottom}
th.run{text-align:left;white-space:normal;overflow-wrap:anywhere;min-width:15em;max-width:18em}
th.run svg.swatch{width:24px}
td.num{text-align:right}td.missing{color:#888}
td.best{background:#cde6f7;font-weight:700;box-shadow:inset 0 -3px 0 #0072B2}
td.bad{background:#f9d2c4;color:#8a1c00;font-weight:700}td.bad::before{content:"\\26A0  "}
.share{color:#666}.note{color:#555;font-size:.9em;max-width:70em}
svg.swatch{vertical-align:middle;margin-right:.4em}
ul.legend{list-style:none;padding:0;margin:.3em 0;display:flex;flex-wrap:wrap;gap:.3em 1.4em;font-size:.9em}
figure{margin:1em 0 1.6em}figcaption{font-weight:600;margin-bottom:.2em}
svg.chart{width:100%;height:auto;font-size:12px;fill:#333}
svg.chart .grid{stroke:#e4e4e4;stroke-width:1}svg.chart .axis{stroke:#555;fill:none;stroke-width:1}
figure.wide{max-width:960px}
.multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:0 24px}
.multiples figure{margin:.4em 0}.multiples figcaption{font-weight:400;overflow-wrap:anywhere}
"""


def _scenario_facts(scenario: Mapping[str, Any], runs: Sequence[Run]) -> str:
    duration = finite(scenario.get("duration_s"))
    tasks = finite(scenario.get("tasks"))
    kinds = [run.kind for run in runs]
    facts = [
        ("Scenario", esc(scenario.get("name", "unnamed"))),
        ("Seed", esc(scenario.get("seed", "\u2014"))),
        ("Start", esc(scenario.get("start", "\u2014"))),
        ("Duration", f"{duration / 3600:,.1f} h ({fmt_count(duration)} s)" if duration is not None else "\u2014"),
        ("Tasks", fmt_count(tasks) if tasks is not None else esc(scenario.get("tasks", "\u2014"))),
        ("Runs", ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "none"),
    ]
    if scenario.get("description"):
        facts.append(("Description", esc(scenario["description"])))
    items = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _x_max(scenario: Mapping[str, Any], charted: Sequence[tuple[Run, Series]]) -> float:
    """The charts' common time span: the scenario's duration, or longer if a series runs past it."""
    ends = [float(series.t_s[-1]) for _, series in charted if len(series.t_s)]
    return max([1.0, finite(scenario.get("duration_s")) or 0.0, *ends])


def _time_chart(chart: tuple[str, str, str, bool], charted: Sequence[tuple[Run, Series]], x_max: float) -> str:
    field, title, y_label, counts = chart
    # a run keeps its colour and dash in every chart and in the table: the k-th charted run, style k
    lines = [
        Line(run.name, series.t_s, series.lines[field], style_for(k))
        for k, (run, series) in enumerate(charted)
        if field in series.lines
    ]
    svg = line_chart_svg(lines, title=title, y_label=y_label, size=WIDE, x_max_s=x_max, counts=counts)
    legend = legend_html([(line.label, line.style) for line in lines])
    return f'<figure class="wide" id="chart-{field}"><figcaption>{esc(title)}</figcaption>{legend}{svg}</figure>'


def _gpu_charts(charted: Sequence[tuple[Run, Series]], x_max: float) -> str:
    """A small chart per run, a line per target; one y scale for all, so the runs' fleets compare at a glance."""
    targets = list(dict.fromkeys(target for _, series in charted for target in series.gpus_in_use))
    styles: dict[str, LineStyle] = {target: style_for(j) for j, target in enumerate(targets)}
    peaks = [float(v.max()) for _, series in charted for v in series.gpus_in_use.values() if len(v)]
    y_max = max([1.0, *peaks])
    figures = []
    for run, series in charted:
        lines = [Line(target, series.t_s, values, styles[target]) for target, values in series.gpus_in_use.items()]
        title = f"GPUs in use: {run.name}"
        svg = line_chart_svg(lines, title=title, y_label="GPUs", size=SMALL, x_max_s=x_max, y_max=y_max, counts=True)
        figures.append(f"<figure><figcaption>{esc(run.name)}</figcaption>{svg}</figure>")
    legend = legend_html([(target, styles[target]) for target in targets])
    return (
        '<section id="chart-gpus_in_use"><h3>GPUs in use, by target</h3>'
        f'{legend}<div class="multiples">{"".join(figures)}</div></section>'
    )


def _charts(scenario: Mapping[str, Any], runs: Sequence[Run]) -> str:
    charted = [(run, run.series) for run in runs if run.series is not None]
    if not charted:
        return '<p class="note">No run has series to chart.</p>'
    x_max = _x_max(scenario, charted)
    parts = [_time_chart(chart, charted, x_max) for chart in TIME_CHARTS]
    parts.insert(1, _gpu_charts(charted, x_max))
    return "".join(parts)


def _body(scenario: Mapping[str, Any], runs: Sequence[Run]) -> str:
    # the same numbering as _time_chart's, so a row's swatch is its run's line
    styles = {run.index: style_for(k) for k, run in enumerate(run for run in runs if run.series is not None)}
    return (
        f"<h1>Simulation report: {esc(scenario.get('name', 'unnamed'))}</h1>"
        f'<section id="scenario"><h2>Scenario</h2>{_scenario_facts(scenario, runs)}</section>'
        '<section id="comparison-section"><h2>Comparison</h2>'
        '<p class="note">Highlighted: the best value of a column among policies and baselines (bounds are '
        "yardsticks, not candidates; a column where all agree has none). Lost tasks and private tasks placed "
        "off private targets must be 0: any other value is marked \u26a0. SLA: share of tasks that met their "
        "deadline, rounded down. \u2014: not reported.</p>"
        f'<div class="scroll">{comparison_table(runs, styles)}</div></section>'
        f'<section id="spend-section"><h2>Spend by target</h2><div class="scroll">{spend_table(runs)}</div></section>'
        '<section id="charts"><h2>Over simulated time</h2>'
        '<p class="note">Hours from the scenario\'s start. Long series are drawn from the minimum and maximum '
        "of each pixel column, so no spike is lost.</p>"
        f"{_charts(scenario, runs)}</section>"
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The report document as one complete HTML5 page; ValueError naming the field where the document is malformed."""
    scenario = scenario_of(report)
    runs = read_runs(report)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Simulation report: {esc(scenario.get('name', 'unnamed'))}</title>"
        f"<style>{STYLE}</style></head>\n<body>{_body(scenario, runs)}</body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: Path) -> None:
    """Render and write the page atomically: the old file or the whole new one, never a half-written one.

    Rendering happens before any file is opened, so a malformed document leaves the folder as it was;
    the temporary file (this user's only, as mkstemp makes it) lies beside ``path`` so the rename
    stays on one file system.
    """
    data = render_html(report).encode("utf-8")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
