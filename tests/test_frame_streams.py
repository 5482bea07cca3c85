"""A clip's frames spread over inference streams: the same clip map as one frame at a time.

A worker infers up to its share of cores' frames side by side and folds their maps back in
frame order, so every temporal aggregator (all are order-dependent but ``max``) gives the
one-at-a-time map bit for bit, on both engines, also when the share changes mid-clip and
when a clip shorter than the head window makes the fold start again.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
from support.clips import make_clip

from saliency_assets.core.contract.config import TEMPORAL_AGGREGATORS
from saliency_assets.core.contract.statuses import MODEL_FAILED, OK
from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.model.clip_saliency import (
    INFERRING,
    ClipJob,
    ClipMapFold,
    compute_clip,
    decode_for_job,
)
from saliency_assets.core.model.saliency_model import CPU_PROVIDER, OPENVINO, SaliencyModel

# A barrier both streams must reach: only frames inferring side by side get through it. The
# timeout only keeps a broken fold from hanging the suite.
BARRIER_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[int, ClipSource]:
    """A 9-frame clip (8 sampled) and a 5-frame one (the head window restarts the fold)."""
    folder = tmp_path_factory.mktemp("frame_streams")
    return {n: ClipSource(make_clip(folder / f"c{n}.mp4", 96, 64, n)) for n in (9, 5)}


@pytest.fixture(scope="module", params=[CPU_PROVIDER, OPENVINO])
def model(request, shared_models_dir) -> SaliencyModel:
    path = shared_models_dir / "saliency_student_v1.onnx"
    return SaliencyModel(path, (request.param,), streams=2)


def folded_map(source: ClipSource, job: ClipJob, model, frames_at_once=None) -> np.ndarray:
    fold = ClipMapFold(job, model, frames_at_once=frames_at_once)
    try:
        decode_for_job(source, job, fold)
        return fold.result()
    finally:
        fold.close()


def job_for(aggregator: str, model_path: Path = Path("m.onnx")) -> ClipJob:
    plan = SamplingPlan(max_frames=8, frame_samples=8)
    return ClipJob(plan, aggregator, 0.6, model_path, (CPU_PROVIDER,))


@pytest.mark.parametrize("length", [9, 5])
@pytest.mark.parametrize("aggregator", TEMPORAL_AGGREGATORS)
def test_frames_spread_over_two_streams_fold_to_the_one_at_a_time_map(
    clips, model, aggregator, length
):
    job = job_for(aggregator)
    one_at_a_time = folded_map(clips[length], job, model)
    side_by_side = folded_map(clips[length], job, model, frames_at_once=lambda: 2)
    np.testing.assert_array_equal(side_by_side, one_at_a_time)


def test_a_share_that_changes_mid_clip_gives_the_same_map(clips, model):
    job = job_for("motion-weighted")
    shares = itertools.cycle([2, 1, 1, 2, 2, 1])
    changing = folded_map(clips[9], job, model, frames_at_once=lambda: next(shares))
    np.testing.assert_array_equal(changing, folded_map(clips[9], job, model))


class SideBySideModel:
    """A model seam whose calls only get through in pairs: it proves two frames infer at
    once, counts the calls running, and fails at once from its ``fail_from``-th call on."""

    streams = 2
    on_accelerator = False

    def __init__(self, fail_from: int | None = None) -> None:
        self.barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)
        self.lock = threading.Lock()
        self.calls = self.running = 0
        self.fail_from = fail_from

    def predict_windows(self, window, padded_height, padded_width, height, width):
        with self.lock:
            self.calls += 1
            call, self.running = self.calls, self.running + 1
        try:
            if self.fail_from is not None and call >= self.fail_from:
                raise RuntimeError("bad allocation")
            self.barrier.wait()
            return np.full((height, width), 0.25 * (call % 2 + 1), dtype=np.float32)
        finally:
            with self.lock:
                self.running -= 1


def test_two_frames_infer_at_once_and_their_mean_is_the_frames_mean(clips):
    model = SideBySideModel()
    result = compute_clip(clips[9], job_for("mean"), model, frames_at_once=lambda: 2)
    assert (result.status, result.frames_used, model.calls) == (OK, 8, 8)
    assert result.saliency_mean == pytest.approx(0.375)


def test_a_failing_frame_among_those_in_flight_fails_the_clip_naming_it(clips):
    model = SideBySideModel(fail_from=3)
    result = compute_clip(clips[9], job_for("ema"), model, frames_at_once=lambda: 2)
    assert result.status == MODEL_FAILED
    assert result.detail == "frame 2: RuntimeError: bad allocation"
    assert model.running == 0  # nothing still inferring once the clip's result is out


class DeviceModel:
    """A model seam on an "accelerator": each call returns only once the fold has started on
    the next frame (or on draining the last one), so it proves decoding goes on while the
    device infers; a call that would wait in vain fails at once instead."""

    streams = 1
    on_accelerator = True

    def __init__(self) -> None:
        self.frames_begun = 0  # the fold's INFERRING reports: one per frame, one to drain
        self.begun = threading.Condition()
        self.calls = 0

    def on_phase(self, phase: str) -> None:
        if phase == INFERRING:
            with self.begun:
                self.frames_begun += 1
                self.begun.notify_all()

    def predict_windows(self, window, padded_height, padded_width, height, width):
        self.calls += 1
        call = self.calls
        with self.begun:
            if not self.begun.wait_for(lambda: self.frames_begun > call, BARRIER_TIMEOUT_S):
                raise RuntimeError(f"frame {call} inferred while nothing else went on")
        top_left = window(0, 8, 0, 8)
        return np.full((height, width), float(top_left.mean()), dtype=np.float32)


def test_on_an_accelerator_the_next_frame_is_decoded_while_one_infers(clips):
    model = DeviceModel()
    overlapped = compute_clip(clips[9], job_for("ema"), model, on_phase=model.on_phase)
    assert (overlapped.status, overlapped.frames_used, model.calls) == (OK, 8, 8)

    model.on_accelerator = False  # the same seam, one frame at a time: each frame's wait is
    model.calls, model.frames_begun = 0, 100  # satisfied up front
    one_at_a_time = compute_clip(clips[9], job_for("ema"), model)
    assert overlapped.saliency_mean == one_at_a_time.saliency_mean
    assert overlapped.saliency_var == one_at_a_time.saliency_var
