"""The worker's side of hedged launches: wait for the go, stop when told the attempt has ended.

A small HTTP server on 127.0.0.1 plays the control plane: it answers each
callback from a script (status and JSON body per call) and records what it
got. The worker runs in-process (``run_worker``); its source does not
exist, so a worker that starts working fails on it with exit 65, while one
that stops before any work exits 75.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain.callbacks import Heartbeat
from controlplane.worker import WorkerSpec, run_worker
from controlplane.worker.callbacks import GO, GO_ENDED, GO_STOPPED, GO_UNDECIDED, Reporter

RUNNING = (200, {"ok": True, "state": "running"})
ENDED = (
    409,
    {"error": {"code": "attempt_ended", "message": "hedge lost to att_b", "field": "attempt_id", "state": "cancelled"}},
)
DOWN = (503, {"error": {"code": "not_ready", "message": "database unreachable", "field": None}})


class ControlPlane(ThreadingHTTPServer):
    """Answers heartbeats from ``heartbeats`` (the last answer repeats) and everything else 200."""

    daemon_threads = True

    def __init__(self, *heartbeats: tuple[int, dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.heartbeats = deque(heartbeats or (RUNNING,))
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/attempts/att_a"

    def answer(self, event: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if event not in ("heartbeat", "progress"):
                return 200, {"ok": True, "state": "failed"}
            return self.heartbeats.popleft() if len(self.heartbeats) > 1 else self.heartbeats[0]

    def received(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for name, body in self.posts if name == event]


class _Handler(BaseHTTPRequestHandler):
    server: ControlPlane

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = self.path.rsplit("/", 1)[-1]
        with self.server.lock:
            self.server.posts.append((event, json.loads(raw or b"{}")))
        status, body = self.server.answer(event)
        reply = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def serve() -> Iterator[list[ControlPlane]]:
    started: list[ControlPlane] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def plane(serve: list[ControlPlane], *heartbeats: tuple[int, dict[str, Any]]) -> ControlPlane:
    server = ControlPlane(*heartbeats)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    serve.append(server)
    return server


def spec(tmp_path: Path, server: ControlPlane, *, hedged: bool) -> WorkerSpec:
    callback: dict[str, Any] = {"url": server.url, "token": "att_secret", "heartbeat_seconds": 1}
    if hedged:
        callback["wait_for_go"] = True
    return WorkerSpec.model_validate(
        {
            "task_id": "tsk_1",
            "attempt_id": "att_a",
            "source": str(tmp_path / "missing-face.png"),
            "target": str(tmp_path / "missing-target.png"),
            "output": str(tmp_path / "out" / "swapped.png"),
            "callback": callback,
        }
    )


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(getattr(r, "event", "")) for r in caplog.records if r.name == "fusionplane.worker"]


@pytest.fixture(autouse=True)
def _worker_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fusionplane.worker")


# --------------------------------------------------------------------------- a hedged worker waits for the go


def test_a_hedged_worker_that_lost_exits_75_without_any_work(
    tmp_path: Path, serve: list[ControlPlane], caplog: pytest.LogCaptureFixture
) -> None:
    server = plane(serve, ENDED)
    stop = threading.Event()
    assert run_worker(spec(tmp_path, server, hedged=True), stop=stop) == 75
    assert "hedge_lost" in events(caplog)
    assert "source_ready" not in events(caplog)
    assert "attempt_failed" not in events(caplog)  # it never touched its (missing) source
    assert server.received("fail") == []  # the attempt is over: nothing to report
    assert len(server.received("heartbeat")) == 1
    assert stop.is_set()
    assert not (tmp_path / "out").exists()


def test_a_hedged_worker_that_won_goes_to_work(
    tmp_path: Path, serve: list[ControlPlane], caplog: pytest.LogCaptureFixture
) -> None:
    server = plane(serve, DOWN, DOWN, RUNNING)  # the control plane hiccups twice, then says go
    assert run_worker(spec(tmp_path, server, hedged=True), stop=threading.Event()) == 65
    assert "hedge_won" in events(caplog)
    assert len(server.received("heartbeat")) >= 3
    (failed,) = server.received("fail")
    assert (failed["exit_code"], failed["field"]) == (65, "source")  # it worked: its missing source failed it


def test_a_hedged_worker_that_cannot_learn_in_time_exits_75(
    tmp_path: Path, serve: list[ControlPlane], caplog: pytest.LogCaptureFixture
) -> None:
    server = plane(serve, DOWN)
    assert run_worker(spec(tmp_path, server, hedged=True), stop=threading.Event(), go_timeout_s=0.3) == 75
    assert "hedge_undecided" in events(caplog)
    (failed,) = server.received("fail")
    assert (failed["kind"], failed["exit_code"]) == ("temporary", 75)
    assert not (tmp_path / "out").exists()


def test_a_hedged_worker_stopped_while_waiting_is_preempted(tmp_path: Path, serve: list[ControlPlane]) -> None:
    server = plane(serve, DOWN)
    stop = threading.Event()
    stop.set()  # SIGTERM before the launch was decided
    assert run_worker(spec(tmp_path, server, hedged=True), stop=stop) == 75
    (failed,) = server.received("fail")
    assert (failed["kind"], failed["exit_code"]) == ("preempted", 75)


def test_wait_for_go_answers(tmp_path: Path, serve: list[ControlPlane]) -> None:
    for answers, verdict in (((RUNNING,), GO), ((ENDED,), GO_ENDED), ((DOWN,), GO_UNDECIDED)):
        server = plane(serve, *answers)
        reporter = Reporter(spec(tmp_path, server, hedged=True).callback)
        try:
            assert reporter.wait_for_go(stop=threading.Event(), timeout_s=0.2, retry_s=0.05) == verdict
        finally:
            reporter.close()
    stopped = threading.Event()
    stopped.set()
    reporter = Reporter(spec(tmp_path, plane(serve, DOWN), hedged=True).callback)
    assert reporter.wait_for_go(stop=stopped, timeout_s=5) == GO_STOPPED
    reporter.close()


# --------------------------------------------------------------------------- any worker stops once its attempt ended


def test_a_worker_told_its_attempt_ended_stops_before_writing(
    tmp_path: Path, serve: list[ControlPlane], caplog: pytest.LogCaptureFixture
) -> None:
    """Not hedged: the first heartbeat's 409 sets the stop event, and the job stops instead of working."""
    server = plane(serve, ENDED)
    stop = threading.Event()
    assert run_worker(spec(tmp_path, server, hedged=False), stop=stop) == 75
    assert stop.is_set()
    assert {"attempt_ended", "attempt_abandoned"} <= set(events(caplog))
    assert server.received("fail") == []
    assert not (tmp_path / "out").exists()


def test_heartbeats_stop_the_work_only_on_attempt_ended(tmp_path: Path, serve: list[ControlPlane]) -> None:
    other_conflict = (409, {"error": {"code": "invalid_state", "message": "no", "field": "state"}})
    for answer, stops in ((RUNNING, False), (other_conflict, False), (DOWN, False), (ENDED, True)):
        server = plane(serve, answer)
        stop = threading.Event()
        reporter = Reporter(spec(tmp_path, server, hedged=False).callback, stop=stop)
        try:
            reporter.post("heartbeat", Heartbeat())
            assert stop.is_set() is stops, answer
            assert (reporter.ended == "cancelled") is stops
        finally:
            reporter.close()


def test_the_heartbeat_thread_ends_with_the_attempt(tmp_path: Path, serve: list[ControlPlane]) -> None:
    server = plane(serve, RUNNING, ENDED)
    stop = threading.Event()
    reporter = Reporter(spec(tmp_path, server, hedged=False).callback, stop=stop)
    reporter.start_heartbeats()
    assert stop.wait(5), "the second heartbeat (409) should have stopped the work"
    beats = len(server.received("heartbeat"))
    assert not stop.wait(1.5) or len(server.received("heartbeat")) == beats  # no heartbeat after the end
    reporter.close()
    assert len(server.received("heartbeat")) == beats == 2
