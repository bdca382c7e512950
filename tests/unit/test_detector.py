"""YuNet detection on real pixels: the bundled model, the astronaut photo, CPU only."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap.detector import INPUT_SIZE, DetectorConfig, YuNetDetector, letterbox
from faceswap.errors import BadInput
from faceswap.models import ModelStore
from faceswap.runtime import ExecutionConfig, create_session
from faceswap.types import Face


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    store = ModelStore(tmp_path_factory.mktemp("empty-models"))
    path = store.verified_path("yunet_2023mar", role="detector")
    return create_session(path, ExecutionConfig(provider="cpu", cpu_threads=1))


@pytest.fixture(scope="module")
def detector(session) -> YuNetDetector:
    return YuNetDetector(session)


@pytest.fixture(scope="module")
def astronaut_face(detector: YuNetDetector, astronaut: np.ndarray) -> Face:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    return faces[0]


def _inside(box: tuple[float, float, float, float], points: np.ndarray) -> bool:
    x1, y1, x2, y2 = box
    return bool(np.all((points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2)))


def test_astronaut_has_exactly_one_confident_face(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    assert face.landmarks.shape == (5, 2)
    assert face.landmarks.dtype == np.float32
    x1, y1, x2, y2 = face.box
    height, width = astronaut.shape[:2]
    assert 0 <= x1 < x2 <= width
    assert 0 <= y1 < y2 <= height
    # a plausible face for a 512x512 portrait: neither a speck nor the whole frame
    assert 40 < face.width < 300
    assert 40 < face.height < 300
    assert _inside(face.box, face.landmarks)


def test_landmark_order_matches_the_documented_layout(astronaut_face: Face) -> None:
    right_eye, left_eye, nose, mouth_right, mouth_left = astronaut_face.landmarks
    # the subject's right eye is on the image's left
    assert right_eye[0] < left_eye[0]
    assert mouth_right[0] < mouth_left[0]
    eyes_y = max(right_eye[1], left_eye[1])
    mouth_y = min(mouth_right[1], mouth_left[1])
    assert eyes_y < nose[1] < mouth_y
    # the nose lies between the eyes horizontally
    assert right_eye[0] < nose[0] < left_eye[0]


def test_blank_images_have_no_faces(detector: YuNetDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), dtype=np.uint8)) == []
    assert detector.detect(np.full((300, 200, 3), 128, dtype=np.uint8)) == []


def test_faces_are_sorted_by_score(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    # two astronauts side by side: two faces, best first, boxes in their own halves
    pair = np.hstack([astronaut, astronaut])
    faces = detector.detect(pair)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < astronaut.shape[1] < centres[1]


def test_letterbox_pads_bottom_right(astronaut: np.ndarray) -> None:
    frame = np.full((100, 400, 3), 200, dtype=np.uint8)
    blob, scale = letterbox(frame)
    assert blob.shape == (1, 3, INPUT_SIZE, INPUT_SIZE)
    assert blob.dtype == np.float32
    assert scale == pytest.approx(INPUT_SIZE / 400)
    assert np.all(blob[0, :, :160, :] == 200)
    assert np.all(blob[0, :, 160:, :] == 0)


@pytest.mark.parametrize(("canvas_hw", "origin"), [((4320, 7680), (3000, 150)), ((7680, 4320), (200, 3300))])
def test_8k_letterboxed_canvas_maps_landmarks_back(
    detector: YuNetDetector,
    astronaut: np.ndarray,
    astronaut_face: Face,
    canvas_hw: tuple[int, int],
    origin: tuple[int, int],
) -> None:
    factor = 8  # the 512 photo becomes 4096 px, the face ~720 px (~60 px at YuNet's input)
    height, width = canvas_hw
    ox, oy = origin
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    side = astronaut.shape[0] * factor
    canvas[oy : oy + side, ox : ox + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_LINEAR)
    faces = detector.detect(canvas)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    expected = astronaut_face.landmarks * factor + np.array([ox, oy], dtype=np.float32)
    # the frame is shrunk 12x into YuNet's input: a few px there is a few dozen here
    input_px = max(height, width) / INPUT_SIZE
    error = np.abs(face.landmarks - expected).max()
    assert error < 3 * input_px
    assert _inside(face.box, face.landmarks)
    assert face.box[0] >= ox - 1
    assert face.box[2] <= ox + side + 1
    assert face.box[1] >= oy - 1
    assert face.box[3] <= oy + side + 1


def test_8k_mapping_is_exact_for_an_integer_upscale(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    # a 640x360 frame, and the same frame blown up 12x (each pixel a 12x12 block) to 7680x4320:
    # INTER_AREA brings the big one back to exactly the small one, so the detections must agree
    # after mapping back, which checks the scale bookkeeping with no model noise in the way
    small = np.zeros((360, 640, 3), dtype=np.uint8)
    small[20:340, 200:520] = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (7680, 4320), interpolation=cv2.INTER_NEAREST)
    small_faces = detector.detect(small)
    big_faces = detector.detect(big)
    assert len(small_faces) == len(big_faces) == 1
    np.testing.assert_allclose(big_faces[0].landmarks, small_faces[0].landmarks * 12, atol=2.0)
    np.testing.assert_allclose(big_faces[0].box, np.array(small_faces[0].box) * 12, atol=2.0)
    assert big_faces[0].score == pytest.approx(small_faces[0].score, abs=1e-4)


def test_tiny_faces_are_dropped_by_min_face_size(
    session,
    detector: YuNetDetector,
    astronaut: np.ndarray,
    astronaut_face: Face,
) -> None:
    factor = 8.5 / astronaut_face.width  # the face becomes ~8.5 px wide
    tiny = cv2.resize(astronaut, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    assert detector.config.min_face_size > 9
    assert detector.detect(tiny) == []
    # it is the size filter that drops it, not the score: with no minimum the face is there
    permissive = YuNetDetector(session, DetectorConfig(min_face_size=0.0))
    found = permissive.detect(tiny)
    assert found, "YuNet should still see the tiny face when no minimum size applies"
    assert min(found[0].width, found[0].height) < detector.config.min_face_size
    # and a threshold just below its size lets it through
    lenient = YuNetDetector(session, DetectorConfig(min_face_size=min(found[0].width, found[0].height) - 1))
    assert len(lenient.detect(tiny)) == 1


def test_min_face_size_keeps_faces_above_it(session, astronaut: np.ndarray, astronaut_face: Face) -> None:
    strict = YuNetDetector(session, DetectorConfig(min_face_size=min(astronaut_face.width, astronaut_face.height) + 5))
    assert strict.detect(astronaut) == []


def test_score_threshold_filters(session, astronaut: np.ndarray, astronaut_face: Face) -> None:
    above = YuNetDetector(session, DetectorConfig(score_threshold=min(astronaut_face.score + 0.02, 0.999)))
    assert above.detect(astronaut) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"score_threshold": 0.0}, "detector.score_threshold"),
        ({"score_threshold": 1.0}, "detector.score_threshold"),
        ({"score_threshold": -0.5}, "detector.score_threshold"),
        ({"score_threshold": float("nan")}, "detector.score_threshold"),
        ({"nms_threshold": 0.0}, "detector.nms_threshold"),
        ({"nms_threshold": 1.5}, "detector.nms_threshold"),
        ({"min_face_size": -1.0}, "detector.min_face_size"),
    ],
)
def test_detector_config_rejects_bad_values(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(BadInput) as info:
        DetectorConfig(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_detector_config_defaults_are_valid() -> None:
    config = DetectorConfig()
    assert 0 < config.score_threshold < 1
    assert 0 < config.nms_threshold < 1
    assert config.min_face_size >= 0


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((64, 64), dtype=np.uint8),
        np.zeros((64, 64, 4), dtype=np.uint8),
        np.zeros((64, 64, 1), dtype=np.uint8),
        np.zeros((64, 64, 3), dtype=np.float32),
        np.zeros((64, 64, 3), dtype=np.uint16),
    ],
    ids=["2d", "bgra", "one-channel", "float32", "uint16"],
)
def test_bad_frames_are_rejected(detector: YuNetDetector, frame: np.ndarray) -> None:
    with pytest.raises(BadInput) as info:
        detector.detect(frame)
    assert info.value.field == "frame"


def test_detection_does_not_modify_the_frame(detector: YuNetDetector, astronaut: np.ndarray) -> None:
    frame = astronaut.copy()
    detector.detect(frame)
    assert np.array_equal(frame, astronaut)


def test_bundled_model_path_is_inside_the_package() -> None:
    entry = ModelStore(Path("/nonexistent-model-dir")).get("yunet_2023mar")
    assert entry.bundled
    assert entry.path.is_file()
