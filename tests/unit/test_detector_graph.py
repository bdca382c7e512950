"""The rewritten YuNet graph (uint8 NHWC frames, free batch) computes what the published one does.

Issue 19 item 3: frames cross to the model as uint8 and several go in one
call. The rewrite must not change a single output value: batch element i of
the rewritten graph is compared bit for bit with the published graph run on
frame i alone, and the faces found through either path are the same.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from faceswap.detector import YuNetDetector, letterbox
from faceswap.detector_graph import FRAMES_INPUT, batched_uint8_model, batched_uint8_model_bytes
from faceswap.errors import ModelError
from faceswap.models import ModelStore


@pytest.fixture(scope="module")
def yunet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ModelStore(tmp_path_factory.mktemp("empty-models")).verified_path("yunet_2023mar", role="detector")


def _session(model: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def published(yunet_path: Path) -> ort.InferenceSession:
    return _session(str(yunet_path))


@pytest.fixture(scope="module")
def batched(yunet_path: Path) -> ort.InferenceSession:
    return _session(batched_uint8_model_bytes(yunet_path))


def test_the_rewritten_graph_takes_uint8_frames_of_any_batch(batched: ort.InferenceSession) -> None:
    (spec,) = batched.get_inputs()
    assert (spec.name, spec.type) == (FRAMES_INPUT, "tensor(uint8)")
    assert spec.shape == ["N", 640, 640, 3]
    assert all(output.shape[0] == "N" for output in batched.get_outputs())


def test_each_batch_element_equals_the_published_graph_on_that_frame_alone(
    published: ort.InferenceSession, batched: ort.InferenceSession, astronaut: np.ndarray
) -> None:
    rng = np.random.default_rng(19)
    canvases = [letterbox(astronaut)[0][0].transpose(1, 2, 0).astype(np.uint8)]
    canvases += [rng.integers(0, 256, (640, 640, 3), dtype=np.uint8) for _ in range(2)]
    frames = np.stack(canvases)
    together = batched.run(None, {FRAMES_INPUT: frames})
    names = [o.name for o in published.get_outputs()]
    assert [o.name for o in batched.get_outputs()] == names
    for i, canvas in enumerate(canvases):
        alone = published.run(None, {"input": canvas.transpose(2, 0, 1)[np.newaxis].astype(np.float32)})
        for name, want, got in zip(names, alone, together, strict=True):
            assert got.shape[1:] == want.shape[1:], name
            np.testing.assert_array_equal(got[i : i + 1], want, err_msg=f"{name}, frame {i}")
    # and the astronaut really has a face in there: the comparison was not of empty heads
    assert float(together[names.index("cls_8")][0].max()) > 0.5


def test_detect_many_finds_the_faces_detect_finds_on_the_published_graph(
    published: ort.InferenceSession, batched: ort.InferenceSession, astronaut: np.ndarray
) -> None:
    single = YuNetDetector(published)
    many = YuNetDetector(batched)
    assert many.takes_uint8_batches
    assert not single.takes_uint8_batches
    big = cv2.resize(astronaut, (astronaut.shape[1] * 4, astronaut.shape[0] * 4))
    small = cv2.resize(astronaut, (astronaut.shape[1] // 2, astronaut.shape[0] // 2))
    blank = np.zeros((720, 1280, 3), dtype=np.uint8)
    frames = [big, astronaut, blank, small]
    got = many.detect_many(frames)
    want = [single.detect(frame) for frame in frames]
    assert [len(faces) for faces in got] == [len(faces) for faces in want] == [1, 1, 0, 1]
    for faces_got, faces_want in zip(got, want, strict=True):
        for a, b in zip(faces_got, faces_want, strict=True):
            assert a.box == pytest.approx(b.box, abs=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-6)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_the_reused_canvas_is_cleared_between_frames_of_different_shapes(
    batched: ort.InferenceSession, astronaut: np.ndarray
) -> None:
    """A wide frame after a tall one must not see the tall frame's pixels in its padding."""
    fresh = YuNetDetector(batched).detect_many([np.zeros((200, 1000, 3), dtype=np.uint8)])
    reused = YuNetDetector(batched)
    tall = cv2.resize(astronaut, (astronaut.shape[1] // 3, astronaut.shape[0] * 2))
    reused.detect_many([tall])
    assert reused.detect_many([np.zeros((200, 1000, 3), dtype=np.uint8)]) == fresh == [[]]


def _model(inputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    node = helper.make_node("Identity", [inputs[0].name], ["out"])
    out = helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph([node], "g", inputs, [out]))


@pytest.mark.parametrize(
    "inputs",
    [
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 640, 480])],
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 640, 640])],
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 640, 640]),
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 640, 640]),
        ],
    ],
    ids=["not-square", "batch-of-two", "two-inputs"],
)
def test_a_model_that_is_not_a_yunet_shaped_detector_is_refused(inputs: list[onnx.ValueInfoProto]) -> None:
    with pytest.raises(ModelError) as caught:
        batched_uint8_model(_model(inputs))
    assert caught.value.field == "detector"


def test_an_unreadable_detector_file_is_a_model_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(ModelError) as caught:
        batched_uint8_model_bytes(junk)
    assert "junk.onnx" in caught.value.message
