"""Temporal reducers: per-frame saliency maps to one clip map, with the reference's maths.

Reducers stream: each frame's map is folded in as it arrives, so memory holds one running
map (two for motion-weighted), never the whole sequence.
"""

from __future__ import annotations

import numpy as np

MOTION_WEIGHT_FLOOR = 1e-6


class TemporalReducer:
    """Folds maps in sample order; ``result()`` gives the clipped float32 clip map."""

    def __init__(self, aggregator: str, ema_alpha: float = 0.6) -> None:
        self.aggregator = aggregator
        self.ema_alpha = ema_alpha
        self.count = 0
        self._state: np.ndarray | None = None
        self._weight_total = 0.0
        self._previous_luma: np.ndarray | None = None

    def add(self, saliency_map: np.ndarray, luma: np.ndarray | None = None) -> None:
        """Fold in one frame's (H, W) map; ``luma`` (uint8 Y plane) is needed for motion."""
        frame_map = np.asarray(saliency_map, dtype=np.float32)
        # The running map is updated in place: at 4K a temporary is another 33 MB per worker.
        if self.aggregator == "mean":
            if self._state is None:
                self._state = frame_map.copy()
            else:
                self._state += frame_map
        elif self.aggregator == "max":
            if self._state is None:
                self._state = np.zeros_like(frame_map)
            np.maximum(self._state, frame_map, out=self._state)
        elif self.aggregator == "ema":
            self._add_ema(frame_map)
        elif self.aggregator == "motion-weighted":
            self._add_motion_weighted(frame_map, luma)
        else:
            raise ValueError(f"unknown temporal aggregator {self.aggregator!r}")
        self.count += 1

    def result(self) -> np.ndarray:
        if self._state is None:
            raise ValueError("no frames were reduced")
        if self.aggregator == "mean":
            reduced = self._state / np.float32(self.count)
        elif self.aggregator == "motion-weighted":
            reduced = self._state / np.float32(self._weight_total)
        else:
            reduced = self._state.copy()
        return np.clip(reduced, 0.0, 1.0, out=reduced).astype(np.float32, copy=False)

    def _add_ema(self, frame_map: np.ndarray) -> None:
        if self._state is None:
            self._state = frame_map.copy()
            return
        alpha = self.ema_alpha
        self._state = alpha * frame_map + (1.0 - alpha) * self._state

    def _add_motion_weighted(self, frame_map: np.ndarray, luma: np.ndarray | None) -> None:
        if luma is None:
            raise ValueError("motion-weighted reduction needs each frame's luma plane")
        weight = self._motion_weight(luma)
        weighted = np.float32(weight) * frame_map
        if self._state is None:
            self._state = weighted
        else:
            self._state += weighted
        self._weight_total += weight
        self._previous_luma = luma

    def _motion_weight(self, luma: np.ndarray) -> float:
        """1.0 for the first frame, then mean |ΔY|/255 against the previous sampled frame."""
        if self._previous_luma is None:
            return 1.0
        difference = np.abs(luma.astype(np.float32) - self._previous_luma.astype(np.float32))
        return max(float(difference.mean()) / 255.0, MOTION_WEIGHT_FLOOR)


def map_statistics(clip_map: np.ndarray) -> tuple[float, float]:
    """Spatial mean and population variance (float32 numpy reductions), as the reference."""
    values = np.asarray(clip_map, dtype=np.float32)
    if values.size == 0:
        raise ValueError("empty saliency map")
    return float(values.mean()), float(values.var())
