"""YuNet's graph, rewritten to take a batch of uint8 frames as they come from the decoder.

The published YuNet takes one float32 NCHW image of raw 0-255 values. Feeding
it means a numpy transpose and a float copy per frame on the host and, on a
GPU, copying 4.9 MB of floats across PCIe for every 1.2 MB of pixels: on an
H200 most of the detector's 2.97 ms per frame was that copy (1.06 ms with the
input kept on the GPU). The rewrite adds a Cast and a Transpose in front of
the graph, so the frames cross as uint8 NHWC and become floats on the device
that runs the model, and frees the batch dimension, so several frames are
detected in one call.

The batch is fixed at 1 inside the graph in one place only: the Reshape
nodes that flatten each stride's head output use the shape constant
``[1, -1, k]``. Rewriting the leading 1 to 0 ("copy this dimension from the
input", Reshape's meaning of 0 when ``allowzero`` is unset) gives
``[N, -1, k]`` with every other value unchanged, so batch element i of the
rewritten graph computes exactly what the original graph computes for
frame i (tests/unit/test_detector_graph.py checks that to the last bit).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceswap.errors import ModelError

if TYPE_CHECKING:
    import onnx

__all__ = ["BATCH_DIM", "FRAMES_INPUT", "batched_uint8_model", "batched_uint8_model_bytes"]

#: the rewritten graph's input: uint8 [N, 640, 640, 3], BGR, letterboxed
FRAMES_INPUT = "frames"
BATCH_DIM = "N"


def _free_batch(value: onnx.ValueInfoProto) -> None:
    dims = value.type.tensor_type.shape.dim
    if dims:
        dims[0].ClearField("dim_value")
        dims[0].dim_param = BATCH_DIM


def batched_uint8_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a YuNet model whose input is uint8 NHWC frames with a free batch size."""
    # imported here, not at the top: onnx pulls in ml_dtypes (about 0.45 s), and every fusionctl start imports
    # this module; only loading a model needs it
    import onnx
    from onnx import helper, numpy_helper

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"expected a detector with one input, found {len(inputs)}", field="detector")
    original = inputs[0]
    dims = [d.dim_value for d in original.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[0] != 1 or dims[1] != 3 or dims[2] != dims[3]:
        raise ModelError(f"expected a 1x3xSxS detector input, found {dims}", field="detector")
    size = dims[2]

    shapes_fed_to_reshape = {node.input[1] for node in graph.node if node.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name not in shapes_fed_to_reshape:
            continue
        shape = numpy_helper.to_array(init)
        if shape.ndim == 1 and shape.size and shape[0] == 1:
            shape = shape.copy()
            shape[0] = 0  # copy the batch dimension from the input
            init.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), init.name))
    for node in graph.node:
        if node.op_type == "Reshape" and any(a.name == "allowzero" and a.i for a in node.attribute):
            raise ModelError("a Reshape with allowzero=1 cannot take a free batch", field="detector")

    frames = helper.make_tensor_value_info(FRAMES_INPUT, onnx.TensorProto.UINT8, [BATCH_DIM, size, size, 3])
    cast = helper.make_node("Cast", [FRAMES_INPUT], ["frames_as_float"], to=onnx.TensorProto.FLOAT)
    to_nchw = helper.make_node("Transpose", ["frames_as_float"], [original.name], perm=[0, 3, 1, 2])
    nodes = [cast, to_nchw, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(original)
    graph.input.insert(0, frames)
    for output in graph.output:
        _free_batch(output)
    del graph.value_info[:]  # recorded shapes carry the old fixed batch; onnxruntime infers its own
    onnx.checker.check_model(rewritten)
    return rewritten


def batched_uint8_model_bytes(path: Path) -> bytes:
    """The rewritten model of the detector file at ``path``, serialised for an inference session."""
    import onnx  # see batched_uint8_model

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises protobuf's DecodeError and others
        raise ModelError(f"cannot read {path.name}: {exc}", field="detector") from exc
    serialised: bytes = batched_uint8_model(model).SerializeToString()
    return serialised
