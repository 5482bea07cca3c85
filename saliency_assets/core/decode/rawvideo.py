"""Headerless ``.yuv`` sources: geometry and format come from the table, frames from byte offsets.

Only the sampled frames are read. Their conversion goes through the same FFmpeg filter graph as
container frames, so a 10-bit file comes out exactly as
``ffmpeg -f rawvideo -pix_fmt yuv420p10le -video_size WxH -i f.yuv -pix_fmt yuv420p`` gives it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saliency_assets.core.contract.errors import DecodeError
from saliency_assets.core.decode.clips import RAW_PIX_FMTS, ClipSource
from saliency_assets.core.decode.conversion import FrameConverter, frame_from_planes
from saliency_assets.core.decode.decoded import Deadline, FrameSink, ReadResult
from saliency_assets.core.tables.filesystems import open_input, stat

DECODER_NAME = "rawvideo"
# How much of the first frame is read to check the declared bit depth is plausible.
DEPTH_CHECK_BYTES = 1 << 20
TEN_BIT_MAX = 1023


def raw_plane_shapes(width: int, height: int) -> list[tuple[int, int]]:
    """(rows, columns) of the Y, U and V planes of a 4:2:0 frame; chroma rounds up."""
    chroma = ((height + 1) // 2, (width + 1) // 2)
    return [(height, width), chroma, chroma]


def raw_frame_bytes(width: int, height: int, pix_fmt: str) -> int:
    """Bytes in one frame: 8-bit samples for ``yuv420p``, 16-bit words for ``yuv420p10le``."""
    samples = sum(rows * cols for rows, cols in raw_plane_shapes(width, height))
    return samples * _sample_bytes(pix_fmt)


def _sample_bytes(pix_fmt: str) -> int:
    return 2 if pix_fmt.endswith("10le") else 1


class RawReader:
    """Reads sampled frames of a raw planar YUV file by offset."""

    decoder = DECODER_NAME
    length_is_exact = True

    def __init__(
        self,
        source: ClipSource,
        inference_size: int | None,
        deadline: Deadline,
        max_pixels: int,
        threads: int = 1,
    ):
        self.path = Path(source.path)
        self.width, self.height = int(source.raw_width or 0), int(source.raw_height or 0)
        self.pix_fmt = source.raw_pix_fmt or "yuv420p"
        self.inference_size = inference_size
        self.deadline = deadline
        self.threads = threads
        self._check_declaration(max_pixels)
        self.frame_bytes = raw_frame_bytes(self.width, self.height, self.pix_fmt)
        self.length = self._check_size()
        self._check_bit_depth()

    def _check_declaration(self, max_pixels: int) -> None:
        geometry = f"{self.width}x{self.height}"
        if self.pix_fmt not in RAW_PIX_FMTS:
            raise DecodeError(
                f"{self.path}: raw pixel format {self.pix_fmt!r} is not one of {RAW_PIX_FMTS}"
            )
        if self.width <= 0 or self.height <= 0:
            raise DecodeError(f"{self.path}: raw geometry {geometry} is not positive")
        if self.width * self.height > max_pixels:
            raise DecodeError(
                f"{self.path}: declared raw geometry {geometry} exceeds the "
                f"{max_pixels}-pixel limit; not decoded"
            )

    def _check_size(self) -> int:
        try:
            found = stat(self.path)
        except OSError as exc:
            raise DecodeError(f"{self.path}: cannot be read ({exc.strerror or exc})") from exc
        if found.kind == "missing":
            raise DecodeError(f"{self.path}: file not found")
        size = found.size
        declared = f"{self.width}x{self.height} {self.pix_fmt}"
        if size == 0:
            raise DecodeError(f"{self.path}: raw file is empty (0 bytes)")
        if size < self.frame_bytes:
            raise DecodeError(
                f"{self.path}: raw file is {size} bytes, smaller than one {declared} frame "
                f"({self.frame_bytes} bytes)"
            )
        if size % self.frame_bytes:
            raise DecodeError(
                f"{self.path}: raw file size {size} bytes is not a whole number of {declared} "
                f"frames ({self.frame_bytes} bytes each; {size % self.frame_bytes} bytes left "
                "over); the declared geometry or pixel format is probably wrong"
            )
        return size // self.frame_bytes

    def _check_bit_depth(self) -> None:
        """Refuse data that cannot be (or plainly is not) in the declared format, rather than
        compute saliency of garbage: 10-bit words never exceed 1023, and 10-bit little-endian
        data read as 8-bit shows up as every second byte being 0-3."""
        with open_input(self.path) as handle:
            head = handle.read(min(self.frame_bytes, DEPTH_CHECK_BYTES) // 2 * 2)
        if _sample_bytes(self.pix_fmt) == 2:
            largest = int(np.frombuffer(head, "<u2").max(initial=0))
            if largest > TEN_BIT_MAX:
                raise DecodeError(
                    f"{self.path}: holds sample value {largest}, above {TEN_BIT_MAX}, so it is "
                    f"not {self.pix_fmt} data (8-bit yuv420p?); set the pix_fmt column or "
                    "default_pix_fmt to the file's real format"
                )
            return
        samples = np.frombuffer(head, np.uint8)
        low, high = samples[0::2], samples[1::2]
        if high.size >= 64 and high.max() <= 3 < low.max():
            raise DecodeError(
                f"{self.path}: every second byte is 0-3, as in 10-bit little-endian samples; "
                f"the file looks like yuv420p10le, not the declared {self.pix_fmt}; set the "
                "pix_fmt column or default_pix_fmt to the file's real format"
            )

    def known_length(self) -> int:
        """The exact frame count: file size over frame size."""
        return self.length

    def count_frames(self) -> int:
        return self.length

    def close(self) -> None:
        """Nothing stays open between passes."""

    def read(self, indices: list[int], stop_after: int, sink: FrameSink) -> ReadResult:
        """Read and convert the frames at ``indices`` (those inside the file), delivering each
        to ``sink`` as it is read."""
        converter = FrameConverter(self.inference_size, self.threads)
        result = ReadResult(sink, self.deadline)
        with open_input(self.path) as handle:
            for index in sorted(i for i in set(indices) if i < self.length):
                self.deadline.check()
                result.deliver(converter.convert(self._frame_at(handle, index), index))
        result.frames_seen = min(stop_after, self.length)
        result.reached_end = stop_after > self.length
        result.facts = converter.facts
        return result

    def _frame_at(self, handle, index: int):
        handle.seek(index * self.frame_bytes)
        data = handle.read(self.frame_bytes)
        if len(data) != self.frame_bytes:
            raise DecodeError(f"{self.path}: short read at frame {index} (file changed?)")
        dtype = np.dtype("<u2") if _sample_bytes(self.pix_fmt) == 2 else np.dtype(np.uint8)
        samples = np.frombuffer(data, dtype)
        planes, start = [], 0
        for rows, cols in raw_plane_shapes(self.width, self.height):
            planes.append(samples[start : start + rows * cols].reshape(rows, cols))
            start += rows * cols
        return frame_from_planes(planes, self.pix_fmt)
