"""The default backend: containers decoded in-process by PyAV, with no temp files.

Sources are opened strictly as local files (``file:`` URL, ``protocol_whitelist=file``), so a
file named ``concat:a|b`` is read as itself and a playlist cannot fetch anything; playlist
demuxers are refused outright. Frames are decoded sequentially, only sampled ones are converted,
and decoding stops after the last frame a pass needs.
"""

from __future__ import annotations

from pathlib import Path

import av

from saliency_assets.core.contract.errors import DecodeError
from saliency_assets.core.decode.conversion import FrameConverter
from saliency_assets.core.decode.decoded import Deadline, DecodedFrame, FrameSink, ReadResult
from saliency_assets.core.decode.hdr import HDR_TONEMAP
from saliency_assets.core.tables.filesystems import display, is_object, open_input

LOCAL_ONLY = {"protocol_whitelist": "file"}
# Objects are read through our own reader; nothing they name may be opened (no protocol).
NO_PROTOCOLS = {"protocol_whitelist": "none"}
PLAYLIST_FORMATS = {"hls", "dash", "concat", "ffconcat"}
DECODER_NAME = "pyav"


def describe_error(exc: BaseException) -> str:
    """A one-line cause for a PyAV or OS error, without FFmpeg's errno noise."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def video_stream_score(width: int, height: int, is_default: bool) -> int:
    """The ffmpeg CLI's automatic choice of video stream (ffmpeg_mux_init.c): the most pixels,
    with a bonus for the default disposition. Cover art is never chosen here."""
    return width * height + 5_000_000 * bool(is_default)


def moving_video_streams(container: av.container.InputContainer) -> list[av.video.VideoStream]:
    """The video streams that are not attached pictures (cover art)."""
    cover_art = av.stream.Disposition.attached_pic
    return [stream for stream in container.streams.video if not stream.disposition & cover_art]


def pick_video_stream(container: av.container.InputContainer) -> av.video.VideoStream:
    """The video stream the ffmpeg CLI would decode (the first of equals)."""
    return max(moving_video_streams(container), key=_pyav_stream_score)


def _pyav_stream_score(stream: av.video.VideoStream) -> int:
    context = stream.codec_context
    is_default = bool(stream.disposition & av.stream.Disposition.default)
    return video_stream_score(context.width, context.height, is_default)


def open_local(path: Path) -> av.container.InputContainer:
    """Open ``path`` as a local media file (or an ``s3://`` object, read by range) with at least
    one video stream (not cover art)."""
    try:
        if is_object(path):
            container = av.open(open_input(path), container_options=NO_PROTOCOLS)
        else:
            container = av.open(f"file:{path.absolute()}", container_options=LOCAL_ONLY)
    except FileNotFoundError as exc:
        raise DecodeError(f"{display(path)}: file not found") from exc
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DecodeError(
            f"{display(path)}: not a readable media file ({describe_error(exc)})"
        ) from exc
    format_name = container.format.name
    if PLAYLIST_FORMATS & set(format_name.split(",")):
        container.close()
        raise DecodeError(f"{path}: is a {format_name} playlist; only media files are decoded")
    if not moving_video_streams(container):
        container.close()
        raise DecodeError(f"{path}: has no video stream (cover art does not count)")
    return container


def demuxer_name(container: av.container.InputContainer) -> str:
    """The name of the demuxer PyAV chose, as ffmpeg's ``-f`` takes it (``mov`` of
    ``mov,mp4,m4a,3gp,3g2,mj2``)."""
    return container.format.name.split(",")[0]


def count_packets(container: av.container.InputContainer, deadline: Deadline) -> int:
    """Video packets of the chosen stream, by demuxing only; a damaged tail ends the count, as
    it ends decoding."""
    count = 0
    try:
        for packet in container.demux(pick_video_stream(container)):
            deadline.check()
            count += packet.size > 0
    except av.error.FFmpegError:
        pass
    return count


class PyAVReader:
    """Reads sampled frames of a container's video stream (the one the ffmpeg CLI would pick)."""

    decoder = DECODER_NAME
    length_is_exact = False

    def __init__(
        self,
        path: Path,
        inference_size: int | None,
        deadline: Deadline,
        max_pixels: int,
        threads: int = 1,
        hdr: str = HDR_TONEMAP,
    ):
        self.path = path
        self.inference_size = inference_size
        self.hdr = hdr
        self.deadline = deadline
        self.max_pixels = max_pixels
        self.threads = threads
        self._unread = open_local(path)  # kept for the first pass, which needs it anyway
        try:
            self._header_frames = self._check_header(pick_video_stream(self._unread))
        except DecodeError:
            self.close()
            raise

    def _check_header(self, stream: av.video.VideoStream) -> int | None:
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > self.max_pixels:
            raise DecodeError(
                f"{self.path}: stream header claims {width}x{height}, more than the "
                f"{self.max_pixels}-pixel limit; not decoded"
            )
        return stream.frames or None

    def _open(self) -> av.container.InputContainer:
        container, self._unread = self._unread, None
        return container if container is not None else open_local(self.path)

    def close(self) -> None:
        """Release the container opened for the header check if no pass used it."""
        if self._unread is not None:
            self._unread.close()
            self._unread = None

    def known_length(self) -> int | None:
        """The frame count the container header states, if it states one."""
        return self._header_frames

    def count_frames(self) -> int:
        """Count the video packets by demuxing only (no decoding)."""
        with self._open() as container:
            return count_packets(container, self.deadline)

    def read(self, indices: list[int], stop_after: int, sink: FrameSink) -> ReadResult:
        """Decode frames ``0 .. stop_after-1`` in order; those in ``indices`` are converted and
        delivered to ``sink`` one by one, as they are decoded."""
        wanted = set(indices)
        converter = FrameConverter(self.inference_size, self.threads, self.hdr)
        result = ReadResult(sink, self.deadline)
        with self._open() as container:
            stream = self._prepare_stream(container)
            for frame in self._frames(container, stream, result.errors):
                index = result.frames_seen
                result.frames_seen += 1
                converter.observe(frame)
                if index in wanted:
                    result.deliver(self._convert(converter, frame, index))
                if result.frames_seen >= stop_after:
                    break
            else:
                result.reached_end = True
        result.facts = converter.facts
        return result

    def _prepare_stream(self, container: av.container.InputContainer) -> av.video.VideoStream:
        stream = pick_video_stream(container)
        context = stream.codec_context
        context.thread_count = self.threads
        if self.threads != 1:
            context.thread_type = "AUTO"
        # The decoder refuses frames past the limit even if the header understated them.
        context.options = {"max_pixels": str(self.max_pixels)}
        try:
            context.open(strict=False)
        except av.error.FFmpegError as exc:
            raise DecodeError(
                f"{self.path}: the {context.name} decoder could not be opened "
                f"({describe_error(exc)})"
            ) from exc
        return stream

    def _frames(self, container, stream, errors: list[str]):
        """Decoded frames in order; damaged packets are skipped and a damaged tail ends the
        stream, as the ffmpeg CLI does, with the causes kept in ``errors``."""
        packets = container.demux(stream)
        while True:
            self.deadline.check()
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                errors.append(f"demux: {describe_error(exc)}")
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                errors.append(f"decode: {describe_error(exc)}")
                continue
            yield from decoded

    def _convert(self, converter: FrameConverter, frame, index: int) -> DecodedFrame:
        try:
            return converter.convert(frame, index)
        except (av.error.FFmpegError, ValueError) as exc:
            raise DecodeError(
                f"{self.path}: frame {index} could not be converted ({describe_error(exc)})"
            ) from exc
