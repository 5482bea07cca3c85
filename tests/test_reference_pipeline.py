"""The reference-pipeline oracle reproduces the old per-clip behaviour (REFERENCE.md 5-10)."""

from __future__ import annotations

import json
import math
import stat
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.reference_pipeline import (
    TEMP_DIR_PREFIX,
    ReferenceDecodeError,
    main,
    reference_clip_statistics,
    reference_compute_clip,
    reference_decode,
    reference_decode_command,
    reference_frame_indices,
    reference_model_input,
    reference_pad,
    reference_saliency_map,
    reference_temporal_reduce,
)

CLIP_FRAMES = 10


@pytest.fixture(scope="module")
def ffmpeg_bin() -> str:
    """The real ffmpeg binary shipped by imageio-ffmpeg."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def _make_clip(ffmpeg: str, path: Path, width: int, height: int) -> Path:
    """Encode a 10-frame testsrc2 H.264 clip of the given size."""
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate=25",
        "-frames:v",
        str(CLIP_FRAMES),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def _make_conv_sigmoid_model(path: Path, weights: tuple[float, float, float], bias: float) -> Path:
    """Save ``sigmoid(1x1 conv over RGB)`` with the reference I/O names and dynamic H, W."""
    conv_weights = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(1, 3, 1, 1), "w")
    conv_bias = numpy_helper.from_array(np.asarray([bias], np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["saliency_map"]),
        ],
        "conv_sigmoid",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("saliency_map", TensorProto.FLOAT, [1, 1, "H", "W"])],
        initializer=[conv_weights, conv_bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def clip_64x48(ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_clip(ffmpeg_bin, tmp_path_factory.mktemp("clips") / "testsrc2.mp4", 64, 48)


@pytest.fixture(scope="module")
def clip_64x54(ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_clip(ffmpeg_bin, tmp_path_factory.mktemp("clips") / "testsrc2_54.mp4", 64, 54)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_conv_sigmoid_model(
        tmp_path_factory.mktemp("models") / "tiny.onnx", (0.8, -0.5, 0.3), 0.1
    )


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose map is sigmoid(0.5) everywhere, whatever the pixels."""
    return _make_conv_sigmoid_model(
        tmp_path_factory.mktemp("models") / "constant.onnx", (0.0, 0.0, 0.0), 0.5
    )


def _fake_ffmpeg(tmp_path: Path, exit_code: int, writes_output: bool) -> tuple[str, Path]:
    """A stand-in ffmpeg that logs its argv (and its output's folder) and exits as told."""
    log = tmp_path / "argv.log"
    touch = 'touch "$last"' if writes_output else ":"
    script = tmp_path / "fake-ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{log}"\n'
        'for a; do last="$a"; done\n'
        f"{touch}\n"
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


# --- section 7: frame sampling -------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "samples", "expected"),
    [
        (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (8, 5, [0, 1, 2, 3, 4]),
        (8, 4, [0, 2, 4, 6]),
        (8, 3, [0, 2, 4]),
        (3, 8, [0, 1, 2]),
        (30, 8, [0, 3, 6, 9, 12, 15, 18, 21]),
        (10, 4, [0, 2, 4, 6]),
        (1, 5, [0]),
        (1, 1, [0]),
        (8, 1, [0]),
        (30, 1, [0]),
        (1000, 1, [0]),
        (0, 8, []),
    ],
)
def test_frame_indices_follow_the_reference_table(total: int, samples: int, expected: list[int]):
    assert reference_frame_indices(total, samples) == expected


# --- section 9-10: reducers and statistics ----------------------------------------------------


def _constant_frames(values: list[float], shape: tuple[int, int] = (2, 2)):
    luma = np.zeros(shape, dtype=np.uint8)
    return [(np.full(shape, v, dtype=np.float32), luma) for v in values]


def test_ema_of_masks_0_half_1_with_alpha_half_is_0625():
    result = reference_temporal_reduce(_constant_frames([0.0, 0.5, 1.0]), (2, 2), "ema", 0.5)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, 0.625)


def test_ema_with_alpha_one_keeps_only_the_last_frame():
    result = reference_temporal_reduce(_constant_frames([0.9, 0.1, 0.3]), (2, 2), "ema", 1.0)
    np.testing.assert_array_equal(result, np.float32(0.3))


def test_mean_divides_the_float32_sum_by_the_sample_count():
    values = [0.1, 0.2, 0.7]
    result = reference_temporal_reduce(_constant_frames(values), (2, 2), "mean")
    expected = (np.float32(0.1) + np.float32(0.2) + np.float32(0.7)) / np.float32(3)
    np.testing.assert_array_equal(result, expected)


def test_max_starts_from_zeros():
    result = reference_temporal_reduce(_constant_frames([-0.5, -0.2]), (2, 2), "max", clip=False)
    np.testing.assert_array_equal(result, 0.0)
    result = reference_temporal_reduce(_constant_frames([0.2, 0.6, 0.4]), (2, 2), "max")
    np.testing.assert_array_equal(result, np.float32(0.6))


def test_motion_weighted_is_dominated_by_the_first_frame():
    shape = (4, 4)
    masks = [np.ones(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    lumas = [np.full(shape, level, dtype=np.uint8) for level in (10, 11, 13)]
    result = reference_temporal_reduce(zip(masks, lumas, strict=True), shape, "motion-weighted")
    # w = 1, 1/255, 2/255: the first frame carries 255/258 of the weight.
    np.testing.assert_allclose(result, 255.0 / 258.0, rtol=1e-6)


def test_motion_weight_of_a_still_frame_is_floored_at_1e_6():
    shape = (2, 2)
    masks = [np.zeros(shape, np.float32), np.ones(shape, np.float32)]
    lumas = [np.full(shape, 50, dtype=np.uint8)] * 2
    result = reference_temporal_reduce(zip(masks, lumas, strict=True), shape, "motion-weighted")
    np.testing.assert_allclose(result, 1e-6 / (1.0 + 1e-6), rtol=1e-5)


@pytest.mark.parametrize(("aggregator", "alpha"), [("median", 0.6), ("ema", 0.0), ("mean", 1.5)])
def test_unknown_reducer_or_alpha_outside_0_1_is_rejected(aggregator: str, alpha: float):
    with pytest.raises(ValueError):
        reference_temporal_reduce(_constant_frames([0.5]), (2, 2), aggregator, alpha)


def test_statistics_of_the_upstream_map_are_mean_half_var_eighth():
    assert reference_clip_statistics([[0.0, 0.5], [1.0, 0.5]]) == (0.5, 0.125)


def test_statistics_of_an_empty_map_fail():
    with pytest.raises(ValueError):
        reference_clip_statistics(np.zeros((0, 4), np.float32))


# --- section 8: pixels ---------------------------------------------------------------------


def test_model_input_uses_bt709_limited_range_and_imagenet_normalisation():
    y = np.array([[16, 235], [235, 16]], dtype=np.uint8)
    neutral = np.full((1, 1), 128, dtype=np.uint8)
    tensor = reference_model_input(y, neutral, neutral)
    assert tensor.shape == (1, 3, 2, 2) and tensor.dtype == np.float32
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(tensor[0, :, 0, 1], (1.0 - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 0, 0], (0.0 - mean) / std, rtol=1e-6)


def test_chroma_is_repeated_2x2_and_cropped_to_luma():
    y = np.full((4, 6), 126, dtype=np.uint8)
    u = np.full((2, 3), 128, dtype=np.uint8)
    v = np.array([[128, 240, 128], [16, 128, 128]], dtype=np.uint8)
    red = reference_model_input(y, u, v)[0, 0]
    assert np.all(red[:2, 2:4] == red[0, 2]) and red[0, 2] > red[0, 0] > red[2, 0]


def test_padding_is_zero_bottom_right_to_a_multiple_of_32():
    tensor = np.ones((1, 3, 48, 64), np.float32)
    padded = reference_pad(tensor)
    assert padded.shape == (1, 3, 64, 64)
    assert padded[:, :, :48].min() == 1.0 and padded[:, :, 48:].max() == 0.0
    assert reference_pad(padded) is padded


# --- section 6: decode --------------------------------------------------------------------


def test_decode_command_shape_for_a_container():
    cmd = reference_decode_command("ffmpeg", Path("a/clip.mp4"), 64, 48, 8, Path("/t/clip.yuv"))
    assert cmd == [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        "a/clip.mp4",
        "-frames:v",
        "8",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "rawvideo",
        "/t/clip.yuv",
    ]


def test_decode_command_adds_rawvideo_input_flags_for_yuv_any_case():
    cmd = reference_decode_command("ff", Path("x.YUV"), 1920, 1080, 0, Path("o.yuv"))
    assert cmd[5:13] == [
        "-f",
        "rawvideo",
        "-video_size",
        "1920x1080",
        "-pix_fmt",
        "yuv420p",
        "-i",
        "x.YUV",
    ]
    assert cmd[13:15] == ["-frames:v", "1"]


def test_decode_writes_the_head_of_the_clip(ffmpeg_bin: str, clip_64x48: Path, tmp_path: Path):
    raw = reference_decode(ffmpeg_bin, clip_64x48, 64, 48, 8, tmp_path)
    assert raw == tmp_path / "clip.yuv"
    assert raw.stat().st_size == 8 * 64 * 48 * 3 // 2


def test_decode_runs_in_a_prefixed_temporary_directory_removed_afterwards(
    tmp_path: Path, clip_64x48: Path, tiny_model: Path
):
    fake, log = _fake_ffmpeg(tmp_path, exit_code=0, writes_output=True)
    result = reference_compute_clip(fake, clip_64x48, 64, 48, tiny_model)
    output = Path(log.read_text().splitlines()[-1])
    assert output.name == "clip.yuv" and output.parent.name.startswith(TEMP_DIR_PREFIX)
    assert not output.parent.exists()
    # An empty decode counts as a success; the model step then finds no frames.
    assert result.status == "model-failed"


@pytest.mark.parametrize(("exit_code", "writes_output"), [(1, True), (0, False)])
def test_decode_failure_statuses(tmp_path: Path, tiny_model: Path, exit_code, writes_output):
    fake, _ = _fake_ffmpeg(tmp_path, exit_code=exit_code, writes_output=writes_output)
    with pytest.raises(ReferenceDecodeError):
        reference_decode(fake, tmp_path / "x.mp4", 64, 48, 8, tmp_path)
    result = reference_compute_clip(fake, tmp_path / "x.mp4", 64, 48, tiny_model)
    assert result.status == "decode-failed" and result.mean is None


def test_missing_ffmpeg_binary_is_not_caught(tmp_path: Path, tiny_model: Path):
    with pytest.raises(FileNotFoundError):
        reference_compute_clip(str(tmp_path / "no-ffmpeg"), tmp_path / "x.mp4", 64, 48, tiny_model)


# --- sections 5.3, 8.1, 11.1: statuses ---------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(0, 48), (64, 0), (-1, -1)])
def test_non_positive_geometry_is_missing_geometry_without_decoding(
    tmp_path: Path, tiny_model: Path, width: int, height: int
):
    result = reference_compute_clip(
        str(tmp_path / "no-ffmpeg"), tmp_path / "x.mp4", width, height, tiny_model
    )
    assert result.status == "missing-geometry"


def test_height_not_multiple_of_8_is_rejected_before_the_model_is_looked_up(tmp_path: Path):
    raw = tmp_path / "clip.yuv"
    raw.write_bytes(bytes(64 * 54 * 3 // 2))
    with pytest.raises(ValueError, match="divisible by 8"):
        reference_saliency_map(raw, 64, 54, tmp_path / "missing.onnx")


def test_540_line_style_clip_is_model_failed_unless_the_check_is_off(
    ffmpeg_bin: str, clip_64x54: Path, tiny_model: Path
):
    rejected = reference_compute_clip(ffmpeg_bin, clip_64x54, 64, 54, tiny_model)
    assert rejected.status == "model-failed" and "divisible by 8" in rejected.error
    accepted = reference_compute_clip(
        ffmpeg_bin, clip_64x54, 64, 54, tiny_model, enforce_height_multiple_of_8=False
    )
    assert accepted.ok and 0.0 < accepted.mean < 1.0


def test_missing_model_is_model_failed(ffmpeg_bin: str, clip_64x48: Path, tmp_path: Path):
    result = reference_compute_clip(ffmpeg_bin, clip_64x48, 64, 48, tmp_path / "missing.onnx")
    assert result.status == "model-failed" and "not found" in result.error


def test_bad_alpha_is_model_failed_after_decoding(ffmpeg_bin: str, clip_64x48, tiny_model):
    result = reference_compute_clip(ffmpeg_bin, clip_64x48, 64, 48, tiny_model, ema_alpha=0.0)
    assert result.status == "model-failed"


# --- end to end through real ffmpeg and onnxruntime -----------------------------------------


def test_constant_model_gives_its_constant_through_the_whole_pipeline(
    ffmpeg_bin: str, clip_64x48: Path, constant_model: Path
):
    result = reference_compute_clip(ffmpeg_bin, clip_64x48, 64, 48, constant_model)
    assert result.ok
    assert result.mean == pytest.approx(1.0 / (1.0 + math.exp(-0.5)), rel=1e-6)
    assert result.var == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("aggregator", ["mean", "ema", "max", "motion-weighted"])
def test_tiny_model_gives_finite_statistics_for_every_reducer(
    ffmpeg_bin: str, clip_64x48: Path, tiny_model: Path, aggregator: str
):
    result = reference_compute_clip(
        ffmpeg_bin, clip_64x48, 64, 48, tiny_model, temporal_aggregator=aggregator
    )
    assert result.ok and result.error is None
    assert 0.0 < result.mean < 1.0 and 0.0 < result.var < 0.25


def test_real_student_model_gives_values_in_0_1(
    ffmpeg_bin: str, clip_64x48: Path, shared_models_dir: Path
):
    model = shared_models_dir / "saliency_student_v1.onnx"
    if not model.is_file():
        pytest.skip(f"{model} not found; the real-model check needs the shared v1 weights")
    result = reference_compute_clip(ffmpeg_bin, clip_64x48, 64, 48, model)
    assert result.ok, result.error
    assert math.isfinite(result.mean) and 0.0 < result.mean < 1.0
    assert math.isfinite(result.var) and 0.0 < result.var < 0.25


def test_cli_prints_the_result_as_json(
    ffmpeg_bin: str, clip_64x48: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
):
    argv = [
        "--src",
        str(clip_64x48),
        "--width",
        "64",
        "--height",
        "48",
        "--model",
        str(tiny_model),
        "--ffmpeg-bin",
        ffmpeg_bin,
        "--frame-samples",
        "4",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok" and 0.0 < report["mean"] < 1.0
    assert set(report) == {"status", "mean", "var", "error", "wall_seconds"}
