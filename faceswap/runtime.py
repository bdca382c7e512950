"""ONNX Runtime sessions on TensorRT, CUDA or CPU, with no silent fallback.

ONNX Runtime quietly drops an execution provider it cannot load (missing
libnvinfer, wrong CUDA) and runs the model on the CPU at a hundredth of the
speed. On a paid GPU node that is worse than failing, so the provider is
chosen by a real load check (:mod:`faceswap.gpu_probe`), and every session we
create is checked with ``get_providers()`` against what was asked.

Sessions are created once per process and reused (:func:`create_session`
returns the same warmed session for the same model and settings): a worker
that runs a second job pays no model loading, engine build or warm-up again.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from faceswap.config import WorkerSettings
from faceswap.errors import ExecutionProviderUnavailable, ModelError
from faceswap.gpu_probe import (
    ORT_NAMES,
    ProbeResult,
    ProviderDecision,
    decide,
    pip_library_dirs,
    probe_providers,
)

__all__ = [
    "CUDNN_ALGO_SEARCHES",
    "EXECUTION_PROVIDERS",
    "ExecutionConfig",
    "ProviderDecision",
    "available_execution_providers",
    "choose_execution_provider",
    "clear_provider_cache",
    "clear_session_cache",
    "create_session",
    "provider_probes",
    "resolve_execution_provider",
    "tensorrt_cache_dir",
]

log = logging.getLogger(__name__)

ExecutionProviderName = Literal["auto", "tensorrt", "cuda", "cpu"]
EXECUTION_PROVIDERS: tuple[str, ...] = ("auto", "tensorrt", "cuda", "cpu")
#: cuDNN's ways of picking a convolution algorithm (the CUDA provider's ``cudnn_conv_algo_search``)
CUDNN_ALGO_SEARCHES: tuple[str, ...] = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")

_ORT_NAMES = ORT_NAMES


@dataclass(frozen=True)
class ExecutionConfig:
    """How to run models: which provider, threads, and where TensorRT keeps its caches."""

    provider: str = "auto"
    #: intra-op threads for the CPU provider; 0 lets ONNX Runtime pick (one per core)
    cpu_threads: int = 0
    #: warn instead of failing when the session fell back to a slower provider
    allow_fallback: bool = False
    #: persistent directory for TensorRT engines and timing caches
    trt_cache_root: Path = field(default_factory=lambda: WorkerSettings.from_env().trt_cache)
    trt_fp16: bool = True
    trt_workspace_bytes: int = 2 << 30
    #: the GPU the CUDA and TensorRT providers use
    device_id: int = 0
    #: ``FUSIONPLANE_CUDNN_ALGO_SEARCH``; see :data:`CUDNN_ALGO_SEARCHES` and docs/worker.md
    cudnn_conv_algo_search: str = field(default_factory=lambda: WorkerSettings.from_env().cudnn_conv_algo_search)

    def __post_init__(self) -> None:
        if self.provider not in EXECUTION_PROVIDERS:
            raise ExecutionProviderUnavailable(
                f"unknown execution provider {self.provider!r}; choose one of {', '.join(EXECUTION_PROVIDERS)}",
                field="execution_provider",
            )
        if self.cpu_threads < 0:
            raise ModelError("must be 0 (automatic) or a positive thread count", field="cpu_threads")
        if self.device_id < 0:
            raise ModelError("must be a GPU index, 0 or more", field="device_id")
        if self.cudnn_conv_algo_search not in CUDNN_ALGO_SEARCHES:
            # never passed on to onnxruntime: an unknown value there is an error deep inside session creation
            shown = ascii(self.cudnn_conv_algo_search[:40])
            raise ModelError(
                f"must be one of {', '.join(CUDNN_ALGO_SEARCHES)} (FUSIONPLANE_CUDNN_ALGO_SEARCH), not {shown}",
                field="cudnn_conv_algo_search",
            )


_LOCK = threading.Lock()
_SESSION_LOCK = threading.Lock()
_probes: tuple[ProbeResult, ...] | None = None
_decisions: dict[str, ProviderDecision] = {}
_SESSIONS: dict[tuple[Any, ...], ort.InferenceSession] = {}


def available_execution_providers() -> list[str]:
    """Our short names of the providers this onnxruntime build offers, best first.

    What the build *lists*, not what loads: the GPU wheel lists TensorRT
    without TensorRT installed. :func:`choose_execution_provider` decides by
    loading them.
    """
    present = set(ort.get_available_providers())
    return [name for name in ("tensorrt", "cuda", "cpu") if _ORT_NAMES[name] in present]


def provider_probes() -> tuple[ProbeResult, ...]:
    """The load check of every provider, done once per process."""
    global _probes
    with _LOCK:
        if _probes is None:
            _probes = probe_providers(
                advertised=ort.get_available_providers(),
                capi_dir=Path(ort.__file__).parent / "capi",
                library_dirs=pip_library_dirs(sys.path),
            )
        return _probes


def choose_execution_provider(requested: str) -> ProviderDecision:
    """The provider ``requested`` resolves to here, and why; remembered and logged once per process.

    ``auto`` is TensorRT when its libraries load, else CUDA, else CPU. A named
    provider whose libraries do not load is :class:`ExecutionProviderUnavailable`
    naming what is missing.
    """
    if requested not in EXECUTION_PROVIDERS:
        raise ExecutionProviderUnavailable(
            f"unknown execution provider {requested!r}; choose one of {', '.join(EXECUTION_PROVIDERS)}",
            field="execution_provider",
        )
    with _LOCK:
        known = _decisions.get(requested)
    if known is None:
        known = decide(requested, provider_probes())
        with _LOCK:
            first = _decisions.setdefault(requested, known) is known
        if first:
            log.info(
                "",
                extra={
                    "event": "execution_provider_chosen",
                    "requested": requested,
                    "execution_provider": known.provider,
                    "execution_provider_reason": known.reason,
                },
            )
    if known.provider is None:
        detail = known.reason.removeprefix("requested; ")
        raise ExecutionProviderUnavailable(
            f"execution provider {requested!r} cannot be used here: {detail}; install the libraries it needs "
            "(onnxruntime-gpu with the matching CUDA, cuDNN and TensorRT) or choose --execution-provider cpu",
            field="execution_provider",
        )
    return known


def resolve_execution_provider(requested: str) -> str:
    """Turn ``auto`` into the best provider that loads; reject one that does not."""
    provider = choose_execution_provider(requested).provider
    assert provider is not None  # choose_execution_provider raised otherwise
    return provider


def clear_provider_cache() -> None:
    """Forget the load check and the decisions (tests; a process never needs to)."""
    global _probes
    with _LOCK:
        _probes = None
        _decisions.clear()


def clear_session_cache() -> None:
    """Drop every cached session (tests, or to free GPU memory)."""
    with _SESSION_LOCK:
        _SESSIONS.clear()


def _tensorrt_version() -> str:
    """The version of the libnvinfer the load check loaded: the engines are built by that one."""
    probe = next((p for p in provider_probes() if p.provider == "tensorrt"), None)
    return probe.version if probe is not None and probe.version else "unknown"


def _gpu_identity(device_id: int = 0) -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "unknown-gpu"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", f"--id={device_id}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown-gpu"
    return out or "unknown-gpu"


def tensorrt_cache_dir(root: Path, *, device_id: int = 0) -> Path:
    """Engine cache directory keyed by ORT version, TensorRT version and GPU.

    A TensorRT engine is only valid for the exact TensorRT build and GPU model
    it was built on; keying the directory keeps a shared volume safe when
    nodes of different GPU generations mount it. The TensorRT version is the
    one of the ``libnvinfer`` actually loaded (not a Python package's), the
    GPU ``nvidia-smi``'s name and compute capability of ``device_id``.
    """
    key = f"ort{ort.__version__}-trt{_tensorrt_version()}-{_gpu_identity(device_id)}"
    return root / re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def _cuda_options(config: ExecutionConfig) -> dict[str, str]:
    """The CUDA provider's options, set on purpose rather than left to its defaults.

    ``cudnn_conv_algo_search``: the default EXHAUSTIVE benchmarks every
    convolution algorithm during warm-up, measured at 1.1 s per session on an
    H200 (3.7 s for a process's first); HEURISTIC took 0.11 s and runs as fast
    afterwards; DEFAULT ran 12x slower per frame.
    ``arena_extend_strategy=kSameAsRequested``: the default doubling arena
    reserves far more GPU memory than these small models need.
    ``do_copy_in_default_stream=1``: copies and kernels on one stream, the
    ordering ONNX Runtime's own defaults assume.
    """
    return {
        "device_id": str(config.device_id),
        "cudnn_conv_algo_search": config.cudnn_conv_algo_search,
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "1",
    }


def _provider_list(provider: str, config: ExecutionConfig) -> list[Any]:
    if provider == "tensorrt":
        cache = tensorrt_cache_dir(config.trt_cache_root, device_id=config.device_id)
        cache.mkdir(parents=True, exist_ok=True)
        trt_options = {
            "device_id": config.device_id,
            "trt_fp16_enable": config.trt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_max_workspace_size": config.trt_workspace_bytes,
        }
        # CUDA (same options) then CPU take the nodes TensorRT cannot; the
        # check after creation makes sure the main graph really is on TensorRT.
        return [
            (_ORT_NAMES["tensorrt"], trt_options),
            (_ORT_NAMES["cuda"], _cuda_options(config)),
            _ORT_NAMES["cpu"],
        ]
    if provider == "cuda":
        return [(_ORT_NAMES["cuda"], _cuda_options(config)), _ORT_NAMES["cpu"]]
    return [_ORT_NAMES["cpu"]]


_WARM_UP_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}


def _warm_up(session: ort.InferenceSession) -> None:
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, dtype=_WARM_UP_DTYPES.get(spec.type, np.float32))
    session.run(None, feeds)


#: a rewrite of a model file before it is loaded (e.g. faceswap.detector_graph's uint8 YuNet)
ModelRewrite = Callable[[Path], bytes]


def _session_key(
    model_path: Path, provider: str, config: ExecutionConfig, rewrite: ModelRewrite | None
) -> tuple[Any, ...]:
    """The model file as it is now (a replaced file is a new key) and every setting that shapes the session."""
    try:
        stat = model_path.stat()
    except OSError as exc:
        raise ModelError(f"cannot load {model_path.name}: {exc.strerror or exc}", field="model") from exc
    # ``auto`` and the provider it chose share a session
    settings = replace(config, provider=provider)
    rewritten = f"{rewrite.__module__}.{rewrite.__qualname__}" if rewrite is not None else None
    return (str(model_path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, settings, rewritten)


def create_session(
    model_path: Path, config: ExecutionConfig, *, rewrite: ModelRewrite | None = None
) -> ort.InferenceSession:
    """The inference session for a model on the configured provider, warmed up and checked.

    Created once per process for a model file, configuration and ``rewrite``
    (applied to the file's bytes before loading), then shared:
    ``InferenceSession.run`` is thread-safe.
    """
    provider = choose_execution_provider(config.provider).provider
    assert provider is not None  # choose_execution_provider raised otherwise
    key = _session_key(model_path, provider, config, rewrite)
    # one lock for creation too: two jobs starting at once build one session, not two engines
    with _SESSION_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _new_session(model_path, provider, config, rewrite)
            _SESSIONS[key] = session
    return session


def _new_session(
    model_path: Path, provider: str, config: ExecutionConfig, rewrite: ModelRewrite | None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if config.cpu_threads:
        options.intra_op_num_threads = config.cpu_threads
    options.inter_op_num_threads = 1
    model: str | bytes = rewrite(model_path) if rewrite is not None else str(model_path)
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=_provider_list(provider, config))
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        raise ModelError(f"cannot load {model_path.name}: {exc}", field="model") from exc
    active = session.get_providers()
    wanted = _ORT_NAMES[provider]
    if not active or active[0] != wanted:
        # the libraries loaded (the probe saw to that), yet onnxruntime put the session elsewhere
        message = (
            f"{model_path.name}: asked for {wanted} but the session runs on "
            f"{', '.join(active) or 'nothing'} (silent fallback)"
        )
        if not config.allow_fallback:
            raise ExecutionProviderUnavailable(message, field="execution_provider")
        log.warning(message, extra={"event": "execution_provider_fallback"})
    # The first run builds TensorRT engines / CUDA kernels; do it before the first frame.
    _warm_up(session)
    return session
