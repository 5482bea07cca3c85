"""An ONNX model that really hangs on big frames, built at test time with onnx.helper.

``write_hanging_model`` passes the image-in, map-out contract and loads at once; a call on an
input at most ``FAST_HEIGHT`` rows high returns at once, a taller one runs a ``Loop`` of 10^10
additions per extra row on a value taken from the input (nothing can be folded away before the
run): a stuck onnxruntime call, as far as any caller can tell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FAST_HEIGHT = 32  # padded input rows; clips up to 32 rows high pad to exactly this
ITERATIONS_PER_EXTRA_ROW = 10**10


def write_hanging_model(path: Path) -> Path:
    """An image [1,3,H,W] -> map [1,1,H,W] model whose calls on inputs taller than
    ``FAST_HEIGHT`` hang in a Loop."""
    constants = {
        "fast_height": np.array(FAST_HEIGHT, np.int64),
        "no_rows": np.array(0, np.int64),
        "per_row": np.array(ITERATIONS_PER_EXTRA_ROW, np.int64),
        "keep_going": np.array(True),
        "zero": np.array(0.0, np.float32),
    }
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Gather", ["shape", "height_axis"], ["height"], axis=0),
        helper.make_node("Sub", ["height", "fast_height"], ["extra_rows_signed"]),
        helper.make_node("Max", ["extra_rows_signed", "no_rows"], ["extra_rows"]),
        helper.make_node("Mul", ["extra_rows", "per_row"], ["trip_count"]),
        helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["grey"], ["start"], keepdims=0),
        helper.make_node("Loop", ["trip_count", "keep_going", "start"], ["counted"], body=_body()),
        helper.make_node("Mul", ["counted", "zero"], ["nothing"]),
        helper.make_node("Sigmoid", ["grey"], ["squashed"]),
        helper.make_node("Add", ["squashed", "nothing"], ["saliency"]),
    ]
    initialisers = [numpy_helper.from_array(value, name) for name, value in constants.items()]
    initialisers.append(numpy_helper.from_array(np.array(2, np.int64), "height_axis"))
    graph = helper.make_graph(
        nodes,
        "hanging_saliency",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, [1, 1, "H", "W"])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def _body() -> onnx.GraphProto:
    """One Loop iteration: carry the value on, plus one."""
    return helper.make_graph(
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
