"""Several models on one table: which models, and the columns each one writes.

A table is enriched with one model (``model_path`` / ``model_id``: today's columns, exactly) or
with several side by side (``models`` in a manifest, a repeated ``--model-path`` on the command
line). With several, every column a model writes carries its id after a double underscore:
``saliency_mean__<id>``, ``saliency_var__<id>``, ``saliency_status__<id>``, ... so no model's
values, statuses or provenance overwrite another's, and each model keeps the row contract on its
own columns (a row with finite ``saliency_mean__<id>`` and ``saliency_var__<id>`` is skipped for
that model only). The ids are checked before any work: each one usable in a column name, and no
two equal once case and punctuation are ignored (case-insensitive tools and Dagster's asset
names would merge those).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.model.saliency_model import declared_model_id
from saliency_assets.core.tables.rows import (
    MEAN_COLUMN,
    PLAIN_VALUES,
    VAR_COLUMN,
    ValueColumns,
)

COLUMN_SEPARATOR = "__"
# The columns the row contract writes besides the two values; each model gets its own.
WRITTEN_COLUMN_FIELDS = (
    "status_column",
    "error_column",
    "model_id_column",
    "aggregator_column",
    "ema_alpha_column",
    "sampling_column",
    "inference_size_column",
    "transfer_column",
)
READ_COLUMN_FIELDS = ("path_column", "width_column", "height_column", "pix_fmt_column")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A model as a manifest entry or the command line names it: a file, an id, or both."""

    model_path: Path | None = None
    model_id: str | None = None

    @property
    def declared_id(self) -> str:
        return declared_model_id(self.model_path, self.model_id)

    def describe(self) -> str:
        return str(self.model_path) if self.model_path is not None else f"id {self.model_id!r}"


@dataclass(frozen=True)
class TableModel:
    """One model a table is enriched with: the table's settings with this model in them, and
    the columns it writes."""

    model_id: str
    config: MaterializeConfig
    values: ValueColumns = PLAIN_VALUES

    @property
    def name(self) -> str:
        """The id as an identifier (letters, digits, underscores), for Dagster's names."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.model_id)

    def written_columns(self) -> list[tuple[str, str]]:
        """(what, column) for every column this model writes (disabled ones left out)."""
        named = [(field, getattr(self.config, field)) for field in WRITTEN_COLUMN_FIELDS]
        values = [(MEAN_COLUMN, self.values.mean), (VAR_COLUMN, self.values.var)]
        return [(what, column) for what, column in values + named if column]


def table_models(
    config: MaterializeConfig, refs: Sequence[ModelRef] = (), where: str = "config"
) -> tuple[TableModel, ...]:
    """The models a table is enriched with, in order.

    No ``refs``: the config's own model. One: that model in place of the config's. Either way
    the columns are today's. Several: each with its own columns; ConfigError naming both
    models when two ids clash, or naming the column when a model's column is another's.
    """
    if len(refs) <= 1:
        if refs:
            config = replace(config, model_path=refs[0].model_path, model_id=refs[0].model_id)
        return (TableModel(declared_model_id(config.model_path, config.model_id), config),)
    _reject_clashing_ids(refs, where)
    models = tuple(_one_of_several(config, ref) for ref in refs)
    _reject_column_clashes(config, models, where)
    return models


def _one_of_several(config: MaterializeConfig, ref: ModelRef) -> TableModel:
    model_id = ref.declared_id
    suffix = COLUMN_SEPARATOR + model_id
    own_columns = {
        field: getattr(config, field) + suffix
        for field in WRITTEN_COLUMN_FIELDS
        if getattr(config, field)  # a disabled column stays disabled
    }
    own = replace(config, model_path=ref.model_path, model_id=ref.model_id, **own_columns)
    return TableModel(model_id, own, ValueColumns(MEAN_COLUMN + suffix, VAR_COLUMN + suffix))


def _reject_clashing_ids(refs: Sequence[ModelRef], where: str) -> None:
    seen: dict[str, tuple[int, ModelRef]] = {}
    for number, ref in enumerate(refs, start=1):
        model_id = ref.declared_id
        if not _MODEL_ID.match(model_id):
            raise ConfigError(
                f"{where}: model {number} ({ref.describe()}) has model id {model_id!r}, which "
                "cannot name columns: use letters, digits, '_', '.' and '-', starting with a "
                "letter or digit (set its model id)"
            )
        folded = re.sub(r"[^a-z0-9]", "_", model_id.lower())
        if folded in seen:
            first_number, first = seen[folded]
            raise ConfigError(
                f"{where}: model {first_number} ({first.describe()}, id {first.declared_id!r}) "
                f"and model {number} ({ref.describe()}, id {model_id!r}) "
                + (
                    "have the same model id"
                    if first.declared_id == model_id
                    else "have model ids that differ only in case or punctuation"
                )
                + "; give each model a distinct model id"
            )
        seen[folded] = (number, ref)


def _reject_column_clashes(
    config: MaterializeConfig, models: Sequence[TableModel], where: str
) -> None:
    read = [(getattr(config, field), field) for field in READ_COLUMN_FIELDS]
    owners = {column: field for column, field in read if column}
    for model in models:
        for what, column in model.written_columns():
            if column in owners:
                raise ConfigError(
                    f"{where}: column {column!r} would hold model {model.model_id!r}'s {what} "
                    f"and is also {owners[column]}; rename one of them"
                )
            owners[column] = f"model {model.model_id!r}'s {what}"
