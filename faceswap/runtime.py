"""ONNX Runtime sessions on TensorRT, CUDA or CPU, with no silent fallback.

ONNX Runtime quietly drops an execution provider it cannot load (missing
libnvinfer, wrong CUDA) and runs the model on the CPU at a hundredth of the
speed. On a paid GPU node that is worse than failing, so every session we
create is checked with ``get_providers()`` against what was asked.
"""

from __future__ import annotations

import ctypes
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from faceswap.config import WorkerSettings
from faceswap.errors import ExecutionProviderUnavailable, ModelError

__all__ = [
    "EXECUTION_PROVIDERS",
    "ExecutionConfig",
    "available_execution_providers",
    "create_session",
    "resolve_execution_provider",
    "tensorrt_cache_dir",
]

log = logging.getLogger(__name__)

ExecutionProviderName = Literal["auto", "tensorrt", "cuda", "cpu"]
EXECUTION_PROVIDERS: tuple[str, ...] = ("auto", "tensorrt", "cuda", "cpu")

_ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


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

    def __post_init__(self) -> None:
        if self.provider not in EXECUTION_PROVIDERS:
            raise ExecutionProviderUnavailable(
                f"unknown execution provider {self.provider!r}; choose one of {', '.join(EXECUTION_PROVIDERS)}",
                field="execution_provider",
            )
        if self.cpu_threads < 0:
            raise ModelError("must be 0 (automatic) or a positive thread count", field="cpu_threads")


def available_execution_providers() -> list[str]:
    """Our short names of the providers this onnxruntime build can load, best first."""
    present = set(ort.get_available_providers())
    return [name for name in ("tensorrt", "cuda", "cpu") if _ORT_NAMES[name] in present]


def resolve_execution_provider(requested: str) -> str:
    """Turn ``auto`` into the best provider present; reject one that is absent."""
    available = available_execution_providers()
    if requested == "auto":
        return available[0]
    if requested not in available:
        raise ExecutionProviderUnavailable(
            f"execution provider {requested!r} is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install onnxruntime-gpu with the "
            "matching CUDA/TensorRT libraries or choose --execution-provider cpu",
            field="execution_provider",
        )
    return requested


def _tensorrt_version() -> str:
    try:
        import tensorrt  # only in the GPU image

        return str(tensorrt.__version__)
    except ImportError:
        pass
    for major in (10, 11):
        try:
            lib = ctypes.CDLL(f"libnvinfer.so.{major}")
        except OSError:
            continue
        value = int(lib.getInferLibVersion())
        # TensorRT 10 encodes the version as major*10000 + minor*100 + patch
        return f"{value // 10000}.{value // 100 % 100}.{value % 100}"
    return "unknown"


def _gpu_identity() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "unknown-gpu"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown-gpu"
    return out or "unknown-gpu"


def tensorrt_cache_dir(root: Path) -> Path:
    """Engine cache directory keyed by ORT version, TensorRT version and GPU.

    A TensorRT engine is only valid for the exact TensorRT build and GPU model
    it was built on; keying the directory keeps a shared volume safe when
    nodes of different GPU generations mount it.
    """
    key = f"ort{ort.__version__}-trt{_tensorrt_version()}-{_gpu_identity()}"
    return root / re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def _provider_list(provider: str, config: ExecutionConfig) -> list[Any]:
    if provider == "tensorrt":
        cache = tensorrt_cache_dir(config.trt_cache_root)
        cache.mkdir(parents=True, exist_ok=True)
        trt_options = {
            "trt_fp16_enable": config.trt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_max_workspace_size": config.trt_workspace_bytes,
        }
        # CUDA then CPU stay in the list for the nodes TensorRT cannot take;
        # the check after creation makes sure the main graph really is on TensorRT.
        return [(_ORT_NAMES["tensorrt"], trt_options), _ORT_NAMES["cuda"], _ORT_NAMES["cpu"]]
    if provider == "cuda":
        return [_ORT_NAMES["cuda"], _ORT_NAMES["cpu"]]
    return [_ORT_NAMES["cpu"]]


def _warm_up(session: ort.InferenceSession) -> None:
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        dtype = np.float32 if "float" in spec.type else np.int64
        feeds[spec.name] = np.zeros(shape, dtype=dtype)
    session.run(None, feeds)


def create_session(model_path: Path, config: ExecutionConfig) -> ort.InferenceSession:
    """Create an inference session on the configured provider, warmed up and checked."""
    provider = resolve_execution_provider(config.provider)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if config.cpu_threads:
        options.intra_op_num_threads = config.cpu_threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=_provider_list(provider, config)
        )
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        raise ModelError(f"cannot load {model_path.name}: {exc}", field="model") from exc
    active = session.get_providers()
    wanted = _ORT_NAMES[provider]
    if not active or active[0] != wanted:
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
