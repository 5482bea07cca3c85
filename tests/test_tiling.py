"""Tiled full-resolution inference gives the single call's map, and only tiles what it can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from support.clips import pattern_planes
from support.reference_pipeline import reference_model_input, reference_pad

from saliency_assets.core.decode.decoding import DecodedFrame
from saliency_assets.core.model import clip_saliency
from saliency_assets.core.model.clip_saliency import (
    STRIP_PIXELS,
    frame_saliency,
    rgb24_input,
    yuv420p_window_input,
)
from saliency_assets.core.model.preprocessing import model_input, rgb24_to_rgb, yuv420p_to_rgb
from saliency_assets.core.model.receptive_field import analyse_graph, tile_geometry
from saliency_assets.core.model.saliency_model import TILE_ABOVE_PIXELS, TILE_SIZE, SaliencyModel
from saliency_assets.core.model.tiling import TileGeometry, plan_tiles
from saliency_assets.models import DEFAULT_MODEL_PATH

TOLERANCE = 1e-6
# (model, frame height, frame width, tile size): frames several tiles big at a small tile size.
CASES = {
    "saliency_student_v1": (200, 330, 64),
    "saliency_student_v2": (200, 330, 64),
    "centre_surround_saliency_v1": (600, 900, 256),
}


@pytest.fixture(params=sorted(CASES))
def model_case(request) -> tuple[Path, int, int, int]:
    name = request.param
    if name == DEFAULT_MODEL_PATH.stem:
        return (DEFAULT_MODEL_PATH, *CASES[name])
    path = request.getfixturevalue("shared_models_dir") / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return (path, *CASES[name])


def yuv_frame(height: int, width: int, index: int = 3) -> DecodedFrame:
    luma, u_plane, v_plane = pattern_planes(width, height, index)
    return DecodedFrame(index=index, luma=luma, chroma=(u_plane, v_plane))


def reference_map(path: Path, frame: DecodedFrame) -> np.ndarray:
    """The reference's single full-frame call on a default-options session."""
    height, width = frame.luma.shape
    tensor = reference_pad(reference_model_input(frame.luma, *frame.chroma))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": tensor.astype(np.float32)})[0][0, 0, :height, :width]


def small_tile_model(path: Path, tile_size: int) -> SaliencyModel:
    return SaliencyModel(path, tile_size=tile_size, tile_above_pixels=0)


def test_tiled_frame_equals_the_reference_single_call(model_case):
    path, height, width, tile_size = model_case
    frame = yuv_frame(height, width)
    model = small_tile_model(path, tile_size)
    assert len(model.tiles_for(*reference_pad(np.zeros((1, 3, height, width))).shape[-2:])) >= 6

    tiled = frame_saliency(frame, model)

    assert tiled.shape == (height, width)
    assert np.abs(tiled - reference_map(path, frame)).max() <= TOLERANCE


def test_tiled_predict_of_a_whole_tensor_equals_the_single_call(model_case):
    path, height, width, tile_size = model_case
    frame = yuv_frame(height, width, index=7)
    tensor = model_input(yuv420p_to_rgb(frame.luma, *frame.chroma))
    untiled = SaliencyModel(path, tile_above_pixels=None)

    tiled = small_tile_model(path, tile_size).predict(tensor, height, width)

    assert untiled.tiles_for(*tensor.shape[-2:]) is None
    assert np.abs(tiled - untiled.predict(tensor, height, width)).max() <= TOLERANCE


@pytest.mark.parametrize(("height", "width"), [(288, 512), (291, 517), (64, 96)])
def test_inference_size_inputs_are_bit_identical_to_the_edge_padded_model_input(height, width):
    rgb = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = model_input(rgb24_to_rgb(rgb), pad_mode="edge")
    np.testing.assert_array_equal(rgb24_input(rgb), expected)


@pytest.mark.parametrize("strip_pixels", [STRIP_PIXELS, 1])  # 1: strips of two rows
@pytest.mark.parametrize(("height", "width"), [(1080, 1920), (541, 961), (48, 64)])
def test_window_inputs_are_bit_identical_to_the_whole_frame_model_input(
    height, width, strip_pixels, monkeypatch
):
    monkeypatch.setattr(clip_saliency, "STRIP_PIXELS", strip_pixels)
    rng = np.random.default_rng(height)
    chroma_shape = ((height + 1) // 2, (width + 1) // 2)
    shapes = [(height, width), chroma_shape, chroma_shape]
    planes = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    frame = DecodedFrame(index=0, luma=planes[0], chroma=(planes[1], planes[2]))
    whole = model_input(yuv420p_to_rgb(*planes))
    padded_height, padded_width = whole.shape[-2:]

    np.testing.assert_array_equal(
        yuv420p_window_input(frame, 0, padded_height, 0, padded_width), whole
    )
    window = yuv420p_window_input(frame, 8, padded_height - 8, 16, padded_width)
    np.testing.assert_array_equal(window, whole[:, :, 8 : padded_height - 8, 16:])


def test_odd_sized_frames_tile_like_the_single_call(shared_models_dir):
    path = shared_models_dir / "saliency_student_v1.onnx"
    frame = yuv_frame(197, 331)

    tiled = frame_saliency(frame, small_tile_model(path, 48))

    untiled = frame_saliency(frame, SaliencyModel(path, tile_above_pixels=None))
    assert np.abs(tiled - untiled).max() <= TOLERANCE


def test_edge_padded_rgb_frames_tile_like_the_single_call(shared_models_dir):
    path = shared_models_dir / "saliency_student_v2.onnx"
    rgb = np.stack(pattern_planes(300, 180, 2)[:1] * 3, axis=-1).astype(np.uint8)
    frame = DecodedFrame(index=0, luma=rgb[..., 0], rgb=rgb)

    tiled = frame_saliency(frame, small_tile_model(path, 64))

    tensor = model_input(rgb24_to_rgb(rgb), pad_mode="edge")
    untiled = SaliencyModel(path, tile_above_pixels=None).predict(tensor, 180, 300)
    assert np.abs(tiled - untiled).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("name", "radius", "alignment"),
    [("saliency_student_v1", 36, 8), ("saliency_student_v2", 54, 8)],
)
def test_student_geometry_is_derived_from_the_graph(shared_models_dir, name, radius, alignment):
    geometry = tile_geometry(shared_models_dir / f"{name}.onnx")

    assert geometry == TileGeometry(radius, alignment, alignment, "graph")


def test_bundled_model_geometry_comes_from_its_metadata_and_the_graph_bounds_it():
    declared = tile_geometry(DEFAULT_MODEL_PATH)
    derived = analyse_graph(onnx.load(str(DEFAULT_MODEL_PATH)).graph)

    assert (declared.radius, declared.alignment, declared.derived_from) == (277, 4, "metadata")
    assert derived.radius >= declared.radius
    assert derived.alignment == declared.alignment


def test_a_model_with_an_unbounded_receptive_field_is_never_tiled(tmp_path):
    path = global_context_model(tmp_path / "global.onnx")
    frame = yuv_frame(1080, 1920)
    model = SaliencyModel(path, tile_size=64, tile_above_pixels=0)

    saliency_map = frame_saliency(frame, model)

    assert tile_geometry(path) is None
    assert model.tiles_for(1088, 1920) is None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tensor = model_input(yuv420p_to_rgb(frame.luma, *frame.chroma))
    expected = session.run(None, {"input": tensor})[0][0, 0, :1080, :1920]
    assert np.abs(saliency_map - expected).max() <= TOLERANCE


def test_small_frames_keep_the_single_call_by_default():
    model = SaliencyModel(DEFAULT_MODEL_PATH)

    assert model.tiles_for(544, 960) is None
    assert model.tiles_for(1088, 1920) is None
    assert model.tiles_for(2176, 3840) is not None


@pytest.mark.parametrize(
    "geometry", [TileGeometry(36, 8), TileGeometry(277, 4), TileGeometry(5, 1)]
)
@pytest.mark.parametrize(("height", "width"), [(2176, 3840), (1088, 1920), (224, 352)])
def test_windows_are_aligned_cover_the_frame_and_keep_a_full_margin(geometry, height, width):
    tiles = plan_tiles(height, width, geometry, 256)

    covered = np.zeros((height, width), dtype=int)
    for tile in tiles:
        (row_start, row_stop), (col_start, col_stop) = tile.core_rows, tile.core_cols
        covered[row_start:row_stop, col_start:col_stop] += 1
        assert tile.top % geometry.alignment == 0 and tile.left % geometry.alignment == 0
        assert tile.top % 2 == 0 and tile.left % 2 == 0
        assert tile.top == 0 or row_start - tile.top >= geometry.radius
        assert tile.left == 0 or col_start - tile.left >= geometry.radius
        assert tile.bottom == height or tile.bottom - row_stop >= geometry.radius
        assert tile.right == width or tile.right - col_stop >= geometry.radius
    assert (covered == 1).all()


def test_default_tiles_bound_the_window_size_of_a_4k_frame():
    model = SaliencyModel(DEFAULT_MODEL_PATH)
    tiles = model.tiles_for(2176, 3840)
    largest = max((tile.bottom - tile.top) * (tile.right - tile.left) for tile in tiles)

    assert TILE_ABOVE_PIXELS < 2176 * 3840
    assert largest <= (TILE_SIZE + 2 * 280) ** 2


def global_context_model(path: Path) -> Path:
    """A [1,3,H,W] -> [1,1,H,W] model whose output mixes in the image's global mean."""
    weight = helper.make_tensor("weight", TensorProto.FLOAT, [1, 3, 1, 1], [0.3, 0.5, 0.2])
    nodes = [
        helper.make_node("Conv", ["input", "weight"], ["local"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["local"], ["global_mean"]),
        helper.make_node("Sub", ["local", "global_mean"], ["contrast"]),
        helper.make_node("Sigmoid", ["contrast"], ["saliency_map"]),
    ]
    graph = helper.make_graph(
        nodes,
        "global_context",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("saliency_map", TensorProto.FLOAT, [1, 1, "H", "W"])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
