"""One clip's computation: decode the sampled frames, run the model, reduce, summarise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.errors import DecodeError, GeometryError
from saliency_assets.core.contract.statuses import DECODE_FAILED, MISSING_GEOMETRY, MODEL_FAILED, OK
from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.decoding import DecodedClip, DecodedFrame, FrameSink, decode_clip
from saliency_assets.core.model.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_MULTIPLE,
    model_input,
    rgb24_to_rgb,
)
from saliency_assets.core.model.reducers import TemporalReducer, map_statistics
from saliency_assets.core.model.saliency_model import SaliencyModel
from saliency_assets.core.tables.filesystems import aws_environment

STARTED, DECODING, INFERRING = "started", "decoding", "inferring"
# The whole clip, decoding and inference together, may take this many decode timeouts: a hung
# model call is cut off too, while a slow but working model on a big clip keeps its room.
CLIP_TIMEOUT_PER_DECODE_TIMEOUT = 5


@dataclass(frozen=True)
class ClipResult:
    """A clip's outcome: ``ok`` with the two statistics, or a failure status and why."""

    status: str
    saliency_mean: float | None = None
    saliency_var: float | None = None
    detail: str | None = None
    frames_used: int = 0
    width: int = 0
    height: int = 0
    transfer: str | None = None  # the source's, as DecodedClip.transfer; None when not decoded

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class ClipJob:
    """What every clip of a run shares; small and picklable for worker processes."""

    plan: SamplingPlan
    temporal_aggregator: str
    ema_alpha: float
    model_path: Path
    providers: tuple[str, ...]
    ffmpeg_bin: str | None = None
    ffprobe_bin: str | None = None
    decode_timeout: float | None = None
    clip_timeout: float | None = None  # the whole clip, decoding and inference; None: no limit
    # The run's object-store settings (AWS_* variables): a worker forked from a long-lived
    # forkserver has the environment of the forkserver's start, not of this run.
    object_store_env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, config: MaterializeConfig, model_path: Path) -> ClipJob:
        return cls(
            plan=config.sampling_plan,
            temporal_aggregator=config.temporal_aggregator,
            ema_alpha=config.ema_alpha,
            model_path=model_path,
            providers=config.providers,
            ffmpeg_bin=config.ffmpeg_bin,
            ffprobe_bin=config.ffprobe_bin,
            decode_timeout=config.decode_timeout,
            clip_timeout=clip_timeout_for(config.decode_timeout),
            object_store_env=tuple(sorted(aws_environment().items())),
        )


def clip_timeout_for(decode_timeout: float | None) -> float | None:
    """The whole-clip limit that goes with a decode limit (none without one)."""
    if decode_timeout is None:
        return None
    return decode_timeout * CLIP_TIMEOUT_PER_DECODE_TIMEOUT


def compute_clip(
    source: ClipSource,
    job: ClipJob,
    model: SaliencyModel,
    on_phase: Callable[[str], None] | None = None,
) -> ClipResult:
    """Decode, infer and reduce one clip; every per-clip failure becomes a status.

    Frames are inferred and folded one by one as they are decoded, so a worker holds one
    decoded frame at a time. ``on_phase`` hears ``INFERRING`` before each frame's inference and
    ``DECODING`` after it (the worker pool's clock on decoding).
    """
    fold = ClipMapFold(job, model, on_phase)
    try:
        decoded = decode_for_job(source, job, fold)
        mean, var = map_statistics(fold.result())
    except GeometryError as error:
        return ClipResult(MISSING_GEOMETRY, detail=str(error))
    except DecodeError as error:
        return ClipResult(DECODE_FAILED, detail=str(error))
    except ModelFailure as error:
        return ClipResult(MODEL_FAILED, detail=str(error))
    return ClipResult(
        OK,
        mean,
        var,
        frames_used=len(decoded.indices),
        width=decoded.width,
        height=decoded.height,
        transfer=decoded.transfer,
    )


def clip_map(source: ClipSource, job: ClipJob, model: SaliencyModel) -> np.ndarray:
    """The clip's temporally reduced (H, W) saliency map (raises on any failure)."""
    fold = ClipMapFold(job, model)
    decode_for_job(source, job, fold)
    return fold.result()


def decode_for_job(source: ClipSource, job: ClipJob, sink: FrameSink | None = None) -> DecodedClip:
    """Decode the clip's sampled frames with the job's decoder settings, into ``sink`` if given."""
    return decode_clip(
        source,
        job.plan,
        sink=sink,
        ffmpeg_bin=job.ffmpeg_bin,
        ffprobe_bin=job.ffprobe_bin,
        timeout_s=job.decode_timeout,
    )


class ModelFailure(Exception):
    """Inference or reduction failed on a decoded frame (onnxruntime or numpy said why)."""


class ClipMapFold:
    """A frame sink that runs the model on each frame as it arrives and folds the map over time."""

    def __init__(
        self,
        job: ClipJob,
        model: SaliencyModel,
        on_phase: Callable[[str], None] | None = None,
    ) -> None:
        self.job, self.model = job, model
        self._on_phase = on_phase or (lambda phase: None)
        self.restart()

    def add(self, frame: DecodedFrame) -> None:
        self._on_phase(INFERRING)
        try:
            self._reducer.add(frame_saliency(frame, self.model), frame.luma)
        except Exception as error:  # onnxruntime and numpy failures are per-clip model failures
            raise ModelFailure(f"frame {frame.index}: {type(error).__name__}: {error}") from error
        self._on_phase(DECODING)

    def restart(self) -> None:
        self._reducer = TemporalReducer(self.job.temporal_aggregator, self.job.ema_alpha)

    def result(self) -> np.ndarray:
        """The clipped clip map of the frames folded so far."""
        try:
            return self._reducer.result()
        except Exception as error:
            raise ModelFailure(f"{type(error).__name__}: {error}") from error


def frame_saliency(frame: DecodedFrame, model: SaliencyModel) -> np.ndarray:
    """One frame's (H, W) saliency map."""
    height, width = frame.luma.shape
    if frame.chroma is None:
        tensor = model_input(rgb24_to_rgb(frame.rgb), pad_mode="edge")
        return model.predict(tensor, height, width)

    # The padded tensor is built straight from the planes (whole, or window by window when
    # the model tiles): 2.5x faster than model_input's stack/transpose/pad, same values.
    def window(top: int, bottom: int, left: int, right: int) -> np.ndarray:
        return yuv420p_window_input(frame, top, bottom, left, right)

    return model.predict_windows(window, _padded(height), _padded(width), height, width)


def yuv420p_window_input(
    frame: DecodedFrame, top: int, bottom: int, left: int, right: int
) -> np.ndarray:
    """The window ``[top, bottom) x [left, right)`` of the frame's zero-padded model input.

    Bit for bit the values of ``model_input(yuv420p_to_rgb(...))`` on the whole frame: the
    same float32 operations in the same order, with the chroma products taken before the 2x2
    repeat (elementwise, so identical) and each channel written into the tensor in place,
    which makes it 2-3x faster. ``top``/``left`` are even, so 4:2:0 chroma lines up; only the
    window is converted, so a 4K frame never exists as one float tensor.
    """
    height, width = frame.luma.shape
    rows, cols = min(bottom, height) - top, min(right, width) - left
    tensor = np.zeros((1, 3, bottom - top, right - left), dtype=np.float32)
    if rows <= 0 or cols <= 0:
        return tensor
    u_plane, v_plane = frame.chroma
    chroma = np.s_[top // 2 : (top + rows + 1) // 2, left // 2 : (left + cols + 1) // 2]
    y = (frame.luma[top : top + rows, left : left + cols].astype(np.float32) - 16.0) / 219.0
    u = (u_plane[chroma].astype(np.float32) - 128.0) / 224.0
    v = (v_plane[chroma].astype(np.float32) - 128.0) / 224.0

    def upsampled(plane: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)[:rows, :cols]

    channels = (
        y + upsampled(1.5748 * v),
        y - upsampled(0.1873 * u) - upsampled(0.4681 * v),
        y + upsampled(1.8556 * u),
    )
    for index, channel in enumerate(channels):
        normalised = tensor[0, index, :rows, :cols]
        np.subtract(np.clip(channel, 0.0, 1.0, out=channel), IMAGENET_MEAN[index], out=normalised)
        np.divide(normalised, IMAGENET_STD[index], out=normalised)
    return tensor


def _padded(length: int) -> int:
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE
