"""The embedded default saliency model: reproducible, within its I/O contract, local, salient."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from saliency_assets.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH
from saliency_assets.models.build_default_model import build_model, receptive_field_radius

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TILE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(DEFAULT_MODEL_PATH)


@pytest.fixture(scope="module")
def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(DEFAULT_MODEL_PATH), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def radius(metadata: dict[str, str]) -> int:
    return int(metadata["receptive_field_radius"])


def normalise(rgb01: np.ndarray) -> np.ndarray:
    """HxWx3 RGB in [0, 1] -> the model's ImageNet-normalised [1, 3, H, W] input."""
    normalised = (rgb01.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A normalised frame of blocky colour noise (structure at several scales)."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((height, width, 3), dtype=np.float32)
    for block in (1, 8, 32):
        coarse = rng.random((height // block + 1, width // block + 1, 3), dtype=np.float32)
        rgb += np.repeat(np.repeat(coarse, block, 0), block, 1)[:height, :width] / 3
    return normalise(rgb)


def saliency(session: ort.InferenceSession, frame: np.ndarray, pad_multiple: int = 1) -> np.ndarray:
    """Run the model as the engine does: zero-pad bottom/right to pad_multiple, crop back."""
    height, width = frame.shape[2:]
    bottom, right = -height % pad_multiple, -width % pad_multiple
    padded = np.pad(frame, ((0, 0), (0, 0), (0, bottom), (0, right)))
    (saliency_map,) = session.run(["saliency_map"], {"input": padded})
    return saliency_map[:, :, :height, :width]


def tiled_saliency(
    session: ort.InferenceSession, frame: np.ndarray, core: int, margin: int, alignment: int
) -> np.ndarray:
    """Run core x core tiles, each with `margin` context, windows starting on `alignment`."""
    height, width = frame.shape[2:]
    result = np.full((1, 1, height, width), np.nan, dtype=np.float32)
    for top in range(0, height, core):
        for left in range(0, width, core):
            window_top = max(0, top - margin) // alignment * alignment
            window_left = max(0, left - margin) // alignment * alignment
            bottom, right = min(height, top + core), min(width, left + core)
            window = frame[:, :, window_top : bottom + margin, window_left : right + margin]
            tile = saliency(session, np.ascontiguousarray(window))[0, 0]
            result[0, 0, top:bottom, left:right] = tile[
                top - window_top : bottom - window_top, left - window_left : right - window_left
            ]
    return result


def test_shipped_file_is_what_the_builder_produces() -> None:
    assert build_model().SerializeToString() == DEFAULT_MODEL_PATH.read_bytes()


def test_builder_is_deterministic() -> None:
    assert build_model().SerializeToString() == build_model().SerializeToString()


def test_model_is_small_and_passes_the_full_checker(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert DEFAULT_MODEL_PATH.stat().st_size < 100_000
    assert model.ir_version == 8
    assert [(opset.domain, opset.version) for opset in model.opset_import] == [("", 17)]


def test_io_contract_has_named_tensors_with_symbolic_height_and_width(
    model: onnx.ModelProto,
) -> None:
    def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
        shape = value_info.type.tensor_type.shape.dim
        return [dim.dim_value if dim.HasField("dim_value") else dim.dim_param for dim in shape]

    (image,), (saliency_map,) = model.graph.input, model.graph.output
    assert (image.name, dims(image)) == ("input", [1, 3, "height", "width"])
    assert (saliency_map.name, dims(saliency_map)) == ("saliency_map", [1, 1, "height", "width"])
    float32 = onnx.TensorProto.FLOAT
    assert image.type.tensor_type.elem_type == saliency_map.type.tensor_type.elem_type == float32


def test_metadata_describes_the_model(metadata: dict[str, str]) -> None:
    assert metadata["name"] == DEFAULT_MODEL_NAME
    assert metadata["description"]
    assert int(metadata["receptive_field_radius"]) == receptive_field_radius() > 0
    assert int(metadata["pad_multiple"]) >= 1
    assert int(metadata["tile_alignment"]) >= 1


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (3, 7), (64, 64), (481, 853), (540, 960), (1080, 1920)]
)
def test_output_is_a_unit_range_map_of_the_input_size(
    session: ort.InferenceSession, metadata: dict[str, str], height: int, width: int
) -> None:
    frame = random_frame(height, width)
    saliency_map = saliency(session, frame, int(metadata["pad_multiple"]))
    assert saliency_map.shape == (1, 1, height, width)
    assert saliency_map.dtype == np.float32
    assert np.isfinite(saliency_map).all()
    assert saliency_map.min() >= 0.0 and saliency_map.max() <= 1.0


def test_red_square_on_grey_is_salient(session: ort.InferenceSession) -> None:
    rgb = np.full((540, 960, 3), 0.5, dtype=np.float32)
    rgb[100:132, 100:132] = (1.0, 0.0, 0.0)
    saliency_map = saliency(session, normalise(rgb))[0, 0]
    inside, far_background = saliency_map[104:128, 104:128], saliency_map[:, 600:]
    assert inside.mean() > 0.8
    assert far_background.mean() < 0.15


def test_textured_patch_on_flat_grey_is_salient(session: ort.InferenceSession) -> None:
    rgb = np.full((540, 960, 3), 0.5, dtype=np.float32)
    blocks = np.random.default_rng(1).random((8, 8), dtype=np.float32)
    rgb[200:264, 400:464] = np.kron(blocks, np.ones((8, 8), dtype=np.float32))[..., None]
    saliency_map = saliency(session, normalise(rgb))[0, 0]
    inside, far_background = saliency_map[208:256, 408:456], saliency_map[:, 800:]
    assert inside.mean() > far_background.mean() + 0.2


@pytest.mark.parametrize(("top", "left"), [(340, 440), (0, 0)], ids=["centre", "corner"])
def test_output_ignores_pixels_beyond_the_receptive_field_radius(
    session: ort.InferenceSession, radius: int, top: int, left: int
) -> None:
    frame = random_frame(720, 960, seed=2)
    bottom, right = top + 41, left + 77
    probe = np.s_[top:bottom, left:right]
    near = np.zeros(frame.shape[2:], dtype=bool)
    near[max(0, top - radius) : bottom + radius, max(0, left - radius) : right + radius] = True
    changed = np.where(near, frame, random_frame(720, 960, seed=3))
    assert not np.array_equal(changed, frame)
    before = saliency(session, frame)[0, 0][probe]
    after = saliency(session, changed)[0, 0][probe]
    np.testing.assert_allclose(after, before, rtol=0, atol=TILE_TOLERANCE)


def test_pixels_just_inside_the_radius_still_matter(
    session: ort.InferenceSession, radius: int
) -> None:
    # The radius is an exact support bound, so the tail is tiny; 48 pixels inside it the
    # influence already exceeds the tiling tolerance, so a smaller margin would not do.
    frame = random_frame(64, 800, seed=4)
    changed = frame.copy()
    changed[:, :, :, 400 - radius + 48] += 20.0
    before, after = saliency(session, frame), saliency(session, changed)
    assert np.abs(after - before)[0, 0, 32, 400] > TILE_TOLERANCE


def test_tiled_run_with_radius_margin_equals_full_frame(
    session: ort.InferenceSession, metadata: dict[str, str], radius: int
) -> None:
    frame = random_frame(963, 1101, seed=5)
    alignment = int(metadata["tile_alignment"])
    tiled = tiled_saliency(session, frame, core=256, margin=radius, alignment=alignment)
    np.testing.assert_allclose(tiled, saliency(session, frame), rtol=0, atol=TILE_TOLERANCE)
