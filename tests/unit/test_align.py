"""Five-point similarity alignment to the ArcFace templates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceswap.align import TEMPLATES, estimate_affine, invert_affine, warp_face
from faceswap.errors import BadInput

# The ArcFace reference landmarks of a 112x112 crop, as published with insightface
# (right eye, left eye, nose tip, right mouth corner, left mouth corner).
ARCFACE_REFERENCE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    theta = np.deg2rad(angle_deg)
    c, s = np.cos(theta) * scale, np.sin(theta) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _face_in_frame(template: str, size: int, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """Landmarks of a face that a known similarity placed in a frame."""
    return _apply(_similarity(angle, scale, shift), TEMPLATES[template] * size).astype(np.float32)


def test_templates_match_the_arcface_reference() -> None:
    np.testing.assert_allclose(TEMPLATES["arcface_112"] * 112, ARCFACE_REFERENCE_112, atol=1e-9)
    # inswapper_128: the 112 geometry shifted 8 px right in a 128-wide crop
    np.testing.assert_allclose(TEMPLATES["arcface_128"] * 128, ARCFACE_REFERENCE_112 + np.array([8.0, 0.0]), atol=1e-9)


def test_templates_are_fractions_in_the_documented_order() -> None:
    for name, points in TEMPLATES.items():
        assert points.shape == (5, 2), name
        assert np.all((points > 0) & (points < 1)), name
        right_eye, left_eye, nose, mouth_right, mouth_left = points
        assert right_eye[0] < left_eye[0], name
        assert mouth_right[0] < mouth_left[0], name
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_right[1], mouth_left[1]), name


@pytest.mark.parametrize(("template", "size"), [("arcface_112", 112), ("arcface_128", 128), ("arcface_128", 256)])
@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0.0, 1.0, (0.0, 0.0)), (17.0, 2.7, (300.0, 120.0)), (-40.0, 0.6, (35.0, 410.0)), (170.0, 9.0, (4000.0, 2000.0))],
)
def test_estimate_affine_maps_landmarks_onto_the_template(
    template: str, size: int, angle: float, scale: float, shift: tuple[float, float]
) -> None:
    landmarks = _face_in_frame(template, size, angle, scale, shift)
    matrix = estimate_affine(landmarks, template, size)
    assert matrix.shape == (2, 3)
    assert matrix.dtype == np.float64
    mapped = _apply(matrix, landmarks)
    np.testing.assert_allclose(mapped, TEMPLATES[template] * size, atol=0.05)
    # a similarity: the 2x2 part is a scaled rotation, scale undone
    a, b = matrix[0, 0], matrix[1, 0]
    np.testing.assert_allclose(matrix[:, :2], [[a, -b], [b, a]], atol=1e-6)
    assert np.hypot(a, b) == pytest.approx(1.0 / scale, rel=1e-3)


@pytest.mark.parametrize(("template", "size"), [("arcface_112", 112), ("arcface_128", 128)])
def test_estimate_affine_tolerates_landmark_noise(template: str, size: int) -> None:
    rng = np.random.default_rng(7)
    landmarks = _face_in_frame(template, size, 12.0, 1.8, (210.0, 95.0))
    noisy = landmarks + rng.uniform(-1.0, 1.0, landmarks.shape).astype(np.float32)
    matrix = estimate_affine(noisy, template, size)
    mapped = _apply(matrix, noisy)
    # 1 px of noise at scale 1.8 is ~0.55 px in the crop; allow for the fit
    assert np.abs(mapped - TEMPLATES[template] * size).max() < 2.0


def test_estimate_affine_accepts_a_flat_list_of_ten_numbers() -> None:
    landmarks = _face_in_frame("arcface_112", 112, 5.0, 1.5, (10.0, 20.0))
    matrix = estimate_affine(landmarks.reshape(-1).tolist(), "arcface_112", 112)  # type: ignore[arg-type]
    np.testing.assert_allclose(_apply(matrix, landmarks), ARCFACE_REFERENCE_112, atol=0.05)


def test_invert_affine_round_trips_points() -> None:
    rng = np.random.default_rng(3)
    matrix = _similarity(23.0, 0.37, (-51.0, 88.0))
    inverse = invert_affine(matrix)
    assert inverse.shape == (2, 3)
    assert inverse.dtype == np.float64
    points = rng.uniform(-500, 4000, (50, 2))
    np.testing.assert_allclose(_apply(inverse, _apply(matrix, points)), points, atol=1e-6)
    np.testing.assert_allclose(_apply(matrix, _apply(inverse, points)), points, atol=1e-6)


def test_inverse_of_an_estimated_alignment_puts_the_template_back_on_the_face() -> None:
    landmarks = _face_in_frame("arcface_128", 128, -8.0, 3.2, (700.0, 400.0))
    inverse = invert_affine(estimate_affine(landmarks, "arcface_128", 128))
    np.testing.assert_allclose(_apply(inverse, TEMPLATES["arcface_128"] * 128), landmarks, atol=0.1)


@pytest.mark.parametrize(
    "landmarks",
    [np.full((5, 2), 50.0), np.zeros((5, 2)), np.full((5, 2), np.nan), np.full((5, 2), np.inf)],
    ids=["identical", "zeros", "nan", "inf"],
)
def test_degenerate_landmarks_raise_bad_input(landmarks: np.ndarray) -> None:
    with pytest.raises(BadInput) as info:
        estimate_affine(landmarks.astype(np.float32), "arcface_112", 112)
    assert info.value.field == "landmarks"


def test_unknown_template_is_bad_input() -> None:
    landmarks = _face_in_frame("arcface_112", 112, 0.0, 1.0, (0.0, 0.0))
    with pytest.raises(BadInput) as info:
        estimate_affine(landmarks, "ffhq_512", 512)
    assert info.value.field == "template"


def test_warp_face_produces_an_aligned_crop() -> None:
    # draw five dots at known frame positions; after warping they must sit on the template
    size = 128
    landmarks = _face_in_frame("arcface_128", size, 20.0, 2.5, (150.0, 60.0))
    frame = np.zeros((600, 600, 3), dtype=np.uint8)
    for x, y in landmarks:
        cv2.circle(frame, (round(float(x)), round(float(y))), 6, (255, 255, 255), thickness=-1)
    crop, matrix = warp_face(frame, landmarks, "arcface_128", size)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.uint8
    np.testing.assert_allclose(matrix, estimate_affine(landmarks, "arcface_128", size))
    grey = crop[:, :, 0]
    for x, y in TEMPLATES["arcface_128"] * size:
        patch = grey[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
        assert patch.min() > 128, (x, y)
    # and away from the dots the crop is dark
    assert grey[5, 5] == 0
    assert grey[-5, 64] == 0
