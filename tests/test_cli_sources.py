"""Every kind of source users run comes out ``ok`` through the real command, in both modes."""

import json

import pytest
from conftest import run_cli
from support.clips import has_encoder, make_clip, make_raw_yuv, tag_rotation_with_binary

SOURCES = {
    "540p_h264.mp4": dict(width=960, height=540, frames=3),
    "odd_853x481_vp9.webm": dict(width=853, height=481, frames=3, codec="libvpx-vp9"),
    "portrait_h264.mp4": dict(width=270, height=480, frames=3),
    "audio_h264.mkv": dict(width=160, height=90, frames=3, with_audio=True),
    "vp9.mkv": dict(width=160, height=96, frames=3, codec="libvpx-vp9"),
    "mpeg4.mp4": dict(width=176, height=144, frames=3, codec="mpeg4"),
    "ten_bit_hevc.mkv": dict(
        width=160, height=96, frames=3, codec="libx265", pix_fmt="yuv420p10le"
    ),
    "av1.mkv": dict(width=192, height=128, frames=3, codec="libsvtav1"),
}


@pytest.fixture(scope="module")
def source_table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    rows = []
    for name, spec in SOURCES.items():
        codec = spec.get("codec", "h264")
        assert has_encoder(codec), f"encoder {codec} missing from the PyAV wheel"
        make_clip(folder / name, **spec)
        rows.append({"src": name})
    upright = make_clip(folder / "upright.mp4", 128, 72, 3)
    tag_rotation_with_binary(upright, folder / "rotated_90.mp4", 90)
    rows.append({"src": "rotated_90.mp4"})
    make_raw_yuv(folder / "raw10_96x64.yuv", 96, 64, 3, "yuv420p10le")
    rows.append({"src": "raw10_96x64.yuv", "pix_fmt": "yuv420p10le"})
    make_raw_yuv(folder / "raw8_odd.yuv", 75, 45, 3)
    rows.append({"src": "raw8_odd.yuv", "width": 75, "height": 45})
    table = folder / "features.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder, table


@pytest.mark.parametrize("mode", [[], ["--inference-size", "64", "--sampling", "spread"]])
def test_every_source_kind_is_ok(tmp_path, source_table, mode):
    folder, table = source_table
    output = tmp_path / "out.jsonl"
    done = run_cli(
        "materialize",
        "--input",
        str(table),
        "--output",
        str(output),
        "--root",
        str(folder),
        "--max-frames",
        "2",
        "--jobs",
        "2",
        *mode,
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    failures = {
        row["src"]: row.get("saliency_error") for row in rows if row["saliency_status"] != "ok"
    }
    assert failures == {}
    assert done.returncode == 0, done.stderr
    assert all(0.0 < row["saliency_mean"] < 1.0 for row in rows)
