"""Small pictures for people: PNG saliency-map thumbnails, SVG plots with named axes.

Plain numpy, zlib and SVG text, so no plotting library is needed at run time. Plots are SVG
because their axes need words, which a PNG would need a font for.
"""

from __future__ import annotations

import html
import struct
import zlib
from dataclasses import dataclass

import numpy as np

BAR_COLOUR = (70, 130, 180)
BACKGROUND = (255, 255, 255)
AXIS_COLOUR = (60, 60, 60)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) image."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[row].astype(np.uint8).tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


def histogram_image(
    values: np.ndarray,
    bins: int = 20,
    value_range: tuple[float, float] = (0.0, 1.0),
    width: int = 400,
    height: int = 160,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB bar chart of ``values`` over ``value_range``; also returns counts and bin edges."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins, range=value_range)
    image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    plot_height = height - 4
    tallest = max(int(counts.max()), 1) if counts.size else 1
    bar_width = width // bins
    for index, count in enumerate(counts):
        bar = int(round(plot_height * count / tallest))
        left = index * bar_width
        image[height - 2 - bar : height - 2, left + 1 : left + bar_width - 1] = BAR_COLOUR
    image[height - 2 :, :] = AXIS_COLOUR
    return image, counts, edges


def heatmap_thumbnail(saliency_map: np.ndarray, max_side: int = 160) -> np.ndarray:
    """A small RGB rendering of a [0, 1] map: dark blue (low) through yellow to white (high)."""
    values = np.clip(np.asarray(saliency_map, dtype=np.float32), 0.0, 1.0)
    step = max(1, int(np.ceil(max(values.shape) / max_side)))
    small = values[::step, ::step]
    red = np.clip(3.0 * small - 1.0, 0.0, 1.0)
    green = np.clip(3.0 * small - 1.5, 0.0, 1.0) * 0.5 + np.clip(2.0 * small - 0.5, 0.0, 1.0) * 0.5
    blue = np.clip(0.5 - small, 0.0, 0.5) + np.clip(3.0 * small - 2.0, 0.0, 1.0)
    return (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class _PlotArea:
    """Where a plot draws, in SVG user units: left edge, bottom edge (y grows downwards)."""

    left: float
    bottom: float
    width: float
    height: float

    def x(self, fraction: float) -> float:
        return self.left + fraction * self.width

    def y(self, fraction: float) -> float:
        return self.bottom - fraction * self.height


def histogram_svg(counts: np.ndarray, x_label: str = "saliency_mean") -> str:
    """Bars of ``counts`` over [0, 1] with x ticks, both axes named (x: ``x_label``, y: rows)."""
    area = _PlotArea(48, 150, 400, 120)
    tallest = max(int(counts.max()), 1)
    x_ticks = [(tick, f"{tick:g}") for tick in (0.0, 0.25, 0.5, 0.75, 1.0)]
    parts = _svg_start(470, 190, area, x_label, "rows", x_ticks, [(0.0, "0"), (1.0, str(tallest))])
    bar_width = area.width / len(counts)
    for index, count in enumerate(counts):
        bar = area.height * int(count) / tallest
        x = area.left + index * bar_width + 1
        parts.append(
            f'<rect x="{x:.1f}" y="{area.bottom - bar:.1f}" width="{bar_width - 2:.1f}" '
            f'height="{bar:.1f}" fill="#3a7bd5"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(x_values: np.ndarray, y_values: np.ndarray, x_label: str, y_label: str) -> str:
    """One dot per (x, y) pair, each axis over its own values' range (two models' values may sit
    on different scales; the shape is what shows their agreement), ticks at both ends and the
    middle, both axes named. Dots are merged on a 2-unit grid, so the picture stays a few kB
    however many pairs there are."""
    area = _PlotArea(64, 270, 240, 240)
    x_fractions, x_ticks = _scaled(np.asarray(x_values, dtype=np.float64))
    y_fractions, y_ticks = _scaled(np.asarray(y_values, dtype=np.float64))
    parts = _svg_start(330, 320, area, x_label, y_label, x_ticks, y_ticks)
    dots = _grid_dots(area, x_fractions, y_fractions)
    if dots:
        parts.append(
            f'<path d="{dots}" stroke="#3a7bd5" stroke-width="4" stroke-linecap="round" '
            'stroke-opacity="0.7"/>'
        )
    else:
        parts.append(
            f'<text x="{area.x(0.5)}" y="{area.y(0.5)}" text-anchor="middle">no pairs</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_start(
    width: int,
    height: int,
    area: _PlotArea,
    x_label: str,
    y_label: str,
    x_ticks: list[tuple[float, str]],
    y_ticks: list[tuple[float, str]],
) -> list[str]:
    """The opening tag, both axes with their tick labels (at fractions along each axis), and
    their names: x below, y rotated on the left."""
    middle_y = area.y(0.5)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        _axis_line(area.x(0), area.y(0), area.x(1), area.y(0)),
        _axis_line(area.x(0), area.y(0), area.x(0), area.y(1)),
        f'<text x="{area.x(0.5)}" y="{area.bottom + 34}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>",
        f'<text x="12" y="{middle_y}" text-anchor="middle" transform="rotate(-90 12 {middle_y})">'
        f"{html.escape(y_label)}</text>",
    ]
    for fraction, text in x_ticks:
        parts.append(
            f'<text x="{area.x(fraction)}" y="{area.bottom + 16}" text-anchor="middle">'
            f"{html.escape(text)}</text>"
        )
    for fraction, text in y_ticks:
        parts.append(
            f'<text x="{area.left - 6}" y="{area.y(fraction) + 4}" text-anchor="end">'
            f"{html.escape(text)}</text>"
        )
    return parts


def _axis_line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#444"/>'


def _scaled(values: np.ndarray) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """The values as fractions of the axis (their range, with a 5 % margin each side so no dot
    sits on an axis) and the axis's ticks at both ends and the middle."""
    if values.size == 0:
        low, high = 0.0, 1.0
    else:
        low, high = float(values.min()), float(values.max())
    margin = (high - low) * 0.05 or max(abs(low), 1.0) * 0.05  # one value: centred
    low, high = low - margin, high + margin
    ticks = [(fraction, f"{low + fraction * (high - low):.3g}") for fraction in (0.0, 0.5, 1.0)]
    return (values - low) / (high - low), ticks


def _grid_dots(area: _PlotArea, x_fractions: np.ndarray, y_fractions: np.ndarray) -> str:
    """An SVG path of zero-length strokes (round caps draw them as dots), one per occupied
    2-unit grid cell, in a stable order."""
    cells = sorted(
        {
            (round(area.x(x) / 2) * 2, round(area.y(y) / 2) * 2)
            for x, y in zip(x_fractions.tolist(), y_fractions.tolist(), strict=True)
        }
    )
    return "".join(f"M{x} {y}h0" for x, y in cells)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
