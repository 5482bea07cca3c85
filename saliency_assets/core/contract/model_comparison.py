"""Do two models agree? For each pair of a table's models, how their per-clip values correlate.

Each clip counts once, through the first row naming it (a per-frame table repeats a clip's
values on every row of it). A pair is compared over the clips where both models have a finite
value, by Pearson and Spearman correlation (as the signal audit computes them), for
``saliency_mean`` and ``saliency_var``; its ``saliency_mean`` values are drawn as a scatter plot.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saliency_assets.core.contract.images import scatter_svg
from saliency_assets.core.contract.signal_audit import correlations, finite_values
from saliency_assets.core.tables.rows import MEAN_COLUMN, VAR_COLUMN, ValueColumns

COMPARED_COLUMNS = (MEAN_COLUMN, VAR_COLUMN)


@dataclass(frozen=True)
class Agreement:
    """Two models' values of one column over the clips where both are finite."""

    column: str
    first_values: np.ndarray
    second_values: np.ndarray
    pearson: float | None  # None: fewer than 3 clips, or a side that does not spread
    spearman: float | None

    @property
    def clips(self) -> int:
        return len(self.first_values)

    def to_json(self) -> dict[str, Any]:
        return {"clips": self.clips, "pearson": self.pearson, "spearman": self.spearman}


@dataclass(frozen=True)
class ModelPair:
    """Two of a table's models, compared clip by clip."""

    first: str
    second: str
    agreements: dict[str, Agreement]  # by compared column: saliency_mean, saliency_var

    @property
    def label(self) -> str:
        return f"{self.first} vs {self.second}"

    def scatter_svg(self) -> str:
        """Each clip's saliency_mean under the first model (x) and the second (y)."""
        mean = self.agreements[MEAN_COLUMN]
        return scatter_svg(
            mean.first_values,
            mean.second_values,
            f"{MEAN_COLUMN} ({self.first})",
            f"{MEAN_COLUMN} ({self.second})",
        )

    def to_json(self, with_plot: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {"models": [self.first, self.second]}
        for column, agreement in self.agreements.items():
            record[column] = agreement.to_json()
        if with_plot:
            record[f"{MEAN_COLUMN}_scatter_svg"] = self.scatter_svg()
        return record

    def summary_line(self) -> str:
        """One line for a log: both correlations of both columns, and over how many clips."""
        parts = [
            f"{column} pearson={_shown(agreement.pearson)} "
            f"spearman={_shown(agreement.spearman)} over {agreement.clips} clips"
            for column, agreement in self.agreements.items()
        ]
        return f"{self.label}: " + "; ".join(parts)


def compare_models(
    rows: Sequence[dict[str, Any]],
    path_column: str,
    models: Sequence[tuple[str, ValueColumns]],
) -> list[ModelPair]:
    """Every pair of ``models`` (model id, its value columns), in the order given."""
    clip_rows = _one_row_per_clip(rows, path_column)
    columns = {
        model_id: {MEAN_COLUMN: values.mean, VAR_COLUMN: values.var} for model_id, values in models
    }
    return [
        ModelPair(
            first,
            second,
            {
                column: _agreement(
                    column,
                    finite_values(clip_rows, columns[first][column]),
                    finite_values(clip_rows, columns[second][column]),
                )
                for column in COMPARED_COLUMNS
            },
        )
        for (first, _), (second, _) in itertools.combinations(models, 2)
    ]


def _agreement(column: str, first: np.ndarray, second: np.ndarray) -> Agreement:
    both = ~np.isnan(first) & ~np.isnan(second)
    pearson, spearman = correlations(first[both], second[both])
    return Agreement(column, first[both], second[both], pearson, spearman)


def _one_row_per_clip(rows: Sequence[dict[str, Any]], path_column: str) -> list[dict[str, Any]]:
    first_rows: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = row.get(path_column)
        if path is not None and path != "":  # a row naming no clip has no values to compare
            first_rows.setdefault(str(path), row)
    return list(first_rows.values())


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
