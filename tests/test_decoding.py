"""decode_clip behaviour: which frames come back, at what size, and in which colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.clips import ffmpeg_exe, make_clip, make_flat_rgb_clip, make_raw_yuv

from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.decoding import decode_clip, inference_geometry
from saliency_assets.core.decode.sampling import sample_indices

# Kr, Kb of each matrix; RGB expectations are computed from them in floating point.
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}
FLAT_YUV = (110, 90, 170)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decoding_clips")


@pytest.fixture(scope="module")
def long_mp4(clip_dir) -> Path:
    return make_clip(clip_dir / "long.mp4", 64, 48, 20)


@pytest.fixture(scope="module")
def long_mkv(clip_dir) -> Path:
    """Matroska states no frame count, so spread mode has to count packets."""
    return make_clip(clip_dir / "long.mkv", 64, 48, 20)


@pytest.fixture(scope="module")
def short_mp4(clip_dir) -> Path:
    return make_clip(clip_dir / "short.mp4", 64, 48, 5)


@pytest.mark.parametrize(
    ("width", "height", "short_side", "expected"),
    [
        (1920, 1080, 256, (456, 256)),
        (1080, 1920, 256, (256, 456)),
        (853, 481, 256, (456, 256)),
        (3840, 2160, 384, (680, 384)),
        (64, 48, 32, (40, 32)),
        (100, 100, 3, (8, 8)),
        (960, 540, 250, (448, 248)),
    ],
)
def test_inference_geometry_scales_the_short_side_and_rounds_to_8(
    width, height, short_side, expected
):
    assert inference_geometry(width, height, short_side) == expected


def test_inference_geometry_rejects_empty_sizes():
    with pytest.raises(ValueError):
        inference_geometry(0, 480, 256)


def test_head_mode_takes_reference_indices_from_the_first_frames(long_mp4):
    decoded = decode_clip(ClipSource(long_mp4), SamplingPlan(max_frames=8, frame_samples=4))
    assert [frame.index for frame in decoded.frames] == [0, 2, 4, 6]
    assert decoded.clip_frames == 20
    assert decoded.decoder == "pyav"


def test_head_mode_on_a_short_clip_uses_its_real_length(short_mp4):
    """The reference samples min(max_frames, len) frames: 5 frames, 4 samples -> step 1."""
    decoded = decode_clip(ClipSource(short_mp4), SamplingPlan(max_frames=8, frame_samples=4))
    assert [frame.index for frame in decoded.frames] == [0, 1, 2, 3]
    assert decoded.clip_frames == 5


def test_spread_mode_uses_the_header_frame_count(long_mp4):
    plan = SamplingPlan(max_frames=4, frame_samples=4, sampling="spread")
    decoded = decode_clip(ClipSource(long_mp4), plan)
    assert [frame.index for frame in decoded.frames] == sample_indices(plan, 20) == [2, 7, 12, 17]
    assert decoded.clip_frames == 20


def test_spread_mode_counts_packets_when_the_header_has_no_count(long_mkv):
    plan = SamplingPlan(max_frames=3, frame_samples=3, sampling="spread")
    decoded = decode_clip(ClipSource(long_mkv), plan)
    assert [frame.index for frame in decoded.frames] == [3, 10, 16]
    assert decoded.clip_frames == 20


def test_sampled_frames_are_the_frames_at_those_indices(long_mp4):
    every = decode_clip(ClipSource(long_mp4), SamplingPlan(max_frames=20, frame_samples=20))
    spread = decode_clip(
        ClipSource(long_mp4), SamplingPlan(max_frames=3, frame_samples=3, sampling="spread")
    )
    for frame in spread.frames:
        np.testing.assert_array_equal(frame.luma, every.frames[frame.index].luma)
    assert not np.array_equal(every.frames[0].luma, every.frames[1].luma)


def test_decoding_is_deterministic(long_mp4):
    plan = SamplingPlan(max_frames=6, frame_samples=3, inference_size=32)
    first, second = (decode_clip(ClipSource(long_mp4), plan) for _ in range(2))
    for a, b in zip(first.frames, second.frames, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.luma, b.luma)


def test_native_mode_returns_yuv420_planes_only(long_mp4):
    frame = decode_clip(ClipSource(long_mp4), SamplingPlan(max_frames=1)).frames[0]
    assert frame.rgb is None
    assert frame.luma.shape == (48, 64) and frame.luma.dtype == np.uint8
    assert [plane.shape for plane in frame.chroma] == [(24, 32), (24, 32)]
    assert frame.luma.flags.c_contiguous


@pytest.mark.parametrize(("width", "height"), [(96, 54), (54, 96)])
def test_inference_mode_returns_rgb_and_luma_at_inference_geometry(clip_dir, width, height):
    path = make_clip(clip_dir / f"inference_{width}x{height}.mp4", width, height, 3)
    decoded = decode_clip(ClipSource(path), SamplingPlan(max_frames=3, inference_size=32))
    expected_w, expected_h = inference_geometry(width, height, 32)
    assert (decoded.width, decoded.height) == (expected_w, expected_h)
    assert (decoded.source_width, decoded.source_height) == (width, height)
    for frame in decoded.frames:
        assert frame.chroma is None
        assert frame.rgb.shape == (expected_h, expected_w, 3) and frame.rgb.dtype == np.uint8
        assert frame.luma.shape == (expected_h, expected_w) and frame.luma.dtype == np.uint8


def test_inference_luma_is_the_area_scaled_native_luma(clip_dir):
    """A 2:1 area downscale is the mean of each 2x2 block."""
    path = make_clip(clip_dir / "halve.mkv", 128, 64, 2, codec="ffv1")
    native = decode_clip(ClipSource(path), SamplingPlan(max_frames=1)).frames[0].luma
    scaled = decode_clip(ClipSource(path), SamplingPlan(max_frames=1, inference_size=32))
    blocks = native.reshape(32, 2, 64, 2).astype(float).mean(axis=(1, 3))
    assert np.abs(scaled.frames[0].luma.astype(float) - blocks).max() <= 1


def test_inference_mode_on_a_rotated_clip_keeps_display_orientation(clip_dir):
    path = make_clip(clip_dir / "rot_inference.mp4", 96, 48, 2, rotation=270)
    decoded = decode_clip(ClipSource(path), SamplingPlan(max_frames=2, inference_size=24))
    assert (decoded.source_width, decoded.source_height) == (48, 96)
    assert (decoded.width, decoded.height) == (24, 48)
    assert decoded.rotation == 270


def test_raw_inference_mode_uses_the_untagged_rule(clip_dir):
    path = make_raw_yuv(clip_dir / "raw_inference.yuv", 64, 48, 2, "yuv420p10le")
    decoded = decode_clip(
        ClipSource(path, 64, 48, "yuv420p10le"), SamplingPlan(max_frames=2, inference_size=16)
    )
    assert decoded.decoder == "rawvideo"
    assert decoded.frames[1].rgb.shape == (16, 24, 3)


def expected_rgb(yuv, matrix: str, full_range: bool) -> np.ndarray:
    kr, kb = MATRICES[matrix]
    y, u, v = yuv
    if full_range:
        y, u, v = y / 255, (u - 128) / 255, (v - 128) / 255
    else:
        y, u, v = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    red, blue = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    green = (y - kr * red - kb * blue) / (1 - kr - kb)
    return np.clip(np.round(np.array([red, green, blue]) * 255), 0, 255)


COLOUR_CASES = [
    # (colorspace tag, range tag, height, matrix expected, full range expected)
    ("bt601", "tv", 48, "bt601", False),
    ("bt709", "tv", 48, "bt709", False),
    ("bt709", "pc", 48, "bt709", True),
    ("bt601", "pc", 48, "bt601", True),
    ("bt2020", "tv", 48, "bt2020", False),
    (None, None, 48, "bt601", False),
    (None, None, 720, "bt709", False),
    (None, "pc", 48, "bt601", True),
    ("bt601", None, 720, "bt601", False),
]


@pytest.mark.parametrize(("colorspace", "color_range", "height", "matrix", "full"), COLOUR_CASES)
def test_flat_colour_converts_with_the_streams_matrix_and_range(
    clip_dir, colorspace, color_range, height, matrix, full
):
    width = height * 16 // 9 if height >= 720 else 64
    path = make_clip(
        clip_dir / f"flat_{colorspace}_{color_range}_{height}.mp4",
        width,
        height,
        1,
        colorspace=colorspace,
        color_range=color_range,
        flat_yuv=FLAT_YUV,
    )
    frame = decode_clip(ClipSource(path), SamplingPlan(max_frames=1, inference_size=32)).frames[0]
    assert np.ptp(frame.rgb.reshape(-1, 3), axis=0).max() == 0
    got = frame.rgb[0, 0].astype(float)
    assert np.abs(got - expected_rgb(FLAT_YUV, matrix, full)).max() <= 1
    for other in MATRICES:
        for other_range in (False, True):
            if (other, other_range) != (matrix, full):
                assert np.abs(got - expected_rgb(FLAT_YUV, other, other_range)).max() > 2
    assert np.unique(frame.luma).tolist() == [FLAT_YUV[0]]


@pytest.mark.parametrize("height", [48, 720])
def test_rgb_source_keeps_its_colour_in_inference_mode(clip_dir, height):
    """An RGB stream is scaled through YUV and back with one matrix, whatever its size."""
    width = height * 16 // 9 if height >= 720 else 64
    path = make_flat_rgb_clip(clip_dir / f"rgb_{height}.mkv", width, height, (200, 100, 50))
    plan = SamplingPlan(max_frames=1, inference_size=32)
    for ffmpeg_bin in (None, ffmpeg_exe()):
        decoded = decode_clip(ClipSource(path), plan, ffmpeg_bin=ffmpeg_bin)
        assert decoded.pix_fmt == "bgr0"
        rgb = decoded.frames[0].rgb.reshape(-1, 3).astype(int)
        assert np.abs(rgb - [200, 100, 50]).max() <= 1
