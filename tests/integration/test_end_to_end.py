"""The first path a user walks: ``fusionctl serve`` on embedded defaults, submit the astronaut
over REST, the local provider runs the worker, the task succeeds, the output has a new face,
and the receipt says the local target was chosen and why."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import REPO
from tests.support.asgi_server import free_port
from tests.support.no_metadata import subprocess_env

pytestmark = pytest.mark.slow


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(base URL, dev token, working directory) of a real ``fusionctl serve``."""
    port = free_port()
    env = subprocess_env(FUSIONPLANE_POLICY_FILE=str(REPO / "policies" / "default.json"))
    env.pop("FUSIONPLANE_DATABASE_URL", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the control plane did not become ready"
            time.sleep(0.1)
        token = (tmp_path / "var" / "dev-token").read_text(encoding="utf-8").strip()
        yield url, token, tmp_path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_final(client: httpx.Client, task_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["state"] in ("succeeded", "failed", "cancelled"):
            return task  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_submit_the_astronaut_and_get_a_swapped_face_back(
    control_plane: tuple[str, str, Path], astronaut_path: Path, source_face_path: Path, astronaut: np.ndarray
) -> None:
    url, token, workdir = control_plane
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        uploads = {}
        for name, path in (("face.png", source_face_path), ("astronaut.png", astronaut_path)):
            response = client.put(f"/v1/uploads/{name}", content=path.read_bytes())
            assert response.status_code == 201, response.text
            uploads[name] = response.json()["uri"]
        response = client.post("/v1/tasks", json={"source": uploads["face.png"], "target": uploads["astronaut.png"]})
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]
        assert response.headers["location"] == f"/v1/tasks/{task_id}"

        task = _wait_final(client, task_id)
        assert task["state"] == "succeeded", task
        assert task["target"] == "local"
        assert [a["state"] for a in task["attempts"]] == ["succeeded"]

        output = client.get(f"/v1/tasks/{task_id}/output")
        assert output.status_code == 200
        # written by the local worker under serve's umask: this user's only, in the tenant's folder
        written = Path(task["output_uri"])
        assert written.is_relative_to(workdir / "var" / "outputs" / "dev")
        assert written.stat().st_mode & 0o777 == 0o600
        swapped = cv2.imdecode(np.frombuffer(output.content, np.uint8), cv2.IMREAD_COLOR)
        assert swapped.shape == astronaut.shape
        changed = np.abs(swapped.astype(np.int16) - astronaut.astype(np.int16)).max(axis=2) > 12
        ys, xs = np.nonzero(changed)
        assert len(xs) > 500, "the face did not change"
        # the astronaut's face box is about x 179-270, y 63-174: changes stay around it
        assert xs.min() > 120
        assert xs.max() < 330
        assert ys.max() < 240

        receipt = client.get(f"/v1/tasks/{task_id}/decision").json()
        (decision,) = receipt["decisions"]
        assert [c["target"] for c in decision["candidates"]] == ["local"]
        assert decision["candidates"][0]["reasons"], "a candidate says why it is there"
        assert decision["policy_version"]
        assert any("default" in line for line in decision["trace"])
        events = client.get(f"/v1/tasks/{task_id}/events").json()["events"]
        states = [e["to_state"] for e in events if e["kind"] == "task.transition"]
        assert states[-1] == "succeeded"
        assert "running" in states
    assert (workdir / "var" / "fusionplane.db").exists()
