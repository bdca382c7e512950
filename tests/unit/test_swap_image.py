"""End to end on one image: run_swap with the classic swapper and the inswapper stand-in."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap import ModelError, NoFaceFound, SwapOptions, run_swap
from faceswap.detector import YuNetDetector
from faceswap.models import ModelStore
from faceswap.runtime import ExecutionConfig, create_session
from faceswap.types import Face
from tests.support.standin_models import write_model_dir

SWAPPERS = ["classic", "inswapper_128"]
MARGIN = 0.6  # of the face box's size, each side
LANDMARK_TOLERANCE_PX = 6.0
MIN_FACE_CHANGE = 8.0  # mean absolute difference, grey levels


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(write_model_dir(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def detector(models: ModelStore) -> YuNetDetector:
    path = models.verified_path("yunet_2023mar", role="detector")
    return YuNetDetector(create_session(path, ExecutionConfig(provider="cpu", cpu_threads=1)))


def _only_face(detector: YuNetDetector, image: np.ndarray) -> Face:
    faces = detector.detect(image)
    assert len(faces) == 1, f"expected one face, found {len(faces)}"
    return faces[0]


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    changed = np.any(before != after, axis=2)
    ys, xs = np.nonzero(changed)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _expanded(face: Face, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = face.box
    dx, dy = face.width * margin, face.height * margin
    height, width = shape[:2]
    return (
        max(int(x1 - dx), 0),
        max(int(y1 - dy), 0),
        min(int(np.ceil(x2 + dx)), width),
        min(int(np.ceil(y2 + dy)), height),
    )


def _within(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _face_change(before: np.ndarray, after: np.ndarray, face: Face) -> float:
    x1, y1, x2, y2 = (round(v) for v in face.box)
    return float(np.abs(before[y1:y2, x1:x2].astype(np.int16) - after[y1:y2, x1:x2].astype(np.int16)).mean())


def _no_partials(directory: Path) -> None:
    leftovers = [p.name for p in directory.iterdir() if ".partial" in p.name]
    assert leftovers == []


def _check_swapped(detector: YuNetDetector, before: np.ndarray, after: np.ndarray) -> None:
    assert after.shape == before.shape
    original = _only_face(detector, before)
    # (1) only the face region changed
    box = _changed_box(before, after)
    assert box is not None, "nothing changed"
    region = _expanded(original, MARGIN, before.shape)
    assert _within(box, region), f"pixels changed at {box}, outside the face region {region}"
    # (2) a face is still there, in the same place
    swapped = _only_face(detector, after)
    error = float(np.abs(swapped.landmarks - original.landmarks).max())
    assert error < LANDMARK_TOLERANCE_PX, f"landmarks moved {error:.1f} px"
    # (3) and it is a different face
    change = _face_change(before, after, original)
    assert change > MIN_FACE_CHANGE, f"the face barely changed ({change:.1f} grey levels)"


@pytest.mark.parametrize("swapper", SWAPPERS)
def test_swap_changes_the_face_and_nothing_else(
    tmp_path: Path,
    models: ModelStore,
    detector: YuNetDetector,
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    swapper: str,
) -> None:
    output = tmp_path / "out" / "swapped.png"
    result = run_swap(
        source=str(source_face_path),
        target=str(astronaut_path),
        output=str(output),
        options=SwapOptions(swapper=swapper, execution_provider="cpu"),
        models=models,
    )
    assert result.kind == "image"
    assert result.faces_swapped == 1
    assert result.frames == result.frames_swapped == 1
    assert result.output == str(output)
    assert result.wall_s > 0
    after = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert after is not None
    assert after.dtype == np.uint8
    _check_swapped(detector, astronaut, after)
    assert sorted(p.name for p in output.parent.iterdir()) == ["swapped.png"]


def test_the_two_swappers_differ(
    tmp_path: Path, models: ModelStore, source_face_path: Path, astronaut_path: Path
) -> None:
    outputs = []
    for swapper in SWAPPERS:
        output = tmp_path / f"{swapper}.png"
        run_swap(
            source=str(source_face_path),
            target=str(astronaut_path),
            output=str(output),
            options=SwapOptions(swapper=swapper),
            models=models,
        )
        outputs.append(cv2.imread(str(output)))
    assert not np.array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("swapper", SWAPPERS)
def test_grey_target_and_source(
    tmp_path: Path,
    models: ModelStore,
    detector: YuNetDetector,
    source_face_path: Path,
    astronaut: np.ndarray,
    swapper: str,
) -> None:
    grey_target = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    grey_source = cv2.cvtColor(cv2.imread(str(source_face_path)), cv2.COLOR_BGR2GRAY)
    target, source = tmp_path / "target.png", tmp_path / "source.png"
    assert cv2.imwrite(str(target), grey_target)
    assert cv2.imwrite(str(source), grey_source)
    assert cv2.imread(str(target), cv2.IMREAD_UNCHANGED).ndim == 2  # really single-channel files
    output = tmp_path / "out.png"
    result = run_swap(
        source=str(source), target=str(target), output=str(output), options=SwapOptions(swapper=swapper), models=models
    )
    assert result.faces_swapped == 1
    after = cv2.imread(str(output), cv2.IMREAD_COLOR)
    assert after is not None
    _check_swapped(detector, cv2.cvtColor(grey_target, cv2.COLOR_GRAY2BGR), after)
    _no_partials(tmp_path)


@pytest.mark.parametrize("swapper", SWAPPERS)
def test_rgba_target_keeps_its_alpha(
    tmp_path: Path,
    models: ModelStore,
    detector: YuNetDetector,
    source_face_path: Path,
    astronaut: np.ndarray,
    swapper: str,
) -> None:
    height, width = astronaut.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = ((xx * 3 + yy * 5) % 256).astype(np.uint8)  # varies across the face too
    alpha[200:260, 150:300] = 0
    target = tmp_path / "target.png"
    assert cv2.imwrite(str(target), np.dstack([astronaut, alpha]))
    output = tmp_path / "out.png"
    run_swap(
        source=str(source_face_path),
        target=str(target),
        output=str(output),
        options=SwapOptions(swapper=swapper),
        models=models,
    )
    after = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert after is not None
    assert after.shape == (height, width, 4)
    assert np.array_equal(after[:, :, 3], alpha)
    _check_swapped(detector, astronaut, np.ascontiguousarray(after[:, :, :3]))


@pytest.mark.parametrize(
    ("suffix", "magic", "quality_flag"),
    [(".jpg", b"\xff\xd8\xff", cv2.IMWRITE_JPEG_QUALITY), (".webp", b"RIFF", cv2.IMWRITE_WEBP_QUALITY)],
    ids=["jpg", "webp"],
)
def test_jpg_and_webp_outputs(
    tmp_path: Path,
    models: ModelStore,
    detector: YuNetDetector,
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    suffix: str,
    magic: bytes,
    quality_flag: int,
) -> None:
    options = SwapOptions(swapper="classic", image_quality=90)
    lossless = tmp_path / "out.png"
    output = tmp_path / f"out{suffix}"
    run_swap(
        source=str(source_face_path), target=str(astronaut_path), output=str(lossless), options=options, models=models
    )
    run_swap(
        source=str(source_face_path), target=str(astronaut_path), output=str(output), options=options, models=models
    )
    data = output.read_bytes()
    assert data.startswith(magic)
    if suffix == ".webp":
        assert data[8:12] == b"WEBP"
    after = cv2.imread(str(output), cv2.IMREAD_COLOR)
    assert after is not None
    assert after.shape == astronaut.shape

    def encoded(image: np.ndarray) -> np.ndarray:
        ok, buffer = cv2.imencode(suffix, image, [quality_flag, options.image_quality])
        assert ok
        return cv2.imdecode(buffer, cv2.IMREAD_COLOR)

    # the same swap, encoded at the requested quality: the option reached the encoder
    swapped = cv2.imread(str(lossless))
    assert np.abs(after.astype(np.int16) - encoded(swapped)).max() <= 2
    assert np.abs(after.astype(np.int16) - encoded(swapped)).mean() < 0.05
    # a face in the same place, and a different one
    original = _only_face(detector, astronaut)
    moved = float(np.abs(_only_face(detector, after).landmarks - original.landmarks).max())
    assert moved < LANDMARK_TOLERANCE_PX
    assert _face_change(astronaut, after, original) > MIN_FACE_CHANGE
    if suffix == ".jpg":
        # JPEG codes 8x8/16x16 blocks independently: against the original at the same quality,
        # only blocks that touch the face differ
        box = _changed_box(encoded(astronaut), after)
        assert box is not None
        x1, y1, x2, y2 = _expanded(original, MARGIN, astronaut.shape)
        assert _within(box, (max(x1 - 16, 0), max(y1 - 16, 0), x2 + 16, y2 + 16))
    _no_partials(tmp_path)


# ---------------------------------------------------------------- face selection


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> tuple[Path, np.ndarray, int]:
    """A small astronaut on the left, a full-size one on the right; returns (path, image, split x)."""
    small = cv2.resize(astronaut, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((astronaut.shape[0], small.shape[1] + astronaut.shape[1], 3), dtype=np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    canvas[:, small.shape[1] :] = astronaut
    path = tmp_path_factory.mktemp("two") / "two.png"
    assert cv2.imwrite(str(path), canvas)
    return path, canvas, small.shape[1]


@pytest.mark.parametrize(
    ("selector", "left", "right"),
    [("all", True, True), ("largest", False, True), ("index:0", True, False), ("index:1", False, True)],
)
def test_face_selector(
    tmp_path: Path,
    models: ModelStore,
    detector: YuNetDetector,
    source_face_path: Path,
    two_faces: tuple[Path, np.ndarray, int],
    selector: str,
    left: bool,
    right: bool,
) -> None:
    path, before, split = two_faces
    faces = detector.detect(before)
    assert len(faces) == 2
    # the right face is the larger one
    assert max(faces, key=lambda f: f.area).box[0] > split
    output = tmp_path / "out.png"
    result = run_swap(
        source=str(source_face_path),
        target=str(path),
        output=str(output),
        options=SwapOptions(face_selector=selector),
        models=models,
    )
    assert result.faces_swapped == int(left) + int(right)
    after = cv2.imread(str(output))
    left_changed = not np.array_equal(after[:, :split], before[:, :split])
    right_changed = not np.array_equal(after[:, split:], before[:, split:])
    assert (left_changed, right_changed) == (left, right)


@pytest.mark.parametrize("selector", ["largest", "index:0"])
def test_face_selector_on_one_face(
    tmp_path: Path,
    models: ModelStore,
    detector: YuNetDetector,
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    selector: str,
) -> None:
    output = tmp_path / "out.png"
    result = run_swap(
        source=str(source_face_path),
        target=str(astronaut_path),
        output=str(output),
        options=SwapOptions(face_selector=selector),
        models=models,
    )
    assert result.faces_swapped == 1
    _check_swapped(detector, astronaut, cv2.imread(str(output)))


def test_index_beyond_the_faces_is_no_face_found(
    tmp_path: Path,
    models: ModelStore,
    source_face_path: Path,
    astronaut_path: Path,
) -> None:
    output = tmp_path / "out.png"
    with pytest.raises(NoFaceFound) as info:
        run_swap(
            source=str(source_face_path),
            target=str(astronaut_path),
            output=str(output),
            options=SwapOptions(face_selector="index:5"),
            models=models,
        )
    assert info.value.field == "target"
    assert not output.exists()
    _no_partials(tmp_path)


def test_target_without_a_face_is_no_face_found(tmp_path: Path, models: ModelStore, source_face_path: Path) -> None:
    target = tmp_path / "wall.png"
    assert cv2.imwrite(str(target), np.full((240, 320, 3), 90, dtype=np.uint8))
    output = tmp_path / "out.png"
    with pytest.raises(NoFaceFound) as info:
        run_swap(source=str(source_face_path), target=str(target), output=str(output), models=models)
    assert info.value.field == "target"
    assert not output.exists()


@pytest.mark.parametrize("swapper", SWAPPERS)
def test_source_without_a_face_is_no_face_found(
    tmp_path: Path,
    models: ModelStore,
    astronaut_path: Path,
    swapper: str,
) -> None:
    source = tmp_path / "grey.png"
    assert cv2.imwrite(str(source), np.full((256, 256, 3), 128, dtype=np.uint8))
    output = tmp_path / "out" / "never.png"
    with pytest.raises(NoFaceFound) as info:
        run_swap(
            source=str(source),
            target=str(astronaut_path),
            output=str(output),
            options=SwapOptions(swapper=swapper),
            models=models,
        )
    assert info.value.field == "source"
    assert info.value.exit_code == 65
    assert not output.exists()
    if output.parent.exists():
        assert list(output.parent.iterdir()) == []


def test_inswapper_without_models_fails_before_reading_media(
    tmp_path: Path,
    source_face_path: Path,
    astronaut_path: Path,
) -> None:
    output = tmp_path / "out.png"
    with pytest.raises(ModelError) as info:
        run_swap(
            source=str(source_face_path),
            target=str(astronaut_path),
            output=str(output),
            options=SwapOptions(swapper="inswapper_128"),
            models=ModelStore(tmp_path / "empty"),
        )
    assert "inswapper_128" in str(info.value)
    assert not output.exists()


def test_existing_output_is_replaced_atomically(
    tmp_path: Path,
    models: ModelStore,
    source_face_path: Path,
    astronaut_path: Path,
) -> None:
    output = tmp_path / "out.png"
    output.write_bytes(b"old contents")
    run_swap(source=str(source_face_path), target=str(astronaut_path), output=str(output), models=models)
    assert cv2.imread(str(output)) is not None
    _no_partials(tmp_path)
