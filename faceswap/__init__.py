"""FusionPlane's face-swap core: detection, alignment, swapping, blending, video.

``pipeline`` runs one job (``run_swap``: source face + target image or video
-> output) over ``detector`` (YuNet, its graph rewritten by ``detector_graph``
to take uint8 batches), ``align`` (five-point alignment and its
inverse), ``swappers`` (chosen by name), ``blend`` (paste-back) and ``video``
(frames through ffmpeg pipes, enlarged in ``pipes``; ``decoders`` and ``encoders`` pick the decoder and the
encoder; ``segments`` decodes ahead and encodes swapped
frames into segments, which ``checkpoint`` commits so a preempted job
resumes); ``models`` is the verified model cache
and ``runtime`` the ONNX Runtime sessions (TensorRT, CUDA or CPU, no silent
fallback; ``gpu_probe`` checks which load). Inputs and outputs go through ``uris`` (paths, ``file://``,
``s3://``, ``https://``; atomic outputs), guarded by ``netguard`` and
``fetcher`` (no fetch reaches an internal address), ``access`` (the tenant's
storage grant), ``containers`` and ``media`` (what ffmpeg may read, within
8K). ``errors`` maps every failure to a documented exit code; ``types`` and
``samples`` hold the values between stages and synthetic sample media;
``config`` is the one module that reads the worker's environment. It
imports nothing from the control plane; the worker drives it through
:func:`run_swap`.
"""

import os
from typing import TYPE_CHECKING, Any

# ONNX Runtime's official builds send usage telemetry to Microsoft from Linux too since 1.29
# (a 1DS uploader started at import, a session file in $TMPDIR, a device id on disk). A worker
# runs other people's faces on private targets: nothing about it leaves the node unasked.
# Set before any module of this package imports onnxruntime (the package runs first), and set
# rather than defaulted, so an inherited ORT_DISABLE_TELEMETRY=0 cannot switch it back on.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from faceswap.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_PREEMPTED,
    BadInput,
    FaceSwapError,
    ModelError,
    NoFaceFound,
    Preempted,
)

if TYPE_CHECKING:
    from faceswap.pipeline import FaceSwapper, SwapOptions, SwapResult, run_swap

#: loaded on first use: the pipeline pulls in onnx, onnxruntime and OpenCV (about 0.5 s here), which
#: the control plane (it imports ``faceswap.netguard``) and a warm worker's thin client never need
_PIPELINE_NAMES = frozenset({"FaceSwapper", "SwapOptions", "SwapResult", "run_swap"})


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from faceswap import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'faceswap' has no attribute {name!r}")


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_PREEMPTED",
    "BadInput",
    "FaceSwapError",
    "FaceSwapper",
    "ModelError",
    "NoFaceFound",
    "Preempted",
    "SwapOptions",
    "SwapResult",
    "run_swap",
]

__version__ = "0.1.0"
