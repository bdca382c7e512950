"""A model-free swapper: the source face, aligned onto the target's landmarks
and recoloured to the target's skin tone.

It needs no licensed weights, so a fresh install does a real (if plain) swap.
Colour transfer matches per-channel mean and standard deviation in Lab space
over the central face area, the classic Reinhard et al. (2001) method.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from faceswap.align import warp_face
from faceswap.types import BGRImage, Face

__all__ = ["ClassicSource", "ClassicSwapper"]

CROP = 256
TEMPLATE = "arcface_128"


def _face_ellipse(size: int) -> npt.NDArray[np.float32]:
    # brow to chin, cheek to cheek in the arcface_128 layout; the corners of the
    # crop hold hair, ears and collar, which would be pasted from the source
    mask: npt.NDArray[np.float32] = np.zeros((size, size), dtype=np.float32)
    centre = (size // 2, int(size * 0.56))
    axes = (int(size * 0.29), int(size * 0.36))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), size * 0.03), dtype=np.float32)
    mask.setflags(write=False)
    return mask


def _centre_weights(size: int) -> npt.NDArray[np.bool_]:
    # the middle of the aligned crop is skin (cheeks, nose, mouth), not hair or background
    mask = np.zeros((size, size), dtype=bool)
    mask[int(size * 0.3) : int(size * 0.85), int(size * 0.25) : int(size * 0.75)] = True
    return mask


@dataclass(frozen=True)
class ClassicSource:
    lab: npt.NDArray[np.float32]  # aligned source crop in Lab
    mean: npt.NDArray[np.float32]
    std: npt.NDArray[np.float32]


class ClassicSwapper:
    name = "classic"
    template = TEMPLATE
    crop_size = CROP
    identity = "classic/1"

    def __init__(self, *, colour_transfer: bool = True) -> None:
        self.colour_transfer = colour_transfer
        self._centre = _centre_weights(CROP)
        self.face_mask: npt.NDArray[np.float32] | None = _face_ellipse(CROP)

    def _stats(self, lab: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        pixels = lab[self._centre]
        return pixels.mean(axis=0), pixels.std(axis=0) + 1e-3

    def prepare_source(self, image: BGRImage, face: Face) -> ClassicSource:
        crop, _ = warp_face(image, face.landmarks, TEMPLATE, CROP)
        lab = np.asarray(cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab), dtype=np.float32)
        mean, std = self._stats(lab)
        return ClassicSource(lab=lab, mean=mean, std=std)

    def swap(self, crop: BGRImage, source: ClassicSource) -> BGRImage:
        if not self.colour_transfer:
            out = cv2.cvtColor(source.lab, cv2.COLOR_Lab2BGR)
        else:
            target_lab = np.asarray(cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab), np.float32)
            mean, std = self._stats(target_lab)
            lab = (source.lab - source.mean) * (std / source.std) + mean
            out = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2BGR)
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
