"""No usage telemetry leaves a worker: ONNX Runtime's uploader is off in every process that runs a model.

ONNX Runtime's official Linux builds (1.29 and later) start a 1DS telemetry
uploader to Microsoft when the library is initialised, write a session file
(``.ses``) to the temporary directory and a device id under the home
directory, unless ``ORT_DISABLE_TELEMETRY=1`` is set before that. A worker
runs tenants' faces on private targets; nothing about its work may leave
the node. ``faceswap`` sets the switch before it imports onnxruntime, and
overrides an inherited ``0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.no_metadata import NO_METADATA_ENV

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import json, os, pathlib
from faceswap.models import ModelStore
from faceswap.runtime import ExecutionConfig, create_session
path = ModelStore(pathlib.Path(os.environ["MODEL_DIR"])).verified_path("yunet_2023mar", role="detector")
create_session(path, ExecutionConfig(provider="cpu", cpu_threads=1))
print(json.dumps({"ORT_DISABLE_TELEMETRY": os.environ.get("ORT_DISABLE_TELEMETRY")}))
"""


@pytest.mark.parametrize("inherited", [None, "0", "false"], ids=["unset", "zero", "false"])
def test_a_worker_process_running_a_model_leaves_no_telemetry_trace(tmp_path: Path, inherited: str | None) -> None:
    scratch, home, models = tmp_path / "tmp", tmp_path / "home", tmp_path / "models"
    for folder in (scratch, home, models):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(TMPDIR=str(scratch), HOME=str(home), MODEL_DIR=str(models), PYTHONPATH=str(REPO))
    env.update({k: v for k, v in NO_METADATA_ENV.items() if k != "ORT_DISABLE_TELEMETRY"})
    if inherited is not None:
        env["ORT_DISABLE_TELEMETRY"] = inherited
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"ORT_DISABLE_TELEMETRY": "1"}
    # the session file and the device id are what the uploader leaves behind when it starts
    assert sorted(p.name for p in scratch.rglob("*")) == []
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
