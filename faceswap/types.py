"""Values that travel between the stages of the core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["BGRImage", "Face", "Landmarks"]

#: an HxWx3 uint8 image in OpenCV's BGR order
BGRImage = npt.NDArray[np.uint8]
#: 5x2 float32 landmarks: right eye, left eye, nose tip, right and left mouth corner
#: (the subject's right and left, so the "right eye" is the one on the image's left)
Landmarks = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Face:
    """One detected face in image coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: Landmarks

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)
