"""Control-plane benchmarks: submit throughput over loopback and placement throughput.

Run with ``make bench-api`` (or ``python -m bench.api``).

* **Submit**: ``POST /v1/tasks`` against a real uvicorn in its own process,
  from an asyncio load generator that keeps ``--concurrency`` HTTP/1.1
  connections busy (raw sockets: the generator costs far less per request
  than the server, so it measures the server). ``GET /healthz`` on the same
  server, same generator, is the in-process baseline: the ratio says how much
  of the budget validation, auth and the database take.
* **Placement**: ``--queued`` tasks in the store, then the real scheduler
  (claim, pure ``plan()``, receipt, attempt, launch) with a no-op provider
  until none is left; tasks planned and launched per second.

Both run on SQLite (file, WAL) and on a real PostgreSQL started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from bench.report import write_section
from controlplane.api.auth import create_token
from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskSpec
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.store import NewTask, Store, make_engine, upgrade
from providers.noop import NoopProvider

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: a durable server as in production (the test suite's own runs without fsync); autovacuum
#: checks every second so statistics follow tables that grow from empty within one run,
#: as they do over minutes on a running system
DURABLE_POSTGRES = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "autovacuum_naptime": "1s",
}


@contextmanager
def postgres() -> Iterator[str]:
    sys.path.insert(0, str(REPO))
    from tests.support.postgres import running_postgres

    with running_postgres(DURABLE_POSTGRES) as server:
        yield server.url(server.create_database("bench"))


@dataclass(frozen=True)
class RunningApi:
    """The API server of a bench: its port, a submitter token of tenant ``bench``, and its process id."""

    port: int
    token: str
    #: for benches that read the server's own memory (/proc/<pid>/status)
    pid: int


@contextmanager
def api_server(database_url: str, workdir: Path) -> Iterator[RunningApi]:
    """``bench.api_server`` in its own process on 127.0.0.1, until ``/healthz`` answers; stopped by PID after."""
    tokens = workdir / "tokens.json"
    token = create_token(tokens, tenant="bench", role="submitter")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.api_server",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--tokens-file",
            str(tokens),
            "--workdir",
            str(workdir),
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine imports slowly
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the API server did not start")
            time.sleep(0.1)
        yield RunningApi(port=port, token=token, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def load(port: int, requests: list[bytes], concurrency: int, *, rate: float | None = None) -> dict[str, Any]:
    """Send ``requests`` over ``concurrency`` keep-alive connections; throughput and latency.

    Without ``rate`` it is a closed loop: each connection sends its next
    request as soon as the last is answered (the most the server does).
    With ``rate`` it is an open loop: request ``i`` is due at ``i / rate``
    seconds and its latency counts from then, so time spent waiting for a
    free connection counts too (no coordinated omission).
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = iter(range(len(requests)))

    async def connection(start: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in next_index:
                due = time.perf_counter() if rate is None else start + i / rate
                if rate is not None and (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                writer.write(requests[i])
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    async def run() -> float:
        start = time.perf_counter() + 0.05  # after the connections are open
        await asyncio.gather(*(connection(start) for _ in range(concurrency)))
        return start

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "statuses": statuses,
    }


def submit_requests(token: str, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        body = json.dumps(
            {
                "source": "s3://bench-faces/face.png",
                "target": f"s3://bench-media/clip-{i}.mp4",
                "output": f"s3://bench-out/{i}.mp4",
                "priority": ("low", "normal", "high", "urgent")[i % 4],
                "labels": {"campaign": "launch-day"},
            }
        ).encode()
        out.append(
            b"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return out


def bench_submit(database_url: str, *, requests: int, concurrency: int, rate: float) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="fusionplane-bench-api-") as tmp,
        api_server(database_url, Path(tmp)) as server,
    ):
        port, token = server.port, server.token
        health = [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"] * requests
        load(port, submit_requests(token, 500), concurrency)  # warm-up
        baseline = load(port, health, concurrency)
        submit = load(port, submit_requests(token, requests), concurrency)
        paced = load(port, submit_requests(token, requests), concurrency, rate=rate)
    for name, run in (("submit", submit), ("paced", paced)):
        refused = {code: n for code, n in run["statuses"].items() if code != 202}
        if refused:
            raise RuntimeError(f"{name}: submits were not accepted ({refused}); the bench would time errors")
    return {"submit": submit, "paced": paced, "healthz": baseline}


def fill_queue(store: Store, queued: int) -> None:
    """Queue ``queued`` public video tasks, all four priorities, a thousand per transaction."""
    for first in range(0, queued, 1000):
        store.create_tasks(
            [
                NewTask(
                    spec=TaskSpec(
                        tenant="bench",
                        kind=TaskKind.VIDEO,
                        source_uri="s3://f/face.png",
                        target_uri=f"s3://m/{i}.mp4",
                        output_uri=f"s3://o/{i}.mp4",
                        priority=(Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT)[i % 4],
                        data_sensitivity=DataSensitivity.PUBLIC,
                    ),
                    request_hash=str(i),
                )
                for i in range(first, min(first + 1000, queued))
            ]
        )


def place_all(store: Store, *, batch: int) -> tuple[int, float]:
    """Drain the queue with ``place_batch`` (the shipped policy, a no-op local provider): (placed, seconds)."""
    policy = parse_policy(json.loads((REPO / "policies" / "default.json").read_text(encoding="utf-8")))
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={"local": NoopProvider(name="local", record_calls=False)},
        callback_base="http://127.0.0.1:8080",
        scheduler_id="bench",
        batch_size=batch,
    )
    started = time.perf_counter()
    placed = 0
    while claimed := scheduler.place_batch():
        placed += claimed
    return placed, time.perf_counter() - started


def bench_placement(database_url: str, *, queued: int, batch: int) -> dict[str, Any]:
    engine = make_engine(database_url)
    upgrade(engine=engine)
    store = Store(engine)
    started = time.perf_counter()
    fill_queue(store, queued)
    fill_s = time.perf_counter() - started
    placed, elapsed = place_all(store, batch=batch)
    engine.dispose()
    return {
        "queued": queued,
        "placed": placed,
        "per_s": placed / elapsed,
        "seconds": elapsed,
        "fill_per_s": queued / fill_s,
    }


def markdown(results: dict[str, Any]) -> str:
    rate = results["rate"]
    lines = [
        f"Measured {results['date']} on {os.cpu_count()} CPU cores (load generator on the same cores), Python "
        f"{sys.version.split()[0]}, one uvicorn worker (uvloop, httptools); {results['requests']} submits per run "
        f"over {results['concurrency']} connections; {results['queued']} queued tasks placed in batches of "
        f"{results['batch']}. Command: `make bench-api`.",
        "",
        f"| database | most submits/s (closed loop) | p50 ms | p99 ms | p50 / p99 ms at {rate:.0f}/s offered "
        "| /healthz/s (baseline) | submits / healthz | placements/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["databases"].items():
        sub, paced, base, place = row["submit"], row["paced"], row["healthz"], row["placement"]
        lines.append(
            f"| {name} | **{sub['per_s']:.0f}** | {sub['p50_ms']:.1f} | {sub['p99_ms']:.1f} "
            f"| {paced['p50_ms']:.1f} / **{paced['p99_ms']:.1f}** | {base['per_s']:.0f} "
            f"| {sub['per_s'] / base['per_s']:.2f} | **{place['per_s']:.0f}** |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered submits/s for the open-loop run")
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "queued": args.queued,
        "batch": args.batch,
        "databases": {},
    }
    for name in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="fusionplane-bench-db-") as tmp:
            if name == "sqlite":
                urls = [f"sqlite:///{tmp}/submit.db", f"sqlite:///{tmp}/place.db"]
                row = {
                    **bench_submit(urls[0], requests=args.requests, concurrency=args.concurrency, rate=args.rate),
                    "placement": bench_placement(urls[1], queued=args.queued, batch=args.batch),
                }
            else:
                with postgres() as url:
                    submit = bench_submit(url, requests=args.requests, concurrency=args.concurrency, rate=args.rate)
                with postgres() as url:
                    row = {**submit, "placement": bench_placement(url, queued=args.queued, batch=args.batch)}
        results["databases"][name] = row
        print(name, json.dumps(row), flush=True)
    table = markdown(results)
    print(table)
    if not args.no_write:
        write_section(
            "bench-api",
            table,
            heading="## Control plane (`make bench-api`)\n\nTargets from the control-plane issue on a 2-core machine: "
            "at least 1,000 submits/s with p99 under 50 ms, and at least 1,000 placements/s.\n\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
