"""The in-container agent: read the worker spec, run the face swap, report back, exit with a documented code.

``spec`` reads the spec file (the model is the domain's ``WorkerSpec``) and
turns it into the core's options, the tenant's storage grant and the fetch
rules; ``agent`` runs one attempt through ``faceswap.run_swap`` (a hedged
attempt first waits for the control plane's go) and maps every ending to an
exit code of ``controlplane.domain.exit_codes``; ``callbacks`` sends the
heartbeats, progress, completion and failure on the attempt's own token.
docs/worker.md is the reference.
"""

from controlplane.worker.agent import run_worker
from controlplane.worker.spec import WorkerSpec, load_spec

__all__ = ["WorkerSpec", "load_spec", "run_worker"]
