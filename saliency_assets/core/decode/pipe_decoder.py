"""The named-binary backend: a user-chosen ffmpeg decodes into a pipe, with no temp files.

The command mirrors the in-process filter graph (autorotate, ``scale=W:H:flags=area...`` in
inference-size mode, then the output pixel format), so both backends return the same planes; the
sampled frames are picked from the pipe by their position, as the in-process decoder counts.
Geometry for cutting the pipe into frames comes from the named ffprobe, or else from PyAV.
Either way PyAV vets a container first, refusing playlists as the in-process backend does, and
the binary is told to use the demuxer PyAV chose (``-f``), so it cannot follow a playlist or
list to files elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from saliency_assets.core.contract.errors import ConfigError, DecodeError
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.decode.conversion import (
    AVCOL_SPC_UNSPECIFIED,
    INFERENCE_PIX_FMT,
    NATIVE_PIX_FMT,
    TONEMAPPED_COLOUR,
    ColourTags,
    Orientation,
    colour_codes_from_names,
    frame_from_planes,
    hdr_format_of_frame,
    inference_geometry,
    inference_scale_args,
    orientation_from_rotation,
    orientation_of_frame,
    resolve_colour,
    rgb_from_yuv,
    tonemap_filters,
)
from saliency_assets.core.decode.decoded import (
    Deadline,
    DecodedFrame,
    FrameSink,
    ReadResult,
    SourceFacts,
)
from saliency_assets.core.decode.hdr import (
    HDR_TONEMAP,
    PRIMARIES_BY_NAME,
    TRANSFER_SDR,
    TRC_BY_NAME,
    HdrFormat,
    hdr_format,
    recorded_transfer,
    transfer_of,
)
from saliency_assets.core.decode.pyav_decoder import (
    count_packets,
    demuxer_name,
    describe_error,
    open_local,
    pick_video_stream,
    video_stream_score,
)
from saliency_assets.core.decode.rawvideo import RawReader, raw_plane_shapes

STDERR_LINES = 8
QUIET = ["-nostdin", "-hide_banner", "-loglevel", "error"]
LOCAL_INPUT = ["-protocol_whitelist", "file"]


def check_binary(name_or_path: str) -> str:
    """The absolute path of a user-named ffmpeg/ffprobe; ``ConfigError`` if it cannot be run.

    A bare name is looked up on ``PATH``; anything with a directory part must be an executable
    file.
    """
    if not name_or_path or not str(name_or_path).strip():
        raise ConfigError("empty ffmpeg/ffprobe binary name")
    candidate = str(name_or_path)
    if os.sep in candidate or (os.altsep and os.altsep in candidate):
        path = Path(candidate).expanduser()
        if not path.is_file():
            raise ConfigError(f"binary {candidate!r} not found")
        if not os.access(path, os.X_OK):
            raise ConfigError(f"binary {candidate!r} is not executable")
        return str(path.absolute())
    found = shutil.which(candidate)
    if found is None:
        raise ConfigError(f"binary {candidate!r} not found on PATH")
    return found


@dataclass
class StreamProbe:
    """What the pipe needs to know before decoding: coded geometry, rotation, format, tags."""

    width: int
    height: int
    orientation: Orientation
    pix_fmt: str
    frames: int | None
    colour: ColourTags
    stream_map: str = "0:v:0"  # the -map argument selecting the probed stream
    demuxer: str | None = None  # the -f argument for the input (None: raw or ffmpeg's choice)
    transfer: str = TRANSFER_SDR  # the source's, from its tags
    hdr_format: HdrFormat | None = None  # what tone-mapping it would need (None: SDR)


def probe_with_ffprobe(ffprobe: str, path: Path, deadline: Deadline) -> StreamProbe:
    """Geometry, rotation, frame count and colour tags from ffprobe's JSON, for the video
    stream the ffmpeg CLI would pick."""
    entries = (
        "stream=index,width,height,nb_frames,pix_fmt,color_space,color_range"
        ",color_transfer,color_primaries:stream_disposition=default,attached_pic"
        ":stream_side_data=rotation,max_luminance,max_content"
    )
    command = [ffprobe, "-v", "error", *LOCAL_INPUT, "-select_streams", "v"]
    command += ["-show_entries", entries, "-of", "json", f"file:{path.absolute()}"]
    stream = _chosen_stream(_run_text(command, deadline, path, "ffprobe"), path)
    width, height = _positive_int(stream.get("width")), _positive_int(stream.get("height"))
    if not width or not height:
        raise DecodeError(f"{path}: ffprobe reports no video geometry")
    pix_fmt = stream.get("pix_fmt") or "unknown"
    colorspace, color_range = colour_codes_from_names(
        stream.get("color_space"), stream.get("color_range")
    )
    probe = StreamProbe(
        width,
        height,
        orientation_from_rotation(_rotation(stream)),
        pix_fmt,
        _positive_int(stream.get("nb_frames")),
        resolve_colour(colorspace, color_range, pix_fmt, height),
        _stream_map(stream),
    )
    return _with_hdr(probe, _ffprobe_hdr_format(stream))


def _ffprobe_hdr_format(stream: dict) -> HdrFormat | None:
    """The HDR format of ffprobe's tags and the container's light-level side data."""
    side_data = stream.get("side_data_list") or []
    return hdr_format(
        TRC_BY_NAME.get(stream.get("color_transfer") or "", 0),
        PRIMARIES_BY_NAME.get(stream.get("color_primaries") or "", 0),
        _side_data_number(side_data, "max_luminance"),
        _side_data_number(side_data, "max_content"),
    )


def _side_data_number(side_data: list, key: str) -> float | None:
    """A positive number (ffprobe writes rationals as ``"N/D"``) from the side data list."""
    for entry in side_data:
        if key in entry:
            numerator, _, denominator = str(entry[key]).partition("/")
            try:
                value = float(numerator) / float(denominator or 1)
            except (ValueError, ZeroDivisionError):
                return None
            return value if 0 < value < math.inf else None
    return None


def _with_hdr(probe: StreamProbe, fmt: HdrFormat | None) -> StreamProbe:
    transfer = fmt.transfer if fmt is not None else TRANSFER_SDR
    return dataclasses.replace(probe, transfer=transfer, hdr_format=fmt)


def _chosen_stream(text: str, path: Path) -> dict:
    try:
        streams = json.loads(text).get("streams") or []
    except (json.JSONDecodeError, AttributeError) as exc:
        raise DecodeError(f"{path}: ffprobe output is not JSON") from exc
    moving = [s for s in streams if not (s.get("disposition") or {}).get("attached_pic")]
    if not moving:
        raise DecodeError(f"{path}: has no video stream (ffprobe; cover art does not count)")
    return max(moving, key=_ffprobe_stream_score)


def _ffprobe_stream_score(stream: dict) -> int:
    width, height = _positive_int(stream.get("width")), _positive_int(stream.get("height"))
    is_default = bool((stream.get("disposition") or {}).get("default"))
    return video_stream_score(width or 0, height or 0, is_default)


def _stream_map(stream: dict) -> str:
    index = stream.get("index")
    return f"0:{index}" if isinstance(index, int) else "0:v:0"


def _rotation(stream: dict) -> float:
    for side_data in stream.get("side_data_list") or []:
        if "rotation" in side_data:
            return float(side_data["rotation"])
    return 0.0


def _positive_int(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def probe_with_pyav(path: Path, max_pixels: int) -> StreamProbe:
    """The same facts from PyAV: header geometry and frame count, then the first frame's
    display matrix and colour tags."""
    with open_local(path) as container:
        stream = pick_video_stream(container)
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_pixels)
        stream.codec_context.options = {"max_pixels": str(max_pixels)}
        frames = stream.frames or None
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise DecodeError(
                f"{path}: first frame did not decode ({describe_error(exc)})"
            ) from exc
        if first is None:
            raise DecodeError(f"{path}: no video frames could be decoded")
        colour = resolve_colour(
            first.colorspace, first.color_range, first.format.name, first.height
        )
        return StreamProbe(
            first.width,
            first.height,
            orientation_of_frame(first),
            first.format.name,
            frames,
            colour,
            f"0:{stream.index}",
            demuxer_name(container),
            transfer_of(first.color_trc),
            hdr_format_of_frame(first),
        )


def probe_raw(source: ClipSource) -> StreamProbe:
    """A raw file's declared geometry; raw data carries no rotation or colour tags."""
    width, height = int(source.raw_width), int(source.raw_height)
    pix_fmt = source.raw_pix_fmt or "yuv420p"
    return StreamProbe(
        width,
        height,
        Orientation(),
        pix_fmt,
        None,
        resolve_colour(AVCOL_SPC_UNSPECIFIED, 0, pix_fmt, height),
    )


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(
            f"{path}: stream header claims {width}x{height}, more than the "
            f"{max_pixels}-pixel limit; not decoded"
        )


def _run_text(
    command: list[str], deadline: Deadline, path: Path, tool: str, check: bool = True
) -> str:
    """Run a probing command to completion within the deadline; its stdout as text."""
    try:
        process = _start(command, stdout=subprocess.PIPE)
    except OSError as exc:
        raise DecodeError(f"{path}: {tool} could not be run ({exc.strerror})") from exc
    try:
        stdout, stderr = process.communicate(timeout=deadline.remaining())
    except subprocess.TimeoutExpired as exc:
        kill_process_group(process)
        process.communicate()
        raise deadline.error() from exc
    if check and process.returncode != 0:
        tail = _tail(stderr.decode(errors="replace").splitlines())
        raise DecodeError(f"{path}: {tool} exited with status {process.returncode}: {tail}")
    return stdout.decode(errors="replace")


def _start(command: list[str], stdout: int) -> subprocess.Popen:
    """Start a binary in a process group of its own: a wrapper script's children go with it
    when the group is killed (by the deadline here, or by the worker pool)."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        process_group=0,
    )


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL the binary and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone and reaped
        pass


def _tail(lines) -> str:
    kept = [line.strip() for line in lines if line.strip()][-STDERR_LINES:]
    return " | ".join(kept) or "(no message)"


class PipeReader:
    """Reads sampled frames through a named ffmpeg binary writing raw frames to a pipe."""

    def __init__(
        self,
        source: ClipSource,
        ffmpeg: str,
        ffprobe: str | None,
        inference_size: int | None,
        deadline: Deadline,
        max_pixels: int,
        threads: int = 1,
        hdr: str = HDR_TONEMAP,
    ):
        self.path = Path(source.path)
        self.ffmpeg = ffmpeg
        self.threads = threads
        self.decoder = f"ffmpeg-binary:{ffmpeg}"
        self.inference_size = inference_size
        self.deadline = deadline
        self._raw_length = None
        if source.is_raw:
            self._raw_length = RawReader(source, inference_size, deadline, max_pixels).length
            self._raw_input = ["-f", "rawvideo", "-video_size"]
            self._raw_input += [f"{source.raw_width}x{source.raw_height}"]
            self._raw_input += ["-pix_fmt", source.raw_pix_fmt or "yuv420p"]
            self.probe = probe_raw(source)
        else:
            self._raw_input = []
            self.probe = self._probe_container(ffprobe, max_pixels)
        self.hdr_format = self.probe.hdr_format if hdr == HDR_TONEMAP else None
        self.transfer = recorded_transfer(self.probe.transfer, hdr)
        self.facts = self._facts()
        self.length_is_exact = self._raw_length is not None

    def _probe_container(self, ffprobe: str | None, max_pixels: int) -> StreamProbe:
        if ffprobe is None:
            return probe_with_pyav(self.path, max_pixels)
        with open_local(self.path) as container:  # refuses playlists and audio-only files
            demuxer = demuxer_name(container)
        probe = probe_with_ffprobe(ffprobe, self.path, self.deadline)
        _check_pixels(self.path, probe.width, probe.height, max_pixels)
        return dataclasses.replace(probe, demuxer=demuxer)

    def _facts(self) -> SourceFacts:
        probe = self.probe
        display_w, display_h = probe.orientation.display_size(probe.width, probe.height)
        width, height = display_w, display_h
        if self.inference_size is not None:
            width, height = inference_geometry(display_w, display_h, self.inference_size)
        return SourceFacts(
            width,
            height,
            display_w,
            display_h,
            probe.pix_fmt,
            probe.orientation.rotation,
            self.transfer,
        )

    def known_length(self) -> int | None:
        return self._raw_length if self._raw_length is not None else self.probe.frames

    def count_frames(self) -> int:
        """Video packets counted by PyAV's demuxer (no decoding); exact for raw files."""
        if self._raw_length is not None:
            return self._raw_length
        with open_local(self.path) as container:
            return count_packets(container, self.deadline)

    def close(self) -> None:
        """Nothing stays open between passes."""

    def read(self, indices: list[int], stop_after: int, sink: FrameSink) -> ReadResult:
        """Run ffmpeg once over frames ``0 .. stop_after-1``; keep those in ``indices``.

        Every frame up to ``stop_after`` comes through the pipe and the unsampled ones are
        dropped here, not by a ``select`` filter: ffmpeg counts ``n`` from 0 again whenever it
        rebuilds its filter graph (a stream whose resolution changes), so selecting by index
        inside ffmpeg would take other frames than the in-process decoder does. The frames
        reach ``sink`` after ffmpeg has exited: the process runs against the decode deadline,
        which the sink's time must not use up.
        """
        wanted = set(indices)
        frames: list[DecodedFrame] = []

        def keep(index: int, chunk: bytes) -> None:
            if index in wanted:
                frames.append(self._decoded(index, chunk))

        received = self._stream_frames(self._decode_command(stop_after), stop_after, keep)
        result = ReadResult(sink, self.deadline, facts=self.facts)
        result.reached_end = received < stop_after
        result.frames_seen = self._count_decoded() if result.reached_end else stop_after
        while frames:  # each frame is let go once the sink has it
            result.deliver(frames.pop(0))
        return result

    def _input(self) -> list[str]:
        threads = ["-threads", str(self.threads), "-filter_threads", str(self.threads)]
        demuxer = ["-f", self.probe.demuxer] if self.probe.demuxer else []
        source = ["-i", f"file:{self.path.absolute()}"]
        return [*threads, *self._raw_input, *demuxer, *LOCAL_INPUT, *source]

    def _decode_command(self, frame_count: int) -> list[str]:
        pix_fmt = NATIVE_PIX_FMT if self.inference_size is None else INFERENCE_PIX_FMT
        filters = []
        if self.hdr_format is not None:
            inference = self.inference_size is not None
            tonemap = tonemap_filters(
                self.hdr_format, self.probe.colour, self.facts.width, self.facts.height, inference
            )
            filters = [f"{name}={_graph_escaped(args)}" for name, args in tonemap]
        elif self.inference_size is not None:
            scale = inference_scale_args(self.facts.width, self.facts.height, self.probe.colour)
            filters = [f"scale={scale}"]
        filters = ["-vf", ",".join(filters)] if filters else []
        return [
            self.ffmpeg,
            *QUIET,
            *self._input(),
            "-map",
            self.probe.stream_map,
            *filters,
            "-frames:v",
            str(frame_count),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "pipe:1",
        ]

    def _frame_bytes(self) -> int:
        if self.inference_size is not None:
            return 3 * self.facts.width * self.facts.height
        shapes = raw_plane_shapes(self.facts.width, self.facts.height)
        return sum(rows * cols for rows, cols in shapes)

    def _decoded(self, index: int, chunk: bytes) -> DecodedFrame:
        width, height = self.facts.width, self.facts.height
        samples = np.frombuffer(chunk, np.uint8)
        if self.inference_size is None:
            planes = _split(samples, raw_plane_shapes(width, height))
            return DecodedFrame(index=index, luma=planes[0], chroma=(planes[1], planes[2]))
        planes = _split(samples, [(height, width)] * 3)
        frame = frame_from_planes(planes, INFERENCE_PIX_FMT)
        colour = self.probe.colour if self.hdr_format is None else TONEMAPPED_COLOUR
        return DecodedFrame(index=index, luma=planes[0], rgb=rgb_from_yuv(frame, colour))

    def _stream_frames(self, command: list[str], expected: int, on_frame) -> int:
        """Run ``command``, hand each frame-sized chunk of its stdout to ``on_frame``."""
        frame_bytes = self._frame_bytes()
        with _Supervised(command, self.deadline, self.path) as process:
            received = 0
            while received < expected:
                chunk = process.stdout.read(frame_bytes)
                if len(chunk) < frame_bytes:
                    break
                on_frame(received, chunk)
                received += 1
        if received == 0 and process.returncode != 0:
            raise DecodeError(
                f"{self.path}: ffmpeg exited with status {process.returncode} and no frames: "
                f"{process.stderr_tail()}"
            )
        return received

    def _count_decoded(self) -> int:
        """Decoded frames in the whole clip, counted by ffmpeg itself (one CRC line per frame);
        needed only when a clip turns out shorter than its header or the head window."""
        command = [self.ffmpeg, *QUIET, *self._input(), "-map", self.probe.stream_map]
        command += ["-fps_mode", "passthrough", "-f", "framecrc", "-"]
        # A damaged tail makes ffmpeg exit non-zero after the frames it could decode.
        text = _run_text(command, self.deadline, self.path, "ffmpeg", check=False)
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _graph_escaped(args: str) -> str:
    """Filter arguments as one ``-vf`` chain element: the graph syntax's specials escaped."""
    for special in ("\\", "'", "[", "]", ",", ";"):
        args = args.replace(special, "\\" + special)
    return args


def _split(samples: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    planes, start = [], 0
    for rows, cols in shapes:
        planes.append(samples[start : start + rows * cols].reshape(rows, cols).copy())
        start += rows * cols
    return planes


class _Supervised:
    """An ffmpeg process whose stderr is drained in the background and which is killed when the
    deadline passes; raises the deadline's ``DecodeError`` on exit if it was killed for it."""

    def __init__(self, command: list[str], deadline: Deadline, path: Path):
        self.command, self.deadline, self.path = command, deadline, path
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self.timed_out = False
        self.returncode: int | None = None

    def __enter__(self):
        try:
            self._process = _start(self.command, stdout=subprocess.PIPE)
        except OSError as exc:
            raise DecodeError(f"{self.path}: ffmpeg could not be run ({exc.strerror})") from exc
        self.stdout = self._process.stdout
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        remaining = self.deadline.remaining()
        self._timer = (
            threading.Timer(max(0.0, remaining), self._kill) if remaining is not None else None
        )
        if self._timer is not None:
            self._timer.start()
        return self

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _kill(self) -> None:
        self.timed_out = True
        kill_process_group(self._process)

    def __exit__(self, *exc_info) -> None:
        self.stdout.close()  # an unread rest makes ffmpeg stop with EPIPE instead of blocking
        self.returncode = self._process.wait()
        if self._timer is not None:
            self._timer.cancel()
        self._drain.join()
        self._process.stderr.close()
        if self.timed_out:
            raise self.deadline.error()

    def stderr_tail(self) -> str:
        return _tail(self._stderr)
