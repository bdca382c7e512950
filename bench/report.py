"""Writing a benchmark's table into docs/performance.md between its markers, and naming the machine."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

__all__ = ["PERFORMANCE_DOC", "machine", "write_section"]

PERFORMANCE_DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def write_section(name: str, table: str, *, heading: str = "", doc: Path = PERFORMANCE_DOC) -> None:
    """Replace what lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` with ``table``.

    Markers that are missing are appended, after ``heading`` (a section title
    and the issue's target, written once); text around the markers is kept.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    if start not in text:
        text += f"\n{heading}{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


def machine() -> str:
    """The machine a bench ran on, for its table: cores, architecture, CPU model (always shared here)."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()}-core {platform.machine()} ({model}), shared"
