"""Real, small, deterministic test clips, written at test time.

Containers and codecs are encoded in-process with PyAV (the container follows the file suffix);
the ffmpeg binary shipped by imageio-ffmpeg serves as the oracle (``binary_yuv420p_frames`` runs the
reference tool's decode command) and tags rotation the way users do (``tag_rotation_with_binary``).
Every frame differs from the last: a panning gradient with a moving bright square, and drifting
chroma, so a wrong frame index or a wrong plane shows up in a byte comparison.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# SVT-AV1 prints a banner to stdout per encoder unless told to log errors only.
os.environ.setdefault("SVT_LOG", "1")

ENCODERS = {
    "h264": "libx264",
    "hevc": "libx265",
    "mpeg4": "mpeg4",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "ffv1": "ffv1",
}
ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "16"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
    "libsvtav1": {"preset": "12"},
    "mpeg4": {"qscale": "2"},
}
LOSSLESS_OPTIONS = {"libx264": {"preset": "ultrafast", "qp": "0"}}
# AVColorSpace / AVColorRange / AVColorPrimaries / AVColorTransferCharacteristic codes.
COLORSPACES = {"bt709": 1, "bt601": 6, "bt470bg": 5, "bt2020": 9}
COLOR_RANGES = {"tv": 1, "pc": 2}
PRIMARIES = {"bt709": 1, "bt601": 6, "bt470bg": 5, "bt2020": 9}
TRANSFERS = {"bt709": 1, "bt601": 6, "bt470bg": 6, "bt2020": 14}
RATE = 25


def ffmpeg_exe() -> str:
    """The real ffmpeg CLI binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def has_encoder(codec: str) -> bool:
    """Whether PyAV's FFmpeg can encode ``codec`` (a key of ``ENCODERS``)."""
    try:
        av.codec.Codec(ENCODERS.get(codec, codec), "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def chroma_shape(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """(rows, columns) of a chroma plane; 4:2:0 rounds up like FFmpeg."""
    if pix_fmt.startswith(("yuv444", "yuvj444")):
        return height, width
    return (height + 1) // 2, (width + 1) // 2


def pattern_planes(width: int, height: int, index: int, pix_fmt: str = "yuv420p") -> list:
    """Y, U, V planes of frame ``index``: 8-bit values, or 10-bit ones for ``*10le`` formats."""
    rows, cols = np.mgrid[0:height, 0:width]
    luma = 16 + (cols * 3 + rows * 2 + index * 5) % 200
    side = max(2, min(width, height) // 4)
    top, left = (index * 2) % max(1, height - side), (index * 3) % max(1, width - side)
    luma[top : top + side, left : left + side] = 235
    crows, ccols = np.mgrid[tuple(slice(0, n) for n in chroma_shape(width, height, pix_fmt))]
    u_plane = 60 + (ccols * 3 + index * 4) % 136
    v_plane = 60 + (crows * 5 + index * 6) % 136
    return [_to_depth(plane, pix_fmt) for plane in (luma, u_plane, v_plane)]


def flat_planes(width: int, height: int, yuv: tuple[int, int, int], pix_fmt: str) -> list:
    """Y, U, V planes of one flat colour (8-bit code values, scaled up for 10-bit formats)."""
    chroma = chroma_shape(width, height, pix_fmt)
    shapes = [(height, width), chroma, chroma]
    return [
        _to_depth(np.full(shape, value), pix_fmt) for shape, value in zip(shapes, yuv, strict=True)
    ]


def _to_depth(plane: np.ndarray, pix_fmt: str) -> np.ndarray:
    if pix_fmt.endswith("10le"):
        return (plane * 4).astype("<u2")
    return plane.astype(np.uint8)


def planes_to_frame(planes: list, pix_fmt: str) -> av.VideoFrame:
    """An ``av.VideoFrame`` holding ``planes``, written row by row past any line padding."""
    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, values in zip(frame.planes, planes, strict=True):
        buffer = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        raw = values.view(np.uint8).reshape(values.shape[0], -1)
        buffer[:, : raw.shape[1]] = raw
    return frame


def make_clip(
    path: Path,
    width: int,
    height: int,
    frames: int,
    codec: str = "h264",
    *,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    with_audio: bool = False,
    colorspace: str | None = None,
    color_range: str | None = None,
    flat_yuv: tuple[int, int, int] | None = None,
) -> Path:
    """Encode ``frames`` frames of moving content (or one flat colour) into ``path``.

    The container follows the suffix. ``rotation`` writes a display matrix with that
    counter-clockwise angle, as ``ffmpeg -display_rotation`` does. ``colorspace``
    (bt601/bt709/bt2020) and ``color_range`` (tv/pc) tag the stream. ``flat_yuv`` encodes
    losslessly where the encoder can, so decoded values equal the given code values.
    """
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = _add_video_stream(container, codec, width, height, pix_fmt, flat_yuv is not None)
        _tag_colour(stream, colorspace, color_range)
        if rotation:
            stream.set_display_rotation(rotation)
        audio = _add_audio_stream(container, path) if with_audio else None
        for index in range(frames):
            planes = (
                flat_planes(width, height, flat_yuv, pix_fmt)
                if flat_yuv
                else pattern_planes(width, height, index, pix_fmt)
            )
            _encode(container, stream, _timed(planes_to_frame(planes, pix_fmt), index))
        _encode(container, stream, None)
        if audio is not None:
            _write_tone(container, audio, frames / RATE)
    return path


def _add_video_stream(container, codec, width, height, pix_fmt, lossless):
    encoder = ENCODERS.get(codec, codec)
    stream = container.add_stream(encoder, rate=RATE)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    options = (LOSSLESS_OPTIONS if lossless else ENCODER_OPTIONS).get(encoder)
    stream.options = dict(options or ENCODER_OPTIONS.get(encoder, {}))
    stream.time_base = Fraction(1, RATE)
    return stream


def _tag_colour(stream, colorspace, color_range):
    context = stream.codec_context
    if colorspace:
        context.colorspace = COLORSPACES[colorspace]
        context.color_primaries = PRIMARIES[colorspace]
        context.color_trc = TRANSFERS[colorspace]
    if color_range:
        context.color_range = COLOR_RANGES[color_range]


def _timed(frame: av.VideoFrame, index: int) -> av.VideoFrame:
    frame.pts = index
    frame.time_base = Fraction(1, RATE)
    return frame


def _encode(container, stream, frame):
    for packet in stream.encode(frame):
        container.mux(packet)


def _add_audio_stream(container, path: Path):
    codec = "libopus" if path.suffix == ".webm" else "aac"
    stream = container.add_stream(codec, rate=48000)
    stream.layout = "mono"
    return stream


def _write_tone(container, stream, seconds: float) -> None:
    """A 440 Hz tone of ``seconds`` seconds, in encoder-sized chunks."""
    rate = stream.rate
    total = max(1, int(seconds * rate))
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, total, chunk):
        times = np.arange(start, start + chunk) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * times)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        _encode(container, stream, frame)
    _encode(container, stream, None)


def make_multi_video_clip(path: Path, sizes: list[tuple[int, int]], frames: int) -> Path:
    """One H.264 video stream per (width, height), each with its own moving content."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        streams = [
            _add_video_stream(container, "h264", width, height, "yuv420p", False)
            for width, height in sizes
        ]
        for index in range(frames):
            for number, stream in enumerate(streams):
                planes = pattern_planes(stream.width, stream.height, index + 40 * number)
                _encode(container, stream, _timed(planes_to_frame(planes, "yuv420p"), index))
        for stream in streams:
            _encode(container, stream, None)
    return path


def make_flat_rgb_clip(path: Path, width: int, height: int, rgb: tuple[int, int, int]) -> Path:
    """One lossless FFV1 frame of a flat RGB colour (stored as packed ``bgr0``)."""
    path = Path(path)
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., :3] = rgb[::-1]
    with av.open(str(path), "w") as container:
        stream = _add_video_stream(container, "ffv1", width, height, "bgr0", False)
        frame = av.VideoFrame(width, height, "bgr0")
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8, plane.height * plane.line_size)
        rows.reshape(height, plane.line_size)[:, : width * 4] = pixels.reshape(height, -1)
        _encode(container, stream, _timed(frame, 0))
        _encode(container, stream, None)
    return path


def make_audio_only(path: Path, seconds: float = 0.2) -> Path:
    """A container holding one AAC audio track and no video."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        _write_tone(container, _add_audio_stream(container, path), seconds)
    return path


def make_raw_yuv(
    path: Path, width: int, height: int, frames: int, pix_fmt: str = "yuv420p"
) -> Path:
    """Headerless planar frames (``yuv420p``, or ``yuv420p10le`` as little-endian 16-bit words)."""
    path = Path(path)
    with path.open("wb") as out:
        for index in range(frames):
            for plane in pattern_planes(width, height, index, pix_fmt):
                out.write(np.ascontiguousarray(plane).tobytes())
    return path


def raw_frame_bytes(width: int, height: int, pix_fmt: str = "yuv420p") -> int:
    """Bytes in one raw frame of the given geometry and format."""
    rows, cols = chroma_shape(width, height, pix_fmt)
    samples = width * height + 2 * rows * cols
    return samples * (2 if pix_fmt.endswith("10le") else 1)


def write_garbage(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """``size`` deterministic random bytes."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    return path


def truncate_copy(src: Path, dst: Path, keep_fraction: float) -> Path:
    """A copy of ``src`` cut after ``keep_fraction`` of its bytes."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(dst)


def run_ffmpeg(*args: str) -> bytes:
    """Run the ffmpeg binary quietly; return stdout, raise with stderr on failure."""
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(command)}\n{done.stderr.decode()}")
    return done.stdout


def tag_rotation_with_binary(src: Path, dst: Path, degrees: int, hflip: bool = False) -> Path:
    """Copy ``src`` to ``dst`` with a display rotation set by the ffmpeg binary itself."""
    flip = ["-display_hflip"] if hflip else []
    run_ffmpeg("-display_rotation", str(degrees), *flip, "-i", str(src), "-c", "copy", str(dst))
    return Path(dst)


def binary_yuv420p_frames(
    src: Path,
    width: int,
    height: int,
    frames: int,
    raw_input: tuple[int, int, str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The reference decode: ``ffmpeg [raw flags] -i SRC -frames:v N -pix_fmt yuv420p -f rawvideo``.

    ``width``/``height`` are the geometry of the output frames; ``raw_input`` is
    ``(width, height, pix_fmt)`` for a headerless ``.yuv`` source. Returns (Y, U, V) per frame.
    """
    raw_flags = []
    if raw_input:
        raw_w, raw_h, raw_fmt = raw_input
        raw_flags = ["-f", "rawvideo", "-video_size", f"{raw_w}x{raw_h}", "-pix_fmt", raw_fmt]
    out = run_ffmpeg(
        *raw_flags,
        "-i",
        str(src),
        "-frames:v",
        str(frames),
        "-pix_fmt",
        "yuv420p",
        "-f",
        "rawvideo",
        "pipe:1",
    )
    return split_yuv420p(out, width, height)


def split_yuv420p(data: bytes, width: int, height: int) -> list:
    """Cut a stream of yuv420p frames into (Y, U, V) arrays."""
    rows, cols = chroma_shape(width, height, "yuv420p")
    frame_size = raw_frame_bytes(width, height)
    planes = []
    for start in range(0, len(data) - frame_size + 1, frame_size):
        frame = np.frombuffer(data, np.uint8, frame_size, start)
        luma = frame[: width * height].reshape(height, width)
        u_plane = frame[width * height : width * height + rows * cols].reshape(rows, cols)
        v_plane = frame[width * height + rows * cols :].reshape(rows, cols)
        planes.append((luma, u_plane, v_plane))
    return planes
