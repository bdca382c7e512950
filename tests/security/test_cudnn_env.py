"""FUSIONPLANE_CUDNN_ALGO_SEARCH is read from the worker's environment: only the three known values reach
onnxruntime, and a refused value is shown escaped and cut, never echoed raw into a log line or callback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from faceswap.errors import ModelError
from faceswap.pipeline import FaceSwapper, SwapOptions
from faceswap.runtime import CUDNN_ALGO_SEARCHES, ExecutionConfig, clear_session_cache

HOSTILE = [
    "heuristic",  # the values are case-sensitive, as onnxruntime's are
    "FAST",
    "HEURISTIC;rm -rf /",
    "HEURİSTIC",  # a dotted capital I: not the ASCII word
    "DEFAULT\n0",
    "EXHAUSTIVE\tHEURISTIC",
    "\x1b[31mHEURISTIC",
    "H" * 10_000,
]


@pytest.fixture
def onnxruntime_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        raise AssertionError("a session was created")

    monkeypatch.setattr(ort, "InferenceSession", record)
    clear_session_cache()
    return calls


@pytest.mark.parametrize("value", HOSTILE)
def test_an_unknown_value_is_refused_before_onnxruntime_sees_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnxruntime_calls: list[Any], value: str
) -> None:
    monkeypatch.setenv("FUSIONPLANE_CUDNN_ALGO_SEARCH", value)
    monkeypatch.setenv("FUSIONPLANE_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelError) as info:
        FaceSwapper(SwapOptions(execution_provider="cpu"))
    assert info.value.field == "cudnn_conv_algo_search"
    assert info.value.exit_code == 69
    message = str(info.value)
    assert "FUSIONPLANE_CUDNN_ALGO_SEARCH" in message
    assert ", ".join(CUDNN_ALGO_SEARCHES) in message
    # escaped: no newline, tab or terminal escape
    assert message.isprintable()
    assert message.isascii()
    assert len(message) < 200  # cut, whatever its length
    assert onnxruntime_calls == []


@pytest.mark.parametrize("value", ["", "   "])
def test_unset_or_blank_is_the_default(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FUSIONPLANE_CUDNN_ALGO_SEARCH", value)
    assert ExecutionConfig().cudnn_conv_algo_search == "HEURISTIC"


@pytest.mark.parametrize("value", CUDNN_ALGO_SEARCHES)
def test_the_known_values_pass_surrounding_blanks_trimmed(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FUSIONPLANE_CUDNN_ALGO_SEARCH", f" {value}\n")
    assert ExecutionConfig().cudnn_conv_algo_search == value
