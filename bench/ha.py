"""What fencing costs the scheduler: placements/s through a fenced store against an unfenced one.

Run with ``make bench-ha`` (or ``python -m bench.ha``). A leader's
scheduler writes through a store whose every write transaction first reads
the lease row (``FOR SHARE`` on PostgreSQL) and checks the token. This
fills a queue of ``--queued`` tasks and drains it with ``place_batch`` (the
no-op provider, the default policy), alternating unfenced and fenced runs
on fresh databases in the same process, ``--rounds`` times, on SQLite and
on a durable PostgreSQL; it reports medians and the fenced/unfenced ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import date
from typing import Any

from bench.api import DURABLE_POSTGRES, REPO, fill_queue, place_all
from bench.report import write_section
from controlplane.store import Fence, LeaderLease, Store, make_engine, upgrade


def drain(url: str, *, queued: int, batch: int, fenced: bool) -> float:
    """Placements per second draining ``queued`` tasks on a fresh database at ``url``."""
    engine = make_engine(url)
    upgrade(engine=engine)
    store = Store(engine)
    fill_queue(store, queued)
    if fenced:
        lease = LeaderLease(store, holder="bench", seconds=600).acquire()
        store = store.fenced(Fence(lease.name, lease.holder, lease.token))
    placed, elapsed = place_all(store, batch=batch)
    engine.dispose()
    if placed != queued:
        raise RuntimeError(f"placed {placed} of {queued}")
    return placed / elapsed


def run(database: str, *, queued: int, batch: int, rounds: int) -> dict[str, Any]:
    plain: list[float] = []
    fenced: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-ha-") as tmp:
        if database == "sqlite":
            for n in range(rounds):
                plain.append(drain(f"sqlite:///{tmp}/plain{n}.db", queued=queued, batch=batch, fenced=False))
                fenced.append(drain(f"sqlite:///{tmp}/fenced{n}.db", queued=queued, batch=batch, fenced=True))
        else:
            sys.path.insert(0, str(REPO))
            from tests.support.postgres import running_postgres

            with running_postgres(DURABLE_POSTGRES) as server:
                for n in range(rounds):
                    plain.append(
                        drain(server.url(server.create_database(f"plain{n}")), queued=queued, batch=batch, fenced=False)
                    )
                    fenced.append(
                        drain(server.url(server.create_database(f"fenced{n}")), queued=queued, batch=batch, fenced=True)
                    )
    return {
        "unfenced_per_s": statistics.median(plain),
        "fenced_per_s": statistics.median(fenced),
        "ratio": statistics.median(fenced) / statistics.median(plain),
        "runs_unfenced": [round(v) for v in plain],
        "runs_fenced": [round(v) for v in fenced],
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Measured {results['date']} on {results['machine']}, Python {results['python']}: "
        f"`make bench-ha` ({results['queued']:,} queued tasks per run, batch {results['batch']}, "
        f"{results['rounds']} runs each, medians).",
        "",
        "| database | placements/s unfenced | placements/s fenced | fenced / unfenced | runs (unfenced; fenced) |",
        "|---|---|---|---|---|",
    ]
    for name, row in results["databases"].items():
        lines.append(
            f"| {name} | {row['unfenced_per_s']:,.0f} | {row['fenced_per_s']:,.0f} | {row['ratio']:.2f} | "
            f"{', '.join(map(str, row['runs_unfenced']))}; {', '.join(map(str, row['runs_fenced']))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "queued": args.queued,
        "batch": args.batch,
        "rounds": args.rounds,
        "databases": {},
    }
    for name in args.databases.split(","):
        results["databases"][name] = row = run(name, queued=args.queued, batch=args.batch, rounds=args.rounds)
        print(name, json.dumps(row), flush=True)
    table = markdown(results)
    print(table)
    if not args.no_write:
        write_section(
            "bench-ha",
            table,
            heading="## Fencing cost (`make bench-ha`)\n\nEvery write of the leader's scheduler first checks the "
            'lease token (docs/reliability.md, "Several control planes"); this is what that costs placement.\n\n',
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
