"""Webhooks: deliveries/s to a loopback receiver, and what the outbox adds to a task's path through the scheduler.

Run with ``make bench-webhooks`` (or ``python -m bench.webhooks``), on SQLite.

1. **Deliveries/s.** ``--events`` cancelled tasks with a notify URL (one
   outbox row each) are delivered by one :class:`WebhookDeliverer` (8
   threads, the shipped default) to a receiver on 127.0.0.1 that answers
   200 at once: claim, sign, POST, record, for every event.
2. **Cost per task.** ``--queued`` tasks are placed (``place_batch``, the
   no-op provider, the default policy) and then all succeed in one
   ``apply_outcomes`` pass, once without a notify URL and once with one (the
   outcome then writes its outbox row in the same transaction); fresh
   databases, alternating, in the same process, ``--rounds`` times. The
   ratio of the medians is what webhooks cost the scheduler.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.api import place_all
from bench.report import machine, write_section
from controlplane.config import WebhookDeliverySettings
from controlplane.domain import AttemptState, DataSensitivity, TaskKind, TaskSpec, TaskState
from controlplane.domain.webhooks import parse_secret
from controlplane.metrics import Metrics
from controlplane.scheduler.webhook_sender import WebhookSender
from controlplane.scheduler.webhooks import WebhookDeliverer
from controlplane.store import NewTask, Outcome, Store, list_deliveries, make_engine, upgrade
from faceswap.netguard import AllowedHosts

HOST = "receiver.bench"
SECRET = parse_secret("whsec_" + base64.b64encode(b"b" * 32).decode())


class _Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a load balancer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def receiver() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _spec(i: int, notify_url: str | None) -> TaskSpec:
    return TaskSpec(
        tenant="bench",
        kind=TaskKind.VIDEO,
        source_uri="s3://f/face.png",
        target_uri=f"s3://m/{i}.mp4",
        output_uri=f"s3://o/{i}.mp4",
        data_sensitivity=DataSensitivity.PUBLIC,
        notify_url=notify_url,
    )


def _fill(store: Store, count: int, notify_url: str | None) -> None:
    for first in range(0, count, 1000):
        store.create_tasks(
            [NewTask(spec=_spec(i, notify_url), request_hash=str(i)) for i in range(first, min(first + 1000, count))]
        )


def _task_ids(store: Store) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = store.list_tasks(limit=1000, cursor=cursor)
        ids += [task.id for task in page]
        if cursor is None:
            return ids


def deliveries_per_s(url: str, *, events: int, port: int) -> float:
    """Events delivered per second by one deliverer, from a full outbox to an empty one."""
    engine = make_engine(url)
    upgrade(engine=engine)
    store = Store(engine)
    _fill(store, events, f"http://{HOST}:{port}/hook")
    for task_id in _task_ids(store):
        store.transition_task(task_id, wanted=TaskState.CANCELLED, actor="bench")
    settings = WebhookDeliverySettings()
    sender = WebhookSender(
        allowed=AllowedHosts.parse([f"{HOST}:{port}"]),
        timeout_s=settings.timeout_s,
        max_response_bytes=settings.max_response_bytes,
        resolver=lambda _host, _port: [ipaddress.ip_address("127.0.0.1")],
    )
    hooks = WebhookDeliverer(
        store, settings=settings, secrets_of=lambda _t: (SECRET,), sender=sender, metrics=Metrics.create(), owner="b"
    )
    started = time.perf_counter()
    delivered = 0
    while made := hooks.deliver_due(max_seconds=60.0):
        delivered += made
    elapsed = time.perf_counter() - started
    hooks.close()
    left = [d for d in list_deliveries(store, limit=events) if d.state != "delivered"]
    engine.dispose()
    if delivered != events or left:
        raise RuntimeError(f"delivered {delivered} of {events}; {len(left)} not delivered")
    return delivered / elapsed


def tasks_per_s(url: str, *, queued: int, batch: int, notify_url: str | None) -> tuple[float, float]:
    """(placements/s, outcomes/s): ``queued`` tasks placed, then all succeeded in one apply_outcomes pass."""
    engine = make_engine(url)
    upgrade(engine=engine)
    store = Store(engine)
    _fill(store, queued, notify_url)
    placed, placing = place_all(store, batch=batch)
    live = store.live_attempts(limit=queued)
    outcomes = [
        Outcome(attempt_id=a.id, attempt_state=AttemptState.SUCCEEDED, task_state=TaskState.SUCCEEDED) for a in live
    ]
    started = time.perf_counter()
    store.apply_outcomes(outcomes, actor="bench")
    finishing = time.perf_counter() - started
    told = len(list_deliveries(store, limit=queued + 1))
    engine.dispose()
    if placed != queued or len(live) != queued or told != (queued if notify_url else 0):
        raise RuntimeError(f"placed {placed}, live {len(live)}, outbox rows {told} of {queued}")
    return placed / placing, queued / finishing


def run(*, events: int, queued: int, batch: int, rounds: int) -> dict[str, Any]:
    delivered: list[float] = []
    plain: list[tuple[float, float]] = []
    told: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-webhooks-") as tmp, receiver() as port:
        for n in range(rounds):
            delivered.append(deliveries_per_s(f"sqlite:///{tmp}/deliver{n}.db", events=events, port=port))
            plain.append(tasks_per_s(f"sqlite:///{tmp}/plain{n}.db", queued=queued, batch=batch, notify_url=None))
            url = f"https://hooks.example.com/{n}"
            told.append(tasks_per_s(f"sqlite:///{tmp}/told{n}.db", queued=queued, batch=batch, notify_url=url))
    place_plain = statistics.median(p for p, _ in plain)
    place_told = statistics.median(p for p, _ in told)
    finish_plain = statistics.median(f for _, f in plain)
    finish_told = statistics.median(f for _, f in told)
    return {
        "deliveries_per_s": statistics.median(delivered),
        "runs_deliveries": [round(v) for v in delivered],
        "placements_per_s": {"without": place_plain, "with": place_told, "ratio": place_told / place_plain},
        "outcomes_per_s": {"without": finish_plain, "with": finish_told, "ratio": finish_told / finish_plain},
        "added_ms_per_task": 1000 * ((1 / place_told + 1 / finish_told) - (1 / place_plain + 1 / finish_plain)),
    }


def markdown(results: dict[str, Any]) -> str:
    place, finish = results["placements_per_s"], results["outcomes_per_s"]
    return "\n".join(
        [
            f"Measured {results['date']} on {results['machine']}, Python {results['python']}, SQLite: "
            f"`make bench-webhooks` ({results['events']:,} events; {results['queued']:,} tasks per run, batch "
            f"{results['batch']}; {results['rounds']} runs each, medians).",
            "",
            "| measure | without webhooks | with webhooks | with / without |",
            "|---|---|---|---|",
            f"| deliveries/s to a loopback receiver (runs {', '.join(map(str, results['runs_deliveries']))}) "
            f"| | **{results['deliveries_per_s']:,.0f}** | |",
            f"| placements/s (`place_batch`) | {place['without']:,.0f} | {place['with']:,.0f} | {place['ratio']:.2f} |",
            f"| outcomes/s (`apply_outcomes`, all succeed) | {finish['without']:,.0f} | {finish['with']:,.0f} "
            f"| {finish['ratio']:.2f} |",
            f"| added scheduler time per task | | {results['added_ms_per_task']:+.3f} ms | |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--queued", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results = run(events=args.events, queued=args.queued, batch=args.batch, rounds=args.rounds)
    results.update(
        date=date.today().isoformat(),
        machine=machine(),
        python=platform.python_version(),
        events=args.events,
        queued=args.queued,
        batch=args.batch,
        rounds=args.rounds,
    )
    table = markdown(results)
    print(table)
    if not args.no_write:
        write_section(
            "bench-webhooks",
            table,
            heading="## Webhooks (`make bench-webhooks`)\n\n"
            "Deliveries/s, and what writing the outbox with each outcome costs the scheduler.\n\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
