"""The local provider: the contract suite, plus real processes, re-adoption and the worker itself."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from controlplane.domain import InsufficientCapacity, InvalidSpec
from providers.base import BackendState, BackendStatus, Provider
from providers.local import LocalProvider
from tests.conftest import REPO
from tests.contract.provider_contract import TARGET, ProviderContract, launch_request
from tests.support.no_metadata import subprocess_env

# a worker that runs until it is stopped (extra args, "--spec PATH", land in $0 and $1)
SLEEPER = ["sh", "-c", "exec sleep 60"]


def _wait_final(provider: LocalProvider, attempt_id: str, timeout: float = 60.0) -> BackendStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = provider.status(attempt_id)
        if status.state.is_final or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def _ps() -> list[tuple[int, int, str, str]]:
    """(pid, pgid, state, args) of every process, from ps (-ww: never truncate the args)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        pid, pgid, state, *args = line.split(None, 3)
        rows.append((int(pid), int(pgid), state, args[0] if args else ""))
    return rows


def _processes_of(directory: Path) -> list[tuple[int, int, str]]:
    """(pid, pgid, args) of the live processes in every process group where one names ``directory``."""
    rows = [row for row in _ps() if not row[2].startswith("Z")]
    groups = {pgid for _, pgid, _, args in rows if str(directory) in args}
    return [(pid, pgid, args) for pid, pgid, _, args in rows if pgid in groups]


@pytest.fixture
def make_local(tmp_path: Path) -> Iterator[object]:
    """Build LocalProviders on tmp_path/state; every attempt is cancelled at the end."""
    made: list[LocalProvider] = []

    def make(slots: int = 2, command: list[str] | None = None, term_grace_seconds: float = 5.0) -> LocalProvider:
        provider = LocalProvider(
            tmp_path / "state", slots, SLEEPER if command is None else command, term_grace_seconds=term_grace_seconds
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        for owned in provider.list_owned():
            provider.cancel(owned.attempt_id)


class TestLocalProviderContract(ProviderContract):
    def make_provider(self, tmp_path: Path) -> Provider:
        return LocalProvider(tmp_path / "state", 2, SLEEPER, term_grace_seconds=5.0)

    def resources_of(self, provider: Provider, attempt_id: str) -> int:
        assert isinstance(provider, LocalProvider)
        return len({pgid for _, pgid, _ in _processes_of(provider.state_dir / attempt_id)})


def test_spec_file_is_private(make_local) -> None:
    provider = make_local()
    provider.launch(launch_request("att-mode", callback={"url": "http://127.0.0.1:9/v1/attempts/x", "token": "s3"}))
    spec = provider.state_dir / "att-mode" / "spec.json"
    assert stat.S_IMODE(spec.stat().st_mode) == 0o600
    assert "s3" in spec.read_text()  # the token is there, so the mode matters
    assert stat.S_IMODE((provider.state_dir / "att-mode").stat().st_mode) == 0o700


def test_capacity_counts_running_attempts_and_the_slot_limit_refuses(make_local) -> None:
    provider = make_local(slots=2)
    assert (provider.capacity(TARGET).free, provider.capacity(TARGET).total) == (2, 2)
    provider.launch(launch_request("att-s1"))
    provider.launch(launch_request("att-s2"))
    assert provider.capacity(TARGET).free == 0
    with pytest.raises(InsufficientCapacity):
        provider.launch(launch_request("att-s3"))
    assert not (provider.state_dir / "att-s3").exists()
    # adopting an attempt that already runs needs no slot
    assert provider.launch(launch_request("att-s1")).adopted
    provider.cancel("att-s1")
    assert provider.capacity(TARGET).free == 1
    assert not provider.launch(launch_request("att-s3")).adopted


def test_exit_75_is_preempted_and_the_outcome_is_adopted(make_local) -> None:
    provider = make_local(command=["sh", "-c", "exit 75"])
    provider.launch(launch_request("att-75"))
    status = _wait_final(provider, "att-75")
    assert status.state is BackendState.PREEMPTED
    assert status.exit_code == 75
    assert "EX_TEMPFAIL" in (status.reason or "")
    assert (provider.state_dir / "att-75" / "exit_code").read_text().strip() == "75"
    # a second launch returns the recorded outcome and starts nothing
    assert provider.launch(launch_request("att-75")).adopted
    assert _wait_final(provider, "att-75").state is BackendState.PREEMPTED


@pytest.mark.parametrize(
    ("code", "state", "words"),
    [(0, BackendState.SUCCEEDED, ""), (65, BackendState.FAILED, "EX_DATAERR"), (3, BackendState.FAILED, "crash")],
)
def test_exit_codes_map_to_outcomes(make_local, code: int, state: BackendState, words: str) -> None:
    provider = make_local(command=["sh", "-c", f"exit {code}"])
    provider.launch(launch_request(f"att-exit-{code}"))
    status = _wait_final(provider, f"att-exit-{code}")
    assert status.state is state
    assert status.exit_code == code
    assert words in (status.reason or "")


def test_sigkill_of_the_whole_group_from_outside_is_lost(make_local) -> None:
    provider = make_local()
    provider.launch(launch_request("att-kill"))
    assert provider.status("att-kill").state is BackendState.RUNNING
    pgid = _processes_of(provider.state_dir / "att-kill")[0][1]
    os.killpg(pgid, signal.SIGKILL)  # the OOM killer or a dead host: nobody writes an exit code
    status = _wait_final(provider, "att-kill", timeout=10)
    assert status.state is BackendState.LOST
    assert not (provider.state_dir / "att-kill" / "exit_code").exists()
    # it is never started a second time
    assert provider.launch(launch_request("att-kill")).adopted
    assert _processes_of(provider.state_dir / "att-kill") == []


def test_a_new_provider_readopts_a_running_attempt(make_local) -> None:
    first = make_local()
    started = first.launch(launch_request("att-adopt"))
    del first  # the control plane restarts: a new provider on the same state dir
    second = make_local()
    assert second.status("att-adopt").state is BackendState.RUNNING
    again = second.launch(launch_request("att-adopt"))
    assert again.adopted
    assert again.backend_ref == started.backend_ref
    rows = _processes_of(second.state_dir / "att-adopt")
    assert len({pgid for _, pgid, _ in rows}) == 1, rows
    assert sum(args == "sleep 60" for _, _, args in rows) == 1, rows
    assert [o.attempt_id for o in second.list_owned()] == ["att-adopt"]


def test_cancel_kills_the_whole_process_group(make_local) -> None:
    provider = make_local(command=["sh", "-c", "sleep 61 & sleep 62; wait"])
    provider.launch(launch_request("att-group"))
    directory = provider.state_dir / "att-group"
    deadline = time.monotonic() + 5
    sleeps: list[int] = []
    while len(sleeps) < 2 and time.monotonic() < deadline:
        sleeps = [pid for pid, _, args in _processes_of(directory) if args in ("sleep 61", "sleep 62")]
        time.sleep(0.02)
    assert len(sleeps) == 2, _processes_of(directory)
    provider.cancel("att-group")
    live = {pid for pid, _, state, _ in _ps() if not state.startswith("Z")}
    assert not live & set(sleeps)
    assert _processes_of(directory) == []
    status = provider.status("att-group")
    assert status.state is BackendState.FAILED
    assert "cancelled" in (status.reason or "")
    provider.cancel("att-group")  # already gone: success


def test_cancel_escalates_to_sigkill_after_the_grace_period(make_local) -> None:
    provider = make_local(command=["sh", "-c", "trap '' TERM; sleep 63 & wait; sleep 63"], term_grace_seconds=0.3)
    provider.launch(launch_request("att-stubborn"))
    time.sleep(0.2)
    started = time.monotonic()
    provider.cancel("att-stubborn")
    assert time.monotonic() - started < 5
    assert _processes_of(provider.state_dir / "att-stubborn") == []
    assert provider.status("att-stubborn").state is BackendState.FAILED


def test_bad_attempt_ids_and_specs_are_refused(make_local) -> None:
    provider = make_local()
    with pytest.raises(InvalidSpec):
        provider.launch(launch_request("../escape"))
    with pytest.raises(InvalidSpec, match="options"):
        provider.launch(launch_request("att-badspec", options={"swapper": "nope"}))
    assert provider.status("../escape").state is BackendState.LOST
    provider.cancel("../escape")
    with pytest.raises(FileNotFoundError):
        provider.logs("att-never")
    assert list(provider.state_dir.iterdir()) == []


@pytest.mark.slow
def test_a_real_worker_run_succeeds_end_to_end(
    tmp_path: Path, astronaut_path: Path, source_face_path: Path, astronaut: np.ndarray
) -> None:
    env = subprocess_env(PYTHONPATH=str(REPO))
    provider = LocalProvider(tmp_path / "state", 1, term_grace_seconds=5.0, env=env)
    assert provider.worker_command[:3] == [sys.executable, "-m", "controlplane.cli"]
    output = tmp_path / "out" / "swapped.png"
    output.parent.mkdir()
    request = launch_request(
        "att-real",
        task_id="task-real",
        source=str(source_face_path),
        target=str(astronaut_path),
        output=str(output),
        options={"execution_provider": "cpu"},
    )
    try:
        provider.launch(request)
        status = _wait_final(provider, "att-real", timeout=120)
    finally:
        provider.cancel("att-real")
    log = provider.logs("att-real").read_text()
    assert status.state is BackendState.SUCCEEDED, (status, log[-3000:])
    assert status.exit_code == 0
    assert "attempt_succeeded" in log
    swapped = cv2.imread(str(output))
    assert swapped is not None
    assert swapped.shape == astronaut.shape
    assert np.abs(swapped.astype(int) - astronaut.astype(int)).mean() > 0.1


def test_a_relative_state_dir_still_records_the_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fusionctl serve`` passes ``var/local-provider``; the worker runs with its attempt folder as cwd."""
    monkeypatch.chdir(tmp_path)
    provider = LocalProvider(Path("var/local-provider"), slots=1, worker_command=["sh", "-c", "echo hello; exit 0"])
    provider.launch(launch_request("att_relative"))
    deadline = time.monotonic() + 10
    while provider.status("att_relative").state == BackendState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert provider.status("att_relative").state == BackendState.SUCCEEDED
    assert "hello" in provider.logs("att_relative").read_text(encoding="utf-8")
