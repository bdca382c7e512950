"""Box mask and paste-back: the crop lands on the face and nowhere else."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceswap.blend import BlendConfig, box_mask, paste_back
from faceswap.errors import BadInput


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """A frame->crop transform: rotate by ``angle``, scale by ``scale``, then shift."""
    theta = math.radians(angle_deg)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]], dtype=np.float64)


def _placing(angle_deg: float, scale: float, centre: tuple[float, float], size: int) -> np.ndarray:
    """A frame->crop transform that puts the crop's centre on frame point ``centre``."""
    matrix = _similarity(angle_deg, scale, (0.0, 0.0))
    matrix[:, 2] = np.array([size / 2, size / 2]) - matrix[:, :2] @ np.asarray(centre, dtype=np.float64)
    return matrix


def _footprint(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Bounding rectangle (x1, y1, x2, y2, exclusive ends) of the crop square mapped into the frame."""
    a = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(a)[:2]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = shape[:2]
    x1 = max(math.floor(points[:, 0].min()), 0)
    y1 = max(math.floor(points[:, 1].min()), 0)
    x2 = min(math.ceil(points[:, 0].max()) + 1, width)
    y2 = min(math.ceil(points[:, 1].max()) + 1, height)
    return x1, y1, x2, y2


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    changed = np.any(before != after, axis=2)
    ys, xs = np.nonzero(changed)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _assert_within(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> None:
    assert outer[0] <= inner[0], (inner, outer)
    assert outer[1] <= inner[1], (inner, outer)
    assert inner[2] <= outer[2], (inner, outer)
    assert inner[3] <= outer[3], (inner, outer)


def _noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- box_mask


@pytest.mark.parametrize("size", [128, 256])
def test_box_mask_is_zero_at_the_border_and_one_in_the_centre(size: int) -> None:
    mask = box_mask(size, 0.3, (0.0, 0.0, 0.0, 0.0))
    assert mask.shape == (size, size)
    assert mask.dtype == np.float32
    assert mask.min() >= 0.0
    assert mask.max() <= 1.0
    ring = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    # the Gaussian feather leaves only a trace at the very edge
    assert ring.max() < 0.1
    assert ring.mean() < 0.08
    centre = mask[size * 3 // 8 : size * 5 // 8, size * 3 // 8 : size * 5 // 8]
    assert centre.min() > 0.99
    assert not mask.flags.writeable  # cached and shared: must not be edited in place


def test_box_mask_without_blur_is_a_hard_box_with_a_zero_border() -> None:
    mask = box_mask(128, 0.0, (0.0, 0.0, 0.0, 0.0))
    assert set(np.unique(mask).tolist()) == {0.0, 1.0}
    assert mask[0].max() == 0
    assert mask[-1].max() == 0
    assert mask[:, 0].max() == 0
    assert mask[:, -1].max() == 0
    assert mask[1:-1, 1:-1].min() == 1.0


@pytest.mark.parametrize("blur", [0.1, 0.3, 0.6])
def test_box_mask_feathering_rises_from_the_edge_to_the_centre(blur: float) -> None:
    size = 200
    mask = box_mask(size, blur, (0.0, 0.0, 0.0, 0.0))
    half = size // 2
    for profile in (mask[half, : half + 1], mask[: half + 1, half], mask[half, half:][::-1], mask[half:, half][::-1]):
        steps = np.diff(profile.astype(np.float64))
        assert steps.min() > -1e-5  # non-decreasing towards the centre
        assert profile[-1] - profile[0] > 0.8
    # the diagonal too
    diagonal = np.diagonal(mask)[: half + 1].astype(np.float64)
    assert np.diff(diagonal).min() > -1e-5


def test_more_blur_gives_a_wider_feather() -> None:
    narrow = box_mask(200, 0.1, (0.0, 0.0, 0.0, 0.0))
    wide = box_mask(200, 0.6, (0.0, 0.0, 0.0, 0.0))
    # fewer fully-opaque pixels, and lower values near the edge, with a wider feather
    assert (wide > 0.99).sum() < (narrow > 0.99).sum()
    assert wide[100, 20] < narrow[100, 20]


def test_padding_shrinks_the_mask_on_its_own_side() -> None:
    size = 200
    plain = box_mask(size, 0.1, (0.0, 0.0, 0.0, 0.0))
    top = box_mask(size, 0.1, (0.3, 0.0, 0.0, 0.0))
    left = box_mask(size, 0.1, (0.0, 0.0, 0.0, 0.25))
    everywhere = box_mask(size, 0.1, (0.2, 0.2, 0.2, 0.2))
    assert top.sum() < plain.sum()
    assert left.sum() < plain.sum()
    assert everywhere.sum() < plain.sum()
    # top padding of 30% zeroes (nearly) the top 30% of rows, leaves the bottom as it was
    assert top[: int(0.3 * size) - 5].max() < 0.05
    np.testing.assert_allclose(top[-50:], plain[-50:], atol=1e-6)
    assert left[:, : int(0.25 * size) - 5].max() < 0.05
    np.testing.assert_allclose(left[:, -50:], plain[:, -50:], atol=1e-6)
    assert everywhere[: int(0.2 * size) - 5].max() < 0.05
    assert everywhere[:, -(int(0.2 * size) - 5) :].max() < 0.05
    assert everywhere[size // 2, size // 2] > 0.99


# ---------------------------------------------------------------- paste_back


@pytest.mark.parametrize("mode", ["feather", "poisson"])
@pytest.mark.parametrize(
    ("angle", "scale", "centre"),
    [(0.0, 1.0, (214.0, 164.0)), (25.0, 0.8, (300.0, 250.0)), (-60.0, 1.6, (420.0, 180.0)), (180.0, 0.5, (330, 240))],
)
def test_paste_back_changes_only_the_footprint(
    mode: str, angle: float, scale: float, centre: tuple[float, float]
) -> None:
    size = 128
    frame = _noise((480, 640, 3), seed=1)
    before = frame.copy()
    crop = np.full((size, size, 3), (20, 240, 60), dtype=np.uint8)
    crop[40:90, 30:100] = (250, 10, 200)
    matrix = _placing(angle, scale, centre, size)
    out = paste_back(frame, crop, matrix, BlendConfig(blur=0.3, mode=mode))
    assert out is frame  # in place
    assert out.dtype == np.uint8
    assert out.shape == before.shape
    box = _changed_box(before, out)
    assert box is not None, "the paste changed nothing"
    x1, y1, x2, y2 = _footprint(matrix, size, frame.shape)
    _assert_within(box, (x1, y1, x2, y2))
    outside = np.ones(frame.shape[:2], dtype=bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], before[outside])
    # the crop lands where the inverse transform says: the inner part of the footprint changed
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    cx, cy = inverse @ np.array([size / 2, size * 0.2, 1.0])
    assert np.any(out[round(cy), round(cx)] != before[round(cy), round(cx)])
    if mode == "feather":  # feathering shows the crop's own colour there
        assert np.abs(out[round(cy), round(cx)].astype(int) - (20, 240, 60)).max() < 40


def test_paste_back_without_blur_copies_the_crop_exactly_in_the_middle() -> None:
    size = 64
    frame = np.zeros((200, 300, 3), dtype=np.uint8)
    crop = np.full((size, size, 3), 200, dtype=np.uint8)
    matrix = _similarity(0.0, 1.0, (-100.0, -50.0))  # crop pixel (0,0) is frame pixel (100,50)
    paste_back(frame, crop, matrix, BlendConfig(blur=0.0))
    assert np.all(frame[52:112, 102:162] == 200)
    assert np.all(frame[:49] == 0)
    assert np.all(frame[:, :99] == 0)
    assert np.all(frame[116:] == 0)
    assert np.all(frame[:, 166:] == 0)


def test_face_mask_is_multiplied_in() -> None:
    size = 64
    crop = np.full((size, size, 3), 255, dtype=np.uint8)
    matrix = _similarity(0.0, 1.0, (-50.0, -50.0))
    face_mask = np.zeros((size, size), dtype=np.float32)
    face_mask[:, : size // 2] = 1.0  # only the crop's left half may show
    frame = np.zeros((200, 200, 3), dtype=np.uint8)
    paste_back(frame, crop, matrix, BlendConfig(blur=0.0), face_mask)
    assert frame[80, 60].min() == 255
    assert frame[80, 100].max() == 0


@pytest.mark.parametrize("mode", ["feather", "poisson"])
@pytest.mark.parametrize("shift", [(5000.0, 0.0), (-5000.0, 0.0), (0.0, 5000.0), (0.0, -5000.0), (-900.0, -900.0)])
def test_crop_entirely_off_frame_leaves_the_frame_alone(mode: str, shift: tuple[float, float]) -> None:
    frame = _noise((240, 320, 3), seed=2)
    before = frame.copy()
    crop = np.full((128, 128, 3), 255, dtype=np.uint8)
    out = paste_back(frame, crop, _similarity(10.0, 1.0, shift), BlendConfig(mode=mode))
    assert out is frame
    assert np.array_equal(frame, before)


@pytest.mark.parametrize("mode", ["feather", "poisson"])
@pytest.mark.parametrize("shift", [(60.0, 60.0), (-250.0, -170.0), (40.0, -170.0)])
def test_crop_partly_off_frame_is_clipped(mode: str, shift: tuple[float, float]) -> None:
    size = 128
    frame = _noise((240, 320, 3), seed=3)
    before = frame.copy()
    crop = np.full((size, size, 3), 255, dtype=np.uint8)
    matrix = _similarity(0.0, 1.0, shift)
    paste_back(frame, crop, matrix, BlendConfig(mode=mode))
    box = _changed_box(before, frame)
    assert box is not None
    x1, y1, x2, y2 = _footprint(matrix, size, frame.shape)
    _assert_within(box, (x1, y1, x2, y2))


def test_poisson_blends_into_the_surroundings() -> None:
    # a flat grey frame with a slightly different flat crop: Poisson matches the boundary,
    # so the result stays near the frame's grey where feathering would show the crop's
    size = 128
    frame = np.full((400, 400, 3), 100, dtype=np.uint8)
    crop = np.full((size, size, 3), 160, dtype=np.uint8)
    crop[50:80, 50:80] = 220  # detail that must survive the clone
    matrix = _similarity(0.0, 1.0, (-130.0, -130.0))
    feathered = paste_back(frame.copy(), crop, matrix, BlendConfig(mode="feather"))
    cloned = paste_back(frame.copy(), crop, matrix, BlendConfig(mode="poisson"))
    centre = (slice(190, 200), slice(150, 160))  # crop (60..70, 20..30): flat part of the crop
    assert abs(float(feathered[centre].mean()) - 160) < 3
    assert abs(float(cloned[centre].mean()) - 100) < abs(float(feathered[centre].mean()) - 100)
    # the detail's contrast (220 vs 160) is carried over by the gradient-domain clone
    detail = float(cloned[195:205, 195:205].mean()) - float(cloned[190:200, 150:160].mean())
    assert detail > 30
    box = _changed_box(frame, cloned)
    assert box is not None
    x1, y1, x2, y2 = _footprint(matrix, size, frame.shape)
    _assert_within(box, (x1, y1, x2, y2))


# ---------------------------------------------------------------- BlendConfig


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"blur": -0.1}, "blend.blur"),
        ({"blur": 1.5}, "blend.blur"),
        ({"blur": float("nan")}, "blend.blur"),
        ({"padding": (0.0, 0.0, 0.0)}, "blend.padding"),
        ({"padding": (0.0, 0.0, 0.0, 0.0, 0.0)}, "blend.padding"),
        ({"padding": (0.5, 0.0, 0.0, 0.0)}, "blend.padding"),
        ({"padding": (0.0, -0.1, 0.0, 0.0)}, "blend.padding"),
        ({"mode": "overlay"}, "blend.mode"),
        ({"mode": ""}, "blend.mode"),
    ],
)
def test_blend_config_rejects_bad_values(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(BadInput) as info:
        BlendConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_blend_config_accepts_the_edges_of_its_ranges() -> None:
    BlendConfig(blur=0.0)
    BlendConfig(blur=1.0)
    BlendConfig(padding=(0.49, 0.0, 0.49, 0.0), mode="poisson")
