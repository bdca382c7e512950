"""FaceFusion-compatible inswapper_128, fed by an ArcFace recognizer.

inswapper_128: ``target`` [1,3,128,128] RGB/255 (face warped to arcface_128),
``source`` [1,512] (ArcFace embedding x emap / |embedding|; emap is the
model's last initializer, 512x512) -> [1,3,128,128] in [0,1].
ArcFace (w600k_r50): [N,3,112,112] RGB, (x-127.5)/127.5 -> [N,512].
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from faceswap.align import warp_face
from faceswap.errors import ModelError, NoFaceFound
from faceswap.types import BGRImage, Face

__all__ = ["InswapperSwapper", "read_emap"]


_EMAPS: dict[tuple[str, int, int], npt.NDArray[np.float32]] = {}
_EMAPS_LOCK = threading.Lock()


def read_emap(model_path: Path) -> npt.NDArray[np.float32]:
    """The 512x512 embedding map stored as the swapper's last initializer (read once per file version)."""
    stat = model_path.stat()
    key = (str(model_path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _EMAPS_LOCK:
        known = _EMAPS.get(key)
    if known is None:
        known = _parse_emap(model_path)
        known.setflags(write=False)  # shared by every job of the process
        with _EMAPS_LOCK:
            _EMAPS[key] = known
    return known


def _parse_emap(model_path: Path) -> npt.NDArray[np.float32]:
    # imported here, not at the top: onnx pulls in ml_dtypes (about 0.45 s), and every fusionctl start imports
    # this module; only loading a model needs it
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    if not model.graph.initializer:
        raise ModelError(f"{model_path.name} has no initializers, so no emap", field="models.inswapper_128")
    emap = numpy_helper.to_array(model.graph.initializer[-1]).astype(np.float32)
    if emap.shape != (512, 512):
        raise ModelError(
            f"{model_path.name}: last initializer is {emap.shape}, expected the 512x512 emap",
            field="models.inswapper_128",
        )
    return emap


class InswapperSwapper:
    name = "inswapper_128"
    template = "arcface_128"
    crop_size = 128

    def __init__(
        self,
        *,
        swapper: ort.InferenceSession,
        recognizer: ort.InferenceSession,
        emap: npt.NDArray[np.float32],
        identity: str = "inswapper_128",
    ) -> None:
        self.identity = identity
        self.face_mask: npt.NDArray[np.float32] | None = None  # the model blends its own edges
        self.swapper = swapper
        self.recognizer = recognizer
        self.emap = emap
        names = {i.name: i for i in swapper.get_inputs()}
        # name-based when the graph follows the convention, shape-based otherwise
        self._target_name = "target" if "target" in names else next(n for n, i in names.items() if len(i.shape) == 4)
        self._source_name = "source" if "source" in names else next(n for n, i in names.items() if len(i.shape) == 2)
        self._recognizer_input = recognizer.get_inputs()[0].name

    def embedding(self, image: BGRImage, face: Face) -> npt.NDArray[np.float32]:
        crop, _ = warp_face(image, face.landmarks, "arcface_112", 112)
        blob = ((crop[:, :, ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]
        (raw,) = self.recognizer.run(None, {self._recognizer_input: np.ascontiguousarray(blob)})
        return np.asarray(raw, dtype=np.float32).reshape(-1)

    def prepare_source(self, image: BGRImage, face: Face) -> npt.NDArray[np.float32]:
        embedding = self.embedding(image, face)
        norm = float(np.linalg.norm(embedding))
        if not np.isfinite(norm) or norm == 0.0:
            raise NoFaceFound("the recognizer returned an empty embedding for the source face", field="source")
        return (embedding.reshape(1, -1) @ self.emap / norm).astype(np.float32)

    def swap(self, crop: BGRImage, source: npt.NDArray[np.float32]) -> BGRImage:
        blob = (crop[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[np.newaxis]
        (out,) = self.swapper.run(None, {self._target_name: np.ascontiguousarray(blob), self._source_name: source})
        face_rgb = np.clip(np.asarray(out)[0].transpose(1, 2, 0), 0.0, 1.0)
        return np.asarray(face_rgb[:, :, ::-1] * 255.0 + 0.5, dtype=np.float32).astype(np.uint8)
