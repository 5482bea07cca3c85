"""Native planes equal the reference tool's ffmpeg output, and the two backends agree.

The oracle is the real ffmpeg binary running the reference decode command
(``ffmpeg [raw flags] -i SRC -frames:v N -pix_fmt yuv420p -f rawvideo``, REFERENCE.md section 6).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_in_process
from support.clips import (
    binary_yuv420p_frames,
    ffmpeg_exe,
    has_encoder,
    make_clip,
    make_multi_video_clip,
    make_raw_yuv,
    run_ffmpeg,
    tag_rotation_with_binary,
)

from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.decoding import DecodedClip, decode_clip

ALL_FRAMES = SamplingPlan(max_frames=8, frame_samples=8)

# name -> (suffix, width, height, frames, make_clip keywords)
CONTAINER_CLIPS = {
    "h264_audio": (".mp4", 64, 48, 6, {"with_audio": True}),
    "h264_portrait": (".mp4", 270, 480, 3, {}),
    "h264_mkv": (".mkv", 96, 54, 4, {}),
    "mpeg4_odd": (".avi", 853, 481, 3, {"codec": "mpeg4"}),
    "vp9_odd_audio": (".webm", 65, 49, 4, {"codec": "vp9", "with_audio": True}),
    "hevc": (".mkv", 64, 48, 3, {"codec": "hevc"}),
    "av1": (".mkv", 64, 64, 3, {"codec": "av1"}),
    "h264_10bit": (".mp4", 64, 48, 4, {"pix_fmt": "yuv420p10le"}),
    "h264_444": (".mkv", 64, 48, 4, {"pix_fmt": "yuv444p"}),
    "h264_full_range": (".mp4", 64, 48, 4, {"pix_fmt": "yuvj420p", "color_range": "pc"}),
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parity_clips")


@pytest.fixture(scope="module")
def container_clip(clip_dir):
    """Encode each named clip once per module, on first use."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        suffix, width, height, frames, options = CONTAINER_CLIPS[name]
        codec = options.get("codec", "h264")
        if not has_encoder(codec):
            pytest.skip(f"no {codec} encoder in this PyAV build")
        if name not in made:
            made[name] = make_clip(clip_dir / f"{name}{suffix}", width, height, frames, **options)
        return made[name]

    return get


def assert_matches_binary(decoded: DecodedClip, reference: list) -> None:
    assert [frame.index for frame in decoded.frames] == list(range(len(reference)))
    for frame, (luma, u_plane, v_plane) in zip(decoded.frames, reference, strict=True):
        np.testing.assert_array_equal(frame.luma, luma)
        np.testing.assert_array_equal(frame.chroma[0], u_plane)
        np.testing.assert_array_equal(frame.chroma[1], v_plane)


def max_difference(decoded: DecodedClip, reference: list) -> int:
    pairs = [
        (plane, expected)
        for frame, planes in zip(decoded.frames, reference, strict=True)
        for plane, expected in zip((frame.luma, *frame.chroma), planes, strict=True)
    ]
    return max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in pairs)


@pytest.mark.parametrize("name", list(CONTAINER_CLIPS))
def test_native_planes_are_byte_identical_to_the_ffmpeg_binary(container_clip, name):
    path = container_clip(name)
    decoded = decode_clip(ClipSource(path), ALL_FRAMES)
    reference = binary_yuv420p_frames(path, decoded.width, decoded.height, 8)
    assert len(reference) == CONTAINER_CLIPS[name][3]
    assert max_difference(decoded, reference) == 0
    assert_matches_binary(decoded, reference)


@pytest.mark.parametrize(
    ("name", "source_pix_fmt"),
    [("h264_10bit", "yuv420p10le"), ("h264_444", "yuv444p"), ("h264_full_range", "yuvj420p")],
)
def test_non_420_8bit_sources_report_their_own_pixel_format(container_clip, name, source_pix_fmt):
    decoded = decode_clip(ClipSource(container_clip(name)), ALL_FRAMES)
    assert decoded.pix_fmt == source_pix_fmt
    assert decoded.frames[0].luma.dtype == np.uint8


def test_odd_geometry_chroma_rounds_up(container_clip):
    decoded = decode_clip(ClipSource(container_clip("mpeg4_odd")), ALL_FRAMES)
    assert decoded.frames[0].luma.shape == (481, 853)
    assert decoded.frames[0].chroma[0].shape == (241, 427)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_raw_yuv_matches_the_binary_reading_the_same_declaration(clip_dir, pix_fmt):
    path = make_raw_yuv(clip_dir / f"raw_{pix_fmt}.yuv", 65, 49, 4, pix_fmt)
    decoded = decode_clip(ClipSource(path, 65, 49, pix_fmt), ALL_FRAMES)
    reference = binary_yuv420p_frames(path, 65, 49, 8, raw_input=(65, 49, pix_fmt))
    assert_matches_binary(decoded, reference)
    assert decoded.pix_fmt == pix_fmt
    assert decoded.clip_frames == 4


@pytest.mark.parametrize(
    ("degrees", "hflip"), [(90, False), (180, False), (270, False), (90, True), (30, False)]
)
def test_rotation_follows_the_binary_autorotate(container_clip, clip_dir, degrees, hflip):
    source = container_clip("h264_audio")
    rotated = clip_dir / f"rotated_{degrees}_{hflip}.mp4"
    tag_rotation_with_binary(source, rotated, degrees, hflip=hflip)
    decoded = decode_clip(ClipSource(rotated), ALL_FRAMES)
    reference = binary_yuv420p_frames(rotated, decoded.width, decoded.height, 8)
    assert_matches_binary(decoded, reference)
    assert decoded.rotation == degrees % 360
    swapped = degrees in (90, 270)  # 30 degrees: ffmpeg's rotate filter keeps the frame size
    assert (decoded.width, decoded.height) == ((48, 64) if swapped else (64, 48))
    assert (decoded.source_width, decoded.source_height) == (decoded.width, decoded.height)


def test_rotation_turns_the_picture_counter_clockwise_for_display_rotation_90(
    container_clip, clip_dir
):
    source = container_clip("h264_audio")
    rotated = tag_rotation_with_binary(source, clip_dir / "ccw90.mp4", 90)
    upright = decode_clip(ClipSource(source), ALL_FRAMES).frames[0].luma
    turned = decode_clip(ClipSource(rotated), ALL_FRAMES).frames[0].luma
    np.testing.assert_array_equal(turned, np.rot90(upright, 1))


def test_pyav_written_rotation_reads_like_the_binary_written_one(clip_dir):
    written = make_clip(clip_dir / "pyav_rot.mp4", 64, 48, 3, rotation=90)
    plain = make_clip(clip_dir / "pyav_plain.mp4", 64, 48, 3)
    tagged = tag_rotation_with_binary(plain, clip_dir / "binary_rot.mp4", 90)
    ours = decode_clip(ClipSource(written), ALL_FRAMES)
    theirs = decode_clip(ClipSource(tagged), ALL_FRAMES)
    assert ours.rotation == theirs.rotation == 90
    for a, b in zip(ours.frames, theirs.frames, strict=True):
        np.testing.assert_array_equal(a.luma, b.luma)


def test_spread_frames_are_the_binary_frames_at_the_spread_indices(container_clip):
    path = container_clip("vp9_odd_audio")  # WebM: no frame count in the header
    plan = SamplingPlan(max_frames=2, frame_samples=2, sampling="spread")
    decoded = decode_clip(ClipSource(path), plan)
    assert [frame.index for frame in decoded.frames] == [1, 3]
    assert decoded.clip_frames == 4
    reference = binary_yuv420p_frames(path, 65, 49, 8)
    for frame in decoded.frames:
        np.testing.assert_array_equal(frame.luma, reference[frame.index][0])


@pytest.mark.parametrize(("suffix", "chosen"), [(".mkv", (64, 48)), (".mp4", (32, 24))])
def test_stream_choice_follows_the_binary_default_selection(clip_dir, suffix, chosen):
    """Most pixels wins, unless another stream has the default disposition (MP4 marks the
    first one default; Matroska as written here marks none)."""
    path = make_multi_video_clip(clip_dir / f"two_streams{suffix}", [(32, 24), (64, 48)], 3)
    decoded = decode_clip(ClipSource(path), ALL_FRAMES)
    assert (decoded.width, decoded.height) == chosen
    assert_matches_binary(decoded, binary_yuv420p_frames(path, *chosen, 8))
    assert_same_clip(decode_clip(ClipSource(path), ALL_FRAMES, ffmpeg_bin=ffmpeg_exe()), decoded)


PIPE_CASES = [
    ("h264_audio", SamplingPlan()),
    ("vp9_odd_audio", SamplingPlan(max_frames=2, frame_samples=2, sampling="spread")),
    ("h264_10bit", SamplingPlan(max_frames=8, frame_samples=2)),
    ("h264_portrait", SamplingPlan(inference_size=64)),
    ("h264_full_range", SamplingPlan(inference_size=32, sampling="spread", frame_samples=2)),
]


@pytest.mark.parametrize(("name", "plan"), PIPE_CASES, ids=[case[0] for case in PIPE_CASES])
def test_binary_backend_returns_what_pyav_returns(container_clip, name, plan):
    source = ClipSource(container_clip(name))
    in_process = decode_clip(source, plan)
    piped = decode_clip(source, plan, ffmpeg_bin=ffmpeg_exe())
    assert piped.decoder == f"ffmpeg-binary:{ffmpeg_exe()}"
    assert in_process.decoder == "pyav"
    assert_same_clip(piped, in_process)


def test_binary_backend_matches_pyav_on_rotated_and_raw_sources(container_clip, clip_dir):
    rotated = tag_rotation_with_binary(
        container_clip("h264_audio"), clip_dir / "pipe_rot270.mp4", 270
    )
    raw = make_raw_yuv(clip_dir / "pipe_raw10.yuv", 66, 50, 3, "yuv420p10le")
    for source in (ClipSource(rotated), ClipSource(raw, 66, 50, "yuv420p10le")):
        for plan in (SamplingPlan(), SamplingPlan(inference_size=24)):
            piped = decode_clip(source, plan, ffmpeg_bin=ffmpeg_exe())
            assert_same_clip(piped, decode_clip(source, plan))


def assert_same_clip(piped: DecodedClip, in_process: DecodedClip) -> None:
    for field in ("width", "height", "source_width", "source_height", "rotation", "pix_fmt"):
        assert getattr(piped, field) == getattr(in_process, field), field
    assert piped.clip_frames in (None, in_process.clip_frames)
    assert [f.index for f in piped.frames] == [f.index for f in in_process.frames]
    for ours, theirs in zip(piped.frames, in_process.frames, strict=True):
        np.testing.assert_array_equal(ours.luma, theirs.luma)
        if theirs.chroma is not None:
            np.testing.assert_array_equal(ours.chroma[0], theirs.chroma[0])
            np.testing.assert_array_equal(ours.chroma[1], theirs.chroma[1])
        else:
            np.testing.assert_array_equal(ours.rgb, theirs.rgb)


@pytest.fixture(scope="module")
def resolution_switch_clip(clip_dir) -> Path:
    """An H.264 transport stream of 5 frames at 64x48 then 8 at 96x64, joined by ffmpeg's
    concat demuxer: the resolution changes mid-stream, off the sampling steps."""
    first = make_clip(clip_dir / "switch_a.ts", 64, 48, 5)
    second = make_clip(clip_dir / "switch_b.ts", 96, 64, 8)
    listing = clip_dir / "switch.txt"
    listing.write_text(f"file '{first}'\nfile '{second}'\n")
    joined = clip_dir / "switch.ts"
    run_ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined))
    return joined


SWITCH_PLANS = {
    "head": SamplingPlan(max_frames=10, frame_samples=3),
    "spread": SamplingPlan(max_frames=10, frame_samples=4, sampling="spread"),
    "spread_inference": SamplingPlan(frame_samples=4, sampling="spread", inference_size=32),
}


@pytest.mark.parametrize("plan", SWITCH_PLANS.values(), ids=SWITCH_PLANS)
def test_both_backends_take_the_same_frames_when_the_resolution_changes(
    resolution_switch_clip, plan
):
    """ffmpeg restarts its ``select`` frame count when it rebuilds its filters for the new
    size; the pipe must still deliver the clip's frames at the sampled indices."""
    source = ClipSource(resolution_switch_clip)
    in_process = decode_clip(source, plan)
    assert max(frame.index for frame in in_process.frames) >= 5  # past the switch
    assert_same_clip(decode_clip(source, plan, ffmpeg_bin=ffmpeg_exe()), in_process)


def test_both_backends_give_the_same_saliency_when_the_resolution_changes(
    resolution_switch_clip, tmp_path
):
    table = tmp_path / "switch.jsonl"
    table.write_text(json.dumps({"src": str(resolution_switch_clip)}) + "\n")
    values = []
    for decoder in ([], ["--ffmpeg-bin", ffmpeg_exe()]):
        for sampling in ("head", "spread"):
            output = tmp_path / f"out-{len(values)}.jsonl"
            args = ["materialize", "--input", str(table), "--output", str(output)]
            args += ["--path-column", "src", "--sampling", sampling, "--max-frames", "10"]
            done = run_cli_in_process(*args, "--results-store", "none", "--jobs", "1", *decoder)
            assert done.returncode == 0, done.stderr
            values.append(json.loads(output.read_text())["saliency_mean"])
    in_process, piped = values[:2], values[2:]
    assert piped == pytest.approx(in_process, rel=1e-6, abs=1e-9)
