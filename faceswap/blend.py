"""Paste an aligned face crop back into the frame, touching only its bounding area.

The mask is a box over the crop, shrunk by ``padding`` (fractions of the crop
side: top, right, bottom, left) and feathered by a Gaussian blur of
``blur`` x the crop side. Warping only the bounding rectangle of the crop's
footprint, not the whole frame, keeps paste-back cost independent of the
frame size (it matters at 4K and 8K) and guarantees no pixel outside the face
area changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from faceswap.align import Affine, invert_affine
from faceswap.errors import BadInput
from faceswap.types import BGRImage

__all__ = ["BlendConfig", "box_mask", "paste_back"]

BLEND_MODES = ("feather", "poisson")


@dataclass(frozen=True)
class BlendConfig:
    blur: float = 0.3
    padding: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    mode: str = "feather"

    def __post_init__(self) -> None:
        if not 0.0 <= self.blur <= 1.0:
            raise BadInput("must be between 0 and 1", field="blend.blur")
        if len(self.padding) != 4 or not all(0.0 <= p < 0.5 for p in self.padding):
            raise BadInput("needs four values in [0, 0.5): top, right, bottom, left", field="blend.padding")
        if self.mode not in BLEND_MODES:
            raise BadInput(f"must be one of {', '.join(BLEND_MODES)}", field="blend.mode")


@functools.lru_cache(maxsize=16)
def box_mask(size: int, blur: float, padding: tuple[float, float, float, float]) -> npt.NDArray[np.float32]:
    """A ``size`` x ``size`` float mask in [0, 1], feathered at its edges."""
    blur_px = int(size * 0.5 * blur)
    border = max(blur_px // 2, 1)
    mask: npt.NDArray[np.float32] = np.ones((size, size), dtype=np.float32)
    top, right, bottom, left = (int(p * size) for p in padding)
    mask[: max(border, top), :] = 0
    mask[-max(border, bottom) :, :] = 0
    mask[:, : max(border, left)] = 0
    mask[:, -max(border, right) :] = 0
    if blur_px > 0:
        mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25), dtype=np.float32)
    mask.setflags(write=False)
    return mask


def _footprint(inverse: Affine, size: int, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    points = corners @ inverse.T
    height, width = frame_shape[:2]
    x1 = max(int(np.floor(points[:, 0].min())) - 1, 0)
    y1 = max(int(np.floor(points[:, 1].min())) - 1, 0)
    x2 = min(int(np.ceil(points[:, 0].max())) + 1, width)
    y2 = min(int(np.ceil(points[:, 1].max())) + 1, height)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def paste_back(
    frame: BGRImage,
    crop: BGRImage,
    matrix: Affine,
    config: BlendConfig,
    face_mask: npt.NDArray[np.float32] | None = None,
) -> BGRImage:
    """Blend ``crop`` (aligned by ``matrix`` frame->crop) into ``frame`` in place; returns frame.

    ``face_mask``, when a swapper provides one, is multiplied with the box mask.
    """
    size = crop.shape[0]
    inverse = invert_affine(matrix)
    area = _footprint(inverse, size, frame.shape)
    if area is None:
        return frame  # the face lies entirely outside the frame
    x1, y1, x2, y2 = area
    local = inverse.copy()
    local[:, 2] -= (x1, y1)
    roi_size = (x2 - x1, y2 - y1)
    mask = box_mask(size, config.blur, config.padding)
    if face_mask is not None:
        mask = mask * face_mask
    warped_mask = cv2.warpAffine(mask, local, roi_size, flags=cv2.INTER_LINEAR, borderValue=0)
    warped_face = cv2.warpAffine(crop, local, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    roi = frame[y1:y2, x1:x2]
    if config.mode == "poisson":
        hard = (warped_mask > 0.5).astype(np.uint8) * 255
        ys, xs = np.nonzero(hard)
        if len(xs) > 0:
            center = (int((xs.min() + xs.max()) // 2), int((ys.min() + ys.max()) // 2))
            try:
                blended = cv2.seamlessClone(warped_face, roi.copy(), hard, center, cv2.NORMAL_CLONE)
            except cv2.error:
                blended = None  # face touching the frame edge; fall back to feathering
            if blended is not None:
                warped_face = blended  # still feathered below, so the clone never bleeds past the mask
    # blendLinear is a fused, rounding, saturating a*w + b*(1-w); where w is 0
    # the frame's pixel comes back exactly, so nothing outside the mask changes.
    roi[:] = cv2.blendLinear(warped_face, roi, warped_mask, 1.0 - warped_mask)
    return frame
