"""HDR sources: PQ and HLG renditions of a real SDR clip, made at test time, score like the SDR
clip once tone-mapped, in both modes and both decoder backends, and far from it without."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType
from conftest import run_cli_in_process
from support.clips import ffmpeg_exe, make_clip
from support.hdr_clips import make_hdr_rendition, make_scene_clip

from saliency_assets.core.contract.config import MaterializeConfig, config_from_mapping
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.decode import hdr as hdr_module
from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.conversion import hdr_format_of_frame
from saliency_assets.core.decode.decoding import decode_clip
from saliency_assets.core.decode.hdr import (
    REFERENCE_WHITE_NITS,
    HdrFormat,
    eetf,
    hdr_format,
    lut_files,
    mastering_peak,
    nits_to_pq,
    pq_to_nits,
    sdr_from_hdr,
)
from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip
from saliency_assets.core.model.saliency_model import DEFAULT_MODEL_PATH, SaliencyModel
from saliency_assets.core.run.results_store import settings_digest

TOLERANCE = 0.05
MODES = {"native": None, "inference-96": 96}


@pytest.fixture(scope="module")
def renditions(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hdr")
    sdr = make_scene_clip(folder / "scene.mp4", 256, 144, 6)
    return {
        "sdr": sdr,
        "pq": make_hdr_rendition(sdr, folder / "scene_pq.mkv", "pq"),
        "hlg": make_hdr_rendition(sdr, folder / "scene_hlg.mp4", "hlg"),
    }


@pytest.fixture(scope="module")
def model() -> SaliencyModel:
    return SaliencyModel(DEFAULT_MODEL_PATH)


def saliency(clip: Path, model, size, hdr="tonemap", ffmpeg_bin=None):
    plan = SamplingPlan(max_frames=6, frame_samples=6, inference_size=size, hdr=hdr)
    job = ClipJob(plan, "mean", 0.6, DEFAULT_MODEL_PATH, ("CPUExecutionProvider",), ffmpeg_bin)
    result = compute_clip(ClipSource(clip), job, model)
    assert result.ok, result.detail
    return result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_tone_mapped_hdr_rendition_scores_within_5_percent_of_sdr(
    renditions, model, mode, transfer
):
    sdr = saliency(renditions["sdr"], model, MODES[mode])
    hdr = saliency(renditions[transfer], model, MODES[mode])
    assert hdr.transfer == transfer and sdr.transfer == "sdr"
    assert hdr.saliency_mean == pytest.approx(sdr.saliency_mean, rel=TOLERANCE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_without_tone_mapping_hdr_rendition_scores_far_from_sdr(renditions, model, mode, transfer):
    sdr = saliency(renditions["sdr"], model, MODES[mode])
    unmapped = saliency(renditions[transfer], model, MODES[mode], hdr="off")
    assert unmapped.transfer == f"{transfer}-unmapped"
    assert abs(unmapped.saliency_mean / sdr.saliency_mean - 1) > 2 * TOLERANCE


def test_off_leaves_sdr_clips_exactly_as_tonemap_does(renditions, model):
    for size in MODES.values():
        tonemapped = saliency(renditions["sdr"], model, size)
        off = saliency(renditions["sdr"], model, size, hdr="off")
        assert (off.saliency_mean, off.saliency_var) == (
            tonemapped.saliency_mean,
            tonemapped.saliency_var,
        )


@pytest.mark.parametrize("mode", MODES)
def test_ffmpeg_binary_backend_tone_maps_to_the_same_planes(renditions, mode):
    plan = SamplingPlan(max_frames=3, frame_samples=3, inference_size=MODES[mode])
    for transfer in ("pq", "hlg"):
        source = ClipSource(renditions[transfer])
        in_process = decode_clip(source, plan)
        piped = decode_clip(source, plan, ffmpeg_bin=ffmpeg_exe())
        assert piped.transfer == in_process.transfer == transfer
        for ours, theirs in zip(piped.frames, in_process.frames, strict=True):
            assert np.abs(ours.luma.astype(int) - theirs.luma).max() <= 1
            planes = ("rgb",) if MODES[mode] else ("chroma",)
            for name in planes:
                difference = np.abs(
                    np.asarray(getattr(ours, name), int) - np.asarray(getattr(theirs, name))
                )
                assert difference.max() <= 1


def test_named_ffprobe_supplies_the_transfer_and_light_levels(renditions, tmp_path):
    stream = {
        "index": 0,
        "width": 256,
        "height": 144,
        "pix_fmt": "yuv420p10le",
        "color_range": "tv",
        "color_space": "bt2020nc",
        "color_transfer": "smpte2084",
        "color_primaries": "bt2020",
        "disposition": {"default": 1, "attached_pic": 0},
        "side_data_list": [{"side_data_type": "Content light level metadata", "max_content": 600}],
    }
    fake = tmp_path / "fake-ffprobe"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps({'streams': [stream]})}\nEOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    plan = SamplingPlan(max_frames=2, frame_samples=2, inference_size=96)
    source = ClipSource(renditions["pq"])
    piped = decode_clip(source, plan, ffmpeg_bin=ffmpeg_exe(), ffprobe_bin=str(fake))
    assert piped.transfer == "pq"
    reference = decode_clip(source, plan)  # no light level metadata: a 1000 cd/m² peak
    assert not np.array_equal(piped.frames[0].rgb, reference.frames[0].rgb)


def test_light_level_metadata_sets_the_source_peak(renditions, tmp_path):
    tagged = tmp_path / "mastered.mkv"
    options = "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
    options += "L(40000000,50):max-cll=1500,400:hdr10=1"
    make_hdr_rendition(renditions["sdr"], tagged, "pq", x265_params=options)
    with av.open(str(tagged)) as container:
        first = next(container.decode(video=0))
        assert hdr_format_of_frame(first) == HdrFormat("pq", True, 1500.0)  # MaxCLL first
        mastering = [
            bytes(side_data)
            for side_data in SideDataContainer(first)
            if side_data.type == SideDataType.MASTERING_DISPLAY_METADATA
        ]
        assert mastering_peak(mastering[0]) == 4000.0


def test_peak_falls_back_from_content_light_to_mastering_display_to_1000_nits():
    assert hdr_format(16, 9, 4000.0, 1200.0).peak_nits == 1200.0
    assert hdr_format(16, 9, 4000.0, None).peak_nits == 4000.0
    assert hdr_format(16, 1).peak_nits == 1000.0 and not hdr_format(16, 1).bt2020
    assert hdr_format(18, 9, 4000.0, 1200.0).peak_nits == 1000.0  # HLG: its reference display
    assert hdr_format(16, 9, None, 1.0).peak_nits == 203.0  # bogus: clips above white only
    assert hdr_format(16, 9, 1e6, None).peak_nits == 10000.0
    assert hdr_format(1, 1) is None and hdr_format(14, 9) is None


def test_eetf_keeps_shadows_and_rolls_the_peak_off_to_reference_white():
    codes = nits_to_pq(np.array([0.0, 5.0, 20.0, 4000.0]))
    mapped = pq_to_nits(eetf(codes, 4000.0, REFERENCE_WHITE_NITS))
    np.testing.assert_allclose(mapped[:3], [0.0, 5.0, 20.0], atol=1e-6)
    assert mapped[3] == pytest.approx(REFERENCE_WHITE_NITS)
    ramp = nits_to_pq(np.linspace(0, 4000, 200))
    assert np.all(np.diff(eetf(ramp, 4000.0, REFERENCE_WHITE_NITS)) >= 0)


def test_reference_white_below_a_203_nit_peak_is_sdr_white():
    white = np.full(3, nits_to_pq(np.float64(REFERENCE_WHITE_NITS)))
    assert sdr_from_hdr(white, HdrFormat("pq", True, 203.0)) == pytest.approx(1.0, abs=1e-6)


def test_hdr_mode_is_validated_and_in_the_settings_digest():
    with pytest.raises(ConfigError, match="hdr must be one of tonemap, off"):
        config_from_mapping({"hdr": "clip"}, "manifest chug")
    off = config_from_mapping({"hdr": "off"}, "manifest chug")
    assert settings_digest(off) != settings_digest(MaterializeConfig())


def test_rows_record_their_transfer_and_the_audit_counts_them(renditions, tmp_path):
    rows = [{"src": str(path)} for path in renditions.values()]
    source, output, audit = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "a.json"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = ["--input", str(source), "--jobs", "2", "--inference-size", "96"]
    done = run_cli_in_process(
        "materialize", *common, "--output", str(output), "--audit-json", str(audit)
    )
    assert done.returncode == 0, done.stderr
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["saliency_transfer"] for row in written] == ["sdr", "pq", "hlg"]
    assert json.loads(audit.read_text())["hdr"] == {
        "mode": "tonemap",
        "clips_by_transfer": {"hlg": 1, "pq": 1, "sdr": 1},
    }
    again = run_cli_in_process("materialize", *common, "--output", str(output), "--overwrite")
    assert again.returncode == 0, again.stderr  # from the results store this time
    reused = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["saliency_transfer"] for row in reused] == ["sdr", "pq", "hlg"]


def test_off_marks_rows_and_an_empty_column_name_disables_the_column(renditions, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"src": str(renditions["pq"])}) + "\n")
    common = ["--input", str(source), "--jobs", "1", "--inference-size", "96"]
    off, hidden = tmp_path / "off.jsonl", tmp_path / "hidden.jsonl"
    done = run_cli_in_process("materialize", *common, "--output", str(off), "--hdr", "off")
    assert done.returncode == 0, done.stderr
    assert json.loads(off.read_text())["saliency_transfer"] == "pq-unmapped"
    done = run_cli_in_process(
        "materialize", *common, "--output", str(hidden), "--transfer-column", ""
    )
    assert done.returncode == 0, done.stderr
    assert "saliency_transfer" not in json.loads(hidden.read_text())


def test_sdr_clip_tagged_bt2020_is_not_tone_mapped(tmp_path):
    clip = make_clip(tmp_path / "bt2020_sdr.mp4", 64, 48, 2, colorspace="bt2020")
    decoded = decode_clip(ClipSource(clip), SamplingPlan(max_frames=2, frame_samples=2))
    assert decoded.transfer == "sdr"


def test_one_pair_of_lut_files_per_format_rewritten_if_they_go_away():
    pq_format = HdrFormat("pq", True, 1000.0)
    shaper, colour = lut_files(pq_format)
    assert lut_files(HdrFormat("pq", True, 1000.0)) == (shaper, colour)
    brighter = lut_files(HdrFormat("pq", True, 4000.0))
    assert brighter[0] != shaper
    assert all(path.name.startswith("hlg-") for path in lut_files(HdrFormat("hlg", True, 1e3)))
    shaper.unlink()  # a temp-folder cleaner ran
    assert lut_files(pq_format) == (shaper, colour) and shaper.is_file()


def test_lut_paths_with_filter_syntax_characters_work_in_both_backends(
    renditions, tmp_path, monkeypatch
):
    odd_temp = tmp_path / "tmp:with,odd;chars'[x]"
    odd_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd_temp))
    monkeypatch.setattr(hdr_module, "DEFAULT_PEAK_NITS", 1001.0)  # a format not yet written
    plan = SamplingPlan(max_frames=2, frame_samples=2, inference_size=96)
    source = ClipSource(renditions["pq"])
    in_process = decode_clip(source, plan)
    piped = decode_clip(source, plan, ffmpeg_bin=ffmpeg_exe())
    assert all(path.parent.parent == odd_temp for path in lut_files(HdrFormat("pq", True, 1001.0)))
    assert np.abs(piped.frames[0].rgb.astype(int) - in_process.frames[0].rgb).max() <= 1
