"""A stand-in for ``fusionctl worker run`` that the local provider can start by the thousand.

``python -m tests.support.stub_worker --spec PATH`` (the local provider appends
``--spec PATH`` to ``FUSIONPLANE_LOCAL_WORKER_COMMAND`` and also sets
``FUSIONPLANE_WORKER_SPEC``) reads the worker spec, posts one ``heartbeat``,
"works" for a while, then posts ``complete`` and exits 0; or, for a share of
attempts chosen from the attempt id (so reruns pick the same share), it
plays a preempted worker: ``fail`` with kind ``preempted`` and exit 75, the
way the real worker answers SIGTERM (docs/worker.md). On SIGTERM (the
provider's ``cancel``) it exits 75 at once.

Only the standard library is imported (json, urllib): a Python start with
the control plane's imports would cost more than the work it simulates.

Settings (environment: ``fusionctl serve`` passes them only when ``FUSIONPLANE_LOCAL_WORKER_ENV`` names them):

- ``FUSIONPLANE_STUB_PREEMPT_RATE``: share of attempts that end preempted (default 0.1)
- ``FUSIONPLANE_STUB_WORK_S``: ``MIN,MAX`` seconds of "work", picked from the attempt id (default ``0.5,2``)
- ``FUSIONPLANE_STUB_SEED``: mixed into the attempt id's hash (default empty)
- ``FUSIONPLANE_STUB_LEDGER``: a file to append one JSON line to at start and at end
  (``{"event": "start"|"end", "attempt_id", "task_id", "pid", "at", "outcome"}``),
  for the fault storm's duplicate checks; lines are short single ``write`` calls on an
  ``O_APPEND`` descriptor, so concurrent workers never interleave them.

Callback delivery follows the real worker's rules: ``heartbeat`` is sent
once (a lost one is superseded); ``complete`` and ``fail`` get up to 3 tries,
sleeping 0.5 s then 1 s in between, on a connection error, 429 or 5xx, 5 s
timeout each (``controlplane/worker/callbacks.py``). Delivered or not, the exit code is the final word for the local
provider.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any

EXIT_PREEMPTED = 75
OUTCOME_TRIES = 3
TIMEOUT_S = 5.0


def fraction(seed: str, attempt_id: str, purpose: str) -> float:
    """A number in [0, 1) from the attempt id: the same attempt always gets the same fate."""
    digest = hashlib.sha256(f"{seed}|{purpose}|{attempt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _ledger(event: str, spec: dict[str, Any], **extra: Any) -> None:
    path = os.environ.get("FUSIONPLANE_STUB_LEDGER")
    if not path:
        return
    line = {
        "event": event,
        "attempt_id": spec.get("attempt_id"),
        "task_id": spec.get("task_id"),
        "pid": os.getpid(),
        "at": time.time(),
        **extra,
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


def _post(spec: dict[str, Any], event: str, body: dict[str, Any]) -> int | None:
    """One POST to ``callback.url/EVENT``; the HTTP status, or None when nothing answered."""
    callback = spec.get("callback") or {}
    url, token = callback.get("url"), callback.get("token")
    if not url or not token:
        return None
    request = urllib.request.Request(
        f"{url}/{event}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _deliver(spec: dict[str, Any], event: str, body: dict[str, Any]) -> bool:
    """An outcome callback: up to 3 tries on a connection error, 429 or 5xx (docs/worker.md)."""
    for attempt in range(OUTCOME_TRIES):
        status = _post(spec, event, body)
        if status is not None and 200 <= status < 300:
            return True
        if status is not None and status != 429 and status < 500:
            return False  # refused: retrying will not change it
        if attempt + 1 < OUTCOME_TRIES:
            time.sleep(min(0.5 * 2**attempt, 5.0))
    return False


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = os.environ.get("FUSIONPLANE_WORKER_SPEC")
    if "--spec" in args and args.index("--spec") + 1 < len(args):
        path = args[args.index("--spec") + 1]
    if not path:
        print("usage: python -m tests.support.stub_worker --spec PATH", file=sys.stderr)
        return 2
    try:
        with open(path, encoding="utf-8") as handle:
            spec = json.load(handle)
        attempt_id = str(spec["attempt_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"spec_invalid: {exc}", file=sys.stderr)
        return 65

    def on_term(signum: int, frame: Any) -> None:
        _ledger("end", spec, outcome="sigterm")
        os._exit(EXIT_PREEMPTED)

    signal.signal(signal.SIGTERM, on_term)
    seed = os.environ.get("FUSIONPLANE_STUB_SEED", "")
    rate = float(os.environ.get("FUSIONPLANE_STUB_PREEMPT_RATE", "0.1"))
    low, _, high = os.environ.get("FUSIONPLANE_STUB_WORK_S", "0.5,2").partition(",")
    work_s = float(low) + (float(high or low) - float(low)) * fraction(seed, attempt_id, "work")
    preempt = fraction(seed, attempt_id, "preempt") < rate

    _ledger("start", spec)
    _post(spec, "heartbeat", {"progress": {}})
    time.sleep(work_s / 2 if preempt else work_s)
    if preempt:
        delivered = _deliver(
            spec,
            "fail",
            {"kind": "preempted", "message": "stub worker: simulated preemption", "exit_code": EXIT_PREEMPTED},
        )
        _ledger("end", spec, outcome="preempted", delivered=delivered)
        return EXIT_PREEMPTED
    delivered = _deliver(spec, "complete", {"output": spec.get("output"), "kind": "image", "wall_s": work_s})
    _ledger("end", spec, outcome="succeeded", delivered=delivered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
