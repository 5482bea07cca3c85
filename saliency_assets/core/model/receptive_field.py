"""How far a model's output pixel sees: the geometry tiled inference needs (:mod:`.tiling`).

The radius and alignment come from the model's ``metadata_props`` (``receptive_field_radius``,
``tile_alignment``, ``pad_multiple``) or, without them, from a conservative walk over the graph
(:func:`analyse_graph`). A graph with any operator the walk cannot bound (a global pooling, a
normalisation over the image, a reshape) gives ``None``: such a model is never tiled.

Kept apart from :mod:`.tiling` because it needs ``onnx`` (a tenth of a second to import),
which only models that tile have to load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from saliency_assets.core.model.tiling import TileGeometry

RADIUS_KEY = "receptive_field_radius"
ALIGNMENT_KEY = "tile_alignment"
PAD_MULTIPLE_KEY = "pad_multiple"


def tile_geometry(model: onnx.ModelProto | Path | str) -> TileGeometry | None:
    """The model's tiling geometry: declared in its metadata, else derived from its graph."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    declared = geometry_from_metadata(proto)
    return declared if declared is not None else analyse_graph(proto.graph)


def geometry_from_metadata(model: onnx.ModelProto) -> TileGeometry | None:
    """``receptive_field_radius`` and ``tile_alignment`` from ``metadata_props``, if declared."""
    props = {entry.key: entry.value for entry in model.metadata_props}
    if RADIUS_KEY not in props or ALIGNMENT_KEY not in props:
        return None
    try:
        radius = int(props[RADIUS_KEY])
        alignment = int(props[ALIGNMENT_KEY])
        pad_multiple = int(props.get(PAD_MULTIPLE_KEY, "1"))
    except ValueError:
        return None
    if radius < 0 or alignment < 1 or pad_multiple < 1:
        return None
    return TileGeometry(radius, alignment, pad_multiple, "metadata")


def analyse_graph(graph: onnx.GraphProto) -> TileGeometry | None:
    """Bound the receptive field of a single-input, single-output image graph, or ``None``.

    Each spatial tensor is tracked per axis as ``(jump, before, after)``: its element ``i``
    depends on input pixels ``i*jump - before`` to ``i*jump + after``. Every operator's bound
    is taken on the safe side; an operator without a known bound ends the walk with ``None``.
    """
    weights = {tensor.name for tensor in graph.initializer}
    images = [entry for entry in graph.input if entry.name not in weights]
    if len(images) != 1 or len(graph.output) != 1:
        return None
    return _GraphWalk(graph).run()


# --- the graph walk -------------------------------------------------------------------------


_ELEMENTWISE = {
    "Abs", "Add", "Cast", "Ceil", "Clip", "Div", "Dropout", "Elu", "Erf", "Exp", "Floor",
    "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Log", "Max", "Mean", "Min", "Mul",
    "Neg", "Pow", "PRelu", "Reciprocal", "Relu", "Selu", "Sigmoid", "Softplus", "Sqrt", "Sub",
    "Sum", "Tanh", "Where",
}  # fmt: skip
_SHAPE_ONLY = {"Shape", "Constant", "ConstantOfShape"}


@dataclass(frozen=True)
class _Span:
    """One axis of a spatial tensor: element i sees input i*jump - before .. i*jump + after."""

    jump: float
    before: float
    after: float


_Spatial = tuple[_Span, _Span]


class _GraphWalk:
    """Propagates per-axis spans through the graph in topological (file) order."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.spatial: dict[str, _Spatial] = {}
        self.non_spatial: set[str] = set(self.constants) | {""}
        self.jumps: set[int] = {1}

    def run(self) -> TileGeometry | None:
        image = next(i.name for i in self.graph.input if i.name not in self.constants)
        self.spatial[image] = (_Span(1, 0, 0), _Span(1, 0, 0))
        for node in self.graph.node:
            if not self._visit(node):
                return None
        output = self.spatial.get(self.graph.output[0].name)
        if output is None or any(span.jump != 1 for span in output):
            return None
        radius = math.ceil(max(0, *(max(span.before, span.after) for span in output)))
        alignment = math.lcm(*self.jumps)
        return TileGeometry(radius, alignment, alignment, "graph")

    def _visit(self, node: onnx.NodeProto) -> bool:
        inputs = [self.spatial.get(name) for name in node.input]
        if node.op_type == "Constant" and "value" in _attrs(node):
            self.constants[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        if all(span is None for span in inputs):
            if not all(name in self.non_spatial for name in node.input):
                return False
            self.non_spatial.update(node.output)
            return True
        if node.op_type in _SHAPE_ONLY:
            self.non_spatial.update(node.output)
            return True
        result = self._propagate(node, inputs)
        if result is None:
            return False
        for axis in result:
            if axis.jump < 1 or axis.jump != int(axis.jump):
                return False
            self.jumps.add(int(axis.jump))
        self.spatial[node.output[0]] = result
        return True

    def _propagate(self, node: onnx.NodeProto, inputs: list[_Spatial | None]) -> _Spatial | None:
        kind = node.op_type
        attrs = _attrs(node)
        if kind in _ELEMENTWISE or kind == "Concat":
            if kind == "Concat" and attrs.get("axis", 1) not in (1, -3):
                return None
            return _union([span for span in inputs if span is not None])
        if inputs[0] is None or any(span is not None for span in inputs[1:]):
            return None
        data = inputs[0]
        if kind in ("Conv", "MaxPool", "AveragePool"):
            return _window_op(data, attrs)
        if kind == "ConvTranspose":
            return _transposed_conv(data, attrs)
        if kind == "Resize":
            return _resize(data, attrs, self._constant(node, 2))
        if kind == "Pad":
            has_axes = len(node.input) > 3 and bool(node.input[3])
            return None if has_axes else _pad(data, attrs, self._constant(node, 1))
        if kind == "Slice":
            return self._slice(node, data)
        return None

    def _constant(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        return self.constants.get(node.input[index])

    def _slice(self, node: onnx.NodeProto, data: _Spatial) -> _Spatial | None:
        """Only a crop that starts at the origin with unit steps keeps coordinates."""
        starts, axes, steps = (self._constant(node, i) for i in (1, 3, 4))
        if starts is None or (len(node.input) > 3 and node.input[3] and axes is None):
            return None
        axes = list(axes) if axes is not None else list(range(len(starts)))
        for axis, start in zip(axes, starts, strict=True):
            if axis in (2, 3, -1, -2) and start != 0:
                return None
        if steps is not None and any(step != 1 for step in steps):
            return None
        return data


def _attrs(node: onnx.NodeProto) -> dict:
    return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}


def _union(spans: list[_Spatial]) -> _Spatial | None:
    merged = []
    for axis in range(2):
        jumps = {span[axis].jump for span in spans}
        if len(jumps) != 1:
            return None
        merged.append(
            _Span(
                jumps.pop(),
                max(span[axis].before for span in spans),
                max(span[axis].after for span in spans),
            )
        )
    return merged[0], merged[1]


def _window_op(data: _Spatial, attrs: dict) -> _Spatial | None:
    """Conv / MaxPool / AveragePool: out y reads in ``s*y - pad + t*d`` for t < k."""

    def axis_span(span: _Span, reach: int, stride: int, pad: int) -> _Span:
        return _Span(
            span.jump * stride,
            span.before + pad * span.jump,
            span.after + (reach - pad) * span.jump,
        )

    return _kernel_op(data, attrs, ("NOTSET", "VALID"), axis_span)


def _transposed_conv(data: _Spatial, attrs: dict) -> _Spatial | None:
    """ConvTranspose: out y reads in x with ``s*x - pad + t*d == y`` for some t < k."""

    def axis_span(span: _Span, reach: int, stride: int, pad: int) -> _Span:
        jump = span.jump / stride
        return _Span(
            jump, span.before + max(0, reach - pad) * jump, span.after + max(0, pad) * jump
        )

    return _kernel_op(data, attrs, ("NOTSET",), axis_span)


def _kernel_op(
    data: _Spatial, attrs: dict, auto_pads: tuple[str, ...], axis_span
) -> _Spatial | None:
    """A 2-D kernel op's span, axis by axis: ``axis_span(span, reach, stride, pad)`` with
    ``reach = (k - 1) * d``; ``None`` for a padding mode not in ``auto_pads`` or a kernel that
    is not 2-D."""
    if _text(attrs.get("auto_pad", "NOTSET")) not in auto_pads:
        return None
    kernel = attrs.get("kernel_shape")
    if kernel is None or len(kernel) != 2:
        return None
    strides = attrs.get("strides", [1, 1])
    dilations = attrs.get("dilations", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    rows, columns = (
        axis_span(data[axis], (kernel[axis] - 1) * dilations[axis], strides[axis], pads[axis])
        for axis in range(2)
    )
    return rows, columns


def _resize(data: _Spatial, attrs: dict, scales: np.ndarray | None) -> _Spatial | None:
    """Resize with constant scales and a coordinate map that does not depend on the size."""
    if scales is None or len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
        return None
    mode = _text(attrs.get("mode", "nearest"))
    transform = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    if transform not in ("half_pixel", "pytorch_half_pixel", "asymmetric"):
        return None
    taps = {"nearest": (0, 1), "linear": (0, 1), "cubic": (1, 2)}.get(mode)
    if taps is None:
        return None
    below, above = taps
    axes = []
    for axis in range(2):
        span, scale = data[axis], float(scales[axis + 2])
        if scale <= 0:
            return None
        jump = span.jump / scale
        if transform == "asymmetric":  # source = y / scale
            grow_before, grow_after = (1 + below) * span.jump, above * span.jump
        else:  # source = (y + 0.5) / scale - 0.5
            grow_before = (1.5 + below) * span.jump - 0.5 * jump
            grow_after = 0.5 * jump + (above - 0.5) * span.jump
        axes.append(
            _Span(jump, span.before + math.ceil(grow_before), span.after + math.ceil(grow_after))
        )
    return axes[0], axes[1]


def _pad(data: _Spatial, attrs: dict, pads: np.ndarray | None) -> _Spatial | None:
    """Pad shifts coordinates by its leading pad (element i is input i - pad).

    Edge, reflect or constant values are read only where that input position is outside the
    tensor, which the margin keeps away from every kept pixel.
    """
    if pads is None or len(pads) != 8 or any(pads[:2]) or any(pads[4:6]):
        return None
    axes = []
    for axis in range(2):
        span, leading = data[axis], int(pads[axis + 2])
        if leading < 0:
            return None
        shift = leading * span.jump
        axes.append(_Span(span.jump, span.before + shift, span.after - shift))
    return axes[0], axes[1]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
