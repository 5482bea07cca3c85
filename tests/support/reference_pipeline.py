"""Independent re-implementation of the old VMAFx per-clip saliency pipeline (a test oracle).

It reproduces, from ``REFERENCE.md`` sections 5.3-10, what the reference materializer did for
one clip once its geometry was known: decode the head of the clip with ffmpeg to a temporary
raw yuv420p file, sample frames by the reference index rule, convert them with BT.709
limited-range coefficients, run the ONNX model on CPU with a fresh session, reduce the per-frame
maps over time and take the spatial mean and population variance.

Nothing here imports ``saliency_assets``: comparing the product to this module is only
meaningful while the two stay independent. The reference's bugs are reproduced on purpose
(head-only decode, uneven sampling, height % 8 rejection, trusted geometry); the only deviation
is the ``enforce_height_multiple_of_8`` switch, which compatibility tests turn off to compare
540-line clips.

Run as a script to compute one clip and print JSON::

    python tests/support/reference_pipeline.py --src clip.mp4 --width 64 --height 48 \\
        --model saliency_student_v1.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

AGGREGATORS = ("mean", "ema", "max", "motion-weighted")
DEFAULT_MODEL_RELPATH = Path("model/tiny/saliency_student_v1.onnx")
TEMP_DIR_PREFIX = "vmaf-saliency-features-"
RAW_OUTPUT_NAME = "clip.yuv"
PAD_MULTIPLE = 32
MOTION_WEIGHT_FLOOR = 1.0e-6

STATUS_OK = "ok"
STATUS_MISSING_GEOMETRY = "missing-geometry"
STATUS_DECODE_FAILED = "decode-failed"
STATUS_MODEL_FAILED = "model-failed"

_IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), dtype=np.float32).reshape(3, 1, 1)
_IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32).reshape(3, 1, 1)


class ReferenceDecodeError(RuntimeError):
    """ffmpeg exited non-zero or wrote no output file (status ``decode-failed``)."""


class ReferenceModelUnavailableError(RuntimeError):
    """The model file does not exist (the reference's ``SaliencyUnavailableError``)."""


@dataclass(frozen=True)
class ReferenceClipResult:
    """Outcome for one clip: ``status`` is ``ok`` with ``mean``/``var``, or a failure status.

    ``error`` keeps the exception text of a failure for diagnostics; the reference threw it away,
    so it never influences the status.
    """

    status: str
    mean: float | None = None
    var: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the clip produced saliency statistics."""
        return self.status == STATUS_OK


def reference_compute_clip(
    ffmpeg_bin: str,
    src: Path | str,
    width: int,
    height: int,
    model_path: Path | str | None,
    max_frames: int = 8,
    frame_samples: int = 8,
    temporal_aggregator: str = "mean",
    ema_alpha: float = 0.6,
    enforce_height_multiple_of_8: bool = True,
) -> ReferenceClipResult:
    """Compute one clip as the reference's ``compute_row_saliency`` did after path resolution.

    ``width``/``height`` are what the row, the config default or ffprobe resolved to (section
    5.3); a non-positive one gives ``missing-geometry``. A missing ffmpeg binary raises
    ``FileNotFoundError``, uncaught, as in the reference. ``model_path=None`` means the
    reference's CWD-relative default.
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        return ReferenceClipResult(STATUS_MISSING_GEOMETRY)
    frames = max(1, int(max_frames))
    with tempfile.TemporaryDirectory(prefix=TEMP_DIR_PREFIX) as tmp:
        try:
            raw_path = reference_decode(ffmpeg_bin, src, width, height, frames, Path(tmp))
        except ReferenceDecodeError as exc:
            return ReferenceClipResult(STATUS_DECODE_FAILED, error=str(exc))
        try:  # the sample clamp sat inside the reference's try, so a bad value is model-failed
            samples = max(1, min(int(frame_samples), frames))
            saliency_map = reference_saliency_map(
                raw_path,
                width,
                height,
                model_path,
                samples,
                temporal_aggregator,
                ema_alpha,
                enforce_height_multiple_of_8=enforce_height_multiple_of_8,
            )
            mean, var = reference_clip_statistics(saliency_map)
        except Exception as exc:  # the reference mapped every exception here to model-failed
            return ReferenceClipResult(STATUS_MODEL_FAILED, error=f"{type(exc).__name__}: {exc}")
    return ReferenceClipResult(STATUS_OK, mean=mean, var=var)


def reference_decode_command(
    ffmpeg_bin: str, src: Path | str, width: int, height: int, max_frames: int, output: Path
) -> list[str]:
    """The exact ffmpeg argv of section 6, with the raw-input flags of section 5.4 for ``.yuv``."""
    raw_input_flags: list[str] = []
    if Path(src).suffix.lower() == ".yuv":
        raw_input_flags = [
            "-f",
            "rawvideo",
            "-video_size",
            f"{width}x{height}",
            "-pix_fmt",
            "yuv420p",
        ]
    return [
        ffmpeg_bin,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *raw_input_flags,
        "-i",
        str(src),
        "-frames:v",
        str(max(1, int(max_frames))),
        "-pix_fmt",
        "yuv420p",
        "-f",
        "rawvideo",
        str(output),
    ]


def reference_decode(
    ffmpeg_bin: str, src: Path | str, width: int, height: int, max_frames: int, tmpdir: Path
) -> Path:
    """Decode the first ``max_frames`` frames of ``src`` to ``tmpdir/clip.yuv`` and return it.

    ``tmpdir`` is the caller's ``TemporaryDirectory`` (prefix ``vmaf-saliency-features-``).
    Success is exit code 0 and an existing output file, even an empty one; otherwise
    ``ReferenceDecodeError``. There is no timeout, as in the reference.
    """
    output = Path(tmpdir) / RAW_OUTPUT_NAME
    cmd = reference_decode_command(ffmpeg_bin, src, width, height, max_frames, output)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not output.is_file():
        detail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output file"]
        raise ReferenceDecodeError(f"ffmpeg exit {proc.returncode} on {src}: {detail[0]}")
    return output


def reference_frame_indices(total: int, samples: int) -> list[int]:
    """Section 7: ``0, step, 2*step, ...`` below ``total`` with ``step = max(1, total // n)``,
    truncated to ``n`` entries; ``[]`` without frames and ``[0]`` for one sample or one frame."""
    if total <= 0:
        return []
    if samples <= 1 or total == 1:
        return [0]
    step = max(1, total // samples)
    return list(range(0, total, step))[:samples]


def reference_saliency_map(
    raw_path: Path,
    width: int,
    height: int,
    model_path: Path | str | None,
    frame_samples: int = 8,
    temporal_aggregator: str = "mean",
    ema_alpha: float = 0.6,
    *,
    enforce_height_multiple_of_8: bool = True,
) -> np.ndarray:
    """Section 8-9: the reference ``compute_saliency_map`` on a raw yuv420p file.

    Checks run in the reference's order (reducer and alpha, height % 8, model file), then a new
    CPU ``InferenceSession`` is built, frames are sampled, run through the model and reduced.
    Returns a float32 H x W map clipped to [0, 1].
    """
    _check_reducer(temporal_aggregator, ema_alpha)
    if enforce_height_multiple_of_8 and height % 8 != 0:
        raise ValueError(f"height {height} is not divisible by 8 (reference rejects it)")
    session = _new_session(model_path)
    total = Path(raw_path).stat().st_size // _frame_bytes(width, height)
    if total <= 0:
        raise ValueError(f"no frames in {raw_path} for {width}x{height} yuv420p")
    indices = reference_frame_indices(total, frame_samples)
    frames = _infer_frames(session, Path(raw_path), indices, width, height)
    return reference_temporal_reduce(frames, (height, width), temporal_aggregator, ema_alpha)


def reference_temporal_reduce(
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    shape: tuple[int, int],
    temporal_aggregator: str,
    ema_alpha: float = 0.6,
    *,
    clip: bool = True,
) -> np.ndarray:
    """Section 9: reduce ``(mask, luma)`` pairs in sample order to one ``shape`` map.

    ``mask`` is the float32 H x W model output and ``luma`` the uint8 Y plane of the same
    sampled frame (used by ``motion-weighted`` only). ``clip=False`` returns the map before the
    final clip to [0, 1], so tests can see, for example, that ``max`` starts from zeros.
    """
    _check_reducer(temporal_aggregator, ema_alpha)
    reducer = _REDUCERS[temporal_aggregator](shape, float(ema_alpha))
    for mask, luma in frames:
        reducer.add(mask, luma)
    result = reducer.result()
    return np.clip(result, 0.0, 1.0) if clip else result


def reference_clip_statistics(saliency_map: Any) -> tuple[float, float]:
    """Section 10: spatial mean and population variance of the float32 map, as Python floats."""
    arr = np.asarray(saliency_map, dtype=np.float32)
    if arr.size == 0:
        raise ValueError("empty saliency mask")
    return float(arr.mean()), float(arr.var())


def reference_read_planes(
    raw_path: Path, index: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Section 8.2.1: the uint8 Y (H x W), U and V ((H//2) x (W//2)) planes of frame ``index``.

    The frame size is ``W*H*3//2`` and V is whatever follows U, so odd dimensions fail to
    reshape exactly as they did in the reference.
    """
    frame_bytes = _frame_bytes(width, height)
    with Path(raw_path).open("rb") as fh:
        fh.seek(index * frame_bytes)
        buf = fh.read(frame_bytes)
    if len(buf) != frame_bytes:
        raise ValueError(f"short read on {raw_path}: frame {index} has {len(buf)} bytes")
    chroma_shape = (height // 2, width // 2)
    y_end = width * height
    u_end = y_end + chroma_shape[0] * chroma_shape[1]
    y = np.frombuffer(buf[:y_end], dtype=np.uint8).reshape(height, width)
    u = np.frombuffer(buf[y_end:u_end], dtype=np.uint8).reshape(chroma_shape)
    v = np.frombuffer(buf[u_end:], dtype=np.uint8).reshape(chroma_shape)
    return y, u, v


def reference_model_input(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Section 8.2.2-8.2.3: BT.709 limited-range RGB, clipped, ImageNet-normalised, [1,3,H,W]."""
    height, width = y.shape
    y_f = (y.astype(np.float32) - 16.0) / 219.0
    u_f = _upsample_chroma((u.astype(np.float32) - 128.0) / 224.0, height, width)
    v_f = _upsample_chroma((v.astype(np.float32) - 128.0) / 224.0, height, width)
    red = y_f + (1.5748 * v_f)
    green = y_f - (0.1873 * u_f) - (0.4681 * v_f)
    blue = y_f + (1.8556 * u_f)
    rgb = np.clip(np.stack([red, green, blue], axis=0), 0.0, 1.0)
    return ((rgb - _IMAGENET_MEAN) / _IMAGENET_STD)[None, ...]


def reference_pad(tensor: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Section 8.2.4: zero-pad a [1,3,H,W] tensor bottom/right to multiples of ``multiple``."""
    _, channels, height, width = tensor.shape
    padded_h = math.ceil(height / multiple) * multiple
    padded_w = math.ceil(width / multiple) * multiple
    if (padded_h, padded_w) == (height, width):
        return tensor
    padded = np.zeros((1, channels, padded_h, padded_w), dtype=np.float32)
    padded[:, :, :height, :width] = tensor
    return padded


def _frame_bytes(width: int, height: int) -> int:
    """Bytes of one 8-bit yuv420p frame as the reference counted them."""
    return width * height * 3 // 2


def _upsample_chroma(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour 2x2 chroma upsampling cropped to the luma size."""
    return np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)[:height, :width]


def _check_reducer(temporal_aggregator: str, ema_alpha: float) -> None:
    """Reject an unknown reducer or an alpha outside (0, 1], whatever the reducer."""
    if temporal_aggregator not in AGGREGATORS:
        raise ValueError(
            f"temporal_aggregator must be one of {AGGREGATORS}, got {temporal_aggregator!r}"
        )
    if not 0.0 < float(ema_alpha) <= 1.0:
        raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha!r}")


def _new_session(model_path: Path | str | None) -> Any:
    """A fresh default-options CPU session, after checking the model file exists."""
    path = Path(model_path) if model_path is not None else DEFAULT_MODEL_RELPATH
    if not path.exists():
        raise ReferenceModelUnavailableError(f"saliency model not found: {path}")
    import onnxruntime  # imported late: a missing runtime was a per-clip model-failed

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _infer_frames(
    session: Any, raw_path: Path, indices: Sequence[int], width: int, height: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(mask, luma)`` per sampled frame, one frame in memory at a time."""
    for index in indices:
        y, u, v = reference_read_planes(raw_path, index, width, height)
        tensor = reference_pad(reference_model_input(y, u, v))
        output = session.run(None, {"input": tensor})[0]
        yield np.asarray(output)[0, 0, :height, :width].astype(np.float32), y


class _MeanReducer:
    """Per-pixel mean, accumulated in float32 and divided by K at the end."""

    def __init__(self, shape: tuple[int, int], ema_alpha: float) -> None:
        self._total = np.zeros(shape, dtype=np.float32)
        self._count = 0

    def add(self, mask: np.ndarray, luma: np.ndarray) -> None:
        self._total += mask
        self._count += 1

    def result(self) -> np.ndarray:
        self._total /= float(self._count)
        return self._total


class _MaxReducer:
    """Per-pixel running maximum that starts from zeros."""

    def __init__(self, shape: tuple[int, int], ema_alpha: float) -> None:
        self._running = np.zeros(shape, dtype=np.float32)

    def add(self, mask: np.ndarray, luma: np.ndarray) -> None:
        self._running = np.maximum(self._running, mask)

    def result(self) -> np.ndarray:
        return self._running


class _EmaReducer:
    """``E_1 = M_1``, then ``E_k = alpha*M_k + (1-alpha)*E_{k-1}``."""

    def __init__(self, shape: tuple[int, int], ema_alpha: float) -> None:
        self._shape = shape
        self._alpha = ema_alpha
        self._state: np.ndarray | None = None

    def add(self, mask: np.ndarray, luma: np.ndarray) -> None:
        if self._state is None:
            self._state = mask.copy()
        else:
            self._state = (self._alpha * mask) + ((1.0 - self._alpha) * self._state)

    def result(self) -> np.ndarray:
        return self._state if self._state is not None else np.zeros(self._shape, np.float32)


class _MotionWeightedReducer:
    """``sum(w_k M_k) / sum(w_k)`` with ``w_1 = 1`` and ``w_k`` the mean sampled-luma delta."""

    def __init__(self, shape: tuple[int, int], ema_alpha: float) -> None:
        self._total = np.zeros(shape, dtype=np.float32)
        self._weight_sum = 0.0
        self._previous_luma: np.ndarray | None = None

    def add(self, mask: np.ndarray, luma: np.ndarray) -> None:
        weight = _motion_weight(self._previous_luma, luma)
        self._total += mask * weight
        self._weight_sum += weight
        self._previous_luma = luma.copy()

    def result(self) -> np.ndarray:
        self._total /= self._weight_sum
        return self._total


def _motion_weight(previous: np.ndarray | None, luma: np.ndarray) -> float:
    """1.0 for the first frame, else ``max(mean(|Y_k - Y_{k-1}|) / 255, 1e-6)`` in float32."""
    if previous is None:
        return 1.0
    delta = np.abs(luma.astype(np.float32) - previous.astype(np.float32))
    return max(float(delta.mean() / 255.0), MOTION_WEIGHT_FLOOR)


_REDUCERS = {
    "mean": _MeanReducer,
    "max": _MaxReducer,
    "ema": _EmaReducer,
    "motion-weighted": _MotionWeightedReducer,
}


def _default_ffmpeg() -> str:
    """``ffmpeg`` on PATH, else the imageio-ffmpeg binary, else the bare name."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError:
        return "ffmpeg"
    return imageio_ffmpeg.get_ffmpeg_exe()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options mirroring the reference flags that matter for one clip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="clip to compute")
    parser.add_argument("--width", type=int, required=True, help="resolved clip width")
    parser.add_argument("--height", type=int, required=True, help="resolved clip height")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"ONNX model (default: {DEFAULT_MODEL_RELPATH}, CWD-relative)",
    )
    parser.add_argument("--ffmpeg-bin", default=None, help="ffmpeg binary")
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--frame-samples", type=int, default=8)
    parser.add_argument("--temporal-aggregator", default="mean", choices=AGGREGATORS)
    parser.add_argument("--ema-alpha", type=float, default=0.6)
    parser.add_argument(
        "--allow-any-height", action="store_true", help="skip the reference's height %% 8 rejection"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Compute one clip and print its result, with the wall time, as one JSON object."""
    args = _parse_args(argv)
    started = time.perf_counter()
    result = reference_compute_clip(
        args.ffmpeg_bin or _default_ffmpeg(),
        args.src,
        args.width,
        args.height,
        args.model,
        max_frames=args.max_frames,
        frame_samples=args.frame_samples,
        temporal_aggregator=args.temporal_aggregator,
        ema_alpha=args.ema_alpha,
        enforce_height_multiple_of_8=not args.allow_any_height,
    )
    report = {**asdict(result), "wall_seconds": round(time.perf_counter() - started, 6)}
    print(json.dumps(report, sort_keys=True))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
