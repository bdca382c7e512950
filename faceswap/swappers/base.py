"""What every swapper offers the pipeline.

The pipeline aligns the target face to ``template`` at ``crop_size`` and
pastes the result back; a swapper only turns one aligned crop into another.
That keeps every swapper's output going through the same mask and paste-back,
and lets the benchmark time alignment, swap and paste separately.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from faceswap.types import BGRImage, Face

__all__ = ["Swapper"]


class Swapper(Protocol):
    name: str
    #: alignment template and crop side the swapper works on
    template: str
    crop_size: int
    #: changes when the weights change; part of the checkpoint fingerprint
    identity: str
    #: optional crop-sized [0, 1] mask multiplied into the blend mask
    face_mask: npt.NDArray[np.float32] | None

    def prepare_source(self, image: BGRImage, face: Face) -> Any:
        """Everything needed from the source face, computed once per job."""

    def swap(self, crop: BGRImage, source: Any) -> BGRImage:
        """The swapped face for an aligned target crop, same size and alignment."""
