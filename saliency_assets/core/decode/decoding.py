"""Decode the sampled frames of one clip: the public entry point of the decoding layer.

``decode_clip`` picks a backend (raw ``.yuv`` by offset, PyAV in-process, or a user-named ffmpeg
binary over a pipe), decides which frames to take with :mod:`.sampling`, and returns them as
planes. Native mode reproduces the reference tool's ``ffmpeg -pix_fmt yuv420p`` output byte for
byte; inference-size mode returns area-scaled RGB in the source's own colour matrix.
"""

from __future__ import annotations

from pathlib import Path

from saliency_assets.core.contract.errors import DecodeError, GeometryError
from saliency_assets.core.decode.clips import RAW_SUFFIXES, ClipSource, SamplingPlan
from saliency_assets.core.decode.conversion import inference_geometry
from saliency_assets.core.decode.decoded import (
    Deadline,
    DecodedClip,
    DecodedFrame,
    FrameSink,
    KeptFrames,
    ReadResult,
)
from saliency_assets.core.decode.pipe_decoder import PipeReader, check_binary
from saliency_assets.core.decode.pyav_decoder import PyAVReader
from saliency_assets.core.decode.rawvideo import RawReader
from saliency_assets.core.decode.sampling import head_length, sample_indices

__all__ = [
    "DecodedClip",
    "DecodedFrame",
    "FrameSink",
    "check_binary",
    "decode_clip",
    "inference_geometry",
]

DEFAULT_MAX_PIXELS = 8192 * 8192


def decode_clip(
    source: ClipSource,
    plan: SamplingPlan,
    *,
    sink: FrameSink | None = None,
    ffmpeg_bin: str | None = None,
    ffprobe_bin: str | None = None,
    timeout_s: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int = 1,
) -> DecodedClip:
    """The frames ``plan`` samples from ``source``, in clip order.

    With a ``sink`` each sampled frame is handed to it as soon as it is decoded and not kept, so
    a clip's frames never have to be in memory together (the sink's own time does not count
    against ``timeout_s``); without one the frames come back in ``DecodedClip.frames``.
    ``ffmpeg_bin`` decodes through that binary instead of PyAV (``ffprobe_bin`` then supplies the
    geometry); both are resolved with :func:`check_binary`, which raises ``ConfigError``.
    ``timeout_s`` bounds the whole decode, ``max_pixels`` rejects oversized frames before they
    are decoded, ``threads`` is the decoder's thread count (1: the engine runs a process per
    core). Raises ``DecodeError`` naming the file and the cause when no frame can be had, and
    ``GeometryError`` for a raw ``.yuv`` source without a positive declared geometry.
    """
    path = Path(source.path)
    deadline = Deadline(timeout_s, path)
    kept = KeptFrames() if sink is None else None
    reader = _open_reader(source, plan, ffmpeg_bin, ffprobe_bin, deadline, max_pixels, threads)
    try:
        decoded = _decode(reader, plan, path, kept or sink)
    finally:
        reader.close()
    if kept is not None:
        decoded.frames = kept.frames
    return decoded


def _open_reader(source, plan, ffmpeg_bin, ffprobe_bin, deadline, max_pixels, threads):
    _check_raw_geometry(source)
    if ffmpeg_bin is not None:
        ffprobe = check_binary(ffprobe_bin) if ffprobe_bin is not None else None
        ffmpeg = check_binary(ffmpeg_bin)
        return PipeReader(
            source, ffmpeg, ffprobe, plan.inference_size, deadline, max_pixels, threads, plan.hdr
        )
    if source.is_raw:  # raw files carry no transfer tags: always SDR
        return RawReader(source, plan.inference_size, deadline, max_pixels, threads)
    return PyAVReader(
        Path(source.path), plan.inference_size, deadline, max_pixels, threads, plan.hdr
    )


def _check_raw_geometry(source: ClipSource) -> None:
    """A ``.yuv`` file has no header: without a positive declared geometry it cannot be read."""
    path = Path(source.path)
    if path.suffix.lower() not in RAW_SUFFIXES and not source.is_raw:
        return
    if not source.is_raw or (source.raw_height or 0) <= 0 or source.raw_width <= 0:
        raise GeometryError(
            f"{path}: raw video needs a positive width and height "
            f"(got {source.raw_width}x{source.raw_height})"
        )


def _decode(reader, plan: SamplingPlan, path: Path, sink: FrameSink) -> DecodedClip:
    length = reader.known_length()
    if plan.sampling == "head":
        # Only the first max_frames frames matter. Unless the length is exact, decode that far:
        # a shorter clip changes the reference indices (they are taken from min(N, len) frames).
        window = head_length(plan)
        assumed = min(window, length) if reader.length_is_exact else window
        indices = sample_indices(plan, assumed)
        stop_after = assumed
    else:
        length = length or reader.count_frames()
        if length <= 0:
            raise DecodeError(f"{path}: no video frames in the clip")
        indices = sample_indices(plan, length)
        stop_after = indices[-1] + 1
    result = reader.read(indices, stop_after, sink)
    clip_frames = length
    if result.reached_end:
        clip_frames = result.frames_seen
        result = _replan(reader, plan, result, path)
    return _assemble(result, clip_frames, reader.decoder, path)


def _replan(reader, plan: SamplingPlan, result: ReadResult, path: Path) -> ReadResult:
    """The clip ended before the pass expected: sample the frames it really has, delivering
    them again unless the frames already delivered are exactly those."""
    if result.frames_seen == 0:
        causes = "; ".join(result.errors[-3:]) or "the stream holds no decodable frame"
        raise DecodeError(f"{path}: no video frames could be decoded ({causes})")
    indices = sample_indices(plan, result.frames_seen)
    if indices == result.delivered:
        return result
    result.sink.restart()
    return reader.read(indices, indices[-1] + 1, result.sink)


def _assemble(result: ReadResult, clip_frames, decoder: str, path: Path) -> DecodedClip:
    if not result.delivered or result.facts is None:
        raise DecodeError(f"{path}: none of the sampled frames could be decoded")
    facts = result.facts
    return DecodedClip(
        indices=result.delivered,
        frames=[],
        width=facts.width,
        height=facts.height,
        source_width=facts.source_width,
        source_height=facts.source_height,
        clip_frames=clip_frames,
        pix_fmt=facts.pix_fmt,
        rotation=facts.rotation,
        decoder=decoder,
        transfer=facts.transfer,
    )
