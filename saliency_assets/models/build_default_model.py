"""Build the embedded default saliency model, ``centre_surround_saliency_v1.onnx``.

The model is a classical, training-free saliency method written with standard ONNX
operators, so the package ships a default model that is entirely its own.

Method
------
Multi-scale centre-surround contrast in an opponent colour space, after Itti, Koch and
Niebur (1998), with the centre and surround compared as colour vectors as in the
frequency-tuned detector of Achanta et al. (2009):

1. Average-pool the input over ``POOL_STRIDE`` x ``POOL_STRIDE`` cells (the coarse grid;
   partial cells at the bottom/right edge average the pixels they hold).
2. Undo the ImageNet normalisation (``rgb = x * std + mean``) and convert to the opponent
   channels of Itti et al.: intensity ``(r+g+b)/3``, red-green ``r-g`` and blue-yellow
   ``b-(r+g)/2``. Both steps are affine, so doing them after the pooling is exact.
3. Build a Gaussian scale space with the undecimated ("a trous") B3-spline filter
   ``[1, 4, 6, 4, 1] / 16``, dilated 1, 2, 4, 8, 16 (Starck, Murtagh and Bijaoui 1998):
   level k is level k-1 blurred, separably, with edge-replicated borders.
4. For each (centre, surround) pair in ``CENTRE_SURROUND_PAIRS`` take the Euclidean distance
   between the two levels' opponent-colour vectors (Achanta's ``||I_mu - I_whc||`` with the
   global mean replaced by a local surround) and average the pairs.
5. Smooth that contrast map with the same blur (dilations ``SMOOTHING_DILATIONS``), which
   fills the dip a centre-surround difference has exactly on an edge.
6. Squash with a fixed ``sigmoid(SQUASH_GAIN * (contrast - SQUASH_OFFSET))`` and resize
   back to full resolution with bilinear (half-pixel) interpolation, cropped to H x W.

Every operator is local: there is no global mean or max-normalisation, so each output
pixel depends only on input pixels within ``receptive_field_radius()`` of it (plus the
position of the image border, which edge padding replicates). Large frames may therefore
be run in tiles with a margin of at least that radius (clipped at the frame border); tile
windows must start at frame coordinates that are multiples of ``POOL_STRIDE`` so that the
pooling grid lines up. Any H, W >= 1 works without padding. The model's ``metadata_props``
record this as ``receptive_field_radius``, ``tile_alignment`` and ``pad_multiple`` = 1.

References
----------
- L. Itti, C. Koch, E. Niebur, "A model of saliency-based visual attention for rapid scene
  analysis", IEEE TPAMI 20(11):1254-1259, 1998.
- R. Achanta, S. Hemami, F. Estrada, S. Susstrunk, "Frequency-tuned salient region
  detection", CVPR 2009, pp. 1597-1604.
- J.-L. Starck, F. Murtagh, A. Bijaoui, "Image Processing and Data Analysis: The Multiscale
  Approach", Cambridge University Press, 1998 (the B3-spline a trous algorithm).

Usage: ``python -m saliency_assets.models.build_default_model [--output PATH]``. The output
is deterministic: every run writes identical bytes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from saliency_assets.core.tables.atomic import atomic_write
from saliency_assets.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH

OPSET_VERSION = 17
IR_VERSION = 8
PRODUCER_NAME = "saliency_assets.models.build_default_model"
PRODUCER_VERSION = "1"

INPUT_NAME = "input"
OUTPUT_NAME = "saliency_map"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Rows: intensity, red-green, blue-yellow (Itti et al. 1998); columns: r, g, b.
OPPONENT_MATRIX = (
    (1 / 3, 1 / 3, 1 / 3),
    (1.0, -1.0, 0.0),
    (-0.5, -0.5, 1.0),
)
POOL_STRIDE = 4
B3_SPLINE_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
LEVEL_DILATIONS = (1, 2, 4, 8, 16)
# (centre level, surround level); level 0 is the pooled image, level k uses LEVEL_DILATIONS[k-1].
CENTRE_SURROUND_PAIRS = ((1, 3), (1, 4), (2, 4), (2, 5))
# Dilations of the B3-spline blur applied to the contrast map before squashing.
SMOOTHING_DILATIONS = (1, 2)
# Contrast on photos and 1/f-noise frames mostly lies in 0.03..0.2; these constants map
# that to roughly 0.2..0.95, and a flat region (contrast 0) to 0.08.
SQUASH_GAIN = 30.0
SQUASH_OFFSET = 0.08

CHANNELS = len(OPPONENT_MATRIX)


def build_model() -> onnx.ModelProto:
    """Return the default saliency model; identical on every call."""
    graph = _Graph()
    coarse = graph.node(
        "AveragePool",
        [INPUT_NAME],
        "pool_to_coarse_grid",
        kernel_shape=[POOL_STRIDE, POOL_STRIDE],
        strides=[POOL_STRIDE, POOL_STRIDE],
        ceil_mode=1,
        count_include_pad=0,
    )
    opponent = _opponent_colour(graph, coarse)
    levels = _scale_space(graph, opponent)
    contrast = _centre_surround_contrast(graph, levels)
    squashed = _squash(graph, _smooth_contrast(graph, contrast))
    _resize_to_input(graph, squashed)
    return _assemble(graph)


def receptive_field_radius() -> int:
    """Largest distance (pixels, per axis) from an output pixel to an input pixel it reads.

    An output pixel at phase ``j`` inside its coarse cell interpolates two neighbouring
    cells (half-pixel bilinear resize); each of those reads ``coarse_radius`` cells either
    side through the blur cascades; each cell averages ``POOL_STRIDE`` pixels.
    """
    dilations = LEVEL_DILATIONS + SMOOTHING_DILATIONS
    coarse_radius = sum(len(B3_SPLINE_TAPS) // 2 * dilation for dilation in dilations)
    radius = 0
    for phase in range(POOL_STRIDE):
        source = (phase + 0.5) / POOL_STRIDE - 0.5  # position in coarse cells
        first_cell = math.floor(source)
        last_cell = first_cell if source == first_cell else first_cell + 1
        first_pixel = (first_cell - coarse_radius) * POOL_STRIDE
        last_pixel = (last_cell + coarse_radius + 1) * POOL_STRIDE - 1
        radius = max(radius, phase - first_pixel, last_pixel - phase)
    return radius


def model_metadata() -> dict[str, str]:
    """The ``metadata_props`` written into the model (all values are strings)."""
    return {
        "name": DEFAULT_MODEL_NAME,
        "description": (
            "Classical multi-scale centre-surround colour contrast (Itti et al. 1998; "
            "Achanta et al. 2009) in opponent colour space; fully local, no training."
        ),
        "receptive_field_radius": str(receptive_field_radius()),
        "pad_multiple": "1",
        "tile_alignment": str(POOL_STRIDE),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the model to ``--output`` (default: the shipped path)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args(argv)
    model = build_model()
    onnx.checker.check_model(model, full_check=True)
    serialized = model.SerializeToString()
    atomic_write(args.output, lambda handle: handle.write(serialized))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


class _Graph:
    """Collects nodes and float32 initializers under stable, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, values: object, dtype: type = np.float32) -> str:
        array = np.asarray(values, dtype=dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def constant_names(self) -> set[str]:
        return {tensor.name for tensor in self.initializers}

    def node(self, op_type: str, inputs: list[str], name: str, **attributes: object) -> str:
        """Add a node whose single output is named after the node; return that name."""
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name


def _opponent_colour(graph: _Graph, coarse: str) -> str:
    """ImageNet-normalised RGB -> (intensity, red-green, blue-yellow)."""
    std = graph.constant("imagenet_std", np.reshape(IMAGENET_STD, (1, CHANNELS, 1, 1)))
    mean = graph.constant("imagenet_mean", np.reshape(IMAGENET_MEAN, (1, CHANNELS, 1, 1)))
    scaled = graph.node("Mul", [coarse, std], "denormalise_scale")
    rgb = graph.node("Add", [scaled, mean], "denormalise_rgb")
    weights = graph.constant(
        "opponent_matrix", np.reshape(OPPONENT_MATRIX, (CHANNELS, CHANNELS, 1, 1))
    )
    return graph.node("Conv", [rgb, weights], "opponent_colour", kernel_shape=[1, 1])


def _scale_space(graph: _Graph, level_zero: str) -> list[str]:
    """Levels 0..len(LEVEL_DILATIONS): each one the previous blurred by a dilated B3 spline."""
    levels = [level_zero]
    for index, dilation in enumerate(LEVEL_DILATIONS, start=1):
        levels.append(_blur(graph, levels[-1], f"level{index}", dilation, CHANNELS))
    return levels


def _smooth_contrast(graph: _Graph, contrast: str) -> str:
    """Blur the contrast map, filling the dips that |centre - surround| has on edges."""
    for index, dilation in enumerate(SMOOTHING_DILATIONS, start=1):
        contrast = _blur(graph, contrast, f"smoothed_contrast{index}", dilation, 1)
    return contrast


def _blur(graph: _Graph, source: str, name: str, dilation: int, channels: int) -> str:
    """Separable B3-spline blur per channel, dilated, with edge-replicated borders."""
    taps = np.asarray(B3_SPLINE_TAPS, dtype=np.float32)
    rows_name, columns_name = f"b3_rows_{channels}ch", f"b3_columns_{channels}ch"
    if rows_name not in graph.constant_names():
        graph.constant(rows_name, np.tile(taps.reshape(1, -1), (channels, 1, 1, 1)))
        graph.constant(columns_name, np.tile(taps.reshape(-1, 1), (channels, 1, 1, 1)))
    border = len(taps) // 2 * dilation
    pads = graph.constant(f"{name}_pads", [0, 0, border, border] * 2, np.int64)
    padded = graph.node("Pad", [source, pads], f"{name}_edge_pad", mode="edge")
    rows = graph.node(
        "Conv",
        [padded, rows_name],
        f"{name}_blur_rows",
        group=channels,
        kernel_shape=[1, len(taps)],
        dilations=[1, dilation],
    )
    return graph.node(
        "Conv",
        [rows, columns_name],
        name,
        group=channels,
        kernel_shape=[len(taps), 1],
        dilations=[dilation, 1],
    )


def _centre_surround_contrast(graph: _Graph, levels: list[str]) -> str:
    """Mean over CENTRE_SURROUND_PAIRS of the opponent-space distance centre - surround."""
    differences = [
        graph.node("Sub", [levels[centre], levels[surround]], f"difference_{centre}_{surround}")
        for centre, surround in CENTRE_SURROUND_PAIRS
    ]
    stacked = graph.node("Concat", differences, "differences", axis=1)
    squared = graph.node("Mul", [stacked, stacked], "squared_differences")
    pair_count = len(CENTRE_SURROUND_PAIRS)
    # Sums each pair's three channel squares: block-diagonal ones.
    per_pair = np.kron(np.eye(pair_count), np.ones((1, CHANNELS)))
    pair_sum = graph.constant("pair_channel_sum", per_pair.reshape(pair_count, -1, 1, 1))
    squared_distance = graph.node(
        "Conv", [squared, pair_sum], "squared_distances", kernel_shape=[1, 1]
    )
    distance = graph.node("Sqrt", [squared_distance], "distances")
    pair_mean = graph.constant("pair_mean", np.full((1, pair_count, 1, 1), 1 / pair_count))
    return graph.node("Conv", [distance, pair_mean], "contrast", kernel_shape=[1, 1])


def _squash(graph: _Graph, contrast: str) -> str:
    """Fixed map to [0, 1]: sigmoid(SQUASH_GAIN * (contrast - SQUASH_OFFSET))."""
    gain = graph.constant("squash_gain", [[[[SQUASH_GAIN]]]])
    bias = graph.constant("squash_bias", [-SQUASH_GAIN * SQUASH_OFFSET])
    logit = graph.node("Conv", [contrast, gain, bias], "squash_logit", kernel_shape=[1, 1])
    return graph.node("Sigmoid", [logit], "coarse_saliency")


def _resize_to_input(graph: _Graph, coarse_saliency: str) -> None:
    """Bilinear upsampling by POOL_STRIDE, then crop to the input's H x W."""
    scales = graph.constant("upsample_scales", [1, 1, POOL_STRIDE, POOL_STRIDE])
    upsampled = graph.node(
        "Resize",
        [coarse_saliency, "", scales],
        "upsampled",
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )
    size = graph.node("Shape", [INPUT_NAME], "input_height_width", start=2, end=4)
    origin = graph.constant("crop_origin", [0, 0], np.int64)
    axes = graph.constant("crop_axes", [2, 3], np.int64)
    graph.nodes.append(
        helper.make_node(
            "Slice", [upsampled, origin, size, axes], [OUTPUT_NAME], name="crop_to_input"
        )
    )


def _assemble(graph: _Graph) -> onnx.ModelProto:
    image = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, [1, CHANNELS, "height", "width"]
    )
    saliency = helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, [1, 1, "height", "width"]
    )
    onnx_graph = helper.make_graph(
        graph.nodes, DEFAULT_MODEL_NAME, [image], [saliency], graph.initializers
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
    )
    helper.set_model_props(model, model_metadata())
    return model


if __name__ == "__main__":
    main()
