"""One clip's computation: decode the sampled frames, run the model, reduce, summarise."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
)
from saliency_assets.core.model.reducers import TemporalReducer, map_statistics
from saliency_assets.core.model.saliency_model import SaliencyModel
from saliency_assets.core.tables.filesystems import aws_environment

STARTED, DECODING, INFERRING = "started", "decoding", "inferring"
# The whole clip, decoding and inference together, may take this many decode timeouts: a hung
# model call is cut off too, while a slow but working model on a big clip keeps its room.
CLIP_TIMEOUT_PER_DECODE_TIMEOUT = 5
# Pixels of a frame converted to model input at a time (yuv420p_window_input): a 1080p frame
# at once overflows the cache, 7.7 ms against 15.9; 2**16 to 2**19 measured alike.
STRIP_PIXELS = 1 << 18


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
    frames_at_once: Callable[[], int] | None = None,
) -> ClipResult:
    """Decode, infer and reduce one clip; every per-clip failure becomes a status.

    Frames are inferred and folded as they are decoded, so a worker holds only the frames in
    flight. ``frames_at_once`` (asked before each frame; default 1) is how many frames may be
    inferring side by side, up to the model's ``streams``: the clip's frames are spread over
    them and folded back in frame order, so the result is the same as one at a time.
    ``on_phase`` hears ``INFERRING`` whenever decoding waits for inference (before each frame
    and while the last frames finish) and ``DECODING`` when it goes on (the worker pool's clock
    on decoding).
    """
    fold = ClipMapFold(job, model, on_phase, frames_at_once)
    try:
        decoded = decode_for_job(source, job, fold)
        mean, var = map_statistics(fold.result())
    except GeometryError as error:
        return ClipResult(MISSING_GEOMETRY, detail=str(error))
    except DecodeError as error:
        return ClipResult(DECODE_FAILED, detail=str(error))
    except ModelFailure as error:
        return ClipResult(MODEL_FAILED, detail=str(error))
    finally:
        fold.close()
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
    try:
        decode_for_job(source, job, fold)
        return fold.result()
    finally:
        fold.close()


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
    """A frame sink that runs the model on each frame as it arrives and folds the map over time.

    Up to ``frames_at_once()`` frames infer side by side on threads of their own while the
    caller decodes the next; their maps are folded in frame order (the reducers are
    order-dependent), so the clip map is bit for bit the one-at-a-time fold. One frame at a
    time on the CPU runs on the caller's thread, as before there were streams; on an
    accelerator (``model.on_accelerator``) that one frame infers on a thread of its own, so
    the next frame is decoded on the CPU while the device runs. Call :meth:`close` when done
    (it waits for any frame still inferring).
    """

    def __init__(
        self,
        job: ClipJob,
        model: SaliencyModel,
        on_phase: Callable[[str], None] | None = None,
        frames_at_once: Callable[[], int] | None = None,
    ) -> None:
        self.job, self.model = job, model
        self._on_phase = on_phase or (lambda phase: None)
        self._frames_at_once = frames_at_once
        self._overlaps_decoding = model.on_accelerator
        self._in_flight: deque[tuple[DecodedFrame, Future]] = deque()  # in frame order
        self._threads: ThreadPoolExecutor | None = None
        self._reducer = TemporalReducer(job.temporal_aggregator, job.ema_alpha)

    def add(self, frame: DecodedFrame) -> None:
        self._on_phase(INFERRING)
        at_once = self._at_once()
        if at_once <= 1 and not self._in_flight and not self._overlaps_decoding:
            self._fold(frame, self._infer(frame))
        else:
            self._wait_for_a_stream(at_once)
            self._in_flight.append((frame, self._thread_pool().submit(self._infer, frame)))
            self._fold_finished()
        self._on_phase(DECODING)

    def restart(self) -> None:
        """Forget the frames so far (the decode starts a different set): they still finish,
        and a failure among them still fails the clip, as it would have one at a time."""
        self._drain()
        self._reducer = TemporalReducer(self.job.temporal_aggregator, self.job.ema_alpha)

    def result(self) -> np.ndarray:
        """The clipped clip map of the frames folded so far (once those in flight are in)."""
        self._drain()
        try:
            return self._reducer.result()
        except Exception as error:
            raise ModelFailure(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        """Wait for the frames still inferring (their results are dropped) and end the threads."""
        for _frame, future in self._in_flight:
            future.cancel()
        wait([future for _frame, future in self._in_flight])
        self._in_flight.clear()
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None

    def _at_once(self) -> int:
        if self._frames_at_once is None:
            return 1
        return max(1, min(self._frames_at_once(), self.model.streams))

    def _infer(self, frame: DecodedFrame) -> np.ndarray:
        try:
            return frame_saliency(frame, self.model)
        except Exception as error:  # onnxruntime and numpy failures are per-clip model failures
            raise ModelFailure(f"frame {frame.index}: {type(error).__name__}: {error}") from error

    def _fold(self, frame: DecodedFrame, saliency_map: np.ndarray) -> None:
        try:
            self._reducer.add(saliency_map, frame.luma)
        except Exception as error:
            raise ModelFailure(f"frame {frame.index}: {type(error).__name__}: {error}") from error

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.model.streams, "saliency-stream")
        return self._threads

    def _wait_for_a_stream(self, at_once: int) -> None:
        """Return once fewer than ``at_once`` frames are inferring, folding those that are in."""
        while True:
            running = [future for _frame, future in self._in_flight if not future.done()]
            if len(running) < at_once:
                return
            wait(running, return_when=FIRST_COMPLETED)
            self._fold_finished()

    def _fold_finished(self) -> None:
        """Fold the maps that are in, in frame order, up to the first frame still inferring."""
        while self._in_flight and self._in_flight[0][1].done():
            frame, future = self._in_flight.popleft()
            self._fold(frame, future.result())  # raises the frame's ModelFailure

    def _drain(self) -> None:
        if self._in_flight:
            self._on_phase(INFERRING)
            wait([future for _frame, future in self._in_flight])
            self._fold_finished()
            self._on_phase(DECODING)


def frame_saliency(frame: DecodedFrame, model: SaliencyModel) -> np.ndarray:
    """One frame's (H, W) saliency map."""
    height, width = frame.luma.shape
    if frame.chroma is None:
        return model.predict(rgb24_input(frame.rgb), height, width)

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
    window is converted, so a 4K frame never exists as one float tensor. It is converted in
    strips of about :data:`STRIP_PIXELS`, whose temporaries stay in the cache: half the time
    of the whole window at 1080p, the same values (every operation is per pixel).
    """
    height, width = frame.luma.shape
    rows, cols = min(bottom, height) - top, min(right, width) - left
    tensor = np.zeros((1, 3, bottom - top, right - left), dtype=np.float32)
    if rows <= 0 or cols <= 0:
        return tensor
    strip = max(2, STRIP_PIXELS // cols // 2 * 2)  # even, so each strip's chroma lines up
    for first in range(0, rows, strip):
        last = min(first + strip, rows)
        _yuv420p_strip(frame, top + first, last - first, left, cols, tensor[0, :, first:last])
    return tensor


def _yuv420p_strip(
    frame: DecodedFrame, top: int, rows: int, left: int, cols: int, out: np.ndarray
) -> None:
    """Rows ``[top, top + rows)`` of the window's input into ``out`` ([3, rows, >= cols])."""
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
        normalised = out[index, :, :cols]
        np.subtract(np.clip(channel, 0.0, 1.0, out=channel), IMAGENET_MEAN[index], out=normalised)
        np.divide(normalised, IMAGENET_STD[index], out=normalised)


def rgb24_input(rgb: np.ndarray) -> np.ndarray:
    """The edge-padded model input of an inference-size frame's ``(H, W, 3)`` uint8 RGB.

    Bit for bit ``model_input(rgb24_to_rgb(rgb), pad_mode="edge")`` (the same float32
    operations per channel), written into the tensor in place instead of through four
    whole-frame temporaries and ``np.pad`` (at 512x288 those took ~4 % of a clip's work).
    """
    height, width, _channels = rgb.shape
    tensor = np.empty((1, 3, _padded(height), _padded(width)), dtype=np.float32)
    for index in range(3):
        channel = tensor[0, index, :height, :width]
        np.divide(rgb[..., index], np.float32(255.0), out=channel, dtype=np.float32)
        np.subtract(channel, IMAGENET_MEAN[index], out=channel)
        np.divide(channel, IMAGENET_STD[index], out=channel)
    tensor[0, :, height:, :width] = tensor[0, :, height - 1 : height, :width]
    tensor[0, :, :, width:] = tensor[0, :, :, width - 1 : width]
    return tensor


def _padded(length: int) -> int:
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE
