"""Five-point similarity alignment to the ArcFace templates, and its inverse.

The templates are the ArcFace reference landmarks (right eye, left eye, nose
tip, mouth corners) of a 112x112 crop. The 128 variant used by inswapper_128
keeps the 112 geometry and shifts it 8 px right in a 128-wide crop, which is
how the insightface/FaceFusion models were trained; both are expressed here
as fractions of the crop size.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from faceswap.errors import BadInput
from faceswap.types import BGRImage, Landmarks

__all__ = ["TEMPLATES", "Affine", "estimate_affine", "invert_affine", "warp_face"]

Affine = npt.NDArray[np.float64]  # 2x3
MIN_LANDMARK_SPREAD_PX = 1.0

_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

#: template landmarks as fractions of the crop's side
TEMPLATES: dict[str, npt.NDArray[np.float64]] = {
    "arcface_112": _ARCFACE_112 / 112.0,
    "arcface_128": (_ARCFACE_112 + np.array([8.0, 0.0])) / 128.0,
}


def estimate_affine(landmarks: Landmarks, template: str, size: int) -> Affine:
    """Similarity transform (rotation, uniform scale, shift) from frame to crop."""
    if template not in TEMPLATES:
        raise BadInput(f"unknown template {template!r}", field="template")
    points = np.asarray(landmarks, dtype=np.float64)
    if points.size == 10:
        points = points.reshape(5, 2)  # a flat [x0, y0, ..., x4, y4] is fine too
    if points.shape != (5, 2):
        raise BadInput(f"expected 5 (x, y) landmarks, got shape {points.shape}", field="landmarks")
    if not np.isfinite(points).all():
        raise BadInput("landmarks contain NaN or infinity", field="landmarks")
    # Points closer than a pixel carry no orientation or scale: the fit would
    # blow a sub-pixel speck up to the whole crop.
    if np.ptp(points, axis=0).max() < MIN_LANDMARK_SPREAD_PX:
        raise BadInput("landmarks are degenerate (all within a pixel); cannot align this face", field="landmarks")
    target = TEMPLATES[template] * size
    matrix, _ = cv2.estimateAffinePartial2D(points, target, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        raise BadInput("landmarks are degenerate; cannot align this face", field="landmarks")
    return matrix.astype(np.float64)


def invert_affine(matrix: Affine) -> Affine:
    """Crop -> frame transform for pasting a crop back."""
    return cv2.invertAffineTransform(matrix).astype(np.float64)


def warp_face(frame: BGRImage, landmarks: Landmarks, template: str, size: int) -> tuple[BGRImage, Affine]:
    """The aligned ``size`` x ``size`` face crop and the frame->crop transform."""
    matrix = estimate_affine(landmarks, template, size)
    crop = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(crop, dtype=np.uint8), matrix
