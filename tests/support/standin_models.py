"""Stand-in inswapper_128 and ArcFace models built with onnx.helper.

They have the exact signatures of the real FaceFusion models (which are
non-commercial and not available here) and do something visible: the swapper
mixes the target crop with a colour computed from the source embedding, so a
swap changes the face while keeping its geometry, and the recognizer's
embedding depends on the face it sees.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_inswapper(path: Path, *, seed: int = 1, target_shape: tuple[int, ...] = (1, 3, 128, 128)) -> Path:
    """``target`` [1,3,128,128] + ``source`` [1,512] -> ``output`` [1,3,128,128]; emap last initializer."""
    rng = np.random.default_rng(seed)
    colour_w = (rng.standard_normal((512, 3)) * 0.2).astype(np.float32)
    emap = (np.eye(512) + rng.standard_normal((512, 512)) * 0.01).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["source", "colour_w"], ["colour"]),
        helper.make_node("Reshape", ["colour", "colour_shape"], ["colour4"]),
        helper.make_node("Sigmoid", ["colour4"], ["tint"]),
        helper.make_node("Mul", ["target", "keep"], ["kept"]),
        helper.make_node("Mul", ["tint", "mix"], ["tinted"]),
        helper.make_node("Add", ["kept", "tinted"], ["mixed"]),
        helper.make_node("Clip", ["mixed", "zero", "one"], ["output"]),
    ]
    initializers = [
        numpy_helper.from_array(colour_w, "colour_w"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], dtype=np.int64), "colour_shape"),
        numpy_helper.from_array(np.array(0.4, dtype=np.float32), "keep"),
        numpy_helper.from_array(np.array(0.6, dtype=np.float32), "mix"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(emap, "emap"),  # last, as in the real model
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper_standin",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, list(target_shape)),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(target_shape))],
        initializers,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def build_arcface(path: Path, *, seed: int = 2) -> Path:
    """``input.1`` [N,3,112,112] -> ``embedding`` [N,512]."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((192, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])],
        [numpy_helper.from_array(weights, "w")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_dir(model_dir: Path, *, swapper_shape: tuple[int, ...] = (1, 3, 128, 128)) -> Path:
    """A model directory with both stand-ins and a manifest that truthfully describes them.

    ``swapper_shape`` other than the real one makes a swapper that passes its
    checksum and manifest but fails the role contract.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    swapper = build_inswapper(model_dir / "inswapper_128.onnx", target_shape=swapper_shape)
    recognizer = build_arcface(model_dir / "w600k_r50.onnx")
    manifest = {
        "models": [
            {
                "name": "inswapper_128",
                "role": "swapper",
                "file": swapper.name,
                "sha256": _sha256(swapper),
                "inputs": {"target": list(swapper_shape), "source": [1, 512]},
                "outputs": {"output": list(swapper_shape)},
            },
            {
                "name": "arcface_w600k_r50",
                "role": "recognizer",
                "file": recognizer.name,
                "sha256": _sha256(recognizer),
                "inputs": {"input.1": ["N", 3, 112, 112]},
                "outputs": {"embedding": ["N", 512]},
            },
        ]
    }
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return model_dir
