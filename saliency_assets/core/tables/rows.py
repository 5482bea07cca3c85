"""The row contract: which rows are computed, and what a result writes into a row.

Rules kept from the reference (REFERENCE.md sections 5 and 11): a row with finite
``saliency_mean`` and ``saliency_var`` is ``skipped-existing`` unless ``overwrite`` is set, and
keeps its values and metadata untouched; ``ok`` rows get the values plus the metadata columns;
a column whose configured name is empty is not written. Fixed: a failed recompute under
``overwrite`` clears the stale values and metadata instead of leaving them beside a failure,
and every failure carries a short reason in the error column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.statuses import SKIPPED_EXISTING
from saliency_assets.core.model.clip_saliency import ClipResult

MEAN_COLUMN = "saliency_mean"
VAR_COLUMN = "saliency_var"


@dataclass(frozen=True)
class ValueColumns:
    """Where a row's two saliency values go: the reference's columns, or (when a table is
    enriched with several models) one model's own."""

    mean: str = MEAN_COLUMN
    var: str = VAR_COLUMN


PLAIN_VALUES = ValueColumns()


@dataclass(frozen=True)
class RowMetadata:
    """What an ``ok`` row records about how its values were made."""

    model_id: str
    aggregator: str
    ema_alpha: float
    sampling: str
    inference_size: str

    @classmethod
    def from_config(cls, config: MaterializeConfig, model_id: str) -> RowMetadata:
        size = "native" if config.inference_size is None else str(config.inference_size)
        return cls(
            model_id, config.temporal_aggregator, float(config.ema_alpha), config.sampling, size
        )


def has_existing_saliency(row: dict[str, Any], values: ValueColumns = PLAIN_VALUES) -> bool:
    """Both value columns convert to finite floats (numeric strings count)."""
    return _finite(row.get(values.mean)) and _finite(row.get(values.var))


def mark_skipped(row: dict[str, Any], config: MaterializeConfig) -> None:
    _set(row, config.status_column, SKIPPED_EXISTING)


def apply_result(
    row: dict[str, Any],
    result: ClipResult,
    config: MaterializeConfig,
    metadata: RowMetadata,
    values: ValueColumns = PLAIN_VALUES,
) -> None:
    """Write one clip's result into one of its rows."""
    _set(row, config.status_column, result.status)
    if result.ok:
        row[values.mean] = result.saliency_mean
        row[values.var] = result.saliency_var
        for column, value in _metadata_columns(config, metadata):
            _set(row, column, value)
        _set(row, config.transfer_column, result.transfer)  # per clip, unlike the settings
        _clear(row, config.error_column)
        return
    _set(row, config.error_column, result.detail or result.status)
    if config.overwrite:
        _clear_stale(row, config, values)


def _metadata_columns(config: MaterializeConfig, metadata: RowMetadata) -> list[tuple[str, Any]]:
    return [
        (config.model_id_column, metadata.model_id),
        (config.aggregator_column, metadata.aggregator),
        (config.ema_alpha_column, metadata.ema_alpha),
        (config.sampling_column, metadata.sampling),
        (config.inference_size_column, metadata.inference_size),
    ]


def _clear_stale(row: dict[str, Any], config: MaterializeConfig, values: ValueColumns) -> None:
    stale_columns = [
        values.mean,
        values.var,
        config.model_id_column,
        config.aggregator_column,
        config.ema_alpha_column,
        config.sampling_column,
        config.inference_size_column,
        config.transfer_column,
    ]
    for column in stale_columns:
        _clear(row, column)


def _set(row: dict[str, Any], column: str, value: Any) -> None:
    if column:
        row[column] = value


def _clear(row: dict[str, Any], column: str) -> None:
    if column and column in row:
        row[column] = None


def _finite(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond any float
        return False
