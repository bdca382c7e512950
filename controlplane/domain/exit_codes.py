"""The worker's exit codes: one table of what each means and what the scheduler does about it.

The worker (``faceswap.errors``) exits with sysexits codes (ADR 0002);
providers turn an exit code into a backend state and a reason, and the
scheduler decides whether another attempt may follow. All of them read this
table, and a test pins ``faceswap.errors`` to it, so a code cannot mean one
thing to the worker and another to the scheduler.

Retry classes:

- ``success``: the attempt did its work.
- ``terminal``: the same input fails the same way anywhere (a bad spec or
  input, a broken model cache or driver: an operator's alert); never retried.
- ``crash``: an internal error in the worker; another attempt may succeed.
- ``preempted``: the worker was told to stop (SIGTERM, spot interruption) or
  storage failed for a while; it flushed its checkpoint; retry from it.

A code not in the table below 128 is an unhandled crash (``crash``); 128+N
is a worker killed by signal N (the provider reports the attempt LOST).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_PREEMPTED",
    "TERMINAL_EXIT_CODES",
    "ExitCode",
    "RetryClass",
    "exit_meaning",
    "retry_class",
]


class RetryClass(StrEnum):
    """What the scheduler does after an attempt ends with a code of this class."""

    SUCCESS = "success"
    TERMINAL = "terminal"
    CRASH = "crash"
    PREEMPTED = "preempted"


@dataclass(frozen=True)
class ExitCode:
    """One documented exit code of the worker."""

    code: int
    name: str
    meaning: str
    retry: RetryClass


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "EX_OK", "succeeded", RetryClass.SUCCESS),
    ExitCode(2, "usage error", "the worker command line was wrong (an image or provider bug)", RetryClass.TERMINAL),
    ExitCode(65, "EX_DATAERR", "the spec or the job's input is unusable", RetryClass.TERMINAL),
    ExitCode(69, "EX_UNAVAILABLE", "a model or the execution provider is missing on this target", RetryClass.TERMINAL),
    ExitCode(70, "EX_SOFTWARE", "an unexpected internal error in the worker", RetryClass.CRASH),
    ExitCode(
        75,
        "EX_TEMPFAIL",
        "preempted (SIGTERM) or a temporary storage failure; retry with the same checkpoint",
        RetryClass.PREEMPTED,
    ),
)
_BY_CODE = {entry.code: entry for entry in EXIT_CODES}

EXIT_OK = 0
EXIT_PREEMPTED = 75
#: codes that say the same input fails the same way anywhere: never retried
TERMINAL_EXIT_CODES = frozenset(entry.code for entry in EXIT_CODES if entry.retry is RetryClass.TERMINAL)


def exit_meaning(code: int) -> str | None:
    """``"EX_DATAERR: the spec or ..."`` for a documented code, None for any other."""
    entry = _BY_CODE.get(code)
    if entry is None:
        return None
    return entry.meaning if entry.retry is RetryClass.SUCCESS else f"{entry.name}: {entry.meaning}"


def retry_class(code: int) -> RetryClass | None:
    """The class of a code the worker exits with on its own; None for 128+N (killed by a signal)."""
    entry = _BY_CODE.get(code)
    if entry is not None:
        return entry.retry
    return RetryClass.CRASH if 0 < code < 128 else None
