"""ONNX models that really take (nearly) forever, built at test time with onnx.helper.

``write_hanging_model`` passes the image-in, map-out contract and loads at once, but each call
runs a ``Loop`` of 10^12 additions on a value taken from the input first (so nothing can be
folded away before the run): a stuck onnxruntime call, as far as any caller can tell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HANG_ITERATIONS = 10**12


def write_hanging_model(path: Path) -> Path:
    """An image [1,3,H,W] -> map [1,1,H,W] model whose every call hangs in a Loop."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["condition_in"], ["condition_out"]),
            helper.make_node("Add", ["carried_in", "one"], ["carried_out"]),
        ],
        "count_up",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("condition_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("condition_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["grey"], ["start"], keepdims=0),
        helper.make_node("Loop", ["trip_count", "keep_going", "start"], ["counted"], body=body),
        helper.make_node("Mul", ["counted", "zero"], ["nothing"]),
        helper.make_node("Sigmoid", ["grey"], ["squashed"]),
        helper.make_node("Add", ["squashed", "nothing"], ["saliency"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hanging_saliency",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, [1, 1, "H", "W"])],
        [
            numpy_helper.from_array(np.array(HANG_ITERATIONS, np.int64), "trip_count"),
            numpy_helper.from_array(np.array(True), "keep_going"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)
