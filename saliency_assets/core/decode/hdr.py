"""HDR sources (PQ and HLG) turned into the SDR picture saliency models were trained on.

The stream's tags say which transfer it uses; the conversion is a per-channel 1D LUT (the tone
curve) and a 3D LUT (the colour change) that FFmpeg's ``lut1d`` and ``lut3d`` filters apply
inside the decoder's own filter graph, so no frame passes through Python. The LUTs are computed
here once per clip format (transfer, primaries, source peak) and kept as content-addressed
``.cube`` files, shared by every clip, worker and run with that format.

What the LUT does, per BT.2408 / BT.2390 (display-referred mapping):

1. PQ code values to display light in cd/m²; HLG through its inverse OETF and the BT.2100 OOTF
   of a 1000 cd/m² reference display (system gamma 1.2), which puts 75 % HLG at 203 cd/m².
2. The BT.2390 EETF in the PQ domain, from the source's peak (mastering display or content
   light level metadata, else 1000 cd/m²) down to the HDR reference white, 203 cd/m²: shadows
   and mid-tones are untouched, highlights roll off smoothly instead of clipping.
3. 203 cd/m² becomes SDR 100 %; BT.2020 primaries become BT.709 (BT.2087's matrix, out-of-gamut
   light clipped); the BT.1886 display's inverse (gamma 1/2.4) gives BT.709 code values.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRANSFER_SDR, TRANSFER_PQ, TRANSFER_HLG = "sdr", "pq", "hlg"
# --hdr / the manifest's "hdr": convert HDR sources, or read their code values as SDR (as the
# older tool did, for reproducing its numbers).
HDR_TONEMAP, HDR_OFF = "tonemap", "off"
HDR_MODES = (HDR_TONEMAP, HDR_OFF)
UNMAPPED_SUFFIX = "-unmapped"

# AVColorTransferCharacteristic / AVColorPrimaries codes, and ffprobe's names for them.
AVCOL_TRC_SMPTE2084, AVCOL_TRC_ARIB_STD_B67 = 16, 18
AVCOL_PRI_BT2020 = 9
TRANSFER_BY_TRC = {AVCOL_TRC_SMPTE2084: TRANSFER_PQ, AVCOL_TRC_ARIB_STD_B67: TRANSFER_HLG}
TRC_BY_NAME = {"smpte2084": AVCOL_TRC_SMPTE2084, "arib-std-b67": AVCOL_TRC_ARIB_STD_B67}
PRIMARIES_BY_NAME = {"bt2020": AVCOL_PRI_BT2020}

REFERENCE_WHITE_NITS = 203.0  # BT.2408: HDR reference white = SDR 100 %
DEFAULT_PEAK_NITS = 1000.0  # BT.2408's typical mastering peak; HLG's reference display
HLG_SYSTEM_GAMMA = 1.2  # BT.2100 at a 1000 cd/m² nominal peak
BT1886_GAMMA = 2.4
LUT_SIZE = 33  # the 3D LUT's grid; only the gamut change is left to it (see shaper_table)
SHAPER_SIZE = 65536  # one entry per 16-bit input level
LUT_DIR_NAME = "saliency-assets-luts"

# SMPTE ST 2084 constants.
PQ_M1, PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
PQ_C1, PQ_C2, PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
PQ_MAX_NITS = 10000.0
# BT.2100 HLG constants.
HLG_A = 0.17883277
HLG_B = 1 - 4 * HLG_A
HLG_C = 0.5 - HLG_A * np.log(4 * HLG_A)
BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593])
# BT.2087: linear BT.709 RGB -> linear BT.2020 RGB; its inverse takes BT.2020 back.
BT709_TO_BT2020 = np.array(
    [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
)


@dataclass(frozen=True)
class HdrFormat:
    """What the conversion of one clip format depends on."""

    transfer: str  # TRANSFER_PQ or TRANSFER_HLG
    bt2020: bool  # BT.2020 primaries (else already BT.709)
    peak_nits: float  # the brightest light the source claims; the EETF's starting range


def transfer_of(color_trc: int) -> str:
    """``pq``, ``hlg`` or ``sdr`` for an AVColorTransferCharacteristic code."""
    return TRANSFER_BY_TRC.get(color_trc, TRANSFER_SDR)


def hdr_format(
    color_trc: int,
    color_primaries: int,
    mastering_peak_nits: float | None = None,
    max_cll_nits: float | None = None,
) -> HdrFormat | None:
    """The clip format to convert, or ``None`` for SDR sources.

    The source peak is the content light level (MaxCLL) when stated, else the mastering
    display's peak, else 1000 cd/m², kept within reference white and PQ's 10000 cd/m² (a
    bogus 1 cd/m² would otherwise clip every tone); HLG is scene-referred, so it always uses
    its reference display's 1000 cd/m².
    """
    transfer = transfer_of(color_trc)
    if transfer == TRANSFER_SDR:
        return None
    peak = DEFAULT_PEAK_NITS
    if transfer == TRANSFER_PQ:
        claimed = max_cll_nits or mastering_peak_nits or DEFAULT_PEAK_NITS
        peak = min(max(claimed, REFERENCE_WHITE_NITS), PQ_MAX_NITS)
    return HdrFormat(transfer, color_primaries == AVCOL_PRI_BT2020, float(peak))


def recorded_transfer(transfer: str, mode: str) -> str:
    """What a row records: the source's transfer, marked when HDR was read as SDR (``off``)."""
    if transfer == TRANSFER_SDR or mode == HDR_TONEMAP:
        return transfer
    return transfer + UNMAPPED_SUFFIX


def mastering_peak(side_data: bytes) -> float | None:
    """The peak luminance of an ``AVMasteringDisplayMetadata`` blob, when it has one."""
    # display_primaries[3][2], white_point[2], min_luminance: AVRationals; then max_luminance,
    # then has_primaries and has_luminance (ints).
    if len(side_data) < 88:
        return None
    numerator, denominator = struct.unpack_from("<ii", side_data, 72)
    (has_luminance,) = struct.unpack_from("<i", side_data, 84)
    if not has_luminance or denominator <= 0 or numerator <= 0:
        return None
    return numerator / denominator


def max_content_light(side_data: bytes) -> float | None:
    """MaxCLL of an ``AVContentLightMetadata`` blob (0 means unknown)."""
    if len(side_data) < 4:
        return None
    (max_cll,) = struct.unpack_from("<I", side_data, 0)
    return float(max_cll) or None


def conversion_filters(fmt: HdrFormat) -> list[tuple[str, str]]:
    """The ``lut1d`` and ``lut3d`` filters converting 16-bit RGB of ``fmt`` to SDR BT.709 (the
    LUT files are written on first use)."""
    shaper, colour = lut_files(fmt)
    return [
        ("lut1d", f"file={_escaped(shaper)}:interp=linear"),
        ("lut3d", f"file={_escaped(colour)}:interp=tetrahedral"),
    ]


def lut_files(fmt: HdrFormat) -> tuple[Path, Path]:
    """The shaper (1D) and colour (3D) ``.cube`` files of ``fmt``'s conversion: computed once
    per process and format, written atomically once and shared (named by their content), and
    rewritten if they went away."""
    paths = _written_luts(fmt)
    if not all(path.is_file() for path in paths):
        _written_luts.cache_clear()
        paths = _written_luts(fmt)
    return paths


@functools.cache
def _written_luts(fmt: HdrFormat) -> tuple[Path, Path]:
    shaper = cube_text(shaper_table(fmt)[:, None].repeat(3, axis=1), "LUT_1D_SIZE")
    colour = cube_text(colour_table(fmt), "LUT_3D_SIZE")
    return _written(fmt.transfer, shaper), _written(fmt.transfer, colour)


def _written(prefix: str, text: str) -> Path:
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / LUT_DIR_NAME
    path = folder / f"{prefix}-{digest}.cube"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{path.name}.{os.getpid()}.tmp"
        partial.write_text(text)
        os.replace(partial, path)
    return path


def shaper_table(fmt: HdrFormat, size: int = SHAPER_SIZE) -> np.ndarray:
    """The conversion of grey code values (``size`` of them, 0 to 1): the per-channel part.

    Applied to each channel first, it leaves the 3D LUT only the gamut change (and HLG's
    colour-dependent OOTF gain), which is the identity along the grey axis: greys come out
    exact and colours nearly so, where one 3D LUT straight from PQ/HLG code values bends every
    tone between its grid points (about 2 code values too dark on average at 65³).
    """
    greys = np.linspace(0.0, 1.0, size)
    return sdr_from_hdr(np.repeat(greys[:, None], 3, axis=1), fmt)[:, 0]


def colour_table(fmt: HdrFormat, size: int = LUT_SIZE) -> np.ndarray:
    """``(size**3, 3)`` SDR code values for a grid of shaped values, red fastest (``.cube``
    order): each shaped value goes back to its code value, then through the whole conversion."""
    codes = np.linspace(0.0, 1.0, SHAPER_SIZE)
    shaped = shaper_table(fmt) + codes * 1e-9  # strictly increasing, so it can be inverted
    axis = np.interp(np.linspace(0.0, 1.0, size), shaped, codes)
    blue, green, red = np.meshgrid(axis, axis, axis, indexing="ij")
    return sdr_from_hdr(np.stack([red.ravel(), green.ravel(), blue.ravel()], axis=1), fmt)


def sdr_from_hdr(codes: np.ndarray, fmt: HdrFormat) -> np.ndarray:
    """BT.709 SDR code values in [0, 1] of ``(..., 3)`` PQ or HLG RGB code values."""
    nits = pq_to_nits(codes) if fmt.transfer == TRANSFER_PQ else hlg_to_nits(codes)
    mapped = pq_to_nits(eetf(nits_to_pq(nits), fmt.peak_nits, REFERENCE_WHITE_NITS))
    relative = mapped / REFERENCE_WHITE_NITS
    if fmt.bt2020:
        relative = _times(relative, BT2020_TO_BT709)
    return np.clip(relative, 0.0, 1.0) ** (1 / BT1886_GAMMA)


def pq_to_nits(codes: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: PQ code values to cd/m²."""
    power = np.clip(codes, 0.0, 1.0) ** (1 / PQ_M2)
    linear = np.maximum(power - PQ_C1, 0.0) / (PQ_C2 - PQ_C3 * power)
    return PQ_MAX_NITS * linear ** (1 / PQ_M1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 inverse EOTF: cd/m² to PQ code values."""
    linear = (np.clip(nits, 0.0, PQ_MAX_NITS) / PQ_MAX_NITS) ** PQ_M1
    return ((PQ_C1 + PQ_C2 * linear) / (1 + PQ_C3 * linear)) ** PQ_M2


def hlg_to_nits(codes: np.ndarray) -> np.ndarray:
    """BT.2100 HLG inverse OETF and OOTF on a 1000 cd/m² display: display light in cd/m²."""
    signal = np.clip(codes, 0.0, 1.0)
    scene = np.where(
        signal <= 0.5,
        signal**2 / 3,
        (np.exp((signal - HLG_C) / HLG_A) + HLG_B) / 12,
    )
    luminance = (scene * BT2020_LUMA).sum(axis=-1)
    gain = np.power(np.maximum(luminance, 1e-12), HLG_SYSTEM_GAMMA - 1)[..., None]
    return DEFAULT_PEAK_NITS * gain * scene


def eetf(pq_codes: np.ndarray, source_peak_nits: float, target_peak_nits: float) -> np.ndarray:
    """BT.2390's EETF: PQ values of a source peaking at ``source_peak_nits`` fitted under
    ``target_peak_nits`` (source and target black at 0), with the hermite-spline knee."""
    source_peak = nits_to_pq(np.float64(source_peak_nits))
    if source_peak_nits <= target_peak_nits:
        return np.minimum(pq_codes, source_peak)
    normalised = np.minimum(pq_codes / source_peak, 1.0)
    max_lum = nits_to_pq(np.float64(target_peak_nits)) / source_peak
    knee = 1.5 * max_lum - 0.5
    t = (normalised - knee) / (1 - knee)
    spline = (
        (2 * t**3 - 3 * t**2 + 1) * knee
        + (t**3 - 2 * t**2 + t) * (1 - knee)
        + (-2 * t**3 + 3 * t**2) * max_lum
    )
    return np.where(normalised < knee, normalised, spline) * source_peak


def _times(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``rgb @ matrix.T`` without BLAS: this runs in forked workers, where OpenBLAS's thread pool
    (inherited from the forkserver) can spin forever on a matrix product."""
    return np.einsum("...j,ij->...i", rgb, matrix)


def _inverse_3x3(matrix: np.ndarray) -> np.ndarray:
    """The inverse by cofactors (no LAPACK at import time, for the same reason)."""
    columns = matrix.T
    adjugate = np.array(
        [
            np.cross(columns[1], columns[2]),
            np.cross(columns[2], columns[0]),
            np.cross(columns[0], columns[1]),
        ]
    )
    return adjugate / (columns[0] * adjugate[0]).sum()


BT2020_TO_BT709 = _inverse_3x3(BT709_TO_BT2020)


def cube_text(table: np.ndarray, size_keyword: str) -> str:
    """A ``.cube`` file holding ``table``: ``LUT_1D_SIZE`` (one row per level) or
    ``LUT_3D_SIZE`` (``size**3`` rows, red fastest)."""
    size = len(table) if size_keyword == "LUT_1D_SIZE" else round(len(table) ** (1 / 3))
    rows = "\n".join(f"{r:.7f} {g:.7f} {b:.7f}" for r, g, b in table.tolist())
    return f"{size_keyword} {size}\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 1 1\n{rows}\n"


def _escaped(path: Path) -> str:
    """``path`` as one filter option value: backslash before the option syntax's specials."""
    text = str(path)
    for special in ("\\", "'", ":"):
        text = text.replace(special, "\\" + special)
    return text
