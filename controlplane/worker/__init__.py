"""The in-container agent: read the worker spec, run the face swap, report back."""

from controlplane.worker.agent import run_worker
from controlplane.worker.spec import WorkerSpec, load_spec

__all__ = ["WorkerSpec", "load_spec", "run_worker"]
