"""Small PNG pictures for people: a histogram of values and saliency-map thumbnails.

Plain numpy and zlib, so no plotting library is needed at run time.
"""

from __future__ import annotations

import struct
import zlib

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


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
