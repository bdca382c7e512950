"""The local provider's warm worker: real ``worker serve`` daemons and real ``worker run --via`` clients."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.base import BackendState, BackendStatus
from providers.local import LocalProvider
from tests.conftest import REPO
from tests.contract.provider_contract import launch_request
from tests.support.no_metadata import subprocess_env
from tests.support.warm_worker import serve_warm_worker

pytestmark = pytest.mark.slow

#: a hedged attempt whose control plane never answers: it waits for its go (up to 60 s) until stopped
WAITING = {"callback": {"url": "http://127.0.0.1:9/v1/attempts/a", "token": "tok-secret-123", "wait_for_go": True}}


def _wait_final(provider: LocalProvider, attempt_id: str, timeout: float = 120.0) -> BackendStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = provider.status(attempt_id)
        if status.state.is_final or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def _events(path: Path) -> list[dict[str, object]]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _wait_event(path: Path, event: str, timeout: float = 60.0) -> dict[str, object]:
    """The first log line of ``event`` in ``path`` (the log is the only thing a test can await here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for entry in _events(path):
                if entry.get("event") == event:
                    return entry
        time.sleep(0.05)
    raise AssertionError(f"no {event} in {path}: {path.read_text() if path.exists() else 'no log'}")


def _daemon_pids(provider: LocalProvider) -> list[int]:
    log = provider.state_dir / ".warm" / "worker.log"
    return [int(str(e["pid"])) for e in _events(log) if e.get("event") == "warm_worker_started"] if log.exists() else []


@pytest.fixture
def warm_provider(tmp_path: Path) -> Iterator[LocalProvider]:
    env = subprocess_env(PYTHONPATH=str(REPO))
    provider = LocalProvider(tmp_path / "state", 2, term_grace_seconds=20.0, env=env, warm=True, warm_idle_exit_s=60)
    yield provider
    for owned in provider.list_owned():
        provider.cancel(owned.attempt_id)
    for pid in _daemon_pids(provider):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _image_request(attempt_id: str, tmp_path: Path, source: Path, target: Path) -> object:
    output = tmp_path / "out" / f"{attempt_id}.png"
    output.parent.mkdir(exist_ok=True)
    return launch_request(
        attempt_id,
        task_id=f"task-{attempt_id}",
        source=str(source),
        target=str(target),
        output=str(output),
        options={"execution_provider": "cpu"},
    )


def test_two_attempts_run_in_one_warm_daemon(
    warm_provider: LocalProvider, tmp_path: Path, astronaut_path: Path, source_face_path: Path
) -> None:
    provider = warm_provider
    for attempt_id in ("att-w1", "att-w2"):
        provider.launch(_image_request(attempt_id, tmp_path, source_face_path, astronaut_path))  # type: ignore[arg-type]
        status = _wait_final(provider, attempt_id)
        log = provider.logs(attempt_id).read_text()
        assert status.state is BackendState.SUCCEEDED, (status, log[-3000:])
        assert (tmp_path / "out" / f"{attempt_id}.png").exists()
    started = [_wait_event(provider.logs(a), "warm_attempt_started") for a in ("att-w1", "att-w2")]
    assert started[0]["worker_pid"] == started[1]["worker_pid"]
    assert _daemon_pids(provider) == [started[0]["worker_pid"]]
    for attempt_id in ("att-w1", "att-w2"):
        succeeded = _wait_event(provider.logs(attempt_id), "attempt_succeeded")
        assert succeeded["attempt_id"] == attempt_id  # the attempt's lines carry its ids, as in worker run
    daemon_log = (provider.state_dir / ".warm" / "worker.log").read_text()
    assert daemon_log.count('"warm_attempt_ended"') == 2
    assert os.stat(provider.state_dir / ".warm" / "worker.sock").st_mode & 0o777 == 0o600
    assert [o.attempt_id for o in provider.list_owned()] == ["att-w1", "att-w2"]  # .warm is no attempt


def test_cancel_of_a_warm_attempt_ends_it_as_a_cold_cancel_does(warm_provider: LocalProvider) -> None:
    provider = warm_provider
    provider.launch(launch_request("att-wc", **WAITING))
    _wait_event(provider.logs("att-wc"), "warm_attempt_started")
    provider.cancel("att-wc")
    status = provider.status("att-wc")
    assert status.state is BackendState.FAILED
    assert status.exit_code == 75
    assert status.reason is not None
    assert status.reason.startswith("cancelled; worker exited 75")
    daemon_log = (provider.state_dir / ".warm" / "worker.log").read_text()
    assert '"exit_code":75' in daemon_log
    assert "tok-secret-123" not in daemon_log + provider.logs("att-wc").read_text()


def test_a_daemon_killed_mid_attempt_ends_it_70_and_the_next_launch_starts_another(
    warm_provider: LocalProvider,
) -> None:
    provider = warm_provider
    provider.launch(launch_request("att-wk", **WAITING))
    pid = int(str(_wait_event(provider.logs("att-wk"), "warm_attempt_started")["worker_pid"]))
    os.kill(pid, signal.SIGKILL)
    status = _wait_final(provider, "att-wk", timeout=30)
    assert status.state is BackendState.FAILED
    assert status.exit_code == 70, status
    assert "warm_worker_lost" in provider.logs("att-wk").read_text()

    provider.launch(launch_request("att-wk2", **WAITING))
    second = int(str(_wait_event(provider.logs("att-wk2"), "warm_attempt_started")["worker_pid"]))
    assert second != pid
    provider.cancel("att-wk2")
    assert provider.status("att-wk2").exit_code == 75


def test_the_client_runs_the_attempt_itself_without_a_daemon(tmp_path: Path) -> None:
    sock_dir = tmp_path / "warm"
    sock_dir.mkdir(mode=0o700)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"version": 1, "task_id": "t", "attempt_id": "a", "source": "/no/s.png"}))
    out = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "worker", "run", "--spec", str(spec), "--via", str(sock_dir / "s")],
        env=subprocess_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    events = [json.loads(line).get("event") for line in out.stderr.splitlines() if line.startswith("{")]
    # the in-process path read the (invalid) spec itself, as worker run --spec does
    assert events == ["warm_worker_unavailable", "spec_invalid"], out.stderr
    assert out.returncode == 65


def test_warm_mode_is_off_by_default(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "state", 1)
    assert provider.warm is None
    with pytest.raises(ValueError, match="worker run"):
        LocalProvider(tmp_path / "state", 1, ["sh", "-c", "sleep 1"], warm=True)


def test_the_daemon_exits_when_idle_and_removes_its_socket(tmp_path: Path) -> None:
    sock_dir = tmp_path / "warm"
    sock_dir.mkdir(mode=0o700)
    socket_path = sock_dir / "worker.sock"
    out = serve_warm_worker(socket_path, idle_exit_s=0.3)
    events = [json.loads(line).get("event") for line in out.stderr.splitlines() if line.startswith("{")]
    assert events == ["warm_worker_started", "warm_worker_idle_exit"], out.stderr
    assert out.returncode == 0
    assert not socket_path.exists()
