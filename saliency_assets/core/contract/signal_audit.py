"""Is a feature column any use? The signal-mix audit's rule, for the saliency columns.

A column is *covered* when at least 80 % of the table's rows hold a finite value and those values
spread (their standard deviation is above zero); it is then judged by its Pearson and Spearman
correlation with the table's target column (``mos``, ``vmaf``, ...), taken over the rows where
both are finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saliency_assets.core.tables.rows import MEAN_COLUMN, VAR_COLUMN

SALIENCY_COLUMNS = (MEAN_COLUMN, VAR_COLUMN)
MIN_FINITE_SHARE = 0.8
MIN_PAIRS = 3  # fewer pairs than this have no meaningful correlation


@dataclass(frozen=True)
class ColumnSignal:
    """One column's coverage and, when the table has a target, its correlation with it."""

    column: str
    rows: int
    finite_share: float
    std: float  # of the finite values (population); 0.0 when there are none
    pearson: float | None = None  # None: no target, fewer than MIN_PAIRS pairs, or no spread
    spearman: float | None = None
    pairs: int = 0  # rows where the column and the target are both finite

    @property
    def covered(self) -> bool:
        return self.finite_share >= MIN_FINITE_SHARE and self.std > 0.0


def audit_signal(
    rows: Sequence[dict[str, Any]],
    target_column: str | None,
    columns: Iterable[str] = SALIENCY_COLUMNS,
) -> list[ColumnSignal]:
    """Coverage and correlation of each of ``columns`` over ``rows``."""
    target = finite_values(rows, target_column) if target_column else None
    return [_column_signal(rows, column, target) for column in columns]


def _column_signal(
    rows: Sequence[dict[str, Any]], column: str, target: np.ndarray | None
) -> ColumnSignal:
    values = finite_values(rows, column)
    finite = ~np.isnan(values)
    count = len(rows)
    share = float(finite.sum() / count) if count else 0.0
    spread = float(np.std(values[finite])) if finite.any() else 0.0
    signal = ColumnSignal(column, count, share, spread)
    if target is None:
        return signal
    both = finite & ~np.isnan(target)
    pearson, spearman = correlations(values[both], target[both])
    return ColumnSignal(column, count, share, spread, pearson, spearman, int(both.sum()))


def correlations(values: np.ndarray, target: np.ndarray) -> tuple[float | None, float | None]:
    """Pearson and Spearman of two equally long finite arrays; None for both when there are
    fewer than MIN_PAIRS pairs or either side does not spread."""
    if len(values) < MIN_PAIRS or np.std(values) == 0.0 or np.std(target) == 0.0:
        return None, None
    pearson = float(np.corrcoef(values, target)[0, 1])
    # Spearman: Pearson of the ranks, ties sharing their average rank.
    spearman = float(np.corrcoef(average_ranks(values), average_ranks(target))[0, 1])
    return pearson, spearman


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of finite values, tied values sharing the mean of their ranks (pandas'
    ``rank()``, without importing pandas into every command that audits a column)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def finite_values(rows: Sequence[dict[str, Any]], column: str) -> np.ndarray:
    """The column as floats, NaN where a row has no finite number (missing, null, text)."""
    return np.array([_as_float(row.get(column)) for row in rows], dtype=np.float64)


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan
