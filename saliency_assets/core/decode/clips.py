"""What the engine asks of one clip: where it is and how to sample and size its frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saliency_assets.core.decode.hdr import HDR_TONEMAP

RAW_SUFFIXES = (".yuv",)
RAW_PIX_FMTS = ("yuv420p", "yuv420p10le")
SAMPLING_MODES = ("head", "spread")


@dataclass(frozen=True)
class ClipSource:
    """One unique source clip.

    ``raw_width``/``raw_height``/``raw_pix_fmt`` are set only for raw ``.yuv`` files, whose
    geometry comes from the table; a container's geometry always comes from its stream.
    """

    path: Path
    raw_width: int | None = None
    raw_height: int | None = None
    raw_pix_fmt: str | None = None

    @property
    def is_raw(self) -> bool:
        return self.raw_width is not None


@dataclass(frozen=True)
class SamplingPlan:
    """How many frames to take from a clip, where, and at what size.

    ``sampling="head"`` is the reference behaviour: the first ``max_frames`` frames are decoded
    and ``frame_samples`` of them chosen by the reference index rule. ``"spread"`` takes
    ``min(frame_samples, max_frames)`` frames evenly over the whole clip.
    ``inference_size=None`` keeps native geometry (compatible mode); an int N scales the frame
    so its short side is N, both sides rounded to multiples of 8, with FFmpeg's area scaler.
    ``hdr="tonemap"`` turns PQ and HLG sources into the SDR picture (:mod:`.hdr`); ``"off"``
    reads their code values as if they were SDR, as the older tool did.
    """

    max_frames: int = 8
    frame_samples: int = 8
    sampling: str = "head"
    inference_size: int | None = None
    hdr: str = HDR_TONEMAP
