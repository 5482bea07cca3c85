"""Guardrails: bad inputs fail with a message naming the file and the cause, never silently."""

from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from support.clips import (
    ffmpeg_exe,
    make_audio_only,
    make_clip,
    make_raw_yuv,
    raw_frame_bytes,
    truncate_copy,
    write_garbage,
)

from saliency_assets.core.contract.errors import ConfigError, DecodeError, GeometryError
from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.decoding import check_binary, decode_clip
from saliency_assets.core.decode.sampling import sample_indices

PLAN = SamplingPlan()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("error_clips")


@pytest.fixture(scope="module")
def good_mp4(clip_dir) -> Path:
    return make_clip(clip_dir / "good.mp4", 64, 48, 12)


def write_script(path: Path, body: str) -> Path:
    """An executable shell script standing in for ffmpeg/ffprobe."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("name", ["zero.mp4", "garbage.mp4", "garbage.mkv"])
def test_unreadable_files_fail_naming_the_file(clip_dir, name):
    path = clip_dir / name
    if name.startswith("zero"):
        path.write_bytes(b"")
    else:
        write_garbage(path)
    with pytest.raises(DecodeError, match=f"{name}: not a readable media file"):
        decode_clip(ClipSource(path), PLAN)


def test_missing_file_fails(clip_dir):
    with pytest.raises(DecodeError, match="nothere.mp4: file not found"):
        decode_clip(ClipSource(clip_dir / "nothere.mp4"), PLAN)


def test_audio_only_file_fails(clip_dir):
    path = make_audio_only(clip_dir / "audio.m4a")
    with pytest.raises(DecodeError, match="audio.m4a: has no video stream"):
        decode_clip(ClipSource(path), PLAN)


def test_truncated_clip_yields_the_frames_that_exist(clip_dir):
    """Reference semantics: fewer frames is fine; the head is re-sampled over what decoded."""
    whole = make_clip(clip_dir / "whole.mkv", 64, 48, 12)
    cut = truncate_copy(whole, clip_dir / "cut.mkv", 0.8)
    plan = SamplingPlan(max_frames=12, frame_samples=4)
    decoded = decode_clip(ClipSource(cut), plan)
    assert 4 <= decoded.clip_frames < 12
    assert [frame.index for frame in decoded.frames] == sample_indices(plan, decoded.clip_frames)
    reference = decode_clip(ClipSource(whole), SamplingPlan(max_frames=12, frame_samples=12))
    for frame in decoded.frames:
        np.testing.assert_array_equal(frame.luma, reference.frames[frame.index].luma)
    piped = decode_clip(ClipSource(cut), plan, ffmpeg_bin=ffmpeg_exe())
    assert piped.clip_frames == decoded.clip_frames
    assert [frame.index for frame in piped.frames] == [frame.index for frame in decoded.frames]


def test_clip_truncated_before_its_first_frame_fails(clip_dir):
    data = make_clip(clip_dir / "whole_for_header.mkv", 64, 48, 4).read_bytes()
    first_cluster = data.index(b"\x1f\x43\xb6\x75")  # Matroska Cluster element ID
    header_only = clip_dir / "header_only.mkv"
    header_only.write_bytes(data[: first_cluster + 12])
    with pytest.raises(DecodeError, match="header_only.mkv: no video frames"):
        decode_clip(ClipSource(header_only), PLAN)


def test_stream_larger_than_max_pixels_is_refused_before_decoding(good_mp4):
    with pytest.raises(DecodeError, match=r"claims 64x48, more than the 1000-pixel limit"):
        decode_clip(ClipSource(good_mp4), PLAN, max_pixels=1000)


def test_stream_with_a_forged_huge_geometry_fails(clip_dir):
    """An FFV1 Matroska whose header was patched to claim 16384x16384."""
    data = bytearray(make_clip(clip_dir / "ffv1.mkv", 256, 256, 1, codec="ffv1").read_bytes())
    for element_id in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight, 2-byte values
        at = data.index(element_id + b"\x82\x01\x00")
        data[at + 2 : at + 4] = (16384).to_bytes(2, "big")
    forged = clip_dir / "forged.mkv"
    forged.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="forged.mkv"):
        decode_clip(ClipSource(forged), PLAN)


def test_raw_file_with_partial_frame_fails_with_sizes(clip_dir):
    path = make_raw_yuv(clip_dir / "partial.yuv", 64, 48, 3)
    with path.open("ab") as handle:
        handle.write(b"\0" * 100)
    size = 3 * raw_frame_bytes(64, 48) + 100
    message = rf"{size} bytes is not a whole number of 64x48 yuv420p frames \(4608 bytes each"
    with pytest.raises(DecodeError, match=message):
        decode_clip(ClipSource(path, 64, 48, "yuv420p"), PLAN)


def test_raw_file_read_at_the_wrong_bit_depth_fails(clip_dir):
    path = make_raw_yuv(clip_dir / "eight_bit.yuv", 64, 48, 3)  # 13824 bytes = 1.5 10-bit frames
    with pytest.raises(DecodeError, match="not a whole number of 64x48 yuv420p10le frames"):
        decode_clip(ClipSource(path, 64, 48, "yuv420p10le"), PLAN)


def test_raw_frame_bigger_than_the_file_fails(clip_dir):
    path = make_raw_yuv(clip_dir / "small.yuv", 64, 48, 1)
    with pytest.raises(DecodeError, match=r"smaller than one 640x480 yuv420p frame"):
        decode_clip(ClipSource(path, 640, 480, "yuv420p"), PLAN)


def test_raw_huge_declared_geometry_is_refused(clip_dir):
    path = make_raw_yuv(clip_dir / "huge_claim.yuv", 64, 48, 2)
    with pytest.raises(DecodeError, match="16384x16384 exceeds the 67108864-pixel limit"):
        decode_clip(ClipSource(path, 16384, 16384, "yuv420p"), PLAN)


def test_raw_empty_file_fails(clip_dir):
    path = clip_dir / "empty.yuv"
    path.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty.yuv: raw file is empty"):
        decode_clip(ClipSource(path, 64, 48, "yuv420p"), PLAN)


def test_yuv_without_geometry_is_a_geometry_error(clip_dir):
    path = make_raw_yuv(clip_dir / "nogeometry.yuv", 64, 48, 1)
    with pytest.raises(GeometryError, match="nogeometry.yuv"):
        decode_clip(ClipSource(path), PLAN)


def test_raw_reads_only_the_sampled_frames(clip_dir):
    """A 2 GB sparse raw file: sampling its head must not read the whole file."""
    path = clip_dir / "sparse.yuv"
    frame_bytes = raw_frame_bytes(640, 480)
    with path.open("wb") as handle:
        handle.truncate(frame_bytes * 4500)
    started = time.monotonic()
    decoded = decode_clip(ClipSource(path, 640, 480, "yuv420p"), SamplingPlan(sampling="spread"))
    assert time.monotonic() - started < 5
    assert decoded.clip_frames == 4500
    assert [frame.index for frame in decoded.frames][:2] == [281, 843]


def test_file_named_like_the_concat_protocol_is_read_as_itself(clip_dir, good_mp4):
    odd_name = clip_dir / "concat:good.mp4|good.mp4"
    odd_name.write_bytes(good_mp4.read_bytes())
    decoded = decode_clip(ClipSource(odd_name), SamplingPlan(max_frames=12, frame_samples=12))
    assert decoded.clip_frames == 12  # the concat protocol would have made it 24


def test_playlist_pointing_at_urls_is_never_fetched(clip_dir):
    playlist = clip_dir / "remote.m3u8"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/seg.ts\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(DecodeError, match="remote.m3u8"):
        decode_clip(ClipSource(playlist), PLAN)


def test_local_playlist_is_refused(clip_dir, good_mp4):
    playlist = clip_dir / "local.m3u8"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{good_mp4}\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(DecodeError, match="local.m3u8: is a hls playlist"):
        decode_clip(ClipSource(playlist), PLAN)


def test_pyav_decode_times_out(good_mp4):
    with pytest.raises(DecodeError, match=r"decode timed out after 0 s: .*good.mp4"):
        decode_clip(ClipSource(good_mp4), PLAN, timeout_s=0)


def test_binary_decode_is_killed_at_the_timeout(clip_dir):
    hanging = write_script(clip_dir / "hanging-ffmpeg", "exec sleep 30\n")
    raw = make_raw_yuv(clip_dir / "for_hang.yuv", 64, 48, 2)
    started = time.monotonic()
    with pytest.raises(DecodeError, match="decode timed out after 0.5 s"):
        decode_clip(
            ClipSource(raw, 64, 48, "yuv420p"), PLAN, ffmpeg_bin=str(hanging), timeout_s=0.5
        )
    assert time.monotonic() - started < 5


def test_binary_failure_carries_its_stderr(clip_dir):
    failing = write_script(clip_dir / "failing-ffmpeg", "echo 'boom: codec exploded' >&2\nexit 3\n")
    raw = make_raw_yuv(clip_dir / "for_fail.yuv", 64, 48, 2)
    with pytest.raises(DecodeError, match="status 3 and no frames: boom: codec exploded"):
        decode_clip(ClipSource(raw, 64, 48, "yuv420p"), PLAN, ffmpeg_bin=str(failing))


def test_binary_backend_reports_unreadable_input(clip_dir):
    garbage = write_garbage(clip_dir / "garbage_for_pipe.yuv", size=1000)
    with pytest.raises(DecodeError, match="garbage_for_pipe.yuv"):
        decode_clip(ClipSource(garbage, 64, 48, "yuv420p"), PLAN, ffmpeg_bin=ffmpeg_exe())


def test_named_ffprobe_supplies_geometry_and_rotation_of_the_real_video_stream(clip_dir):
    clip = make_clip(clip_dir / "for_ffprobe.mp4", 64, 48, 4, rotation=90)
    cover_art = (
        '{"index": 1, "width": 600, "height": 600, "pix_fmt": "yuvj444p", '
        '"disposition": {"default": 1, "attached_pic": 1}}'
    )
    video = (
        '{"index": 0, "width": 64, "height": 48, "pix_fmt": "yuv420p", "nb_frames": "4", '
        '"color_range": "tv", "color_space": "bt709", '
        '"disposition": {"default": 0, "attached_pic": 0}, '
        '"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]}'
    )
    probe_json = f'{{"programs": [], "streams": [{cover_art}, {video}]}}'
    fake = write_script(clip_dir / "fake-ffprobe", f"cat <<'EOF'\n{probe_json}\nEOF\n")
    source = ClipSource(clip)
    piped = decode_clip(source, PLAN, ffmpeg_bin=ffmpeg_exe(), ffprobe_bin=str(fake))
    in_process = decode_clip(source, PLAN)
    assert (piped.width, piped.height, piped.rotation) == (48, 64, 90)
    assert piped.clip_frames == in_process.clip_frames == 4
    for ours, theirs in zip(piped.frames, in_process.frames, strict=True):
        np.testing.assert_array_equal(ours.luma, theirs.luma)


def test_failing_ffprobe_is_a_decode_error(clip_dir, good_mp4):
    fake = write_script(clip_dir / "broken-ffprobe", "echo 'probe: no such stream' >&2\nexit 1\n")
    with pytest.raises(DecodeError, match="ffprobe exited with status 1: probe: no such stream"):
        decode_clip(ClipSource(good_mp4), PLAN, ffmpeg_bin=ffmpeg_exe(), ffprobe_bin=str(fake))


def test_check_binary_resolves_names_and_paths(clip_dir):
    assert check_binary("sh") == shutil.which("sh")
    assert check_binary(ffmpeg_exe()) == ffmpeg_exe()


@pytest.mark.parametrize("name", ["no-such-ffmpeg-binary", "/no/such/dir/ffmpeg", ""])
def test_check_binary_rejects_missing_binaries(name):
    with pytest.raises(ConfigError):
        check_binary(name)


def test_check_binary_rejects_non_executable_files(clip_dir):
    plain = clip_dir / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(ConfigError, match="not executable"):
        check_binary(str(plain))
