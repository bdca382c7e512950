"""Helpers shared by commands: error reporting, signals, output format."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from controlplane.config import LocalRunSettings
from faceswap import EXIT_PREEMPTED, FaceSwapError

__all__ = ["fail", "install_stop_signals", "output_option", "parse_duration", "print_json", "reports_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def fail(exc: FaceSwapError) -> NoReturn:
    """One line on stderr naming the problem, and the documented exit code."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def reports_errors(func: F) -> F:
    """Turn core errors into a one-line message and their exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FaceSwapError as exc:
            fail(exc)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def install_stop_signals(*, interrupt: bool) -> threading.Event:
    """An event set on SIGTERM (the spot interruption notice) and, if asked, Ctrl-C.

    The video loop sees the event within a frame and stops cleanly. If the
    process is still alive ``FUSIONPLANE_STOP_GRACE_S`` seconds later it exits
    75 at once: every output, segment and manifest is published by rename or a
    single PUT, so a hard exit leaves nothing half-written.
    """
    stop = threading.Event()
    grace_s = LocalRunSettings.from_env().stop_grace_s

    def handler(_signum: int, _frame: object) -> None:
        if stop.is_set():
            return
        stop.set()
        watchdog = threading.Timer(grace_s, os._exit, args=(EXIT_PREEMPTED,))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGTERM, handler)
    if interrupt:
        signal.signal(signal.SIGINT, handler)
    return stop


output_option = click.option(
    "--output",
    "-o",
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format; the JSON is stable and documented.",
)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, option: str) -> int:
    """Seconds in ``30s``, ``30m``, ``24h`` or ``7d``; a usage error naming ``option`` otherwise."""
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 24h or 7d", param_hint=option)
    return int(number) * _DURATION_UNITS[unit]
