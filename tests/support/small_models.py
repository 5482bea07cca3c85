"""A second, different saliency model, built at test time with onnx.helper.

``write_brightness_model`` passes the image-in, map-out contract: its map is the sigmoid of the
pixel's mean over the three (normalised) channels times ``gain``, so bright pixels are salient.
Its values differ from the bundled model's, yet both follow the picture, so a comparison of the
two has something to correlate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_brightness_model(path: Path, gain: float = 1.5) -> Path:
    """An image [1,3,H,W] -> map [1,1,H,W] model: sigmoid(gain * channel mean)."""
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["grey", "gain"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["saliency"]),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness_saliency",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, [1, 1, "H", "W"])],
        [numpy_helper.from_array(np.array(gain, np.float32), "gain")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)
