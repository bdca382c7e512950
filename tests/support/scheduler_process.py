"""One scheduler in its own process, for the two-schedulers test.

``python -m tests.support.scheduler_process --database-url U --name a --go FILE --out FILE --peer FILE``
says it is ready (``OUT.ready``), waits until ``--go`` exists (so both start together), places batches
until it has launched a task, says so (``OUT.placed``) and waits for its peer's ``.placed`` (``--peer``
names the peer's ``--out``), then places queued tasks through a no-op provider until none are left,
and writes the task ids it launched to ``--out`` as JSON.

The second gate is what makes "both took part" certain: without it one
process could drain every task while the other was still being scheduled
onto a core (seen once on two shared cores). Neither process can pass it
before each has launched something; the race that matters (both claiming
from one queue at once) is the drain after it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.store import Store, make_engine
from providers.noop import NoopProvider

POLICY = {
    "targets": [{"name": "local", "provider": "local", "private": True}],
    "rules": [{"name": "default", "targets": ["local"]}],
}


def _wait_for(path: Path, why: str) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(why)
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--go", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--peer", type=Path, required=True, help="the other process's --out")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    engine = make_engine(args.database_url)
    store = Store(engine)
    policy = parse_policy(POLICY)
    provider = NoopProvider(name="local")
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={"local": provider},
        scheduler_id=args.name,
        batch_size=args.batch,
    )
    args.out.with_suffix(".ready").touch()  # imports done: the test waits for both before saying go
    _wait_for(args.go, "never told to go")
    while not provider.launched() and scheduler.place_batch():
        pass
    args.out.with_suffix(".placed").touch()
    _wait_for(args.peer.with_suffix(".placed"), "the other scheduler never placed a task")
    while scheduler.place_batch():
        pass
    launched = [store.get_attempt(attempt_id).task_id for attempt_id in provider.launched()]
    args.out.write_text(json.dumps(launched), encoding="utf-8")
    engine.dispose()


if __name__ == "__main__":
    main()
