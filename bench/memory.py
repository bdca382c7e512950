"""A process's resident memory and its peak, read from ``/proc/<pid>/status`` (Linux), for the benches.

The peak (``VmHWM``) only grows over a process's life; writing ``5`` to
``/proc/<pid>/clear_refs`` (Linux 4.0 and later, our own processes) sets it
back to the current resident size, so one phase's peak can be read apart
from the phases before it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["MIB", "peak_rss", "reset_peak", "rss"]

MIB = 1 << 20
_FIELD = re.compile(r"^(Vm\w+):\s+(\d+) kB$", re.MULTILINE)


def _status(pid: int | None) -> dict[str, int]:
    text = Path(f"/proc/{pid or os.getpid()}/status").read_text(encoding="ascii")
    return {name: int(kib) * 1024 for name, kib in _FIELD.findall(text)}


def rss(pid: int | None = None) -> int:
    """Resident bytes of ``pid`` (default: this process) now."""
    return _status(pid)["VmRSS"]


def peak_rss(pid: int | None = None) -> int:
    """The most resident bytes of ``pid`` since it started or since :func:`reset_peak`."""
    return _status(pid)["VmHWM"]


def reset_peak(pid: int | None = None) -> None:
    """Set ``pid``'s peak back to its resident size now; ``RuntimeError`` where the kernel does not allow it
    (a peak that cannot be reset would mix every earlier phase into the next one's figure)."""
    try:
        Path(f"/proc/{pid or os.getpid()}/clear_refs").write_text("5", encoding="ascii")
    except OSError as exc:
        raise RuntimeError(f"cannot reset the peak RSS of process {pid or os.getpid()}: {exc}") from exc
