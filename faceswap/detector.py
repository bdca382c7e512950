"""YuNet face detection through onnxruntime.

Any frame up to 8K is letterboxed (scaled so its long side is 640, padded at
the bottom/right) into YuNet's fixed 640x640 input; boxes and landmarks are
mapped back to frame coordinates. The detector takes either the published
graph (one float32 NCHW image) or the rewritten one from
:mod:`faceswap.detector_graph` (a batch of uint8 NHWC frames, cast on the
device that runs it); ``detect_many`` sends several frames in one call. Faces whose box is smaller than
``min_face_size`` pixels in the original frame are dropped: below that the
landmarks are too coarse for a swap to look like anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from faceswap.errors import BadInput
from faceswap.types import BGRImage, Face

__all__ = ["DetectorConfig", "YuNetDetector", "letterbox", "letterbox_into"]

INPUT_SIZE = 640
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class DetectorConfig:
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    min_face_size: float = 12.0
    max_faces: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise BadInput("must be between 0 and 1", field="detector.score_threshold")
        if not 0.0 < self.nms_threshold < 1.0:
            raise BadInput("must be between 0 and 1", field="detector.nms_threshold")
        if self.min_face_size < 0:
            raise BadInput("must not be negative", field="detector.min_face_size")


def letterbox_into(canvas: npt.NDArray[np.uint8], frame: BGRImage) -> float:
    """Scale ``frame`` into the top-left of the square uint8 ``canvas`` (rest zeroed); returns the scale."""
    size = canvas.shape[0]
    height, width = frame.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:new_h, :new_w] = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    canvas[new_h:, :] = 0
    canvas[:new_h, new_w:] = 0
    return scale


def letterbox(frame: BGRImage, size: int = INPUT_SIZE) -> tuple[npt.NDArray[np.float32], float]:
    """Frame -> NCHW float32 blob of ``size`` x ``size``, and the scale applied."""
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    scale = letterbox_into(canvas, frame)
    blob = canvas.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    return blob, scale


def _check_frame(frame: BGRImage) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise BadInput(f"expected an HxWx3 uint8 BGR frame, got {frame.shape} {frame.dtype}", field="frame")


def _anchor_grid(stride: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    cells = INPUT_SIZE // stride
    rows, cols = np.divmod(np.arange(cells * cells, dtype=np.float32), cells)
    return cols, rows


class YuNetDetector:
    """Boxes, scores and five landmarks for every face in a BGR frame."""

    def __init__(self, session: ort.InferenceSession, config: DetectorConfig | None = None) -> None:
        self.session = session
        self.config = config or DetectorConfig()
        spec = session.get_inputs()[0]
        self._input = spec.name
        #: the rewritten graph (faceswap.detector_graph) takes uint8 NHWC frames, any batch size
        self.takes_uint8_batches = spec.type == "tensor(uint8)"
        self._outputs = [o.name for o in session.get_outputs()]
        self._grids = {stride: _anchor_grid(stride) for stride in STRIDES}
        self._canvas = np.empty((0, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)

    def warm(self, batch: int) -> None:
        """Run one batch of ``batch`` blank frames, so a batch-shaped engine or kernel is built before work."""
        if self.takes_uint8_batches:
            self.session.run(self._outputs, {self._input: np.zeros((batch, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)})

    def detect(self, frame: BGRImage) -> list[Face]:
        """Faces sorted by score, best first; an empty list when there are none."""
        return self.detect_many([frame])[0]

    def detect_many(self, frames: Sequence[BGRImage]) -> list[list[Face]]:
        """``detect`` for each frame; with the batched graph, all of them in one run."""
        for frame in frames:
            _check_frame(frame)
        if not self.takes_uint8_batches:
            results = []
            for frame in frames:
                blob, scale = letterbox(frame)
                raw = self.session.run(self._outputs, {self._input: blob})
                results.append(self._faces(raw, 0, scale, frame.shape[:2]))
            return results
        if len(self._canvas) < len(frames):
            # kept between calls: a video's frames reuse one buffer instead of 1.2 MB each
            self._canvas = np.empty((len(frames), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        batch = self._canvas[: len(frames)]
        scales = [letterbox_into(batch[i], frame) for i, frame in enumerate(frames)]
        raw = self.session.run(self._outputs, {self._input: batch})
        return [self._faces(raw, i, scales[i], frame.shape[:2]) for i, frame in enumerate(frames)]

    def _faces(self, outputs: list[Any], item: int, scale: float, frame_size: tuple[int, ...]) -> list[Face]:
        raw = dict(zip(self._outputs, outputs, strict=True))
        boxes: list[npt.NDArray[np.float32]] = []
        scores: list[npt.NDArray[np.float32]] = []
        marks: list[npt.NDArray[np.float32]] = []
        for stride in STRIDES:
            cls = np.clip(raw[f"cls_{stride}"][item, :, 0], 0.0, 1.0)
            obj = np.clip(raw[f"obj_{stride}"][item, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = score >= self.config.score_threshold
            if not keep.any():
                continue
            cols, rows = self._grids[stride]
            cols, rows = cols[keep], rows[keep]
            bbox = raw[f"bbox_{stride}"][item][keep]
            kps = raw[f"kps_{stride}"][item][keep].reshape(-1, 5, 2)
            cx = (cols + bbox[:, 0]) * stride
            cy = (rows + bbox[:, 1]) * stride
            w = np.exp(bbox[:, 2]) * stride
            h = np.exp(bbox[:, 3]) * stride
            boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
            scores.append(score[keep])
            lm = np.empty_like(kps)
            lm[:, :, 0] = (kps[:, :, 0] + cols[:, None]) * stride
            lm[:, :, 1] = (kps[:, :, 1] + rows[:, None]) * stride
            marks.append(lm)
        if not boxes:
            return []
        all_boxes = np.concatenate(boxes) / scale
        all_scores = np.concatenate(scores)
        all_marks = np.concatenate(marks) / scale
        keep_idx = cv2.dnn.NMSBoxes(
            all_boxes.tolist(), all_scores.tolist(), self.config.score_threshold, self.config.nms_threshold
        )
        height, width = frame_size[0], frame_size[1]
        faces: list[Face] = []
        for i in np.asarray(keep_idx, dtype=np.int64).reshape(-1)[: self.config.max_faces]:
            x, y, w, h = (float(v) for v in all_boxes[i])
            if min(w, h) < self.config.min_face_size:
                continue
            box = (max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h))
            faces.append(Face(box=box, score=float(all_scores[i]), landmarks=all_marks[i].astype(np.float32)))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces
