"""Frame-by-frame computation: decoded frames go to the model one at a time and are let go.

A 4K frame is 12 MB and its map 33 MB, so holding a clip's sampled frames together is what used
to put a 4K worker over its memory budget; these tests pin that no backend keeps them.
"""

from __future__ import annotations

import gc
import math
import struct
import time
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType
from support.clips import ffmpeg_exe, make_clip, make_raw_yuv

from saliency_assets.core.contract.errors import DecodeError
from saliency_assets.core.contract.statuses import MODEL_FAILED, OK
from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.conversion import display_rotation
from saliency_assets.core.decode.decoding import DecodedFrame, decode_clip
from saliency_assets.core.model.clip_saliency import DECODING, INFERRING, ClipJob, compute_clip
from saliency_assets.core.run.workers import _Worker


class RecordingSink:
    """Records what arrives, and whether any earlier frame is still alive when a frame does."""

    def __init__(self, pause_s: float = 0.0) -> None:
        self.pause_s = pause_s
        self.indices: list[int] = []
        self.restarts = 0
        self.alive_at_arrival: list[int] = []
        self._earlier: list[weakref.ref] = []

    def add(self, frame: DecodedFrame) -> None:
        self.alive_at_arrival.append(sum(ref() is not None for ref in self._earlier))
        self._earlier.append(weakref.ref(frame))
        self.indices.append(frame.index)
        time.sleep(self.pause_s)

    def restart(self) -> None:
        self.restarts += 1
        self.indices = []


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("streaming_clips")


@pytest.fixture(scope="module")
def sources(clip_dir) -> dict[str, ClipSource]:
    return {
        "pyav": ClipSource(make_clip(clip_dir / "long.mp4", 64, 48, 12)),
        "raw": ClipSource(make_raw_yuv(clip_dir / "long.yuv", 64, 48, 12), 64, 48, "yuv420p"),
        "ffmpeg-binary": ClipSource(make_clip(clip_dir / "piped.mp4", 64, 48, 12)),
    }


def decode_into(sink, source: ClipSource, backend: str, plan: SamplingPlan, **options):
    if backend == "ffmpeg-binary":
        options["ffmpeg_bin"] = ffmpeg_exe()
    return decode_clip(source, plan, sink=sink, **options)


@pytest.mark.parametrize("backend", ["pyav", "raw", "ffmpeg-binary"])
def test_each_sampled_frame_reaches_the_sink_alone_and_none_is_kept(sources, backend):
    sink = RecordingSink()
    plan = SamplingPlan(max_frames=8, frame_samples=4)
    decoded = decode_into(sink, sources[backend], backend, plan)
    assert sink.indices == decoded.indices == [0, 2, 4, 6]
    assert decoded.frames == []
    assert sink.alive_at_arrival == [0, 0, 0, 0]


def test_without_a_sink_the_frames_come_back(sources):
    decoded = decode_clip(sources["pyav"], SamplingPlan(max_frames=8, frame_samples=4))
    assert [frame.index for frame in decoded.frames] == decoded.indices == [0, 2, 4, 6]


def test_a_clip_shorter_than_the_head_window_restarts_the_sink(clip_dir):
    """8-frame window, 4 samples: 0, 2, 4 arrive before the 5-frame clip ends; the reference
    rule on 5 frames takes 0, 1, 2, 3, so the sink starts again with those."""
    source = ClipSource(make_clip(clip_dir / "short.mp4", 64, 48, 5))
    sink = RecordingSink()
    decoded = decode_clip(source, SamplingPlan(max_frames=8, frame_samples=4), sink=sink)
    assert (sink.restarts, sink.indices, decoded.indices) == (1, [0, 1, 2, 3], [0, 1, 2, 3])


def test_a_short_clip_whose_delivered_frames_still_hold_is_not_restarted(clip_dir):
    source = ClipSource(make_clip(clip_dir / "short8.mp4", 64, 48, 5))
    sink = RecordingSink()
    decode_clip(source, SamplingPlan(max_frames=8, frame_samples=8), sink=sink)
    assert (sink.restarts, sink.indices) == (0, [0, 1, 2, 3, 4])


@pytest.mark.parametrize("backend", ["pyav", "raw", "ffmpeg-binary"])
def test_time_in_the_sink_does_not_count_against_the_decode_timeout(sources, backend):
    plan = SamplingPlan(max_frames=8, frame_samples=8)
    sink = RecordingSink(pause_s=0.25)  # 2 s in the sink in all, against a 1.5 s budget
    decoded = decode_into(sink, sources[backend], backend, plan, timeout_s=1.5)
    assert decoded.indices == list(range(8))


@pytest.mark.parametrize("backend", ["pyav", "raw", "ffmpeg-binary"])
def test_the_decode_timeout_still_bounds_decoding(sources, backend):
    with pytest.raises(DecodeError, match="decode timed out"):
        decode_into(RecordingSink(), sources[backend], backend, SamplingPlan(), timeout_s=1e-9)


class FailingModel:
    """A model seam that works for ``good_frames`` frames, then fails as onnxruntime would."""

    on_accelerator = False

    def __init__(self, good_frames: int) -> None:
        self.calls = 0
        self.good_frames = good_frames

    def predict_windows(self, window, padded_height, padded_width, height, width):
        self.calls += 1
        if self.calls > self.good_frames:
            raise RuntimeError("ORT: bad allocation")
        return np.full((height, width), 0.5, dtype=np.float32)


def test_a_model_failure_on_a_later_frame_is_model_failed_naming_the_frame(sources, tmp_path):
    job = ClipJob(SamplingPlan(max_frames=8, frame_samples=4), "mean", 0.6, tmp_path, ("cpu",))
    phases: list[str] = []
    result = compute_clip(sources["pyav"], job, FailingModel(good_frames=2), phases.append)
    assert result.status == MODEL_FAILED
    assert result.detail == "frame 4: RuntimeError: ORT: bad allocation"
    assert phases == [INFERRING, DECODING, INFERRING, DECODING, INFERRING]


def test_a_streamed_clip_reports_every_frame_it_used(sources, tmp_path):
    job = ClipJob(SamplingPlan(max_frames=8, frame_samples=4), "mean", 0.6, tmp_path, ("cpu",))
    result = compute_clip(sources["raw"], job, FailingModel(good_frames=99))
    assert (result.status, result.frames_used, result.saliency_mean) == (OK, 4, 0.5)


def test_the_pools_decode_clock_leaves_inference_out():
    worker = _Worker(process=None, connection=None)
    worker.start(("clip", None))
    began = worker.decoding_since
    worker.switch(INFERRING, began + 1.0)  # 1 s decoding, then a 30 s inference
    assert worker.decoding_for(began + 31.0) == pytest.approx(1.0)
    worker.switch(DECODING, began + 31.0)
    assert worker.decoding_for(began + 33.5) == pytest.approx(3.5)
    assert not worker.inferring


@pytest.mark.parametrize("rotation", [None, 90])
def test_a_decode_leaves_no_frame_for_the_garbage_collector(clip_dir, rotation):
    """A reference cycle around a decoded frame keeps the decoder buffers it pins (~24 MB at
    4K) alive until a collection happens to run: a worker's memory grew with every clip."""
    source = ClipSource(make_clip(clip_dir / f"cycle_{rotation}.mp4", 64, 48, 6, rotation=rotation))
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        decoded = decode_clip(source, SamplingPlan(max_frames=4, frame_samples=2))
        del decoded
        gc.collect()
        stranded = [
            type(item).__name__ for item in gc.garbage if type(item).__module__[:3] == "av."
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert stranded == []


@pytest.mark.parametrize("degrees", [1, 30, 90, 135, 180, -45, 270])
def test_display_rotation_reads_back_the_angle_ffmpeg_wrote(clip_dir, degrees):
    """The matrix libavutil writes for ``degrees`` reads back as that angle, unrounded: PyAV's
    ``frame.rotation`` truncates (29 for a 30-degree tag), the ffmpeg CLI rounds."""
    path = make_clip(clip_dir / f"tagged_{degrees}.mp4", 64, 48, 1, rotation=degrees)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        matrices = [
            struct.unpack("<9i", bytes(item)[:36])
            for item in SideDataContainer(frame)
            if item.type == SideDataType.DISPLAYMATRIX
        ]
    expected = (degrees + 180) % 360 - 180
    assert display_rotation(matrices[0]) == pytest.approx(expected, abs=1e-3)


def test_a_degenerate_display_matrix_has_no_angle():
    assert math.isnan(display_rotation((0, 0, 0, 0, 0, 0, 0, 0, 1 << 30)))
