"""The environment a local worker starts with: explicit and minimal, never the control plane's own.

``fusionctl serve`` holds the control plane's secrets in its environment
(``FUSIONPLANE_DATABASE_URL``, ``CONSUL_HTTP_TOKEN``, the cloud SDKs'
``AWS_SECRET_ACCESS_KEY`` / ``AZURE_CLIENT_SECRET`` for launching VMs). A
worker runs a tenant's job on a tenant's input, so it gets only:

- how to run: ``PATH``, ``LANG``/``LC_ALL``/``TZ``, ``TMPDIR``,
  ``PYTHONPATH``, ``LD_LIBRARY_PATH``, ``CUDA_VISIBLE_DEVICES``, the TLS
  trust settings (:data:`RUNTIME`), when set;
- the worker's own settings (:data:`WORKER_SETTINGS`), when set; the model
  and TensorRT cache folders always, resolved against the control plane's
  home, because the worker's own ``HOME`` is elsewhere;
- ``HOME`` = the attempt's own folder (0700), so no SDK finds the operator's
  ``~/.aws``, ``~/.azure``, ``~/.kube`` or ``~/.docker`` by its default path;
- ``PYTHONUNBUFFERED=1``, ``FUSIONPLANE_WORKER_SPEC``;
- ``AWS_EC2_METADATA_DISABLED=true``, so boto3 never asks
  169.254.169.254 for credentials or a region (unless the operator passes
  that variable explicitly);
- the names the operator lists in ``FUSIONPLANE_LOCAL_WORKER_ENV``
  (comma-separated, e.g. ``AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID,...`` for a
  worker that reads ``s3://``), as they are. The control plane's own
  secrets (:data:`NEVER_PASSED`) are refused even there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL_DIR",
    "DEFAULT_TRT_CACHE",
    "NEVER_PASSED",
    "PASS_ENV_VARIABLE",
    "RUNTIME",
    "WORKER_SETTINGS",
    "parse_pass_env",
    "worker_environment",
]

#: the setting that names extra variables to pass to local workers
PASS_ENV_VARIABLE = "FUSIONPLANE_LOCAL_WORKER_ENV"
#: passed when set: what a process needs to run here, none of them a credential
RUNTIME = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
#: the worker's own settings (docs/worker.md), passed when set
WORKER_SETTINGS = (
    "FUSIONPLANE_MODEL_DIR",
    "FUSIONPLANE_TRT_CACHE",
    "FUSIONPLANE_FFMPEG",
    "FUSIONPLANE_FFPROBE",
    "FUSIONPLANE_STOP_GRACE_S",
    "FUSIONPLANE_CUDNN_ALGO_SEARCH",
)
#: the control plane's own secrets: refused in FUSIONPLANE_LOCAL_WORKER_ENV, never in a worker
NEVER_PASSED = frozenset({"FUSIONPLANE_DATABASE_URL", "FUSIONPLANE_TOKEN", "CONSUL_HTTP_TOKEN"})
#: the worker's defaults (faceswap/models.py, faceswap/runtime.py), resolved here against the control
#: plane's home: the worker's HOME is its attempt folder, where a cache would be empty every time
DEFAULT_MODEL_DIR = "~/.cache/fusionplane/models"
DEFAULT_TRT_CACHE = "~/.cache/fusionplane/trt"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_pass_env(value: str) -> tuple[str, ...]:
    """The names in a ``FUSIONPLANE_LOCAL_WORKER_ENV`` value; ``ValueError`` naming the setting for a bad one."""
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        if not _NAME.match(name):
            raise ValueError(f"{PASS_ENV_VARIABLE}: {name!r} is not an environment variable name")
        if name in NEVER_PASSED:
            raise ValueError(f"{PASS_ENV_VARIABLE}: {name} is the control plane's own secret, never a worker's")
        if name not in names:
            names.append(name)
    return tuple(names)


def _expand(path: str, home: str | None) -> str:
    if path == "~" or path.startswith("~/"):
        return str(Path(home or os.path.expanduser("~")) / path[2:])
    return path


def worker_environment(
    parent: Mapping[str, str], *, attempt_dir: Path, spec_path: Path | None, pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """The whole environment of one local worker, picked from ``parent`` (see the module docstring).

    ``spec_path`` ``None``: the warm worker's daemon, which serves many specs (``HOME`` is its own folder).
    """
    env = {name: parent[name] for name in (*RUNTIME, *WORKER_SETTINGS) if parent.get(name)}
    for name in pass_env:
        if name in parent and name not in NEVER_PASSED:
            env[name] = parent[name]
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    home = parent.get("HOME")
    env["FUSIONPLANE_MODEL_DIR"] = _expand(env.get("FUSIONPLANE_MODEL_DIR", DEFAULT_MODEL_DIR), home)
    env["FUSIONPLANE_TRT_CACHE"] = _expand(env.get("FUSIONPLANE_TRT_CACHE", DEFAULT_TRT_CACHE), home)
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    # set last: nothing passed through may point the worker at another home or spec
    env["HOME"] = str(attempt_dir)
    env["PYTHONUNBUFFERED"] = "1"
    if spec_path is not None:
        env["FUSIONPLANE_WORKER_SPEC"] = str(spec_path)
    return env
