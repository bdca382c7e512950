"""The warm worker's socket: only in a private directory of ours, never trusted elsewhere."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from controlplane.worker.warm import WarmSocketError, check_socket_dir, run_via
from tests.support.warm_worker import serve_warm_worker


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701, 0o777])
def test_the_daemon_refuses_a_directory_others_can_reach(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "warm"
    directory.mkdir()
    directory.chmod(mode)
    out = serve_warm_worker(directory / "worker.sock", idle_exit_s=0)
    assert out.returncode == 2, out.stderr
    assert json.loads(out.stderr.splitlines()[-1])["event"] == "warm_worker_refused"
    assert not (directory / "worker.sock").exists()


def test_a_symlinked_or_missing_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(WarmSocketError, match="not a directory"):
        check_socket_dir(tmp_path / "link" / "worker.sock")
    with pytest.raises(WarmSocketError):
        check_socket_dir(tmp_path / "missing" / "worker.sock")
    check_socket_dir(real / "worker.sock")  # ours and 0700: fine


def test_a_file_in_place_of_the_socket_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "warm"
    directory.mkdir(mode=0o700)
    (directory / "worker.sock").write_text("not a socket")
    out = serve_warm_worker(directory / "worker.sock", idle_exit_s=0)
    assert out.returncode == 2, out.stderr
    assert "not a socket" in out.stderr


def test_the_client_never_talks_to_a_socket_in_a_loose_directory(tmp_path: Path) -> None:
    directory = tmp_path / "warm"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    # None: the client runs the attempt itself rather than trust whoever listens there
    assert run_via(directory / "worker.sock", tmp_path / "spec.json", stop=threading.Event()) is None
