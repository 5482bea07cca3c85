"""Tiled full-resolution inference for fully convolutional saliency models.

A fully convolutional model's output pixel depends only on input pixels within its
receptive-field radius, so a large frame can be run as overlapping windows: each window keeps
only its core, whose pixels lie at least ``radius`` from every window edge that is not also a
frame edge. Window origins are multiples of the network's total stride (``alignment``), so
every pooling grid inside a window lines up with the full frame's, and windows that touch the
frame's border see exactly the border (the zero padding to a multiple of 32 included) the
full frame would. The stitched map is then the single call's map, within float rounding.

The radius and alignment of a model come from :mod:`.receptive_field`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# 4:2:0 chroma is cropped at half the luma origin, so window origins are kept even.
CHROMA_ALIGNMENT = 2

WindowInput = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class TileGeometry:
    """How far an output pixel sees (``radius``) and where windows may start (``alignment``)."""

    radius: int
    alignment: int
    pad_multiple: int = 1
    derived_from: str = "metadata"


@dataclass(frozen=True)
class Tile:
    """One window ``[top, bottom) x [left, right)`` and the core ``rows x cols`` it keeps."""

    top: int
    bottom: int
    left: int
    right: int
    core_rows: tuple[int, int]
    core_cols: tuple[int, int]


def plan_tiles(height: int, width: int, geometry: TileGeometry, tile_size: int) -> list[Tile]:
    """Windows covering a ``height x width`` (padded) frame with cores of about ``tile_size``."""
    step = math.lcm(geometry.alignment, CHROMA_ALIGNMENT)
    margin = _round_up(geometry.radius, step)
    row_spans = _axis_spans(height, tile_size, step, margin)
    col_spans = _axis_spans(width, tile_size, step, margin)
    return [
        Tile(top, bottom, left, right, rows, cols)
        for top, bottom, rows in row_spans
        for left, right, cols in col_spans
    ]


def run_tiles(
    tiles: list[Tile], window_input: WindowInput, run_window: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Run every window and stitch the kept cores into one (padded height, width) map.

    ``window_input(top, bottom, left, right)`` builds a window's [1, C, h, w] tensor and
    ``run_window`` returns the model's (h, w) map for it.
    """
    height = max(tile.core_rows[1] for tile in tiles)
    width = max(tile.core_cols[1] for tile in tiles)
    stitched = np.empty((height, width), dtype=np.float32)
    for tile in tiles:
        window_map = run_window(window_input(tile.top, tile.bottom, tile.left, tile.right))
        expected = (tile.bottom - tile.top, tile.right - tile.left)
        if window_map.shape != expected:
            raise ValueError(f"model returned a {window_map.shape} map for a {expected} window")
        (row_start, row_stop), (col_start, col_stop) = tile.core_rows, tile.core_cols
        stitched[row_start:row_stop, col_start:col_stop] = window_map[
            row_start - tile.top : row_stop - tile.top, col_start - tile.left : col_stop - tile.left
        ]
    return stitched


# --- helpers ---------------------------------------------------------------------------------


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis_spans(
    length: int, tile_size: int, step: int, margin: int
) -> list[tuple[int, int, tuple[int, int]]]:
    """(window start, window stop, core) per tile along one axis; cores split it evenly."""
    count = max(1, math.ceil(length / max(tile_size, step)))
    cuts = sorted({0, length, *(_round_up(length * k // count, step) for k in range(1, count))})
    cuts = [cut for cut in cuts if cut <= length]
    spans = []
    for start, stop in zip(cuts, cuts[1:], strict=False):
        if stop <= start:
            continue
        spans.append((max(0, start - margin), min(length, stop + margin), (start, stop)))
    return spans
