"""FusionPlane's face-swap core: detection, alignment, swapping, blending, video.

It imports nothing from the control plane; the worker drives it through
:func:`run_swap`.
"""

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
from faceswap.pipeline import FaceSwapper, SwapOptions, SwapResult, run_swap

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
