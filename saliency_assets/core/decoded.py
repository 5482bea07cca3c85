"""What a decode returns, and the pieces every decoding backend shares.

``DecodedFrame`` and ``DecodedClip`` are re-exported by :mod:`saliency_assets.core.decoding`,
which is where callers should import them from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DecodeError


@dataclass
class DecodedFrame:
    """One sampled frame.

    ``luma`` is the 8-bit Y plane at the output geometry (used for motion weights).
    ``chroma`` holds the 8-bit U and V planes, ``ceil(H/2) x ceil(W/2)``, in native mode only;
    ``rgb`` is ``(H, W, 3)`` uint8 in inference-size mode only.
    """

    index: int
    luma: np.ndarray
    chroma: tuple[np.ndarray, np.ndarray] | None = None
    rgb: np.ndarray | None = None


@dataclass
class DecodedClip:
    """The sampled frames of one clip, in clip order, and what was learned about the clip.

    ``width``/``height`` are the geometry of the returned frames; ``source_width``/
    ``source_height`` the display geometry of the source (after rotation). ``clip_frames`` is the
    number of frames in the whole clip when known. ``rotation`` is the display matrix's
    counter-clockwise angle as ffprobe reports it, normalised to 0/90/180/270 (the frames have
    been turned upright). ``decoder`` names the backend: ``"pyav"``, ``"rawvideo"`` or
    ``"ffmpeg-binary:<path>"``.
    """

    frames: list[DecodedFrame]
    width: int
    height: int
    source_width: int
    source_height: int
    clip_frames: int | None
    pix_fmt: str
    rotation: int
    decoder: str


@dataclass
class SourceFacts:
    """Geometry and format of a source, learned by a backend while it decodes."""

    width: int
    height: int
    source_width: int
    source_height: int
    pix_fmt: str
    rotation: int


@dataclass
class ReadResult:
    """What one sequential pass over a clip produced.

    ``frames_seen`` counts the frames decoded before the pass stopped; ``reached_end`` says the
    clip ran out before the pass's ``stop_after`` frames, so ``frames_seen`` is the clip length.
    """

    frames: dict[int, DecodedFrame]
    frames_seen: int
    reached_end: bool
    facts: SourceFacts | None
    errors: list[str] = field(default_factory=list)


class Deadline:
    """A wall-clock budget for one clip's decode; ``timeout_s=None`` never expires."""

    def __init__(self, timeout_s: float | None, path: Path):
        self.timeout_s = timeout_s
        self.path = path
        self._start = time.monotonic()

    def remaining(self) -> float | None:
        """Seconds left, or ``None`` without a timeout."""
        if self.timeout_s is None:
            return None
        return self.timeout_s - (time.monotonic() - self._start)

    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def check(self) -> None:
        """Raise ``DecodeError`` once the budget is spent."""
        if self.expired():
            raise self.error()

    def error(self) -> DecodeError:
        return DecodeError(f"decode timed out after {self.timeout_s:g} s: {self.path}")
