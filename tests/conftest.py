"""Shared fixtures: sample media made from scikit-image's public-domain astronaut."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.no_metadata import NO_METADATA_ENV

# session-wide, before any test imports boto3 or azure-identity: no SDK may ask a metadata address
os.environ.update(NO_METADATA_ENV)

# session servers any test may ask for by fixture name (started only when one does)
pytest_plugins = ["tests.support.azurite", "tests.support.kmock_fixtures"]

REPO = Path(__file__).resolve().parent.parent


def _skimage_data(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None, "scikit-image is a dev dependency"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    path = _skimage_data("astronaut.png")
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def astronaut(astronaut_path: Path) -> np.ndarray:
    image = cv2.imread(str(astronaut_path))
    assert image is not None
    return image


@pytest.fixture(scope="session")
def source_face_path(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """A visibly different face: the astronaut mirrored, hue-rotated and brightened."""
    image = cv2.flip(astronaut, 1)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + 60) % 180).astype(np.uint8)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    path = tmp_path_factory.mktemp("faces") / "source.png"
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="session")
def fusionctl() -> list[str]:
    """Command prefix that runs this checkout's CLI in a subprocess."""
    return [sys.executable, "-m", "controlplane.cli"]


@pytest.fixture(autouse=True)
def _isolated_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # never read the developer's real model cache in tests
    monkeypatch.setenv("FUSIONPLANE_MODEL_DIR", str(tmp_path / "no-models"))
    # nor its fusionctl state (resumable uploads' book, the policy it last saw)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("FUSIONPLANE_TRT_CACHE", str(tmp_path / "trt"))
