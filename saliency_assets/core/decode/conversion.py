"""Turning decoded frames into sampled planes with FFmpeg's own filters, as the ffmpeg CLI does.

Every backend hands its frames to a :class:`FrameConverter`, a libavfilter graph built like the
one ``ffmpeg -i SRC -pix_fmt yuv420p -f rawvideo`` builds: the autorotate filters, then (in
inference-size mode) ``scale=W:H:flags=area``, then the output pixel format, with the scaler
the CLI auto-inserts. That is what makes native-mode planes byte-identical to the reference tool's
and keeps the in-process and binary backends in step.
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass

import av
import numpy as np
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import Interpolation

from saliency_assets.core.decode.decoded import DecodedFrame, SourceFacts
from saliency_assets.core.decode.hdr import (
    HDR_TONEMAP,
    HdrFormat,
    conversion_filters,
    hdr_format,
    mastering_peak,
    max_content_light,
    recorded_transfer,
    transfer_of,
)

NATIVE_PIX_FMT = "yuv420p"
# Inference mode scales to full-resolution chroma, so luma and RGB both come from one area pass.
INFERENCE_PIX_FMT = "yuv444p"
# Plain "area" drifts flat colours by one code value at large ratios (4K -> 32 lines);
# accurate rounding fixes that and bitexact keeps results the same on every CPU, at no
# measurable cost (about 3 ms per 4K frame either way).
AREA_SCALE_FLAGS = "area+accurate_rnd+bitexact"
# The YUV->RGB step runs on the small scaled frame, where exact rounding costs nothing.
RGB_FLAGS = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
# HDR frames pass the LUTs as 16-bit planar RGB, so 10-bit code values keep their precision.
HDR_RGB_PIX_FMT = "gbrp16le"
HDR_RESAMPLE_FLAGS = "bicubic+accurate_rnd+bitexact"
HDR_GRAPHS_KEPT = 4  # configured tone-mapping graphs a thread keeps, least recently used out
_KEPT = threading.local()  # a graph holds frames between push and pull: one owner at a time

# AVColorSpace codes -> the matrix used; anything else counts as untagged. Constant-luminance
# BT.2020 (10) has no matrix form; its non-constant-luminance matrix is the nearest.
MATRIX_BY_AVCOL_SPC = {
    1: "bt709",
    4: "fcc",
    5: "bt601",
    6: "bt601",
    7: "smpte240m",
    9: "bt2020",
    10: "bt2020",
}
# ffprobe's color_space names -> AVColorSpace codes.
AVCOL_SPC_BY_NAME = {
    "bt709": 1,
    "fcc": 4,
    "bt470bg": 5,
    "smpte170m": 6,
    "smpte240m": 7,
    "bt2020nc": 9,
    "bt2020c": 10,
}
AVCOL_SPC_UNSPECIFIED = 2
SWS_COLORSPACE = {
    "bt709": "ITU709",
    "bt601": "ITU601",
    "bt2020": "BT2020",
    "smpte240m": "SMPTE240M",
    "fcc": "FCC",
}
AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG = 1, 2
RANGE_BY_NAME = {"tv": AVCOL_RANGE_MPEG, "pc": AVCOL_RANGE_JPEG}


def inference_geometry(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, the long side in proportion.

    Both sides are rounded to the nearest multiple of 8 (at least 8), so portrait stays portrait.
    """
    if width <= 0 or height <= 0 or short_side <= 0:
        raise ValueError(f"geometry {width}x{height} and short side {short_side} must be > 0")
    if width <= height:
        return _round_to_8(short_side), _round_to_8(height * short_side / width)
    return _round_to_8(width * short_side / height), _round_to_8(short_side)


def _round_to_8(value: float) -> int:
    return max(8, int(value / 8 + 0.5) * 8)


@dataclass(frozen=True)
class Orientation:
    """The display transform ffmpeg's autorotate applies, as libavfilter filters.

    ``rotation`` is the counter-clockwise angle of the display matrix normalised to [0, 360),
    the number ffprobe prints; ``swaps_axes`` says whether width and height trade places.
    """

    filters: tuple[tuple[str, str | None], ...] = ()
    rotation: int = 0
    swaps_axes: bool = False

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.swaps_axes else (width, height)


def orientation_from_matrix(
    counter_clockwise: float, matrix: tuple[int, ...] | None
) -> Orientation:
    """The filters fftools' autorotate inserts for a display matrix (ffmpeg_filter.c).

    ``counter_clockwise`` is ``av_display_rotation_get`` of ``matrix``; the matrix's signs pick
    the flipped transpose variants exactly as the CLI does.
    """
    theta = (-round(counter_clockwise)) % 360  # clockwise, as fftools' get_rotation
    m = matrix or (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    rotation = round(counter_clockwise) % 360
    if abs(theta - 90) < 1:
        return Orientation((("transpose", "cclock_flip" if m[3] > 0 else "clock"),), rotation, True)
    if abs(theta - 180) < 1:
        flips = ((("hflip", None),) if m[0] < 0 else ()) + ((("vflip", None),) if m[4] < 0 else ())
        return Orientation(flips, rotation, False)
    if abs(theta - 270) < 1:
        return Orientation((("transpose", "clock_flip" if m[3] < 0 else "cclock"),), rotation, True)
    if abs(theta) > 1:
        return Orientation((("rotate", f"{theta}*PI/180"),), rotation, False)
    return Orientation((("vflip", None),) if m[4] < 0 else (), 0, False)


def orientation_of_frame(frame: av.VideoFrame) -> Orientation:
    """The autorotate transform of a decoded frame's display matrix (none when untagged).

    The side data is read through a container of our own: ``frame.side_data`` and
    ``frame.rotation`` cache one on the frame, a reference cycle that kept each clip's first
    decoded frame (and the decoder buffers it pins, ~24 MB at 4K) alive until the next
    garbage collection.
    """
    for side_data in SideDataContainer(frame):
        if side_data.type == SideDataType.DISPLAYMATRIX:
            matrix = struct.unpack("<9i", bytes(side_data)[:36])
            counter_clockwise = display_rotation(matrix)
            if math.isnan(counter_clockwise):
                return Orientation()  # a degenerate matrix: ffmpeg inserts no filter either
            return orientation_from_matrix(counter_clockwise, matrix)
    return Orientation()


def display_rotation(matrix: tuple[int, ...]) -> float:
    """``av_display_rotation_get``: the matrix's counter-clockwise angle in degrees (NaN when
    a column is zero)."""
    m = [value / 65536.0 for value in matrix[:5]]
    scale_x, scale_y = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale_x == 0.0 or scale_y == 0.0:
        return math.nan
    return -math.degrees(math.atan2(m[1] / scale_y, m[0] / scale_x))


def orientation_from_rotation(counter_clockwise: float) -> Orientation:
    """The geometry of a bare rotation angle (ffprobe's ``rotation``); flips are not known."""
    return orientation_from_matrix(counter_clockwise, None)


@dataclass(frozen=True)
class ColourTags:
    """The YUV->RGB matrix and range used for a source."""

    matrix: str
    full_range: bool


# What tone-mapped inference-mode frames come out as: BT.709, full range (no precision lost).
TONEMAPPED_COLOUR = ColourTags("bt709", True)


def resolve_colour(colorspace: int, color_range: int, pix_fmt: str, height: int) -> ColourTags:
    """The stream's own matrix and range; untagged: BT.709 from 720 lines up, else BT.601.

    An untagged range is limited, except for the full-range ``yuvj*`` formats.
    """
    matrix = MATRIX_BY_AVCOL_SPC.get(colorspace) or ("bt709" if height >= 720 else "bt601")
    if color_range in (AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG):
        return ColourTags(matrix, color_range == AVCOL_RANGE_JPEG)
    return ColourTags(matrix, pix_fmt.startswith("yuvj"))


def colour_codes_from_names(color_space: str | None, color_range: str | None) -> tuple[int, int]:
    """ffprobe's ``color_space``/``color_range`` names as AVColorSpace/AVColorRange codes."""
    return (
        AVCOL_SPC_BY_NAME.get(color_space or "", AVCOL_SPC_UNSPECIFIED),
        RANGE_BY_NAME.get(color_range or "", 0),
    )


class FrameConverter:
    """Converts a clip's frames the way the ffmpeg CLI does, one sampled frame at a time.

    Set up by the first frame it converts, which fixes the orientation (a stream property), the
    output geometry and the colour tags. A later frame with another size or format gets a new
    graph that scales it to the established geometry, as the CLI's autoscale does. Once the
    stream has changed (``observe`` sees every decoded frame, sampled or not), the CLI's rebuilt
    graphs end in its own output scaler, and inference-size frames go through it too.
    """

    def __init__(self, inference_size: int | None, threads: int = 1, hdr: str = HDR_TONEMAP):
        self.inference_size = inference_size
        self.threads = threads
        self.hdr = hdr
        self.facts: SourceFacts | None = None
        self.colour: ColourTags | None = None  # of the source
        self.hdr_format: HdrFormat | None = None  # set when the frames are tone-mapped
        self._orientation = Orientation()
        self._graph: av.filter.Graph | None = None
        self._graph_key: tuple | None = None
        self._first_key: tuple | None = None
        self._rebuilt = False  # whether the CLI would have rebuilt its filter graph by now

    def observe(self, frame: av.VideoFrame) -> None:
        """Note a decoded frame, converted or not: the CLI rebuilds its graph on any change."""
        key = _frame_key(frame)
        if self._first_key is None:
            self._first_key = key
        self._rebuilt = self._rebuilt or key != self._first_key

    def convert(self, frame: av.VideoFrame, index: int) -> DecodedFrame:
        """The sampled planes of ``frame``, which is frame ``index`` of the clip."""
        if self.facts is None:
            self._learn(frame)
        graph = self._graph_for(frame)
        graph.push(frame)
        converted = graph.pull()
        if self.inference_size is None:
            return yuv420_decoded(index, converted)
        return yuv444_decoded(index, converted, self.output_colour, self.threads)

    @property
    def output_colour(self) -> ColourTags:
        """The matrix and range of the converted frames."""
        return self.colour if self.hdr_format is None else TONEMAPPED_COLOUR

    def _learn(self, frame: av.VideoFrame) -> None:
        self._orientation = orientation_of_frame(frame)
        display_w, display_h = self._orientation.display_size(frame.width, frame.height)
        width, height = display_w, display_h
        if self.inference_size is not None:
            width, height = inference_geometry(display_w, display_h, self.inference_size)
        pix_fmt = frame.format.name
        transfer = recorded_transfer(transfer_of(frame.color_trc), self.hdr)
        self.facts = SourceFacts(
            width, height, display_w, display_h, pix_fmt, self._orientation.rotation, transfer
        )
        self.colour = resolve_colour(frame.colorspace, frame.color_range, pix_fmt, frame.height)
        if self.hdr == HDR_TONEMAP:
            self.hdr_format = hdr_format_of_frame(frame)

    def _graph_for(self, frame: av.VideoFrame) -> av.filter.Graph:
        key = (*_frame_key(frame), self._rebuilt)
        if key != self._graph_key:
            self._graph = self._build_graph(frame)
            self._graph_key = key
        return self._graph

    def _build_graph(self, frame: av.VideoFrame) -> av.filter.Graph:
        spec = (_buffer_args(frame), tuple(self._filters_for(frame)), self.threads)
        if self.hdr_format is None:
            return _configured_graph(spec)
        # lut1d and lut3d read their LUT files when configured (~0.13 s): a worker keeps the
        # graphs of the HDR formats it met and reuses them for every clip of that format.
        kept = _kept_hdr_graphs()
        graph = kept.pop(spec, None) or _configured_graph(spec)
        kept[spec] = graph
        while len(kept) > HDR_GRAPHS_KEPT:
            kept.pop(next(iter(kept)))
        return graph

    def _filters_for(self, frame: av.VideoFrame) -> list[tuple[str, str | None]]:
        facts = self.facts
        filters = list(self._orientation.filters)
        oriented = self._orientation.display_size(frame.width, frame.height)
        if self.hdr_format is not None:
            inference = self.inference_size is not None
            return filters + tonemap_filters(
                self.hdr_format, self.colour, facts.width, facts.height, inference
            )
        if self.inference_size is not None:
            filters.append(("scale", inference_scale_args(facts.width, facts.height, self.colour)))
            if self._rebuilt:
                # The CLI's rebuilt graph: the area scaler keeps the source's pixel format and
                # its output scaler (default flags) converts to the encoder's.
                filters.append(("format", f"pix_fmts={frame.format.name}"))
                filters.append(("scale", f"w={facts.width}:h={facts.height}"))
            filters.append(("format", f"pix_fmts={INFERENCE_PIX_FMT}"))
            return filters
        if oriented != (facts.width, facts.height):
            filters.append(("scale", f"w={facts.width}:h={facts.height}"))
        filters.append(("format", f"pix_fmts={NATIVE_PIX_FMT}"))
        return filters


def _frame_key(frame: av.VideoFrame) -> tuple[int, int, str]:
    return frame.width, frame.height, frame.format.name


def inference_scale_args(width: int, height: int, colour: ColourTags) -> str:
    """Arguments of the inference-size ``scale`` filter, for the graph and the binary alike.

    Input and output matrix and range are both pinned to ``colour``: a YUV source passes
    through without a matrix change even when untagged (where swscale alone would assume
    BT.601), and an RGB source is turned into the YUV that :func:`rgb_from_yuv` will undo.
    """
    matrix = colour.matrix  # our matrix names are the scale filter's names too
    value_range = "pc" if colour.full_range else "tv"
    return (
        f"w={width}:h={height}:flags={AREA_SCALE_FLAGS}"
        f":in_color_matrix={matrix}:out_color_matrix={matrix}"
        f":in_range={value_range}:out_range={value_range}"
    )


def _kept_hdr_graphs() -> dict[tuple, av.filter.Graph]:
    if not hasattr(_KEPT, "graphs"):
        _KEPT.graphs = {}
    return _KEPT.graphs


def _configured_graph(spec: tuple) -> av.filter.Graph:
    buffer_args, filters, threads = spec
    graph = av.filter.Graph()
    graph.threads = threads
    chain = [graph.add("buffer", buffer_args)]
    for name, args in filters:
        chain.append(graph.add(name, args))
    chain.append(graph.add("buffersink"))
    graph.link_nodes(*chain)
    graph.configure()
    return graph


def hdr_format_of_frame(frame: av.VideoFrame) -> HdrFormat | None:
    """The HDR format of a decoded frame's tags and light-level side data (``None``: SDR)."""
    mastering = content_light = None
    for side_data in SideDataContainer(frame):  # not frame.side_data: see orientation_of_frame
        if side_data.type == SideDataType.MASTERING_DISPLAY_METADATA:
            mastering = mastering_peak(bytes(side_data))
        elif side_data.type == SideDataType.CONTENT_LIGHT_LEVEL:
            content_light = max_content_light(bytes(side_data))
    return hdr_format(frame.color_trc, frame.color_primaries, mastering, content_light)


def tonemap_filters(
    fmt: HdrFormat, colour: ColourTags, width: int, height: int, inference: bool
) -> list[tuple[str, str]]:
    """The filters that turn an HDR source's frames into SDR BT.709 ones at ``width x height``.

    The source's YUV becomes 16-bit RGB (area-scaled to the inference size in that same step,
    as SDR sources are), ``lut1d`` and ``lut3d`` apply :mod:`.hdr`'s conversion, and the result
    becomes the
    YUV each mode reads: yuv420p limited range for native mode (what compatible mode's BT.709
    maths expects), yuv444p full range for inference mode (``TONEMAPPED_COLOUR``).
    """
    value_range = "pc" if colour.full_range else "tv"
    flags = AREA_SCALE_FLAGS if inference else HDR_RESAMPLE_FLAGS
    to_rgb = (
        f"w={width}:h={height}:flags={flags}:in_color_matrix={colour.matrix}:in_range={value_range}"
    )
    pix_fmt, out_range = (INFERENCE_PIX_FMT, "pc") if inference else (NATIVE_PIX_FMT, "tv")
    to_yuv = f"flags={HDR_RESAMPLE_FLAGS}:out_color_matrix=bt709:out_range={out_range}"
    return [
        ("scale", to_rgb),
        ("format", f"pix_fmts={HDR_RGB_PIX_FMT}"),
        *conversion_filters(fmt),
        # To 8 bits before the matrix: from 16-bit RGB swscale dithers, which adds noise of
        # about one code value to every pixel that an SDR source does not have.
        ("format", "pix_fmts=gbrp"),
        ("scale", to_yuv),
        ("format", f"pix_fmts={pix_fmt}"),
    ]


def _buffer_args(frame: av.VideoFrame) -> str:
    return (
        f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}"
        f":time_base=1/25:pixel_aspect=1/1"
        f":colorspace={frame.colorspace}:range={frame.color_range}"
    )


def plane_array(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A compact copy of one plane, dropping the line padding past ``plane.line_size``."""
    rows = np.frombuffer(plane, np.uint8, plane.height * plane.line_size)
    rows = rows.reshape(plane.height, plane.line_size)
    return rows[:, : plane.width].copy()


def yuv420_decoded(index: int, frame: av.VideoFrame) -> DecodedFrame:
    """A native-mode frame: 8-bit Y plus U, V from a yuv420p frame."""
    luma, u_plane, v_plane = (plane_array(plane) for plane in frame.planes)
    return DecodedFrame(index=index, luma=luma, chroma=(u_plane, v_plane))


def yuv444_decoded(
    index: int, frame: av.VideoFrame, colour: ColourTags, threads: int = 1
) -> DecodedFrame:
    """An inference-mode frame: Y from a scaled yuv444p frame, RGB by the source's matrix."""
    return DecodedFrame(
        index=index, luma=plane_array(frame.planes[0]), rgb=rgb_from_yuv(frame, colour, threads)
    )


def rgb_from_yuv(frame: av.VideoFrame, colour: ColourTags, threads: int = 1) -> np.ndarray:
    """``(H, W, 3)`` uint8 full-range RGB, converted by swscale with ``colour``'s matrix/range."""
    rgb = frame.reformat(
        format="rgb24",
        src_colorspace=SWS_COLORSPACE[colour.matrix],
        src_color_range="JPEG" if colour.full_range else "MPEG",
        dst_color_range="JPEG",
        interpolation=int(RGB_FLAGS),
        threads=threads,
    )
    return rgb.to_ndarray()


def frame_from_planes(planes: list[np.ndarray], pix_fmt: str) -> av.VideoFrame:
    """An ``av.VideoFrame`` holding ``planes`` (uint8, or uint16 little-endian for 10-bit)."""
    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, values in zip(frame.planes, planes, strict=True):
        target = np.frombuffer(plane, np.uint8, plane.height * plane.line_size)
        target = target.reshape(plane.height, plane.line_size)
        source = values.view(np.uint8).reshape(values.shape[0], -1)
        target[:, : source.shape[1]] = source
    return frame
