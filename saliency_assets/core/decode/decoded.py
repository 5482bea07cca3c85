"""What a decode returns, and the pieces every decoding backend shares.

``DecodedFrame`` and ``DecodedClip`` are re-exported by :mod:`saliency_assets.core.decode.decoding`,
which is where callers should import them from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from saliency_assets.core.contract.errors import DecodeError


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


class FrameSink(Protocol):
    """Where a decode delivers the sampled frames, in clip order, as they are decoded.

    ``restart`` forgets every frame delivered so far: the clip turned out shorter than the
    pass assumed and a different set of frames is about to be delivered.
    """

    def add(self, frame: DecodedFrame) -> None: ...

    def restart(self) -> None: ...


class KeptFrames:
    """The plain sink: keeps every delivered frame in ``frames``."""

    def __init__(self) -> None:
        self.frames: list[DecodedFrame] = []

    def add(self, frame: DecodedFrame) -> None:
        self.frames.append(frame)

    def restart(self) -> None:
        self.frames = []


@dataclass
class DecodedClip:
    """The sampled frames of one clip, in clip order, and what was learned about the clip.

    ``width``/``height`` are the geometry of the returned frames; ``source_width``/
    ``source_height`` the display geometry of the source (after rotation). ``clip_frames`` is the
    number of frames in the whole clip when known. ``rotation`` is the display matrix's
    counter-clockwise angle as ffprobe reports it, normalised to 0/90/180/270 (the frames have
    been turned upright). ``decoder`` names the backend: ``"pyav"``, ``"rawvideo"`` or
    ``"ffmpeg-binary:<path>"``. ``indices`` are the sampled frames delivered; ``frames`` holds
    them only when the decode kept them (no sink of the caller's was given). ``transfer`` is
    what the frames were made from: ``sdr``, ``pq`` or ``hlg`` (converted to SDR), or
    ``pq-unmapped``/``hlg-unmapped`` (read as SDR under ``hdr="off"``).
    """

    indices: list[int]
    frames: list[DecodedFrame]
    width: int
    height: int
    source_width: int
    source_height: int
    clip_frames: int | None
    pix_fmt: str
    rotation: int
    decoder: str
    transfer: str = "sdr"


@dataclass
class SourceFacts:
    """Geometry and format of a source, learned by a backend while it decodes."""

    width: int
    height: int
    source_width: int
    source_height: int
    pix_fmt: str
    rotation: int
    transfer: str = "sdr"


@dataclass
class ReadResult:
    """What one sequential pass over a clip produced; sampled frames go to ``sink``.

    ``delivered`` lists the indices handed to the sink. ``frames_seen`` counts the frames decoded
    before the pass stopped; ``reached_end`` says the clip ran out before the pass's
    ``stop_after`` frames, so ``frames_seen`` is the clip length.
    """

    sink: FrameSink
    deadline: Deadline
    delivered: list[int] = field(default_factory=list)
    frames_seen: int = 0
    reached_end: bool = False
    facts: SourceFacts | None = None
    errors: list[str] = field(default_factory=list)

    def deliver(self, frame: DecodedFrame) -> None:
        """Hand one sampled frame to the sink; the sink's time does not count as decoding."""
        with self.deadline.paused():
            self.sink.add(frame)
        self.delivered.append(frame.index)


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

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside the block is not decoding: it moves the budget's start on."""
        paused_at = time.monotonic()
        try:
            yield
        finally:
            self._start += time.monotonic() - paused_at

    def check(self) -> None:
        """Raise ``DecodeError`` once the budget is spent."""
        if self.expired():
            raise self.error()

    def error(self) -> DecodeError:
        return DecodeError(f"decode timed out after {self.timeout_s:g} s: {self.path}")
