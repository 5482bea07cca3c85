"""PQ and HLG renditions of SDR clips, made at test time the way HDR deliveries are graded.

Each SDR frame is decoded (BT.709, limited range), displayed on a BT.1886 display (gamma 2.4)
with SDR 100 % at the BT.2408 HDR reference white, 203 cd/m², moved to BT.2020 primaries
(BT.2087) and encoded with the PQ curve or, through the inverse BT.2100 OOTF of a 1000 cd/m²
display, with the HLG curve; then written as 10-bit BT.2020 limited-range 4:2:0 HEVC tagged with
its transfer. These are written here from the standards, independently of the package's own
conversion, so a test compares two implementations of the same mapping.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .clips import RATE, planes_to_frame

REFERENCE_WHITE = 203.0
HLG_PEAK = 1000.0
TRC_CODES = {"pq": 16, "hlg": 18}
BT2020_PRIMARIES = BT2020_NCL = 9
LIMITED = 1
BT709_TO_BT2020 = np.array(
    [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
)
BT2020_KR, BT2020_KB = 0.2627, 0.0593
HLG_A, HLG_B, HLG_C = 0.17883277, 0.28466892, 0.55991073


def make_hdr_rendition(sdr_clip: Path, path: Path, transfer: str, x265_params: str = "") -> Path:
    """Write ``sdr_clip``'s frames to ``path`` as 10-bit BT.2020 ``pq`` or ``hlg`` HEVC, losslessly;
    ``x265_params`` adds encoder parameters (e.g. mastering display metadata)."""
    with av.open(str(sdr_clip)) as source, av.open(str(path), "w") as target:
        stream = None
        for index, frame in enumerate(source.decode(video=0)):
            if stream is None:
                stream = _hdr_stream(target, frame.width, frame.height, transfer, x265_params)
            code_values = hdr_code_values(sdr_rgb(frame), transfer)
            hdr_frame = planes_to_frame(bt2020_yuv420p10(code_values), "yuv420p10le")
            hdr_frame.pts, hdr_frame.time_base = index, Fraction(1, RATE)
            for packet in stream.encode(hdr_frame):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return path


def sdr_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``(H, W, 3)`` BT.709 R'G'B' in [0, 1] of a limited-range 4:2:0 SDR frame, computed here:
    swscale's yuv420p -> rgb48 comes out about 1.5 code values dark."""
    luma, cb, cr = (_plane(plane) for plane in frame.planes)
    height, width = luma.shape
    y = (luma - 16) / 219
    u, v = ((_doubled(plane)[:height, :width] - 128) / 224 for plane in (cb, cr))
    red = y + 1.5748 * v
    green = y - 0.1873 * u - 0.4681 * v
    blue = y + 1.8556 * u
    return np.stack([red, green, blue], axis=2)


def _plane(plane) -> np.ndarray:
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width].astype(np.float64)


def _doubled(plane: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)


def hdr_code_values(sdr: np.ndarray, transfer: str) -> np.ndarray:
    """BT.2020 PQ or HLG R'G'B' of BT.709 SDR R'G'B', SDR 100 % at 203 cd/m²."""
    nits = (np.clip(sdr, 0.0, 1.0) ** 2.4 @ BT709_TO_BT2020.T) * REFERENCE_WHITE
    return pq_encode(nits) if transfer == "pq" else hlg_encode(nits)


def pq_encode(nits: np.ndarray) -> np.ndarray:
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    linear = (np.clip(nits, 0.0, 10000.0) / 10000.0) ** m1
    return ((c1 + c2 * linear) / (1 + c3 * linear)) ** m2


def hlg_encode(nits: np.ndarray) -> np.ndarray:
    """Display light -> scene light (inverse OOTF, gamma 1.2 at 1000 cd/m²) -> HLG OETF."""
    display = nits / HLG_PEAK
    display_luma = display @ np.array([BT2020_KR, 1 - BT2020_KR - BT2020_KB, BT2020_KB])
    scene_luma = np.maximum(display_luma, 1e-12) ** (1 / 1.2)
    scene = display / np.maximum(scene_luma, 1e-12)[..., None] ** 0.2
    scene = np.clip(scene, 0.0, 1.0)
    log_part = HLG_A * np.log(np.maximum(12 * scene - HLG_B, 1e-12)) + HLG_C
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), log_part)


def bt2020_yuv420p10(rgb: np.ndarray) -> list[np.ndarray]:
    """Limited-range 10-bit Y, Cb, Cr planes (BT.2020 non-constant luminance, 4:2:0)."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = BT2020_KR * red + (1 - BT2020_KR - BT2020_KB) * green + BT2020_KB * blue
    cb = (blue - luma) / (2 * (1 - BT2020_KB))
    cr = (red - luma) / (2 * (1 - BT2020_KR))
    planes = [64 + 876 * luma, 512 + 896 * _halved(cb), 512 + 896 * _halved(cr)]
    return [np.clip(np.round(plane), 0, 1023).astype("<u2") for plane in planes]


def _halved(plane: np.ndarray) -> np.ndarray:
    height, width = plane.shape
    padded = np.pad(plane, ((0, height % 2), (0, width % 2)), mode="edge")
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean(axis=(1, 3))


def _hdr_stream(container, width: int, height: int, transfer: str, x265_params: str):
    stream = container.add_stream("libx265", rate=RATE)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
    stream.time_base = Fraction(1, RATE)
    params = ":".join(filter(None, ["lossless=1:log-level=error", x265_params]))
    stream.options = {"preset": "ultrafast", "x265-params": params}
    context = stream.codec_context
    context.colorspace, context.color_primaries = BT2020_NCL, BT2020_PRIMARIES
    context.color_trc, context.color_range = TRC_CODES[transfer], LIMITED
    return stream


def make_scene_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """An SDR BT.709 clip of a dim, softly lit room with a few coloured objects drifting across,
    including a specular white one: saliency well away from saturation, and highlights at SDR
    100 % (203 cd/m² once graded as HDR)."""
    rows, cols = np.mgrid[0:height, 0:width] / max(width, height)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, RATE)
        stream.options = {"preset": "ultrafast", "crf": "12"}
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = LIMITED
        for index in range(frames):
            rgb = _scene(rows, cols, index)
            frame = av.VideoFrame.from_ndarray(np.round(rgb * 255).astype(np.uint8), "rgb24")
            frame = frame.reformat(
                format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
            )
            frame.pts, frame.time_base = index, Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


SCENE_OBJECTS = (  # (row, column, radius, R'G'B', drift per frame) in picture-width units
    (0.20, 0.25, 0.08, (0.85, 0.20, 0.15), (0.004, 0.006)),
    (0.35, 0.70, 0.10, (0.20, 0.55, 0.85), (-0.003, 0.004)),
    (0.45, 0.45, 0.05, (1.00, 1.00, 1.00), (0.002, -0.005)),
    (0.15, 0.85, 0.06, (0.90, 0.80, 0.25), (0.005, -0.002)),
)


def _scene(rows: np.ndarray, cols: np.ndarray, index: int) -> np.ndarray:
    light = 0.25 + 0.25 * np.exp(-((rows - 0.2) ** 2 + (cols - 0.3) ** 2) / 0.1)
    texture = 0.03 * np.sin(cols * 90 + index * 0.3) * np.sin(rows * 70)
    rgb = np.repeat((light + texture)[..., None], 3, axis=2) * np.array([1.0, 0.95, 0.85])
    for row, col, radius, colour, (d_row, d_col) in SCENE_OBJECTS:
        centre_row, centre_col = row + d_row * index, col + d_col * index
        inside = (rows - centre_row) ** 2 + (cols - centre_col) ** 2 < radius**2
        rgb[inside] = colour
    return np.clip(rgb, 0.0, 1.0)
