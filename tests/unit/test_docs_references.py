"""The docs name only signals the code has, and the README's commands only files the repository ships.

A signal is named ``<source>/<key>`` (``free_gpus/onprem``); the sources are
the constants of the code below, so a renamed source makes its stale name in
a page fail here rather than confuse a reader. The README's commands are
copied and pasted by a new user: every repository path they name must exist,
and the offline ``plan`` example must run as written.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from controlplane.cli.main import cli
from controlplane.domain import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    GPU_UTILIZATION_SOURCE,
    ON_DEMAND_PRICE_SOURCE,
    QUEUE_SOURCE,
    SPOT_PRICE_SOURCE,
)
from controlplane.domain.reliability import BREAKER_SOURCE, SPOT_HISTORY_SOURCE
from controlplane.signals.base import GPU_MEMORY_SOURCE

REPO = Path(__file__).resolve().parents[2]
#: every sample source the planner and the signal hub use
SOURCES = {
    BUDGET_SOURCE,
    BREAKER_SOURCE,
    CAPACITY_SOURCE,
    GPU_MEMORY_SOURCE,
    GPU_UTILIZATION_SOURCE,
    ON_DEMAND_PRICE_SOURCE,
    QUEUE_SOURCE,
    SPOT_HISTORY_SOURCE,
    SPOT_PRICE_SOURCE,
}
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: where a page shows a signal by name: a trace line, a rejection's detail, a row of a SIGNAL table
_TRACE = re.compile(r"\bsignal ([a-z_]+)/\S+")
_DETAIL = re.compile(r": ([a-z_]+)/\S+ = ")


def _blocks(page: Path) -> list[str]:
    return _FENCE.findall(page.read_text(encoding="utf-8"))


def _signal_table_names(block: str) -> list[str]:
    """The first column of every ``SIGNAL  VALUE ...`` table in a block."""
    names: list[str] = []
    inside = False
    for line in block.splitlines():
        words = line.split()
        if words[:2] == ["SIGNAL", "VALUE"]:
            inside = True
        elif inside and words and "/" in words[0]:
            names.append(words[0])
        else:
            inside = False
    return names


def signal_sources(page: Path) -> set[str]:
    found: set[str] = set()
    for block in _blocks(page):
        found.update(_TRACE.findall(block))
        found.update(_DETAIL.findall(block))
        found.update(name.split("/", 1)[0] for name in _signal_table_names(block))
    return found


def test_the_finder_sees_signal_names_where_pages_show_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```\n  SIGNAL   VALUE  AGE\n  capacity/local  2  1s\n\n"
        "  1. signal gpu_util/k8s: missing, not used\n  onprem  no_capacity  no free GPU: free/onprem = 0\n```\n",
        encoding="utf-8",
    )
    assert signal_sources(page) == {"capacity", "gpu_util", "free"}


@pytest.mark.parametrize("name", ["docs/cli.md", "docs/policies.md", "docs/signals.md", "README.md"])
def test_pages_name_only_signals_the_code_has(name: str) -> None:
    unknown = signal_sources(REPO / name) - SOURCES
    assert not unknown, f"{name} names signal sources the code does not have: {sorted(unknown)}"


# -- the README's commands ------------------------------------------------------------------------------

#: a path inside the repository: top-level folder first, a file with a suffix last (not a URI, not an output)
_REPO_PATH = re.compile(r"^(?:policies|docs|deploy|examples|bench|simulator|tests|migrations)/[\w./-]+\.\w+$")


def _readme_words() -> list[str]:
    words: list[str] = []
    for block in _blocks(REPO / "README.md"):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #", 1)[0]
            words.extend(shlex.split(command, comments=False) if command.strip() else [])
    return words


def test_every_repository_path_in_the_readme_commands_exists() -> None:
    named = [word for word in _readme_words() if _REPO_PATH.match(word)]
    assert "policies/examples/task.json" in named
    assert [path for path in named if not (REPO / path).is_file()] == []


def test_the_readme_plan_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in _blocks(REPO / "README.md") if "fusionctl plan " in b)
    joined = block.replace("\\\n", " ")
    (line,) = [ln for ln in joined.splitlines() if ln.startswith("fusionctl plan ")]
    args = shlex.split(line.split("  #", 1)[0])[1:]
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "candidates (in launch order)" in result.output
